//! `linear` (both paths) and `matmul` against f64 references.
//!
//! Bounds: every output is a sum of k products plus a bias, accumulated in f32, so its
//! error is at most γ_{k+2}·Σ|terms| (Higham's worst case for any summation order; +2 for
//! the bias and gemm's add into the pre-filled output). On random data the rounding errors
//! behave like a random walk of k steps of at most u·|partial sum|, so the relative L2 error
//! stays below u·√k (observed: 1–4e-7 against 1.35e-6 for k = 512); a wrong index or a
//! dropped term exceeds it by orders of magnitude.

use crate::common::{assert_within, gamma, ref_linear, ref_matmul, rel_l2, Rng, U};
use amanuensis_kernels::cpu;
use proptest::prelude::*;

type LinearFn = fn(&[f32], usize, usize, &[f32], usize, Option<&[f32]>, &mut [f32]);

const PATHS: [(&str, LinearFn); 3] = [
    ("linear", cpu::linear),
    ("linear_gemv", cpu::linear_gemv),
    ("linear_gemm", cpu::linear_gemm),
];

fn check_linear(path: (&str, LinearFn), m: usize, k: usize, n: usize, with_bias: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let mut out = vec![f32::NAN; m * n];
    (path.1)(&x, m, k, &w, n, bias, &mut out);
    let (want, mag) = ref_linear(&x, m, k, &w, n, bias);
    let bound: Vec<f64> = mag.iter().map(|a| gamma(k + 2) * a).collect();
    let what = format!("{} m={m} k={k} n={n} bias={with_bias}", path.0);
    assert_within(&what, &out, &want, &bound);
    if m * n >= 64 {
        let rel = rel_l2(&out, &want);
        assert!(
            rel <= U * (k as f64).sqrt(),
            "{what}: relative L2 error {rel:e}"
        );
    }
}

#[test]
fn linear_encoder_qkv_shape() {
    // Whisper-base encoder fused q/k/v projection: 1500 frames, 512 -> 1536.
    check_linear(PATHS[0], 1500, 512, 1536, true, 1);
}

#[test]
fn linear_encoder_fc2_shape_without_bias() {
    check_linear(PATHS[0], 1500, 2048, 512, false, 2);
}

#[test]
fn linear_logits_gemv_shape() {
    // Decoder logits projection: one token, 512 -> 51865 (vocabulary), 106 MB weight.
    check_linear(PATHS[0], 1, 512, 51865, false, 3);
}

#[test]
fn linear_logits_five_beams() {
    for path in PATHS {
        check_linear(path, 5, 512, 51865, true, 4);
    }
}

#[test]
fn linear_decoder_fc_shapes_all_paths() {
    for path in PATHS {
        for m in [1, 2, 3, 8] {
            check_linear(path, m, 512, 2048, true, 5 + m as u64);
            check_linear(path, m, 2048, 512, true, 15 + m as u64);
        }
    }
}

#[test]
fn linear_degenerate_shapes() {
    for path in PATHS {
        // k = 0: the output is the bias (or zero).
        let mut out = vec![f32::NAN; 6];
        (path.1)(&[], 2, 0, &[], 3, Some(&[1.0, 2.0, 3.0]), &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0], "{}", path.0);
        (path.1)(&[], 2, 0, &[], 3, None, &mut out);
        assert_eq!(out, [0.0; 6], "{}", path.0);
        // m = 0 or n = 0: nothing to write, nothing read.
        (path.1)(&[], 0, 4, &[0.0; 8], 2, None, &mut []);
        (path.1)(&[0.0; 8], 2, 4, &[], 0, None, &mut []);
    }
}

#[test]
fn matmul_attention_like_shape() {
    let (m, k, n) = (300, 64, 257);
    let mut rng = Rng::new(40);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(k * n, -1.0, 1.0);
    let mut out = vec![f32::NAN; m * n];
    cpu::matmul(&a, m, k, &b, n, &mut out);
    let (want, mag) = ref_matmul(&a, m, k, &b, n);
    let bound: Vec<f64> = mag.iter().map(|v| gamma(k + 1) * v).collect();
    assert_within("matmul", &out, &want, &bound);
    assert!(rel_l2(&out, &want) <= U * (k as f64).sqrt());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn linear_matches_reference(
        m in 1usize..=12,
        k in 1usize..=70,
        n in 1usize..=40,
        with_bias in any::<bool>(),
        path in 0usize..3,
        seed in any::<u64>(),
    ) {
        check_linear(PATHS[path], m, k, n, with_bias, seed);
    }

    #[test]
    fn matmul_matches_reference(
        m in 1usize..=20,
        k in 1usize..=40,
        n in 1usize..=20,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let a = rng.vec(m * k, -1.0, 1.0);
        let b = rng.vec(k * n, -1.0, 1.0);
        let mut out = vec![f32::NAN; m * n];
        cpu::matmul(&a, m, k, &b, n, &mut out);
        let (want, mag) = ref_matmul(&a, m, k, &b, n);
        let bound: Vec<f64> = mag.iter().map(|v| gamma(k + 1) * v).collect();
        assert_within("matmul", &out, &want, &bound);
    }
}

