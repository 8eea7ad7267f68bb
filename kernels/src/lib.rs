//! Numeric kernels on plain slices.
//!
//! [`cpu`] holds the f32 CPU kernels that run Whisper's encoder and decoder: row-major
//! slices in, row-major slices out, shapes passed explicitly. Callers validate shapes;
//! the kernels only check lengths with `debug_assert!`.
//!
//! [`npu`] is the NPU kernel catalogue: each kernel's contract (tile shape, bf16 inputs
//! with f32 accumulation, accumulation order, rounding, tile-memory footprint) and its
//! bit-exact CPU reference, which the NPU timing simulator executes (`docs/kernels.md`).

pub mod cpu;
pub mod npu;
