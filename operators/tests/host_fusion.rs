//! The fusion pass on the host: linears of one input become one `linear_group`, whose
//! outputs are the unfused linears' bits; siblings that cannot be one node are left alone
//! with a reason; an NPU plan leaves the group to the host's ops.

use amanuensis_operators::standard_registry;
use amanuensis_runtime::device::CpuDevice;
use amanuensis_runtime::format::GraphDef;
use amanuensis_runtime::schedule::{plan, Plan, SchedulerOptions};
use amanuensis_runtime::{Graph, Session, Tensor, WeightStore};
use serde_json::json;
use std::sync::Arc;

fn graph_def() -> GraphDef {
    let v = |name: &str, shape: &[usize]| json!({"name": name, "dtype": "f32", "shape": shape});
    serde_json::from_value(json!({
        "name": "siblings",
        "inputs": [
            v("x", &[20, 16]), v("wq", &[16, 16]), v("bq", &[16]), v("wk", &[24, 16]),
            v("wv", &[16, 16]), v("bv", &[16]), v("wo", &[8, 16]),
            v("y", &[16, 16]), v("wa", &[16, 16])
        ],
        "outputs": [v("q", &[20, 16]), v("k", &[20, 24]), v("v", &[20, 16]), v("o", &[20, 8]),
                    v("b", &[16, 16])],
        "nodes": [
            {"name": "q", "op": "linear", "inputs": ["x", "wq", "bq"], "outputs": ["q"]},
            {"name": "k", "op": "linear", "inputs": ["x", "wk"], "outputs": ["k"]},
            {"name": "v", "op": "linear", "inputs": ["x", "wv", "bv"], "outputs": ["v"]},
            // Same input, other attributes: a group of its own (of one: not fused).
            {"name": "o", "op": "linear", "inputs": ["x", "wo"], "outputs": ["o"],
             "attrs": {"gemv_max_rows": 2}},
            // b reads y like a, but its weight is a's output: one node cannot be both.
            {"name": "a", "op": "linear", "inputs": ["y", "wa"], "outputs": ["a"]},
            {"name": "b", "op": "linear", "inputs": ["y", "a"], "outputs": ["b"]}
        ]
    }))
    .unwrap()
}

fn planned(skip_fusion: bool) -> Plan {
    let reg = standard_registry();
    let g = Graph::build(&graph_def(), &[], &reg).unwrap();
    let mut opts = SchedulerOptions::full();
    if skip_fusion {
        opts = opts.skipping("fusion");
    }
    plan(g, &reg, &CpuDevice, &opts).unwrap()
}

