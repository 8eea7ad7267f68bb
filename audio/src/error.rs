//! The error of every audio operation; each names the file or in-memory source.

use crate::limits::{MAX_SOURCE_RATE, MIN_SOURCE_RATE};

/// Errors raised while opening or decoding audio; each names the file (or in-memory source).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("cannot read audio file {file}: {source}")]
    Io {
        /// The file concerned.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no content at all.
    #[error("{file} is empty (0 bytes)")]
    Empty {
        /// The file concerned.
        file: String,
    },
    /// The content is not a container this build can read.
    #[error("{file} is not a recognised audio file: {detail}")]
    UnrecognisedFormat {
        /// The file concerned.
        file: String,
        /// What was found instead.
        detail: String,
    },
    /// A recognised container holds a codec this build does not decode.
    #[error("{file}: unsupported codec {codec} in a {container} file (supported: {supported})")]
    UnsupportedCodec {
        /// The file concerned.
        file: String,
        /// The container, e.g. "WAV".
        container: &'static str,
        /// The codec, with its format tag where known.
        codec: String,
        /// The codecs this build decodes in such a container.
        supported: &'static str,
    },
    /// The container or the sample data is damaged or cut short.
    #[error("{file}: truncated or corrupt audio data: {detail}")]
    Corrupt {
        /// The file concerned.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// The stream declares zero channels.
    #[error("{file}: the audio stream declares 0 channels")]
    NoChannels {
        /// The file concerned.
        file: String,
    },
    /// The stream's sample rate is missing or outside the accepted range.
    #[error("{file}: sample rate {rate} Hz is outside the supported range {MIN_SOURCE_RATE}..={MAX_SOURCE_RATE} Hz")]
    BadSampleRate {
        /// The file concerned.
        file: String,
        /// The declared rate (0 if none was declared).
        rate: u64,
    },
    /// The container holds no decodable audio track.
    #[error(
        "{file}: no audio track in a codec this build decodes (supported: {SUPPORTED_CODECS})"
    )]
    NoTrack {
        /// The file concerned.
        file: String,
    },
    /// The resampler could not be built or run.
    #[error("{file}: resampling from {rate} Hz to 16000 Hz failed: {detail}")]
    Resample {
        /// The file concerned.
        file: String,
        /// The source rate.
        rate: u32,
        /// The resampler's message.
        detail: String,
    },
}

pub(crate) fn corrupt(file: &str, detail: impl Into<String>) -> AudioError {
    AudioError::Corrupt {
        file: file.to_string(),
        detail: detail.into(),
    }
}

/// Codecs decoded inside containers other than WAV, for error messages.
pub(crate) const SUPPORTED_CODECS: &str =
    "PCM, FLAC, MP3 (MPEG layers I-III), Vorbis, Opus, AAC-LC, ALAC";

/// Codecs decoded inside WAV files, for error messages.
pub(crate) const SUPPORTED_WAV_CODECS: &str = "PCM integer, IEEE float, A-law, mu-law";

/// Containers read, for error messages.
pub(crate) const SUPPORTED_CONTAINERS: &str =
    "WAV, AIFF, CAF, FLAC, MP3, Ogg (Vorbis, Opus, FLAC), MP4/M4A, ADTS AAC, Matroska/WebM";
