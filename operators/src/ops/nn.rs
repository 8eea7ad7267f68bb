//! Dense layers: linear, layer_norm, gelu, add.

use super::{f32_input, weight_input_as};
use crate::npu;
use amanuensis_kernels::cpu;
use amanuensis_runtime::npu::NpuBinding;
use amanuensis_runtime::op::{expect_same_dim, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// `y = x · wᵀ (+ b)` over the last dim; `w` is `[out, in]` (PyTorch layout). With
/// `bf16_products` (default false), products of many rows multiply in bf16 with f32 sums
/// when the weight has no int8 form (the int8 compute type sets it on the encoder); with
/// `bf16x3` (default false) they multiply as bf16x3 products instead (each operand two
/// bf16 values, results about 2⁻¹⁵ relative from exact; [`cpu::bf16::linear_bf16x3`]), on
/// AMX tiles where the CPU has them, before `bf16_products`. With
/// `f16_output` (default false), `y` is rounded to f16 (the decoder's cross-attention keys
/// and values at the int8 and bf16 compute types: half the bytes every step reads). With
/// `norm_eps`, x is first layer-normalised (inputs `[x, gamma, beta, w, b?]`; the fusion of
/// a `layer_norm` into the linear it feeds).
pub struct LinearDef;
#[derive(Debug)]
pub(crate) struct Linear {
    /// Input rows up to which the weight is streamed (GEMV) rather than packed (gemm).
    gemv_max_rows: usize,
    /// Products of more rows than that in bf16 when the weight has no int8 form.
    bf16_products: bool,
    /// The same products as bf16x3 ([`cpu::bf16::linear_bf16x3`]), before `bf16_products`.
    bf16x3: bool,
    /// Rows above [`cpu::tuning::GEMV_MAX_M`] and up to `gemv_max_rows` stream the stored
    /// weight even when it has an int8 form: faster for a few dozen rows, but those rows
    /// then get other bits than the same rows computed a few at a time.
    stream_rows: bool,
    /// The output rounded to f16 (to nearest, ties to even).
    f16_output: bool,
    /// A layer norm of x with this epsilon first (the fusion of a `layer_norm` into the
    /// product it feeds): inputs `[x, gamma, beta, w, b?]`. On the int8 path each
    /// normalised row is quantized as it is made, never stored.
    norm_eps: Option<f32>,
}

impl OpDef for LinearDef {
    fn name(&self) -> &str {
        "linear"
    }
    fn summary(&self) -> &str {
        "y[..., out] = x[..., in] · w[out, in]ᵀ + b[out] (bias optional)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[
            "gemv_max_rows",
            "bf16_products",
            "bf16x3",
            "stream_rows",
            "f16_output",
            "norm_eps",
        ])?;
        Ok(Box::new(Linear::from_attrs(attrs)?))
    }
}

/// The attributes of `linear` that a fused op starting with a linear carries over (the
/// CPU's compute-type transforms set them; the NPU's graphs have none). Not `f16_output`:
/// a fused op's output is f32.
pub(crate) const FUSABLE_LINEAR_ATTRS: [&str; 4] =
    ["gemv_max_rows", "bf16_products", "bf16x3", "stream_rows"];

/// The norm's `(gamma, beta)`, if any, and the other inputs, x first.
pub(crate) type NormSplit<T> = (Option<(T, T)>, Vec<T>);

impl Linear {
    /// The linear configured by `attrs` (unknown keys are the caller's to refuse).
    pub(crate) fn from_attrs(attrs: &Attrs) -> Result<Linear, OpError> {
        Ok(Linear {
            gemv_max_rows: attrs.usize_or("gemv_max_rows", cpu::tuning::GEMV_MAX_M)?,
            bf16_products: attrs.bool_or("bf16_products", false)?,
            bf16x3: attrs.bool_or("bf16x3", false)?,
            stream_rows: attrs.bool_or("stream_rows", false)?,
            f16_output: attrs.bool_or("f16_output", false)?,
            norm_eps: match attrs.0.get("norm_eps") {
                None => None,
                Some(_) => {
                    let eps = attrs.f64("norm_eps")? as f32;
                    if eps.is_nan() || eps <= 0.0 {
                        return Err(OpError(format!(
                            "attribute 'norm_eps' must be > 0, got {eps}"
                        )));
                    }
                    Some(eps)
                }
            },
        })
    }

