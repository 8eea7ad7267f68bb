//! `conv1d` and `conv1d_out_len` against an f64 reference.
//!
//! Each output is a sum of c_in·kernel products plus a bias (fewer at the padded edges),
//! so the bound is γ_{c_in·kernel+2}·Σ|terms| elementwise and u·√(c_in·kernel) for the
//! relative L2 error (see tests/linear.rs for the reasoning).

use crate::common::{assert_within, gamma, ref_conv1d, rel_l2, Rng, U};
use amanuensis_kernels::cpu;
use proptest::prelude::*;

#[allow(clippy::too_many_arguments)]
fn check(
    c_in: usize,
    t_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    with_bias: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(c_in * t_in, -1.0, 1.0);
    let w = rng.vec(c_out * c_in * kernel, -1.0, 1.0);
    let b = rng.vec(c_out, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let t_out = cpu::conv1d_out_len(t_in, kernel, stride, padding);
    assert_eq!(t_out, (t_in + 2 * padding - kernel) / stride + 1);
    let mut out = vec![f32::NAN; c_out * t_out];
    cpu::conv1d(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, &mut out,
    );
    let (want, mag) = ref_conv1d(&x, c_in, t_in, &w, c_out, kernel, bias, stride, padding);
    let depth = c_in * kernel;
    let bound: Vec<f64> = mag.iter().map(|a| gamma(depth + 2) * a).collect();
    let what =
        format!("conv1d c_in={c_in} t_in={t_in} c_out={c_out} k={kernel} s={stride} p={padding}");
    assert_within(&what, &out, &want, &bound);
    if out.len() >= 64 {
        let rel = rel_l2(&out, &want);
        assert!(
            rel <= U * (depth as f64).sqrt(),
            "{what}: relative L2 error {rel:e}"
        );
    }
}

#[test]
fn conv1d_whisper_first_layer() {
    // 80 mel bins -> 512 channels, kernel 3, stride 1, padding 1, over 3000 frames.
    check(80, 3000, 512, 3, 1, 1, true, 1);
}

#[test]
fn conv1d_whisper_second_layer() {
    // 512 -> 512 channels, kernel 3, stride 2, padding 1: 3000 frames -> 1500.
    check(512, 3000, 512, 3, 2, 1, true, 2);
}

#[test]
fn conv1d_out_len_cases() {
    assert_eq!(cpu::conv1d_out_len(3000, 3, 1, 1), 3000);
    assert_eq!(cpu::conv1d_out_len(3000, 3, 2, 1), 1500);
    assert_eq!(cpu::conv1d_out_len(5, 5, 1, 0), 1);
    assert_eq!(cpu::conv1d_out_len(4, 5, 1, 0), 0);
    assert_eq!(cpu::conv1d_out_len(4, 5, 1, 1), 2);
    assert_eq!(cpu::conv1d_out_len(10, 3, 0, 1), 0);
    assert_eq!(cpu::conv1d_out_len(10, 0, 1, 1), 0);
}

#[test]
fn conv1d_empty_output_writes_nothing() {
    // Input shorter than the kernel: no output positions.
    cpu::conv1d(&[1.0; 4], 2, 2, &[1.0; 10], 1, 5, None, 1, 0, &mut []);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv1d_matches_reference(
        c_in in 1usize..=6,
        t_in in 1usize..=40,
        c_out in 1usize..=7,
        kernel in 1usize..=5,
        stride in 1usize..=3,
        padding in 0usize..=3,
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        prop_assume!(t_in + 2 * padding >= kernel);
        check(c_in, t_in, c_out, kernel, stride, padding, with_bias, seed);
    }
}

/// A batch shares one gemm; each item must be the bits of the same conv run alone (the
/// gemm's per-element sums do not depend on the other columns).
#[test]
fn conv1d_batch_equals_each_item_alone_bit_for_bit() {
    // Silero VAD's layers (the STFT basis: 1 -> 258, kernel 256, stride 128; then
    // 129 -> 128, 128 -> 64 stride 2), an odd batch, and a layer without bias.
    for &(batch, c_in, t_in, c_out, kernel, stride, padding, bias) in &[
        (7, 1, 832, 258, 256, 128, 0, false),
        (5, 129, 4, 128, 3, 1, 1, true),
        (3, 128, 4, 64, 3, 2, 1, true),
        (1, 6, 20, 4, 3, 2, 2, true),
    ] {
        let mut rng = Rng::new(batch as u64 * 31 + c_in as u64);
        let x = rng.vec(batch * c_in * t_in, -1.0, 1.0);
        let w = rng.vec(c_out * c_in * kernel, -1.0, 1.0);
        let b = rng.vec(c_out, -1.0, 1.0);
        let bias = bias.then_some(&b[..]);
        let t_out = cpu::conv1d_out_len(t_in, kernel, stride, padding);
        let mut got = vec![f32::NAN; batch * c_out * t_out];
        cpu::conv1d_batch(
            &x, batch, c_in, t_in, &w, c_out, kernel, bias, stride, padding, &mut got,
        );
        for i in 0..batch {
            let mut alone = vec![f32::NAN; c_out * t_out];
            cpu::conv1d(
                &x[i * c_in * t_in..(i + 1) * c_in * t_in],
                c_in,
                t_in,
                &w,
                c_out,
                kernel,
                bias,
                stride,
                padding,
                &mut alone,
            );
            let item = &got[i * c_out * t_out..(i + 1) * c_out * t_out];
            assert!(
                item.iter()
                    .zip(&alone)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "batch {batch} c_in {c_in} item {i} differs from the conv alone"
            );
        }
    }
}

#[test]
fn conv1d_long_kernels_unfolded_by_column_match_reference() {
    // Silero VAD's STFT basis (1 -> 258, 256 taps, stride 128), and long kernels with
    // padding wider than the input's edge so some columns are all padding.
    check(1, 832, 258, 256, 128, 0, false, 11);
    check(2, 30, 3, 20, 3, 19, true, 12);
    check(3, 16, 5, 17, 1, 16, true, 13);
}
