//! `layer_norm` against an f64 two-pass reference.
//!
//! Bound (first-order rounding analysis of the kernel's two f32 passes): the mean is off by
//! at most γ_{dim+1}·mean|x|, which shifts every centred value; the variance, a sum of
//! positive terms, is off by a relative γ_{dim+1}, so 1/σ by about half that plus the
//! square root's and reciprocal's 2u. Per element:
//! |err| ≤ |g|·(γ_{dim+1}·mean|x| + u·|x|)/σ + |g·x̂|·(γ_{dim+1} + 4u) + u·(|g·x̂| + |b|),
//! doubled for safety.

use crate::common::{assert_within, gamma, rel_l2, Rng, U};
use amanuensis_kernels::cpu;
use proptest::prelude::*;

#[track_caller]
fn check(x: &[f32], rows: usize, dim: usize, g: &[f32], b: &[f32], eps: f32) {
    let mut out = vec![f32::NAN; rows * dim];
    cpu::layer_norm(x, rows, dim, g, b, eps, &mut out);
    let mut want = vec![0.0f64; rows * dim];
    let mut bound = vec![0.0f64; rows * dim];
    let gd = gamma(dim + 1);
    for r in 0..rows {
        let xr = &x[r * dim..(r + 1) * dim];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let sigma = (var + eps as f64).sqrt();
        let mean_abs = xr.iter().map(|&v| (v as f64).abs()).sum::<f64>() / dim as f64;
        for c in 0..dim {
            let xh = (xr[c] as f64 - mean) / sigma;
            let (gc, bc) = (g[c] as f64, b[c] as f64);
            want[r * dim + c] = xh * gc + bc;
            bound[r * dim + c] = 2.0
                * (gc.abs() * (gd * mean_abs + U * (xr[c] as f64).abs()) / sigma
                    + (gc * xh).abs() * (gd + 4.0 * U)
                    + U * ((gc * xh).abs() + bc.abs()));
        }
    }
    assert_within(
        &format!("layer_norm rows={rows} dim={dim}"),
        &out,
        &want,
        &bound,
    );
}

#[test]
fn layer_norm_encoder_shape() {
    let (rows, dim) = (1500, 512);
    let mut rng = Rng::new(1);
    let mut x = rng.vec(rows * dim, -3.0, 3.0);
    // Per-row offsets and scales like residual-stream activations.
    for r in 0..rows {
        let (off, sc) = (rng.uniform(-5.0, 5.0), rng.uniform(0.1, 10.0));
        for v in &mut x[r * dim..(r + 1) * dim] {
            *v = *v * sc + off;
        }
    }
    let g = rng.vec(dim, 0.5, 1.5);
    let b = rng.vec(dim, -0.5, 0.5);
    check(&x, rows, dim, &g, &b, 1e-5);
    let mut out = vec![0.0f32; rows * dim];
    cpu::layer_norm(&x, rows, dim, &g, &b, 1e-5, &mut out);
    // Typical error is a few u per element: far below 1e-6 in relative L2.
    let want: Vec<f64> = {
        let mut w = vec![0.0; rows * dim];
        for r in 0..rows {
            let xr = &x[r * dim..(r + 1) * dim];
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            for c in 0..dim {
                w[r * dim + c] =
                    (xr[c] as f64 - mean) / (var + 1e-5).sqrt() * g[c] as f64 + b[c] as f64;
            }
        }
        w
    };
    assert!(rel_l2(&out, &want) <= 1e-6);
}

#[test]
fn layer_norm_large_mean_small_spread() {
    // Mean 1000, spread 1: E[x²] − E[x]² would cancel catastrophically; centring must not.
    let (rows, dim) = (4, 384);
    let mut rng = Rng::new(2);
    let x: Vec<f32> = rng
        .vec(rows * dim, -1.0, 1.0)
        .iter()
        .map(|v| 1000.0 + v)
        .collect();
    let g = vec![1.0f32; dim];
    let b = vec![0.0f32; dim];
    check(&x, rows, dim, &g, &b, 1e-5);
}

#[test]
fn layer_norm_constant_row_gives_beta() {
    let dim = 10;
    let x = vec![3.5f32; dim];
    let g = vec![2.0f32; dim];
    let b: Vec<f32> = (0..dim).map(|i| i as f32).collect();
    let mut out = vec![f32::NAN; dim];
    cpu::layer_norm(&x, 1, dim, &g, &b, 1e-5, &mut out);
    assert_eq!(out, b);
}

proptest! {
    #[test]
    fn layer_norm_matches_reference(
        rows in 1usize..=8,
        dim in 1usize..=100,
        offset in -100.0f32..100.0,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = rng.vec(rows * dim, -2.0, 2.0).iter().map(|v| v + offset).collect();
        let g = rng.vec(dim, -2.0, 2.0);
        let b = rng.vec(dim, -1.0, 1.0);
        check(&x, rows, dim, &g, &b, 1e-5);
    }
}
