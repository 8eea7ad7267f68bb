//! The example graph scheduled on the simulated NPU: the plugin's fusion pattern rewrites
//! `fc1` (standard `linear`) + `act` (`swish`) into `linear_swish`, the plan shows it, and
//! the run's numbers match the NPU kernels' references and an f64 reference.

mod common;

use amanuensis_kernels::npu::matmul_bias;
use amanuensis_plugin_example::swish_exact;
use amanuensis_runtime::dot::{device_colour, plan_annotations, to_dot};
use amanuensis_runtime::npu::{NpuLowering, NpuParams, NpuSim};
use amanuensis_runtime::schedule::{plan, Plan, SchedulerOptions, Step};
use amanuensis_runtime::{Graph, Session};
use common::*;
use std::sync::Arc;

fn npu_plan(options: SchedulerOptions) -> Plan {
    let file = model_file();
    let registry = registry();
    let graph = Graph::build(&file.graphs[0], &file.weights, &registry)
        .expect("the example graph validates");
    let device = NpuSim::new(NpuParams::phoenix());
    plan(graph, &registry, &device, &options).expect("the example graph plans on npu-sim")
}

/// The projected device time of one graph run, from the NPU lowering's timeline.
fn projected_ns(p: &Plan) -> f64 {
    let tl = &p
        .lowering::<NpuLowering>()
        .expect("an NPU lowering")
        .timeline;
    assert_eq!(p.projected_ns, Some(tl.total_ns));
    tl.total_ns
}

