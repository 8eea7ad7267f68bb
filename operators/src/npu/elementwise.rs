//! Memory-bound row and element kernels on the NPU: `layer_norm`, `residual_add`, `gelu`,
//! and the DMA-only `transpose`.

use super::{ceil_div, cycles, expect_count, f32s, kernel_err, product, single, static_f32};
use amanuensis_kernels::npu::{
    self, gelu_exact, LayerNormContract, ResidualAddContract, TileFootprint, F32_BYTES,
};
use amanuensis_runtime::npu::{KernelWork, NpuCaps, NpuKernel, TileWork};
use amanuensis_runtime::op::ValueType;
use amanuensis_runtime::{OpError, Tensor};

/// Elements per compute-tile buffer of the `gelu` kernel: f32 in and out, double-buffered,
/// take 32 KB, leaving room for the erf coefficients and the stack.
pub const GELU_TILE: usize = 2048;

/// Side of the square block one `transpose` step moves.
pub const TRANSPOSE_BLOCK: usize = 64;

/// f32 operations per element of layer norm: sum, subtract mean, square-accumulate, and the
/// normalise pass's subtract/scale/affine amortised into about five.
const LN_OPS_PER_ELEMENT: f64 = 5.0;

/// f32 operations per element of GELU besides the erf: x/√2, 1 + erf, 0.5·x·(…).
const GELU_F32_OPS_PER_ELEMENT: f64 = 3.0;

/// `layer_norm` → `layer_norm`: x `[.., d]`, gamma and beta `[d]`, `d <= MAX_DIM`.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormKernel {
    /// Added to the variance.
    pub eps: f32,
}

impl NpuKernel for LayerNormKernel {
    fn name(&self) -> &str {
        "layer_norm"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        expect_count(inputs, &["x", "gamma", "beta"])?;
        let x = static_f32(&inputs[0], "x")?;
        let g = static_f32(&inputs[1], "gamma")?;
        let b = static_f32(&inputs[2], "beta")?;
        let Some(&d) = x.last() else {
            return Err("x is a scalar; layer_norm needs rows".into());
        };
        if g != [d] || b != [d] {
            return Err(format!(
                "gamma {} and beta {} must be [{d}]",
                inputs[1], inputs[2]
            ));
        }
        if d == 0 || d > LayerNormContract::MAX_DIM {
            return Err(format!(
                "row length {d} is outside 1..={} (LayerNormContract::MAX_DIM)",
                LayerNormContract::MAX_DIM
            ));
        }
        Ok(())
    }

    /// Row-chunked: each compute tile normalises `r` whole rows per step, the largest `r`
    /// (at most the rows a tile gets in all) whose buffers fit the tile memory:
    /// `2·(r·d·4 + r·d·4) + 2·d·4 <= tile_data_memory` (x and y double-buffered, gamma and
    /// beta resident). Step = `r·rows` rows, `steps = ceil(R / (r·rows))`,
    /// `cycles = ceil(5·r·d / f32_ops_per_cycle)`, `in = out = r·rows·d·4`,
    /// `resident_bytes = 2·d·4` (gamma, beta), `shim_bds = 3`.
    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let x = inputs.first().map(super::dims).unwrap_or_default();
        let d = x.last().copied().unwrap_or(0) as u64;
        let total_rows = product(&x[..x.len().saturating_sub(1)]);
        let rows = caps.rows.max(1) as u64;
        let f32b = F32_BYTES as u64;
        let row_bytes = d.max(1) * f32b;
        let fit = (caps.tile_data_memory as u64).saturating_sub(2 * row_bytes) / (4 * row_bytes);
        let r = fit.min(ceil_div(total_rows, rows)).max(1);
        let fp = TileFootprint {
            inputs: (r * d * f32b) as usize,
            outputs: (r * d * f32b) as usize,
            depth: 2,
            scratch: (2 * d * f32b) as usize,
        };
        KernelWork {
            steps: ceil_div(total_rows, r * rows),
            step: TileWork {
                in_bytes: r * rows * d * f32b,
                out_bytes: r * rows * d * f32b,
                cycles: cycles(LN_OPS_PER_ELEMENT * (r * d) as f64, caps.f32_ops_per_cycle),
            },
            resident_bytes: 2 * d * f32b,
            footprint_double: fp.total(),
            footprint_single: single(fp).total(),
            shim_bds: 3,
            macs: 0,
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_count(inputs, &["x", "gamma", "beta"])
            .map_err(|e| OpError(format!("layer_norm: {e}")))?;
        let x = inputs[0];
        let Some(&d) = x.shape().last() else {
            return Err(OpError("layer_norm: x is a scalar".into()));
        };
        let rows: usize = x.shape()[..x.shape().len() - 1].iter().product();
        let mut out = vec![0f32; x.numel()];
        npu::layer_norm(
            &f32s(x, "x")?,
            rows,
            d,
            &f32s(inputs[1], "gamma")?,
            &f32s(inputs[2], "beta")?,
            self.eps,
            &mut out,
        )
        .map_err(kernel_err)?;
        Ok(vec![Tensor::from_f32(x.shape(), out)?])
    }
}

