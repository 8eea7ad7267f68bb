//! 1-D convolution (Whisper's two-layer conv stem) as im2col followed by gemm.

use rayon::prelude::*;

use super::checks::require_len;
use super::parallel::gemm_parallelism;

/// Kernels at least this long are unfolded column by column (contiguous runs of x).
const LONG_KERNEL: usize = 16;

/// Output length of a 1-D convolution: (t_in + 2·padding − kernel) / stride + 1, or 0
/// when the padded input is shorter than the kernel or `stride`/`kernel` is 0.
pub fn conv1d_out_len(t_in: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let padded = t_in.saturating_add(padding.saturating_mul(2));
    if stride == 0 || kernel == 0 || padded < kernel {
        0
    } else {
        (padded - kernel) / stride + 1
    }
}

/// Fills one im2col row: `row[t] = x_row[t·stride + tap − padding]`, zero outside.
fn im2col_row(row: &mut [f32], x_row: &[f32], tap: usize, stride: usize, padding: usize) {
    let t_out = row.len();
    let t_in = x_row.len();
    // Valid t satisfy padding ≤ t·stride + tap < t_in + padding.
    let lo = padding.saturating_sub(tap).div_ceil(stride).min(t_out);
    let hi = if t_in + padding > tap {
        (t_in + padding - tap).div_ceil(stride).min(t_out)
    } else {
        0
    };
    if hi <= lo {
        row.fill(0.0);
        return;
    }
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    // lo < t_out here, so lo is the unclamped ceiling and lo·stride + tap ≥ padding.
    let start = lo * stride + tap - padding;
    if stride == 1 {
        row[lo..hi].copy_from_slice(&x_row[start..start + (hi - lo)]);
    } else {
        for (o, &v) in row[lo..hi]
            .iter_mut()
            .zip(x_row[start..].iter().step_by(stride))
        {
            *o = v;
        }
    }
}

/// 1-D convolution with zero padding: x `[c_in, t_in]`, w `[c_out, c_in, kernel]`
/// (PyTorch `Conv1d` layout), out `[c_out, t_out]` with t_out from [`conv1d_out_len`].
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
) {
    conv1d_batch(
        x, 1, c_in, t_in, w, c_out, kernel, bias, stride, padding, out,
    );
}

