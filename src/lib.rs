//! Amanuensis: OpenAI Whisper speech-to-text run as a serialized operator graph.
//!
//! Audio input lives in `amanuensis-audio`, Whisper (model, decoding, alignment, the
//! window loop) in `amanuensis-whisper`; this crate holds the command line, the output
//! formats ([`output`]) and the trace file ([`tracefile`]), and re-exports the library API.

pub mod output;
pub mod reproduce;
pub mod scheduling;
pub mod serve;
pub mod tracefile;

pub use amanuensis_audio as audio;
/// Silero VAD: the second model, for `--vad` and `amanuensis vad`.
pub use amanuensis_vad as vad;
pub use amanuensis_whisper::{
    alignment, compute, decoding, devices, lockstep, model, refine, spectrogram, speech_filter,
    tokenizer, transcript, window_loop,
};
pub use amanuensis_whisper::{
    DeviceSpec, Error, Progress, Result, Segment, Task, TranscribeOptions, Transcriber, Transcript,
    WhisperModel, Word,
};

/// Whisper's hyper-parameters, model config and graph builder.
pub mod whisper {
    pub use amanuensis_whisper::{config, graph};
}
