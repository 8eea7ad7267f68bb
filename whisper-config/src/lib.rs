//! The model directory's `config.json`: Whisper hyper-parameters and the token ids the
//! decoding policy needs. Written by `weights-tool convert`, read by the pipeline.

use serde::{Deserialize, Serialize};

/// Format tag of `config.json`, checked on load.
pub const CONFIG_FORMAT: &str = "amanuensis-whisper-config";
/// Version of `config.json`; bump when a field changes meaning.
pub const CONFIG_VERSION: u32 = 1;

/// Whisper's hyper-parameters, named as in OpenAI's `ModelDimensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhisperDims {
    pub n_mels: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_vocab: usize,
}

impl WhisperDims {
    /// Hyper-parameters of the published Whisper sizes (OpenAI's model cards).
    pub fn for_size(size: &str) -> Option<WhisperDims> {
        let (n_mels, state, heads, layers, n_vocab) = match size {
            "tiny" | "tiny.en" => (80, 384, 6, 4, 51865),
            "base" | "base.en" => (80, 512, 8, 6, 51865),
            "small" | "small.en" => (80, 768, 12, 12, 51865),
            "medium" | "medium.en" => (80, 1024, 16, 24, 51865),
            "large" | "large-v1" | "large-v2" => (80, 1280, 20, 32, 51865),
            "large-v3" | "large-v3-turbo" | "turbo" => (128, 1280, 20, 32, 51866),
            _ => return None,
        };
        let n_vocab = if size.ends_with(".en") {
            51864
        } else {
            n_vocab
        };
        let text_layers = if size == "large-v3-turbo" || size == "turbo" {
            4
        } else {
            layers
        };
        Some(WhisperDims {
            n_mels,
            n_audio_ctx: 1500,
            n_audio_state: state,
            n_audio_head: heads,
            n_audio_layer: layers,
            n_text_ctx: 448,
            n_text_state: state,
            n_text_head: heads,
            n_text_layer: text_layers,
            n_vocab,
        })
    }
}

/// Contents of a model directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhisperConfig {
    /// Always [`CONFIG_FORMAT`].
    pub format: String,
    /// [`CONFIG_VERSION`] when written.
    pub version: u32,
    /// Model name, e.g. `whisper-base`.
    pub name: String,
    pub dims: WhisperDims,
    /// Token ids suppressed at every step (faster-whisper's expanded `suppress_tokens=[-1]`).
    pub suppress_ids: Vec<u32>,
    /// Token ids suppressed at the first sampled step (`suppress_blank`).
    pub suppress_ids_begin: Vec<u32>,
    /// `[layer, head]` pairs of the cross-attention heads that align text to audio.
    pub alignment_heads: Vec<[u32; 2]>,
    /// Ids of the language tokens, `<|en|>` first.
    pub lang_ids: Vec<u32>,
}
