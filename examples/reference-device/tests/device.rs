//! The `reference` device on a small graph: what it takes and why not, outputs equal to
//! the catalogue references chained by hand (bit for bit), intermediates kept in its
//! memory, weights uploaded once, and the counts of each run.

use amanuensis_reference_device::{register, ReferenceDevice, ReferenceProgram, NAME};
use amanuensis_runtime::device::{DeviceError, DeviceRegistry, Program};
use amanuensis_runtime::npu::kernel_of;
use amanuensis_runtime::schedule::{plan, Plan, SchedulerOptions};
use amanuensis_runtime::{Graph, ModelFile, Session, Tensor, WeightStore};
use std::sync::Arc;

/// linear → gelu → layer_norm → add (this device's four kernels), then a transpose,
/// whose kernel is not one of this device's.
const GRAPH: &str = r#"{
  "format": "amanuensis-graph", "version": 1,
  "model": {"name": "demo", "family": "demo", "hyper_parameters": {}},
  "weights": [
    {"name": "w", "dtype": "f32", "shape": [5, 6]},
    {"name": "b", "dtype": "f32", "shape": [5]},
    {"name": "gamma", "dtype": "f32", "shape": [5]},
    {"name": "beta", "dtype": "f32", "shape": [5]}
  ],
  "graphs": [{
    "name": "main",
    "inputs": [{"name": "x", "dtype": "f32", "shape": [4, 6]},
               {"name": "r", "dtype": "f32", "shape": [4, 5]}],
    "outputs": [{"name": "t", "dtype": "f32", "shape": [5, 4]}],
    "nodes": [
      {"name": "fc", "op": "linear", "inputs": ["x", "w", "b"], "outputs": ["h"]},
      {"name": "act", "op": "gelu", "inputs": ["h"], "outputs": ["g"]},
      {"name": "norm", "op": "layer_norm", "inputs": ["g", "gamma", "beta"], "outputs": ["n"],
       "attrs": {"eps": 1e-5}},
      {"name": "res", "op": "add", "inputs": ["n", "r"], "outputs": ["y"]},
      {"name": "tr", "op": "transpose", "inputs": ["y"], "outputs": ["t"]}
    ]
  }]
}"#;

fn tensor(shape: &[usize], seed: u32) -> Tensor {
    let n = shape.iter().product::<usize>();
    let v = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    Tensor::from_f32(shape, v).unwrap()
}

fn setup() -> (Graph, WeightStore, Plan) {
    let file = ModelFile::parse(GRAPH, "demo.graph").unwrap();
    let reg = amanuensis_operators::standard_registry();
    let build = || Graph::build(&file.graphs[0], &file.weights, &reg).unwrap();
    let weights = WeightStore::from_tensors([
        ("w".to_string(), tensor(&[5, 6], 1)),
        ("b".to_string(), tensor(&[5], 2)),
        ("gamma".to_string(), tensor(&[5], 3)),
        ("beta".to_string(), tensor(&[5], 4)),
    ]);
    let p = plan(build(), &reg, &ReferenceDevice, &SchedulerOptions::full()).unwrap();
    (build(), weights, p)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.f32s().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn registers_once_and_takes_no_configuration() {
    let mut reg = DeviceRegistry::with_host();
    register(&mut reg).unwrap();
    assert!(reg.get(NAME).unwrap().probe().available);
    assert_eq!(reg.open(NAME).unwrap().device.name(), NAME);
    let e = reg.open("reference:fast").err().unwrap();
    assert!(e.contains("takes no configuration"), "{e}");
    assert!(register(&mut reg).unwrap_err().contains("registered twice"));
}

#[test]
fn runs_its_kernels_bit_exact_and_keeps_intermediates_in_its_memory() {
    let (graph, weights, p) = setup();
    println!("{}", p.report());
    for d in p.decisions() {
        let want = if d.node == "tr" { "cpu" } else { NAME };
        assert_eq!(d.device, want, "{}: {}", d.node, d.reason);
    }
    let tr = &p.decisions()[4];
    assert!(
        tr.reason
            .contains("kernel 'transpose' is not one of this device's"),
        "{}",
        tr.reason
    );
    // One segment; only x and r go up and y comes down.
    assert_eq!(p.segments, vec![vec![0, 1, 2, 3]]);
    assert_eq!(p.transfers.len(), 3, "{:?}", p.transfers);

    // The catalogue references chained by hand, then the host transpose.
    let (x, r) = (tensor(&[4, 6], 5), tensor(&[4, 5], 6));
    let eval = |ni: usize, ins: &[&Tensor]| {
        let k = kernel_of(graph.nodes[ni].op.as_ref()).unwrap().unwrap();
        k.eval(ins).unwrap().remove(0)
    };
    let w = |n: &str| weights.get(n).unwrap().clone();
    let h = eval(0, &[&x, &w("w"), &w("b")]);
    let g = eval(1, &[&h]);
    let n = eval(2, &[&g, &w("gamma"), &w("beta")]);
    let y = eval(3, &[&n, &r]);

    let p = Arc::new(p);
    let mut s = Session::planned(p.clone(), &weights, &ReferenceDevice).unwrap();
    s.reset_states(&Default::default()).unwrap();
    for _ in 0..2 {
        let out = s.run(&[&x, &r]).unwrap().remove(0);
        let yv = y.f32s().unwrap();
        let t: Vec<u32> = (0..20).map(|i| yv[(i % 4) * 5 + i / 4].to_bits()).collect();
        assert_eq!(bits(&out), t);
    }
    let st = s.stats();
    assert_eq!((st.dispatches, st.fallbacks), (8, 0));
    assert_eq!(st.bytes_to_device, 2 * (24 + 20) * 4);
    assert_eq!(st.bytes_from_device, 2 * 20 * 4);

    let prog = ReferenceProgram::load(p, &weights).unwrap();
    assert_eq!(prog.load_bytes(), (30 + 5 + 5 + 5) * 4);
}

#[test]
fn bad_uploads_and_segments_are_typed_errors() {
    let (graph, weights, p) = setup();
    let x = graph.values.iter().position(|v| v.name == "x").unwrap();
    let mut prog = ReferenceProgram::load(Arc::new(p), &weights).unwrap();
    match prog.upload(x, &tensor(&[6, 4], 0)) {
        Err(DeviceError::Kernel(e)) => {
            assert!(e.0.contains("its device buffer holds [4, 6]"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let w = graph.values.iter().position(|v| v.name == "w").unwrap();
    let e = prog.upload(w, &tensor(&[5, 6], 0)).unwrap_err().to_string();
    assert!(
        e.contains("value 'w' has no buffer in the device memory"),
        "{e}"
    );
    let e = prog.run_segment(7).unwrap_err().to_string();
    assert!(e.contains("no segment 7"), "{e}");
}
