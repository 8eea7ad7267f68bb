//! `linear` and its fused forms on the NPU: `matmul_bias`, `matmul_bias_gelu`,
//! `matmul_bias_residual`, and the GEMM cost model they share with `conv1d`.

use super::{ceil_div, cycles, expect_count, f32s, kernel_err, single, static_f32};
use amanuensis_kernels::npu::{self, MatmulBiasContract, BF16_BYTES, F32_BYTES};
use amanuensis_runtime::npu::{KernelWork, NpuCaps, NpuKernel, TileWork};
use amanuensis_runtime::op::ValueType;
use amanuensis_runtime::{OpError, Tensor};

/// What the GEMM tile does to each f32 output after `acc + bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing: `matmul_bias`, `conv1d`.
    None,
    /// Exact-erf GELU in place on the C tile: `matmul_bias_gelu`, `conv1d_gelu`.
    Gelu,
    /// `+ residual`, a second f32 tile streamed in: `matmul_bias_residual`.
    Residual,
}

/// Cost of `C[M, N] = A[M, K] · W[N, K]ᵀ (+ bias)` with the `matmul_bias` tile.
///
/// - Core tile (one compute tile): 64(m) × 32(n), accumulating over all of K in k-blocks
///   of 64, i.e. `ceil(K/64)` MAC blocks of 64·64·32.
/// - Column step: output block 64 × (32·rows); the A panel (64 rows × K, bf16) is
///   broadcast to the column's tiles, each tile takes its own 32 rows of W.
///   `steps = ceil(M/64) · ceil(N/(32·rows))`.
/// - `cycles = ceil(ceil(K/64)·64·64·32 / bf16_macs_per_cycle)`, plus for the GELU
///   epilogue `ceil(64·32 / transcendentals_per_cycle)` (one erf per output) and for the
///   residual epilogue `ceil(64·32 / f32_ops_per_cycle)` (one add per output).
/// - `in_bytes = 64·K·2` (A panel, bf16) plus the W block `(32·rows)·K·2` (+ its bias
///   `(32·rows)·4`): when that block fits in half the memory tile it stays resident while
///   the column walks the `ceil(M/64)` row blocks, so each step carries
///   `ceil(block / ceil(M/64))` of it and `resident_bytes = block`; otherwise it is
///   streamed every step and `resident_bytes = 0`. The residual epilogue adds its tile
///   `64·(32·rows)·4`. The transfer of the resident block is already in `in_bytes`.
/// - `out_bytes = 64·(32·rows)·4` (f32 C block).
/// - Footprints: `MatmulBiasContract::footprint()` (depth 2, and depth 1 for single), the
///   residual epilogue adding a 64·32 f32 input tile.
/// - `shim_bds = 4` (A, W, bias, C chains), 5 with the residual; `macs = M·N·K`.
pub fn matmul_work(
    m: usize,
    k: usize,
    n: usize,
    has_bias: bool,
    epi: Epilogue,
    caps: &NpuCaps,
) -> KernelWork {
    const TM: u64 = MatmulBiasContract::TILE_M as u64;
    const TN: u64 = MatmulBiasContract::TILE_N as u64;
    const TK: u64 = MatmulBiasContract::TILE_K as u64;
    let (m, k, n) = (m as u64, k as u64, n as u64);
    let rows = caps.rows.max(1) as u64;
    let col_n = TN * rows;
    let m_blocks = ceil_div(m, TM);
    let bf16 = BF16_BYTES as u64;
    let f32b = F32_BYTES as u64;
    // The column's weight block (32·rows output columns × K) stays in the memory tile while
    // the column walks down M. When it exceeds half the memory tile, K is split into passes:
    // between passes the partial C tile goes out and comes back to seed the accumulator, so
    // the accumulation order (and the bits) equal a single pass over K.
    let bias_bytes = if has_bias { col_n * f32b } else { 0 };
    let half = caps.memtile_bytes as u64 / 2;
    let full_block = col_n * k * bf16 + bias_bytes;
    let passes = ceil_div(full_block, half.max(1)).clamp(1, ceil_div(k, TK).max(1));
    let k_pass = ceil_div(ceil_div(k, passes), TK) * TK;
    let steps = m_blocks * ceil_div(n, col_n) * passes;

    let mut cyc = cycles(
        (ceil_div(k_pass, TK) * TM * TK * TN) as f64,
        caps.bf16_macs_per_cycle,
    );
    let outputs_per_tile = (TM * TN) as f64;
    // The epilogue runs on the last pass only; spread over the passes' steps.
    match epi {
        Epilogue::None => {}
        Epilogue::Gelu => {
            cyc += ceil_div(
                cycles(outputs_per_tile, caps.transcendentals_per_cycle),
                passes,
            )
        }
        Epilogue::Residual => {
            cyc += ceil_div(cycles(outputs_per_tile, caps.f32_ops_per_cycle), passes)
        }
    }

    let a_panel = TM * k_pass * bf16;
    let w_block = col_n * k_pass * bf16 + bias_bytes;
    let resident = w_block;
    let w_per_step = ceil_div(w_block, m_blocks);
    let c_block = TM * col_n * f32b;
    // Partial sums read back on every pass but the first.
    let mut in_bytes = a_panel + w_per_step + c_block * (passes - 1) / passes;
    let mut fp = MatmulBiasContract::footprint();
    let mut shim_bds = 4;
    if epi == Epilogue::Residual {
        in_bytes += c_block / passes;
        fp.inputs += MatmulBiasContract::TILE_M * MatmulBiasContract::TILE_N * F32_BYTES;
        shim_bds += 1;
    }
    KernelWork {
        steps,
        step: TileWork {
            in_bytes,
            out_bytes: c_block,
            cycles: cyc,
        },
        resident_bytes: resident,
        footprint_double: fp.total(),
        footprint_single: single(fp).total(),
        shim_bds,
        macs: m * n * k,
    }
}

