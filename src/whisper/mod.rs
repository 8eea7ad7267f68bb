//! Whisper-specific pieces: hyper-parameters, model config, the graph builder.

pub mod config;
pub mod graph;
