//! Numeric kernels on plain slices.
//!
//! [`cpu`] holds the f32 CPU kernels that run Whisper's encoder and decoder: row-major
//! slices in, row-major slices out, shapes passed explicitly. Callers validate shapes;
//! the kernels only check lengths with `debug_assert!`.

pub mod cpu;