    /// Whether a layer norm runs first (`norm_eps`).
    pub(crate) fn has_norm(&self) -> bool {
        self.norm_eps.is_some()
    }

    /// The norm's `(gamma, beta)` and the other inputs, x first: with `norm_eps` the
    /// inputs are `[x, gamma, beta, rest…]`.
    pub(crate) fn split_norm<T: Clone>(&self, inputs: &[T]) -> Result<NormSplit<T>, OpError> {
        if self.norm_eps.is_none() {
            return Ok((None, inputs.to_vec()));
        }
        if inputs.len() < 3 {
            return Err(OpError(format!(
                "with 'norm_eps' the inputs start x, gamma, beta; got {} inputs",
                inputs.len()
            )));
        }
        let mut rest = vec![inputs[0].clone()];
        rest.extend_from_slice(&inputs[3..]);
        Ok((Some((inputs[1].clone(), inputs[2].clone())), rest))
    }

    /// Checks the norm's inputs against x (`gamma`, `beta`: f32 `[d]`, d x's last dim).
    pub(crate) fn check_norm_types(
        x: &ValueType,
        gamma: &ValueType,
        beta: &ValueType,
    ) -> Result<(), OpError> {
        for (t, n) in [(gamma, "gamma"), (beta, "beta")] {
            t.expect_dtype(DType::F32, n)?;
            t.expect_rank(1, n)?;
            expect_same_dim(x.last("x")?, &t.shape[0], &format!("x's last dim vs {n}"))?;
        }
        Ok(())
    }

    /// The output type on `inputs` (the norm's, when there is one, checked).
    pub(crate) fn infer_f32(&self, inputs: &[ValueType]) -> Result<ValueType, OpError> {
        let (norm, rest) = self.split_norm(inputs)?;
        if let Some((g, b)) = &norm {
            Self::check_norm_types(&rest[0], g, b)?;
        }
        linear_type(&rest)
    }

    /// `y` in f32, as this linear computes it before any rounding to f16.
    pub(crate) fn eval_f32(
        &self,
        ctx: &mut EvalContext,
        inputs: &[&Tensor],
    ) -> Result<Tensor, OpError> {
        let (norm, rest) = self.split_norm(inputs)?;
        if norm.is_some() {
            if !(2..=3).contains(&rest.len()) {
                return Err(OpError(format!(
                    "expected x, gamma, beta, w and an optional b; got {} inputs",
                    inputs.len()
                )));
            }
            let mut y =
                self.eval_group_f32(ctx, rest[0], norm, &[(rest[1], rest.get(2).copied())])?;
            return Ok(y.remove(0));
        }
        self.eval_plain(ctx, inputs)
    }

    /// [`eval_f32`](Self::eval_f32) on `[x, w, b?]`, without a norm.
    fn eval_plain(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
        let bf16 = match (self.bf16x3, self.bf16_products) {
            (true, _) => linear_eval_bf16(ctx, inputs, self.gemv_max_rows, true)?,
            (false, true) => linear_eval_bf16(ctx, inputs, self.gemv_max_rows, false)?,
            (false, false) => None,
        };
        match bf16 {
            Some(y) => Ok(y),
            None => linear_eval_up_to(ctx, inputs, self.gemv_max_rows, self.stream_rows),
        }
    }
}

