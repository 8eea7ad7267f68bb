//! int8 linear layers: weights quantized per output channel (once, at conversion or load),
//! activations quantized per row on the fly, products accumulated exactly in i32.
//!
//! `y[i, j] = (Σ_k xq[i, k]·wq[j, k]) · (sx[i]·sw[j]) + b[j]`, where `sw[j] = max|w[j]|/127`
//! and `sx[i] = max|x[i]|/127`, both rounded to nearest (ties to even) into [-127, 127].
//!
//! **Packed layout.** The weight is cut into panels of [`PANEL`] = 16 output columns. A
//! panel stores, for each group of 4 consecutive k, its 16 columns' 4 values (64 bytes):
//! the operand layout of AVX-512 VNNI's `vpdpbusd` (16 i32 lanes, each the sum of 4 byte
//! products), so the kernels broadcast 4 activation bytes and multiply a whole panel row
//! with no shuffle and no horizontal sum. k is padded with zeros to a multiple of 4, n to a
//! multiple of 16 (padded columns have scale 0 and are never written out).
//!
//! **Instruction sets** ([`Int8Path`]): AVX-512 VNNI (`vpdpbusd` takes unsigned × signed
//! bytes, so activations are offset by 128 and `128·Σ_k wq[j, k]` is subtracted), AVX2
//! (`vpmaddubsw` on |w| and sign-moved x: pair sums stay below 2·127·127, no saturation),
//! and portable scalar code; on CPUs with AMX (Intel Sapphire Rapids and later), products
//! of at least [`AMX_MIN_ROWS`] rows with k a multiple of 64 run on the tile unit instead
//! (`tdpbssd`: a 16 × 64 byte tile of activations times a panel's 16 × 64 bytes, which is
//! exactly the packed layout, into 16 × 16 i32 sums). Integer sums are exact and the
//! dequantization is the same sequence of f32 operations on every path, so all paths give
//! the same bits.

use rayon::prelude::*;

use super::checks::require_len;
use super::parallel::SendPtr;
use super::simd::{dot, multiversion, prefetch, widen_f16};
use super::tuning::MIN_PARALLEL_FMAS;

/// Output columns per panel of the packed weight.
pub const PANEL: usize = 16;
/// Consecutive k values stored together for each column of a panel.
pub const K_GROUP: usize = 4;

/// k padded to the packed layout's group of 4.
pub fn padded_k(k: usize) -> usize {
    k.next_multiple_of(K_GROUP)
}

/// n padded to whole panels.
pub fn padded_n(n: usize) -> usize {
    n.next_multiple_of(PANEL)
}

/// Bytes of the packed weight of an `[n, k]` matrix.
pub fn packed_len(n: usize, k: usize) -> usize {
    padded_n(n) * padded_k(k)
}

/// Index of `w[j, kk]` in the packed layout.
#[inline(always)]
fn packed_index(kp: usize, j: usize, kk: usize) -> usize {
    (j / PANEL) * kp * PANEL
        + (kk / K_GROUP) * PANEL * K_GROUP
        + (j % PANEL) * K_GROUP
        + kk % K_GROUP
}

/// An `[n, k]` int8 weight in the packed layout, with its per-column scales and the
/// column sums of its values (for the unsigned-activation offset of VNNI).
#[derive(Clone, Copy, Debug)]
pub struct Int8Weight<'a> {
    pub n: usize,
    pub k: usize,
    /// [`packed_len`]`(n, k)` values.
    pub packed: &'a [i8],
    /// [`padded_n`]`(n)` scales (0 for padded columns).
    pub scales: &'a [f32],
    /// [`padded_n`]`(n)` sums `Σ_k wq[j, k]` ([`column_sums`]).
    pub sums: &'a [i32],
    /// The weight's exact rows, to compute again the outputs that may be a row's largest
    /// (see [`linear_w8_f32`]); `None`: every output is the int8 product's.
    pub rescore: Option<Rescore<'a>>,
}

/// Exact rows of an int8 weight and how far below a row's largest output its outputs are
/// computed again from them.
#[derive(Clone, Copy, Debug)]
pub struct Rescore<'a> {
    /// The `[n, k]` weight as stored (f16).
    pub rows: &'a [half::f16],
    /// Outputs whose int8 value, plus its error bound, comes within this much of the
    /// row's largest output minus its bound are computed exactly.
    pub band: f32,
}

/// A weight row that cannot be quantized.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFiniteWeight {
    /// The output row (column of the product) holding a NaN or infinity.
    pub row: usize,
}

impl std::fmt::Display for NonFiniteWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {} holds a NaN or infinite value", self.row)
    }
}

impl std::error::Error for NonFiniteWeight {}

/// Quantizes `[n, k]` weight rows, given one at a time by `row(j, buf)` (so an f16 weight
/// is widened a row at a time), into `packed` ([`packed_len`] bytes) and `scales`
/// ([`padded_n`] values).
pub fn quantize_weight(
    n: usize,
    k: usize,
    mut row: impl FnMut(usize, &mut [f32]),
    packed: &mut [i8],
    scales: &mut [f32],
) -> Result<(), NonFiniteWeight> {
    let kp = padded_k(k);
    assert_eq!(
        packed.len(),
        packed_len(n, k),
        "quantize_weight: packed length"
    );
    assert_eq!(scales.len(), padded_n(n), "quantize_weight: scales length");
    packed.fill(0);
    scales.fill(0.0);
    let mut buf = vec![0.0f32; k];
    for j in 0..n {
        row(j, &mut buf);
        let (amax, nan) = abs_max_and_nan(&buf);
        if !amax.is_finite() || nan {
            return Err(NonFiniteWeight { row: j });
        }
        if amax == 0.0 {
            continue;
        }
        let scale = amax / 127.0;
        scales[j] = scale;
        for (kk, &v) in buf.iter().enumerate() {
            packed[packed_index(kp, j, kk)] =
                (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    Ok(())
}

/// `Σ_k wq[j, k]` for every (padded) column of a packed weight.
pub fn column_sums(packed: &[i8], n: usize, k: usize) -> Vec<i32> {
    let kp = padded_k(k);
    assert_eq!(packed.len(), packed_len(n, k), "column_sums: packed length");
    let mut sums = vec![0i32; padded_n(n)];
    for (p, panel) in packed.chunks_exact(kp * PANEL).enumerate() {
        for group in panel.chunks_exact(PANEL * K_GROUP) {
            for (c, vals) in group.chunks_exact(K_GROUP).enumerate() {
                sums[p * PANEL + c] += vals.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
    }
    sums
}

/// The dequantized value of `w[j, kk]` (tests and verification).
pub fn dequantized(w: &Int8Weight, j: usize, kk: usize) -> f32 {
    w.packed[packed_index(padded_k(w.k), j, kk)] as f32 * w.scales[j]
}

/// The implementations of the int8 product, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Path {
    /// AMX tiles (`tdpbssd`) for products of [`AMX_MIN_ROWS`] rows or more with k a
    /// multiple of 64; AVX-512 VNNI for the rest and for weight-only products.
    Amx,
    /// AVX-512 F/BW with VNNI (`vpdpbusd` on 512-bit vectors).
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit vectors: AVX-VNNI's VEX form (Intel's client cores without
    /// AVX-512), else the EVEX form of AVX-512 VNNI with VL, which computes the same sums.
    /// Weight-only products run as on [`Int8Path::Avx2`].
    AvxVnni,
    /// AVX2 (`vpmaddubsw` + `vpmaddwd`) and FMA.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Int8Path {
    /// Every path, widest first.
    pub const ALL: [Int8Path; 5] = [
        Int8Path::Amx,
        Int8Path::Avx512Vnni,
        Int8Path::AvxVnni,
        Int8Path::Avx2,
        Int8Path::Portable,
    ];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Path::Amx => Int8Path::Avx512Vnni.available() && crate::cpu::amx::int8_usable(),
            #[cfg(target_arch = "x86_64")]
            Int8Path::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Int8Path::AvxVnni => {
                Int8Path::Avx2.available()
                    && (std::is_x86_feature_detected!("avxvnni")
                        || (std::is_x86_feature_detected!("avx512vnni")
                            && std::is_x86_feature_detected!("avx512vl")))
            }
            #[cfg(target_arch = "x86_64")]
            // FMA too: the weight-only product uses it (every AVX2 CPU so far has it).
            Int8Path::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            Int8Path::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The widest path this CPU runs, or the widest at or below the one named by
    /// `AMANUENSIS_INT8_PATH` (e.g. `avx2`: what a CPU without VNNI would run; an unknown
    /// name is ignored).
    pub fn best() -> Int8Path {
        static BEST: std::sync::OnceLock<Int8Path> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var("AMANUENSIS_INT8_PATH").ok();
            Int8Path::widest_at_or_below(cap.as_deref())
        })
    }

    /// The widest available path at or below the one named `cap` (any, for `None` or a
    /// name of no path).
    fn widest_at_or_below(cap: Option<&str>) -> Int8Path {
        let from = cap
            .and_then(|c| Int8Path::ALL.iter().position(|p| p.name() == c))
            .unwrap_or(0);
        Int8Path::ALL[from..]
            .iter()
            .copied()
            .find(|p| p.available())
            .unwrap_or(Int8Path::Portable)
    }

    /// Short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Int8Path::Amx => "amx",
            Int8Path::Avx512Vnni => "avx512-vnni",
            Int8Path::AvxVnni => "avx-vnni",
            Int8Path::Avx2 => "avx2",
            Int8Path::Portable => "portable",
        }
    }
}

/// A layer norm applied to each input row before the product ([`linear_i8_group_on`]):
/// `(x − mean) / sqrt(var + eps) · gamma + beta`, the bits of [`super::layer_norm`].
#[derive(Clone, Copy, Debug)]
pub struct RowNorm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

impl RowNorm<'_> {
    /// Normalises the `[rows, k]` rows of `x` into `out`.
    fn apply(&self, x: &[f32], k: usize, out: &mut [f32]) {
        super::norm::layer_norm_serial(x, k, self.gamma, self.beta, self.eps, out)
    }
}

/// Quantizes `m` rows of `x` (`[m, k]`), after `norm` when given, into `xq` (`[m, kp]`,
/// zero-padded) and their scales into `sx`. A row of zeros gets scale 0; a row holding a
/// NaN or an infinity gets scale NaN, so its outputs are NaN as in f32.
#[allow(clippy::too_many_arguments)]
fn quantize_activations(
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    norm: Option<&RowNorm>,
    xq: &mut [i8],
    sx: &mut [f32],
) {
    // Many rows (the encoder's 1,500) are quantized on every thread: serially it took
    // about as long as the tile product itself. Each row is quantized alone, so the split
    // changes no bit.
    const ROWS_PER_TASK: usize = 64;
    if m * k >= 4 * MIN_QUANTIZE_PARALLEL && rayon::current_num_threads() > 1 {
        xq[..m * kp]
            .par_chunks_mut(ROWS_PER_TASK * kp)
            .zip(sx[..m].par_chunks_mut(ROWS_PER_TASK))
            .enumerate()
            .for_each(|(c, (q, s))| {
                let i0 = c * ROWS_PER_TASK;
                let rows = s.len();
                quantize_rows(&x[i0 * k..(i0 + rows) * k], rows, k, kp, norm, q, s);
            });
    } else {
        quantize_rows(x, m, k, kp, norm, xq, sx);
    }
}

