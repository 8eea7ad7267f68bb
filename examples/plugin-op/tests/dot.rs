//! `graph dot` of the example graph before any pass: the committed rendering.

mod common;

use amanuensis_runtime::dot::{to_dot, DotAnnotations};
use amanuensis_runtime::Graph;
use common::*;
use std::path::Path;

#[test]
fn dot_before_passes_matches_the_committed_rendering() {
    let file = model_file();
    let graph = Graph::build(&file.graphs[0], &file.weights, &registry()).unwrap();
    let dot = to_dot(&graph, &DotAnnotations::default());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/swish-mlp.dot");
    if std::env::var_os("AMANUENSIS_BLESS").is_some() {
        std::fs::write(&path, &dot).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        dot, want,
        "rendering changed; if intended, rerun with AMANUENSIS_BLESS=1"
    );
    // Three ops, one input, one output; four edges (weights are folded into labels).
    assert_eq!(dot.matches("shape=box").count(), 3);
    assert_eq!(dot.matches(" -> ").count(), 4);
    assert!(dot.contains(r#""node:act" [label="act\nswish""#), "{dot}");
}
