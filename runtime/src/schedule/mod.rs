//! The scheduler: named passes from a validated graph to a static schedule.
//!
//! 1. [`placement`]: each node to the selected device if it runs it, else the CPU, with reasons;
//! 2. [`fusion`]: pattern rewrites where the NPU has the fused kernel, chosen by projected savings;
//! 3. [`transfers`]: explicit to-device / to-host transfers, then redundant pairs removed;
//! 4. [`memory`]: one arena per device from value lifetimes, peak bytes reported;
//! 5. tiling + pipelining: device nodes become dispatches of column steps spread over the
//!    columns with ping/pong buffers, replayed on virtual clocks by [`timeline`].
//!
//! Each pass can be switched off from [`SchedulerOptions`] (and the CLI) for ablations.

pub mod fusion;
pub mod memory;
pub mod placement;
pub mod timeline;
pub mod transfers;

pub use fusion::{FusedGroup, RejectedFusion};
pub use memory::MemoryPlan;
pub use placement::NodePlacement;
pub use timeline::{Lane, Span, Timeline};
pub use transfers::{Direction, Transfer};

use crate::device::npu_sim::NpuParams;
use crate::device::{Device, DeviceKind, KernelWork, NpuCaps};
use crate::error::{Result, RuntimeError};
use crate::format::{GraphDef, WeightDecl};
use crate::ir::Graph;
use crate::op::ValueType;
use crate::registry::Registry;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeline::{Command, DispatchCommand, HostCommand, QueueConfig};

/// Which passes run and how far (the full design is the default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerOptions {
    /// Apply fusion patterns.
    pub fusion: bool,
    /// Remove redundant transfer pairs so intermediates stay on the device.
    pub residency: bool,
    /// Columns to use (capped by the device's).
    pub columns: usize,
    /// Ping/pong buffers so DMA overlaps compute.
    pub double_buffer: bool,
    /// The seed design: one run per column step with a host round trip each.
    pub dispatch_per_tile: bool,
    /// Overlap the encoder of the next window with the decoding of this one.
    pub window_overlap: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            fusion: true,
            residency: true,
            columns: usize::MAX,
            double_buffer: true,
            dispatch_per_tile: false,
            window_overlap: true,
        }
    }
}

impl SchedulerOptions {
    /// The seed prototypes' design: one op per dispatch, a host round trip per tile,
    /// one column, no double buffering, no overlap.
    pub fn seed() -> Self {
        SchedulerOptions {
            fusion: false,
            residency: false,
            columns: 1,
            double_buffer: false,
            dispatch_per_tile: true,
            window_overlap: false,
        }
    }

    /// The ablation ladder (a)–(f): each row adds one thing to the previous.
    pub fn ablation_ladder() -> Vec<(&'static str, SchedulerOptions)> {
        let a = Self::seed();
        let b = SchedulerOptions {
            residency: true,
            dispatch_per_tile: false,
            ..a
        };
        let c = SchedulerOptions { fusion: true, ..b };
        let d = SchedulerOptions {
            columns: usize::MAX,
            ..c
        };
        let e = SchedulerOptions {
            double_buffer: true,
            ..d
        };
        let f = SchedulerOptions {
            window_overlap: true,
            ..e
        };
        vec![
            (
                "(a) seed: op per dispatch, host round trip per tile, 1 column, single buffers",
                a,
            ),
            (
                "(b) + residency (intermediates stay on the device, one run per op)",
                b,
            ),
            ("(c) + fusion", c),
            ("(d) + 4 columns", d),
            ("(e) + double-buffered DMA", e),
            ("(f) + window overlap", f),
        ]
    }
}

/// The scheduler's result for one graph.
#[derive(Debug)]
pub struct Plan {
    /// The graph as executed (after fusion).
    pub graph: Arc<Graph>,
    /// Name of the selected device.
    pub device: String,
    /// Its timing parameters (NPU devices).
    pub params: Option<NpuParams>,
    /// The options used.
    pub options: SchedulerOptions,
    /// Placement of the graph as loaded, before fusion (the decision log).
    pub decisions: Vec<NodePlacement>,
    /// Placement of the executed graph's nodes (indexed like `graph.nodes`).
    pub placements: Vec<NodePlacement>,
    /// Fusions applied.
    pub fused: Vec<FusedGroup>,
    /// Candidates left out.
    pub rejected: Vec<RejectedFusion>,
    /// Transfers that remain.
    pub transfers: Vec<Transfer>,
    /// Transfers the redundancy pass removed.
    pub transfers_removed: usize,
    /// Arena per device.
    pub memory: Vec<MemoryPlan>,
    /// The device schedule replayed on virtual clocks (NPU devices; empty on the CPU).
    pub timeline: Timeline,
    /// Wall time the passes took.
    pub planning_time: Duration,
}

