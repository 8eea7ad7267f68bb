//! Fused ops produced by the fusion patterns of [`crate::npu::patterns`]. Their CPU
//! evaluation is the unfused CPU chain, so a graph computes the same bits on the CPU
//! whether it was fused or not; their NPU kernels are the catalogue's fused kernels.

use super::conv::Conv1d;
use super::f32_input;
use super::nn::{gelu_in_place, linear_type, Linear, FUSABLE_LINEAR_ATTRS};
use crate::npu;
use amanuensis_kernels::cpu;
use amanuensis_runtime::npu::NpuBinding;
use amanuensis_runtime::op::{Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{OpError, Tensor};

/// `gelu(linear(x, w, b?))`: inputs `[x, w, b?]` as `linear`. Attributes: the linear's
/// (`gemv_max_rows`, `bf16_products`, `stream_rows`) and the GELU's (`f32_math`), each
/// meaning what it means on the unfused op.
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
        known.push("f32_math");
        attrs.only(&known)?;
        Ok(Box::new(LinearGelu {
            linear: Linear::from_attrs(attrs)?,
            f32_math: attrs.bool_or("f32_math", false)?,
        }))
    }
}

impl Operator for LinearGelu {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        Ok(vec![linear_type(inputs)?])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let mut y = self.linear.eval_f32(ctx, inputs)?;
        gelu_in_place(y.f32s_mut()?, self.f32_math);
        Ok(vec![y])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
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
