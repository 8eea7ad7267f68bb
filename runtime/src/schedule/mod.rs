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

pub use fusion::{FusedGroup, RejectedFusion};
pub use memory::{MemoryPlan, Slot};
pub use placement::NodePlacement;
pub use transfers::{Direction, Transfer};

use crate::device::{Device, HOST};
use crate::error::{Result, RuntimeError};
use crate::ir::Graph;
use crate::registry::Registry;
use std::any::Any;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which passes run and how far (every pass on is the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Optional passes to skip, by name (`fusion`, `residency`, or a device pass's).
    pub skip: BTreeSet<String>,
    /// Stop after this pass (the plan can then be printed but not executed).
    pub stop_after: Option<String>,
}

impl SchedulerOptions {
    /// All passes on.
    pub fn full() -> Self {
        Self::default()
    }

    /// The same options with `pass` skipped.
    pub fn skipping(mut self, pass: &str) -> Self {
        self.skip.insert(pass.to_string());
        self
    }

    /// Whether `pass` is switched off.
    pub fn skips(&self, pass: &str) -> bool {
        self.skip.contains(pass)
    }
}

/// What the session executes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run node `n` on the host.
    Host(usize),
    /// Copy value `v` from the host to the device.
    Upload(usize),
    /// Run device segment `k` ([`Plan::segments`]): its runs are submitted together.
    Segment(usize),
    /// Copy value `v` from the device to the host.
    Download(usize),
}

/// A pass's record in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PassRecord {
    /// Pass name.
    pub name: String,
    /// What it did (one or more lines), or why it did not run.
    pub report: String,
    /// Whether it ran.
    pub ran: bool,
    /// How long it took.
    pub time: Duration,
}

/// A scheduler pass: edits the plan (and its graph) in place and says what it did.
pub trait Pass: Send + Sync {
    /// A short unique name (`amanuensis plan --stop-after NAME`, `--skip-pass NAME`).
    fn name(&self) -> &str;

    /// Whether the pass may be skipped (a pass the executor depends on may not).
    fn optional(&self) -> bool {
        false
    }

    /// Runs the pass; returns its report.
    fn run(&self, cx: &PassContext, plan: &mut Plan) -> Result<String>;
}

/// What passes may consult besides the plan.
pub struct PassContext<'a> {
    /// The selected device.
    pub device: &'a dyn Device,
    /// The operator registry (fusion patterns, fused ops).
    pub registry: &'a Registry,
    /// The options.
    pub options: &'a SchedulerOptions,
}

/// The scheduler's result for one graph: the IR after the passes, what each pass
/// decided, and the steps the session executes.
pub struct Plan {
    /// The graph as executed (fused nodes appended, replaced ones marked).
    pub graph: Arc<Graph>,
    /// Name of the selected device.
    pub device: String,
    /// The options used.
    pub options: SchedulerOptions,
    /// Nodes in the graph as loaded (ids below this are the original nodes).
    pub loaded_nodes: usize,
    /// Placement of every node id (replaced nodes keep their decision).
    pub placements: Vec<NodePlacement>,
    /// Fusions applied.
    pub fused: Vec<FusedGroup>,
    /// Candidates left out.
    pub rejected: Vec<RejectedFusion>,
    /// Transfers that remain.
    pub transfers: Vec<Transfer>,
    /// Transfers the residency pass removed.
    pub transfers_removed: usize,
    /// Arena per device.
    pub memory: Vec<MemoryPlan>,
    /// Device node ids of each segment, in execution order.
    pub segments: Vec<Vec<usize>>,
    /// What the session executes.
    pub steps: Vec<Step>,
    /// Device runs per graph run (set by the device's lowering; one per device node otherwise).
    pub device_runs: usize,
    /// Projected device time of one graph run, ns (simulated devices' cost models).
    pub projected_ns: Option<f64>,
    /// The device lowering's result, for the device's own `load` (downcast by it).
    pub lowering: Option<Arc<dyn Any + Send + Sync>>,
    /// Extra report lines of the device lowering.
    pub device_report: Vec<String>,
    /// Every pass, in order, with its report.
    pub passes: Vec<PassRecord>,
    /// The pass planning stopped after, when it stopped early.
    pub stopped_after: Option<String>,
    /// Wall time the passes took.
    pub planning_time: Duration,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("graph", &self.graph.name)
            .field("device", &self.device)
            .field("steps", &self.steps.len())
            .field("passes", &self.passes)
            .finish()
    }
}

