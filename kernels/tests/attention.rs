//! Multi-head attention (both paths and the dispatching entry point) against an f64
//! reference, on strided inputs laid out like Whisper's fused projections.
//!
//! The elementwise bound is derived in `common::ref_attention` (score rounding γ_hd,
//! f32 exponential, γ_tk for the sums over keys). The relative L2 check uses the same
//! random-walk argument as the linear tests with the longer of the two sums (u·√max(hd, tk))
//! plus the f32 exponential's 3e-7.

use crate::common::{assert_within, dense_out, ref_attention, rel_l2, Attn, Rng, U};
use amanuensis_kernels::cpu;
use proptest::prelude::*;

type AttnFn = cpu::AttentionKernel;

const PATHS: [(&str, AttnFn); 3] = [
    ("attention", cpu::attention),
    ("attention_direct", cpu::attention_direct),
    ("attention_blocked", cpu::attention_blocked),
];

/// Builds q from a fused [tq, 3·d + pad] buffer and k, v from a fused [tk, 3·d + pad]
/// buffer (column slices, as the encoder's qkv projection produces them), runs `path`
/// into an output with row stride `d + out_pad`, and checks it against the reference.
#[allow(clippy::too_many_arguments)]
fn check(
    path: (&str, AttnFn),
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal: Option<usize>,
    pad: usize,
    out_pad: usize,
    qk_range: f32,
    seed: u64,
) {
    let d = heads * hd;
    let stride = 3 * d + pad;
    let mut rng = Rng::new(seed);
    let q_buf = rng.vec(tq * stride, -qk_range, qk_range);
    let kv_buf = {
        let mut v = rng.vec(tk * stride, -qk_range, qk_range);
        // v columns in [-1, 1) whatever the q/k range.
        for r in 0..tk {
            for c in 2 * d..3 * d {
                v[r * stride + c] = rng.uniform(-1.0, 1.0);
            }
        }
        v
    };
    let os = d + out_pad;
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
    (path.1)(&a.shape(), a.q, a.k, a.v, &mut out);
    // Padding columns of the output must be left untouched.
    for i in 0..tq {
        assert!(
            out[i * os + d..(i + 1) * os].iter().all(|v| v.is_nan()),
            "{}: wrote padding",
            path.0
        );
    }
    let got = dense_out(&out, tq, os, d);
    let (want, bound) = ref_attention(&a);
    let what = format!(
        "{} tq={tq} tk={tk} heads={heads} hd={hd} causal={causal:?}",
        path.0
    );
    assert_within(&what, &got, &want, &bound);
    // With large logits the f32 rounding of the scores themselves (u·|s|, |s| in the
    // thousands) dominates; the elementwise bound covers that case, this check the usual.
    if got.len() >= 64 && qk_range <= 2.0 {
        let rel = rel_l2(&got, &want);
        let allowed = U * (hd.max(tk) as f64).sqrt() + 3e-7;
        assert!(
            rel <= allowed,
            "{what}: relative L2 error {rel:e} > {allowed:e}"
        );
    }
}

#[test]
fn attention_encoder_shape() {
    // Whisper-base encoder self-attention: 1500 frames, 8 heads of 64, no mask, q/k/v as
    // column slices of the fused [1500, 1536] projection.
    check(PATHS[0], 1500, 1500, 8, 64, None, 0, 0, 1.5, 1);
}

#[test]
fn attention_decoder_self_attention_with_cache() {
    // Five new tokens at positions 443..447 attend a 448-entry self-attention cache.
    for path in PATHS {
        check(path, 5, 448, 8, 64, Some(443), 0, 0, 1.5, 2);
        check(path, 1, 448, 8, 64, Some(447), 0, 0, 1.5, 3);
        // A shorter cache than the context limit: the 10th token at position 9.
        check(path, 1, 10, 8, 64, Some(9), 0, 0, 1.5, 4);
    }
}

#[test]
fn attention_decoder_prompt_prefill() {
    // The initial prompt (4 tokens at positions 0..3) attends itself causally.
    for path in PATHS {
        check(path, 4, 4, 8, 64, Some(0), 0, 0, 1.5, 5);
        // Longer prefill spanning several query blocks, with an earlier cache.
        check(path, 300, 400, 2, 64, Some(100), 0, 0, 1.5, 6);
    }
}

#[test]
fn attention_decoder_cross_attention() {
    // Decoder tokens attend the 1500 encoder frames without a mask.
    for path in PATHS {
        check(path, 5, 1500, 8, 64, None, 0, 0, 1.5, 7);
        check(path, 1, 1500, 8, 64, None, 0, 0, 1.5, 8);
    }
}

