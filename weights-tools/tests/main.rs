//! weights-tool tests: CTranslate2 parsing, conversion and verification, and the Silero VAD
//! ONNX conversion, in one binary (one link). ct2_alloc.rs counts allocations with a global
//! allocator and has a binary of its own.

mod common;

mod convert_synthetic;
mod ct2_parse;
mod real_model;
mod silero_convert;
mod silero_real;
mod verify;
