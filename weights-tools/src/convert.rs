//! CTranslate2 Whisper model directory → the project's model directory
//! (`model.safetensors` with OpenAI whisper state-dict names, `config.json`,
//! `vocabulary.txt`, `tokenizer.json`). The mapping is documented in `docs/weights.md`.

use amanuensis_runtime::files::{read_regular, NO_LIMIT};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use amanuensis_whisper_config::{WhisperConfig, WhisperDims, CONFIG_FORMAT, CONFIG_VERSION};
use safetensors::Dtype;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ct2::{Ct2DType, Ct2Error, Ct2Model, Ct2Variable};
use crate::fsutil::{write_atomic, WriteError};
use crate::st::{serialize_safetensors, validate, TensorRef};

/// Version of this converter, recorded in the output's metadata.
pub const CONVERTER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Name of the tensor layout written (OpenAI whisper state-dict names, fused tensors split).
pub const LAYOUT: &str = "openai-whisper-v1";
/// The only CT2 spec this converter understands.
pub const SUPPORTED_SPEC: &str = "WhisperSpec";
/// Highest WhisperSpec revision understood.
pub const MAX_SPEC_REVISION: u32 = 3;
/// CT2's `Activation::GELU` (exact erf form), the only activation Whisper uses.
const CT2_ACTIVATION_GELU: i64 = 3;

/// Why a conversion failed.
#[derive(Debug, Error)]
pub enum ConvertError {
    /// A file could not be read or written.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The output directory is the input's (or holds a CTranslate2 model): writing there
    /// would replace the source's `config.json` and tokenizer files.
    #[error("the output directory {output} holds the CTranslate2 model being converted (its model.bin); write the conversion to another directory")]
    OutputIsInput { output: PathBuf },
    /// `model.bin` is malformed.
    #[error(transparent)]
    Ct2(#[from] Ct2Error),
    /// The model is not a Whisper model.
    #[error("{file}: unsupported model spec {spec:?} (only {SUPPORTED_SPEC} is supported)")]
    UnsupportedSpec { file: String, spec: Option<String> },
    /// The WhisperSpec revision is newer than this converter.
    #[error("{file}: unsupported {SUPPORTED_SPEC} revision {revision} (at most {MAX_SPEC_REVISION} is supported)")]
    UnsupportedRevision { file: String, revision: u32 },
    /// A required variable is absent.
    #[error("{file}: missing variable '{name}'")]
    MissingVariable { file: String, name: String },
    /// A variable's shape differs from what the other shapes imply.
    #[error("{file}: variable '{name}' has shape {shape:?}, expected {expected}")]
    UnexpectedShape {
        file: String,
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    /// A tensor is not float16/float32 (e.g. a quantised model).
    #[error("{file}: variable '{name}' has dtype {dtype}; only float16 and float32 tensors are supported (re-convert the model without quantization)")]
    UnsupportedDType {
        file: String,
        name: String,
        dtype: Ct2DType,
    },
    /// A variable the converter does not know (it would be silently lost).
    #[error("{file}: unexpected variable(s) not part of the Whisper layout: {names}")]
    UnexpectedVariables { file: String, names: String },
    /// A model setting that the runtime does not implement.
    #[error("{file}: unsupported setting '{name}' = {value} (expected {expected})")]
    UnsupportedSetting {
        file: String,
        name: String,
        value: String,
        expected: String,
    },
    /// The key part of a fused bias is not zero (Whisper's key projections have no bias).
    #[error("{file}: '{name}' has a non-zero key bias at element {index} (value bits 0x{bits:08x}); Whisper key projections have no bias")]
    NonZeroKeyBias {
        file: String,
        name: String,
        index: usize,
        bits: u32,
    },
    /// Layer numbering is not 0..L-1.
    #[error("{file}: {stack} layers are not numbered 0..L-1: found {found:?}")]
    BadLayerNumbering {
        file: String,
        stack: &'static str,
        found: Vec<usize>,
    },
    /// A companion file (config.json, vocabulary.txt, tokenizer.json) is invalid.
    #[error("{path}: {reason}")]
    BadCompanion { path: PathBuf, reason: String },
    /// The model's dimensions contradict the name given.
    #[error("model name '{name}' implies {expected:?} but the tensors give {derived:?}")]
    NameMismatch {
        name: String,
        expected: Box<WhisperDims>,
        derived: Box<WhisperDims>,
    },
    /// No `--name` was given and the dimensions match no published size.
    #[error(
        "the model's dimensions {0:?} match no published Whisper size; pass a name explicitly"
    )]
    NameRequired(Box<WhisperDims>),
    /// Serialising the safetensors file failed.
    #[error("cannot serialize {path}: {detail}")]
    Serialize { path: PathBuf, detail: String },
}

