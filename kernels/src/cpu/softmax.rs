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

/// [`exp_shifted`] on `row[..n]` with its results rounded to bf16 into `out` (a row of
/// bf16 halves, `out.len() ≥ n`; entries from `n` on are set to zero) instead of being
/// written back: the unnormalised probabilities of bf16 attention, in one pass instead
/// of exponentiating in place and then packing. Returns the sum of the unrounded
/// exponentials (0 for a row that is all −∞).
///
/// Every value and the sum have the bits of `exp_shifted` followed by
/// [`super::bf16::pack_rows`]: the same operations on 16 lanes, the same tail order; with
/// AVX-512 BF16 the rounding is `vcvtneps2bf16`'s, the same but for subnormal values, which
/// no exponential is. On a CPU without AVX-512 it runs those two.
pub(crate) fn exp_shifted_to_bf16(row: &mut [f32], n: usize, out: &mut [u16]) -> f32 {
    assert!(
        n <= row.len() && n <= out.len(),
        "exp_shifted_to_bf16: n {n} too long"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && super::simd::has_avx2_fma() {
        if std::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: AVX-512F, AVX-512 BF16, AVX2 and FMA were just detected; the bounds
            // were checked.
            return unsafe { x86::exp_shifted_to_bf16_native(&row[..n], out) };
        }
        // SAFETY: AVX-512F, AVX2 and FMA were just detected; the bounds were checked.
        return unsafe { x86::exp_shifted_to_bf16_parts::<false>(&row[..n], out, 0) };
    }
    let sum = exp_shifted_inplace(&mut row[..n]);
    let mut pairs = Vec::new();
    super::bf16::pack_rows(&row[..n], 1, n, n, 1.0, &mut pairs);
    let halves: &[u16] = bytemuck::cast_slice(&pairs);
    out[..n].copy_from_slice(&halves[..n]);
    out[n..].fill(0);
    sum
}

