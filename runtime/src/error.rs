//! Error types. Every error names what failed and where (file, graph, node, op).

use std::path::PathBuf;

/// Error raised by an operator while building, inferring or evaluating; the runtime wraps
/// it with the graph and node it happened in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    /// Build an error from anything printable.
    pub fn new(msg: impl Into<String>) -> Self {
        OpError(msg.into())
    }
}

impl From<String> for OpError {
    fn from(s: String) -> Self {
        OpError(s)
    }
}

impl From<&str> for OpError {
    fn from(s: &str) -> Self {
        OpError(s.to_string())
    }
}

/// Everything the runtime can report.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The graph file is not valid JSON of the expected shape, or has the wrong version.
    #[error("graph file {path}: {reason}")]
    Format { path: String, reason: String },
    /// A graph failed validation.
    #[error("graph '{graph}', node '{node}': {reason}")]
    Graph {
        graph: String,
        node: String,
        reason: String,
    },
    /// The weight file is unreadable or does not match the graph's declarations.
    #[error("weights {path}: {reason}")]
    Weights { path: String, reason: String },
    /// A graph run failed.
    #[error("running graph '{graph}', node '{node}' ({op}): {reason}")]
    Exec {
        graph: String,
        node: String,
        op: String,
        reason: String,
    },
    /// Inputs given to a run do not match the graph's declared inputs.
    #[error("graph '{graph}': {reason}")]
    Input { graph: String, reason: String },
    /// A device failed while running a node (the session re-runs the graph on the CPU).
    #[error("running graph '{graph}', node '{node}': device {device} failed: {reason}")]
    DeviceFault {
        graph: String,
        node: String,
        device: String,
        reason: String,
    },
    /// Two operator definitions claim the same name, or a lookup failed.
    #[error("operator registry: {0}")]
    Registry(String),
}

/// Result alias used across the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
