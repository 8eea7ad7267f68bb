//! Layer normalisation.

use rayon::prelude::*;

use super::simd::{fmadd, hsum, multiversion, LANES};
use super::tuning::MIN_PARALLEL_FMAS;

/// Normalises each row of `x` into the matching row of `out`.
///
/// Two passes in f32 with `LANES` partial sums each: the mean, then the biased variance
/// of the centred values (centring first avoids the cancellation of E[x²] − E[x]²).
#[inline(always)]
pub(super) fn layer_norm_rows<const FMA: bool>(
    x: &[f32],
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mut acc = [0.0f32; LANES];
        let chunks = xr.chunks_exact(LANES);
        let mut tail = 0.0f32;
        for &v in chunks.remainder() {
            tail += v;
        }
        for c in chunks {
            for l in 0..LANES {
                acc[l] += c[l];
            }
        }
        let mean = (hsum(acc) + tail) / dim as f32;
        let mut acc = [0.0f32; LANES];
        let chunks = xr.chunks_exact(LANES);
        let mut tail = 0.0f32;
        for &v in chunks.remainder() {
            let d = v - mean;
            tail = fmadd::<FMA>(d, d, tail);
        }
        for c in chunks {
            for l in 0..LANES {
                let d = c[l] - mean;
                acc[l] = fmadd::<FMA>(d, d, acc[l]);
            }
        }
        let var = (hsum(acc) + tail) / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, &v), &g), &b) in or.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = fmadd::<FMA>((v - mean) * inv, g, b);
        }
    }
}

multiversion! {
    /// [`layer_norm`] on one thread (the same bits row by row: each row is normalised
    /// alone).
    pub(crate) fn layer_norm_serial(
        x: &[f32],
        dim: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) => layer_norm_rows
}

/// Layer norm over the last axis: `out[r] = (x[r] − mean) / sqrt(var + eps) · gamma + beta`
/// for each of `rows` rows of length `dim` (biased variance, as PyTorch).
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    debug_assert_eq!(x.len(), rows * dim);
    debug_assert_eq!(out.len(), rows * dim);
    debug_assert_eq!(gamma.len(), dim);
    debug_assert_eq!(beta.len(), dim);
    if rows == 0 || dim == 0 {
        return;
    }
    // About three passes over each row: treat an element as ~3 multiply-adds of work.
    let rows_per_task = (MIN_PARALLEL_FMAS / (3 * dim)).max(1);
    if rows > rows_per_task && rayon::current_num_threads() > 1 {
        x.par_chunks(rows_per_task * dim)
            .zip(out.par_chunks_mut(rows_per_task * dim))
            .for_each(|(xb, ob)| layer_norm_serial(xb, dim, gamma, beta, eps, ob));
    } else {
        layer_norm_serial(x, dim, gamma, beta, eps, out);
    }
}
