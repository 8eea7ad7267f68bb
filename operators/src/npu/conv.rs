//! `conv1d` and `conv1d_gelu` on the NPU: im2col (a DMA address pattern) feeding the
//! `matmul_bias` tile.

use super::{ceil_div, cycles, expect_count, f32s, kernel_err, single, static_f32, Epilogue};
use amanuensis_kernels::cpu::conv1d_out_len;
use amanuensis_kernels::npu::{self, gelu_exact, Conv1dContract, MatmulBiasContract, BF16_BYTES, F32_BYTES};
use amanuensis_runtime::device::{KernelWork, NpuCaps, NpuKernel, TileWork};
use amanuensis_runtime::op::ValueType;
use amanuensis_runtime::{OpError, Tensor};

/// Cost of a convolution as the im2col GEMM `out[c_out, t_out] = w[c_out, K] · cols[t_out, K]ᵀ`
/// with `M = c_out`, `K = c_in·kernel`, `N = t_out`, on the `matmul_bias` tile.
///
/// - Steps, cycles and out bytes as [`matmul_work`](super::matmul_work): output block
///   64 × (32·rows), `steps = ceil(M/64)·ceil(N/(32·rows))`,
///   `cycles = ceil(ceil(K/64)·64·64·32 / bf16_macs_per_cycle)` (+ one erf per output at
///   the transcendental rate for the GELU epilogue), `out_bytes = 64·(32·rows)·4`.
/// - `in_bytes = 64·K·2` (the weight panel, bf16) `+ (32·rows)·K·2` (the input read once
///   per step as its K × N im2col panel: the DMA's address pattern gathers the taps, so
///   overlapping windows are fetched again) `+ 64·4` (the bias of the 64 channels).
///   Nothing is resident: the panel changes with every time block.
/// - Footprints: `Conv1dContract::footprint()` (the matmul's); `shim_bds = 4`
///   (weights, input pattern, bias, output); `macs = M·N·K`.
pub fn conv1d_work(c_out: usize, c_in: usize, kernel: usize, t_out: usize, epi: Epilogue, caps: &NpuCaps) -> KernelWork {
    const TM: u64 = MatmulBiasContract::TILE_M as u64;
    const TN: u64 = MatmulBiasContract::TILE_N as u64;
    const TK: u64 = MatmulBiasContract::TILE_K as u64;
    let (m, k, n) = (c_out as u64, (c_in as u64) * (kernel as u64), t_out as u64);
    let rows = caps.rows.max(1) as u64;
    let col_n = TN * rows;
    let mut cyc = cycles((ceil_div(k, TK) * TM * TK * TN) as f64, caps.bf16_macs_per_cycle);
    if epi == Epilogue::Gelu {
        cyc += cycles((TM * TN) as f64, caps.transcendentals_per_cycle);
    }
    let (bf16, f32b) = (BF16_BYTES as u64, F32_BYTES as u64);
    let fp = Conv1dContract::footprint();
    KernelWork {
        steps: ceil_div(m, TM) * ceil_div(n, col_n),
        step: TileWork {
            in_bytes: TM * k * bf16 + col_n * k * bf16 + TM * f32b,
            out_bytes: TM * col_n * f32b,
            cycles: cyc,
        },
        resident_bytes: 0,
        footprint_double: fp.total(),
        footprint_single: single(fp).total(),
        shim_bds: 4,
        macs: m * n * k,
    }
}

/// `(c_in, t_in, c_out, kernel, t_out)` of `[x, w, b]`, or why the kernel cannot take them.
fn conv_dims(inputs: &[ValueType], stride: usize, padding: usize) -> Result<[usize; 5], String> {
    expect_count(inputs, &["x", "w", "b"])?;
    let x = static_f32(&inputs[0], "x")?;
    let w = static_f32(&inputs[1], "w")?;
    let b = static_f32(&inputs[2], "b")?;
    if x.len() != 2 || w.len() != 3 || b.len() != 1 {
        return Err(format!(
            "expected x [c_in, t], w [c_out, c_in, kernel], b [c_out]; got {}, {}, {}",
            inputs[0], inputs[1], inputs[2]
        ));
    }
    if w[1] != x[0] || b[0] != w[0] {
        return Err(format!(
            "channels disagree: x {}, w {}, b {}",
            inputs[0], inputs[1], inputs[2]
        ));
    }
    if stride == 0 || w[2] == 0 {
        return Err("stride and kernel size must be >= 1".into());
    }
    let padded = x[1].saturating_add(padding.saturating_mul(2));
    if padded < w[2] {
        return Err(format!("input length {} (+2×padding {padding}) is shorter than the kernel {}", x[1], w[2]));
    }
    Ok([x[0], x[1], w[0], w[2], conv1d_out_len(x[1], w[2], stride, padding)])
}

