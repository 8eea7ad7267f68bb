//! Fusion: finds chains matching the registry's patterns among nodes placed on the NPU,
//! keeps those whose fused node the NPU can run, scores each by the projected time it
//! saves, takes the best non-overlapping ones and rewrites the graph definition.

use super::placement::NodePlacement;
use super::{estimate_node_ns, SchedulerOptions};
use crate::device::npu_sim::NpuParams;
use crate::device::{DeviceKind, NpuCaps};
use crate::format::{GraphDef, NodeDef};
use crate::fusion::ChainMatch;
use crate::ir::Graph;
use crate::op::{Attrs, ValueType};
use crate::registry::Registry;
use std::collections::HashMap;

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

struct Candidate {
    pattern: String,
    nodes: Vec<usize>,
    fused: NodeDef,
    saved_us: f64,
}

/// Applies the registry's patterns to `def`; returns the rewritten definition and the log.
#[allow(clippy::too_many_arguments)]
pub fn fuse(
    def: &GraphDef,
    graph: &Graph,
    placements: &[NodePlacement],
    registry: &Registry,
    params: &NpuParams,
    caps: &NpuCaps,
    opts: &SchedulerOptions,
) -> (GraphDef, Vec<FusedGroup>, Vec<RejectedFusion>) {
    // Consumers of each value, and graph outputs (which must stay materialised).
    let mut consumers: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for (ni, n) in graph.nodes.iter().enumerate() {
        for (p, &v) in n.inputs.iter().enumerate() {
            consumers.entry(v).or_default().push((ni, p));
        }
    }
    let by_name: HashMap<&str, usize> = graph
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let mut rejected = Vec::new();
    let mut cands: Vec<Candidate> = Vec::new();
    for pat in registry.patterns() {
        let chain = pat.chain();
        for (start, n0) in graph.nodes.iter().enumerate() {
            if n0.op_name != chain[0] || placements[start].device != DeviceKind::Npu {
                continue;
            }
            let mut nodes = vec![start];
            let mut ports = Vec::new();
            let mut ok = true;
            for want in &chain[1..] {
                let last = &graph.nodes[*nodes.last().unwrap()];
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
                if graph.nodes[next].op_name != *want || placements[next].device != DeviceKind::Npu
                {
                    ok = false;
                    break;
                }
                nodes.push(next);
                ports.push(port);
            }
            if !ok {
                continue;
            }
            let names: Vec<String> = nodes.iter().map(|&i| graph.nodes[i].name.clone()).collect();
            let defs: Vec<&NodeDef> = nodes.iter().map(|&i| &def.nodes[i]).collect();
            let m = ChainMatch {
                nodes: &defs,
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
            let op = match opdef.build(&Attrs(f.attrs.clone())) {
                Ok(op) => op,
                Err(e) => {
                    rejected.push(reject(format!("fused op '{}': {e}", f.op)));
                    continue;
                }
            };
            let in_types: Option<Vec<ValueType>> = f
                .inputs
                .iter()
                .map(|name| {
                    by_name
                        .get(name.as_str())
                        .map(|&v| graph.values[v].ty.clone())
                })
                .collect();
            let Some(in_types) = in_types else {
                rejected.push(reject("the fused node names an unknown input".into()));
                continue;
            };
            let Some(k) = op.npu_kernel() else {
                rejected.push(reject(format!("fused op '{}' has no NPU kernel", f.op)));
                continue;
            };
            if let Err(e) = k.check(&in_types) {
                rejected.push(reject(format!("NPU kernel '{}' rejects it: {e}", k.name())));
                continue;
            }
            let fused_ns = estimate_node_ns(&k.work(&in_types, caps), params, opts);
            let parts_ns: f64 = nodes
                .iter()
                .map(|&i| {
                    let n = &graph.nodes[i];
                    let t: Vec<ValueType> = n
                        .inputs
                        .iter()
                        .map(|&v| graph.values[v].ty.clone())
                        .collect();
                    n.op.npu_kernel()
                        .map(|k| estimate_node_ns(&k.work(&t, caps), params, opts))
                        .unwrap_or(0.0)
                })
                .sum();
            let last = &def.nodes[*nodes.last().unwrap()];
            cands.push(Candidate {
                pattern: pat.name().into(),
                fused: NodeDef {
                    name: names.join("+"),
                    op: f.op.clone(),
                    inputs: f.inputs.clone(),
                    outputs: last.outputs.clone(),
                    states: Vec::new(),
                    attrs: f.attrs.clone(),
                },
                nodes,
                saved_us: (parts_ns - fused_ns) / 1e3,
            });
        }
    }
    // Best score first; a node joins at most one fused group.
    cands.sort_by(|a, b| b.saved_us.total_cmp(&a.saved_us));
    let mut taken = vec![false; graph.nodes.len()];
    let mut groups = Vec::new();
    let mut replace: HashMap<usize, NodeDef> = HashMap::new();
    let mut drop = vec![false; graph.nodes.len()];
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
            drop[i] = true;
        }
        let last = *c.nodes.last().unwrap();
        drop[last] = false;
        replace.insert(last, c.fused);
        groups.push(FusedGroup {
            pattern: c.pattern,
            nodes: names,
            op: replace[&last].op.clone(),
            saved_us: c.saved_us,
        });
    }
    let mut out = def.clone();
    out.nodes = def
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop[*i])
        .map(|(i, n)| replace.remove(&i).unwrap_or_else(|| n.clone()))
        .collect();
    (out, groups, rejected)
}
