//! NPU kernel catalogue v1: CPU references that define the numerics of each AIE-ML kernel
//! bit for bit.
//!
//! Every kernel takes bf16 operands (rounded from f32 on the host, round-to-nearest-even)
//! and accumulates in f32 in a fixed, documented order, so a simulator that runs these
//! references and a hardware kernel that follows the contract produce identical bits.
//! Each kernel has a `…Contract` type stating its tile shape and its double-buffered
//! footprint in the 64 KB compute-tile data memory. See `docs/kernels.md`.

mod attention;
mod conv;
mod expf;
mod gelu;
mod gemm;
mod matmul;
mod norm;

use std::fmt;

pub use attention::{attention_flash, AttentionFlashContract};
pub use conv::{conv1d, conv1d_gelu, Conv1dContract, Conv1dGeluContract};
#[doc(hidden)]
pub use expf::expf_lanes;
#[doc(hidden)]
pub use gelu::gelu_lanes;
pub use matmul::{
    gelu_exact, matmul_bias, matmul_bias_gelu, matmul_bias_residual, MatmulBiasContract,
    MatmulBiasGeluContract, MatmulBiasResidualContract,
};
pub use norm::{layer_norm, residual_add, LayerNormContract, ResidualAddContract};

/// Data memory of one AIE-ML compute tile, in bytes.
pub const TILE_DATA_MEMORY_BYTES: usize = 64 * 1024;

/// Bytes of one bf16 element.
pub const BF16_BYTES: usize = 2;

/// Bytes of one f32 element.
pub const F32_BYTES: usize = 4;

/// Error returned by the NPU reference kernels on inconsistent arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpuKernelError {
    /// A slice is shorter or longer than its shape requires.
    Length {
        /// Kernel name.
        kernel: &'static str,
        /// Operand name.
        operand: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// A shape product overflows `usize`.
    Overflow {
        /// Kernel name.
        kernel: &'static str,
        /// What was being sized.
        what: &'static str,
    },
    /// A scalar argument is outside its valid range.
    Argument {
        /// Kernel name.
        kernel: &'static str,
        /// Description of the violated condition.
        what: &'static str,
    },
}

impl fmt::Display for NpuKernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length {
                kernel,
                operand,
                expected,
                actual,
            } => write!(
                f,
                "npu {kernel}: operand `{operand}` has {actual} elements, expected {expected}"
            ),
            Self::Overflow { kernel, what } => write!(f, "npu {kernel}: size of {what} overflows"),
            Self::Argument { kernel, what } => write!(f, "npu {kernel}: invalid argument: {what}"),
        }
    }
}

impl std::error::Error for NpuKernelError {}

/// Double-buffered tile footprint of one compute tile, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileFootprint {
    /// Input buffers (all operands streamed in), one copy each.
    pub inputs: usize,
    /// Output buffers, one copy each.
    pub outputs: usize,
    /// Number of copies of each streamed buffer (2 = ObjectFifo ping-pong).
    pub depth: usize,
    /// Resident, single-copy working memory (accumulators, score block, statistics).
    pub scratch: usize,
}

impl TileFootprint {
    /// Total bytes: `depth · (inputs + outputs) + scratch`.
    pub const fn total(&self) -> usize {
        self.depth * (self.inputs + self.outputs) + self.scratch
    }

    /// Whether the footprint fits the 64 KB data memory.
    pub const fn fits(&self) -> bool {
        self.total() <= TILE_DATA_MEMORY_BYTES
    }
}

/// Rounds an f32 to the nearest bf16 (ties to even) and returns it widened back to f32.
///
/// NaN stays NaN (quieted), ±∞ stays ±∞, finite values above the largest bf16 round to
/// ±∞ as IEEE round-to-nearest-even prescribes (no saturation); subnormals are kept.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// Rounds every element of `x` to bf16 (see [`round_bf16`]), keeping f32 storage.
pub fn round_bf16_slice(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| round_bf16(v)).collect()
}

/// `a · b` with overflow reported as a typed error.
pub(crate) fn mul(
    kernel: &'static str,
    what: &'static str,
    a: usize,
    b: usize,
) -> Result<usize, NpuKernelError> {
    a.checked_mul(b)
        .ok_or(NpuKernelError::Overflow { kernel, what })
}

/// Fails unless `slice_len == expected`.
pub(crate) fn check_len(
    kernel: &'static str,
    operand: &'static str,
    actual: usize,
    expected: usize,
) -> Result<(), NpuKernelError> {
    if actual == expected {
        Ok(())
    } else {
        Err(NpuKernelError::Length {
            kernel,
            operand,
            expected,
            actual,
        })
    }
}
