//! A decoder step's cross-attention on AVX-512: a few query rows (a step's beams) over
//! one window's f16 keys and values, heads of 64.
//!
//! The AVX2 body (`attend_rows_kv`) widens every key and value once per query row and
//! reduces each dot product across its lanes on its own; at five rows that is most of a
//! step's cross-attention time. Here a block of 16 keys is widened once for all the rows,
//! each row's 16 dot products are reduced together by one transposing tree, and the
//! weighted sum keeps up to six rows' accumulators in registers, so each value row is
//! widened once per six rows. A row's arithmetic does not depend on the other rows, so
//! its bits do not either (lockstep decoding relies on it). The sums come in another
//! order than the AVX2 body's, so the bits differ from it; `docs/kernels.md` states the
//! bound both meet.

use std::arch::x86_64::*;

use super::attention::Layout;
use super::simd::prefetch;
use super::softmax::exp_shifted;

/// The head size this kernel takes: four 16-lane vectors a row.
pub(super) const HEAD_DIM: usize = 64;
/// Keys per block of the scores: one transposing reduction turns 16 dot products'
/// accumulators into one vector of 16 scores.
const KEYS: usize = 16;
/// Rows whose weighted sums share one pass over V: 6 × 4 accumulators and the 4 widened
/// value vectors fit the 32 vector registers.
const PASS_ROWS: usize = 6;
/// Most query rows one call takes (the callers' blocks of rows sharing keys).
pub(super) const MAX_ROWS: usize = 8;
/// Value rows ahead of the current one that the weighted sum asks the cache for.
const V_AHEAD: usize = 8;

/// Whether this CPU can run [`attend_rows`].
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("f16c")
}

