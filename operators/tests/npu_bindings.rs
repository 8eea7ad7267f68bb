//! The NPU layer of the standard operators: bindings against the catalogue references
//! (bit for bit) and against the CPU ops (within stated bounds), the fused ops against the
//! unfused chains (bit for bit on each device), the fusion patterns on small graphs and on
//! the Whisper encoder, `check` rejections, and the cost models' formulas.

use amanuensis_kernels::npu as cat;
use amanuensis_operators::npu::{matmul_work, Epilogue};
use amanuensis_operators::standard_registry;
use amanuensis_runtime::device::{node_types, with_view, Support};
use amanuensis_runtime::format::{Dim, GraphDef, ValueDecl};
use amanuensis_runtime::fusion::{ChainMatch, FusedNode, FusionPattern};
use amanuensis_runtime::ir::{ValueInfo, ValueSource};
use amanuensis_runtime::npu::{kernel_of, npu_support, NpuCaps, NpuKernel, NpuParams};
use amanuensis_runtime::{
    Attrs, DType, EvalContext, Graph, ModelFile, Operator, Registry, Session, Tensor, ValueType,
    WeightStore,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------
// Helpers

/// Seeded inputs (the `fastrand` generator), so a failing case can be replayed.
struct Rng(fastrand::Rng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(fastrand::Rng::with_seed(seed))
    }

    /// Uniform in [-scale, scale).
    fn f32(&mut self, scale: f32) -> f32 {
        (self.0.f32() * 2.0 - 1.0) * scale
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|_| self.f32(scale)).collect()).unwrap()
    }
}

fn attrs(v: serde_json::Value) -> Attrs {
    Attrs(
        v.as_object()
            .expect("attrs are an object")
            .clone()
            .into_iter()
            .collect(),
    )
}

fn build(reg: &Registry, op: &str, a: serde_json::Value) -> Box<dyn Operator> {
    reg.get(op)
        .unwrap_or_else(|| panic!("op {op} registered"))
        .build(&attrs(a))
        .unwrap()
}

fn types(ts: &[&Tensor]) -> Vec<ValueType> {
    ts.iter().map(|t| ValueType::f32(t.shape())).collect()
}

/// CPU evaluation, after checking the output types against `infer`.
fn cpu(op: &dyn Operator, ins: &[&Tensor]) -> Vec<Tensor> {
    let mut states: [Tensor; 0] = [];
    let mut ctx = EvalContext::new(&mut states);
    let out = op.eval(&mut ctx, ins).unwrap();
    expect_inferred(op, ins, &out);
    out
}

/// The NPU kernel an op offers (through an `NpuBinding` for target "npu").
fn npu_kernel(op: &dyn Operator) -> &dyn NpuKernel {
    kernel_of(op)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"))
        .unwrap_or_else(|| panic!("{op:?} offers no NPU kernel"))
}

/// NPU evaluation through the op's kernel, after `check`, with the inferred shapes.
fn npu(op: &dyn Operator, ins: &[&Tensor]) -> Vec<Tensor> {
    let k = npu_kernel(op);
    // The binding answers the NPU family only.
    assert!(
        op.kernel("gpu").is_none(),
        "{op:?} offers a kernel to 'gpu'"
    );
    k.check(&types(ins))
        .unwrap_or_else(|r| panic!("{} rejects: {r}", k.name()));
    let out = k.eval(ins).unwrap();
    expect_inferred(op, ins, &out);
    out
}