/// An f16 weight and its exact f32 widening.
fn f16_weight(rng: &mut Rng, n: usize, k: usize) -> (Vec<half::f16>, Vec<f32>) {
    let w16: Vec<half::f16> = rng
        .vec(n * k, -1.0, 1.0)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let w32 = w16.iter().map(|v| v.to_f32()).collect();
    (w16, w32)
}

#[test]
fn linear_on_f16_weights_equals_linear_on_their_widened_copy_bit_for_bit() {
    // The GEMV path widens pieces of rows as it reaches them; because widening is exact
    // and each row's product runs as on the f32 copy, the bits must match. Shapes: every
    // row-group size of the GEMV (1 to 6, and 7 and 15 rows, which take two passes), a row
    // count that is no multiple of the pieces or tiles, Whisper's decoder projections
    // (512 -> 2048, 2048 -> 512) and its vocabulary projection for five beams.
    let mut rng = Rng::new(41);
    let shapes = [
        (1, 20, 37),
        (2, 64, 1001),
        (3, 512, 2048),
        (4, 2048, 512),
        (5, 512, 51865),
        (6, 33, 100),
        (7, 512, 770),
        (15, 512, 1500),
    ];
    for (m, k, n) in shapes {
        let x = rng.vec(m * k, -1.0, 1.0);
        let b = rng.vec(n, -1.0, 1.0);
        let (w16, w32) = f16_weight(&mut rng, n, k);
        let mut want = vec![f32::NAN; m * n];
        cpu::linear_up_to(&x, m, k, &w32, n, Some(&b), &mut want, 16);
        let mut got = vec![f32::NAN; m * n];
        cpu::linear_up_to_w(&x, m, k, cpu::Weight::F16(&w16), n, Some(&b), &mut got, 16);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "m={m} k={k} n={n}: f16 weight differs from its widened copy"
        );
    }
}

#[test]
fn linear_gemm_on_f16_weights_matches_reference() {
    // The gemm path widens blocks of rows; against the f64 reference with the same bound
    // as the f32 paths. 51865 rows of 512 take several blocks; 1536 rows one.
    let mut rng = Rng::new(42);
    for (m, k, n) in [(20, 512, 51865), (300, 512, 1536), (9, 7, 3)] {
        let x = rng.vec(m * k, -1.0, 1.0);
        let b = rng.vec(n, -1.0, 1.0);
        let (w16, w32) = f16_weight(&mut rng, n, k);
        let mut out = vec![f32::NAN; m * n];
        cpu::linear_gemm_w(&x, m, k, cpu::Weight::F16(&w16), n, Some(&b), &mut out);
        let (want, mag) = ref_linear(&x, m, k, &w32, n, Some(&b));
        let bound: Vec<f64> = mag.iter().map(|a| gamma(k + 2) * a).collect();
        assert_within(&format!("f16 gemm m={m} k={k} n={n}"), &out, &want, &bound);
    }
}

