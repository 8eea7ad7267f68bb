//! NPU catalogue v1 references against f64 references and the f32 CPU kernels.
//!
//! Bounds (u = 2⁻²⁴, γ_n = n·u/(1 − n·u), u_bf = 2⁻⁸ the bf16 unit roundoff):
//! - matmul/conv vs f64 on the bf16-rounded inputs: a bf16·bf16 product is exact in f32,
//!   so the only errors are the K additions plus the bias add: |Δ| ≤ γ_{K+1}·(Σ|a·w| + |b|).
//! - vs the f32 CPU kernel on unrounded inputs: each input moves by ≤ u_bf relatively, so a
//!   product moves by ≤ (2u_bf + u_bf²)·|a·w|; both kernels are within γ_{K+1}(...) of
//!   their own exact sums (any summation order): |Δ| ≤ (2u_bf + u_bf²)·Σ|a·w|·(1+u_bf)²
//!   + 2γ_{K+2}·(Σ|a·w| + |b|).
//! - GELU is 1.13-Lipschitz (max of its derivative ≈ 1.1289) and is rounded once: the
//!   matmul bound times 1.13 plus 2u·|gelu| (plus 1.5e-7 relative for `cpu::gelu`). The
//!   same holds for `conv1d_gelu` with K = c_in·kernel.
//! - matmul_bias_residual: one more rounded addition of r: since
//!   (1 + γ_{K+1})(1 + u) ≤ 1 + γ_{K+2}, |Δ| ≤ γ_{K+2}·(Σ|a·w| + |b| + |r|).
//! - attention: see `attention_bound`.
//! - layer norm: see `layer_norm_bound`.

#![allow(clippy::needless_range_loop)] // index arithmetic mirrors the formulas

use crate::common::{gamma, Rng, U};
use amanuensis_kernels::cpu;
use amanuensis_kernels::npu::{self, NpuKernelError};
use proptest::prelude::*;

const U_BF: f64 = 1.0 / 256.0;

fn bf(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| npu::round_bf16(v) as f64).collect()
}

fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// Tracks the worst |error| / bound ratio and fails on any ratio above 1.
#[derive(Default)]
struct Worst(f64);

impl Worst {
    fn check(&mut self, what: &str, idx: usize, got: f32, want: f64, bound: f64) {
        let err = (got as f64 - want).abs();
        assert!(
            err <= bound,
            "{what}[{idx}]: got {got}, want {want}, |err| {err:e} > bound {bound:e}"
        );
        if bound > 0.0 {
            self.0 = self.0.max(err / bound);
        }
    }
}

// ---------------------------------------------------------------- matmul

/// Checks `matmul_bias` (and the GELU variant) against f64 and `cpu::linear`; returns the
/// worst ratios (f64, cpu).
fn check_matmul(
    m: usize,
    k: usize,
    n: usize,
    with_bias: bool,
    gelu: bool,
    seed: u64,
) -> (f64, f64) {
    let mut rng = Rng::new(seed);
    let a = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let mut out = vec![f32::NAN; m * n];
    if gelu {
        npu::matmul_bias_gelu(&a, m, k, &w, n, bias, &mut out).unwrap();
    } else {
        npu::matmul_bias(&a, m, k, &w, n, bias, &mut out).unwrap();
    }
    let mut cpu_out = vec![f32::NAN; m * n];
    cpu::linear(&a, m, k, &w, n, bias, &mut cpu_out);
    if gelu {
        cpu::gelu(&mut cpu_out);
    }
    let (ab, wb) = (bf(&a), bf(&w));
    let (mut w64, mut wcpu) = (Worst::default(), Worst::default());
    for i in 0..m {
        for j in 0..n {
            let bj = if with_bias { b[j] as f64 } else { 0.0 };
            let (mut exact, mut abs_rounded, mut exact_unrounded, mut abs_unrounded) =
                (bj, bj.abs(), bj, bj.abs());
            for t in 0..k {
                let p = ab[i * k + t] * wb[j * k + t];
                exact += p;
                abs_rounded += p.abs();
                let pu = a[i * k + t] as f64 * w[j * k + t] as f64;
                exact_unrounded += pu;
                abs_unrounded += pu.abs();
            }
            let b64 = gamma(k + 1) * abs_rounded;
            let bcpu =
                (2.0 * U_BF + U_BF * U_BF) * (abs_unrounded - bj.abs()) * (1.0 + U_BF).powi(2)
                    + 2.0 * gamma(k + 2) * abs_unrounded * (1.0 + U_BF).powi(2);
            let idx = i * n + j;
            if gelu {
                let g = gelu64(exact);
                w64.check("gelu f64", idx, out[idx], g, 1.13 * b64 + 2.0 * U * g.abs());
                let gu = gelu64(exact_unrounded);
                wcpu.check(
                    "gelu cpu",
                    idx,
                    out[idx],
                    cpu_out[idx] as f64,
                    1.13 * bcpu + (4.0 * U + 1.5e-7) * gu.abs() + 1e-30,
                );
            } else {
                w64.check("matmul f64", idx, out[idx], exact, b64);
                wcpu.check("matmul cpu", idx, out[idx], cpu_out[idx] as f64, bcpu);
            }
        }
    }
    (w64.0, wcpu.0)
}

