//! AVX2+FMA kernels for the innermost loops (x86_64 only).
//!
//! Written with intrinsics so the accumulators provably stay in registers; reached only
//! through [`super::simd`], which calls them when AVX2 and FMA are available. Every
//! function checks its slices' lengths before the first raw load, so the loads stay in
//! bounds whatever the caller passes.

use std::arch::x86_64::*;

/// Pointers to the first `n` elements of each row; panics if a row is shorter, which keeps
/// the raw loads of the kernels below in bounds. (A plain loop: closures such as those of
/// `array::map` are not always inlined into `target_feature` functions.)
#[inline(always)]
fn row_ptrs<T, const N: usize>(rows: [&[T]; N], n: usize) -> [*const T; N] {
    let mut p = [std::ptr::null(); N];
    for r in 0..N {
        assert!(rows[r].len() >= n, "row shorter than the common length");
        p[r] = rows[r].as_ptr();
    }
    p
}

/// Horizontal sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sums of four vectors at once: `[Σa, Σb, Σc, Σd]`, three pairwise-add
/// shuffles instead of four separate reductions.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> [f32; 4] {
    let ab = _mm256_hadd_ps(a, b);
    let cd = _mm256_hadd_ps(c, d);
    let abcd = _mm256_hadd_ps(ab, cd);
    let s = _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    );
    let mut out = [0.0f32; 4];
    _mm_storeu_ps(out.as_mut_ptr(), s);
    out
}

/// The body of [`dot`] for a second operand of any element type, loaded 8 at a time as
/// f32 by `$load` (`$cvt` one at a time).
macro_rules! dot_body {
    ($a:expr, $b:expr, $load:path, $cvt:path) => {{
        let (a, b) = ($a, $b);
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                let o = i + 8 * u;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), $load(pb.add(o)), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), $load(pb.add(i)), acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(sum);
        while i < n {
            s = (*pa.add(i)).mul_add($cvt(*pb.add(i)), s);
            i += 1;
        }
        s
    }};
}

/// Dot product with four independent 8-lane accumulators.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_body!(a, b, _mm256_loadu_ps, f32::from)
}

/// [`dot`] with an f16 second operand, widened in registers as it is loaded: the
/// arithmetic of [`dot`] on its f32 values, bit for bit.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    dot_body!(a, b, load_ph, half::f16::to_f32)
}

/// Eight f16 values at `p` as f32.
#[inline]
#[target_feature(enable = "avx,f16c")]
unsafe fn load_ph(p: *const half::f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// The body of [`dot4`] for rows of any element type, loaded 8 at a time as f32 by
/// `$load` (`$cvt` one at a time).
macro_rules! dot4_body {
    ($x:expr, $w:expr, $load:path, $cvt:path) => {{
        let (x, w) = ($x, $w);
        let n = x.len();
        let px = x.as_ptr();
        let [p0, p1, p2, p3] = row_ptrs(w, n);
        let z = _mm256_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
        let mut i = 0;
        while i + 16 <= n {
            let xa = _mm256_loadu_ps(px.add(i));
            let xb = _mm256_loadu_ps(px.add(i + 8));
            a0 = _mm256_fmadd_ps(xa, $load(p0.add(i)), a0);
            a1 = _mm256_fmadd_ps(xa, $load(p1.add(i)), a1);
            a2 = _mm256_fmadd_ps(xa, $load(p2.add(i)), a2);
            a3 = _mm256_fmadd_ps(xa, $load(p3.add(i)), a3);
            b0 = _mm256_fmadd_ps(xb, $load(p0.add(i + 8)), b0);
            b1 = _mm256_fmadd_ps(xb, $load(p1.add(i + 8)), b1);
            b2 = _mm256_fmadd_ps(xb, $load(p2.add(i + 8)), b2);
            b3 = _mm256_fmadd_ps(xb, $load(p3.add(i + 8)), b3);
            i += 16;
        }
        if i + 8 <= n {
            let xa = _mm256_loadu_ps(px.add(i));
            a0 = _mm256_fmadd_ps(xa, $load(p0.add(i)), a0);
            a1 = _mm256_fmadd_ps(xa, $load(p1.add(i)), a1);
            a2 = _mm256_fmadd_ps(xa, $load(p2.add(i)), a2);
            a3 = _mm256_fmadd_ps(xa, $load(p3.add(i)), a3);
            i += 8;
        }
        let mut res = hsum4(
            _mm256_add_ps(a0, b0),
            _mm256_add_ps(a1, b1),
            _mm256_add_ps(a2, b2),
            _mm256_add_ps(a3, b3),
        );
        while i < n {
            let xv = *px.add(i);
            res[0] = xv.mul_add($cvt(*p0.add(i)), res[0]);
            res[1] = xv.mul_add($cvt(*p1.add(i)), res[1]);
            res[2] = xv.mul_add($cvt(*p2.add(i)), res[2]);
            res[3] = xv.mul_add($cvt(*p3.add(i)), res[3]);
            i += 1;
        }
        res
    }};
}

/// Dot products of `x` with four rows, two 8-lane accumulators per row.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    dot4_body!(x, w, _mm256_loadu_ps, f32::from)
}