fn expect_inferred(op: &dyn Operator, ins: &[&Tensor], out: &[Tensor]) {
    let want = op.infer(&types(ins), &[]).unwrap();
    assert_eq!(want.len(), out.len(), "output count");
    for (w, t) in want.iter().zip(out) {
        let dims: Vec<Dim> = t.shape().iter().map(|&d| Dim::Known(d)).collect();
        assert_eq!(w.shape, dims, "output shape differs from infer");
        assert_eq!(w.dtype, t.dtype());
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.f32s().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn abs(t: &Tensor) -> Tensor {
    Tensor::from_f32(
        t.shape(),
        t.f32s().unwrap().iter().map(|v| v.abs()).collect(),
    )
    .unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn caps() -> NpuCaps {
    NpuParams::phoenix().caps()
}

/// Per-element bound of the bf16-operand GEMM against the f32 CPU GEMM: both operands
/// rounded to bf16 (unit roundoff 2⁻⁸) move each product by at most 2⁻⁷ + 2⁻¹⁶
/// relatively; both f32 accumulations add γ_K-sized terms (< 2⁻¹⁷ here), so
/// `|npu − cpu| <= 8e-3 · Σ_k |a_k·w_k| + 2⁻²²·|y|`.
fn gemm_bound(s: f32, y: f32) -> f32 {
    8e-3 * s + 2f32.powi(-22) * y.abs()
}

const MATMUL_REL_TO_SCALE: f32 = 1e-2;

// ---------------------------------------------------------------------------------------
// Bindings against the catalogue and the CPU

#[test]
fn linear_npu_is_matmul_bias_bit_exact_and_near_cpu() {
    let reg = standard_registry();
    let op = build(&reg, "linear", json!({}));
    let mut rng = Rng::new(1);
    for (xs, n, bias) in [
        (vec![2, 37, 70], 45, true),
        (vec![5, 70], 33, false),
        (vec![1, 1, 130], 70, true),
    ] {
        let k = *xs.last().unwrap();
        let m: usize = xs[..xs.len() - 1].iter().product();
        let x = rng.tensor(&xs, 1.0);
        let w = rng.tensor(&[n, k], 0.5);
        let b = rng.tensor(&[n], 0.5);
        let ins: Vec<&Tensor> = if bias { vec![&x, &w, &b] } else { vec![&x, &w] };
        let got = npu(op.as_ref(), &ins).remove(0);

        let mut want = vec![0f32; m * n];
        cat::matmul_bias(
            x.f32s().unwrap(),
            m,
            k,
            w.f32s().unwrap(),
            n,
            bias.then(|| b.f32s().unwrap()),
            &mut want,
        )
        .unwrap();
        assert_eq!(
            bits(&got),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{xs:?} bias {bias}"
        );

        let c = cpu(op.as_ref(), &ins).remove(0);
        let s = cpu(op.as_ref(), &[&abs(&x), &abs(&w)]).remove(0);
        let (g, c, s) = (got.f32s().unwrap(), c.f32s().unwrap(), s.f32s().unwrap());
        for i in 0..g.len() {
            assert!(
                (g[i] - c[i]).abs() <= gemm_bound(s[i], c[i]),
                "{xs:?} [{i}]: npu {} cpu {} sum|aw| {}",
                g[i],
                c[i],
                s[i]
            );
        }
        let worst = g.iter().zip(c).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let ratio = (0..g.len()).fold(0f32, |m, i| {
            m.max((g[i] - c[i]).abs() / gemm_bound(s[i], c[i]))
        });
        eprintln!(
            "linear {xs:?}: worst |npu − cpu| {worst:.3e} = {:.2e} of scale, {ratio:.3} of bound",
            worst / max_abs(c)
        );
        assert!(
            worst <= MATMUL_REL_TO_SCALE * max_abs(c),
            "{xs:?}: worst {worst} vs scale {}",
            max_abs(c)
        );
    }
}

#[test]
fn conv1d_npu_is_catalogue_conv_bit_exact_and_near_cpu() {
    let reg = standard_registry();
    let mut rng = Rng::new(2);
    for (c_in, t, c_out, kern, stride, pad) in [
        (6, 50, 9, 3, 2, 1),
        (4, 33, 70, 3, 1, 1),
        (3, 9, 5, 4, 1, 0),
    ] {
        let op = build(&reg, "conv1d", json!({"stride": stride, "padding": pad}));
        let x = rng.tensor(&[c_in, t], 1.0);
        let w = rng.tensor(&[c_out, c_in, kern], 0.5);
        let b = rng.tensor(&[c_out], 0.5);
        let got = npu(op.as_ref(), &[&x, &w, &b]).remove(0);
        let t_out = got.shape()[1];
        let mut want = vec![0f32; c_out * t_out];
        cat::conv1d(
            x.f32s().unwrap(),
            c_in,
            t,
            w.f32s().unwrap(),
            c_out,
            kern,
            Some(b.f32s().unwrap()),
            stride,
            pad,
            &mut want,
        )
        .unwrap();
        assert_eq!(
            bits(&got),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );

        let c = cpu(op.as_ref(), &[&x, &w, &b]).remove(0);
        let zero = Tensor::from_f32(&[c_out], vec![0.0; c_out]).unwrap();
        let s = cpu(op.as_ref(), &[&abs(&x), &abs(&w), &zero]).remove(0);
        let (g, c, s) = (got.f32s().unwrap(), c.f32s().unwrap(), s.f32s().unwrap());
        for i in 0..g.len() {
            assert!(
                (g[i] - c[i]).abs() <= gemm_bound(s[i], c[i]),
                "[{i}]: npu {} cpu {} sum|wx| {}",
                g[i],
                c[i],
                s[i]
            );
        }
        let worst = g.iter().zip(c).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= MATMUL_REL_TO_SCALE * max_abs(c));
    }
}

#[test]
fn layer_norm_npu_is_catalogue_bit_exact_and_near_cpu() {
    let reg = standard_registry();
    let op = build(&reg, "layer_norm", json!({"eps": 1e-5}));
    let mut rng = Rng::new(3);
    for shape in [vec![7, 64], vec![2, 3, 512], vec![1, 1000]] {
        let d = *shape.last().unwrap();
        let x = rng.tensor(&shape, 3.0);
        let g = rng.tensor(&[d], 1.5);
        let b = rng.tensor(&[d], 0.5);
        let got = npu(op.as_ref(), &[&x, &g, &b]).remove(0);
        let mut want = vec![0f32; x.numel()];
        cat::layer_norm(
            x.f32s().unwrap(),
            x.numel() / d,
            d,
            g.f32s().unwrap(),
            b.f32s().unwrap(),
            1e-5,
            &mut want,
        )
        .unwrap();
        assert_eq!(
            bits(&got),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // Both are f32 with different summation orders: the normalised value moves by a few
        // d·2⁻²⁴ relatively, so |npu − cpu| <= 1e-5 · (|gamma|·4 + |y|) (x̂ is within ±4 here).
        let c = cpu(op.as_ref(), &[&x, &g, &b]).remove(0);
        let (gv, cv, gam) = (got.f32s().unwrap(), c.f32s().unwrap(), g.f32s().unwrap());
        for i in 0..gv.len() {
            let tol = 1e-5 * (gam[i % d].abs() * 4.0 + cv[i].abs());
            assert!(
                (gv[i] - cv[i]).abs() <= tol,
                "{shape:?}[{i}]: npu {} cpu {}",
                gv[i],
                cv[i]
            );
        }
    }
}

#[test]
fn gelu_npu_is_gelu_exact_and_near_cpu() {
    let reg = standard_registry();
    let op = build(&reg, "gelu", json!({}));
    let mut rng = Rng::new(4);
    let mut x = rng.tensor(&[3, 41, 17], 6.0);
    x.f32s_mut().unwrap()[..4].copy_from_slice(&[0.0, -0.0, 1e-30, -12.0]);
    let got = npu(op.as_ref(), &[&x]).remove(0);
    let want: Vec<u32> = x
        .f32s()
        .unwrap()
        .iter()
        .map(|&v| cat::gelu_exact(v).to_bits())
        .collect();
    assert_eq!(bits(&got), want);
    // Both evaluate in f64 and round once; the CPU's documented error is below 1.5e-7
    // relatively. The reference forms 1 + erf(x/√2) in f64, which cancels for x < −5 (an
    // absolute error up to 2⁻⁵³ in that sum, so 0.5·|x|·2⁻⁵³ in the output; −12 gives −0
    // instead of −2.1e-32): |npu − cpu| <= 3e-7·|cpu| + 1e-16·|x| + 1e-37.
    let c = cpu(op.as_ref(), &[&x]).remove(0);
    for ((a, b), xv) in got
        .f32s()
        .unwrap()
        .iter()
        .zip(c.f32s().unwrap())
        .zip(x.f32s().unwrap())
    {
        assert!(
            (a - b).abs() <= 3e-7 * b.abs() + 1e-16 * xv.abs() + 1e-37,
            "x {xv}: npu {a} cpu {b}"
        );
    }
}

#[test]
fn attention_npu_is_flash_reference_bit_exact_and_near_cpu() {
    let reg = standard_registry();
    let mut rng = Rng::new(5);
    // (q shape, k shape, heads, causal): self-attention, causal with tk > tq, and k/v
    // shared by a batch of queries (cross-attention over the encoder output).
    let cases = [
        (vec![70, 64], vec![70, 64], 2, false),
        (vec![2, 20, 48], vec![2, 150, 48], 3, true),
        (vec![3, 5, 32], vec![130, 32], 1, false),
        (vec![33, 32], vec![33, 32], 2, true),
    ];
    for (qs, ks, heads, causal) in cases {
        let op = build(&reg, "attention", json!({"heads": heads, "causal": causal}));
        let q = rng.tensor(&qs, 1.0);
        let k = rng.tensor(&ks, 1.0);
        let v = rng.tensor(&ks, 1.0);
        let got = npu(op.as_ref(), &[&q, &k, &v]).remove(0);

        let d = *qs.last().unwrap();
        let (tq, tk) = (qs[qs.len() - 2], ks[ks.len() - 2]);
        let batch = q.numel() / (tq * d);
        let mut want = vec![0f32; q.numel()];
        for b in 0..batch {
            let ko = if ks.len() == 2 { 0 } else { b * tk * d };
            cat::attention_flash(
                &amanuensis_kernels::cpu::AttentionShape::new(tq, tk, heads, d / heads)
                    .causal(causal.then_some(tk - tq)),
                &q.f32s().unwrap()[b * tq * d..(b + 1) * tq * d],
                &k.f32s().unwrap()[ko..ko + tk * d],
                &v.f32s().unwrap()[ko..ko + tk * d],
                &mut want[b * tq * d..(b + 1) * tq * d],
            )
            .unwrap();
        }
        assert_eq!(
            bits(&got),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{qs:?} {ks:?}"
        );

        // bf16 q, k move the scores and bf16 P, v move each term by ~2⁻⁸ relatively; the
        // output is a convex combination of v rows. Stated tolerance 2e-2·max|v| (the
        // catalogue's tests hold the element-wise derived bound; here the worst seen is
        // under a tenth of this tolerance).
        let c = cpu(op.as_ref(), &[&q, &k, &v]).remove(0);
        let tol = 2e-2 * max_abs(v.f32s().unwrap());
        let worst = got
            .f32s()
            .unwrap()
            .iter()
            .zip(c.f32s().unwrap())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "attention {qs:?} {ks:?}: worst |npu − cpu| {worst:.3e} = {:.3} of tolerance",
            worst / tol
        );
        for (a, b) in got.f32s().unwrap().iter().zip(c.f32s().unwrap()) {
            assert!((a - b).abs() <= tol, "{qs:?}: npu {a} cpu {b}");
        }
    }
}

#[test]
fn add_npu_is_residual_add_and_equals_cpu_bits() {
    let reg = standard_registry();
    let op = build(&reg, "add", json!({}));
    let mut rng = Rng::new(6);
    // Same shape (residuals, encoder positions) and a [T, D] block over beams (decoder
    // positions added to every beam's tokens).
    for (sa, sb) in [(vec![30, 16], vec![30, 16]), (vec![3, 5, 8], vec![5, 8])] {
        let a = rng.tensor(&sa, 2.0);
        let b = rng.tensor(&sb, 2.0);
        let got = npu(op.as_ref(), &[&a, &b]).remove(0);
        let mut want = vec![0f32; a.numel()];
        let bn = b.numel();
        for (o, x) in want.chunks_mut(bn).zip(a.f32s().unwrap().chunks(bn)) {
            cat::residual_add(x, b.f32s().unwrap(), o).unwrap();
        }
        assert_eq!(
            bits(&got),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // One IEEE add per element on both sides.
        assert_eq!(bits(&got), bits(&cpu(op.as_ref(), &[&a, &b])[0]));
    }
}

#[test]
fn transpose_npu_equals_cpu_exactly() {
    let reg = standard_registry();
    let op = build(&reg, "transpose", json!({}));
    let x = Rng::new(7).tensor(&[13, 70], 1.0);
    let got = npu(op.as_ref(), &[&x]).remove(0);
    assert_eq!(got.shape(), &[70, 13]);
    assert_eq!(bits(&got), bits(&cpu(op.as_ref(), &[&x])[0]));
    assert_eq!(
        got.f32s().unwrap()[5 * 13 + 2],
        x.f32s().unwrap()[2 * 70 + 5]
    );
}

// ---------------------------------------------------------------------------------------
// Fused ops against the unfused chains

#[test]
fn linear_gelu_equals_linear_then_gelu_on_each_device() {
    let reg = standard_registry();
    let (lin, gelu, fused) = (
        build(&reg, "linear", json!({})),
        build(&reg, "gelu", json!({})),
        build(&reg, "linear_gelu", json!({})),
    );
    assert_eq!(npu_kernel(fused.as_ref()).name(), "matmul_bias_gelu");
    let mut rng = Rng::new(8);
    for bias in [true, false] {
        let x = rng.tensor(&[2, 40, 96], 1.0);
        let w = rng.tensor(&[80, 96], 0.3);
        let b = rng.tensor(&[80], 0.3);
        let ins: Vec<&Tensor> = if bias { vec![&x, &w, &b] } else { vec![&x, &w] };
        let cpu_chain = cpu(gelu.as_ref(), &[&cpu(lin.as_ref(), &ins)[0]]).remove(0);
        assert_eq!(
            bits(&cpu(fused.as_ref(), &ins)[0]),
            bits(&cpu_chain),
            "cpu, bias {bias}"
        );
        let npu_chain = npu(gelu.as_ref(), &[&npu(lin.as_ref(), &ins)[0]]).remove(0);
        assert_eq!(
            bits(&npu(fused.as_ref(), &ins)[0]),
            bits(&npu_chain),
            "npu, bias {bias}"
        );
    }
}

#[test]
fn linear_residual_equals_linear_then_add_in_both_orders() {
    let reg = standard_registry();
    let (lin, add) = (
        build(&reg, "linear", json!({})),
        build(&reg, "add", json!({})),
    );
    let mut rng = Rng::new(9);
    for bias in [true, false] {
        let fused = build(&reg, "linear_residual", json!({"bias": bias}));
        assert_eq!(npu_kernel(fused.as_ref()).name(), "matmul_bias_residual");
        let x = rng.tensor(&[3, 25, 64], 1.0);
        let w = rng.tensor(&[48, 64], 0.3);
        let b = rng.tensor(&[48], 0.3);
        let r = rng.tensor(&[3, 25, 48], 2.0);
        let lin_ins: Vec<&Tensor> = if bias { vec![&x, &w, &b] } else { vec![&x, &w] };
        let mut ins = lin_ins.clone();
        ins.push(&r);

        let fused_cpu = bits(&cpu(fused.as_ref(), &ins)[0]);
        let y = cpu(lin.as_ref(), &lin_ins).remove(0);
        assert_eq!(
            fused_cpu,
            bits(&cpu(add.as_ref(), &[&y, &r])[0]),
            "cpu y + r, bias {bias}"
        );
        assert_eq!(
            fused_cpu,
            bits(&cpu(add.as_ref(), &[&r, &y])[0]),
            "cpu r + y, bias {bias}"
        );

        let fused_npu = bits(&npu(fused.as_ref(), &ins)[0]);
        let y = npu(lin.as_ref(), &lin_ins).remove(0);
        assert_eq!(
            fused_npu,
            bits(&npu(add.as_ref(), &[&y, &r])[0]),
            "npu y + r, bias {bias}"
        );
        assert_eq!(
            fused_npu,
            bits(&npu(add.as_ref(), &[&r, &y])[0]),
            "npu r + y, bias {bias}"
        );
    }
}

#[test]
fn conv1d_gelu_equals_conv1d_then_gelu_on_each_device() {
    let reg = standard_registry();
    let a = json!({"stride": 2, "padding": 1});
    let (conv, gelu, fused) = (
        build(&reg, "conv1d", a.clone()),
        build(&reg, "gelu", json!({})),
        build(&reg, "conv1d_gelu", a),
    );
    assert_eq!(npu_kernel(fused.as_ref()).name(), "conv1d_gelu");
    let mut rng = Rng::new(10);
    let x = rng.tensor(&[8, 61], 1.0);
    let w = rng.tensor(&[24, 8, 3], 0.4);
    let b = rng.tensor(&[24], 0.4);
    let ins = [&x, &w, &b];
    let cpu_chain = cpu(gelu.as_ref(), &[&cpu(conv.as_ref(), &ins)[0]]).remove(0);
    assert_eq!(bits(&cpu(fused.as_ref(), &ins)[0]), bits(&cpu_chain));
    let npu_chain = npu(gelu.as_ref(), &[&npu(conv.as_ref(), &ins)[0]]).remove(0);
    assert_eq!(bits(&npu(fused.as_ref(), &ins)[0]), bits(&npu_chain));
}

// ---------------------------------------------------------------------------------------
// Fusion patterns

fn pattern<'a>(reg: &'a Registry, name: &str) -> &'a dyn FusionPattern {
    reg.patterns()
        .iter()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("pattern {name}"))
        .as_ref()
}

