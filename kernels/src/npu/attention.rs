//! `attention_flash`: per-head online-softmax attention over key blocks of 64.

use rayon::prelude::*;

use super::{mul, round_bf16, NpuKernelError, TileFootprint, BF16_BYTES, F32_BYTES};

/// Contract of `attention_flash`: `out = softmax(q·kᵀ/√hd)·v` per head without ever
/// materialising the tq×tk score matrix.
///
/// Arguments follow `cpu::attention`: row i of q/k/v/out starts at `i·row_stride`, head h
/// occupies columns `h·hd..(h+1)·hd`; with `causal_offset = Some(p)` query row i attends
/// keys j ≤ p + i.
///
/// Numerics, for each head and query row (rows are independent; query blocks of
/// [`AttentionFlashContract::BLOCK_Q`] only size the memory):
/// - q, k, v are rounded to bf16 (round-to-nearest-even); `scale = f32(1/√hd)` (f64 value
///   rounded once).
/// - Keys are visited in blocks of [`AttentionFlashContract::BLOCK_K`] = 64 in increasing
///   order; blocks entirely beyond the causal limit are skipped, masked keys inside a
///   block are left out.
/// - Score: `s_j = (Σ_d q_d·k_jd)·scale`, f32, d increasing from +0.0, unfused.
/// - Per block: `m' = max(m, max_j s_j)` (m starts at −∞); `α = expf(m − m')`, or 0 for the
///   first block; `p_j = bf16(expf(s_j − m'))` (P is rounded to bf16 because it is the
///   left operand of the bf16 P·V MAC); `l = l·α + Σ_j p_j` and
///   `o_d = o_d·α + Σ_j p_j·v_jd`, sums in increasing j, unfused.
/// - `out_d = o_d / l`; a row with no keys (tk = 0) gives 0.
/// - `expf` is `libm::expf` (portable software, so the bits do not depend on the host).
/// - NaN propagates; nothing saturates.
///
/// Memory (hd = 64): Q block 16×64 bf16, K and V blocks 64×64 bf16, output block 16×64
/// f32, all double-buffered; score/P block 16×64 f32, O accumulator 16×64 f32 and m, l
/// resident: 53 376 B of 64 KB.
#[derive(Debug, Clone, Copy)]
pub struct AttentionFlashContract;

impl AttentionFlashContract {
    /// Keys per block: the softmax rescaling granularity, which defines the numerics.
    pub const BLOCK_K: usize = 64;
    /// Query rows per tile: memory only, the numerics do not depend on it. 64 rows would
    /// need 74 240 B at hd = 64 (a 64×64 f32 score block plus the O accumulator and
    /// double-buffered K/V), more than the 64 KB data memory.
    pub const BLOCK_Q: usize = 16;

    /// Tile footprint for a head dimension of `head_dim`.
    pub const fn footprint(head_dim: usize) -> TileFootprint {
        TileFootprint {
            inputs: (Self::BLOCK_Q + 2 * Self::BLOCK_K) * head_dim * BF16_BYTES,
            outputs: Self::BLOCK_Q * head_dim * F32_BYTES,
            depth: 2,
            scratch: Self::BLOCK_Q * Self::BLOCK_K * F32_BYTES
                + Self::BLOCK_Q * head_dim * F32_BYTES
                + 2 * Self::BLOCK_Q * F32_BYTES,
        }
    }
}

/// Fails unless a strided `[rows, width]` view fits in `len` elements.
fn check_strided(
    operand: &'static str,
    len: usize,
    rows: usize,
    stride: usize,
    width: usize,
) -> Result<(), NpuKernelError> {
    const K: &str = "attention_flash";
    if rows == 0 {
        return Ok(());
    }
    if stride < width {
        return Err(NpuKernelError::Argument {
            kernel: K,
            what: "row stride smaller than heads x head_dim",
        });
    }
    let need = mul(K, operand, rows - 1, stride)?
        .checked_add(width)
        .ok_or(NpuKernelError::Overflow {
            kernel: K,
            what: operand,
        })?;
    if len < need {
        return Err(NpuKernelError::Length {
            kernel: K,
            operand,
            expected: need,
            actual: len,
        });
    }
    Ok(())
}