/// Activation elements below which quantizing rows on several threads does not pay.
const MIN_QUANTIZE_PARALLEL: usize = 16 * 1024;

/// [`quantize_activations`] on one thread. A normalised row is written to a row of
/// scratch and quantized from there, while in L1: the normalised rows are never stored.
#[allow(clippy::too_many_arguments)]
fn quantize_rows(
    x: &[f32],
    m: usize,
    k: usize,
    kp: usize,
    norm: Option<&RowNorm>,
    xq: &mut [i8],
    sx: &mut [f32],
) {
    let mut scratch = Vec::new();
    if norm.is_some() {
        scratch.resize(k, 0.0f32);
    }
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let row = match norm {
            Some(n) => {
                n.apply(row, k, &mut scratch);
                &scratch[..]
            }
            None => row,
        };
        quantize_row_into(row, k, &mut xq[i * kp..(i + 1) * kp], &mut sx[i]);
    }
}

/// The largest `|v|` of `row` that is not a NaN (0 for an empty row), and whether a NaN
/// is present: one pass in lanes with plain comparisons, which vectorises. (A fold with
/// `f32::max` and a separate short-circuiting `any` ran as scalar loops and took a third
/// of an encoder fc2's time on the AMX tiles.) The maximum is exact in any order, so this
/// is the fold's value to the bit.
#[inline(always)]
fn abs_max_and_nan_body<const FMA: bool>(row: &[f32]) -> (f32, bool) {
    const L: usize = 16;
    let (mut max, mut nan) = ([0.0f32; L], [false; L]);
    let chunks = row.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..L {
            let a = c[l].abs();
            max[l] = if a > max[l] { a } else { max[l] };
            nan[l] |= c[l].is_nan();
        }
    }
    let (mut amax, mut any) = (0.0f32, false);
    for &v in rest {
        let a = v.abs();
        amax = if a > amax { a } else { amax };
        any |= v.is_nan();
    }
    for l in 0..L {
        amax = if max[l] > amax { max[l] } else { amax };
        any |= nan[l];
    }
    (amax, any)
}

multiversion! {
    fn abs_max_and_nan(row: &[f32]) -> (f32, bool) => abs_max_and_nan_body
}

/// One row's quantization (see [`quantize_activations`]).
fn quantize_row_into(row: &[f32], k: usize, q: &mut [i8], sx: &mut f32) {
    q[k..].fill(0);
    let (amax, nan) = abs_max_and_nan(row);
    let finite = amax.is_finite() && !nan;
    if amax == 0.0 || !finite {
        q[..k].fill(0);
        *sx = if finite { 0.0 } else { f32::NAN };
        return;
    }
    *sx = amax / 127.0;
    let inv = 127.0 / amax;
    #[cfg(target_arch = "x86_64")]
    if Int8Path::Avx512Vnni.available() {
        // SAFETY: AVX-512 F/BW were just detected; `row` and `q[..k]` have k elements.
        unsafe { x86::quantize_row(row, inv, &mut q[..k]) };
        return;
    }
    for (d, &v) in q.iter_mut().zip(row) {
        *d = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
}

thread_local! {
    /// This thread's buffer for quantized activations, kept between calls.
    static XQ: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Output columns one task of the parallel split covers at least (whole panels).
const BLOCK_COLS: usize = 4 * PANEL;

/// Rows of an AMX tile (and of the activations one `tileloadd` reads).
const AMX_TILE_ROWS: usize = 16;
/// Bytes of k one AMX tile step covers (a tile row is 64 bytes).
const AMX_K_STEP: usize = 64;
/// Fewest rows the AMX path runs on tiles: below, a 32-row block would be mostly padding
/// and the VNNI kernel is as fast.
pub const AMX_MIN_ROWS: usize = 16;

/// Whether the AMX path runs a product of `m` rows and padded depth `kp` on tiles.
pub fn amx_takes(m: usize, kp: usize) -> bool {
    m >= AMX_MIN_ROWS && kp.is_multiple_of(AMX_K_STEP)
}

/// int8 fully connected layer: `out[m, n] = x[m, k] · w[n, k]ᵀ + bias[n]` with `w`
/// quantized, on the widest path this CPU runs.
pub fn linear_i8(
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    linear_i8_on(Int8Path::best(), x, m, k, w, bias, out)
}

/// [`linear_i8`] on a given path (tests force each one). Panics if the CPU cannot run it.
pub fn linear_i8_on(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    // One weight is a group of one: the same quantization, split and tiles.
    let mut parts = [GroupPart { w, bias, out }];
    linear_i8_group_on(path, x, m, k, None, &mut parts, false);
}

/// One weight of a product over several weights of the same input
/// ([`linear_i8_group_on`]).
pub struct GroupPart<'a, 'o> {
    pub w: &'a Int8Weight<'a>,
    pub bias: Option<&'a [f32]>,
    /// `[m, w.n]`.
    pub out: &'o mut [f32],
}

/// Several int8 layers of one input `x` (`[m, k]`), each row first normalised by `norm`
/// when given, as one product: the input is quantized once (with `f32_activations`, padded
/// once; a normalised row is quantized as it is made), and the column blocks of every weight are
/// split over the threads together, as those of one weight of all their columns would be.
/// Each part's outputs have the bits of [`linear_i8_on`] (with `f32_activations`,
/// [`linear_w8_f32_on`]) on its weight alone, applied to the normalised rows: every output
/// is computed by the same tile code from the same quantized row.
///
/// On AMX, weight-only products of weights that are rescored (the logits projection) run
/// with split activations instead ([`linear_w8_split_on`]; `AMANUENSIS_SPLIT=0` turns
/// this off).
#[allow(clippy::too_many_arguments)]
pub fn linear_i8_group_on(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    norm: Option<&RowNorm>,
    parts: &mut [GroupPart],
    f32_activations: bool,
) {
    let mode = match f32_activations {
        false => Activations::Int8,
        true if takes_split(path, padded_k(k), parts) => Activations::Split,
        true => Activations::F32,
    };
    group_on(path, x, m, k, norm, parts, mode)
}

/// [`linear_i8_group_on`] with the activations' treatment chosen.
#[allow(clippy::too_many_arguments)]
fn group_on(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    norm: Option<&RowNorm>,
    parts: &mut [GroupPart],
    mode: Activations,
) {
    // f32 rows: the weight-only products read them, and the rescoring of either.
    let f32_rows = mode != Activations::Int8;
    let split = mode == Activations::Split;
    let f32_activations = mode == Activations::F32;
    for p in parts.iter() {
        check(path, x, m, k, p.w, p.bias, p.out);
    }
    if let Some(n) = norm {
        require_len("int8 linear norm gamma", n.gamma.len(), 1, k);
        require_len("int8 linear norm beta", n.beta.len(), 1, k);
    }
    if m == 0 || parts.is_empty() {
        return;
    }
    let kp = padded_k(k);
    let on_tiles = mode == Activations::Int8 && path == Int8Path::Amx && amx_takes(m, kp);
    let (mut xq, mut sx, mut x32) = (Vec::new(), Vec::new(), Vec::new());
    // The normalised rows, where the rescoring needs them unpadded.
    let mut normed = Vec::new();
    if f32_rows {
        x32 = X32.take();
        x32.clear();
        x32.resize(m * kp, 0.0);
        for i in 0..m {
            let (src, dst) = (&x[i * k..(i + 1) * k], &mut x32[i * kp..i * kp + k]);
            match norm {
                Some(n) => n.apply(src, k, dst),
                None => dst.copy_from_slice(src),
            }
        }
        if norm.is_some() && parts.iter().any(|p| p.w.rescore.is_some()) {
            normed = (0..m)
                .flat_map(|i| x32[i * kp..i * kp + k].iter().copied())
                .collect();
        }
    }
    if split {
        // Blocks of 16 tile rows, five real rows' pieces each; the rest are zeros.
        let blocks = m.div_ceil(SPLIT_ROWS_PER_BLOCK);
        xq = XQ.take();
        xq.clear();
        xq.resize(blocks * AMX_TILE_ROWS * kp, 0);
        sx = vec![0.0f32; m];
        for i in 0..m {
            let base = split_row_offset(i, kp);
            let (q0, rest) = xq[base..base + SPLIT_PIECES * kp].split_at_mut(kp);
            let (q1, q2) = rest.split_at_mut(kp);
            sx[i] = split_row_into(
                &x32[i * kp..i * kp + k],
                &mut q0[..k],
                &mut q1[..k],
                &mut q2[..k],
            );
        }
    } else if !f32_rows {
        // The tile kernel reads whole blocks of 32 rows: the rows past m are zeros.
        let rows = if on_tiles {
            m.next_multiple_of(2 * AMX_TILE_ROWS)
        } else {
            m
        };
        xq = XQ.take();
        xq.resize(rows * kp, 0);
        xq[m * kp..].fill(0);
        sx = vec![0.0f32; m];
        quantize_activations(x, m, k, kp, norm, &mut xq, &mut sx);
    }
    let run_path = match path {
        Int8Path::Amx if mode == Activations::Int8 && !on_tiles => Int8Path::Avx512Vnni,
        p => p,
    };
    let args: Vec<Args> = parts
        .iter()
        .map(|p| Args {
            xq: &xq,
            sx: &sx,
            x32: &x32,
            m,
            kp,
            w: p.w,
            bias: p.bias,
            f32_activations,
            split,
        })
        .collect();
    let outs: Vec<SendPtr> = parts
        .iter_mut()
        .map(|p| SendPtr::new(p.out.as_mut_ptr()))
        .collect();
    // Each weight's column blocks (whole panels, at most 4 chunks a thread), all in one
    // parallel loop.
    let threads = rayon::current_num_threads();
    let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
    for (pi, a) in args.iter().enumerate() {
        let n = a.w.n;
        let blocks = n.div_ceil(BLOCK_COLS);
        let per = blocks.div_ceil(blocks.min(4 * threads).max(1)) * BLOCK_COLS;
        tasks.extend((0..n.div_ceil(per)).map(|c| (pi, c * per, ((c + 1) * per).min(n))));
    }
    // Weight-only products (the decoder's steps) are bound by reading the weight: a
    // 512 × 512 one (262 K multiply-adds) already gains from both cores' bandwidth (on the
    // AMX Xeon, greedy decoding 3.37–3.62 → 2.84–3.01 ms a token; `docs/performance.md`).
    // Each output is computed by one task in k order, so the split changes no bit.
    let min_parallel = if f32_rows {
        MIN_PARALLEL_FMAS / 4
    } else {
        4 * MIN_PARALLEL_FMAS
    };
    let work: usize = args.iter().map(|a| m * a.w.n * k).sum();
    let task = |&(pi, j0, j1): &(usize, usize, usize)| {
        run_columns(run_path, &args[pi], j0, j1, outs[pi]);
    };
    if threads <= 1 || work < min_parallel || tasks.len() < 2 {
        tasks.iter().for_each(task);
    } else {
        tasks.par_iter().for_each(task);
    }
    drop(args);
    if f32_rows {
        X32.set(x32);
        let rows = if norm.is_some() { &normed[..] } else { x };
        // The split's own bound, per row, beside the weight's rounding.
        let extra: Vec<f32> = match split {
            true => (0..m)
                .map(|i| {
                    let l1: f32 = rows[i * k..(i + 1) * k].iter().map(|v| v.abs()).sum();
                    split_bound(k, sx[i], l1)
                })
                .collect(),
            false => Vec::new(),
        };
        for p in parts.iter_mut() {
            if let Some(r) = p.w.rescore {
                rescore_top(rows, m, k, p.w, &r, p.bias, p.out, &extra);
            }
        }
    }
    if !f32_activations {
        XQ.set(xq);
    }
}

thread_local! {
    /// This thread's buffer for zero-padded f32 activations, kept between calls.
    static X32: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Weight-only int8 layer: `out[m, n] = x[m, k] · (wq[j]·sw[j])ᵀ + bias` with x kept in
/// f32, on the widest path this CPU runs. For few rows (the decoder's GEMVs), where
/// reading the weight costs more than the arithmetic and quantizing activations would
/// cost accuracy (measured: three words in 292 on the public clips when the logits
/// projection quantized its input).
pub fn linear_w8_f32(
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    linear_w8_f32_on(Int8Path::best(), x, m, k, w, bias, out)
}

/// [`linear_w8_f32`] on a given path (tests force each one). Every path accumulates each
/// output in f32 with fused multiply-adds over k in increasing order, then computes
/// `acc·sw + b`: all paths give the same bits. Panics if the CPU cannot run the path.
pub fn linear_w8_f32_on(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    // One weight is a group of one: the same padding, split, tiles and rescoring.
    let mut parts = [GroupPart { w, bias, out }];
    linear_i8_group_on(path, x, m, k, None, &mut parts, true);
}

/// Pieces an f32 activation row is cut into for [`linear_w8_split_on`].
pub const SPLIT_PIECES: usize = 3;
/// The ratio between consecutive pieces' steps: each piece is the rounding residual of the
/// one before, times this, so it stays within [-127, 127].
const SPLIT_BASE: f32 = 254.0;
/// Real rows per 16-row tile block: their three pieces are tile rows 3r..3r+2.
const SPLIT_ROWS_PER_BLOCK: usize = AMX_TILE_ROWS / SPLIT_PIECES;

/// The weight-only product with each f32 activation row cut into three int8 pieces,
/// `x ≈ sx·(a0 + a1/254 + a2/254²)` (`sx = max|x|/127`), each multiplied by the int8 weight
/// exactly in i32 and recombined in f32: `((c2/254 + c1)/254 + c0)·(sx·sw) + b`. The
/// pieces hold x to within about 4e-5·sx (f32's own rounding of `x·127/max|x|` is most of
/// it), so the result is the f32-activation product's to a few parts in 10⁷ of the row's
/// scale, while the products run on AMX tiles (five rows' pieces fill one 16-row tile)
/// instead of widening every weight byte to f32. Paths: [`Int8Path::Amx`] (k a multiple
/// of 64) and [`Int8Path::Portable`], with the same bits (exact integer sums, the same f32
/// operations); the logits projection's rows take it on AMX ([`linear_i8_group_on`]).
/// Panics on another path or, on AMX, k not a multiple of 64.
pub fn linear_w8_split_on(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(
        path == Int8Path::Portable || split_runs_on(path, padded_k(k)),
        "split activations run on amx (k a multiple of 64), avx512-vnni or portable, not {} \
         with k = {k}",
        path.name()
    );
    let mut parts = [GroupPart { w, bias, out }];
    group_on(path, x, m, k, None, &mut parts, Activations::Split);
}

/// How a product treats its activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activations {
    /// Quantized per row to int8.
    Int8,
    /// Kept in f32; the int8 weight widened in registers.
    F32,
    /// Cut into [`SPLIT_PIECES`] int8 pieces ([`linear_w8_split_on`]).
    Split,
}

/// Whether the weight-only product of `parts` runs as split activations on `path`: on AMX
/// tiles, for weights whose largest outputs are computed again (the logits projection),
/// with k a multiple of 64. There the widening kernel is bound by its arithmetic at a beam
/// step's rows (`kernel_bench`, 5 rows: 1.09 ms widening, 0.59 ms split), and the
/// rescoring makes the outputs that decide a token the stored weight's either way. One
/// row (a greedy step) takes it too, though it reads the weight hardly faster (0.56
/// against 0.57 ms), so that a row's bits never depend on how many rows share the call
/// (requests batched by the server decode as each alone). Smaller weights (the decoder's
/// 512-wide linears) are faster widened.
fn takes_split(path: Int8Path, kp: usize, parts: &[GroupPart]) -> bool {
    split_runs_on(path, kp) && parts.iter().all(|p| p.w.rescore.is_some()) && split_allowed()
}

/// Whether `path` has a split-activation kernel for depth `kp`: AMX tiles for k a
/// multiple of 64, AVX-512 VNNI for any. Without AMX, the VNNI kernel takes a beam step's
/// logits in about the widening kernel's time and one row or a lockstep batch's rows
/// faster (`kernel_bench 2 w8` on Zen 4, hot caches: 1 row 0.64 → 0.44 ms, 20 rows 5.25 →
/// 4.06 ms), with the bits of the tiles.
fn split_runs_on(path: Int8Path, kp: usize) -> bool {
    match path {
        Int8Path::Amx => kp.is_multiple_of(AMX_K_STEP),
        Int8Path::Avx512Vnni => true,
        _ => false,
    }
}

/// Whether rescored weight-only products run as split activations on this
/// CPU ([`linear_i8_group_on`]): it has AMX or AVX-512 VNNI, and `AMANUENSIS_SPLIT=0` is
/// not set.
pub fn split_available() -> bool {
    matches!(Int8Path::best(), Int8Path::Amx | Int8Path::Avx512Vnni) && split_allowed()
}

fn split_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("AMANUENSIS_SPLIT").map_or(true, |v| v != "0"))
}

