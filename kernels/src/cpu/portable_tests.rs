//! Tests of the portable (non-FMA) compilations of the kernel bodies.
//!
//! The public entry points run the AVX2+FMA compilation on any machine that has it, so
//! the fallback used on other CPUs would otherwise go untested. These call the generic
//! bodies with `FMA = false` directly and compare them with f64 references, using the
//! same bounds as the integration tests in `tests/`.

use super::attention::{attend_row, attend_rows, attend_rows_kv, Layout};
use super::linear::gemv_block;
use super::math::{exp_f32, exp_f64_fine, gelu_one, gelu_one_f32};
use super::norm::layer_norm_rows;
use super::simd::{axpy4, dot, dot4, dot4x2};
use super::softmax::{exp_shifted, sum_exp_f64};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// Seeded values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn dot_ref(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let p = x as f64 * y as f64;
        (s + p, m + p.abs())
    })
}

#[test]
fn exp_f32_relative_error_below_3e7() {
    for variant in [exp_f32::<false> as fn(f32) -> f32, exp_f32::<true>] {
        let n = 200_000;
        for i in 0..=n {
            let x = -87.3 + (88.0 + 87.3) * i as f32 / n as f32;
            let want = (x as f64).exp();
            let got = variant(x) as f64;
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(variant(f32::NEG_INFINITY), 0.0);
        assert_eq!(variant(-100.0), 0.0);
        assert_eq!(variant(0.0), 1.0);
        assert!(variant(f32::NAN).is_nan());
    }
}

#[test]
fn exp_f64_fine_is_within_four_ulp_of_libm_and_sums_like_it() {
    // On y in [-708, 0]: every value within 4 units in the last place of f64::exp (each
    // compilation), below it 0, and −∞ gives 0, NaN NaN.
    for variant in [
        exp_f64_fine::<false> as fn(f64) -> f64,
        exp_f64_fine::<true>,
    ] {
        let mut y = -708.0f64;
        while y <= 0.0 {
            let (got, want) = (variant(y), y.exp());
            let ulp = f64::from_bits(want.to_bits() + 1) - want;
            assert!(
                (got - want).abs() <= 4.0 * ulp,
                "e^{y}: {got:e} vs {want:e}"
            );
            y += 0.013_7;
        }
        assert_eq!(variant(-709.0), 0.0);
        assert_eq!(variant(f64::NEG_INFINITY), 0.0);
        assert!(variant(f64::NAN).is_nan());
    }
    // The dispatched sum against a compensated (Neumaier) sum of the libm terms: its 8
    // lanes of about 6,500 terms each are within γ of that many additions, 1e-12 taken.
    let row: Vec<f32> = values(51_865, 9).iter().map(|v| v * 20.0).collect();
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut want, mut carry) = (0f64, 0f64);
    for &x in &row {
        let t = ((x - max) as f64).exp();
        let s = want + t;
        carry += if want.abs() >= t.abs() {
            (want - s) + t
        } else {
            (t - s) + want
        };
        want = s;
    }
    let want = want + carry;
    let got = sum_exp_f64(&row, max);
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
}

#[test]
fn gelu_portable_matches_reference() {
    gelu_variant_matches_reference(gelu_one::<false>, 1.5e-7);
}

/// The f32 evaluation without fused multiply-adds, within `gelu_f32`'s bound
/// (`kernels/tests/activation.rs`, 2e-6; the FMA compilation is checked there).
#[test]
fn gelu_f32_portable_matches_reference() {
    gelu_variant_matches_reference(gelu_one_f32::<false>, 2e-6);
}

fn gelu_variant_matches_reference(variant: fn(f32) -> f32, bound: f64) {
    let n = 400_000;
    for i in 0..=n {
        let x = -16.0 + 32.0 * i as f32 / n as f32;
        let xd = x as f64;
        let want = 0.5 * xd * libm::erfc(-xd / std::f64::consts::SQRT_2);
        let g = variant(x);
        let got = g as f64;
        let err = (got - want).abs();
        if want.abs() >= f32::MIN_POSITIVE as f64 {
            assert!(err <= bound * want.abs(), "gelu({x}) = {got}, want {want}");
        } else {
            // Below f32's normal range the result is flushed to a zero of x's sign.
            assert!(
                g == 0.0 && g.is_sign_negative() == x.is_sign_negative(),
                "gelu({x}) = {got}, want a signed zero (exact {want})"
            );
        }
        assert!(!g.is_subnormal(), "gelu({x}) = {got} is subnormal");
    }
}