/// (M, K, N) of a linear's inputs `x [.., K]` (rank >= 2, flattened to `[M, K]`),
/// `w [N, K]`, optional `b [N]`, or why the GEMM cannot take them.
fn linear_dims(
    x: &ValueType,
    w: &ValueType,
    b: Option<&ValueType>,
) -> Result<(usize, usize, usize), String> {
    let xd = static_f32(x, "x")?;
    let wd = static_f32(w, "w")?;
    if xd.len() < 2 {
        return Err(format!("x {x} must have rank >= 2 (flattened to [M, K])"));
    }
    if wd.len() != 2 {
        return Err(format!("w {w} must be rank 2 [N, K]"));
    }
    let k = xd[xd.len() - 1];
    if k != wd[1] {
        return Err(format!(
            "x's last dim {k} differs from w's input dim {}",
            wd[1]
        ));
    }
    if let Some(b) = b {
        let bd = static_f32(b, "b")?;
        if bd != [wd[0]] {
            return Err(format!("b {b} must be [{}]", wd[0]));
        }
    }
    let m = xd[..xd.len() - 1].iter().product();
    Ok((m, k, wd[0]))
}

/// Dims of the inputs for the cost model (unchecked types give zeros).
fn linear_dims_lenient(inputs: &[ValueType]) -> (usize, usize, usize) {
    let xd = inputs.first().map(super::dims).unwrap_or_default();
    let wd = inputs.get(1).map(super::dims).unwrap_or_default();
    let k = xd.last().copied().unwrap_or(0);
    let m = xd[..xd.len().saturating_sub(1)].iter().product();
    (m, k, wd.first().copied().unwrap_or(0))
}

/// Splits `[x, w, b?]` off the inputs and runs `f(a, m, k, w, n, bias, out)`, returning
/// the output `[.., N]` with x's leading dims.
fn eval_linear(
    kernel: &str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    f: impl FnOnce(
        &[f32],
        usize,
        usize,
        &[f32],
        usize,
        Option<&[f32]>,
        &mut [f32],
    ) -> Result<(), npu::NpuKernelError>,
) -> Result<Tensor, OpError> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.is_empty() || ws.len() != 2 || xs[xs.len() - 1] != ws[1] {
        return Err(OpError(format!(
            "{kernel}: x {xs:?} and w {ws:?} do not form x · wᵀ"
        )));
    }
    let (n, k) = (ws[0], ws[1]);
    let m: usize = xs[..xs.len() - 1].iter().product();
    let bias = b.map(|b| f32s(b, "b")).transpose()?;
    let len = m
        .checked_mul(n)
        .ok_or_else(|| OpError(format!("{kernel}: output size {m}x{n} overflows")))?;
    let mut out = vec![0f32; len];
    f(
        &f32s(x, "x")?,
        m,
        k,
        &f32s(w, "w")?,
        n,
        bias.as_deref(),
        &mut out,
    )
    .map_err(kernel_err)?;
    let mut shape = xs.to_vec();
    *shape.last_mut().expect("x has rank >= 1") = n;
    Tensor::from_f32(&shape, out)
}