/// Cuts one row into its three pieces (`q0`, `q1`, `q2`, each k long) and returns its
/// scale; as [`quantize_row_into`], a row of zeros gets scale 0 and one holding a NaN or an
/// infinity scale NaN.
fn split_row_into(row: &[f32], q0: &mut [i8], q1: &mut [i8], q2: &mut [i8]) -> f32 {
    let (amax, nan) = abs_max_and_nan(row);
    let finite = amax.is_finite() && !nan;
    if amax == 0.0 || !finite {
        q0.fill(0);
        q1.fill(0);
        q2.fill(0);
        return if finite { 0.0 } else { f32::NAN };
    }
    let inv = 127.0 / amax;
    // Rounding to nearest even by the 1.5·2²³ shift, exact for |v| < 2²²: `round_ties_even`
    // is a libm call where SSE4.1 is not enabled at build time, and this loop then took
    // longer than the tile products (the same integer, but −0 for +0, which an i8 drops).
    const SHIFT: f32 = 12_582_912.0;
    let piece = |v: f32| ((v + SHIFT) - SHIFT).clamp(-127.0, 127.0);
    for (c, &x) in row.iter().enumerate() {
        let v = x * inv;
        let a0 = piece(v);
        // v − a0 is exact (both within 0.5 of each other); so is t − a1.
        let t = (v - a0) * SPLIT_BASE;
        let a1 = piece(t);
        let a2 = piece((t - a1) * SPLIT_BASE);
        (q0[c], q1[c], q2[c]) = (a0 as i8, a1 as i8, a2 as i8);
    }
    amax / 127.0
}

/// Where row `i`'s first piece starts in split activations of depth `kp`: its block of 16
/// tile rows, then its three rows in that block.
#[inline(always)]
fn split_row_offset(i: usize, kp: usize) -> usize {
    ((i / SPLIT_ROWS_PER_BLOCK) * AMX_TILE_ROWS + SPLIT_PIECES * (i % SPLIT_ROWS_PER_BLOCK)) * kp
}

/// The recombination every split path performs, in this order.
#[inline(always)]
fn recombine(c0: i32, c1: i32, c2: i32, sx: f32, sw: f32, b: f32) -> f32 {
    const STEP: f32 = 1.0 / SPLIT_BASE;
    let t = c2 as f32 * STEP + c1 as f32;
    let u = t * STEP + c0 as f32;
    u * (sx * sw) + b
}

/// A bound, in units of a column's scale `sw`, on how far the split product moves an output
/// from the f32-activation product of the same int8 weight: each piece-represented value is
/// within 4e-5·sx of x (f32's rounding of `x·inv` and of `sx·inv` ≈ 1, and 0.5/254² for the
/// last piece) and meets at most 127·k of weight, and the recombination rounds a sum below
/// 128·(Σ|x|/sx + k) in f32 a few times. Written out generously: 1e-4·(127·k·sx + Σ|x|).
fn split_bound(k: usize, sx: f32, l1: f32) -> f32 {
    1e-4 * (127.0 * k as f32 * sx + l1)
}

/// Computes again, from the exact rows, every output of each row that may be within
/// `band` of the row's largest: where `y + e ≥ max(y − e) − band`, with `e` the bound on
/// the weight's rounding, `sw/2 · Σ|x|`, plus the f32 accumulation's share. For a logits
/// projection this makes the outputs that decide a token (and nearly all of the softmax's
/// mass) those of the stored weight, for a few hundred dot products instead of a whole f16
/// matrix read.
#[allow(clippy::too_many_arguments)]
fn rescore_top(
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    r: &Rescore,
    bias: Option<&[f32]>,
    out: &mut [f32],
    extra: &[f32],
) {
    let n = w.n;
    assert_eq!(r.rows.len(), n * k, "rescore: exact rows are not [n, k]");
    let u = f32::EPSILON / 2.0;
    let gamma = (k + 3) as f32 * u / (1.0 - (k + 3) as f32 * u);
    let slack = 0.5 + 127.0 * gamma;
    // Rows at a time, at most 64: a column's rows to compute again are one mask word.
    let mut i0 = 0;
    while i0 < m {
        let rows = (m - i0).min(64);
        // The scan is two passes over n outputs a row: each row on its own thread.
        let found: Vec<Vec<usize>> = (i0..i0 + rows)
            .into_par_iter()
            .map(|i| {
                let l1: f32 = x[i * k..(i + 1) * k].iter().map(|v| v.abs()).sum();
                // A split product's bound adds its own term (`split_bound`, per row).
                let more = extra.get(i).map_or(0.0, |e| e / slack);
                near_top(
                    &out[i * n..(i + 1) * n],
                    w.scales,
                    1.01 * l1 + more,
                    slack,
                    r.band,
                )
            })
            .collect();
        // (column, its rows to compute again as bits from i0), columns ascending.
        let columns = merge_columns(&found);
        // Each column's f16 row is read once for all the rows that need it (a beam step's
        // rows mostly want the same tokens); both cores share the columns, in chunks whose
        // sums come back flat, in column order and each column's rows ascending.
        let exact: Vec<Vec<f32>> = columns
            .par_chunks(64)
            .map(|chunk| {
                let mut sums = Vec::with_capacity(chunk.len());
                WIDE.with_borrow_mut(|wide| {
                    for (c, &(j, mask)) in chunk.iter().enumerate() {
                        if let Some(&(ahead, _)) = chunk.get(c + PREFETCH_AHEAD) {
                            prefetch(&r.rows[ahead * k..(ahead + 1) * k]);
                        }
                        let row = &r.rows[j * k..(j + 1) * k];
                        let b = bias.map_or(0.0, |b| b[j]);
                        if mask.count_ones() == 1 {
                            let i = i0 + mask.trailing_zeros() as usize;
                            sums.push(exact_dot_f16(&x[i * k..(i + 1) * k], row) + b);
                            continue;
                        }
                        wide.resize(k, 0.0);
                        widen_f16(row, wide);
                        let mut bits = mask;
                        while bits != 0 {
                            let i = i0 + bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            sums.push(exact_dot(&x[i * k..(i + 1) * k], wide) + b);
                        }
                    }
                });
                sums
            })
            .collect();
        let mut sums = exact.into_iter().flatten();
        for &(j, mask) in &columns {
            let mut bits = mask;
            while bits != 0 {
                let i = i0 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                out[i * n + j] = sums.next().expect("a sum for every rescored output");
            }
        }
        i0 += rows;
    }
}

