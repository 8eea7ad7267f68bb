//! The int8 linear on every instruction-set path this CPU runs, against an f64 reference
//! of the unquantized product and against each other.
//!
//! Bound: with `sx = max|x|/127` and `sw = max|w[j]|/127`, rounding moves each x by at
//! most sx/2 and each w by at most sw/2, so the quantized product differs from the exact
//! one by at most `Σ_k (|x_k|·sw/2 + (|w_k| + sw/2)·sx/2)`. The integer sums are exact and
//! the dequantization adds three f32 roundings, bounded by `4u·(|y| + |b|)`.
//! Paths: integer sums are exact and every path dequantizes with the same f32 operations,
//! so every path must give the portable path's bits.

use crate::common::{Rng, U};
use amanuensis_kernels::cpu::int8::{self, Int8Path, Int8Weight};

struct Quantized {
    packed: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

fn quantize(w: &[f32], n: usize, k: usize) -> Quantized {
    let mut packed = vec![0i8; int8::packed_len(n, k)];
    let mut scales = vec![0f32; int8::padded_n(n)];
    int8::quantize_weight(
        n,
        k,
        |j, buf| buf.copy_from_slice(&w[j * k..(j + 1) * k]),
        &mut packed,
        &mut scales,
    )
    .expect("finite weights quantize");
    let sums = int8::column_sums(&packed, n, k);
    Quantized {
        packed,
        scales,
        sums,
    }
}

fn view(q: &Quantized, n: usize, k: usize) -> Int8Weight<'_> {
    Int8Weight {
        n,
        k,
        packed: &q.packed,
        scales: &q.scales,
        sums: &q.sums,
        rescore: None,
    }
}

fn paths() -> Vec<Int8Path> {
    let p: Vec<Int8Path> = Int8Path::ALL
        .into_iter()
        .filter(|p| p.available())
        .collect();
    eprintln!("int8 paths on this CPU: {:?}", p);
    p
}

fn check(m: usize, k: usize, n: usize, with_bias: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(m * k, -3.0, 3.0);
    let w = rng.vec(n * k, -0.5, 0.5);
    let b = rng.vec(n, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    let mut portable = vec![f32::NAN; m * n];
    int8::linear_i8_on(Int8Path::Portable, &x, m, k, &wq, bias, &mut portable);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let sx = xr.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0;
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let sw = wr.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0;
            let bj = bias.map_or(0.0, |b| b[j] as f64);
            let mut want = bj;
            let mut bound = 0.0;
            for (&xv, &wv) in xr.iter().zip(wr) {
                want += xv as f64 * wv as f64;
                bound += (xv as f64).abs() * sw / 2.0 + ((wv as f64).abs() + sw / 2.0) * sx / 2.0;
            }
            bound += 4.0 * U * (want.abs() + bound + bj.abs());
            let got = portable[i * n + j] as f64;
            assert!(
                (got - want).abs() <= bound,
                "m={m} k={k} n={n} bias={with_bias} [{i},{j}]: {got} vs {want}, bound {bound:e}"
            );
        }
    }
    for path in paths() {
        let mut out = vec![f32::NAN; m * n];
        int8::linear_i8_on(path, &x, m, k, &wq, bias, &mut out);
        let same = out
            .iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{} differs from portable at m={m} k={k} n={n}",
            path.name()
        );
    }
}

#[test]
fn int8_linear_matches_f64_within_the_quantization_bound_on_every_path() {
    let mut seed = 1;
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 3, 17),
        (2, 4, 16),
        (3, 5, 15),
        (4, 64, 64),
        (5, 65, 65),
        (7, 130, 63),
        (13, 512, 130),
        (1, 512, 1000),
        (9, 384, 200),
    ] {
        for with_bias in [false, true] {
            check(m, k, n, with_bias, seed);
            seed += 1;
        }
    }
}

/// Shapes the AMX path runs on tiles (at least `AMX_MIN_ROWS` rows, k a multiple of 64):
/// row counts off the 16- and 32-row blocks, a single last panel, column counts off the
/// panels, several k steps. Where the CPU has no AMX the other paths are checked on them.
#[test]
fn int8_linear_on_tile_shapes_matches_f64_and_gives_the_portable_bits() {
    let mut seed = 100;
    for &(m, k, n) in &[
        (16, 64, 16),
        (17, 64, 33),
        (31, 128, 48),
        (33, 192, 17),
        (40, 512, 130),
        (70, 256, 1000),
        (20, 2048, 80),
    ] {
        assert!(
            int8::amx_takes(m, int8::padded_k(k)),
            "{m}x{k} is a tile shape"
        );
        for with_bias in [false, true] {
            check(m, k, n, with_bias, seed);
            seed += 1;
        }
    }
}

