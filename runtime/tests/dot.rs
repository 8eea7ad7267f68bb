//! Graphviz output of a small graph, bare and annotated.

use amanuensis_runtime::dot::{device_colour, to_dot, Cluster, DotAnnotations, NodeAnnotation};
use amanuensis_runtime::op::{Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{Graph, ModelFile, OpError, Registry, Tensor};

/// `y = x + w` with types passed through (only inference matters here).
#[derive(Debug)]
struct Pass;
impl Operator for Pass {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        Ok(vec![inputs[0].clone()])
    }
    fn eval(&self, _: &mut EvalContext, _: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Err("not run here".into())
    }
}
struct PassDef(&'static str);
impl OpDef for PassDef {
    fn name(&self) -> &str {
        self.0
    }
    fn build(&self, _: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        Ok(Box::new(Pass))
    }
}

fn graph() -> Graph {
    let text = r#"{"format": "amanuensis-graph", "version": 1,
        "model": {"name": "t", "family": "test", "hyper_parameters": {}},
        "weights": [{"name": "w", "dtype": "f16", "shape": [4]}],
        "graphs": [{"name": "g",
          "inputs": [{"name": "x", "dtype": "f32", "shape": ["n", 4]}],
          "outputs": [{"name": "z", "dtype": "f32", "shape": ["n", 4]}],
          "nodes": [
            {"name": "second", "op": "scale", "inputs": ["y"], "outputs": ["z"]},
            {"name": "first \"a\"", "op": "shift", "inputs": ["x", "w"], "outputs": ["y"]}]}]}"#;
    let file = ModelFile::parse(text, "t.graph").unwrap();
    let mut reg = Registry::new();
    reg.register(PassDef("shift")).unwrap();
    reg.register(PassDef("scale")).unwrap();
    Graph::build(&file.graphs[0], &file.weights, &reg).unwrap()
}

#[test]
fn bare_graph_renders_in_execution_order_with_typed_edges() {
    let dot = to_dot(&graph(), &DotAnnotations::default());
    let want = r##"digraph "g" {
  rankdir=TB;
  graph [fontname="Helvetica", fontsize=10];
  node [fontname="Helvetica", fontsize=10];
  edge [fontname="Helvetica", fontsize=9];
  "input:x" [label="x\nf32[n, 4]", shape=ellipse, style=filled, fillcolor="#eeeeee"];
  "node:first \"a\"" [label="first \"a\"\nshift\n(1 weight)", shape=box, style="rounded,filled", fillcolor="white"];
  "node:second" [label="second\nscale", shape=box, style="rounded,filled", fillcolor="white"];
  "output:z" [label="z", shape=ellipse, style=filled, fillcolor="#eeeeee"];
  "input:x" -> "node:first \"a\"" [label="x f32[n, 4]"];
  "node:first \"a\"" -> "node:second" [label="y f32[n, 4]"];
  "node:second" -> "output:z" [label="z f32[n, 4]"];
}
"##;
    assert_eq!(dot, want);
}

#[test]
fn annotations_colour_devices_add_notes_and_draw_clusters() {
    let mut ann = DotAnnotations {
        show_weights: true,
        ..Default::default()
    };
    ann.nodes.insert(
        "second".into(),
        NodeAnnotation {
            device: Some("npu-sim".into()),
            note: Some("kernel k, 3.2 µs".into()),
        },
    );
    ann.nodes.insert(
        "first \"a\"".into(),
        NodeAnnotation {
            device: Some("cpu".into()),
            note: None,
        },
    );
    ann.clusters.push(Cluster {
        label: "fused: scale".into(),
        nodes: vec!["second".into(), "absent".into()],
    });
    let dot = to_dot(&graph(), &ann);
    let lines: Vec<&str> = dot.lines().collect();
    // The weight is its own node (widened f16 → f32) with an edge into its reader.
    assert!(lines.contains(&r##"  "weight:w" [label="w\nf32[4]", shape=box, style=filled, fillcolor="#f3f3f3", fontsize=8];"##), "{dot}");
    assert!(
        lines.contains(&r#"  "weight:w" -> "node:first \"a\"" [label="w f32[4]"];"#),
        "{dot}"
    );
    assert!(!dot.contains("(1 weight)"), "{dot}");
    // The cluster holds exactly the annotated NPU node; names it lacks are ignored.
    let start = lines
        .iter()
        .position(|l| *l == r#"  subgraph "cluster_0" {"#)
        .expect(&dot);
    assert_eq!(
        lines[start + 1],
        r##"    label="fused: scale"; style=dashed; color="#888888";"##
    );
    assert_eq!(
        lines[start + 2],
        format!(
            r#"    "node:second" [label="second\nscale\nkernel k, 3.2 µs", shape=box, style="rounded,filled", fillcolor="{}"];"#,
            device_colour("npu-sim")
        )
    );
    assert_eq!(lines[start + 3], "  }");
    assert!(lines.contains(&r##"  "node:first \"a\"" [label="first \"a\"\nshift", shape=box, style="rounded,filled", fillcolor="#cfe2f3"];"##), "{dot}");
    assert_eq!(
        dot.matches("\"node:second\" [label=\"second").count(),
        1,
        "declared once: {dot}"
    );
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
}
