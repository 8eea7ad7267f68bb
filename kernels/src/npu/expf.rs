//! `p_j = bf16(expf(s_j − m))` for a block of scores, bit-identical to `libm::expf` and
//! [`super::round_bf16`] applied one element at a time.
//!
//! `libm::expf` is FreeBSD's `e_expf` in f32 arithmetic: reduce `x = k·ln2 + r` (k from
//! `x/ln2 ± ½` truncated, or ±1, or 0 depending on |x|), a rational approximation
//! `y = 1 + (r·c/(2 − c) − lo + hi)` with `c = r − r²·(P1 + r²·P2)`, then `y·2^k`. Every
//! step is one IEEE f32 operation, so evaluating the same steps in 8 lanes gives the same
//! bits. Lanes outside the main path (|x| ≥ 87.3, where the result is subnormal, zero or
//! ∞, and NaN) are recomputed with `libm::expf` itself; |x| ≤ 2⁻¹⁴ is `1 + x` as in
//! libm. `expf_lanes_match_libm` in `tests/npu_bit_exact.rs` checks the equality over
//! millions of inputs, including every threshold's neighbourhood.

use super::round_bf16;

/// Writes `p[j] = round_bf16(libm::expf(s[j] − m))` for `j < s.len()` (`p` at least as long).
pub(crate) fn exp_sub_bf16(s: &[f32], m: f32, p: &mut [f32]) {
    let p = &mut p[..s.len()];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            unsafe { x86::exp_sub_bf16_avx2(s, m, p) };
            return;
        }
    }
    for (pj, &sj) in p.iter_mut().zip(s) {
        *pj = round_bf16(libm::expf(sj - m));
    }
}