/// One output tensor, its bytes borrowed from `model.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutTensor<'a> {
    /// OpenAI whisper state-dict name.
    pub name: String,
    /// F16 or F32, as stored in the source.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Little-endian payload.
    pub data: &'a [u8],
}

/// The mapped model: derived dimensions and the output tensors in OpenAI order.
#[derive(Debug, Clone)]
pub struct WhisperTensors<'a> {
    /// Dimensions derived from tensor shapes and the head-count scalars.
    pub dims: WhisperDims,
    /// Output tensors.
    pub tensors: Vec<OutTensor<'a>>,
}

/// The fields of CT2's Whisper `config.json` this project uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ct2WhisperConfig {
    /// `[layer, head]` pairs of the alignment heads.
    pub alignment_heads: Vec<[u32; 2]>,
    /// Language token ids.
    pub lang_ids: Vec<u32>,
    /// Ids suppressed at every step.
    pub suppress_ids: Vec<u32>,
    /// Ids suppressed at the first step.
    pub suppress_ids_begin: Vec<u32>,
}

/// Number of output tensors for a model with the given layer counts.
pub fn expected_tensor_count(n_audio_layer: usize, n_text_layer: usize) -> usize {
    // encoder: conv1 (2) + conv2 (2) + positional (1) + ln_post (2) + 15 per block
    // decoder: token_embedding + positional (2) + ln (2) + 24 per block
    7 + 15 * n_audio_layer + 4 + 24 * n_text_layer
}

/// Tracks which CT2 variables were consumed, so that leftovers are reported.
struct Source<'m, 'a> {
    model: &'m Ct2Model<'a>,
    file: &'m str,
    used: HashSet<String>,
    out: Vec<OutTensor<'a>>,
}

impl<'m, 'a> Source<'m, 'a> {
    fn get(&mut self, name: &str) -> Result<&'m Ct2Variable<'a>, ConvertError> {
        let v = self
            .model
            .variable(name)
            .ok_or_else(|| ConvertError::MissingVariable {
                file: self.file.to_string(),
                name: name.to_string(),
            })?;
        self.used.insert(name.to_string());
        Ok(v)
    }

    /// A float tensor whose rank is checked; its shape is returned for derivation.
    fn float_of_rank(
        &mut self,
        name: &str,
        rank: usize,
    ) -> Result<&'m Ct2Variable<'a>, ConvertError> {
        let v = self.get(name)?;
        if !matches!(v.dtype, Ct2DType::F16 | Ct2DType::F32) {
            return Err(ConvertError::UnsupportedDType {
                file: self.file.to_string(),
                name: name.to_string(),
                dtype: v.dtype,
            });
        }
        if v.shape.len() != rank {
            return Err(ConvertError::UnexpectedShape {
                file: self.file.to_string(),
                name: name.to_string(),
                shape: v.shape.clone(),
                expected: format!("rank {rank}"),
            });
        }
        Ok(v)
    }

    /// A float tensor of exactly `shape`.
    fn float(&mut self, name: &str, shape: &[usize]) -> Result<&'m Ct2Variable<'a>, ConvertError> {
        let v = self.float_of_rank(name, shape.len())?;
        if v.shape != shape {
            return Err(ConvertError::UnexpectedShape {
                file: self.file.to_string(),
                name: name.to_string(),
                shape: v.shape.clone(),
                expected: format!("{shape:?}"),
            });
        }
        Ok(v)
    }