#[test]
fn matmul_bias_within_bounds_on_whisper_and_edge_shapes() {
    let shapes = [
        (1, 512, 512),
        (64, 64, 32),
        (65, 65, 33),
        (130, 512, 96),
        (7, 2048, 40),
        (200, 3, 1),
    ];
    let (mut r64, mut rcpu) = (0.0f64, 0.0f64);
    for (s, &(m, k, n)) in shapes.iter().enumerate() {
        for with_bias in [false, true] {
            let (a, b) = check_matmul(m, k, n, with_bias, false, 10 + s as u64);
            r64 = r64.max(a);
            rcpu = rcpu.max(b);
        }
    }
    eprintln!("matmul_bias worst |err|/bound: vs f64 {r64:.3e}, vs cpu::linear {rcpu:.3e}");
}

#[test]
fn matmul_bias_gelu_within_bounds() {
    let (mut r64, mut rcpu) = (0.0f64, 0.0f64);
    for (s, &(m, k, n)) in [(3, 512, 64), (70, 130, 70), (1, 2048, 8)]
        .iter()
        .enumerate()
    {
        let (a, b) = check_matmul(m, k, n, true, true, 20 + s as u64);
        r64 = r64.max(a);
        rcpu = rcpu.max(b);
    }
    eprintln!("matmul_bias_gelu worst |err|/bound: vs f64 {r64:.3e}, vs cpu {rcpu:.3e}");
}

#[test]
fn matmul_bias_accumulates_in_the_documented_order() {
    // 1 + 2⁻²⁴ + 2⁻²⁴ …: sequential f32 accumulation loses every small term after a large
    // one, while a different order (small terms first) would keep them. All values are
    // exact in bf16.
    let k = 65;
    let mut a = vec![2f32.powi(-24); k];
    a[0] = 1.0;
    let w = vec![1.0f32; k];
    let mut out = [0.0f32];
    npu::matmul_bias(&a, 1, k, &w, 1, None, &mut out).unwrap();
    assert_eq!(
        out[0], 1.0,
        "k increasing from the large term drops each 2^-24 (ties to even)"
    );
    a.rotate_left(1); // large term last: the 64 small terms sum exactly first
    npu::matmul_bias(&a, 1, k, &w, 1, None, &mut out).unwrap();
    assert_eq!(out[0], 1.0 + 64.0 * 2f32.powi(-24));
}

/// Checks `matmul_bias_residual` against f64 (bound in the module comment) and against
/// `residual_add(matmul_bias(...))`, which the contract makes bit-identical. Returns the
/// worst ratio to the bound.
fn check_matmul_residual(m: usize, k: usize, n: usize, with_bias: bool, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let a = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let r = rng.vec(m * n, -8.0, 8.0);
    let bias = with_bias.then_some(&b[..]);
    let mut out = vec![f32::NAN; m * n];
    npu::matmul_bias_residual(&a, m, k, &w, n, bias, &r, &mut out).unwrap();
    let mut mm = vec![f32::NAN; m * n];
    npu::matmul_bias(&a, m, k, &w, n, bias, &mut mm).unwrap();
    let mut two_step = vec![f32::NAN; m * n];
    npu::residual_add(&mm, &r, &mut two_step).unwrap();
    assert_eq!(
        bits(&out),
        bits(&two_step),
        "matmul_bias_residual != residual_add(matmul_bias) for m={m} k={k} n={n}"
    );
    let (ab, wb) = (bf(&a), bf(&w));
    let mut worst = Worst::default();
    for i in 0..m {
        for j in 0..n {
            let bj = if with_bias { b[j] as f64 } else { 0.0 };
            let rij = r[i * n + j] as f64;
            let (mut exact, mut abs) = (bj + rij, bj.abs() + rij.abs());
            for t in 0..k {
                let p = ab[i * k + t] * wb[j * k + t];
                exact += p;
                abs += p.abs();
            }
            let idx = i * n + j;
            worst.check(
                "matmul_residual f64",
                idx,
                out[idx],
                exact,
                gamma(k + 2) * abs,
            );
        }
    }
    worst.0
}

