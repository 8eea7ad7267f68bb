//! Fusion: finds chains matching the registry's patterns among nodes placed on the
//! device, keeps those whose fused node the device runs, scores each by the time the
//! device's cost model says it saves, takes the best non-overlapping ones and replaces
//! the chains in the IR (in place: node ids stay stable).

use super::placement::place_node;
use super::{Pass, PassContext, Plan};
use crate::device::{with_view, Device, NodeView, Support};
use crate::error::Result;
use crate::fusion::ChainMatch;
use crate::ir::Graph;
use crate::op::{Attrs, Operator, ValueType};
use crate::plan::NodePlacement;
pub use crate::plan::{FusedGroup, RejectedFusion};
use crate::registry::Registry;
use std::collections::HashMap;

struct Candidate {
    pattern: String,
    nodes: Vec<usize>,
    op_name: String,
    attrs: Attrs,
    op: Box<dyn Operator>,
    inputs: Vec<usize>,
    saved_us: f64,
}

/// Projected time of the node described by `view` on `device`.
fn cost(device: &dyn Device, view: &NodeView) -> Option<f64> {
    device.cost_ns(view)
}

/// Finds, scores and applies fusions on `graph` for `device`; returns the groups applied
/// and the candidates left out.
pub fn fuse(
    graph: &mut Graph,
    placements: &mut Vec<NodePlacement>,
    registry: &Registry,
    device: &dyn Device,
) -> Result<(Vec<FusedGroup>, Vec<RejectedFusion>)> {
    let mut rejected = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
    {
        let graph: &Graph = graph;
        // Consumers of each value among the live nodes.
        let mut consumers: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (ni, n) in graph.live_nodes() {
            for (p, &v) in n.inputs.iter().enumerate() {
                consumers.entry(v).or_default().push((ni, p));
            }
        }
        // Nodes placed on this device: on an accelerator, not those left to the host; on
        // the host device, every node.
        let on_dev = |ni: usize| placements[ni].device == device.name();
        for pat in registry.patterns() {
            let chain = pat.chain();
            for (start, n0) in graph.live_nodes() {
                if n0.op_name != chain[0] || !on_dev(start) {
                    continue;
                }
                let mut nodes = vec![start];
                let mut ports = Vec::new();
                let mut ok = true;
                for want in &chain[1..] {
                    let last = &graph.nodes[*nodes.last().expect("chain starts with a node")];
                    let Some(&v) = last.outputs.first() else {
                        ok = false;
                        break;
                    };
                    let cons = consumers.get(&v).map(|c| c.as_slice()).unwrap_or(&[]);
                    if cons.len() != 1 || graph.outputs.contains(&v) || last.outputs.len() != 1 {
                        ok = false;
                        break;
                    }
                    let (next, port) = cons[0];
                    if graph.nodes[next].op_name != *want || !on_dev(next) {
                        ok = false;
                        break;
                    }
                    nodes.push(next);
                    ports.push(port);
                }
                if !ok {
                    continue;
                }
                let names: Vec<String> =
                    nodes.iter().map(|&i| graph.nodes[i].name.clone()).collect();
                let m = ChainMatch {
                    graph,
                    nodes: &nodes,
                    ports: &ports,
                };
                let Some(f) = pat.fuse(&m) else {
                    rejected.push(RejectedFusion {
                        pattern: pat.name().into(),
                        nodes: names,
                        reason: "the pattern declined this match".into(),
                    });
                    continue;
                };
                let reject = |reason: String| RejectedFusion {
                    pattern: pat.name().into(),
                    nodes: names.clone(),
                    reason,
                };
                let Some(opdef) = registry.get(&f.op) else {
                    rejected.push(reject(format!("fused op '{}' is not registered", f.op)));
                    continue;
                };
                let attrs = Attrs(f.attrs.clone());
                let op = match opdef.build(&attrs) {
                    Ok(op) => op,
                    Err(e) => {
                        rejected.push(reject(format!("fused op '{}': {e}", f.op)));
                        continue;
                    }
                };
                if f.inputs.iter().any(|&v| v >= graph.values.len()) {
                    rejected.push(reject("the fused node names an unknown input".into()));
                    continue;
                }
                let in_types: Vec<ValueType> = f
                    .inputs
                    .iter()
                    .map(|&v| graph.values[v].ty.clone())
                    .collect();
                let last = &graph.nodes[*nodes.last().expect("chain is not empty")];
                let out_types: Vec<ValueType> = last
                    .outputs
                    .iter()
                    .map(|&v| graph.values[v].ty.clone())
                    .collect();
                let name = names.join("+");
                let view = NodeView {
                    name: &name,
                    op_name: &f.op,
                    op: op.as_ref(),
                    attrs: &attrs,
                    inputs: &in_types,
                    outputs: &out_types,
                    stateful: false,
                };
                if let Support::No { reason } = device.supports(&view) {
                    rejected.push(reject(format!(
                        "{} does not run it: {reason}",
                        device.name()
                    )));
                    continue;
                }
                let Some(fused_ns) = cost(device, &view) else {
                    rejected.push(reject(format!(
                        "{} has no cost model to score it",
                        device.name()
                    )));
                    continue;
                };
                let parts_ns: f64 = nodes
                    .iter()
                    .map(|&i| with_view(graph, &graph.nodes[i], |v| cost(device, v)).unwrap_or(0.0))
                    .sum();
                cands.push(Candidate {
                    pattern: pat.name().into(),
                    nodes,
                    op_name: f.op.clone(),
                    attrs,
                    op,
                    inputs: f.inputs.clone(),
                    saved_us: (parts_ns - fused_ns) / 1e3,
                });
            }
        }
    }
    // Best score first; a node joins at most one fused group.
    cands.sort_by(|a, b| b.saved_us.total_cmp(&a.saved_us));
    let mut taken = vec![false; graph.nodes.len()];
    let mut groups = Vec::new();
    for c in cands {
        let names: Vec<String> = c
            .nodes
            .iter()
            .map(|&i| graph.nodes[i].name.clone())
            .collect();
        if c.saved_us <= 0.0 {
            rejected.push(RejectedFusion {
                pattern: c.pattern,
                nodes: names,
                reason: format!("projected to save nothing ({:.1} µs)", c.saved_us),
            });
            continue;
        }
        if let Some(&busy) = c.nodes.iter().find(|&&i| taken[i]) {
            rejected.push(RejectedFusion {
                pattern: c.pattern,
                nodes: names,
                reason: format!(
                    "node '{}' is already in a higher-scoring fusion",
                    graph.nodes[busy].name
                ),
            });
            continue;
        }
        for &i in &c.nodes {
            taken[i] = true;
        }
        let id = graph.replace_chain(
            &c.nodes,
            names.join("+"),
            c.op_name.clone(),
            c.attrs,
            c.op,
            c.inputs,
        )?;
        taken.push(true);
        placements.push(place_node(device, graph, &graph.nodes[id]));
        groups.push(FusedGroup {
            pattern: c.pattern,
            nodes: names,
            op: c.op_name,
            saved_us: c.saved_us,
        });
    }
    Ok((groups, rejected))
}