/// Sixteen f16 values at `p` as f32.
#[inline(always)]
unsafe fn load16(p: *const half::f16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

/// The horizontal sums of 16 vectors, `out[t] = Σ_l a[t][l]`, as one vector in key order:
/// four levels of halving that pair the vectors up, then one permutation.
#[inline(always)]
unsafe fn sums16(a: [__m512; KEYS]) -> __m512 {
    // Level 1: b[j] holds key j's 256-bit halves added in its low half, key j+8's in its
    // high half.
    let mut b = [_mm512_setzero_ps(); 8];
    for j in 0..8 {
        let lo = _mm512_shuffle_f32x4::<0x44>(a[j], a[j + 8]);
        let hi = _mm512_shuffle_f32x4::<0xEE>(a[j], a[j + 8]);
        b[j] = _mm512_add_ps(lo, hi);
    }
    // Level 2: c[j]'s 128-bit quarters hold keys j, j+8, j+4, j+12.
    let mut c = [_mm512_setzero_ps(); 4];
    for j in 0..4 {
        let lo = _mm512_shuffle_f32x4::<0x88>(b[j], b[j + 4]);
        let hi = _mm512_shuffle_f32x4::<0xDD>(b[j], b[j + 4]);
        c[j] = _mm512_add_ps(lo, hi);
    }
    // Level 3: each quarter of d[j] holds two lanes of two keys.
    let mut d = [_mm512_setzero_ps(); 2];
    for j in 0..2 {
        let lo = _mm512_shuffle_ps::<0x44>(c[j], c[j + 2]);
        let hi = _mm512_shuffle_ps::<0xEE>(c[j], c[j + 2]);
        d[j] = _mm512_add_ps(lo, hi);
    }
    // Level 4: one lane a key, quarters [0 2 1 3], [8 10 9 11], [4 6 5 7], [12 14 13 15].
    let lo = _mm512_shuffle_ps::<0x88>(d[0], d[1]);
    let hi = _mm512_shuffle_ps::<0xDD>(d[0], d[1]);
    let e = _mm512_add_ps(lo, hi);
    // The lane order is its own inverse.
    let order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    _mm512_permutexvar_ps(order, e)
}

/// Attention for query rows `rows` of head `h`, every row seeing all `lay.tk` keys, into
/// `out` (one 64-long slice a row); the contract of `attend_rows_kv` with this kernel's
/// order of sums.
///
/// # Safety
/// The CPU must support AVX-512 F and F16C ([`available`]); `lay.head_dim` must be
/// [`HEAD_DIM`], and `lay` must have passed `Layout::check` for `q`, `k`, `v`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_rows(
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    lay: Layout,
    h: usize,
    rows: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [&mut [f32]],
) {
    debug_assert!(lay.causal_offset.is_none() && lay.head_dim == HEAD_DIM);
    debug_assert_eq!(out.len(), rows.len());
    assert!(
        rows.len() <= MAX_ROWS,
        "attend_rows: more than {MAX_ROWS} rows"
    );
    let (n, r) = (lay.tk, rows.len());
    if n == 0 {
        out.iter_mut().for_each(|o| o.fill(0.0));
        return;
    }
    let scale = _mm512_set1_ps(1.0 / (HEAD_DIM as f32).sqrt());
    let kv_col = h * lay.kv_head_stride;
    let qrow = |i: usize| q[i * lay.q_row_stride + h * HEAD_DIM..][..HEAD_DIM].as_ptr();
    let krow = |j: usize| &k[j * lay.k_row_stride + kv_col..][..HEAD_DIM];
    scores.clear();
    scores.resize(r * n, 0.0);
    let sp = scores.as_mut_ptr();

    // Scores: each block of 16 keys is widened once into `block`, then every row takes
    // its 16 dot products from there (four products a key, summed in lanes, then across
    // them by `sums16`). Keys past `n` stay zero and their scores are not stored.
    let mut block = [_mm512_setzero_ps(); KEYS * 4];
    let mut j0 = 0;
    while j0 < n {
        let m = (n - j0).min(KEYS);
        for t in j0 + KEYS..(j0 + 2 * KEYS).min(n) {
            prefetch(krow(t));
            // The same value rows, into L2, for the weighted sum: their reading then
            // overlaps the scores' arithmetic instead of following it.
            let vr = v.as_ptr().add(t * lay.v_row_stride + kv_col).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T1>(vr);
            _mm_prefetch::<_MM_HINT_T1>(vr.add(64));
        }
        for t in 0..m {
            let p = krow(j0 + t).as_ptr();
            for c in 0..4 {
                block[4 * t + c] = load16(p.add(16 * c));
            }
        }
        for x in block.iter_mut().skip(4 * m) {
            *x = _mm512_setzero_ps();
        }
        let mask: __mmask16 = if m == KEYS { !0 } else { (1u16 << m) - 1 };
        for (ri, i) in rows.clone().enumerate() {
            let qp = qrow(i);
            let qv = [0, 1, 2, 3].map(|c| _mm512_loadu_ps(qp.add(16 * c)));
            let mut acc = [_mm512_setzero_ps(); KEYS];
            for (t, a) in acc.iter_mut().enumerate() {
                let mut s = _mm512_mul_ps(qv[0], block[4 * t]);
                for c in 1..4 {
                    s = _mm512_fmadd_ps(qv[c], block[4 * t + c], s);
                }
                *a = s;
            }
            let s = _mm512_mul_ps(sums16(acc), scale);
            _mm512_mask_storeu_ps(sp.add(ri * n + j0), mask, s);
        }
        j0 += KEYS;
    }

    let mut inv = [0.0f32; MAX_ROWS];
    for (x, row) in inv.iter_mut().zip(scores.chunks_exact_mut(n)) {
        let sum = exp_shifted::<true>(row);
        *x = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }

    // Weighted sums: passes of up to six rows over V, each value row widened once a pass.
    let vbase = v[kv_col..].as_ptr();
    let mut r0 = 0;
    while r0 < r {
        let take = (r - r0).min(PASS_ROWS);
        let p = |x: usize| sp.add((r0 + x) * n).cast_const();
        let mut o = |x: usize| out[r0 + x].as_mut_ptr();
        let w = &mut inv[r0..r0 + take];
        let vs = lay.v_row_stride;
        match take {
            1 => weighted::<1>([p(0)], vbase, vs, n, [o(0)], w),
            2 => weighted::<2>([p(0), p(1)], vbase, vs, n, [o(0), o(1)], w),
            3 => weighted::<3>([p(0), p(1), p(2)], vbase, vs, n, [o(0), o(1), o(2)], w),
            4 => weighted::<4>([0, 1, 2, 3].map(p), vbase, vs, n, [0, 1, 2, 3].map(o), w),
            5 => weighted::<5>(
                [0, 1, 2, 3, 4].map(p),
                vbase,
                vs,
                n,
                [0, 1, 2, 3, 4].map(o),
                w,
            ),
            _ => weighted::<6>(
                [0, 1, 2, 3, 4, 5].map(p),
                vbase,
                vs,
                n,
                [0, 1, 2, 3, 4, 5].map(o),
                w,
            ),
        }
        r0 += take;
    }
}

/// `out[x] = inv[x] · Σ_j p[x][j]·v_j` for `R` rows over the `n` value rows at `v`,
/// `stride` apart: each lane sums its keys in order, whatever `R` is.
#[inline(always)]
unsafe fn weighted<const R: usize>(
    p: [*const f32; R],
    v: *const half::f16,
    stride: usize,
    n: usize,
    out: [*mut f32; R],
    inv: &[f32],
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    for j in 0..n {
        let row = v.add(j * stride);
        if j + V_AHEAD < n {
            let ahead = v.add((j + V_AHEAD) * stride).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
        }
        let vv = [0, 1, 2, 3].map(|c| load16(row.add(16 * c)));
        for (a, px) in acc.iter_mut().zip(p) {
            let pj = _mm512_set1_ps(*px.add(j));
            for (ac, vc) in a.iter_mut().zip(vv) {
                *ac = _mm512_fmadd_ps(pj, vc, *ac);
            }
        }
    }
    for ((a, o), &w) in acc.iter().zip(out).zip(inv) {
        let s = _mm512_set1_ps(w);
        for (c, ac) in a.iter().enumerate() {
            _mm512_storeu_ps(o.add(16 * c), _mm512_mul_ps(*ac, s));
        }
    }
}
