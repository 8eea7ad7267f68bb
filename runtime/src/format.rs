//! The graph file format, version 1 (`docs/graph-format.md`).
//!
//! A graph file is UTF-8 JSON: model metadata and hyper-parameters, the weights the graphs
//! reference, and named graphs of operator nodes. [`to_string`] writes it with one weight,
//! value or node per line so that diffs stay readable.

use crate::error::{Result, RuntimeError};
use crate::tensor::DType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The `format` tag every graph file carries.
pub const FORMAT_TAG: &str = "amanuensis-graph";
/// The version this runtime reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// One dimension of a declared shape: a number, or a symbol bound at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    /// The size when it is known.
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    /// Whether two dims can denote the same size: equal numbers, equal symbols, or a
    /// symbol against a number (checked at run time).
    pub fn compatible(&self, other: &Dim) -> bool {
        match (self, other) {
            (Dim::Known(a), Dim::Known(b)) => a == b,
            (Dim::Sym(a), Dim::Sym(b)) => a == b,
            _ => true,
        }
    }

    /// Whether a concrete size satisfies this dim (symbols accept anything).
    pub fn accepts(&self, n: usize) -> bool {
        self.known().is_none_or(|k| k == n)
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Known(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Self {
        Dim::Sym(s.to_string())
    }
}

/// Formats a shape as `[1500, 512]` or `[batch, n_tokens, 512]`.
pub fn shape_string(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`FORMAT_TAG`].
    pub format: String,
    /// Format version; this runtime reads [`FORMAT_VERSION`].
    pub version: u32,
    /// What model this is.
    pub model: ModelInfo,
    /// Every weight any graph references, with the dtype and shape the weight file holds.
    pub weights: Vec<WeightDecl>,
    /// The named graphs.
    pub graphs: Vec<GraphDef>,
}

/// Model metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// e.g. `whisper-base`.
    pub name: String,
    /// Model family, e.g. `whisper`.
    pub family: String,
    /// Hyper-parameters, by name.
    pub hyper_parameters: BTreeMap<String, serde_json::Value>,
}

/// A weight as stored in the weight file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightDecl {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// A typed value: a graph input, output or state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueDecl {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// One graph: typed inputs and outputs, state tensors kept between runs, and nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphDef {
    pub name: String,
    pub inputs: Vec<ValueDecl>,
    pub outputs: Vec<ValueDecl>,
    /// Tensors that persist across runs of this graph (zeroed by `reset_states`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<ValueDecl>,
    pub nodes: Vec<NodeDef>,
}

/// One operator application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// Unique within the graph.
    pub name: String,
    /// Operator name, resolved through the registry.
    pub op: String,
    /// Value names: graph inputs, weights, or outputs of other nodes.
    pub inputs: Vec<String>,
    /// Names of the values this node produces.
    pub outputs: Vec<String>,
    /// State tensors the node reads and updates in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    /// Operator attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
}

impl ModelFile {
    /// Parses a graph file from text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ModelFile> {
        // Check the header first so that a file of another version gets a version error
        // rather than a confusing field error.
        let head: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RuntimeError::Format {
                path: origin.to_string(),
                reason: format!("not valid JSON: {e}"),
            })?;
        let tag = head.get("format").and_then(|v| v.as_str());
        if tag != Some(FORMAT_TAG) {
            return Err(RuntimeError::Format {
                path: origin.to_string(),
                reason: format!("missing or wrong \"format\" tag (expected \"{FORMAT_TAG}\")"),
            });
        }
        let version = head.get("version").and_then(|v| v.as_u64());
        if version != Some(FORMAT_VERSION as u64) {
            return Err(RuntimeError::Format {
                path: origin.to_string(),
                reason: format!(
                    "unsupported version {:?}; this build reads version {FORMAT_VERSION}",
                    head.get("version")
                ),
            });
        }
        serde_json::from_value(head).map_err(|e| RuntimeError::Format {
            path: origin.to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads and parses a graph file.
    pub fn load(path: &Path) -> Result<ModelFile> {
        let text =
            crate::files::read_regular_text(path, crate::files::MAX_TEXT_FILE).map_err(|e| {
                RuntimeError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The graph of that name.
    pub fn graph(&self, name: &str) -> Option<&GraphDef> {
        self.graphs.iter().find(|g| g.name == name)
    }

    /// The canonical text form (see [`to_string`]).
    pub fn to_text(&self) -> String {
        to_string(self)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("graph file values serialise")
}

/// Writes the canonical text of a graph file: JSON with one weight, value or node per line.
pub fn to_string(m: &ModelFile) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, "  \"format\": {},", json(&m.format));
    let _ = writeln!(s, "  \"version\": {},", m.version);
    let _ = writeln!(s, "  \"model\": {{");
    let _ = writeln!(s, "    \"name\": {},", json(&m.model.name));
    let _ = writeln!(s, "    \"family\": {},", json(&m.model.family));
    let _ = writeln!(s, "    \"hyper_parameters\": {{");
    let n = m.model.hyper_parameters.len();
    for (i, (k, v)) in m.model.hyper_parameters.iter().enumerate() {
        let comma = if i + 1 < n { "," } else { "" };
        let _ = writeln!(s, "      {}: {}{comma}", json(k), json(v));
    }
    let _ = writeln!(s, "    }}");
    let _ = writeln!(s, "  }},");
    write_list(&mut s, "  ", "weights", &m.weights, true);
    let _ = writeln!(s, "  \"graphs\": [");
    for (gi, g) in m.graphs.iter().enumerate() {
        let _ = writeln!(s, "    {{");
        let _ = writeln!(s, "      \"name\": {},", json(&g.name));
        write_list(&mut s, "      ", "inputs", &g.inputs, true);
        write_list(&mut s, "      ", "outputs", &g.outputs, true);
        if !g.states.is_empty() {
            write_list(&mut s, "      ", "states", &g.states, true);
        }
        write_list(&mut s, "      ", "nodes", &g.nodes, false);
        let comma = if gi + 1 < m.graphs.len() { "," } else { "" };
        let _ = writeln!(s, "    }}{comma}");
    }
    let _ = writeln!(s, "  ]");
    let _ = writeln!(s, "}}");
    s
}

fn write_list<T: Serialize>(s: &mut String, indent: &str, key: &str, items: &[T], comma: bool) {
    let tail = if comma { "," } else { "" };
    if items.is_empty() {
        let _ = writeln!(s, "{indent}\"{key}\": []{tail}");
        return;
    }
    let _ = writeln!(s, "{indent}\"{key}\": [");
    for (i, it) in items.iter().enumerate() {
        let c = if i + 1 < items.len() { "," } else { "" };
        let _ = writeln!(s, "{indent}  {}{c}", json(it));
    }
    let _ = writeln!(s, "{indent}]{tail}");
}
