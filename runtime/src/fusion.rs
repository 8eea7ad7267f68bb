//! Fusion patterns: a chain of ops that an operator library (or a plugin) knows how to
//! replace by one fused op. The scheduler's fusion pass finds the matches in the IR, keeps
//! only those whose fused node the placed device can run, scores them with the device's
//! cost model and replaces the chains in place.

use crate::ir::{Graph, Node};
use crate::op::ValueType;
use std::collections::BTreeMap;

/// A matched chain of IR nodes, producer first. Link `i` feeds output 0 of `nodes[i]`
/// into input `ports[i]` of `nodes[i + 1]`, and that value has no other consumer.
#[derive(Debug, Clone, Copy)]
pub struct ChainMatch<'a> {
    /// The graph the chain is in (value names and inferred types).
    pub graph: &'a Graph,
    /// Node ids of the chain, producer first.
    pub nodes: &'a [usize],
    /// For each link, the consuming input's index.
    pub ports: &'a [usize],
}

impl<'a> ChainMatch<'a> {
    /// Node `i` of the chain.
    pub fn node(&self, i: usize) -> &'a Node {
        &self.graph.nodes[self.nodes[i]]
    }

    /// The chain's nodes, producer first.
    pub fn chain_nodes(&self) -> impl Iterator<Item = &'a Node> + '_ {
        self.nodes.iter().map(|&n| &self.graph.nodes[n])
    }

    /// The inferred type of value `v`.
    pub fn ty(&self, v: usize) -> &'a ValueType {
        &self.graph.values[v].ty
    }

    /// The inputs of the chain that do not come from inside it (value ids), in node order.
    pub fn external_inputs(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, n) in self.chain_nodes().enumerate() {
            for (p, &v) in n.inputs.iter().enumerate() {
                if i > 0 && p == self.ports[i - 1] {
                    continue;
                }
                out.push(v);
            }
        }
        out
    }
}

/// The node replacing a matched chain (it takes over the last node's outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct FusedNode {
    /// A registered op name.
    pub op: String,
    /// Its attributes.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Its inputs (value ids of the graph).
    pub inputs: Vec<usize>,
}

/// A rewrite rule: "this chain of ops is one fused op".
pub trait FusionPattern: Send + Sync {
    /// A unique name (shown in plans).
    fn name(&self) -> &str;

    /// Op names of the chain, producer first (at least two).
    fn chain(&self) -> &[&str];

    /// The fused node for this match, or `None` when the match does not qualify (say an
    /// attribute the fused op cannot express).
    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode>;
}
