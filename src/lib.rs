//! Amanuensis: OpenAI Whisper speech-to-text run as a serialized operator graph.
//!
//! Data flows one way: audio ([`audio`]) → the `features` graph (log-mel of the whole
//! recording) → per 30-s window the `encoder` and `cross_kv` graphs → the `decoder_step`
//! graph driven by a decoding policy ([`decoding`]: greedy, beam search, temperature
//! fallback) → tokens → segments, optionally word-timed ([`alignment`]) ([`transcribe`]) →
//! txt/srt/vtt/json/tsv ([`output`]). The graphs are built from hyper-parameters
//! ([`whisper::graph`]) and run by `amanuensis-runtime`. [`Transcriber`] is the entry point.

pub mod alignment;
pub mod audio;
pub mod decoding;
pub mod model;
pub mod output;
pub mod pauses;
pub mod scheduling;
pub mod tokenizer;
pub mod tracefile;
pub mod transcribe;
pub mod transcriber;
pub mod wer;
pub mod whisper;

pub use model::{DeviceSpec, WhisperModel};
pub use transcribe::{Task, TranscribeOptions, Transcript};
pub use transcriber::Transcriber;
