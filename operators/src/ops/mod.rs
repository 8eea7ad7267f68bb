//! Operator definitions: attributes, shape/dtype inference and CPU evaluation, each
//! bound to a kernel in `amanuensis-kernels`.

pub mod attention;
pub mod conv;
pub mod features;
pub mod fused;
pub mod nn;
pub mod recurrent;
pub mod tensor_ops;

use std::borrow::Cow;

use amanuensis_kernels::cpu;
use amanuensis_runtime::{DType, OpError, Tensor};

/// Elements of a tensor that must be f32, with the input's name in the error; a weight
/// kept as f16 is widened (exactly) into a copy.
pub(crate) fn f32_input<'a>(t: &'a Tensor, what: &str) -> Result<Cow<'a, [f32]>, OpError> {
    t.f32s_widened()
        .map_err(|e| OpError(format!("{what}: {e}")))
}

/// Elements `range` of an f32 (or f16 weight) input, widening only those.
pub(crate) fn f32_input_range<'a>(
    t: &'a Tensor,
    range: std::ops::Range<usize>,
    what: &str,
) -> Result<Cow<'a, [f32]>, OpError> {
    t.f32_range(range)
        .map_err(|e| OpError(format!("{what}: {e}")))
}

/// A weight-matrix input for the linear kernels: its int8 form when it has one and `int8`
/// is set, else its values in their stored type.
pub(crate) fn weight_input_as<'a>(
    t: &'a Tensor,
    what: &str,
    int8: bool,
) -> Result<cpu::Weight<'a>, OpError> {
    if let Some(q) = t.int8().filter(|_| int8) {
        return Ok(cpu::Weight::I8(cpu::int8::Int8Weight {
            n: q.n,
            k: q.k,
            packed: q.packed(),
            scales: &q.scales,
            sums: &q.sums,
            rescore: match (q.rescore_band, t.dtype()) {
                (Some(band), DType::F16) => Some(cpu::int8::Rescore {
                    rows: t.f16s()?,
                    band,
                }),
                _ => None,
            },
        }));
    }
    match t.dtype() {
        DType::F16 => Ok(cpu::Weight::F16(t.f16s()?)),
        _ => Ok(cpu::Weight::F32(
            t.f32s().map_err(|e| OpError(format!("{what}: {e}")))?,
        )),
    }
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
