//! Model-agnostic dataflow-graph runtime.
//!
//! A model is a [`format::ModelFile`] (named graphs of operator nodes, weight
//! declarations, hyper-parameters) plus a safetensors weight file. Loading validates
//! every graph against an operator [`registry::Registry`] into an [`ir::Graph`]; an
//! [`executor::Session`] runs a graph on the CPU with buffer reuse by liveness and keeps
//! the graph's state tensors (e.g. a KV cache) between runs. Nothing here knows Whisper.
//!
//! A complete round trip with a one-op graph and an operator defined on the spot:
//!
//! ```
//! use amanuensis_runtime::op::{expect_inputs, Attrs, EvalContext, OpDef, Operator, ValueType};
//! use amanuensis_runtime::{Graph, ModelFile, OpError, Registry, Session, Tensor, WeightStore};
//!
//! #[derive(Debug)]
//! struct Double;
//! impl Operator for Double {
//!     fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
//!         expect_inputs(inputs, &["x"])?;
//!         Ok(vec![inputs[0].clone()])
//!     }
//!     fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
//!         let mut out = ctx.alloc_f32(inputs[0].shape());
//!         for (o, x) in out.f32s_mut()?.iter_mut().zip(inputs[0].f32s()?) {
//!             *o = 2.0 * x;
//!         }
//!         Ok(vec![out])
//!     }
//! }
//! struct DoubleDef;
//! impl OpDef for DoubleDef {
//!     fn name(&self) -> &str { "double" }
//!     fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
//!         attrs.only(&[])?;
//!         Ok(Box::new(Double))
//!     }
//! }
//!
//! let text = r#"{
//!   "format": "amanuensis-graph", "version": 1,
//!   "model": {"name": "demo", "family": "demo", "hyper_parameters": {}},
//!   "weights": [],
//!   "graphs": [{
//!     "name": "main",
//!     "inputs": [{"name": "x", "dtype": "f32", "shape": ["n"]}],
//!     "outputs": [{"name": "y", "dtype": "f32", "shape": ["n"]}],
//!     "nodes": [{"name": "y", "op": "double", "inputs": ["x"], "outputs": ["y"]}]
//!   }]
//! }"#;
//! let file = ModelFile::parse(text, "demo.graph")?;
//! let mut registry = Registry::new();
//! registry.register(DoubleDef)?;
//! let graph = Graph::build(&file.graphs[0], &file.weights, &registry)?;
//! let mut session = Session::new(std::sync::Arc::new(graph), &WeightStore::default())?;
//! session.reset_states(&Default::default())?;
//! let x = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.5])?;
//! let y = session.run(&[&x])?;
//! assert_eq!(y[0].f32s()?, &[2.0, 4.0, 7.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod device;
pub mod dot;
pub mod error;
pub mod executor;
pub mod files;
pub mod format;
pub mod fusion;
pub mod ir;
pub mod memory;
pub mod models;
pub mod npu;
pub mod op;
pub mod plan;
pub mod plugin;
pub mod quant;
pub mod registry;
pub mod schedule;
pub mod tensor;
pub mod trace;
pub mod weights;

pub use error::{OpError, RuntimeError};
pub use executor::{RunStats, Session};
pub use format::{Dim, ModelFile};
pub use ir::Graph;
pub use op::{Attrs, EvalContext, OpCatalog, OpDef, Operator, ValueType};
pub use plugin::{load_plugin, Plugin, PluginError, PluginInfo};
pub use registry::Registry;
pub use tensor::{DType, F16Buf, Tensor};
pub use weights::WeightStore;
