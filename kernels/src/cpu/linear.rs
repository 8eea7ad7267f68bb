//! Dense layers and plain matrix products.
//!
//! `linear` keeps PyTorch's weight layout `[out, in]` and never transposes it: gemm reads
//! the weight through strides, and the small-row GEMV path streams weight rows directly.

use half::f16;
use rayon::prelude::*;

use super::checks::require_len;
use super::parallel::{gemm_parallelism, SendPtr};
use super::simd::{dot, dot4, dot4x2, dot_tile, multiversion, widen_f16};
use super::tuning::{GEMV_MAX_M, MIN_PARALLEL_FMAS};

/// One pass of `M` input rows over the weight block: `out[i, j] = x[i] · w[j] + bias[j]`.
///
/// `tile` computes the dot products of the `M` rows with `R` weight rows at once. The
/// block is cut into `R` contiguous parts and each step takes one row from each part, so
/// the weight is read as `R` long sequential streams that hardware prefetchers follow
/// (`R` adjacent rows instead would be streams of only one row each).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemv_pass<const FMA: bool, const R: usize, const M: usize>(
    x: &[f32],
    k: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
    tile: impl Fn([&[f32]; M], [&[f32]; R]) -> [[f32; R]; M],
) {
    let rows = w.len() / k;
    let part = rows / R;
    let xs: [&[f32]; M] = std::array::from_fn(|i| &x[i * k..(i + 1) * k]);
    for t in 0..part {
        let js: [usize; R] = std::array::from_fn(|r| r * part + t);
        let d = tile(xs, js.map(|j| &w[j * k..(j + 1) * k]));
        for (i, di) in d.iter().enumerate() {
            for (&j, &v) in js.iter().zip(di) {
                out[i * out_stride + j] = v + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
    for j in R * part..rows {
        let wr = &w[j * k..(j + 1) * k];
        for (i, xr) in xs.iter().enumerate() {
            out[i * out_stride + j] = dot::<FMA>(xr, wr) + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// GEMV block: `out[i, j] = x[i] · w[j] + bias[j]` for the `m` rows of `x` and the
/// `w.len() / k` rows of `w`, writing row i of the result at `out[i * out_stride..]`.
///
/// All input rows share one pass over the weight where registers allow (up to 6 rows),
/// so loading the weight from memory overlaps with the arithmetic; more rows take one
/// pass per group of at most 6.
#[inline(always)]
pub(super) fn gemv_block<const FMA: bool>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    let groups = m.div_ceil(6);
    let mut i0 = 0;
    for g in 0..groups {
        // Balanced group sizes (8 rows -> 4 + 4, not 6 + 2).
        let size = (m - i0).div_ceil(groups - g);
        let xg = &x[i0 * k..(i0 + size) * k];
        let og = &mut out[i0 * out_stride..];
        match size {
            1 => gemv_pass::<FMA, 4, 1>(xg, k, w, bias, og, out_stride, |x, w| {
                [dot4::<FMA>(x[0], w)]
            }),
            2 => gemv_pass::<FMA, 4, 2>(xg, k, w, bias, og, out_stride, |x, w| {
                dot4x2::<FMA>(x[0], x[1], w)
            }),
            3 => gemv_pass::<FMA, 3, 3>(xg, k, w, bias, og, out_stride, dot_tile::<FMA, 3, 3>),
            4 => gemv_pass::<FMA, 2, 4>(xg, k, w, bias, og, out_stride, dot_tile::<FMA, 2, 4>),
            5 => gemv_pass::<FMA, 2, 5>(xg, k, w, bias, og, out_stride, dot_tile::<FMA, 2, 5>),
            _ => gemv_pass::<FMA, 2, 6>(xg, k, w, bias, og, out_stride, dot_tile::<FMA, 2, 6>),
        }
        i0 += size;
    }
}

multiversion! {
    fn gemv_serial(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        bias: Option<&[f32]>,
        out: &mut [f32],
        out_stride: usize,
    ) => gemv_block
}

/// Bytes of weight rows that stay in L2 while every group of input rows passes over them.
const GEMV_PIECE_BYTES: usize = 256 << 10;

/// [`gemv_serial`] that, for more input rows than one pass holds (over 6), walks the
/// weight in L2-sized pieces and runs every row group over a piece before the next, so
/// the weight is read from memory once whatever `m` (the lockstep decoder's rows). Piece
/// sizes are multiples of 12, so every tile width (2, 3, 4) sees the same rows as it would
/// over the whole block: results equal `gemv_serial`'s.
fn gemv_cached(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    let rows = w.len() / k;
    if m <= 6 {
        gemv_serial(x, m, k, w, bias, out, out_stride);
        return;
    }
    let piece = (GEMV_PIECE_BYTES / (4 * k)).max(12) / 12 * 12;
    let mut j0 = 0;
    while j0 < rows {
        let take = piece.min(rows - j0);
        gemv_serial(
            x,
            m,
            k,
            &w[j0 * k..(j0 + take) * k],
            bias.map(|b| &b[j0..j0 + take]),
            &mut out[j0..],
            out_stride,
        );
        j0 += take;
    }
}

/// `linear` by streaming the weight once, parallel over chunks of weight rows.
///
/// Meant for few input rows (the decoder's per-token projections), where the product is
/// bound by reading `w` from memory; any `m` gives correct results.
pub fn linear_gemv(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    check_linear(x, m, k, w, n, bias, out);
    gemv_parallel(x, m, k, w, n, bias, out, gemv_cached);
}

/// A one-thread GEMV over a block of weight rows (`gemv_cached`, `gemv_cached_f16`):
/// `(x, m, k, w, bias, out, out_stride)`.
type SerialGemv<T> = fn(&[f32], usize, usize, &[T], Option<&[f32]>, &mut [f32], usize);

/// The GEMV's split over threads, shared by the f32 and f16 weights: chunks of weight
/// rows, each run by `serial` (which sees the same chunks for either type, so an f16
/// weight gives the bits of its f32 copy). Lengths are checked by the caller.
#[allow(clippy::too_many_arguments)]
fn gemv_parallel<T: Sync>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[T],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    serial: SerialGemv<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        fill_bias(out, n, bias);
        return;
    }
    let threads = rayon::current_num_threads();
    let fmas = m * n * k;
    if threads <= 1 || fmas < MIN_PARALLEL_FMAS {
        serial(x, m, k, w, bias, out, n);
        return;
    }
    // Up to four chunks per thread balance uneven progress, each carrying at least
    // MIN_PARALLEL_FMAS of work; a multiple of the thread count keeps the split even.
    let by_work = (fmas / MIN_PARALLEL_FMAS).min(4 * threads);
    let chunks = (by_work / threads * threads).max(threads);
    let chunk_rows = n.div_ceil(chunks).next_multiple_of(4);
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    w.par_chunks(chunk_rows * k)
        .enumerate()
        .for_each(|(c, wb)| {
            let j0 = c * chunk_rows;
            let rows = wb.len() / k;
            let mut local = vec![0.0f32; m * rows];
            serial(
                x,
                m,
                k,
                wb,
                bias.map(|b| &b[j0..j0 + rows]),
                &mut local,
                rows,
            );
            for i in 0..m {
                // SAFETY: chunk c alone writes columns j0..j0+rows of each of the m rows of
                // `out`, which has m·n elements and outlives this parallel loop.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        local.as_ptr().add(i * rows),
                        out_ptr.get().add(i * n + j0),
                        rows,
                    );
                }
            }
        });
}

/// Length checks shared by the `linear` paths (raw-pointer code follows them).
#[track_caller]
fn check_linear(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) {
    check_linear_w(x, m, k, w.len(), n, bias, out);
}

fn fill_bias(out: &mut [f32], n: usize, bias: Option<&[f32]>) {
    match bias {
        Some(b) => out.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b)),
        None => out.fill(0.0),
    }
}

