//! Shared test support: seeded test data, plain f64 reference kernels, and error
//! bounds derived from f32 rounding.
// Each test binary uses a different subset; index loops mirror the formulas.
#![allow(dead_code, clippy::needless_range_loop)]

/// Unit roundoff of f32 (half an ulp of 1).
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Higham's γ_n = n·u / (1 − n·u): bound on the relative error of a sum of n products
/// accumulated in f32 in any order, relative to the sum of the terms' magnitudes.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// Seeded test data (the `fastrand` generator), so a failing case can be replayed.
pub struct Rng(fastrand::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(fastrand::Rng::with_seed(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.0.f32()
    }

    pub fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Mostly uniform in [-2, 2), with about one value in 16 special: ±0, subnormals,
    /// tiny and huge finite values, and with `nonfinite` also values that round to ±∞ in
    /// bf16, ±∞ and NaN.
    pub fn wild(&mut self, n: usize, nonfinite: bool) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = self.0.f32() * 4.0 - 2.0;
                if !self.0.u64(..).is_multiple_of(16) {
                    return u;
                }
                match self.0.u64(..) % if nonfinite { 9 } else { 5 } {
                    0 => 0.0,
                    1 => -0.0,
                    2 => u * 1e-39, // subnormal
                    3 => u * 1e-30, // products underflow
                    4 => u * 1e18,  // products overflow f32 only in large sums
                    5 => u * 3e38,  // rounds to ±∞ in bf16 when |u| ≳ 1.13
                    6 => f32::INFINITY,
                    7 => f32::NEG_INFINITY,
                    _ => f32::NAN,
                }
            })
            .collect()
    }
}

/// ‖got − want‖₂ / ‖want‖₂ (0 when both are zero).
pub fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Asserts |got[i] − want[i]| ≤ bound[i] for every i, naming the first violation; returns
/// the largest error-to-bound ratio (how much of the bound was used).
#[track_caller]
pub fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert_eq!(got.len(), bound.len(), "{what}: bound length");
    let mut worst = 0.0f64;
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= bound[i],
            "{what}: element {i}: got {} want {} (error {err:e} > bound {:e})",
            got[i],
            want[i],
            bound[i]
        );
        if bound[i] > 0.0 {
            worst = worst.max(err / bound[i]);
        }
    }
    worst
}

/// Reference `linear`: out[i][j] = Σ_k x[i][k]·w[j][k] + bias[j], plus the per-element
/// magnitude Σ_k |x[i][k]·w[j][k]| + |bias[j]| that scales its rounding bound.
pub fn ref_linear(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0f64; m * n];
    let mut mag = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = x[i * k + kk] as f64 * w[j * k + kk] as f64;
                s += p;
                a += p.abs();
            }
            if let Some(b) = bias {
                s += b[j] as f64;
                a += (b[j] as f64).abs();
            }
            out[i * n + j] = s;
            mag[i * n + j] = a;
        }
    }
    (out, mag)
}

/// Reference plain matmul a[m,k]·b[k,n] with magnitudes as in [`ref_linear`].
pub fn ref_matmul(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0f64; m * n];
    let mut mag = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut t) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = a[i * k + kk] as f64 * b[kk * n + j] as f64;
                s += p;
                t += p.abs();
            }
            out[i * n + j] = s;
            mag[i * n + j] = t;
        }
    }
    (out, mag)
}

/// Strided multi-head attention inputs and the shape the kernel is called with.
pub struct Attn<'a> {
    pub q: &'a [f32],
    pub qs: usize,
    pub k: &'a [f32],
    pub ks: usize,
    pub v: &'a [f32],
    pub vs: usize,
    pub tq: usize,
    pub tk: usize,
    pub heads: usize,
    pub hd: usize,
    pub causal: Option<usize>,
    pub os: usize,
}

impl Attn<'_> {
    /// The kernels' description of this call.
    pub fn shape(&self) -> amanuensis_kernels::cpu::AttentionShape {
        amanuensis_kernels::cpu::AttentionShape {
            q_row_stride: self.qs,
            k_row_stride: self.ks,
            v_row_stride: self.vs,
            out_row_stride: self.os,
            ..amanuensis_kernels::cpu::AttentionShape::new(self.tq, self.tk, self.heads, self.hd)
                .causal(self.causal)
        }
    }
}

