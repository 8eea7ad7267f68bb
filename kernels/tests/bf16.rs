//! bf16 products (the packed GEMM and attention) on every instruction-set path this CPU
//! runs, against f64 references of the unrounded operands and against each other.
//!
//! GEMM bound: rounding each operand to bf16 moves it by at most u_b = 2⁻⁹ relative, so a
//! product moves by at most (2u_b + u_b²)·|a·b|; products of bf16 values are exact in f32
//! and the sum of k of them adds γ_k. Hence
//! `|got − exact| ≤ (2⁻⁸ + 2⁻¹⁸ + γ_k)·Σ|a·b|`.
//!
//! Attention bound: the score bound above (with q·(1/√hd) rounded once more in f32) gives
//! each score an error δ; the softmax turns it into at most 2δ relative on each
//! probability (as for the f32 kernel); rounding the probabilities and V to bf16 adds
//! 2⁻⁸ of Σ p·|v| ≤ max|v|; the f32 sums add γ over the keys.
//!
//! Paths: the portable loop takes AVX-512 BF16's sums in its order, so on normal values
//! both give the same bits. The AMX tiles take their sums in their own order: they are held
//! to the bounds only.

use crate::common::{assert_within, dense_out, gamma, ref_linear, rel_l2, Attn, Rng, U};
use amanuensis_kernels::cpu;
use amanuensis_kernels::cpu::bf16::{gemm_bf16, pack_rows, Bf16Path, PackedBf16};

/// Relative error of one product of bf16-rounded operands.
const PRODUCT: f64 = 1.0 / 256.0 + 1.0 / 262_144.0;

/// Relative error of one bf16x3 product (`hi·hi + hi·lo + lo·hi`, each operand `hi + lo`
/// with `hi` rounded to bf16 and `lo` the rest rounded): each operand's two parts hold it
/// to 2⁻⁹·2⁻⁹ = 2⁻¹⁸ relative (`lo` is at most 2⁻⁹ of it, rounded to 2⁻⁹ of itself), and
/// the `lo·lo` term left out is at most 2⁻¹⁸ of the product: 3·2⁻¹⁸, plus second-order
/// terms below 2⁻³⁴.
const PRODUCT_X3: f64 = 3.0 / 262_144.0 + 1.0 / 17_179_869_184.0;

fn paths() -> Vec<Bf16Path> {
    Bf16Path::ALL
        .into_iter()
        .filter(|p| p.available())
        .collect()
}

/// `a [m, k] · bᵀ` (b `[n, k]`) on `path`, starting from `init` (when accumulating).
#[allow(clippy::too_many_arguments)]
fn run(
    path: Bf16Path,
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    init: Option<&[f32]>,
    out_stride: usize,
) -> Vec<f32> {
    let packed = PackedBf16::pack(b, n, k, k);
    let mut rows = Vec::new();
    pack_rows(a, m, k, k, 1.0, &mut rows);
    let mut out = vec![f32::NAN; m * out_stride];
    if let Some(init) = init {
        for i in 0..m {
            out[i * out_stride..i * out_stride + n].copy_from_slice(&init[i * n..(i + 1) * n]);
        }
    }
    let pairs = k.div_ceil(2);
    gemm_bf16(
        path,
        &rows,
        pairs,
        m,
        &packed,
        n,
        pairs,
        &mut out,
        out_stride,
        init.is_some(),
    );
    for i in 0..m {
        assert!(
            out[i * out_stride + n..(i + 1) * out_stride]
                .iter()
                .all(|v| v.is_nan()),
            "{}: wrote past column {n}",
            path.name()
        );
    }
    dense_out(&out, m, out_stride, n)
}

fn check_gemm(m: usize, k: usize, n: usize, accumulate: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = rng.vec(m * k, -2.0, 2.0);
    let b = rng.vec(n * k, -1.0, 1.0);
    let init = accumulate.then(|| rng.vec(m * n, -4.0, 4.0));
    // The product of the unrounded operands; the start values enter as a bias would.
    let (mut want, mut bound) = ref_linear(&a, m, k, &b, n, None);
    for (i, (w, mag)) in want.iter_mut().zip(&mut bound).enumerate() {
        let c = init.as_ref().map_or(0.0, |c| c[i] as f64);
        *w += c;
        *mag = (PRODUCT + gamma(k + 1)) * (*mag + c.abs()) + 1e-30;
    }
    let mut results = Vec::new();
    for path in paths() {
        let got = run(path, &a, m, k, &b, n, init.as_deref(), n + 3);
        let what = format!(
            "bf16 gemm {} m={m} k={k} n={n} acc={accumulate}",
            path.name()
        );
        assert_within(&what, &got, &want, &bound);
        results.push((path, got));
    }
    let results: Vec<_> = results
        .into_iter()
        .filter(|(p, _)| *p != Bf16Path::Amx)
        .collect();
    for (path, got) in &results[1..] {
        let (p0, g0) = &results[0];
        let same = got.iter().zip(g0).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "bf16 gemm {} and {} differ, m={m} k={k} n={n}",
            p0.name(),
            path.name()
        );
    }
}