/// `linear` through the gemm crate (packed, cache-blocked); the fast path for many rows.
pub fn linear_gemm(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    check_linear(x, m, k, w, n, bias, out);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        fill_bias(out, n, bias);
        return;
    }
    let read_dst = match bias {
        Some(b) => {
            if m * n > 1 << 16 {
                out.par_chunks_mut(n).for_each(|r| r.copy_from_slice(b));
            } else {
                out.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b));
            }
            true
        }
        None => false,
    };
    // SAFETY: the pointers cover x [m, k] (row stride k), w viewed as wᵀ [k, n] (column
    // stride k, row stride 1) and out [m, n] (row stride n), lengths checked by
    // `check_linear`.
    unsafe {
        super::sgemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            gemm_parallelism(m * n * k),
        );
    }
}

/// Fully connected layer: `out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n]` (PyTorch `Linear`
/// weight layout `[out, in]`).
pub fn linear(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    linear_up_to(x, m, k, w, n, bias, out, GEMV_MAX_M);
}

/// [`linear`] that streams the weight (GEMV) for up to `gemv_max_m` input rows instead
/// of [`GEMV_MAX_M`]: for callers whose rows are many short sequences at once (the
/// lockstep decoder), where gemm's packing of the whole weight per call costs more than
/// the arithmetic.
#[allow(clippy::too_many_arguments)]
pub fn linear_up_to(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    gemv_max_m: usize,
) {
    if m <= gemv_max_m {
        linear_gemv(x, m, k, w, n, bias, out);
    } else {
        linear_gemm(x, m, k, w, n, bias, out);
    }
}

