//! Activation functions.

use rayon::prelude::*;

use super::math::{gelu_one, gelu_one_f32};
use super::simd::multiversion;
use super::tuning::ELEMENTWISE_CHUNK;

#[inline(always)]
fn gelu_slice<const FMA: bool>(x: &mut [f32]) {
    // Fixed-size groups give the vectoriser several independent register chains per
    // iteration; one 4-lane f64 chain alone leaves the FMA units waiting on latency.
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for v in c.iter_mut() {
            *v = gelu_one::<FMA>(*v);
        }
    }
    for v in chunks.into_remainder() {
        *v = gelu_one::<FMA>(*v);
    }
}

multiversion! {
    fn gelu_avx2_or_baseline(x: &mut [f32]) => gelu_slice
}

/// [`gelu_slice`] compiled for AVX-512 where the CPU has it (eight f64 lanes instead of
/// four), else as `multiversion!` picks. Every step is the same IEEE operation (the same
/// fused multiply-adds) whatever the vector width, so the bits are those of the AVX2
/// compilation (`kernels/tests/activation.rs` checks it).
pub(crate) fn gelu_serial(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && super::simd::has_avx2_fma() {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn wide512(x: &mut [f32]) {
            gelu_slice::<true>(x)
        }
        // SAFETY: AVX-512F, AVX2 and FMA were just detected.
        return unsafe { wide512(x) };
    }
    gelu_avx2_or_baseline(x)
}

/// The AVX2 (or baseline) compilation of [`gelu`] alone, for tests that compare it with
/// the AVX-512 one.
#[doc(hidden)]
pub fn gelu_without_avx512(x: &mut [f32]) {
    gelu_avx2_or_baseline(x)
}

#[inline(always)]
fn gelu_f32_slice<const FMA: bool>(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_one_f32::<FMA>(*v);
    }
}

multiversion! {
    fn gelu_f32_serial(x: &mut [f32]) => gelu_f32_slice
}

/// [`gelu`] evaluated in f32: relative error below 2e-6 (normal results), about 2.4 times
/// as fast. For inputs that go on into bf16 products, whose rounding is thousands of times
/// larger.
pub fn gelu_f32(x: &mut [f32]) {
    if x.len() > 2 * ELEMENTWISE_CHUNK {
        x.par_chunks_mut(ELEMENTWISE_CHUNK)
            .for_each(gelu_f32_serial);
    } else {
        gelu_f32_serial(x);
    }
}

/// GELU in place, exact erf form 0.5·x·(1 + erf(x/√2)), relative error below 1.5e-7
/// (f64 evaluation, one final rounding to f32; see `tests/activation.rs`).
pub fn gelu(x: &mut [f32]) {
    if x.len() > 2 * ELEMENTWISE_CHUNK {
        x.par_chunks_mut(ELEMENTWISE_CHUNK).for_each(gelu_serial);
    } else {
        gelu_serial(x);
    }
}

/// ReLU in place: negative values become +0; NaN and −0 pass through (ONNX `Relu`).
pub fn relu(x: &mut [f32]) {
    for v in x {
        if *v < 0.0 {
            *v = 0.0;
        }
    }
}

/// The logistic sigmoid 1 / (1 + e^−x) in place, within a few ulp of the exact value.
pub fn sigmoid(x: &mut [f32]) {
    for v in x {
        *v = super::recurrent::sigmoid_one(*v);
    }
}