    /// An integer scalar; `None` when absent and `optional`.
    fn scalar(&mut self, name: &str, optional: bool) -> Result<Option<i64>, ConvertError> {
        if optional && self.model.variable(name).is_none() {
            return Ok(None);
        }
        let v = self.get(name)?;
        match v.scalar_int() {
            Some(x) => Ok(Some(x)),
            None => Err(ConvertError::UnexpectedShape {
                file: self.file.to_string(),
                name: name.to_string(),
                shape: v.shape.clone(),
                expected: format!(
                    "an integer scalar (found {} of rank {})",
                    v.dtype,
                    v.shape.len()
                ),
            }),
        }
    }

    fn emit(&mut self, name: String, v: &Ct2Variable<'a>, shape: Vec<usize>, data: &'a [u8]) {
        let dtype = match v.dtype {
            Ct2DType::F32 => Dtype::F32,
            _ => Dtype::F16,
        };
        self.out.push(OutTensor {
            name,
            dtype,
            shape,
            data,
        });
    }

    /// Copies a tensor unchanged.
    fn copy(&mut self, from: &str, shape: &[usize], to: String) -> Result<(), ConvertError> {
        let v = self.float(from, shape)?;
        self.emit(to, v, shape.to_vec(), v.data);
        Ok(())
    }

    /// LayerNorm `gamma`/`beta` → `weight`/`bias`.
    fn layer_norm(&mut self, from: &str, d: usize, to: &str) -> Result<(), ConvertError> {
        self.copy(&format!("{from}/gamma"), &[d], format!("{to}.weight"))?;
        self.copy(&format!("{from}/beta"), &[d], format!("{to}.bias"))
    }

    /// Linear `weight` [out, in] and `bias` [out].
    fn linear(&mut self, from: &str, out: usize, inp: usize, to: &str) -> Result<(), ConvertError> {
        self.copy(
            &format!("{from}/weight"),
            &[out, inp],
            format!("{to}.weight"),
        )?;
        self.copy(&format!("{from}/bias"), &[out], format!("{to}.bias"))
    }

    /// Splits a fused linear of `parts.len() * d` output rows into `d`-row pieces. The part
    /// named `key` has no bias in Whisper: its bias slice must be zero and is dropped.
    fn split_linear(
        &mut self,
        from: &str,
        d: usize,
        inp: usize,
        parts: &[&str],
    ) -> Result<(), ConvertError> {
        let n = parts.len();
        let wname = format!("{from}/weight");
        let bname = format!("{from}/bias");
        let w = self.float(&wname, &[n * d, inp])?;
        let b = self.float(&bname, &[n * d])?;
        let wpart = d * inp * w.dtype.item_size();
        let bpart = d * b.dtype.item_size();
        for (i, to) in parts.iter().enumerate() {
            self.emit(
                format!("{to}.weight"),
                w,
                vec![d, inp],
                &w.data[i * wpart..(i + 1) * wpart],
            );
            let bias = &b.data[i * bpart..(i + 1) * bpart];
            if to.ends_with(".key") {
                check_zero(bias, b.dtype).map_err(|(index, bits)| {
                    ConvertError::NonZeroKeyBias {
                        file: self.file.to_string(),
                        name: bname.clone(),
                        index: i * d + index,
                        bits,
                    }
                })?;
            } else {
                self.emit(format!("{to}.bias"), b, vec![d], bias);
            }
        }
        Ok(())
    }
}

/// `Err((index, bits))` for the first element that is not +0 or -0.
fn check_zero(data: &[u8], dtype: Ct2DType) -> Result<(), (usize, u32)> {
    match dtype {
        Ct2DType::F16 => {
            for (i, c) in data.chunks_exact(2).enumerate() {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                if bits & 0x7fff != 0 {
                    return Err((i, u32::from(bits)));
                }
            }
        }
        _ => {
            for (i, c) in data.chunks_exact(4).enumerate() {
                let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if bits & 0x7fff_ffff != 0 {
                    return Err((i, bits));
                }
            }
        }
    }
    Ok(())
}

