//! The operator plugin API (v0): what an op is (name, attributes), how its output types
//! follow from its input types, and how it evaluates on the CPU.
//!
//! An [`OpDef`] is registered once per op name; the loader calls [`OpDef::build`] for every
//! node with that node's attributes, getting an [`Operator`] configured for that node.

use crate::error::OpError;
use crate::format::{shape_string, Dim};
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::fmt;

/// Static type of a value: dtype and (possibly symbolic) shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl ValueType {
    /// A type from a dtype and dims.
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        ValueType { dtype, shape }
    }

    /// An f32 type of known shape.
    pub fn f32(shape: &[usize]) -> Self {
        ValueType {
            dtype: DType::F32,
            shape: shape.iter().map(|&d| Dim::Known(d)).collect(),
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Whether `other` may denote the same type (dtype equal, dims compatible).
    pub fn compatible(&self, other: &ValueType) -> bool {
        self.dtype == other.dtype
            && self.shape.len() == other.shape.len()
            && self
                .shape
                .iter()
                .zip(&other.shape)
                .all(|(a, b)| a.compatible(b))
    }

    /// Whether a weight tensor can stand for a value of this type: as [`ValueType::accepts`],
    /// and an f16 tensor for an f32 value (weights stay in their stored type; operators
    /// widen them exactly where they read them).
    pub fn accepts_weight(&self, t: &Tensor) -> bool {
        let dtype_ok =
            t.dtype() == self.dtype || (t.dtype() == DType::F16 && self.dtype == DType::F32);
        dtype_ok
            && t.shape().len() == self.shape.len()
            && self.shape.iter().zip(t.shape()).all(|(d, &n)| d.accepts(n))
    }

    /// Whether a concrete tensor satisfies this type.
    pub fn accepts(&self, t: &Tensor) -> bool {
        t.dtype() == self.dtype
            && t.shape().len() == self.shape.len()
            && self.shape.iter().zip(t.shape()).all(|(d, &n)| d.accepts(n))
    }

    /// Errors unless the dtype is `want`; `what` names the input.
    pub fn expect_dtype(&self, want: DType, what: &str) -> Result<(), OpError> {
        if self.dtype != want {
            return Err(OpError(format!(
                "{what}: expected {want}, got {}",
                self.dtype
            )));
        }
        Ok(())
    }

    /// Errors unless the rank is `want`.
    pub fn expect_rank(&self, want: usize, what: &str) -> Result<(), OpError> {
        if self.rank() != want {
            return Err(OpError(format!(
                "{what}: expected rank {want}, got {}",
                self
            )));
        }
        Ok(())
    }

    /// The last dim (errors on a scalar).
    pub fn last(&self, what: &str) -> Result<&Dim, OpError> {
        self.shape
            .last()
            .ok_or_else(|| OpError(format!("{what}: expected at least rank 1, got a scalar")))
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, shape_string(&self.shape))
    }
}

/// Errors unless two dims may be equal; `what` says which dims are compared.
pub fn expect_same_dim(a: &Dim, b: &Dim, what: &str) -> Result<(), OpError> {
    if a.compatible(b) {
        Ok(())
    } else {
        Err(OpError(format!("{what}: {a} vs {b}")))
    }
}

/// A node's attributes with typed accessors whose errors name the attribute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, serde_json::Value>);

