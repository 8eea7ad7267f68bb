//! `attention_flash`: per-head online-softmax attention over key blocks of 64.

use rayon::prelude::*;

use super::expf::exp_sub_bf16;
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
/// - Per block: `m' = max(m, max_j s_j)` (m starts at −∞; `f32::max`, so NaN scores are
///   ignored by the max); `α = expf(m − m')`, or 0 for the first block;
///   `p_j = bf16(expf(s_j − m'))` (P is rounded to bf16 because it is the left operand of
///   the bf16 P·V MAC). l and o are rescaled first, `l = l·α`, `o_d = o_d·α`, then each
///   p_j is added in increasing j: `l = l + p_j`, `o_d = o_d + p_j·v_jd` (one chain per
///   l and per d, unfused).
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

/// Operands of one head, shared by every query group.
struct HeadOperands<'a> {
    /// kᵀ of the head packed in key panels of NR (bf16-rounded).
    kt: &'a PackedRhs,
    /// v of the head, bf16-rounded, dense `[tk, head_dim]`.
    v: &'a [f32],
    head_dim: usize,
    scale: f32,
    kernel: Kernel,
}

/// `o[d] = o[d] + p_j·v[j, d]` for j increasing, d in `W`-lane chunks held in a local
/// array so the running sums stay in registers across j (one chain per d, as in the
/// contract). The first chunk also runs the chain `l = l + p_j` (when `*l_pending`), which
/// then costs no latency of its own. Returns the first d not handled (a multiple of W).
#[inline(always)]
fn pv_lanes<const W: usize>(
    o: &mut [f32],
    d0: usize,
    p: &[f32],
    v: &[f32],
    l: &mut f32,
    l_pending: &mut bool,
) -> usize {
    let hd = o.len();
    let mut d = d0;
    while d + W <= hd {
        let mut acc = [0.0f32; W];
        acc.copy_from_slice(&o[d..d + W]);
        let mut lr = *l;
        let with_l = *l_pending;
        for (j, &pj) in p.iter().enumerate() {
            if with_l {
                lr += pj;
            }
            let vr = &v[j * hd + d..j * hd + d + W];
            for l in 0..W {
                acc[l] += pj * vr[l];
            }
        }
        if with_l {
            *l = lr;
            *l_pending = false;
        }
        o[d..d + W].copy_from_slice(&acc);
        d += W;
    }
    d
}

/// `max(init, s_0, s_1, …)` with f32::max (NaN ignored). Maximum is exact, so any grouping
/// gives the same value up to the sign of a zero result, and m enters the contract only
/// through differences `s − m` and `m − m'` fed to expf, where ±0 give the same bits.
#[inline(always)]
fn block_max(init: f32, s: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let mut m = init;
    for &x in lanes.iter().chain(chunks.remainder()) {
        m = m.max(x);
    }
    m
}

/// Up to MR query rows (`q_rows[r]` = the head's hd values of row r) of one head,
/// following the contract's order per row (see [`AttentionFlashContract`]); writes
/// `out[r][..hd]`.
#[inline(always)]
fn attend_group_body(
    ops: &HeadOperands<'_>,
    q_rows: &[&[f32]],
    keys: &[usize],
    out: &mut [&mut [f32]],
) {
    const BK: usize = AttentionFlashContract::BLOCK_K;
    let hd = ops.head_dim;
    let rows = q_rows.len();
    let max_keys = keys.iter().copied().max().unwrap_or(0);
    let mut qpack = vec![0.0f32; hd * MR];
    for (r, qr) in q_rows.iter().enumerate() {
        for (d, &x) in qr.iter().enumerate() {
            qpack[d * MR + r] = round_bf16(x);
        }
    }
    let mut o = vec![0.0f32; MR * hd];
    let mut m = [f32::NEG_INFINITY; MR];
    let mut l = [0.0f32; MR];
    let mut scores = [[0.0f32; BK]; MR];
    let mut probs = [0.0f32; BK];
    let mut tile = [[0.0f32; NR]; MR];
    let mut j0 = 0;
    while j0 < max_keys {
        let j1 = (j0 + BK).min(max_keys);
        // Scores of the block: s = (Σ_d q_d·k_jd)·scale, d increasing from +0.
        for p in 0..(j1 - j0).div_ceil(NR) {
            (ops.kernel)(hd, &qpack, ops.kt.panel(j0 / NR + p), &mut tile);
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
            let m_new = block_max(m[r], s);
            let alpha = if j0 == 0 {
                0.0
            } else {
                libm::expf(m[r] - m_new)
            };
            let orow = &mut o[r * hd..(r + 1) * hd];
            for od in orow.iter_mut() {
                *od *= alpha;
            }
            let p = &mut probs[..s.len()];
            exp_sub_bf16(s, m_new, p);
            let mut lr = l[r] * alpha;
            let mut l_pending = true;
            let v = &ops.v[j0 * hd..];
            let mut d = pv_lanes::<64>(orow, 0, p, v, &mut lr, &mut l_pending);
            d = pv_lanes::<16>(orow, d, p, v, &mut lr, &mut l_pending);
            pv_lanes::<1>(orow, d, p, v, &mut lr, &mut l_pending);
            l[r] = lr;
            m[r] = m_new;
        }
        j0 = j1;
    }
    for (r, dst) in out.iter_mut().enumerate() {
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

/// [`attend_group_body`] compiled for AVX2 (wider vectors, same operations).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn attend_group_avx2(
    ops: &HeadOperands<'_>,
    q_rows: &[&[f32]],
    keys: &[usize],
    out: &mut [&mut [f32]],
) {
    attend_group_body(ops, q_rows, keys, out)
}

/// Runs [`attend_group_body`] with the widest vectors this CPU has.
fn attend_group(ops: &HeadOperands<'_>, q_rows: &[&[f32]], keys: &[usize], out: &mut [&mut [f32]]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            return unsafe { attend_group_avx2(ops, q_rows, keys, out) };
        }
    }
    attend_group_body(ops, q_rows, keys, out)
}