/// The union of rows' ascending column lists as `(column, mask of the rows that list it)`,
/// columns ascending: a merge of the lists' heads (a few hundred columns each), where a mask
/// per vocabulary entry would be written and scanned whole.
fn merge_columns(found: &[Vec<usize>]) -> Vec<(usize, u64)> {
    debug_assert!(found.len() <= 64, "one mask bit per row");
    if let [only] = found {
        return only.iter().map(|&j| (j, 1)).collect();
    }
    let mut at = vec![0usize; found.len()];
    let mut out = Vec::with_capacity(found.iter().map(Vec::len).max().unwrap_or(0));
    loop {
        let next = found
            .iter()
            .zip(&at)
            .filter_map(|(cols, &a)| cols.get(a).copied())
            .min();
        let Some(j) = next else {
            return out;
        };
        let mut mask = 0u64;
        for (b, (cols, a)) in found.iter().zip(at.iter_mut()).enumerate() {
            if cols.get(*a) == Some(&j) {
                mask |= 1 << b;
                *a += 1;
            }
        }
        out.push((j, mask));
    }
}

/// Columns ahead whose stored rows are fetched into cache while one is computed again: the
/// rows lie scattered over the 53-MB embedding, so each would otherwise start with a miss.
const PREFETCH_AHEAD: usize = 4;