/// [`dot4`] with f16 rows, widened in registers as they are loaded: the arithmetic of
/// [`dot4`] on their f32 values, bit for bit.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_f16(x: &[f32], w: [&[half::f16]; 4]) -> [f32; 4] {
    dot4_body!(x, w, load_ph, half::f16::to_f32)
}

/// Dot products of two rows with four rows (eight accumulators, one per pair); each load
/// of a `w` vector feeds two multiply-adds.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot4x2(x0: &[f32], x1: &[f32], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = x0.len();
    let [px, py] = row_ptrs([x0, x1], n);
    let [p0, p1, p2, p3] = row_ptrs(w, n);
    let z = _mm256_setzero_ps();
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
    let mut i = 0;
    while i + 8 <= n {
        let xa = _mm256_loadu_ps(px.add(i));
        let xb = _mm256_loadu_ps(py.add(i));
        let w0 = _mm256_loadu_ps(p0.add(i));
        a0 = _mm256_fmadd_ps(xa, w0, a0);
        b0 = _mm256_fmadd_ps(xb, w0, b0);
        let w1 = _mm256_loadu_ps(p1.add(i));
        a1 = _mm256_fmadd_ps(xa, w1, a1);
        b1 = _mm256_fmadd_ps(xb, w1, b1);
        let w2 = _mm256_loadu_ps(p2.add(i));
        a2 = _mm256_fmadd_ps(xa, w2, a2);
        b2 = _mm256_fmadd_ps(xb, w2, b2);
        let w3 = _mm256_loadu_ps(p3.add(i));
        a3 = _mm256_fmadd_ps(xa, w3, a3);
        b3 = _mm256_fmadd_ps(xb, w3, b3);
        i += 8;
    }
    let mut res = [hsum4(a0, a1, a2, a3), hsum4(b0, b1, b2, b3)];
    while i < n {
        let (xa, xb) = (*px.add(i), *py.add(i));
        for (r, p) in [p0, p1, p2, p3].iter().enumerate() {
            let wv = *p.add(i);
            res[0][r] = xa.mul_add(wv, res[0][r]);
            res[1][r] = xb.mul_add(wv, res[1][r]);
        }
        i += 1;
    }
    res
}

/// Dot products of `M` rows `x` with `R` rows `w` (result `[x][w]`), one 8-lane
/// accumulator per pair: each loaded vector of `w` feeds `M` multiply-adds. `R·M + R + 1`
/// must stay ≤ 16 so accumulators and loaded vectors fit the registers (4×3 spills).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `M ≥ 1`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_tile<const R: usize, const M: usize>(
    x: [&[f32]; M],
    w: [&[f32]; R],
) -> [[f32; R]; M] {
    let n = x[0].len();
    let xp = row_ptrs(x, n);
    let wp = row_ptrs(w, n);
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    let mut wv = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i + 8 <= n {
        for r in 0..R {
            wv[r] = _mm256_loadu_ps(wp[r].add(i));
        }
        for mi in 0..M {
            let xv = _mm256_loadu_ps(xp[mi].add(i));
            for r in 0..R {
                acc[mi][r] = _mm256_fmadd_ps(xv, wv[r], acc[mi][r]);
            }
        }
        i += 8;
    }
    let mut res = [[0.0f32; R]; M];
    for mi in 0..M {
        for r in 0..R {
            let mut s = hsum(acc[mi][r]);
            for j in i..n {
                s = (*xp[mi].add(j)).mul_add(*wp[r].add(j), s);
            }
            res[mi][r] = s;
        }
    }
    res
}

