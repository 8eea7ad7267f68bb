//! The example graph on the CPU against an f64 reference, the fusion rewrite, and the
//! NPU kernels against their contracts.

mod common;

use amanuensis_kernels::npu::{matmul_bias, round_bf16};
use amanuensis_operators::npu::{matmul_work, Epilogue};
use amanuensis_plugin_example::{
    swish_cpu, swish_exact, LinearSwishNpu, LinearSwishPattern, SwishNpu,
};
use amanuensis_runtime::fusion::{ChainMatch, FusionPattern};
use amanuensis_runtime::npu::{NpuKernel, NpuParams};
use amanuensis_runtime::op::ValueType;
use amanuensis_runtime::{Attrs, DType, Graph, Tensor};
use common::*;

#[test]
fn mlp_graph_on_cpu_matches_f64_reference() {
    let file = model_file();
    let x = input();
    let y = run_cpu(&file.graphs[0], &file, &registry(), &x);
    let (want, scale) = mlp_f64(&file, x.f32s().unwrap());
    // f32 accumulation over at most 96 terms: well under 1e-5 of the sum of |terms|.
    let worst = assert_close(&y, &want, &scale, 1e-5, "mlp on cpu");
    eprintln!("cpu vs f64: worst error / scale = {worst:.2e}");
    assert!(worst > 0.0, "the f32 path cannot be exact everywhere");
    // The reference is not trivially small: swish saw both signs and the output is O(1).
    let max = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(max > 0.5, "largest |y| = {max}");
}

/// The example graph as validated IR, and the ids of `fc1` and `act`.
fn example_graph() -> (Graph, usize, usize) {
    let file = model_file();
    let g = Graph::build(&file.graphs[0], &file.weights, &registry()).expect("graph validates");
    let id = |name: &str| g.nodes.iter().position(|n| n.name == name).unwrap();
    let (fc1, act) = (id("fc1"), id("act"));
    (g, fc1, act)
}

#[test]
fn fused_graph_is_bit_identical_to_unfused_on_cpu() {
    let file = model_file();
    let (mut g, fc1, act) = example_graph();
    let fused = LinearSwishPattern
        .fuse(&ChainMatch {
            graph: &g,
            nodes: &[fc1, act],
            ports: &[0],
        })
        .expect("pattern accepts linear → swish");
    assert_eq!(fused.op, "linear_swish");
    let input_names: Vec<&str> = fused
        .inputs
        .iter()
        .map(|&v| g.values[v].name.as_str())
        .collect();
    assert_eq!(input_names, ["x", "fc1.weight", "fc1.bias"]);
    assert!(fused.attrs.is_empty());

    // The rewrite the scheduler makes: the chain becomes one node that takes over the last
    // node's outputs; the replaced nodes keep their ids and leave the execution order.
    let reg = registry();
    let attrs = Attrs(fused.attrs.clone());
    let op = reg.get(&fused.op).unwrap().build(&attrs).unwrap();
    let id = g
        .replace_chain(
            &[fc1, act],
            "fc1+act".into(),
            fused.op.clone(),
            attrs,
            op,
            fused.inputs.clone(),
        )
        .expect("the fused op keeps the chain's output type");
    assert_eq!(
        (g.nodes[fc1].replaced_by, g.nodes[act].replaced_by),
        (Some(id), Some(id))
    );
    let order: Vec<&str> = g.order.iter().map(|&i| g.nodes[i].name.as_str()).collect();
    assert_eq!(order, ["fc1+act", "fc2"]);

    let x = input();
    let plain = run_cpu(&file.graphs[0], &file, &reg, &x);
    let fused_out = run_graph(g, &file, &x);
    assert_eq!(plain.len(), fused_out.len());
    let differing = plain
        .iter()
        .zip(&fused_out)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "fusion changed {differing} of {} outputs on the CPU",
        plain.len()
    );
}

