//! Whisper speech-to-text run as a serialized operator graph.
//!
//! Data flows one way: PCM (from `amanuensis-audio`) → the `features` graph (log-mel of
//! the whole recording, or of a file a window at a time: [`spectrogram`]) → per 30-s window the `encoder` and `cross_kv` graphs → the
//! `decoder_step` graph driven by a decoding policy ([`decoding`]: greedy, beam search,
//! temperature fallback) → tokens → segments, optionally word-timed ([`alignment`])
//! ([`window_loop`]) into a [`Transcript`] ([`transcript`]). The graphs are built from hyper-parameters ([`graph`]) and run by
//! `amanuensis-runtime`. [`Transcriber`] is the entry point.

pub mod alignment;
pub mod compute;
pub mod decoding;
pub mod devices;
pub mod error;
pub mod graph;
pub mod hallucination;
pub mod lockstep;
pub mod model;
pub mod refine;
pub mod spectrogram;
pub mod speech_filter;
pub mod tokenizer;
pub mod transcriber;
pub mod transcript;
mod warm_pool;
pub mod window_loop;

/// `config.json`, in a crate of its own so that `weights-tool` needs nothing else.
pub use amanuensis_whisper_config as config;
pub use error::{Error, Result};
pub use model::{DeviceSpec, WhisperModel};
pub use speech_filter::SpeechReport;
pub use transcriber::Transcriber;
pub use transcript::{Segment, Task, Transcript, Word};
pub use window_loop::{Progress, TranscribeOptions};
