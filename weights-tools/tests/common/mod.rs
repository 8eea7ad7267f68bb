//! Shared test helpers: a writer of synthetic CTranslate2 `model.bin` files, a tiny
//! Whisper-shaped model, synthetic Silero VAD ONNX models (`silero`), and scratch
//! directories.
#![allow(dead_code)]

pub mod silero;

use std::path::{Path, PathBuf};

use half::f16;

/// CT2 dtype ids.
pub const F32: u8 = 0;
pub const I8: u8 = 1;
pub const I16: u8 = 2;
pub const F16: u8 = 4;

/// One variable to write.
#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub shape: Vec<u32>,
    pub dtype: u8,
    pub payload: Vec<u8>,
    /// Overrides the byte count (v4+) or element count (v1..3) field.
    pub declared: Option<u32>,
}

fn item_size(dtype: u8) -> usize {
    match dtype {
        1 => 1,
        2 | 4 | 5 => 2,
        _ => 4,
    }
}

impl Var {
    /// A tensor whose element `i` is `fill(i)`.
    pub fn float(name: &str, shape: &[u32], dtype: u8, fill: impl Fn(usize) -> f32) -> Var {
        let n: usize = shape.iter().map(|&d| d as usize).product();
        let mut payload = Vec::with_capacity(n * item_size(dtype));
        for i in 0..n {
            let x = fill(i);
            match dtype {
                F16 => payload.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                F32 => payload.extend_from_slice(&x.to_le_bytes()),
                I8 => payload.push(x as i8 as u8),
                I16 => payload.extend_from_slice(&(x as i16).to_le_bytes()),
                _ => panic!("unsupported test dtype {dtype}"),
            }
        }
        Var {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            payload,
            declared: None,
        }
    }

    /// An int8 scalar.
    pub fn i8(name: &str, v: i8) -> Var {
        Var {
            name: name.to_string(),
            shape: vec![],
            dtype: I8,
            payload: vec![v as u8],
            declared: None,
        }
    }