/// The fusion pass.
pub struct FusionPass;

impl Pass for FusionPass {
    fn name(&self) -> &str {
        "fusion"
    }

    fn optional(&self) -> bool {
        true
    }

    fn run(&self, cx: &PassContext, plan: &mut Plan) -> Result<String> {
        let mut placements = std::mem::take(&mut plan.placements);
        let r = fuse(plan.graph_mut()?, &mut placements, cx.registry, cx.device);
        plan.placements = placements;
        let (fused, rejected) = r?;
        let mut s = format!(
            "{} groups fused, {} candidates left out; {} nodes remain",
            fused.len(),
            rejected.len(),
            plan.graph.order.len()
        );
        let mut by_pattern: std::collections::BTreeMap<&str, usize> = Default::default();
        for f in &fused {
            *by_pattern.entry(f.pattern.as_str()).or_default() += 1;
        }
        for (p, n) in by_pattern {
            s.push_str(&format!("\n{n} × {p}"));
        }
        for f in &fused {
            s.push_str(&format!(
                "\n{:<18} {} -> {} (saves {:.1} µs projected)",
                f.pattern,
                f.nodes.join(" + "),
                f.op,
                f.saved_us
            ));
        }
        for r in &rejected {
            s.push_str(&format!(
                "\nnot fused: {} {}: {}",
                r.pattern,
                r.nodes.join(" + "),
                r.reason
            ));
        }
        plan.fused = fused;
        plan.rejected = rejected;
        Ok(s)
    }
}