#[test]
fn gemm_matches_reference_on_every_path_and_shape() {
    // Tiles are 6 rows × 4 panels of 16 and blocks of 128 pairs: cover the edges of each.
    let mut seed = 1;
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 2, 16),
        (2, 3, 17),
        (3, 64, 63),
        (5, 64, 64),
        (6, 65, 65),
        (7, 127, 80),
        (13, 256, 129),
        (12, 257, 200),
        (20, 512, 70),
        (64, 64, 1500),
        // On AMX tiles: 16 and 32-row blocks with rows and pairs left over, single panels.
        (16, 32, 16),
        (32, 64, 33),
        (47, 100, 70),
        (128, 64, 300),
        (40, 1500, 64),
        // The FMA path's tiles: 12 rows × 2 panels.
        (11, 40, 31),
        (24, 129, 32),
        (25, 300, 33),
    ] {
        for accumulate in [false, true] {
            check_gemm(m, k, n, accumulate, seed);
            seed += 1;
        }
    }
}

#[test]
fn this_cpu_runs_the_fastest_path_it_has() {
    // On a CPU with AVX-512 (as the project's CI machines) one of the two paths with the
    // hardware's bits is taken, whichever timed faster; the tests above exercised both.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // AMX tiles only when asked for (AMANUENSIS_BF16_TILES=1) and the CPU has them.
        let asked = std::env::var("AMANUENSIS_BF16_TILES").is_ok_and(|v| v == "1");
        let best = Bf16Path::best();
        if asked && Bf16Path::Amx.available() {
            assert_eq!(best, Bf16Path::Amx);
        } else if Bf16Path::Avx512Bf16.available() {
            assert!(
                matches!(best, Bf16Path::Avx512Fma | Bf16Path::Avx512Bf16),
                "{best:?}"
            );
        } else {
            assert_eq!(best, Bf16Path::Avx512Fma);
        }
        // The default marks bf16 products only where the hardware multiplies bf16.
        assert_eq!(Bf16Path::native(), Bf16Path::Avx512Bf16.available());
        return;
    }
    assert_eq!(Bf16Path::best(), Bf16Path::Portable);
    assert!(!Bf16Path::native());
}

/// The FMA path against `vdpbf16ps` itself, bit for bit, where the CPU has both: normal
/// values of every size, zeros of both signs, subnormal operands (read as zero) and
/// products and sums that fall below f32's normal range (flushed), from zero and from
/// start values.
#[test]
fn an_fma_pair_is_vdpbf16ps_to_the_bit() {
    if !(Bf16Path::Avx512Fma.available() && Bf16Path::Avx512Bf16.available()) {
        eprintln!("skipped: needs AVX-512 F and AVX-512 BF16");
        return;
    }
    let mut rng = Rng::new(77);
    // Magnitudes from 2⁻¹⁴⁰ to 2⁴⁰: products of two small ones are subnormal or vanish.
    let value = |rng: &mut Rng| -> f32 {
        let mut below = |n: u64| rng.next_u64() % n;
        match below(10) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits(below(0x007f_ffff) as u32 + 1), // subnormal
            _ => {
                let e = below(180) as i32 - 140;
                let sign = if below(2) == 0 { 1.0 } else { -1.0 };
                sign * (1.0 + below(1 << 20) as f32 / (1 << 20) as f32) * 2f32.powi(e)
            }
        }
    };
    let mut seed_cases = 0;
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 7, 17),
        (12, 64, 32),
        (13, 129, 33),
        (25, 300, 70),
        (40, 257, 64),
    ] {
        for accumulate in [false, true] {
            let a: Vec<f32> = (0..m * k).map(|_| value(&mut rng)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| value(&mut rng)).collect();
            let init: Option<Vec<f32>> =
                accumulate.then(|| (0..m * n).map(|_| value(&mut rng)).collect());
            let hw = run(
                Bf16Path::Avx512Bf16,
                &a,
                m,
                k,
                &b,
                n,
                init.as_deref(),
                n + 1,
            );
            let fma = run(Bf16Path::Avx512Fma, &a, m, k, &b, n, init.as_deref(), n + 1);
            for (i, (x, y)) in fma.iter().zip(&hw).enumerate() {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "m={m} k={k} n={n} acc={accumulate}: output {i} is {x:e} on FMAs, {y:e} on vdpbf16ps"
                );
            }
            seed_cases += 1;
        }
    }
    assert_eq!(seed_cases, 12);
    // The flush mode is the kernel's alone: this thread's arithmetic keeps subnormals.
    let tiny = std::hint::black_box(1.0e-38f32) * std::hint::black_box(0.5f32);
    assert!(
        tiny > 0.0 && !tiny.is_normal(),
        "MXCSR left in flush-to-zero mode"
    );
}

