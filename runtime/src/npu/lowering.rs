//! Tiling + pipelining, the NPU devices' lowering pass: every device node becomes the
//! commands of its run(s), checked against the array's limits (tile memory, buffer
//! descriptors, memory tile); the plan's steps replayed through the timing model give the
//! projected time of one graph run. The device programs issue exactly these commands.

use super::timeline::{self, Command, DispatchCommand, HostCommand, Timeline};
use super::{kernel_of, KernelWork, NpuOptions, NpuParams};
use crate::device::node_types;
use crate::error::{Result, RuntimeError};
use crate::schedule::transfers::value_bytes;
use crate::schedule::{Pass, PassContext, Plan, Step};
use std::collections::HashMap;

/// The commands of one device node.
#[derive(Debug, Clone)]
pub struct NodeLowering {
    /// Catalogue kernel.
    pub kernel: String,
    /// Its work description.
    pub work: KernelWork,
    /// The node's commands (one dispatch, or a round trip per tile in the seed design).
    pub commands: Vec<Command>,
}

/// The NPU lowering of one plan: per device node its commands, and the projection.
#[derive(Debug, Clone)]
pub struct NpuLowering {
    /// Parameter set used.
    pub params: NpuParams,
    /// Options used.
    pub options: NpuOptions,
    /// Per device node id.
    pub nodes: HashMap<usize, NodeLowering>,
    /// The plan's steps as commands, replayed: the projection of one graph run.
    pub timeline: Timeline,
}

impl NpuLowering {
    /// The commands of one step, as a program issues them (`chain` marks runs after the
    /// first of a segment as chained when runlists are on).
    pub fn step_commands(&self, plan: &Plan, step: Step, out: &mut Vec<Command>) {
        let g = &plan.graph;
        match step {
            Step::Host(_) => {}
            Step::Upload(v) => out.push(Command::Host(HostCommand::SyncToDevice {
                value: g.values[v].name.clone(),
                bytes: value_bytes(g, v),
            })),
            Step::Download(v) => out.push(Command::Host(HostCommand::SyncToHost {
                value: g.values[v].name.clone(),
                bytes: value_bytes(g, v),
            })),
            Step::Segment(k) => {
                let mut first = true;
                for ni in &plan.segments[k] {
                    if let Some(nl) = self.nodes.get(ni) {
                        for c in &nl.commands {
                            let mut c = c.clone();
                            if let Command::Dispatch(d) = &mut c {
                                d.chained = self.options.runlists && !first;
                                first = false;
                            }
                            out.push(c);
                        }
                    }
                }
            }
        }
    }
}

/// The tiling and pipelining pass of an NPU device.
#[derive(Debug, Clone)]
pub struct TilingPass {
    /// The device's parameters.
    pub params: NpuParams,
    /// How it schedules runs.
    pub options: NpuOptions,
    /// The xclbin (hardware context) of a kernel; `None` puts every kernel in one.
    pub xclbin_of: Option<fn(&str) -> String>,
}

/// The one xclbin that holds every catalogue kernel.
pub const CATALOGUE_XCLBIN: &str = "catalogue";

impl Pass for TilingPass {
    fn name(&self) -> &str {
        "tiling"
    }

