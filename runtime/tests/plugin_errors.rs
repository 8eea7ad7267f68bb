//! Mistakes in operator code that the runtime reports instead of running on: a kernel
//! that disagrees with its own shape inference, and panics inside plugin code.

use amanuensis_runtime::op::{expect_inputs, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{
    Graph, ModelFile, OpError, Plugin, Registry, RuntimeError, Session, Tensor, WeightStore,
};
use std::sync::Arc;

/// Infers "same shape as x" but returns one more element (or an i32 tensor).
#[derive(Debug)]
struct Stretch {
    wrong_dtype: bool,
}

impl Operator for Stretch {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        Ok(vec![inputs[0].clone()])
    }
    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let n = inputs[0].numel();
        if self.wrong_dtype {
            return Ok(vec![Tensor::from_i32(&[n], vec![0; n])?]);
        }
        Ok(vec![ctx.alloc_f32(&[n + 1])])
    }
}

struct StretchDef;
impl OpDef for StretchDef {
    fn name(&self) -> &str {
        "stretch"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["wrong_dtype"])?;
        Ok(Box::new(Stretch {
            wrong_dtype: attrs.bool_or("wrong_dtype", false)?,
        }))
    }
}

fn one_node_graph(op: &str, attrs: &str) -> ModelFile {
    let text = format!(
        r#"{{"format": "amanuensis-graph", "version": 1,
            "model": {{"name": "t", "family": "test", "hyper_parameters": {{}}}},
            "weights": [],
            "graphs": [{{"name": "main",
              "inputs": [{{"name": "x", "dtype": "f32", "shape": [3]}}],
              "outputs": [{{"name": "y", "dtype": "f32", "shape": [3]}}],
              "nodes": [{{"name": "n1", "op": "{op}", "inputs": ["x"], "outputs": ["y"], "attrs": {attrs}}}]}}]}}"#
    );
    ModelFile::parse(&text, "test.graph").unwrap()
}

fn run(file: &ModelFile, reg: &Registry) -> Result<Vec<Tensor>, RuntimeError> {
    let graph = Graph::build(&file.graphs[0], &file.weights, reg)?;
    let mut s = Session::new(Arc::new(graph), &WeightStore::default())?;
    s.reset_states(&Default::default())?;
    s.run(&[&Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]).unwrap()])
}

#[test]
fn kernel_disagreeing_with_its_inference_is_caught_by_the_executor() {
    let mut reg = Registry::new();
    reg.registering("broken-ops").register(StretchDef).unwrap();
    // Inference is consistent, so the graph validates; the kernel's output is not.
    let err = run(&one_node_graph("stretch", "{}"), &reg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "running graph 'main', node 'n1' (stretch): output 'y' is f32[4] but shape inference promised f32[3]"
    );
    let err = run(&one_node_graph("stretch", r#"{"wrong_dtype": true}"#), &reg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "running graph 'main', node 'n1' (stretch): output 'y' is i32[3] but shape inference promised f32[3]"
    );
}

/// Panics in `eval`, and optionally while registering.
struct Panicky {
    in_register: bool,
}

#[derive(Debug)]
struct Boom;
impl Operator for Boom {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        Ok(vec![inputs[0].clone()])
    }
    fn eval(&self, _: &mut EvalContext, _: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        panic!("kernel bug: tile index out of range")
    }
}
struct BoomDef;
impl OpDef for BoomDef {
    fn name(&self) -> &str {
        "boom"
    }
    fn build(&self, _: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        Ok(Box::new(Boom))
    }
}

impl Plugin for Panicky {
    fn name(&self) -> &'static str {
        "panicky"
    }
    fn version(&self) -> &'static str {
        "0.1.0"
    }
    fn register(&self, registry: &mut Registry) -> Result<(), RuntimeError> {
        registry.register(BoomDef)?;
        if self.in_register {
            panic!("cannot find my configuration");
        }
        Ok(())
    }
}

#[test]
fn panics_in_exported_plugin_code_become_errors() {
    // `register_exported` is the body `export_plugin!` generates: a loaded library's
    // panic cannot unwind into the host's copy of std, so it is caught on the plugin side.
    let mut reg = Registry::new();
    let err =
        amanuensis_runtime::plugin::register_exported(&Panicky { in_register: true }, &mut reg)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "operator registry: plugin 'panicky' panicked while registering: cannot find my configuration"
    );
    assert_eq!(
        reg.names().count(),
        0,
        "nothing of a failed registration stays"
    );

    amanuensis_runtime::plugin::register_exported(&Panicky { in_register: false }, &mut reg)
        .unwrap();
    let err = run(&one_node_graph("boom", "{}"), &reg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "running graph 'main', node 'n1' (boom): plugin code panicked in eval: kernel bug: tile index out of range"
    );
}
