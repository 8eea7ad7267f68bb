//! Operator definitions: attributes, shape/dtype inference and CPU evaluation, each
//! bound to a kernel in `amanuensis-kernels`.

pub mod attention;
pub mod conv;
pub mod features;
pub mod fused;
pub mod nn;
pub mod tensor_ops;

use amanuensis_runtime::{OpError, Tensor};

/// Elements of a tensor that must be f32, with the input's name in the error.
pub(crate) fn f32_input<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], OpError> {
    t.f32s().map_err(|e| OpError(format!("{what}: {e}")))
}

/// A rank-0 (or single-element) i32 input as a non-negative count.
pub(crate) fn scalar_index(t: &Tensor, what: &str) -> Result<usize, OpError> {
    let v = t.i32s().map_err(|e| OpError(format!("{what}: {e}")))?;
    if v.len() != 1 {
        return Err(OpError(format!(
            "{what}: expected a single value, got shape {:?}",
            t.shape()
        )));
    }
    usize::try_from(v[0]).map_err(|_| OpError(format!("{what}: must be >= 0, got {}", v[0])))
}