/// `add` → `residual_add`: `a + b` for f32 operands of one shape, or `b` a whole `[T, D]`
/// (rank >= 2) block repeated over a's leading dims (positions added to every beam).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResidualAddKernel;

impl NpuKernel for ResidualAddKernel {
    fn name(&self) -> &str {
        "residual_add"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        expect_count(inputs, &["a", "b"])?;
        let a = static_f32(&inputs[0], "a")?;
        let b = static_f32(&inputs[1], "b")?;
        if a == b || (b.len() >= 2 && b.len() < a.len() && a.ends_with(&b)) {
            Ok(())
        } else {
            Err(format!(
                "b {} is neither a's shape {} nor a [T, D] block of it (vector broadcasts are not residual adds)",
                inputs[1], inputs[0]
            ))
        }
    }

    /// Tiles of `ResidualAddContract::TILE` = 1024 elements: step = `1024·rows` elements,
    /// `steps = ceil(numel(a) / (1024·rows))`, `cycles = ceil(1024 / f32_ops_per_cycle)`,
    /// `in = 2·1024·rows·4` (a broadcast b is re-read per block), `out = 1024·rows·4`,
    /// footprint `ResidualAddContract::footprint()`, `shim_bds = 3`.
    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let n = product(&inputs.first().map(super::dims).unwrap_or_default());
        let tile = ResidualAddContract::TILE as u64;
        let rows = caps.rows.max(1) as u64;
        let f32b = F32_BYTES as u64;
        let fp = ResidualAddContract::footprint();
        KernelWork {
            steps: ceil_div(n, tile * rows),
            step: TileWork {
                in_bytes: 2 * tile * rows * f32b,
                out_bytes: tile * rows * f32b,
                cycles: cycles(tile as f64, caps.f32_ops_per_cycle),
            },
            resident_bytes: 0,
            footprint_double: fp.total(),
            footprint_single: single(fp).total(),
            shim_bds: 3,
            macs: 0,
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_count(inputs, &["a", "b"]).map_err(|e| OpError(format!("residual_add: {e}")))?;
        let (a, b) = (inputs[0], inputs[1]);
        let (sa, sb) = (a.shape(), b.shape());
        if sb.len() > sa.len() || sa[sa.len() - sb.len()..] != *sb {
            return Err(OpError(format!(
                "residual_add: cannot broadcast b {sb:?} onto a {sa:?}"
            )));
        }
        let (av, bv) = (f32s(a, "a")?, f32s(b, "b")?);
        let mut out = vec![0f32; av.len()];
        if !bv.is_empty() {
            for (o, x) in out
                .chunks_exact_mut(bv.len())
                .zip(av.chunks_exact(bv.len()))
            {
                npu::residual_add(x, &bv, o).map_err(kernel_err)?;
            }
        }
        Ok(vec![Tensor::from_f32(sa, out)?])
    }
}

/// `gelu` → `gelu`: exact-erf GELU per element (`npu::gelu_exact`), f32 in and out.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeluKernel;