#[allow(clippy::too_many_arguments)]
fn check_attention(
    path: Bf16Path,
    x3: bool,
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal: Option<usize>,
    qk_range: f32,
    seed: u64,
) -> Vec<f32> {
    let d = heads * hd;
    let stride = 3 * d + 1;
    let mut rng = Rng::new(seed);
    let q_buf = rng.vec(tq * stride, -qk_range, qk_range);
    let mut kv_buf = rng.vec(tk * stride, -qk_range, qk_range);
    for r in 0..tk {
        for c in 2 * d..3 * d {
            kv_buf[r * stride + c] = rng.uniform(-1.0, 1.0);
        }
    }
    let os = d + 2;
    let mut out = vec![f32::NAN; tq * os];
    let a = Attn {
        q: &q_buf,
        qs: stride,
        k: &kv_buf[d..],
        ks: stride,
        v: &kv_buf[2 * d..],
        vs: stride,
        tq,
        tk,
        heads,
        hd,
        causal,
        os,
    };
    let kernel = if x3 {
        cpu::attention_bf16x3
    } else {
        cpu::attention_bf16
    };
    kernel(path, &a.shape(), a.q, a.k, a.v, &mut out);
    for i in 0..tq {
        assert!(
            out[i * os + d..(i + 1) * os].iter().all(|v| v.is_nan()),
            "wrote padding"
        );
    }
    let got = dense_out(&out, tq, os, d);
    let (want, bound) = bf16_attention_reference(&a, x3);
    let what = format!(
        "attention_bf16{} {} tq={tq} tk={tk} heads={heads} hd={hd} causal={causal:?}",
        if x3 { "x3" } else { "" },
        path.name()
    );
    assert_within(&what, &got, &want, &bound);
    got
}

/// The f64 attention of the unrounded inputs, and the bound of the module docs (with
/// `x3`, the bf16x3 products' bound: [`PRODUCT_X3`] a product, sums three times as long).
fn bf16_attention_reference(a: &Attn, x3: bool) -> (Vec<f64>, Vec<f64>) {
    let (product, terms) = if x3 { (PRODUCT_X3, 3) } else { (PRODUCT, 1) };
    let d = a.heads * a.hd;
    let scale = 1.0 / (a.hd as f64).sqrt();
    let mut out = vec![0.0f64; a.tq * d];
    let mut bound = vec![0.0f64; a.tq * d];
    for h in 0..a.heads {
        let c = h * a.hd;
        for i in 0..a.tq {
            let n = a.causal.map_or(a.tk, |p| a.tk.min(p + i + 1));
            if n == 0 {
                continue;
            }
            let (mut s, mut delta) = (vec![0.0f64; n], 0.0f64);
            for (j, sj) in s.iter_mut().enumerate() {
                let (mut acc, mut mag) = (0.0f64, 0.0f64);
                for dd in 0..a.hd {
                    let p = a.q[i * a.qs + c + dd] as f64 * a.k[j * a.ks + c + dd] as f64;
                    acc += p;
                    mag += p.abs();
                }
                *sj = acc * scale;
                delta = delta.max((product + gamma(terms * a.hd) + 4.0 * U) * mag * scale);
            }
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            s.iter_mut().for_each(|v| *v = (*v - max).exp());
            let sum: f64 = s.iter().sum();
            let mut vmax = 0.0f64;
            for dd in 0..a.hd {
                let mut acc = 0.0;
                for (j, sj) in s.iter().enumerate() {
                    let vv = a.v[j * a.vs + c + dd] as f64;
                    acc += sj / sum * vv;
                    vmax = vmax.max(vv.abs());
                }
                out[i * d + c + dd] = acc;
            }
            let b = (2.0 * delta * 1.01 + product * 1.01 + 6e-7 + 2.0 * gamma(terms * n) + U)
                * vmax
                + 1e-30;
            for dd in 0..a.hd {
                bound[i * d + c + dd] = b;
            }
        }
    }
    (out, bound)
}

