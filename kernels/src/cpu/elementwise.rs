//! Element-wise additions (residual connections and bias rows).

use rayon::prelude::*;

use super::tuning::ELEMENTWISE_CHUNK;

/// `out = a + b` element-wise; all three slices have the same length.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    debug_assert_eq!(a.len(), b.len());
    debug_assert_eq!(a.len(), out.len());
    let body = |(o, (x, y)): (&mut [f32], (&[f32], &[f32]))| {
        for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
            *o = x + y;
        }
    };
    if out.len() > 2 * ELEMENTWISE_CHUNK {
        out.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                a.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(b.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(body);
    } else {
        body((out, (a, b)));
    }
}

/// `acc += b` element-wise; both slices have the same length.
pub fn add_inplace(acc: &mut [f32], b: &[f32]) {
    debug_assert_eq!(acc.len(), b.len());
    let body = |(o, y): (&mut [f32], &[f32])| {
        for (o, y) in o.iter_mut().zip(y) {
            *o += y;
        }
    };
    if acc.len() > 2 * ELEMENTWISE_CHUNK {
        acc.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(b.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(body);
    } else {
        body((acc, b));
    }
}

/// `acc[r, c] += row[c]` for every row r of `acc` (`acc.len()` is a multiple of `row.len()`).
pub fn add_rows_inplace(acc: &mut [f32], row: &[f32]) {
    let cols = row.len();
    if cols == 0 {
        return;
    }
    debug_assert_eq!(acc.len() % cols, 0);
    let body = |block: &mut [f32]| {
        for r in block.chunks_exact_mut(cols) {
            for (o, y) in r.iter_mut().zip(row) {
                *o += y;
            }
        }
    };
    if acc.len() > 2 * ELEMENTWISE_CHUNK {
        let rows_per_task = (ELEMENTWISE_CHUNK / cols).max(1);
        acc.par_chunks_mut(rows_per_task * cols).for_each(body);
    } else {
        body(acc);
    }
}
