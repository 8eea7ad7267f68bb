//! Fusion patterns: a chain of ops that an operator library (or a plugin) knows how to
//! replace by one fused op. The scheduler's fusion pass finds the matches, keeps only those
//! whose fused node the placed device can run, scores them and rewrites the graph.

use crate::format::NodeDef;
use std::collections::BTreeMap;

/// A matched chain of nodes, producer first. Link `i` feeds output 0 of `nodes[i]` into
/// input `ports[i]` of `nodes[i + 1]`, and that value has no other consumer.
#[derive(Debug, Clone, Copy)]
pub struct ChainMatch<'a> {
    /// The matched nodes, producer first.
    pub nodes: &'a [&'a NodeDef],
    /// For each link, the consuming input's index.
    pub ports: &'a [usize],
}

impl ChainMatch<'_> {
    /// The inputs of the chain that do not come from inside it, in node order.
    pub fn external_inputs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (p, name) in n.inputs.iter().enumerate() {
                if i > 0 && p == self.ports[i - 1] {
                    continue;
                }
                out.push(name.clone());
            }
        }
        out
    }
}

/// The node replacing a matched chain (it takes the last node's outputs and name).
#[derive(Debug, Clone, PartialEq)]
pub struct FusedNode {
    /// A registered op name.
    pub op: String,
    /// Its attributes.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Its inputs (value names).
    pub inputs: Vec<String>,
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