/// [`conv1d`] over a batch: x `[batch, c_in, t_in]`, out `[batch, c_out, t_out]`. The
/// items share one gemm (their im2col columns side by side), which is what makes a batch
/// of short inputs, such as Silero VAD's 32-ms windows, cheap.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_batch(
    x: &[f32],
    batch: usize,
    c_in: usize,
    t_in: usize,
    w: &[f32],
    c_out: usize,
    kernel: usize,
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
    out: &mut [f32],
) {
    let t_out = conv1d_out_len(t_in, kernel, stride, padding);
    let depth = c_in
        .checked_mul(kernel)
        .expect("conv1d: c_in x kernel overflows");
    let item_in = c_in.checked_mul(t_in).expect("conv1d: input overflows");
    let item_out = c_out.checked_mul(t_out).expect("conv1d: output overflows");
    require_len("conv1d input", x.len(), batch, item_in);
    require_len("conv1d weight", w.len(), c_out, depth);
    if let Some(b) = bias {
        require_len("conv1d bias", b.len(), 1, c_out);
    }
    require_len("conv1d output", out.len(), batch, item_out);
    if t_out == 0 || c_out == 0 || batch == 0 {
        return;
    }
    // With a batch the gemm writes [c_out, batch·t_out], scattered to out afterwards.
    let cols_t = batch * t_out;
    let mut staged = if batch == 1 {
        Vec::new()
    } else {
        vec![0.0f32; c_out * cols_t]
    };
    let dst: &mut [f32] = if batch == 1 { out } else { &mut staged };
    match bias {
        Some(b) => dst
            .chunks_exact_mut(cols_t)
            .zip(b)
            .for_each(|(r, &v)| r.fill(v)),
        None => dst.fill(0.0),
    }
    if depth > 0 {
        // cols[(ci, tap), (b, t)] = x[b, ci, t·stride + tap − padding]: the convolution
        // becomes w [c_out, c_in·kernel] · cols [c_in·kernel, batch·t_out].
        // With long kernels (Silero VAD's 256-tap STFT basis at stride 128) each output
        // column reads a contiguous run of x, so the columns are laid out one after the
        // other (copies of whole runs) and gemm reads them transposed. Short kernels
        // (Whisper's 3 taps) keep im2col's rows: laid out by column, gemm's sums for a
        // column then depended on how many columns there were, and a batch item would no
        // longer equal the conv alone bit for bit.
        let by_column = kernel >= LONG_KERNEL;
        let mut cols = vec![0.0f32; depth * cols_t];
        if by_column {
            // cols[(b, t), (ci, tap)] = x[b, ci, t·stride + tap − padding].
            let fill = |(c, col): (usize, &mut [f32])| {
                let (b, t) = (c / t_out, c % t_out);
                let start = (t * stride) as isize - padding as isize;
                // Taps in lo..hi fall inside x; the rest are the zero padding.
                let lo = (-start).clamp(0, kernel as isize) as usize;
                let hi = (t_in as isize - start).clamp(lo as isize, kernel as isize) as usize;
                for (ci, taps) in col.chunks_exact_mut(kernel).enumerate() {
                    let base = b * item_in + ci * t_in;
                    taps[..lo].fill(0.0);
                    if hi > lo {
                        let from = (base as isize + start + lo as isize) as usize;
                        taps[lo..hi].copy_from_slice(&x[from..from + (hi - lo)]);
                    }
                    taps[hi..].fill(0.0);
                }
            };
            if depth * cols_t > 1 << 16 {
                cols.par_chunks_mut(depth).enumerate().for_each(fill);
            } else {
                cols.chunks_mut(depth).enumerate().for_each(fill);
            }
        } else {
            // cols[(ci, tap), (b, t)] = x[b, ci, t·stride + tap − padding].
            let fill = |(r, row): (usize, &mut [f32])| {
                let (ci, tap) = (r / kernel, r % kernel);
                for (b, item) in row.chunks_exact_mut(t_out).enumerate() {
                    let base = b * item_in + ci * t_in;
                    im2col_row(item, &x[base..base + t_in], tap, stride, padding);
                }
            };
            if depth * cols_t > 1 << 16 {
                cols.par_chunks_mut(cols_t).enumerate().for_each(fill);
            } else {
                cols.chunks_mut(cols_t).enumerate().for_each(fill);
            }
        }
        // The convolution is w [c_out, depth] · cols [depth, cols_t]; cols is stored
        // row-major, or column-major when filled by column.
        let (rhs_cs, rhs_rs) = if by_column {
            (depth as isize, 1)
        } else {
            (1, cols_t as isize)
        };
        // SAFETY: w is [c_out, depth] (row stride depth), cols holds depth × cols_t
        // elements addressed by (rhs_cs, rhs_rs), dst [c_out, cols_t] (row stride cols_t);
        // lengths checked above.
        unsafe {
            super::sgemm::gemm(
                c_out,
                cols_t,
                depth,
                dst.as_mut_ptr(),
                1,
                cols_t as isize,
                true,
                w.as_ptr(),
                1,
                depth as isize,
                cols.as_ptr(),
                rhs_cs,
                rhs_rs,
                1.0,
                1.0,
                gemm_parallelism(c_out * cols_t * depth),
            );
        }
    }
    if batch > 1 {
        for (co, row) in staged.chunks_exact(cols_t).enumerate() {
            for (b, item) in row.chunks_exact(t_out).enumerate() {
                let o = b * item_out + co * t_out;
                out[o..o + t_out].copy_from_slice(item);
            }
        }
    }
}
