//! Thresholds that decide between code paths and how work is split across threads.
//!
//! Measured on a 2-core AMD EPYC (Zen 4) with `examples/kernel_bench.rs`; they only move
//! speed, never results beyond f32 rounding.

/// Largest row count of `linear`'s input that takes the bandwidth-bound GEMV path
/// instead of gemm (the decoder runs 1..5 token rows per step).
pub const GEMV_MAX_M: usize = 8;

/// Multiply-adds below which a kernel stays on the calling thread. Waking rayon's idle
/// workers costs several microseconds; this much work takes ~10 µs on one core. Measured:
/// a 1×512→512 GEMV (262 K multiply-adds) ran in 12 µs on one thread but 25 µs split in
/// two. gemm's own threading threshold (48·48·256 ≈ 590 K) is of the same order.
pub const MIN_PARALLEL_FMAS: usize = 1 << 19;

/// Query rows from which attention uses gemm blocks instead of direct dot-product loops
/// (measured: direct wins only for a single query row).
pub const ATTENTION_GEMM_MIN_TQ: usize = 2;

/// Query rows per (head, block) task of the gemm attention path; its score scratch is
/// this many rows times the key count (128 × 1500 floats = 750 KiB fits a Zen 4 L2;
/// 64 rows repack K and V twice as often, 256 gained nothing).
pub const ATTENTION_Q_BLOCK: usize = 128;

/// Elements per task for element-wise kernels (add, gelu) on large slices.
pub const ELEMENTWISE_CHUNK: usize = 1 << 15;
