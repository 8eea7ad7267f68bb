//! Device lanes for Chrome traces: each planned run's simulated schedule is recorded as
//! complete events (one lane per column and per shim DMA channel) in a process of its own,
//! labelled as simulated, to be merged with the host spans that `tracing-chrome` writes.

use crate::schedule::{Lane, Timeline};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Instant;

struct Sink {
    origin: Instant,
    /// Virtual clock: end of the last recorded run, µs since origin.
    clock_us: f64,
    events: Vec<Value>,
    lanes: std::collections::BTreeSet<Lane>,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Process id of the device lanes in the trace (host spans use the real pid).
pub const DEVICE_PID: u64 = 1_000_000;

/// Starts recording; `origin` must be the instant the host trace's clock starts.
pub fn start(origin: Instant) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink {
        origin,
        clock_us: 0.0,
        events: Vec::new(),
        lanes: Default::default(),
    });
}

/// Whether recording is on.
pub fn active() -> bool {
    SINK.lock().map(|s| s.is_some()).unwrap_or(false)
}

fn tid(l: Lane) -> u64 {
    match l {
        Lane::Host => 1,
        Lane::Column(c) => 100 + c as u64,
        Lane::DmaIn(c, ch) => 200 + 10 * c as u64 + ch as u64,
        Lane::DmaOut(c, ch) => 300 + 10 * c as u64 + ch as u64,
    }
}

/// Records one run of a planned graph that started on the host at `wall_start`. The run's
/// simulated schedule starts at the later of the host time and the end of the previous run.
pub fn record_device_run(graph: &str, tl: &Timeline, wall_start: Instant) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sink) = guard.as_mut() else { return };
    let host_us = wall_start
        .saturating_duration_since(sink.origin)
        .as_secs_f64()
        * 1e6;
    let base = host_us.max(sink.clock_us);
    for s in &tl.spans {
        sink.lanes.insert(s.lane);
        let mut args = json!({ "graph": graph, "node": s.node, "dispatch": s.dispatch, "bytes": s.bytes, "simulated": true });
        if let Some(t) = s.tile {
            args["tile"] = json!(t);
        }
        sink.events.push(json!({
            "name": s.name, "cat": "npu-sim", "ph": "X", "pid": DEVICE_PID, "tid": tid(s.lane),
            "ts": base + s.start_ns / 1e3, "dur": (s.end_ns - s.start_ns) / 1e3, "args": args,
        }));
    }
    sink.clock_us = base + tl.total_ns / 1e3;
}

/// Stops recording and returns the device events with their lane names.
pub fn finish() -> Vec<Value> {
    let Some(sink) = SINK.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Vec::new();
    };
    let mut out = vec![
        json!({"name": "process_name", "ph": "M", "pid": DEVICE_PID, "args": {"name": "npu-sim (simulated time, projection)"}}),
    ];
    for l in &sink.lanes {
        out.push(json!({"name": "thread_name", "ph": "M", "pid": DEVICE_PID, "tid": tid(*l), "args": {"name": format!("{l} (simulated)")}}));
        out.push(json!({"name": "thread_sort_index", "ph": "M", "pid": DEVICE_PID, "tid": tid(*l), "args": {"sort_index": tid(*l)}}));
    }
    out.extend(sink.events);
    out
}