impl Linear {
    /// Several linears of the input `x` with this configuration, one per `(w, b?)` part,
    /// each output with the bits this linear gives on its part alone (f32, before any
    /// rounding to f16). Weights that all have their int8 form run as one product.
    pub(crate) fn eval_group_f32(
        &self,
        ctx: &mut EvalContext,
        x: &Tensor,
        norm: Option<(&Tensor, &Tensor)>,
        parts: &[(&Tensor, Option<&Tensor>)],
    ) -> Result<Vec<Tensor>, OpError> {
        let kx = *x.shape().last().unwrap_or(&0);
        let (gamma, beta) = match norm {
            Some((g, b)) => {
                let (g, b) = (f32_input(g, "gamma")?, f32_input(b, "beta")?);
                if g.len() != kx || b.len() != kx {
                    return Err(OpError(format!(
                        "x's last dim is {kx}, gamma/beta have {}/{}",
                        g.len(),
                        b.len()
                    )));
                }
                (Some(g), Some(b))
            }
            None => (None, None),
        };
        let row_norm = match (&gamma, &beta, self.norm_eps) {
            (Some(g), Some(b), Some(eps)) => Some(cpu::int8::RowNorm {
                gamma: g,
                beta: b,
                eps,
            }),
            _ => None,
        };
        let m = x.numel() / kx.max(1);
        for (i, (w, _)) in parts.iter().enumerate() {
            if w.shape().len() != 2 || w.shape()[1] != kx {
                return Err(OpError(format!(
                    "part {i}: x's last dim is {kx}, w is {:?}",
                    w.shape()
                )));
            }
        }
        // Parts the bf16 products would take, and a group of one without a norm, run as
        // `linear` does (on the normalised rows, stored, when there is a norm).
        let bf16 = |w: &Tensor| {
            (self.bf16_products || self.bf16x3) && m > self.gemv_max_rows && w.int8().is_none()
        };
        if (parts.len() < 2 && row_norm.is_none()) || parts.iter().any(|(w, _)| bf16(w)) {
            // A buffer of its own: the planned ones are the outputs'.
            let normed = match &row_norm {
                Some(n) => {
                    let xs = f32_input(x, "x")?;
                    let mut y = vec![0.0f32; xs.len()];
                    cpu::layer_norm(&xs, m, kx, n.gamma, n.beta, n.eps, &mut y);
                    Some(Tensor::from_f32(x.shape(), y)?)
                }
                None => None,
            };
            let x = normed.as_ref().unwrap_or(x);
            let ys = parts
                .iter()
                .map(|&(w, b)| {
                    let mut ins = vec![x, w];
                    ins.extend(b);
                    self.eval_plain(ctx, &ins)
                })
                .collect();
            return ys;
        }
        let int8 = !self.stream_rows
            || m <= cpu::tuning::GEMV_MAX_M
            || m > self.gemv_max_rows
            || parts.iter().all(|(w, _)| split_beats_streaming(w));
        let xs = f32_input(x, "x")?;
        let mut biases = Vec::with_capacity(parts.len());
        for (i, (w, b)) in parts.iter().enumerate() {
            biases.push(match b {
                Some(b) => {
                    if b.numel() != w.shape()[0] {
                        return Err(OpError(format!(
                            "part {i}: b has {} values, w has {} rows",
                            b.numel(),
                            w.shape()[0]
                        )));
                    }
                    Some(f32_input(b, "b")?)
                }
                None => None,
            });
        }
        let mut outs: Vec<Tensor> = parts
            .iter()
            .map(|(w, _)| {
                let mut shape = x.shape().to_vec();
                *shape.last_mut().unwrap() = w.shape()[0];
                // Every linear kernel writes each output without reading it.
                ctx.alloc_f32_overwritten(&shape)
            })
            .collect();
        let mut weights = Vec::with_capacity(parts.len());
        for (w, _) in parts {
            weights.push(weight_input_as(w, "w", int8)?);
        }
        let mut slices: Vec<&mut [f32]> = Vec::with_capacity(parts.len());
        for o in outs.iter_mut() {
            slices.push(o.f32s_mut()?);
        }
        let mut lin: Vec<cpu::LinearPart> = weights
            .into_iter()
            .zip(parts)
            .zip(biases.iter())
            .zip(slices)
            .map(|(((w, (wt, _)), b), out)| cpu::LinearPart {
                w,
                n: wt.shape()[0],
                bias: b.as_deref(),
                out,
            })
            .collect();
        cpu::linear_group_up_to_w(&xs, m, kx, row_norm.as_ref(), &mut lin, self.gemv_max_rows);
        Ok(outs)
    }
}

impl Operator for Linear {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        let mut y = self.infer_f32(inputs)?;
        if self.f16_output {
            y.dtype = DType::F16;
        }
        Ok(vec![y])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let y = self.eval_f32(ctx, inputs)?;
        if !self.f16_output {
            return Ok(vec![y]);
        }
        Ok(vec![y.narrow_to_f16()?])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        // The catalogue's GEMM has no layer-norm prologue.
        if self.has_norm() {
            return None;
        }
        static MATMUL_BIAS_KERNEL: NpuBinding = NpuBinding::of(&npu::MatmulBiasKernel);
        MATMUL_BIAS_KERNEL.offer(target)
    }
}

