//! `layer_norm` and `residual_add`: f32 row kernels with a defined operation order.

use rayon::prelude::*;

use super::{check_len, mul, NpuKernelError, TileFootprint, F32_BYTES};

/// Contract of `layer_norm`: f32 in/out, one row per buffer, two passes in a fixed order.
///
/// For each row x of length `dim` (all f32, each operation rounded, no fused multiply-add):
/// 1. `mean = (Σ_i x_i) / dim`, sum sequential in increasing i from +0.0;
/// 2. `var = (Σ_i (x_i − mean)²) / dim`, the square rounded before the add, same order
///    (biased variance, as PyTorch);
/// 3. `inv = 1 / sqrt(var + eps)` (correctly rounded sqrt, then division);
/// 4. `out_i = ((x_i − mean) · inv) · gamma_i + beta_i`.
///
/// NaN/∞ propagate by IEEE rules. Memory: input and output rows of at most
/// [`LayerNormContract::MAX_DIM`] f32 double-buffered, gamma and beta resident.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormContract;

impl LayerNormContract {
    /// Longest row a tile holds (Whisper's widest model uses 1280).
    pub const MAX_DIM: usize = 2048;

    /// Double-buffered footprint of one compute tile for rows of `dim` elements.
    pub const fn footprint(dim: usize) -> TileFootprint {
        TileFootprint {
            inputs: dim * F32_BYTES,
            outputs: dim * F32_BYTES,
            depth: 2,
            scratch: 2 * dim * F32_BYTES,
        }
    }
}

/// One row of layer norm in the contract's order.
fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let dim = x.len() as f32;
    let mut sum = 0.0f32;
    for &v in x {
        sum += v;
    }
    let mean = sum / dim;
    let mut sq = 0.0f32;
    for &v in x {
        let d = v - mean;
        sq += d * d;
    }
    let var = sq / dim;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = ((v - mean) * inv) * g + b;
    }
}

/// Layer norm over rows of `dim`, per [`LayerNormContract`].
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    const K: &str = "layer_norm";
    let len = mul(K, "x [rows, dim]", rows, dim)?;
    check_len(K, "x", x.len(), len)?;
    check_len(K, "out", out.len(), len)?;
    check_len(K, "gamma", gamma.len(), dim)?;
    check_len(K, "beta", beta.len(), dim)?;
    if dim == 0 {
        return Ok(());
    }
    if dim > LayerNormContract::MAX_DIM {
        return Err(NpuKernelError::Argument {
            kernel: K,
            what: "dim exceeds LayerNormContract::MAX_DIM",
        });
    }
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(o, xr)| layer_norm_row(xr, gamma, beta, eps, o));
    Ok(())
}

/// Contract of `residual_add`: `out = a + b` element-wise in f32 (one IEEE addition, so
/// bit-identical to any correct f32 add); tiles of [`ResidualAddContract::TILE`] elements.
#[derive(Debug, Clone, Copy)]
pub struct ResidualAddContract;

impl ResidualAddContract {
    /// Elements per tile buffer.
    pub const TILE: usize = 1024;

    /// Double-buffered footprint of one compute tile.
    pub const fn footprint() -> TileFootprint {
        TileFootprint {
            inputs: 2 * Self::TILE * F32_BYTES,
            outputs: Self::TILE * F32_BYTES,
            depth: 2,
            scratch: 0,
        }
    }
}

/// `out = a + b` element-wise, per [`ResidualAddContract`].
pub fn residual_add(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), NpuKernelError> {
    const K: &str = "residual_add";
    check_len(K, "b", b.len(), a.len())?;
    check_len(K, "out", out.len(), a.len())?;
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
    Ok(())
}
