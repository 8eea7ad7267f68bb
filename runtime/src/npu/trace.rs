//! The simulated NPU's runs as Chrome-trace lanes: one per column, per shim DMA channel
//! and for host submit/sync, all labelled simulated.

use super::timeline::{Lane, Timeline};
use crate::trace::{record_run, DeviceSpan, DEVICE_PID};
use serde_json::json;
use std::time::Instant;

fn tid(l: Lane) -> u64 {
    match l {
        Lane::Host => 1,
        Lane::Column(c) => 100 + c as u64,
        Lane::DmaIn(c, ch) => 200 + 10 * c as u64 + ch as u64,
        Lane::DmaOut(c, ch) => 300 + 10 * c as u64 + ch as u64,
    }
}

/// Records one simulated run of `graph` that started on the host at `wall_start`.
pub fn record_simulated_run(graph: &str, tl: &Timeline, wall_start: Instant) {
    let spans = tl
        .spans
        .iter()
        .map(|s| {
            let mut args = json!({ "graph": graph, "node": s.node, "dispatch": s.dispatch, "bytes": s.bytes, "simulated": true });
            if let Some(t) = s.tile {
                args["tile"] = json!(t);
            }
            DeviceSpan {
                lane: tid(s.lane),
                lane_name: format!("{} (simulated)", s.lane),
                name: s.name.clone(),
                start_us: s.start_ns / 1e3,
                dur_us: (s.end_ns - s.start_ns) / 1e3,
                args,
            }
        })
        .collect();
    record_run(
        DEVICE_PID,
        "npu-sim (simulated time, projection)",
        spans,
        wall_start,
        tl.total_ns / 1e3,
        true,
    );
}