#[test]
fn attention_encoder_shape_on_every_path() {
    // Whisper-base's encoder self-attention: 1500 frames, 8 heads of 64, no mask.
    let (mut results, mut x3_results) = (Vec::new(), Vec::new());
    for path in paths() {
        let got = check_attention(path, false, 1500, 1500, 8, 64, None, 1.5, 11);
        results.push((path, got));
        let got = check_attention(path, true, 1500, 1500, 8, 64, None, 1.5, 11);
        x3_results.push((path, got));
    }
    for (what, results) in [
        ("attention_bf16", results),
        ("attention_bf16x3", x3_results),
    ] {
        let results: Vec<_> = results
            .into_iter()
            .filter(|(p, _)| *p != Bf16Path::Amx)
            .collect();
        for (path, got) in &results[1..] {
            let same = got
                .iter()
                .zip(&results[0].1)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{what}: {} differs from {}",
                path.name(),
                results[0].0.name()
            );
        }
    }
}

#[test]
fn attention_is_close_to_f32_on_the_encoder_shape() {
    // The typical error, not the worst case: with Whisper-like magnitudes the relative L2
    // error of the output stays below 2⁻⁸ (measured 2.8e-3; the f32 kernel's is ~1e-7).
    let (tq, tk, heads, hd) = (1500, 1500, 8, 64);
    let d = heads * hd;
    let mut rng = Rng::new(12);
    let q = rng.vec(tq * d, -1.5, 1.5);
    let k = rng.vec(tk * d, -1.5, 1.5);
    let v = rng.vec(tk * d, -1.0, 1.0);
    let mut out = vec![0.0f32; tq * d];
    cpu::attention_bf16(
        Bf16Path::best(),
        &cpu::AttentionShape::new(tq, tk, heads, hd),
        &q,
        &k,
        &v,
        &mut out,
    );
    let a = Attn {
        q: &q,
        qs: d,
        k: &k,
        ks: d,
        v: &v,
        vs: d,
        tq,
        tk,
        heads,
        hd,
        causal: None,
        os: d,
    };
    let (want, _) = bf16_attention_reference(&a, false);
    let rel = rel_l2(&out, &want);
    eprintln!("attention_bf16 relative L2 error on the encoder shape: {rel:e}");
    assert!(rel < 1.0 / 256.0, "relative L2 error {rel:e} ≥ 2⁻⁸");
}

#[test]
fn bf16x3_attention_is_near_f32_on_the_encoder_shape() {
    // Typical error of the bf16x3 products with Whisper-like magnitudes, every path: about
    // 2⁻¹⁵ relative where one bf16 product leaves 2.8e-3 (above) and f32 about 1e-7.
    let (tq, tk, heads, hd) = (1500, 1500, 8, 64);
    let d = heads * hd;
    let mut rng = Rng::new(12);
    let q = rng.vec(tq * d, -1.5, 1.5);
    let k = rng.vec(tk * d, -1.5, 1.5);
    let v = rng.vec(tk * d, -1.0, 1.0);
    let a = Attn {
        q: &q,
        qs: d,
        k: &k,
        ks: d,
        v: &v,
        vs: d,
        tq,
        tk,
        heads,
        hd,
        causal: None,
        os: d,
    };
    let (want, _) = bf16_attention_reference(&a, true);
    for path in paths() {
        let mut out = vec![0.0f32; tq * d];
        cpu::attention_bf16x3(
            path,
            &cpu::AttentionShape::new(tq, tk, heads, hd),
            &q,
            &k,
            &v,
            &mut out,
        );
        let rel = rel_l2(&out, &want);
        eprintln!(
            "attention_bf16x3 {} relative L2 error on the encoder shape: {rel:e}",
            path.name()
        );
        assert!(
            rel < 1e-4,
            "{}: relative L2 error {rel:e} ≥ 1e-4",
            path.name()
        );
    }
}

