//! Fusion patterns: a chain of ops, or several nodes of one op reading the same value
//! (siblings), that an operator library (or a plugin) knows how to replace by one fused
//! op. The scheduler's fusion pass finds the matches in the IR, keeps only those whose
//! fused node the placed device can run, scores them with the device's cost model and
//! replaces the matched nodes in place.

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

/// A matched group of sibling nodes: nodes of the same op, with the same attributes,
/// reading the same value at the same input port, in execution order.
#[derive(Debug, Clone, Copy)]
pub struct SiblingMatch<'a> {
    /// The graph the siblings are in (value names and inferred types).
    pub graph: &'a Graph,
    /// Node ids of the siblings, in execution order.
    pub nodes: &'a [usize],
    /// The input port at which every sibling reads the shared value.
    pub port: usize,
}

impl<'a> SiblingMatch<'a> {
    /// Sibling `i`.
    pub fn node(&self, i: usize) -> &'a Node {
        &self.graph.nodes[self.nodes[i]]
    }

    /// The siblings, in execution order.
    pub fn sibling_nodes(&self) -> impl Iterator<Item = &'a Node> + '_ {
        self.nodes.iter().map(|&n| &self.graph.nodes[n])
    }

    /// The value every sibling reads at [`port`](Self::port).
    pub fn shared_input(&self) -> usize {
        self.node(0).inputs[self.port]
    }

    /// The inferred type of value `v`.
    pub fn ty(&self, v: usize) -> &'a ValueType {
        &self.graph.values[v].ty
    }
}

/// What a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternShape {
    /// A chain of the ops of [`FusionPattern::chain`], each feeding the next
    /// ([`FusionPattern::fuse`]).
    Chain,
    /// Two or more nodes of the one op of [`FusionPattern::chain`] reading the same value
    /// at input `port`, with equal attributes ([`FusionPattern::fuse_siblings`]). The
    /// fused node takes over all their outputs, in the siblings' order.
    Siblings {
        /// The input port of the shared value.
        port: usize,
    },
}

/// The node replacing a matched chain (it takes over the last node's outputs) or
/// siblings (it takes over all their outputs).
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

    /// Op names of the chain, producer first (at least two); for a sibling pattern, the
    /// siblings' one op.
    fn chain(&self) -> &[&str];

    /// The fused node for this match, or `None` when the match does not qualify (say an
    /// attribute the fused op cannot express).
    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode>;

    /// Whether the pattern matches chains (the default) or siblings.
    fn shape(&self) -> PatternShape {
        PatternShape::Chain
    }

    /// The fused node for a sibling match (patterns of [`PatternShape::Siblings`]), or
    /// `None` when the match does not qualify.
    fn fuse_siblings(&self, _m: &SiblingMatch) -> Option<FusedNode> {
        None
    }
}
