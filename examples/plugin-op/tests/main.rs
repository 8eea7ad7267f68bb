//! Tests of the example plugin: CPU and NPU-sim kernels, Graphviz, dynamic loading, errors and
//! the guide's walkthrough, in one binary (one link).

mod common;

mod cpu;
mod dot;
mod dynamic;
mod errors;
mod guide;
mod npu_sim;