/// `linear` → `matmul_bias`: inputs `[x, w, b?]`, a missing bias is a zero bias.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatmulBiasKernel;

impl NpuKernel for MatmulBiasKernel {
    fn name(&self) -> &str {
        "matmul_bias"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        if !(2..=3).contains(&inputs.len()) {
            return Err(format!(
                "expected 2 or 3 inputs (x, w[, b]), got {}",
                inputs.len()
            ));
        }
        linear_dims(&inputs[0], &inputs[1], inputs.get(2)).map(|_| ())
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let (m, k, n) = linear_dims_lenient(inputs);
        matmul_work(m, k, n, inputs.len() == 3, Epilogue::None, caps)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        if !(2..=3).contains(&inputs.len()) {
            return Err(OpError(format!(
                "matmul_bias: expected 2 or 3 inputs, got {}",
                inputs.len()
            )));
        }
        Ok(vec![eval_linear(
            "matmul_bias",
            inputs[0],
            inputs[1],
            inputs.get(2).copied(),
            npu::matmul_bias,
        )?])
    }
}

/// `linear_gelu` → `matmul_bias_gelu`: inputs `[x, w, b?]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatmulBiasGeluKernel;

impl NpuKernel for MatmulBiasGeluKernel {
    fn name(&self) -> &str {
        "matmul_bias_gelu"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        MatmulBiasKernel.check(inputs)
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let (m, k, n) = linear_dims_lenient(inputs);
        matmul_work(m, k, n, inputs.len() == 3, Epilogue::Gelu, caps)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        if !(2..=3).contains(&inputs.len()) {
            return Err(OpError(format!(
                "matmul_bias_gelu: expected 2 or 3 inputs, got {}",
                inputs.len()
            )));
        }
        Ok(vec![eval_linear(
            "matmul_bias_gelu",
            inputs[0],
            inputs[1],
            inputs.get(2).copied(),
            npu::matmul_bias_gelu,
        )?])
    }
}

/// `linear_residual` → `matmul_bias_residual`: inputs `[x, w, b, residual]` when `bias`,
/// else `[x, w, residual]`; bits `(acc + bias) + residual`, the residual of y's shape.
#[derive(Debug, Clone, Copy)]
pub struct MatmulBiasResidualKernel {
    /// Whether the inputs carry a bias.
    pub bias: bool,
}

impl MatmulBiasResidualKernel {
    fn names(&self) -> &'static [&'static str] {
        if self.bias {
            &["x", "w", "b", "residual"]
        } else {
            &["x", "w", "residual"]
        }
    }
}

impl NpuKernel for MatmulBiasResidualKernel {
    fn name(&self) -> &str {
        "matmul_bias_residual"
    }

    fn check(&self, inputs: &[ValueType]) -> Result<(), String> {
        expect_count(inputs, self.names())?;
        let b = if self.bias { Some(&inputs[2]) } else { None };
        let (_, _, n) = linear_dims(&inputs[0], &inputs[1], b)?;
        let r = &inputs[inputs.len() - 1];
        let rd = static_f32(r, "residual")?;
        let mut want = static_f32(&inputs[0], "x")?;
        *want.last_mut().expect("rank checked") = n;
        if rd != want {
            return Err(format!(
                "residual {r} must have the linear output's shape {want:?} (no broadcast)"
            ));
        }
        Ok(())
    }

    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        let (m, k, n) = linear_dims_lenient(inputs);
        matmul_work(m, k, n, self.bias, Epilogue::Residual, caps)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_count(inputs, self.names())
            .map_err(|e| OpError(format!("matmul_bias_residual: {e}")))?;
        let b = if self.bias { Some(inputs[2]) } else { None };
        let r = inputs[inputs.len() - 1];
        let (xs, ws) = (inputs[0].shape(), inputs[1].shape());
        let mut want = xs.to_vec();
        if let (Some(last), Some(&n)) = (want.last_mut(), ws.first()) {
            *last = n;
        }
        if r.shape() != want.as_slice() {
            return Err(OpError(format!(
                "matmul_bias_residual: residual {:?} differs from the linear output {:?}",
                r.shape(),
                want
            )));
        }
        let rs = f32s(r, "residual")?;
        let y = eval_linear(
            "matmul_bias_residual",
            inputs[0],
            inputs[1],
            b,
            |a, m, k, w, n, bias, out| npu::matmul_bias_residual(a, m, k, w, n, bias, &rs, out),
        )?;
        Ok(vec![y])
    }
}
