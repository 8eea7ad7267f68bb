//! `linear_swish`: swish(x · wᵀ + b) as one op, and the fusion pattern that turns the
//! standard `linear` followed by `swish` into it.

use crate::swish::{static_numel, swish_cpu, swish_exact, SWISH_VECTOR_OPS};
use amanuensis_kernels::npu::{matmul_bias, MatmulBiasContract};
use amanuensis_operators::npu::{matmul_work, Epilogue};
use amanuensis_runtime::fusion::{ChainMatch, FusedNode, FusionPattern};
use amanuensis_runtime::npu::{KernelWork, NpuBinding, NpuCaps, NpuKernel};
use amanuensis_runtime::op::{expect_same_dim, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// The fused op kind.
pub struct LinearSwishDef;

impl OpDef for LinearSwishDef {
    fn name(&self) -> &str {
        "linear_swish"
    }

    fn summary(&self) -> &str {
        "y = swish(x[..., in] · w[out, in]ᵀ + b[out]) (bias optional)"
    }

    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(LinearSwish))
    }
}

/// `linear_swish` configured for one node.
#[derive(Debug)]
pub struct LinearSwish;

impl Operator for LinearSwish {
    fn infer(
        &self,
        inputs: &[ValueType],
        _states: &[ValueType],
    ) -> Result<Vec<ValueType>, OpError> {
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
        *shape.last_mut().expect("x has rank >= 1") = w.shape[0].clone();
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let g = Gemm::of(inputs)?;
        let mut shape = inputs[0].shape().to_vec();
        *shape.last_mut().expect("checked by Gemm::of") = g.n;
        let mut out = ctx.alloc_f32(&shape);
        let y = out.f32s_mut()?;
        amanuensis_kernels::cpu::linear(g.x, g.m, g.k, g.w, g.n, g.b, y);
        // Swish in place on the linear's output: the same f32 arithmetic as the `swish`
        // op, so fusing does not change a bit on the CPU.
        swish_cpu(y);
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        // The NPU family's kernel; other targets get none.
        static LINEAR_SWISH_NPU: NpuBinding = NpuBinding::of(&LinearSwishNpu);
        LINEAR_SWISH_NPU.offer(target)
    }
}

/// The inputs of a linear layer, checked: `x [m, k]` (leading dims flattened), `w [n, k]`,
/// optional `b [n]`.
struct Gemm<'a> {
    x: &'a [f32],
    w: &'a [f32],
    b: Option<&'a [f32]>,
    m: usize,
    k: usize,
    n: usize,
}

impl<'a> Gemm<'a> {
    fn of(inputs: &[&'a Tensor]) -> Result<Gemm<'a>, OpError> {
        let (x, w) = match inputs {
            [x, w] | [x, w, _] => (*x, *w),
            _ => {
                return Err(OpError(format!(
                    "expected 2 or 3 inputs (x, w[, b]), got {}",
                    inputs.len()
                )))
            }
        };
        let &[n, k] = w.shape() else {
            return Err(OpError(format!("w must be [out, in], got {:?}", w.shape())));
        };
        let kx = x.shape().last().copied();
        if kx != Some(k) {
            return Err(OpError(format!(
                "x is {:?}, w expects a last dim of {k}",
                x.shape()
            )));
        }
        let b = match inputs.get(2) {
            Some(b) if b.shape() != [n] => {
                return Err(OpError(format!("b is {:?}, w has {n} outputs", b.shape())));
            }
            Some(b) => Some(b.f32s()?),
            None => None,
        };
        Ok(Gemm {
            x: x.f32s()?,
            w: w.f32s()?,
            b,
            m: x.numel() / k.max(1),
            k,
            n,
        })
    }
}

/// `linear_swish` on the NPU: the catalogue's `matmul_bias` tile (bf16 operands, f32
/// accumulation, `MatmulBiasContract`) with swish applied to each f32 result per
/// [`swish_exact`] while the output tile is still in the compute tile.
#[derive(Debug)]
pub struct LinearSwishNpu;

impl NpuKernel for LinearSwishNpu {
    fn name(&self) -> &str {
        "matmul_bias_swish"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        let ([x, w] | [x, w, _]) = inputs else {
            return Err(format!(
                "takes x, w and an optional b, got {} inputs",
                inputs.len()
            ));
        };
        if inputs.iter().any(|t| t.dtype != DType::F32) {
            return Err("all inputs must be f32".into());
        }
        if w.rank() != 2 || x.rank() == 0 || x.shape.last() != w.shape.get(1) {
            return Err(format!("x {x} and w {w} do not form x · wᵀ"));
        }
        if let Some(b) = inputs.get(2) {
            if b.rank() != 1 || b.shape[0] != w.shape[0] {
                return Err(format!("b {b} does not match w's {} outputs", w.shape[0]));
            }
        }
        Ok(())
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let dim = |t: Option<&ValueType>, i: usize| {
            t.and_then(|t| t.shape.get(i))
                .and_then(|d| d.known())
                .unwrap_or(0)
        };
        let (n, k) = (dim(inputs.get(1), 0), dim(inputs.get(1), 1));
        let m = (inputs.first().map_or(0, static_numel) / k.max(1) as u64) as usize;
        // Exactly the standard `matmul_bias` dispatch (the same tiles, DMA and K passes)...
        let mut work = matmul_work(m, k, n, inputs.len() == 3, Epilogue::None, caps);
        // ...plus the swish epilogue on each 64 × 32 output tile, which runs once, on the
        // last K pass: spread over the passes like the standard GELU epilogue.
        let outputs = (MatmulBiasContract::TILE_M * MatmulBiasContract::TILE_N) as f64;
        let epilogue = (outputs * SWISH_VECTOR_OPS as f64 / caps.f32_ops_per_cycle).ceil()
            + (outputs / caps.transcendentals_per_cycle).ceil();
        let col_n = MatmulBiasContract::TILE_N * caps.rows.max(1);
        let blocks = (m.div_ceil(MatmulBiasContract::TILE_M) * n.div_ceil(col_n)).max(1) as u64;
        let passes = (work.steps / blocks).max(1);
        work.step.cycles += (epilogue as u64).div_ceil(passes);
        work
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let g = Gemm::of(inputs)?;
        let mut y = vec![0.0f32; g.m * g.n];
        matmul_bias(g.x, g.m, g.k, g.w, g.n, g.b, &mut y).map_err(|e| OpError(e.to_string()))?;
        for v in &mut y {
            *v = swish_exact(*v);
        }
        let mut shape = inputs[0].shape().to_vec();
        *shape.last_mut().expect("checked by Gemm::of") = g.n;
        Ok(vec![Tensor::from_f32(&shape, y)?])
    }
}

/// The rewrite: standard `linear` → `swish` becomes one `linear_swish` node.
pub struct LinearSwishPattern;

impl FusionPattern for LinearSwishPattern {
    fn name(&self) -> &str {
        "linear_swish"
    }

    fn chain(&self) -> &[&str] {
        &["linear", "swish"]
    }

    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode> {
        // Neither op takes attributes today; a node carrying some is one this fused op
        // cannot express, so the match is declined rather than silently changed.
        if m.chain_nodes().any(|n| !n.attrs.0.is_empty()) {
            return None;
        }
        Some(FusedNode {
            op: "linear_swish".to_string(),
            attrs: Default::default(),
            // The linear's x, w and b (swish has no other input).
            inputs: m.external_inputs(),
        })
    }
}
