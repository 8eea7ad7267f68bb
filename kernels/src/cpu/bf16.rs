//! bf16 products with f32 accumulation: both operands rounded to bf16 (to nearest, ties to
//! even), each product exact in f32 (8 + 8 significant bits), the sums in f32.
//!
//! `out[i, j] = Σ_k a[i, k]·b[j, k]` over rounded operands. On AVX-512 BF16 one
//! `vdpbf16ps` multiplies 16 columns by a pair of k values and adds both products to 16 f32
//! lanes: twice the multiply-adds of an f32 FMA of the same width.
//!
//! **Layouts.** The right operand is packed ([`PackedBf16`]) in panels of [`PANEL`] = 16
//! rows of `b`; for each pair of consecutive k a panel holds its 16 rows' two values as one
//! u32 (low half the even k): one 512-bit load is the operand of one `vdpbf16ps`. The left
//! operand is rows of such pairs ([`pack_rows`]), each pair broadcast to all lanes. k is
//! padded with a zero to even and n with zero rows to whole panels.
//!
//! **Paths** ([`Bf16Path`]): AVX-512 BF16; the same on AVX-512 F alone, each pair two f32
//! FMAs in flush-to-zero mode, which gives `vdpbf16ps`'s bits everywhere, subnormals
//! included, and is the faster of the two where `vdpbf16ps` issues at half the FMA rate;
//! and a portable loop that takes the same sums in the same order (the larger k of a pair
//! first, as Intel's definition of `vdpbf16ps`). The portable loop flushes nothing, so it
//! agrees bit for bit on normal inputs (tested); the hardware treats subnormal inputs and
//! results as zero, which moves a sum by less than 1.2e-38 per term. AMX tiles take their
//! own order. Error against exact arithmetic: see `docs/kernels.md`.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::amx::TILE_ROWS;
use super::checks::{require_len, require_strided};
use super::parallel::SendPtr;
use super::simd::{multiversion, widen_f16};

/// Rows of `b` per panel of the packed layout.
pub const PANEL: usize = 16;
/// Rows of the output one tile of the kernel computes.
const MR: usize = 6;
/// Panels one tile of the kernel computes (`NR × PANEL` columns).
const NR: usize = 4;
/// Pairs of k per block: a panel's block is 8 KiB, so the tile's four stay in L1.
const KC: usize = 128;

/// f32 rounded to bf16 (to nearest, ties to even); NaN stays a (quiet) NaN.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    (rounded_bits(x) >> 16) as u16
}

/// The bits of `x` rounded to bf16, in the high half (the low half zero). Branch-free, so
/// the packing loops vectorise.
#[inline(always)]
pub(crate) fn rounded_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { bits | 0x0040_0000 } else { rounded }) & 0xffff_0000
}

/// bf16 widened to f32 (exact).
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two values as one packed pair: `lo` in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    rounded_bits(lo) >> 16 | rounded_bits(hi)
}

/// The implementations of the bf16 product, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Path {
    /// AMX tiles (`tdpbf16ps`) for blocks of 16 rows and 16 pairs, AVX-512 BF16 for the
    /// rest. Not the same bits as the other paths: a tile takes its sums in its own order
    /// (within the same error bound).
    Amx,
    /// AVX-512 F alone: each pair as two f32 FMAs in flush-to-zero mode, the bits of
    /// [`Bf16Path::Avx512Bf16`] (see `fma` below); faster where `vdpbf16ps` issues at half
    /// the FMA rate.
    Avx512Fma,
    /// AVX-512 F with BF16 (`vdpbf16ps` on 512-bit vectors).
    Avx512Bf16,
    /// Plain Rust (vectorised by the compiler for AVX2+FMA where the CPU has them).
    Portable,
}

impl Bf16Path {
    /// Every path, widest first.
    pub const ALL: [Bf16Path; 4] = [
        Bf16Path::Amx,
        Bf16Path::Avx512Fma,
        Bf16Path::Avx512Bf16,
        Bf16Path::Portable,
    ];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Path::Amx => Bf16Path::Avx512Bf16.available() && super::amx::bf16_usable(),
            #[cfg(target_arch = "x86_64")]
            Bf16Path::Avx512Fma => std::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Bf16Path::Avx512Bf16 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bf16")
            }
            Bf16Path::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest path this CPU runs, AMX tiles apart unless `AMANUENSIS_BF16_TILES=1` is
    /// set: the tiles take their sums in an order of their own (within the same bound), and
    /// with them the default compute type's transcripts of the public clips lose words to
    /// f32 by coin flips the accuracy bar counts (`docs/kernels.md`, "On AMX tiles"). The
    /// other paths give the same bits, so which of them runs changes only the time.
    pub fn best() -> Bf16Path {
        static BEST: std::sync::OnceLock<Bf16Path> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let tiles = std::env::var("AMANUENSIS_BF16_TILES").is_ok_and(|v| v == "1");
            if tiles && Bf16Path::Amx.available() {
                Bf16Path::Amx
            } else {
                Bf16Path::fastest_exact()
            }
        })
    }

    /// The widest path this CPU runs, AMX tiles included whenever they are usable: for the
    /// bf16x3 products, whose results lie near f32's whatever the order of their sums.
    pub fn widest() -> Bf16Path {
        if Bf16Path::Amx.available() {
            Bf16Path::Amx
        } else {
            Bf16Path::fastest_exact()
        }
    }

    /// Of the paths that give the AVX-512 BF16 bits, the fastest here. Where `vdpbf16ps`
    /// and the FMA emulation both run, a short product (32 × 64 over 256 pairs, 0.5 M
    /// multiply-adds) is timed five times on each, alternating, and the lower best time
    /// wins: `vdpbf16ps` issues every other cycle on the Xeons with AMX this was built on,
    /// twice an FMA's cost, but once a cycle elsewhere.
    fn fastest_exact() -> Bf16Path {
        static FASTEST: std::sync::OnceLock<Bf16Path> = std::sync::OnceLock::new();
        *FASTEST.get_or_init(|| {
            match (
                Bf16Path::Avx512Bf16.available(),
                Bf16Path::Avx512Fma.available(),
            ) {
                (true, true) => {
                    let times = probe([Bf16Path::Avx512Fma, Bf16Path::Avx512Bf16]);
                    if times[0] <= times[1] {
                        Bf16Path::Avx512Fma
                    } else {
                        Bf16Path::Avx512Bf16
                    }
                }
                (true, false) => Bf16Path::Avx512Bf16,
                (false, true) => Bf16Path::Avx512Fma,
                (false, false) => Bf16Path::Portable,
            }
        })
    }

    /// Whether the CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX); otherwise the
    /// default compute type keeps those products f32, whose bits its transcripts were
    /// checked with. ([`Bf16Path::Avx512Fma`] gives the hardware's bits on any AVX-512 F
    /// CPU, but only where the hardware path exists is it the default's.)
    pub fn native() -> bool {
        Bf16Path::Avx512Bf16.available()
    }

    /// Short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Path::Amx => "amx",
            Bf16Path::Avx512Fma => "avx512-fma",
            Bf16Path::Avx512Bf16 => "avx512-bf16",
            Bf16Path::Portable => "portable",
        }
    }
}

