//! The NPU layer of the standard operators: kernels of the NPU catalogue
//! (`amanuensis_kernels::npu`) bound to ops, their cost models, and the fusion patterns
//! that turn op chains into the catalogue's fused kernels.
//!
//! Every binding's [`eval`](amanuensis_runtime::npu::NpuKernel::eval) calls the
//! catalogue's bit-exact reference and returns tensors of exactly the shapes the CPU op's
//! `infer` promises. Every [`work`](amanuensis_runtime::npu::NpuKernel::work) describes
//! one dispatch as "column steps": one step keeps the `caps.rows` compute tiles of a column
//! busy with one tile of work each, and the scheduler spreads the steps over the columns.
//! `work` assumes types that [`check`](amanuensis_runtime::npu::NpuKernel::check)
//! accepted; for other types its figures are meaningless (but it never panics).

mod attention;
mod conv;
mod elementwise;
mod matmul;
pub mod patterns;

pub use attention::AttentionFlashKernel;
pub use conv::{conv1d_work, Conv1dGeluKernel, Conv1dKernel};
pub use elementwise::{
    GeluKernel, LayerNormKernel, ResidualAddKernel, TransposeKernel, GELU_TILE, TRANSPOSE_BLOCK,
};
pub use matmul::{
    matmul_work, Epilogue, MatmulBiasGeluKernel, MatmulBiasKernel, MatmulBiasResidualKernel,
};

use amanuensis_kernels::npu::{NpuKernelError, TileFootprint};
use amanuensis_runtime::op::ValueType;
use amanuensis_runtime::{DType, OpError, Tensor};

/// The known dims of an f32 input, or why the kernel cannot take it.
pub(crate) fn static_f32(t: &ValueType, what: &str) -> Result<Vec<usize>, String> {
    if t.dtype != DType::F32 {
        return Err(format!("{what} is {}, the kernel takes f32 only", t.dtype));
    }
    t.shape
        .iter()
        .map(|d| {
            d.known()
                .ok_or_else(|| format!("{what} {t} has a symbolic dim (NPU shapes are static)"))
        })
        .collect()
}

/// Known dims of a type with unknown dims as 0 (for cost models of unchecked types).
pub(crate) fn dims(t: &ValueType) -> Vec<usize> {
    t.shape.iter().map(|d| d.known().unwrap_or(0)).collect()
}

/// Errors unless there are exactly `n` inputs.
pub(crate) fn expect_count<T>(inputs: &[T], names: &[&str]) -> Result<(), String> {
    if inputs.len() != names.len() {
        return Err(format!(
            "expected {} inputs ({}), got {}",
            names.len(),
            names.join(", "),
            inputs.len()
        ));
    }
    Ok(())
}

/// A catalogue error as an operator error.
pub(crate) fn kernel_err(e: NpuKernelError) -> OpError {
    OpError(e.to_string())
}

/// The f32 elements of an input (an f16 weight widened exactly), naming it on error.
pub(crate) fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<std::borrow::Cow<'a, [f32]>, OpError> {
    t.f32s_widened()
        .map_err(|e| OpError(format!("{what}: {e}")))
}

/// `ceil(a / b)` in u64, with `b = 0` treated as 1.
pub(crate) fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// Cycles of `work` operations at `rate` per cycle, rounded up (0 work costs 0).
pub(crate) fn cycles(work: f64, rate: f64) -> u64 {
    if work <= 0.0 {
        0
    } else {
        // A zero rate gives +inf, which saturates to u64::MAX rather than panicking.
        (work / rate).ceil() as u64
    }
}

/// The same footprint with single buffers (no DMA/compute overlap).
pub(crate) fn single(f: TileFootprint) -> TileFootprint {
    TileFootprint { depth: 1, ..f }
}

/// Product of the dims (1 for none).
pub(crate) fn product(d: &[usize]) -> u64 {
    d.iter().map(|&x| x as u64).product()
}
