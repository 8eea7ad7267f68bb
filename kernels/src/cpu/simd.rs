//! Run-time instruction-set dispatch and the vector primitives shared by the kernels.
//!
//! Hot loops are written once as `#[inline(always)]` generic bodies over
//! `const FMA: bool`. [`multiversion!`] wraps such a body into a function that runs an
//! AVX2+FMA compilation of it when the CPU has those features and the baseline
//! compilation otherwise.
//!
//! Invariant: on x86_64 a body is instantiated with `FMA = true` only where AVX2 and FMA
//! are available — inside `multiversion!`'s detected branch, or when the build itself
//! enables both (see [`BASELINE_FMA`]). The primitives below rely on it to call the
//! intrinsic kernels of [`super::x86`]; elsewhere they use portable lane-array loops.

/// Whether the baseline compilation may use fused multiply-adds: on aarch64 always, on
/// x86_64 only when the build enables AVX2 and FMA. Without FMA, `mul_add` would be a slow
/// libm call, so bodies use `a * b + c` instead.
pub(crate) const BASELINE_FMA: bool = cfg!(target_arch = "aarch64")
    || cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ));

/// Lanes per accumulator array in the portable loops: four 128-bit registers of f32, so
/// consecutive multiply-adds are independent and hide their latency.
pub(crate) const LANES: usize = 16;

/// True when this x86_64 CPU has AVX2 and FMA (std caches the CPUID probe).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// `dst[i] = src[i]` widened from f16 (exact): F16C on x86_64 when the CPU has it, else
/// the `half` crate's conversion. Panics if the lengths differ.
pub(crate) fn widen_f16(src: &[half::f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
        // SAFETY: F16C and AVX were just detected; the lengths are equal.
        return unsafe { super::x86::widen_f16(src, dst) };
    }
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
}

/// Asks for the cache lines of `row` to be brought into L1 (a hint: no effect on results).
#[inline(always)]
pub(crate) fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks((64 / std::mem::size_of::<T>().max(1)).max(1)) {
        // SAFETY: prefetching is a hint that never faults; the address is inside `row`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// `a * b + c`, fused when the body is compiled for a target with FMA.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// f64 variant of [`fmadd`].
#[inline(always)]
pub(crate) fn fmadd64<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines `$vis fn $name(args) -> ret` that calls `$body::<FMA>(args)` compiled for
/// AVX2+FMA when available at run time, else for the baseline target.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body::<true>($($arg),*)
                }
                if $crate::cpu::simd::has_avx2_fma() {
                    // SAFETY: `wide` only needs AVX2 and FMA, which were just detected.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body::<{ $crate::cpu::simd::BASELINE_FMA }>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Sum of a lane array, pairwise so it vectorises and stays accurate.
#[inline(always)]
pub(crate) fn hsum(v: [f32; LANES]) -> f32 {
    let mut h = [0.0f32; LANES / 2];
    for l in 0..LANES / 2 {
        h[l] = v[l] + v[l + LANES / 2];
    }
    let mut q = [0.0f32; LANES / 4];
    for l in 0..LANES / 4 {
        q[l] = h[l] + h[l + LANES / 4];
    }
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Dot product of two slices of equal length.
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true on x86_64 means AVX2+FMA are available (module invariant).
        return unsafe { super::x86::dot(a, b) };
    }
    dot_portable::<FMA, f32>(a, b)
}

/// The portable loop of [`dot`], for a second operand of any element type widened to f32.
#[inline(always)]
fn dot_portable<const FMA: bool, T: Copy>(a: &[f32], b: &[T]) -> f32
where
    f32: From<T>,
{
    let mut acc = [0.0f32; LANES];
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] = fmadd::<FMA>(x[l], f32::from(y[l]), acc[l]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ar.iter().zip(br) {
        tail = fmadd::<FMA>(*x, f32::from(*y), tail);
    }
    hsum(acc) + tail
}

/// Dot products of `x` with four rows in one pass over `x`; all slices have equal length.
#[inline(always)]
pub(crate) fn dot4<const FMA: bool>(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true on x86_64 means AVX2+FMA are available (module invariant).
        return unsafe { super::x86::dot4(x, w) };
    }
    dot4_portable::<FMA, f32>(x, w)
}

