//! Multi-head scaled dot-product attention on strided row-major Q, K, V.
//!
//! Heads are column blocks of width `head_dim`; row strides let Q, K and V be column
//! slices of one fused projection output without copying. Work is split into independent
//! (head, query rows) tasks, each with a bounded score scratch, never all heads' score
//! matrices at once.

use rayon::prelude::*;

use super::bf16::{self, pack_rows, Bf16Path, PackedBf16};
use super::checks::require_strided;
use super::parallel::SendPtr;
use super::simd::{dot, dot4, multiversion, prefetch, weighted_rows, KvElem};
use super::softmax::{
    exp_shifted, exp_shifted_inplace, exp_shifted_to_bf16, exp_shifted_to_bf16x3,
};
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
    /// Distance between one head's slice of a K (or V) row and the next head's: `head_dim`
    /// where a row holds every head, `tk·head_dim` where heads are stored one after
    /// another ([`KvStrides`]). Q and the output always interleave heads.
    pub(super) kv_head_stride: usize,
    pub(super) causal_offset: Option<usize>,
}

/// The shape and layout of one attention call: `tq` query rows attend `tk` keys with
/// `heads` heads of `head_dim` values, the heads side by side in every row of Q, K, V and
/// the output. Row `i` of each starts at `i × its row stride`, which may exceed
/// `heads × head_dim` (column slices of a fused projection's output, read in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub tq: usize,
    pub tk: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// `Some(p)`: query row `i` sits at position `p + i` and attends keys `j ≤ p + i` (a
    /// decoder's causal mask); `None`: every row attends every key.
    pub causal_offset: Option<usize>,
    pub q_row_stride: usize,
    pub k_row_stride: usize,
    pub v_row_stride: usize,
    pub out_row_stride: usize,
}

impl AttentionShape {
    /// Rows of exactly `heads × head_dim` values everywhere, every key visible.
    pub fn new(tq: usize, tk: usize, heads: usize, head_dim: usize) -> Self {
        let d = heads.saturating_mul(head_dim);
        AttentionShape {
            tq,
            tk,
            heads,
            head_dim,
            causal_offset: None,
            q_row_stride: d,
            k_row_stride: d,
            v_row_stride: d,
            out_row_stride: d,
        }
    }

    /// The same shape with the causal mask of [`AttentionShape::causal_offset`].
    pub fn causal(self, causal_offset: Option<usize>) -> Self {
        AttentionShape {
            causal_offset,
            ..self
        }
    }

    /// K and V in rows holding every head, `head_dim` apart, at the shape's row strides.
    fn rows(&self) -> Layout {
        Layout {
            q_row_stride: self.q_row_stride,
            k_row_stride: self.k_row_stride,
            v_row_stride: self.v_row_stride,
            out_row_stride: self.out_row_stride,
            tq: self.tq,
            tk: self.tk,
            heads: self.heads,
            head_dim: self.head_dim,
            kv_head_stride: self.head_dim,
            causal_offset: self.causal_offset,
        }
    }

    /// K and V both laid out as `kv` says (the shape's K and V row strides are not read).
    fn laid_out(&self, kv: KvStrides) -> Layout {
        Layout {
            k_row_stride: kv.row,
            v_row_stride: kv.row,
            kv_head_stride: kv.head,
            ..self.rows()
        }
    }
}

/// Where K and V keep head `h` of key `j`: at `j·row + h·head`, `head_dim` values.
///
/// Rows that hold every head, as a projection writes them (`[tk, d]`, possibly column
/// slices of a wider row), are [`KvStrides::rows`]; heads stored one after another
/// (`[heads, tk, head_dim]`) are [`KvStrides::heads_major`]. The second is what a decoder
/// step's cross-attention reads fastest from memory: each head's keys are one contiguous
/// run, which the hardware prefetchers follow, where rows give a head 128 bytes of every
/// kilobyte (`docs/kernels.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvStrides {
    /// Distance between consecutive keys of one head.
    pub row: usize,
    /// Distance between consecutive heads of one key.
    pub head: usize,
}

