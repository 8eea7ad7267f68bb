//! Times the NPU catalogue's CPU references at Whisper-base encoder shapes (1500 frames,
//! d = 512, 8 heads of 64, MLP 2048). These are the speeds of the bit-exact references the
//! simulator executes on the host, not the speed of the NPU.
//!
//! Run: `cargo run --release -p amanuensis-kernels --example npu_bench [threads] [filter]`
//! (threads defaults to rayon's choice; filter keeps only benchmarks whose label contains
//! it). Prints the fastest call and GFLOP/s (2 flops per multiply-add).

use std::hint::black_box;
use std::time::{Duration, Instant};

use amanuensis_kernels::{cpu, npu};

/// Seeded values in [-1, 1), so runs are comparable.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// Whether the benchmark labelled `label` runs: all do, unless a filter was given.
fn wanted(label: &str) -> bool {
    match std::env::args().nth(2) {
        Some(filter) => label.contains(&filter),
        None => true,
    }
}

/// Runs `f` (after one warm-up call) at least twice and for ~1 s (at most 50 calls) and
/// prints its fastest call. Returns seconds per call.
fn run(label: &str, flops: f64, mut f: impl FnMut()) -> f64 {
    if !wanted(label) {
        return 0.0;
    }
    f();
    let mut best = f64::INFINITY;
    let mut calls = 0;
    let start = Instant::now();
    while calls < 2 || (start.elapsed() < Duration::from_secs(1) && calls < 50) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    println!(
        "{label:<52} {:>10.2} ms  {:>6.2} GFLOP/s",
        best * 1e3,
        flops / best / 1e9
    );
    best
}

/// Epilogue of a benchmarked matmul.
#[derive(Clone, Copy, PartialEq)]
enum Epilogue {
    Bias,
    Gelu,
    Residual,
}

fn linear(label: &str, m: usize, k: usize, n: usize, epi: Epilogue) -> f64 {
    let a = data(m * k, 1);
    let w = data(n * k, 2);
    let b = data(n, 3);
    let r = data(m * n, 4);
    let mut out = vec![0.0f32; m * n];
    run(label, 2.0 * (m * k * n) as f64, || match epi {
        Epilogue::Bias => npu::matmul_bias(black_box(&a), m, k, &w, n, Some(&b), &mut out).unwrap(),
        Epilogue::Gelu => {
            npu::matmul_bias_gelu(black_box(&a), m, k, &w, n, Some(&b), &mut out).unwrap()
        }
        Epilogue::Residual => {
            npu::matmul_bias_residual(black_box(&a), m, k, &w, n, Some(&b), &r, &mut out).unwrap()
        }
    })
}

fn conv(label: &str, c_in: usize, t_in: usize, c_out: usize, stride: usize, gelu: bool) -> f64 {
    let x = data(c_in * t_in, 4);
    let w = data(c_out * c_in * 3, 5);
    let b = data(c_out, 6);
    let t_out = (t_in + 2 - 3) / stride + 1;
    let mut out = vec![0.0f32; c_out * t_out];
    let f = if gelu { npu::conv1d_gelu } else { npu::conv1d };
    run(label, 2.0 * (c_out * c_in * 3 * t_out) as f64, || {
        f(
            black_box(&x),
            c_in,
            t_in,
            &w,
            c_out,
            3,
            Some(&b),
            stride,
            1,
            &mut out,
        )
        .unwrap()
    })
}

fn main() {
    if let Some(t) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<usize>().ok())
    {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .expect("thread pool");
    }
    println!("rayon threads: {}", rayon::current_num_threads());
    let (t, d, ff, heads, hd) = (1500, 512, 2048, 8, 64);

    conv(
        "conv1d 80->512 k3 s1 p1, 3000 frames",
        80,
        3000,
        d,
        1,
        false,
    );
    conv(
        "conv1d 512->512 k3 s2 p1, 3000 frames",
        d,
        3000,
        d,
        2,
        false,
    );
    let conv1 = conv("conv1d_gelu 80->512 k3 s1 p1 (conv1)", 80, 3000, d, 1, true);
    let conv2 = conv("conv1d_gelu 512->512 k3 s2 p1 (conv2)", d, 3000, d, 2, true);
    use Epilogue::*;
    let qkv = linear("matmul_bias 1500x512 -> 1536 (qkv)", t, d, 3 * d, Bias);
    let proj = linear(
        "matmul_bias_residual 1500x512 -> 512 (out proj)",
        t,
        d,
        d,
        Residual,
    );
    let fc1 = linear("matmul_bias_gelu 1500x512 -> 2048 (fc1)", t, d, ff, Gelu);
    let fc2 = linear(
        "matmul_bias_residual 1500x2048 -> 512 (fc2)",
        t,
        ff,
        d,
        Residual,
    );
    linear("matmul_bias 1500x512 -> 2048", t, d, ff, Bias);

    let attn = {
        let w = heads * hd;
        let q = data(t * w, 7);
        let k = data(t * w, 8);
        let v = data(t * w, 9);
        let mut out = vec![0.0f32; t * w];
        run(
            "attention_flash 1500x1500, 8 heads, hd 64",
            4.0 * (t * t * w) as f64,
            || {
                npu::attention_flash(
                    &cpu::AttentionShape::new(t, t, heads, hd),
                    black_box(&q),
                    &k,
                    &v,
                    &mut out,
                )
                .unwrap()
            },
        )
    };
    let ln = {
        let x = data(t * d, 10);
        let g = data(d, 11);
        let b = data(d, 12);
        let mut out = vec![0.0f32; t * d];
        run("layer_norm 1500x512", 0.0, || {
            npu::layer_norm(black_box(&x), t, d, &g, &b, 1e-5, &mut out).unwrap()
        })
    };
    let add = {
        let a = data(t * d, 13);
        let b = data(t * d, 14);
        let mut out = vec![0.0f32; t * d];
        run("residual_add 1500x512", 0.0, || {
            npu::residual_add(black_box(&a), &b, &mut out).unwrap()
        })
    };
    if std::env::args().nth(2).is_none() {
        // One encoder layer: two layer norms, qkv, attention, out proj + residual, fc1 +
        // GELU, fc2 + residual (the residual adds folded into the matmuls).
        let _ = add;
        let layer = 2.0 * ln + qkv + attn + proj + fc1 + fc2;
        println!(
            "whisper-base encoder per 30 s window (stem + 6 layers): {:.2} s",
            conv1 + conv2 + 6.0 * layer
        );
    }
}
