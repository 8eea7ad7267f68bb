//! Fusion patterns of the standard library: chains that the NPU catalogue runs as one
//! kernel, rewritten into the fused ops of [`crate::ops::fused`].
//!
//! A pattern sees the IR's nodes; it refuses what it can tell is inexpressible (extra
//! attributes, extra outputs or states, a value consumed twice); shape conditions (say a
//! broadcast residual) are left to the fused op's `infer` and the device kernel's `check`,
//! which the fusion pass consults before rewriting.

use crate::ops::nn::FUSABLE_LINEAR_ATTRS as LINEAR_ATTRS;
use amanuensis_runtime::fusion::{ChainMatch, FusedNode, FusionPattern};
use amanuensis_runtime::ir::Node;

/// Whether a node is a plain single-output, stateless application whose attributes are
/// all in `known`.
fn plain(n: &Node, known: &[&str]) -> bool {
    n.outputs.len() == 1
        && n.states.is_empty()
        && n.attrs.0.keys().all(|k| known.contains(&k.as_str()))
}

/// The two nodes of a two-op chain, or `None` for any other length.
fn pair<'a>(m: &ChainMatch<'a>) -> Option<(&'a Node, &'a Node, usize)> {
    match (m.nodes, m.ports) {
        ([_, _], [port]) => Some((m.node(0), m.node(1), *port)),
        _ => None,
    }
}

/// `linear → gelu` ⇒ `linear_gelu` (NPU kernel `matmul_bias_gelu`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearGeluPattern;

impl FusionPattern for LinearGeluPattern {
    fn name(&self) -> &str {
        "linear_gelu"
    }

    fn chain(&self) -> &[&str] {
        &["linear", "gelu"]
    }

    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode> {
        let (lin, gelu, port) = pair(m)?;
        if !plain(lin, &LINEAR_ATTRS) || !plain(gelu, &["f32_math"]) {
            return None;
        }
        if port != 0 || gelu.inputs.len() != 1 || !(2..=3).contains(&lin.inputs.len()) {
            return None;
        }
        let mut attrs = lin.attrs.0.clone();
        attrs.extend(gelu.attrs.0.clone());
        Some(FusedNode {
            op: "linear_gelu".into(),
            attrs,
            inputs: lin.inputs.clone(),
        })
    }
}

/// `linear → add` ⇒ `linear_residual` (NPU kernel `matmul_bias_residual`), whichever input
/// of the add the linear feeds. Inputs `[x, w, b?, residual]`, attribute `bias` saying
/// whether `b` is present.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearResidualPattern;

impl FusionPattern for LinearResidualPattern {
    fn name(&self) -> &str {
        "linear_residual"
    }

    fn chain(&self) -> &[&str] {
        &["linear", "add"]
    }

    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode> {
        let (lin, add, port) = pair(m)?;
        if !plain(lin, &LINEAR_ATTRS) || !plain(add, &[]) || !(2..=3).contains(&lin.inputs.len()) {
            return None;
        }
        if add.inputs.len() != 2 || port > 1 {
            return None;
        }
        let residual = add.inputs[1 - port];
        // y + y has no residual operand to stream.
        if residual == lin.outputs[0] {
            return None;
        }
        let mut inputs = lin.inputs.clone();
        inputs.push(residual);
        let mut attrs = lin.attrs.0.clone();
        attrs.insert(
            "bias".to_string(),
            serde_json::Value::Bool(lin.inputs.len() == 3),
        );
        Some(FusedNode {
            op: "linear_residual".into(),
            attrs,
            inputs,
        })
    }
}

/// `conv1d → gelu` ⇒ `conv1d_gelu` (NPU kernel `conv1d_gelu`), keeping stride and padding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conv1dGeluPattern;

impl FusionPattern for Conv1dGeluPattern {
    fn name(&self) -> &str {
        "conv1d_gelu"
    }

    fn chain(&self) -> &[&str] {
        &["conv1d", "gelu"]
    }

    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode> {
        let (conv, gelu, port) = pair(m)?;
        if !plain(conv, &["stride", "padding"]) || !plain(gelu, &[]) || conv.inputs.len() != 3 {
            return None;
        }
        if port != 0 || gelu.inputs.len() != 1 {
            return None;
        }
        Some(FusedNode {
            op: "conv1d_gelu".into(),
            attrs: conv.attrs.0.clone(),
            inputs: conv.inputs.clone(),
        })
    }
}