/// Layer indices under `prefix` (`encoder/layer_`), checked to be exactly 0..L-1.
fn layer_count(
    model: &Ct2Model<'_>,
    file: &str,
    stack: &'static str,
) -> Result<usize, ConvertError> {
    let prefix = format!("{stack}/layer_");
    let mut found = BTreeSet::new();
    for v in &model.variables {
        if let Some(rest) = v.name.strip_prefix(&prefix) {
            let num = rest.split('/').next().unwrap_or("");
            match num.parse::<usize>() {
                // Reject "01" and the like so each layer has exactly one spelling.
                Ok(n) if n.to_string() == num => {
                    found.insert(n);
                }
                _ => {} // left unconsumed: reported as an unexpected variable
            }
        }
    }
    let found: Vec<usize> = found.into_iter().collect();
    if found.is_empty() || found.last().copied() != Some(found.len() - 1) {
        return Err(ConvertError::BadLayerNumbering {
            file: file.to_string(),
            stack,
            found,
        });
    }
    Ok(found.len())
}

fn check_setting(
    src: &mut Source<'_, '_>,
    name: &str,
    expected: i64,
    meaning: &str,
) -> Result<(), ConvertError> {
    if let Some(v) = src.scalar(name, true)? {
        if v != expected {
            return Err(ConvertError::UnsupportedSetting {
                file: src.file.to_string(),
                name: name.to_string(),
                value: v.to_string(),
                expected: format!("{expected}: {meaning}"),
            });
        }
    }
    Ok(())
}

// `usize::is_multiple_of` is newer than the workspace's rust-version.
#[allow(clippy::manual_is_multiple_of)]
fn head_count(src: &mut Source<'_, '_>, name: &str, d: usize) -> Result<usize, ConvertError> {
    let h = src.scalar(name, false)?.unwrap_or(0);
    match usize::try_from(h) {
        Ok(h) if h > 0 && d % h == 0 => Ok(h),
        _ => Err(ConvertError::UnsupportedSetting {
            file: src.file.to_string(),
            name: name.to_string(),
            value: h.to_string(),
            expected: format!("a positive divisor of the model width {d}"),
        }),
    }
}

