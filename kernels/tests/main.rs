//! Kernel tests: CPU kernels against f64 references, NPU references bit-exact against their
//! contracts; one module per kernel family, in one binary (one link).

mod common;

mod activation;
mod attention;
mod bf16;
mod conv;
mod elementwise;
mod int8;
mod linear;
mod norm;
mod npu_bit_exact;
mod npu_kernels;
mod recurrent;
mod softmax;
