//! Data movement: transpose, embedding lookups, take, squeeze/unsqueeze, slice, reflection
//! padding.

use super::{f32_input, f32_input_range, scalar_index};
use amanuensis_runtime::format::Dim;
use amanuensis_runtime::op::{expect_inputs, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// Swaps the last two dims: a matrix, or each matrix of a batch (`[.., r, c]`).
pub struct TransposeDef;
#[derive(Debug)]
struct Transpose;

impl OpDef for TransposeDef {
    fn name(&self) -> &str {
        "transpose"
    }
    fn summary(&self) -> &str {
        "y[.., j, i] = x[.., i, j]"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(Transpose))
    }
}

impl Operator for Transpose {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        x.expect_dtype(DType::F32, "x")?;
        if x.rank() < 2 {
            return Err(OpError(format!("x: expected rank >= 2, got {x}")));
        }
        let mut shape = x.shape.clone();
        let n = shape.len();
        shape.swap(n - 2, n - 1);
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let n = x.shape().len();
        if n < 2 {
            return Err(OpError(format!("x {:?}: expected rank >= 2", x.shape())));
        }
        let (r, c) = (x.shape()[n - 2], x.shape()[n - 1]);
        let xv = f32_input(x, "x")?;
        let mut shape = x.shape().to_vec();
        shape.swap(n - 2, n - 1);
        let mut out = ctx.alloc_f32(&shape);
        let o = out.f32s_mut()?;
        if r * c > 0 {
            for (src, dst) in xv.chunks_exact(r * c).zip(o.chunks_exact_mut(r * c)) {
                transpose_matrix(src, dst, r, c);
            }
        }
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        static TRANSPOSE: amanuensis_runtime::npu::NpuBinding =
            amanuensis_runtime::npu::NpuBinding::of(&crate::npu::TransposeKernel);
        TRANSPOSE.offer(target)
    }
}

/// `dst[j * r + i] = src[i * c + j]` for an `r × c` matrix, in blocks so that both sides
/// stay in cache.
fn transpose_matrix(src: &[f32], dst: &mut [f32], r: usize, c: usize) {
    const B: usize = 32;
    for i0 in (0..r).step_by(B) {
        for j0 in (0..c).step_by(B) {
            for i in i0..(i0 + B).min(r) {
                for j in j0..(j0 + B).min(c) {
                    dst[j * r + i] = src[i * c + j];
                }
            }
        }
    }
}

/// Stores heads one after another: `y[.., h, t, c] = x[.., t, h·hd + c]` for
/// `x: [.., t, heads·hd]`, f32 or f16 (kept). What the `attention` op's
/// `kv_heads_major` reads: a decoder step then streams each head's cross-attention keys
/// as one contiguous run instead of 128 bytes of every kilobyte (`docs/kernels.md`). A
/// copy done once per window, on the host.
pub struct SplitHeadsDef;
#[derive(Debug)]
struct SplitHeads {
    heads: usize,
}

impl OpDef for SplitHeadsDef {
    fn name(&self) -> &str {
        "split_heads"
    }
    fn summary(&self) -> &str {
        "y[.., h, t, c] = x[.., t, h·d/heads + c]: each head's rows contiguous"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["heads"])?;
        let heads = attrs.usize("heads")?;
        if heads == 0 {
            return Err(OpError("attribute 'heads' must be >= 1".into()));
        }
        Ok(Box::new(SplitHeads { heads }))
    }
}

impl SplitHeads {
    /// Head size of a last dim `d`.
    fn head_dim(&self, d: usize) -> Result<usize, OpError> {
        if !d.is_multiple_of(self.heads) {
            return Err(OpError(format!(
                "x: last dim {d} is not divisible by {} heads",
                self.heads
            )));
        }
        Ok(d / self.heads)
    }
}

/// [`SplitHeads`] on each `[t, heads·hd]` matrix of `x`.
fn split_heads<T: Copy>(x: &[T], y: &mut [T], t: usize, heads: usize, hd: usize) {
    let m = t * heads * hd;
    if m == 0 {
        return;
    }
    for (src, dst) in x.chunks_exact(m).zip(y.chunks_exact_mut(m)) {
        for (h, head) in dst.chunks_exact_mut(t * hd).enumerate() {
            for (j, row) in head.chunks_exact_mut(hd).enumerate() {
                row.copy_from_slice(&src[j * heads * hd + h * hd..][..hd]);
            }
        }
    }
}

