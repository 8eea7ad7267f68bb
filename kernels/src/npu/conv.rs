//! `conv1d`: im2col of the bf16 input followed by the `matmul_bias` tile.

use super::matmul::gemm_nt;
use super::{check_len, mul, round_bf16_slice, MatmulBiasContract, NpuKernelError, TileFootprint};

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
    const K: &str = "conv1d";
    if stride == 0 || kernel == 0 {
        return Err(NpuKernelError::Argument {
            kernel: K,
            what: "stride and kernel must be positive",
        });
    }
    let t_out = crate::cpu::conv1d_out_len(t_in, kernel, stride, padding);
    let depth = mul(K, "c_in x kernel", c_in, kernel)?;
    check_len(K, "x", x.len(), mul(K, "x [c_in, t_in]", c_in, t_in)?)?;
    check_len(
        K,
        "w",
        w.len(),
        mul(K, "w [c_out, c_in, kernel]", c_out, depth)?,
    )?;
    if let Some(b) = bias {
        check_len(K, "bias", b.len(), c_out)?;
    }
    check_len(
        K,
        "out",
        out.len(),
        mul(K, "out [c_out, t_out]", c_out, t_out)?,
    )?;
    if t_out == 0 || c_out == 0 {
        return Ok(());
    }
    let xb = round_bf16_slice(x);
    let wb = round_bf16_slice(w);
    let mut cols = vec![0.0f32; mul(K, "im2col [t_out, c_in x kernel]", t_out, depth)?];
    for (t, row) in cols.chunks_exact_mut(depth.max(1)).enumerate().take(t_out) {
        for ci in 0..c_in {
            for tap in 0..kernel {
                // Position in the unpadded input; outside [0, t_in) stays zero.
                let p = t * stride + tap;
                if p >= padding && p - padding < t_in {
                    row[ci * kernel + tap] = xb[ci * t_in + p - padding];
                }
            }
        }
    }
    gemm_nt(&wb, depth, &cols, t_out, out, |co, _, acc| match bias {
        Some(b) => acc + b[co],
        None => acc,
    });
    Ok(())
}
