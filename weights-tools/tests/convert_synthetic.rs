//! The CT2 → safetensors converter on tiny synthetic Whisper models: naming, splitting of
//! fused tensors, derived dimensions, config.json, provenance, and every rejection.

use std::path::Path;

use crate::common::*;
use amanuensis_weights_tools::convert::{
    convert_ct2, expected_tensor_count, sha256_hex, vocabulary_len, ConvertError, ConvertOptions,
    LAYOUT,
};
use amanuensis_weights_tools::ct2::{Ct2DType, Ct2Model};
use amanuensis_weights_tools::inspect::{inspect_path, FileKind};
use amanuensis_weights_tools::st::{SafetensorsFile, SafetensorsReadError};
use amanuensis_whisper_config::{WhisperConfig, WhisperDims, CONFIG_FORMAT, CONFIG_VERSION};
use safetensors::Dtype;

fn convert(input: &Path, output: &Path, name: Option<&str>) -> Result<(), ConvertError> {
    convert_ct2(&ConvertOptions {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        name: name.map(str::to_string),
    })
    .map(|_| ())
}

/// Bytes of variable `name` in `vars`.
fn payload<'a>(vars: &'a [Var], name: &str) -> &'a [u8] {
    &vars
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .payload
}

#[test]
fn converts_tiny_model_with_many_layers() {
    // 11 encoder layers: CT2 sorts layer_10 before layer_2, which must not matter.
    let t = Tiny {
        enc_layers: 11,
        dec_layers: 2,
        ..Tiny::default()
    };
    let vars = tiny_whisper(t);
    let bin = ct2_bytes(6, ("WhisperSpec", 3), &vars, &[PROJECTION_ALIAS]);
    let dir = scratch("convert-tiny");
    let (src, out) = (dir.join("ct2"), dir.join("out"));
    write_ct2_dir(&src, &bin, t.vocab);

    let summary = convert_ct2(&ConvertOptions {
        input: src.join("model.bin"),
        output: out.clone(),
        name: Some("tiny-test".into()),
    })
    .expect("conversion");
    let dims = WhisperDims {
        n_mels: 4,
        n_audio_ctx: 6,
        n_audio_state: 8,
        n_audio_head: 2,
        n_audio_layer: 11,
        n_text_ctx: 5,
        n_text_state: 8,
        n_text_head: 2,
        n_text_layer: 2,
        n_vocab: 11,
    };
    assert_eq!(summary.dims, dims);
    assert_eq!(summary.tensor_count, 7 + 11 * 15 + 4 + 2 * 24);
    assert_eq!(summary.tensor_count, expected_tensor_count(11, 2));
    assert_eq!(summary.source_sha256, sha256_hex(&bin));
    assert_eq!(
        dir_listing(&out),
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocabulary.txt"
        ]
    );

    let st = SafetensorsFile::read(&out.join("model.safetensors")).unwrap();
    assert_eq!(summary.safetensors_bytes, st.bytes.len() as u64);
    let mut got: Vec<(String, Vec<usize>)> = st
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    got.sort();
    assert_eq!(got, expected_tensors(8, 4, 6, 5, 11, 11, 2));
    assert!(st.tensors.iter().all(|t| t.dtype == Dtype::F16));

    // Plain copies and renames are bit-exact.
    for (ours, theirs) in [
        ("encoder.conv1.weight", "encoder/conv1/weight"),
        (
            "encoder.positional_embedding",
            "encoder/position_encodings/encodings",
        ),
        (
            "encoder.blocks.10.attn_ln.weight",
            "encoder/layer_10/self_attention/layer_norm/gamma",
        ),
        (
            "encoder.blocks.10.attn_ln.bias",
            "encoder/layer_10/self_attention/layer_norm/beta",
        ),
        (
            "encoder.blocks.2.mlp.0.weight",
            "encoder/layer_2/ffn/linear_0/weight",
        ),
        (
            "encoder.blocks.2.mlp.2.bias",
            "encoder/layer_2/ffn/linear_1/bias",
        ),
        (
            "encoder.blocks.3.mlp_ln.weight",
            "encoder/layer_3/ffn/layer_norm/gamma",
        ),
        (
            "encoder.blocks.3.attn.out.weight",
            "encoder/layer_3/self_attention/linear_1/weight",
        ),
        ("encoder.ln_post.bias", "encoder/layer_norm/beta"),
        (
            "decoder.token_embedding.weight",
            "decoder/embeddings/weight",
        ),
        (
            "decoder.positional_embedding",
            "decoder/position_encodings/encodings",
        ),
        (
            "decoder.blocks.1.cross_attn.query.weight",
            "decoder/layer_1/attention/linear_0/weight",
        ),
        (
            "decoder.blocks.1.cross_attn.out.bias",
            "decoder/layer_1/attention/linear_2/bias",
        ),
        (
            "decoder.blocks.1.cross_attn_ln.weight",
            "decoder/layer_1/attention/layer_norm/gamma",
        ),
        (
            "decoder.blocks.0.attn_ln.bias",
            "decoder/layer_0/self_attention/layer_norm/beta",
        ),
        ("decoder.ln.weight", "decoder/layer_norm/gamma"),
    ] {
        assert_eq!(
            st.tensor_data(ours).unwrap(),
            payload(&vars, theirs),
            "{ours}"
        );
    }

    // Fused self-attention: rows [0,d) query, [d,2d) key, [2d,3d) value; 8x8 f16 = 128 bytes.
    for (stack, n) in [("encoder", 7), ("decoder", 1)] {
        let w = payload(
            &vars,
            &format!("{stack}/layer_{n}/self_attention/linear_0/weight"),
        );
        let b = payload(
            &vars,
            &format!("{stack}/layer_{n}/self_attention/linear_0/bias"),
        );
        let p = format!("{stack}.blocks.{n}.attn");
        assert_eq!(
            st.tensor_data(&format!("{p}.query.weight")).unwrap(),
            &w[0..128]
        );
        assert_eq!(
            st.tensor_data(&format!("{p}.key.weight")).unwrap(),
            &w[128..256]
        );
        assert_eq!(
            st.tensor_data(&format!("{p}.value.weight")).unwrap(),
            &w[256..384]
        );
        assert_eq!(
            st.tensor_data(&format!("{p}.query.bias")).unwrap(),
            &b[0..16]
        );
        assert_eq!(
            st.tensor_data(&format!("{p}.value.bias")).unwrap(),
            &b[32..48]
        );
        assert!(st.tensor(&format!("{p}.key.bias")).is_none());
    }
    // Fused cross-attention key/value: rows [0,d) key, [d,2d) value.
    let w = payload(&vars, "decoder/layer_1/attention/linear_1/weight");
    let b = payload(&vars, "decoder/layer_1/attention/linear_1/bias");
    assert_eq!(
        st.tensor_data("decoder.blocks.1.cross_attn.key.weight")
            .unwrap(),
        &w[0..128]
    );
    assert_eq!(
        st.tensor_data("decoder.blocks.1.cross_attn.value.weight")
            .unwrap(),
        &w[128..256]
    );
    assert_eq!(
        st.tensor_data("decoder.blocks.1.cross_attn.value.bias")
            .unwrap(),
        &b[16..32]
    );

    // Provenance.
    assert_eq!(st.metadata.get("layout").map(String::as_str), Some(LAYOUT));
    assert_eq!(st.metadata.get("source_sha256"), Some(&sha256_hex(&bin)));
    assert_eq!(
        st.metadata.get("source_format").map(String::as_str),
        Some("ctranslate2")
    );
    assert_eq!(
        st.metadata.get("source_spec").map(String::as_str),
        Some("WhisperSpec revision 3")
    );
    assert_eq!(
        st.metadata.get("name").map(String::as_str),
        Some("tiny-test")
    );
    assert!(st
        .metadata
        .get("converter")
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));

    // config.json: derived dims plus the id lists of CT2's config.json.
    let cfg: WhisperConfig =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg.format, CONFIG_FORMAT);
    assert_eq!(cfg.version, CONFIG_VERSION);
    assert_eq!(cfg.name, "tiny-test");
    assert_eq!(cfg.dims, dims);
    assert_eq!(cfg.alignment_heads, vec![[0, 1], [0, 0]]);
    assert_eq!(cfg.lang_ids, vec![8, 9]);
    assert_eq!(cfg.suppress_ids, vec![1, 2, 7]);
    assert_eq!(cfg.suppress_ids_begin, vec![3, 10]);

    // Companion files are copied byte for byte.
    for f in ["vocabulary.txt", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }

    // Converting again over the same directory gives identical bytes (deterministic).
    let first = st.bytes.clone();
    convert(&src, &out, Some("tiny-test")).unwrap();
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap() == first,
        "conversion is not deterministic"
    );
}