/// Id of the node named `name`.
fn node(g: &Graph, name: &str) -> usize {
    g.nodes
        .iter()
        .position(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// Id of the value named `name`.
fn value(g: &Graph, name: &str) -> usize {
    g.values
        .iter()
        .position(|v| v.name == name)
        .unwrap_or_else(|| panic!("no value {name}"))
}

/// The pattern on the chain `a → b` of `g`, where `a`'s output feeds input `port` of `b`.
fn fuse_pair(
    p: &dyn FusionPattern,
    g: &Graph,
    a: usize,
    b: usize,
    port: usize,
) -> Option<FusedNode> {
    p.fuse(&ChainMatch {
        graph: g,
        nodes: &[a, b],
        ports: &[port],
    })
}

/// Replaces each chain (producer, consumer) by its fused node in place, as the fusion
/// pass does: the fused node takes over the consumer's outputs, the chain keeps its ids.
fn rewrite(reg: &Registry, g: &mut Graph, fused: &[(usize, usize, FusedNode)]) {
    for (a, b, f) in fused {
        let attrs = Attrs(f.attrs.clone());
        let op = reg.get(&f.op).unwrap().build(&attrs).unwrap();
        let name = format!("{}+{}", g.nodes[*a].name, g.nodes[*b].name);
        g.replace_chain(&[*a, *b], name, f.op.clone(), attrs, op, f.inputs.clone())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Runs a graph node by node with each node's NPU kernel.
fn run_npu(g: &Graph, inputs: &[&Tensor]) -> Vec<Tensor> {
    let mut vals: Vec<Option<Tensor>> = vec![None; g.values.len()];
    for (i, &v) in g.inputs.iter().enumerate() {
        vals[v] = Some(inputs[i].clone());
    }
    for &ni in &g.order {
        let node = &g.nodes[ni];
        let outs = {
            let ins: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&v| vals[v].as_ref().unwrap())
                .collect();
            let k = npu_kernel(node.op.as_ref());
            let (ity, _) = node_types(g, node);
            k.check(&ity)
                .unwrap_or_else(|r| panic!("{}: {r}", node.name));
            k.eval(&ins).unwrap()
        };
        for (o, &v) in outs.into_iter().zip(&node.outputs) {
            vals[v] = Some(o);
        }
    }
    g.outputs
        .iter()
        .map(|&v| vals[v].clone().unwrap())
        .collect()
}

fn run_cpu(g: Graph, inputs: &[&Tensor]) -> Vec<Tensor> {
    let mut s = Session::new(Arc::new(g), &WeightStore::default()).unwrap();
    s.reset_states(&HashMap::new()).unwrap();
    s.run(inputs).unwrap()
}

fn small_graph() -> GraphDef {
    let v = |name: &str, shape: &[usize]| json!({"name": name, "dtype": "f32", "shape": shape});
    serde_json::from_value(json!({
        "name": "fusable",
        "inputs": [
            v("x", &[20, 16]), v("w1", &[32, 16]), v("b1", &[32]), v("w2", &[16, 32]),
            v("w3", &[16, 16]), v("b3", &[16]), v("mel", &[4, 30]), v("cw", &[8, 4, 3]), v("cb", &[8])
        ],
        "outputs": [v("res2", &[20, 16]), v("cg", &[8, 15])],
        "nodes": [
            {"name": "fc1", "op": "linear", "inputs": ["x", "w1", "b1"], "outputs": ["fc1"]},
            {"name": "g1", "op": "gelu", "inputs": ["fc1"], "outputs": ["g1"]},
            {"name": "fc2", "op": "linear", "inputs": ["g1", "w2"], "outputs": ["fc2"]},
            {"name": "res1", "op": "add", "inputs": ["fc2", "x"], "outputs": ["res1"]},
            {"name": "fc3", "op": "linear", "inputs": ["res1", "w3", "b3"], "outputs": ["fc3"]},
            {"name": "res2", "op": "add", "inputs": ["res1", "fc3"], "outputs": ["res2"]},
            {"name": "c1", "op": "conv1d", "inputs": ["mel", "cw", "cb"], "outputs": ["c1"], "attrs": {"stride": 2, "padding": 1}},
            {"name": "cg", "op": "gelu", "inputs": ["c1"], "outputs": ["cg"]}
        ]
    }))
    .unwrap()
}

#[test]
fn patterns_fuse_small_graph_and_keep_its_bits() {
    let reg = standard_registry();
    let def = small_graph();
    let g = Graph::build(&def, &[], &reg).unwrap();
    let bmap = |pairs: &[(&str, serde_json::Value)]| -> BTreeMap<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let ids = |v: &[&str]| -> Vec<usize> { v.iter().map(|s| value(&g, s)).collect() };
    let cases = [
        (
            "linear_gelu",
            "fc1",
            "g1",
            0,
            FusedNode {
                op: "linear_gelu".into(),
                attrs: BTreeMap::new(),
                inputs: ids(&["x", "w1", "b1"]),
            },
        ),
        (
            "linear_residual",
            "fc2",
            "res1",
            0,
            FusedNode {
                op: "linear_residual".into(),
                attrs: bmap(&[("bias", json!(false))]),
                inputs: ids(&["g1", "w2", "x"]),
            },
        ),
        (
            "linear_residual",
            "fc3",
            "res2",
            1,
            FusedNode {
                op: "linear_residual".into(),
                attrs: bmap(&[("bias", json!(true))]),
                inputs: ids(&["res1", "w3", "b3", "res1"]),
            },
        ),
        (
            "conv1d_gelu",
            "c1",
            "cg",
            0,
            FusedNode {
                op: "conv1d_gelu".into(),
                attrs: bmap(&[("stride", json!(2)), ("padding", json!(1))]),
                inputs: ids(&["mel", "cw", "cb"]),
            },
        ),
    ];
    let mut fused = Vec::new();
    for (p, a, b, port, want) in cases {
        let (ai, bi) = (node(&g, a), node(&g, b));
        let got = fuse_pair(pattern(&reg, p), &g, ai, bi, port)
            .unwrap_or_else(|| panic!("{p} refused {a}→{b}"));
        assert_eq!(got, want, "{p} on {a}→{b}");
        fused.push((ai, bi, got));
    }
    let plain = g;
    let mut fusedg = Graph::build(&def, &[], &reg).unwrap();
    rewrite(&reg, &mut fusedg, &fused);
    // Four live nodes remain; the eight loaded ones keep their ids, the chains replaced.
    assert_eq!(fusedg.order.len(), 4);
    assert_eq!(fusedg.nodes.len(), 8 + 4);
    for (a, b, _) in &fused {
        let by = fusedg.nodes[*a].replaced_by;
        assert!(by.is_some() && fusedg.nodes[*b].replaced_by == by);
        assert!(fusedg.order.contains(&by.unwrap()));
    }

    let mut rng = Rng::new(11);
    let ins: Vec<Tensor> = def
        .inputs
        .iter()
        .map(|d| {
            let shape: Vec<usize> = d.shape.iter().map(|x| x.known().unwrap()).collect();
            rng.tensor(&shape, 0.5)
        })
        .collect();
    let refs: Vec<&Tensor> = ins.iter().collect();
    let (np, nf) = (run_npu(&plain, &refs), run_npu(&fusedg, &refs));
    let (cp, cf) = (run_cpu(plain, &refs), run_cpu(fusedg, &refs));
    for i in 0..2 {
        assert_eq!(
            bits(&cf[i]),
            bits(&cp[i]),
            "cpu output {i}: fused vs unfused"
        );
        assert_eq!(
            bits(&nf[i]),
            bits(&np[i]),
            "npu output {i}: fused vs unfused"
        );
    }
}

#[test]
fn patterns_refuse_what_they_cannot_express() {
    let reg = standard_registry();
    let fresh = || Graph::build(&small_graph(), &[], &reg).unwrap();
    let (lg, lr, cg) = (
        pattern(&reg, "linear_gelu"),
        pattern(&reg, "linear_residual"),
        pattern(&reg, "conv1d_gelu"),
    );
    // Each case edits one IR node of a fresh graph (what a graph file cannot express, or
    // the loader would reject) and checks that the unedited chain fuses.
    // y + y: no residual operand.
    let mut g = fresh();
    let (fc2, res1) = (node(&g, "fc2"), node(&g, "res1"));
    assert!(fuse_pair(lr, &g, fc2, res1, 0).is_some());
    let y = g.nodes[fc2].outputs[0];
    g.nodes[res1].inputs = vec![y, y];
    assert_eq!(fuse_pair(lr, &g, fc2, res1, 0), None);
    // An attribute the fused op does not know.
    let mut g = fresh();
    let (c1, cgn) = (node(&g, "c1"), node(&g, "cg"));
    assert!(fuse_pair(cg, &g, c1, cgn, 0).is_some());
    g.nodes[c1].attrs.0.insert("dilation".into(), json!(2));
    assert_eq!(fuse_pair(cg, &g, c1, cgn, 0), None);
    // A producer with a second output or state.
    let mut g = fresh();
    let extra = g.values.len();
    g.values.push(ValueInfo {
        name: "extra".into(),
        ty: ValueType::f32(&[1]),
        source: ValueSource::Node {
            node: fc2,
            output: 1,
        },
    });
    g.nodes[fc2].outputs.push(extra);
    assert_eq!(fuse_pair(lr, &g, fc2, res1, 0), None);
    let mut g = fresh();
    let (fc1, g1) = (node(&g, "fc1"), node(&g, "g1"));
    assert!(fuse_pair(lg, &g, fc1, g1, 0).is_some());
    g.states.push(ValueDecl {
        name: "s".into(),
        dtype: DType::F32,
        shape: vec![Dim::Known(1)],
    });
    g.nodes[fc1].states.push(g.states.len() - 1);
    assert_eq!(fuse_pair(lg, &g, fc1, g1, 0), None);
    // A chain of the wrong length.
    let g = fresh();
    assert_eq!(
        lg.fuse(&ChainMatch {
            graph: &g,
            nodes: &[fc1, g1, fc2],
            ports: &[0, 0]
        }),
        None
    );

    // A broadcast residual fuses syntactically, but the fused op refuses the types, so the
    // fusion pass keeps the chain.
    let f = fuse_pair(lr, &g, fc2, res1, 0).unwrap();
    let op = build(
        &reg,
        &f.op,
        serde_json::Value::Object(f.attrs.into_iter().collect()),
    );
    let ins = [
        ValueType::f32(&[20, 32]),
        ValueType::f32(&[16, 32]),
        ValueType::f32(&[16]),
    ];
    let err = op.infer(&ins, &[]).unwrap_err();
    assert!(err.0.contains("no broadcast"), "{err}");
    let reason = npu_kernel(op.as_ref()).check(&ins).unwrap_err();
    assert!(reason.contains("no broadcast"), "{reason}");
}

/// Two-op chains of `p` among the live nodes of `g`, as (producer, consumer, port) ids:
/// the producer's only output has exactly one use and is not a graph output.
fn chains(g: &Graph, p: &dyn FusionPattern) -> Vec<(usize, usize, usize)> {
    let mut uses: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for (i, n) in g.live_nodes() {
        for (port, &v) in n.inputs.iter().enumerate() {
            uses.entry(v).or_default().push((i, port));
        }
    }
    let chain = p.chain();
    let mut out = Vec::new();
    for (i, n) in g
        .live_nodes()
        .filter(|(_, n)| n.op_name == chain[0] && n.outputs.len() == 1)
    {
        let y = n.outputs[0];
        if g.outputs.contains(&y) {
            continue;
        }
        if let Some([(ci, port)]) = uses.get(&y).map(|v| v.as_slice()) {
            if g.nodes[*ci].op_name == chain[1] {
                out.push((i, *ci, *port));
            }
        }
    }
    out
}

fn whisper_graphs() -> ModelFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/whisper-base.graph");
    ModelFile::load(&path).unwrap()
}

#[test]
fn whisper_encoder_runs_on_npu_and_fuses() {
    let reg = standard_registry();
    let file = whisper_graphs();
    let def = file.graph("encoder").unwrap();
    let g = Graph::build(def, &file.weights, &reg).unwrap();
    let caps = caps();
    for n in &g.nodes {
        match with_view(&g, n, npu_support) {
            Support::Yes { .. } => {}
            Support::No { reason } => panic!(
                "encoder node {} ({}) not placed: {reason}",
                n.name, n.op_name
            ),
        }
        let (ins, _) = node_types(&g, n);
        let w = npu_kernel(n.op.as_ref()).work(&ins, &caps);
        assert!(
            w.footprint_double <= cat::TILE_DATA_MEMORY_BYTES,
            "{}: {w:?}",
            n.name
        );
        assert!(w.steps > 0, "{}", n.name);
    }

    // Every chain the patterns find becomes a node the NPU accepts, with the chain's type.
    let want = [
        ("linear_gelu", 6),
        ("linear_residual", 12),
        ("conv1d_gelu", 2),
    ];
    for (name, count) in want {
        let p = pattern(&reg, name);
        let found = chains(&g, p);
        assert_eq!(found.len(), count, "{name} chains in the encoder");
        for (a, b, port) in found {
            let (a, b) = (&g.nodes[a], &g.nodes[b]);
            let f = fuse_pair(p, &g, node(&g, &a.name), node(&g, &b.name), port)
                .unwrap_or_else(|| panic!("{name} refused {}→{}", a.name, b.name));
            let op = build(
                &reg,
                &f.op,
                serde_json::Value::Object(f.attrs.clone().into_iter().collect()),
            );
            let ty = |v: usize| g.values[v].ty.clone();
            let ins: Vec<ValueType> = f.inputs.iter().map(|&v| ty(v)).collect();
            assert_eq!(
                op.infer(&ins, &[]).unwrap(),
                vec![ty(b.outputs[0])],
                "{}",
                b.name
            );
            let k = npu_kernel(op.as_ref());
            k.check(&ins).unwrap_or_else(|r| panic!("{}: {r}", b.name));
            assert!(k.work(&ins, &caps).footprint_double <= cat::TILE_DATA_MEMORY_BYTES);
        }
    }
}

// ---------------------------------------------------------------------------------------
// check() rejections

fn reject(op: &dyn Operator, ins: &[ValueType], needle: &str) {
    let k = npu_kernel(op);
    let r = k
        .check(ins)
        .expect_err(&format!("{} should reject {ins:?}", k.name()));
    assert!(
        r.contains(needle),
        "{}: reason '{r}' lacks '{needle}'",
        k.name()
    );
    assert!(!r.contains('\n'), "one line: {r}");
}

#[test]
fn check_rejects_with_reasons() {
    let reg = standard_registry();
    let f = ValueType::f32;
    let sym = ValueType::new(DType::F32, vec![Dim::Sym("n".into()), Dim::Known(64)]);
    let i32x = ValueType::new(DType::I32, vec![Dim::Known(4), Dim::Known(64)]);

    let lin = build(&reg, "linear", json!({}));
    reject(lin.as_ref(), &[i32x.clone(), f(&[8, 64])], "f32");
    reject(lin.as_ref(), &[f(&[64]), f(&[8, 64])], "rank >= 2");
    reject(lin.as_ref(), &[sym.clone(), f(&[8, 64])], "symbolic");
    reject(lin.as_ref(), &[f(&[4, 64]), f(&[8, 32])], "differs");

    let ln = build(&reg, "layer_norm", json!({"eps": 1e-5}));
    let big = cat::LayerNormContract::MAX_DIM + 1;
    reject(
        ln.as_ref(),
        &[f(&[2, big]), f(&[big]), f(&[big])],
        "MAX_DIM",
    );
    reject(ln.as_ref(), &[f(&[2, 64]), f(&[32]), f(&[64])], "gamma");

    let att = |a| build(&reg, "attention", a);
    let t = [f(&[10, 128]), f(&[12, 128]), f(&[12, 128])];
    reject(
        att(json!({"heads": 2, "return_weights": true})).as_ref(),
        &t,
        "return_weights",
    );
    reject(att(json!({"heads": 1})).as_ref(), &t, "tile memory");
    reject(
        att(json!({"heads": 2, "causal": true})).as_ref(),
        &[f(&[12, 128]), f(&[10, 128]), f(&[10, 128])],
        "tk >= tq",
    );
    reject(
        att(json!({"heads": 2})).as_ref(),
        &[f(&[2, 10, 128]), f(&[3, 12, 128]), f(&[3, 12, 128])],
        "leading dims",
    );
    assert!(
        npu_kernel(att(json!({"heads": 2, "causal": true})).as_ref())
            .check(&t)
            .is_ok()
    );

    let add = build(&reg, "add", json!({}));
    reject(add.as_ref(), &[f(&[10, 64]), f(&[64])], "vector");
    reject(add.as_ref(), &[f(&[10, 64]), f(&[11, 64])], "neither");

    let tr = build(&reg, "transpose", json!({}));
    reject(tr.as_ref(), &[f(&[2, 3, 4])], "rank 2");

    let conv = build(&reg, "conv1d", json!({"padding": 1}));
    reject(
        conv.as_ref(),
        &[f(&[4, 30]), f(&[8, 5, 3]), f(&[8])],
        "channels",
    );
    reject(
        conv.as_ref(),
        &[f(&[4, 1]), f(&[8, 4, 5]), f(&[8])],
        "shorter",
    );

    let lr = build(&reg, "linear_residual", json!({"bias": true}));
    reject(
        lr.as_ref(),
        &[f(&[4, 64]), f(&[8, 64]), f(&[8])],
        "expected 4 inputs",
    );

    // The decoder's cross-attention with alignment weights and its symbolic token dims.
    let file = whisper_graphs();
    let g = Graph::build(file.graph("decoder_align").unwrap(), &file.weights, &reg).unwrap();
    let n = g
        .nodes
        .iter()
        .find(|n| n.name == "block0.cross_attn")
        .unwrap();
    match with_view(&g, n, npu_support) {
        Support::No { reason } => assert!(
            reason.contains("return_weights") || reason.contains("static"),
            "{reason}"
        ),
        Support::Yes { .. } => panic!("return_weights attention placed on the NPU"),
    }
    let (ins, _) = node_types(&g, n);
    let r = npu_kernel(n.op.as_ref()).check(&ins).unwrap_err();
    assert!(r.contains("return_weights"), "{r}");
}

// ---------------------------------------------------------------------------------------
// Cost models

fn cdiv(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

#[test]
fn matmul_work_follows_the_tile_formulas() {
    let caps = caps();
    let rows = caps.rows as u64;
    let lin = build(&standard_registry(), "linear", json!({}));
    // Encoder fc1, fc2, q; decoder logits; a single tile.
    for (m, k, n) in [
        (1500u64, 512u64, 2048u64),
        (1500, 2048, 512),
        (1500, 512, 512),
        (3, 512, 51865),
        (1, 64, 32),
    ] {
        let ins = [
            ValueType::f32(&[m as usize, k as usize]),
            ValueType::f32(&[n as usize, k as usize]),
            ValueType::f32(&[n as usize]),
        ];
        let w = npu_kernel(lin.as_ref()).work(&ins, &caps);
        assert_eq!(
            w,
            matmul_work(
                m as usize,
                k as usize,
                n as usize,
                true,
                Epilogue::None,
                &caps
            )
        );
        assert_eq!(w.macs, m * n * k);
        // K passes keep each pass's weight block within half the memory tile.
        let full = 32 * rows * k * 2 + 32 * rows * 4;
        let passes = cdiv(full, caps.memtile_bytes as u64 / 2).clamp(1, cdiv(k, 64).max(1));
        let kp = cdiv(cdiv(k, passes), 64) * 64;
        assert_eq!(w.steps, cdiv(m, 64) * cdiv(n, 32 * rows) * passes);
        assert_eq!(
            w.step.cycles,
            ((cdiv(kp, 64) * 64 * 64 * 32) as f64 / caps.bf16_macs_per_cycle).ceil() as u64
        );
        assert_eq!(w.step.out_bytes, 64 * 32 * rows * 4);
        let block = 32 * rows * kp * 2 + 32 * rows * 4;
        assert_eq!(w.resident_bytes, block);
        assert!(block <= caps.memtile_bytes as u64 / 2 || passes == cdiv(k, 64));
        assert_eq!(
            w.step.in_bytes,
            64 * kp * 2 + cdiv(block, cdiv(m, 64)) + 64 * 32 * rows * 4 * (passes - 1) / passes
        );
        // The steps read every operand at least once and write every output.
        assert!(w.steps * w.step.in_bytes >= (m * k + n * k) * 2);
        assert!(w.steps * w.step.out_bytes >= m * n * 4);
        assert_eq!(
            w.footprint_double,
            cat::MatmulBiasContract::footprint().total()
        );
        assert!(w.footprint_double <= 64 * 1024 && w.footprint_single < w.footprint_double);
        assert_eq!(w.shim_bds, 4);
    }
    // fc2 W block (128 × 2048 bf16 + bias) exceeds half the memory tile: three K passes.
    let fc2 = matmul_work(1500, 2048, 512, true, Epilogue::None, &caps);
    assert_eq!(fc2.steps, cdiv(1500, 64) * cdiv(512, 32 * rows) * 3);

    let base = matmul_work(1500, 512, 2048, true, Epilogue::None, &caps);
    let g = matmul_work(1500, 512, 2048, true, Epilogue::Gelu, &caps);
    assert_eq!(
        g.step.cycles,
        base.step.cycles + (2048.0 / caps.transcendentals_per_cycle).ceil() as u64
    );
    assert_eq!(
        (g.steps, g.step.in_bytes, g.macs, g.footprint_double),
        (
            base.steps,
            base.step.in_bytes,
            base.macs,
            base.footprint_double
        )
    );
    let r = matmul_work(1500, 512, 2048, true, Epilogue::Residual, &caps);
    assert_eq!(
        r.step.cycles,
        base.step.cycles + (2048.0 / caps.f32_ops_per_cycle).ceil() as u64
    );
    assert_eq!(r.step.in_bytes, base.step.in_bytes + 64 * 32 * rows * 4);
    assert_eq!(r.footprint_double, base.footprint_double + 2 * 64 * 32 * 4);
    assert!(r.footprint_double <= 64 * 1024);
    assert_eq!(r.shim_bds, 5);
}

#[test]
fn conv_attention_and_row_kernels_work_sanity() {
    let reg = standard_registry();
    let caps = caps();
    let rows = caps.rows as u64;
    let f = ValueType::f32;

    // Whisper conv2: 512 → 512 channels, kernel 3, stride 2, 3000 → 1500 frames.
    let conv = build(&reg, "conv1d_gelu", json!({"stride": 2, "padding": 1}));
    let w = npu_kernel(conv.as_ref()).work(&[f(&[512, 3000]), f(&[512, 512, 3]), f(&[512])], &caps);
    let (m, k, n) = (512u64, 1536u64, 1500u64);
    assert_eq!(w.macs, m * n * k);
    // The im2col rows (t_out) are the streamed operand, the weights the resident one.
    let mm = matmul_work(1500, 1536, 512, true, Epilogue::Gelu, &caps);
    assert_eq!(
        (w.steps, w.step.in_bytes, w.step.cycles),
        (mm.steps, mm.step.in_bytes, mm.step.cycles)
    );
    assert!(w.footprint_double <= 64 * 1024);

    // Encoder self-attention: 1500 × 1500, 8 heads of 64.
    let att = build(&reg, "attention", json!({"heads": 8}));
    let t = [f(&[1500, 512]), f(&[1500, 512]), f(&[1500, 512])];
    let w = npu_kernel(att.as_ref()).work(&t, &caps);
    let bq = cat::AttentionFlashContract::BLOCK_Q as u64;
    let q_steps = cdiv(1500, bq * rows);
    assert_eq!(w.steps, 8 * q_steps);
    assert_eq!(w.macs, 8 * 1500 * 1500 * 64 * 2);
    assert_eq!(w.step.out_bytes, bq * rows * 64 * 4);
    let kv = 1500 * 64 * 2 * 2;
    assert_eq!(w.resident_bytes, kv);
    assert_eq!(w.step.in_bytes, bq * rows * 64 * 2 + cdiv(kv, q_steps));
    assert_eq!(
        w.footprint_double,
        cat::AttentionFlashContract::footprint(64).total()
    );
    let mac_cycles = (2.0 * (bq * 1500 * 64) as f64 / caps.bf16_macs_per_cycle).ceil() as u64;
    assert!(
        w.step.cycles > mac_cycles,
        "exp and f32 work on top of the MACs"
    );
    // Causal attention visits about half the keys.
    let causal = build(&reg, "attention", json!({"heads": 8, "causal": true}));
    let wc = npu_kernel(causal.as_ref()).work(&t, &caps);
    assert_eq!(wc.macs, 8 * 1500 * 750 * 64 * 2);
    assert!(wc.step.cycles < w.step.cycles);

    // Layer norm rows of 512: 7 rows per tile fit (2·(7·2 KB + 7·2 KB) + 4 KB <= 64 KB).
    let ln = build(&reg, "layer_norm", json!({"eps": 1e-5}));
    let w = npu_kernel(ln.as_ref()).work(&[f(&[1500, 512]), f(&[512]), f(&[512])], &caps);
    assert_eq!(w.steps, cdiv(1500, 7 * rows));
    assert_eq!(w.step.in_bytes, 7 * rows * 512 * 4);
    assert_eq!(w.resident_bytes, 2 * 512 * 4);
    assert!(w.footprint_double <= caps.tile_data_memory);
    let w = npu_kernel(ln.as_ref()).work(&[f(&[3, 2048]), f(&[2048]), f(&[2048])], &caps);
    assert_eq!(
        w.footprint_double,
        cat::LayerNormContract::footprint(2048).total()
    );
    assert_eq!(w.steps, 1);

    let add = build(&reg, "add", json!({}));
    let w = npu_kernel(add.as_ref()).work(&[f(&[1500, 512]), f(&[1500, 512])], &caps);
    assert_eq!(w.steps, cdiv(1500 * 512, 1024 * rows));
    assert_eq!(
        (w.step.in_bytes, w.step.out_bytes),
        (2 * 1024 * rows * 4, 1024 * rows * 4)
    );
    assert_eq!(
        w.footprint_double,
        cat::ResidualAddContract::footprint().total()
    );

    let gelu = build(&reg, "gelu", json!({}));
    let w = npu_kernel(gelu.as_ref()).work(&[f(&[512, 3000])], &caps);
    assert_eq!(w.steps, cdiv(512 * 3000, 2048 * rows));
    assert!(
        w.footprint_double <= 64 * 1024
            && w.step.cycles >= (2048.0 / caps.transcendentals_per_cycle) as u64
    );

    let tr = build(&reg, "transpose", json!({}));
    let w = npu_kernel(tr.as_ref()).work(&[f(&[512, 1500])], &caps);
    assert_eq!(w.steps, 8 * 24);
    assert_eq!((w.step.cycles, w.macs), (0, 0));
    assert_eq!(w.step.in_bytes, w.step.out_bytes);
    assert_eq!(w.step.in_bytes, 64 * 64 * 4);
}

#[test]
fn attention_with_bf16_products_runs_the_bf16_kernel_on_several_rows_only() {
    let reg = standard_registry();
    let f32_op = build(&reg, "attention", json!({ "heads": 2 }));
    let bf16_op = build(
        &reg,
        "attention",
        json!({ "heads": 2, "bf16_products": true }),
    );
    let mut rng = Rng::new(31);
    let (q, k, v) = (
        rng.tensor(&[2, 20, 64], 1.5),
        rng.tensor(&[2, 30, 64], 1.5),
        rng.tensor(&[2, 30, 64], 1.0),
    );
    let got = cpu(bf16_op.as_ref(), &[&q, &k, &v]);
    // Each leading index is one call of the bf16 kernel.
    let (qs, ks, vs) = (q.f32s().unwrap(), k.f32s().unwrap(), v.f32s().unwrap());
    let mut want = vec![0.0f32; qs.len()];
    for b in 0..2 {
        let (qo, ko) = (b * 20 * 64, b * 30 * 64);
        amanuensis_kernels::cpu::attention_bf16(
            amanuensis_kernels::cpu::bf16::Bf16Path::best(),
            &amanuensis_kernels::cpu::AttentionShape::new(20, 30, 2, 32),
            &qs[qo..qo + 20 * 64],
            &ks[ko..ko + 30 * 64],
            &vs[ko..ko + 30 * 64],
            &mut want[qo..qo + 20 * 64],
        );
    }
    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert_eq!(
        bits(&got[0]),
        want_bits,
        "bf16_products runs attention_bf16"
    );
    assert_ne!(
        bits(&got[0]),
        bits(&cpu(f32_op.as_ref(), &[&q, &k, &v])[0]),
        "bf16 products differ from f32 ones on random inputs"
    );
    // A single query row (a decoder step) stays on the f32 path.
    let q1 = rng.tensor(&[1, 1, 64], 1.5);
    let (k1, v1) = (rng.tensor(&[1, 30, 64], 1.5), rng.tensor(&[1, 30, 64], 1.0));
    assert_eq!(
        bits(&cpu(bf16_op.as_ref(), &[&q1, &k1, &v1])[0]),
        bits(&cpu(f32_op.as_ref(), &[&q1, &k1, &v1])[0])
    );
}

#[test]
fn attention_with_bf16x3_runs_the_bf16x3_kernel_on_several_rows_before_bf16_products() {
    let reg = standard_registry();
    let f32_op = build(&reg, "attention", json!({ "heads": 2 }));
    // bf16x3 takes precedence over bf16_products.
    let x3_op = build(
        &reg,
        "attention",
        json!({ "heads": 2, "bf16x3": true, "bf16_products": true }),
    );
    let mut rng = Rng::new(32);
    let (q, k, v) = (
        rng.tensor(&[1, 20, 64], 1.5),
        rng.tensor(&[1, 30, 64], 1.5),
        rng.tensor(&[1, 30, 64], 1.0),
    );
    let got = cpu(x3_op.as_ref(), &[&q, &k, &v]);
    let (qs, ks, vs) = (q.f32s().unwrap(), k.f32s().unwrap(), v.f32s().unwrap());
    let mut want = vec![0.0f32; qs.len()];
    amanuensis_kernels::cpu::attention_bf16x3(
        amanuensis_kernels::cpu::bf16::Bf16Path::widest(),
        &amanuensis_kernels::cpu::AttentionShape::new(20, 30, 2, 32),
        qs,
        ks,
        vs,
        &mut want,
    );
    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits(&got[0]), want_bits, "bf16x3 runs attention_bf16x3");
    // Near f32: within 1e-4 of the f32 kernel's values (|v| ≤ 1).
    let f32_out = cpu(f32_op.as_ref(), &[&q, &k, &v]);
    let worst = got[0]
        .f32s()
        .unwrap()
        .iter()
        .zip(f32_out[0].f32s().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "bf16x3 is {worst:e} from f32");
    // A single query row stays on the f32 path.
    let q1 = rng.tensor(&[1, 1, 64], 1.5);
    assert_eq!(
        bits(&cpu(x3_op.as_ref(), &[&q1, &k, &v])[0]),
        bits(&cpu(f32_op.as_ref(), &[&q1, &k, &v])[0])
    );
}

#[test]
fn linear_with_bf16x3_runs_bf16x3_on_many_rows_without_an_int8_form_before_bf16_products() {
    use amanuensis_kernels::cpu::bf16::{linear_bf16x3, Bf16Path, PackedBf16};
    let reg = standard_registry();
    let f32_op = build(&reg, "linear", json!({}));
    let x3_op = build(
        &reg,
        "linear",
        json!({ "bf16x3": true, "bf16_products": true }),
    );
    let mut rng = Rng::new(33);
    let (x, w, b) = (
        rng.tensor(&[2, 20, 48], 1.0),
        rng.tensor(&[40, 48], 1.0),
        rng.tensor(&[40], 1.0),
    );
    let got = cpu(x3_op.as_ref(), &[&x, &w, &b]);
    let ws = w.f32s().unwrap();
    let packed = PackedBf16::pack_x3(40, 48, |j, buf| buf.copy_from_slice(&ws[j * 48..][..48]));
    let mut want = vec![0.0f32; 40 * 40];
    linear_bf16x3(
        Bf16Path::widest(),
        x.f32s().unwrap(),
        40,
        &packed,
        Some(b.f32s().unwrap()),
        &mut want,
    );
    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits(&got[0]), want_bits, "bf16x3 runs linear_bf16x3");
    // Near f32: |y| is a few units here, the bound about 2⁻¹⁵ of Σ|x·w| (< 48).
    let f32_out = cpu(f32_op.as_ref(), &[&x, &w, &b]);
    let worst = got[0]
        .f32s()
        .unwrap()
        .iter()
        .zip(f32_out[0].f32s().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 2e-3, "bf16x3 is {worst:e} from f32");
    // Few rows stream the weight in f32; a weight with an int8 form runs int8.
    let x1 = rng.tensor(&[1, 3, 48], 1.0);
    assert_eq!(
        bits(&cpu(x3_op.as_ref(), &[&x1, &w, &b])[0]),
        bits(&cpu(f32_op.as_ref(), &[&x1, &w, &b])[0])
    );
    let q = amanuensis_operators::quantize::quantize_matrix(&w).unwrap();
    let w8 = w.clone().with_int8(Arc::new(q)).unwrap();
    assert_eq!(
        bits(&cpu(x3_op.as_ref(), &[&x, &w8, &b])[0]),
        bits(&cpu(f32_op.as_ref(), &[&x, &w8, &b])[0])
    );
}

#[test]
fn linear_with_bf16_products_runs_bf16_only_on_many_rows_without_an_int8_form() {
    use amanuensis_kernels::cpu::bf16::{linear_bf16, Bf16Path, PackedBf16};
    let reg = standard_registry();
    let f32_op = build(&reg, "linear", json!({}));
    let bf16_op = build(&reg, "linear", json!({ "bf16_products": true }));
    let mut rng = Rng::new(32);
    let (x, w, b) = (
        rng.tensor(&[2, 20, 48], 1.0),
        rng.tensor(&[40, 48], 1.0),
        rng.tensor(&[40], 1.0),
    );
    let got = cpu(bf16_op.as_ref(), &[&x, &w, &b]);
    let packed = PackedBf16::pack(w.f32s().unwrap(), 40, 48, 48);
    let mut want = vec![0.0f32; 40 * 40];
    linear_bf16(
        Bf16Path::best(),
        x.f32s().unwrap(),
        40,
        &packed,
        Some(b.f32s().unwrap()),
        &mut want,
    );
    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits(&got[0]), want_bits, "bf16_products runs linear_bf16");
    let f32_out = cpu(f32_op.as_ref(), &[&x, &w, &b]);
    assert_ne!(
        bits(&got[0]),
        bits(&f32_out[0]),
        "bf16 products differ from f32 ones"
    );
    // Few rows (a decoder step) stream the weight in f32.
    let x1 = rng.tensor(&[1, 3, 48], 1.0);
    assert_eq!(
        bits(&cpu(bf16_op.as_ref(), &[&x1, &w, &b])[0]),
        bits(&cpu(f32_op.as_ref(), &[&x1, &w, &b])[0])
    );
    // A weight with an int8 form runs int8, whatever the attribute.
    let q = amanuensis_operators::quantize::quantize_matrix(&w).unwrap();
    let w8 = w.clone().with_int8(Arc::new(q)).unwrap();
    assert_eq!(
        bits(&cpu(bf16_op.as_ref(), &[&x, &w8, &b])[0]),
        bits(&cpu(f32_op.as_ref(), &[&x, &w8, &b])[0])
    );
}