impl KvStrides {
    /// Rows of `row_stride` values holding the heads side by side, `head_dim` apart.
    pub fn rows(row_stride: usize, head_dim: usize) -> Self {
        KvStrides {
            row: row_stride,
            head: head_dim,
        }
    }

    /// `[heads, tk, head_dim]`: each head's `tk` keys contiguous.
    pub fn heads_major(tk: usize, head_dim: usize) -> Self {
        KvStrides {
            row: head_dim,
            head: tk.saturating_mul(head_dim),
        }
    }
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
    fn check<T>(&self, q: &[f32], k: &[T], v: &[T], out: &[f32]) {
        let width = self
            .heads
            .checked_mul(self.head_dim)
            .expect("attention: heads x head_dim overflows");
        require_strided("attention q", q.len(), self.tq, self.q_row_stride, width);
        if self.kv_head_stride == self.head_dim {
            require_strided("attention k", k.len(), self.tk, self.k_row_stride, width);
            require_strided("attention v", v.len(), self.tk, self.v_row_stride, width);
        } else {
            // Heads apart: the last head's slice of the last key must lie inside.
            let extent = |row: usize| match (self.tk, self.heads, self.head_dim) {
                (0, _, _) | (_, 0, _) | (_, _, 0) => Some(0),
                (tk, heads, hd) => (tk - 1)
                    .checked_mul(row)
                    .zip((heads - 1).checked_mul(self.kv_head_stride))
                    .and_then(|(a, b)| a.checked_add(b))
                    .and_then(|e| e.checked_add(hd)),
            };
            for (what, len, row) in [
                ("attention k", k.len(), self.k_row_stride),
                ("attention v", v.len(), self.v_row_stride),
            ] {
                assert!(
                    extent(row).is_some_and(|e| e <= len),
                    "{what}: {} keys of stride {row}, {} heads {} apart, exceed length {len}",
                    self.tk,
                    self.heads,
                    self.kv_head_stride
                );
            }
        }
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
    let kcol = h * lay.kv_head_stride;
    let krow = |j: usize| &k[j * lay.k_row_stride + kcol..][..hd];
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
    weighted_rows::<FMA>(scores, &v[kcol..], lay.v_row_stride, out_row, false);
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for o in out_row.iter_mut() {
        *o *= inv;
    }
}

/// Query rows one task of [`attend_rows`] takes.
const SHARED_ROWS: usize = 8;
/// Query rows per task of the up-front packing of a bf16 product's queries.
const Q_PACK_ROWS: usize = 64;
/// Keys per block of [`attend_rows`]' weighted sum: 32 rows of V (8 KB of one head at
/// `head_dim` 64) stay in L1 while every query row of the task folds them in. A multiple
/// of 4, so blocking does not change a bit (see `weighted_rows`).
const KEY_BLOCK: usize = 32;

/// Key rows ahead of the current group whose K slices [`attend_rows`] asks the cache for.
const PREFETCH_AHEAD: usize = 16;

/// Attention for query rows `rows` of head `h` when every row sees all keys (no causal
/// mask), written into `out` (one `head_dim`-long slice per row).
///
/// The rows share the keys, so the loops run keys outside and rows inside: each block of
/// K and V is fetched from memory once for all the rows and then read from L1 (a decoder
/// step's beams over their window's 1500 cross-attention keys). Each row still gets
/// exactly the arithmetic of [`attend_row`], in the same order, so its result is the
/// same bits whichever rows it is computed with (lockstep decoding relies on it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_rows<const FMA: bool>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lay: Layout,
    h: usize,
    rows: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [&mut [f32]],
) {
    attend_rows_kv::<FMA, f32>(q, k, v, lay, h, rows, scores, out)
}

