//! Devices: what a device can run and how it executes the scheduler's dispatches.
//!
//! The CPU runs every operator through [`Operator::eval`](crate::op::Operator::eval). An
//! accelerator (the NPU timing simulator, the real NPU through XRT) runs only the nodes
//! whose operator offers an [`NpuKernel`] that accepts the node's types; the scheduler asks
//! [`Device::supports`] for every node and logs each answer with its reason.

mod npu_kernel;
pub mod npu_sim;

pub use npu_kernel::{KernelWork, NpuCaps, NpuKernel, TileWork};

use crate::error::OpError;
use crate::ir::{Graph, Node};
use crate::op::ValueType;
use crate::tensor::Tensor;
use std::fmt;

/// Which kind of device a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// The host CPU: runs everything.
    Cpu,
    /// An NPU (simulated or real): runs nodes with an NPU kernel.
    Npu,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Npu => "npu",
        })
    }
}

/// A device's answer for one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    /// The node runs on this device with the named kernel.
    Yes { kernel: String },
    /// It does not, and why (shown by `amanuensis plan`).
    No { reason: String },
}

/// Error of a device while executing (the executor names graph and node around it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// The kernel or its reference rejected the inputs.
    #[error("{0}")]
    Kernel(#[from] OpError),
    /// The device failed (timeout, error state, lost device): the node can be re-run on the CPU.
    #[error("device {device}: {reason}")]
    Fault { device: String, reason: String },
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

/// Whether every dim of every type is known (NPU schedules are compiled for static shapes).
pub fn all_static(types: &[ValueType]) -> bool {
    types
        .iter()
        .all(|t| t.shape.iter().all(|d| d.known().is_some()))
}

/// A device the scheduler places nodes on and the executor dispatches to.
pub trait Device: Send {
    /// The name used on the command line (`cpu`, `npu-sim`, `npu`).
    fn name(&self) -> &str;

    /// CPU or NPU.
    fn kind(&self) -> DeviceKind;

    /// Whether this device runs `node` of `graph`, with the kernel's name or the reason not.
    fn supports(&self, graph: &Graph, node: &Node) -> Support;

    /// The capabilities the cost model needs (NPUs only).
    fn npu_caps(&self) -> Option<NpuCaps> {
        None
    }

    /// Runs one node that [`supports`](Device::supports) accepted.
    fn execute(&mut self, node: &Node, inputs: &[&Tensor]) -> Result<Vec<Tensor>, DeviceError>;
}

/// The CPU: every node, through the operator's own evaluation.
#[derive(Debug, Default)]
pub struct CpuDevice {
    pool: crate::memory::BufferPool,
}

impl Device for CpuDevice {
    fn name(&self) -> &str {
        "cpu"
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn supports(&self, _graph: &Graph, _node: &Node) -> Support {
        Support::Yes {
            kernel: "cpu".into(),
        }
    }

    fn execute(&mut self, node: &Node, inputs: &[&Tensor]) -> Result<Vec<Tensor>, DeviceError> {
        let mut no_states: [Tensor; 0] = [];
        let mut ctx = crate::op::EvalContext::new(&mut self.pool, &mut no_states);
        Ok(node.op.eval(&mut ctx, inputs)?)
    }
}

/// The standard NPU placement rule shared by the simulator and the real device: the op
/// must offer an NPU kernel, the node's shapes must be static, and the kernel must accept them.
pub fn npu_support(graph: &Graph, node: &Node) -> Support {
    let Some(k) = node.op.npu_kernel() else {
        return Support::No {
            reason: format!("no NPU kernel for op '{}'", node.op_name),
        };
    };
    let (ins, outs) = node_types(graph, node);
    if !all_static(&ins) || !all_static(&outs) {
        return Support::No {
            reason: "shapes are not static (NPU schedules are compiled per shape)".into(),
        };
    }
    if !node.states.is_empty() {
        return Support::No {
            reason: "node keeps state between runs (host-resident)".into(),
        };
    }
    match k.check(&ins) {
        Ok(()) => Support::Yes {
            kernel: k.name().to_string(),
        },
        Err(reason) => Support::No {
            reason: format!("kernel '{}' rejects these inputs: {reason}", k.name()),
        },
    }
}
