//! `conv1d`: im2col of the bf16 input followed by the `matmul_bias` tile.

use super::gelu::gelu_in_place;
use super::gemm::{gemm, PackedRhs, NR};
use super::{check_len, mul, round_bf16, MatmulBiasContract, NpuKernelError, TileFootprint};

/// Contract of `conv1d`: x `[c_in, t_in]`, w `[c_out, c_in, kernel]` (PyTorch `Conv1d`
/// layout), bias `[c_out]`, out `[c_out, t_out]`, zero padding, all row-major f32 slices.
///
/// x and w are rounded to bf16 (round-to-nearest-even). The im2col matrix
/// `cols[t, ci·kernel + tap] = x[ci, t·stride + tap − padding]` (0 outside) is the
/// transposed operand of [`MatmulBiasContract`] with A = w `[c_out, c_in·kernel]`, so
/// `out[co, t] = Σ_r w[co, r]·cols[t, r]` is accumulated in f32 with r = ci·kernel + tap
/// increasing (k-tiles of 64 in order), and the bias of channel co is added once after
/// the accumulation. im2col is an address pattern of the DMA, so the tile footprint is the
/// matmul's.
#[derive(Debug, Clone, Copy)]
pub struct Conv1dContract;

impl Conv1dContract {
    /// Double-buffered footprint of one compute tile (that of the matmul).
    pub const fn footprint() -> TileFootprint {
        MatmulBiasContract::footprint()
    }
}

/// Contract of `conv1d_gelu`: [`Conv1dContract`] followed by the exact-erf GELU.
///
/// The accumulator and `c = acc + bias` are exactly those of [`Conv1dContract`]; the
/// epilogue then applies [`super::gelu_exact`] to c (f64 evaluation of
/// `0.5·c·(1 + erf(c/√2))` with `libm::erf`, one rounding to f32), the same rule as
/// [`super::MatmulBiasGeluContract`]. The GELU runs in place on the output tile, so the
/// footprint is the matmul's: 41 216 B of 64 KB.
#[derive(Debug, Clone, Copy)]
pub struct Conv1dGeluContract;

impl Conv1dGeluContract {
    /// Double-buffered footprint of one compute tile (that of the matmul).
    pub const fn footprint() -> TileFootprint {
        MatmulBiasContract::footprint()
    }
}

/// 1-D convolution per [`Conv1dContract`]; t_out comes from `cpu::conv1d_out_len`.
#[allow(clippy::too_many_arguments)]
pub fn conv1d(
    x: &[f32],
    c_in: usize,
    t_in: usize,
    w: &[f32],
    c_out: usize,
    kernel: usize,
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    conv1d_with(
        "conv1d", x, c_in, t_in, w, c_out, kernel, bias, stride, padding, out, false,
    )
}

/// `gelu(conv1d(...))`, per [`Conv1dGeluContract`]; arguments as [`conv1d`].
#[allow(clippy::too_many_arguments)]
pub fn conv1d_gelu(
    x: &[f32],
    c_in: usize,
    t_in: usize,
    w: &[f32],
    c_out: usize,
    kernel: usize,
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    conv1d_with(
        "conv1d_gelu",
        x,
        c_in,
        t_in,
        w,
        c_out,
        kernel,
        bias,
        stride,
        padding,
        out,
        true,
    )
}

/// The convolution of [`Conv1dContract`], with the GELU epilogue when `apply_gelu`.
#[allow(clippy::too_many_arguments)]
fn conv1d_with(
    name: &'static str,
    x: &[f32],
    c_in: usize,
    t_in: usize,
    w: &[f32],
    c_out: usize,
    kernel: usize,
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
    out: &mut [f32],
    apply_gelu: bool,
) -> Result<(), NpuKernelError> {
    if stride == 0 || kernel == 0 {
        return Err(NpuKernelError::Argument {
            kernel: name,
            what: "stride and kernel must be positive",
        });
    }
    let t_out = crate::cpu::conv1d_out_len(t_in, kernel, stride, padding);
    let depth = mul(name, "c_in x kernel", c_in, kernel)?;
    check_len(name, "x", x.len(), mul(name, "x [c_in, t_in]", c_in, t_in)?)?;
    check_len(
        name,
        "w",
        w.len(),
        mul(name, "w [c_out, c_in, kernel]", c_out, depth)?,
    )?;
    if let Some(b) = bias {
        check_len(name, "bias", b.len(), c_out)?;
    }
    check_len(
        name,
        "out",
        out.len(),
        mul(name, "out [c_out, t_out]", c_out, t_out)?,
    )?;
    if t_out == 0 || c_out == 0 {
        return Ok(());
    }
    // The im2col matrix is packed straight from x: cols[t, ci·kernel + tap].
    // Its packed size (columns padded to whole panels) must be representable.
    let padded = t_out
        .checked_next_multiple_of(NR)
        .ok_or(NpuKernelError::Overflow {
            kernel: name,
            what: "im2col [t_out, c_in x kernel]",
        })?;
    mul(name, "im2col [t_out, c_in x kernel]", padded, depth)?;
    let cols = PackedRhs::pack(t_out, depth, |t, r| {
        let (ci, tap) = (r / kernel, r % kernel);
        // Position in the unpadded input; outside [0, t_in) stays zero.
        let p = t * stride + tap;
        if p >= padding && p - padding < t_in {
            round_bf16(x[ci * t_in + p - padding])
        } else {
            0.0
        }
    });
    gemm(
        c_out,
        |co, r| round_bf16(w[co * depth + r]),
        &cols,
        out,
        |co, _, acc| match bias {
            Some(b) => acc + b[co],
            None => acc,
        },
        |row| {
            if apply_gelu {
                gelu_in_place(row)
            }
        },
    );
    Ok(())
}
