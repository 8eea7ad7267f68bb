//! Multi-head scaled dot-product attention on strided row-major Q, K, V.
//!
//! Heads are column blocks of width `head_dim`; row strides let Q, K and V be column
//! slices of one fused projection output without copying. Work is split into independent
//! (head, query rows) tasks, each with a bounded score scratch, never all heads' score
//! matrices at once.

use rayon::prelude::*;

use super::checks::require_strided;
use super::parallel::SendPtr;
use super::simd::{dot, dot4, multiversion, weighted_rows};
use super::softmax::{exp_shifted, exp_shifted_inplace};
use super::tuning::{ATTENTION_GEMM_MIN_TQ, ATTENTION_Q_BLOCK, MIN_PARALLEL_FMAS};

/// Shape and layout of one attention call, shared by both paths.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) q_row_stride: usize,
    pub(super) k_row_stride: usize,
    pub(super) v_row_stride: usize,
    pub(super) out_row_stride: usize,
    pub(super) tq: usize,
    pub(super) tk: usize,
    pub(super) heads: usize,
    pub(super) head_dim: usize,
    pub(super) causal_offset: Option<usize>,
}

impl Layout {
    /// Keys visible to query row `i`: all of them, or those at positions ≤ offset + i.
    fn visible(&self, i: usize) -> usize {
        match self.causal_offset {
            Some(p) => self.tk.min(p.saturating_add(i).saturating_add(1)),
            None => self.tk,
        }
    }

    #[track_caller]
    fn check(&self, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) {
        let width = self
            .heads
            .checked_mul(self.head_dim)
            .expect("attention: heads x head_dim overflows");
        require_strided("attention q", q.len(), self.tq, self.q_row_stride, width);
        require_strided("attention k", k.len(), self.tk, self.k_row_stride, width);
        require_strided("attention v", v.len(), self.tk, self.v_row_stride, width);
        require_strided(
            "attention out",
            out.len(),
            self.tq,
            self.out_row_stride,
            width,
        );
    }
}

/// Attention for query row `i` of head `h`, written into `out_row` (`head_dim` long).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_row<const FMA: bool>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lay: Layout,
    h: usize,
    i: usize,
    scores: &mut Vec<f32>,
    out_row: &mut [f32],
) {
    let hd = lay.head_dim;
    let col = h * hd;
    let n = lay.visible(i);
    let scale = 1.0 / (hd as f32).sqrt();
    let qr = &q[i * lay.q_row_stride + col..][..hd];
    if n == 0 {
        out_row.fill(0.0);
        return;
    }
    let krow = |j: usize| &k[j * lay.k_row_stride + col..][..hd];
    scores.clear();
    scores.resize(n, 0.0);
    let groups = n / 4;
    for g in 0..groups {
        let j = 4 * g;
        let d = dot4::<FMA>(qr, [krow(j), krow(j + 1), krow(j + 2), krow(j + 3)]);
        for r in 0..4 {
            scores[j + r] = d[r] * scale;
        }
    }
    for (j, s) in scores.iter_mut().enumerate().skip(4 * groups) {
        *s = dot::<FMA>(qr, krow(j)) * scale;
    }
    let sum = exp_shifted::<FMA>(scores);
    weighted_rows::<FMA>(scores, &v[col..], lay.v_row_stride, out_row);
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for o in out_row.iter_mut() {
        *o *= inv;
    }
}

multiversion! {
    fn attend_row_dispatch(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        lay: Layout,
        h: usize,
        i: usize,
        scores: &mut Vec<f32>,
        out_row: &mut [f32],
    ) => attend_row
}

/// Attention by direct dot-product loops, parallel over (head, query row) pairs.
///
/// Same contract as [`attention`]; the fast path for a few query rows (decoder steps).
#[allow(clippy::too_many_arguments)]
pub fn attention_direct(
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
) {
    let lay = Layout {
        q_row_stride,
        k_row_stride,
        v_row_stride,
        out_row_stride,
        tq,
        tk,
        heads,
        head_dim,
        causal_offset,
    };
    lay.check(q, k, v, out);
    if tq == 0 || heads == 0 || head_dim == 0 {
        return;
    }
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    let task = |scores: &mut Vec<f32>, t: usize| {
        let (h, i) = (t / tq, t % tq);
        // SAFETY: task (h, i) alone touches out[i·stride + h·hd ..][..hd]; `check` proved
        // these segments lie inside `out` and do not overlap (hd·heads ≤ stride).
        let out_row = unsafe {
            std::slice::from_raw_parts_mut(
                out_ptr.get().add(i * out_row_stride + h * head_dim),
                head_dim,
            )
        };
        attend_row_dispatch(q, k, v, lay, h, i, scores, out_row);
    };
    let fmas = 2 * tq * tk * heads * head_dim;
    if fmas < MIN_PARALLEL_FMAS || rayon::current_num_threads() <= 1 {
        let mut scores = Vec::new();
        (0..heads * tq).for_each(|t| task(&mut scores, t));
    } else {
        (0..heads * tq)
            .into_par_iter()
            .for_each_init(Vec::new, task);
    }
}