/// The best of five timed runs of one short product on each path, the paths alternating.
/// Runs on the calling thread alone (no rayon: it may run inside a parallel section,
/// under the `OnceLock` of [`Bf16Path::best`]).
fn probe<const N: usize>(paths: [Bf16Path; N]) -> [std::time::Duration; N] {
    let (m, n, k) = (32, 64, 512);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect();
    let b: Vec<f32> = (0..n * k)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 64.0)
        .collect();
    let pairs = k / 2;
    let mut b_rows = Vec::new();
    pack_rows(&b, n, k, k, 1.0, &mut b_rows);
    let mut data = vec![0u32; n.div_ceil(PANEL) * pairs * PANEL];
    for (j, row) in b_rows.chunks_exact(pairs).enumerate() {
        for (q, &v) in row.iter().enumerate() {
            data[(j / PANEL) * pairs * PANEL + q * PANEL + j % PANEL] = v;
        }
    }
    let packed = PackedBf16 { n, k, data };
    let mut rows = vec![0u32; m * pairs];
    pack_rows(&a, m, k, k, 1.0, &mut rows);
    let mut out = vec![0.0f32; m * n];
    let mut best = [std::time::Duration::MAX; N];
    for _ in 0..5 {
        for (path, t) in paths.iter().zip(best.iter_mut()) {
            let start = std::time::Instant::now();
            gemm_bf16(
                *path, &rows, pairs, m, &packed, n, pairs, &mut out, n, false,
            );
            *t = (*t).min(start.elapsed());
        }
    }
    best
}

/// An `[n, k]` right operand in the packed bf16 layout (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PackedBf16 {
    /// Rows of `b` (output columns).
    pub n: usize,
    /// Columns of `b` (the reduction length).
    pub k: usize,
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Pairs of k per panel row.
    pub fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Packs `b[j, kk] = src[j * row_stride + kk]`, `j < n`, `kk < k`.
    pub fn pack(src: &[f32], n: usize, k: usize, row_stride: usize) -> Self {
        // Rows of pairs first (vectorised), then each row's pairs to its panel lane.
        let mut rows = Vec::new();
        pack_rows(src, n, k, row_stride, 1.0, &mut rows);
        let pairs = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(PANEL) * pairs * PANEL];
        for (j, row) in rows.chunks_exact(pairs.max(1)).take(n).enumerate() {
            let panel = &mut data[(j / PANEL) * pairs * PANEL..][..pairs * PANEL];
            for (q, &v) in row.iter().enumerate().take(pairs) {
                panel[q * PANEL + j % PANEL] = v;
            }
        }
        Self { n, k, data }
    }

    /// Packs an `[n, k]` matrix whose row j `row(j, buf)` writes into `buf` (k long), on
    /// rayon's threads: a weight in any stored type, widened a row at a time.
    pub fn pack_rows_of(n: usize, k: usize, row: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        let pairs = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(PANEL) * pairs * PANEL];
        if pairs > 0 {
            data.par_chunks_mut(pairs * PANEL)
                .enumerate()
                .for_each_init(
                    || (vec![0.0f32; k], Vec::new()),
                    |(buf, rows), (p, panel)| {
                        for l in 0..PANEL.min(n - p * PANEL) {
                            row(p * PANEL + l, buf);
                            pack_rows(buf, 1, k, k, 1.0, rows);
                            for (q, &v) in rows.iter().enumerate() {
                                panel[q * PANEL + l] = v;
                            }
                        }
                    },
                );
        }
        Self { n, k, data }
    }

    /// Packs the right operand of a bf16x3 product of the `[n, k]` matrix whose row j
    /// `row(j, buf)` writes into `buf[..k]`: rows of `[wh, wl, wh]` (`k' = 3·k`), `wh` each
    /// value rounded to bf16 and `wl` the rest rounded ([`linear_bf16x3`]). An f16 weight
    /// is exactly `wh + wl` (its 11 significant bits fit in two bf16 values).
    pub fn pack_x3(n: usize, k: usize, row: impl Fn(usize, &mut [f32]) + Sync) -> Self {
        Self::pack_rows_of(n, 3 * k, |j, buf| {
            let (a, rest) = buf.split_at_mut(k);
            let (b, c) = rest.split_at_mut(k);
            row(j, a);
            for ((a, b), c) in a.iter_mut().zip(b.iter_mut()).zip(c.iter_mut()) {
                let hi = f32::from_bits(rounded_bits(*a));
                (*b, *c) = (*a - hi, hi);
                *a = hi;
            }
        })
    }

    /// Packs an `[n, k]` row-major f16 matrix (a stored weight), widened exactly first.
    pub fn pack_f16(src: &[half::f16], n: usize, k: usize) -> Self {
        require_strided("bf16 pack", src.len(), n, k, k);
        Self::pack_rows_of(n, k, |j, buf| widen_f16(&src[j * k..(j + 1) * k], buf))
    }

    /// Packs the transpose of `src`: `b[j, kk] = src[kk * row_stride + j]`, `j < n`,
    /// `kk < k` (attention's V, whose output columns are its columns).
    pub fn pack_transposed(src: &[f32], k: usize, n: usize, row_stride: usize) -> Self {
        require_strided("bf16 pack", src.len(), k, row_stride, n);
        let pairs = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(PANEL) * pairs * PANEL];
        pack_transposed_into(src, k, n, row_stride, &mut data);
        Self { n, k, data }
    }

    /// `b[j, kk]` as the kernels see it (rounded to bf16).
    pub fn get(&self, j: usize, kk: usize) -> f32 {
        let pairs = self.pairs();
        let v = self.data[(j / PANEL) * pairs * PANEL + (kk / 2) * PANEL + j % PANEL];
        from_bf16(if kk.is_multiple_of(2) {
            v as u16
        } else {
            (v >> 16) as u16
        })
    }
}

