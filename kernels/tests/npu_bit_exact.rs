//! The NPU references are register-blocked, vectorised and parallel; their contracts fix
//! every output's bits. These tests restate each contract as straight loops (one output at
//! a time, in the documented order) and require `to_bits()` equality with the fast
//! references on random shapes, including edge tiles (M, N, K not multiples of the tile,
//! K = 1, tk = 1, causal offsets, head_dim above 64) and special values. Two NaNs count as
//! equal: IEEE leaves the payload of an operation on two NaNs open.

// Loops and `acc = acc + …` spell out the contract text literally.
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::assign_op_pattern
)]

use crate::common::Rng;
use amanuensis_kernels::cpu;
use amanuensis_kernels::npu;
use proptest::prelude::*;

fn bf(x: f32) -> f32 {
    npu::round_bf16(x)
}

fn gelu(c: f32) -> f32 {
    let x = c as f64;
    (0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// Panics at the first element whose bits differ (NaN matches any NaN).
fn assert_same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: fast {g:e} ({:#010x}) != contract {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

// ---------------------------------------------------------------- naive contracts

#[derive(Clone, Copy)]
enum Epilogue<'a> {
    Plain,
    Gelu,
    Residual(&'a [f32]),
}

/// matmul_bias / _gelu / _residual as the contract states it: per output one f32
/// accumulator from +0, k-tiles of 64 in order, k increasing, `acc = acc + a·w`; then
/// `acc + bias` and the epilogue.
fn naive_matmul(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            let mut k0 = 0;
            while k0 < k {
                for kk in k0..(k0 + 64).min(k) {
                    let prod = bf(a[i * k + kk]) * bf(w[j * k + kk]);
                    acc = acc + prod;
                }
                k0 += 64;
            }
            let c = match bias {
                Some(b) => acc + b[j],
                None => acc,
            };
            out[i * n + j] = match epi {
                Epilogue::Plain => c,
                Epilogue::Gelu => gelu(c),
                Epilogue::Residual(res) => c + res[i * n + j],
            };
        }
    }
    out
}

/// conv1d / conv1d_gelu: im2col entries (0 outside the input) times the weights,
/// r = ci·kernel + tap increasing, then bias and the epilogue.
fn naive_conv(
    x: &[f32],
    c_in: usize,
    t_in: usize,
    w: &[f32],
    c_out: usize,
    kernel: usize,
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
    apply_gelu: bool,
) -> Vec<f32> {
    let t_out = cpu::conv1d_out_len(t_in, kernel, stride, padding);
    let mut out = vec![0.0f32; c_out * t_out];
    for co in 0..c_out {
        for t in 0..t_out {
            let mut acc = 0.0f32;
            for ci in 0..c_in {
                for tap in 0..kernel {
                    let pos = (t * stride + tap) as isize - padding as isize;
                    let col = if pos >= 0 && (pos as usize) < t_in {
                        bf(x[ci * t_in + pos as usize])
                    } else {
                        0.0
                    };
                    acc = acc + bf(w[(co * c_in + ci) * kernel + tap]) * col;
                }
            }
            let c = match bias {
                Some(b) => acc + b[co],
                None => acc,
            };
            out[co * t_out + t] = if apply_gelu { gelu(c) } else { c };
        }
    }
    out
}

/// attention_flash per query row and head: key blocks of 64, running max m, rescale
/// α = expf(m − m') (0 for the first block), p = bf16(expf(s − m')), l and o chains
/// starting from l·α and o·α, j increasing; out = o / l. Writes only the head columns.
fn naive_attention(
    q: &[f32],
    qs: usize,
    k: &[f32],
    ks: usize,
    v: &[f32],
    vs: usize,
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal: Option<usize>,
    out: &mut [f32],
    os: usize,
) {
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    for i in 0..tq {
        let keys = match causal {
            Some(p) => tk.min(p + i + 1),
            None => tk,
        };
        for h in 0..heads {
            let c = h * hd;
            let mut m = f32::NEG_INFINITY;
            let mut l = 0.0f32;
            let mut o = vec![0.0f32; hd];
            let mut j0 = 0;
            while j0 < keys {
                let j1 = (j0 + 64).min(keys);
                let mut s = Vec::new();
                for j in j0..j1 {
                    let mut dot = 0.0f32;
                    for d in 0..hd {
                        dot = dot + bf(q[i * qs + c + d]) * bf(k[j * ks + c + d]);
                    }
                    s.push(dot * scale);
                }
                let mut block_max = f32::NEG_INFINITY;
                for &sj in &s {
                    block_max = block_max.max(sj);
                }
                let m_new = m.max(block_max);
                let alpha = if j0 == 0 { 0.0 } else { libm::expf(m - m_new) };
                l = l * alpha;
                for d in 0..hd {
                    o[d] = o[d] * alpha;
                }
                for (jj, &sj) in s.iter().enumerate() {
                    let p = bf(libm::expf(sj - m_new));
                    l = l + p;
                    for d in 0..hd {
                        o[d] = o[d] + p * bf(v[(j0 + jj) * vs + c + d]);
                    }
                }
                m = m_new;
                j0 = j1;
            }
            for d in 0..hd {
                out[i * os + c + d] = if keys == 0 { 0.0 } else { o[d] / l };
            }
        }
    }
}

// ---------------------------------------------------------------- drivers

fn check_matmul(m: usize, k: usize, n: usize, with_bias: bool, wild: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let (a, w, b, res) = if wild {
        (
            rng.wild(m * k, true),
            rng.wild(n * k, true),
            rng.wild(n, true),
            rng.wild(m * n, true),
        )
    } else {
        (
            rng.vec(m * k, -1.0, 1.0),
            rng.vec(n * k, -1.0, 1.0),
            rng.vec(n, -1.0, 1.0),
            rng.vec(m * n, -4.0, 4.0),
        )
    };
    let bias = with_bias.then_some(&b[..]);
    let what = format!("m={m} k={k} n={n} bias={with_bias} wild={wild} seed={seed}");
    let mut out = vec![f32::NAN; m * n];
    npu::matmul_bias(&a, m, k, &w, n, bias, &mut out).unwrap();
    let want = naive_matmul(&a, m, k, &w, n, bias, Epilogue::Plain);
    assert_same_bits(&format!("matmul_bias {what}"), &out, &want);
    npu::matmul_bias_gelu(&a, m, k, &w, n, bias, &mut out).unwrap();
    let want = naive_matmul(&a, m, k, &w, n, bias, Epilogue::Gelu);
    assert_same_bits(&format!("matmul_bias_gelu {what}"), &out, &want);
    npu::matmul_bias_residual(&a, m, k, &w, n, bias, &res, &mut out).unwrap();
    let want = naive_matmul(&a, m, k, &w, n, bias, Epilogue::Residual(&res));
    assert_same_bits(&format!("matmul_bias_residual {what}"), &out, &want);
}

fn check_conv(
    c_in: usize,
    t_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    with_bias: bool,
    wild: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let (x, w, b) = if wild {
        (
            rng.wild(c_in * t_in, true),
            rng.wild(c_out * c_in * kernel, true),
            rng.wild(c_out, true),
        )
    } else {
        (
            rng.vec(c_in * t_in, -1.0, 1.0),
            rng.vec(c_out * c_in * kernel, -1.0, 1.0),
            rng.vec(c_out, -1.0, 1.0),
        )
    };
    let bias = with_bias.then_some(&b[..]);
    let t_out = cpu::conv1d_out_len(t_in, kernel, stride, padding);
    let what = format!(
        "c_in={c_in} t_in={t_in} c_out={c_out} kernel={kernel} stride={stride} \
         padding={padding} bias={with_bias} wild={wild} seed={seed}"
    );
    let mut out = vec![f32::NAN; c_out * t_out];
    npu::conv1d(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, &mut out,
    )
    .unwrap();
    let want = naive_conv(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, false,
    );
    assert_same_bits(&format!("conv1d {what}"), &out, &want);
    npu::conv1d_gelu(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, &mut out,
    )
    .unwrap();
    let want = naive_conv(
        &x, c_in, t_in, &w, c_out, kernel, bias, stride, padding, true,
    );
    assert_same_bits(&format!("conv1d_gelu {what}"), &out, &want);
}

fn check_attention(
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal: Option<usize>,
    pad: usize,
    wild: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let width = heads * hd;
    let stride = width + pad;
    let (q, k, v) = if wild {
        // Finite only: an ∞ score makes whole rows NaN, which hides the order of the rest.
        (
            rng.wild(tq * stride, false),
            rng.wild(tk * stride, false),
            rng.wild(tk * stride, false),
        )
    } else {
        (
            rng.vec(tq * stride, -3.0, 3.0),
            rng.vec(tk * stride, -3.0, 3.0),
            rng.vec(tk * stride, -1.0, 1.0),
        )
    };
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
    let mut want = vec![f32::NAN; tq * stride];
    naive_attention(
        &q, stride, &k, stride, &v, stride, tq, tk, heads, hd, causal, &mut want, stride,
    );
    assert_same_bits(
        &format!(
            "attention_flash tq={tq} tk={tk} heads={heads} hd={hd} causal={causal:?} \
             pad={pad} wild={wild} seed={seed}"
        ),
        &out,
        &want,
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn matmul_family_matches_contract_bits_on_edge_shapes() {
    let shapes = [
        (1, 1, 1),
        (1, 0, 3),
        (6, 1, 16),
        (5, 1, 17),
        (7, 63, 15),
        (13, 65, 33),
        (64, 64, 32),
        (97, 300, 45),
        (2, 2049, 3),
        (130, 128, 100),
        (37, 512, 70),
    ];
    for (s, &(m, k, n)) in shapes.iter().enumerate() {
        for with_bias in [false, true] {
            check_matmul(m, k, n, with_bias, false, 100 + s as u64);
        }
    }
}

#[test]
fn matmul_family_matches_contract_bits_with_special_values() {
    for (s, &(m, k, n)) in [(9, 70, 20), (13, 1, 35), (30, 200, 17)].iter().enumerate() {
        for with_bias in [false, true] {
            check_matmul(m, k, n, with_bias, true, 200 + s as u64);
        }
    }
}

#[test]
fn matmul_matches_contract_bits_at_a_whisper_shape() {
    // One encoder projection's row count and depth (the column count trimmed for time).
    check_matmul(1500, 512, 40, true, false, 250);
}

#[test]
fn conv_family_matches_contract_bits_on_edge_shapes() {
    let cases = [
        (80, 100, 64, 3, 1, 1),
        (64, 101, 48, 3, 2, 1),
        (3, 10, 5, 4, 3, 2),
        (2, 3, 2, 5, 1, 0),
        (1, 1, 1, 1, 1, 0),
        (1, 5, 7, 3, 1, 4),
        (22, 40, 13, 2, 2, 0),
    ];
    for (s, &(c_in, t_in, c_out, kernel, stride, padding)) in cases.iter().enumerate() {
        for (with_bias, wild) in [(true, false), (false, false), (true, true)] {
            check_conv(
                c_in,
                t_in,
                c_out,
                kernel,
                stride,
                padding,
                with_bias,
                wild,
                300 + s as u64,
            );
        }
    }
}

#[test]
fn attention_matches_contract_bits_on_edge_shapes() {
    let cases = [
        (1, 1, 1, 1, None, 0),
        (1, 1500, 2, 64, None, 0),
        (40, 40, 3, 64, Some(0), 0),
        (1, 57, 2, 64, Some(56), 0),
        (13, 130, 3, 16, Some(5), 1),
        (7, 65, 2, 80, None, 2),
        (6, 200, 1, 17, Some(100), 0),
        (11, 128, 2, 3, Some(1000), 1),
        (150, 150, 2, 64, None, 3),
    ];
    for (s, &(tq, tk, heads, hd, causal, pad)) in cases.iter().enumerate() {
        check_attention(tq, tk, heads, hd, causal, pad, false, 400 + s as u64);
        check_attention(tq, tk, heads, hd, causal, pad, true, 450 + s as u64);
    }
}

#[test]
fn attention_with_no_keys_matches_contract_bits() {
    // tk = 0: every output is +0.
    let q = vec![1.0f32; 2 * 6];
    let mut out = vec![f32::NAN; 2 * 6];
    let shape = cpu::AttentionShape::new(2, 0, 2, 3).causal(Some(3));
    npu::attention_flash(&shape, &q, &[], &[], &mut out).unwrap();
    let mut want = vec![f32::NAN; 2 * 6];
    naive_attention(&q, 6, &[], 6, &[], 6, 2, 0, 2, 3, Some(3), &mut want, 6);
    assert_same_bits("attention_flash tk=0", &out, &want);
    assert!(out.iter().all(|x| x.to_bits() == 0));
}

/// Compares `npu::expf_lanes` with `libm::expf` on the given bit patterns.
fn check_expf_bits(bits: impl Iterator<Item = u32>) -> usize {
    let x: Vec<f32> = bits.map(f32::from_bits).collect();
    let mut got = vec![0.0f32; x.len()];
    npu::expf_lanes(&x, &mut got);
    let want: Vec<f32> = x.iter().map(|&v| libm::expf(v)).collect();
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "expf({:e} = {:#010x}): lanes {g:e} ({:#010x}) != libm {w:e} ({:#010x})",
            x[i],
            x[i].to_bits(),
            g.to_bits(),
            w.to_bits()
        );
    }
    x.len()
}

#[test]
fn expf_lanes_match_libm() {
    // A stride through all 2^32 patterns (odd, so every exponent and many mantissas).
    let mut n = check_expf_bits((0..u32::MAX / 997).map(|i| i * 997));
    // Every pattern within 2^16 ulps of each branch threshold of libm's expf, both signs:
    // |x| = 2^-14, 0.5·ln2, 1.5·ln2, 87.33655 (subnormal results), 88.72284 (overflow),
    // 103.97208 (underflow to 0), and around 0 and ∞.
    for t in [
        0x3900_0000u32,
        0x3eb1_7218,
        0x3f85_1592,
        0x42ae_ac50,
        0x42b1_7218,
        0x42cf_f1b5,
        0x0000_0000,
        0x7f80_0000,
    ] {
        for sign in [0, 0x8000_0000u32] {
            let lo = t.saturating_sub(1 << 16);
            let hi = (t + (1 << 16)).min(0x7fff_ffff);
            n += check_expf_bits((lo..=hi).map(|b| b | sign));
        }
    }
    // Whole binades where attention evaluates expf(s − m) ≤ 0 most often.
    n += check_expf_bits((0xbf80_0000u32..0xc080_0000).step_by(3));
    eprintln!("expf lanes: {n} inputs bit-identical to libm::expf");
}

#[test]
#[ignore = "exhaustive over all 2^32 inputs (about two minutes); run with --ignored"]
fn expf_lanes_match_libm_exhaustively() {
    let mut n = 0;
    for hi in 0..=u16::MAX as u32 {
        n += check_expf_bits((0..=u16::MAX as u32).map(|lo| (hi << 16) | lo));
    }
    assert_eq!(n, 1 << 32);
}

/// Compares `npu::gelu_lanes` with `npu::gelu_exact` on the given bit patterns.
fn check_gelu_bits(bits: impl Iterator<Item = u32>) -> usize {
    let x: Vec<f32> = bits.map(f32::from_bits).collect();
    let mut got = x.clone();
    npu::gelu_lanes(&mut got);
    for (i, &g) in got.iter().enumerate() {
        let w = npu::gelu_exact(x[i]);
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "gelu({:e} = {:#010x}): lanes {g:e} ({:#010x}) != gelu_exact {w:e} ({:#010x})",
            x[i],
            x[i].to_bits(),
            g.to_bits(),
            w.to_bits()
        );
    }
    x.len()
}

#[test]
fn gelu_lanes_match_gelu_exact() {
    let mut n = check_gelu_bits((0..u32::MAX / 997).map(|i| i * 997));
    // erf's branch points |c/√2| = 2⁻²⁸, 0.84375, 1.25, 1/0.35 and 6, as f32 values of c:
    // every pattern within 2^15 ulps, both signs.
    let sqrt2 = std::f64::consts::SQRT_2;
    for x in [
        2f64.powi(-28),
        0.84375,
        1.25,
        f64::from_bits(0x4006_db6d_0000_0000),
        6.0,
    ] {
        let t = ((x * sqrt2) as f32).to_bits();
        for sign in [0, 0x8000_0000u32] {
            n += check_gelu_bits((t - (1 << 15)..=t + (1 << 15)).map(|b| b | sign));
        }
    }
    // The range a transformer's MLP produces, densely: |c| in [2⁻⁴, 16).
    n += check_gelu_bits((0x3d80_0000u32..0x4180_0000).step_by(13));
    n += check_gelu_bits((0xbd80_0000u32..0xc180_0000).step_by(13));
    eprintln!("gelu lanes: {n} inputs bit-identical to gelu_exact");
}

#[test]
#[ignore = "exhaustive over all 2^32 inputs (about a minute); run with --ignored"]
fn gelu_lanes_match_gelu_exact_exhaustively() {
    use rayon::prelude::*;
    let n: usize = (0..=u16::MAX as u32)
        .into_par_iter()
        .map(|hi| check_gelu_bits((0..=u16::MAX as u32).map(|lo| (hi << 16) | lo)))
        .sum();
    assert_eq!(n, 1 << 32);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prop_matmul_family_bits(m in 1usize..80, k in 1usize..150, n in 1usize..80, bias in any::<bool>(), wild in any::<bool>(), seed in any::<u64>()) {
        check_matmul(m, k, n, bias, wild, seed);
    }

    #[test]
    fn prop_conv_family_bits(c_in in 1usize..12, t_in in 1usize..50, c_out in 1usize..20, kernel in 1usize..6, stride in 1usize..4, padding in 0usize..4, bias in any::<bool>(), wild in any::<bool>(), seed in any::<u64>()) {
        check_conv(c_in, t_in, c_out, kernel, stride, padding, bias, wild, seed);
    }

    #[test]
    fn prop_attention_bits(tq in 1usize..40, tk in 1usize..200, heads in 1usize..=3, hd in 1usize..=72, causal in proptest::option::of(0usize..150), pad in 0usize..3, wild in any::<bool>(), seed in any::<u64>()) {
        check_attention(tq, tk, heads, hd, causal, pad, wild, seed);
    }
}
