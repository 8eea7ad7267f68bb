//! 1-D convolution.

use super::f32_input;
use crate::npu;
use amanuensis_kernels::cpu;
use amanuensis_runtime::format::Dim;
use amanuensis_runtime::npu::NpuBinding;
use amanuensis_runtime::op::{expect_same_dim, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// `conv1d(x[batch?, c_in, t], w[c_out, c_in, k], b[c_out]?)` with zero padding; a
/// leading batch dim and the bias are optional.
pub struct Conv1dDef;
#[derive(Debug)]
pub(crate) struct Conv1d {
    stride: usize,
    padding: usize,
    npu: NpuBinding,
}

impl OpDef for Conv1dDef {
    fn name(&self) -> &str {
        "conv1d"
    }
    fn summary(&self) -> &str {
        "y[batch?, c_out, t_out] = conv(x[batch?, c_in, t], w[c_out, c_in, k]) (+ b[c_out]), zero padding"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        Ok(Box::new(Conv1d::from_attrs(attrs)?))
    }
}

impl Conv1d {
    /// A conv configured from `stride` (default 1, >= 1) and `padding` (default 0).
    pub(crate) fn from_attrs(attrs: &Attrs) -> Result<Conv1d, OpError> {
        attrs.only(&["stride", "padding"])?;
        let stride = attrs.usize_or("stride", 1)?;
        if stride == 0 {
            return Err(OpError("attribute 'stride' must be >= 1".into()));
        }
        let padding = attrs.usize_or("padding", 0)?;
        Ok(Conv1d {
            stride,
            padding,
            npu: NpuBinding::owned(npu::Conv1dKernel { stride, padding }),
        })
    }

    /// Stride and padding.
    pub(crate) fn geometry(&self) -> (usize, usize) {
        (self.stride, self.padding)
    }

    fn out_len(&self, t: usize, k: usize) -> Result<usize, OpError> {
        if t + 2 * self.padding < k {
            return Err(OpError(format!(
                "input length {t} (+2×padding {}) is shorter than the kernel {k}",
                self.padding
            )));
        }
        Ok(cpu::conv1d_out_len(t, k, self.stride, self.padding))
    }
}

impl Operator for Conv1d {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        if !(2..=3).contains(&inputs.len()) {
            return Err(OpError(format!(
                "expected 2 or 3 inputs (x, w[, b]), got {}",
                inputs.len()
            )));
        }
        let (x, w) = (&inputs[0], &inputs[1]);
        for (t, n) in inputs.iter().zip(["x", "w", "b"]) {
            t.expect_dtype(DType::F32, n)?;
        }
        if !(2..=3).contains(&x.rank()) {
            return Err(OpError(format!(
                "x: expected [c_in, t] or [batch, c_in, t], got {x}"
            )));
        }
        w.expect_rank(3, "w")?;
        let lead = x.rank() - 2;
        expect_same_dim(
            &x.shape[lead],
            &w.shape[1],
            "x's channels vs w's input channels",
        )?;
        if let Some(b) = inputs.get(2) {
            b.expect_rank(1, "b")?;
            expect_same_dim(
                &b.shape[0],
                &w.shape[0],
                "b's length vs w's output channels",
            )?;
        }
        let t_out = match (&x.shape[lead + 1], &w.shape[2]) {
            (Dim::Known(t), Dim::Known(k)) => Dim::Known(self.out_len(*t, *k)?),
            (t, _) => Dim::Sym(format!("conv_out({t})")),
        };
        let mut shape = x.shape[..lead].to_vec();
        shape.extend([w.shape[0].clone(), t_out]);
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (inputs[0], inputs[1]);
        let (batch, c_in, t) = match *x.shape() {
            [c, t] => (None, c, t),
            [b, c, t] => (Some(b), c, t),
            ref s => return Err(OpError(format!("x is {s:?}, expected rank 2 or 3"))),
        };
        let &[c_out, wc_in, k] = w.shape() else {
            return Err(OpError(format!("w is {:?}, expected rank 3", w.shape())));
        };
        if c_in != wc_in {
            return Err(OpError(format!("x has {c_in} channels, w expects {wc_in}")));
        }
        let bias = match inputs.get(2) {
            Some(b) if b.shape() != [c_out] => {
                return Err(OpError(format!(
                    "b is {:?}, w has {c_out} output channels",
                    b.shape()
                )))
            }
            Some(b) => Some(f32_input(b, "b")?),
            None => None,
        };
        let t_out = self.out_len(t, k)?;
        let mut shape: Vec<usize> = batch.into_iter().collect();
        shape.extend([c_out, t_out]);
        let mut out = ctx.alloc_f32(&shape);
        cpu::conv1d_batch(
            &f32_input(x, "x")?,
            batch.unwrap_or(1),
            c_in,
            t,
            &f32_input(w, "w")?,
            c_out,
            k,
            bias.as_deref(),
            self.stride,
            self.padding,
            out.f32s_mut()?,
        );
        Ok(vec![out])
    }
    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.npu.offer(target)
    }
}