impl Attrs {
    fn get(&self, key: &str) -> Result<&serde_json::Value, OpError> {
        self.0
            .get(key)
            .ok_or_else(|| OpError(format!("missing attribute '{key}'")))
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize, OpError> {
        let v = self.get(key)?;
        v.as_u64().map(|n| n as usize).ok_or_else(|| {
            OpError(format!(
                "attribute '{key}': expected a non-negative integer, got {v}"
            ))
        })
    }

    /// An optional non-negative integer with a default.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, OpError> {
        if self.0.contains_key(key) {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    /// A required integer (may be negative, e.g. an axis).
    pub fn i64(&self, key: &str) -> Result<i64, OpError> {
        let v = self.get(key)?;
        v.as_i64()
            .ok_or_else(|| OpError(format!("attribute '{key}': expected an integer, got {v}")))
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64, OpError> {
        let v = self.get(key)?;
        v.as_f64()
            .ok_or_else(|| OpError(format!("attribute '{key}': expected a number, got {v}")))
    }

    /// An optional boolean with a default.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, OpError> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                OpError(format!(
                    "attribute '{key}': expected true or false, got {v}"
                ))
            }),
        }
    }

    /// Errors on any attribute not in `known` (catches typos in graph files).
    pub fn only(&self, known: &[&str]) -> Result<(), OpError> {
        for k in self.0.keys() {
            if !known.contains(&k.as_str()) {
                return Err(OpError(format!(
                    "unknown attribute '{k}' (this op takes: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

/// What an op evaluation may use besides its inputs: the buffers the host arena planned
/// for the node's outputs and the node's state tensors.
pub struct EvalContext<'a> {
    /// Buffers for the outputs, in output order (the next one last).
    buffers: Vec<Vec<f32>>,
    /// Buffers the op gave back ([`EvalContext::recycle`]), used once the planned ones
    /// are taken.
    spare: Vec<Vec<f32>>,
    states: &'a mut [Tensor],
}

impl<'a> EvalContext<'a> {
    /// A context over the node's states (in the node's order); outputs get new buffers.
    pub fn new(states: &'a mut [Tensor]) -> Self {
        EvalContext {
            buffers: Vec::new(),
            spare: Vec::new(),
            states,
        }
    }

    /// A context that hands out `buffers` (one per output, in output order) for the
    /// node's f32 outputs.
    pub fn with_buffers(mut buffers: Vec<Vec<f32>>, states: &'a mut [Tensor]) -> Self {
        buffers.reverse();
        EvalContext {
            buffers,
            spare: Vec::new(),
            states,
        }
    }

    /// A zero-filled f32 tensor for the node's next output, in the buffer planned for it
    /// when there is one. Ops allocate their outputs with this, in output order.
    pub fn alloc_f32(&mut self, shape: &[usize]) -> Tensor {
        let n = crate::tensor::numel(shape);
        let mut buf = self.next_buffer();
        if buf.len() >= n {
            buf[..n].fill(0.0);
            return Tensor::from_f32_prefix(shape, buf).expect("the buffer holds the shape");
        }
        buf.clear();
        buf.resize(n, 0.0);
        Tensor::from_f32(shape, buf).expect("the buffer has the requested length")
    }

    /// An f32 tensor for the node's next output, for an op whose kernel writes every
    /// element without reading it: the planned buffer's old contents are left in place
    /// rather than zeroed first, which for an encoder linear's output (1500 × 2048 values,
    /// 12 MB) is a pass over memory the kernel then repeats. Only a buffer shorter than
    /// the output is extended with zeros.
    pub fn alloc_f32_overwritten(&mut self, shape: &[usize]) -> Tensor {
        let n = crate::tensor::numel(shape);
        let mut buf = self.next_buffer();
        if buf.len() >= n {
            // Shortened by the tensor, which gives it back whole to the arena.
            return Tensor::from_f32_prefix(shape, buf).expect("the buffer holds the shape");
        }
        buf.resize(n, 0.0);
        Tensor::from_f32(shape, buf).expect("the buffer has the requested length")
    }

    /// The planned buffer for the next output, else one the op gave back, else a new one.
    fn next_buffer(&mut self) -> Vec<f32> {
        self.buffers
            .pop()
            .or_else(|| self.spare.pop())
            .unwrap_or_default()
    }

    /// Gives back an f32 tensor the op no longer needs, so that a later
    /// [`alloc_f32`](Self::alloc_f32), once the planned buffers are taken, reuses it.
    pub fn recycle(&mut self, t: Tensor) {
        if let Some(buf) = t.into_f32_lengthened() {
            self.spare.push(buf);
        }
    }

    /// The node's state tensors, updated in place.
    pub fn states(&mut self) -> &mut [Tensor] {
        self.states
    }

    /// The buffers no output used, in output order of the outputs they were meant for
    /// (outputs allocated first take theirs first, so these are the last outputs').
    pub fn into_unused(mut self) -> Vec<Vec<f32>> {
        self.buffers.reverse();
        self.buffers
    }
}

/// An operator configured for one node.
pub trait Operator: Send + Sync + fmt::Debug {
    /// Output types from input types (and the node's state types). Errors say which input
    /// is wrong and why.
    fn infer(&self, inputs: &[ValueType], states: &[ValueType]) -> Result<Vec<ValueType>, OpError>;

    /// Evaluate on the CPU. Inputs have been checked against the declared types where the
    /// dims are known; ops check the symbolic ones themselves.
    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError>;

    /// The kernel this op offers the device family `target` (say [`crate::npu::TARGET`]),
    /// as the object type that family documents (the NPU family takes a
    /// [`crate::npu::NpuBinding`]). A device that gets no kernel, or one of another type,
    /// places the node on the host and says why.
    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        let _ = target;
        None
    }
}

/// Where a graph's op names are looked up when it is built (the [`crate::Registry`]).
pub trait OpCatalog {
    /// The op registered under `name`.
    fn op_def(&self, name: &str) -> Option<&std::sync::Arc<dyn OpDef>>;

    /// Why `name` is no op here (with the nearest known name, if any).
    fn unknown_op_message(&self, name: &str) -> String;
}

/// An op kind: its name and how to build it from a node's attributes.
pub trait OpDef: Send + Sync {
    /// The name graph files use.
    fn name(&self) -> &str;

    /// One line on what the op computes (shown by `graph inspect` and in registry errors).
    fn summary(&self) -> &str {
        ""
    }

    /// Configure the op for a node; attribute errors name the attribute.
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError>;
}

/// Checks the input count; `names` are the inputs' names for the message.
pub fn expect_inputs<T>(inputs: &[T], names: &[&str]) -> Result<(), OpError> {
    if inputs.len() != names.len() {
        return Err(OpError(format!(
            "expected {} inputs ({}), got {}",
            names.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EvalContext;

    #[test]
    fn outputs_for_overwriting_keep_their_buffer_and_are_zeroed_only_where_it_was_short() {
        let planned = vec![vec![1.0f32; 6], vec![2.0f32; 2]];
        let mut ctx = EvalContext::with_buffers(planned, &mut []);
        // The first output takes the first planned buffer, left as it was, cut to length.
        let a = ctx.alloc_f32_overwritten(&[2, 2]);
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(a.f32s().unwrap(), &[1.0; 4]);
        // The second buffer is shorter than its output: the rest is zeros.
        let b = ctx.alloc_f32_overwritten(&[5]);
        assert_eq!(b.f32s().unwrap(), &[2.0, 2.0, 0.0, 0.0, 0.0]);
        // With the planned buffers taken, a given-back one is reused, then new ones.
        ctx.recycle(a);
        assert_eq!(ctx.alloc_f32_overwritten(&[3]).f32s().unwrap(), &[1.0; 3]);
        assert_eq!(ctx.alloc_f32_overwritten(&[2]).f32s().unwrap(), &[0.0; 2]);
        // `alloc_f32` zeroes whatever buffer it takes.
        let mut ctx = EvalContext::with_buffers(vec![vec![3.0f32; 4]], &mut []);
        assert_eq!(ctx.alloc_f32(&[4]).f32s().unwrap(), &[0.0; 4]);
    }

    #[test]
    fn a_buffer_an_output_shortened_goes_back_whole() {
        // A slot's values take turns: a small output in a large buffer, then a large one.
        // The buffer goes back at its old length, so the large output finds it long enough
        // and nothing is written before the kernel writes it.
        let mut ctx = EvalContext::with_buffers(vec![vec![1.0f32; 6]], &mut []);
        let small = ctx.alloc_f32_overwritten(&[2]);
        assert_eq!(small.f32s().unwrap(), &[1.0; 2]);
        ctx.recycle(small);
        assert_eq!(ctx.alloc_f32_overwritten(&[6]).f32s().unwrap(), &[1.0; 6]);
        // The same through a zero-filled output: zeros where it was, the rest as it was.
        let mut ctx = EvalContext::with_buffers(vec![vec![1.0f32; 5]], &mut []);
        let zeroed = ctx.alloc_f32(&[2]);
        assert_eq!(zeroed.f32s().unwrap(), &[0.0; 2]);
        ctx.recycle(zeroed);
        assert_eq!(
            ctx.alloc_f32_overwritten(&[5]).f32s().unwrap(),
            &[0.0, 0.0, 1.0, 1.0, 1.0]
        );
    }
}