    fn run(&self, _cx: &PassContext, plan: &mut Plan) -> Result<String> {
        let p = &self.params;
        let caps = p.caps();
        let depth = if self.options.double_buffer { 2 } else { 1 };
        let g = plan.graph.clone();
        let mut nodes = HashMap::new();
        for seg in &plan.segments {
            for &ni in seg {
                let n = &g.nodes[ni];
                let k =
                    kernel_of(n.op.as_ref())
                        .ok()
                        .flatten()
                        .ok_or_else(|| RuntimeError::Graph {
                            graph: g.name.clone(),
                            node: n.name.clone(),
                            reason: format!("placed on {} without an NPU kernel", plan.device),
                        })?;
                let (ins, _) = node_types(&g, n);
                let work = k.work(&ins, &caps);
                let unfit = |reason: String| RuntimeError::Graph {
                    graph: g.name.clone(),
                    node: n.name.clone(),
                    reason: format!("schedule cannot fit on {}: {reason}", p.name),
                };
                let fp = if depth == 2 {
                    work.footprint_double
                } else {
                    work.footprint_single
                };
                if fp > p.tile_data_memory {
                    return Err(unfit(format!(
                        "kernel '{}' needs {fp} B of compute-tile memory, the tile has {}",
                        k.name(),
                        p.tile_data_memory
                    )));
                }
                if work.shim_bds * depth > p.shim_bds {
                    return Err(unfit(format!(
                        "kernel '{}' needs {} shim buffer descriptors per channel, the channel has {}",
                        k.name(),
                        work.shim_bds * depth,
                        p.shim_bds
                    )));
                }
                if work.resident_bytes as usize > p.memtile_bytes {
                    return Err(unfit(format!(
                        "kernel '{}' keeps {} B resident, the memory tile has {}",
                        k.name(),
                        work.resident_bytes,
                        p.memtile_bytes
                    )));
                }
                let context = match (self.options.xclbin_per_op, self.xclbin_of) {
                    (true, _) => k.name().to_string(),
                    (false, Some(f)) => f(k.name()),
                    (false, None) => CATALOGUE_XCLBIN.to_string(),
                };
                let dispatch = |steps: (u64, u64)| {
                    Command::Dispatch(DispatchCommand {
                        node: n.name.clone(),
                        kernel: k.name().to_string(),
                        work: work.clone(),
                        steps,
                        chained: false,
                        context: context.clone(),
                    })
                };
                let mut commands = Vec::new();
                if self.options.dispatch_per_tile {
                    // One run per step, each with its own input and output sync (the seed's
                    // round trip).
                    for s in 0..work.steps {
                        commands.push(Command::Host(HostCommand::SyncToDevice {
                            value: format!("{} tile {s}", n.name),
                            bytes: work.step.in_bytes,
                        }));
                        commands.push(dispatch((s, s + 1)));
                        commands.push(Command::Host(HostCommand::SyncToHost {
                            value: format!("{} tile {s}", n.name),
                            bytes: work.step.out_bytes,
                        }));
                    }
                } else {
                    commands.push(dispatch((0, work.steps)));
                }
                nodes.insert(
                    ni,
                    NodeLowering {
                        kernel: k.name().to_string(),
                        work,
                        commands,
                    },
                );
            }
        }
        let mut low = NpuLowering {
            params: p.clone(),
            options: self.options,
            nodes,
            timeline: Timeline::default(),
        };
        let mut cmds = Vec::new();
        for &s in &plan.steps {
            low.step_commands(plan, s, &mut cmds);
        }
        low.timeline = timeline::simulate(&cmds, p, &self.options.queue(p));
        plan.device_runs = low.timeline.dispatches;
        plan.projected_ns = Some(low.timeline.total_ns);
        let mut s = format!(
            "{} runs per graph run in {} segments, {} context switches; projected {:.3} ms per run (npu-sim timing model, {})",
            low.timeline.dispatches,
            plan.segments.len(),
            low.timeline.context_switches,
            low.timeline.total_ns / 1e6,
            p.name
        );
        s.push_str(&run_lines(plan, &low));
        plan.lowering = Some(std::sync::Arc::new(low));
        Ok(s)
    }
}

/// One line per device run: node, kernel, steps, projected span and column occupancy.
fn run_lines(plan: &Plan, low: &NpuLowering) -> String {
    use super::timeline::Lane;
    if low.options.dispatch_per_tile {
        return String::new();
    }
    let tl = &low.timeline;
    let cols = low.options.columns.min(low.params.columns) as f64;
    let mut per: Vec<(usize, &str, &str, f64, f64, f64, u64)> = Vec::new();
    for sp in &tl.spans {
        if per.last().map(|x| x.0) != Some(sp.dispatch) {
            per.push((sp.dispatch, &sp.node, "", f64::MAX, 0.0, 0.0, 0));
        }
        let e = per.last_mut().expect("pushed above");
        if let Lane::Column(_) = sp.lane {
            e.1 = &sp.node;
            e.2 = &sp.name;
            e.5 += sp.end_ns - sp.start_ns;
            e.6 += 1;
        }
        if sp.lane != Lane::Host {
            e.3 = e.3.min(sp.start_ns);
            e.4 = e.4.max(sp.end_ns);
        }
    }
    let _ = plan;
    let mut s = String::new();
    for (_, node, kernel, a, b, busy, steps) in per.iter().filter(|x| x.6 > 0) {
        let span = b - a;
        s.push_str(&format!(
            "\nrun {node:<34} {kernel:<22} {steps:>5} steps {:>9.1} µs, columns busy {:>3.0}%",
            span / 1e3,
            100.0 * busy / (span * cols).max(1e-9)
        ));
    }
    s
}
