//! `matmul_bias` and `matmul_bias_gelu`: C = bf16(A) · bf16(W)ᵀ + bias with f32 accumulation.

use rayon::prelude::*;

use super::{
    check_len, mul, round_bf16_slice, NpuKernelError, TileFootprint, BF16_BYTES, F32_BYTES,
};

/// Contract of `matmul_bias`: the whole_array GEMM tile on one compute tile.
///
/// - Shapes: A `[M, K]`, W `[N, K]` (PyTorch `Linear` layout, i.e. the B operand is stored
///   transposed), bias `[N]`, C `[M, N]`; all row-major; M, N, K arbitrary.
/// - Tile: m×k×n = 64×64×32. Edge tiles are zero-padded in M, N and K; padded K terms
///   contribute `+0·+0 = +0`, which never changes an f32 accumulator that starts at +0, so
///   padding has no effect on the bits. Padded M rows / N columns are discarded.
/// - Dtypes: A and W are rounded f32→bf16 (round-to-nearest-even, NaN kept, no
///   saturation: overflow rounds to ±∞); bias and C are f32.
/// - Accumulation: one f32 accumulator per output starting at +0.0; k-tiles of 64 are
///   visited in increasing k, and inside a tile k increases; each step is
///   `acc = acc + a·w` with the product rounded to f32 first (unfused). A bf16·bf16 product
///   is exact in f32 except in the subnormal range, so fused and unfused agree elsewhere.
///   The bias is added once after the last k-tile: `C = acc + bias`.
/// - NaN/∞ propagate by IEEE rules; nothing saturates.
/// - Memory: A tile 64·64 bf16 (8 KB), B tile 32·64 bf16 (4 KB), bias 32 f32, C tile
///   64·32 f32 (8 KB), each double-buffered: 41 216 B of 64 KB.
#[derive(Debug, Clone, Copy)]
pub struct MatmulBiasContract;

impl MatmulBiasContract {
    /// Rows of A / C per tile.
    pub const TILE_M: usize = 64;
    /// Reduction depth per tile (the accumulation block).
    pub const TILE_K: usize = 64;
    /// Columns of C (rows of W) per tile.
    pub const TILE_N: usize = 32;

    /// Double-buffered footprint of one compute tile.
    pub const fn footprint() -> TileFootprint {
        TileFootprint {
            inputs: Self::TILE_M * Self::TILE_K * BF16_BYTES
                + Self::TILE_N * Self::TILE_K * BF16_BYTES
                + Self::TILE_N * F32_BYTES,
            outputs: Self::TILE_M * Self::TILE_N * F32_BYTES,
            depth: 2,
            scratch: 0,
        }
    }
}

/// Contract of `matmul_bias_gelu`: [`MatmulBiasContract`] followed by exact-erf GELU.
///
/// GELU is applied to each f32 output `c` as `0.5·c·(1 + erf(c/√2))` evaluated in f64
/// (`libm::erf`, a portable software implementation, so the bits do not depend on the
/// host's libm) and rounded once to f32 (round-to-nearest-even). The GELU runs in place on
/// the C tile, so the footprint equals the matmul's.
#[derive(Debug, Clone, Copy)]
pub struct MatmulBiasGeluContract;

impl MatmulBiasGeluContract {
    /// Double-buffered footprint of one compute tile (same as the matmul).
    pub const fn footprint() -> TileFootprint {
        MatmulBiasContract::footprint()
    }
}

/// Exact-erf GELU of one f32: f64 evaluation, one rounding to f32.
#[inline]
pub fn gelu_exact(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// Validates shapes and returns the bf16-rounded operands.
#[allow(clippy::too_many_arguments)]
fn prepare(
    kernel: &'static str,
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) -> Result<(Vec<f32>, Vec<f32>), NpuKernelError> {
    check_len(kernel, "a", a.len(), mul(kernel, "a [m, k]", m, k)?)?;
    check_len(kernel, "w", w.len(), mul(kernel, "w [n, k]", n, k)?)?;
    if let Some(b) = bias {
        check_len(kernel, "bias", b.len(), n)?;
    }
    check_len(kernel, "out", out.len(), mul(kernel, "out [m, n]", m, n)?)?;
    Ok((round_bf16_slice(a), round_bf16_slice(w)))
}

/// f32 accumulator of one output in the contract's order (k increasing, tile by tile).
#[inline]
pub(crate) fn dot_acc(a: &[f32], w: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    // Tiles of TILE_K in increasing k, k increasing inside a tile: one sequential chain.
    for (at, wt) in a
        .chunks(MatmulBiasContract::TILE_K)
        .zip(w.chunks(MatmulBiasContract::TILE_K))
    {
        for (&x, &y) in at.iter().zip(wt) {
            acc += x * y;
        }
    }
    acc
}

/// Accumulators `out[i, j] = Σ_k a[i, k]·w[j, k]` (operands already rounded), then
/// `post(i, j, acc)`. Rows run in parallel; each output is independent, so the bits do
/// not depend on the thread count.
pub(crate) fn gemm_nt(
    a: &[f32],
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
    post: impl Fn(usize, usize, f32) -> f32 + Sync,
) {
    if n == 0 {
        return;
    }
    out.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let ar = &a[i * k..(i + 1) * k];
        for (j, o) in row.iter_mut().enumerate() {
            *o = post(i, j, dot_acc(ar, &w[j * k..(j + 1) * k]));
        }
    });
}

/// `out[M, N] = bf16(a[M, K]) · bf16(w[N, K])ᵀ + bias[N]`, f32 out, per
/// [`MatmulBiasContract`].
pub fn matmul_bias(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    let (ab, wb) = prepare("matmul_bias", a, m, k, w, n, bias, out)?;
    gemm_nt(&ab, k, &wb, n, out, |_, j, acc| match bias {
        Some(b) => acc + b[j],
        None => acc,
    });
    Ok(())
}

/// `out = gelu(matmul_bias(...))`, per [`MatmulBiasGeluContract`].
pub fn matmul_bias_gelu(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    let (ab, wb) = prepare("matmul_bias_gelu", a, m, k, w, n, bias, out)?;
    gemm_nt(&ab, k, &wb, n, out, |_, j, acc| {
        gelu_exact(match bias {
            Some(b) => acc + b[j],
            None => acc,
        })
    });
    Ok(())
}
