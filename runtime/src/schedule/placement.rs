//! Placement: every node goes to the selected device when that device runs it, else to
//! the host, and each decision is recorded with its reason. Fallback is never silent.

use super::{Pass, PassContext, Plan};
use crate::device::{with_view, Support, HOST};
use crate::error::Result;
use crate::ir::Node;
pub use crate::plan::NodePlacement;

/// Where `device` would place node `n` of `graph`, with the reason.
pub fn place_node(
    device: &dyn crate::device::Device,
    graph: &crate::ir::Graph,
    n: &Node,
) -> NodePlacement {
    if device.name() == HOST {
        return NodePlacement::host(n, "cpu device selected");
    }
    match with_view(graph, n, |v| device.supports(v)) {
        Support::Yes { kernel } => NodePlacement {
            node: n.name.clone(),
            op: n.op_name.clone(),
            device: device.name().to_string(),
            reason: format!("{} kernel '{kernel}' accepts the node", device.name()),
            kernel,
        },
        Support::No { reason } => NodePlacement::host(n, format!("CPU fallback: {reason}")),
    }
}

/// The placement pass.
pub struct PlacementPass;

impl Pass for PlacementPass {
    fn name(&self) -> &str {
        "placement"
    }

    fn optional(&self) -> bool {
        true
    }

    fn run(&self, cx: &PassContext, plan: &mut Plan) -> Result<String> {
        let g = plan.graph.clone();
        plan.placements = g
            .nodes
            .iter()
            .map(|n| place_node(cx.device, &g, n))
            .collect();
        let on = plan.placements.iter().filter(|p| !p.on_host()).count();
        let mut s = format!(
            "{on} of {} nodes on {}, {} on the host",
            g.nodes.len(),
            cx.device.name(),
            g.nodes.len() - on
        );
        // One line per distinct fallback reason, with the ops it applies to.
        let mut reasons: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
            Default::default();
        for p in plan.placements.iter().filter(|p| p.on_host()) {
            reasons
                .entry(p.reason.as_str())
                .or_default()
                .insert(p.op.as_str());
        }
        if on > 0 {
            for (r, ops) in reasons {
                let ops: Vec<&str> = ops.into_iter().collect();
                s.push_str(&format!("\nhost: {r} [{}]", ops.join(", ")));
            }
        }
        Ok(s)
    }
}
