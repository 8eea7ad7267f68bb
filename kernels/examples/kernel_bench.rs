//! Times the CPU kernels at Whisper-base shapes (encoder: 1500 frames, d=512, 8 heads;
//! decoder: per-token GEMVs and the 51865-way logits projection).
//!
//! Run: `cargo run --release -p amanuensis-kernels --example kernel_bench [threads] [filter]`
//! (threads defaults to rayon's choice; filter keeps only benchmarks whose label contains
//! it). Prints the fastest time per call, GFLOP/s (2 flops per multiply-add) and, for the
//! weight-streaming products, GB/s of weight read.
//!
//! The cross-attention rows sweep a 48 MB buffer between steps to push the keys and values
//! out of the nearer caches; `KERNEL_BENCH_SWEEP_MB=400` sweeps more, to see them fetched
//! from as far as a real decoder step fetches them on a host with a large last-level cache.

use std::hint::black_box;
use std::time::{Duration, Instant};

use amanuensis_kernels::cpu;

/// Seeded values in [-1, 1), so runs are comparable.
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// Megabytes the cross-attention rows sweep between steps: `KERNEL_BENCH_SWEEP_MB`, else 48.
fn sweep_mb() -> usize {
    match std::env::var("KERNEL_BENCH_SWEEP_MB") {
        Ok(v) => match v.parse::<usize>() {
            Ok(mb) if mb > 0 => mb,
            _ => {
                eprintln!(
                    "KERNEL_BENCH_SWEEP_MB must be a positive number of megabytes, got {v:?}"
                );
                std::process::exit(2);
            }
        },
        Err(_) => 48,
    }
}

/// Whether the benchmark labelled `label` runs: all do, unless a filter was given.
fn wanted(label: &str) -> bool {
    match std::env::args().nth(2) {
        Some(filter) => label.contains(&filter),
        None => true,
    }
}

/// Runs `f` (after one warm-up call) for ~0.4 s or 200 calls and prints its fastest call;
/// the minimum is the figure least disturbed by other processes on a shared machine.
/// Returns seconds per call.
fn run(label: &str, flops: f64, bytes: Option<f64>, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let mut calls = 0;
    let start = Instant::now();
    while calls < 3 || (start.elapsed() < Duration::from_millis(400) && calls < 200) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    let mut line = format!("{label:<48} {:>9.3} ms", best * 1e3);
    if flops > 0.0 {
        line += &format!("  {:>6.1} GFLOP/s", flops / best / 1e9);
    }
    if let Some(b) = bytes {
        line += &format!("  {:>6.1} GB/s", b / best / 1e9);
    }
    println!("{line}");
    best
}

type LinearFn = fn(&[f32], usize, usize, &[f32], usize, Option<&[f32]>, &mut [f32]);