/// An encoder-sized product, split over threads by columns, on the tiles: the bits of the
/// same rows computed one at a time (one row is never on tiles).
#[test]
fn int8_linear_on_tiles_gives_the_one_row_bits_when_split_over_threads() {
    let (m, k, n) = (150, 512, 1100);
    let mut rng = Rng::new(91);
    let x = rng.vec(m * k, -2.0, 2.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    for path in paths() {
        let mut whole = vec![0.0; m * n];
        int8::linear_i8_on(path, &x, m, k, &wq, Some(&b), &mut whole);
        for i in (0..m).step_by(7) {
            let mut row = vec![0.0; n];
            int8::linear_i8_on(path, &x[i * k..(i + 1) * k], 1, k, &wq, Some(&b), &mut row);
            assert_eq!(row, whole[i * n..(i + 1) * n], "{}: row {i}", path.name());
        }
    }
}

#[test]
fn int8_linear_parallel_split_gives_the_serial_bits() {
    // Large enough to be split over threads (m·n·k over the parallel threshold).
    let (m, k, n) = (40, 512, 1100);
    let mut rng = Rng::new(77);
    let x = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    let mut whole = vec![0.0; m * n];
    int8::linear_i8(&x, m, k, &wq, None, &mut whole);
    // Row by row: each call is below the threshold in rows but covers every column.
    for i in 0..m {
        let mut row = vec![0.0; n];
        int8::linear_i8(&x[i * k..(i + 1) * k], 1, k, &wq, None, &mut row);
        assert_eq!(row, whole[i * n..(i + 1) * n], "row {i}");
    }
}

#[test]
fn int8_rows_of_zeros_give_the_bias_and_nan_rows_give_nan() {
    let (k, n) = (20, 18);
    let mut rng = Rng::new(5);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let q = quantize(&w, n, k);
    let mut x = vec![0.0f32; 2 * k];
    x[k + 3] = f32::NAN;
    for path in paths() {
        let mut out = vec![0.0; 2 * n];
        int8::linear_i8_on(path, &x, 2, k, &view(&q, n, k), Some(&b), &mut out);
        assert_eq!(out[..n], b[..], "{}: zero row", path.name());
        assert!(
            out[n..].iter().all(|v| v.is_nan()),
            "{}: NaN row",
            path.name()
        );
    }
}

#[test]
fn quantized_weights_are_within_half_a_step_and_refuse_non_finite_rows() {
    let (n, k) = (21, 37);
    let mut rng = Rng::new(9);
    let mut w = rng.vec(n * k, -2.0, 2.0);
    w[5 * k..6 * k].fill(0.0);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    for j in 0..n {
        let sw = q.scales[j];
        for kk in 0..k {
            let d = (int8::dequantized(&wq, j, kk) - w[j * k + kk]).abs();
            assert!(
                d <= sw * 0.5 * (1.0 + 1e-6),
                "[{j},{kk}] off by {d}, step {sw}"
            );
        }
    }
    assert_eq!(q.scales[5], 0.0);
    assert!(
        q.scales[n..].iter().all(|&s| s == 0.0),
        "padded columns have scale 0"
    );
    w[7 * k + 2] = f32::INFINITY;
    let mut packed = vec![0i8; int8::packed_len(n, k)];
    let mut scales = vec![0f32; int8::padded_n(n)];
    let err = int8::quantize_weight(
        n,
        k,
        |j, buf| buf.copy_from_slice(&w[j * k..(j + 1) * k]),
        &mut packed,
        &mut scales,
    )
    .unwrap_err();
    assert_eq!(err.row, 7);
}

/// Weight-only products: x stays f32, so only the weight's rounding (at most sw/2 per
/// value) and f32 accumulation (γ_{k+3} of the sum of magnitudes: k multiply-adds, the
/// scale and the bias) separate the result from the f64 product of the unquantized
/// operands. Every path fuses the same multiply-adds in the same order: same bits.
fn check_w8(m: usize, k: usize, n: usize, with_bias: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(m * k, -3.0, 3.0);
    let w = rng.vec(n * k, -0.5, 0.5);
    let b = rng.vec(n, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    let mut portable = vec![f32::NAN; m * n];
    int8::linear_w8_f32_on(Int8Path::Portable, &x, m, k, &wq, bias, &mut portable);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let sw = wr.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0;
            let bj = bias.map_or(0.0, |b| b[j] as f64);
            let (mut want, mut quant, mut mag) = (bj, 0.0, bj.abs());
            for (&xv, &wv) in xr.iter().zip(wr) {
                want += xv as f64 * wv as f64;
                quant += (xv as f64).abs() * sw / 2.0;
                mag += (xv as f64).abs() * ((wv as f64).abs() + sw / 2.0);
            }
            let bound = quant + crate::common::gamma(k + 3) * mag;
            let got = portable[i * n + j] as f64;
            assert!(
                (got - want).abs() <= bound,
                "w8 m={m} k={k} n={n} [{i},{j}]: {got} vs {want}, bound {bound:e}"
            );
        }
    }
    for path in paths() {
        let mut out = vec![f32::NAN; m * n];
        int8::linear_w8_f32_on(path, &x, m, k, &wq, bias, &mut out);
        let same = out
            .iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "w8 {} differs from portable at m={m} k={k} n={n}",
            path.name()
        );
    }
}

