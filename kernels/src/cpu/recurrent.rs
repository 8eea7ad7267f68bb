//! Recurrent layers: the LSTM of Silero VAD (ONNX's `LSTM`, one forward direction).
//!
//! The input projection of every step is one gemm up front; only the recurrent product
//! `h · w_hhᵀ` is sequential. Gates are in ONNX's order, i, o, f, c.

use super::checks::require_len;
use super::linear::linear;
use super::simd::{dot, multiversion};

/// `g = pre + w_hh · h`: the recurrent product of one step, a row of w_hh per gate.
#[inline(always)]
fn gates_slice<const FMA: bool>(g: &mut [f32], pre: &[f32], w_hh: &[f32], h: &[f32]) {
    for ((gv, p), row) in g.iter_mut().zip(pre).zip(w_hh.chunks_exact(h.len())) {
        *gv = p + dot::<FMA>(row, h);
    }
}

multiversion! {
    fn recurrent_gates(g: &mut [f32], pre: &[f32], w_hh: &[f32], h: &[f32]) => gates_slice
}

/// The logistic function 1 / (1 + e^−x), within a few ulp of the exact value; results
/// below f32's normal range (x < −87.3) are flushed to +0, as GELU's are, so that no
/// subnormal reaches a later multiply-add.
#[inline]
pub fn sigmoid_one(x: f32) -> f32 {
    // e^−x overflows to +inf for x < −88.7, giving 0; no NaN arises for non-NaN x.
    let y = 1.0 / (1.0 + (-x).exp());
    if y < f32::MIN_POSITIVE {
        0.0
    } else {
        y
    }
}

/// A single-direction LSTM over `seq` steps (ONNX `LSTM` semantics, gate order i, o, f, c):
///
/// - x `[seq, input]`, w_ih `[4·hidden, input]`, w_hh `[4·hidden, hidden]`,
///   bias `[8·hidden]` (input bias then recurrent bias);
/// - h, c `[hidden]`: the state before the first step, updated in place to the state
///   after the last, so a sequence may be fed in pieces;
/// - y `[seq, hidden]`: h after each step.
#[allow(clippy::too_many_arguments)]
pub fn lstm(
    x: &[f32],
    seq: usize,
    input: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    bias: &[f32],
    h: &mut [f32],
    c: &mut [f32],
    y: &mut [f32],
) {
    let hidden = h.len();
    let gates = 4 * hidden;
    require_len("lstm input", x.len(), seq, input);
    require_len("lstm w_ih", w_ih.len(), gates, input);
    require_len("lstm w_hh", w_hh.len(), gates, hidden);
    require_len("lstm bias", bias.len(), 2, gates);
    require_len("lstm cell", c.len(), 1, hidden);
    require_len("lstm output", y.len(), seq, hidden);
    if seq == 0 {
        return;
    }
    let b: Vec<f32> = bias[..gates]
        .iter()
        .zip(&bias[gates..])
        .map(|(a, r)| a + r)
        .collect();
    // Every step's input projection in one gemm: pre[t] = x[t] · w_ihᵀ + b_ih + b_hh.
    let mut pre = vec![0.0f32; seq * gates];
    linear(x, seq, input, w_ih, gates, Some(&b), &mut pre);
    let mut g = vec![0.0f32; gates];
    for (t, out) in y.chunks_exact_mut(hidden).enumerate() {
        recurrent_gates(&mut g, &pre[t * gates..(t + 1) * gates], w_hh, h);
        let (i, rest) = g.split_at(hidden);
        let (o, rest) = rest.split_at(hidden);
        let (f, cand) = rest.split_at(hidden);
        for j in 0..hidden {
            let cj = sigmoid_one(f[j]) * c[j] + sigmoid_one(i[j]) * cand[j].tanh();
            c[j] = cj;
            h[j] = sigmoid_one(o[j]) * cj.tanh();
        }
        out.copy_from_slice(h);
    }
}