/// The portable loop of [`dot4`], for rows of any element type widened to f32.
#[inline(always)]
fn dot4_portable<const FMA: bool, T: Copy>(x: &[f32], w: [&[T]; 4]) -> [f32; 4]
where
    f32: From<T>,
{
    let n = x.len();
    let w = w.map(|r| &r[..n]);
    let mut acc = [[0.0f32; LANES]; 4];
    let full = n - n % LANES;
    for c in (0..full).step_by(LANES) {
        let xv = &x[c..c + LANES];
        for (a, r) in acc.iter_mut().zip(&w) {
            let wv = &r[c..c + LANES];
            for l in 0..LANES {
                a[l] = fmadd::<FMA>(xv[l], f32::from(wv[l]), a[l]);
            }
        }
    }
    let mut res = [0.0f32; 4];
    for (g, r) in w.iter().enumerate() {
        let mut tail = 0.0f32;
        for j in full..n {
            tail = fmadd::<FMA>(x[j], f32::from(r[j]), tail);
        }
        res[g] = hsum(acc[g]) + tail;
    }
    res
}

/// Dot products of two rows `x0`, `x1` with four rows `w` (result `[x][w]`), sharing the
/// loads of `w`; all slices have equal length.
#[inline(always)]
pub(crate) fn dot4x2<const FMA: bool>(x0: &[f32], x1: &[f32], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true on x86_64 means AVX2+FMA are available (module invariant).
        return unsafe { super::x86::dot4x2(x0, x1, w) };
    }
    [dot4::<FMA>(x0, w), dot4::<FMA>(x1, w)]
}

/// Dot products of `M` rows `x` with `R` rows `w` (result `[x][w]`) in one pass, sharing
/// each load of `w` among the `M` rows; all slices have equal length and `M ≥ 1`.
#[inline(always)]
pub(crate) fn dot_tile<const FMA: bool, const R: usize, const M: usize>(
    x: [&[f32]; M],
    w: [&[f32]; R],
) -> [[f32; R]; M] {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true on x86_64 means AVX2+FMA are available (module invariant).
        return unsafe { super::x86::dot_tile::<R, M>(x, w) };
    }
    let mut res = [[0.0f32; R]; M];
    for (row, xr) in res.iter_mut().zip(x) {
        for (v, wr) in row.iter_mut().zip(w) {
            *v = dot::<FMA>(xr, wr);
        }
    }
    res
}

/// `out[c] = Σ_j p[j]·v[j·stride + c]` for `c < out.len()`: the weighted sum of
/// `p.len()` rows of `v` spaced `stride` apart (panics if they do not fit in `v`). With
/// `accumulate`, the sum is added to what `out` holds instead.
///
/// Splitting the rows into consecutive calls that accumulate gives the same bits as one
/// call when each split is at a multiple of 4 rows and, with AVX2, `out.len()` is a
/// multiple of 64: each output lane then sees the same multiply-adds in the same order.
#[inline(always)]
pub(crate) fn weighted_rows<const FMA: bool>(
    p: &[f32],
    v: &[f32],
    stride: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true on x86_64 means AVX2+FMA are available (module invariant).
        return unsafe { super::x86::weighted_rows(p, v, stride, out, accumulate) };
    }
    let width = out.len();
    if !accumulate {
        out.fill(0.0);
    }
    let groups = p.len() / 4;
    let row = |j: usize| &v[j * stride..j * stride + width];
    for g in 0..groups {
        let j = 4 * g;
        let a = [p[j], p[j + 1], p[j + 2], p[j + 3]];
        axpy4::<FMA>(a, [row(j), row(j + 1), row(j + 2), row(j + 3)], out);
    }
    for (j, &pj) in p.iter().enumerate().skip(4 * groups) {
        axpy::<FMA>(pj, row(j), out);
    }
}

/// The portable loop of [`weighted_rows`] (with [`axpy4`]'s and [`axpy`]'s portable
/// loops), for rows of any element type widened to f32.
#[inline(always)]
fn weighted_rows_portable<const FMA: bool, T: Copy>(
    p: &[f32],
    v: &[T],
    stride: usize,
    out: &mut [f32],
    accumulate: bool,
) where
    f32: From<T>,
{
    let width = out.len();
    if !accumulate {
        out.fill(0.0);
    }
    let groups = p.len() / 4;
    let row = |j: usize| &v[j * stride..j * stride + width];
    for g in 0..groups {
        let j = 4 * g;
        let a = [p[j], p[j + 1], p[j + 2], p[j + 3]];
        let [x0, x1, x2, x3] = [row(j), row(j + 1), row(j + 2), row(j + 3)];
        // `axpy4`'s portable loop.
        for (c, y) in out.iter_mut().enumerate() {
            let mut t = fmadd::<FMA>(a[0], f32::from(x0[c]), *y);
            t = fmadd::<FMA>(a[1], f32::from(x1[c]), t);
            t = fmadd::<FMA>(a[2], f32::from(x2[c]), t);
            *y = fmadd::<FMA>(a[3], f32::from(x3[c]), t);
        }
    }
    for (j, &pj) in p.iter().enumerate().skip(4 * groups) {
        for (y, x) in out.iter_mut().zip(row(j)) {
            *y = fmadd::<FMA>(pj, f32::from(*x), *y);
        }
    }
}