#[test]
fn attention_sharp_softmax() {
    // Large logits make the softmax nearly one-hot; the max subtraction must keep it finite.
    for path in PATHS {
        check(path, 20, 50, 2, 16, None, 3, 5, 30.0, 9);
    }
}

#[test]
fn attention_empty_shapes() {
    for path in PATHS {
        // No keys without a mask: every query averages over nothing and yields 0.
        let mut out = vec![f32::NAN; 2 * 4];
        let shape = cpu::AttentionShape::new(2, 0, 2, 2);
        (path.1)(&shape, &[1.0; 8], &[], &[], &mut out);
        assert_eq!(out, [0.0; 8], "{}", path.0);
        // No queries: nothing written.
        let shape = cpu::AttentionShape::new(0, 1, 2, 2);
        (path.1)(&shape, &[], &[1.0; 4], &[1.0; 4], &mut []);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn attention_matches_reference(
        tq in 1usize..=40,
        extra_keys in 0usize..=40,
        heads in 1usize..=3,
        hd in 1usize..=20,
        causal_kind in 0usize..3,
        offset in 0usize..=30,
        pad in 0usize..=3,
        out_pad in 0usize..=3,
        path in 0usize..3,
        seed in any::<u64>(),
    ) {
        // Causal: tk ≥ offset + tq as the contract requires; otherwise any tk ≥ 1.
        let (tk, causal) = match causal_kind {
            0 => (1 + extra_keys, None),
            _ => (offset + tq + extra_keys, Some(offset)),
        };
        check(PATHS[path], tq, tk, heads, hd, causal, pad, out_pad, 2.0, seed);
    }
}

#[test]
fn attention_direct_rows_sharing_keys_equal_each_row_alone_bit_for_bit() {
    // Without a mask the direct path computes blocks of rows together (keys outside, rows
    // inside); a row's bits must not depend on the rows beside it, since lockstep decoding
    // compares a window decoded in a batch with the same window alone. Cases: Whisper's
    // cross-attention (hd 64: the key-blocked weighted sum), a key count that is not a
    // multiple of the blocks, a head size that is not a multiple of 64, and more rows than
    // one task takes.
    for (tq, tk, heads, hd) in [
        (5, 1500, 8, 64),
        (9, 37, 2, 64),
        (13, 70, 3, 20),
        (2, 5, 1, 8),
    ] {
        let d = heads * hd;
        let mut rng = Rng::new(tq as u64 * 1000 + tk as u64);
        let q = rng.vec(tq * d, -1.5, 1.5);
        let k = rng.vec(tk * d, -1.5, 1.5);
        let v = rng.vec(tk * d, -1.0, 1.0);
        let mut together = vec![f32::NAN; tq * d];
        cpu::attention_direct(
            &cpu::AttentionShape::new(tq, tk, heads, hd),
            &q,
            &k,
            &v,
            &mut together,
        );
        for i in 0..tq {
            let mut alone = vec![f32::NAN; d];
            cpu::attention_direct(
                &cpu::AttentionShape::new(1, tk, heads, hd),
                &q[i * d..(i + 1) * d],
                &k,
                &v,
                &mut alone,
            );
            let row = &together[i * d..(i + 1) * d];
            assert!(
                row.iter()
                    .zip(&alone)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "tq={tq} tk={tk} hd={hd}: row {i} differs from the row alone"
            );
        }
    }
}

#[test]
fn attention_with_f16_keys_and_values_meets_the_f64_bound_on_every_path() {
    // The decoder's cross-attention at the int8 compute type keeps K and V in f16 and
    // widens each value as it loads it. Every path this CPU has, forced in turn, on: one
    // query row (a greedy step), a step's beams, more rows than one task takes, strided K
    // and V (column slices of a wider buffer), head sizes that do and do not take the
    // key-blocked weighted sum or the AVX-512 body, and key counts that are not multiples
    // of the blocks. Each must meet the f64 reference's bound on the widened values; each
    // row's bits must equal the row computed alone, and heads stored one after another
    // must give the bits of interleaved heads. The AVX2 path is also `attention_direct`'s
    // arithmetic on the widened values, bit for bit.
    for (tq, tk, heads, hd, pad) in [
        (1, 1500, 8, 64, 0),
        (5, 1500, 8, 64, 0),
        (9, 37, 2, 64, 3),
        (7, 17, 3, 64, 0),
        (13, 70, 3, 20, 5),
        (2, 5, 1, 8, 1),
        (1, 1, 2, 16, 0),
        (3, 1, 1, 64, 0),
    ] {
        let d = heads * hd;
        let stride = d + pad;
        let mut rng = Rng::new(7 * tq as u64 + tk as u64);
        let q = rng.vec(tq * d, -1.5, 1.5);
        let to_f16 =
            |v: Vec<f32>| -> Vec<half::f16> { v.into_iter().map(half::f16::from_f32).collect() };
        let k16 = to_f16(rng.vec(tk * stride, -1.5, 1.5));
        let v16 = to_f16(rng.vec(tk * stride, -1.0, 1.0));
        let widen = |v: &[half::f16]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let (k32, v32) = (widen(&k16), widen(&v16));
        let attn = Attn {
            q: &q,
            qs: d,
            k: &k32,
            ks: stride,
            v: &v32,
            vs: stride,
            tq,
            tk,
            heads,
            hd,
            causal: None,
            os: d,
        };
        let (want, bound) = ref_attention(&attn);
        let mut direct = vec![f32::NAN; tq * d];
        cpu::attention_direct(&attn.shape(), &q, &k32, &v32, &mut direct);
        let heads_major = |x: &[half::f16]| -> Vec<half::f16> {
            (0..heads)
                .flat_map(|h| (0..tk).flat_map(move |j| x[j * stride + h * hd..][..hd].to_vec()))
                .collect()
        };
        let (kh, vh) = (heads_major(&k16), heads_major(&v16));
        let rows = cpu::KvStrides::rows(stride, hd);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        for path in cpu::F16KvPath::ALL {
            if !(path.available() && path.takes(hd)) {
                continue;
            }
            let what = format!("{path:?} tq={tq} tk={tk} heads={heads} hd={hd} pad={pad}");
            let run = |q: &[f32], tq: usize, k: &[half::f16], v: &[half::f16], kv| {
                let mut out = vec![f32::NAN; tq * d];
                let shape = cpu::AttentionShape::new(tq, tk, heads, hd);
                cpu::attention_direct_f16kv_on(path, &shape, kv, q, k, v, &mut out);
                out
            };
            let got = run(&q, tq, &k16, &v16, rows);
            assert_within(&what, &got, &want, &bound);
            if path == cpu::F16KvPath::Avx2 {
                assert!(same(&got, &direct), "{what}: differs from attention_direct");
            }
            let by_head = run(&q, tq, &kh, &vh, cpu::KvStrides::heads_major(tk, hd));
            assert!(
                same(&by_head, &got),
                "{what}: heads stored one after another differ from interleaved heads"
            );
            for i in 0..tq {
                let alone = run(&q[i * d..(i + 1) * d], 1, &k16, &v16, rows);
                assert!(
                    same(&got[i * d..(i + 1) * d], &alone),
                    "{what}: row {i} differs from the row alone"
                );
            }
        }
    }
}

#[test]
fn f16_attention_paths_refuse_what_they_cannot_run() {
    // Asking for a path the CPU lacks, or the AVX-512 body for heads it is not written
    // for, is a caller's bug: it panics naming the path rather than running other code.
    let (tk, heads) = (4, 1);
    for (path, hd) in [(cpu::F16KvPath::Avx512, 32), (cpu::F16KvPath::Avx2, 32)] {
        if path.available() && path.takes(hd) {
            continue;
        }
        let q = vec![0.0f32; heads * hd];
        let kv = vec![half::f16::ZERO; tk * heads * hd];
        let mut out = vec![0.0f32; heads * hd];
        let r = std::panic::catch_unwind(move || {
            cpu::attention_direct_f16kv_on(
                path,
                &cpu::AttentionShape::new(1, tk, heads, hd),
                cpu::KvStrides::rows(heads * hd, hd),
                &q,
                &kv,
                &kv,
                &mut out,
            )
        });
        let msg = r.expect_err("ran a path it cannot run");
        let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains(&format!("{path:?}")), "{text}");
    }
}

#[test]
#[should_panic(expected = "exceed length")]
fn heads_major_keys_shorter_than_their_strides_are_refused() {
    let (tk, heads, hd) = (10, 2, 8);
    let q = vec![0.0f32; heads * hd];
    let kv = vec![half::f16::ZERO; heads * tk * hd - 1];
    let mut out = vec![0.0f32; heads * hd];
    cpu::attention_direct_f16kv(
        &cpu::AttentionShape::new(1, tk, heads, hd),
        cpu::KvStrides::heads_major(tk, hd),
        &q,
        &kv,
        &kv,
        &mut out,
    );
}