/// Reference attention in f64, returned densely as [tq, heads·hd], with an elementwise
/// error bound for an f32 kernel.
///
/// Bound: scores carry an absolute error Δ ≤ γ_hd·scale·Σ_d|q·k| from the f32 dot product
/// plus u·|s − max| from the f32 max subtraction. A perturbation of every score by at most
/// Δ changes each softmax weight by a factor within e^{±2Δ}, so the output moves by at
/// most 2Δ·max|v| (first order). The f32 exponential (relative error < 3e-7), the
/// normalising sum and the weighted sum of v (γ_tk each) add (6e-7 + 2γ_tk)·max|v|.
pub fn ref_attention(a: &Attn) -> (Vec<f64>, Vec<f64>) {
    let d = a.heads * a.hd;
    let scale = 1.0 / (a.hd as f64).sqrt();
    let mut out = vec![0.0f64; a.tq * d];
    let mut bound = vec![0.0f64; a.tq * d];
    let mut s = vec![0.0f64; a.tk];
    let mut smag = vec![0.0f64; a.tk];
    for h in 0..a.heads {
        let c = h * a.hd;
        for i in 0..a.tq {
            let n = a.causal.map_or(a.tk, |p| a.tk.min(p + i + 1));
            if n == 0 {
                continue;
            }
            for j in 0..n {
                let (mut acc, mut mag) = (0.0f64, 0.0f64);
                for dd in 0..a.hd {
                    let p = a.q[i * a.qs + c + dd] as f64 * a.k[j * a.ks + c + dd] as f64;
                    acc += p;
                    mag += p.abs();
                }
                s[j] = acc * scale;
                smag[j] = mag * scale;
            }
            let max = s[..n].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for j in 0..n {
                s[j] = (s[j] - max).exp();
                sum += s[j];
            }
            let mut delta = 0.0f64;
            for j in 0..n {
                delta = delta.max(gamma(a.hd) * smag[j] + U * 4.0 * smag[j]);
            }
            let mut vmax = 0.0f64;
            for dd in 0..a.hd {
                let mut acc = 0.0;
                for j in 0..n {
                    let vv = a.v[j * a.vs + c + dd] as f64;
                    acc += s[j] / sum * vv;
                    vmax = vmax.max(vv.abs());
                }
                out[i * d + c + dd] = acc;
            }
            let b = (2.0 * delta * 1.01 + 6e-7 + 2.0 * gamma(n) + U) * vmax + 1e-30;
            for dd in 0..a.hd {
                bound[i * d + c + dd] = b;
            }
        }
    }
    (out, bound)
}

/// Gathers the kernel's strided output [tq, os] into a dense [tq, heads·hd].
pub fn dense_out(out: &[f32], tq: usize, os: usize, width: usize) -> Vec<f32> {
    (0..tq)
        .flat_map(|i| out[i * os..i * os + width].iter().cloned())
        .collect()
}

/// Reference 1-D convolution with zero padding; returns output and magnitudes.
#[allow(clippy::too_many_arguments)]
pub fn ref_conv1d(
    x: &[f32],
    c_in: usize,
    t_in: usize,
    w: &[f32],
    c_out: usize,
    kernel: usize,
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
) -> (Vec<f64>, Vec<f64>) {
    let t_out = (t_in + 2 * padding - kernel) / stride + 1;
    let mut out = vec![0.0f64; c_out * t_out];
    let mut mag = vec![0.0f64; c_out * t_out];
    for co in 0..c_out {
        for t in 0..t_out {
            let mut s = bias.map_or(0.0, |b| b[co] as f64);
            let mut a = s.abs();
            for ci in 0..c_in {
                for tap in 0..kernel {
                    let pos = (t * stride + tap) as isize - padding as isize;
                    if pos >= 0 && (pos as usize) < t_in {
                        let p = w[(co * c_in + ci) * kernel + tap] as f64
                            * x[ci * t_in + pos as usize] as f64;
                        s += p;
                        a += p.abs();
                    }
                }
            }
            out[co * t_out + t] = s;
            mag[co * t_out + t] = a;
        }
    }
    (out, mag)
}

/// GELU in f64 in its erfc form x·½·erfc(−x/√2), equal to ½·x·(1 + erf(x/√2)) but free of
/// the cancellation in 1 + erf for negative x.
pub fn ref_gelu(x: f32) -> f64 {
    let x = x as f64;
    0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
}
