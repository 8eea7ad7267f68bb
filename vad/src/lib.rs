//! Silero VAD v6, a second model on the runtime: the graph ([`graph`]), loading and
//! running it over a recording ([`model`]), and turning its per-window speech
//! probabilities into speech segments and back-mapped times ([`segments`]), as
//! faster-whisper's `vad_filter` does.
//!
//! The weights come from the ONNX file shipped in the faster-whisper wheel, converted by
//! `weights-tool convert --from onnx` (`scripts/fetch-model.sh vad`).

pub mod graph;
pub mod model;
pub mod segments;

pub use model::{find_vad_dir, SpeechProber, VadError, VadModel};
pub use segments::{speech_segments, SpeechMap, SpeechSegment, VadOptions};