#[test]
fn pattern_declines_nodes_with_attributes() {
    let (mut g, fc1, act) = example_graph();
    let fuse = |g: &Graph| {
        LinearSwishPattern.fuse(&ChainMatch {
            graph: g,
            nodes: &[fc1, act],
            ports: &[0],
        })
    };
    assert!(fuse(&g).is_some(), "the plain chain fuses");
    // An attribute the fused op cannot express (set on the IR node: `swish` itself
    // rejects unknown attributes at load).
    g.nodes[act]
        .attrs
        .0
        .insert("beta".into(), serde_json::json!(2.0));
    assert_eq!(fuse(&g), None);
    assert_eq!(LinearSwishPattern.chain(), ["linear", "swish"]);
}

#[test]
fn graph_file_is_in_canonical_form() {
    let text = std::fs::read_to_string(graph_path()).unwrap();
    assert_eq!(
        model_file().to_text(),
        text,
        "rewrite the file with the canonical writer"
    );
}

/// Inputs that exercise swish's range: both tails, zero, tiny and mid values.
fn probe() -> Vec<f32> {
    let mut v = values(11, 4000, 12.0);
    v.extend([
        0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 20.0, -20.0, 88.0, -88.0, 103.0, -103.0,
    ]);
    v
}

fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    key(a).abs_diff(key(b))
}

#[test]
fn swish_kernels_against_f64() {
    let x = probe();
    // CPU kernel: f32 exp, add and divide: a few ulps, stated as 4e-7 relative (or 1e-37
    // absolute in the far negative tail, where the result underflows).
    let mut cpu = x.clone();
    swish_cpu(&mut cpu);
    for (&v, &c) in x.iter().zip(&cpu) {
        let r = swish_f64(v as f64);
        assert!(
            (c as f64 - r).abs() <= 4e-7 * r.abs() + 1e-37,
            "cpu swish({v}) = {c}, f64 {r}"
        );
    }
    // NPU kernel: one rounding of an f64 evaluation, so within one ulp of the f64 value
    // rounded to f32 (the exp implementations may differ in their last f64 bit).
    let xt = Tensor::from_f32(&[x.len()], x.clone()).unwrap();
    let npu = SwishNpu.eval(&[&xt]).unwrap();
    let npu = npu[0].f32s().unwrap();
    let mut exact = 0;
    for (&v, &n) in x.iter().zip(npu) {
        let r = swish_f64(v as f64) as f32;
        assert!(ulps(n, r) <= 1, "npu swish({v}) = {n}, f64 rounded {r}");
        assert_eq!(n.to_bits(), swish_exact(v).to_bits());
        exact += usize::from(n.to_bits() == r.to_bits());
    }
    assert!(
        exact * 1000 >= x.len() * 999,
        "only {exact} of {} bit-equal to the f64 reference",
        x.len()
    );
}

#[test]
fn linear_swish_npu_kernel_is_matmul_bias_then_swish() {
    let (m, k, n) = (70, 130, 40); // not multiples of the 64×64×32 tile
    let (x, w, b) = (
        values(1, m * k, 2.0),
        values(2, n * k, 0.2),
        values(3, n, 0.5),
    );
    let t = |s: &[usize], v: &Vec<f32>| Tensor::from_f32(s, v.clone()).unwrap();
    let got = LinearSwishNpu
        .eval(&[&t(&[m, k], &x), &t(&[n, k], &w), &t(&[n], &b)])
        .unwrap();
    assert_eq!(got[0].shape(), [m, n]);
    let got = got[0].f32s().unwrap();

    // Bit-exact against the catalogue's matmul_bias followed by the swish contract: the
    // fused kernel gives the NPU the same bits as the unfused pair.
    let mut lin = vec![0.0; m * n];
    matmul_bias(&x, m, k, &w, n, Some(&b), &mut lin).unwrap();
    for (i, (&g, &l)) in got.iter().zip(&lin).enumerate() {
        assert_eq!(g.to_bits(), swish_exact(l).to_bits(), "element {i}");
    }

    // Against f64 on the bf16-rounded operands: only the f32 accumulation differs.
    let xb: Vec<f64> = x.iter().map(|&v| round_bf16(v) as f64).collect();
    let wb: Vec<f32> = w.iter().map(|&v| round_bf16(v)).collect();
    let (h, scale) = linear_f64(&xb, k, &wb, &b);
    let want: Vec<f64> = h.iter().map(|&v| swish_f64(v)).collect();
    let scale: Vec<f64> = scale.iter().map(|s| 1.1 * s).collect();
    assert_close(got, &want, &scale, 1e-5, "matmul_bias_swish vs f64");
}

