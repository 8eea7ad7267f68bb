//! f32 matrix products on AVX-512 F with the `gemm` crate's bits.
//!
//! The `gemm` crate runs f32 products on AVX2 FMAs (its AVX-512 kernels need a nightly
//! compiler); on a CPU with two 512-bit FMA ports that is half the arithmetic the core
//! can do. [`gemm`] here takes the same arguments as `gemm::gemm` and, where AVX-512 F is
//! present and the shape is one the crate sends to its packed kernels, computes every
//! output with the same operations in the same order, so the results are the same bits:
//!
//! - the reduction is cut into blocks of `kc` (the crate's choice: `min(k, 512)` when both
//!   output dimensions are at most 64, else `gemm_common::cache::kernel_params` for its
//!   AVX2 tiles of 16 × 6, a function of k and the L1 cache only);
//! - each block's sum starts from zero and takes one FMA per k, in order;
//! - the first block is stored as `beta · sum` (or, when the destination is read,
//!   `fma(beta, sum, dst)`), every later one as `fma(beta, sum, dst)`.
//!
//! Products of two values are commutative in IEEE arithmetic, so which operand is
//! broadcast does not matter (but for which NaN's payload a NaN result carries); only the
//! order of the sums does. Shapes the crate treats
//! otherwise (k ≤ 2, a single row or column, at most 256 outputs, scaled destinations),
//! and CPUs without AVX-512 F, go to `gemm::gemm` itself. `kernels/tests/linear.rs` holds
//! the two to the same bits on the shapes the runtime uses and on ragged ones.

use rayon::prelude::*;

use super::parallel::SendPtr;

/// Rows of one tile (each a broadcast operand).
const R: usize = 12;
/// Columns of one tile: two 16-lane vectors.
const C: usize = 32;
/// Strips of columns packed and computed at a time (their packed block stays in L2).
const TASK_STRIPS: usize = 16;
/// Tiles of rows one task computes.
const TASK_ROW_TILES: usize = 8;

/// Whether [`gemm`] computes this shape itself (else it calls `gemm::gemm`).
#[allow(clippy::too_many_arguments)]
fn takes(
    m: usize,
    n: usize,
    k: usize,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    alpha: f32,
    strides: [isize; 4],
) -> bool {
    // Negative strides make the crate walk k backwards; leave those to it.
    avx512()
        && m > 1
        && n > 1
        && m * n > 256
        && k > 2
        && dst_cs == 1
        && dst_rs > 0
        && strides.iter().all(|&s| s >= 0)
        && (!read_dst || alpha == 1.0)
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The reduction block the `gemm` crate uses for an `m × n` output over `k` on AVX2.
fn block_k(m: usize, n: usize, k: usize) -> usize {
    if m <= 64 && n <= 64 {
        k.min(512)
    } else {
        // The crate's AVX2 f32 tiles: 16 rows (two 8-lane vectors) × 6 columns.
        gemm_common::cache::kernel_params(m, n, k, 16, 6, std::mem::size_of::<f32>()).kc
    }
}

/// `dst = alpha·dst + beta·(lhs · rhs)` with `gemm::gemm`'s arguments (no conjugation)
/// and its bits; see the module docs.
///
/// # Safety
/// As `gemm::gemm`: every element addressed by the shapes and strides must be valid, and
/// `dst`'s elements must not alias the operands.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    let strides = [lhs_cs, lhs_rs, rhs_cs, rhs_rs];
    if !takes(m, n, k, dst_cs, dst_rs, read_dst, alpha, strides) {
        return gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        let kc = block_k(m, n, k);
        let strips = n.div_ceil(C);
        // One block of the right operand at a time: up to TASK_STRIPS strips of C
        // columns, each kc rows of C values (1 MB at kc = 512; a buffer of this thread's,
        // kept between calls). Whole weight-sized buffers, allocated and freed per call,
        // raised the hour's peak RSS by 15 MB. Taken out while in use: a job this thread
        // steals while it waits for rayon may call this again.
        let mut buffer = PACKED.take();
        let len = TASK_STRIPS.min(strips) * kc.min(k) * C;
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        let parallel = matches!(parallelism, gemm::Parallelism::Rayon(t) if t != 1);
        let rhs = SendPtr::new(rhs as *mut f32);
        let mut s0 = 0;
        while s0 < strips {
            let chunk = s0..(s0 + TASK_STRIPS).min(strips);
            let mut k0 = 0;
            while k0 < k {
                let kb = kc.min(k - k0);
                let packed = &mut buffer[..chunk.len() * kb * C];
                let pack = |(s, strip): (usize, &mut [f32])| {
                    let s = chunk.start + s;
                    let j0 = s * C;
                    let cols = C.min(n - j0);
                    let src = rhs
                        .get()
                        .offset(j0 as isize * rhs_cs + k0 as isize * rhs_rs);
                    if rhs_cs == 1 {
                        // Rows of the operand are contiguous: copy each k's C values.
                        for (kk, row) in strip.chunks_exact_mut(C).enumerate() {
                            let from = src.offset(kk as isize * rhs_rs);
                            row[..cols].copy_from_slice(std::slice::from_raw_parts(from, cols));
                            row[cols..].fill(0.0);
                        }
                    } else if rhs_rs == 1 {
                        // Columns are contiguous (a weight's rows, keys, im2col by column):
                        // 16 × 16 blocks transposed in registers.
                        avx512f::pack_columns(src, rhs_cs, cols, kb, strip);
                    } else {
                        for j in 0..C {
                            if j < cols {
                                let col = src.offset(j as isize * rhs_cs);
                                for kk in 0..kb {
                                    strip[kk * C + j] = *col.offset(kk as isize * rhs_rs);
                                }
                            } else {
                                for kk in 0..kb {
                                    strip[kk * C + j] = 0.0;
                                }
                            }
                        }
                    }
                };
                if parallel {
                    packed.par_chunks_mut(kb * C).enumerate().for_each(pack);
                } else {
                    packed.chunks_mut(kb * C).enumerate().for_each(pack);
                }
                let block = Block {
                    k0,
                    kb,
                    // The first block overwrites unless the destination is read.
                    accumulate: k0 > 0 || read_dst,
                };
                run_tiles(
                    m,
                    n,
                    chunk.clone(),
                    block,
                    dst,
                    dst_rs,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    packed,
                    beta,
                    parallel,
                );
                k0 += kb;
            }
            s0 = chunk.end;
        }
        // Small buffers (the attention's) are kept; a layer's weight-sized one is freed
        // rather than held by every thread that ever ran one.
        if buffer.capacity() <= KEEP_PACKED {
            PACKED.set(buffer);
        }
    }
}

