//! The exact-erf GELU epilogue on whole rows, bit-identical to [`super::gelu_exact`] on
//! every f32 input.
//!
//! `gelu_exact(c) = f32(0.5·c·(1 + erf(c/√2)))` in f64 with `libm::erf`, FreeBSD's
//! `s_erf` (Sun fdlibm): by |x| it evaluates `x + x·P/Q` (|x| < 0.84375), `1 − (1 − erx −
//! P/Q)` around 1 (< 1.25), `1 − exp(−z² − 0.5625)·exp((z − x)(z + x) + R/S)/x` with z the
//! upper half of x (< 6), or 1 − tiny; `exp` is fdlibm's `e_exp` (reduction by ln2, a
//! rational approximation, scaling by 2^k). Every step is one IEEE f64 operation, so four
//! lanes that follow the same steps produce the same bits. Lanes outside the common path
//! (c NaN or ±∞, |c/√2| < 2⁻²⁸, an exp argument outside its main path) are recomputed with
//! `gelu_exact`. The tests compare the lanes with `gelu_exact` over millions of inputs
//! (and, in an ignored test, over all 2³² f32 values).

use super::gelu_exact;

/// `x[i] = gelu_exact(x[i])` for every element.
pub(crate) fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            unsafe { x86::gelu_avx2(x) };
            return;
        }
    }
    for v in x.iter_mut() {
        *v = gelu_exact(*v);
    }
}

