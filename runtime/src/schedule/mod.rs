//! The scheduler: an ordered list of named passes that edit one plan in place, from a
//! validated graph to the steps a session executes.
//!
//! The core passes, in order:
//! 1. [`placement`]: each node to the selected device if it runs it, else the host, with reasons;
//! 2. [`fusion`]: pattern rewrites of the IR where the device runs the fused op, chosen by
//!    the device's projected savings;
//! 3. `transfers`: an explicit upload / download on every edge that crosses devices;
//! 4. `residency`: redundant transfer pairs removed, so intermediates stay on the device;
//! 5. `segments`: the steps the executor runs: host nodes, uploads, device segments
//!    (runs submitted together), downloads;
//! 6. [`memory`]: one arena per device from value lifetimes over those steps (the
//!    device's program allocates it).
//!
//! Then the device's own lowering passes ([`Device::lowering_passes`]), for the NPU
//! tiling and pipelining. Each pass reports what it did; every optional pass can be
//! skipped and planning can stop after any pass ([`SchedulerOptions`]). Nothing a pass
//! decides is only a report: the session executes [`Plan::steps`] through the device's
//! [`Program`](crate::device::Program), which allocates [`Plan::memory`].

pub mod fusion;
pub mod memory;
pub mod placement;
pub mod transfers;

pub use crate::device::{Pass, PassContext};
pub use crate::plan::{
    Direction, FusedGroup, MemoryPlan, NodePlacement, PassRecord, Plan, RejectedFusion,
    SchedulerOptions, Slot, Step, Transfer,
};

use crate::device::Device;
use crate::error::{Result, RuntimeError};
use crate::ir::Graph;
use crate::registry::Registry;
use std::time::Instant;

/// The core passes, in order.
pub fn core_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(placement::PlacementPass),
        Box::new(fusion::FusionPass),
        Box::new(transfers::TransfersPass),
        Box::new(transfers::ResidencyPass),
        Box::new(SegmentsPass),
        Box::new(memory::MemoryPass),
    ]
}

/// Names of every pass that would run for `device`, in order.
pub fn pass_names(device: &dyn Device) -> Vec<String> {
    core_passes()
        .iter()
        .chain(device.lowering_passes().iter())
        .map(|p| p.name().to_string())
        .collect()
}