#[test]
fn float32_tensors_are_kept_as_float32() {
    let t = Tiny {
        dtype: F32,
        ..Tiny::default()
    };
    let vars = tiny_whisper(t);
    let dir = scratch("convert-f32");
    write_ct2_dir(&dir.join("ct2"), &tiny_whisper_bytes(t), t.vocab);
    convert(&dir.join("ct2"), &dir.join("out"), Some("test-tiny-f32")).unwrap();
    let st = SafetensorsFile::read(&dir.join("out/model.safetensors")).unwrap();
    assert!(st.tensors.iter().all(|t| t.dtype == Dtype::F32));
    let w = payload(&vars, "encoder/layer_0/self_attention/linear_0/weight");
    assert_eq!(
        st.tensor_data("encoder.blocks.0.attn.value.weight")
            .unwrap(),
        &w[512..768]
    );
    let b = payload(&vars, "decoder/layer_0/self_attention/linear_0/bias");
    assert_eq!(
        st.tensor_data("decoder.blocks.0.attn.value.bias").unwrap(),
        &b[64..96]
    );
}

/// Converts a modified tiny model; returns the error, checking that nothing was written.
fn convert_err(
    label: &str,
    vars: Vec<Var>,
    aliases: &[(&str, &str)],
    spec: (&str, u32),
) -> ConvertError {
    let dir = scratch(&format!("convert-err-{label}"));
    let t = Tiny::default();
    write_ct2_dir(
        &dir.join("ct2"),
        &ct2_bytes(6, spec, &vars, aliases),
        t.vocab,
    );
    let out = dir.join("out");
    let err = convert(&dir.join("ct2"), &out, Some("test-tiny")).expect_err(label);
    assert_eq!(
        dir_listing(&out),
        Vec::<String>::new(),
        "{label}: a failed conversion wrote files"
    );
    err
}