#[test]
fn attention_masks_odd_lengths_and_sharp_softmax() {
    for path in paths() {
        // Causal prefill over several query blocks, odd key counts (a pair half past the
        // visible keys), head widths that are not a multiple of 2 or 16.
        for x3 in [false, true] {
            check_attention(path, x3, 300, 401, 2, 64, Some(101), 1.5, 13);
        }
        for x3 in [false, true] {
            check_attention(path, x3, 5, 7, 3, 5, None, 1.5, 14);
        }
        for x3 in [false, true] {
            check_attention(path, x3, 4, 4, 2, 3, Some(0), 1.5, 15);
        }
        for x3 in [false, true] {
            check_attention(path, x3, 20, 50, 2, 16, None, 6.0, 16);
        }
    }
}

#[test]
fn linear_matches_reference_and_the_gemm_on_every_path() {
    // Whisper-like shapes (several row and column blocks of a task, ragged edges) and small
    // ones; with and without bias.
    let shapes = [(1, 3, 5), (97, 64, 129), (200, 512, 300), (1500, 512, 64)];
    for (seed, &(m, k, n)) in (40..).zip(&shapes) {
        let mut rng = Rng::new(seed);
        let x = rng.vec(m * k, -2.0, 2.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -1.0, 1.0);
        let packed = PackedBf16::pack(&w, n, k, k);
        // Packing row by row (how weights in any stored type are packed) gives the same.
        let by_rows =
            PackedBf16::pack_rows_of(n, k, |j, buf| buf.copy_from_slice(&w[j * k..][..k]));
        for j in 0..n {
            for kk in 0..k {
                assert_eq!(packed.get(j, kk).to_bits(), by_rows.get(j, kk).to_bits());
            }
        }
        for b in [None, Some(&bias[..])] {
            let (want, mut bound) = ref_linear(&x, m, k, &w, n, b);
            bound
                .iter_mut()
                .for_each(|mag| *mag = (PRODUCT + gamma(k + 1)) * *mag + 1e-30);
            for path in paths() {
                let mut out = vec![f32::NAN; m * n];
                cpu::bf16::linear_bf16(path, &x, m, &packed, b, &mut out);
                let what = format!(
                    "linear_bf16 {} m={m} k={k} n={n} bias={}",
                    path.name(),
                    b.is_some()
                );
                assert_within(&what, &out, &want, &bound);
            }
        }
    }
}

#[test]
fn bf16x3_linear_matches_reference_within_its_bound_and_keeps_the_bits_of_its_paths() {
    // The bound of one bf16x3 product a term, sums three times as long; an f16 weight is
    // exactly wh + wl. Shapes with ragged rows, columns and an odd k (a pair that
    // straddles two parts of the split).
    let shapes = [(1, 3, 5), (97, 64, 129), (33, 77, 40), (1500, 512, 64)];
    for (seed, &(m, k, n)) in (50..).zip(&shapes) {
        let mut rng = Rng::new(seed);
        let x = rng.vec(m * k, -2.0, 2.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -1.0, 1.0);
        let packed = PackedBf16::pack_x3(n, k, |j, buf| buf.copy_from_slice(&w[j * k..][..k]));
        assert_eq!((packed.n, packed.k), (n, 3 * k));
        for j in 0..n {
            for kk in 0..k {
                let (hi, lo, hi2) = (
                    packed.get(j, kk),
                    packed.get(j, k + kk),
                    packed.get(j, 2 * k + kk),
                );
                assert_eq!(hi.to_bits(), hi2.to_bits());
                let exact = w[j * k + kk];
                assert!(
                    (hi + lo - exact).abs() <= exact.abs() * 2f32.powi(-17),
                    "{exact} as {hi} + {lo}"
                );
            }
        }
        for b in [None, Some(&bias[..])] {
            let (want, mut bound) = ref_linear(&x, m, k, &w, n, b);
            bound
                .iter_mut()
                .for_each(|mag| *mag = (PRODUCT_X3 + gamma(3 * k + 1)) * *mag + 1e-30);
            let mut same_bits: Vec<(Bf16Path, Vec<f32>)> = Vec::new();
            for path in paths() {
                let mut out = vec![f32::NAN; m * n];
                cpu::bf16::linear_bf16x3(path, &x, m, &packed, b, &mut out);
                let what = format!(
                    "linear_bf16x3 {} m={m} k={k} n={n} bias={}",
                    path.name(),
                    b.is_some()
                );
                assert_within(&what, &out, &want, &bound);
                if path != Bf16Path::Amx {
                    same_bits.push((path, out));
                }
            }
            for (path, out) in &same_bits[1..] {
                let (p0, o0) = &same_bits[0];
                assert!(
                    out.iter().zip(o0).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "linear_bf16x3: {} differs from {}",
                    path.name(),
                    p0.name()
                );
            }
        }
    }
}

