//! Fusion: finds chains and sibling groups matching the registry's patterns among nodes
//! placed on the device, keeps those whose fused node the device runs, scores each by the
//! time the device's cost model says it saves, takes the best non-overlapping ones and
//! replaces them in the IR (in place: node ids stay stable), in rounds until one fuses
//! nothing more.

use super::placement::place_node;
use super::{Pass, PassContext, Plan};
use crate::device::{with_view, Device, NodeView, Support};
use crate::error::Result;
use crate::fusion::{ChainMatch, FusedNode, FusionPattern, PatternShape, SiblingMatch};
use crate::ir::Graph;
use crate::op::{Attrs, Operator, ValueType};
use crate::plan::NodePlacement;
pub use crate::plan::{FusedGroup, RejectedFusion};
use crate::registry::Registry;
use std::collections::HashMap;

struct Candidate {
    pattern: String,
    /// The matched nodes (a chain producer first, or siblings in execution order).
    nodes: Vec<usize>,
    siblings: bool,
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

/// A match a pattern turned into a fused node, before the device's checks.
struct Proposal {
    pattern: String,
    nodes: Vec<usize>,
    siblings: bool,
    fused: FusedNode,
    /// The values the fused node takes over (its outputs).
    outputs: Vec<usize>,
}

/// Finds, scores and applies fusions on `graph` for `device`; returns the groups applied
/// and the candidates left out. Rounds repeat while one fuses something, so a pattern
/// can match what an earlier round fused (a chain into a fused group of siblings).
pub fn fuse(
    graph: &mut Graph,
    placements: &mut Vec<NodePlacement>,
    registry: &Registry,
    device: &dyn Device,
) -> Result<(Vec<FusedGroup>, Vec<RejectedFusion>)> {
    let mut groups = Vec::new();
    let mut rejected: Vec<RejectedFusion> = Vec::new();
    loop {
        let (cands, round_rejected) = candidates(graph, placements, registry, device);
        for r in round_rejected {
            if !rejected.contains(&r) {
                rejected.push(r);
            }
        }
        let before = groups.len();
        apply(graph, placements, device, cands, &mut groups, &mut rejected)?;
        if groups.len() == before {
            break;
        }
    }
    // A candidate left out in one round may have been fused in a later one.
    rejected.retain(|r| {
        !groups
            .iter()
            .any(|g| g.pattern == r.pattern && g.nodes == r.nodes)
    });
    Ok((groups, rejected))
}

/// Every match of the registry's patterns among the device's live nodes, checked and
/// scored.
fn candidates(
    graph: &Graph,
    placements: &[NodePlacement],
    registry: &Registry,
    device: &dyn Device,
) -> (Vec<Candidate>, Vec<RejectedFusion>) {
    let mut rejected = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
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
    let mut proposals: Vec<Proposal> = Vec::new();
    for pat in registry.patterns() {
        match pat.shape() {
            PatternShape::Chain => chain_proposals(
                graph,
                &consumers,
                &on_dev,
                pat.as_ref(),
                &mut proposals,
                &mut rejected,
            ),
            PatternShape::Siblings { port } => sibling_proposals(
                graph,
                &consumers,
                &on_dev,
                pat.as_ref(),
                port,
                &mut proposals,
                &mut rejected,
            ),
        }
    }
    for p in proposals {
        let names: Vec<String> = p
            .nodes
            .iter()
            .map(|&i| graph.nodes[i].name.clone())
            .collect();
        let reject = |reason: String| RejectedFusion {
            pattern: p.pattern.clone(),
            nodes: names.clone(),
            reason,
        };
        let f = &p.fused;
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
        let out_types: Vec<ValueType> = p
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
        let parts_ns: f64 = p
            .nodes
            .iter()
            .map(|&i| with_view(graph, &graph.nodes[i], |v| cost(device, v)).unwrap_or(0.0))
            .sum();
        cands.push(Candidate {
            pattern: p.pattern,
            nodes: p.nodes,
            siblings: p.siblings,
            op_name: f.op.clone(),
            attrs,
            op,
            inputs: f.inputs.clone(),
            saved_us: (parts_ns - fused_ns) / 1e3,
        });
    }
    (cands, rejected)
}

/// The chains of `pat`'s ops whose links each have a single consumer.
fn chain_proposals(
    graph: &Graph,
    consumers: &HashMap<usize, Vec<(usize, usize)>>,
    on_dev: &dyn Fn(usize) -> bool,
    pat: &dyn FusionPattern,
    out: &mut Vec<Proposal>,
    rejected: &mut Vec<RejectedFusion>,
) {
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
        let m = ChainMatch {
            graph,
            nodes: &nodes,
            ports: &ports,
        };
        match pat.fuse(&m) {
            Some(fused) => {
                let last = *nodes.last().expect("chain is not empty");
                out.push(Proposal {
                    pattern: pat.name().into(),
                    outputs: graph.nodes[last].outputs.clone(),
                    nodes,
                    siblings: false,
                    fused,
                })
            }
            None => rejected.push(RejectedFusion {
                pattern: pat.name().into(),
                nodes: nodes.iter().map(|&i| graph.nodes[i].name.clone()).collect(),
                reason: "the pattern declined this match".into(),
            }),
        }
    }
}