fn tiny_vars() -> Vec<Var> {
    tiny_whisper(Tiny::default())
}

fn set(vars: &mut [Var], name: &str, f: impl FnOnce(&mut Var)) {
    f(vars
        .iter_mut()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no {name}")));
}

const WS: (&str, u32) = ("WhisperSpec", 3);

#[test]
fn nonzero_key_bias_is_rejected() {
    let mut vars = tiny_vars();
    set(
        &mut vars,
        "encoder/layer_1/self_attention/linear_0/bias",
        |v| v.payload[2 * 10] = 1,
    );
    let err = convert_err("key-bias-enc", vars, &[PROJECTION_ALIAS], WS);
    assert!(
        matches!(&err, ConvertError::NonZeroKeyBias { name, index: 10, .. } if name == "encoder/layer_1/self_attention/linear_0/bias"),
        "{err}"
    );
    // Negative zero is zero.
    let mut vars = tiny_vars();
    set(&mut vars, "decoder/layer_0/attention/linear_1/bias", |v| {
        v.payload[1] = 0x80
    });
    let dir = scratch("convert-neg-zero");
    write_ct2_dir(
        &dir.join("ct2"),
        &ct2_bytes(6, WS, &vars, &[PROJECTION_ALIAS]),
        11,
    );
    convert(&dir.join("ct2"), &dir.join("out"), Some("test-tiny"))
        .expect("-0.0 key bias is accepted");
    // The cross-attention key half too.
    let mut vars = tiny_vars();
    set(&mut vars, "decoder/layer_0/attention/linear_1/bias", |v| {
        v.payload[2 * 7 + 1] = 0x3c
    });
    let err = convert_err("key-bias-cross", vars, &[PROJECTION_ALIAS], WS);
    assert!(
        matches!(
            &err,
            ConvertError::NonZeroKeyBias {
                index: 7,
                bits: 0x3c00,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("non-zero key bias"), "{err}");
}

#[test]
fn missing_variables_are_rejected() {
    for name in [
        "encoder/layer_1/ffn/linear_1/bias",
        "decoder/layer_0/attention/linear_2/weight",
        "decoder/num_heads",
        "encoder/conv2/weight",
        "decoder/layer_norm/gamma",
    ] {
        let vars: Vec<Var> = tiny_vars().into_iter().filter(|v| v.name != name).collect();
        let err = convert_err("missing", vars, &[PROJECTION_ALIAS], WS);
        match &err {
            ConvertError::MissingVariable { name: n, .. } => assert_eq!(n, name),
            other => panic!("{name}: {other}"),
        }
        assert!(err
            .to_string()
            .contains(&format!("missing variable '{name}'")));
    }
}

#[test]
fn unexpected_shapes_are_rejected() {
    let cases: Vec<(&str, Vec<u32>, &str)> = vec![
        (
            "encoder/layer_0/self_attention/linear_0/weight",
            vec![16, 8],
            "[24, 8]",
        ),
        (
            "decoder/layer_0/attention/linear_1/weight",
            vec![24, 8],
            "[16, 8]",
        ),
        ("encoder/conv2/weight", vec![8, 8, 5], "[8, 8, 3]"),
        (
            "decoder/layer_0/ffn/linear_0/weight",
            vec![16, 8],
            "[32, 8]",
        ),
        ("encoder/layer_norm/beta", vec![8, 1], "rank 1"),
        ("decoder/embeddings/weight", vec![11, 4], "[n_vocab, 8]"),
    ];
    for (name, shape, expected) in cases {
        let mut vars = tiny_vars();
        set(&mut vars, name, |v| {
            let n: usize = shape.iter().map(|&d| d as usize).product();
            *v = Var::float(name, &shape, F16, |i| i as f32);
            assert_eq!(v.payload.len(), n * 2);
        });
        let err = convert_err("shape", vars, &[PROJECTION_ALIAS], WS);
        match &err {
            ConvertError::UnexpectedShape {
                name: n,
                expected: e,
                ..
            } => {
                assert_eq!(n, name);
                assert!(
                    e.contains(expected),
                    "{name}: expected {expected}, message {err}"
                );
            }
            other => panic!("{name}: {other}"),
        }
    }
}

#[test]
fn unsupported_specs_and_revisions_are_rejected() {
    let err = convert_err(
        "spec",
        tiny_vars(),
        &[PROJECTION_ALIAS],
        ("TransformerSpec", 3),
    );
    assert!(
        matches!(&err, ConvertError::UnsupportedSpec { spec: Some(s), .. } if s == "TransformerSpec"),
        "{err}"
    );
    let err = convert_err(
        "revision",
        tiny_vars(),
        &[PROJECTION_ALIAS],
        ("WhisperSpec", 4),
    );
    assert!(
        matches!(&err, ConvertError::UnsupportedRevision { revision: 4, .. }),
        "{err}"
    );
    // Binary version 1 has no spec name at all.
    let dir = scratch("convert-v1");
    write_ct2_dir(&dir.join("ct2"), &ct2_bytes(1, WS, &tiny_vars(), &[]), 11);
    let err = convert(&dir.join("ct2"), &dir.join("out"), None).unwrap_err();
    assert!(
        matches!(&err, ConvertError::UnsupportedSpec { spec: None, .. }),
        "{err}"
    );
}

#[test]
fn non_float_tensors_are_rejected() {
    let mut vars = tiny_vars();
    set(&mut vars, "encoder/layer_0/ffn/linear_0/weight", |v| {
        *v = Var::float(&v.name.clone(), &[32, 8], I8, |i| (i % 100) as f32)
    });
    let err = convert_err("int8", vars, &[PROJECTION_ALIAS], WS);
    assert!(
        matches!(
            &err,
            ConvertError::UnsupportedDType {
                dtype: Ct2DType::I8,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("only float16 and float32"),
        "{err}"
    );
}

#[test]
fn unknown_variables_and_settings_are_rejected() {
    // A quantisation scale the layout has no place for.
    let mut vars = tiny_vars();
    vars.push(Var::float("encoder/conv1/weight_scale", &[8], F32, |_| 1.0));
    let err = convert_err("extra", vars, &[PROJECTION_ALIAS], WS);
    assert!(
        matches!(&err, ConvertError::UnexpectedVariables { names, .. } if names == "encoder/conv1/weight_scale"),
        "{err}"
    );
    // A gap in layer numbering (layer_1 renamed layer_2).
    let vars: Vec<Var> = tiny_vars()
        .into_iter()
        .map(|mut v| {
            v.name = v.name.replace("encoder/layer_1/", "encoder/layer_2/");
            v
        })
        .collect();
    let err = convert_err("gap", vars, &[PROJECTION_ALIAS], WS);
    assert!(
        matches!(&err, ConvertError::BadLayerNumbering { found, .. } if found == &vec![0, 2]),
        "{err}"
    );
    // Settings the runtime does not implement.
    for (name, value) in [
        ("decoder/activation", 1i8),
        ("decoder/scale_embeddings", 1),
        ("decoder/pre_norm", 0),
    ] {
        let mut vars = tiny_vars();
        set(&mut vars, name, |v| v.payload[0] = value as u8);
        let err = convert_err("setting", vars, &[PROJECTION_ALIAS], WS);
        assert!(
            matches!(&err, ConvertError::UnsupportedSetting { name: n, .. } if n == name),
            "{err}"
        );
    }
    // Head count that does not divide the width.
    let mut vars = tiny_vars();
    set(&mut vars, "encoder/num_heads", |v| {
        v.payload = 3i16.to_le_bytes().to_vec()
    });
    let err = convert_err("heads", vars, &[PROJECTION_ALIAS], WS);
    assert!(
        matches!(&err, ConvertError::UnsupportedSetting { name, .. } if name == "encoder/num_heads"),
        "{err}"
    );
    // An untied output projection.
    let mut vars = tiny_vars();
    vars.push(Var::float(
        "decoder/projection/weight",
        &[11, 8],
        F16,
        |i| i as f32,
    ));
    let err = convert_err("untied", vars, &[], WS);
    assert!(
        matches!(&err, ConvertError::UnsupportedSetting { name, .. } if name == "decoder/projection/weight"),
        "{err}"
    );
    // A tied projection stored as a copy rather than an alias is accepted.
    let mut vars = tiny_vars();
    let emb = vars
        .iter()
        .find(|v| v.name == "decoder/embeddings/weight")
        .unwrap()
        .clone();
    vars.push(Var {
        name: "decoder/projection/weight".into(),
        ..emb
    });
    let dir = scratch("convert-tied-copy");
    write_ct2_dir(&dir.join("ct2"), &ct2_bytes(6, WS, &vars, &[]), 11);
    convert(&dir.join("ct2"), &dir.join("out"), Some("test-tiny")).expect("tied copy");
}

#[test]
fn names_and_companion_files_are_checked() {
    let t = Tiny::default();
    let dir = scratch("convert-names");
    let src = dir.join("ct2");
    write_ct2_dir(&src, &tiny_whisper_bytes(t), t.vocab);
    // Tiny dims match no published size: a name is required, and "base" is contradicted.
    assert!(matches!(
        convert(&src, &dir.join("o1"), None),
        Err(ConvertError::NameRequired(_))
    ));
    let err = convert(&src, &dir.join("o2"), Some("whisper-base")).unwrap_err();
    assert!(matches!(err, ConvertError::NameMismatch { .. }), "{err}");
    // Vocabulary size must equal the embedding rows.
    std::fs::write(src.join("vocabulary.txt"), vocabulary_text(10)).unwrap();
    let err = convert(&src, &dir.join("o3"), Some("test-tiny")).unwrap_err();
    assert!(
        err.to_string()
            .contains("has 10 entries but the embedding has 11 rows"),
        "{err}"
    );
    std::fs::write(src.join("vocabulary.txt"), vocabulary_text(11)).unwrap();
    // config.json ids are checked against the model.
    std::fs::write(src.join("config.json"), ct2_config_json(12)).unwrap();
    let err = convert(&src, &dir.join("o4"), Some("test-tiny")).unwrap_err();
    assert!(
        err.to_string().contains("outside the vocabulary of 11"),
        "{err}"
    );
    std::fs::write(src.join("config.json"), r#"{"lang_ids": [1]}"#).unwrap();
    let err = convert(&src, &dir.join("o5"), Some("test-tiny")).unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");
    std::fs::write(
        src.join("config.json"),
        ct2_config_json(11).replace("[0, 1]", "[1, 0]"),
    )
    .unwrap();
    let err = convert(&src, &dir.join("o6"), Some("test-tiny")).unwrap_err();
    assert!(
        err.to_string()
            .contains("alignment head [1, 0] is outside 1 decoder layers x 2 heads"),
        "{err}"
    );
    std::fs::write(src.join("config.json"), ct2_config_json(11)).unwrap();
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();
    let err = convert(&src, &dir.join("o7"), Some("test-tiny")).unwrap_err();
    assert!(
        matches!(&err, ConvertError::Io { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    for o in ["o1", "o2", "o3", "o4", "o5", "o6", "o7"] {
        assert!(
            !dir.join(o).exists(),
            "{o} was created by a failed conversion"
        );
    }
}

#[test]
fn failed_conversion_keeps_previous_output() {
    let t = Tiny::default();
    let dir = scratch("convert-keep");
    let (src, out) = (dir.join("ct2"), dir.join("out"));
    write_ct2_dir(&src, &tiny_whisper_bytes(t), t.vocab);
    convert(&src, &out, Some("test-tiny")).unwrap();
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let bin = std::fs::read(src.join("model.bin")).unwrap();
    std::fs::write(src.join("model.bin"), &bin[..bin.len() / 2]).unwrap();
    let err = convert(&src, &out, Some("test-tiny")).unwrap_err();
    assert!(err.to_string().contains("truncated at byte"), "{err}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    assert_eq!(
        dir_listing(&out),
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocabulary.txt"
        ]
    );
}

#[test]
fn vocabulary_entries_are_counted_like_ct2() {
    assert_eq!(vocabulary_len(b""), 0);
    assert_eq!(vocabulary_len(b"a\n"), 1);
    assert_eq!(vocabulary_len(b"a\n\nb\n"), 3, "an empty line is an entry");
    assert_eq!(vocabulary_len(b"a\nb"), 2, "no final newline");
    assert_eq!(vocabulary_len(b"a\r\nb\r\n"), 2);
}

#[test]
fn inspect_lists_both_formats() {
    let t = Tiny::default();
    let dir = scratch("inspect");
    let src = dir.join("ct2");
    let bin = tiny_whisper_bytes(t);
    write_ct2_dir(&src, &bin, t.vocab);
    convert(&src, &dir.join("out"), Some("test-tiny")).unwrap();

    let ct2 = inspect_path(&src.join("model.bin")).unwrap();
    let model = Ct2Model::parse(&bin, "m").unwrap();
    assert_eq!(ct2.kind, FileKind::Ct2);
    assert_eq!(ct2.entries.len(), model.variables.len());
    assert_eq!(ct2.total_bytes(), model.payload_bytes());
    assert_eq!(
        ct2.aliases,
        vec![(
            PROJECTION_ALIAS.0.to_string(),
            PROJECTION_ALIAS.1.to_string()
        )]
    );
    let heads = ct2
        .entries
        .iter()
        .find(|e| e.name == "encoder/num_heads")
        .unwrap();
    assert_eq!(heads.note.as_deref(), Some("value 2"));
    let text = ct2.to_string();
    assert!(text.contains("spec: WhisperSpec revision 3"), "{text}");
    assert!(
        text.contains(&format!("total: {} tensors", model.variables.len())),
        "{text}"
    );

    let st = inspect_path(&dir.join("out/model.safetensors")).unwrap();
    assert_eq!(st.kind, FileKind::Safetensors);
    assert_eq!(st.entries.len(), expected_tensor_count(2, 1));
    // Dropped: 9 scalars (13 bytes) and the zero key biases (4 x 8 float16 values: 2 encoder, 1 decoder self, 1 cross).
    assert_eq!(st.total_bytes(), model.payload_bytes() - 13 - 4 * 8 * 2);
    let text = st.to_string();
    assert!(text.contains(&format!("layout: {LAYOUT}")), "{text}");
    assert!(
        text.contains("encoder.blocks.1.attn.query.weight"),
        "{text}"
    );
    assert!(
        text.contains(&format!("source_sha256: {}", sha256_hex(&bin))),
        "{text}"
    );

    std::fs::write(dir.join("junk.dat"), b"hello world").unwrap();
    assert!(inspect_path(&dir.join("junk.dat"))
        .unwrap_err()
        .to_string()
        .contains("neither a safetensors file"));
}

#[test]
fn corrupt_safetensors_headers_are_clear_errors() {
    let t = Tiny::default();
    let dir = scratch("st-corrupt");
    write_ct2_dir(&dir.join("ct2"), &tiny_whisper_bytes(t), t.vocab);
    convert(&dir.join("ct2"), &dir.join("out"), Some("test-tiny")).unwrap();
    let good = std::fs::read(dir.join("out/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut b = good.clone();
    b[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
    cases.push(("length past end", b, "runs past the end"));
    let mut b = good.clone();
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge length", b, "exceeds the 100 MB limit"));
    let mut b = good.clone();
    b[8..8 + 12].copy_from_slice(b"{\"x\": garbag");
    cases.push(("garbage JSON", b, "not a valid safetensors JSON index"));
    let mut b = good.clone();
    b[8] = b'[';
    cases.push(("not an object", b, "does not start with '{'"));
    let mut b = good.clone();
    b[10] = 0xff;
    cases.push(("bad UTF-8", b, "not valid UTF-8"));
    cases.push((
        "truncated data",
        good[..good.len() - 1].to_vec(),
        "truncated or padded",
    ));
    cases.push((
        "truncated header",
        good[..8 + header_len / 2].to_vec(),
        "runs past the end",
    ));
    cases.push(("tiny", good[..5].to_vec(), "shorter than the 8-byte header"));

    for (label, bytes, detail) in cases {
        let path = dir.join("bad.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let err = SafetensorsFile::read(&path).unwrap_err();
        assert!(
            matches!(err, SafetensorsReadError::Corrupt { .. }),
            "{label}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "corrupt safetensors header in {}: ",
                path.display()
            )),
            "{label}: {msg}"
        );
        assert!(msg.contains(detail), "{label}: {msg}");
        // inspect reports the same error.
        assert_eq!(inspect_path(&path).unwrap_err().to_string(), msg, "{label}");
    }
}

#[test]
fn serializer_round_trips_through_the_reference_reader() {
    use amanuensis_weights_tools::st::{serialize_safetensors, SafetensorsWriteError, TensorRef};
    use std::collections::BTreeMap;
    let a: Vec<u8> = (0..24).collect(); // [2, 3] f32
    let b: Vec<u8> = (100..106).collect(); // [3] f16
    let c: Vec<u8> = vec![9]; // scalar u8
    let tensors = [
        TensorRef {
            name: "z.half",
            dtype: Dtype::F16,
            shape: &[3],
            data: &b,
        },
        TensorRef {
            name: "a \"quoted\" name",
            dtype: Dtype::F32,
            shape: &[2, 3],
            data: &a,
        },
        TensorRef {
            name: "m.scalar",
            dtype: Dtype::U8,
            shape: &[],
            data: &c,
        },
    ];
    let meta: BTreeMap<String, String> = [("k2", "v\"2\"\n"), ("k1", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let bytes = serialize_safetensors(&tensors, &meta).unwrap();
    // Deterministic regardless of input order.
    let mut reversed = tensors;
    reversed.reverse();
    assert!(serialize_safetensors(&reversed, &meta).unwrap() == bytes);
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(header_len % 8, 0, "data must start 8-byte aligned");
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(
        header.starts_with(r#"{"__metadata__":{"k1":"v1","k2":"v\"2\"\n"},"#),
        "{header}"
    );

    let f = SafetensorsFile::from_bytes(bytes.clone(), Path::new("mem.safetensors")).unwrap();
    assert_eq!(f.metadata, meta);
    // Data ordered by decreasing element size, then name.
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a \"quoted\" name", "z.half", "m.scalar"]);
    assert_eq!(f.tensor_data("a \"quoted\" name").unwrap(), &a[..]);
    assert_eq!(f.tensor("a \"quoted\" name").unwrap().shape, vec![2, 3]);
    assert_eq!(f.tensor_data("z.half").unwrap(), &b[..]);
    assert_eq!(f.tensor("m.scalar").unwrap().shape, Vec::<usize>::new());
    assert_eq!(f.tensor_data("m.scalar").unwrap(), &c[..]);
    // The crate's own reader agrees.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("z.half").unwrap().data(), &b[..]);

    let bad = [TensorRef {
        name: "x",
        dtype: Dtype::F16,
        shape: &[4],
        data: &b,
    }];
    assert_eq!(
        serialize_safetensors(&bad, &meta).unwrap_err(),
        SafetensorsWriteError::SizeMismatch {
            name: "x".into(),
            expected: "8".into(),
            actual: 6
        }
    );
    let dup = [tensors[0], tensors[0]];
    assert_eq!(
        serialize_safetensors(&dup, &meta).unwrap_err(),
        SafetensorsWriteError::DuplicateName("z.half".into())
    );
}

/// Converting into the source directory (given as the directory or as its `model.bin`,
/// or through another path to it) is refused before anything is written: it replaced the
/// CTranslate2 `config.json`, and the source could not be converted again.
#[test]
fn output_into_the_source_directory_is_refused() {
    let t = Tiny::default();
    let dir = scratch("convert-into-source");
    let src = dir.join("ct2");
    write_ct2_dir(
        &src,
        &ct2_bytes(6, WS, &tiny_vars(), &[PROJECTION_ALIAS]),
        t.vocab,
    );
    let before = dir_listing(&src);
    let config = std::fs::read(src.join("config.json")).unwrap();
    for (input, output) in [
        (src.clone(), src.clone()),
        (src.join("model.bin"), src.clone()),
        (src.clone(), dir.join("ct2/../ct2")),
    ] {
        let err = convert(&input, &output, None).expect_err("converted into its source");
        assert!(
            matches!(err, ConvertError::OutputIsInput { .. })
                && err
                    .to_string()
                    .contains("write the conversion to another directory"),
            "{err}"
        );
    }
    assert_eq!(dir_listing(&src), before);
    assert_eq!(std::fs::read(src.join("config.json")).unwrap(), config);
    // Another directory still converts.
    convert(&src, &dir.join("out"), Some("test-tiny")).expect("conversion elsewhere");
}