/// [`attend_rows`] on K and V of either element type ([`KvElem`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_rows_kv<const FMA: bool, T: KvElem>(
    q: &[f32],
    k: &[T],
    v: &[T],
    lay: Layout,
    h: usize,
    rows: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [&mut [f32]],
) {
    debug_assert!(lay.causal_offset.is_none() && out.len() == rows.len());
    let (hd, n, r) = (lay.head_dim, lay.tk, rows.len());
    let col = h * hd;
    if n == 0 {
        out.iter_mut().for_each(|o| o.fill(0.0));
        return;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let qrow = |i: usize| &q[i * lay.q_row_stride + col..][..hd];
    let kcol = h * lay.kv_head_stride;
    let krow = |j: usize| &k[j * lay.k_row_stride + kcol..][..hd];
    scores.clear();
    scores.resize(r * n, 0.0);
    let groups = n / 4;
    for g in 0..groups {
        let j = 4 * g;
        // A head's slice of a key row is a few cache lines every `k_row_stride` floats,
        // a pattern the hardware prefetchers follow poorly when K comes from memory.
        for t in j + PREFETCH_AHEAD..(j + PREFETCH_AHEAD + 4).min(n) {
            prefetch(krow(t));
        }
        let keys = [krow(j), krow(j + 1), krow(j + 2), krow(j + 3)];
        for (ri, i) in rows.clone().enumerate() {
            let d = T::dot4::<FMA>(qrow(i), keys);
            for t in 0..4 {
                scores[ri * n + j + t] = d[t] * scale;
            }
        }
    }
    for j in 4 * groups..n {
        for (ri, i) in rows.clone().enumerate() {
            scores[ri * n + j] = T::dot::<FMA>(qrow(i), krow(j)) * scale;
        }
    }
    let mut inv = [0.0f32; SHARED_ROWS];
    for (ri, row) in scores.chunks_exact_mut(n).enumerate() {
        let sum = exp_shifted::<FMA>(row);
        inv[ri] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }
    // Blocking is bit-exact only where each lane accumulates in row order (see
    // `weighted_rows`); other widths take all keys in one pass per row.
    let block = if hd % 64 == 0 { KEY_BLOCK } else { n };
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + block).min(n);
        let vb = &v[j0 * lay.v_row_stride + kcol..];
        for t in j1..(j1 + block).min(n) {
            prefetch(&v[t * lay.v_row_stride + kcol..][..hd]);
        }
        for (ri, o) in out.iter_mut().enumerate() {
            let p = &scores[ri * n + j0..ri * n + j1];
            T::weighted_rows::<FMA>(p, vb, lay.v_row_stride, o, j0 > 0);
        }
        j0 = j1;
    }
    for (o, s) in out.iter_mut().zip(inv) {
        for x in o.iter_mut() {
            *x *= s;
        }
    }
}

