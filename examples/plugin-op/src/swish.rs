//! `swish` (also called SiLU): y = x·σ(x) = x / (1 + e^(-x)), element by element.

use amanuensis_runtime::npu::{KernelWork, NpuBinding, NpuCaps, NpuKernel, TileWork};
use amanuensis_runtime::op::{expect_inputs, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// The op kind: its name, and how a node's attributes configure it.
pub struct SwishDef;

impl OpDef for SwishDef {
    fn name(&self) -> &str {
        "swish"
    }

    fn summary(&self) -> &str {
        "y = x · sigmoid(x), element-wise (SiLU)"
    }

    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&[])?;
        Ok(Box::new(Swish))
    }
}

/// `swish` configured for one node.
#[derive(Debug)]
pub struct Swish;

impl Operator for Swish {
    fn infer(
        &self,
        inputs: &[ValueType],
        _states: &[ValueType],
    ) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        inputs[0].expect_dtype(DType::F32, "x")?;
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let mut out = ctx.alloc_f32(x.shape());
        let y = out.f32s_mut()?;
        y.copy_from_slice(x.f32s()?);
        swish_cpu(y);
        Ok(vec![out])
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        // The NPU family's kernel; other targets get none.
        static SWISH_NPU: NpuBinding = NpuBinding::of(&SwishNpu);
        SWISH_NPU.offer(target)
    }
}

/// The CPU kernel, in place: f32 arithmetic, `v = v / (1 + exp(-v))`.
pub fn swish_cpu(values: &mut [f32]) {
    for v in values {
        *v /= 1.0 + (-*v).exp();
    }
}

/// The NPU kernel's contract for one element: `x / (1 + exp(-x))` evaluated in f64 with
/// a software `exp` (the same bits on every host) and rounded once to f32.
pub fn swish_exact(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + libm::exp(-x))) as f32
}

/// Elements one compute tile processes per step (4 KB of f32 in, 4 KB out).
pub const SWISH_TILE: usize = 1024;

/// Vector operations per element besides the exponential: negate, add, divide.
pub const SWISH_VECTOR_OPS: usize = 3;

/// `swish` on the NPU: f32 in and out, tiles of [`SWISH_TILE`] elements, each output per
/// [`swish_exact`].
#[derive(Debug)]
pub struct SwishNpu;

impl NpuKernel for SwishNpu {
    fn name(&self) -> &str {
        "swish_f32"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        match inputs {
            [x] if x.dtype == DType::F32 => Ok(()),
            [x] => Err(format!("x is {}, the kernel takes f32", x.dtype)),
            _ => Err(format!("takes one input, got {}", inputs.len())),
        }
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let n = inputs.first().map_or(0, static_numel);
        elementwise_work(n, SWISH_TILE, SWISH_VECTOR_OPS, 1, caps)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let [x] = inputs else {
            return Err(OpError(format!(
                "swish_f32: takes one input, got {}",
                inputs.len()
            )));
        };
        let out = x.f32s()?.iter().map(|&v| swish_exact(v)).collect();
        Ok(vec![Tensor::from_f32(x.shape(), out)?])
    }
}

/// Elements of a type whose dims are all known (symbolic dims count as 0: the NPU only
/// sees static shapes).
pub fn static_numel(t: &ValueType) -> u64 {
    t.shape
        .iter()
        .map(|d| d.known().unwrap_or(0) as u64)
        .fold(1u64, u64::saturating_mul)
}

/// Cost of an element-wise f32 kernel over `n` elements: each compute tile of a column
/// takes `tile` elements per step, spending `vector_ops` vector operations and
/// `transcendentals` exp/erf evaluations per element.
pub fn elementwise_work(
    n: u64,
    tile: usize,
    vector_ops: usize,
    transcendentals: usize,
    caps: &NpuCaps,
) -> KernelWork {
    let rows = caps.rows.max(1) as u64;
    let tile_bytes = (tile * 4) as u64;
    let tiles = n.div_ceil(tile as u64);
    let cycles = (tile * vector_ops) as f64 / caps.f32_ops_per_cycle
        + (tile * transcendentals) as f64 / caps.transcendentals_per_cycle;
    KernelWork {
        steps: tiles.div_ceil(rows),
        step: TileWork {
            in_bytes: rows * tile_bytes,
            out_bytes: rows * tile_bytes,
            cycles: cycles.ceil() as u64,
        },
        resident_bytes: 0,
        footprint_double: 2 * 2 * tile * 4,
        footprint_single: 2 * tile * 4,
        shim_bds: 2,
        macs: 0,
    }
}
