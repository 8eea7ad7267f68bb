//! Data movement: transpose, embedding lookups, take.

use super::{f32_input, f32_input_range, scalar_index};
use amanuensis_runtime::op::{expect_inputs, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// Swaps the two dims of a matrix.
pub struct TransposeDef;
#[derive(Debug)]
struct Transpose;

impl OpDef for TransposeDef {
    fn name(&self) -> &str {
        "transpose"
    }
    fn summary(&self) -> &str {
        "y[j, i] = x[i, j]"
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
        x.expect_rank(2, "x")?;
        Ok(vec![ValueType::new(
            DType::F32,
            vec![x.shape[1].clone(), x.shape[0].clone()],
        )])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let (r, c) = (x.shape()[0], x.shape()[1]);
        let xv = f32_input(x, "x")?;
        let mut out = ctx.alloc_f32(&[c, r]);
        let o = out.f32s_mut()?;
        // Blocked so both sides stay in cache.
        const B: usize = 32;
        for i0 in (0..r).step_by(B) {
            for j0 in (0..c).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    for j in j0..(j0 + B).min(c) {
                        o[j * r + i] = xv[i * c + j];
                    }
                }
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