/// [`exp_shifted`] on `row[..n]` with each result `e` split into two bf16 values,
/// `hi` (`e` rounded) and `lo` (`e − hi` rounded), written as three segments of `out`
/// (halves of bf16 pairs), `seg` apart: `hi` from 0, `lo` from `seg`, `hi` again from
/// `2·seg`; each segment's entries from `n` to `seg` are set to zero. The left operand of
/// a bf16x3 product with `[vh; vh; vl]` ([`super::attention::attention_bf16x3`]). Returns
/// the sum of the unrounded exponentials, with the bits of [`exp_shifted_to_bf16`]'s.
pub(crate) fn exp_shifted_to_bf16x3(row: &mut [f32], n: usize, seg: usize, out: &mut [u16]) -> f32 {
    assert!(
        n <= row.len() && n <= seg && 3 * seg <= out.len(),
        "exp_shifted_to_bf16x3: n {n} or segment {seg} too long"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && super::simd::has_avx2_fma() {
        // SAFETY: AVX-512F, AVX2 and FMA were just detected; the bounds were checked.
        return unsafe { x86::exp_shifted_to_bf16_parts::<true>(&row[..n], out, seg) };
    }
    let sum = exp_shifted_inplace(&mut row[..n]);
    for (i, &e) in row[..n].iter().enumerate() {
        let hi = super::bf16::rounded_bits(e);
        let lo = super::bf16::rounded_bits(e - f32::from_bits(hi));
        out[i] = (hi >> 16) as u16;
        out[seg + i] = (lo >> 16) as u16;
        out[2 * seg + i] = (hi >> 16) as u16;
    }
    for s in 0..3 {
        out[s * seg + n..(s + 1) * seg].fill(0);
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::math::{
        EXP_F32_MAX_X, EXP_F32_MIN_X, LN2_HI_F32, LN2_LO_F32, ROUND_MAGIC_F32,
    };
    use super::super::simd::{hsum, LANES};
    use std::arch::x86_64::*;

    /// `exp_f32::<true>` on 16 lanes (the same IEEE operations in the same order).
    #[inline(always)]
    unsafe fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_F32_MIN_X)),
            _mm512_set1_ps(EXP_F32_MAX_X),
        );
        let magic = _mm512_set1_ps(ROUND_MAGIC_F32);
        let shifted = _mm512_fmadd_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
        let n = _mm512_sub_ps(shifted, magic);
        // −n by its sign bit, as the scalar negation (0 − n would turn −0 into +0).
        let neg_n = _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(n),
            _mm512_set1_epi32(i32::MIN),
        ));
        let r = _mm512_fmadd_ps(neg_n, _mm512_set1_ps(LN2_HI_F32), xc);
        let r = _mm512_fmadd_ps(neg_n, _mm512_set1_ps(LN2_LO_F32), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_castps_si512(shifted),
            _mm512_set1_epi32(127),
        ));
        let y = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
        // Below the clamp's lower end (−∞ included): zero.
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_F32_MIN_X));
        _mm512_mask_mov_ps(y, below, _mm512_setzero_ps())
    }

    /// `rounded_bits(x)` on 16 lanes (round to nearest even; a NaN stays a quiet NaN).
    #[inline(always)]
    unsafe fn rounded_bits(x: __m512) -> __m512i {
        let bits = _mm512_castps_si512(x);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
        let abs = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000));
        let r = _mm512_mask_mov_epi32(rounded, nan, quiet);
        _mm512_and_si512(r, _mm512_set1_epi32(0xffff_0000u32 as i32))
    }

    /// `rounded_bits(x) >> 16` on 16 lanes.
    #[inline(always)]
    unsafe fn to_bf16(x: __m512) -> __m256i {
        _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded_bits(x)))
    }

    /// `x` as `hi` (rounded to bf16) and `lo` (`x − hi` rounded), on 16 lanes.
    #[inline(always)]
    unsafe fn split_bf16(x: __m512) -> (__m256i, __m256i) {
        let hi = rounded_bits(x);
        let lo = _mm512_sub_ps(x, _mm512_castsi512_ps(hi));
        (
            _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(hi)),
            to_bf16(lo),
        )
    }

    /// `x` rounded to bf16 by `vcvtneps2bf16`: [`to_bf16`]'s bits for every value but a
    /// subnormal one, which it takes as zero (of its sign).
    ///
    /// # Safety
    /// AVX-512 BF16 available.
    #[inline(always)]
    unsafe fn to_bf16_native(x: __m512) -> __m256i {
        // SAFETY: `__m256bh` and `__m256i` are both 256 bits of plain data.
        std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x))
    }

    /// See [`super::exp_shifted_to_bf16`] (`X3` false, `seg` unused) and
    /// [`super::exp_shifted_to_bf16x3`] (`X3` true); `row` is the visible part.
    ///
    /// # Safety
    /// AVX-512F, AVX2 and FMA available; `out.len() ≥ row.len()`, or `≥ 3·seg` with
    /// `seg ≥ row.len()` for `X3`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn exp_shifted_to_bf16_parts<const X3: bool>(
        row: &[f32],
        out: &mut [u16],
        seg: usize,
    ) -> f32 {
        parts_body::<X3, false>(row, out, seg)
    }

    /// [`exp_shifted_to_bf16_parts`] without `X3`, each value rounded by the instruction
    /// ([`to_bf16_native`]) instead of the ten integer operations of [`to_bf16`].
    ///
    /// # Safety
    /// AVX-512F, AVX-512 BF16, AVX2 and FMA available; `out.len() ≥ row.len()`.
    #[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
    pub(super) unsafe fn exp_shifted_to_bf16_native(row: &[f32], out: &mut [u16]) -> f32 {
        parts_body::<false, true>(row, out, 0)
    }

    /// The body of both: `NATIVE` rounds with [`to_bf16_native`] (its callers enable
    /// AVX-512 BF16).
    #[inline(always)]
    unsafe fn parts_body<const X3: bool, const NATIVE: bool>(
        row: &[f32],
        out: &mut [u16],
        seg: usize,
    ) -> f32 {
        let round = |e: __m512| {
            if NATIVE {
                to_bf16_native(e)
            } else {
                to_bf16(e)
            }
        };
        debug_assert_eq!(LANES, 16);
        let n = row.len();
        let whole = n / 16 * 16;
        let p = row.as_ptr();
        // The maximum as `exp_shifted` takes it (a NaN never replaces it).
        let mut maxv = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..whole).step_by(16) {
            let v = _mm512_loadu_ps(p.add(i));
            maxv = _mm512_max_ps(v, maxv);
        }
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), maxv);
        let mut max = f32::NEG_INFINITY;
        for &v in &row[whole..] {
            max = max.max(v);
        }
        for v in lanes {
            max = max.max(v);
        }
        // The segments' parts past the row (everything past it without X3).
        let clear = |out: &mut [u16]| {
            if X3 {
                for s in 0..3 {
                    out[s * seg + n..(s + 1) * seg].fill(0);
                }
            } else {
                out[n..].fill(0);
            }
        };
        if max == f32::NEG_INFINITY {
            if X3 {
                out[..3 * seg].fill(0);
            } else {
                out.fill(0);
            }
            return 0.0;
        }
        let maxb = _mm512_set1_ps(max);
        let mut sumv = _mm512_setzero_ps();
        let o = out.as_mut_ptr();
        for i in (0..whole).step_by(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), maxb));
            sumv = _mm512_add_ps(sumv, e);
            if X3 {
                let (hi, lo) = split_bf16(e);
                _mm256_storeu_si256(o.add(i).cast(), hi);
                _mm256_storeu_si256(o.add(seg + i).cast(), lo);
                _mm256_storeu_si256(o.add(2 * seg + i).cast(), hi);
            } else {
                _mm256_storeu_si256(o.add(i).cast(), round(e));
            }
        }
        let mut sum = 0.0f32;
        let tail = n - whole;
        if tail > 0 {
            let mask: __mmask16 = (1u32 << tail).wrapping_sub(1) as u16;
            let x = _mm512_maskz_loadu_ps(mask, p.add(whole));
            let e = exp16(_mm512_sub_ps(x, maxb));
            let mut es = [0.0f32; 16];
            _mm512_storeu_ps(es.as_mut_ptr(), e);
            for &v in &es[..tail] {
                sum += v;
            }
            let mut hs = [0u16; 16];
            if X3 {
                let (hi, lo) = split_bf16(e);
                _mm256_storeu_si256(hs.as_mut_ptr().cast(), hi);
                out[whole..n].copy_from_slice(&hs[..tail]);
                out[2 * seg + whole..2 * seg + n].copy_from_slice(&hs[..tail]);
                _mm256_storeu_si256(hs.as_mut_ptr().cast(), lo);
                out[seg + whole..seg + n].copy_from_slice(&hs[..tail]);
            } else {
                _mm256_storeu_si256(hs.as_mut_ptr().cast(), round(e));
                out[whole..n].copy_from_slice(&hs[..tail]);
            }
        }
        clear(out);
        _mm512_storeu_ps(lanes.as_mut_ptr(), sumv);
        hsum(lanes) + sum
    }

    #[cfg(test)]
    #[test]
    fn vector_rounding_to_bf16_is_the_scalar_one() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        // Ties both ways, just below and above them, carries into the exponent, NaNs.
        let mut bits: Vec<u32> = Vec::new();
        for hi in [
            0x3f80_0000u32,
            0x3f81_0000,
            0x7f7f_0000,
            0x0001_0000,
            0x8001_0000,
            0xbf80_0000,
        ] {
            for lo in [0x0000, 0x7fff, 0x8000, 0x8001, 0xffff, 0x0001] {
                bits.push(hi | lo);
            }
        }
        bits.extend([0x7f80_0000, 0x7f80_0001, 0xffc0_0000, 0x7fff_ffff]);
        for chunk in bits.chunks(16) {
            let mut lanes = [0u32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0u16; 16];
            // SAFETY: AVX-512F was just detected.
            unsafe {
                let v = _mm512_loadu_ps(lanes.as_ptr().cast());
                _mm256_storeu_si256(got.as_mut_ptr().cast(), to_bf16(v));
            }
            for (&b, &g) in lanes.iter().zip(&got) {
                let want = (crate::cpu::bf16::rounded_bits(f32::from_bits(b)) >> 16) as u16;
                assert_eq!(g, want, "{b:#010x}");
            }
            if !std::is_x86_feature_detected!("avx512bf16") {
                continue;
            }
            // The instruction: the same bits, but a subnormal value is a zero of its sign.
            let mut native = [0u16; 16];
            // SAFETY: AVX-512F and AVX-512 BF16 were just detected.
            unsafe {
                let v = _mm512_loadu_ps(lanes.as_ptr().cast());
                _mm256_storeu_si256(native.as_mut_ptr().cast(), to_bf16_native(v));
            }
            for ((&b, &g), &n) in lanes.iter().zip(&got).zip(&native) {
                let subnormal = f32::from_bits(b).is_subnormal();
                let want = if subnormal {
                    (b >> 16) as u16 & 0x8000
                } else {
                    g
                };
                assert_eq!(n, want, "native {b:#010x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vcvtneps2bf16` takes a subnormal value as zero where the integer rounding keeps
    /// it; the fused pass may round with either because no exponential is subnormal: below
    /// the clamp (e^x under f32's normal range) the result is 0, above it normal. Checked
    /// over every f32 from 0.01 below the clamp to 0.05 above it.
    #[test]
    fn no_exponential_is_subnormal_so_both_roundings_to_bf16_agree() {
        let min_x = super::super::math::EXP_F32_MIN_X;
        let mut d = min_x - 0.01;
        let mut checked = 0;
        while d < min_x + 0.05 {
            let mut row = vec![0.0f32, d];
            exp_shifted_inplace(&mut row);
            assert!(!row[1].is_subnormal(), "e^{d} = {:e} is subnormal", row[1]);
            checked += 1;
            // Toward zero: the next f32 above d.
            d = f32::from_bits(d.to_bits() - 1);
        }
        assert!(checked > 7000, "{checked}");
    }

    /// The fused pass gives the bits of exponentiating in place then packing to bf16: the
    /// sum and every value, with masked tails, rows of −∞ and every tail length.
    #[test]
    fn exp_to_bf16_has_the_bits_of_exp_then_pack() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut lengths: Vec<usize> = (0..40).collect();
        lengths.extend([63, 64, 65, 750, 1499, 1500]);
        for &len in &lengths {
            for visible in [len, len.saturating_sub(3), len / 2] {
                let scale = if len % 2 == 0 { 8.0 } else { 90.0 };
                let mut row: Vec<f32> = (0..len).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect();
                if len > 5 {
                    row[len / 3] = f32::NEG_INFINITY;
                }
                let mut want_row = row.clone();
                let want_sum = exp_shifted_inplace(&mut want_row[..visible]);
                want_row[visible..].fill(0.0);
                let mut pairs = Vec::new();
                crate::cpu::bf16::pack_rows(&want_row, 1, len, len, 1.0, &mut pairs);
                let want: &[u16] = bytemuck::cast_slice(&pairs);
                let mut got = vec![0xAAAAu16; len + 1];
                let sum = exp_shifted_to_bf16(&mut row, visible, &mut got);
                let mut runs = vec![("best", sum, got)];
                // The integer rounding as well where the instruction took its place.
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx512f") && crate::cpu::simd::has_avx2_fma() {
                    let mut got = vec![0xAAAAu16; len + 1];
                    // SAFETY: the features were just detected; `got` is longer than the row.
                    let sum = unsafe {
                        super::x86::exp_shifted_to_bf16_parts::<false>(&row[..visible], &mut got, 0)
                    };
                    runs.push(("integer rounding", sum, got));
                }
                for (how, sum, got) in runs {
                    assert_eq!(
                        sum.to_bits(),
                        want_sum.to_bits(),
                        "{how}: sum, len {len} visible {visible}"
                    );
                    assert_eq!(
                        &got[..len],
                        &want[..len],
                        "{how}: values, len {len} visible {visible}"
                    );
                    assert_eq!(got[len], 0, "{how}: the half after the row, len {len}");
                }
            }
        }
        let mut masked = vec![f32::NEG_INFINITY; 20];
        let mut out = vec![7u16; 20];
        assert_eq!(exp_shifted_to_bf16(&mut masked, 20, &mut out), 0.0);
        assert!(out.iter().all(|&h| h == 0));
    }

    /// The bf16x3 pass: the sum of `exp_shifted`, and each exponential `e` as `hi` (e
    /// rounded), `lo` (e − hi rounded) and `hi` in three segments, zeros past the row in
    /// each; `hi + lo` holds `e` to 2⁻¹⁷ relative.
    #[test]
    fn exp_to_bf16x3_splits_the_exponentials_of_exp_shifted() {
        use crate::cpu::bf16::{from_bf16, rounded_bits};
        let mut rng = fastrand::Rng::with_seed(6);
        for len in [0usize, 1, 5, 15, 16, 17, 33, 750, 1499, 1500] {
            for visible in [len, len.saturating_sub(3), len / 2] {
                let seg = len + 2;
                let mut row: Vec<f32> = (0..len).map(|_| (rng.f32() * 2.0 - 1.0) * 9.0).collect();
                if len > 5 {
                    row[len / 3] = f32::NEG_INFINITY;
                }
                let mut want_row = row.clone();
                let want_sum = exp_shifted_inplace(&mut want_row[..visible]);
                let mut got = vec![0xAAAAu16; 3 * seg + 1];
                let sum = exp_shifted_to_bf16x3(&mut row, visible, seg, &mut got);
                assert_eq!(
                    sum.to_bits(),
                    want_sum.to_bits(),
                    "len {len} visible {visible}"
                );
                for i in 0..seg {
                    let (hi, lo) = if i < visible {
                        let e = want_row[i];
                        let h = rounded_bits(e);
                        let l = rounded_bits(e - f32::from_bits(h));
                        let (h16, l16) = ((h >> 16) as u16, (l >> 16) as u16);
                        let err = (from_bf16(h16) + from_bf16(l16) - e).abs();
                        assert!(err <= e * 2f32.powi(-17), "{e} split {err}");
                        (h16, l16)
                    } else {
                        (0, 0)
                    };
                    assert_eq!(got[i], hi, "hi {i}, len {len} visible {visible}");
                    assert_eq!(got[seg + i], lo, "lo {i}, len {len} visible {visible}");
                    assert_eq!(got[2 * seg + i], hi, "hi again {i}, len {len}");
                }
                assert_eq!(got[3 * seg], 0xAAAA, "wrote past the segments");
            }
        }
    }
}