/// Rounds `m` rows of `src` (`[m, k]`, rows `row_stride` apart), times `scale`, into pairs:
/// `out[i * k.div_ceil(2) + q]` holds columns 2q and 2q + 1 of row i (a zero past k).
pub fn pack_rows(
    src: &[f32],
    m: usize,
    k: usize,
    row_stride: usize,
    scale: f32,
    out: &mut Vec<u32>,
) {
    out.clear();
    out.resize(m * k.div_ceil(2), 0);
    pack_rows_into(src, m, k, row_stride, scale, out);
}

/// [`pack_rows`] into `out` (`m · k.div_ceil(2)` pairs, all written).
pub(crate) fn pack_rows_into(
    src: &[f32],
    m: usize,
    k: usize,
    row_stride: usize,
    scale: f32,
    out: &mut [u32],
) {
    require_strided("bf16 rows", src.len(), m, row_stride, k);
    require_len("bf16 packed rows", out.len(), m, k.div_ceil(2));
    pack_rows_mv(src, m, k, row_stride, scale, out);
}

#[inline(always)]
fn pack_rows_body<const FMA: bool>(
    src: &[f32],
    m: usize,
    k: usize,
    row_stride: usize,
    scale: f32,
    out: &mut [u32],
) {
    let pairs = k.div_ceil(2);
    for (i, dst) in out.chunks_exact_mut(pairs.max(1)).take(m).enumerate() {
        // Rows a stride apart each start where the hardware prefetcher has not been (a
        // query row of a fused QKV output): ask for the row after next while this one is
        // packed.
        if i + 2 < m {
            super::simd::prefetch(&src[(i + 2) * row_stride..][..k]);
        }
        // A row of pairs is the row's bf16 values in order (low half first): a plain
        // narrowing map, which vectorises.
        let halves: &mut [u16] = bytemuck::cast_slice_mut(dst);
        for (d, &x) in halves.iter_mut().zip(&src[i * row_stride..][..k]) {
            *d = (rounded_bits(x * scale) >> 16) as u16;
        }
    }
}

multiversion! {
    fn pack_rows_mv(src: &[f32], m: usize, k: usize, row_stride: usize, scale: f32, out: &mut [u32]) => pack_rows_body
}

/// Rows of `[xh, xh, xl]` pairs (`3·k` halves a row, a zero half after an odd count) of
/// `m` rows of `src` (`k` values each, `row_stride` apart) times `scale`: `xh` each value
/// rounded to bf16, `xl` the rest rounded. The left operand of a bf16x3 product
/// ([`linear_bf16x3`], and attention's queries).
#[inline(always)]
fn pack_rows_x3_body<const FMA: bool>(
    src: &[f32],
    m: usize,
    k: usize,
    row_stride: usize,
    scale: f32,
    out: &mut [u32],
) {
    let pairs = (3 * k).div_ceil(2);
    for (i, dst) in out.chunks_exact_mut(pairs.max(1)).take(m).enumerate() {
        let halves: &mut [u16] = bytemuck::cast_slice_mut(dst);
        let (a, rest) = halves.split_at_mut(k);
        let (b, c) = rest.split_at_mut(k);
        let row = &src[i * row_stride..][..k];
        for (((&x, a), b), c) in row
            .iter()
            .zip(a.iter_mut())
            .zip(b.iter_mut())
            .zip(c.iter_mut())
        {
            let x = x * scale;
            let hi = rounded_bits(x);
            let lo = rounded_bits(x - f32::from_bits(hi));
            *a = (hi >> 16) as u16;
            *b = (hi >> 16) as u16;
            *c = (lo >> 16) as u16;
        }
        c[k..].fill(0);
    }
}

multiversion! {
    fn pack_rows_x3_mv(src: &[f32], m: usize, k: usize, row_stride: usize, scale: f32, out: &mut [u32]) => pack_rows_x3_body
}

/// [`pack_rows`] for the left operand of a bf16x3 product: rows of `[xh, xh, xl]` pairs
/// (`(3·k).div_ceil(2)` a row) of `src`'s `m` rows times `scale`.
pub(crate) fn pack_rows_x3(
    src: &[f32],
    m: usize,
    k: usize,
    row_stride: usize,
    scale: f32,
    out: &mut Vec<u32>,
) {
    require_strided("bf16x3 rows", src.len(), m, row_stride, k);
    out.clear();
    out.resize(m * (3 * k).div_ceil(2), 0);
    pack_rows_x3_mv(src, m, k, row_stride, scale, out);
}

/// The panels of `src`'s transpose: for each pair of rows of `src` and each panel, 16
/// columns of both rows interleaved.
#[inline(always)]
fn pack_transposed_body<const FMA: bool>(
    src: &[f32],
    k: usize,
    n: usize,
    row_stride: usize,
    data: &mut [u32],
) {
    let pairs = k.div_ceil(2);
    for q in 0..pairs {
        let lo = &src[2 * q * row_stride..][..n];
        let hi = (2 * q + 1 < k).then(|| &src[(2 * q + 1) * row_stride..][..n]);
        for p in 0..n.div_ceil(PANEL) {
            let dst = &mut data[p * pairs * PANEL + q * PANEL..][..PANEL];
            let c0 = p * PANEL;
            let width = PANEL.min(n - c0);
            match hi {
                Some(hi) => {
                    let pairs_of = lo[c0..c0 + width].iter().zip(&hi[c0..c0 + width]);
                    for (d, (&l, &h)) in dst.iter_mut().zip(pairs_of) {
                        *d = pair(l, h);
                    }
                }
                None => {
                    for (d, &l) in dst.iter_mut().zip(&lo[c0..c0 + width]) {
                        *d = pair(l, 0.0);
                    }
                }
            }
        }
    }
}