multiversion! {
    fn attend_rows_dispatch(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        lay: Layout,
        h: usize,
        rows: std::ops::Range<usize>,
        scores: &mut Vec<f32>,
        out: &mut [&mut [f32]],
    ) => attend_rows
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

/// Attention by direct dot-product loops, parallel over (head, query row) pairs, or over
/// (head, block of up to 8 query rows) when no causal mask applies and the rows share
/// every key.
///
/// Same contract as [`attention`]; the fast path for a few query rows (decoder steps).
/// A row's result does not depend on `tq` or on the other rows.
pub fn attention_direct(shape: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    direct(shape.rows(), q, k, v, out)
}

/// [`attention_direct`] on K and V laid out as `kv` says (the same for both; say a
/// decoder's self-attention cache stored by head, [`KvStrides::heads_major`]; the
/// shape's K and V row strides are not read). The arithmetic is `attention_direct`'s, so
/// the bits equal those of the same keys and values in rows.
pub fn attention_direct_kv(
    shape: &AttentionShape,
    kv: KvStrides,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    direct(shape.laid_out(kv), q, k, v, out)
}

/// The body of [`attention_direct`] and [`attention_direct_kv`].
fn direct(lay: Layout, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    lay.check(q, k, v, out);
    let (tq, heads, head_dim, out_row_stride) =
        (lay.tq, lay.heads, lay.head_dim, lay.out_row_stride);
    if tq == 0 || heads == 0 || head_dim == 0 {
        return;
    }
    if lay.causal_offset.is_none() && tq > 1 {
        return row_blocks(q, k, v, lay, out, attend_rows_dispatch);
    }
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    run_tasks(
        heads * tq,
        serial(&lay),
        |scores: &mut Vec<f32>, t: usize| {
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
        },
    );
}

/// Whether a call is too small to pay for splitting it over threads.
fn serial(lay: &Layout) -> bool {
    let fmas = 2 * lay.tq * lay.tk * lay.heads * lay.head_dim;
    fmas < MIN_PARALLEL_FMAS || rayon::current_num_threads() <= 1
}

/// Runs tasks `0..n` in order on this thread, or over the pool, each with a score scratch
/// of its thread's.
fn run_tasks(n: usize, serial: bool, task: impl Fn(&mut Vec<f32>, usize) + Sync + Send) {
    if serial {
        let mut scores = Vec::new();
        (0..n).for_each(|t| task(&mut scores, t));
    } else {
        (0..n).into_par_iter().for_each_init(Vec::new, task);
    }
}

/// A kernel computing a block of query rows of one head that share every key
/// ([`attend_rows_kv`] compiled for some instruction set).
type RowsKernel<T> =
    fn(&[f32], &[T], &[T], Layout, usize, std::ops::Range<usize>, &mut Vec<f32>, &mut [&mut [f32]]);

/// Attention without a causal mask as (head, block of up to [`SHARED_ROWS`] query rows)
/// tasks, each running `kernel`, which reads its head's K and V once for all its rows.
/// Consecutive tasks share a head.
fn row_blocks<T: Sync>(
    q: &[f32],
    k: &[T],
    v: &[T],
    lay: Layout,
    out: &mut [f32],
    kernel: RowsKernel<T>,
) {
    let (tq, hd) = (lay.tq, lay.head_dim);
    let blocks = tq.div_ceil(SHARED_ROWS);
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    run_tasks(
        lay.heads * blocks,
        serial(&lay),
        |scores: &mut Vec<f32>, t: usize| {
            let (h, b) = (t / blocks, t % blocks);
            let rows = b * SHARED_ROWS..((b + 1) * SHARED_ROWS).min(tq);
            // SAFETY: task (h, b) alone touches out[i·stride + h·hd ..][..hd] for its rows i;
            // the caller's `check` proved these segments lie inside `out` and do not overlap.
            let mut outs: Vec<&mut [f32]> = rows
                .clone()
                .map(|i| unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.get().add(i * lay.out_row_stride + h * hd),
                        hd,
                    )
                })
                .collect();
            kernel(q, k, v, lay, h, rows, scores, &mut outs);
        },
    );
}

/// Instruction sets of [`attention_direct_f16kv_on`], best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16KvPath {
    /// AVX-512 F and F16C, heads of 64: each block of keys and each value row widened
    /// once for all the rows of a task, the dot products reduced 16 at a time. Its sums
    /// come in another order than the other paths'.
    Avx512,
    /// AVX2, FMA and F16C: [`attention_direct`]'s arithmetic on the widened values, bit
    /// for bit.
    Avx2,
    /// Portable loops without fused multiply-adds on x86_64 ([`attention_direct`]'s
    /// baseline arithmetic).
    Portable,
}

impl F16KvPath {
    /// Every path, best first.
    pub const ALL: [F16KvPath; 3] = [F16KvPath::Avx512, F16KvPath::Avx2, F16KvPath::Portable];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            F16KvPath::Avx512 => super::attention_avx512::available(),
            #[cfg(target_arch = "x86_64")]
            F16KvPath::Avx2 => super::simd::has_avx2_fma() && std::is_x86_feature_detected!("f16c"),
            #[cfg(not(target_arch = "x86_64"))]
            F16KvPath::Avx512 | F16KvPath::Avx2 => false,
            F16KvPath::Portable => true,
        }
    }

    /// Whether the path takes heads of `head_dim` (the AVX-512 body is written for 64,
    /// every Whisper size's).
    pub fn takes(self, head_dim: usize) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            F16KvPath::Avx512 => head_dim == super::attention_avx512::HEAD_DIM,
            #[cfg(not(target_arch = "x86_64"))]
            F16KvPath::Avx512 => false,
            F16KvPath::Avx2 | F16KvPath::Portable => true,
        }
    }

    /// The first path this CPU runs for heads of `head_dim`.
    pub fn best(head_dim: usize) -> F16KvPath {
        F16KvPath::ALL
            .into_iter()
            .find(|p| p.available() && p.takes(head_dim))
            .unwrap_or(F16KvPath::Portable)
    }
}