thread_local! {
    /// This thread's buffer for an f16 row widened once for several dot products.
    static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The columns of one row's outputs `y` that may lie within `band` of its largest, with
/// `(scaled_l1·scales[j])·slack` the bound on output j's error: every j with
/// `y_j + e_j ≥ max(y_i − e_i) − band`, and every NaN. Written over lanes of 16 so that
/// both passes vectorize.
fn near_top(y: &[f32], scales: &[f32], scaled_l1: f32, slack: f32, band: f32) -> Vec<usize> {
    const L: usize = 16;
    // The scales may run on to a whole panel.
    let scales = &scales[..y.len()];
    let err = |s: f32| scaled_l1 * s * slack;
    let mut most = [f32::NEG_INFINITY; L];
    let (yc, sc) = (y.chunks_exact(L), scales.chunks_exact(L));
    let (yr, sr) = (yc.remainder(), sc.remainder());
    for (yv, sv) in yc.zip(sc) {
        for l in 0..L {
            let v = yv[l] - err(sv[l]);
            // A NaN never compares greater: it is left out of the largest.
            most[l] = if v > most[l] { v } else { most[l] };
        }
    }
    let mut floor = most.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (&yv, &sv) in yr.iter().zip(sr) {
        let v = yv - err(sv);
        if v > floor {
            floor = v;
        }
    }
    let floor = floor - band;
    let mut cols = Vec::new();
    let hit = |yv: f32, sv: f32| yv + err(sv) >= floor || yv.is_nan();
    let (yc, sc) = (y.chunks_exact(L), scales.chunks_exact(L));
    let (yr, sr) = (yc.remainder(), sc.remainder());
    for (c, (yv, sv)) in yc.zip(sc).enumerate() {
        let mut bits = 0u32;
        for l in 0..L {
            bits |= (hit(yv[l], sv[l]) as u32) << l;
        }
        while bits != 0 {
            cols.push(c * L + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
    let base = y.len() - yr.len();
    cols.extend(
        (0..yr.len())
            .filter(|&l| hit(yr[l], sr[l]))
            .map(|l| base + l),
    );
    cols
}

/// The f32 dot product of `x` with an f16 row: the row widened in registers where the CPU
/// has AVX2, FMA and F16C, else into a buffer; the same bits either way as
/// [`exact_dot`] of the widened row.
fn exact_dot_f16(x: &[f32], row: &[half::f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2, FMA and F16C were just detected.
        return unsafe { super::x86::dot_f16(x, row) };
    }
    let mut wide = vec![0f32; row.len()];
    widen_f16(row, &mut wide);
    exact_dot(x, &wide)
}

#[inline(always)]
fn exact_dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    dot::<FMA>(a, b)
}

multiversion! {
    /// The f32 dot product of the rescored outputs (AVX2+FMA where the CPU has them).
    fn exact_dot(a: &[f32], b: &[f32]) -> f32 => exact_dot_body
}

/// The checks shared by both products.
fn check(
    path: Int8Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &[f32],
) {
    assert!(
        path.available(),
        "int8 path {} is not available on this CPU",
        path.name()
    );
    let n = w.n;
    assert_eq!(w.k, k, "int8 linear: weight has k = {}, input {k}", w.k);
    assert!(
        k <= 1 << 16,
        "int8 linear: k = {k} over 65536 could overflow i32 sums"
    );
    require_len("int8 linear input", x.len(), m, k);
    require_len(
        "int8 linear packed weight",
        w.packed.len(),
        1,
        packed_len(n, k),
    );
    require_len("int8 linear scales", w.scales.len(), 1, padded_n(n));
    require_len("int8 linear sums", w.sums.len(), 1, padded_n(n));
    if let Some(b) = bias {
        require_len("int8 linear bias", b.len(), 1, n);
    }
    require_len("int8 linear output", out.len(), m, n);
}

/// The operands of one product, shared by the tasks.
struct Args<'a> {
    /// Quantized activations `[m, kp]` (int8 products).
    xq: &'a [i8],
    sx: &'a [f32],
    /// f32 activations `[m, kp]`, zero-padded (weight-only products).
    x32: &'a [f32],
    m: usize,
    kp: usize,
    w: &'a Int8Weight<'a>,
    bias: Option<&'a [f32]>,
    /// Whether activations stay f32 (weight-only int8) or are quantized.
    f32_activations: bool,
    /// Whether `xq` holds split activations ([`linear_w8_split_on`]'s blocks).
    split: bool,
}

/// Columns `j0..j1` (j0 a multiple of [`PANEL`]) of every output row: blocks of up to
/// four panels, each block run over all rows while its weight stays in cache.
fn run_columns(path: Int8Path, a: &Args, j0: usize, j1: usize, out: SendPtr) {
    if a.split {
        #[cfg(target_arch = "x86_64")]
        if path == Int8Path::Amx {
            // SAFETY: AMX and AVX-512 were checked in `check`; `linear_w8_split_on` and
            // `takes_split` choose AMX only for k a multiple of 64, and `xq` holds whole
            // 16-row blocks; the tiles write out[.., j0..j1] only, which no other task
            // writes.
            unsafe { tiles::columns_split(a, j0, j1, out) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if path == Int8Path::Avx512Vnni {
            // SAFETY: AVX-512 F, BW and VNNI were checked in `check`; `xq` holds the
            // pieces of rows 0..m in their blocks; the kernel writes out[.., j0..j1] only,
            // which no other task writes.
            unsafe { x86::columns_split_vnni(a, j0, j1, out) };
            return;
        }
        split_portable(a, j0, j1, out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if path == Int8Path::Amx && !a.f32_activations {
        // SAFETY: AMX and AVX-512 were checked in `check`; `linear_i8_on` chose this path
        // only for k a multiple of 64 and gave `xq` whole 32-row blocks (`amx_takes`); the
        // tiles write out[.., j0..j1] only, which no other task writes.
        unsafe { tiles::columns(a, j0, j1, out) };
        return;
    }
    let mut j = j0;
    while j < j1 {
        let cols = BLOCK_COLS.min(j1 - j);
        let panels = cols.div_ceil(PANEL);
        let mut i = 0;
        // The AVX-512 weight-only kernel takes up to 8 rows a tile, the others 4.
        let most = match (path, a.f32_activations) {
            (Int8Path::Avx512Vnni | Int8Path::Amx, true) => 8,
            _ => 4,
        };
        while i < a.m {
            let rows = (a.m - i).min(most);
            match (path, a.f32_activations) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the path's features were checked in `check`; the tile reads rows
                // i..i+rows of the activations and panels j/16.. of the packed weight (both
                // in bounds by the length checks) and writes out[i.., j..j+cols], which no
                // other task writes.
                (Int8Path::Avx512Vnni, false) => unsafe {
                    x86::tile_vnni(a, i, rows, j, cols, panels, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2 with 256-bit VNNI (either encoding).
                (Int8Path::AvxVnni, false) => unsafe {
                    x86::tile_avx_vnni(a, i, rows, j, cols, panels, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2.
                (Int8Path::Avx2, false) => unsafe {
                    x86::tile_avx2(a, i, rows, j, cols, panels, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX-512 F.
                (Int8Path::Avx512Vnni | Int8Path::Amx, true) => unsafe {
                    x86::tile_w8_avx512(a, i, rows, j, cols, panels, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2 and FMA (which `AvxVnni` also requires).
                (Int8Path::Avx2 | Int8Path::AvxVnni, true) => unsafe {
                    x86::tile_w8_avx2(a, i, rows, j, cols, panels, out)
                },
                (_, false) => tile_portable(a, i, rows, j, cols, out),
                (_, true) => tile_w8_portable(a, i, rows, j, cols, out),
            }
            i += rows;
        }
        j += cols;
    }
}

/// The dequantization every path performs, in this order: `acc · (sx·sw) + b`.
#[inline(always)]
fn dequantize(acc: i32, sx: f32, sw: f32, b: f32) -> f32 {
    acc as f32 * (sx * sw) + b
}

fn tile_portable(a: &Args, i0: usize, rows: usize, j0: usize, cols: usize, out: SendPtr) {
    let (kp, n) = (a.kp, a.w.n);
    for i in i0..i0 + rows {
        let xr = &a.xq[i * kp..(i + 1) * kp];
        for j in j0..j0 + cols {
            let mut acc = 0i32;
            for (kk, &xv) in xr.iter().enumerate() {
                acc += xv as i32 * a.w.packed[packed_index(kp, j, kk)] as i32;
            }
            let v = dequantize(acc, a.sx[i], a.w.scales[j], a.bias.map_or(0.0, |b| b[j]));
            // SAFETY: (i, j) is inside out[m, n], in the region this task owns.
            unsafe { *out.get().add(i * n + j) = v };
        }
    }
}

/// The split product's columns `j0..j1` for every row, in plain Rust: the bits of the tile
/// path.
fn split_portable(a: &Args, j0: usize, j1: usize, out: SendPtr) {
    let (kp, n) = (a.kp, a.w.n);
    for i in 0..a.m {
        let base = split_row_offset(i, kp);
        let piece = |p: usize| &a.xq[base + p * kp..base + (p + 1) * kp];
        for j in j0..j1 {
            let sum = |q: &[i8]| -> i32 {
                q.iter()
                    .enumerate()
                    .map(|(kk, &v)| v as i32 * a.w.packed[packed_index(kp, j, kk)] as i32)
                    .sum()
            };
            let (c0, c1, c2) = (sum(piece(0)), sum(piece(1)), sum(piece(2)));
            let v = recombine(
                c0,
                c1,
                c2,
                a.sx[i],
                a.w.scales[j],
                a.bias.map_or(0.0, |b| b[j]),
            );
            // SAFETY: (i, j) is inside out[m, n], in the region this task owns.
            unsafe { *out.get().add(i * n + j) = v };
        }
    }
}

fn tile_w8_portable(a: &Args, i0: usize, rows: usize, j0: usize, cols: usize, out: SendPtr) {
    let (kp, n) = (a.kp, a.w.n);
    for i in i0..i0 + rows {
        let xr = &a.x32[i * kp..(i + 1) * kp];
        for j in j0..j0 + cols {
            let mut acc = 0f32;
            for (kk, &xv) in xr.iter().enumerate() {
                acc = xv.mul_add(a.w.packed[packed_index(kp, j, kk)] as f32, acc);
            }
            let v = acc * a.w.scales[j] + a.bias.map_or(0.0, |b| b[j]);
            // SAFETY: (i, j) is inside out[m, n], in the region this task owns.
            unsafe { *out.get().add(i * n + j) = v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{split_row_offset, Args, PANEL, SPLIT_BASE, SPLIT_PIECES};
    use crate::cpu::parallel::SendPtr;
    use std::arch::x86_64::*;

    /// Runs `$kernel::<R>` for `rows` (1..=4) as a const parameter on each of `panels`
    /// panels of columns `j0..j0+cols` in turn (the 256-bit kernels, which hold one panel
    /// as two halves of 8 columns).
    macro_rules! by_panel {
        ($kernel:ident, $a:expr, $i0:expr, $rows:expr, $j0:expr, $cols:expr, $panels:expr, $out:expr) => {
            for p in 0..$panels {
                let c0 = p * PANEL;
                let take = ($cols - c0).min(PANEL);
                match $rows {
                    4 => $kernel::<4>($a, $i0, $j0 + c0, take, $out),
                    3 => $kernel::<3>($a, $i0, $j0 + c0, take, $out),
                    2 => $kernel::<2>($a, $i0, $j0 + c0, take, $out),
                    _ => $kernel::<1>($a, $i0, $j0 + c0, take, $out),
                }
            }
        };
    }

    /// Calls `$kernel::<R, P>` for `rows` (1..=4) and `panels` (1..=4) as const
    /// parameters, so each tile size is compiled with its accumulators in registers.
    macro_rules! by_tile {
        ($kernel:ident, $rows:expr, $panels:expr, $($arg:expr),*) => {
            match ($rows, $panels) {
                (4, 4) => $kernel::<4, 4>($($arg),*),
                (4, 3) => $kernel::<4, 3>($($arg),*),
                (4, 2) => $kernel::<4, 2>($($arg),*),
                (4, _) => $kernel::<4, 1>($($arg),*),
                (3, 4) => $kernel::<3, 4>($($arg),*),
                (3, 3) => $kernel::<3, 3>($($arg),*),
                (3, 2) => $kernel::<3, 2>($($arg),*),
                (3, _) => $kernel::<3, 1>($($arg),*),
                (2, 4) => $kernel::<2, 4>($($arg),*),
                (2, 3) => $kernel::<2, 3>($($arg),*),
                (2, 2) => $kernel::<2, 2>($($arg),*),
                (2, _) => $kernel::<2, 1>($($arg),*),
                (_, 4) => $kernel::<1, 4>($($arg),*),
                (_, 3) => $kernel::<1, 3>($($arg),*),
                (_, 2) => $kernel::<1, 2>($($arg),*),
                (_, _) => $kernel::<1, 1>($($arg),*),
            }
        };
    }

    /// `q[i] = clamp(round_even(row[i]·inv), -127, 127)`, 16 at a time.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row(row: &[f32], inv: f32, q: &mut [i8]) {
        let k = row.len();
        let vinv = _mm512_set1_ps(inv);
        let lo = _mm512_set1_epi32(-127);
        let mut c = 0;
        while c < k {
            let take = (k - c).min(16);
            let mask: __mmask16 = if take == 16 { !0 } else { (1u16 << take) - 1 };
            let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(c));
            // Rounds to nearest even (the default MXCSR mode, as `round_ties_even`).
            let r = _mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vinv)), lo);
            _mm512_mask_cvtsepi32_storeu_epi8(q.as_mut_ptr().add(c) as *mut _, mask, r);
            c += take;
        }
    }

    /// Rows `i0..i0+rows` (≤ 4) × columns `j0..j0+cols` (≤ 4 panels) with `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_vnni(
        a: &Args,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
        panels: usize,
        out: SendPtr,
    ) {
        by_tile!(vnni, rows, panels, a, i0, j0, cols, out)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni<const R: usize, const P: usize>(
        a: &Args,
        i0: usize,
        j0: usize,
        cols: usize,
        out: SendPtr,
    ) {
        let kp = a.kp;
        let groups = kp / 4;
        let offset = _mm512_set1_epi32(0x8080_8080u32 as i32);
        let w0 = a.w.packed.as_ptr().add((j0 / PANEL) * kp * PANEL);
        let x0 = a.xq.as_ptr().add(i0 * kp);
        let mut acc = [[_mm512_setzero_si512(); P]; R];
        for g in 0..groups {
            let mut wv = [_mm512_setzero_si512(); P];
            for (p, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w0.add(p * kp * PANEL + g * 64) as *const _);
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let xb = (x0.add(r * kp + g * 4) as *const i32).read_unaligned();
                // Signed bytes + 128 as unsigned: flipping each byte's top bit.
                let xu = _mm512_xor_si512(_mm512_set1_epi32(xb), offset);
                for p in 0..P {
                    accr[p] = _mm512_dpbusd_epi32(accr[p], xu, wv[p]);
                }
            }
        }
        let n = a.w.n;
        let sums = a.w.sums.as_ptr().add(j0);
        let scales = a.w.scales.as_ptr().add(j0);
        for (r, accr) in acc.iter().enumerate() {
            let i = i0 + r;
            let sx = _mm512_set1_ps(a.sx[i]);
            for (p, &v) in accr.iter().enumerate() {
                let c0 = p * PANEL;
                if c0 >= cols {
                    break;
                }
                let take = (cols - c0).min(PANEL);
                let mask: __mmask16 = if take == 16 { !0 } else { (1u16 << take) - 1 };
                // Σ (xq + 128)·w − 128·Σ w = Σ xq·w.
                let comp = _mm512_slli_epi32(_mm512_loadu_si512(sums.add(c0) as *const _), 7);
                let acc = _mm512_cvtepi32_ps(_mm512_sub_epi32(v, comp));
                let s = _mm512_mul_ps(sx, _mm512_loadu_ps(scales.add(c0)));
                let b = match a.bias {
                    Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j0 + c0)),
                    None => _mm512_setzero_ps(),
                };
                let y = _mm512_add_ps(_mm512_mul_ps(acc, s), b);
                _mm512_mask_storeu_ps(out.get().add(i * n + j0 + c0), mask, y);
            }
        }
    }

    /// Split activations ([`super::linear_w8_split_on`]) on AVX-512 VNNI: columns
    /// `j0..j1` (j0 a multiple of [`PANEL`]) of every row, in blocks of three panels (24 KB
    /// of weight at k = 512, kept in L1 while every pair of rows reads it). Each piece's
    /// sum is exact in i32 and recombined by the operations of [`super::recombine`]: the
    /// bits of the tiles and of the portable path.
    ///
    /// Safety: AVX-512 F, BW and VNNI; `a.xq` holds the pieces of rows 0..a.m at
    /// [`split_row_offset`]; the packed weight holds the panels of `j0..j1`; nothing else
    /// writes out[.., j0..j1].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn columns_split_vnni(a: &Args, j0: usize, j1: usize, out: SendPtr) {
        let mut j = j0;
        while j < j1 {
            let cols = (j1 - j).min(3 * PANEL);
            let mut i = 0;
            while i < a.m {
                let rows = (a.m - i).min(2);
                match (rows, cols.div_ceil(PANEL)) {
                    (2, 3) => split_vnni::<2, 3>(a, i, j, cols, out),
                    (2, 2) => split_vnni::<2, 2>(a, i, j, cols, out),
                    (2, _) => split_vnni::<2, 1>(a, i, j, cols, out),
                    (_, 3) => split_vnni::<1, 3>(a, i, j, cols, out),
                    (_, 2) => split_vnni::<1, 2>(a, i, j, cols, out),
                    (_, _) => split_vnni::<1, 1>(a, i, j, cols, out),
                }
                i += rows;
            }
            j += cols;
        }
    }

    /// Rows `i0..i0+R` × columns `j0..j0+cols` (≤ P panels) of the split product: the
    /// three pieces of each row against each panel, `3·R·P` accumulators in registers.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn split_vnni<const R: usize, const P: usize>(
        a: &Args,
        i0: usize,
        j0: usize,
        cols: usize,
        out: SendPtr,
    ) {
        let kp = a.kp;
        let offset = _mm512_set1_epi32(0x8080_8080u32 as i32);
        let w0 = a.w.packed.as_ptr().add((j0 / PANEL) * kp * PANEL);
        let x: [*const i8; R] =
            std::array::from_fn(|r| a.xq.as_ptr().add(split_row_offset(i0 + r, kp)));
        let mut acc = [[[_mm512_setzero_si512(); P]; SPLIT_PIECES]; R];
        for g in 0..kp / 4 {
            let mut wv = [_mm512_setzero_si512(); P];
            for (p, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w0.add(p * kp * PANEL + g * 64) as *const _);
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                for (s, accs) in accr.iter_mut().enumerate() {
                    let xb = (x[r].add(s * kp + g * 4) as *const i32).read_unaligned();
                    // Signed bytes + 128 as unsigned: flipping each byte's top bit.
                    let xu = _mm512_xor_si512(_mm512_set1_epi32(xb), offset);
                    for p in 0..P {
                        accs[p] = _mm512_dpbusd_epi32(accs[p], xu, wv[p]);
                    }
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            // p picks a panel's accumulator in each of the three pieces' rows.
            #[allow(clippy::needless_range_loop)]
            for p in 0..P {
                let c0 = p * PANEL;
                if c0 >= cols {
                    break;
                }
                // Σ (xq + 128)·w − 128·Σ w = Σ xq·w, for each piece.
                let comp = _mm512_slli_epi32(
                    _mm512_loadu_si512(a.w.sums.as_ptr().add(j0 + c0) as *const _),
                    7,
                );
                let piece = |s: usize| _mm512_sub_epi32(accr[s][p], comp);
                let sums = [piece(0), piece(1), piece(2)];
                recombine_lanes(a, i0 + r, j0 + c0, (cols - c0).min(PANEL), sums, out);
            }
        }
    }

    /// Writes `take` (≤ 16) outputs of row `i` from column `j`: the three pieces' exact sums
    /// recombined by the operations of [`super::recombine`], in lanes (the VNNI and the
    /// tile kernels both end here, so that they give its bits).
    ///
    /// Safety: AVX-512 F; (i, j..j + take) lies inside the output, in a region only this
    /// task writes, and the weight's scales (padded to whole panels) cover j..j + 16.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn recombine_lanes(
        a: &Args,
        i: usize,
        j: usize,
        take: usize,
        [c0, c1, c2]: [__m512i; SPLIT_PIECES],
        out: SendPtr,
    ) {
        let step = _mm512_set1_ps(1.0 / SPLIT_BASE);
        let mask: __mmask16 = if take == 16 { !0 } else { (1u16 << take) - 1 };
        let t = _mm512_add_ps(
            _mm512_mul_ps(_mm512_cvtepi32_ps(c2), step),
            _mm512_cvtepi32_ps(c1),
        );
        let u = _mm512_add_ps(_mm512_mul_ps(t, step), _mm512_cvtepi32_ps(c0));
        let sx = _mm512_set1_ps(a.sx[i]);
        let s = _mm512_mul_ps(sx, _mm512_loadu_ps(a.w.scales.as_ptr().add(j)));
        let b = match a.bias {
            Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j)),
            None => _mm512_setzero_ps(),
        };
        let y = _mm512_add_ps(_mm512_mul_ps(u, s), b);
        _mm512_mask_storeu_ps(out.get().add(i * a.w.n + j), mask, y);
    }

    /// Weight-only tile: rows `i0..i0+rows` (≤ 4) × columns `j0..j0+cols` (≤ 4 panels),
    /// f32 activations, int8 weights widened in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_w8_avx512(
        a: &Args,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
        panels: usize,
        out: SendPtr,
    ) {
        if rows <= 4 {
            return by_tile!(w8_512, rows, panels, a, i0, j0, cols, out);
        }
        // 5 to 8 rows (a beam search's step): each panel's bytes are widened once for all
        // of them, two panels at a time so that the accumulators stay in registers. Each
        // output still takes its multiply-adds in k order: the same bits as 4-row tiles.
        let mut p = 0;
        while p < panels {
            let take = (panels - p).min(2);
            let c0 = p * PANEL;
            let (j, c) = (j0 + c0, (cols - c0).min(take * PANEL));
            match (rows, take) {
                (8, 2) => w8_512::<8, 2>(a, i0, j, c, out),
                (8, _) => w8_512::<8, 1>(a, i0, j, c, out),
                (7, 2) => w8_512::<7, 2>(a, i0, j, c, out),
                (7, _) => w8_512::<7, 1>(a, i0, j, c, out),
                (6, 2) => w8_512::<6, 2>(a, i0, j, c, out),
                (6, _) => w8_512::<6, 1>(a, i0, j, c, out),
                (_, 2) => w8_512::<5, 2>(a, i0, j, c, out),
                (_, _) => w8_512::<5, 1>(a, i0, j, c, out),
            }
            p += take;
        }
    }

    /// Byte `t` of each 32-bit lane, sign-extended, as f32: column c's value at k = 4g + t.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn widen_512<const T: u32>(v: __m512i) -> __m512 {
        // Shift byte t to the top, then arithmetic-shift it down (sign extension).
        let top = match T {
            0 => _mm512_slli_epi32::<24>(v),
            1 => _mm512_slli_epi32::<16>(v),
            2 => _mm512_slli_epi32::<8>(v),
            _ => v,
        };
        _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(top))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn w8_512<const R: usize, const P: usize>(
        a: &Args,
        i0: usize,
        j0: usize,
        cols: usize,
        out: SendPtr,
    ) {
        let kp = a.kp;
        let w0 = a.w.packed.as_ptr().add((j0 / PANEL) * kp * PANEL);
        let x0 = a.x32.as_ptr().add(i0 * kp);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        // The next call's panels follow these in memory: touching them now overlaps their
        // reading (from far memory in a decoder step) with this call's arithmetic. A
        // prefetch never faults, so the addresses past the weight's end are harmless.
        let ahead = P * kp * PANEL;
        for g in 0..kp / 4 {
            for p in 0..P {
                let at = w0.add(p * kp * PANEL + g * 64);
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(ahead));
                let v = _mm512_loadu_si512(at as *const _);
                let w = [
                    widen_512::<0>(v),
                    widen_512::<1>(v),
                    widen_512::<2>(v),
                    widen_512::<3>(v),
                ];
                for (r, accr) in acc.iter_mut().enumerate() {
                    let xr = x0.add(r * kp + g * 4);
                    for (t, wt) in w.iter().enumerate() {
                        accr[p] = _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(t)), *wt, accr[p]);
                    }
                }
            }
        }
        let n = a.w.n;
        let scales = a.w.scales.as_ptr().add(j0);
        for (r, accr) in acc.iter().enumerate() {
            let i = i0 + r;
            for (p, &v) in accr.iter().enumerate() {
                let c0 = p * PANEL;
                if c0 >= cols {
                    break;
                }
                let take = (cols - c0).min(PANEL);
                let mask: __mmask16 = if take == 16 { !0 } else { (1u16 << take) - 1 };
                let b = match a.bias {
                    Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j0 + c0)),
                    None => _mm512_setzero_ps(),
                };
                let y = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(scales.add(c0))), b);
                _mm512_mask_storeu_ps(out.get().add(i * n + j0 + c0), mask, y);
            }
        }
    }

    /// [`tile_w8_avx512`] with AVX2 and FMA: each panel as two halves of 8 columns.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_w8_avx2(
        a: &Args,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
        panels: usize,
        out: SendPtr,
    ) {
        by_panel!(w8_256, a, i0, rows, j0, cols, panels, out)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen_256<const T: i32>(v: __m256i) -> __m256 {
        let top = match T {
            0 => _mm256_slli_epi32::<24>(v),
            1 => _mm256_slli_epi32::<16>(v),
            2 => _mm256_slli_epi32::<8>(v),
            _ => v,
        };
        _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(top))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn w8_256<const R: usize>(a: &Args, i0: usize, j0: usize, cols: usize, out: SendPtr) {
        let kp = a.kp;
        let w0 = a.w.packed.as_ptr().add((j0 / PANEL) * kp * PANEL);
        let x0 = a.x32.as_ptr().add(i0 * kp);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for g in 0..kp / 4 {
            for h in 0..2 {
                let v = _mm256_loadu_si256(w0.add(g * 64 + h * 32) as *const _);
                let w = [
                    widen_256::<0>(v),
                    widen_256::<1>(v),
                    widen_256::<2>(v),
                    widen_256::<3>(v),
                ];
                for (r, accr) in acc.iter_mut().enumerate() {
                    let xr = x0.add(r * kp + g * 4);
                    for (t, wt) in w.iter().enumerate() {
                        accr[h] = _mm256_fmadd_ps(_mm256_set1_ps(*xr.add(t)), *wt, accr[h]);
                    }
                }
            }
        }
        let n = a.w.n;
        for (r, accr) in acc.iter().enumerate() {
            let i = i0 + r;
            let mut sums = [0f32; PANEL];
            _mm256_storeu_ps(sums.as_mut_ptr(), accr[0]);
            _mm256_storeu_ps(sums.as_mut_ptr().add(8), accr[1]);
            for (c, &s) in sums.iter().enumerate().take(cols) {
                let j = j0 + c;
                *out.get().add(i * n + j) = s * a.w.scales[j] + a.bias.map_or(0.0, |b| b[j]);
            }
        }
    }

    /// Rows `i0..i0+rows` (≤ 4) × columns `j0..j0+cols` with AVX2, one panel at a time.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(
        a: &Args,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
        panels: usize,
        out: SendPtr,
    ) {
        by_panel!(avx2, a, i0, rows, j0, cols, panels, out)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<const R: usize>(a: &Args, i0: usize, j0: usize, cols: usize, out: SendPtr) {
        let kp = a.kp;
        let groups = kp / 4;
        let ones = _mm256_set1_epi16(1);
        let w0 = a.w.packed.as_ptr().add((j0 / PANEL) * kp * PANEL);
        let x0 = a.xq.as_ptr().add(i0 * kp);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for g in 0..groups {
            let wl = _mm256_loadu_si256(w0.add(g * 64) as *const _);
            let wh = _mm256_loadu_si256(w0.add(g * 64 + 32) as *const _);
            let (al, ah) = (_mm256_sign_epi8(wl, wl), _mm256_sign_epi8(wh, wh));
            for (r, accr) in acc.iter_mut().enumerate() {
                let xb = _mm256_set1_epi32((x0.add(r * kp + g * 4) as *const i32).read_unaligned());
                // |w| (unsigned) times x with w's sign: pairs sum to at most 2·127·127.
                let pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(xb, wl));
                let ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(xb, wh));
                accr[0] = _mm256_add_epi32(accr[0], _mm256_madd_epi16(pl, ones));
                accr[1] = _mm256_add_epi32(accr[1], _mm256_madd_epi16(ph, ones));
            }
        }
        for (r, &halves) in acc.iter().enumerate() {
            store_panel_row(a, i0 + r, j0, cols, halves, out);
        }
    }

    /// Writes `cols` (≤ 16) outputs of row `i` from column `j0`: a panel's exact i32 sums,
    /// columns 0–7 and 8–15, dequantized as every path does.
    ///
    /// Safety: AVX; (i, j0..j0 + cols) lies inside the output, in a region only this task
    /// writes.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store_panel_row(
        a: &Args,
        i: usize,
        j0: usize,
        cols: usize,
        halves: [__m256i; 2],
        out: SendPtr,
    ) {
        let mut sums = [0i32; PANEL];
        _mm256_storeu_si256(sums.as_mut_ptr() as *mut _, halves[0]);
        _mm256_storeu_si256(sums.as_mut_ptr().add(8) as *mut _, halves[1]);
        for (c, &s) in sums.iter().enumerate().take(cols) {
            let j = j0 + c;
            let b = a.bias.map_or(0.0, |b| b[j]);
            *out.get().add(i * a.w.n + j) = super::dequantize(s, a.sx[i], a.w.scales[j], b);
        }
    }

    /// Rows `i0..i0+rows` (≤ 4) × columns `j0..j0+cols` with 256-bit `vpdpbusd`, one panel
    /// at a time: AVX-VNNI's VEX encoding where the CPU has it, else the EVEX encoding of
    /// the same instruction on ymm registers (AVX-512 VNNI and VL). Both add the same four
    /// u8 × i8 products into each i32 lane, so the sums, and the outputs, are the other
    /// paths' bits; on a CPU with AVX-512 VNNI the tests run this kernel in its EVEX form.
    ///
    /// Safety: AVX2 and either AVX-VNNI or AVX-512 VNNI with VL; as [`tile_avx2`] otherwise.
    pub(super) unsafe fn tile_avx_vnni(
        a: &Args,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
        panels: usize,
        out: SendPtr,
    ) {
        if std::is_x86_feature_detected!("avxvnni") {
            tile_vnni256_vex(a, i0, rows, j0, cols, panels, out)
        } else {
            tile_vnni256_evex(a, i0, rows, j0, cols, panels, out)
        }
    }

    /// The 256-bit VNNI tile for one encoding of `vpdpbusd` (`$dpbusd`, enabled by
    /// `$features`).
    macro_rules! vnni256 {
        ($tile:ident, $rows_kernel:ident, $features:literal, $dpbusd:ident) => {
            #[target_feature(enable = $features)]
            unsafe fn $tile(
                a: &Args,
                i0: usize,
                rows: usize,
                j0: usize,
                cols: usize,
                panels: usize,
                out: SendPtr,
            ) {
                by_panel!($rows_kernel, a, i0, rows, j0, cols, panels, out)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn $rows_kernel<const R: usize>(
                a: &Args,
                i0: usize,
                j0: usize,
                cols: usize,
                out: SendPtr,
            ) {
                let kp = a.kp;
                let offset = _mm256_set1_epi32(0x8080_8080u32 as i32);
                let w0 = a.w.packed.as_ptr().add((j0 / PANEL) * kp * PANEL);
                let x0 = a.xq.as_ptr().add(i0 * kp);
                // Columns 0–7 and 8–15 of the panel for each row.
                let mut acc = [[_mm256_setzero_si256(); 2]; R];
                for g in 0..kp / 4 {
                    let wl = _mm256_loadu_si256(w0.add(g * 64) as *const _);
                    let wh = _mm256_loadu_si256(w0.add(g * 64 + 32) as *const _);
                    for (r, accr) in acc.iter_mut().enumerate() {
                        let xb = (x0.add(r * kp + g * 4) as *const i32).read_unaligned();
                        // Signed bytes + 128 as unsigned: flipping each byte's top bit.
                        let xu = _mm256_xor_si256(_mm256_set1_epi32(xb), offset);
                        accr[0] = $dpbusd(accr[0], xu, wl);
                        accr[1] = $dpbusd(accr[1], xu, wh);
                    }
                }
                // Σ (xq + 128)·w − 128·Σ w = Σ xq·w (the sums are padded to whole panels).
                let sums = a.w.sums.as_ptr().add(j0);
                let comp = [
                    _mm256_slli_epi32(_mm256_loadu_si256(sums as *const _), 7),
                    _mm256_slli_epi32(_mm256_loadu_si256(sums.add(8) as *const _), 7),
                ];
                for (r, accr) in acc.iter().enumerate() {
                    let exact = [
                        _mm256_sub_epi32(accr[0], comp[0]),
                        _mm256_sub_epi32(accr[1], comp[1]),
                    ];
                    store_panel_row(a, i0 + r, j0, cols, exact, out);
                }
            }
        };
    }

    vnni256!(
        tile_vnni256_vex,
        rows_vnni256_vex,
        "avx2,avxvnni",
        _mm256_dpbusd_avx_epi32
    );
    vnni256!(
        tile_vnni256_evex,
        rows_vnni256_evex,
        "avx2,avx512vnni,avx512vl",
        _mm256_dpbusd_epi32
    );
}