/// Maps a parsed CT2 Whisper model onto OpenAI whisper tensor names, checking every shape.
pub fn map_whisper<'a>(
    model: &Ct2Model<'a>,
    file: &str,
) -> Result<WhisperTensors<'a>, ConvertError> {
    if model.spec_name.as_deref() != Some(SUPPORTED_SPEC) {
        return Err(ConvertError::UnsupportedSpec {
            file: file.to_string(),
            spec: model.spec_name.clone(),
        });
    }
    let revision = model.spec_revision.unwrap_or(0);
    if revision > MAX_SPEC_REVISION {
        return Err(ConvertError::UnsupportedRevision {
            file: file.to_string(),
            revision,
        });
    }
    let n_audio_layer = layer_count(model, file, "encoder")?;
    let n_text_layer = layer_count(model, file, "decoder")?;
    let mut src = Source {
        model,
        file,
        used: HashSet::new(),
        out: Vec::new(),
    };

    // Widths and lengths come from the shapes of the first tensors of each kind.
    let conv1 = src.float_of_rank("encoder/conv1/weight", 3)?;
    let (d, n_mels) = (conv1.shape[0], conv1.shape[1]);
    src.float("encoder/conv1/weight", &[d, n_mels, 3])?;
    let n_audio_ctx = src
        .float_of_rank("encoder/position_encodings/encodings", 2)?
        .shape[0];
    let emb = src.float_of_rank("decoder/embeddings/weight", 2)?;
    let (n_vocab, d_text) = (emb.shape[0], emb.shape[1]);
    let n_text_ctx = src
        .float_of_rank("decoder/position_encodings/encodings", 2)?
        .shape[0];
    if d_text != d {
        return Err(ConvertError::UnexpectedShape {
            file: file.to_string(),
            name: "decoder/embeddings/weight".to_string(),
            shape: emb.shape.clone(),
            expected: format!("[n_vocab, {d}] (decoder width equal to the encoder width)"),
        });
    }
    let n_audio_head = head_count(&mut src, "encoder/num_heads", d)?;
    let n_text_head = head_count(&mut src, "decoder/num_heads", d)?;
    let ffn = 4 * d; // Whisper's MLP width is fixed at 4 * d_model.

    check_setting(
        &mut src,
        "decoder/activation",
        CT2_ACTIVATION_GELU,
        "GELU (erf)",
    )?;
    check_setting(&mut src, "decoder/pre_norm", 1, "pre-norm blocks")?;
    check_setting(
        &mut src,
        "decoder/scale_embeddings",
        0,
        "unscaled token embeddings",
    )?;
    check_setting(&mut src, "decoder/alibi", 0, "no ALiBi")?;
    check_setting(
        &mut src,
        "decoder/start_from_zero_embedding",
        0,
        "no zero start embedding",
    )?;
    // Generic decoder word-timing defaults; Whisper's real alignment heads are in config.json.
    src.scalar("decoder/alignment_layer", true)?;
    src.scalar("decoder/alignment_heads", true)?;

    // Encoder.
    src.copy(
        "encoder/conv1/weight",
        &[d, n_mels, 3],
        "encoder.conv1.weight".into(),
    )?;
    src.copy("encoder/conv1/bias", &[d], "encoder.conv1.bias".into())?;
    src.copy(
        "encoder/conv2/weight",
        &[d, d, 3],
        "encoder.conv2.weight".into(),
    )?;
    src.copy("encoder/conv2/bias", &[d], "encoder.conv2.bias".into())?;
    src.copy(
        "encoder/position_encodings/encodings",
        &[n_audio_ctx, d],
        "encoder.positional_embedding".into(),
    )?;
    for n in 0..n_audio_layer {
        let f = format!("encoder/layer_{n}");
        let t = format!("encoder.blocks.{n}");
        src.layer_norm(
            &format!("{f}/self_attention/layer_norm"),
            d,
            &format!("{t}.attn_ln"),
        )?;
        src.split_linear(
            &format!("{f}/self_attention/linear_0"),
            d,
            d,
            &[
                &format!("{t}.attn.query"),
                &format!("{t}.attn.key"),
                &format!("{t}.attn.value"),
            ],
        )?;
        src.linear(
            &format!("{f}/self_attention/linear_1"),
            d,
            d,
            &format!("{t}.attn.out"),
        )?;
        src.layer_norm(&format!("{f}/ffn/layer_norm"), d, &format!("{t}.mlp_ln"))?;
        src.linear(&format!("{f}/ffn/linear_0"), ffn, d, &format!("{t}.mlp.0"))?;
        src.linear(&format!("{f}/ffn/linear_1"), d, ffn, &format!("{t}.mlp.2"))?;
    }
    src.layer_norm("encoder/layer_norm", d, "encoder.ln_post")?;

    // Decoder.
    src.copy(
        "decoder/embeddings/weight",
        &[n_vocab, d],
        "decoder.token_embedding.weight".into(),
    )?;
    src.copy(
        "decoder/position_encodings/encodings",
        &[n_text_ctx, d],
        "decoder.positional_embedding".into(),
    )?;
    for n in 0..n_text_layer {
        let f = format!("decoder/layer_{n}");
        let t = format!("decoder.blocks.{n}");
        src.layer_norm(
            &format!("{f}/self_attention/layer_norm"),
            d,
            &format!("{t}.attn_ln"),
        )?;
        src.split_linear(
            &format!("{f}/self_attention/linear_0"),
            d,
            d,
            &[
                &format!("{t}.attn.query"),
                &format!("{t}.attn.key"),
                &format!("{t}.attn.value"),
            ],
        )?;
        src.linear(
            &format!("{f}/self_attention/linear_1"),
            d,
            d,
            &format!("{t}.attn.out"),
        )?;
        src.layer_norm(
            &format!("{f}/attention/layer_norm"),
            d,
            &format!("{t}.cross_attn_ln"),
        )?;
        src.linear(
            &format!("{f}/attention/linear_0"),
            d,
            d,
            &format!("{t}.cross_attn.query"),
        )?;
        src.split_linear(
            &format!("{f}/attention/linear_1"),
            d,
            d,
            &[
                &format!("{t}.cross_attn.key"),
                &format!("{t}.cross_attn.value"),
            ],
        )?;
        src.linear(
            &format!("{f}/attention/linear_2"),
            d,
            d,
            &format!("{t}.cross_attn.out"),
        )?;
        src.layer_norm(&format!("{f}/ffn/layer_norm"), d, &format!("{t}.mlp_ln"))?;
        src.linear(&format!("{f}/ffn/linear_0"), ffn, d, &format!("{t}.mlp.0"))?;
        src.linear(&format!("{f}/ffn/linear_1"), d, ffn, &format!("{t}.mlp.2"))?;
    }
    src.layer_norm("decoder/layer_norm", d, "decoder.ln")?;

    // The output projection must be the token embedding (tied); it is not duplicated.
    const PROJ: &str = "decoder/projection/weight";
    if let Some(target) = model.alias_target(PROJ) {
        if target != "decoder/embeddings/weight" {
            return Err(ConvertError::UnsupportedSetting {
                file: file.to_string(),
                name: PROJ.to_string(),
                value: format!("alias of '{target}'"),
                expected: "alias of 'decoder/embeddings/weight' (tied output projection)"
                    .to_string(),
            });
        }
    } else if let Some(p) = model.variable(PROJ) {
        src.used.insert(PROJ.to_string());
        if p.shape != emb.shape || p.dtype != emb.dtype || p.data != emb.data {
            return Err(ConvertError::UnsupportedSetting {
                file: file.to_string(),
                name: PROJ.to_string(),
                value: "a separate matrix".to_string(),
                expected: "equal to 'decoder/embeddings/weight' (tied output projection)"
                    .to_string(),
            });
        }
    }

    let leftovers: Vec<&str> = model
        .variables
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| !src.used.contains(*n))
        .collect();
    if !leftovers.is_empty() {
        let shown: Vec<&str> = leftovers.iter().take(8).copied().collect();
        let more = if leftovers.len() > 8 {
            format!(" and {} more", leftovers.len() - 8)
        } else {
            String::new()
        };
        return Err(ConvertError::UnexpectedVariables {
            file: file.to_string(),
            names: format!("{}{more}", shown.join(", ")),
        });
    }

    let dims = WhisperDims {
        n_mels,
        n_audio_ctx,
        n_audio_state: d,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state: d,
        n_text_head,
        n_text_layer,
        n_vocab,
    };
    debug_assert_eq!(
        src.out.len(),
        expected_tensor_count(n_audio_layer, n_text_layer)
    );
    Ok(WhisperTensors {
        dims,
        tensors: src.out,
    })
}