#[test]
fn an_int8_linear_gives_each_row_the_same_bits_however_many_rows_share_the_call() {
    // The lockstep decoder's linears (gemv_max_rows 512) run the rows of several requests
    // at once; each request's rows must come out as they do when it decodes alone.
    let reg = standard_registry();
    let lockstep = build(&reg, "linear", json!({ "gemv_max_rows": 512 }));
    let alone = build(&reg, "linear", json!({}));
    let mut rng = Rng::new(33);
    let (k, n) = (96, 70);
    let w = rng.tensor(&[n, k], 1.0);
    let q = amanuensis_operators::quantize::quantize_matrix(&w).unwrap();
    let w8 = w.clone().with_int8(Arc::new(q)).unwrap();
    let b = rng.tensor(&[n], 1.0);
    // Four requests of five beams: 20 rows in one call, 5 in each call alone.
    let x = rng.tensor(&[20, k], 1.0);
    let together = bits(&cpu(lockstep.as_ref(), &[&x, &w8, &b])[0]);
    for r in 0..4 {
        let rows = x.f32s().unwrap()[r * 5 * k..(r + 1) * 5 * k].to_vec();
        let xr = Tensor::from_f32(&[5, k], rows).unwrap();
        let one = bits(&cpu(alone.as_ref(), &[&xr, &w8, &b])[0]);
        assert_eq!(
            &together[r * 5 * n..(r + 1) * 5 * n],
            &one[..],
            "request {r}"
        );
    }
    // With `stream_rows` those 20 rows read the stored (here f32) weight instead: the
    // f32 linear's bits, not the int8 form's.
    let streamed = build(
        &reg,
        "linear",
        json!({ "gemv_max_rows": 512, "stream_rows": true }),
    );
    let plain = build(&reg, "linear", json!({ "gemv_max_rows": 512 }));
    assert_eq!(
        bits(&cpu(streamed.as_ref(), &[&x, &w8, &b])[0]),
        bits(&cpu(plain.as_ref(), &[&x, &w, &b])[0])
    );
    assert_ne!(bits(&cpu(streamed.as_ref(), &[&x, &w8, &b])[0]), together);
}