/// The AMX tile path: the product on tiles.
#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::{Args, AMX_K_STEP, AMX_TILE_ROWS, PANEL, SPLIT_PIECES, SPLIT_ROWS_PER_BLOCK};
    use crate::cpu::amx::{self, TileConfig};
    use crate::cpu::parallel::SendPtr;
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Four 16 × 16 tiles of i32 sums: rows 0–15 and 16–31 of a block, each × 2 panels.
    #[repr(C, align(64))]
    struct Sums([i32; 4 * AMX_TILE_ROWS * PANEL]);

    /// Every output row × columns `j0..j1` (j0 a multiple of [`PANEL`]) on tiles: blocks of
    /// 32 rows (outer, so that the columns' weight stays in cache) × 2 panels, each summed
    /// over k in steps of 64 bytes into four tiles (tmm0–3) from two activation tiles
    /// (tmm4–5) and two weight tiles (tmm6–7).
    ///
    /// Safety: AMX (`usable`) and AVX-512 F; `a.xq` holds `a.m` rounded up to 32 rows of
    /// `a.kp` bytes, `a.kp` a multiple of 64; the packed weight holds the panels of
    /// `j0..j1`; nothing else writes out[.., j0..j1].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(a: &Args, j0: usize, j1: usize, out: SendPtr) {
        let config = TileConfig::all_16_by_64();
        config.load();
        let kp = a.kp;
        let mut sums = Sums([0; 4 * AMX_TILE_ROWS * PANEL]);
        let mut i = 0;
        while i < a.m {
            let mut j = j0;
            while j < j1 {
                let cols = (j1 - j).min(2 * PANEL);
                let x = a.xq.as_ptr().add(i * kp);
                let w = a.w.packed.as_ptr().add((j / PANEL) * kp * PANEL);
                if cols > PANEL {
                    sum_panels::<2>(x, w, kp, &mut sums);
                } else {
                    sum_panels::<1>(x, w, kp, &mut sums);
                }
                dequantize(a, i, j, cols, &sums, out);
                j += cols;
            }
            i += 2 * AMX_TILE_ROWS;
        }
        amx::release();
    }

    /// 32 rows × `P` panels (1 or 2) summed into the accumulators (see
    /// [`amx::zero_accumulators`]) and stored into `sums`; with one panel, tmm1 and tmm3
    /// stay zero.
    #[inline]
    unsafe fn sum_panels<const P: usize>(x: *const i8, w: *const i8, kp: usize, sums: &mut Sums) {
        amx::zero_accumulators();
        // A panel's next 16 groups of 4 k (one tile) are its next 1,024 bytes.
        let panel_step = AMX_TILE_ROWS * PANEL * 4;
        for s in 0..kp / AMX_K_STEP {
            let (x0, x1) = (
                x.add(s * AMX_K_STEP),
                x.add(AMX_TILE_ROWS * kp + s * AMX_K_STEP),
            );
            let w0 = w.add(s * panel_step);
            if P == 2 {
                asm!(
                    "tileloadd tmm4, [{x0} + {xs}]",
                    "tileloadd tmm5, [{x1} + {xs}]",
                    "tileloadd tmm6, [{w0} + {ws}]",
                    "tileloadd tmm7, [{w1} + {ws}]",
                    "tdpbssd tmm0, tmm4, tmm6",
                    "tdpbssd tmm1, tmm4, tmm7",
                    "tdpbssd tmm2, tmm5, tmm6",
                    "tdpbssd tmm3, tmm5, tmm7",
                    x0 = in(reg) x0,
                    x1 = in(reg) x1,
                    w0 = in(reg) w0,
                    w1 = in(reg) w0.add(kp * PANEL),
                    xs = in(reg) kp,
                    ws = in(reg) PANEL * 4,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{x0} + {xs}]",
                    "tileloadd tmm5, [{x1} + {xs}]",
                    "tileloadd tmm6, [{w0} + {ws}]",
                    "tdpbssd tmm0, tmm4, tmm6",
                    "tdpbssd tmm2, tmm5, tmm6",
                    x0 = in(reg) x0,
                    x1 = in(reg) x1,
                    w0 = in(reg) w0,
                    xs = in(reg) kp,
                    ws = in(reg) PANEL * 4,
                    options(nostack, readonly)
                );
            }
        }
        amx::store_accumulators(sums.0.as_mut_ptr().cast());
    }

    /// The accumulators' 16 × 16 tiles of i32 sums ([`amx::store_accumulators`]): a
    /// block's 16 piece rows × up to 3 panels (the fourth tile stays zero).
    #[repr(C, align(64))]
    struct SplitSums([i32; 4 * AMX_TILE_ROWS * PANEL]);

    /// Every row × columns `j0..j1` (j0 a multiple of [`PANEL`]) of a split product: for
    /// each block of 16 piece rows (five real rows), groups of up to 3 panels, each summed
    /// over k in steps of 64 bytes into tmm0–2 from one activation tile (tmm4) and one
    /// weight tile per panel (tmm5–7), then recombined.
    ///
    /// Safety: AMX (`usable`) and AVX-512 F; `a.xq` holds `a.m.div_ceil(5)` blocks of 16
    /// rows of `a.kp` bytes, `a.kp` a multiple of 64; the packed weight holds the panels of
    /// `j0..j1`; nothing else writes out[.., j0..j1].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns_split(a: &Args, j0: usize, j1: usize, out: SendPtr) {
        let config = TileConfig::all_16_by_64();
        config.load();
        let kp = a.kp;
        let mut sums = SplitSums([0; 4 * AMX_TILE_ROWS * PANEL]);
        // Panels outer, blocks inner: a group of panels (3 × 16 columns × kp bytes, 24 KB
        // for the logits projection) is read from memory once and stays in L1 for every
        // block of rows, instead of the whole weight being read again for each block of
        // five rows. The sums are exact integers, so the order changes no bit.
        let mut j = j0;
        while j < j1 {
            let cols = (j1 - j).min(3 * PANEL);
            let w = a.w.packed.as_ptr().add((j / PANEL) * kp * PANEL);
            for block in 0..a.m.div_ceil(SPLIT_ROWS_PER_BLOCK) {
                let x = a.xq.as_ptr().add(block * AMX_TILE_ROWS * kp);
                match cols.div_ceil(PANEL) {
                    3 => split_panels::<3>(x, w, kp, &mut sums),
                    2 => split_panels::<2>(x, w, kp, &mut sums),
                    _ => split_panels::<1>(x, w, kp, &mut sums),
                }
                recombine_block(a, block, j, cols, &sums, out);
            }
            j += cols;
        }
        amx::release();
    }

    /// One block of 16 piece rows × `P` panels (1 to 3) summed into tmm0.. (tmm0–3
    /// zeroed first, as the shared accumulators are) and stored.
    #[inline]
    unsafe fn split_panels<const P: usize>(
        x: *const i8,
        w: *const i8,
        kp: usize,
        sums: &mut SplitSums,
    ) {
        amx::zero_accumulators();
        let panel_step = AMX_TILE_ROWS * PANEL * 4;
        for s in 0..kp / AMX_K_STEP {
            let x0 = x.add(s * AMX_K_STEP);
            let w0 = w.add(s * panel_step);
            match P {
                3 => asm!(
                    "tileloadd tmm4, [{x0} + {xs}]",
                    "tileloadd tmm5, [{w0} + {ws}]",
                    "tileloadd tmm6, [{w1} + {ws}]",
                    "tileloadd tmm7, [{w2} + {ws}]",
                    "tdpbssd tmm0, tmm4, tmm5",
                    "tdpbssd tmm1, tmm4, tmm6",
                    "tdpbssd tmm2, tmm4, tmm7",
                    x0 = in(reg) x0,
                    w0 = in(reg) w0,
                    w1 = in(reg) w0.add(kp * PANEL),
                    w2 = in(reg) w0.add(2 * kp * PANEL),
                    xs = in(reg) kp,
                    ws = in(reg) PANEL * 4,
                    options(nostack, readonly)
                ),
                2 => asm!(
                    "tileloadd tmm4, [{x0} + {xs}]",
                    "tileloadd tmm5, [{w0} + {ws}]",
                    "tileloadd tmm6, [{w1} + {ws}]",
                    "tdpbssd tmm0, tmm4, tmm5",
                    "tdpbssd tmm1, tmm4, tmm6",
                    x0 = in(reg) x0,
                    w0 = in(reg) w0,
                    w1 = in(reg) w0.add(kp * PANEL),
                    xs = in(reg) kp,
                    ws = in(reg) PANEL * 4,
                    options(nostack, readonly)
                ),
                _ => asm!(
                    "tileloadd tmm4, [{x0} + {xs}]",
                    "tileloadd tmm5, [{w0} + {ws}]",
                    "tdpbssd tmm0, tmm4, tmm5",
                    x0 = in(reg) x0,
                    w0 = in(reg) w0,
                    xs = in(reg) kp,
                    ws = in(reg) PANEL * 4,
                    options(nostack, readonly)
                ),
            }
        }
        amx::store_accumulators(sums.0.as_mut_ptr().cast());
    }

    /// Writes the block's real rows (those below m) × columns `j..j + cols`: each row's
    /// three piece sums recombined by the operations of [`super::recombine`], in lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn recombine_block(
        a: &Args,
        block: usize,
        j: usize,
        cols: usize,
        sums: &SplitSums,
        out: SendPtr,
    ) {
        for r in 0..SPLIT_ROWS_PER_BLOCK {
            let row = block * SPLIT_ROWS_PER_BLOCK + r;
            if row >= a.m {
                return;
            }
            for p in 0..cols.div_ceil(PANEL) {
                let c0 = p * PANEL;
                let tile = sums.0.as_ptr().add(p * AMX_TILE_ROWS * PANEL);
                let piece = |q: usize| {
                    _mm512_loadu_si512(tile.add((SPLIT_PIECES * r + q) * PANEL) as *const _)
                };
                let take = (cols - c0).min(PANEL);
                super::x86::recombine_lanes(
                    a,
                    row,
                    j + c0,
                    take,
                    [piece(0), piece(1), piece(2)],
                    out,
                );
            }
        }
    }

    /// Writes the block's outputs, rows `i..` (those below m) × columns `j..j + cols`:
    /// `acc · (sx·sw) + b`, the operations of every other path.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn dequantize(a: &Args, i: usize, j: usize, cols: usize, sums: &Sums, out: SendPtr) {
        let n = a.w.n;
        for half in 0..2 {
            for r in 0..AMX_TILE_ROWS {
                let row = i + half * AMX_TILE_ROWS + r;
                if row >= a.m {
                    return;
                }
                let sx = _mm512_set1_ps(a.sx[row]);
                for p in 0..2 {
                    let c0 = p * PANEL;
                    if c0 >= cols {
                        break;
                    }
                    let take = (cols - c0).min(PANEL);
                    let mask: __mmask16 = if take == 16 { !0 } else { (1u16 << take) - 1 };
                    let tile = (2 * half + p) * AMX_TILE_ROWS * PANEL;
                    let acc = _mm512_loadu_si512(sums.0.as_ptr().add(tile + r * PANEL) as *const _);
                    let s = _mm512_mul_ps(sx, _mm512_loadu_ps(a.w.scales.as_ptr().add(j + c0)));
                    let b = match a.bias {
                        Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j + c0)),
                        None => _mm512_setzero_ps(),
                    };
                    let y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), s), b);
                    _mm512_mask_storeu_ps(out.get().add(row * n + j + c0), mask, y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lanes_abs_max_is_the_folds_and_finds_every_nan() {
        // The fold it replaced: the largest |v| ignoring NaNs (f32::max), and any NaN.
        let fold = |row: &[f32]| {
            (
                row.iter().fold(0.0f32, |a, v| a.max(v.abs())),
                row.iter().any(|v| v.is_nan()),
            )
        };
        let mut seed = 11u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        };
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
        ];
        for len in (0..50).chain([511, 512, 2048]) {
            for special in [None, Some(0usize), Some(1), Some(2), Some(3), Some(4)] {
                let mut row: Vec<f32> = (0..len)
                    .map(|_| (next() as f32 / (1u32 << 24) as f32 - 0.5) * 200.0)
                    .collect();
                if let (Some(s), true) = (special, len > 0) {
                    let at = next() as usize % len;
                    row[at] = specials[s];
                }
                let (amax, nan) = abs_max_and_nan(&row);
                let (want_max, want_nan) = fold(&row);
                assert_eq!(amax.to_bits(), want_max.to_bits(), "len {len} {special:?}");
                assert_eq!(nan, want_nan, "len {len} {special:?}");
            }
        }
        // Only NaNs (or nothing): 0 and whether there was one.
        assert_eq!(abs_max_and_nan(&[f32::NAN; 20]), (0.0, true));
        assert_eq!(abs_max_and_nan(&[]), (0.0, false));
        assert_eq!(abs_max_and_nan(&[-0.0; 17]).0.to_bits(), 0.0f32.to_bits());
    }

    #[test]
    fn rescoring_dot_on_f16_rows_equals_the_dot_of_the_widened_row_bit_for_bit() {
        // Rescored outputs decide tokens; the f16 row read in registers must give exactly
        // the bits of the f32 dot product of its widening (every length's tail included).
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        };
        for len in (0..70).chain([512, 513, 2048]) {
            let x: Vec<f32> = (0..len).map(|_| next()).collect();
            let row: Vec<half::f16> = (0..len).map(|_| half::f16::from_f32(next())).collect();
            let wide: Vec<f32> = row.iter().map(|v| v.to_f32()).collect();
            assert_eq!(
                exact_dot_f16(&x, &row).to_bits(),
                exact_dot(&x, &wide).to_bits(),
                "length {len}"
            );
        }
    }

    #[test]
    fn split_pieces_round_as_round_ties_even_does() {
        // The shift-based rounding must give `round_ties_even`'s integers, ties included.
        let mut rng = fastrand::Rng::with_seed(5);
        let mut row: Vec<f32> = (0..4096).map(|_| rng.f32() * 6.0 - 3.0).collect();
        row[0] = 3.0;
        // Exact ties after scaling by 127/3: k + 0.5 steps, both signs.
        for (i, t) in [0.5f32, 1.5, -0.5, -2.5, 126.5, -126.5].iter().enumerate() {
            row[1 + i] = t * 3.0 / 127.0;
        }
        let k = row.len();
        let (mut q0, mut q1, mut q2) = (vec![0i8; k], vec![0i8; k], vec![0i8; k]);
        let sx = split_row_into(&row, &mut q0, &mut q1, &mut q2);
        assert_eq!(sx, 3.0 / 127.0);
        let inv = 127.0 / 3.0f32;
        let piece = |v: f32| v.round_ties_even().clamp(-127.0, 127.0);
        for c in 0..k {
            let v = row[c] * inv;
            let a0 = piece(v);
            let t = (v - a0) * SPLIT_BASE;
            let a1 = piece(t);
            let a2 = piece((t - a1) * SPLIT_BASE);
            assert_eq!(
                (q0[c], q1[c], q2[c]),
                (a0 as i8, a1 as i8, a2 as i8),
                "element {c}"
            );
        }
    }

    #[test]
    fn merged_column_lists_mark_each_column_with_the_rows_that_list_it() {
        let mut rng = fastrand::Rng::with_seed(11);
        for rows in [1usize, 2, 5, 40, 64] {
            let n = 3000;
            let found: Vec<Vec<usize>> = (0..rows)
                .map(|r| {
                    // Some rows list nothing, some share most columns.
                    let keep = [0u32, 3, 40, 95][r % 4];
                    (0..n).filter(|_| rng.u32(0..100) < keep).collect()
                })
                .collect();
            let mut masks = vec![0u64; n];
            for (b, cols) in found.iter().enumerate() {
                for &j in cols {
                    masks[j] |= 1 << b;
                }
            }
            let want: Vec<(usize, u64)> = (0..n)
                .filter(|&j| masks[j] != 0)
                .map(|j| (j, masks[j]))
                .collect();
            assert_eq!(merge_columns(&found), want, "{rows} rows");
        }
    }

    #[test]
    fn a_named_path_caps_the_choice_at_the_widest_available_at_or_below_it() {
        let widest = Int8Path::ALL.into_iter().find(|p| p.available()).unwrap();
        assert_eq!(Int8Path::widest_at_or_below(None), widest);
        assert_eq!(Int8Path::widest_at_or_below(Some("no such path")), widest);
        assert_eq!(
            Int8Path::widest_at_or_below(Some("portable")),
            Int8Path::Portable
        );
        let avx2 = if Int8Path::Avx2.available() {
            Int8Path::Avx2
        } else {
            Int8Path::Portable
        };
        assert_eq!(Int8Path::widest_at_or_below(Some("avx2")), avx2);
        for (i, cap) in Int8Path::ALL.into_iter().enumerate() {
            // Available, not wider than the cap, and no available path between the two.
            let got = Int8Path::widest_at_or_below(Some(cap.name()));
            let at = Int8Path::ALL.iter().position(|&p| p == got).unwrap();
            assert!(
                got.available() && at >= i,
                "cap {}: {}",
                cap.name(),
                got.name()
            );
            assert!(
                Int8Path::ALL[i..at].iter().all(|p| !p.available()),
                "cap {}: {} skips an available path",
                cap.name(),
                got.name()
            );
        }
    }

    /// The AVX-512 activation quantizer rounds and clamps as the scalar loop does,
    /// including ties and values at the row's maximum.
    #[test]
    fn simd_activation_quantization_equals_scalar() {
        let k = 67;
        let mut rng = fastrand::Rng::with_seed(3);
        let mut x: Vec<f32> = (0..k).map(|_| rng.f32() * 8.0 - 4.0).collect();
        x[0] = 4.0;
        // Exact ties after scaling by 127/4: 0.5 and 1.5 steps, both signs.
        for (i, t) in [0.5f32, 1.5, -0.5, -2.5].iter().enumerate() {
            x[1 + i] = t * 4.0 / 127.0;
        }
        let inv = 127.0 / 4.0;
        let scalar: Vec<i8> = x
            .iter()
            .map(|&v| (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        #[cfg(target_arch = "x86_64")]
        if Int8Path::Avx512Vnni.available() {
            let mut q = vec![0i8; k];
            // SAFETY: AVX-512 F/BW detected; equal lengths.
            unsafe { x86::quantize_row(&x, inv, &mut q) };
            assert_eq!(q, scalar);
        }
        assert_eq!(scalar[0], 127);
    }
}