/// Output type of a linear on `[x, w, b?]`.
pub(crate) fn linear_type(inputs: &[ValueType]) -> Result<ValueType, OpError> {
    if !(2..=3).contains(&inputs.len()) {
        return Err(OpError(format!(
            "expected 2 or 3 inputs (x, w[, b]), got {}",
            inputs.len()
        )));
    }
    let (x, w) = (&inputs[0], &inputs[1]);
    x.expect_dtype(DType::F32, "x")?;
    w.expect_dtype(DType::F32, "w")?;
    w.expect_rank(2, "w")?;
    expect_same_dim(x.last("x")?, &w.shape[1], "x's last dim vs w's input dim")?;
    if let Some(b) = inputs.get(2) {
        b.expect_dtype(DType::F32, "b")?;
        b.expect_rank(1, "b")?;
        expect_same_dim(&b.shape[0], &w.shape[0], "b's length vs w's output dim")?;
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = w.shape[0].clone();
    Ok(ValueType::new(DType::F32, shape))
}

/// The linear with bf16 products ([`cpu::bf16::linear_bf16`]), or `None` where they do
/// not apply: up to `gemv_max_rows` input rows (bound by reading the weight, which bf16
/// does not shrink), or a weight with an int8 form (cheaper still). The weight is packed
/// per call from its stored type: a few percent of the product, and no second copy kept.
fn linear_eval_bf16(
    ctx: &mut EvalContext,
    inputs: &[&Tensor],
    gemv_max_rows: usize,
    x3: bool,
) -> Result<Option<Tensor>, OpError> {
    let (x, w) = (inputs[0], inputs[1]);
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let kx = *x.shape().last().unwrap_or(&0);
    let m = x.numel() / k.max(1);
    if kx != k || m <= gemv_max_rows || w.int8().is_some() {
        return Ok(None);
    }
    let packed = match (w.dtype(), x3) {
        (DType::F16, false) => cpu::bf16::PackedBf16::pack_f16(w.f16s()?, n, k),
        (DType::F16, true) => {
            let src = w.f16s()?;
            cpu::bf16::PackedBf16::pack_x3(n, k, |j, buf| {
                for (d, s) in buf.iter_mut().zip(&src[j * k..(j + 1) * k]) {
                    *d = s.to_f32();
                }
            })
        }
        (_, false) => cpu::bf16::PackedBf16::pack(f32_input(w, "w")?.as_ref(), n, k, k),
        (_, true) => {
            let src = f32_input(w, "w")?;
            cpu::bf16::PackedBf16::pack_x3(n, k, |j, buf| {
                buf.copy_from_slice(&src[j * k..(j + 1) * k])
            })
        }
    };
    let bias = match inputs.get(2) {
        Some(b) => Some(f32_input(b, "b")?),
        None => None,
    };
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    let mut out = ctx.alloc_f32_overwritten(&shape);
    let (xs, o) = (f32_input(x, "x")?, out.f32s_mut()?);
    if x3 {
        let path = cpu::bf16::Bf16Path::widest();
        cpu::bf16::linear_bf16x3(path, &xs, m, &packed, bias.as_deref(), o);
    } else {
        let path = cpu::bf16::Bf16Path::best();
        cpu::bf16::linear_bf16(path, &xs, m, &packed, bias.as_deref(), o);
    }
    Ok(Some(out))
}

/// Whether a few dozen rows that would stream the stored weight (`stream_rows`) run on its
/// int8 form instead: a rescored f16 weight (the logits projection) on a CPU whose
/// split-activation product ([`cpu::int8::linear_w8_split_on`], AMX tiles or AVX-512
/// VNNI) takes a third to a half of the time of streaming the f16 rows (`kernel_bench`, 40
/// rows: AMX 4.4 against 13.7 ms; VNNI on Zen 4 7.9 against 14.4 ms).
fn split_beats_streaming(w: &Tensor) -> bool {
    w.dtype() == DType::F16
        && w.int8().is_some_and(|q| q.rescore_band.is_some())
        && cpu::int8::split_available()
}

/// [`linear_eval`] streaming the weight for up to `gemv_max_rows` input rows.
fn linear_eval_up_to(
    ctx: &mut EvalContext,
    inputs: &[&Tensor],
    gemv_max_rows: usize,
    stream_rows: bool,
) -> Result<Tensor, OpError> {
    let (x, w) = (inputs[0], inputs[1]);
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let kx = *x.shape().last().unwrap_or(&0);
    if kx != k {
        return Err(OpError(format!("x's last dim is {kx}, w expects {k}")));
    }
    let m = x.numel() / k.max(1);
    let bias = match inputs.get(2) {
        Some(b) => Some(f32_input(b, "b")?),
        None => None,
    };
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    let mut out = ctx.alloc_f32_overwritten(&shape);
    // An int8 form serves many rows as int8 products, and up to `gemv_max_rows` rows
    // weight-only (f32 activations). The weight-only kernel gives each row the same bits
    // however many rows share the call, so the lockstep decoder's rows of several requests
    // decode exactly as each would alone. With `stream_rows`, rows between GEMV_MAX_M and
    // `gemv_max_rows` stream the stored weight instead: the weight-only kernel widens each
    // byte once per 8 rows, so for a few dozen rows this is about 15 % faster for the
    // batched pipeline, whose windows need not match sequential decoding bit for bit.
    let int8 = !stream_rows
        || m <= cpu::tuning::GEMV_MAX_M
        || m > gemv_max_rows
        || split_beats_streaming(w);
    cpu::linear_up_to_w(
        &f32_input(x, "x")?,
        m,
        k,
        weight_input_as(w, "w", int8)?,
        n,
        bias.as_deref(),
        out.f32s_mut()?,
        gemv_max_rows,
    );
    Ok(out)
}

/// Layer normalisation over the last dim with affine `gamma`, `beta`.
pub struct LayerNormDef;
#[derive(Debug)]
struct LayerNorm {
    eps: f32,
    npu: NpuBinding,
}

impl OpDef for LayerNormDef {
    fn name(&self) -> &str {
        "layer_norm"
    }
    fn summary(&self) -> &str {
        "y = (x - mean) / sqrt(var + eps) · gamma + beta over the last dim"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["eps"])?;
        let eps = attrs.f64("eps")? as f32;
        if eps.is_nan() || eps <= 0.0 {
            return Err(OpError(format!("attribute 'eps' must be > 0, got {eps}")));
        }
        Ok(Box::new(LayerNorm {
            eps,
            npu: NpuBinding::owned(npu::LayerNormKernel { eps }),
        }))
    }
}