/// The groups of two or more live, stateless nodes of `pat`'s op on the device that read
/// one value at `port` and have equal attributes, in execution order.
fn sibling_proposals(
    graph: &Graph,
    consumers: &HashMap<usize, Vec<(usize, usize)>>,
    on_dev: &dyn Fn(usize) -> bool,
    pat: &dyn FusionPattern,
    port: usize,
    out: &mut Vec<Proposal>,
    rejected: &mut Vec<RejectedFusion>,
) {
    let op = pat.chain()[0];
    let mut position = vec![usize::MAX; graph.nodes.len()];
    for (i, &n) in graph.order.iter().enumerate() {
        position[n] = i;
    }
    let mut shared: Vec<&usize> = consumers.keys().collect();
    shared.sort();
    for &v in shared {
        let mut readers: Vec<usize> = consumers[&v]
            .iter()
            .filter(|&&(ni, p)| {
                let n = &graph.nodes[ni];
                p == port && n.op_name == op && n.states.is_empty() && on_dev(ni)
            })
            .map(|&(ni, _)| ni)
            .collect();
        readers.sort_by_key(|&ni| position[ni]);
        readers.dedup();
        // Siblings with equal attributes, each group in execution order.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for ni in readers {
            let attrs = &graph.nodes[ni].attrs;
            match groups
                .iter_mut()
                .find(|g| graph.nodes[g[0]].attrs == *attrs)
            {
                Some(g) => g.push(ni),
                None => groups.push(vec![ni]),
            }
        }
        for nodes in groups.into_iter().filter(|g| g.len() >= 2) {
            let m = SiblingMatch {
                graph,
                nodes: &nodes,
                port,
            };
            match pat.fuse_siblings(&m) {
                Some(fused) => out.push(Proposal {
                    pattern: pat.name().into(),
                    outputs: nodes
                        .iter()
                        .flat_map(|&n| graph.nodes[n].outputs.iter().copied())
                        .collect(),
                    nodes,
                    siblings: true,
                    fused,
                }),
                None => rejected.push(RejectedFusion {
                    pattern: pat.name().into(),
                    nodes: nodes.iter().map(|&i| graph.nodes[i].name.clone()).collect(),
                    reason: "the pattern declined this match".into(),
                }),
            }
        }
    }
}

/// Applies the best-scoring candidates that share no node.
fn apply(
    graph: &mut Graph,
    placements: &mut Vec<NodePlacement>,
    device: &dyn Device,
    mut cands: Vec<Candidate>,
    groups: &mut Vec<FusedGroup>,
    rejected: &mut Vec<RejectedFusion>,
) -> Result<()> {
    // Best score first; a node joins at most one fused group.
    cands.sort_by(|a, b| b.saved_us.total_cmp(&a.saved_us));
    let mut taken = vec![false; graph.nodes.len()];
    for c in cands {
        let names: Vec<String> = c
            .nodes
            .iter()
            .map(|&i| graph.nodes[i].name.clone())
            .collect();
        let mut reject = |reason: String| {
            let r = RejectedFusion {
                pattern: c.pattern.clone(),
                nodes: names.clone(),
                reason,
            };
            if !rejected.contains(&r) {
                rejected.push(r);
            }
        };
        if c.saved_us <= 0.0 {
            reject(format!("projected to save nothing ({:.1} µs)", c.saved_us));
            continue;
        }
        if let Some(&busy) = c.nodes.iter().find(|&&i| taken[i]) {
            reject(format!(
                "node '{}' is already in a higher-scoring fusion",
                graph.nodes[busy].name
            ));
            continue;
        }
        let name = names.join("+");
        let replaced = if c.siblings {
            graph.replace_siblings(&c.nodes, name, c.op_name.clone(), c.attrs, c.op, c.inputs)
        } else {
            graph.replace_chain(&c.nodes, name, c.op_name.clone(), c.attrs, c.op, c.inputs)
        };
        let id = match replaced {
            Ok(id) => id,
            // Siblings one of which feeds another's other input: not fusable.
            Err(e) if c.siblings => {
                reject(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        for &i in &c.nodes {
            taken[i] = true;
        }
        taken.push(true);
        placements.push(place_node(device, graph, &graph.nodes[id]));
        groups.push(FusedGroup {
            pattern: c.pattern,
            nodes: names,
            op: c.op_name,
            saved_us: c.saved_us,
        });
    }
    Ok(())
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