/// Copies a strided `[rows, width]` view into a dense bf16-rounded buffer.
fn dense_bf16(x: &[f32], rows: usize, stride: usize, width: usize) -> Vec<f32> {
    let mut d = Vec::with_capacity(rows * width);
    for r in 0..rows {
        d.extend(
            x[r * stride..r * stride + width]
                .iter()
                .map(|&v| round_bf16(v)),
        );
    }
    d
}

/// One head of one query row, following the contract's order exactly.
#[allow(clippy::too_many_arguments)]
fn attend_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    hd: usize,
    keys: usize,
    scale: f32,
    o: &mut [f32],
) {
    let mut scores = [0.0f32; AttentionFlashContract::BLOCK_K];
    let mut m = f32::NEG_INFINITY;
    let mut l = 0.0f32;
    o.fill(0.0);
    let mut j0 = 0;
    while j0 < keys {
        let j1 = (j0 + AttentionFlashContract::BLOCK_K).min(keys);
        let s = &mut scores[..j1 - j0];
        let mut block_max = f32::NEG_INFINITY;
        for (jj, sj) in s.iter_mut().enumerate() {
            let kr = &k[(j0 + jj) * width + col..][..hd];
            let mut acc = 0.0f32;
            for (&a, &b) in q.iter().zip(kr) {
                acc += a * b;
            }
            *sj = acc * scale;
            block_max = block_max.max(*sj);
        }
        let m_new = m.max(block_max);
        let alpha = if j0 == 0 { 0.0 } else { libm::expf(m - m_new) };
        l *= alpha;
        for od in o.iter_mut() {
            *od *= alpha;
        }
        for (jj, &sj) in s.iter().enumerate() {
            let p = round_bf16(libm::expf(sj - m_new));
            l += p;
            let vr = &v[(j0 + jj) * width + col..][..hd];
            for (od, &vd) in o.iter_mut().zip(vr) {
                *od += p * vd;
            }
        }
        m = m_new;
        j0 = j1;
    }
    if keys == 0 {
        return;
    }
    for od in o.iter_mut() {
        *od /= l;
    }
}

/// Multi-head flash attention per [`AttentionFlashContract`]; arguments as
/// `cpu::attention`.
#[allow(clippy::too_many_arguments)]
pub fn attention_flash(
    q: &[f32],
    q_row_stride: usize,
    k: &[f32],
    k_row_stride: usize,
    v: &[f32],
    v_row_stride: usize,
    tq: usize,
    tk: usize,
    heads: usize,
    head_dim: usize,
    causal_offset: Option<usize>,
    out: &mut [f32],
    out_row_stride: usize,
) -> Result<(), NpuKernelError> {
    const K: &str = "attention_flash";
    let width = mul(K, "heads x head_dim", heads, head_dim)?;
    check_strided("q", q.len(), tq, q_row_stride, width)?;
    check_strided("k", k.len(), tk, k_row_stride, width)?;
    check_strided("v", v.len(), tk, v_row_stride, width)?;
    check_strided("out", out.len(), tq, out_row_stride, width)?;
    if tq == 0 || width == 0 {
        return Ok(());
    }
    let qd = dense_bf16(q, tq, q_row_stride, width);
    let kd = dense_bf16(k, tk, k_row_stride, width);
    let vd = dense_bf16(v, tk, v_row_stride, width);
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let mut dense = vec![0.0f32; tq * width];
    dense
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(i, orow)| {
            let keys = match causal_offset {
                Some(p) => tk.min(p.saturating_add(i).saturating_add(1)),
                None => tk,
            };
            for h in 0..heads {
                let col = h * head_dim;
                attend_row(
                    &qd[i * width + col..][..head_dim],
                    &kd,
                    &vd,
                    width,
                    col,
                    head_dim,
                    keys,
                    scale,
                    &mut orow[col..col + head_dim],
                );
            }
        });
    for (i, row) in dense.chunks_exact(width).enumerate() {
        out[i * out_row_stride..i * out_row_stride + width].copy_from_slice(row);
    }
    Ok(())
}