#[test]
fn linear_outputs_do_not_depend_on_what_their_buffers_held() {
    // `linear` and `linear_group` take their output buffers without zeroing them
    // (`EvalContext::alloc_f32_overwritten`), so every kernel behind them must write each
    // output without reading it. Each case runs into fresh buffers, then into planned
    // buffers full of NaN (one as long as the output, one shorter); the bits must match.
    let reg = standard_registry();
    let mut rng = Rng::new(35);
    let (k, n) = (128, 72);
    let w = rng.tensor(&[n, k], 1.0);
    let b = rng.tensor(&[n], 1.0);
    let w16 = to_f16(&w);
    let q = amanuensis_operators::quantize::quantize_matrix(&w).unwrap();
    let w8 = w.clone().with_int8(Arc::new(q.clone())).unwrap();
    // A rescored f16 weight with an int8 form: the logits projection's paths (split
    // activations on AMX, the rescoring).
    let mut qr = q;
    qr.rescore_band = Some(0.5);
    let w16r = w16.clone().with_int8(Arc::new(qr)).unwrap();
    let (gamma, beta) = (rng.tensor(&[k], 1.0), rng.tensor(&[k], 0.5));
    let held = |op: &dyn Operator, ins: &[&Tensor], lens: &[usize]| -> Vec<Vec<u32>> {
        let mut states: [Tensor; 0] = [];
        let planned = lens.iter().map(|&l| vec![f32::NAN; l]).collect();
        let mut ctx = EvalContext::with_buffers(planned, &mut states);
        op.eval(&mut ctx, ins).unwrap().iter().map(bits).collect()
    };
    for attrs in [
        json!({}),
        json!({ "bf16_products": true }),
        json!({ "gemv_max_rows": 512 }),
        json!({ "gemv_max_rows": 512, "stream_rows": true }),
    ] {
        let linear = build(&reg, "linear", attrs.clone());
        let mut group_attrs = attrs.clone();
        group_attrs["bias"] = json!([true, false]);
        let group = build(&reg, "linear_group", group_attrs.clone());
        group_attrs["norm_eps"] = json!(1e-5);
        let normed = build(&reg, "linear_group", group_attrs);
        for (name, wt) in [
            ("f32", &w),
            ("f16", &w16),
            ("int8", &w8),
            ("rescored", &w16r),
        ] {
            for rows in [1, 5, 40, 300] {
                let x = rng.tensor(&[rows, k], 1.0);
                let what = format!("{attrs} {name} weight, {rows} rows");
                let out = rows * n;
                let fresh: Vec<Vec<u32>> = cpu(linear.as_ref(), &[&x, wt, &b])
                    .iter()
                    .map(bits)
                    .collect();
                for len in [out, out / 2] {
                    let got = held(linear.as_ref(), &[&x, wt, &b], &[len]);
                    assert_eq!(got, fresh, "linear, {what}, planned buffer of {len}");
                }
                for (op, ins) in [
                    (&group, vec![&x, wt, &b, wt]),
                    (&normed, vec![&x, &gamma, &beta, wt, &b, wt]),
                ] {
                    let fresh: Vec<Vec<u32>> = cpu(op.as_ref(), &ins).iter().map(bits).collect();
                    let got = held(op.as_ref(), &ins, &[out, out / 3]);
                    assert_eq!(got, fresh, "linear_group, {what}");
                }
            }
        }
    }
}

