//! Numerically stable softmax over one row.

use super::math::{exp_f32, exp_f64_fine};
use super::simd::{hsum, multiversion, LANES};

/// Replaces each entry of `row` by e^(entry − max(row)) and returns their sum (≥ 1), or
/// fills the row with zeros and returns 0 when every entry is −∞ (a fully masked row).
///
/// Callers divide by the sum themselves, where it is cheapest (attention scales its
/// output rows instead of the much longer probability rows).
#[inline(always)]
pub(crate) fn exp_shifted<const FMA: bool>(row: &mut [f32]) -> f32 {
    let mut maxv = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let mut max = f32::NEG_INFINITY;
    for &v in chunks.remainder() {
        max = max.max(v);
    }
    for c in chunks {
        for l in 0..LANES {
            // A plain comparison compiles to one max instruction; `f32::max` adds NaN
            // handling (a NaN entry still turns the row into NaN in the next pass).
            maxv[l] = if c[l] > maxv[l] { c[l] } else { maxv[l] };
        }
    }
    for v in maxv {
        max = max.max(v);
    }
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    let mut sumv = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = exp_f32::<FMA>(c[l] - max);
            sumv[l] += c[l];
        }
    }
    let mut sum = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_f32::<FMA>(*v - max);
        sum += *v;
    }
    hsum(sumv) + sum
}

/// Softmax of one row in place: subtract the maximum, exponentiate, normalise.
///
/// A row whose entries are all −∞ (fully masked) becomes all zeros rather than NaN.
#[inline(always)]
fn softmax_row<const FMA: bool>(row: &mut [f32]) {
    let sum = exp_shifted::<FMA>(row);
    if sum > 0.0 {
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// Softmax of `row` in place (maximum subtracted first, f32 throughout).
    pub fn softmax_inplace(row: &mut [f32]) => softmax_row
}

multiversion! {
    /// Dispatching form of [`exp_shifted`] for callers outside a multiversioned body.
    pub(crate) fn exp_shifted_inplace(row: &mut [f32]) -> f32 => exp_shifted
}

/// `Σ e^(x − max)` over `row`, each difference taken in f32 (as `x - max`) and its
/// exponential and the sum in f64: the normaliser of a log-softmax kept in f64. Lanes of 8
/// partial sums (a different order from a sequential sum, within rounding of it).
#[inline(always)]
fn sum_exp_f64_body<const FMA: bool>(row: &[f32], max: f32) -> f64 {
    // Exponentials a block at a time (a plain map, which the loop vectoriser takes), then
    // added into 8 lanes.
    const B: usize = 256;
    const L: usize = 8;
    let mut acc = [0f64; L];
    let mut e = [0f64; B];
    for block in row.chunks(B) {
        let e = &mut e[..block.len()];
        for (d, &v) in e.iter_mut().zip(block) {
            *d = exp_f64_fine::<FMA>((v - max) as f64);
        }
        let lanes = e.chunks_exact(L);
        for &v in lanes.remainder() {
            acc[0] += v;
        }
        for c in lanes {
            for l in 0..L {
                acc[l] += c[l];
            }
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

multiversion! {
    fn sum_exp_f64_avx2_or_baseline(row: &[f32], max: f32) -> f64 => sum_exp_f64_body
}

/// `Σ e^(x − max)` over `row` in f64 (each `x - max` in f32), vectorised (eight f64 lanes
/// where the CPU has AVX-512): for a log-softmax over a vocabulary whose normaliser is
/// summed in f64. Every step is the same IEEE operation whatever the vector width.
pub fn sum_exp_f64(row: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && super::simd::has_avx2_fma() {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide512(row: &[f32], max: f32) -> f64 {
            sum_exp_f64_body::<true>(row, max)
        }
        // SAFETY: AVX-512F, AVX2 and FMA were just detected.
        return unsafe { wide512(row, max) };
    }
    sum_exp_f64_avx2_or_baseline(row, max)
}