impl Plan {
    /// A plan of `graph` before any pass: every node on the host.
    fn new(graph: Graph, device: &str, options: &SchedulerOptions) -> Plan {
        let placements = graph
            .nodes
            .iter()
            .map(|n| NodePlacement::host(n, "no placement pass ran"))
            .collect();
        Plan {
            loaded_nodes: graph.nodes.len(),
            graph: Arc::new(graph),
            device: device.to_string(),
            options: options.clone(),
            placements,
            fused: Vec::new(),
            rejected: Vec::new(),
            transfers: Vec::new(),
            transfers_removed: 0,
            memory: Vec::new(),
            segments: Vec::new(),
            steps: Vec::new(),
            device_runs: 0,
            projected_ns: None,
            lowering: None,
            device_report: Vec::new(),
            passes: Vec::new(),
            stopped_after: None,
            planning_time: Duration::ZERO,
        }
    }

    /// The graph, for a pass that edits it (unique while the passes run).
    pub fn graph_mut(&mut self) -> Result<&mut Graph> {
        let name = self.graph.name.clone();
        Arc::get_mut(&mut self.graph).ok_or_else(|| RuntimeError::Graph {
            graph: name,
            node: "(plan)".into(),
            reason: "the graph of a finished plan cannot be edited".into(),
        })
    }

    /// Whether node `ni` of [`Plan::graph`] runs on the device (not the host).
    pub fn on_device(&self, ni: usize) -> bool {
        self.placements[ni].device != HOST
    }

    /// Placement of the graph as loaded (the decision log).
    pub fn decisions(&self) -> &[NodePlacement] {
        &self.placements[..self.loaded_nodes]
    }

    /// Whether every pass ran, so the plan can be executed.
    pub fn is_complete(&self) -> bool {
        self.stopped_after.is_none()
    }

    /// Runs submitted to the device per graph run.
    pub fn dispatches(&self) -> usize {
        self.device_runs
    }

    /// Bytes of all remaining transfers per run.
    pub fn transfer_bytes(&self) -> u64 {
        self.transfers.iter().map(|t| t.bytes).sum()
    }

    /// The device lowering's result as `T`, when it is one.
    pub fn lowering<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.lowering.as_ref().and_then(|l| l.downcast_ref::<T>())
    }

    /// A human-readable report (what `amanuensis plan` prints for one graph).
    pub fn report(&self) -> String {
        let mut s = String::new();
        let g = &self.graph;
        let live = g.order.len();
        let dev = g.order.iter().filter(|&&n| self.on_device(n)).count();
        let _ = writeln!(
            s,
            "graph '{}' on {}: {} nodes as loaded, {} after the passes ({} on {}, {} on the host), planned in {:.2} ms",
            g.name,
            self.device,
            self.loaded_nodes,
            live,
            dev,
            self.device,
            live - dev,
            self.planning_time.as_secs_f64() * 1e3
        );
        for p in &self.passes {
            let state = if p.ran { "" } else { " (skipped)" };
            let mut lines = p.report.lines();
            let first = lines.next().unwrap_or("");
            let _ = writeln!(
                s,
                "  pass {:<10} {:>7.2} ms{state}  {first}",
                p.name,
                p.time.as_secs_f64() * 1e3
            );
            for l in lines {
                let _ = writeln!(s, "      {l}");
            }
        }
        if let Some(stop) = &self.stopped_after {
            let _ = writeln!(s, "  stopped after pass '{stop}' (this plan cannot run)");
        }
        s
    }
}

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
