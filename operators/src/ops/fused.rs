//! Fused ops produced by the fusion patterns of [`crate::npu::patterns`] and
//! [`crate::patterns`]. Their CPU evaluation gives the unfused nodes' bits, so a graph
//! computes the same on the CPU whether it was fused or not; the NPU kernels of the chain
//! ops are the catalogue's fused kernels.

use super::conv::Conv1d;
use super::f32_input;
use super::nn::{gelu_in_place, linear_type, Linear, FUSABLE_LINEAR_ATTRS};
use crate::npu;
use amanuensis_kernels::cpu;
use amanuensis_runtime::npu::NpuBinding;
use amanuensis_runtime::op::{Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{OpError, Tensor};

/// `gelu(linear(x, w, b?))`: inputs `[x, w, b?]` as `linear`. Attributes: the linear's
/// (`gemv_max_rows`, `bf16_products`, `bf16x3`, `stream_rows`, `norm_eps` with its inputs `[x,
/// gamma, beta, w, b?]`) and the GELU's (`f32_math`), each meaning what it means on the
/// unfused op.
pub struct LinearGeluDef;
#[derive(Debug)]
struct LinearGelu {
    linear: Linear,
    f32_math: bool,
}

impl OpDef for LinearGeluDef {
    fn name(&self) -> &str {
        "linear_gelu"
    }
    fn summary(&self) -> &str {
        "y = gelu(x · wᵀ + b), the fused linear → gelu (bias optional)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        let mut known = FUSABLE_LINEAR_ATTRS.to_vec();
        known.extend(["f32_math", "norm_eps"]);
        attrs.only(&known)?;
        Ok(Box::new(LinearGelu {
            linear: Linear::from_attrs(attrs)?,
            f32_math: attrs.bool_or("f32_math", false)?,
        }))
    }
}

impl Operator for LinearGelu {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        Ok(vec![self.linear.infer_f32(inputs)?])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let mut y = self.linear.eval_f32(ctx, inputs)?;
        gelu_in_place(y.f32s_mut()?, self.f32_math);
        Ok(vec![y])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        // The catalogue's GEMM has no layer-norm prologue.
        if self.linear.has_norm() {
            return None;
        }
        static MATMUL_BIAS_GELU_KERNEL: NpuBinding = NpuBinding::of(&npu::MatmulBiasGeluKernel);
        MATMUL_BIAS_GELU_KERNEL.offer(target)
    }
}

/// `linear(x, w, b?) + residual`: inputs `[x, w, b, residual]` with `bias: true`, or
/// `[x, w, residual]` with `bias: false`; the residual has the linear output's shape. The
/// linear's attributes carry over as on `linear_gelu`.
pub struct LinearResidualDef;
#[derive(Debug)]
struct LinearResidual {
    bias: bool,
    linear: Linear,
    npu: NpuBinding,
}

impl OpDef for LinearResidualDef {
    fn name(&self) -> &str {
        "linear_residual"
    }
    fn summary(&self) -> &str {
        "y = (x · wᵀ + b) + residual, the fused linear → add (attribute bias: whether b is an input)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        let mut known = FUSABLE_LINEAR_ATTRS.to_vec();
        known.push("bias");
        attrs.only(&known)?;
        let bias = attrs.bool_or("bias", false)?;
        Ok(Box::new(LinearResidual {
            bias,
            linear: Linear::from_attrs(attrs)?,
            npu: NpuBinding::owned(npu::MatmulBiasResidualKernel { bias }),
        }))
    }
}

impl LinearResidual {
    /// Inputs the op takes, by name.
    fn names(&self) -> &'static [&'static str] {
        if self.bias {
            &["x", "w", "b", "residual"]
        } else {
            &["x", "w", "residual"]
        }
    }
}

impl Operator for LinearResidual {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        amanuensis_runtime::op::expect_inputs(inputs, self.names())?;
        let (lin, r) = inputs.split_at(inputs.len() - 1);
        let y = linear_type(lin)?;
        let r = &r[0];
        if !r.compatible(&y) {
            return Err(OpError(format!(
                "residual {r} must have the linear output's type {y} (no broadcast)"
            )));
        }
        Ok(vec![y])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        amanuensis_runtime::op::expect_inputs(inputs, self.names())?;
        let (lin, r) = inputs.split_at(inputs.len() - 1);
        let mut y = self.linear.eval_f32(ctx, lin)?;
        if r[0].shape() != y.shape() {
            return Err(OpError(format!(
                "residual {:?} differs from the linear output {:?}",
                r[0].shape(),
                y.shape()
            )));
        }
        // One f32 add per element, as the unfused `add` (IEEE addition is commutative, so
        // the order of the add's operands does not change the bits).
        cpu::add_inplace(y.f32s_mut()?, &f32_input(r[0], "residual")?);
        Ok(vec![y])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.npu.offer(target)
    }
}

/// `gelu(conv1d(x, w, b))` with conv1d's `stride` and `padding`.
pub struct Conv1dGeluDef;
#[derive(Debug)]
struct Conv1dGelu {
    conv: Conv1d,
    npu: NpuBinding,
}