#[test]
fn weight_only_int8_matches_f64_within_the_weight_rounding_bound_on_every_path() {
    let mut seed = 100;
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 3, 17),
        (2, 4, 16),
        (3, 5, 15),
        (4, 64, 64),
        (5, 65, 65),
        (8, 130, 63),
        (6, 33, 40),
        (7, 64, 100),
        (13, 70, 50),
        (21, 40, 33),
        (1, 512, 1000),
        (5, 2048, 70),
    ] {
        for with_bias in [false, true] {
            check_w8(m, k, n, with_bias, seed);
            seed += 1;
        }
    }
}

#[test]
fn weight_only_int8_is_closer_to_f32_than_the_int8_product() {
    // The reason the decoder's few-row products keep f32 activations: on activations
    // with an outlier channel (as after Whisper's layer norms) quantizing them moves the
    // result far more than quantizing the weight.
    let (m, k, n) = (2, 512, 256);
    let mut rng = Rng::new(21);
    let mut x = rng.vec(m * k, -1.0, 1.0);
    x[7] = 40.0;
    x[k + 300] = -35.0;
    let w = rng.vec(n * k, -0.1, 0.1);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    let mut exact = vec![0.0; m * n];
    amanuensis_kernels::cpu::linear_gemv(&x, m, k, &w, n, None, &mut exact);
    let mut a8 = vec![0.0; m * n];
    int8::linear_i8(&x, m, k, &wq, None, &mut a8);
    let mut a32 = vec![0.0; m * n];
    int8::linear_w8_f32(&x, m, k, &wq, None, &mut a32);
    let err = |y: &[f32]| -> f64 {
        y.iter()
            .zip(&exact)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (e8, e32) = (err(&a8), err(&a32));
    assert!(
        e32 * 3.0 < e8,
        "weight-only error {e32:e} against int8 {e8:e}"
    );
}

#[test]
fn rescoring_many_rows_at_once_gives_each_row_its_own_bits() {
    // Rows rescored together share each column's f16 row; every output must still be the
    // one that row gets alone. 70 rows (over one 64-row group), most of them repeats so that
    // columns are shared, and n not a multiple of 16 with the near-ties in the last columns.
    let (k, n) = (512, 4003);
    let mut rng = Rng::new(47);
    let distinct = rng.vec(7 * k, -1.0, 1.0);
    let m = 70;
    let x: Vec<f32> = (0..m)
        .flat_map(|i| distinct[(i % 7) * k..(i % 7 + 1) * k].to_vec())
        .collect();
    let mut w = rng.vec(n * k, -0.05, 0.05);
    for c in 1..8 {
        let (src, dst) = (n - 1, n - 1 - c);
        let row: Vec<f32> = w[src * k..(src + 1) * k]
            .iter()
            .map(|v| v * (1.0 + 1e-3 * c as f32) + 0.02)
            .collect();
        w[dst * k..(dst + 1) * k].copy_from_slice(&row);
    }
    let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let wr: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
    let q = quantize(&wr, n, k);
    let mut wq = view(&q, n, k);
    let mut plain = vec![0.0; m * n];
    int8::linear_w8_f32(&x, m, k, &wq, None, &mut plain);
    wq.rescore = Some(int8::Rescore {
        rows: &w16,
        band: 3.0,
    });
    let mut together = vec![0.0; m * n];
    int8::linear_w8_f32(&x, m, k, &wq, None, &mut together);
    let mut rescored = 0;
    for i in 0..m {
        let mut alone = vec![0.0; n];
        int8::linear_w8_f32(&x[i * k..(i + 1) * k], 1, k, &wq, None, &mut alone);
        for j in 0..n {
            assert_eq!(
                together[i * n + j].to_bits(),
                alone[j].to_bits(),
                "row {i} col {j}: rescored with the others, not alone"
            );
        }
        rescored += (0..n)
            .filter(|&j| alone[j].to_bits() != plain[i * n + j].to_bits())
            .count();
        // The near-tied last columns are the largest: all of them were computed again.
        let xr = &x[i * k..(i + 1) * k];
        for j in n - 8..n {
            let exact: f32 = xr
                .iter()
                .zip(&wr[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
            let bound = 1e-4 * exact.abs().max(1.0);
            assert!(
                (alone[j] - exact).abs() <= bound,
                "row {i} col {j}: {} is not the f16 row's {exact}",
                alone[j]
            );
        }
    }
    assert!(
        rescored >= 8 * m,
        "only {rescored} outputs were computed again"
    );
}

#[test]
fn rescored_outputs_near_the_top_are_the_exact_rows_and_keep_the_argmax() {
    // Rows whose true outputs are near-ties: the int8 weight alone may reorder them, the
    // rescored outputs within the band must be the f16 weight's own and the argmax its.
    let (m, k, n) = (3, 512, 4000);
    let mut rng = Rng::new(31);
    let x = rng.vec(m * k, -1.0, 1.0);
    let mut w = rng.vec(n * k, -0.05, 0.05);
    for c in 1..40 {
        let (src, dst) = (0, c * 97);
        let row: Vec<f32> = w[src * k..(src + 1) * k]
            .iter()
            .map(|v| v * (1.0 + 1e-3 * c as f32))
            .collect();
        w[dst * k..(dst + 1) * k].copy_from_slice(&row);
    }
    let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let wr: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
    let q = quantize(&wr, n, k);
    let mut wq = view(&q, n, k);
    wq.rescore = Some(int8::Rescore {
        rows: &w16,
        band: 2.0,
    });
    let mut out = vec![0.0; m * n];
    int8::linear_w8_f32(&x, m, k, &wq, None, &mut out);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let exact: Vec<f64> = (0..n)
            .map(|j| {
                xr.iter()
                    .zip(&wr[j * k..(j + 1) * k])
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum()
            })
            .collect();
        let best = (0..n)
            .max_by(|&a, &b| exact[a].total_cmp(&exact[b]))
            .unwrap();
        let got = (0..n)
            .max_by(|&a, &b| out[i * n + a].total_cmp(&out[i * n + b]))
            .unwrap();
        assert_eq!(got, best, "row {i}: argmax");
        for j in 0..n {
            if exact[j] >= exact[best] - 2.0 {
                let mag: f64 = xr
                    .iter()
                    .zip(&wr[j * k..(j + 1) * k])
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let bound = crate::common::gamma(k + 1) * mag;
                let d = (out[i * n + j] as f64 - exact[j]).abs();
                assert!(
                    d <= bound,
                    "row {i} col {j}: {d:e} over f32 rounding {bound:e}"
                );
            }
        }
    }
}

#[test]
fn a_group_of_weights_gives_each_part_the_bits_of_its_product_alone() {
    // q, k and v of one input as one product: quantized (or, weight-only, padded) once,
    // every weight's columns split together. Shapes: 1 and 5 rows (weight-only, the
    // decoder's), 40 rows (tiles, parallel) and 150 rows with k off the 64-grid (no
    // tiles); parts of different widths (one off the 16-column grid), with and without a
    // bias.
    let widths = [64, 200, 37];
    for (m, k, seed) in [(1, 512, 5), (5, 512, 6), (40, 512, 7), (150, 96, 8)] {
        let mut rng = Rng::new(seed);
        let x = rng.vec(m * k, -2.0, 2.0);
        let ws: Vec<Vec<f32>> = widths.iter().map(|&n| rng.vec(n * k, -1.0, 1.0)).collect();
        let bs: Vec<Vec<f32>> = widths.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
        let qs: Vec<Quantized> = ws
            .iter()
            .zip(widths)
            .map(|(w, n)| quantize(w, n, k))
            .collect();
        let views: Vec<Int8Weight> = qs.iter().zip(widths).map(|(q, n)| view(q, n, k)).collect();
        for path in paths() {
            for f32_activations in [false, true] {
                let mut outs: Vec<Vec<f32>> = widths.iter().map(|&n| vec![0.0; m * n]).collect();
                let mut parts: Vec<int8::GroupPart> = views
                    .iter()
                    .zip(outs.iter_mut())
                    .enumerate()
                    .map(|(i, (w, out))| int8::GroupPart {
                        w,
                        bias: (i != 1).then_some(bs[i].as_slice()),
                        out,
                    })
                    .collect();
                int8::linear_i8_group_on(path, &x, m, k, None, &mut parts, f32_activations);
                for (i, w) in views.iter().enumerate() {
                    let mut alone = vec![0.0; m * widths[i]];
                    let bias = (i != 1).then_some(bs[i].as_slice());
                    if f32_activations {
                        int8::linear_w8_f32_on(path, &x, m, k, w, bias, &mut alone);
                    } else {
                        int8::linear_i8_on(path, &x, m, k, w, bias, &mut alone);
                    }
                    let same = alone
                        .iter()
                        .zip(&outs[i])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} m={m} k={k} part {i} f32_activations={f32_activations}",
                        path.name()
                    );
                }
            }
        }
    }
}