/// Key and value element types the attention kernels read: f32, or f16 widened exactly as
/// it is loaded (the decoder's cross-attention keys and values at the int8 compute type).
/// With f16, `FMA = true` on x86_64 also needs F16C: the f16 bodies are instantiated so
/// only behind a dispatcher that detected it (`attention_direct_f16kv`).
pub(crate) trait KvElem: Copy + Send + Sync {
    /// [`dot`] of f32 `q` with `k`.
    fn dot<const FMA: bool>(q: &[f32], k: &[Self]) -> f32;
    /// [`dot4`] of f32 `q` with four rows.
    fn dot4<const FMA: bool>(q: &[f32], k: [&[Self]; 4]) -> [f32; 4];
    /// [`weighted_rows`] over rows of `v`.
    fn weighted_rows<const FMA: bool>(
        p: &[f32],
        v: &[Self],
        stride: usize,
        out: &mut [f32],
        accumulate: bool,
    );
}

impl KvElem for f32 {
    #[inline(always)]
    fn dot<const FMA: bool>(q: &[f32], k: &[f32]) -> f32 {
        dot::<FMA>(q, k)
    }
    #[inline(always)]
    fn dot4<const FMA: bool>(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
        dot4::<FMA>(q, k)
    }
    #[inline(always)]
    fn weighted_rows<const FMA: bool>(
        p: &[f32],
        v: &[f32],
        stride: usize,
        out: &mut [f32],
        accumulate: bool,
    ) {
        weighted_rows::<FMA>(p, v, stride, out, accumulate)
    }
}

// Each method computes what the f32 method computes on the widened values, bit for bit:
// the x86 kernels are the f32 ones with converting loads, the portable loops the same
// loops with `f32::from`.
impl KvElem for half::f16 {
    #[inline(always)]
    fn dot<const FMA: bool>(q: &[f32], k: &[half::f16]) -> f32 {
        debug_assert_eq!(q.len(), k.len());
        #[cfg(target_arch = "x86_64")]
        if FMA {
            // SAFETY: f16 bodies get FMA = true on x86_64 only where AVX2, FMA and F16C
            // were detected (trait invariant).
            return unsafe { super::x86::dot_f16(q, k) };
        }
        dot_portable::<FMA, half::f16>(q, k)
    }
    #[inline(always)]
    fn dot4<const FMA: bool>(q: &[f32], k: [&[half::f16]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if FMA {
            // SAFETY: as in `dot`.
            return unsafe { super::x86::dot4_f16(q, k) };
        }
        dot4_portable::<FMA, half::f16>(q, k)
    }
    #[inline(always)]
    fn weighted_rows<const FMA: bool>(
        p: &[f32],
        v: &[half::f16],
        stride: usize,
        out: &mut [f32],
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if FMA {
            // SAFETY: as in `dot`.
            return unsafe { super::x86::weighted_rows_f16(p, v, stride, out, accumulate) };
        }
        weighted_rows_portable::<FMA, half::f16>(p, v, stride, out, accumulate)
    }
}

/// `y += alpha * x` over equal-length slices.
#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv = fmadd::<FMA>(alpha, *xv, *yv);
    }
}

/// `y += a[0]·x[0] + a[1]·x[1] + a[2]·x[2] + a[3]·x[3]`: four rows folded into `y` with one
/// load and store of `y`; all slices have equal length.
#[inline(always)]
pub(crate) fn axpy4<const FMA: bool>(a: [f32; 4], x: [&[f32]; 4], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true on x86_64 means AVX2+FMA are available (module invariant).
        return unsafe { super::x86::axpy4(a, x, y) };
    }
    let n = y.len();
    let [x0, x1, x2, x3] = x.map(|r| &r[..n]);
    for j in 0..n {
        let mut t = fmadd::<FMA>(a[0], x0[j], y[j]);
        t = fmadd::<FMA>(a[1], x1[j], t);
        t = fmadd::<FMA>(a[2], x2[j], t);
        y[j] = fmadd::<FMA>(a[3], x3[j], t);
    }
}