    /// An int16 scalar.
    pub fn i16(name: &str, v: i16) -> Var {
        Var {
            name: name.to_string(),
            shape: vec![],
            dtype: I16,
            payload: v.to_le_bytes().to_vec(),
            declared: None,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Serialises a `model.bin` of `version`; `spec` is written for version >= 2, aliases for >= 3.
pub fn ct2_bytes(
    version: u32,
    spec: (&str, u32),
    vars: &[Var],
    aliases: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&version.to_le_bytes());
    if version >= 2 {
        put_str(&mut out, spec.0);
        out.extend_from_slice(&spec.1.to_le_bytes());
    }
    out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for v in vars {
        put_str(&mut out, &v.name);
        out.push(v.shape.len() as u8);
        for d in &v.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        if version >= 4 {
            out.push(v.dtype);
            out.extend_from_slice(&v.declared.unwrap_or(v.payload.len() as u32).to_le_bytes());
        } else {
            let size = item_size(v.dtype);
            out.push(size as u8);
            out.extend_from_slice(
                &v.declared
                    .unwrap_or((v.payload.len() / size) as u32)
                    .to_le_bytes(),
            );
        }
        out.extend_from_slice(&v.payload);
    }
    if version >= 3 {
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            put_str(&mut out, a);
            put_str(&mut out, t);
        }
    }
    out
}

/// Shape of a tiny Whisper-like model.
#[derive(Debug, Clone, Copy)]
pub struct Tiny {
    pub d: u32,
    pub heads: i16,
    pub n_mels: u32,
    pub audio_ctx: u32,
    pub text_ctx: u32,
    pub vocab: u32,
    pub enc_layers: u32,
    pub dec_layers: u32,
    pub dtype: u8,
}

impl Default for Tiny {
    fn default() -> Tiny {
        Tiny {
            d: 8,
            heads: 2,
            n_mels: 4,
            audio_ctx: 6,
            text_ctx: 5,
            vocab: 11,
            enc_layers: 2,
            dec_layers: 1,
            dtype: F16,
        }
    }
}

/// Distinct, deterministic values per tensor (`seed`) and element.
fn pattern(seed: usize) -> impl Fn(usize) -> f32 {
    move |i| (((seed * 7919 + i * 31) % 2001) as f32 - 1000.0) / 512.0
}

/// Same as `pattern`, but zero for elements in `zero` (the key slice of a fused bias).
fn pattern_zero(seed: usize, zero: std::ops::Range<usize>) -> impl Fn(usize) -> f32 {
    move |i| {
        if zero.contains(&i) {
            0.0
        } else {
            pattern(seed)(i)
        }
    }
}

/// All variables of a CT2 WhisperSpec model of shape `t`, sorted by name like CT2 writes them.
pub fn tiny_whisper(t: Tiny) -> Vec<Var> {
    let (d, f) = (t.d, 4 * t.d);
    let du = d as usize;
    let mut vars = Vec::new();
    let mut seed = 0;
    let mut add = |vars: &mut Vec<Var>, name: String, shape: &[u32]| {
        seed += 1;
        vars.push(Var::float(&name, shape, t.dtype, pattern(seed)));
    };
    add(&mut vars, "encoder/conv1/weight".into(), &[d, t.n_mels, 3]);
    add(&mut vars, "encoder/conv1/bias".into(), &[d]);
    add(&mut vars, "encoder/conv2/weight".into(), &[d, d, 3]);
    add(&mut vars, "encoder/conv2/bias".into(), &[d]);
    add(
        &mut vars,
        "encoder/position_encodings/encodings".into(),
        &[t.audio_ctx, d],
    );
    for stack in ["encoder", "decoder"] {
        let layers = if stack == "encoder" {
            t.enc_layers
        } else {
            t.dec_layers
        };
        for n in 0..layers {
            let p = format!("{stack}/layer_{n}");
            for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
                add(&mut vars, format!("{p}/{ln}/gamma"), &[d]);
                add(&mut vars, format!("{p}/{ln}/beta"), &[d]);
            }
            add(
                &mut vars,
                format!("{p}/self_attention/linear_0/weight"),
                &[3 * d, d],
            );
            vars.push(Var::float(
                &format!("{p}/self_attention/linear_0/bias"),
                &[3 * d],
                t.dtype,
                pattern_zero(1000 + n as usize, du..2 * du),
            ));
            add(
                &mut vars,
                format!("{p}/self_attention/linear_1/weight"),
                &[d, d],
            );
            add(&mut vars, format!("{p}/self_attention/linear_1/bias"), &[d]);
            add(&mut vars, format!("{p}/ffn/linear_0/weight"), &[f, d]);
            add(&mut vars, format!("{p}/ffn/linear_0/bias"), &[f]);
            add(&mut vars, format!("{p}/ffn/linear_1/weight"), &[d, f]);
            add(&mut vars, format!("{p}/ffn/linear_1/bias"), &[d]);
            if stack == "decoder" {
                add(&mut vars, format!("{p}/attention/layer_norm/gamma"), &[d]);
                add(&mut vars, format!("{p}/attention/layer_norm/beta"), &[d]);
                add(&mut vars, format!("{p}/attention/linear_0/weight"), &[d, d]);
                add(&mut vars, format!("{p}/attention/linear_0/bias"), &[d]);
                add(
                    &mut vars,
                    format!("{p}/attention/linear_1/weight"),
                    &[2 * d, d],
                );
                vars.push(Var::float(
                    &format!("{p}/attention/linear_1/bias"),
                    &[2 * d],
                    t.dtype,
                    pattern_zero(2000 + n as usize, 0..du),
                ));
                add(&mut vars, format!("{p}/attention/linear_2/weight"), &[d, d]);
                add(&mut vars, format!("{p}/attention/linear_2/bias"), &[d]);
            }
        }
    }
    add(&mut vars, "encoder/layer_norm/gamma".into(), &[d]);
    add(&mut vars, "encoder/layer_norm/beta".into(), &[d]);
    add(&mut vars, "decoder/embeddings/weight".into(), &[t.vocab, d]);
    add(
        &mut vars,
        "decoder/position_encodings/encodings".into(),
        &[t.text_ctx, d],
    );
    add(&mut vars, "decoder/layer_norm/gamma".into(), &[d]);
    add(&mut vars, "decoder/layer_norm/beta".into(), &[d]);
    vars.push(Var::i16("encoder/num_heads", t.heads));
    vars.push(Var::i16("decoder/num_heads", t.heads));
    vars.push(Var::i8("decoder/activation", 3));
    vars.push(Var::i8("decoder/alibi", 0));
    vars.push(Var::i16("decoder/alignment_heads", 1));
    vars.push(Var::i16("decoder/alignment_layer", -1));
    vars.push(Var::i8("decoder/pre_norm", 1));
    vars.push(Var::i8("decoder/scale_embeddings", 0));
    vars.push(Var::i8("decoder/start_from_zero_embedding", 0));
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    vars
}