#[test]
fn plan_fuses_linear_and_swish_on_the_npu() {
    let p = npu_plan(SchedulerOptions::default());
    // As loaded, every node runs on the NPU, `act` with the plugin's kernel.
    let act = p.decisions().iter().find(|d| d.node == "act").unwrap();
    assert_eq!(
        (act.device.as_str(), act.kernel.as_str()),
        ("npu-sim", "swish_f32")
    );
    assert_eq!(p.decisions().len(), 3);
    assert!(
        p.decisions().iter().all(|d| d.device == "npu-sim"),
        "{:#?}",
        p.decisions()
    );

    assert_eq!(p.fused.len(), 1, "{:#?}", p.fused);
    let f = &p.fused[0];
    assert_eq!(
        (f.pattern.as_str(), f.op.as_str()),
        ("linear_swish", "linear_swish")
    );
    assert_eq!(f.nodes, ["fc1", "act"]);
    assert!(
        f.saved_us > 0.0,
        "fusion must be projected to save time: {} µs",
        f.saved_us
    );

    // The IR edited in place: the fused node is appended, the chain it replaced keeps its
    // ids and leaves the execution order.
    assert_eq!(p.graph.nodes.len(), 4);
    let fused_id = p
        .graph
        .nodes
        .iter()
        .position(|n| n.name == "fc1+act")
        .unwrap();
    for name in ["fc1", "act"] {
        let n = p.graph.nodes.iter().find(|n| n.name == name).unwrap();
        assert_eq!(n.replaced_by, Some(fused_id), "{name}");
    }

    // The executed graph: the fused node and fc2, both on the NPU.
    let ran: Vec<(&str, &str, &str)> = p
        .graph
        .order
        .iter()
        .map(|&i| {
            (
                p.graph.nodes[i].name.as_str(),
                p.graph.nodes[i].op_name.as_str(),
                p.placements[i].kernel.as_str(),
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            ("fc1+act", "linear_swish", "matmul_bias_swish"),
            ("fc2", "linear", "matmul_bias")
        ]
    );
    assert_eq!(p.dispatches(), 2);
    assert!(p.graph.order.iter().all(|&i| p.on_device(i)));
    // What the session executes: x up, one segment of both runs, y down.
    let fc2 = p.graph.nodes.iter().position(|n| n.name == "fc2").unwrap();
    assert_eq!(p.segments, [vec![fused_id, fc2]]);
    let x = p.graph.values.iter().position(|v| v.name == "x").unwrap();
    let y = p.graph.values.iter().position(|v| v.name == "y").unwrap();
    assert_eq!(
        p.steps,
        [Step::Upload(x), Step::Segment(0), Step::Download(y)]
    );

    let report = p.report();
    let line = format!(
        "      {:<18} fc1 + act -> linear_swish (saves {:.1} µs projected)",
        "linear_swish", f.saved_us
    );
    assert!(
        report.lines().any(|l| l == line),
        "no line {line:?} in:\n{report}"
    );
    eprintln!("{report}");

    // Fusion off: three dispatches, and a longer projected time.
    let unfused = npu_plan(SchedulerOptions::default().skipping("fusion"));
    assert_eq!(unfused.graph.nodes.len(), 3);
    assert_eq!(unfused.graph.order.len(), 3);
    assert!(unfused.fused.is_empty());
    let fusion = unfused.passes.iter().find(|r| r.name == "fusion").unwrap();
    assert!(!fusion.ran, "{fusion:?}");
    assert_eq!(unfused.dispatches(), 3);
    let (fused_ns, unfused_ns) = (projected_ns(&p), projected_ns(&unfused));
    assert!(unfused_ns > fused_ns, "{unfused_ns} vs {fused_ns} ns");
}

#[test]
fn npu_sim_run_matches_the_kernel_references_and_f64() {
    let file = model_file();
    let x = input();
    let p = Arc::new(npu_plan(SchedulerOptions::default()));
    let mut session = Session::planned(
        p.clone(),
        &weights(&file),
        &NpuSim::new(NpuParams::phoenix()),
    )
    .unwrap();
    session.reset_states(&Default::default()).unwrap();
    let y = session.run(&[&x]).unwrap();
    let y = y[0].f32s().unwrap();

    // The session executed the plan's steps through the device's program: x went up and y
    // came down once, the two runs were submitted, and the replayed commands give the
    // plan's projection.
    let stats = session.stats();
    assert_eq!(stats.dispatches, 2);
    assert_eq!(
        (stats.bytes_to_device, stats.bytes_from_device),
        (40 * 64 * 4, 40 * 32 * 4)
    );
    assert_eq!(Some(stats.simulated_ns), p.projected_ns);
    assert!(stats.simulated_ns > 0.0);

    // Bit for bit: the catalogue's matmul_bias, the swish contract, matmul_bias again.
    let store = weights(&file);
    let w = |name: &str| store.get(name).unwrap().f32s().unwrap().to_vec();
    let mut h = vec![0.0; 40 * 96];
    matmul_bias(
        x.f32s().unwrap(),
        40,
        64,
        &w("fc1.weight"),
        96,
        Some(&w("fc1.bias")),
        &mut h,
    )
    .unwrap();
    let a: Vec<f32> = h.iter().map(|&v| swish_exact(v)).collect();
    let mut want = vec![0.0; 40 * 32];
    matmul_bias(
        &a,
        40,
        96,
        &w("fc2.weight"),
        32,
        Some(&w("fc2.bias")),
        &mut want,
    )
    .unwrap();
    let differing = y
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{differing} outputs differ from the composed references"
    );

    // Against f64: bf16 operands carry a relative error of at most 2^-9 each, so every
    // product is within about 2^-8 of exact: 4e-3 of the sum of |terms| bounds both layers.
    let (reference, scale) = mlp_f64(&file, x.f32s().unwrap());
    let worst = assert_close(y, &reference, &scale, 4e-3, "npu-sim vs f64");
    eprintln!("npu-sim vs f64: worst error / scale = {worst:.2e}");
    assert!(worst > 1e-6, "bf16 rounding must show ({worst:.2e})");
    // And the bf16 rounding is real: the NPU output differs from the CPU's.
    let cpu = run_cpu(&file.graphs[0], &file, &registry(), &x);
    assert!(cpu.iter().zip(y).any(|(c, n)| c != n));
}

#[test]
fn dot_after_passes_shows_devices_and_the_fused_group() {
    let p = npu_plan(SchedulerOptions::default());
    let dot = to_dot(&p.graph, &plan_annotations(&p));
    let lines: Vec<&str> = dot.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == r#"  subgraph "cluster_0" {"#)
        .expect(&dot);
    assert_eq!(
        lines[start + 1],
        r##"    label="linear_swish: fc1 + act"; style=dashed; color="#888888";"##
    );
    let colour = device_colour("npu-sim");
    assert_eq!(
        lines[start + 2],
        format!(
            r#"    "node:fc1+act" [label="fc1+act\nlinear_swish\n(2 weights)\nmatmul_bias_swish", shape=box, style="rounded,filled", fillcolor="{colour}"];"#
        )
    );
    assert!(lines.contains(&format!(r#"  "node:fc2" [label="fc2\nlinear\n(2 weights)\nmatmul_bias", shape=box, style="rounded,filled", fillcolor="{colour}"];"#).as_str()), "{dot}");
    assert!(
        lines.contains(&r#"  "node:fc1+act" -> "node:fc2" [label="a f32[40, 96]"];"#),
        "{dot}"
    );
}