impl NpuKernel for GeluKernel {
    fn name(&self) -> &str {
        "gelu"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        expect_count(inputs, &["x"])?;
        static_f32(&inputs[0], "x").map(|_| ())
    }

    /// Tiles of [`GELU_TILE`] = 2048 elements: step = `2048·rows` elements,
    /// `steps = ceil(numel / (2048·rows))`,
    /// `cycles = ceil(2048 / transcendentals_per_cycle) + ceil(3·2048 / f32_ops_per_cycle)`
    /// (one erf and three f32 operations per element), `in = out = 2048·rows·4`,
    /// footprint 2·(8 KB + 8 KB), `shim_bds = 2`.
    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let n = product(&inputs.first().map(super::dims).unwrap_or_default());
        let tile = GELU_TILE as u64;
        let rows = caps.rows.max(1) as u64;
        let f32b = F32_BYTES as u64;
        let fp = TileFootprint {
            inputs: GELU_TILE * F32_BYTES,
            outputs: GELU_TILE * F32_BYTES,
            depth: 2,
            scratch: 0,
        };
        KernelWork {
            steps: ceil_div(n, tile * rows),
            step: TileWork {
                in_bytes: tile * rows * f32b,
                out_bytes: tile * rows * f32b,
                cycles: cycles(tile as f64, caps.transcendentals_per_cycle)
                    + cycles(
                        GELU_F32_OPS_PER_ELEMENT * tile as f64,
                        caps.f32_ops_per_cycle,
                    ),
            },
            resident_bytes: 0,
            footprint_double: fp.total(),
            footprint_single: single(fp).total(),
            shim_bds: 2,
            macs: 0,
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_count(inputs, &["x"]).map_err(|e| OpError(format!("gelu: {e}")))?;
        let x = inputs[0];
        let out = f32s(x, "x")?.iter().map(|&v| gelu_exact(v)).collect();
        Ok(vec![Tensor::from_f32(x.shape(), out)?])
    }
}

/// `transpose` (2-D) → `transpose`: a layout change done by the DMA's address patterns.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransposeKernel;

impl NpuKernel for TransposeKernel {
    fn name(&self) -> &str {
        "transpose"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        expect_count(inputs, &["x"])?;
        let x = static_f32(&inputs[0], "x")?;
        if x.len() != 2 {
            return Err(format!("x {} must be rank 2", inputs[0]));
        }
        Ok(())
    }

    /// Blocks of 64×64 f32 through the memory tile: `steps = ceil(r/64)·ceil(c/64)`,
    /// `in = out = 64·64·4`, 0 compute cycles and no compute-tile memory, `shim_bds = 2`.
    fn work(&self, inputs: &[ValueType], _caps: &NpuCaps) -> KernelWork {
        let x = inputs.first().map(super::dims).unwrap_or_default();
        let b = TRANSPOSE_BLOCK as u64;
        let (r, c) = (
            x.first().copied().unwrap_or(0) as u64,
            x.get(1).copied().unwrap_or(0) as u64,
        );
        let bytes = b * b * F32_BYTES as u64;
        KernelWork {
            steps: ceil_div(r, b) * ceil_div(c, b),
            step: TileWork {
                in_bytes: bytes,
                out_bytes: bytes,
                cycles: 0,
            },
            resident_bytes: 0,
            footprint_double: 0,
            footprint_single: 0,
            shim_bds: 2,
            macs: 0,
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_count(inputs, &["x"]).map_err(|e| OpError(format!("transpose: {e}")))?;
        let x = inputs[0];
        let &[r, c] = x.shape() else {
            return Err(OpError(format!(
                "transpose: x {:?} is not rank 2",
                x.shape()
            )));
        };
        let xv = f32s(x, "x")?;
        let mut out = vec![0f32; xv.len()];
        for (i, row) in xv.chunks_exact(c.max(1)).enumerate().take(r) {
            for (j, &v) in row.iter().enumerate() {
                out[j * r + i] = v;
            }
        }
        Ok(vec![Tensor::from_f32(&[c, r], out)?])
    }
}