impl Operator for SplitHeads {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        if x.dtype != DType::F16 {
            x.expect_dtype(DType::F32, "x")?;
        }
        if x.rank() < 2 {
            return Err(OpError(format!("x: expected rank >= 2, got {x}")));
        }
        let n = x.rank();
        let mut shape = x.shape[..n - 2].to_vec();
        shape.push(Dim::Known(self.heads));
        shape.push(x.shape[n - 2].clone());
        shape.push(match &x.shape[n - 1] {
            Dim::Known(d) => Dim::Known(self.head_dim(*d)?),
            Dim::Sym(s) => {
                return Err(OpError(format!(
                    "x: the last dim must be known to split it into heads, got '{s}'"
                )))
            }
        });
        Ok(vec![ValueType::new(x.dtype, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let xs = x.shape();
        let n = xs.len();
        if n < 2 {
            return Err(OpError(format!("x {xs:?}: expected rank >= 2")));
        }
        let (t, hd) = (xs[n - 2], self.head_dim(xs[n - 1])?);
        let mut shape = xs[..n - 2].to_vec();
        shape.extend([self.heads, t, hd]);
        match x.dtype() {
            DType::F16 => {
                let mut y = vec![half::f16::ZERO; x.numel()];
                split_heads(x.f16s()?, &mut y, t, self.heads, hd);
                Ok(vec![Tensor::new(
                    &shape,
                    amanuensis_runtime::tensor::Data::F16(y.into()),
                )?])
            }
            _ => {
                let xv = f32_input(x, "x")?;
                let mut out = ctx.alloc_f32(&shape);
                split_heads(&xv, out.f32s_mut()?, t, self.heads, hd);
                Ok(vec![out])
            }
        }
    }
}

fn check_ids(ids: &[i32], limit: usize, what: &str) -> Result<(), OpError> {
    if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= limit) {
        return Err(OpError(format!("{what}: id {bad} is outside 0..{limit}")));
    }
    Ok(())
}

/// Rows of `table[v, d]` picked by integer ids of any shape: `y[.., d]`.
pub struct EmbeddingDef;
#[derive(Debug)]
struct Embedding;

impl OpDef for EmbeddingDef {
    fn name(&self) -> &str {
        "embedding"
    }
    fn summary(&self) -> &str {
        "y[..., d] = table[ids[...], d]"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(Embedding))
    }
}

impl Operator for Embedding {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["ids", "table"])?;
        inputs[0].expect_dtype(DType::I32, "ids")?;
        inputs[1].expect_dtype(DType::F32, "table")?;
        inputs[1].expect_rank(2, "table")?;
        let mut shape = inputs[0].shape.clone();
        shape.push(inputs[1].shape[1].clone());
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let ids = inputs[0].i32s()?;
        let table = inputs[1];
        let (v, d) = (table.shape()[0], table.shape()[1]);
        check_ids(ids, v, "ids")?;
        let mut shape = inputs[0].shape().to_vec();
        shape.push(d);
        let mut out = ctx.alloc_f32(&shape);
        for (row, &id) in out.f32s_mut()?.chunks_exact_mut(d).zip(ids) {
            // Only the looked-up rows are widened when the table is kept as f16.
            let r = id as usize * d..(id as usize + 1) * d;
            row.copy_from_slice(&f32_input_range(table, r, "table")?);
        }
        Ok(vec![out])
    }
}

/// Rows `offset..offset+n` of a position table, where n is the size of the tokens'
/// last dim: `y[n, d]`.
pub struct PositionEmbeddingDef;
#[derive(Debug)]
struct PositionEmbedding;

impl OpDef for PositionEmbeddingDef {
    fn name(&self) -> &str {
        "position_embedding"
    }
    fn summary(&self) -> &str {
        "y[n, d] = table[offset .. offset+n, d], n = tokens' last dim"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(PositionEmbedding))
    }
}

impl Operator for PositionEmbedding {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["tokens", "offset", "table"])?;
        inputs[1].expect_dtype(DType::I32, "offset")?;
        inputs[1].expect_rank(0, "offset")?;
        inputs[2].expect_dtype(DType::F32, "table")?;
        inputs[2].expect_rank(2, "table")?;
        let n = inputs[0].last("tokens")?.clone();
        Ok(vec![ValueType::new(
            DType::F32,
            vec![n, inputs[2].shape[1].clone()],
        )])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let n = *inputs[0].shape().last().unwrap_or(&0);
        let offset = scalar_index(inputs[1], "offset")?;
        let table = inputs[2];
        let (rows, d) = (table.shape()[0], table.shape()[1]);
        if offset + n > rows {
            return Err(OpError(format!(
                "positions {offset}..{} exceed the table's {rows} rows (the text context is full)",
                offset + n
            )));
        }
        let mut out = ctx.alloc_f32(&[n, d]);
        out.f32s_mut()?.copy_from_slice(&f32_input_range(
            table,
            offset * d..(offset + n) * d,
            "table",
        )?);
        Ok(vec![out])
    }
}