#[test]
fn gelu_with_f32_math_runs_the_f32_kernel() {
    let reg = standard_registry();
    let exact = build(&reg, "gelu", json!({}));
    let fast = build(&reg, "gelu", json!({ "f32_math": true }));
    let x = Rng::new(34).tensor(&[3, 700], 6.0);
    let mut want = x.f32s().unwrap().to_vec();
    amanuensis_kernels::cpu::gelu_f32(&mut want);
    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits(&cpu(fast.as_ref(), &[&x])[0]), want_bits);
    let mut slow = x.f32s().unwrap().to_vec();
    amanuensis_kernels::cpu::gelu(&mut slow);
    let slow_bits: Vec<u32> = slow.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits(&cpu(exact.as_ref(), &[&x])[0]), slow_bits);
}

fn to_f16(t: &Tensor) -> Tensor {
    t.narrow_to_f16().unwrap()
}

#[test]
fn linear_with_f16_output_rounds_the_f32_result_to_f16() {
    let reg = standard_registry();
    let f32_op = build(&reg, "linear", json!({}));
    let f16_op = build(&reg, "linear", json!({ "f16_output": true }));
    let mut rng = Rng::new(34);
    let (w, b) = (rng.tensor(&[40, 48], 1.0), rng.tensor(&[40], 1.0));
    // A window's 1500 rows (cross K/V) and a few rows: each value is the f32 result
    // rounded to nearest.
    for rows in [1500, 3] {
        let x = rng.tensor(&[rows, 48], 1.0);
        let want = cpu(f32_op.as_ref(), &[&x, &w, &b]);
        let got = cpu(f16_op.as_ref(), &[&x, &w, &b]);
        assert_eq!(got[0].dtype(), DType::F16);
        assert_eq!(got[0].shape(), want[0].shape());
        let rounded: Vec<u16> = want[0]
            .f32s()
            .unwrap()
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let got_bits: Vec<u16> = got[0].f16s().unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got_bits, rounded, "{rows} rows");
    }
    let ty = f16_op
        .infer(&[ValueType::f32(&[7, 48]), ValueType::f32(&[40, 48])], &[])
        .unwrap();
    assert_eq!(
        ty[0],
        ValueType::new(DType::F16, vec![Dim::Known(7), Dim::Known(40)])
    );
}