multiversion! {
    fn pack_transposed_into(src: &[f32], k: usize, n: usize, row_stride: usize, data: &mut [u32]) => pack_transposed_body
}

/// Rows of a [`linear_bf16`] task: 16 tiles of [`MR`].
const LINEAR_ROWS: usize = 16 * MR;
/// Output columns of a [`linear_bf16`] task: 8 panels (their 128-pair blocks, 64 KiB,
/// stay in L2 while the task's rows pass).
const LINEAR_COLS: usize = 8 * PANEL;

/// `out[i, j] = Σ_k x[i, k]·w[j, k] + bias[j]` (`x` `[m, k]`, `out` `[m, n]` row-major) with
/// bf16 products and f32 sums (the bias is where each sum starts), on rayon's threads.
/// Panics when a slice is too short.
pub fn linear_bf16(
    path: Bf16Path,
    x: &[f32],
    m: usize,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    linear_with(path, x, m, w.k, w, bias, out, false)
}

/// [`linear_bf16`] with bf16x3 products: `x` `[m, k]` is split as it is packed into rows
/// of `[xh, xh, xl]` (`hi` each value rounded to bf16, `lo` the rest rounded), and `w` is
/// the `[n, 3·k]` operand of [`PackedBf16::pack_x3`], rows of `[wh, wl, wh]`: each sum
/// is `Σ xh·wh + xh·wl + xl·wh`, about 2⁻¹⁵ relative from the exact product (see
/// `super::attention::attention_bf16x3`). Panics when a slice is too short or `w.k` is
/// not a multiple of 3.
pub fn linear_bf16x3(
    path: Bf16Path,
    x: &[f32],
    m: usize,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(
        w.k.is_multiple_of(3),
        "bf16x3 linear: the weight's k {} is not 3 parts",
        w.k
    );
    linear_with(path, x, m, w.k / 3, w, bias, out, true)
}

#[allow(clippy::too_many_arguments)]
fn linear_with(
    path: Bf16Path,
    x: &[f32],
    m: usize,
    kx: usize,
    w: &PackedBf16,
    bias: Option<&[f32]>,
    out: &mut [f32],
    x3: bool,
) {
    let (n, k) = (w.n, w.k);
    assert!(
        path.available(),
        "bf16 path {} is not available on this CPU",
        path.name()
    );
    require_strided("bf16 linear x", x.len(), m, kx, kx);
    require_strided("bf16 linear out", out.len(), m, n, n);
    if let Some(b) = bias {
        assert!(
            b.len() >= n,
            "bf16 linear: bias has {} values, n is {n}",
            b.len()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    let pairs = k.div_ceil(2);
    let mut rows = vec![0u32; m * pairs];
    rows.par_chunks_mut(LINEAR_ROWS * pairs.max(1))
        .enumerate()
        .for_each(|(t, dst)| {
            let r0 = t * LINEAR_ROWS;
            let count = dst.len() / pairs.max(1);
            if x3 {
                pack_rows_x3_mv(&x[r0 * kx..], count, kx, kx, 1.0, dst);
            } else {
                pack_rows_mv(&x[r0 * k..], count, k, k, 1.0, dst);
            }
        });
    let out_ptr = SendPtr::new(out.as_mut_ptr());
    let row_blocks = m.div_ceil(LINEAR_ROWS);
    let col_blocks = n.div_ceil(LINEAR_COLS);
    let rows = &rows;
    (0..row_blocks * col_blocks).into_par_iter().for_each(|t| {
        let (rb, cb) = (t % row_blocks, t / row_blocks);
        let (r0, c0) = (rb * LINEAR_ROWS, cb * LINEAR_COLS);
        let (mr, nc) = (LINEAR_ROWS.min(m - r0), LINEAR_COLS.min(n - c0));
        let o = out_ptr.get();
        for i in r0..r0 + mr {
            // SAFETY: `require_strided` bounds out; this task alone writes rows r0..r0+mr,
            // columns c0..c0+nc.
            let seg = unsafe { std::slice::from_raw_parts_mut(o.add(i * n + c0), nc) };
            match bias {
                Some(b) => seg.copy_from_slice(&b[c0..c0 + nc]),
                None => seg.fill(0.0),
            }
        }
        // SAFETY: as above; columns c0.. are whole panels of `w` from panel c0 / 16.
        unsafe {
            gemm_raw_from(
                path,
                rows.as_ptr().add(r0 * pairs),
                pairs,
                mr,
                w,
                c0 / PANEL,
                nc,
                0,
                pairs,
                o.add(r0 * n + c0),
                n,
                true,
            );
        }
    });
}

/// `out[i * out_stride + j] (+)= Σ_q a-pair(i, q) · b-pair(j, q)` for `i < m`, `j < n`,
/// `q < pairs`; `a` holds rows of pairs `a_stride` apart (from [`pack_rows`]). With
/// `accumulate` the sums start from `out`'s values, else from zero. Runs on the calling
/// thread. Panics when a slice is too short or `n`, `pairs` exceed `b`'s.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    path: Bf16Path,
    a: &[u32],
    a_stride: usize,
    m: usize,
    b: &PackedBf16,
    n: usize,
    pairs: usize,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    assert!(
        path.available(),
        "bf16 path {} is not available on this CPU",
        path.name()
    );
    assert!(
        n <= b.n && pairs <= b.pairs(),
        "bf16 gemm: n or k beyond the packed operand"
    );
    if m == 0 || n == 0 {
        return;
    }
    require_strided("bf16 gemm a", a.len(), m, a_stride, pairs);
    require_strided("bf16 gemm out", out.len(), m, out_stride, n);
    // SAFETY: the checks above bound every row and column the kernel addresses.
    unsafe {
        gemm_raw(
            path,
            a.as_ptr(),
            a_stride,
            m,
            b,
            n,
            pairs,
            out.as_mut_ptr(),
            out_stride,
            accumulate,
        )
    }
}

/// [`gemm_bf16`] on raw pointers, for callers writing disjoint parts of one buffer from
/// several threads.
///
/// # Safety
/// `a` must hold `m` rows of `pairs` u32 `a_stride` apart; `out` must be valid for writes
/// of `m` rows of `n` f32 `out_stride` apart that no other thread touches; `n ≤ b.n`,
/// `pairs ≤ b.pairs()`; `path` available.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    path: Bf16Path,
    a: *const u32,
    a_stride: usize,
    m: usize,
    b: &PackedBf16,
    n: usize,
    pairs: usize,
    out: *mut f32,
    out_stride: usize,
    accumulate: bool,
) {
    gemm_raw_from(
        path, a, a_stride, m, b, 0, n, 0, pairs, out, out_stride, accumulate,
    )
}

