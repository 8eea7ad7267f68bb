//! `lstm`, `sigmoid` and `relu` against f64 references.
//!
//! Bounds. sigmoid: one f32 exp (std, ≤ 1 ulp), an add and a divide, each rounding once,
//! so a relative error of a few u; 4u = 4.8e-7 is asserted. LSTM: every gate is a dot
//! product of input + hidden + 2 terms, bounded like a linear's (γ·Σ|terms|), then passes
//! through sigmoid/tanh (slope ≤ 1) into c and h; the error a step adds to h is at most
//! about the gate error plus a few u, and the recurrence is contractive in practice
//! (|f| < 1), so over the 40 steps tested 1e-5 absolute on h (values in (−1, 1)) leaves a
//! wide margin over what is observed (~1e-7), and still fails on any wrong gate order, a
//! bias dropped, or a state not carried.

use crate::common::Rng;
use amanuensis_kernels::cpu;

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn sigmoid_matches_f64_and_saturates_without_nan() {
    let mut xs: Vec<f32> = (0..200_001).map(|i| -100.0 + i as f32 * 1e-3).collect();
    xs.extend([0.0, -0.0, f32::MAX, f32::MIN, 1e-30, -1e-30]);
    let mut got = xs.clone();
    cpu::sigmoid(&mut got);
    let u = f32::EPSILON as f64 / 2.0;
    for (&x, &g) in xs.iter().zip(&got) {
        let want = sig(x as f64);
        assert!(!g.is_subnormal(), "sigmoid({x:e}) = {g:e} is subnormal");
        if want < 2.0 * f32::MIN_POSITIVE as f64 {
            // At the flush edge: zero, or the value within the bound.
            assert!(
                g == 0.0 || (g as f64 - want).abs() <= 4.0 * u * want,
                "sigmoid({x:e}) = {g:e}, want {want:e} or 0"
            );
        } else {
            assert!(
                (g as f64 - want).abs() <= 4.0 * u * want,
                "sigmoid({x:e}) = {g:e}, want {want:e}"
            );
        }
    }
    let mut inf = [f32::INFINITY, f32::NEG_INFINITY];
    cpu::sigmoid(&mut inf);
    assert_eq!(inf, [1.0, 0.0]);
}

#[test]
fn relu_zeroes_negatives_only() {
    let mut xs = [-2.0f32, -1e-38, -0.0, 0.0, 1e-38, 3.5, f32::NEG_INFINITY];
    cpu::relu(&mut xs);
    assert_eq!(xs, [0.0, 0.0, -0.0, 0.0, 1e-38, 3.5, 0.0]);
    let mut nan = [f32::NAN];
    cpu::relu(&mut nan);
    assert!(nan[0].is_nan(), "NaN passes through, as ONNX Relu does");
}

/// ONNX LSTM in f64: gates i, o, f, c.
#[allow(clippy::too_many_arguments)]
fn ref_lstm(
    x: &[f32],
    seq: usize,
    input: usize,
    w_ih: &[f32],
    w_hh: &[f32],
    bias: &[f32],
    h: &mut [f64],
    c: &mut [f64],
) -> Vec<f64> {
    let hidden = h.len();
    let g4 = 4 * hidden;
    let mut y = Vec::with_capacity(seq * hidden);
    for t in 0..seq {
        let gate = |r: usize, h: &[f64]| -> f64 {
            let mut s = bias[r] as f64 + bias[g4 + r] as f64;
            for k in 0..input {
                s += w_ih[r * input + k] as f64 * x[t * input + k] as f64;
            }
            for (k, hv) in h.iter().enumerate() {
                s += w_hh[r * hidden + k] as f64 * hv;
            }
            s
        };
        let g: Vec<f64> = (0..g4).map(|r| gate(r, h)).collect();
        for j in 0..hidden {
            let (i, o, f, cand) = (
                sig(g[j]),
                sig(g[hidden + j]),
                sig(g[2 * hidden + j]),
                g[3 * hidden + j].tanh(),
            );
            c[j] = f * c[j] + i * cand;
            h[j] = o * c[j].tanh();
        }
        y.extend_from_slice(h);
    }
    y
}

#[test]
fn lstm_matches_f64_reference_and_carries_state_across_calls() {
    // Silero VAD's layer (input 128, hidden 128) and an odd one (input 5, hidden 11).
    for &(input, hidden, seq, seed) in &[(128usize, 128usize, 40usize, 1u64), (5, 11, 40, 2)] {
        let mut rng = Rng::new(seed);
        let scale = 1.0 / (input.max(hidden) as f32).sqrt();
        let x = rng.vec(seq * input, -2.0, 2.0);
        let w_ih = rng.vec(4 * hidden * input, -scale, scale);
        let w_hh = rng.vec(4 * hidden * hidden, -scale, scale);
        let bias = rng.vec(8 * hidden, -0.5, 0.5);
        let h0 = rng.vec(hidden, -0.5, 0.5);
        let c0 = rng.vec(hidden, -0.5, 0.5);
        let (mut rh, mut rc): (Vec<f64>, Vec<f64>) = (
            h0.iter().map(|&v| v as f64).collect(),
            c0.iter().map(|&v| v as f64).collect(),
        );
        let want = ref_lstm(&x, seq, input, &w_ih, &w_hh, &bias, &mut rh, &mut rc);
        // In two calls of 17 and 23 steps: the state must carry over.
        let (mut h, mut c) = (h0.clone(), c0.clone());
        let mut y = vec![f32::NAN; seq * hidden];
        let split = 17;
        let (y1, y2) = y.split_at_mut(split * hidden);
        cpu::lstm(
            &x[..split * input],
            split,
            input,
            &w_ih,
            &w_hh,
            &bias,
            &mut h,
            &mut c,
            y1,
        );
        cpu::lstm(
            &x[split * input..],
            seq - split,
            input,
            &w_ih,
            &w_hh,
            &bias,
            &mut h,
            &mut c,
            y2,
        );
        let worst = y
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-5,
            "input {input} hidden {hidden}: worst |y - ref| {worst:e}"
        );
        for (got, want) in [(&h, &rh), (&c, &rc)] {
            for (&g, &w) in got.iter().zip(want.iter()) {
                assert!((g as f64 - w).abs() <= 1e-5, "final state {g} vs {w}");
            }
        }
    }
}