impl OpDef for Conv1dGeluDef {
    fn name(&self) -> &str {
        "conv1d_gelu"
    }
    fn summary(&self) -> &str {
        "y = gelu(conv1d(x, w, b)), the fused conv1d → gelu"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        let conv = Conv1d::from_attrs(attrs)?;
        let (stride, padding) = conv.geometry();
        Ok(Box::new(Conv1dGelu {
            conv,
            npu: NpuBinding::owned(npu::Conv1dGeluKernel { stride, padding }),
        }))
    }
}

impl Operator for Conv1dGelu {
    fn infer(&self, inputs: &[ValueType], states: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        self.conv.infer(inputs, states)
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let mut out = self.conv.eval(ctx, inputs)?;
        for y in &mut out {
            cpu::gelu(y.f32s_mut()?);
        }
        Ok(out)
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.npu.offer(target)
    }
}

/// Several `linear`s of one input as one product: `y_i = x · w_iᵀ + b_i`. Inputs `[x,
/// w_0, b_0?, w_1, b_1?, …]`, attribute `bias` a list saying for each part whether its
/// `b` is present; one output per part. With `norm_eps`, x is layer-normalised first
/// (inputs `[x, gamma, beta, w_0, …]`), as on `linear`. The linear's attributes (`gemv_max_rows`,
/// `bf16_products`, `bf16x3`, `stream_rows`, `f16_output`) apply to every part as on `linear`. On
/// the CPU, int8 weights run as one product (the input quantized once, every weight's
/// columns split over the threads together); each output has the bits of its `linear`.
pub struct LinearGroupDef;
#[derive(Debug)]
struct LinearGroup {
    linear: Linear,
    /// For each part, whether it has a bias input.
    bias: Vec<bool>,
    f16_output: bool,
}

/// Parts of a `linear_group` with f16 outputs computed together before their rounding.
const F16_PARTS_AT_ONCE: usize = 2;

/// The attributes of `linear` that `linear_group` takes.
pub(crate) const GROUP_LINEAR_ATTRS: [&str; 5] = [
    "gemv_max_rows",
    "bf16_products",
    "bf16x3",
    "stream_rows",
    "f16_output",
];

impl OpDef for LinearGroupDef {
    fn name(&self) -> &str {
        "linear_group"
    }
    fn summary(&self) -> &str {
        "y_i = x · w_iᵀ + b_i for several weights of one input, as one product (attribute bias: a list, whether each part has b)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        let mut known = GROUP_LINEAR_ATTRS.to_vec();
        known.extend(["bias", "norm_eps"]);
        attrs.only(&known)?;
        let bias = match attrs.0.get("bias") {
            Some(serde_json::Value::Array(v)) if !v.is_empty() => v
                .iter()
                .map(|b| b.as_bool())
                .collect::<Option<Vec<bool>>>()
                .ok_or_else(|| OpError("attribute 'bias' must be a list of booleans".into()))?,
            _ => {
                return Err(OpError(
                    "attribute 'bias' must be a non-empty list of booleans, one per part".into(),
                ))
            }
        };
        Ok(Box::new(LinearGroup {
            linear: Linear::from_attrs(attrs)?,
            bias,
            f16_output: attrs.bool_or("f16_output", false)?,
        }))
    }
}

impl LinearGroup {
    /// The inputs of each part (`[w, b?]`) after `x` (and the norm's gamma and beta), or
    /// an error naming the count.
    fn parts<'a, T>(&self, inputs: &'a [T]) -> Result<Vec<&'a [T]>, OpError> {
        let first = if self.linear.has_norm() { 3 } else { 1 };
        let want = first + self.bias.iter().map(|&b| 1 + b as usize).sum::<usize>();
        if inputs.len() != want {
            let norm = if first == 3 { ", gamma, beta" } else { "" };
            return Err(OpError(format!(
                "expected {want} inputs (x{norm}, then w and the biases the 'bias' list names), got {}",
                inputs.len()
            )));
        }
        let mut at = first;
        Ok(self
            .bias
            .iter()
            .map(|&b| {
                let n = 1 + b as usize;
                at += n;
                &inputs[at - n..at]
            })
            .collect())
    }
}

impl Operator for LinearGroup {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        let parts = self.parts(inputs)?;
        if self.linear.has_norm() {
            Linear::check_norm_types(&inputs[0], &inputs[1], &inputs[2])?;
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut ins = vec![inputs[0].clone()];
                ins.extend(p.iter().cloned());
                let mut y = linear_type(&ins).map_err(|e| OpError(format!("part {i}: {e}")))?;
                if self.f16_output {
                    y.dtype = amanuensis_runtime::DType::F16;
                }
                Ok(y)
            })
            .collect()
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let parts: Vec<(&Tensor, Option<&Tensor>)> = self
            .parts(inputs)?
            .into_iter()
            .map(|p| (p[0], p.get(1).copied()))
            .collect();
        let norm = self.linear.has_norm().then(|| (inputs[1], inputs[2]));
        if !self.f16_output {
            return self.linear.eval_group_f32(ctx, inputs[0], norm, &parts);
        }
        // Rounded to f16 a few parts at a time, so that the f32 products (megabytes each
        // for the encoder's 1,500 rows) are rounded while in cache and their buffers reused.
        let mut out = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(F16_PARTS_AT_ONCE) {
            for y in self.linear.eval_group_f32(ctx, inputs[0], norm, chunk)? {
                out.push(y.narrow_to_f16()?);
                ctx.recycle(y);
            }
        }
        Ok(out)
    }
}