#[test]
fn dot_primitives_portable() {
    for len in 0..70 {
        let x0 = values(len, 1);
        let x1 = values(len, 2);
        let w: Vec<Vec<f32>> = (0..4).map(|r| values(len, 10 + r)).collect();
        let wr = [&w[0][..], &w[1], &w[2], &w[3]];
        let close =
            |got: f32, (want, mag): (f64, f64)| (got as f64 - want).abs() <= gamma(len) * mag;
        assert!(
            close(dot::<false>(&x0, &x1), dot_ref(&x0, &x1)),
            "dot len {len}"
        );
        let d4 = dot4::<false>(&x0, wr);
        let d42 = dot4x2::<false>(&x0, &x1, wr);
        for r in 0..4 {
            assert!(close(d4[r], dot_ref(&x0, wr[r])), "dot4 len {len} row {r}");
            assert!(
                close(d42[0][r], dot_ref(&x0, wr[r])),
                "dot4x2 len {len} row {r}"
            );
            assert!(
                close(d42[1][r], dot_ref(&x1, wr[r])),
                "dot4x2 len {len} row {r}"
            );
        }
        let a = [0.5f32, -1.25, 2.0, 0.75];
        let mut y = x1.clone();
        axpy4::<false>(a, wr, &mut y);
        for j in 0..len {
            let want = x1[j] as f64 + (0..4).map(|r| a[r] as f64 * wr[r][j] as f64).sum::<f64>();
            let mag = (x1[j] as f64).abs()
                + (0..4)
                    .map(|r| (a[r] as f64 * wr[r][j] as f64).abs())
                    .sum::<f64>();
            assert!(
                (y[j] as f64 - want).abs() <= gamma(5) * mag,
                "axpy4 len {len} at {j}"
            );
        }
    }
}

#[test]
fn gemv_portable_matches_reference() {
    for (m, k, n) in [
        (1, 1, 1),
        (1, 17, 9),
        (2, 33, 4),
        (3, 64, 13),
        (5, 70, 8),
        (8, 5, 21),
    ] {
        let x = values(m * k, 3);
        let w = values(n * k, 4);
        let b = values(n, 5);
        let mut out = vec![f32::NAN; m * n];
        gemv_block::<false>(&x, m, k, &w, Some(&b), &mut out, n);
        for i in 0..m {
            for j in 0..n {
                let (s, mag) = dot_ref(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                let want = s + b[j] as f64;
                let bound = gamma(k + 1) * (mag + (b[j] as f64).abs());
                assert!(
                    (out[i * n + j] as f64 - want).abs() <= bound,
                    "gemv m={m} k={k} n={n} ({i},{j})"
                );
            }
        }
    }
}

#[test]
fn layer_norm_portable_matches_reference() {
    let (rows, dim) = (3, 37);
    let x: Vec<f32> = values(rows * dim, 6)
        .iter()
        .map(|v| v * 4.0 + 10.0)
        .collect();
    let g = values(dim, 7);
    let b = values(dim, 8);
    let mut out = vec![f32::NAN; rows * dim];
    layer_norm_rows::<false>(&x, dim, &g, &b, 1e-5, &mut out);
    for r in 0..rows {
        let xr = &x[r * dim..(r + 1) * dim];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        for c in 0..dim {
            let want = (xr[c] as f64 - mean) / (var + 1e-5).sqrt() * g[c] as f64 + b[c] as f64;
            // Inputs near 10 with spread 4: the mean's rounding dominates (see tests/norm.rs).
            assert!(
                (out[r * dim + c] as f64 - want).abs() <= 1e-5,
                "layer_norm ({r},{c})"
            );
        }
    }
}

#[test]
fn exp_shifted_portable_matches_reference() {
    let xs: Vec<f32> = values(45, 9).iter().map(|v| v * 10.0).collect();
    let mut row = xs.clone();
    let sum = exp_shifted::<false>(&mut row);
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut want_sum = 0.0;
    for (&x, &e) in xs.iter().zip(&row) {
        let want = (x as f64 - max).exp();
        want_sum += want;
        assert!(
            (e as f64 - want).abs() <= (3e-7 + 20.0 * U) * want,
            "exp_shifted({x})"
        );
    }
    assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum);
    let mut masked = [f32::NEG_INFINITY; 3];
    assert_eq!(exp_shifted::<false>(&mut masked), 0.0);
    assert_eq!(masked, [0.0; 3]);
}