#[test]
fn matmul_bias_residual_within_bounds() {
    let mut ratio = 0.0f64;
    for (s, &(m, k, n)) in [
        (1, 512, 512),
        (65, 65, 33),
        (130, 512, 96),
        (7, 2048, 40),
        (200, 3, 1),
    ]
    .iter()
    .enumerate()
    {
        for with_bias in [false, true] {
            ratio = ratio.max(check_matmul_residual(m, k, n, with_bias, 80 + s as u64));
        }
    }
    eprintln!("matmul_bias_residual worst |err|/bound vs f64: {ratio:.3e}");
}

// ---------------------------------------------------------------- attention

/// Per (row, head) bound on |npu − f64| (and, with `vs_cpu`, on |npu − cpu::attention| on
/// unrounded inputs).
///
/// p_j = exp(s_j − m) carries a relative error η ≤ u_bf (its bf16 rounding) + 2⁻²² (expf
/// and the subtraction's rounding) + (e^{e_s} − 1) with e_s the score error
/// γ_hd·Σ|q·k|·scale + 3u·(|s| + |m|). The α rescalings hit o and l alike and cancel in
/// o/l. Normalised weights then err by ≤ 2η/(1 − η) relatively and sum to 1, so the output
/// errs by ≤ (2η/(1 − η) + 2γ_{tk+blocks+1} + u)·max|v|. Against the CPU, the score error
/// adds (2u_bf + u_bf²)·Σ|q·k|·scale (input rounding) and the CPU's own share, and v's
/// rounding adds u_bf·max|v|.
#[allow(clippy::too_many_arguments)]
fn attention_bound(
    sum_abs_qk_scaled: f64,
    max_abs_s: f64,
    keys: usize,
    hd: usize,
    max_v: f64,
    vs_cpu: bool,
) -> f64 {
    let blocks = keys.div_ceil(64);
    let mut e_s = gamma(hd) * sum_abs_qk_scaled + 6.0 * U * max_abs_s;
    let mut extra = 0.0;
    if vs_cpu {
        e_s = 2.0 * e_s + (2.0 * U_BF + U_BF * U_BF) * sum_abs_qk_scaled + 2f64.powi(-20);
        extra = U_BF + 2.0 * gamma(keys + 4);
    }
    let eta = U_BF + 2f64.powi(-22) + e_s.exp_m1();
    (2.0 * eta / (1.0 - eta) + 2.0 * gamma(keys + blocks + 1) + U + extra) * max_v + 1e-30
}

#[allow(clippy::too_many_arguments)]
fn check_attention(
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal: Option<usize>,
    pad: usize,
    seed: u64,
) -> (f64, f64) {
    let mut rng = Rng::new(seed);
    let width = heads * hd;
    let stride = width + pad;
    let q = rng.vec(tq * stride, -1.5, 1.5);
    let k = rng.vec(tk * stride, -1.5, 1.5);
    let v = rng.vec(tk * stride, -1.0, 1.0);
    let mut out = vec![f32::NAN; tq * stride];
    npu::attention_flash(
        &cpu::AttentionShape {
            q_row_stride: stride,
            k_row_stride: stride,
            v_row_stride: stride,
            out_row_stride: stride,
            ..cpu::AttentionShape::new(tq, tk, heads, hd).causal(causal)
        },
        &q,
        &k,
        &v,
        &mut out,
    )
    .unwrap();
    let mut cpu_out = vec![f32::NAN; tq * stride];
    let shape = cpu::AttentionShape {
        q_row_stride: stride,
        k_row_stride: stride,
        v_row_stride: stride,
        out_row_stride: stride,
        ..cpu::AttentionShape::new(tq, tk, heads, hd).causal(causal)
    };
    cpu::attention(&shape, &q, &k, &v, &mut cpu_out);
    let (qb, kb, vb) = (bf(&q), bf(&k), bf(&v));
    let scale = 1.0 / (hd as f64).sqrt();
    let (mut w64, mut wcpu) = (Worst::default(), Worst::default());
    for i in 0..tq {
        let keys = causal.map_or(tk, |p| tk.min(p + i + 1));
        for h in 0..heads {
            let c = h * hd;
            let mut s = vec![0.0f64; keys];
            let (mut sum_abs, mut sum_abs_u) = (0.0f64, 0.0f64);
            for (j, sj) in s.iter_mut().enumerate() {
                let (mut d, mut a, mut au) = (0.0, 0.0, 0.0);
                for t in 0..hd {
                    let p = qb[i * stride + c + t] * kb[j * stride + c + t];
                    d += p;
                    a += p.abs();
                    au += (q[i * stride + c + t] as f64 * k[j * stride + c + t] as f64).abs();
                }
                *sj = d * scale;
                sum_abs = f64::max(sum_abs, a * scale);
                sum_abs_u = f64::max(sum_abs_u, au * scale);
            }
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let max_abs_s = s.iter().fold(0.0f64, |acc, x| acc.max(x.abs()));
            let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
            let l: f64 = e.iter().sum();
            for t in 0..hd {
                let idx = i * stride + c + t;
                let want: f64 = if keys == 0 {
                    0.0
                } else {
                    (0..keys)
                        .map(|j| e[j] * vb[j * stride + c + t])
                        .sum::<f64>()
                        / l
                };
                let max_v = (0..keys).fold(0.0f64, |acc, j| acc.max(vb[j * stride + c + t].abs()));
                let max_vu = (0..keys).fold(0.0f64, |acc, j| {
                    acc.max((v[j * stride + c + t] as f64).abs())
                });
                w64.check(
                    "attention f64",
                    idx,
                    out[idx],
                    want,
                    attention_bound(sum_abs, max_abs_s, keys, hd, max_v, false),
                );
                wcpu.check(
                    "attention cpu",
                    idx,
                    out[idx],
                    cpu_out[idx] as f64,
                    attention_bound(
                        sum_abs_u.max(sum_abs),
                        max_abs_s,
                        keys,
                        hd,
                        max_vu.max(max_v),
                        true,
                    ),
                );
            }
        }
    }
    // Padding columns are never written.
    for i in 0..tq {
        for t in width..stride {
            assert!(
                out[i * stride + t].is_nan(),
                "padding column {t} of row {i} written"
            );
        }
    }
    (w64.0, wcpu.0)
}

