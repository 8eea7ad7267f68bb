//! `softmax_inplace` against an f64 reference.
//!
//! Bound, relative per element: u·|x − max| from rounding the f32 subtraction (the
//! reference subtracts exactly), 3e-7 for the f32 exponential, γ_n for the sum and 2u for
//! the reciprocal and the final scaling.

use crate::common::{gamma, Rng, U};
use amanuensis_kernels::cpu;
use proptest::prelude::*;

#[track_caller]
fn check(xs: &[f32]) {
    let mut got = xs.to_vec();
    cpu::softmax_inplace(&mut got);
    let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = xs.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let mut total = 0.0f64;
    for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
        let want = e[i] / sum;
        if x == f32::NEG_INFINITY {
            assert_eq!(g, 0.0, "masked element {i} of {}", xs.len());
            continue;
        }
        let rel = U * (x as f64 - max).abs() + 3e-7 + gamma(xs.len()) + 2.0 * U;
        assert!(
            (g as f64 - want).abs() <= rel * want + 1e-37,
            "softmax element {i} of {}: got {g:e}, want {want:e}",
            xs.len()
        );
        total += g as f64;
    }
    assert!((total - 1.0).abs() <= gamma(xs.len()) + 1e-6, "sum {total}");
}

#[test]
fn softmax_attention_row_lengths() {
    let mut rng = Rng::new(1);
    for n in [1, 2, 15, 16, 17, 448, 1500] {
        check(&rng.vec(n, -10.0, 10.0));
    }
}

#[test]
fn softmax_large_logits_do_not_overflow() {
    let mut rng = Rng::new(2);
    let xs: Vec<f32> = rng
        .vec(100, -1.0, 1.0)
        .iter()
        .map(|v| 1e4 + v * 50.0)
        .collect();
    check(&xs);
}

#[test]
fn softmax_masked_entries() {
    let mut rng = Rng::new(3);
    let mut xs = rng.vec(40, -5.0, 5.0);
    for i in (0..40).step_by(3) {
        xs[i] = f32::NEG_INFINITY;
    }
    check(&xs);
    let mut row = xs.clone();
    cpu::softmax_inplace(&mut row);
    assert!((0..40).step_by(3).all(|i| row[i] == 0.0));
}

#[test]
fn softmax_fully_masked_row_is_zero() {
    let mut row = [f32::NEG_INFINITY; 20];
    cpu::softmax_inplace(&mut row);
    assert_eq!(row, [0.0; 20]);
    cpu::softmax_inplace(&mut []);
}

proptest! {
    #[test]
    fn softmax_matches_reference(xs in prop::collection::vec(-30.0f32..30.0, 1..300)) {
        check(&xs);
    }
}