/// `gelu_exact` on each element through the lanes used by the GELU kernels; for tests.
#[doc(hidden)]
pub fn gelu_lanes(x: &mut [f32]) {
    gelu_in_place(x)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::gelu_exact;

    /// fdlibm's erf and exp coefficients, by their bits (erx; P/Q on [0, 0.84375]; PA/QA
    /// on [0.84375, 1.25]; RA/SA on [1.25, 1/0.35]; RB/SB on [1/0.35, 28]; exp's ln2 split
    /// and P1..P5). Polynomials are listed from the constant term up; the tail-padded
    /// zeros let RB/SB share the RA/SA Horner steps (`c + s·0 = c` exactly).
    const ERX: u64 = 0x3feb0ac160000000;
    const PP: [u64; 5] = [
        0x3fc06eba8214db68,
        0xbfd4cd7d691cb913,
        0xbf9d2a51dbd7194f,
        0xbf77a291236668e4,
        0xbef8ead6120016ac,
    ];
    const QQ: [u64; 6] = [
        0x3ff0000000000000,
        0x3fd97779cddadc09,
        0x3fb0a54c5536ceba,
        0x3f74d022c4d36b0f,
        0x3f215dc9221c1a10,
        0xbed09c4342a26120,
    ];
    const PA: [u64; 7] = [
        0xbf6359b8bef77538,
        0x3fda8d00ad92b34d,
        0xbfd7d240fbb8c3f1,
        0x3fd45fca805120e4,
        0xbfbc63983d3e28ec,
        0x3fa22a36599795eb,
        0xbf61bf380a96073f,
    ];
    const QA: [u64; 7] = [
        0x3ff0000000000000,
        0x3fbb3e6618eee323,
        0x3fe14af092eb6f33,
        0x3fb2635cd99fe9a7,
        0x3fc02660e763351f,
        0x3f8bedc26b51dd1c,
        0x3f888b545735151d,
    ];
    const RA: [u64; 8] = [
        0xbf843412600d6435,
        0xbfe63416e4ba7360,
        0xc0251e0441b0e726,
        0xc04f300ae4cba38d,
        0xc0644cb184282266,
        0xc067135cebccabb2,
        0xc054526557e4d2f2,
        0xc023a0efc69ac25c,
    ];
    const SA: [u64; 9] = [
        0x3ff0000000000000,
        0x4033a6b9bd707687,
        0x4061350c526ae721,
        0x407b290dd58a1a71,
        0x40842b1921ec2868,
        0x407ad02157700314,
        0x405b28a3ee48ae2c,
        0x401a47ef8e484a93,
        0xbfaeeff2ee749a62,
    ];
    const RB: [u64; 8] = [
        0xbf84341239e86f4a,
        0xbfe993ba70c285de,
        0xc031c209555f995a,
        0xc064145d43c5ed98,
        0xc083ec881375f228,
        0xc09004616a2e5992,
        0xc07e384e9bdc383f,
        0,
    ];
    const SB: [u64; 9] = [
        0x3ff0000000000000,
        0x403e568b261d5190,
        0x40745cae221b9f0a,
        0x409802eb189d5118,
        0x40a8ffb7688c246a,
        0x40a3f219cedf3be6,
        0x407da874e79fe763,
        0xc03670e242712d62,
        0,
    ];
    const LN2HI: u64 = 0x3fe62e42fee00000;
    const LN2LO: u64 = 0x3dea39ef35793c76;
    const INVLN2: u64 = 0x3ff71547652b82fe;
    const EP: [u64; 5] = [
        0x3fc555555555553e,
        0xbf66c16c16bebd93,
        0x3f11566aaf25de2c,
        0xbebbbd41c5d26bf1,
        0x3e66376972bea4d0,
    ];

    /// Independent 4-lane vectors processed together. Every step below is applied to all
    /// G vectors before the next step, so the long dependency chains of erf and exp
    /// (divisions, Horner steps) of different vectors overlap instead of stalling.
    const G: usize = 4;

    /// G vectors of four f64 lanes.
    type V = [__m256d; G];

    /// `[f(0), f(1), …, f(G − 1)]`, written out so each step is emitted for all vectors in
    /// turn.
    macro_rules! each {
        (|$i:ident| $e:expr) => {{
            let mut out = [_mm256_setzero_pd(); G];
            for $i in 0..G {
                out[$i] = $e;
            }
            out
        }};
    }

    /// The f64 with these bits, in every lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn c(bits: u64) -> __m256d {
        _mm256_set1_pd(f64::from_bits(bits))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: &V, b: &V) -> V {
        each!(|i| _mm256_add_pd(a[i], b[i]))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn sub(a: &V, b: &V) -> V {
        each!(|i| _mm256_sub_pd(a[i], b[i]))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul(a: &V, b: &V) -> V {
        each!(|i| _mm256_mul_pd(a[i], b[i]))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn div(a: &V, b: &V) -> V {
        each!(|i| _mm256_div_pd(a[i], b[i]))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn and(a: &V, b: &V) -> V {
        each!(|i| _mm256_and_pd(a[i], b[i]))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn or(a: &V, b: &V) -> V {
        each!(|i| _mm256_or_pd(a[i], b[i]))
    }

    /// `m` lanes from b, the others from a.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn blend(a: &V, b: &V, m: &V) -> V {
        each!(|i| _mm256_blendv_pd(a[i], b[i], m[i]))
    }

    /// The constant in every lane of every vector.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn k(bits: u64) -> V {
        [c(bits); G]
    }

    /// All-ones lanes where `m` is clear.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn not(m: &V) -> V {
        each!(|i| _mm256_xor_pd(m[i], _mm256_castsi256_pd(_mm256_set1_epi64x(-1))))
    }

    /// Whether any lane of `m` is set.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn any(m: &V) -> bool {
        let mut bits = 0;
        for v in m {
            bits |= _mm256_movemask_pd(*v);
        }
        bits != 0
    }

    /// `k0 + s·(k1 + s·(k2 + …))`, innermost first, as fdlibm writes its polynomials.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn horner<const N: usize>(s: &V, coef: &[u64; N]) -> V {
        let mut acc = k(coef[N - 1]);
        for i in (0..N - 1).rev() {
            acc = add(&k(coef[i]), &mul(s, &acc));
        }
        acc
    }

    /// Horner with a per-lane choice between two coefficient sets (`pick_b` lanes use b).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn horner2<const N: usize>(s: &V, a: &[u64; N], b: &[u64; N], pick_b: &V) -> V {
        let mut acc = blend(&k(a[N - 1]), &k(b[N - 1]), pick_b);
        for i in (0..N - 1).rev() {
            let coef = blend(&k(a[i]), &k(b[i]), pick_b);
            acc = add(&coef, &mul(s, &acc));
        }
        acc
    }

    /// High 32 bits of |x| in each 64-bit lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn high_abs(x: &V) -> [__m256i; G] {
        let mut out = [_mm256_setzero_si256(); G];
        for i in 0..G {
            out[i] = _mm256_and_si256(
                _mm256_srli_epi64::<32>(_mm256_castpd_si256(x[i])),
                _mm256_set1_epi64x(0x7fff_ffff),
            );
        }
        out
    }

    /// Lanes where `h < t` (h, t non-negative), as an all-ones mask.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn below(h: &[__m256i; G], t: i64) -> V {
        each!(|i| _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(t), h[i])))
    }

    /// fdlibm `exp` in every lane. Lanes set in the returned mask (|x| ≥ 708.4 or NaN) are
    /// not on the common path and must be recomputed by the caller.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn exp(x: &V) -> (V, V) {
        let h = high_abs(x);
        let special = not(&below(&h, 0x4086_232b)); // |x| ≥ 708.39
        let tiny = below(&h, 0x3e30_0001); // |x| ≤ 2⁻²⁸: exp = 1 + x
        let big = not(&below(&h, 0x3ff0_a2b2)); // |x| ≥ 1.5·ln2
        let mid = not(&below(&h, 0x3fd6_2e43)); // |x| > 0.5·ln2
        let neg = and(x, &k(0x8000_0000_0000_0000));
        // k = trunc(INVLN2·x ± ½) where |x| ≥ 1.5·ln2; ±1 where |x| > 0.5·ln2; else 0.
        let half = or(&k(0x3fe0_0000_0000_0000), &neg);
        let t = add(&mul(&k(INVLN2), x), &half);
        let k_big = each!(|i| _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t[i]));
        let one = or(&k(0x3ff0_0000_0000_0000), &neg);
        let kf = blend(&and(&mid, &one), &k_big, &big);
        // With k = 0: hi = x − 0 = x, lo = +0, fdlibm's unreduced branch.
        let hi = sub(x, &mul(&kf, &k(LN2HI)));
        let lo = mul(&kf, &k(LN2LO));
        let r = sub(&hi, &lo);
        let rr = mul(&r, &r);
        let cc = sub(&r, &mul(&rr, &horner(&rr, &EP)));
        let q = div(&mul(&r, &cc), &sub(&k(0x4000_0000_0000_0000), &cc));
        let y = add(&k(0x3ff0_0000_0000_0000), &add(&sub(&q, &lo), &hi));
        // y·2^k, one multiplication: k ∈ [−1021, 1022] off the special lanes.
        let scale = each!(
            |i| _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(
                _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(kf[i])),
                _mm256_set1_epi64x(1023),
            )))
        );
        let main = mul(&y, &scale);
        let res = blend(&main, &add(&k(0x3ff0_0000_0000_0000), x), &tiny);
        (res, special)
    }

    /// GELU of G·4 f32 values; lanes set in the returned masks must be recomputed with
    /// `gelu_exact`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn gelu(v: &[__m128; G]) -> ([__m128; G], [i32; G]) {
        let one = k(0x3ff0_0000_0000_0000);
        let sign_bit = k(0x8000_0000_0000_0000);
        let xc = each!(|i| _mm256_cvtps_pd(v[i]));
        let x = mul(&xc, &[_mm256_set1_pd(std::f64::consts::FRAC_1_SQRT_2); G]);
        let h = high_abs(&x);
        let sign = and(&x, &sign_bit);
        let ax = each!(|i| _mm256_andnot_pd(sign_bit[i], x[i]));
        // NaN, ±∞ and |x| < 2⁻²⁸ go to the scalar path.
        let mut fallback = or(&not(&below(&h, 0x7ff0_0000)), &below(&h, 0x3e30_0000));
        let in_a = below(&h, 0x3feb_0000); // |x| < 0.84375
        let lt_b = below(&h, 0x3ff4_0000); // |x| < 1.25
        let lt_c = below(&h, 0x4018_0000); // |x| < 6
        let in_b = each!(|i| _mm256_andnot_pd(in_a[i], lt_b[i]));
        let in_c = each!(|i| _mm256_andnot_pd(lt_b[i], lt_c[i]));
        // |x| ≥ 6: erf = ±(1 − 2⁻¹⁰²²), which is ±1 after rounding.
        let mut y = sub(&one, &k(0x0010_0000_0000_0000));
        let mut erf_a = [_mm256_setzero_pd(); G];
        if any(&in_a) {
            let z = mul(&x, &x);
            let r = horner(&z, &PP);
            let s = horner(&z, &QQ);
            erf_a = add(&x, &mul(&x, &div(&r, &s)));
        }
        if any(&in_b) {
            let s = sub(&ax, &one);
            let p = horner(&s, &PA);
            let q = horner(&s, &QA);
            let erfc = sub(&sub(&one, &k(ERX)), &div(&p, &q));
            y = blend(&y, &sub(&one, &erfc), &in_b);
        }
        if any(&in_c) {
            let s = div(&one, &mul(&ax, &ax));
            let use_b = not(&below(&h, 0x4006_db6d)); // |x| ≥ 1/0.35
            let r = horner2(&s, &RA, &RB, &use_b);
            let big_s = horner2(&s, &SA, &SB, &use_b);
            let z = and(&ax, &k(0xffff_ffff_0000_0000));
            let neg_z = each!(|i| _mm256_xor_pd(z[i], sign_bit[i]));
            let (e1, s1) = exp(&sub(&mul(&neg_z, &z), &k(0x3fe2_0000_0000_0000)));
            let (e2, s2) = exp(&add(&mul(&sub(&z, &ax), &add(&z, &ax)), &div(&r, &big_s)));
            let erfc = div(&mul(&e1, &e2), &ax);
            y = blend(&y, &sub(&one, &erfc), &in_c);
            fallback = or(&fallback, &and(&or(&s1, &s2), &in_c));
        }
        // Outside [0, 0.84375): erf = sign·y (negation is exact).
        let erf = blend(&or(&y, &sign), &erf_a, &in_a);
        let g = mul(&mul(&k(0x3fe0_0000_0000_0000), &xc), &add(&one, &erf));
        let mut out = [_mm_setzero_ps(); G];
        let mut masks = [0; G];
        for i in 0..G {
            out[i] = _mm256_cvtpd_ps(g[i]);
            masks[i] = _mm256_movemask_pd(fallback[i]);
        }
        (out, masks)
    }

    /// AVX2 body of [`super::gelu_in_place`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gelu_avx2(x: &mut [f32]) {
        const STEP: usize = 4 * G;
        let n = x.len();
        let mut j = 0;
        while j + STEP <= n {
            let mut v = [_mm_setzero_ps(); G];
            for (i, vi) in v.iter_mut().enumerate() {
                // SAFETY: j + STEP ≤ n.
                *vi = unsafe { _mm_loadu_ps(x.as_ptr().add(j + 4 * i)) };
            }
            let (g, fallback) = gelu(&v);
            for i in 0..G {
                let at = j + 4 * i;
                let mut orig = [0.0f32; 4];
                if fallback[i] != 0 {
                    orig.copy_from_slice(&x[at..at + 4]);
                }
                // SAFETY: at + 4 ≤ j + STEP ≤ n.
                unsafe { _mm_storeu_ps(x.as_mut_ptr().add(at), g[i]) };
                for (l, &o) in orig.iter().enumerate() {
                    if fallback[i] & (1 << l) != 0 {
                        x[at + l] = gelu_exact(o);
                    }
                }
            }
            j += STEP;
        }
        for v in &mut x[j..] {
            *v = gelu_exact(*v);
        }
    }
}