impl Plan {
    /// Whether node `ni` of [`Plan::graph`] runs on the NPU.
    pub fn on_npu(&self, ni: usize) -> bool {
        self.placements[ni].device == DeviceKind::Npu
    }

    /// Runs submitted to the device per graph run.
    pub fn dispatches(&self) -> usize {
        self.timeline.dispatches
    }

    /// Bytes of all remaining transfers per run.
    pub fn transfer_bytes(&self) -> u64 {
        self.transfers.iter().map(|t| t.bytes).sum()
    }

    /// A human-readable report (what `amanuensis plan` prints for one graph).
    pub fn report(&self) -> String {
        let mut s = String::new();
        let g = &self.graph;
        let npu = self
            .placements
            .iter()
            .filter(|p| p.device == DeviceKind::Npu)
            .count();
        let _ = writeln!(s, "graph '{}' on {}: {} nodes after fusion ({} on the NPU, {} on the CPU), planned in {:.2} ms", g.name, self.device, g.nodes.len(), npu, g.nodes.len() - npu, self.planning_time.as_secs_f64() * 1e3);
        let _ = writeln!(s, "  placement (graph as loaded):");
        for p in &self.decisions {
            let _ = writeln!(
                s,
                "    {:<28} {:<20} -> {:<3} {}",
                p.node,
                p.op,
                p.device.to_string(),
                p.reason
            );
        }
        if !self.fused.is_empty() || !self.rejected.is_empty() {
            let _ = writeln!(s, "  fusion: {} groups", self.fused.len());
            for f in &self.fused {
                let _ = writeln!(
                    s,
                    "    {:<18} {} -> {} (saves {:.1} µs projected)",
                    f.pattern,
                    f.nodes.join(" + "),
                    f.op,
                    f.saved_us
                );
            }
            for r in &self.rejected {
                let _ = writeln!(
                    s,
                    "    not fused: {} {}: {}",
                    r.pattern,
                    r.nodes.join(" + "),
                    r.reason
                );
            }
        }
        let to_dev = self
            .transfers
            .iter()
            .filter(|t| t.direction == Direction::ToDevice)
            .count();
        let _ = writeln!(s, "  transfers: {} ({} to device, {} to host), {:.2} MB per run; {} redundant transfers removed", self.transfers.len(), to_dev, self.transfers.len() - to_dev, self.transfer_bytes() as f64 / 1e6, self.transfers_removed);
        for t in &self.transfers {
            let _ = writeln!(
                s,
                "    {:?} {} ({:.2} MB)",
                t.direction,
                t.value,
                t.bytes as f64 / 1e6
            );
        }
        for m in &self.memory {
            let _ = writeln!(
                s,
                "  memory {}: arena {:.2} MB, peak live {:.2} MB, weights {:.2} MB (uploaded once)",
                m.device,
                m.arena_bytes as f64 / 1e6,
                m.peak_live_bytes as f64 / 1e6,
                m.weight_bytes as f64 / 1e6
            );
        }
        if let Some(p) = &self.params {
            let _ = writeln!(s, "  dispatches per run: {}", self.dispatches());
            let mut per: Vec<(usize, &str, &str, f64, f64, f64, u64)> = Vec::new();
            for sp in &self.timeline.spans {
                if per.last().map(|x| x.0) != Some(sp.dispatch) {
                    per.push((sp.dispatch, &sp.node, "", f64::MAX, 0.0, 0.0, 0));
                }
                let e = per.last_mut().unwrap();
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
            let cols = self.options.columns.min(p.columns) as f64;
            if !self.options.dispatch_per_tile {
                for (_, node, kernel, a, b, busy, steps) in per.iter().filter(|x| x.6 > 0) {
                    let span = b - a;
                    let _ = writeln!(s, "    run {node:<34} {kernel:<22} {steps:>5} steps {:>9.1} µs, columns busy {:>3.0}%", span / 1e3, 100.0 * busy / (span * cols).max(1e-9));
                }
            }
            let _ = writeln!(
                s,
                "  projected device time per run (npu-sim, {}): {:.3} ms",
                p.name,
                self.timeline.total_ns / 1e6
            );
        }
        s
    }
}

/// Projected time of one node as a single dispatch under `opts` (the fusion pass's score).
pub fn estimate_node_ns(work: &KernelWork, p: &NpuParams, opts: &SchedulerOptions) -> f64 {
    let cmd = Command::Dispatch(DispatchCommand {
        node: String::new(),
        kernel: String::new(),
        work: work.clone(),
        steps: (0, work.steps),
    });
    let q = QueueConfig {
        columns: opts.columns.min(p.columns),
        depth: if opts.double_buffer { 2 } else { 1 },
        synchronous: true,
    };
    timeline::simulate(std::slice::from_ref(&cmd), p, &q).total_ns
}

fn types_of(graph: &Graph, ids: &[usize]) -> Vec<ValueType> {
    ids.iter().map(|&v| graph.values[v].ty.clone()).collect()
}

/// Runs the passes on one graph definition for `device`.
pub fn plan(
    def: &GraphDef,
    weights: &[WeightDecl],
    registry: &Registry,
    device: &dyn Device,
    params: Option<&NpuParams>,
    opts: &SchedulerOptions,
) -> Result<Plan> {
    let t0 = Instant::now();
    let graph0 = Graph::build(def, weights, registry)?;
    let decisions = placement::place(&graph0, device);
    let npu = device.kind() == DeviceKind::Npu;
    let caps: Option<NpuCaps> = device.npu_caps();
    let (def1, fused, rejected) = match (npu && opts.fusion, params, caps.as_ref()) {
        (true, Some(p), Some(c)) => fusion::fuse(def, &graph0, &decisions, registry, p, c, opts),
        _ => (def.clone(), Vec::new(), Vec::new()),
    };
    let graph = if fused.is_empty() {
        graph0
    } else {
        Graph::build(&def1, weights, registry)?
    };
    let placements = if fused.is_empty() {
        decisions.clone()
    } else {
        placement::place(&graph, device)
    };
    let naive = transfers::insert_transfers(&graph, &placements);
    let (transfers, transfers_removed) = if opts.residency {
        transfers::remove_redundant(&graph, &placements, naive)
    } else {
        (naive, 0)
    };
    let memory = memory::plan_memory(&graph, &placements, &transfers);
    let timeline = match (npu, params, caps) {
        (true, Some(p), Some(c)) => schedule_device(&graph, &placements, &transfers, p, &c, opts)?,
        _ => Timeline::default(),
    };
    Ok(Plan {
        graph: Arc::new(graph),
        device: device.name().to_string(),
        params: params.cloned(),
        options: *opts,
        decisions,
        placements,
        fused,
        rejected,
        transfers,
        transfers_removed,
        memory,
        timeline,
        planning_time: t0.elapsed(),
    })
}

/// Tiling + pipelining: the command list of the device nodes in execution order, checked
/// against the device's limits, then replayed on virtual clocks.
fn schedule_device(
    graph: &Graph,
    placements: &[NodePlacement],
    transfers: &[Transfer],
    p: &NpuParams,
    caps: &NpuCaps,
    opts: &SchedulerOptions,
) -> Result<Timeline> {
    let columns = opts.columns.clamp(1, p.columns);
    let depth = if opts.double_buffer { 2 } else { 1 };
    let mut cmds = Vec::new();
    for &ni in &graph.order {
        if placements[ni].device != DeviceKind::Npu {
            continue;
        }
        let n = &graph.nodes[ni];
        let k =
            n.op.npu_kernel()
                .expect("placement put only nodes with an NPU kernel on the NPU");
        let work = k.work(&types_of(graph, &n.inputs), caps);
        let unfit = |reason: String| RuntimeError::Graph {
            graph: graph.name.clone(),
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
        for t in transfers
            .iter()
            .filter(|t| t.node == ni && t.direction == Direction::ToDevice)
        {
            cmds.push(Command::Host(HostCommand::SyncToDevice {
                value: t.value.clone(),
                bytes: t.bytes,
            }));
        }
        if opts.dispatch_per_tile {
            // One run per step, each with its own input and output sync (the seed's round trip).
            let sin = work.step.in_bytes;
            let sout = work.step.out_bytes;
            for s in 0..work.steps {
                cmds.push(Command::Host(HostCommand::SyncToDevice {
                    value: format!("{} tile {s}", n.name),
                    bytes: sin,
                }));
                cmds.push(Command::Dispatch(DispatchCommand {
                    node: n.name.clone(),
                    kernel: k.name().to_string(),
                    work: work.clone(),
                    steps: (s, s + 1),
                }));
                cmds.push(Command::Host(HostCommand::SyncToHost {
                    value: format!("{} tile {s}", n.name),
                    bytes: sout,
                }));
            }
        } else {
            cmds.push(Command::Dispatch(DispatchCommand {
                node: n.name.clone(),
                kernel: k.name().to_string(),
                work: work.clone(),
                steps: (0, work.steps),
            }));
        }
        for t in transfers
            .iter()
            .filter(|t| t.node == ni && t.direction == Direction::ToHost)
        {
            cmds.push(Command::Host(HostCommand::SyncToHost {
                value: t.value.clone(),
                bytes: t.bytes,
            }));
        }
    }
    let q = QueueConfig {
        columns,
        depth,
        synchronous: opts.dispatch_per_tile,
    };
    Ok(timeline::simulate(&cmds, p, &q))
}
