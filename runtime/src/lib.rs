//! Model-agnostic dataflow-graph runtime.
//!
//! A model is a [`format::ModelFile`] (named graphs of operator nodes, weight
//! declarations, hyper-parameters) plus a safetensors weight file. Loading validates
//! every graph against an operator [`registry::Registry`] into an [`ir::Graph`]; an
//! [`executor::Session`] runs a graph on the CPU with buffer reuse by liveness and keeps
//! the graph's state tensors (e.g. a KV cache) between runs. Nothing here knows Whisper.

pub mod error;
pub mod executor;
pub mod format;
pub mod ir;
pub mod memory;
pub mod op;
pub mod registry;
pub mod tensor;
pub mod weights;

pub use error::{OpError, RuntimeError};
pub use executor::{RunStats, Session};
pub use format::{Dim, ModelFile};
pub use ir::Graph;
pub use op::{Attrs, EvalContext, OpDef, Operator, ValueType};
pub use registry::Registry;
pub use tensor::{DType, Tensor};
pub use weights::WeightStore;
