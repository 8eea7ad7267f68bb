//! Amanuensis: OpenAI Whisper speech-to-text run as a serialized operator graph.
//!
//! Data flows one way: audio ([`audio`]) → the `encoder` graph (log-mel, conv stem,
//! transformer) → the `cross_kv` graph → the `decoder_step` graph driven by a decoding
//! policy ([`decoding`]) → tokens → text and segments ([`transcribe`]). The graphs are
//! built from hyper-parameters ([`whisper::graph`]) and run by `amanuensis-runtime`.

pub mod audio;
pub mod decoding;
pub mod model;
pub mod tokenizer;
pub mod transcribe;
pub mod wer;
pub mod whisper;

pub use model::WhisperModel;
pub use transcribe::{Task, TranscribeOptions, Transcript};