/// One block of the reduction: k0..k0 + kb, added to the destination or stored.
#[derive(Clone, Copy)]
struct Block {
    k0: usize,
    kb: usize,
    accumulate: bool,
}

/// The largest packed operand (in f32) a thread keeps for its next product: 1 MB.
const KEEP_PACKED: usize = 1 << 18;

thread_local! {
    /// The packed right operand of this thread's last product.
    static PACKED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The tiles of one block of one product, on this thread or on rayon's.
///
/// # Safety
/// As [`gemm`]; `packed` holds the block of the right operand as [`gemm`] packs it.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_tiles(
    m: usize,
    n: usize,
    strips: std::ops::Range<usize>,
    block: Block,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    packed: &[f32],
    beta: f32,
    parallel: bool,
) {
    let row_tiles = m.div_ceil(R);
    let row_tasks = row_tiles.div_ceil(TASK_ROW_TILES);
    let dst = SendPtr::new(dst);
    let lhs = SendPtr::new(lhs as *mut f32);
    let task = |rt: usize| {
        let tiles = (rt * TASK_ROW_TILES)..((rt + 1) * TASK_ROW_TILES).min(row_tiles);
        let job = avx512f::Job {
            m,
            n,
            block,
            dst: dst.get(),
            dst_rs,
            lhs: lhs.get(),
            lhs_cs,
            lhs_rs,
            packed,
            beta,
        };
        avx512f::run(&job, tiles, strips.clone());
    };
    if parallel {
        (0..row_tasks).into_par_iter().for_each(task);
    } else {
        (0..row_tasks).for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512f {
    use super::{C, R};
    use std::arch::x86_64::*;
    use std::ops::Range;

    pub(super) struct Job<'a> {
        pub m: usize,
        pub n: usize,
        pub block: super::Block,
        pub dst: *mut f32,
        pub dst_rs: isize,
        pub lhs: *mut f32,
        pub lhs_cs: isize,
        pub lhs_rs: isize,
        pub packed: &'a [f32],
        pub beta: f32,
    }

    /// The tiles `tiles` (of R rows) × `strips` (of C columns) over one block of the
    /// reduction.
    ///
    /// # Safety
    /// AVX-512 F present; `job` as [`super::gemm`] requires; no other thread writes these
    /// outputs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(job: &Job, tiles: Range<usize>, strips: Range<usize>) {
        let super::Block { k0, kb, accumulate } = job.block;
        // One tile's rows of the left operand for the block: k-major, R values a k.
        let mut a = vec![0.0f32; kb * R];
        for tile in tiles {
            let i0 = tile * R;
            let rows = R.min(job.m - i0);
            let ap = a.as_mut_ptr();
            for i in 0..R {
                // Rows past the last repeat it (computed, not stored).
                let src = job.lhs.offset(
                    (i0 + i.min(rows - 1)) as isize * job.lhs_rs + k0 as isize * job.lhs_cs,
                );
                if job.lhs_cs == 1 {
                    for kk in 0..kb {
                        *ap.add(kk * R + i) = *src.add(kk);
                    }
                } else {
                    for kk in 0..kb {
                        *ap.add(kk * R + i) = *src.offset(kk as isize * job.lhs_cs);
                    }
                }
            }
            for s in strips.clone() {
                let j0 = s * C;
                let cols = C.min(job.n - j0);
                let b = job.packed.as_ptr().add((s - strips.start) * kb * C);
                let out = job.dst.offset(i0 as isize * job.dst_rs).add(j0);
                tile_kernel(&a, b, kb, out, job.dst_rs, rows, cols, accumulate, job.beta);
            }
        }
    }

    /// One tile over one block: sums from zero, one FMA a k, then `beta·sum` or
    /// `fma(beta, sum, dst)` into the destination.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_kernel(
        a: &[f32],
        b: *const f32,
        kb: usize,
        out: *mut f32,
        out_rs: isize,
        rows: usize,
        cols: usize,
        accumulate: bool,
        beta: f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for kk in 0..kb {
            let b0 = _mm512_loadu_ps(b.add(kk * C));
            let b1 = _mm512_loadu_ps(b.add(kk * C + 16));
            let ak = a.as_ptr().add(kk * R);
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ak.add(i));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        let beta = _mm512_set1_ps(beta);
        let masks = [lanes(cols), lanes(cols.saturating_sub(16))];
        for (i, row) in acc.iter().enumerate().take(rows) {
            let o = out.offset(i as isize * out_rs);
            for (h, (&v, &mask)) in row.iter().zip(&masks).enumerate() {
                if mask == 0 {
                    continue;
                }
                let p = o.add(16 * h);
                let r = if accumulate {
                    _mm512_fmadd_ps(beta, v, _mm512_maskz_loadu_ps(mask, p))
                } else {
                    _mm512_mul_ps(beta, v)
                };
                _mm512_mask_storeu_ps(p, mask, r);
            }
        }
    }

    /// A strip of `cols` (≤ C) columns of `k` contiguous values each, `col_stride` apart,
    /// as `k` rows of C values (zeros past `cols`).
    ///
    /// # Safety
    /// AVX-512 F present; the columns lie inside the operand; `strip` holds `k · C`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_columns(
        src: *const f32,
        col_stride: isize,
        cols: usize,
        k: usize,
        strip: &mut [f32],
    ) {
        debug_assert!(strip.len() >= k * C);
        let mut k0 = 0;
        while k0 < k {
            let kn = 16.min(k - k0);
            let mask = lanes(kn);
            for half in 0..C / 16 {
                let mut r = [_mm512_setzero_ps(); 16];
                for (jj, v) in r.iter_mut().enumerate() {
                    let j = 16 * half + jj;
                    if j < cols {
                        *v = _mm512_maskz_loadu_ps(
                            mask,
                            src.offset(j as isize * col_stride).add(k0),
                        );
                    }
                }
                let t = transpose16(r);
                for (rr, v) in t.iter().enumerate().take(kn) {
                    _mm512_storeu_ps(strip.as_mut_ptr().add((k0 + rr) * C + 16 * half), *v);
                }
            }
            k0 += kn;
        }
    }

    /// `out[t][i] = r[i][t]` for a 16 × 16 block.
    #[inline(always)]
    unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved within each 128-bit lane.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // Four rows' element c of each 128-bit lane: u[4g + c] for rows 4g..4g + 3.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let b = 4 * g;
            u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
            u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
            u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
            u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
        }
        // Gather lane L of the four groups: output row 4L + c.
        let mut out = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let v = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let w = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
            let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let w2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
            out[c] = _mm512_shuffle_f32x4::<0x88>(v, v2);
            out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(v, v2);
            out[4 + c] = _mm512_shuffle_f32x4::<0x88>(w, w2);
            out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(w, w2);
        }
        out
    }

    /// The first `n` of 16 lanes (all when `n ≥ 16`).
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }
}
