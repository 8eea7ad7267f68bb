//! Devices: what a device can run, and the program it makes of its part of a plan.
//!
//! A device answers [`Device::supports`] for every node (the placement pass logs each
//! answer with its reason), may price nodes for the fusion pass ([`Device::cost_ns`]),
//! may add lowering passes of its own ([`Device::lowering_passes`]), and at load turns the
//! finished plan into a [`Program`] ([`Device::load`]): weights uploaded once, buffers
//! allocated from the plan's memory arena. The executor then drives the program with the
//! plan's steps: uploads, device segments and downloads are what actually runs.
//!
//! The core knows one device by name, the host CPU ([`HOST`]), which runs every operator
//! through [`Operator::eval`](crate::op::Operator::eval). Every other device is a plug-in
//! found through a [`DeviceRegistry`].

mod registry;

pub use registry::{DeviceEntry, DeviceRegistry, DeviceStatus, OpenDevice};

use crate::error::OpError;
use crate::error::Result;
use crate::ir::{Graph, Node};
use crate::op::{Attrs, Operator, ValueType};
use crate::plan::{Plan, SchedulerOptions};
use crate::registry::Registry;
use crate::tensor::Tensor;
use crate::weights::WeightStore;
use std::sync::Arc;

pub use crate::plan::HOST;

/// A device's answer for one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    /// The node runs on this device with the named kernel.
    Yes { kernel: String },
    /// It does not, and why (shown by `amanuensis plan`).
    No { reason: String },
}

/// Error of a device while loading or executing (the executor names graph and node).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// The kernel or its reference rejected the inputs.
    #[error("{0}")]
    Kernel(#[from] OpError),
    /// The device failed (timeout, error state, lost device): the run can be repeated on
    /// the CPU.
    #[error("device {device}: {reason}")]
    Fault { device: String, reason: String },
}

/// What a device sees of a node: enough to decide placement and price it, for nodes of
/// the graph and for candidates a fusion pattern proposes alike.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Node name.
    pub name: &'a str,
    /// Op name.
    pub op_name: &'a str,
    /// The configured operator (devices ask it for their kernel with
    /// [`Operator::kernel`]).
    pub op: &'a dyn Operator,
    /// The node's attributes (a compiled kernel may be specific to some).
    pub attrs: &'a Attrs,
    /// Input types.
    pub inputs: &'a [ValueType],
    /// Output types.
    pub outputs: &'a [ValueType],
    /// Whether the node keeps state between runs.
    pub stateful: bool,
}

/// Types of a node's inputs and outputs, looked up in its graph.
pub fn node_types(graph: &Graph, node: &Node) -> (Vec<ValueType>, Vec<ValueType>) {
    let ins = node
        .inputs
        .iter()
        .map(|&v| graph.values[v].ty.clone())
        .collect();
    let outs = node
        .outputs
        .iter()
        .map(|&v| graph.values[v].ty.clone())
        .collect();
    (ins, outs)
}

/// Calls `f` with the view of node `node` of `graph`.
pub fn with_view<R>(graph: &Graph, node: &Node, f: impl FnOnce(&NodeView) -> R) -> R {
    let (ins, outs) = node_types(graph, node);
    f(&NodeView {
        name: &node.name,
        op_name: &node.op_name,
        op: node.op.as_ref(),
        attrs: &node.attrs,
        inputs: &ins,
        outputs: &outs,
        stateful: !node.states.is_empty(),
    })
}