#[test]
fn a_layer_norm_fused_into_the_product_gives_the_bits_of_the_norm_then_the_product() {
    // Each row normalised as it is quantized (or padded) equals `layer_norm` stored, then
    // the product: on every path, with int8 and f32 activations, on tile and non-tile
    // shapes, one part and three.
    let widths = [48, 200, 16];
    for (m, k, seed) in [(1, 512, 15), (5, 64, 16), (40, 512, 17), (70, 96, 18)] {
        let mut rng = Rng::new(seed);
        let x = rng.vec(m * k, -3.0, 3.0);
        let gamma = rng.vec(k, 0.5, 1.5);
        let beta = rng.vec(k, -0.2, 0.2);
        let eps = 1e-5;
        let mut normed = vec![0.0; m * k];
        amanuensis_kernels::cpu::layer_norm(&x, m, k, &gamma, &beta, eps, &mut normed);
        let norm = int8::RowNorm {
            gamma: &gamma,
            beta: &beta,
            eps,
        };
        let ws: Vec<Vec<f32>> = widths.iter().map(|&n| rng.vec(n * k, -1.0, 1.0)).collect();
        let qs: Vec<Quantized> = ws
            .iter()
            .zip(widths)
            .map(|(w, n)| quantize(w, n, k))
            .collect();
        let views: Vec<Int8Weight> = qs.iter().zip(widths).map(|(q, n)| view(q, n, k)).collect();
        for path in paths() {
            for f32_activations in [false, true] {
                for parts_n in [1, 3] {
                    let run = |x: &[f32], norm: Option<&int8::RowNorm>| -> Vec<Vec<f32>> {
                        let mut outs: Vec<Vec<f32>> = widths[..parts_n]
                            .iter()
                            .map(|&n| vec![0.0; m * n])
                            .collect();
                        let mut parts: Vec<int8::GroupPart> = views[..parts_n]
                            .iter()
                            .zip(outs.iter_mut())
                            .map(|(w, out)| int8::GroupPart { w, bias: None, out })
                            .collect();
                        int8::linear_i8_group_on(path, x, m, k, norm, &mut parts, f32_activations);
                        outs
                    };
                    let fused = run(&x, Some(&norm));
                    let stored = run(&normed, None);
                    let bits = |o: &Vec<Vec<f32>>| -> Vec<u32> {
                        o.iter().flatten().map(|v| v.to_bits()).collect()
                    };
                    assert_eq!(
                        bits(&fused),
                        bits(&stored),
                        "{} m={m} k={k} parts={parts_n} f32_activations={f32_activations}",
                        path.name()
                    );
                }
            }
        }
    }
}

