//! Register-blocked f32 GEMM that keeps the contracts' per-output accumulation order.
//!
//! Every output `C[i, j]` is one accumulator that starts at +0.0 and sees
//! `acc = acc + a[i, k]·b[j, k]` for k = 0, 1, … in order, each product rounded to f32
//! before the add (Rust never fuses `*` and `+`, and the intrinsics below are separate
//! multiplies and adds). Speed comes only from computing many independent outputs at once:
//! an MR×NR block of accumulators lives in registers, the vector lanes run over columns,
//! and row blocks × column ranges run in parallel. The bits therefore equal those of one
//! sequential dot product per output, whatever the instruction set or thread count.

use rayon::prelude::*;

/// Rows of the register block.
pub(crate) const MR: usize = 6;
/// Columns of the register block (and of one packed panel of the right operand).
pub(crate) const NR: usize = 16;

/// Right operand `B [n, k]` packed into panels of NR columns: panel p holds
/// `B[p·NR + jj, kk]` at `p·k·NR + kk·NR + jj`, zero-padded past column n.
pub(crate) struct PackedRhs {
    data: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedRhs {
    /// Packs `value(j, kk)` for j < n, kk < k (panels in parallel).
    pub(crate) fn pack(n: usize, k: usize, value: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    let (j0, cols) = (p * NR, NR.min(n - p * NR));
                    // Sequential writes; the NR source rows are read as parallel streams.
                    for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
                        for (jj, d) in dst.iter_mut().enumerate().take(cols) {
                            *d = value(j0 + jj, kk);
                        }
                    }
                });
        }
        Self { data, n, k }
    }

    /// Panel p (`[k, NR]`).
    #[inline]
    pub(crate) fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// One MR×NR block: `tile[r][jj] = Σ_kk a[kk·MR + r]·b[kk·NR + jj]`, k increasing.
pub(crate) type Kernel = fn(usize, &[f32], &[f32], &mut [[f32; NR]; MR]);

/// Portable block kernel (plain lane arrays, which LLVM vectorises over jj).
fn kernel_portable(k: usize, a: &[f32], b: &[f32], tile: &mut [[f32; NR]; MR]) {
    let mut c = [[0.0f32; NR]; MR];
    for (av, bv) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(k) {
        for r in 0..MR {
            let x = av[r];
            for jj in 0..NR {
                c[r][jj] += x * bv[jj];
            }
        }
    }
    *tile = c;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// AVX block kernel: 12 ymm accumulators (6 rows × 2×8 columns), a broadcast of
    /// `a` times two loads of `b` per row and step. Separate `vmulps`/`vaddps`, never FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn kernel_avx2_inner(k: usize, a: &[f32], b: &[f32], tile: &mut [[f32; NR]; MR]) {
        // The raw loads below stay inside these lengths.
        assert!(a.len() >= k * MR && b.len() >= k * NR);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut c = [[_mm256_setzero_ps(); 2]; MR];
        for kk in 0..k {
            // SAFETY: kk < k, so every offset is below k·NR resp. k·MR (asserted above).
            unsafe {
                let b0 = _mm256_loadu_ps(pb.add(kk * NR));
                let b1 = _mm256_loadu_ps(pb.add(kk * NR + 8));
                for (r, cr) in c.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*pa.add(kk * MR + r));
                    cr[0] = _mm256_add_ps(cr[0], _mm256_mul_ps(x, b0));
                    cr[1] = _mm256_add_ps(cr[1], _mm256_mul_ps(x, b1));
                }
            }
        }
        for (t, cr) in tile.iter_mut().zip(&c) {
            // SAFETY: each tile row holds NR = 16 floats.
            unsafe {
                _mm256_storeu_ps(t.as_mut_ptr(), cr[0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), cr[1]);
            }
        }
    }

    /// Safe entry point; only selected after AVX2 was detected.
    pub(super) fn kernel_avx2(k: usize, a: &[f32], b: &[f32], tile: &mut [[f32; NR]; MR]) {
        debug_assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: `select_kernel` returns this function only when AVX2 is present.
        unsafe { kernel_avx2_inner(k, a, b, tile) }
    }
}

/// The fastest block kernel this CPU runs (all produce the same bits).
pub(crate) fn select_kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return x86::kernel_avx2;
        }
    }
    kernel_portable
}

