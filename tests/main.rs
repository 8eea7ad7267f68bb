//! Integration tests of the amanuensis crate, one module per area, in one binary (one link).
//! Tests that install a global allocator to measure memory have binaries of their own:
//! audio_formats.rs and fuzz_regressions.rs.

mod common;

mod accuracy;
mod alignment;
mod audio_io;
mod batch;
mod beam_search;
mod cli;
mod compute_int8;
mod conformance;
mod decoding;
mod graph_file;
mod long_form;
mod npu_fallback;
mod npu_sim;
mod output_formats;
mod plan_executes;
mod reference_jfk;
mod reproduce_xdna;
mod serve;
mod streamed;
mod tokenizer_encode;
mod trace;
mod vad;
mod wer;
mod word_timestamps;