/// Runs the passes on one validated graph (built once at load) for `device`.
pub fn plan(
    graph: Graph,
    registry: &Registry,
    device: &dyn Device,
    opts: &SchedulerOptions,
) -> Result<Plan> {
    let t0 = Instant::now();
    let passes: Vec<Box<dyn Pass>> = core_passes()
        .into_iter()
        .chain(device.lowering_passes())
        .collect();
    let bad_name = |what: &str, name: &str| RuntimeError::Graph {
        graph: graph.name.clone(),
        node: "(scheduler)".into(),
        reason: format!(
            "{what} names no pass '{name}' (passes: {})",
            passes
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for s in &opts.skip {
        match passes.iter().find(|p| p.name() == s) {
            None => return Err(bad_name("--skip-pass", s)),
            Some(p) if !p.optional() => {
                return Err(RuntimeError::Graph {
                    graph: graph.name.clone(),
                    node: "(scheduler)".into(),
                    reason: format!("pass '{s}' cannot be skipped: the executor depends on it"),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(stop) = &opts.stop_after {
        if !passes.iter().any(|p| p.name() == stop) {
            return Err(bad_name("--stop-after", stop));
        }
    }
    let mut plan = Plan::new(graph, device.name(), opts);
    let cx = PassContext {
        device,
        registry,
        options: opts,
    };
    for pass in &passes {
        let tp = Instant::now();
        let name = pass.name().to_string();
        let (report, ran) = if opts.skips(&name) {
            ("switched off".to_string(), false)
        } else {
            (pass.run(&cx, &mut plan)?, true)
        };
        plan.passes.push(PassRecord {
            name: name.clone(),
            report,
            ran,
            time: tp.elapsed(),
        });
        if opts.stop_after.as_deref() == Some(name.as_str()) {
            if passes.last().map(|p| p.name()) != Some(name.as_str()) {
                plan.stopped_after = Some(name);
            }
            break;
        }
    }
    if plan.device_runs == 0 {
        plan.device_runs = plan.segments.iter().map(|s| s.len()).sum();
    }
    plan.planning_time = t0.elapsed();
    Ok(plan)
}

/// Segments: the executed steps. Consecutive device nodes form a segment whose runs are
/// submitted together; the uploads a segment needs come right before it and its
/// downloads right after. A segment ends where a device node needs a value that a node
/// of the same segment produced but that went through the host (no residency).
pub struct SegmentsPass;

impl Pass for SegmentsPass {
    fn name(&self) -> &str {
        "segments"
    }

    fn run(&self, _cx: &PassContext, plan: &mut Plan) -> Result<String> {
        let g = plan.graph.clone();
        let mut steps = Vec::new();
        let mut segments: Vec<Vec<usize>> = Vec::new();
        let mut cur: Vec<usize> = Vec::new();
        let mut ups: Vec<usize> = Vec::new();
        let mut downs: Vec<usize> = Vec::new();
        let value_id = |name: &str| g.values.iter().position(|v| v.name == name);
        let flush = |cur: &mut Vec<usize>,
                     ups: &mut Vec<usize>,
                     downs: &mut Vec<usize>,
                     steps: &mut Vec<Step>,
                     segments: &mut Vec<Vec<usize>>| {
            if cur.is_empty() {
                return;
            }
            steps.extend(ups.drain(..).map(Step::Upload));
            steps.push(Step::Segment(segments.len()));
            segments.push(std::mem::take(cur));
            steps.extend(downs.drain(..).map(Step::Download));
        };
        for &ni in &g.order {
            if !plan.on_device(ni) {
                flush(&mut cur, &mut ups, &mut downs, &mut steps, &mut segments);
                steps.push(Step::Host(ni));
                continue;
            }
            let mut mine_up = Vec::new();
            for t in plan
                .transfers
                .iter()
                .filter(|t| t.node == ni && t.direction == Direction::ToDevice)
            {
                let v = value_id(&t.value).ok_or_else(|| RuntimeError::Graph {
                    graph: g.name.clone(),
                    node: g.nodes[ni].name.clone(),
                    reason: format!("transfer of unknown value '{}'", t.value),
                })?;
                mine_up.push(v);
            }
            // A value coming back from this segment's own downloads needs a new segment.
            if mine_up.iter().any(|v| downs.contains(v)) {
                flush(&mut cur, &mut ups, &mut downs, &mut steps, &mut segments);
            }
            for v in mine_up {
                if !ups.contains(&v) {
                    ups.push(v);
                }
            }
            cur.push(ni);
            for t in plan
                .transfers
                .iter()
                .filter(|t| t.node == ni && t.direction == Direction::ToHost)
            {
                if let Some(v) = value_id(&t.value) {
                    downs.push(v);
                }
            }
        }
        flush(&mut cur, &mut ups, &mut downs, &mut steps, &mut segments);
        let n_up = steps
            .iter()
            .filter(|s| matches!(s, Step::Upload(_)))
            .count();
        let n_down = steps
            .iter()
            .filter(|s| matches!(s, Step::Download(_)))
            .count();
        let report = format!(
            "{} steps: {} device segments ({} device nodes), {} uploads, {} downloads, {} host nodes",
            steps.len(),
            segments.len(),
            segments.iter().map(|s| s.len()).sum::<usize>(),
            n_up,
            n_down,
            steps.iter().filter(|s| matches!(s, Step::Host(_))).count()
        );
        plan.steps = steps;
        plan.segments = segments;
        Ok(report)
    }
}
