//! Fusion patterns of the standard library that no NPU kernel runs: the host's.

use crate::ops::fused::GROUP_LINEAR_ATTRS;
use amanuensis_runtime::fusion::{
    ChainMatch, FusedNode, FusionPattern, PatternShape, SiblingMatch,
};

/// `linear`s of one input (with equal attributes) ⇒ `linear_group`: attention's q, k and v
/// projections, the decoder's cross-attention keys and values of every block. One product
/// instead of several: the input is read, and on the int8 path quantized, once.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearSiblingsPattern;

impl FusionPattern for LinearSiblingsPattern {
    fn name(&self) -> &str {
        "linear_group"
    }

    fn chain(&self) -> &[&str] {
        &["linear"]
    }

    fn fuse(&self, _m: &ChainMatch) -> Option<FusedNode> {
        None
    }

    fn shape(&self) -> PatternShape {
        PatternShape::Siblings { port: 0 }
    }

    fn fuse_siblings(&self, m: &SiblingMatch) -> Option<FusedNode> {
        let mut inputs = vec![m.shared_input()];
        let mut bias = Vec::new();
        for n in m.sibling_nodes() {
            let plain = n.outputs.len() == 1
                && n.states.is_empty()
                && n.attrs
                    .0
                    .keys()
                    .all(|k| GROUP_LINEAR_ATTRS.contains(&k.as_str()));
            if !plain || !(2..=3).contains(&n.inputs.len()) {
                return None;
            }
            inputs.extend(&n.inputs[1..]);
            bias.push(serde_json::Value::Bool(n.inputs.len() == 3));
        }
        let mut attrs = m.node(0).attrs.0.clone();
        attrs.insert("bias".into(), serde_json::Value::Array(bias));
        Some(FusedNode {
            op: "linear_group".into(),
            attrs,
            inputs,
        })
    }
}

/// `layer_norm → linear`, `→ linear_gelu`, `→ linear_group` ⇒ the same op with the norm
/// first (`norm_eps`, inputs `[x, gamma, beta, …]`): on the int8 path each normalised row
/// is quantized as it is made, so the normalised activations are never stored and read
/// back. The chains of the second kind form once an earlier round has fused the linear
/// with its GELU or with its siblings.
#[derive(Debug, Clone, Copy)]
pub struct NormIntoLinearPattern {
    name: &'static str,
    chain: [&'static str; 2],
}

impl NormIntoLinearPattern {
    /// The pattern for each op that takes the norm.
    pub const ALL: [NormIntoLinearPattern; 3] = [
        NormIntoLinearPattern {
            name: "layer_norm_linear",
            chain: ["layer_norm", "linear"],
        },
        NormIntoLinearPattern {
            name: "layer_norm_linear_gelu",
            chain: ["layer_norm", "linear_gelu"],
        },
        NormIntoLinearPattern {
            name: "layer_norm_linear_group",
            chain: ["layer_norm", "linear_group"],
        },
    ];
}

impl FusionPattern for NormIntoLinearPattern {
    fn name(&self) -> &str {
        self.name
    }

    fn chain(&self) -> &[&str] {
        &self.chain
    }

    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode> {
        let ([_, _], [port]) = (m.nodes, m.ports) else {
            return None;
        };
        let (ln, lin) = (m.node(0), m.node(1));
        let ln_plain = ln.outputs.len() == 1
            && ln.states.is_empty()
            && ln.inputs.len() == 3
            && ln.attrs.0.keys().all(|k| k == "eps");
        if *port != 0 || !ln_plain || !lin.states.is_empty() || lin.attrs.0.contains_key("norm_eps")
        {
            return None;
        }
        let eps = ln.attrs.0.get("eps")?.clone();
        let mut attrs = lin.attrs.0.clone();
        attrs.insert("norm_eps".into(), eps);
        let mut inputs = ln.inputs.clone();
        inputs.extend(&lin.inputs[1..]);
        Some(FusedNode {
            op: lin.op_name.clone(),
            attrs,
            inputs,
        })
    }
}