/// [`attention_direct`] without a causal mask on K and V stored as f16, laid out as `kv`
/// says (the same for both; the shape's K and V row strides are not read): the decoder's cross-attention at the int8 compute type,
/// whose keys and values are read whole at every step (half the bytes of f32), each head's
/// contiguous there ([`KvStrides::heads_major`]). Runs [`F16KvPath::best`]: each value is
/// widened exactly as it is loaded, and a row's result does not depend on `tq` or on the
/// other rows. Parallel over (head, block of up to 8 query rows); each block reads its
/// head's K and V once for all of its rows.
pub fn attention_direct_f16kv(
    shape: &AttentionShape,
    kv: KvStrides,
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    out: &mut [f32],
) {
    attention_direct_f16kv_on(F16KvPath::best(shape.head_dim), shape, kv, q, k, v, out)
}

/// [`attention_direct_f16kv`] on the instruction set `path`, which must be available and
/// take `head_dim` (the tests force each in turn).
pub fn attention_direct_f16kv_on(
    path: F16KvPath,
    shape: &AttentionShape,
    kv: KvStrides,
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    out: &mut [f32],
) {
    let (tq, heads, head_dim) = (shape.tq, shape.heads, shape.head_dim);
    assert!(
        path.available() && path.takes(head_dim),
        "attention_direct_f16kv_on: {path:?} does not run heads of {head_dim} on this CPU"
    );
    assert!(
        shape.causal_offset.is_none(),
        "attention_direct_f16kv_on: no causal mask on this path"
    );
    let lay = shape.laid_out(kv);
    lay.check(q, k, v, out);
    if tq == 0 || heads == 0 || head_dim == 0 {
        return;
    }
    let kernel: RowsKernel<half::f16> = match path {
        #[cfg(target_arch = "x86_64")]
        F16KvPath::Avx512 => attend_rows_f16_avx512,
        #[cfg(target_arch = "x86_64")]
        F16KvPath::Avx2 => attend_rows_f16_avx2,
        _ => attend_rows_kv::<{ F16_BASELINE_FMA }, half::f16>,
    };
    row_blocks(q, k, v, lay, out, kernel);
}

/// [`attend_rows_kv`] on f16 K and V on AVX-512 ([`F16KvPath::Avx512`]).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn attend_rows_f16_avx512(
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    lay: Layout,
    h: usize,
    rows: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [&mut [f32]],
) {
    assert!(F16KvPath::Avx512.available() && F16KvPath::Avx512.takes(lay.head_dim));
    // SAFETY: the CPU features and head size were just checked; `lay` passed `check` in
    // `attention_direct_f16kv_on`, and `row_blocks` passes at most 8 rows.
    unsafe { super::attention_avx512::attend_rows(q, k, v, lay, h, rows, scores, out) }
}

/// [`attend_rows_kv`] on f16 K and V compiled for AVX2, FMA and F16C
/// ([`F16KvPath::Avx2`]; the f16 loads need F16C).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn attend_rows_f16_avx2(
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    lay: Layout,
    h: usize,
    rows: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [&mut [f32]],
) {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn wide(
        q: &[f32],
        k: &[half::f16],
        v: &[half::f16],
        lay: Layout,
        h: usize,
        rows: std::ops::Range<usize>,
        scores: &mut Vec<f32>,
        out: &mut [&mut [f32]],
    ) {
        attend_rows_kv::<true, half::f16>(q, k, v, lay, h, rows, scores, out)
    }
    assert!(F16KvPath::Avx2.available());
    // SAFETY: AVX2, FMA and F16C were just checked.
    unsafe { wide(q, k, v, lay, h, rows, scores, out) }
}

/// Fused multiply-adds in the f16 bodies' baseline compilation: on aarch64 (as
/// `BASELINE_FMA`), never on x86_64, where `FMA = true` would also assume F16C.
const F16_BASELINE_FMA: bool = cfg!(target_arch = "aarch64");

