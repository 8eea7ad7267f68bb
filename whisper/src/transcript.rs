//! What a transcription produces: segments with their words and times, the whole
//! transcript, and the compression ratio that flags repetitive text. Every other module
//! of the crate may use these; they use nothing of the crate.

use serde::Serialize;
use std::time::Duration;

/// What to do with the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Transcribe,
    Translate,
}

/// One segment of the transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: usize,
    /// Mel frame at which the window that produced this segment starts.
    pub seek: usize,
    /// Seconds from the start of the audio (millisecond precision).
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f32,
    /// gzip-style compression ratio of the text (high for repetitive hallucinations).
    pub compression_ratio: f64,
    pub temperature: f32,
    /// Word-level timing, when requested (also used internally by the refinement).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// One word with its timing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    /// The word as it appears in the text, with its leading space.
    pub word: String,
    pub probability: f32,
}

/// One window's decoded tokens as split at their timestamp pairs, before word timing
/// and before the window's results become transcript [`Segment`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSegment {
    /// Start, seconds from the start of the audio.
    pub start: f64,
    /// End, seconds from the start of the audio.
    pub end: f64,
    /// Decoded text of the segment's text tokens (leading space kept).
    pub text: String,
    /// The segment's tokens, timestamps included.
    pub tokens: Vec<u32>,
}

/// `len(text) / len(zlib(text))` in UTF-8 bytes, as faster-whisper computes it to detect
/// repetitive output.
pub fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    let compressed = enc.finish().unwrap_or_default();
    bytes.len() as f64 / compressed.len().max(1) as f64
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub features: Duration,
    pub encoder: Duration,
    pub cross_kv: Duration,
    pub decoder: Duration,
    /// Windows encoded.
    pub windows: usize,
    /// Decoder-step runs (one per generated token, plus the prompt, per window).
    pub decoder_steps: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Whole transcription, audio already decoded.
    pub total: Duration,
}

/// The result of transcribing one audio signal.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub language: String,
    /// Probability of the language when it was detected rather than given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_probability: Option<f32>,
    pub task: Task,
    /// Seconds of audio.
    pub duration: f32,
    pub segments: Vec<Segment>,
    /// All segment texts joined, leading/trailing spaces trimmed.
    pub text: String,
    /// Set when the transcription was stopped before the end of the audio
    /// (`WhisperModel::stop_early`): the seconds of audio it covers whole, from the start.
    /// A batched transcription may also hold segments past it: batches decoded before the
    /// stop can lie beyond a window's rest that was still to decode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f32>,
    #[serde(skip)]
    pub timings: Timings,
}
