//! `attention_flash`: per-head online-softmax attention over key blocks of 64.

use rayon::prelude::*;

use super::gemm::{select_kernel, Kernel, PackedRhs, MR, NR};
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

/// Operands shared by every query group.
struct Operands<'a> {
    /// Per head, kᵀ packed in key panels of NR (bf16-rounded).
    kt: &'a [PackedRhs],
    /// v, bf16-rounded, dense `[tk, width]`.
    v: &'a [f32],
    /// heads · head_dim.
    width: usize,
    head_dim: usize,
    scale: f32,
    kernel: Kernel,
}

/// `o[d] = o[d] + p_j·v[j, d]` for j increasing, d in `W`-lane chunks held in a local
/// array so the running sums stay in registers across j (one chain per d, as in the
/// contract). Returns the first d not handled (a multiple of W).
#[inline(always)]
fn pv_lanes<const W: usize>(
    o: &mut [f32],
    d0: usize,
    p: &[f32],
    v: &[f32],
    stride: usize,
) -> usize {
    let mut d = d0;
    while d + W <= o.len() {
        let mut acc = [0.0f32; W];
        acc.copy_from_slice(&o[d..d + W]);
        for (j, &pj) in p.iter().enumerate() {
            let vr = &v[j * stride + d..j * stride + d + W];
            for l in 0..W {
                acc[l] += pj * vr[l];
            }
        }
        o[d..d + W].copy_from_slice(&acc);
        d += W;
    }
    d
}

/// One group of up to MR query rows for all heads, following the contract's order per row
/// (see [`AttentionFlashContract`]). `out` holds the group's rows at `out_stride`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_group_body(
    ops: &Operands<'_>,
    q: &[f32],
    q_stride: usize,
    i0: usize,
    rows: usize,
    keys: &[usize; MR],
    out: &mut [f32],
    out_stride: usize,
) {
    const BK: usize = AttentionFlashContract::BLOCK_K;
    let hd = ops.head_dim;
    let max_keys = keys[..rows].iter().copied().max().unwrap_or(0);
    let mut qpack = vec![0.0f32; hd * MR];
    let mut o = vec![0.0f32; MR * hd];
    let mut scores = [[0.0f32; BK]; MR];
    let mut probs = [0.0f32; BK];
    let mut tile = [[0.0f32; NR]; MR];
    for h in 0..ops.width / hd.max(1) {
        let col = h * hd;
        for r in 0..rows {
            let qr = &q[(i0 + r) * q_stride + col..][..hd];
            for (d, &x) in qr.iter().enumerate() {
                qpack[d * MR + r] = round_bf16(x);
            }
        }
        let mut m = [f32::NEG_INFINITY; MR];
        let mut l = [0.0f32; MR];
        o.fill(0.0);
        let mut j0 = 0;
        while j0 < max_keys {
            let j1 = (j0 + BK).min(max_keys);
            // Scores of the block: s = (Σ_d q_d·k_jd)·scale, d increasing from +0.
            for p in 0..(j1 - j0).div_ceil(NR) {
                (ops.kernel)(hd, &qpack, ops.kt[h].panel(j0 / NR + p), &mut tile);
                for r in 0..rows {
                    for jj in 0..NR {
                        scores[r][p * NR + jj] = tile[r][jj] * ops.scale;
                    }
                }
            }
            for r in 0..rows {
                if j0 >= keys[r] {
                    continue; // block entirely past this row's causal limit
                }
                let s = &scores[r][..keys[r].min(j1) - j0];
                let mut block_max = f32::NEG_INFINITY;
                for &sj in s {
                    block_max = block_max.max(sj);
                }
                let m_new = m[r].max(block_max);
                let alpha = if j0 == 0 {
                    0.0
                } else {
                    libm::expf(m[r] - m_new)
                };
                let orow = &mut o[r * hd..(r + 1) * hd];
                for od in orow.iter_mut() {
                    *od *= alpha;
                }
                let mut lr = l[r] * alpha;
                let p = &mut probs[..s.len()];
                for (pj, &sj) in p.iter_mut().zip(s) {
                    *pj = round_bf16(libm::expf(sj - m_new));
                    lr += *pj;
                }
                l[r] = lr;
                let v = &ops.v[j0 * ops.width + col..];
                let mut d = pv_lanes::<64>(orow, 0, p, v, ops.width);
                d = pv_lanes::<16>(orow, d, p, v, ops.width);
                pv_lanes::<1>(orow, d, p, v, ops.width);
                m[r] = m_new;
            }
            j0 = j1;
        }
        for r in 0..rows {
            let dst = &mut out[r * out_stride + col..][..hd];
            let orow = &o[r * hd..(r + 1) * hd];
            if keys[r] == 0 {
                dst.fill(0.0);
            } else {
                for (x, &od) in dst.iter_mut().zip(orow) {
                    *x = od / l[r];
                }
            }
        }
    }
}

/// [`attend_group_body`] compiled for AVX2 (wider vectors, same operations).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_group_avx2(
    ops: &Operands<'_>,
    q: &[f32],
    q_stride: usize,
    i0: usize,
    rows: usize,
    keys: &[usize; MR],
    out: &mut [f32],
    out_stride: usize,
) {
    attend_group_body(ops, q, q_stride, i0, rows, keys, out, out_stride)
}

/// Runs [`attend_group_body`] with the widest vectors this CPU has.
#[allow(clippy::too_many_arguments)]
fn attend_group(
    ops: &Operands<'_>,
    q: &[f32],
    q_stride: usize,
    i0: usize,
    rows: usize,
    keys: &[usize; MR],
    out: &mut [f32],
    out_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            return unsafe { attend_group_avx2(ops, q, q_stride, i0, rows, keys, out, out_stride) };
        }
    }
    attend_group_body(ops, q, q_stride, i0, rows, keys, out, out_stride)
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
    let kt: Vec<PackedRhs> = (0..heads)
        .map(|h| {
            PackedRhs::pack(tk, head_dim, |j, d| {
                round_bf16(k[j * k_row_stride + h * head_dim + d])
            })
        })
        .collect();
    let vd = dense_bf16(v, tk, v_row_stride, width);
    let ops = Operands {
        kt: &kt,
        v: &vd,
        width,
        head_dim,
        scale: (1.0 / (head_dim as f64).sqrt()) as f32,
        kernel: select_kernel(),
    };
    // Groups of MR query rows run in parallel; each row's numerics are independent.
    let need = (tq - 1) * out_row_stride + width;
    out[..need]
        .par_chunks_mut(MR * out_row_stride)
        .enumerate()
        .for_each(|(g, chunk)| {
            let i0 = g * MR;
            let rows = MR.min(tq - i0);
            let mut keys = [0usize; MR];
            for (r, kr) in keys.iter_mut().enumerate().take(rows) {
                *kr = match causal_offset {
                    Some(p) => tk.min(p.saturating_add(i0 + r).saturating_add(1)),
                    None => tk,
                };
            }
            attend_group(
                &ops,
                q,
                q_row_stride,
                i0,
                rows,
                &keys,
                chunk,
                out_row_stride,
            );
        });
    Ok(())
}
