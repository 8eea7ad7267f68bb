//! `matmul_bias` and `matmul_bias_gelu`: C = bf16(A) · bf16(W)ᵀ + bias with f32 accumulation.

use super::gelu::gelu_in_place;
use super::gemm::{gemm, gemm_few_rows, PackedRhs, FEW_ROWS};
use super::{
    check_len, mul, round_bf16, round_bf16_slice, NpuKernelError, TileFootprint, BF16_BYTES,
    F32_BYTES,
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

/// Contract of `matmul_bias_residual`: [`MatmulBiasContract`] with the transformer's
/// residual add folded into the epilogue.
///
/// - Shapes: as the matmul, plus residual R `[M, N]` f32 (not rounded to bf16).
/// - Numerics: the accumulator is built exactly as in [`MatmulBiasContract`]; then
///   `C = (acc + bias) + R` with two separate f32 additions in that order (`C = acc + R`
///   without a bias). The result equals `residual_add(matmul_bias(...), R)` bit for bit.
/// - Tile: m×k×n = 64×64×32 as the matmul; the residual tile (64×32 f32, 8 KB) streams in
///   alongside A and W and is added in place on the C tile.
/// - Memory: the matmul's buffers plus the double-buffered residual tile:
///   2·(8 192 + 4 096 + 128 + 8 192 + 8 192) = 57 600 B of 64 KB.
#[derive(Debug, Clone, Copy)]
pub struct MatmulBiasResidualContract;

impl MatmulBiasResidualContract {
    /// Double-buffered footprint of one compute tile (matmul plus residual tile).
    pub const fn footprint() -> TileFootprint {
        let mm = MatmulBiasContract::footprint();
        TileFootprint {
            inputs: mm.inputs + MatmulBiasContract::TILE_M * MatmulBiasContract::TILE_N * F32_BYTES,
            ..mm
        }
    }
}

/// Exact-erf GELU of one f32: f64 evaluation, one rounding to f32.
#[inline]
pub fn gelu_exact(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// Validates the shapes of A, W, bias and C.
#[allow(clippy::too_many_arguments)]
fn check_shapes(
    kernel: &'static str,
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) -> Result<(), NpuKernelError> {
    check_len(kernel, "a", a.len(), mul(kernel, "a [m, k]", m, k)?)?;
    check_len(kernel, "w", w.len(), mul(kernel, "w [n, k]", n, k)?)?;
    if let Some(b) = bias {
        check_len(kernel, "bias", b.len(), n)?;
    }
    check_len(kernel, "out", out.len(), mul(kernel, "out [m, n]", m, n)?)
}

/// Accumulators of `bf16(a[m, k]) · bf16(w[n, k])ᵀ` in the contract's order (one chain per
/// output, k increasing; k-tiles of 64 in order are the same chain), then
/// `out[i, j] = post(i, j, acc)`. Shapes must have been checked.
#[allow(clippy::too_many_arguments)]
fn matmul_nt(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
    post: impl Fn(usize, usize, f32) -> f32 + Sync,
    finish: impl Fn(&mut [f32]) + Sync,
) {
    if m < FEW_ROWS {
        let ab = round_bf16_slice(a);
        gemm_few_rows(
            m,
            k,
            &ab,
            n,
            |j, kk| round_bf16(w[j * k + kk]),
            out,
            post,
            finish,
        );
    } else {
        let wp = PackedRhs::pack(n, k, |j, kk| round_bf16(w[j * k + kk]));
        gemm(m, |i, kk| round_bf16(a[i * k + kk]), &wp, out, post, finish);
    }
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
    check_shapes("matmul_bias", a, m, k, w, n, bias, out)?;
    matmul_nt(
        a,
        m,
        k,
        w,
        n,
        out,
        |_, j, acc| match bias {
            Some(b) => acc + b[j],
            None => acc,
        },
        |_| {},
    );
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
    check_shapes("matmul_bias_gelu", a, m, k, w, n, bias, out)?;
    matmul_nt(
        a,
        m,
        k,
        w,
        n,
        out,
        |_, j, acc| match bias {
            Some(b) => acc + b[j],
            None => acc,
        },
        gelu_in_place,
    );
    Ok(())
}

/// `out = (matmul_bias(...)) + residual[M, N]`, per [`MatmulBiasResidualContract`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias_residual(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    residual: &[f32],
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    const K: &str = "matmul_bias_residual";
    check_shapes(K, a, m, k, w, n, bias, out)?;
    check_len(K, "residual", residual.len(), out.len())?;
    matmul_nt(
        a,
        m,
        k,
        w,
        n,
        out,
        |i, j, acc| {
            let c = match bias {
                Some(b) => acc + b[j],
                None => acc,
            };
            c + residual[i * n + j]
        },
        |_| {},
    );
    Ok(())
}