/// Query rows per task: a few groups of MR, so the head's K and V stay in cache.
const ROWS_PER_TASK: usize = 4 * MR;

/// Multi-head flash attention per [`AttentionFlashContract`], on Q, K, V and the output
/// laid out as `shape` says (as for `cpu::attention`).
pub fn attention_flash(
    shape: &crate::cpu::AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), NpuKernelError> {
    let crate::cpu::AttentionShape {
        tq,
        tk,
        heads,
        head_dim,
        causal_offset,
        q_row_stride,
        k_row_stride,
        v_row_stride,
        out_row_stride,
    } = *shape;
    const K: &str = "attention_flash";
    let width = mul(K, "heads x head_dim", heads, head_dim)?;
    check_strided("q", q.len(), tq, q_row_stride, width)?;
    check_strided("k", k.len(), tk, k_row_stride, width)?;
    check_strided("v", v.len(), tk, v_row_stride, width)?;
    check_strided("out", out.len(), tq, out_row_stride, width)?;
    if tq == 0 || width == 0 {
        return Ok(());
    }
    let hd = head_dim;
    // Per head: kᵀ in key panels and a dense v, both bf16-rounded.
    let kt: Vec<PackedRhs> = (0..heads)
        .map(|h| PackedRhs::pack(tk, hd, |j, d| round_bf16(k[j * k_row_stride + h * hd + d])))
        .collect();
    let vh: Vec<Vec<f32>> = (0..heads)
        .map(|h| {
            let mut d = Vec::with_capacity(tk * hd);
            for j in 0..tk {
                let row = &v[j * v_row_stride + h * hd..][..hd];
                d.extend(row.iter().map(|&x| round_bf16(x)));
            }
            d
        })
        .collect();
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let kernel = select_kernel();

    // Tasks (head-major, so a thread keeps one head's K and V in cache): one head of
    // ROWS_PER_TASK query rows each, owning those rows' output pieces of that head.
    let chunks = tq.div_ceil(ROWS_PER_TASK);
    let mut tasks: Vec<(usize, usize, Vec<&mut [f32]>)> = (0..heads * chunks)
        .map(|t| (t / chunks, t % chunks, Vec::with_capacity(ROWS_PER_TASK)))
        .collect();
    for (i, row) in out.chunks_mut(out_row_stride).take(tq).enumerate() {
        for (h, piece) in row[..width].chunks_mut(hd).enumerate() {
            tasks[h * chunks + i / ROWS_PER_TASK].2.push(piece);
        }
    }
    tasks.into_par_iter().for_each(|(h, c, mut pieces)| {
        let ops = HeadOperands {
            kt: &kt[h],
            v: &vh[h],
            head_dim: hd,
            scale,
            kernel,
        };
        let first = c * ROWS_PER_TASK;
        for (g, group) in pieces.chunks_mut(MR).enumerate() {
            let i0 = first + g * MR;
            let mut q_rows: [&[f32]; MR] = [&[]; MR];
            let mut keys = [0usize; MR];
            for r in 0..group.len() {
                let i = i0 + r;
                q_rows[r] = &q[i * q_row_stride + h * hd..][..hd];
                keys[r] = match causal_offset {
                    Some(p) => tk.min(p.saturating_add(i).saturating_add(1)),
                    None => tk,
                };
            }
            let rows = group.len();
            attend_group(&ops, &q_rows[..rows], &keys[..rows], group);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_and_dispatched_group_bodies_agree() {
        let (tk, hd) = (150, 72);
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 22) as f32 - 2.0
        };
        let q: Vec<f32> = (0..MR * hd).map(|_| next()).collect();
        let k: Vec<f32> = (0..tk * hd).map(|_| next()).collect();
        let v: Vec<f32> = (0..tk * hd).map(|_| round_bf16(next())).collect();
        let kt = PackedRhs::pack(tk, hd, |j, d| round_bf16(k[j * hd + d]));
        let ops = HeadOperands {
            kt: &kt,
            v: &v,
            head_dim: hd,
            scale: (1.0 / (hd as f64).sqrt()) as f32,
            kernel: select_kernel(),
        };
        let q_rows: Vec<&[f32]> = q.chunks(hd).collect();
        let keys = [1, 64, 65, 100, 149, 150];
        let mut a = vec![0.0f32; MR * hd];
        let mut b = vec![1.0f32; MR * hd];
        attend_group_body(
            &ops,
            &q_rows,
            &keys,
            &mut a.chunks_mut(hd).collect::<Vec<_>>(),
        );
        attend_group(
            &ops,
            &q_rows,
            &keys,
            &mut b.chunks_mut(hd).collect::<Vec<_>>(),
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "element {i}");
        }
    }
}