/// Picks entries along one axis by integer indices: `y` has x's shape with that axis
/// replaced by the number of indices.
pub struct TakeDef;
#[derive(Debug)]
struct Take {
    axis: i64,
}

impl OpDef for TakeDef {
    fn name(&self) -> &str {
        "take"
    }
    fn summary(&self) -> &str {
        "y = x indexed by idx[k] along `axis` (negative counts from the end)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["axis"])?;
        Ok(Box::new(Take {
            axis: attrs.i64("axis")?,
        }))
    }
}

impl Take {
    fn axis(&self, rank: usize) -> Result<usize, OpError> {
        let a = if self.axis < 0 {
            rank as i64 + self.axis
        } else {
            self.axis
        };
        if a < 0 || a >= rank as i64 {
            return Err(OpError(format!(
                "axis {} is out of range for rank {rank}",
                self.axis
            )));
        }
        Ok(a as usize)
    }
}

impl Operator for Take {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x", "idx"])?;
        inputs[0].expect_dtype(DType::F32, "x")?;
        inputs[1].expect_dtype(DType::I32, "idx")?;
        inputs[1].expect_rank(1, "idx")?;
        let axis = self.axis(inputs[0].rank())?;
        let mut shape = inputs[0].shape.clone();
        shape[axis] = inputs[1].shape[0].clone();
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let idx = inputs[1].i32s()?;
        let axis = self.axis(x.shape().len())?;
        let s = x.shape();
        let len = s[axis];
        check_ids(idx, len, "idx")?;
        let outer: usize = s[..axis].iter().product();
        let inner: usize = s[axis + 1..].iter().product();
        let mut shape = s.to_vec();
        shape[axis] = idx.len();
        let xv = f32_input(x, "x")?;
        let mut out = ctx.alloc_f32(&shape);
        let o = out.f32s_mut()?;
        for b in 0..outer {
            for (j, &i) in idx.iter().enumerate() {
                let src = (b * len + i as usize) * inner;
                let dst = (b * idx.len() + j) * inner;
                o[dst..dst + inner].copy_from_slice(&xv[src..src + inner]);
            }
        }
        Ok(vec![out])
    }
}

/// `axis` of a rank-`rank` tensor, negative counting from the end (`-1` is the last).
fn resolve_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let a = if axis < 0 { rank as i64 + axis } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(OpError(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(a as usize)
}

/// Copies `x` into a fresh output of `shape` (same element count), for the ops that only
/// relabel dims.
fn relabel(ctx: &mut EvalContext, x: &Tensor, shape: &[usize]) -> Result<Tensor, OpError> {
    let mut out = ctx.alloc_f32(shape);
    out.f32s_mut()?.copy_from_slice(&f32_input(x, "x")?);
    Ok(out)
}

/// Removes a dim of size 1.
pub struct SqueezeDef;
#[derive(Debug)]
struct Squeeze {
    axis: i64,
}

impl OpDef for SqueezeDef {
    fn name(&self) -> &str {
        "squeeze"
    }
    fn summary(&self) -> &str {
        "y = x without its dim `axis`, which must be 1"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["axis"])?;
        Ok(Box::new(Squeeze {
            axis: attrs.i64("axis")?,
        }))
    }
}

impl Operator for Squeeze {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        x.expect_dtype(DType::F32, "x")?;
        let axis = resolve_axis(self.axis, x.rank())?;
        if let Some(n) = x.shape[axis].known().filter(|&n| n != 1) {
            return Err(OpError(format!(
                "x {x}: dim {axis} is {n}, squeeze needs 1"
            )));
        }
        let mut shape = x.shape.clone();
        shape.remove(axis);
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let axis = resolve_axis(self.axis, x.shape().len())?;
        if x.shape()[axis] != 1 {
            return Err(OpError(format!("x {:?}: dim {axis} is not 1", x.shape())));
        }
        let mut shape = x.shape().to_vec();
        shape.remove(axis);
        Ok(vec![relabel(ctx, x, &shape)?])
    }
}

/// Inserts a dim of size 1.
pub struct UnsqueezeDef;
#[derive(Debug)]
struct Unsqueeze {
    axis: usize,
}