/// `out[i, j] = post(i, j, acc_ij)` with `acc_ij = Σ_kk a(i, kk)·B[j, kk]` accumulated as
/// described in the module comment; `out` is `[m, n]` row-major with `n = b.n`.
///
/// `a(i, kk)` is read once per (row, column range) to pack the row block. Work is split
/// into row blocks × column ranges that run in parallel; each output is computed by one
/// task, so the bits do not depend on the thread count. `finish` then runs on each task's
/// piece of each row (an element-wise epilogue that prefers long slices, such as GELU).
pub(crate) fn gemm(
    m: usize,
    a: impl Fn(usize, usize) -> f32 + Sync,
    b: &PackedRhs,
    out: &mut [f32],
    post: impl Fn(usize, usize, f32) -> f32 + Sync,
    finish: impl Fn(&mut [f32]) + Sync,
) {
    let (n, k) = (b.n, b.k);
    debug_assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let kernel = select_kernel();
    // Row block: a multiple of MR whose packed A (mb·k f32) stays within ~192 KB of L2.
    let mb_cache = ((48 * 1024) / k.max(1)).clamp(MR, 16 * MR) / MR * MR;
    let mb = mb_cache.min(m.div_ceil(MR) * MR);
    let row_blocks = m.div_ceil(mb);
    // Column ranges: whole panels, split until there are a few tasks per thread.
    let panels = n.div_ceil(NR);
    let want = 4 * rayon::current_num_threads();
    let mut ranges = 1;
    while row_blocks * ranges < want && panels / (2 * ranges) >= 2 {
        ranges *= 2;
    }
    let nc = panels.div_ceil(ranges) * NR;

    // Tasks own disjoint pieces of `out`: (first row, first column, one slice per row).
    let mut tasks: Vec<(usize, usize, Vec<&mut [f32]>)> = Vec::new();
    for (rb, block) in out.chunks_mut(mb * n).enumerate() {
        let first = tasks.len();
        for (c, _) in (0..n).step_by(nc).enumerate() {
            tasks.push((rb * mb, c * nc, Vec::with_capacity(mb)));
        }
        for row in block.chunks_mut(n) {
            for (c, piece) in row.chunks_mut(nc).enumerate() {
                tasks[first + c].2.push(piece);
            }
        }
    }

    tasks.into_par_iter().for_each(|(i0, j0, mut rows)| {
        let rows_here = rows.len();
        let groups = rows_here.div_ceil(MR);
        // Row block packed as groups of MR rows, `[group][kk][r]`, zero-padded past m.
        let mut apack = vec![0.0f32; groups * k * MR];
        if k > 0 {
            for (g, grp) in apack.chunks_mut(k * MR).enumerate() {
                for r in 0..MR.min(rows_here - g * MR) {
                    let i = i0 + g * MR + r;
                    for kk in 0..k {
                        grp[kk * MR + r] = a(i, kk);
                    }
                }
            }
        }
        let cols_here = rows[0].len();
        let mut tile = [[0.0f32; NR]; MR];
        for pj in (0..cols_here).step_by(NR) {
            let panel = b.panel((j0 + pj) / NR);
            let width = NR.min(cols_here - pj);
            for g in 0..groups {
                kernel(k, &apack[g * k * MR..(g + 1) * k * MR], panel, &mut tile);
                for (r, acc) in tile.iter().enumerate().take(rows_here - g * MR) {
                    let i = g * MR + r;
                    let dst = &mut rows[i][pj..pj + width];
                    for (jj, d) in dst.iter_mut().enumerate() {
                        *d = post(i0 + i, j0 + pj + jj, acc[jj]);
                    }
                }
            }
        }
        for row in rows.iter_mut() {
            finish(row);
        }
    });
}

/// Fewest rows for which packing the right operand pays off; below, [`gemm_few_rows`].
pub(crate) const FEW_ROWS: usize = 8;

/// Lanes of the column block in [`gemm_few_rows`].
const FEW_COLS: usize = 8;

/// [`gemm`] for `m < FEW_ROWS` (decoder steps, GEMVs), where packing B would cost more than
/// the products: B is read in place as `b(j, kk)`, FEW_COLS columns at a time, and the
/// m × FEW_COLS accumulators run side by side with k in order (the same chains as
/// [`gemm`]). `a` holds the m rows of A, already in their final (rounded) values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_few_rows(
    m: usize,
    k: usize,
    a: &[f32],
    n: usize,
    b: impl Fn(usize, usize) -> f32 + Sync,
    out: &mut [f32],
    post: impl Fn(usize, usize, f32) -> f32 + Sync,
    finish: impl Fn(&mut [f32]) + Sync,
) {
    debug_assert!(m < FEW_ROWS && a.len() == m * k && out.len() == m * n);
    if m == 0 || n == 0 {
        return;
    }
    // Accumulators transposed, `[n][m]`, so column blocks are contiguous tasks.
    let mut acc_t = vec![0.0f32; n * m];
    acc_t
        .par_chunks_mut(FEW_COLS * m)
        .enumerate()
        .for_each(|(blk, chunk)| {
            let j0 = blk * FEW_COLS;
            let cols = chunk.len() / m;
            let mut acc = [[0.0f32; FEW_COLS]; FEW_ROWS];
            let mut bv = [0.0f32; FEW_COLS];
            for kk in 0..k {
                for (jj, v) in bv.iter_mut().enumerate().take(cols) {
                    *v = b(j0 + jj, kk);
                }
                for (i, acc_i) in acc.iter_mut().enumerate().take(m) {
                    let x = a[i * k + kk];
                    for jj in 0..FEW_COLS {
                        acc_i[jj] += x * bv[jj];
                    }
                }
            }
            for jj in 0..cols {
                for i in 0..m {
                    chunk[jj * m + i] = acc[i][jj];
                }
            }
        });
    out.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            *o = post(i, j, acc_t[j * m + i]);
        }
        finish(row);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2) with a few zeros and large magnitudes.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s >> 40) as f32 / (1u64 << 22) as f32 - 2.0;
                match i % 29 {
                    0 => 0.0,
                    1 => v * 1e30,
                    _ => v,
                }
            })
            .collect()
    }

    #[test]
    fn every_block_kernel_gives_the_portable_bits() {
        for k in [0, 1, 7, 64, 300] {
            let a = values(k * MR, 3 + k as u64);
            let b = values(k * NR, 5 + k as u64);
            let mut want = [[0.0f32; NR]; MR];
            kernel_portable(k, &a, &b, &mut want);
            // The sequential definition, one output at a time.
            for r in 0..MR {
                for jj in 0..NR {
                    let mut acc = 0.0f32;
                    for kk in 0..k {
                        acc += a[kk * MR + r] * b[kk * NR + jj];
                    }
                    assert_eq!(acc.to_bits(), want[r][jj].to_bits(), "portable k={k}");
                }
            }
            let mut got = [[f32::NAN; NR]; MR];
            select_kernel()(k, &a, &b, &mut got);
            for r in 0..MR {
                for jj in 0..NR {
                    assert_eq!(got[r][jj].to_bits(), want[r][jj].to_bits(), "k={k}");
                }
            }
        }
    }
}