/// The alias every CT2 Whisper model has.
pub const PROJECTION_ALIAS: (&str, &str) =
    ("decoder/projection/weight", "decoder/embeddings/weight");

/// `model.bin` bytes of a tiny WhisperSpec revision 3, binary version 6 model.
pub fn tiny_whisper_bytes(t: Tiny) -> Vec<u8> {
    ct2_bytes(6, ("WhisperSpec", 3), &tiny_whisper(t), &[PROJECTION_ALIAS])
}

/// Vocabulary text of `n` entries, including an empty one (as at id 50256 of the real file).
pub fn vocabulary_text(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i == 1 {
                "\n".to_string()
            } else {
                format!("tok{i}\n")
            }
        })
        .collect()
}

/// CT2 `config.json` for a model with `vocab` entries and at least 1 decoder layer / 2 heads.
pub fn ct2_config_json(vocab: u32) -> String {
    format!(
        r#"{{"alignment_heads": [[0, 1], [0, 0]], "lang_ids": [{}, {}], "suppress_ids": [1, 2, 7], "suppress_ids_begin": [3, {}]}}"#,
        vocab - 3,
        vocab - 2,
        vocab - 1
    )
}

/// Writes a complete CT2 model directory.
pub fn write_ct2_dir(dir: &Path, model_bin: &[u8], vocab: u32) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.bin"), model_bin).unwrap();
    std::fs::write(dir.join("config.json"), ct2_config_json(vocab)).unwrap();
    std::fs::write(dir.join("vocabulary.txt"), vocabulary_text(vocab as usize)).unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"model": {"type": "BPE"}}"#).unwrap();
}

/// A fresh, empty scratch directory under cargo's per-target temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("weights-tools")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names of all files in `dir` (sorted), or empty when it does not exist.
pub fn dir_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

/// Every output tensor name and shape for a model of the given dims, in OpenAI's naming,
/// written out independently of the converter.
pub fn expected_tensors(
    d: usize,
    n_mels: usize,
    audio_ctx: usize,
    text_ctx: usize,
    vocab: usize,
    enc_layers: usize,
    dec_layers: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("encoder.conv1.weight".into(), vec![d, n_mels, 3]),
        ("encoder.conv1.bias".into(), vec![d]),
        ("encoder.conv2.weight".into(), vec![d, d, 3]),
        ("encoder.conv2.bias".into(), vec![d]),
        ("encoder.positional_embedding".into(), vec![audio_ctx, d]),
        ("encoder.ln_post.weight".into(), vec![d]),
        ("encoder.ln_post.bias".into(), vec![d]),
        ("decoder.token_embedding.weight".into(), vec![vocab, d]),
        ("decoder.positional_embedding".into(), vec![text_ctx, d]),
        ("decoder.ln.weight".into(), vec![d]),
        ("decoder.ln.bias".into(), vec![d]),
    ];
    let attn = |v: &mut Vec<(String, Vec<usize>)>, p: &str| {
        for part in ["query", "key", "value", "out"] {
            v.push((format!("{p}.{part}.weight"), vec![d, d]));
            if part != "key" {
                v.push((format!("{p}.{part}.bias"), vec![d]));
            }
        }
    };
    let common = |v: &mut Vec<(String, Vec<usize>)>, b: &str| {
        for ln in ["attn_ln", "mlp_ln"] {
            v.push((format!("{b}.{ln}.weight"), vec![d]));
            v.push((format!("{b}.{ln}.bias"), vec![d]));
        }
        v.push((format!("{b}.mlp.0.weight"), vec![4 * d, d]));
        v.push((format!("{b}.mlp.0.bias"), vec![4 * d]));
        v.push((format!("{b}.mlp.2.weight"), vec![d, 4 * d]));
        v.push((format!("{b}.mlp.2.bias"), vec![d]));
    };
    for n in 0..enc_layers {
        let b = format!("encoder.blocks.{n}");
        common(&mut v, &b);
        attn(&mut v, &format!("{b}.attn"));
    }
    for n in 0..dec_layers {
        let b = format!("decoder.blocks.{n}");
        common(&mut v, &b);
        attn(&mut v, &format!("{b}.attn"));
        attn(&mut v, &format!("{b}.cross_attn"));
        v.push((format!("{b}.cross_attn_ln.weight"), vec![d]));
        v.push((format!("{b}.cross_attn_ln.bias"), vec![d]));
    }
    v.sort();
    v
}