impl Operator for LayerNorm {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        amanuensis_runtime::op::expect_inputs(inputs, &["x", "gamma", "beta"])?;
        for (t, n) in inputs.iter().zip(["x", "gamma", "beta"]) {
            t.expect_dtype(DType::F32, n)?;
        }
        inputs[1].expect_rank(1, "gamma")?;
        inputs[2].expect_rank(1, "beta")?;
        let d = inputs[0].last("x")?;
        expect_same_dim(d, &inputs[1].shape[0], "x's last dim vs gamma")?;
        expect_same_dim(d, &inputs[2].shape[0], "x's last dim vs beta")?;
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let d = *x.shape().last().unwrap_or(&0);
        let (g, b) = (
            f32_input(inputs[1], "gamma")?,
            f32_input(inputs[2], "beta")?,
        );
        if g.len() != d || b.len() != d {
            return Err(OpError(format!(
                "x's last dim is {d}, gamma/beta have {}/{}",
                g.len(),
                b.len()
            )));
        }
        let rows = x.numel() / d.max(1);
        let mut out = ctx.alloc_f32(x.shape());
        cpu::layer_norm(
            &f32_input(x, "x")?,
            rows,
            d,
            &g,
            &b,
            self.eps,
            out.f32s_mut()?,
        );
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.npu.offer(target)
    }
}

/// The `gelu` op's arithmetic on `x`, in place (`f32_math` as its attribute).
pub(crate) fn gelu_in_place(x: &mut [f32], f32_math: bool) {
    if f32_math {
        cpu::gelu_f32(x);
    } else {
        cpu::gelu(x);
    }
}

/// Exact (erf) GELU. With `f32_math` (default false) it is evaluated in f32 (relative
/// error below 2e-6 instead of 1.5e-7, about 2.4 times as fast): for activations that go
/// on into bf16 products (the bf16 compute type sets it on the encoder).
pub struct GeluDef;
#[derive(Debug)]
struct Gelu {
    f32_math: bool,
}

impl OpDef for GeluDef {
    fn name(&self) -> &str {
        "gelu"
    }
    fn summary(&self) -> &str {
        "y = x · Φ(x), the exact erf form"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["f32_math"])?;
        Ok(Box::new(Gelu {
            f32_math: attrs.bool_or("f32_math", false)?,
        }))
    }
}