/// The split-activation product ([`int8::linear_w8_split_on`]) against an f64 product of
/// the same int8 weight with the exact activations. Bound, per output: the pieces hold
/// each x within 4e-5·sx and the recombination rounds sums below 128·(Σ|x|/sx + k) a few
/// times, stated generously as `sw·1e-4·(127·k·sx + Σ|x|)`, plus the last two f32
/// roundings, `4u·(|y| + |b|)`. Paths: AMX, where the CPU has it, gives the portable bits.
fn check_split(m: usize, k: usize, n: usize, with_bias: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut x = rng.vec(m * k, -3.0, 3.0);
    // An outlier channel, as after Whisper's layer norms: the pieces must carry the small
    // values beside it.
    for i in 0..m {
        x[i * k + (i * 7) % k] = 40.0;
    }
    let w = rng.vec(n * k, -0.5, 0.5);
    let b = rng.vec(n, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    let mut portable = vec![f32::NAN; m * n];
    int8::linear_w8_split_on(Int8Path::Portable, &x, m, k, &wq, bias, &mut portable);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let sx = xr.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0;
        let l1: f64 = xr.iter().map(|v| v.abs() as f64).sum();
        for j in 0..n {
            let sw = q.scales[j] as f64;
            let bj = bias.map_or(0.0, |b| b[j] as f64);
            let want = bj
                + (0..k)
                    .map(|kk| xr[kk] as f64 * int8::dequantized(&wq, j, kk) as f64)
                    .sum::<f64>();
            let bound =
                sw * 1e-4 * (127.0 * k as f64 * sx + l1) + 4.0 * U * (want.abs() + bj.abs());
            let got = portable[i * n + j] as f64;
            assert!(
                (got - want).abs() <= bound,
                "split m={m} k={k} n={n} [{i},{j}]: {got} vs {want}, bound {bound:e}"
            );
        }
    }
    // Every other path the CPU has gives the portable bits: AMX tiles for k a multiple of
    // 64, AVX-512 VNNI for any k.
    let others = [
        (Int8Path::Amx, k.is_multiple_of(64)),
        (Int8Path::Avx512Vnni, true),
    ];
    for (path, takes) in others {
        if !path.available() || !takes {
            continue;
        }
        let mut got = vec![f32::NAN; m * n];
        int8::linear_w8_split_on(path, &x, m, k, &wq, bias, &mut got);
        let same = got
            .iter()
            .zip(&portable)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "split on {} differs from portable at m={m} k={k} n={n}",
            path.name()
        );
    }
}