#[test]
fn attention_reads_f16_keys_and_values_as_their_widened_values() {
    let reg = standard_registry();
    let plain = build(&reg, "attention", json!({ "heads": 2 }));
    let causal = build(&reg, "attention", json!({ "heads": 2, "causal": true }));
    let mut rng = Rng::new(35);
    // A step's 5 beams over one window's keys (k shared, rank 2); 4 rows in 2 windows of
    // 2 beams (grouped); a few rows of one sequence (a prompt); and a causal call, which
    // widens K and V rather than reading them in place.
    let cases: [(&dyn Operator, Vec<usize>, Vec<usize>); 4] = [
        (plain.as_ref(), vec![5, 1, 64], vec![30, 64]),
        (plain.as_ref(), vec![4, 1, 64], vec![2, 30, 64]),
        (plain.as_ref(), vec![1, 3, 64], vec![1, 30, 64]),
        (causal.as_ref(), vec![1, 3, 64], vec![1, 30, 64]),
    ];
    for (op, qs, ks) in cases {
        let q = rng.tensor(&qs, 1.5);
        let (k16, v16) = (to_f16(&rng.tensor(&ks, 1.5)), to_f16(&rng.tensor(&ks, 1.0)));
        let (k32, v32) = (k16.clone().widen_f16(), v16.clone().widen_f16());
        let got = cpu(op, &[&q, &k16, &v16]);
        let want = cpu(op, &[&q, &k32, &v32]);
        assert_eq!(bits(&got[0]), bits(&want[0]), "q {qs:?}, k {ks:?}");
    }
    // K and V in different types are refused, by shape inference and at run time.
    let (q, k) = (rng.tensor(&[1, 1, 64], 1.0), rng.tensor(&[30, 64], 1.0));
    let k16 = to_f16(&k);
    let f16_ty = ValueType::new(DType::F16, vec![Dim::Known(30), Dim::Known(64)]);
    let err = plain
        .infer(
            &[
                ValueType::f32(&[1, 1, 64]),
                f16_ty,
                ValueType::f32(&[30, 64]),
            ],
            &[],
        )
        .unwrap_err();
    assert!(err.0.contains("v: expected f16"), "{err:?}");
    let mut states: [Tensor; 0] = [];
    let err = plain
        .eval(&mut EvalContext::new(&mut states), &[&q, &k16, &k])
        .unwrap_err();
    assert!(err.0.contains("one type"), "{err:?}");
}

