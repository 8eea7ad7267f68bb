//! `npu-sim`: a timing model of the Ryzen AI NPU. It runs each node with its kernel's
//! bit-exact reference (so outputs are real numbers) while the scheduler's static
//! schedule, replayed on virtual per-queue clocks, gives the projected time. Its times are
//! projections and are always labelled so.

mod params;

pub use params::NpuParams;

use super::{npu_support, Device, DeviceError, DeviceKind, NpuCaps, Support};
use crate::ir::{Graph, Node};
use crate::tensor::Tensor;

/// The simulated NPU device.
#[derive(Debug, Clone)]
pub struct NpuSim {
    params: NpuParams,
}

impl NpuSim {
    /// A simulator with one parameter set.
    pub fn new(params: NpuParams) -> Self {
        NpuSim { params }
    }

    /// Its parameters.
    pub fn params(&self) -> &NpuParams {
        &self.params
    }
}

impl Device for NpuSim {
    fn name(&self) -> &str {
        "npu-sim"
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Npu
    }

    fn supports(&self, graph: &Graph, node: &Node) -> Support {
        npu_support(graph, node)
    }

    fn npu_caps(&self) -> Option<NpuCaps> {
        Some(self.params.caps())
    }

    fn execute(&mut self, node: &Node, inputs: &[&Tensor]) -> Result<Vec<Tensor>, DeviceError> {
        let k = node.op.npu_kernel().ok_or_else(|| DeviceError::Fault {
            device: "npu-sim".into(),
            reason: format!("node '{}' ({}) has no NPU kernel", node.name, node.op_name),
        })?;
        Ok(k.eval(inputs)?)
    }
}