/// Whether every dim of every type is known.
pub fn all_static(types: &[ValueType]) -> bool {
    types
        .iter()
        .all(|t| t.shape.iter().all(|d| d.known().is_some()))
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

/// A device the scheduler places nodes on. One instance per process is shared by every
/// session of a model (it holds the device handle and, on an NPU, its contexts).
pub trait Device: Send + Sync {
    /// The name used on the command line (`cpu`, `npu-sim`, `npu`, …).
    fn name(&self) -> &str;

    /// Whether this device runs the node, with the kernel's name or the reason not.
    fn supports(&self, node: &NodeView) -> Support;

    /// Projected time of one node on this device, ns (the fusion pass's score); `None`
    /// when the device has no cost model.
    fn cost_ns(&self, _node: &NodeView) -> Option<f64> {
        None
    }

    /// Passes of this device that run after the core's (tiling, pipelining, …).
    fn lowering_passes(&self) -> Vec<Box<dyn Pass>> {
        Vec::new()
    }

    /// Turns the plan's part for this device into a program: allocates the plan's arena,
    /// uploads the weights its nodes use (once), prepares every run.
    fn load(
        &self,
        plan: &Arc<Plan>,
        weights: &WeightStore,
    ) -> Result<Box<dyn Program>, DeviceError>;
}

/// What a device program reports about one graph run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgramRunStats {
    /// Runs submitted to the device.
    pub device_runs: usize,
    /// Bytes synced host → device.
    pub bytes_to_device: u64,
    /// Bytes synced device → host.
    pub bytes_from_device: u64,
    /// Projected device time (simulated devices only), ns.
    pub simulated_ns: f64,
}

/// Identifies one graph run for a program's logs and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunContext<'a> {
    /// Graph name.
    pub graph: &'a str,
    /// Caller-chosen run label (the transcriber sets the 30-s window index).
    pub window: Option<usize>,
}

/// A device's compiled part of one plan. Values are addressed by their id in
/// [`Plan::graph`]; the executor calls these in the plan's step order.
pub trait Program: Send {
    /// Starts a graph run.
    fn begin_run(&mut self, _cx: &RunContext) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Host → device: the host tensor becomes the device copy of value `value`.
    fn upload(&mut self, value: usize, tensor: &Tensor) -> Result<(), DeviceError>;

    /// Runs the device nodes of segment `segment` of [`Plan::steps`] (all inputs are
    /// resident by then).
    fn run_segment(&mut self, segment: usize) -> Result<(), DeviceError>;

    /// Device → host: a host copy of value `value`.
    fn download(&mut self, value: usize) -> Result<Tensor, DeviceError>;

    /// Ends a graph run (a simulator replays what ran here).
    fn end_run(&mut self) -> Result<ProgramRunStats, DeviceError> {
        Ok(ProgramRunStats::default())
    }
}

/// The host CPU: runs every node through the operator's own evaluation. Its nodes are
/// executed by the session itself, so it loads an empty program.
#[derive(Debug, Default)]
pub struct CpuDevice;

impl Device for CpuDevice {
    fn name(&self) -> &str {
        HOST
    }

    fn supports(&self, _node: &NodeView) -> Support {
        Support::Yes {
            kernel: "cpu".into(),
        }
    }

    /// The fusion pass's price of a host node: the bytes of its inputs and outputs at a
    /// nominal 20 GB/s, plus 2 µs to dispatch it. Arithmetic is left out because a fused
    /// op does the same arithmetic as its chain: what fusing saves on the host is writing
    /// and reading the intermediate and one dispatch. Unknown dims count as 1 (the
    /// saving's lower bound).
    fn cost_ns(&self, node: &NodeView) -> Option<f64> {
        const BYTES_PER_NS: f64 = 20.0;
        const DISPATCH_NS: f64 = 2000.0;
        let bytes: f64 = node
            .inputs
            .iter()
            .chain(node.outputs)
            .map(|t| {
                let n: f64 = t
                    .shape
                    .iter()
                    .map(|d| d.known().unwrap_or(1) as f64)
                    .product();
                n * t.dtype.size() as f64
            })
            .sum();
        Some(bytes / BYTES_PER_NS + DISPATCH_NS)
    }

    fn load(
        &self,
        _plan: &Arc<Plan>,
        _weights: &WeightStore,
    ) -> Result<Box<dyn Program>, DeviceError> {
        Ok(Box::new(NoProgram))
    }
}

/// The program of a device with no nodes in the plan.
#[derive(Debug)]
pub struct NoProgram;

impl Program for NoProgram {
    fn upload(&mut self, value: usize, _: &Tensor) -> Result<(), DeviceError> {
        Err(OpError(format!("no device program holds value {value}")).into())
    }
    fn run_segment(&mut self, segment: usize) -> Result<(), DeviceError> {
        Err(OpError(format!("no device program has segment {segment}")).into())
    }
    fn download(&mut self, value: usize) -> Result<Tensor, DeviceError> {
        Err(OpError(format!("no device program holds value {value}")).into())
    }
}
