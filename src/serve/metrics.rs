//! Server metrics in the Prometheus text exposition format (version 0.0.4), kept with
//! atomics and one small mutex; `GET /metrics` renders them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    /// (route, status) → requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Latency of the transcription and translation requests, by route.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Microseconds of audio transcribed.
    audio_us: AtomicU64,
    /// Microseconds workers spent transcribing.
    processing_us: AtomicU64,
    /// Requests accepted and waiting for a worker.
    pub queue_depth: AtomicUsize,
    /// Workers transcribing now.
    pub busy_workers: AtomicUsize,
    /// Requests a worker has taken and not yet answered. With batching one busy worker
    /// holds several, so this, not `busy_workers`, plus `queue_depth` is what is in flight.
    pub in_progress: AtomicUsize,
    /// Work stopped because its client went away or its deadline passed.
    pub cancelled: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Panics caught in a worker (the worker then gets a fresh model).
    pub worker_panics: AtomicU64,
    /// Lockstep decodes of several requests' first windows.
    batches: AtomicU64,
    /// Requests whose first window was decoded in such a batch.
    batched_requests: AtomicU64,
}

impl Metrics {
    /// Counts `batches` lockstep decodes holding `requests` requests in all.
    pub fn record_batch(&self, batches: usize, requests: usize) {
        self.batches.fetch_add(batches as u64, Ordering::Relaxed);
        self.batched_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
    }

    pub fn record_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    pub fn record_latency(&self, route: &str, seconds: f64) {
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry(route.to_string()).or_default();
            for (c, &b) in h.counts.iter_mut().zip(LATENCY_BUCKETS.iter()) {
                if seconds <= b {
                    *c += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        }
    }

    pub fn record_transcription(&self, audio_seconds: f64, processing_seconds: f64) {
        self.audio_us
            .fetch_add((audio_seconds * 1e6) as u64, Ordering::Relaxed);
        self.processing_us
            .fetch_add((processing_seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text of every metric.
    pub fn render(&self, workers: usize, queue_capacity: usize) -> String {
        let mut o = String::new();
        o.push_str("# HELP amanuensis_requests_total HTTP requests answered, by route and status.\n# TYPE amanuensis_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "amanuensis_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        o.push_str("# HELP amanuensis_request_duration_seconds Latency of transcription and translation requests, from the first byte of the request to the answer.\n# TYPE amanuensis_request_duration_seconds histogram\n");
        if let Ok(m) = self.latency.lock() {
            for (route, h) in m.iter() {
                for (c, b) in h.counts.iter().zip(LATENCY_BUCKETS.iter()) {
                    let _ = writeln!(
                        o,
                        "amanuensis_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    o,
                    "amanuensis_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    o,
                    "amanuensis_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    o,
                    "amanuensis_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        let audio = self.audio_us.load(Ordering::Relaxed) as f64 / 1e6;
        let processing = self.processing_us.load(Ordering::Relaxed) as f64 / 1e6;
        let rtf = if audio > 0.0 { processing / audio } else { 0.0 };
        let gauges: [(&str, &str, &str, f64); 13] = [
            ("amanuensis_audio_seconds_total", "counter", "Seconds of audio transcribed.", audio),
            ("amanuensis_processing_seconds_total", "counter", "Seconds workers spent transcribing (audio decoding included).", processing),
            ("amanuensis_realtime_factor", "gauge", "Processing seconds per second of audio over all transcriptions so far (below 1 is faster than realtime).", rtf),
            ("amanuensis_queue_depth", "gauge", "Requests accepted and waiting for a worker.", self.queue_depth.load(Ordering::Relaxed) as f64),
            ("amanuensis_queue_capacity", "gauge", "Requests that may wait for a worker (--max-queue).", queue_capacity as f64),
            ("amanuensis_workers", "gauge", "Transcription workers (--workers).", workers as f64),
            ("amanuensis_workers_busy", "gauge", "Workers transcribing now.", self.busy_workers.load(Ordering::Relaxed) as f64),
            ("amanuensis_requests_in_progress", "gauge", "Requests taken by a worker and not yet answered (several per worker with --batch-size).", self.in_progress.load(Ordering::Relaxed) as f64),
            ("amanuensis_cancelled_total", "counter", "Transcriptions stopped because the client went away or the request timed out.", self.cancelled.load(Ordering::Relaxed) as f64),
            ("amanuensis_rejected_total", "counter", "Requests refused with 429 because the queue was full.", self.rejected.load(Ordering::Relaxed) as f64),
            ("amanuensis_worker_panics_total", "counter", "Panics caught in a worker (answered 500; the worker continues on a fresh model).", self.worker_panics.load(Ordering::Relaxed) as f64),
            ("amanuensis_batches_total", "counter", "Lockstep decodes of several requests' first windows (--batch-size).", self.batches.load(Ordering::Relaxed) as f64),
            ("amanuensis_batched_requests_total", "counter", "Requests whose first window was decoded in such a batch.", self.batched_requests.load(Ordering::Relaxed) as f64),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        o
    }
}
