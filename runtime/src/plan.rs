//! The scheduler's result as data: where each node runs and why, the fusions, transfers,
//! memory arenas and steps the passes decided. The passes that fill it in are in
//! [`crate::schedule`]; a device reads it when it turns its part into a program
//! ([`crate::device::Device::load`]), and the session executes its [`Plan::steps`].

use crate::error::{Result, RuntimeError};
use crate::ir::{Graph, Node};
use std::any::Any;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Name of the host CPU, the device every node can fall back to.
pub const HOST: &str = "cpu";

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
    pub(crate) fn new(graph: Graph, device: &str, options: &SchedulerOptions) -> Plan {
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

/// Where one node runs and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlacement {
    /// Node name.
    pub node: String,
    /// Its op.
    pub op: String,
    /// The device it runs on (`cpu` for the host).
    pub device: String,
    /// The kernel that runs it (`cpu` on the host).
    pub kernel: String,
    /// Why it runs there.
    pub reason: String,
}

impl NodePlacement {
    /// The node on the host, for `reason`.
    pub fn host(n: &Node, reason: impl Into<String>) -> Self {
        NodePlacement {
            node: n.name.clone(),
            op: n.op_name.clone(),
            device: HOST.into(),
            kernel: "cpu".into(),
            reason: reason.into(),
        }
    }

    /// Whether the node runs on the host.
    pub fn on_host(&self) -> bool {
        self.device == HOST
    }
}

/// A fusion applied to the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedGroup {
    /// Pattern name.
    pub pattern: String,
    /// Original nodes, producer first.
    pub nodes: Vec<String>,
    /// The fused op.
    pub op: String,
    /// Projected time saved per run, µs (the score).
    pub saved_us: f64,
}

/// A candidate that was not applied, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedFusion {
    /// Pattern name.
    pub pattern: String,
    /// Nodes it matched.
    pub nodes: Vec<String>,
    /// Why it was left out.
    pub reason: String,
}

/// Direction of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host memory → device buffer (sync to device).
    ToDevice,
    /// Device buffer → host memory (sync from device).
    ToHost,
}

/// One transfer node of the partitioned graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// The value moved.
    pub value: String,
    /// Which way.
    pub direction: Direction,
    /// Its size.
    pub bytes: u64,
    /// Node (index into the graph) it is attached to: the consumer of a to-device
    /// transfer, the producer of a to-host one.
    pub node: usize,
}

/// One device's arena.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The device (`cpu` for the host).
    pub device: String,
    /// Arena size: the highest offset + size over all buffers.
    pub arena_bytes: u64,
    /// Most bytes live at once.
    pub peak_live_bytes: u64,
    /// Weights its nodes read, in the graph's types (a device may hold them in its own
    /// format; uploaded once at load).
    pub weight_bytes: u64,
    /// (value, offset, bytes) of every buffer in the arena; the offset is its slot's.
    /// A value with a symbolic shape has 0 bytes (sized at run time).
    pub buffers: Vec<(String, u64, u64)>,
    /// The arena's slots, in offset order.
    pub slots: Vec<Slot>,
}

/// A range of the arena that values with disjoint lifetimes use in turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Offset in the arena (bytes).
    pub offset: u64,
    /// Size: its largest known value, aligned (values of symbolic shape count 0).
    pub bytes: u64,
    /// The values that use it, in the order they become live.
    pub values: Vec<String>,
}

impl MemoryPlan {
    /// Index in [`slots`](Self::slots) of the slot a value uses.
    pub fn slot_index(&self, value: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.values.iter().any(|v| v == value))
    }

    /// Offset and size of a value's buffer.
    pub fn slot(&self, value: &str) -> Option<(u64, u64)> {
        self.buffers
            .iter()
            .find(|b| b.0 == value)
            .map(|b| (b.1, b.2))
    }
}