#[test]
fn attention_flash_within_bounds() {
    let cases = [
        (1, 1500, 8, 64, None, 0),   // decoder cross-attention step
        (40, 40, 8, 64, Some(0), 0), // decoder self-attention prompt
        (1, 57, 8, 64, Some(56), 0), // decoder self-attention step with cache
        (150, 150, 2, 64, None, 3),  // encoder-like, strided, > 2 key blocks
        (65, 130, 3, 16, Some(5), 1),
    ];
    let (mut r64, mut rcpu) = (0.0f64, 0.0f64);
    for (s, &(tq, tk, heads, hd, causal, pad)) in cases.iter().enumerate() {
        let (a, b) = check_attention(tq, tk, heads, hd, causal, pad, 30 + s as u64);
        r64 = r64.max(a);
        rcpu = rcpu.max(b);
    }
    eprintln!("attention_flash worst |err|/bound: vs f64 {r64:.3e}, vs cpu::attention {rcpu:.3e}");
}

#[test]
fn attention_flash_with_no_keys_is_zero() {
    let q = vec![1.0f32; 8];
    let mut out = vec![f32::NAN; 8];
    let shape = cpu::AttentionShape::new(1, 0, 2, 4);
    npu::attention_flash(&shape, &q, &[], &[], &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
}

// ---------------------------------------------------------------- layer norm, residual

/// Bound on |npu − f64| for one element, first order plus 10 %.
///
/// mean errs by e ≤ γ_dim·Σ|x|/dim + u·|mean|. The variance is taken around the computed
/// mean: Σ(x − mean_f)² = S + dim·e², summed with relative error γ_{dim+3}; with the division
/// and +eps, var + eps errs relatively by ε_v ≤ γ_{dim+5}(1 + e²/(var+eps)) + e²/(var+eps),
/// so inv errs by ε_inv ≤ ε_v/2 + 2u. The output ((x − mean)·inv)·g + b then errs by
/// |g|·inv·(e + |x − mean|·(ε_inv + 3u)) + u·(|y| + |b|).
fn layer_norm_bound(xs: &[f64], eps: f64, i: usize, g: f64, b: f64, y: f64) -> f64 {
    let dim = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / dim;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / dim;
    let e = gamma(xs.len()) * xs.iter().map(|x| x.abs()).sum::<f64>() / dim + U * mean.abs();
    let r = e * e / (var + eps);
    let eps_v = gamma(xs.len() + 5) * (1.0 + r) + r;
    let eps_inv = eps_v / 2.0 + 2.0 * U;
    let inv = 1.0 / (var + eps).sqrt();
    1.1 * (g.abs() * inv * (e + (xs[i] - mean).abs() * (eps_inv + 3.0 * U))
        + U * (y.abs() + b.abs()))
        + 1e-30
}

#[test]
fn layer_norm_within_bounds() {
    let (mut r64, mut rcpu) = (0.0f64, 0.0f64);
    for (s, &(rows, dim, offset)) in [(3, 512, 0.0f32), (5, 1280, 3.0), (2, 7, -1.0), (1, 1, 0.0)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(40 + s as u64);
        let x: Vec<f32> = rng
            .vec(rows * dim, -1.0, 1.0)
            .iter()
            .map(|v| v + offset)
            .collect();
        let g = rng.vec(dim, 0.5, 1.5);
        let b = rng.vec(dim, -0.5, 0.5);
        let eps = 1e-5f32;
        let mut out = vec![f32::NAN; rows * dim];
        npu::layer_norm(&x, rows, dim, &g, &b, eps, &mut out).unwrap();
        let mut cpu_out = vec![f32::NAN; rows * dim];
        cpu::layer_norm(&x, rows, dim, &g, &b, eps, &mut cpu_out);
        let (mut w64, mut wcpu) = (Worst::default(), Worst::default());
        for r in 0..rows {
            let xs: Vec<f64> = x[r * dim..(r + 1) * dim]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let mean = xs.iter().sum::<f64>() / dim as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / dim as f64;
            for c in 0..dim {
                let want = (xs[c] - mean) / (var + eps as f64).sqrt() * g[c] as f64 + b[c] as f64;
                let bound = layer_norm_bound(&xs, eps as f64, c, g[c] as f64, b[c] as f64, want);
                w64.check("layer_norm f64", r * dim + c, out[r * dim + c], want, bound);
                wcpu.check(
                    "layer_norm cpu",
                    r * dim + c,
                    out[r * dim + c],
                    cpu_out[r * dim + c] as f64,
                    2.0 * bound,
                );
            }
        }
        r64 = r64.max(w64.0);
        rcpu = rcpu.max(wcpu.0);
    }
    eprintln!("layer_norm worst |err|/bound: vs f64 {r64:.3e}, vs cpu::layer_norm {rcpu:.3e}");
}

#[test]
fn residual_add_is_bit_identical_to_cpu_add() {
    let mut rng = Rng::new(50);
    let a = rng.vec(4099, -10.0, 10.0);
    let b = rng.vec(4099, -10.0, 10.0);
    let mut out = vec![f32::NAN; a.len()];
    let mut cpu_out = vec![f32::NAN; a.len()];
    npu::residual_add(&a, &b, &mut out).unwrap();
    cpu::add(&a, &b, &mut cpu_out);
    for i in 0..a.len() {
        assert_eq!(out[i].to_bits(), cpu_out[i].to_bits(), "element {i}");
        let exact = a[i] as f64 + b[i] as f64;
        assert!(
            (out[i] as f64 - exact).abs() <= U * exact.abs(),
            "element {i}"
        );
    }
}

// ---------------------------------------------------------------- conv1d

fn check_conv(
    c_in: usize,
    t_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    seed: u64,
) -> (f64, f64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(c_in * t_in, -1.0, 1.0);
    let w = rng.vec(c_out * c_in * kernel, -1.0, 1.0);
    let b = rng.vec(c_out, -1.0, 1.0);
    let t_out = cpu::conv1d_out_len(t_in, kernel, stride, padding);
    let mut out = vec![f32::NAN; c_out * t_out];
    npu::conv1d(
        &x,
        c_in,
        t_in,
        &w,
        c_out,
        kernel,
        Some(&b),
        stride,
        padding,
        &mut out,
    )
    .unwrap();
    let mut cpu_out = vec![f32::NAN; c_out * t_out];
    cpu::conv1d(
        &x,
        c_in,
        t_in,
        &w,
        c_out,
        kernel,
        Some(&b),
        stride,
        padding,
        &mut cpu_out,
    );
    let (xb, wb) = (bf(&x), bf(&w));
    let depth = c_in * kernel;
    let (mut w64, mut wcpu) = (Worst::default(), Worst::default());
    for co in 0..c_out {
        for t in 0..t_out {
            let bj = b[co] as f64;
            let (mut exact, mut abs_r, mut abs_u) = (bj, bj.abs(), bj.abs());
            for ci in 0..c_in {
                for tap in 0..kernel {
                    let p = (t * stride + tap) as isize - padding as isize;
                    if p >= 0 && (p as usize) < t_in {
                        let (xi, wi) = (ci * t_in + p as usize, co * depth + ci * kernel + tap);
                        exact += xb[xi] * wb[wi];
                        abs_r += (xb[xi] * wb[wi]).abs();
                        abs_u += (x[xi] as f64 * w[wi] as f64).abs();
                    }
                }
            }
            let idx = co * t_out + t;
            w64.check("conv f64", idx, out[idx], exact, gamma(depth + 1) * abs_r);
            let bcpu = (2.0 * U_BF + U_BF * U_BF) * abs_u * (1.0 + U_BF).powi(2)
                + 2.0 * gamma(depth + 2) * abs_u * (1.0 + U_BF).powi(2);
            wcpu.check("conv cpu", idx, out[idx], cpu_out[idx] as f64, bcpu);
        }
    }
    (w64.0, wcpu.0)
}

#[test]
fn conv1d_within_bounds() {
    let (mut r64, mut rcpu) = (0.0f64, 0.0f64);
    // Whisper's stem (80 → d, k 3, pad 1; then stride 2) at reduced width, plus odd shapes.
    for (s, &(c_in, t_in, c_out, kernel, stride, padding)) in [
        (80, 100, 64, 3, 1, 1),
        (64, 100, 48, 3, 2, 1),
        (3, 10, 5, 4, 3, 2),
        (2, 3, 2, 5, 1, 0),
    ]
    .iter()
    .enumerate()
    {
        let (a, b) = check_conv(c_in, t_in, c_out, kernel, stride, padding, 60 + s as u64);
        r64 = r64.max(a);
        rcpu = rcpu.max(b);
    }
    eprintln!("conv1d worst |err|/bound: vs f64 {r64:.3e}, vs cpu::conv1d {rcpu:.3e}");
}

/// Checks `conv1d_gelu` against GELU of the f64 convolution (bound in the module comment)
/// and bit for bit against `gelu_exact(conv1d(...))`. Returns the worst ratio.
#[allow(clippy::too_many_arguments)]
fn check_conv_gelu(
    c_in: usize,
    t_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    with_bias: bool,
    seed: u64,
) -> f64 {
    let mut rng = Rng::new(seed);
    let x = rng.vec(c_in * t_in, -1.0, 1.0);
    let w = rng.vec(c_out * c_in * kernel, -1.0, 1.0);
    let b = rng.vec(c_out, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let t_out = cpu::conv1d_out_len(t_in, kernel, stride, padding);
    let mut out = vec![f32::NAN; c_out * t_out];
    npu::conv1d_gelu(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, &mut out,
    )
    .unwrap();
    let mut plain = vec![f32::NAN; c_out * t_out];
    npu::conv1d(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, &mut plain,
    )
    .unwrap();
    let composed: Vec<f32> = plain.iter().map(|&c| npu::gelu_exact(c)).collect();
    assert_eq!(
        bits(&out),
        bits(&composed),
        "conv1d_gelu != gelu_exact(conv1d)"
    );
    let (xb, wb) = (bf(&x), bf(&w));
    let depth = c_in * kernel;
    let mut worst = Worst::default();
    for co in 0..c_out {
        for t in 0..t_out {
            let bj = if with_bias { b[co] as f64 } else { 0.0 };
            let (mut exact, mut abs) = (bj, bj.abs());
            for ci in 0..c_in {
                for tap in 0..kernel {
                    let p = (t * stride + tap) as isize - padding as isize;
                    if p >= 0 && (p as usize) < t_in {
                        let prod = xb[ci * t_in + p as usize] * wb[co * depth + ci * kernel + tap];
                        exact += prod;
                        abs += prod.abs();
                    }
                }
            }
            let g = gelu64(exact);
            let idx = co * t_out + t;
            worst.check(
                "conv_gelu f64",
                idx,
                out[idx],
                g,
                1.13 * gamma(depth + 1) * abs + 2.0 * U * g.abs() + 1e-30,
            );
        }
    }
    worst.0
}

#[test]
fn conv1d_gelu_within_bounds() {
    let mut ratio = 0.0f64;
    // Whisper's stem at reduced width (both convolutions are followed by GELU).
    for (s, &(c_in, t_in, c_out, kernel, stride, padding)) in [
        (80, 100, 64, 3, 1, 1),
        (64, 100, 48, 3, 2, 1),
        (3, 10, 5, 4, 3, 2),
        (2, 3, 2, 5, 1, 0),
    ]
    .iter()
    .enumerate()
    {
        for with_bias in [false, true] {
            ratio = ratio.max(check_conv_gelu(
                c_in,
                t_in,
                c_out,
                kernel,
                stride,
                padding,
                with_bias,
                90 + s as u64,
            ));
        }
    }
    eprintln!("conv1d_gelu worst |err|/bound vs f64: {ratio:.3e}");
}

// ---------------------------------------------------------------- determinism, contracts

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Runs every kernel once on fixed data and returns all output bits.
fn run_all() -> Vec<u32> {
    let mut rng = Rng::new(70);
    let (m, k, n) = (97, 300, 45);
    let a = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let mut all = Vec::new();
    let mut out = vec![0.0f32; m * n];
    npu::matmul_bias(&a, m, k, &w, n, Some(&b), &mut out).unwrap();
    all.extend(bits(&out));
    npu::matmul_bias_gelu(&a, m, k, &w, n, Some(&b), &mut out).unwrap();
    all.extend(bits(&out));
    let (tq, tk, heads, hd) = (70, 150, 3, 32);
    let q = rng.vec(tq * heads * hd, -1.0, 1.0);
    let kk = rng.vec(tk * heads * hd, -1.0, 1.0);
    let v = rng.vec(tk * heads * hd, -1.0, 1.0);
    let mut att = vec![0.0f32; tq * heads * hd];
    npu::attention_flash(
        &cpu::AttentionShape::new(tq, tk, heads, hd).causal(Some(10)),
        &q,
        &kk,
        &v,
        &mut att,
    )
    .unwrap();
    all.extend(bits(&att));
    let mut ln = vec![0.0f32; m * k];
    npu::layer_norm(&a, m, k, &w[..k], &w[k..2 * k], 1e-5, &mut ln).unwrap();
    all.extend(bits(&ln));
    let mut conv = vec![0.0f32; 9 * cpu::conv1d_out_len(100, 3, 2, 1)];
    npu::conv1d(
        &a[..10 * 100],
        10,
        100,
        &w[..9 * 30],
        9,
        3,
        Some(&b[..9]),
        2,
        1,
        &mut conv,
    )
    .unwrap();
    all.extend(bits(&conv));
    npu::conv1d_gelu(
        &a[..10 * 100],
        10,
        100,
        &w[..9 * 30],
        9,
        3,
        Some(&b[..9]),
        2,
        1,
        &mut conv,
    )
    .unwrap();
    all.extend(bits(&conv));
    let res = rng.vec(m * n, -2.0, 2.0);
    npu::matmul_bias_residual(&a, m, k, &w, n, Some(&b), &res, &mut out).unwrap();
    all.extend(bits(&out));
    all
}

#[test]
fn kernels_are_deterministic_across_calls_and_thread_counts() {
    let first = run_all();
    assert_eq!(first, run_all(), "second call differs");
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(
            first,
            pool.install(run_all),
            "result differs with {threads} threads"
        );
    }
}

#[test]
fn double_buffered_tile_footprints_fit_64k() {
    let mm = npu::MatmulBiasContract::footprint();
    // A 64×64 bf16 + B 32×64 bf16 + bias 32 f32, C 64×32 f32, all twice.
    assert_eq!(
        mm.total(),
        2 * (64 * 64 * 2 + 32 * 64 * 2 + 32 * 4 + 64 * 32 * 4)
    );
    assert_eq!(mm.total(), 41_216);
    let att = npu::AttentionFlashContract::footprint(64);
    assert_eq!(att.total(), 53_376);
    // The matmul's buffers plus a 64×32 f32 residual tile, all twice.
    let mr = npu::MatmulBiasResidualContract::footprint();
    assert_eq!(mr.total(), mm.total() + 2 * 64 * 32 * 4);
    assert_eq!(mr.total(), 57_600);
    let all = [
        ("matmul_bias", mm),
        ("matmul_bias_gelu", npu::MatmulBiasGeluContract::footprint()),
        ("matmul_bias_residual", mr),
        ("attention_flash hd=64", att),
        (
            "layer_norm dim=MAX_DIM",
            npu::LayerNormContract::footprint(npu::LayerNormContract::MAX_DIM),
        ),
        ("residual_add", npu::ResidualAddContract::footprint()),
        ("conv1d", npu::Conv1dContract::footprint()),
        ("conv1d_gelu", npu::Conv1dGeluContract::footprint()),
    ];
    for (name, f) in all {
        assert!(
            f.fits() && f.total() <= 65_536,
            "{name}: {} B exceeds 64 KB",
            f.total()
        );
        eprintln!("{name}: {} B of 65536", f.total());
    }
    // A 64-row query block would not fit: the reason BLOCK_Q is 16.
    let q64 = 64 * 64 * 2 + 2 * 2 * 64 * 64 * 2 + 64 * 64 * 4 + 64 * 64 * 4 + 2 * 64 * 4;
    assert!(q64 > npu::TILE_DATA_MEMORY_BYTES);
}

#[test]
fn bf16_rounding_is_nearest_even_and_keeps_specials() {
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to the even 1.
    assert_eq!(npu::round_bf16(1.0 + 2f32.powi(-8)), 1.0);
    // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: ties to the even 1 + 2⁻⁶.
    assert_eq!(
        npu::round_bf16(1.0 + 3.0 * 2f32.powi(-8)),
        1.0 + 2f32.powi(-6)
    );
    assert_eq!(
        npu::round_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
        1.0 + 2f32.powi(-7)
    );
    assert!(npu::round_bf16(f32::NAN).is_nan());
    assert_eq!(npu::round_bf16(f32::INFINITY), f32::INFINITY);
    assert_eq!(npu::round_bf16(f32::MAX), f32::INFINITY, "no saturation");
    assert_eq!(npu::round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn bad_shapes_are_typed_errors() {
    let mut out = vec![0.0f32; 4];
    let e = npu::matmul_bias(&[0.0; 5], 2, 3, &[0.0; 6], 2, None, &mut out).unwrap_err();
    assert_eq!(
        e,
        NpuKernelError::Length {
            kernel: "matmul_bias",
            operand: "a",
            expected: 6,
            actual: 5
        }
    );
    assert!(npu::matmul_bias(&[], usize::MAX, 2, &[], 1, None, &mut out).is_err());
    let one = cpu::AttentionShape::new(1, 1, 1, 4);
    // q shorter than a row; then a q row stride narrower than the row.
    assert!(npu::attention_flash(&one, &[0.0; 3], &[0.0; 4], &[0.0; 4], &mut out).is_err());
    let narrow = cpu::AttentionShape {
        q_row_stride: 2,
        ..one
    };
    assert!(npu::attention_flash(&narrow, &[0.0; 4], &[0.0; 4], &[0.0; 4], &mut out).is_err());
    assert!(npu::conv1d(&[0.0; 4], 1, 4, &[0.0; 3], 1, 3, None, 0, 0, &mut out).is_err());
    assert!(npu::layer_norm(&[0.0; 4], 2, 2, &[1.0; 2], &[0.0; 3], 1e-5, &mut out).is_err());
    assert!(npu::residual_add(&[0.0; 4], &[0.0; 3], &mut out).is_err());
    assert!(e.to_string().contains("matmul_bias") && e.to_string().contains("`a`"));
    assert_eq!(
        npu::matmul_bias_residual(&[0.0; 6], 2, 3, &[0.0; 6], 2, None, &[0.0; 3], &mut out)
            .unwrap_err(),
        NpuKernelError::Length {
            kernel: "matmul_bias_residual",
            operand: "residual",
            expected: 4,
            actual: 3
        }
    );
    assert_eq!(
        npu::conv1d_gelu(&[0.0; 4], 1, 4, &[0.0; 3], 1, 3, None, 0, 0, &mut out).unwrap_err(),
        NpuKernelError::Argument {
            kernel: "conv1d_gelu",
            what: "stride and kernel must be positive"
        }
    );
}

// ---------------------------------------------------------------- property tests

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn prop_matmul_bias_vs_f64(m in 1usize..200, k in 1usize..200, n in 1usize..200, bias in any::<bool>(), gelu in any::<bool>(), seed in any::<u64>()) {
        check_matmul(m, k, n, bias, gelu, seed);
    }

    #[test]
    fn prop_attention_flash_vs_f64(tq in 1usize..100, tk in 1usize..200, heads in 1usize..=4, hd in 1usize..=64, causal in proptest::option::of(0usize..150), pad in 0usize..3, seed in any::<u64>()) {
        check_attention(tq, tk, heads, hd, causal, pad, seed);
    }

    #[test]
    fn prop_matmul_bias_residual_vs_f64(m in 1usize..120, k in 1usize..200, n in 1usize..120, bias in any::<bool>(), seed in any::<u64>()) {
        check_matmul_residual(m, k, n, bias, seed);
    }

    #[test]
    fn prop_conv1d_gelu_vs_f64(c_in in 1usize..20, t_in in 1usize..60, c_out in 1usize..20, kernel in 1usize..6, stride in 1usize..4, padding in 0usize..3, bias in any::<bool>(), seed in any::<u64>()) {
        check_conv_gelu(c_in, t_in, c_out, kernel, stride, padding, bias, seed);
    }

    #[test]
    fn prop_conv1d_vs_f64(c_in in 1usize..20, t_in in 1usize..60, c_out in 1usize..20, kernel in 1usize..6, stride in 1usize..4, padding in 0usize..3, seed in any::<u64>()) {
        check_conv(c_in, t_in, c_out, kernel, stride, padding, seed);
    }
}