fn f32_type(shape: &[usize]) -> ValueType {
    ValueType::f32(shape)
}

#[test]
fn cost_models_follow_the_tiles() {
    let caps = NpuParams::phoenix().caps();
    // swish over [40, 96]: 3840 elements = 4 tiles of 1024, one step of the 4-row column.
    let s = SwishNpu.work(&[f32_type(&[40, 96])], &caps);
    assert_eq!(s.steps, 1);
    assert_eq!(s.step.in_bytes, 4 * 4096);
    assert_eq!(s.step.cycles, (1024.0 * 3.0 / 16.0 + 1024.0 / 4.0) as u64);
    assert!(s.footprint_double <= caps.tile_data_memory);

    // linear_swish is the standard matmul_bias dispatch plus the swish epilogue per tile.
    let epilogue = (64.0 * 32.0 * 3.0 / caps.f32_ops_per_cycle) as u64
        + (64.0 * 32.0 / caps.transcendentals_per_cycle) as u64;
    for (m, k, n) in [
        (40, 64, 96),
        (200, 128, 96),
        (1500, 512, 2048),
        (1500, 2048, 512),
    ] {
        let types = [f32_type(&[m, k]), f32_type(&[n, k]), f32_type(&[n])];
        let fused = LinearSwishNpu.work(&types, &caps);
        let plain = matmul_work(m, k, n, true, Epilogue::None, &caps);
        let passes = plain.steps / (m.div_ceil(64) * n.div_ceil(128)) as u64;
        assert_eq!(fused.macs, (m * n * k) as u64);
        assert_eq!(
            (fused.steps, fused.step.in_bytes, fused.step.out_bytes),
            (plain.steps, plain.step.in_bytes, plain.step.out_bytes)
        );
        assert_eq!(
            (fused.resident_bytes, fused.footprint_double, fused.shim_bds),
            (plain.resident_bytes, plain.footprint_double, plain.shim_bds)
        );
        assert_eq!(
            fused.step.cycles,
            plain.step.cycles + epilogue.div_ceil(passes),
            "{m}x{k}x{n}, {passes} K passes"
        );
        assert!(fused.footprint_double <= caps.tile_data_memory);
    }
}

#[test]
fn npu_kernels_check_their_inputs() {
    let ok = [f32_type(&[40, 64]), f32_type(&[96, 64]), f32_type(&[96])];
    assert_eq!(LinearSwishNpu.check(&ok), Ok(()));
    assert_eq!(LinearSwishNpu.check(&ok[..2]), Ok(()));
    let e = LinearSwishNpu
        .check(&[f32_type(&[40, 63]), f32_type(&[96, 64])])
        .unwrap_err();
    assert!(e.contains("do not form x · wᵀ"), "{e}");
    let e = LinearSwishNpu
        .check(&[ok[0].clone(), ok[1].clone(), f32_type(&[95])])
        .unwrap_err();
    assert!(e.contains("does not match w's 96 outputs"), "{e}");
    let e = SwishNpu
        .check(&[ValueType::new(DType::I32, vec![3.into()])])
        .unwrap_err();
    assert_eq!(e, "x is i32, the kernel takes f32");
}