#[test]
fn split_activations_match_f64_within_their_bound_and_give_the_same_bits_on_tiles() {
    let mut seed = 300;
    for &(m, k, n) in &[
        (1, 64, 1),
        (1, 512, 100),
        (2, 64, 48),
        (5, 128, 33),
        (5, 512, 515),
        (6, 64, 49),
        (11, 192, 64),
        (3, 2048, 40),
        (4, 70, 20),
        // A lockstep step's rows: eight blocks of five rows over groups of three panels
        // and a last panel of four columns.
        (40, 128, 100),
    ] {
        for with_bias in [false, true] {
            check_split(m, k, n, with_bias, seed);
            seed += 1;
        }
    }
}

#[test]
fn split_rows_keep_their_bits_alone_or_together_and_zero_and_nan_rows_stay_so() {
    // A beam step's rows, or a lockstep batch's, must not change each other's bits.
    let (m, k, n) = (12, 128, 70);
    let mut rng = Rng::new(77);
    let mut x = rng.vec(m * k, -2.0, 2.0);
    x[3 * k..4 * k].fill(0.0);
    x[7 * k + 5] = f32::NAN;
    let w = rng.vec(n * k, -0.5, 0.5);
    let b = rng.vec(n, -1.0, 1.0);
    let q = quantize(&w, n, k);
    let wq = view(&q, n, k);
    for path in [Int8Path::Amx, Int8Path::Avx512Vnni, Int8Path::Portable] {
        if path.available() {
            split_rows_alone_and_together(path, &x, m, k, &wq, &b);
        }
    }
}

fn split_rows_alone_and_together(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    wq: &int8::Int8Weight,
    b: &[f32],
) {
    let n = wq.n;
    let mut together = vec![f32::NAN; m * n];
    int8::linear_w8_split_on(path, x, m, k, wq, Some(b), &mut together);
    for i in 0..m {
        let mut alone = vec![f32::NAN; n];
        int8::linear_w8_split_on(path, &x[i * k..(i + 1) * k], 1, k, wq, Some(b), &mut alone);
        for j in 0..n {
            assert_eq!(
                together[i * n + j].to_bits(),
                alone[j].to_bits(),
                "{}: row {i}, column {j}",
                path.name()
            );
        }
    }
    assert_eq!(
        &together[3 * n..4 * n],
        b,
        "{}: a row of zeros gives the bias",
        path.name()
    );
    assert!(
        together[7 * n..8 * n].iter().all(|v| v.is_nan()),
        "a NaN row gives NaN"
    );
}
