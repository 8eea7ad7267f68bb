//! `gelu` and `gelu_f32` against the erf-form GELU evaluated in f64.
//!
//! Bound: relative error ≤ 1.5e-7 wherever the exact result is a normal f32. The kernel
//! evaluates in f64 with a rational erfcx fit of relative error 6.2e-9 and an exponential
//! accurate to 1e-11, then rounds once to f32 (≤ 6e-8); observed worst case 6.6e-8, so
//! 1.5e-7 leaves a 2x margin. Where the exact result is below f32's normal range
//! (subnormal or underflowing), the kernel returns a zero of the input's sign: no output
//! is ever subnormal, since a subnormal operand slows every multiply-add of the next GEMM
//! on x86 by a microcode assist (the encoder's fc2 ran 15x slower on them).

use crate::common::{ref_gelu, Rng};
use amanuensis_kernels::cpu;
use proptest::prelude::*;

const REL_BOUND: f64 = 1.5e-7;

/// `gelu_f32`'s bound: the same fit evaluated in f32 (Horner sums of positive terms, an
/// f32 exponential of relative error 3e-7, a division and three products, each rounding
/// by 6e-8); observed worst case 4.4e-7 on the sweep below, so 2e-6 leaves a 4x margin.
const F32_REL_BOUND: f64 = 2e-6;

#[track_caller]
fn check(xs: &[f32]) {
    check_kernel(xs, cpu::gelu, REL_BOUND);
    check_kernel(xs, cpu::gelu_f32, F32_REL_BOUND);
}

#[track_caller]
fn check_kernel(xs: &[f32], kernel: fn(&mut [f32]), bound: f64) {
    let mut got = xs.to_vec();
    kernel(&mut got);
    for (&x, &g) in xs.iter().zip(&got) {
        let want = ref_gelu(x);
        let err = (g as f64 - want).abs();
        // Within the bound of f32's normal range, the kernel may land on either side.
        let edge = want.abs() < f32::MIN_POSITIVE as f64 * (1.0 + bound) && g == 0.0;
        if want.abs() >= f32::MIN_POSITIVE as f64 && !edge {
            assert!(
                err <= bound * want.abs(),
                "gelu({x:e}) = {g:e}, want {want:e}: relative error {:e}",
                err / want.abs()
            );
        } else {
            assert!(
                g == 0.0 && g.is_sign_negative() == x.is_sign_negative(),
                "gelu({x:e}) = {g:e}, want a zero of x's sign (exact {want:e} is not a normal f32)"
            );
        }
        assert!(!g.is_subnormal(), "gelu({x:e}) = {g:e} is subnormal");
    }
}

#[test]
fn gelu_dense_sweep() {
    // 4 million points over [-20, 20]: both tails, the origin and the f32 underflow edge.
    let n = 4_000_000;
    let xs: Vec<f32> = (0..n).map(|i| -20.0 + 40.0 * i as f32 / n as f32).collect();
    check(&xs);
}

#[test]
fn gelu_encoder_activation_shape() {
    // 1500 x 2048 (fc1 output), large enough to take the parallel path.
    let xs = Rng::new(1).vec(1500 * 2048, -6.0, 6.0);
    check(&xs);
}

#[test]
fn gelu_special_values() {
    let xs = [
        0.0f32,
        -0.0,
        1e-30,
        -1e-30,
        1e-40,
        -1e-40,
        1.0,
        -1.0,
        14.0,
        -14.0,
        14.5,
        -14.5,
        30.0,
        -30.0,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
    ];
    check(&xs);
    for kernel in [cpu::gelu, cpu::gelu_f32] {
        let mut v = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        kernel(&mut v);
        assert!(v[0].is_nan());
        assert_eq!(v[1], f32::INFINITY);
        assert_eq!(v[2], 0.0);
    }
}

#[test]
fn gelu_f32_worst_relative_error_on_the_sweep() {
    // Prints the observed worst case the bound above is set from.
    let n = 2_000_000;
    let xs: Vec<f32> = (0..n).map(|i| -13.0 + 26.0 * i as f32 / n as f32).collect();
    let mut got = xs.clone();
    cpu::gelu_f32(&mut got);
    let worst = xs
        .iter()
        .zip(&got)
        .map(|(&x, &g)| {
            let want = ref_gelu(x);
            if want.abs() < f32::MIN_POSITIVE as f64 {
                0.0
            } else {
                (g as f64 - want).abs() / want.abs()
            }
        })
        .fold(0.0f64, f64::max);
    eprintln!("gelu_f32: worst relative error on [-13, 13]: {worst:e}");
    assert!(worst <= F32_REL_BOUND / 2.0, "worst {worst:e}");
}

proptest! {
    #[test]
    fn gelu_matches_reference(bits in prop::collection::vec(any::<u32>(), 1..200)) {
        // Arbitrary finite f32 bit patterns: every exponent range, both signs.
        let xs: Vec<f32> = bits.into_iter().map(f32::from_bits).filter(|x| x.is_finite()).collect();
        check(&xs);
    }
}

#[test]
fn gelu_gives_the_same_bits_with_and_without_avx512() {
    // The AVX-512 compilation (eight f64 lanes) must be the AVX2 one's arithmetic: a dense
    // sweep over the whole range, the specials, and arbitrary bit patterns, in lengths
    // that leave every kind of remainder.
    let n = 1 << 21;
    let mut xs: Vec<f32> = (0..=n)
        .map(|i| -20.0 + 40.0 * i as f32 / n as f32)
        .collect();
    xs.extend([
        0.0,
        -0.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-40,
        -1e-40,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let mut rng = Rng::new(77);
    xs.extend((0..100_003).map(|_| f32::from_bits(rng.next_u64() as u32)));
    let mut wide = xs.clone();
    let mut narrow = xs.clone();
    cpu::gelu(&mut wide);
    cpu::gelu_without_avx512(&mut narrow);
    for (i, (a, b)) in wide.iter().zip(&narrow).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "x = {:e}: {a:e} with AVX-512, {b:e} without",
            xs[i]
        );
    }
}
