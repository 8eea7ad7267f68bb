//! `add`, `add_inplace` and `add_rows_inplace`: one f32 addition per element, so the
//! result must equal the scalar f32 sum exactly (IEEE addition is correctly rounded).

use crate::common::Rng;
use amanuensis_kernels::cpu;
use proptest::prelude::*;

fn check_all(len: usize, cols: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = rng.vec(len, -100.0, 100.0);
    let b = rng.vec(len, -1.0, 1.0);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();

    let mut out = vec![f32::NAN; len];
    cpu::add(&a, &b, &mut out);
    assert_eq!(out, want, "add len={len}");

    let mut acc = a.clone();
    cpu::add_inplace(&mut acc, &b);
    assert_eq!(acc, want, "add_inplace len={len}");

    let rows = len / cols;
    let row = &b[..cols];
    let mut acc = a[..rows * cols].to_vec();
    cpu::add_rows_inplace(&mut acc, row);
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(
                acc[r * cols + c],
                a[r * cols + c] + row[c],
                "add_rows_inplace r={r} c={c}"
            );
        }
    }
}

#[test]
fn add_encoder_residual_shape() {
    // 1500 frames x 512: large enough to take the parallel path.
    check_all(1500 * 512, 512, 1);
}

#[test]
fn add_rows_bias_shape() {
    check_all(1500 * 2048, 2048, 2);
}

#[test]
fn add_rows_empty_row_is_a_no_op() {
    let mut acc: Vec<f32> = vec![];
    cpu::add_rows_inplace(&mut acc, &[]);
    let mut acc = vec![1.0f32; 3];
    cpu::add_rows_inplace(&mut acc[..0], &[1.0]);
    assert_eq!(acc, [1.0; 3]);
}

proptest! {
    #[test]
    fn add_matches_scalar(len in 1usize..=300, cols in 1usize..=17, seed in any::<u64>()) {
        check_all(len.max(cols), cols, seed);
    }
}