/// Attention in blocks of query rows with gemm for q·kᵀ and p·v, parallel over
/// (head, block) pairs; each task's scratch is at most `ATTENTION_Q_BLOCK × tk` scores.
///
/// Same contract as [`attention`]; the fast path for many query rows (the encoder).
pub fn attention_blocked(shape: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let AttentionShape {
        tq,
        tk,
        heads,
        head_dim,
        q_row_stride,
        k_row_stride,
        v_row_stride,
        out_row_stride,
        ..
    } = *shape;
    let lay = shape.rows();
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
            super::sgemm::gemm(
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
            super::sgemm::gemm(
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

/// The signature shared by the attention kernels ([`attention`], [`attention_direct`],
/// [`attention_blocked`], [`attention_bf16_best`]), for callers that choose one at run time.
pub type AttentionKernel = fn(&AttentionShape, &[f32], &[f32], &[f32], &mut [f32]);

/// [`attention_bf16`] on the fastest path this CPU has ([`Bf16Path::best`], which leaves
/// out AMX tiles).
pub fn attention_bf16_best(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    attention_bf16(Bf16Path::best(), shape, q, k, v, out)
}

/// [`attention`] with bf16 products ([`super::bf16`]): q (times 1/√hd), k, the
/// unnormalised probabilities and v are rounded to bf16; scores, the softmax and the sums
/// stay f32. Each head's K and V are packed once for all its query blocks. `path` chooses
/// the kernel ([`Bf16Path::best`] for the fastest; the portable one gives the same bits on
/// normal values).
///
/// Same contract as [`attention`]; measured against it in `docs/kernels.md`.
pub fn attention_bf16(
    path: Bf16Path,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    bf16_products(path, Split::No, shape, q, k, v, out)
}

/// Each of `src`'s values as the sum of two bf16 values, `hi + lo`: `hi` is it rounded to
/// bf16, `lo` the rest, exact in f32 and rounded to bf16 when packed. Their sum holds the
/// value to about 2⁻¹⁷ relative, where one bf16 value holds it to 2⁻⁹. (Attention's values,
/// packed transposed; rows are split as they are packed, `bf16::pack_rows_x3` and
/// [`PackedBf16::pack_x3`].)
#[inline(always)]
fn split_parts_body<const FMA: bool>(src: &[f32], hi: &mut [f32], lo: &mut [f32]) {
    for ((&x, h), l) in src.iter().zip(hi.iter_mut()).zip(lo.iter_mut()) {
        let r = f32::from_bits(bf16::rounded_bits(x));
        *h = r;
        *l = x - r;
    }
}

multiversion! {
    fn split_parts(src: &[f32], hi: &mut [f32], lo: &mut [f32]) => split_parts_body
}

/// [`attention_bf16x3`] on the widest path this CPU has ([`Bf16Path::widest`]: AMX tiles
/// where they are usable).
pub fn attention_bf16x3_widest(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    attention_bf16x3(Bf16Path::widest(), shape, q, k, v, out)
}

/// [`attention`] with bf16x3 products: each operand of both products (q times 1/√hd and
/// k; the unnormalised probabilities and v) is split into two bf16 values, `x = hi + lo`
/// (about 16 significant bits), and each product is taken as `hi·hi + hi·lo + lo·hi`
/// with f32 sums (the `lo·lo` term, about 2⁻¹⁸ relative, is left out). That is one bf16
/// product over three times the reduction length: `[qh, qh, ql]·[kh, kl, kh]` and
/// `[ph, pl, ph]·[vh, vh, vl]`. Its results lie about 2⁻¹⁵ relative from the exact ones,
/// where [`attention_bf16`]'s lie 2⁻⁸ away: near f32, at the speed of the tiles
/// (`Bf16Path::Amx`), where three bf16 products still cost less than one in f32. Scores,
/// the softmax and the sums stay f32.
///
/// Same contract as [`attention`]; measured against it in `docs/kernels.md`.
pub fn attention_bf16x3(
    path: Bf16Path,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    bf16_products(path, Split::X3, shape, q, k, v, out)
}

/// Whether the operands of [`bf16_products`] are split ([`attention_bf16x3`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    No,
    X3,
}

/// [`attention_bf16`] and [`attention_bf16x3`]: per head, K and V packed once; per block
/// of query rows, the scores as one bf16 product, their exponentials written straight
/// into the bf16 pairs of the product with V, then that product and the normalisation.
fn bf16_products(
    path: Bf16Path,
    split: Split,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    let AttentionShape {
        tq,
        tk,
        heads,
        head_dim,
        q_row_stride,
        k_row_stride,
        v_row_stride,
        out_row_stride,
        ..
    } = *shape;
    let lay = shape.rows();
    lay.check(q, k, v, out);
    assert!(
        path.available(),
        "bf16 path {} is not available on this CPU",
        path.name()
    );
    if tq == 0 || heads == 0 || head_dim == 0 {
        return;
    }
    if tk == 0 {
        // No keys: every query averages over nothing and yields 0 (as `attention`).
        for i in 0..tq {
            out[i * out_row_stride..][..heads * head_dim].fill(0.0);
        }
        return;
    }
    let x3 = split == Split::X3;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let parallel =
        2 * tq * tk * heads * head_dim >= MIN_PARALLEL_FMAS && rayon::current_num_threads() > 1;
    let pack = |h: usize| {
        let col = h * head_dim;
        if !x3 {
            let kp = PackedBf16::pack(&k[col..], tk, head_dim, k_row_stride);
            let vp = PackedBf16::pack_transposed(&v[col..], tk, head_dim, v_row_stride);
            return (kp, vp);
        }
        // Keys as rows of [kh, kl, kh] (k = 3·hd); values as the transpose of
        // [vh; vh; vl] (k = 3·tk, one segment per part).
        let kp = PackedBf16::pack_x3(tk, head_dim, |j, buf| {
            buf.copy_from_slice(&k[j * k_row_stride + col..][..head_dim])
        });
        let mut buf = vec![0.0f32; 3 * tk * head_dim];
        let (vh, rest) = buf.split_at_mut(tk * head_dim);
        let (vh2, vl) = rest.split_at_mut(tk * head_dim);
        for j in 0..tk {
            let src = &v[j * v_row_stride + col..][..head_dim];
            let at = j * head_dim..(j + 1) * head_dim;
            split_parts(src, &mut vh[at.clone()], &mut vl[at]);
        }
        vh2.copy_from_slice(vh);
        let vp = PackedBf16::pack_transposed(&buf, 3 * tk, head_dim, head_dim);
        (kp, vp)
    };
    let packed: Vec<(PackedBf16, PackedBf16)> = if parallel {
        (0..heads).into_par_iter().map(pack).collect()
    } else {
        (0..heads).map(pack).collect()
    };
    let parts = if x3 { 3 } else { 1 };
    let qpairs = (parts * head_dim).div_ceil(2);
    // The queries as bf16 pairs, packed once up front when a head's pairs are whole pairs
    // of its row (head_dim even): then a row's heads, packed in order, are the row packed
    // whole, so one pass reads q in row order. Packed per task instead, each task read its
    // head's 64 values of 128 rows a row stride apart, every read a cache miss
    // (`perf`: 9 % of a layer). The same rounding of the same products, so the same bits.
    let q_packed: Option<Vec<u32>> = (!x3 && head_dim.is_multiple_of(2)).then(|| {
        let width = heads * head_dim;
        let mut all = vec![0u32; tq * heads * qpairs];
        let pack = |(c, dst): (usize, &mut [u32])| {
            let r0 = c * Q_PACK_ROWS;
            let rows = dst.len() / (heads * qpairs);
            bf16::pack_rows_into(
                &q[r0 * q_row_stride..],
                rows,
                width,
                q_row_stride,
                scale,
                dst,
            );
        };
        let chunk = Q_PACK_ROWS * heads * qpairs;
        if parallel {
            all.par_chunks_mut(chunk).enumerate().for_each(pack);
        } else {
            all.chunks_mut(chunk).enumerate().for_each(pack);
        }
        all
    });
    let blocks = tq.div_ceil(ATTENTION_Q_BLOCK);
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    let task = |scratch: &mut (Vec<f32>, Vec<u32>, Vec<u32>), t: usize| {
        let (scores, qa, pa) = scratch;
        let (h, b) = (t / blocks, t % blocks);
        let col = h * head_dim;
        let r0 = b * ATTENTION_Q_BLOCK;
        let rows = ATTENTION_Q_BLOCK.min(tq - r0);
        let kv = lay.visible(r0 + rows - 1);
        let o = out_ptr.get();
        // SAFETY: `check` proved every out row/column addressed lies inside out; this task
        // alone writes rows r0..r0+rows, columns col..col+head_dim (disjoint segments, as
        // hd·heads ≤ stride).
        let out_row = |i: usize| unsafe {
            std::slice::from_raw_parts_mut(o.add(i * out_row_stride + col), head_dim)
        };
        if kv == 0 {
            (r0..r0 + rows).for_each(|i| out_row(i).fill(0.0));
            return;
        }
        let (kp, vp) = &packed[h];
        // This task's queries: rows of the up-front packing (a row's heads side by side),
        // else packed here.
        let (qa, qa_stride): (&[u32], usize) = match &q_packed {
            Some(all) => (&all[(r0 * heads + h) * qpairs..], heads * qpairs),
            None => {
                let q_rows = &q[r0 * q_row_stride + col..];
                if x3 {
                    bf16::pack_rows_x3(q_rows, rows, head_dim, q_row_stride, scale, qa);
                } else {
                    pack_rows(q_rows, rows, head_dim, q_row_stride, scale, qa);
                }
                (&qa[..], qpairs)
            }
        };
        // Every score is written by the product below (it does not accumulate).
        scores.resize(rows * kv, 0.0);
        bf16::gemm_bf16(path, qa, qa_stride, rows, kp, kv, qpairs, scores, kv, false);
        // One row's pairs of probabilities: the visible keys', or the three segments of
        // tk each. Every half the product reads is written below but a last pair's unused
        // one, which stays zero; not cleared first (that took a third of a bf16x3 task).
        let ppairs = if x3 {
            (3 * tk).div_ceil(2)
        } else {
            kv.div_ceil(2)
        };
        if pa.len() < rows * ppairs {
            pa.resize(rows * ppairs, 0);
        }
        let mut inv_sum = [0.0f32; ATTENTION_Q_BLOCK];
        let halves: &mut [u16] = bytemuck::cast_slice_mut(&mut pa[..rows * ppairs]);
        for (i, (row, dst)) in scores
            .chunks_exact_mut(kv)
            .zip(halves.chunks_exact_mut(2 * ppairs))
            .enumerate()
        {
            let n = lay.visible(r0 + i);
            let sum = if x3 {
                exp_shifted_to_bf16x3(row, n, tk, dst)
            } else {
                exp_shifted_to_bf16(row, n, dst)
            };
            inv_sum[i] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        }
        // SAFETY: as above; a pair past the visible keys multiplies a zero probability.
        unsafe {
            bf16::gemm_raw(
                path,
                pa.as_ptr(),
                ppairs,
                rows,
                vp,
                head_dim,
                ppairs,
                o.add(r0 * out_row_stride + col),
                out_row_stride,
                false,
            );
        }
        for (i, &inv) in inv_sum[..rows].iter().enumerate() {
            for v in out_row(r0 + i) {
                *v *= inv;
            }
        }
    };
    if parallel {
        (0..heads * blocks)
            .into_par_iter()
            .for_each_init(Default::default, task);
    } else {
        let mut scratch = Default::default();
        (0..heads * blocks).for_each(|t| task(&mut scratch, t));
    }
}

/// Multi-head scaled dot-product attention: for each head h (columns h·hd..(h+1)·hd),
/// `out = softmax(q·kᵀ / √hd) · v` over the keys each query row sees, laid out as
/// `shape` says ([`AttentionShape`]).
pub fn attention(shape: &AttentionShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let path = if shape.tq < ATTENTION_GEMM_MIN_TQ {
        attention_direct
    } else {
        attention_blocked
    };
    path(shape, q, k, v, out);
}