/// [`gemm_raw`] on the columns of `b` from panel `first_panel` on (`n` of them), over the
/// pairs `first_pair..pairs`.
///
/// # Safety
/// As [`gemm_raw`], with `first_panel · 16 + n ≤ b.n`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw_from(
    path: Bf16Path,
    a: *const u32,
    a_stride: usize,
    m: usize,
    b: &PackedBf16,
    first_panel: usize,
    n: usize,
    first_pair: usize,
    pairs: usize,
    out: *mut f32,
    out_stride: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if path == Bf16Path::Amx {
        let (m16, p16) = (
            m / TILE_ROWS * TILE_ROWS,
            (pairs - first_pair) / TILE_ROWS * TILE_ROWS,
        );
        if p16 == 0 {
            return gemm_raw_from(
                Bf16Path::fastest_exact(),
                a,
                a_stride,
                m,
                b,
                first_panel,
                n,
                first_pair,
                pairs,
                out,
                out_stride,
                accumulate,
            );
        }
        // Whole blocks of 16 rows and 16 pairs on tiles, the pairs after them on AVX-512
        // (`vdpbf16ps` or its FMA form, the same bits); the rows after the last whole
        // block go through one more block of tiles, padded with zero rows, so that every
        // row gets the same arithmetic wherever it falls (a window's rows give the same
        // bits alone and stacked with others).
        if m16 > 0 {
            tiles::gemm(
                a,
                a_stride,
                m16,
                b,
                first_panel,
                n,
                first_pair,
                p16,
                out,
                out_stride,
                accumulate,
            );
            if first_pair + p16 < pairs {
                gemm_raw_from(
                    Bf16Path::fastest_exact(),
                    a,
                    a_stride,
                    m16,
                    b,
                    first_panel,
                    n,
                    first_pair + p16,
                    pairs,
                    out,
                    out_stride,
                    true,
                );
            }
        }
        let left = m - m16;
        if left > 0 {
            let mut pa = vec![0u32; TILE_ROWS * pairs];
            let mut po = vec![0f32; TILE_ROWS * n];
            for r in 0..left {
                // SAFETY: rows m16.. of `a` and `out` lie inside them (`gemm_raw`'s
                // contract); each copy stays within one row.
                let src = std::slice::from_raw_parts(a.add((m16 + r) * a_stride), pairs);
                pa[r * pairs..(r + 1) * pairs].copy_from_slice(src);
                if accumulate {
                    let o = std::slice::from_raw_parts(out.add((m16 + r) * out_stride), n);
                    po[r * n..(r + 1) * n].copy_from_slice(o);
                }
            }
            gemm_raw_from(
                Bf16Path::Amx,
                pa.as_ptr(),
                pairs,
                TILE_ROWS,
                b,
                first_panel,
                n,
                first_pair,
                pairs,
                po.as_mut_ptr(),
                n,
                accumulate,
            );
            for r in 0..left {
                let o = std::slice::from_raw_parts_mut(out.add((m16 + r) * out_stride), n);
                o.copy_from_slice(&po[r * n..(r + 1) * n]);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path == Bf16Path::Avx512Fma {
        return fma::gemm(
            a,
            a_stride,
            m,
            b,
            first_panel,
            n,
            first_pair,
            pairs,
            out,
            out_stride,
            accumulate,
        );
    }
    let panels = n.div_ceil(PANEL);
    let panel_len = b.pairs() * PANEL;
    let mut q0 = first_pair;
    while q0 < pairs.max(first_pair + 1) {
        let kc = KC.min(pairs - q0);
        let acc = accumulate || q0 > first_pair;
        let mut p0 = 0;
        while p0 < panels {
            let np = NR.min(panels - p0);
            let cols = (n - p0 * PANEL).min(np * PANEL);
            let bp = b
                .data
                .as_ptr()
                .add((first_panel + p0) * panel_len + q0 * PANEL);
            let mut i0 = 0;
            while i0 < m {
                let rows = MR.min(m - i0);
                let t = Tile {
                    a: a.add(i0 * a_stride + q0),
                    a_stride,
                    rows,
                    b: bp,
                    panel_len,
                    panels: np,
                    pairs: kc,
                    out: out.add(i0 * out_stride + p0 * PANEL),
                    out_stride,
                    cols,
                    accumulate: acc,
                };
                match path {
                    #[cfg(target_arch = "x86_64")]
                    Bf16Path::Avx512Bf16 => avx512::tile(&t),
                    _ => tile_portable(&t),
                }
                i0 += MR;
            }
            p0 += NR;
        }
        if pairs == first_pair {
            break;
        }
        q0 += kc;
    }
}

/// One tile: up to [`MR`] rows × up to [`NR`] panels over one block of pairs.
struct Tile {
    a: *const u32,
    a_stride: usize,
    rows: usize,
    b: *const u32,
    panel_len: usize,
    panels: usize,
    pairs: usize,
    out: *mut f32,
    out_stride: usize,
    cols: usize,
    accumulate: bool,
}

#[inline(always)]
fn tile_portable_body<const FMA: bool>(t: &Tile) {
    for i in 0..t.rows {
        for p in 0..t.panels {
            let c0 = p * PANEL;
            let width = PANEL.min(t.cols - c0);
            let mut acc = [0.0f32; PANEL];
            // SAFETY (all accesses): `gemm_raw`'s contract bounds the tile's rows, pairs
            // and columns; panels hold whole PANEL lanes for every pair.
            let o = unsafe { t.out.add(i * t.out_stride + c0) };
            if t.accumulate {
                for (l, v) in acc.iter_mut().enumerate().take(width) {
                    *v = unsafe { *o.add(l) };
                }
            }
            let bp = unsafe { t.b.add(p * t.panel_len) };
            for q in 0..t.pairs {
                let av = unsafe { *t.a.add(i * t.a_stride + q) };
                let (alo, ahi) = (from_bf16(av as u16), from_bf16((av >> 16) as u16));
                let bq = unsafe { std::slice::from_raw_parts(bp.add(q * PANEL), PANEL) };
                for (v, &bv) in acc.iter_mut().zip(bq) {
                    // Products of bf16 values are exact in f32: a multiply-add rounds once.
                    *v += ahi * from_bf16((bv >> 16) as u16);
                    *v += alo * from_bf16(bv as u16);
                }
            }
            for (l, v) in acc.iter().enumerate().take(width) {
                unsafe { *o.add(l) = *v };
            }
        }
    }
}

multiversion! {
    fn tile_portable_mv(t: &Tile) => tile_portable_body
}

fn tile_portable(t: &Tile) {
    tile_portable_mv(t)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, MR, NR, PANEL};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX-512 F and BF16; `t` is bounded as `gemm_raw` requires.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(t: &Tile) {
        match (t.rows > 3, t.panels) {
            (true, NR) => tile_n::<MR, NR>(t),
            (true, 3) => tile_n::<MR, 3>(t),
            (true, 2) => tile_n::<MR, 2>(t),
            (true, _) => tile_n::<MR, 1>(t),
            (false, NR) => tile_n::<3, NR>(t),
            (false, 3) => tile_n::<3, 3>(t),
            (false, 2) => tile_n::<3, 2>(t),
            (false, _) => tile_n::<3, 1>(t),
        }
    }

    /// R rows (rows past `t.rows` repeat the last and are not stored: a tile of 1 to 3
    /// rows runs as 3, one of 4 or 5 as [`MR`]) × P panels.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile_n<const R: usize, const P: usize>(t: &Tile) {
        let rows = t.rows.min(R);
        let mut ap = [t.a; R];
        for (i, p) in ap.iter_mut().enumerate() {
            *p = t.a.add(i.min(rows - 1) * t.a_stride);
        }
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        if t.accumulate {
            for (i, row) in acc.iter_mut().enumerate().take(rows) {
                for (p, v) in row.iter_mut().enumerate() {
                    *v = load(t, i, p);
                }
            }
        }
        for q in 0..t.pairs {
            let mut bv = [_mm512_setzero_si512(); P];
            for (p, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(t.b.add(p * t.panel_len + q * PANEL).cast());
            }
            for i in 0..R {
                let av = _mm512_set1_epi32(*ap[i].add(q) as i32);
                for p in 0..P {
                    acc[i][p] = _mm512_dpbf16_ps(
                        acc[i][p],
                        std::mem::transmute::<__m512i, __m512bh>(av),
                        std::mem::transmute::<__m512i, __m512bh>(bv[p]),
                    );
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(rows) {
            for (p, v) in row.iter().enumerate() {
                store(t, i, p, *v);
            }
        }
    }

    /// Lanes of panel `p` that hold output columns.
    #[inline(always)]
    fn mask(t: &Tile, p: usize) -> __mmask16 {
        let width = PANEL.min(t.cols.saturating_sub(p * PANEL));
        if width == PANEL {
            0xffff
        } else {
            ((1u32 << width) - 1) as __mmask16
        }
    }

    #[inline(always)]
    unsafe fn load(t: &Tile, i: usize, p: usize) -> __m512 {
        let o = t.out.add(i * t.out_stride + p * PANEL);
        _mm512_maskz_loadu_ps(mask(t, p), o)
    }

    #[inline(always)]
    unsafe fn store(t: &Tile, i: usize, p: usize, v: __m512) {
        let o = t.out.add(i * t.out_stride + p * PANEL);
        _mm512_mask_storeu_ps(o, mask(t, p), v)
    }
}

/// The bf16 product on AVX-512 F alone: each pair's two products as two f32 FMAs, `hi`
/// first, in flush-to-zero and denormals-are-zero mode. A product of two bf16 values is
/// exact in f32, so an FMA adds it with one rounding, as `vdpbf16ps` does; with subnormal
/// inputs read as zero and subnormal results flushed, as `vdpbf16ps` treats them, every sum
/// is the AVX-512 BF16 path's to the bit (`an_fma_pair_is_vdpbf16ps_to_the_bit` and the
/// subnormal cases in `kernels/tests/bf16.rs`). Where `vdpbf16ps` issues once every
/// other cycle and the two FMA ports take one 512-bit FMA each a cycle (Intel Xeons with
/// AMX: `kernel_bench`'s bf16 linears 1.4–1.5× as fast), this is the faster way to the same
/// bits.
#[cfg(target_arch = "x86_64")]
mod fma {
    use super::{PackedBf16, KC, PANEL};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Rows of one tile.
    const R: usize = 12;
    /// Panels of one tile (`P × PANEL` columns).
    const P: usize = 2;
    /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
    const FTZ_DAZ: u32 = 1 << 15 | 1 << 6;

    /// Sets FTZ and DAZ on this thread for its lifetime, then restores MXCSR (also when
    /// unwinding).
    struct FlushSubnormals(u32);

    impl FlushSubnormals {
        fn set() -> Self {
            let mut old = 0u32;
            // SAFETY: stmxcsr/ldmxcsr read and write the 4 bytes given; SSE is baseline
            // on x86_64. Only the two flush bits change.
            unsafe {
                asm!("stmxcsr [{}]", in(reg) &mut old as *mut u32, options(nostack, preserves_flags));
                let new = old | FTZ_DAZ;
                asm!("ldmxcsr [{}]", in(reg) &new as *const u32, options(nostack, preserves_flags, readonly));
            }
            FlushSubnormals(old)
        }
    }

    impl Drop for FlushSubnormals {
        fn drop(&mut self) {
            // SAFETY: as in `set`.
            unsafe {
                asm!("ldmxcsr [{}]", in(reg) &self.0 as *const u32, options(nostack, preserves_flags, readonly));
            }
        }
    }

    /// [`super::gemm_raw_from`] on this path.
    ///
    /// # Safety
    /// AVX-512 F present; the bounds of [`super::gemm_raw_from`].
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        a: *const u32,
        a_stride: usize,
        m: usize,
        b: &PackedBf16,
        first_panel: usize,
        n: usize,
        first_pair: usize,
        pairs: usize,
        out: *mut f32,
        out_stride: usize,
        accumulate: bool,
    ) {
        let _flush = FlushSubnormals::set();
        blocks(
            a,
            a_stride,
            m,
            b,
            first_panel,
            n,
            first_pair,
            pairs,
            out,
            out_stride,
            accumulate,
        );
    }

    /// The loops over blocks of pairs, rows and panels. Kept out of line so that no
    /// arithmetic of it can move across the MXCSR writes around it.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocks(
        a: *const u32,
        a_stride: usize,
        m: usize,
        b: &PackedBf16,
        first_panel: usize,
        n: usize,
        first_pair: usize,
        pairs: usize,
        out: *mut f32,
        out_stride: usize,
        accumulate: bool,
    ) {
        // One tile's rows of `a`, widened: each pair's high halves, then its low halves.
        let mut wide = [[0.0f32; 2 * KC]; R];
        let panels = n.div_ceil(PANEL);
        let panel_len = b.pairs() * PANEL;
        let mut q0 = first_pair;
        // At least one block, so that a product over no pairs still writes its zeros.
        while q0 < pairs.max(first_pair + 1) {
            let kc = KC.min(pairs - q0);
            let acc = accumulate || q0 > first_pair;
            let mut i0 = 0;
            while i0 < m {
                let rows = R.min(m - i0);
                for (i, w) in wide.iter_mut().enumerate() {
                    // Rows past the last repeat it (computed, not stored).
                    let src = a.add((i0 + i.min(rows - 1)) * a_stride + q0);
                    widen(src, kc, w);
                }
                let mut p0 = 0;
                while p0 < panels {
                    let t = Tile {
                        wide: &wide,
                        rows,
                        b: b.data
                            .as_ptr()
                            .add((first_panel + p0) * panel_len + q0 * PANEL),
                        panel_len,
                        pairs: kc,
                        out: out.add(i0 * out_stride + p0 * PANEL),
                        out_stride,
                        cols: (n - p0 * PANEL).min(P * PANEL),
                        accumulate: acc,
                    };
                    if panels - p0 >= P {
                        tile::<P>(&t);
                    } else {
                        tile::<1>(&t);
                    }
                    p0 += P;
                }
                i0 += R;
            }
            if pairs == first_pair {
                break;
            }
            q0 += kc;
        }
    }

    /// `kc` pairs from `src` into `w`: the high halves (odd k) as f32 at `w[q]`, the low
    /// halves (even k) at `w[KC + q]`.
    #[inline(always)]
    unsafe fn widen(src: *const u32, kc: usize, w: &mut [f32; 2 * KC]) {
        let hi_mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let mut q = 0;
        while q < kc {
            let lanes = (kc - q).min(16);
            let k = if lanes == 16 {
                0xffff
            } else {
                ((1u32 << lanes) - 1) as __mmask16
            };
            let v = _mm512_maskz_loadu_epi32(k, src.add(q).cast());
            let hi = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
            let lo = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
            _mm512_mask_storeu_ps(w.as_mut_ptr().add(q), k, hi);
            _mm512_mask_storeu_ps(w.as_mut_ptr().add(KC + q), k, lo);
            q += 16;
        }
    }

    struct Tile<'a> {
        wide: &'a [[f32; 2 * KC]; R],
        rows: usize,
        b: *const u32,
        panel_len: usize,
        pairs: usize,
        out: *mut f32,
        out_stride: usize,
        cols: usize,
        accumulate: bool,
    }

    /// [`R`] rows × `NP` panels over one block of pairs.
    #[inline(always)]
    unsafe fn tile<const NP: usize>(t: &Tile) {
        let hi_mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        if t.accumulate {
            for (i, row) in acc.iter_mut().enumerate().take(t.rows) {
                for (p, v) in row.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask(t, p), t.out.add(i * t.out_stride + p * PANEL));
                }
            }
        }
        for q in 0..t.pairs {
            let mut bh = [_mm512_setzero_ps(); NP];
            let mut bl = [_mm512_setzero_ps(); NP];
            for p in 0..NP {
                let v = _mm512_loadu_si512(t.b.add(p * t.panel_len + q * PANEL).cast());
                bh[p] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
                bl[p] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
            }
            for (row, w) in acc.iter_mut().zip(t.wide) {
                let ah = _mm512_set1_ps(w[q]);
                let al = _mm512_set1_ps(w[KC + q]);
                for (v, (h, l)) in row.iter_mut().zip(bh.iter().zip(&bl)) {
                    *v = _mm512_fmadd_ps(ah, *h, *v);
                    *v = _mm512_fmadd_ps(al, *l, *v);
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(t.rows) {
            for (p, v) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.out.add(i * t.out_stride + p * PANEL), mask(t, p), *v);
            }
        }
    }

    /// Lanes of panel `p` that hold output columns.
    #[inline(always)]
    fn mask(t: &Tile, p: usize) -> __mmask16 {
        let width = PANEL.min(t.cols.saturating_sub(p * PANEL));
        if width == PANEL {
            0xffff
        } else {
            ((1u32 << width) - 1) as __mmask16
        }
    }
}

