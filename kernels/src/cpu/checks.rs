//! Length checks that guard the kernels' raw-pointer code.
//!
//! Kernels that hand raw pointers to gemm or write through [`super::parallel::SendPtr`]
//! check their slice lengths with these even in release builds: a wrong length there would
//! not be a panic but an out-of-bounds access. The checks are O(1) per call.

/// Panics unless `len` is exactly `rows * cols` (computed without overflow).
#[track_caller]
pub(crate) fn require_len(what: &str, len: usize, rows: usize, cols: usize) {
    assert!(
        rows.checked_mul(cols) == Some(len),
        "{what}: length {len} is not {rows} x {cols}"
    );
}

/// Panics unless a strided matrix of `rows` rows, row stride `stride`, and `width` used
/// columns fits in `len` elements with rows not overlapping (`width <= stride`).
#[track_caller]
pub(crate) fn require_strided(what: &str, len: usize, rows: usize, stride: usize, width: usize) {
    let needed = match rows {
        0 => Some(0),
        r => (r - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(width)),
    };
    assert!(
        width <= stride || rows <= 1,
        "{what}: row width {width} exceeds row stride {stride}"
    );
    assert!(
        needed.is_some_and(|n| n <= len),
        "{what}: {rows} rows of stride {stride} and width {width} exceed length {len}"
    );
}
