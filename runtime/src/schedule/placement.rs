//! Placement: every node goes to the preferred device when that device runs it, else to
//! the CPU, and each decision is recorded with its reason. Fallback is never silent.

use crate::device::{Device, DeviceKind, Support};
use crate::ir::Graph;

/// Where one node runs and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlacement {
    /// Node name.
    pub node: String,
    /// Its op.
    pub op: String,
    /// The device it runs on.
    pub device: DeviceKind,
    /// The kernel that runs it (`cpu` on the CPU).
    pub kernel: String,
    /// Why it runs there.
    pub reason: String,
}

/// Places every node of `graph` (indexed like `graph.nodes`).
pub fn place(graph: &Graph, device: &dyn Device) -> Vec<NodePlacement> {
    graph
        .nodes
        .iter()
        .map(|n| {
            if device.kind() == DeviceKind::Cpu {
                return NodePlacement {
                    node: n.name.clone(),
                    op: n.op_name.clone(),
                    device: DeviceKind::Cpu,
                    kernel: "cpu".into(),
                    reason: "cpu device selected".into(),
                };
            }
            match device.supports(graph, n) {
                Support::Yes { kernel } => NodePlacement {
                    node: n.name.clone(),
                    op: n.op_name.clone(),
                    device: device.kind(),
                    reason: format!("{} kernel '{kernel}' accepts the node", device.name()),
                    kernel,
                },
                Support::No { reason } => NodePlacement {
                    node: n.name.clone(),
                    op: n.op_name.clone(),
                    device: DeviceKind::Cpu,
                    kernel: "cpu".into(),
                    reason: format!("CPU fallback: {reason}"),
                },
            }
        })
        .collect()
}