/// The AMX tile path of the bf16 product.
#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::{PackedBf16, PANEL};
    use crate::cpu::amx::{self, release, TileConfig, TILE_ROWS};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Four 16 × 16 tiles of f32 sums: rows 0–15 and 16–31 of a block, each × 2 panels.
    #[repr(C, align(64))]
    struct Sums([f32; 4 * TILE_ROWS * PANEL]);

    /// `out (+)= a · bᵀ` for `m` rows (a multiple of 16) over the `pairs` pairs (a multiple
    /// of 16) from `first_pair`, columns of `b` from panel `first_panel` (`n` of them): blocks
    /// of 32 or 16 rows (outer) × 2 panels, each summed in steps of 16 pairs into up to four
    /// tiles (tmm0–3) from two tiles of `a` (tmm4–5) and two of `b` (tmm6–7). A panel's 16
    /// pairs are one `b` tile as packed: 16 rows of 64 bytes, stride 64.
    ///
    /// # Safety
    /// AMX-BF16 usable; the bounds of [`super::gemm_raw`].
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        a: *const u32,
        a_stride: usize,
        m: usize,
        b: &PackedBf16,
        first_panel: usize,
        n: usize,
        first_pair: usize,
        pairs: usize,
        out: *mut f32,
        out_stride: usize,
        accumulate: bool,
    ) {
        TileConfig::all_16_by_64().load();
        let panel_len = b.pairs() * PANEL;
        let mut sums = Sums([0.0; 4 * TILE_ROWS * PANEL]);
        let mut i = 0;
        while i < m {
            let two_rows = m - i >= 2 * TILE_ROWS;
            let mut j = 0;
            while j < n {
                let cols = (n - j).min(2 * PANEL);
                let block = Block {
                    a: a.add(i * a_stride + first_pair),
                    a_bytes: a_stride * 4,
                    b: b.data
                        .as_ptr()
                        .add((first_panel + j / PANEL) * panel_len + first_pair * PANEL),
                    panel_len,
                    steps: pairs / TILE_ROWS,
                    out: out.add(i * out_stride + j),
                    out_stride,
                    rows: if two_rows { 2 * TILE_ROWS } else { TILE_ROWS },
                    cols,
                };
                block.run(accumulate, &mut sums);
                j += cols;
            }
            i += if two_rows { 2 * TILE_ROWS } else { TILE_ROWS };
        }
        release();
    }

    /// One block of 16 or 32 rows × 1 or 2 panels.
    struct Block {
        a: *const u32,
        a_bytes: usize,
        b: *const u32,
        panel_len: usize,
        steps: usize,
        out: *mut f32,
        out_stride: usize,
        rows: usize,
        cols: usize,
    }

    impl Block {
        /// Tile `t` of the block: rows `16·(t / 2)..`, panel `t % 2`.
        fn present(&self, t: usize) -> bool {
            (t / 2) * TILE_ROWS < self.rows && (t % 2) * PANEL < self.cols
        }

        fn mask(&self, t: usize) -> __mmask16 {
            let width = (self.cols - (t % 2) * PANEL).min(PANEL);
            if width == PANEL {
                !0
            } else {
                (1u16 << width) - 1
            }
        }

        #[target_feature(enable = "avx512f")]
        unsafe fn run(&self, accumulate: bool, sums: &mut Sums) {
            let tile = TILE_ROWS * PANEL;
            let s = sums.0.as_mut_ptr();
            let two_rows = self.rows > TILE_ROWS;
            let two_panels = self.cols > PANEL;
            // The starting sums: the output's (columns past n as zeros), or zeros.
            if accumulate {
                for t in (0..4).filter(|&t| self.present(t)) {
                    for r in 0..TILE_ROWS {
                        let o = self
                            .out
                            .add(((t / 2) * TILE_ROWS + r) * self.out_stride + (t % 2) * PANEL);
                        let v = _mm512_maskz_loadu_ps(self.mask(t), o);
                        _mm512_store_ps(s.add(t * tile + r * PANEL), v);
                    }
                }
                let stride = PANEL * 4;
                asm!("tileloadd tmm0, [{p} + {s}]", p = in(reg) s, s = in(reg) stride, options(nostack, readonly));
                if two_panels {
                    asm!("tileloadd tmm1, [{p} + {s}]", p = in(reg) s.add(tile), s = in(reg) stride, options(nostack, readonly));
                }
                if two_rows {
                    asm!("tileloadd tmm2, [{p} + {s}]", p = in(reg) s.add(2 * tile), s = in(reg) stride, options(nostack, readonly));
                }
                if two_rows && two_panels {
                    asm!("tileloadd tmm3, [{p} + {s}]", p = in(reg) s.add(3 * tile), s = in(reg) stride, options(nostack, readonly));
                }
            } else {
                amx::zero_accumulators();
            }
            let b_row = PANEL * 4;
            for q in 0..self.steps {
                let a0 = self.a.add(q * TILE_ROWS);
                let b0 = self.b.add(q * TILE_ROWS * PANEL);
                asm!(
                    "tileloadd tmm4, [{a} + {sa}]",
                    "tileloadd tmm6, [{b} + {sb}]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    a = in(reg) a0, sa = in(reg) self.a_bytes, b = in(reg) b0, sb = in(reg) b_row,
                    options(nostack, readonly)
                );
                if two_panels {
                    asm!(
                        "tileloadd tmm7, [{b} + {sb}]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        b = in(reg) b0.add(self.panel_len), sb = in(reg) b_row,
                        options(nostack, readonly)
                    );
                }
                if two_rows {
                    asm!(
                        "tileloadd tmm5, [{a} + {sa}]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        a = in(reg) a0.add(TILE_ROWS * self.a_bytes / 4), sa = in(reg) self.a_bytes,
                        options(nostack, readonly)
                    );
                    if two_panels {
                        asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                    }
                }
            }
            amx::store_accumulators(s.cast());
            for t in (0..4).filter(|&t| self.present(t)) {
                for r in 0..TILE_ROWS {
                    let o = self
                        .out
                        .add(((t / 2) * TILE_ROWS + r) * self.out_stride + (t % 2) * PANEL);
                    let v = _mm512_load_ps(s.add(t * tile + r * PANEL));
                    _mm512_mask_storeu_ps(o, self.mask(t), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even 1 + 2^-6.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        // The largest finite f32 rounds up to infinity, as in hardware conversions.
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
    }

    #[test]
    fn packing_keeps_every_value_in_place() {
        let (n, k) = (19, 7);
        let src: Vec<f32> = (0..n * 9).map(|i| i as f32).collect();
        let b = PackedBf16::pack(&src, n, k, 9);
        let bt = PackedBf16::pack_transposed(&transpose(&src, n, 9), k, n, n);
        for j in 0..n {
            for kk in 0..k {
                let want = from_bf16(to_bf16(src[j * 9 + kk]));
                assert_eq!(b.get(j, kk), want, "({j}, {kk})");
                assert_eq!(bt.get(j, kk), want, "transposed ({j}, {kk})");
            }
        }
    }

    fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = src[r * cols + c];
            }
        }
        t
    }
}
