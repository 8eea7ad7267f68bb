//! Numerically stable softmax over one row.

use super::math::exp_f32;
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