#[test]
fn attend_rows_equal_attend_row_bit_for_bit_on_both_paths() {
    // The row-blocked kernel against the one-row kernel, with the portable arithmetic and
    // (where the CPU has it) AVX2: hd 64 takes the key-blocked weighted sum, hd 20 one pass.
    for (tk, hd) in [(70, 64), (75, 20)] {
        let (tq, heads) = (5, 2);
        let d = heads * hd;
        let q = values(tq * d, 21);
        let k = values(tk * d, 22);
        let v = values(tk * d, 23);
        let lay = Layout {
            q_row_stride: d,
            k_row_stride: d,
            v_row_stride: d,
            out_row_stride: d,
            tq,
            tk,
            heads,
            head_dim: hd,
            kv_head_stride: hd,
            causal_offset: None,
        };
        let mut scores = Vec::new();
        for h in 0..heads {
            let mut blocks = vec![vec![f32::NAN; hd]; tq];
            let mut single = vec![f32::NAN; hd];
            let mut check = |blocks: &[Vec<f32>], fma: bool| {
                for (i, got) in blocks.iter().enumerate() {
                    if fma {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: only reached when AVX2 and FMA were detected.
                        unsafe {
                            wide_row(&q, &k, &v, lay, h, i, &mut scores, &mut single)
                        };
                    } else {
                        attend_row::<false>(&q, &k, &v, lay, h, i, &mut scores, &mut single);
                    }
                    let same = got
                        .iter()
                        .zip(&single)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "tk={tk} hd={hd} h={h} row {i} fma={fma}");
                }
            };
            let mut outs: Vec<&mut [f32]> = blocks.iter_mut().map(|b| &mut b[..]).collect();
            attend_rows::<false>(&q, &k, &v, lay, h, 0..tq, &mut Vec::new(), &mut outs);
            check(&blocks, false);
            #[cfg(target_arch = "x86_64")]
            if super::simd::has_avx2_fma() {
                let mut outs: Vec<&mut [f32]> = blocks.iter_mut().map(|b| &mut b[..]).collect();
                // SAFETY: AVX2 and FMA were just detected.
                unsafe { wide_rows(&q, &k, &v, lay, h, 0..tq, &mut Vec::new(), &mut outs) };
                check(&blocks, true);
            }
        }
    }
}

#[test]
fn attend_rows_on_f16_keys_and_values_equal_the_f32_body_on_their_widened_values() {
    // The portable f16 body (used where F16C is missing) against the portable f32 body:
    // the same loops with each value widened as it is read, so the same bits.
    for (tk, hd) in [(70, 64), (75, 20), (3, 8)] {
        let (tq, heads) = (5, 2);
        let d = heads * hd;
        let q = values(tq * d, 31);
        let k16: Vec<half::f16> = values(tk * d, 32)
            .into_iter()
            .map(half::f16::from_f32)
            .collect();
        let v16: Vec<half::f16> = values(tk * d, 33)
            .into_iter()
            .map(half::f16::from_f32)
            .collect();
        let k32: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
        let v32: Vec<f32> = v16.iter().map(|x| x.to_f32()).collect();
        let lay = Layout {
            q_row_stride: d,
            k_row_stride: d,
            v_row_stride: d,
            out_row_stride: d,
            tq,
            tk,
            heads,
            head_dim: hd,
            kv_head_stride: hd,
            causal_offset: None,
        };
        for h in 0..heads {
            let mut want = vec![vec![f32::NAN; hd]; tq];
            let mut got = vec![vec![f32::NAN; hd]; tq];
            let mut outs: Vec<&mut [f32]> = want.iter_mut().map(|b| &mut b[..]).collect();
            attend_rows::<false>(&q, &k32, &v32, lay, h, 0..tq, &mut Vec::new(), &mut outs);
            let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|b| &mut b[..]).collect();
            attend_rows_kv::<false, half::f16>(
                &q,
                &k16,
                &v16,
                lay,
                h,
                0..tq,
                &mut Vec::new(),
                &mut outs,
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "tk={tk} hd={hd} h={h} row {i}"
                );
            }
        }
    }
}

/// `attend_row` and `attend_rows` compiled for AVX2+FMA, as the dispatchers call them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn wide_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lay: Layout,
    h: usize,
    i: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_row::<true>(q, k, v, lay, h, i, scores, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn wide_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lay: Layout,
    h: usize,
    rows: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [&mut [f32]],
) {
    attend_rows::<true>(q, k, v, lay, h, rows, scores, out)
}

#[test]
fn attend_row_portable_matches_reference() {
    let (tk, heads, hd) = (23, 2, 9);
    let d = heads * hd;
    let q = values(3 * d, 11);
    let k = values(tk * d, 12);
    let v = values(tk * d, 13);
    let lay = Layout {
        q_row_stride: d,
        k_row_stride: d,
        v_row_stride: d,
        out_row_stride: d,
        tq: 3,
        tk,
        heads,
        head_dim: hd,
        kv_head_stride: hd,
        causal_offset: Some(tk - 3),
    };
    let mut scores = Vec::new();
    for h in 0..heads {
        for i in 0..3 {
            let mut out = vec![f32::NAN; hd];
            attend_row::<false>(&q, &k, &v, lay, h, i, &mut scores, &mut out);
            let n = tk - 3 + i + 1;
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    dot_ref(&q[i * d + h * hd..][..hd], &k[j * d + h * hd..][..hd]).0
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for c in 0..hd {
                let want: f64 = (0..n)
                    .map(|j| e[j] / total * v[j * d + h * hd + c] as f64)
                    .sum();
                assert!(
                    (out[c] as f64 - want).abs() <= 1e-6,
                    "attend_row h={h} i={i} c={c}"
                );
            }
        }
    }
}