impl OpDef for UnsqueezeDef {
    fn name(&self) -> &str {
        "unsqueeze"
    }
    fn summary(&self) -> &str {
        "y = x with a dim of 1 inserted before dim `axis` (0..=rank)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["axis"])?;
        Ok(Box::new(Unsqueeze {
            axis: attrs.usize("axis")?,
        }))
    }
}

impl Unsqueeze {
    fn check(&self, rank: usize) -> Result<(), OpError> {
        if self.axis > rank {
            return Err(OpError(format!(
                "axis {} is out of range 0..={rank} for rank {rank}",
                self.axis
            )));
        }
        Ok(())
    }
}

impl Operator for Unsqueeze {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        x.expect_dtype(DType::F32, "x")?;
        self.check(x.rank())?;
        let mut shape = x.shape.clone();
        shape.insert(self.axis, Dim::Known(1));
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        self.check(x.shape().len())?;
        let mut shape = x.shape().to_vec();
        shape.insert(self.axis, 1);
        Ok(vec![relabel(ctx, x, &shape)?])
    }
}

/// Elements `start..end` along one axis.
pub struct SliceDef;
#[derive(Debug)]
struct Slice {
    axis: i64,
    start: usize,
    end: Option<usize>,
}

impl OpDef for SliceDef {
    fn name(&self) -> &str {
        "slice"
    }
    fn summary(&self) -> &str {
        "y = x[.., start..end, ..] along `axis` (end defaults to the dim's size)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["axis", "start", "end"])?;
        let start = attrs.usize_or("start", 0)?;
        let end = if attrs.0.contains_key("end") {
            Some(attrs.usize("end")?)
        } else {
            None
        };
        if let Some(e) = end.filter(|&e| e <= start) {
            return Err(OpError(format!(
                "attribute 'end' ({e}) must be greater than 'start' ({start})"
            )));
        }
        Ok(Box::new(Slice {
            axis: attrs.i64("axis")?,
            start,
            end,
        }))
    }
}

impl Slice {
    /// The slice's end on a dim of `len`, checked.
    fn end(&self, len: usize) -> Result<usize, OpError> {
        let end = self.end.unwrap_or(len);
        if end > len || self.start >= end {
            return Err(OpError(format!(
                "slice {}..{end} does not fit a dim of {len}",
                self.start
            )));
        }
        Ok(end)
    }
}

impl Operator for Slice {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        x.expect_dtype(DType::F32, "x")?;
        let axis = resolve_axis(self.axis, x.rank())?;
        let mut shape = x.shape.clone();
        shape[axis] = match (&x.shape[axis], self.end) {
            (Dim::Known(n), _) => Dim::Known(self.end(*n)? - self.start),
            (Dim::Sym(_), Some(e)) => Dim::Known(e - self.start),
            (Dim::Sym(s), None) => Dim::Sym(format!("{s}-{}", self.start)),
        };
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let s = x.shape();
        let axis = resolve_axis(self.axis, s.len())?;
        let len = s[axis];
        let end = self.end(len)?;
        let outer: usize = s[..axis].iter().product();
        let inner: usize = s[axis + 1..].iter().product();
        let mut shape = s.to_vec();
        shape[axis] = end - self.start;
        let xv = f32_input(x, "x")?;
        let mut out = ctx.alloc_f32(&shape);
        let o = out.f32s_mut()?;
        let run = (end - self.start) * inner;
        for b in 0..outer {
            let src = (b * len + self.start) * inner;
            o[b * run..(b + 1) * run].copy_from_slice(&xv[src..src + run]);
        }
        Ok(vec![out])
    }
}

/// Reflection padding of the last dim (numpy's and ONNX's `reflect`: the edge sample is
/// not repeated).
pub struct PadReflectDef;
#[derive(Debug)]
struct PadReflect {
    before: usize,
    after: usize,
}

impl OpDef for PadReflectDef {
    fn name(&self) -> &str {
        "pad_reflect"
    }
    fn summary(&self) -> &str {
        "y[.., before + t + after] = x[.., t] mirrored about its first and last samples"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["before", "after"])?;
        Ok(Box::new(PadReflect {
            before: attrs.usize_or("before", 0)?,
            after: attrs.usize_or("after", 0)?,
        }))
    }
}

impl PadReflect {
    fn check(&self, len: usize) -> Result<(), OpError> {
        // Each side reflects at most len − 1 samples (the edge itself is not repeated).
        if self.before.max(self.after) >= len {
            return Err(OpError(format!(
                "reflection padding of {} before and {} after needs more than {} samples in the last dim",
                self.before,
                self.after,
                self.before.max(self.after)
            )));
        }
        Ok(())
    }
}

