//! Graphviz (DOT) rendering of a validated graph, for `amanuensis graph dot`.
//!
//! Ops are boxes in execution order, graph inputs and outputs are ellipses, and every edge
//! is labelled with the value it carries and its type. Weights are folded into the label
//! of the node that reads them unless asked for. Optional [`DotAnnotations`] colour nodes
//! by device, add a note line (kernel, time) and draw fused groups as clusters.

use crate::ir::{Graph, ValueSource};
use crate::schedule::Plan;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Extra information drawn on one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeAnnotation {
    /// The device the node is placed on (`cpu`, `npu-sim`, `npu`); sets the fill colour.
    pub device: Option<String>,
    /// One more label line, e.g. the kernel name or a projected time.
    pub note: Option<String>,
}

/// A group of nodes drawn in one box (a fused group, a pipeline stage).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The box's caption.
    pub label: String,
    /// Names of the nodes inside it.
    pub nodes: Vec<String>,
}

/// What to draw besides the graph itself; the default draws the bare graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DotAnnotations {
    /// Per node name.
    pub nodes: BTreeMap<String, NodeAnnotation>,
    /// Boxes around groups of nodes; a node belongs to the first cluster naming it.
    pub clusters: Vec<Cluster>,
    /// Draw each weight as its own node (large models have hundreds).
    pub show_weights: bool,
}

/// Fill colour of a device's nodes.
pub fn device_colour(device: &str) -> &'static str {
    match device {
        "cpu" => "#cfe2f3",
        d if d.starts_with("npu") => "#f9cb9c",
        _ => "#d9d9d9",
    }
}

/// The annotations of a scheduler plan for its executed graph ([`Plan::graph`]): each
/// node coloured by its device with its kernel as the note, and each fused group boxed
/// with its pattern and original nodes as the caption.
pub fn plan_annotations(plan: &Plan) -> DotAnnotations {
    let mut ann = DotAnnotations::default();
    for p in &plan.placements {
        let device = p.device.clone();
        ann.nodes.insert(
            p.node.clone(),
            NodeAnnotation {
                device: Some(device),
                note: Some(p.kernel.clone()),
            },
        );
    }
    for f in &plan.fused {
        // The fused node takes the original nodes' names joined by '+'.
        ann.clusters.push(Cluster {
            label: format!("{}: {}", f.pattern, f.nodes.join(" + ")),
            nodes: vec![f.nodes.join("+")],
        });
    }
    ann
}

/// A DOT string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn op_id(name: &str) -> String {
    quote(&format!("node:{name}"))
}

/// Renders `graph` as a Graphviz digraph.
pub fn to_dot(graph: &Graph, ann: &DotAnnotations) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", quote(&graph.name));
    let _ = writeln!(s, "  rankdir=TB;");
    let _ = writeln!(s, "  graph [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(s, "  node [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(s, "  edge [fontname=\"Helvetica\", fontsize=9];");

    for &v in &graph.inputs {
        let info = &graph.values[v];
        let label = format!("{}\n{}", info.name, info.ty);
        let _ = writeln!(
            s,
            "  {} [label={}, shape=ellipse, style=filled, fillcolor=\"#eeeeee\"];",
            quote(&format!("input:{}", info.name)),
            quote(&label)
        );
    }
    if ann.show_weights {
        for info in graph
            .values
            .iter()
            .filter(|v| v.source == ValueSource::Weight)
        {
            let label = format!("{}\n{}", info.name, info.ty);
            let _ = writeln!(
                s,
                "  {} [label={}, shape=box, style=filled, fillcolor=\"#f3f3f3\", fontsize=8];",
                quote(&format!("weight:{}", info.name)),
                quote(&label)
            );
        }
    }

    // Node statements, grouped by cluster (a node belongs to the first cluster naming it).
    let names: BTreeSet<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut cluster_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (ci, c) in ann.clusters.iter().enumerate() {
        for n in &c.nodes {
            if names.contains(n.as_str()) {
                cluster_of.entry(n.as_str()).or_insert(ci);
            }
        }
    }
    let node_stmt = |ni: usize| -> String {
        let n = &graph.nodes[ni];
        let mut label = format!("{}\n{}", n.name, n.op_name);
        let weights = n
            .inputs
            .iter()
            .filter(|&&v| graph.values[v].source == ValueSource::Weight)
            .count();
        if weights > 0 && !ann.show_weights {
            let _ = write!(
                label,
                "\n({weights} weight{})",
                if weights == 1 { "" } else { "s" }
            );
        }
        let a = ann.nodes.get(&n.name);
        if let Some(note) = a.and_then(|a| a.note.as_deref()) {
            let _ = write!(label, "\n{note}");
        }
        let fill = a
            .and_then(|a| a.device.as_deref())
            .map_or("white", device_colour);
        format!(
            "{} [label={}, shape=box, style=\"rounded,filled\", fillcolor={}];",
            op_id(&n.name),
            quote(&label),
            quote(fill)
        )
    };
    for (ci, c) in ann.clusters.iter().enumerate() {
        let members: Vec<usize> = graph
            .order
            .iter()
            .copied()
            .filter(|&ni| cluster_of.get(graph.nodes[ni].name.as_str()) == Some(&ci))
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  subgraph {} {{", quote(&format!("cluster_{ci}")));
        let _ = writeln!(
            s,
            "    label={}; style=dashed; color=\"#888888\";",
            quote(&c.label)
        );
        for ni in members {
            let _ = writeln!(s, "    {}", node_stmt(ni));
        }
        let _ = writeln!(s, "  }}");
    }
    for &ni in &graph.order {
        if !cluster_of.contains_key(graph.nodes[ni].name.as_str()) {
            let _ = writeln!(s, "  {}", node_stmt(ni));
        }
    }
    for &v in &graph.outputs {
        let info = &graph.values[v];
        let _ = writeln!(
            s,
            "  {} [label={}, shape=ellipse, style=filled, fillcolor=\"#eeeeee\"];",
            quote(&format!("output:{}", info.name)),
            quote(&info.name)
        );
    }

    // Edges, in execution order of the consumer; each labelled with the value it carries.
    let source_id = |v: usize| -> Option<String> {
        let info = &graph.values[v];
        match &info.source {
            ValueSource::Input(_) => Some(quote(&format!("input:{}", info.name))),
            ValueSource::Weight => ann
                .show_weights
                .then(|| quote(&format!("weight:{}", info.name))),
            ValueSource::Node { node, .. } => Some(op_id(&graph.nodes[*node].name)),
        }
    };
    let edge_label = |v: usize| {
        let info = &graph.values[v];
        quote(&format!("{} {}", info.name, info.ty))
    };
    for &ni in &graph.order {
        let n = &graph.nodes[ni];
        for &v in &n.inputs {
            if let Some(from) = source_id(v) {
                let _ = writeln!(
                    s,
                    "  {from} -> {} [label={}];",
                    op_id(&n.name),
                    edge_label(v)
                );
            }
        }
    }
    for &v in &graph.outputs {
        if let Some(from) = source_id(v) {
            let _ = writeln!(
                s,
                "  {from} -> {} [label={}];",
                quote(&format!("output:{}", graph.values[v].name)),
                edge_label(v)
            );
        }
    }
    let _ = writeln!(s, "}}");
    s
}
