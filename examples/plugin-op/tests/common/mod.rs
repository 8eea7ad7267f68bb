//! Shared by the example's tests: the graph, deterministic weights and inputs, and an
//! f64 reference computed independently of the plugin's kernels.
#![allow(dead_code)]

use amanuensis_plugin_example::SwishPlugin;
use amanuensis_runtime::format::GraphDef;
use amanuensis_runtime::{Graph, ModelFile, Registry, Session, Tensor, WeightStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The example graph's path.
pub fn graph_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/swish-mlp.graph")
}

/// The parsed example graph file.
pub fn model_file() -> ModelFile {
    ModelFile::load(&graph_path()).expect("example graph parses")
}

/// Standard operators plus the example plugin, linked in.
pub fn registry() -> Registry {
    let mut reg = amanuensis_operators::standard_registry();
    reg.add_plugin(&SwishPlugin).expect("plugin registers");
    reg
}

/// Uniform values in [-scale, scale) from a fixed seed (splitmix64).
pub fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The weights the graph declares, filled deterministically (scaled like a trained layer:
/// ~1/sqrt(fan-in), so activations stay of order one and swish sees both signs).
pub fn weights(file: &ModelFile) -> WeightStore {
    WeightStore::from_tensors(file.weights.iter().enumerate().map(|(i, w)| {
        let n: usize = w.shape.iter().product();
        let fan_in = *w.shape.last().unwrap() as f32;
        let scale = if w.shape.len() == 2 {
            2.0 / fan_in.sqrt()
        } else {
            0.5
        };
        let t = Tensor::from_f32(&w.shape, values(100 + i as u64, n, scale)).unwrap();
        (w.name.clone(), t)
    }))
}

/// The graph input `x` [40, 64].
pub fn input() -> Tensor {
    Tensor::from_f32(&[40, 64], values(7, 40 * 64, 3.0)).unwrap()
}

/// Runs graph `def` on the CPU with `registry`.
pub fn run_cpu(def: &GraphDef, file: &ModelFile, registry: &Registry, x: &Tensor) -> Vec<f32> {
    let graph = Graph::build(def, &file.weights, registry).expect("graph validates");
    run_graph(graph, file, x)
}

/// Runs a validated graph (possibly rewritten in place) on the CPU.
pub fn run_graph(graph: Graph, file: &ModelFile, x: &Tensor) -> Vec<f32> {
    let mut session = Session::new(Arc::new(graph), &weights(file)).expect("weights bind");
    session.reset_states(&Default::default()).unwrap();
    let out = session.run(&[x]).expect("graph runs");
    out[0].f32s().unwrap().to_vec()
}

/// f64 `x · wᵀ + b` for row-major `x [m, k]`, `w [n, k]`; also returns, per output, the
/// sum of |terms| (the scale a rounding-error bound is relative to).
pub fn linear_f64(x: &[f64], k: usize, w: &[f32], b: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let n = b.len();
    let m = x.len() / k;
    let (mut y, mut scale) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut mag) = (b[j] as f64, (b[j] as f64).abs());
            for t in 0..k {
                let p = x[i * k + t] * w[j * k + t] as f64;
                acc += p;
                mag += p.abs();
            }
            y[i * n + j] = acc;
            scale[i * n + j] = mag;
        }
    }
    (y, scale)
}

/// f64 swish with the platform's exp (independent of the plugin's kernels).
pub fn swish_f64(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// The example MLP in f64: returns `y` and each output's error scale (the |terms| of the
/// second layer, with the first layer's scale carried through swish's slope ≤ 1.1).
pub fn mlp_f64(file: &ModelFile, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let store = weights(file);
    let w = |name: &str| store.get(name).unwrap().f32s().unwrap().to_vec();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (h, h_scale) = linear_f64(&x64, 64, &w("fc1.weight"), &w("fc1.bias"));
    let a: Vec<f64> = h.iter().map(|&v| swish_f64(v)).collect();
    let (y, mut y_scale) = linear_f64(&a, 96, &w("fc2.weight"), &w("fc2.bias"));
    // Add the first layer's error scale, propagated through |w2|.
    let w2 = w("fc2.weight");
    for i in 0..40 {
        for j in 0..32 {
            let carried: f64 = (0..96)
                .map(|t| 1.1 * h_scale[i * 96 + t] * (w2[j * 96 + t] as f64).abs())
                .sum();
            y_scale[i * 32 + j] += carried;
        }
    }
    (y, y_scale)
}

/// Asserts `|got - want| <= rel * scale` element-wise; returns the largest ratio seen.
pub fn assert_close(got: &[f32], want: &[f64], scale: &[f64], rel: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: f64 = 0.0;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (g as f64 - w).abs();
        let bound = rel * s.max(1e-30);
        assert!(
            err <= bound,
            "{what}: element {i}: got {g}, reference {w}, error {err:.3e} > bound {bound:.3e}"
        );
        worst = worst.max(err / s.max(1e-30));
    }
    worst
}