/// `out[i] = expf(x[i])` for `i < min(x.len(), out.len())`, through the same lanes as
/// [`exp_sub_bf16`] (m = 0, no bf16 rounding); for tests of the lane arithmetic.
#[doc(hidden)]
pub fn expf_lanes(x: &[f32], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            unsafe { x86::expf_slice_avx2(x, out) };
            return;
        }
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = libm::expf(v);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::round_bf16;

    // fdlibm's constants by their bits: ln2 split in a high part (k·LN2_HI exact for
    // |k| ≤ 128) and a low part, 1/ln2, and the rational approximation's coefficients.
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 6.9314575195e-1
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286067653e-6
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b); // 1.4426950216
    const P1: f32 = f32::from_bits(0x3e2a_aa8f); // 1.6666625440e-1
    const P2: f32 = f32::from_bits(0xbb35_5215); // -2.7667332906e-3
    /// |x| bits at and above which libm takes a special path (|x| ≥ 87.33655, ∞, NaN).
    const SPECIAL: i32 = 0x42ae_ac50;
    /// |x| bits above which k = trunc(x/ln2 ± ½) (|x| > 1.5·ln2).
    const BIG: i32 = 0x3f85_1592;
    /// |x| bits above which k = ±1 (|x| > 0.5·ln2).
    const MID: i32 = 0x3eb1_7218;
    /// |x| bits at and below which expf(x) = 1 + x (|x| ≤ 2⁻¹⁴).
    const TINY: i32 = 0x3900_0000;

    /// expf of 8 lanes; lanes whose bit is set in the returned mask must be recomputed
    /// with `libm::expf`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn expf8(x: __m256) -> (__m256, i32) {
        let xi = _mm256_castps_si256(x);
        let hx = _mm256_and_si256(xi, _mm256_set1_epi32(0x7fff_ffff));
        let neg = _mm256_srai_epi32::<31>(xi); // all ones where the sign bit is set
        let special = _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(SPECIAL - 1));
        let tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(TINY + 1), hx);
        let big = _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(BIG));
        let mid = _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(MID));
        // k = (INV_LN2·x + ±½) truncated where big; 1 − 2·sign where mid; else 0.
        let half = _mm256_blendv_ps(
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(-0.5),
            _mm256_castsi256_ps(neg),
        );
        let k_big = _mm256_cvttps_epi32(_mm256_add_ps(
            _mm256_mul_ps(_mm256_set1_ps(INV_LN2), x),
            half,
        ));
        let k_mid = _mm256_or_si256(neg, _mm256_set1_epi32(1)); // −1 or +1
        let k = _mm256_blendv_epi8(_mm256_and_si256(mid, k_mid), k_big, big);
        // With k = 0, hi = x − 0 = x and lo = +0, which is libm's unreduced branch.
        let kf = _mm256_cvtepi32_ps(k);
        let hi = _mm256_sub_ps(x, _mm256_mul_ps(kf, _mm256_set1_ps(LN2_HI)));
        let lo = _mm256_mul_ps(kf, _mm256_set1_ps(LN2_LO));
        let r = _mm256_sub_ps(hi, lo);
        let rr = _mm256_mul_ps(r, r);
        let c = _mm256_sub_ps(
            r,
            _mm256_mul_ps(
                rr,
                _mm256_add_ps(_mm256_set1_ps(P1), _mm256_mul_ps(rr, _mm256_set1_ps(P2))),
            ),
        );
        let q = _mm256_div_ps(_mm256_mul_ps(r, c), _mm256_sub_ps(_mm256_set1_ps(2.0), c));
        let y = _mm256_add_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_sub_ps(q, lo), hi));
        // y·2^k: k ∈ [−126, 126] off the special path, so 2^k is a normal f32 and this is
        // scalbnf's single multiplication (y·1 = y where k = 0).
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )));
        let main = _mm256_mul_ps(y, scale);
        let res = _mm256_blendv_ps(
            main,
            _mm256_add_ps(_mm256_set1_ps(1.0), x),
            _mm256_castsi256_ps(tiny),
        );
        (res, _mm256_movemask_ps(_mm256_castsi256_ps(special)))
    }

    /// bf16 rounding of 8 lanes, as `half::bf16::from_f32(x).to_f32()`: ties to even, NaN
    /// keeps its upper bits with the quiet bit set.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn round_bf16_8(x: __m256) -> __m256 {
        let xi = _mm256_castps_si256(x);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(xi), _mm256_set1_epi32(1));
        let rounded = _mm256_add_epi32(_mm256_add_epi32(xi, _mm256_set1_epi32(0x7fff)), lsb);
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let rounded = _mm256_and_si256(rounded, high);
        let nan = _mm256_or_si256(_mm256_and_si256(xi, high), _mm256_set1_epi32(0x0040_0000));
        let is_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        _mm256_blendv_ps(
            _mm256_castsi256_ps(rounded),
            _mm256_castsi256_ps(nan),
            is_nan,
        )
    }

    /// AVX2 body of [`super::exp_sub_bf16`]; `p.len() == s.len()`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn exp_sub_bf16_avx2(s: &[f32], m: f32, p: &mut [f32]) {
        let n = s.len().min(p.len());
        let mv = _mm256_set1_ps(m);
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: j + 8 ≤ n ≤ both lengths.
            let x = _mm256_sub_ps(unsafe { _mm256_loadu_ps(s.as_ptr().add(j)) }, mv);
            let (e, special) = expf8(x);
            let pv = round_bf16_8(e);
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(p.as_mut_ptr().add(j), pv) };
            if special != 0 {
                for l in 0..8 {
                    if special & (1 << l) != 0 {
                        p[j + l] = round_bf16(libm::expf(s[j + l] - m));
                    }
                }
            }
            j += 8;
        }
        for l in j..n {
            p[l] = round_bf16(libm::expf(s[l] - m));
        }
    }

    /// AVX2 body of [`super::expf_lanes`]; `out.len() == x.len()`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn expf_slice_avx2(x: &[f32], out: &mut [f32]) {
        let n = x.len().min(out.len());
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: j + 8 ≤ n ≤ both lengths.
            let (e, special) = expf8(unsafe { _mm256_loadu_ps(x.as_ptr().add(j)) });
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(j), e) };
            if special != 0 {
                for l in 0..8 {
                    if special & (1 << l) != 0 {
                        out[j + l] = libm::expf(x[j + l]);
                    }
                }
            }
            j += 8;
        }
        for l in j..n {
            out[l] = libm::expf(x[l]);
        }
    }
}