/// One product through `cpu::sgemm::gemm` and through `gemm::gemm`, same arguments:
/// `lhs` is `[m, k]` with strides (cs, rs), `rhs` `[k, n]` with strides (cs, rs), `dst`
/// row-major with row stride `dst_rs` (≥ n; the columns past n are checked untouched).
#[allow(clippy::too_many_arguments)]
fn same_bits_as_gemm(
    what: &str,
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    dst_rs: usize,
    read_dst: bool,
    beta: f32,
    parallel: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let start = rng.vec(m * dst_rs, -3.0, 3.0);
    let par = if parallel {
        gemm::Parallelism::Rayon(2)
    } else {
        gemm::Parallelism::None
    };
    let alpha = if read_dst { 1.0 } else { 0.0 };
    let mut ours = start.clone();
    let mut theirs = start.clone();
    // SAFETY: the callers' shapes and strides address only elements of lhs, rhs and the
    // m × dst_rs destination.
    unsafe {
        cpu::sgemm::gemm(
            m,
            n,
            k,
            ours.as_mut_ptr(),
            1,
            dst_rs as isize,
            read_dst,
            lhs.0.as_ptr(),
            lhs.1,
            lhs.2,
            rhs.0.as_ptr(),
            rhs.1,
            rhs.2,
            alpha,
            beta,
            par,
        );
        gemm::gemm(
            m,
            n,
            k,
            theirs.as_mut_ptr(),
            1,
            dst_rs as isize,
            read_dst,
            lhs.0.as_ptr(),
            lhs.1,
            lhs.2,
            rhs.0.as_ptr(),
            rhs.1,
            rhs.2,
            alpha,
            beta,
            false,
            false,
            false,
            par,
        );
    }
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{what} m={m} n={n} k={k}: output ({}, {}) is {a:e} here, {b:e} from gemm",
            i / dst_rs,
            i % dst_rs
        );
    }
    for i in 0..m {
        assert_eq!(
            ours[i * dst_rs + n..(i + 1) * dst_rs],
            start[i * dst_rs + n..(i + 1) * dst_rs],
            "{what}: wrote past column {n}"
        );
    }
}

/// `cpu::sgemm` (AVX-512 F where present) against the `gemm` crate, bit for bit: the
/// linear layers' shapes (x · wᵀ with a bias in the destination), the f32 attention's two
/// products (scaled scores over a strided q and k; probabilities · v over 1,500 keys, a
/// reduction of several blocks), a convolution's (a column-major right operand), and
/// ragged shapes around the tiles (12 × 32), the crate's small-shape blocks (k over 512 with
/// both sides ≤ 64) and the shapes it sends elsewhere (one row, k ≤ 2, ≤ 256 outputs).
#[test]
fn sgemm_gives_the_gemm_crates_bits() {
    let mut rng = Rng::new(91);
    let mut seed = 1;
    let mut wide = |len: usize| -> Vec<f32> {
        // Values over several orders of magnitude, so that the order of the sums shows.
        (0..len)
            .map(|_| rng.uniform(-1.0, 1.0) * 10f32.powi((rng.next_u64() % 7) as i32 - 3))
            .collect()
    };
    // Linear: lhs x [m, k] row-major, rhs wᵀ (w [n, k] row-major: cs = k, rs = 1).
    for &(m, k, n, read, par) in &[
        (1500, 512, 1536, true, true),
        (1500, 2048, 512, false, true),
        (1500, 512, 2048, true, true),
        (13, 37, 45, true, false),
        (25, 1025, 70, false, true),
        (65, 600, 33, true, false),
        (40, 1300, 60, true, false),
        (12, 3000, 32, false, false),
        (2, 200, 200, true, false),
        (1, 512, 512, true, false),
        (100, 2, 5, true, false),
        (10, 16, 20, false, false),
    ] {
        let x = wide(m * k);
        let w = wide(n * k);
        same_bits_as_gemm(
            "linear",
            m,
            n,
            k,
            (&x, 1, k as isize),
            (&w, k as isize, 1),
            n + 3,
            read,
            1.0,
            par,
            seed,
        );
        seed += 1;
    }
    // Attention scores: q and k rows of a fused [t, 1536] buffer, scaled by 1/8.
    let (rows, t, hd, stride) = (128, 1500, 64, 1536);
    let qkv = wide(t * stride);
    same_bits_as_gemm(
        "scores",
        rows,
        t,
        hd,
        (&qkv[64..], 1, stride as isize),
        (&qkv[512 + 64..], stride as isize, 1),
        t,
        false,
        0.125,
        false,
        seed,
    );
    // Probabilities [rows, t] · v (rows of the fused buffer): a reduction over 1,500.
    let p: Vec<f32> = wide(rows * t).iter().map(|v| v.abs()).collect();
    same_bits_as_gemm(
        "probabilities · v",
        rows,
        hd,
        t,
        (&p, 1, t as isize),
        (&qkv[1024 + 64..], 1, stride as isize),
        stride,
        false,
        1.0,
        false,
        seed + 1,
    );
    // Convolution: w [c_out, depth] · cols, cols column-major (depth contiguous).
    let (c_out, depth, cols_t) = (512, 240, 3000);
    let w = wide(c_out * depth);
    let cols = wide(depth * cols_t);
    same_bits_as_gemm(
        "conv",
        c_out,
        cols_t,
        depth,
        (&w, 1, depth as isize),
        (&cols, depth as isize, 1),
        cols_t,
        true,
        1.0,
        true,
        seed + 2,
    );
}