/// Sizes tried, in order, when naming a model from its dimensions.
const KNOWN_SIZES: &[&str] = &[
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v2",
    "large-v3",
    "large-v3-turbo",
];

/// `whisper-<size>` for the first published size with these dimensions.
pub fn default_name(dims: &WhisperDims) -> Option<String> {
    KNOWN_SIZES
        .iter()
        .find(|s| WhisperDims::for_size(s).as_ref() == Some(dims))
        .map(|s| format!("whisper-{s}"))
}

/// Builds the project's `config.json` contents, checking ids against the dimensions.
pub fn build_config(
    name: &str,
    dims: WhisperDims,
    ct2: &Ct2WhisperConfig,
    path: &Path,
) -> Result<WhisperConfig, ConvertError> {
    let bad = |reason: String| ConvertError::BadCompanion {
        path: path.to_path_buf(),
        reason,
    };
    let vocab = dims.n_vocab as u64;
    for (key, ids) in [
        ("lang_ids", &ct2.lang_ids),
        ("suppress_ids", &ct2.suppress_ids),
        ("suppress_ids_begin", &ct2.suppress_ids_begin),
    ] {
        if let Some(id) = ids.iter().find(|&&id| u64::from(id) >= vocab) {
            return Err(bad(format!(
                "{key} contains id {id}, outside the vocabulary of {vocab}"
            )));
        }
    }
    if ct2.lang_ids.is_empty() {
        return Err(bad("lang_ids is empty".to_string()));
    }
    for &[layer, head] in &ct2.alignment_heads {
        if layer as usize >= dims.n_text_layer || head as usize >= dims.n_text_head {
            return Err(bad(format!(
                "alignment head [{layer}, {head}] is outside {} decoder layers x {} heads",
                dims.n_text_layer, dims.n_text_head
            )));
        }
    }
    Ok(WhisperConfig {
        format: CONFIG_FORMAT.to_string(),
        version: CONFIG_VERSION,
        name: name.to_string(),
        dims,
        suppress_ids: ct2.suppress_ids.clone(),
        suppress_ids_begin: ct2.suppress_ids_begin.clone(),
        alignment_heads: ct2.alignment_heads.clone(),
        lang_ids: ct2.lang_ids.clone(),
    })
}