#[test]
fn attention_without_keys_or_queries_is_zero_or_nothing() {
    for path in paths() {
        // No keys without a mask: every query averages over nothing and yields 0.
        let mut out = vec![f32::NAN; 2 * 5];
        let shape = cpu::AttentionShape {
            q_row_stride: 5,
            out_row_stride: 5,
            ..cpu::AttentionShape::new(2, 0, 2, 2)
        };
        cpu::attention_bf16(path, &shape, &[1.0; 10], &[], &[], &mut out);
        for row in out.chunks(5) {
            assert_eq!(&row[..4], &[0.0; 4], "{}", path.name());
            assert!(row[4].is_nan(), "{}: wrote padding", path.name());
        }
        // No queries: nothing written.
        let shape = cpu::AttentionShape::new(0, 1, 2, 2);
        cpu::attention_bf16(path, &shape, &[], &[1.0; 4], &[1.0; 4], &mut []);
    }
}

#[test]
fn a_row_on_tiles_gets_the_same_bits_wherever_it_falls() {
    // The encoder's windows are stacked into one product when batched: a row's result must
    // not depend on how many rows share the call or where in a 16-row block it falls.
    if !Bf16Path::Amx.available() {
        return;
    }
    let (k, n) = (100, 70); // 50 pairs: three whole steps of 16 and 2 pairs left over
    let mut rng = Rng::new(77);
    let a = rng.vec(40 * k, -2.0, 2.0);
    let b = rng.vec(n * k, -1.0, 1.0);
    let init = rng.vec(40 * n, -4.0, 4.0);
    for accumulate in [false, true] {
        let init = accumulate.then_some(&init[..]);
        let all = run(Bf16Path::Amx, &a, 40, k, &b, n, init, n);
        for &(start, m) in &[(0, 1), (3, 5), (16, 7), (20, 20), (33, 7), (39, 1)] {
            let part_init = init.map(|c| &c[start * n..(start + m) * n]);
            let part = run(
                Bf16Path::Amx,
                &a[start * k..(start + m) * k],
                m,
                k,
                &b,
                n,
                part_init,
                n,
            );
            let same = part
                .iter()
                .zip(&all[start * n..(start + m) * n])
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "rows {start}..{} alone differ from the same rows among 40 (acc={accumulate})",
                start + m
            );
        }
    }
}

#[test]
fn a_head_gets_the_same_bits_alone_as_beside_the_other_heads() {
    // With several heads the queries are packed once, whole rows of a fused-QKV-like
    // layout at a time; with one head per call, that head's values alone. A wrong head
    // offset or row stride in the first would move these bits. The row count spans more
    // than one packing task and a last short one.
    let (tq, tk, heads, hd) = (150, 97, 4, 64);
    let d = heads * hd;
    let stride = 3 * d + 5;
    let mut rng = Rng::new(91);
    let q = rng.vec(tq * stride, -1.5, 1.5);
    let kv = rng.vec(tk * stride, -1.5, 1.5);
    let (k, v) = (&kv[d..], &kv[2 * d..]);
    for path in paths() {
        for causal in [None, Some(tk - tq.min(tk))] {
            let mut together = vec![f32::NAN; tq * d];
            let shape = cpu::AttentionShape {
                q_row_stride: stride,
                k_row_stride: stride,
                v_row_stride: stride,
                ..cpu::AttentionShape::new(tq, tk, heads, hd).causal(causal)
            };
            cpu::attention_bf16(path, &shape, &q, k, v, &mut together);
            for h in 0..heads {
                let c = h * hd;
                let mut alone = vec![f32::NAN; tq * hd];
                let one_head = cpu::AttentionShape {
                    heads: 1,
                    out_row_stride: hd,
                    ..shape
                };
                cpu::attention_bf16(path, &one_head, &q[c..], &k[c..], &v[c..], &mut alone);
                for i in 0..tq {
                    for j in 0..hd {
                        assert_eq!(
                            together[i * d + c + j].to_bits(),
                            alone[i * hd + j].to_bits(),
                            "{} causal {causal:?}: row {i}, head {h}, column {j}",
                            path.name()
                        );
                    }
                }
            }
        }
    }
}