fn bench_linear(name: &str, m: usize, k: usize, n: usize, path: LinearFn) -> f64 {
    let label = format!("{name} {m}x{k} -> {n}");
    if !wanted(&label) {
        return 0.0;
    }
    let x = data(m * k, 1);
    let w = data(n * k, 2);
    let b = data(n, 3);
    let mut out = vec![0.0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let bytes = (m <= 8).then_some((n * k * 4) as f64);
    run(&label, flops, bytes, || {
        path(black_box(&x), m, k, &w, n, Some(&b), &mut out)
    })
}

/// [`bench_linear`]'s GEMV with the weight kept as f16 (widened as the kernel reads it).
fn bench_linear_f16(name: &str, m: usize, k: usize, n: usize) -> f64 {
    let label = format!("{name} {m}x{k} -> {n}");
    if !wanted(&label) {
        return 0.0;
    }
    let x = data(m * k, 1);
    let w: Vec<half::f16> = data(n * k, 2)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let b = data(n, 3);
    let mut out = vec![0.0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    run(&label, flops, Some((n * k * 2) as f64), || {
        cpu::linear_gemv_w(
            black_box(&x),
            m,
            k,
            cpu::Weight::F16(&w),
            n,
            Some(&b),
            &mut out,
        )
    })
}

/// [`bench_linear`] with the weight quantized to int8, on the given instruction-set path.
fn bench_linear_i8(name: &str, m: usize, k: usize, n: usize, path: cpu::int8::Int8Path) -> f64 {
    bench_int8(name, m, k, n, path, false)
}

/// [`bench_linear_i8`] with f32 activations (weight-only int8, the decoder's GEMVs).
fn bench_linear_w8(name: &str, m: usize, k: usize, n: usize) -> f64 {
    bench_int8(name, m, k, n, cpu::int8::Int8Path::best(), true)
}

/// [`bench_linear_i8`] with f32 activations cut into int8 pieces (the logits projection's
/// product), on each path that has a split kernel: AMX tiles and AVX-512 VNNI.
fn bench_linear_split(name: &str, m: usize, k: usize, n: usize) {
    for path in [cpu::int8::Int8Path::Amx, cpu::int8::Int8Path::Avx512Vnni] {
        bench_int8_as(name, m, k, n, path, Mode::Split);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Int8,
    F32Activations,
    Split,
}

fn bench_int8(
    name: &str,
    m: usize,
    k: usize,
    n: usize,
    path: cpu::int8::Int8Path,
    f32_activations: bool,
) -> f64 {
    let mode = if f32_activations {
        Mode::F32Activations
    } else {
        Mode::Int8
    };
    bench_int8_as(name, m, k, n, path, mode)
}

fn bench_int8_as(
    name: &str,
    m: usize,
    k: usize,
    n: usize,
    path: cpu::int8::Int8Path,
    mode: Mode,
) -> f64 {
    let kind = match mode {
        Mode::F32Activations => "w8 f32-act",
        Mode::Int8 => "int8",
        Mode::Split => "w8 split-act",
    };
    let label = format!("{name} {m}x{k} -> {n} {kind} {}", path.name());
    if !wanted(&label) || !path.available() {
        return 0.0;
    }
    let x = data(m * k, 1);
    let w = data(n * k, 2);
    let b = data(n, 3);
    let mut packed = vec![0i8; cpu::int8::packed_len(n, k)];
    let mut scales = vec![0f32; cpu::int8::padded_n(n)];
    cpu::int8::quantize_weight(
        n,
        k,
        |j, r| r.copy_from_slice(&w[j * k..(j + 1) * k]),
        &mut packed,
        &mut scales,
    )
    .expect("finite");
    let sums = cpu::int8::column_sums(&packed, n, k);
    let wq = cpu::int8::Int8Weight {
        n,
        k,
        packed: &packed,
        scales: &scales,
        sums: &sums,
        rescore: None,
    };
    let mut out = vec![0.0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let bytes = (m <= 8).then_some((n * k) as f64);
    run(&label, flops, bytes, || match mode {
        Mode::F32Activations => {
            cpu::int8::linear_w8_f32_on(path, black_box(&x), m, k, &wq, Some(&b), &mut out)
        }
        Mode::Int8 => cpu::int8::linear_i8_on(path, black_box(&x), m, k, &wq, Some(&b), &mut out),
        Mode::Split => {
            cpu::int8::linear_w8_split_on(path, black_box(&x), m, k, &wq, Some(&b), &mut out)
        }
    })
}

/// Times `path` on 8 heads of 64. `fused`: q, k, v are column slices of [T, 3d]
/// projections (the encoder's layout); otherwise k and v are separate contiguous [T, d]
/// tensors (the decoder's caches).
fn bench_attention(
    name: &str,
    tq: usize,
    tk: usize,
    causal: Option<usize>,
    fused: bool,
    path: cpu::AttentionKernel,
) -> f64 {
    let layout = if fused { "fused qkv" } else { "kv cache" };
    let label = format!("{name} tq={tq} tk={tk} causal={causal:?} {layout}");
    if !wanted(&label) {
        return 0.0;
    }
    let (heads, hd) = (8, 64);
    let d = heads * hd;
    let stride = if fused { 3 * d } else { d };
    let q = data(tq * stride, 4);
    let k = data(tk * stride, 5);
    let v = data(tk * stride, 6);
    let (k, v) = if fused {
        (&k[d..], &k[2 * d..])
    } else {
        (&k[..], &v[..])
    };
    let mut out = vec![0.0f32; tq * d];
    let visible: usize = (0..tq)
        .map(|i| causal.map_or(tk, |p| tk.min(p + i + 1)))
        .sum();
    let flops = 4.0 * (visible * d) as f64;
    run(&label, flops, None, || {
        let shape = cpu::AttentionShape {
            q_row_stride: stride,
            k_row_stride: stride,
            v_row_stride: stride,
            ..cpu::AttentionShape::new(tq, tk, heads, hd).causal(causal)
        };
        path(&shape, black_box(&q), k, v, &mut out)
    })
}

/// A beam-5 decoder step's self-attention over six layers' KV caches (`[beams, 448, d]`
/// each, `filled` positions in use), one call per beam as the `kv_cache_attention` op
/// makes them, the caches in rows or stored by head (`[beams, heads, 448, hd]`; the op
/// then spreads the beams over the cores, `parallel`), with the sweep of
/// [`bench_cross_step`] between steps.
fn bench_self_step(filled: usize, heads_major: bool, parallel: bool) {
    let label = format!(
        "self-attention step, 6 layers, 5 beams, {filled} of 448 positions{}{}",
        if heads_major { ", by head" } else { "" },
        if parallel { ", beams on all cores" } else { "" }
    );
    if !wanted(&label) {
        return;
    }
    let (layers, beams, cap, heads, hd) = (6, 5, 448, 8, 64);
    let d = heads * hd;
    let q = data(beams * d, 7);
    let caches: Vec<(Vec<f32>, Vec<f32>)> = (0..layers as u64)
        .map(|l| (data(beams * cap * d, 30 + l), data(beams * cap * d, 40 + l)))
        .collect();
    let sweep = data(sweep_mb() << 18, 3);
    let mut swept = f64::INFINITY;
    for _ in 0..20 {
        let t = Instant::now();
        black_box(sweep.iter().step_by(16).sum::<f32>());
        swept = swept.min(t.elapsed().as_secs_f64());
    }
    let kv = if heads_major {
        cpu::KvStrides::heads_major(cap, hd)
    } else {
        cpu::KvStrides::rows(d, hd)
    };
    let mut out = vec![0.0f32; beams * d];
    let with_sweep = run(&format!("{label} + sweep"), 0.0, None, || {
        black_box(sweep.iter().step_by(16).sum::<f32>());
        for (k, v) in &caches {
            let beam = |b: usize, ob: &mut [f32]| {
                let (kb, vb) = (&k[b * cap * d..][..cap * d], &v[b * cap * d..][..cap * d]);
                let qb = &q[b * d..][..d];
                let causal = Some(filled - 1);
                let shape = cpu::AttentionShape::new(1, filled, heads, hd).causal(causal);
                cpu::attention_direct_kv(&shape, kv, qb, kb, vb, ob);
            };
            if parallel {
                use rayon::prelude::*;
                out.par_chunks_mut(d)
                    .enumerate()
                    .for_each(|(b, ob)| beam(b, ob));
            } else {
                out.chunks_mut(d)
                    .enumerate()
                    .for_each(|(b, ob)| beam(b, ob));
            }
        }
    });
    println!("{label:<48} {:>9.3} ms", (with_sweep - swept) * 1e3);
}

/// A decoder step's cross-attention over all six layers' keys and values, each layer its
/// own buffers (37 MB in f32, 18 MB in f16: more than a typical last-level cache once the
/// weights pass through too), so the figure includes reading them from memory.
fn bench_cross_step(rows: usize, f16: Option<cpu::F16KvPath>, heads_major: bool) {
    let label = format!(
        "cross-attention step, 6 layers, {rows} rows, k/v {}{}",
        match f16 {
            Some(p) => format!("f16 {p:?}"),
            None => "f32".into(),
        },
        if heads_major { " by head" } else { "" }
    );
    if !wanted(&label) {
        return;
    }
    let (layers, tk, heads, hd) = (6, 1500, 8, 64);
    let d = heads * hd;
    let q = data(rows * d, 7);
    let kv32: Vec<(Vec<f32>, Vec<f32>)> = (0..layers as u64)
        .map(|l| (data(tk * d, 10 + l), data(tk * d, 20 + l)))
        .collect();
    let kv16: Vec<(Vec<half::f16>, Vec<half::f16>)> = kv32
        .iter()
        .map(|(k, v)| {
            let n = |x: &Vec<f32>| x.iter().map(|&y| half::f16::from_f32(y)).collect();
            (n(k), n(v))
        })
        .map(|(k, v)| {
            // `[heads, tk, hd]`: each head's keys contiguous.
            let by_head = |x: Vec<half::f16>| -> Vec<half::f16> {
                let mut out = Vec::with_capacity(x.len());
                for h in 0..heads {
                    for j in 0..tk {
                        out.extend_from_slice(&x[j * d + h * hd..][..hd]);
                    }
                }
                out
            };
            if heads_major {
                (by_head(k), by_head(v))
            } else {
                (k, v)
            }
        })
        .collect();
    let strides = if heads_major {
        cpu::KvStrides::heads_major(tk, hd)
    } else {
        cpu::KvStrides::rows(d, hd)
    };
    // A buffer as large as the weights a step reads, swept between steps, evicts the
    // keys and values from the cache as the real step's linears do.
    let sweep = data(sweep_mb() << 18, 3);
    let mut out = vec![0.0f32; rows * d];
    // The sweep's own time, subtracted from the step's below.
    let mut swept = f64::INFINITY;
    for _ in 0..20 {
        let t = Instant::now();
        black_box(sweep.iter().step_by(16).sum::<f32>());
        swept = swept.min(t.elapsed().as_secs_f64());
    }
    let bytes = (layers * 2 * tk * d * if f16.is_some() { 2 } else { 4 }) as f64;
    let flops = (layers * 4 * rows * tk * d) as f64;
    let step_all = |out: &mut [f32]| {
        for l in 0..layers {
            if let Some(path) = f16 {
                let (k, v) = &kv16[l];
                let shape = cpu::AttentionShape::new(rows, tk, heads, hd);
                cpu::attention_direct_f16kv_on(path, &shape, strides, &q, k, v, out);
            } else {
                let (k, v) = &kv32[l];
                let shape = cpu::AttentionShape::new(rows, tk, heads, hd);
                cpu::attention_direct(&shape, &q, k, v, out);
            }
        }
    };
    // Warm: every layer's keys and values in the cache (18 MB in f16), the bound of the
    // arithmetic rather than of memory.
    run(&format!("{label}, warm"), 0.0, None, || step_all(&mut out));
    let with_sweep = run(&format!("{label} + sweep"), 0.0, None, || {
        black_box(sweep.iter().step_by(16).sum::<f32>());
        step_all(&mut out)
    });
    let step = with_sweep - swept;
    println!(
        "{label:<48} {:>9.3} ms  {:>6.1} GFLOP/s  {:>6.1} GB/s  (sweep alone {:.3} ms)",
        step * 1e3,
        flops / step / 1e9,
        bytes / step / 1e9,
        swept * 1e3
    );
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
    let (t, d, ff) = (1500, 512, 2048);

    println!("\n== encoder (T=1500, d=512, 8 heads, ffn 2048) ==");
    let conv1 = if !wanted("conv1d 80->512 k3 s1 p1, 3000 frames") {
        0.0
    } else {
        let (c_in, t_in) = (80, 3000);
        let x = data(c_in * t_in, 6);
        let w = data(d * c_in * 3, 7);
        let b = data(d, 8);
        let mut out = vec![0.0f32; d * t_in];
        let flops = 2.0 * (d * c_in * 3 * t_in) as f64;
        run("conv1d 80->512 k3 s1 p1, 3000 frames", flops, None, || {
            cpu::conv1d(
                black_box(&x),
                c_in,
                t_in,
                &w,
                d,
                3,
                Some(&b),
                1,
                1,
                &mut out,
            )
        })
    };
    let conv2 = if !wanted("conv1d 512->512 k3 s2 p1, 3000 frames") {
        0.0
    } else {
        let t_in = 3000;
        let x = data(d * t_in, 9);
        let w = data(d * d * 3, 10);
        let b = data(d, 11);
        let mut out = vec![0.0f32; d * t];
        let flops = 2.0 * (d * d * 3 * t) as f64;
        run("conv1d 512->512 k3 s2 p1, 3000 frames", flops, None, || {
            cpu::conv1d(black_box(&x), d, t_in, &w, d, 3, Some(&b), 2, 1, &mut out)
        })
    };
    let qkv = bench_linear("linear (qkv)", t, d, 3 * d, cpu::linear);
    let proj = bench_linear("linear (out proj)", t, d, d, cpu::linear);
    let fc1 = bench_linear("linear (fc1)", t, d, ff, cpu::linear);
    let fc2 = bench_linear("linear (fc2)", t, ff, d, cpu::linear);
    for path in cpu::int8::Int8Path::ALL {
        if !path.available() || path == cpu::int8::Int8Path::Portable {
            continue;
        }
        bench_linear_i8("linear (qkv)", t, d, 3 * d, path);
        bench_linear_i8("linear (out proj)", t, d, d, path);
        bench_linear_i8("linear (fc1)", t, d, ff, path);
        bench_linear_i8("linear (fc2)", t, ff, d, path);
    }
    for (name, k, n) in [
        ("qkv", d, 3 * d),
        ("out proj", d, d),
        ("fc1", d, ff),
        ("fc2", ff, d),
    ] {
        for path in cpu::bf16::Bf16Path::ALL {
            if !path.available() {
                continue;
            }
            let label = format!("linear bf16 ({name}) {t}x{k} -> {n} {}", path.name());
            if !wanted(&label) {
                continue;
            }
            let x = data(t * k, 20);
            let w = data(n * k, 21);
            let b = data(n, 22);
            let mut out = vec![0.0f32; t * n];
            run(&label, 2.0 * (t * k * n) as f64, None, || {
                // Packing the weight is part of a call (the op packs per call).
                let packed = cpu::bf16::PackedBf16::pack_rows_of(n, k, |j, buf| {
                    buf.copy_from_slice(&w[j * k..(j + 1) * k])
                });
                cpu::bf16::linear_bf16(path, black_box(&x), t, &packed, Some(&b), &mut out)
            });
        }
    }
    let attn = bench_attention("attention", t, t, None, true, cpu::attention);
    /// `attention_bf16` on path `P` of `Bf16Path::ALL`.
    fn attention_bf16_on<const P: usize>(
        shape: &cpu::AttentionShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) {
        cpu::attention_bf16(cpu::bf16::Bf16Path::ALL[P], shape, q, k, v, out)
    }
    let on_paths: [cpu::AttentionKernel; 4] = [
        attention_bf16_on::<0>,
        attention_bf16_on::<1>,
        attention_bf16_on::<2>,
        attention_bf16_on::<3>,
    ];
    for (path, f) in cpu::bf16::Bf16Path::ALL.into_iter().zip(on_paths) {
        if path.available() {
            bench_attention(
                &format!("attention bf16 {}", path.name()),
                t,
                t,
                None,
                true,
                f,
            );
        }
    }
    if cpu::bf16::Bf16Path::Amx.available() {
        fn x3_on_tiles(
            shape: &cpu::AttentionShape,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            out: &mut [f32],
        ) {
            cpu::attention_bf16x3(cpu::bf16::Bf16Path::Amx, shape, q, k, v, out)
        }
        bench_attention("attention bf16x3 amx", t, t, None, true, x3_on_tiles);
    }
    let gelu = if !wanted("gelu 1500x2048") {
        0.0
    } else {
        let mut x = data(t * ff, 12);
        run("gelu 1500x2048", 0.0, None, || cpu::gelu(black_box(&mut x)))
    };
    if wanted("gelu_f32 1500x2048") {
        let mut x = data(t * ff, 12);
        run("gelu_f32 1500x2048", 0.0, None, || {
            cpu::gelu_f32(black_box(&mut x))
        });
    }
    let ln = if !wanted("layer_norm 1500x512") {
        0.0
    } else {
        let x = data(t * d, 13);
        let g = data(d, 14);
        let b = data(d, 15);
        let mut out = vec![0.0f32; t * d];
        run("layer_norm 1500x512", 0.0, None, || {
            cpu::layer_norm(black_box(&x), t, d, &g, &b, 1e-5, &mut out)
        })
    };
    let add = if !wanted("add_inplace 1500x512") {
        0.0
    } else {
        let mut acc = data(t * d, 16);
        let b = data(t * d, 17);
        run("add_inplace 1500x512", 0.0, None, || {
            cpu::add_inplace(black_box(&mut acc), &b)
        })
    };
    if wanted("sum_exp_f64 51865") {
        let row = data(51865, 19);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        run("sum_exp_f64 51865", 0.0, None, || {
            black_box(cpu::sum_exp_f64(black_box(&row), max));
        });
    }
    if wanted("softmax_inplace 1500") {
        let mut row = data(t, 18);
        run("softmax_inplace 1500", 0.0, None, || {
            cpu::softmax_inplace(black_box(&mut row))
        });
    }
    if std::env::args().nth(2).is_none() {
        // Per block: 2 layer norms, qkv, attention, out proj, 2 residual adds, fc1, gelu,
        // fc2; then the stem's two convolutions with their GELUs and the final layer norm.
        let block = 2.0 * ln + qkv + attn + proj + 2.0 * add + fc1 + gelu + fc2;
        let stem_gelu = gelu * (d * (3000 + t)) as f64 / (t * ff) as f64;
        let encoder = conv1 + conv2 + stem_gelu + 6.0 * block + ln;
        let flops = 2.0 * (d * 80 * 3 * 3000 + d * d * 3 * t) as f64
            + 6.0 * 2.0 * (t * d * (3 * d + d + 2 * ff) + 2 * t * t * d) as f64;
        println!(
            "estimated encoder (sum of the kernels above): {:.1} ms for {:.1} GFLOP = {:.1} GFLOP/s",
            encoder * 1e3,
            flops / 1e9,
            flops / encoder / 1e9
        );
    }

    println!("\n== decoder step (d=512, ffn 2048, vocab 51865) ==");
    for m in [1, 5] {
        bench_linear("linear (q) gemv", m, d, d, cpu::linear_gemv);
        bench_linear("linear (q) gemm", m, d, d, cpu::linear_gemm);
        bench_linear("linear (fc1) gemv", m, d, ff, cpu::linear_gemv);
        bench_linear("linear (fc1) gemm", m, d, ff, cpu::linear_gemm);
        bench_linear("linear (fc2) gemv", m, ff, d, cpu::linear_gemv);
        bench_linear("linear (fc2) gemm", m, ff, d, cpu::linear_gemm);
        bench_linear_i8("linear (fc1)", m, d, ff, cpu::int8::Int8Path::best());
        bench_linear_i8("linear (fc2)", m, ff, d, cpu::int8::Int8Path::best());
        bench_linear_w8("linear (q)", m, d, d);
        bench_linear_w8("linear (fc1)", m, d, ff);
        bench_linear_w8("linear (fc2)", m, ff, d);
        bench_linear_split("linear (q)", m, d, d);
        bench_linear_split("linear (fc1)", m, d, ff);
        bench_linear_split("linear (fc2)", m, ff, d);
    }
    for m in [1, 2, 5] {
        bench_linear("linear (logits) gemv", m, d, 51865, cpu::linear_gemv);
        bench_linear_f16("linear (logits) gemv f16", m, d, 51865);
        bench_linear_i8("linear (logits)", m, d, 51865, cpu::int8::Int8Path::best());
        bench_linear_w8("linear (logits)", m, d, 51865);
        bench_linear_split("linear (logits)", m, d, 51865);
        bench_linear("linear (logits) gemm", m, d, 51865, cpu::linear_gemm);
    }
    for m in [16, 32, 64, 128] {
        bench_linear_i8("linear (q)", m, d, d, cpu::int8::Int8Path::best());
        bench_linear_i8("linear (fc1)", m, d, ff, cpu::int8::Int8Path::best());
        bench_linear_i8("linear (fc2)", m, ff, d, cpu::int8::Int8Path::best());
        bench_linear_i8("linear (logits)", m, d, 51865, cpu::int8::Int8Path::best());
    }
    for m in [10, 20, 40] {
        bench_linear_w8("linear (q)", m, d, d);
        bench_linear_w8("linear (fc1)", m, d, ff);
        bench_linear_w8("linear (fc2)", m, ff, d);
        bench_linear_split("linear (q)", m, d, d);
        bench_linear_split("linear (fc1)", m, d, ff);
        bench_linear_split("linear (fc2)", m, ff, d);
        bench_linear_f16("linear (q) gemv f16", m, d, d);
        bench_linear_f16("linear (fc1) gemv f16", m, d, ff);
        bench_linear_f16("linear (fc2) gemv f16", m, ff, d);
        bench_linear_w8("linear (logits)", m, d, 51865);
        bench_linear_split("linear (logits)", m, d, 51865);
        bench_linear_f16("linear (logits) gemv f16", m, d, 51865);
    }
    for rows in [1, 5] {
        bench_cross_step(rows, None, false);
        for path in cpu::F16KvPath::ALL {
            if path.available() && path.takes(64) {
                bench_cross_step(rows, Some(path), false);
                bench_cross_step(rows, Some(path), true);
            }
        }
    }
    for filled in [100, 250] {
        bench_self_step(filled, false, false);
        bench_self_step(filled, true, false);
        bench_self_step(filled, true, true);
    }
    let cases = [
        (1, 448, Some(447)),
        (5, 448, Some(443)),
        (1, 1500, None),
        (5, 1500, None),
        (16, 64, Some(48)),
        // A window's prompt over its cross K/V.
        (200, 1500, None),
    ];
    for (tq, tk, causal) in cases {
        bench_attention(
            "attention direct",
            tq,
            tk,
            causal,
            false,
            cpu::attention_direct,
        );
        bench_attention(
            "attention blocked",
            tq,
            tk,
            causal,
            false,
            cpu::attention_blocked,
        );
    }
}