/// What `convert_ct2` is asked to do.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// A CT2 model directory, or the `model.bin` inside one.
    pub input: PathBuf,
    /// Output model directory (created if needed).
    pub output: PathBuf,
    /// Model name for `config.json`; derived from the dimensions when `None`.
    pub name: Option<String>,
}

/// What `convert_ct2` produced.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    /// Model name written to `config.json`.
    pub name: String,
    /// Derived dimensions.
    pub dims: WhisperDims,
    /// Number of tensors written.
    pub tensor_count: usize,
    /// Size of `model.safetensors`.
    pub safetensors_bytes: u64,
    /// sha256 of the source `model.bin`, lower-case hex.
    pub source_sha256: String,
    /// The output directory.
    pub output: PathBuf,
}

impl From<WriteError> for ConvertError {
    fn from(e: WriteError) -> ConvertError {
        ConvertError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConvertError> {
    read_regular(path, NO_LIMIT).map_err(|source| ConvertError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Number of entries of a CT2 `vocabulary.txt` (split on `\n`; a final newline ends the
/// last entry rather than starting an empty one; empty lines are real entries).
pub fn vocabulary_len(text: &[u8]) -> usize {
    if text.is_empty() {
        return 0;
    }
    let newlines = text.iter().filter(|&&b| b == b'\n').count();
    if text.last() == Some(&b'\n') {
        newlines
    } else {
        newlines + 1
    }
}

/// Converts a CT2 Whisper model directory into the project's model directory.
///
/// Files are written atomically (temporary file, then rename); `config.json` is written
/// last, so a directory with a `config.json` holds a complete conversion.
pub fn convert_ct2(opts: &ConvertOptions) -> Result<ConvertSummary, ConvertError> {
    let (dir, bin_path) = if opts.input.is_dir() {
        (opts.input.clone(), opts.input.join("model.bin"))
    } else {
        let dir = opts
            .input
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        (dir, opts.input.clone())
    };
    // Before anything is read or written: converting into the source directory overwrote
    // its CTranslate2 config.json, and the source could no longer be converted.
    let same_dir = match (dir.canonicalize(), opts.output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_dir || opts.output.join("model.bin").exists() {
        return Err(ConvertError::OutputIsInput {
            output: opts.output.clone(),
        });
    }
    let bin = read(&bin_path)?;
    let label = bin_path.display().to_string();
    let model = Ct2Model::parse(&bin, &label)?;
    let mapped = map_whisper(&model, &label)?;

    let cfg_path = dir.join("config.json");
    let cfg_bytes = read(&cfg_path)?;
    let ct2_cfg: Ct2WhisperConfig =
        serde_json::from_slice(&cfg_bytes).map_err(|e| ConvertError::BadCompanion {
            path: cfg_path.clone(),
            reason: format!("not a CT2 Whisper config: {e}"),
        })?;
    let name = match &opts.name {
        Some(n) => {
            let size = n.strip_prefix("whisper-").unwrap_or(n);
            if let Some(expected) = WhisperDims::for_size(size) {
                if expected != mapped.dims {
                    return Err(ConvertError::NameMismatch {
                        name: n.clone(),
                        expected: Box::new(expected),
                        derived: Box::new(mapped.dims),
                    });
                }
            }
            n.clone()
        }
        None => {
            default_name(&mapped.dims).ok_or(ConvertError::NameRequired(Box::new(mapped.dims)))?
        }
    };
    let config = build_config(&name, mapped.dims, &ct2_cfg, &cfg_path)?;

    let vocab_path = dir.join("vocabulary.txt");
    let vocab = read(&vocab_path)?;
    let entries = vocabulary_len(&vocab);
    if entries != mapped.dims.n_vocab {
        return Err(ConvertError::BadCompanion {
            path: vocab_path,
            reason: format!(
                "has {entries} entries but the embedding has {} rows",
                mapped.dims.n_vocab
            ),
        });
    }
    let tok_path = dir.join("tokenizer.json");
    let tok = read(&tok_path)?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&tok) {
        return Err(ConvertError::BadCompanion {
            path: tok_path,
            reason: format!("not valid JSON: {e}"),
        });
    }

    let source_sha256 = sha256_hex(&bin);
    let metadata: BTreeMap<String, String> = [
        ("format", "pt".to_string()),
        ("layout", LAYOUT.to_string()),
        ("name", name.clone()),
        (
            "converter",
            format!("amanuensis weights-tool {CONVERTER_VERSION}"),
        ),
        ("source_format", "ctranslate2".to_string()),
        ("source_file", "model.bin".to_string()),
        ("source_sha256", source_sha256.clone()),
        ("source_binary_version", model.binary_version.to_string()),
        (
            "source_spec",
            format!(
                "{SUPPORTED_SPEC} revision {}",
                model.spec_revision.unwrap_or(0)
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let out_dir = &opts.output;
    std::fs::create_dir_all(out_dir).map_err(|source| ConvertError::Io {
        op: "create directory",
        path: out_dir.clone(),
        source,
    })?;
    let st_path = out_dir.join("model.safetensors");
    let refs: Vec<TensorRef<'_>> = mapped
        .tensors
        .iter()
        .map(|t| TensorRef {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: t.data,
        })
        .collect();
    let serialized =
        serialize_safetensors(&refs, &metadata).map_err(|e| ConvertError::Serialize {
            path: st_path.clone(),
            detail: e.to_string(),
        })?;
    // Read the header back with the reference reader: what we write must be what we read.
    validate(&serialized, &st_path).map_err(|e| ConvertError::Serialize {
        path: st_path.clone(),
        detail: e.to_string(),
    })?;

    // A config.json present means a complete conversion: drop a stale one before replacing
    // the other files, and write the new one last.
    let cfg_out = out_dir.join("config.json");
    match std::fs::remove_file(&cfg_out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConvertError::Io {
                op: "remove",
                path: cfg_out,
                source,
            })
        }
    }
    write_atomic(&out_dir.join("vocabulary.txt"), &vocab)?;
    write_atomic(&out_dir.join("tokenizer.json"), &tok)?;
    write_atomic(&st_path, &serialized)?;
    let mut cfg_json =
        serde_json::to_string_pretty(&config).map_err(|e| ConvertError::Serialize {
            path: out_dir.join("config.json"),
            detail: e.to_string(),
        })?;
    cfg_json.push('\n');
    write_atomic(&out_dir.join("config.json"), cfg_json.as_bytes())?;

    Ok(ConvertSummary {
        name,
        dims: mapped.dims,
        tensor_count: mapped.tensors.len(),
        safetensors_bytes: serialized.len() as u64,
        source_sha256,
        output: out_dir.clone(),
    })
}