impl Operator for PadReflect {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        x.expect_dtype(DType::F32, "x")?;
        let mut shape = x.shape.clone();
        let last = shape
            .last_mut()
            .ok_or_else(|| OpError("x: expected at least rank 1, got a scalar".into()))?;
        *last = match last {
            Dim::Known(n) => {
                self.check(*n)?;
                Dim::Known(*n + self.before + self.after)
            }
            Dim::Sym(s) => Dim::Sym(format!("{s}+{}", self.before + self.after)),
        };
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let Some(&len) = x.shape().last() else {
            return Err(OpError("x is a scalar".into()));
        };
        self.check(len)?;
        let width = len + self.before + self.after;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = width;
        let xv = f32_input(x, "x")?;
        let mut out = ctx.alloc_f32(&shape);
        let o = out.f32s_mut()?;
        for (row, y) in xv.chunks_exact(len).zip(o.chunks_exact_mut(width)) {
            for (i, v) in y[..self.before].iter_mut().enumerate() {
                *v = row[self.before - i];
            }
            y[self.before..self.before + len].copy_from_slice(row);
            for (i, v) in y[self.before + len..].iter_mut().enumerate() {
                *v = row[len - 2 - i];
            }
        }
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_the_last_two_dims_of_each_matrix_in_a_batch() {
        let (b, r, c) = (3, 37, 5);
        let x: Vec<f32> = (0..b * r * c).map(|i| i as f32).collect();
        let x = Tensor::from_f32(&[b, r, c], x).unwrap();
        let op = TransposeDef.build(&Attrs::default()).unwrap();
        let t = ValueType::new(
            DType::F32,
            [b, r, c].iter().map(|&d| Dim::Known(d)).collect(),
        );
        let inferred = op.infer(&[t], &[]).unwrap();
        assert_eq!(
            inferred[0].shape,
            [b, c, r].map(Dim::Known).to_vec(),
            "inferred shape"
        );
        let mut none: [Tensor; 0] = [];
        let y = op.eval(&mut EvalContext::new(&mut none), &[&x]).unwrap();
        assert_eq!(y[0].shape(), [b, c, r]);
        let y = y[0].f32s().unwrap();
        for m in 0..b {
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(y[(m * c + j) * r + i], ((m * r + i) * c + j) as f32);
                }
            }
        }
        let scalar = ValueType::new(DType::F32, vec![Dim::Known(4)]);
        assert!(op.infer(&[scalar], &[]).is_err(), "rank 1 is refused");
    }

    #[test]
    fn split_heads_stores_each_heads_rows_contiguously_in_its_type() {
        let (b, t, heads, hd) = (2, 5, 3, 4);
        let d = heads * hd;
        let op = SplitHeadsDef
            .build(&Attrs(
                [("heads".to_string(), serde_json::json!(heads))]
                    .into_iter()
                    .collect(),
            ))
            .unwrap();
        let x: Vec<f32> = (0..b * t * d).map(|i| i as f32).collect();
        let x32 = Tensor::from_f32(&[b, t, d], x.clone()).unwrap();
        let x16 = x32.narrow_to_f16().unwrap();
        let mut none: [Tensor; 0] = [];
        for xt in [&x32, &x16] {
            let ty = ValueType::new(
                xt.dtype(),
                xt.shape().iter().map(|&n| Dim::Known(n)).collect(),
            );
            let inferred = op.infer(&[ty], &[]).unwrap();
            let y = op
                .eval(&mut EvalContext::new(&mut none), &[xt])
                .unwrap()
                .remove(0);
            assert_eq!(y.shape(), [b, heads, t, hd]);
            assert_eq!(y.dtype(), xt.dtype());
            assert_eq!(
                inferred[0],
                ValueType::new(xt.dtype(), [b, heads, t, hd].map(Dim::Known).to_vec())
            );
            let y = y.f32s_widened().unwrap();
            for m in 0..b {
                for h in 0..heads {
                    for j in 0..t {
                        for c in 0..hd {
                            assert_eq!(
                                y[((m * heads + h) * t + j) * hd + c],
                                x[(m * t + j) * d + h * hd + c]
                            );
                        }
                    }
                }
            }
        }
        let odd = ValueType::new(DType::F32, vec![Dim::Known(5), Dim::Known(10)]);
        let err = op.infer(&[odd], &[]).unwrap_err();
        assert!(err.0.contains("not divisible by 3 heads"), "{err}");
        let sym = ValueType::new(DType::F32, vec![Dim::Known(5), Dim::Sym("d".into())]);
        assert!(
            op.infer(&[sym], &[]).is_err(),
            "a symbolic last dim is refused"
        );
    }
}