#[test]
fn fused_linear_ops_compute_their_chain_with_the_linears_attributes_bit_for_bit() {
    // On the CPU the fusion pass fuses linears that carry compute-type attributes; the
    // fused op must then compute exactly what the chain computed.
    let reg = standard_registry();
    let mut rng = Rng::new(36);
    let (w, b) = (rng.tensor(&[40, 48], 1.0), rng.tensor(&[40], 1.0));
    let q = amanuensis_operators::quantize::quantize_matrix(&w).unwrap();
    let w8 = w.clone().with_int8(Arc::new(q)).unwrap();
    let x = rng.tensor(&[1, 20, 48], 1.0);
    let residual = rng.tensor(&[1, 20, 40], 1.0);
    for (lin_attrs, weight) in [
        (json!({ "bf16_products": true }), &w),
        (json!({ "gemv_max_rows": 512, "stream_rows": true }), &w8),
        (json!({ "gemv_max_rows": 512 }), &w8),
        (json!({}), &w8),
    ] {
        let linear = build(&reg, "linear", lin_attrs.clone());
        let y = cpu(linear.as_ref(), &[&x, weight, &b]);
        for f32_math in [false, true] {
            let gelu = build(&reg, "gelu", json!({ "f32_math": f32_math }));
            let chain = cpu(gelu.as_ref(), &[&y[0]]);
            let mut attrs = lin_attrs.clone();
            attrs["f32_math"] = json!(f32_math);
            let fused = build(&reg, "linear_gelu", attrs);
            let got = cpu(fused.as_ref(), &[&x, weight, &b]);
            assert_eq!(
                bits(&got[0]),
                bits(&chain[0]),
                "{lin_attrs} f32_math={f32_math}"
            );
        }
        let add = build(&reg, "add", json!({}));
        let chain = cpu(add.as_ref(), &[&residual, &y[0]]);
        let mut attrs = lin_attrs.clone();
        attrs["bias"] = json!(true);
        let fused = build(&reg, "linear_residual", attrs);
        let got = cpu(fused.as_ref(), &[&x, weight, &b, &residual]);
        assert_eq!(bits(&got[0]), bits(&chain[0]), "{lin_attrs} + residual");
    }
    // f16_output is not a fused op's attribute: its output is f32.
    let err = reg
        .get("linear_gelu")
        .unwrap()
        .build(&attrs(json!({ "f16_output": true })))
        .unwrap_err();
    assert!(err.0.contains("f16_output"), "{err:?}");
}