fn inputs() -> Vec<Tensor> {
    let mut rng = fastrand::Rng::with_seed(3);
    graph_def()
        .inputs
        .iter()
        .map(|d| {
            let shape: Vec<usize> = d.shape.iter().map(|x| x.known().unwrap()).collect();
            let n = shape.iter().product();
            Tensor::from_f32(&shape, (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()).unwrap()
        })
        .collect()
}

fn run(p: Plan) -> Vec<Vec<u32>> {
    let mut s = Session::planned(Arc::new(p), &WeightStore::default(), &CpuDevice).unwrap();
    let ins = inputs();
    let refs: Vec<&Tensor> = ins.iter().collect();
    s.run(&refs)
        .unwrap()
        .iter()
        .map(|t| t.f32s().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn linears_of_one_input_become_one_group_with_the_same_bits() {
    let p = planned(false);
    let groups: Vec<&Vec<String>> = p
        .fused
        .iter()
        .filter(|f| f.op == "linear_group")
        .map(|f| &f.nodes)
        .collect();
    assert_eq!(groups.len(), 1, "{:?}", p.fused);
    let mut names = groups[0].clone();
    names.sort();
    assert_eq!(names, ["k", "q", "v"]);
    // The fused node's bias list follows its parts: k has none.
    let node = p
        .graph
        .live_nodes()
        .map(|(_, n)| n)
        .find(|n| n.op_name == "linear_group")
        .unwrap();
    let bias: Vec<bool> = node.attrs.0["bias"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect();
    let want: Vec<bool> = groups[0].iter().map(|n| n != "k").collect();
    assert_eq!(bias, want);
    // a and b read y, but b's weight is a's output.
    let why = p
        .rejected
        .iter()
        .find(|r| r.pattern == "linear_group")
        .unwrap_or_else(|| panic!("a + b not reported: {:?}", p.rejected));
    assert!(
        why.reason.contains("computed from one of the nodes"),
        "{}",
        why.reason
    );
    assert_eq!(run(p), run(planned(true)));
}

#[test]
fn linear_group_refuses_inputs_that_do_not_match_its_parts() {
    let reg = standard_registry();
    let def = reg.get("linear_group").unwrap();
    let attrs = |v: serde_json::Value| {
        amanuensis_runtime::Attrs(v.as_object().unwrap().clone().into_iter().collect())
    };
    for bad in [json!({}), json!({"bias": []}), json!({"bias": [true, 1]})] {
        let e = def.build(&attrs(bad.clone())).unwrap_err();
        assert!(e.0.contains("'bias'"), "{bad}: {e}");
    }
    let op = def.build(&attrs(json!({"bias": [true, false]}))).unwrap();
    let t = |s: &[usize]| amanuensis_runtime::ValueType::f32(s);
    // x, w0, b0, w1 is right; one input short or w1 of the wrong width is not.
    let ok = op
        .infer(&[t(&[3, 4]), t(&[5, 4]), t(&[5]), t(&[6, 4])], &[])
        .unwrap();
    assert_eq!(ok, vec![t(&[3, 5]), t(&[3, 6])]);
    let e = op
        .infer(&[t(&[3, 4]), t(&[5, 4]), t(&[5])], &[])
        .unwrap_err();
    assert!(e.0.contains("expected 4 inputs"), "{e}");
    let e = op
        .infer(&[t(&[3, 4]), t(&[5, 4]), t(&[5]), t(&[6, 7])], &[])
        .unwrap_err();
    assert!(e.0.contains("part 1"), "{e}");
}

#[test]
fn layer_norms_move_into_the_products_they_feed_with_the_same_bits() {
    // ln1 feeds q, k, v (a group after the first round); ln2 feeds fc → gelu (a
    // linear_gelu after the first round); ln3 feeds one linear and a graph output, so it
    // stays.
    let v = |name: &str, shape: &[usize]| json!({"name": name, "dtype": "f32", "shape": shape});
    let def: GraphDef = serde_json::from_value(json!({
        "name": "normed",
        "inputs": [
            v("x", &[7, 32]), v("g1", &[32]), v("b1", &[32]), v("g2", &[32]), v("b2", &[32]),
            v("wq", &[32, 32]), v("bq", &[32]), v("wk", &[32, 32]), v("wv", &[32, 32]),
            v("w1", &[64, 32]), v("bf", &[64]), v("wo", &[16, 32])
        ],
        "outputs": [v("q", &[7, 32]), v("k", &[7, 32]), v("v", &[7, 32]), v("h", &[7, 64]),
                    v("ln3", &[7, 32]), v("o", &[7, 16])],
        "nodes": [
            {"name": "ln1", "op": "layer_norm", "inputs": ["x", "g1", "b1"], "outputs": ["ln1"], "attrs": {"eps": 1e-5}},
            {"name": "q", "op": "linear", "inputs": ["ln1", "wq", "bq"], "outputs": ["q"]},
            {"name": "k", "op": "linear", "inputs": ["ln1", "wk"], "outputs": ["k"]},
            {"name": "v", "op": "linear", "inputs": ["ln1", "wv"], "outputs": ["v"]},
            {"name": "ln2", "op": "layer_norm", "inputs": ["x", "g2", "b2"], "outputs": ["ln2"], "attrs": {"eps": 1e-5}},
            {"name": "fc", "op": "linear", "inputs": ["ln2", "w1", "bf"], "outputs": ["fc"]},
            {"name": "h", "op": "gelu", "inputs": ["fc"], "outputs": ["h"]},
            {"name": "ln3", "op": "layer_norm", "inputs": ["x", "g2", "b1"], "outputs": ["ln3"], "attrs": {"eps": 1e-5}},
            {"name": "o", "op": "linear", "inputs": ["ln3", "wo"], "outputs": ["o"]}
        ]
    }))
    .unwrap();
    let reg = standard_registry();
    let planned = |skip: bool| {
        let g = Graph::build(&def, &[], &reg).unwrap();
        let opts = if skip {
            SchedulerOptions::full().skipping("fusion")
        } else {
            SchedulerOptions::full()
        };
        plan(g, &reg, &CpuDevice, &opts).unwrap()
    };
    let p = planned(false);
    let mut patterns: Vec<&str> = p.fused.iter().map(|f| f.pattern.as_str()).collect();
    patterns.sort();
    assert_eq!(
        patterns,
        [
            "layer_norm_linear_gelu",
            "layer_norm_linear_group",
            "linear_gelu",
            "linear_group"
        ]
    );
    let live: Vec<&str> = p
        .graph
        .live_nodes()
        .map(|(_, n)| n.op_name.as_str())
        .collect();
    assert_eq!(live.len(), 4, "{live:?}");
    assert!(
        live.contains(&"layer_norm") && live.contains(&"linear"),
        "{live:?}"
    );
    let mut rng = fastrand::Rng::with_seed(9);
    let ins: Vec<Tensor> = def
        .inputs
        .iter()
        .map(|d| {
            let shape: Vec<usize> = d.shape.iter().map(|x| x.known().unwrap()).collect();
            let n = shape.iter().product();
            Tensor::from_f32(&shape, (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect()).unwrap()
        })
        .collect();
    let refs: Vec<&Tensor> = ins.iter().collect();
    let run = |p: Plan| -> Vec<Vec<u32>> {
        let mut s = Session::planned(Arc::new(p), &WeightStore::default(), &CpuDevice).unwrap();
        s.run(&refs)
            .unwrap()
            .iter()
            .map(|t| t.f32s().unwrap().iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    assert_eq!(run(p), run(planned(true)));
}