/// The body of [`weighted_rows`] for rows of any element type, loaded 8 at a time as f32
/// by `$load` (`$cvt` one at a time).
macro_rules! weighted_rows_body {
    ($p:expr, $v:expr, $stride:expr, $out:expr, $accumulate:expr, $load:path, $cvt:path) => {{
        let (p, v, stride, out, accumulate) = ($p, $v, $stride, $out, $accumulate);
        let (n, width) = (p.len(), out.len());
        if n == 0 {
            if !accumulate {
                out.fill(0.0);
            }
            return;
        }
        let needed = (n - 1)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(width));
        assert!(
            needed.is_some_and(|need| need <= v.len()),
            "weighted_rows: rows exceed v"
        );
        let (pp, pv, po) = (p.as_ptr(), v.as_ptr(), out.as_mut_ptr());
        let mut c = 0;
        while c + 64 <= width {
            let mut acc = [_mm256_setzero_ps(); 8];
            if accumulate {
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(po.add(c + 8 * u));
                }
            }
            for j in 0..n {
                let pj = _mm256_set1_ps(*pp.add(j));
                let row = pv.add(j * stride + c);
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(pj, $load(row.add(8 * u)), *a);
                }
            }
            for (u, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(po.add(c + 8 * u), *a);
            }
            c += 64;
        }
        while c + 8 <= width {
            // Four accumulators over alternating rows hide the multiply-add latency.
            let mut acc = [_mm256_setzero_ps(); 4];
            if accumulate {
                acc[0] = _mm256_loadu_ps(po.add(c));
            }
            let mut j = 0;
            while j + 4 <= n {
                for (u, a) in acc.iter_mut().enumerate() {
                    let pj = _mm256_set1_ps(*pp.add(j + u));
                    *a = _mm256_fmadd_ps(pj, $load(pv.add((j + u) * stride + c)), *a);
                }
                j += 4;
            }
            while j < n {
                let pj = _mm256_set1_ps(*pp.add(j));
                acc[0] = _mm256_fmadd_ps(pj, $load(pv.add(j * stride + c)), acc[0]);
                j += 1;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            _mm256_storeu_ps(po.add(c), s);
            c += 8;
        }
        while c < width {
            let mut s = if accumulate { *po.add(c) } else { 0.0 };
            for j in 0..n {
                s = (*pp.add(j)).mul_add($cvt(*pv.add(j * stride + c)), s);
            }
            *po.add(c) = s;
            c += 1;
        }
    }};
}

/// `out[c] = Σ_j p[j]·v[j·stride + c]`: a probability-weighted sum of `p.len()` rows of
/// `v` spaced `stride` apart, added to `out`'s contents with `accumulate`. Blocks of 64
/// columns keep eight accumulators in registers across all rows, so each row costs eight
/// independent multiply-adds, in row order for every lane (which is what lets callers
/// split the rows into accumulating calls without changing a bit).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn weighted_rows(
    p: &[f32],
    v: &[f32],
    stride: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    weighted_rows_body!(p, v, stride, out, accumulate, _mm256_loadu_ps, f32::from)
}

/// [`weighted_rows`] with f16 rows of `v`, widened in registers as they are loaded: the
/// arithmetic of [`weighted_rows`] on their f32 values, bit for bit.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn weighted_rows_f16(
    p: &[f32],
    v: &[half::f16],
    stride: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    weighted_rows_body!(p, v, stride, out, accumulate, load_ph, half::f16::to_f32)
}

/// Elements of f16 ahead of the conversion that [`widen_f16`] prefetches (2 KB).
const PREFETCH_F16: usize = 1024;

/// f16 → f32 for equal-length slices, 16 elements per step with F16C.
///
/// # Safety
/// The CPU must support AVX and F16C; `src.len() == dst.len()`.
#[inline]
#[target_feature(enable = "avx,f16c")]
pub(crate) unsafe fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (ps, pd) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // One sequential stream is more than the hardware prefetcher keeps up with; asking
        // a few KB ahead lets the loads overlap (a hint: it never faults).
        _mm_prefetch::<_MM_HINT_T0>(ps.wrapping_add(i + PREFETCH_F16).cast());
        let a = _mm_loadu_si128(ps.add(i).cast());
        let b = _mm_loadu_si128(ps.add(i + 8).cast());
        _mm256_storeu_ps(pd.add(i), _mm256_cvtph_ps(a));
        _mm256_storeu_ps(pd.add(i + 8), _mm256_cvtph_ps(b));
        i += 16;
    }
    while i < n {
        *pd.add(i) = (*src.as_ptr().add(i)).to_f32();
        i += 1;
    }
}

/// `y += Σ a[r]·x[r]` over four rows.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn axpy4(a: [f32; 4], x: [&[f32]; 4], y: &mut [f32]) {
    let n = y.len();
    let py = y.as_mut_ptr();
    let [p0, p1, p2, p3] = row_ptrs(x, n);
    let (c0, c1) = (_mm256_set1_ps(a[0]), _mm256_set1_ps(a[1]));
    let (c2, c3) = (_mm256_set1_ps(a[2]), _mm256_set1_ps(a[3]));
    let mut i = 0;
    while i + 8 <= n {
        let mut t = _mm256_loadu_ps(py.add(i));
        t = _mm256_fmadd_ps(c0, _mm256_loadu_ps(p0.add(i)), t);
        t = _mm256_fmadd_ps(c1, _mm256_loadu_ps(p1.add(i)), t);
        t = _mm256_fmadd_ps(c2, _mm256_loadu_ps(p2.add(i)), t);
        t = _mm256_fmadd_ps(c3, _mm256_loadu_ps(p3.add(i)), t);
        _mm256_storeu_ps(py.add(i), t);
        i += 8;
    }
    while i < n {
        let mut t = a[0].mul_add(*p0.add(i), *py.add(i));
        t = a[1].mul_add(*p1.add(i), t);
        t = a[2].mul_add(*p2.add(i), t);
        *py.add(i) = a[3].mul_add(*p3.add(i), t);
        i += 1;
    }
}
