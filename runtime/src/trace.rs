//! Device lanes for Chrome traces: each device run is recorded as complete events on
//! lanes of a process of its own (one per device), to be merged with the host spans that
//! `tracing-chrome` writes. Simulated devices record projected times and say so in the
//! process and lane names; real devices record their own host-side timestamps.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// One span on a device lane.
#[derive(Debug, Clone)]
pub struct DeviceSpan {
    /// Lane id within the device's process (also its sort order).
    pub lane: u64,
    /// Lane name.
    pub lane_name: String,
    /// What ran.
    pub name: String,
    /// Start, µs from the run's start.
    pub start_us: f64,
    /// Duration, µs.
    pub dur_us: f64,
    /// Event arguments.
    pub args: Value,
}

struct Process {
    label: String,
    /// End of the last recorded run, µs since origin (runs of one device never overlap).
    clock_us: f64,
    lanes: BTreeMap<u64, String>,
}

struct Sink {
    origin: Instant,
    processes: BTreeMap<u64, Process>,
    events: Vec<Value>,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Process id of the first device's lanes in the trace (host spans use the real pid).
pub const DEVICE_PID: u64 = 1_000_000;

/// Starts recording; `origin` must be the instant the host trace's clock starts.
pub fn start(origin: Instant) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink {
        origin,
        processes: BTreeMap::new(),
        events: Vec::new(),
    });
}

/// Whether recording is on.
pub fn active() -> bool {
    SINK.lock().map(|s| s.is_some()).unwrap_or(false)
}

/// Records one device run that started on the host at `wall_start` and lasted `run_us`
/// on the device's clock. With `after_previous`, the run starts no earlier than the end
/// of the device's previous run (a simulated clock); otherwise spans are placed at their
/// own host-relative times. `pid` tells devices apart ([`DEVICE_PID`] for the first).
pub fn record_run(
    pid: u64,
    process_label: &str,
    spans: Vec<DeviceSpan>,
    wall_start: Instant,
    run_us: f64,
    after_previous: bool,
) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sink) = guard.as_mut() else { return };
    let host_us = wall_start
        .saturating_duration_since(sink.origin)
        .as_secs_f64()
        * 1e6;
    let proc = sink.processes.entry(pid).or_insert_with(|| Process {
        label: process_label.to_string(),
        clock_us: 0.0,
        lanes: BTreeMap::new(),
    });
    let base = if after_previous {
        host_us.max(proc.clock_us)
    } else {
        host_us
    };
    for s in spans {
        proc.lanes.insert(s.lane, s.lane_name);
        sink.events.push(json!({
            "name": s.name, "cat": process_label, "ph": "X", "pid": pid, "tid": s.lane,
            "ts": base + s.start_us, "dur": s.dur_us, "args": s.args,
        }));
    }
    proc.clock_us = base + run_us;
}

/// Stops recording and returns the device events with their process and lane names.
pub fn finish() -> Vec<Value> {
    let Some(sink) = SINK.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (pid, p) in &sink.processes {
        out.push(json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": p.label}}));
        for (tid, name) in &p.lanes {
            out.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}));
            out.push(json!({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}}));
        }
    }
    out.extend(sink.events);
    out
}