/// A `[n, k]` weight matrix in the type it is stored in.
///
/// f16 weights are widened to f32 a few rows at a time as the kernels reach them, into a
/// buffer that stays in cache, and every product then runs exactly as on an f32 copy:
/// widening is exact, so the results are the same bits, while the weight read from memory
/// is half the size (the decoder step is bound by that read) and no f32 copy is kept.
#[derive(Clone, Copy, Debug)]
pub enum Weight<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// Quantized per output channel; the product runs in int8 ([`super::int8`]).
    I8(super::int8::Int8Weight<'a>),
}

/// Bytes of f32 rows one widening of an f16 weight produces for the GEMV: small enough to
/// stay in L1/L2 while the input rows pass over them.
const GEMV_WIDEN_BYTES: usize = 32 << 10;

/// Bytes of f32 rows one widening produces for the gemm path: large enough that gemm's
/// packing amortises (Whisper's encoder and cross-K/V weights fit whole).
const GEMM_WIDEN_BYTES: usize = 4 << 20;

thread_local! {
    /// This thread's buffer for widened weight rows, kept between calls: a fresh
    /// allocation of megabytes per call would be returned to the OS and faulted in again
    /// page by page, which costs more than the widening.
    static WIDE_ROWS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's widening buffer. The buffer is taken out
/// while `f` runs, so a nested call (rayon may run another task on this thread while `f`
/// waits) gets a buffer of its own instead of this one.
fn with_wide_rows<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = WIDE_ROWS.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    WIDE_ROWS.set(buf);
    r
}

/// [`gemv_cached`] on an f16 weight: widens pieces of rows (multiples of 12, so each tile
/// width sees the rows it would over the whole block) and runs every input row over each.
fn gemv_cached_f16(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f16],
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    let rows = w.len() / k;
    let piece = (GEMV_WIDEN_BYTES / (4 * k)).max(12) / 12 * 12;
    with_wide_rows(piece.min(rows) * k, |wide| {
        let mut j0 = 0;
        while j0 < rows {
            let take = piece.min(rows - j0);
            let buf = &mut wide[..take * k];
            widen_f16(&w[j0 * k..(j0 + take) * k], buf);
            gemv_serial(
                x,
                m,
                k,
                buf,
                bias.map(|b| &b[j0..j0 + take]),
                &mut out[j0..],
                out_stride,
            );
            j0 += take;
        }
    })
}

/// [`linear_gemv`] for a weight in its stored type.
pub fn linear_gemv_w(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weight,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let w = match w {
        Weight::F32(w) => return linear_gemv(x, m, k, w, n, bias, out),
        Weight::F16(w) => w,
        // Few rows: the weight's read dominates; activations stay f32 for accuracy.
        Weight::I8(w) => return linear_i8_checked(x, m, k, &w, n, bias, out, true),
    };
    check_linear_w(x, m, k, w.len(), n, bias, out);
    gemv_parallel(x, m, k, w, n, bias, out, gemv_cached_f16);
}

/// [`linear_gemm`] for a weight in its stored type: an f16 weight is widened in blocks of
/// rows ([`GEMM_WIDEN_BYTES`]), each block's output columns computed by gemm.
pub fn linear_gemm_w(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weight,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let w = match w {
        Weight::F32(w) => return linear_gemm(x, m, k, w, n, bias, out),
        Weight::F16(w) => w,
        Weight::I8(w) => return linear_i8_checked(x, m, k, &w, n, bias, out, false),
    };
    check_linear_w(x, m, k, w.len(), n, bias, out);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        fill_bias(out, n, bias);
        return;
    }
    let block = (GEMM_WIDEN_BYTES / (4 * k)).max(16).min(n);
    let mut part = vec![0.0f32; if block < n { m * block } else { 0 }];
    with_wide_rows(block * k, |wide| {
        let mut j0 = 0;
        while j0 < n {
            let take = block.min(n - j0);
            let wb = &mut wide[..take * k];
            widen_f16(&w[j0 * k..(j0 + take) * k], wb);
            let b = bias.map(|b| &b[j0..j0 + take]);
            if take == n {
                linear_gemm(x, m, k, wb, n, b, out);
            } else {
                let part = &mut part[..m * take];
                linear_gemm(x, m, k, wb, take, b, part);
                for (o, p) in out.chunks_exact_mut(n).zip(part.chunks_exact(take)) {
                    o[j0..j0 + take].copy_from_slice(p);
                }
            }
            j0 += take;
        }
    })
}

