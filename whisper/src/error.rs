//! The library's error: one enum whose variants a caller can match to tell a bad audio
//! file from a missing model, broken weights, an invalid graph, a device that cannot be
//! used, or a decoding failure.

use crate::alignment::AlignmentError;
use crate::decoding::DecodeError;
use crate::tokenizer::TokenizerError;
use amanuensis_audio::AudioError;
use amanuensis_runtime::{OpError, RuntimeError};
use std::path::PathBuf;

/// Everything the Whisper pipeline can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The audio could not be read or decoded.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// No model directory of that name in the searched folders.
    #[error(
        "model '{name}' not found (looked for {file} in: {}). Run `scripts/fetch-model.sh base` to download and convert whisper-base, or set {env}.",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ModelNotFound {
        name: String,
        file: &'static str,
        env: &'static str,
        searched: Vec<PathBuf>,
    },
    /// `--model` named a directory path that holds no model.
    #[error(
        "model directory {} {}. Give a model directory made by `scripts/fetch-model.sh` (e.g. models/whisper-base) or a model name such as `base`.",
        path.display(),
        if *exists { format!("has no {file}") } else { "does not exist".to_string() }
    )]
    ModelDirNotFound {
        path: PathBuf,
        file: &'static str,
        exists: bool,
    },
    /// A file of the model directory (config, weights) is unreadable or does not match
    /// the graph.
    #[error("{path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// The vocabulary or `tokenizer.json` is unreadable or unusable, or a language has no
    /// token.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The graph file is missing, invalid, or its graphs do not produce what Whisper needs.
    #[error("graph {origin}: {reason}")]
    Graph { origin: String, reason: String },
    /// The runtime rejected a graph, its weights or a run of it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A tensor given to or returned by a graph has the wrong type or shape.
    #[error("tensor: {0}")]
    Tensor(#[from] OpError),
    /// The device cannot be made or planned for.
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    /// The decoding policy's options or the model's outputs are inconsistent.
    #[error(transparent)]
    Decoding(#[from] DecodeError),
    /// Word alignment got inconsistent shapes or parameters.
    #[error(transparent)]
    Alignment(#[from] AlignmentError),
    /// A batch size (windows decoded together) outside `1..=max`.
    #[error("batch size {given} is not in 1..={max} (windows decoded together)")]
    BatchSize { given: usize, max: usize },
    /// A transcription option outside its range (named as the library's field).
    #[error("{option}: {reason}")]
    Option {
        option: &'static str,
        reason: String,
    },
    /// The voice-activity model could not be loaded or run.
    #[error(transparent)]
    Vad(#[from] amanuensis_vad::VadError),
    /// The model's interrupt flag was set: the caller stopped the transcription.
    #[error("transcription interrupted")]
    Interrupted,
}

impl From<amanuensis_xrt::XrtError> for Error {
    fn from(e: amanuensis_xrt::XrtError) -> Error {
        Error::Device {
            device: "npu".into(),
            reason: e.to_string(),
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of a graph's outputs or structure.
    pub(crate) fn graph(origin: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Graph {
            origin: origin.into(),
            reason: reason.into(),
        }
    }
}