/// Attention in blocks of query rows with gemm for q·kᵀ and p·v, parallel over
/// (head, block) pairs; each task's scratch is at most `ATTENTION_Q_BLOCK × tk` scores.
///
/// Same contract as [`attention`]; the fast path for many query rows (the encoder).
#[allow(clippy::too_many_arguments)]
pub fn attention_blocked(
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
) {
    let lay = Layout {
        q_row_stride,
        k_row_stride,
        v_row_stride,
        out_row_stride,
        tq,
        tk,
        heads,
        head_dim,
        causal_offset,
    };
    lay.check(q, k, v, out);
    if tq == 0 || heads == 0 || head_dim == 0 {
        return;
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let blocks = tq.div_ceil(ATTENTION_Q_BLOCK);
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    let task = |scores: &mut Vec<f32>, t: usize| {
        // Consecutive tasks share a head, so a thread's run of tasks reuses K and V in cache.
        let (h, b) = (t / blocks, t % blocks);
        let col = h * head_dim;
        let r0 = b * ATTENTION_Q_BLOCK;
        let rows = ATTENTION_Q_BLOCK.min(tq - r0);
        // Keys beyond the last row's horizon get zero weight in every row of the block.
        let kv = lay.visible(r0 + rows - 1);
        let o = out_ptr.get();
        if kv == 0 {
            for i in r0..r0 + rows {
                // SAFETY: as for the gemm below; this task alone owns these segments.
                unsafe {
                    std::slice::from_raw_parts_mut(o.add(i * out_row_stride + col), head_dim)
                }
                .fill(0.0);
            }
            return;
        }
        scores.clear();
        scores.resize(rows * kv, 0.0);
        // SAFETY: `check` proved every row/column addressed here lies inside q, k, v and
        // out. scores is [rows, kv] row-major. This task alone writes out rows
        // r0..r0+rows, columns col..col+head_dim (segments disjoint as hd·heads ≤ stride).
        unsafe {
            gemm::gemm(
                rows,
                kv,
                head_dim,
                scores.as_mut_ptr(),
                1,
                kv as isize,
                false,
                q.as_ptr().add(r0 * q_row_stride + col),
                1,
                q_row_stride as isize,
                k.as_ptr().add(col),
                k_row_stride as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        // Unnormalised probabilities; each output row is divided by its sum afterwards.
        let mut inv_sum = [0.0f32; ATTENTION_Q_BLOCK];
        for (i, row) in scores.chunks_exact_mut(kv).enumerate() {
            let n = lay.visible(r0 + i);
            let sum = exp_shifted_inplace(&mut row[..n]);
            row[n..].fill(0.0);
            inv_sum[i] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        }
        // SAFETY: see above.
        unsafe {
            gemm::gemm(
                rows,
                head_dim,
                kv,
                o.add(r0 * out_row_stride + col),
                1,
                out_row_stride as isize,
                false,
                scores.as_ptr(),
                1,
                kv as isize,
                v.as_ptr().add(col),
                1,
                v_row_stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (i, &inv) in inv_sum[..rows].iter().enumerate() {
            // SAFETY: as for the gemm above; this task alone owns these segments.
            let seg = unsafe {
                std::slice::from_raw_parts_mut(o.add((r0 + i) * out_row_stride + col), head_dim)
            };
            for v in seg {
                *v *= inv;
            }
        }
    };
    let fmas = 2 * tq * tk * heads * head_dim;
    if fmas < MIN_PARALLEL_FMAS || rayon::current_num_threads() <= 1 {
        let mut scores = Vec::new();
        (0..heads * blocks).for_each(|t| task(&mut scores, t));
    } else {
        (0..heads * blocks)
            .into_par_iter()
            .for_each_init(Vec::new, task);
    }
}

/// Multi-head scaled dot-product attention: for each head h (columns h·hd..(h+1)·hd),
/// `out = softmax(q·kᵀ / √hd) · v` over the `tk` keys.
///
/// Row `i` of q/k/v/out starts at `i * *_row_stride`. With `causal_offset = Some(p)`
/// query row i sits at position p + i and attends keys j ≤ p + i.
#[allow(clippy::too_many_arguments)]
pub fn attention(
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
) {
    let path = if tq < ATTENTION_GEMM_MIN_TQ {
        attention_direct
    } else {
        attention_blocked
    };
    path(
        q,
        q_row_stride,
        k,
        k_row_stride,
        v,
        v_row_stride,
        tq,
        tk,
        heads,
        head_dim,
        causal_offset,
        out,
        out_row_stride,
    );
}
