//! f32 CPU kernels on row-major slices, parallelised on rayon's global pool.
//!
//! Every kernel picks the widest instruction set the CPU offers at run time (AVX2+FMA on
//! x86_64, NEON on aarch64) and falls back to portable code elsewhere; nothing depends on
//! compile-time `target-cpu` flags.

mod activation;
#[cfg(target_arch = "x86_64")]
mod amx;
mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_avx512;
pub mod bf16;
mod checks;
mod conv;
mod elementwise;
pub mod int8;
mod linear;
mod math;
mod norm;
mod parallel;
mod recurrent;
pub mod sgemm;
mod simd;
mod softmax;
pub mod tuning;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod portable_tests;

pub use activation::{gelu, gelu_f32, gelu_without_avx512, relu, sigmoid};
pub use attention::{
    attention, attention_bf16, attention_bf16_best, attention_bf16x3, attention_bf16x3_widest,
    attention_blocked, attention_direct, attention_direct_f16kv, attention_direct_f16kv_on,
    attention_direct_kv, AttentionKernel, AttentionShape, F16KvPath, KvStrides,
};
pub use conv::{conv1d, conv1d_batch, conv1d_out_len};
pub use elementwise::{add, add_inplace, add_rows_inplace};
pub use linear::{
    linear, linear_gemm, linear_gemm_w, linear_gemv, linear_gemv_w, linear_group_up_to_w,
    linear_up_to, linear_up_to_w, matmul, LinearPart, Weight,
};
pub use norm::layer_norm;
pub use recurrent::lstm;
pub use softmax::{softmax_inplace, sum_exp_f64};