impl Operator for Gelu {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        amanuensis_runtime::op::expect_inputs(inputs, &["x"])?;
        inputs[0].expect_dtype(DType::F32, "x")?;
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let mut out = ctx.alloc_f32(inputs[0].shape());
        let o = out.f32s_mut()?;
        o.copy_from_slice(&f32_input(inputs[0], "x")?);
        gelu_in_place(o, self.f32_math);
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        static GELU_KERNEL: NpuBinding = NpuBinding::of(&npu::GeluKernel);
        GELU_KERNEL.offer(target)
    }
}

/// Element-wise `a + b`, where `b`'s shape is a suffix of `a`'s (broadcast over the
/// leading dims of `a`).
pub struct AddDef;
#[derive(Debug)]
struct Add;

impl OpDef for AddDef {
    fn name(&self) -> &str {
        "add"
    }
    fn summary(&self) -> &str {
        "y = a + b, b broadcast over a's leading dims"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(Add))
    }
}

impl Operator for Add {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        amanuensis_runtime::op::expect_inputs(inputs, &["a", "b"])?;
        let (a, b) = (&inputs[0], &inputs[1]);
        a.expect_dtype(DType::F32, "a")?;
        b.expect_dtype(DType::F32, "b")?;
        if b.rank() > a.rank() {
            return Err(OpError(format!("b ({b}) has a higher rank than a ({a})")));
        }
        let off = a.rank() - b.rank();
        for (i, d) in b.shape.iter().enumerate() {
            expect_same_dim(
                &a.shape[off + i],
                d,
                &format!("a's dim {} vs b's dim {i}", off + i),
            )?;
        }
        Ok(vec![a.clone()])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (inputs[0], inputs[1]);
        let sa = a.shape();
        let sb = b.shape();
        if sb.len() > sa.len() || sa[sa.len() - sb.len()..] != *sb {
            return Err(OpError(format!("cannot broadcast b {sb:?} onto a {sa:?}")));
        }
        let mut out = ctx.alloc_f32(sa);
        let o = out.f32s_mut()?;
        o.copy_from_slice(&f32_input(a, "a")?);
        let bv = f32_input(b, "b")?;
        if bv.len() == o.len() {
            cpu::add_inplace(o, &bv);
        } else if !bv.is_empty() {
            cpu::add_rows_inplace(o, &bv);
        }
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        static RESIDUAL_ADD_KERNEL: NpuBinding = NpuBinding::of(&npu::ResidualAddKernel);
        RESIDUAL_ADD_KERNEL.offer(target)
    }
}

/// An element-wise activation of any f32 shape.
macro_rules! elementwise_activation {
    ($def:ident, $op:ident, $name:literal, $summary:literal, $kernel:path) => {
        #[doc = concat!("`", $name, "`: ", $summary)]
        pub struct $def;
        #[derive(Debug)]
        struct $op;

        impl OpDef for $def {
            fn name(&self) -> &str {
                $name
            }
            fn summary(&self) -> &str {
                $summary
            }
            fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
                attrs.only(&[])?;
                Ok(Box::new($op))
            }
        }

        impl Operator for $op {
            fn infer(
                &self,
                inputs: &[ValueType],
                _: &[ValueType],
            ) -> Result<Vec<ValueType>, OpError> {
                amanuensis_runtime::op::expect_inputs(inputs, &["x"])?;
                inputs[0].expect_dtype(DType::F32, "x")?;
                Ok(vec![inputs[0].clone()])
            }

            fn eval(
                &self,
                ctx: &mut EvalContext,
                inputs: &[&Tensor],
            ) -> Result<Vec<Tensor>, OpError> {
                let mut out = ctx.alloc_f32(inputs[0].shape());
                let o = out.f32s_mut()?;
                o.copy_from_slice(&f32_input(inputs[0], "x")?);
                $kernel(o);
                Ok(vec![out])
            }
        }
    };
}

elementwise_activation!(
    ReluDef,
    Relu,
    "relu",
    "y = max(x, 0) (NaN passes through)",
    cpu::relu
);
elementwise_activation!(
    SigmoidDef,
    Sigmoid,
    "sigmoid",
    "y = 1 / (1 + e^−x), results below f32's normal range flushed to 0",
    cpu::sigmoid
);