/// [`linear_up_to`] for a weight in its stored type.
#[allow(clippy::too_many_arguments)]
pub fn linear_up_to_w(
    x: &[f32],
    m: usize,
    k: usize,
    w: Weight,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    gemv_max_m: usize,
) {
    if m <= gemv_max_m {
        linear_gemv_w(x, m, k, w, n, bias, out);
    } else {
        linear_gemm_w(x, m, k, w, n, bias, out);
    }
}

/// One weight of [`linear_group_up_to_w`].
pub struct LinearPart<'a, 'o> {
    pub w: Weight<'a>,
    /// Output columns (rows of `w`).
    pub n: usize,
    pub bias: Option<&'a [f32]>,
    /// `[m, n]`.
    pub out: &'o mut [f32],
}

/// Several linears of one input `x` (`[m, k]`), after the layer norm `norm` of each row
/// when given, each as [`super::layer_norm`] then [`linear_up_to_w`] would compute it
/// alone, to the bit. When every weight has its int8 form they run as one product
/// ([`super::int8::linear_i8_group_on`]): the input is quantized (or, up to `gemv_max_m`
/// rows, padded) once and every weight's columns are split over the threads together.
/// Other weights run one after another.
pub fn linear_group_up_to_w(
    x: &[f32],
    m: usize,
    k: usize,
    norm: Option<&super::int8::RowNorm>,
    parts: &mut [LinearPart],
    gemv_max_m: usize,
) {
    let int8: Option<Vec<super::int8::Int8Weight>> = parts
        .iter()
        .map(|p| match p.w {
            Weight::I8(w) if w.n == p.n && w.k == k => Some(w),
            _ => None,
        })
        .collect();
    let Some(weights) = int8 else {
        let normed;
        let x = match norm {
            Some(n) => {
                require_len("linear input", x.len(), m, k);
                require_len("linear norm gamma", n.gamma.len(), 1, k);
                require_len("linear norm beta", n.beta.len(), 1, k);
                let mut out = vec![0.0f32; m * k];
                super::layer_norm(x, m, k, n.gamma, n.beta, n.eps, &mut out);
                normed = out;
                &normed[..]
            }
            None => x,
        };
        for p in parts.iter_mut() {
            linear_up_to_w(x, m, k, p.w, p.n, p.bias, p.out, gemv_max_m);
        }
        return;
    };
    let mut group: Vec<super::int8::GroupPart> = weights
        .iter()
        .zip(parts.iter_mut())
        .map(|(w, p)| super::int8::GroupPart {
            w,
            bias: p.bias,
            out: &mut *p.out,
        })
        .collect();
    super::int8::linear_i8_group_on(
        super::int8::Int8Path::best(),
        x,
        m,
        k,
        norm,
        &mut group,
        m <= gemv_max_m,
    );
}

/// [`super::int8::linear_i8`] (or, with `f32_activations`, the weight-only
/// [`super::int8::linear_w8_f32`]) after checking that the weight is `[n, k]`.
#[allow(clippy::too_many_arguments)]
fn linear_i8_checked(
    x: &[f32],
    m: usize,
    k: usize,
    w: &super::int8::Int8Weight,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    f32_activations: bool,
) {
    assert!(
        w.n == n && w.k == k,
        "linear: int8 weight is [{}, {}], expected [{n}, {k}]",
        w.n,
        w.k
    );
    if f32_activations {
        super::int8::linear_w8_f32(x, m, k, w, bias, out)
    } else {
        super::int8::linear_i8(x, m, k, w, bias, out)
    }
}

/// [`check_linear`] given the weight's element count.
#[track_caller]
fn check_linear_w(
    x: &[f32],
    m: usize,
    k: usize,
    w_len: usize,
    n: usize,
    bias: Option<&[f32]>,
    out: &[f32],
) {
    require_len("linear input", x.len(), m, k);
    require_len("linear weight", w_len, n, k);
    if let Some(b) = bias {
        require_len("linear bias", b.len(), 1, n);
    }
    require_len("linear output", out.len(), m, n);
}

/// Plain matrix product `out[m, n] = a[m, k] · b[k, n]` (all row-major).
pub fn matmul(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, out: &mut [f32]) {
    require_len("matmul lhs", a.len(), m, k);
    require_len("matmul rhs", b.len(), k, n);
    require_len("matmul output", out.len(), m, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: a [m, k] row stride k, b [k, n] row stride n, out [m, n] row stride n; lengths
    // checked above.
    unsafe {
        super::sgemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            gemm_parallelism(m * n * k),
        );
    }
}