/// Dims for the cost model (unchecked types give zeros).
fn conv_dims_lenient(inputs: &[ValueType], stride: usize, padding: usize) -> [usize; 5] {
    let d = |i: usize, j: usize| inputs.get(i).map(super::dims).and_then(|v| v.get(j).copied()).unwrap_or(0);
    let (c_in, t_in, c_out, kernel) = (d(0, 0), d(0, 1), d(1, 0), d(1, 2));
    [c_in, t_in, c_out, kernel, conv1d_out_len(t_in, kernel, stride, padding)]
}

/// Runs the catalogue conv1d on `[x, w, b]`, returning `[c_out, t_out]`.
fn eval_conv(inputs: &[&Tensor], stride: usize, padding: usize, kernel: &str) -> Result<Tensor, OpError> {
    expect_count(inputs, &["x", "w", "b"]).map_err(|e| OpError(format!("{kernel}: {e}")))?;
    let (xs, ws) = (inputs[0].shape(), inputs[1].shape());
    if xs.len() != 2 || ws.len() != 3 || xs[0] != ws[1] {
        return Err(OpError(format!("{kernel}: x {xs:?} and w {ws:?} are not [c_in, t], [c_out, c_in, kernel]")));
    }
    let (c_in, t_in, c_out, k) = (xs[0], xs[1], ws[0], ws[2]);
    let t_out = conv1d_out_len(t_in, k, stride, padding);
    let len = c_out
        .checked_mul(t_out)
        .ok_or_else(|| OpError(format!("{kernel}: output size {c_out}x{t_out} overflows")))?;
    let mut out = vec![0f32; len];
    npu::conv1d(
        f32s(inputs[0], "x")?,
        c_in,
        t_in,
        f32s(inputs[1], "w")?,
        c_out,
        k,
        Some(f32s(inputs[2], "b")?),
        stride,
        padding,
        &mut out,
    )
    .map_err(kernel_err)?;
    Tensor::from_f32(&[c_out, t_out], out)
}

/// `conv1d` → `conv1d`: x `[c_in, t]`, w `[c_out, c_in, kernel]`, b `[c_out]`.
#[derive(Debug, Clone, Copy)]
pub struct Conv1dKernel {
    /// Stride (>= 1).
    pub stride: usize,
    /// Zero padding on both sides.
    pub padding: usize,
}

impl NpuKernel for Conv1dKernel {
    fn name(&self) -> &str {
        "conv1d"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        conv_dims(inputs, self.stride, self.padding).map(|_| ())
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let [c_in, _, c_out, kernel, t_out] = conv_dims_lenient(inputs, self.stride, self.padding);
        conv1d_work(c_out, c_in, kernel, t_out, Epilogue::None, caps)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![eval_conv(inputs, self.stride, self.padding, "conv1d")?])
    }
}

/// `conv1d_gelu` → `conv1d_gelu`: the catalogue conv1d, then `gelu_exact` per output.
#[derive(Debug, Clone, Copy)]
pub struct Conv1dGeluKernel {
    /// Stride (>= 1).
    pub stride: usize,
    /// Zero padding on both sides.
    pub padding: usize,
}

impl NpuKernel for Conv1dGeluKernel {
    fn name(&self) -> &str {
        "conv1d_gelu"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        conv_dims(inputs, self.stride, self.padding).map(|_| ())
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let [c_in, _, c_out, kernel, t_out] = conv_dims_lenient(inputs, self.stride, self.padding);
        conv1d_work(c_out, c_in, kernel, t_out, Epilogue::Gelu, caps)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let mut y = eval_conv(inputs, self.stride, self.padding, "conv1d_gelu")?;
        for v in y.f32s_mut()? {
            *v = gelu_exact(*v);
        }
        Ok(vec![y])
    }
}
