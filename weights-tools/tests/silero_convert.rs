//! The Silero VAD ONNX → safetensors converter on synthetic models built with prost: names,
//! shapes and values, config.json, provenance, determinism, and every rejection.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::silero::*;
use crate::common::*;
use amanuensis_weights_tools::convert::sha256_hex;
use amanuensis_weights_tools::onnx::proto::*;
use amanuensis_weights_tools::onnx::{attribute_type, data_type, OnnxError};
use amanuensis_weights_tools::silero::{
    convert_silero_vad, map_silero_bytes, SileroDims, SileroTensors, VadConfig, VadConvertError,
    VadConvertOptions, VadConvertSummary, SILERO_V6_OPS,
};
use amanuensis_weights_tools::st::SafetensorsFile;
use prost::Message;
use safetensors::Dtype;

const V6: SileroDims = SileroDims::V6;

fn write_model(dir: &Path, m: &ModelProto) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("silero_vad_v6.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn convert(input: &Path, output: &Path) -> Result<VadConvertSummary, VadConvertError> {
    convert_silero_vad(&VadConvertOptions {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
    })
}

fn map_v6(m: &ModelProto) -> Result<SileroTensors, VadConvertError> {
    map_silero_bytes(&m.encode_to_vec(), "test.onnx", &V6)
}

fn map_err(m: &ModelProto) -> VadConvertError {
    match map_v6(m) {
        Ok(_) => panic!("the model was accepted"),
        Err(e) => e,
    }
}

/// `(output name, shape, f32 LE bytes)` the converter must write for `m`.
fn expected_outputs(m: &ModelProto) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let raw = |n: &str| init(m, n).raw_data.clone();
    let mut v = vec![("stft.basis".to_string(), vec![258, 1, 256], raw(BASIS))];
    let shapes = [[128, 129, 3], [64, 128, 3], [64, 64, 3], [128, 64, 3]];
    for (i, s) in shapes.iter().enumerate() {
        let w = format!("encoder.conv_layers.{i}.weight");
        let b = format!("encoder.conv_layers.{i}.bias");
        v.push((w.clone(), s.to_vec(), raw(&w)));
        v.push((b.clone(), vec![s[0]], raw(&b)));
    }
    v.push(("decoder.rnn.weight_ih".into(), vec![512, 128], raw(LSTM_W)));
    v.push(("decoder.rnn.weight_hh".into(), vec![512, 128], raw(LSTM_R)));
    v.push(("decoder.rnn.bias".into(), vec![1024], raw(LSTM_B)));
    v.push(("decoder.out.weight".into(), vec![1, 128], raw(OUT_W)));
    v.push(("decoder.out.bias".into(), vec![1], raw(OUT_B)));
    v.sort();
    v
}

const CONFIG_JSON: &str = r#"{
  "format": "amanuensis-vad",
  "version": 1,
  "name": "silero-vad-v6",
  "sample_rate": 16000,
  "window_samples": 512,
  "context_samples": 64,
  "hidden_size": 128
}
"#;

#[test]
fn converts_a_synthetic_silero_v6_model() {
    let m = silero_model(&V6, 1);
    let dir = scratch("silero-convert");
    let input = write_model(&dir, &m);
    let out = dir.join("out");
    let s = convert(&input, &out).expect("conversion");
    assert_eq!(s.name, "silero-vad-v6");
    assert_eq!(s.tensor_count, 14);
    assert_eq!(s.parameters, 309_633);
    assert_eq!(s.source_sha256, sha256_hex(&std::fs::read(&input).unwrap()));
    assert_eq!(
        dir_listing(&out),
        vec!["config.json".to_string(), "model.safetensors".to_string()]
    );

    let st = SafetensorsFile::read(&out.join("model.safetensors")).unwrap();
    assert_eq!(st.bytes.len() as u64, s.safetensors_bytes);
    let mut got: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors
        .iter()
        .map(|t| {
            assert_eq!(t.dtype, Dtype::F32, "{}", t.name);
            (
                t.name.clone(),
                t.shape.clone(),
                st.tensor_data(&t.name).unwrap().to_vec(),
            )
        })
        .collect();
    got.sort();
    let want = expected_outputs(&m);
    assert_eq!(
        got.iter().map(|t| (&t.0, &t.1)).collect::<Vec<_>>(),
        want.iter().map(|t| (&t.0, &t.1)).collect::<Vec<_>>()
    );
    for (g, w) in got.iter().zip(&want) {
        assert!(g.2 == w.2, "payload of {} differs from the source", g.0);
    }
    // Spot-check values through f32: the LSTM's first input weight, the decoder's bias.
    let f = |b: &[u8], i: usize| f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    let mut rng = Rng::new(1);
    let basis0 = rng.f32();
    assert_eq!(f(st.tensor_data("stft.basis").unwrap(), 0), basis0);

    let md = &st.metadata;
    assert_eq!(md["format"], "pt");
    assert_eq!(md["layout"], "silero-vad-v6");
    assert_eq!(md["name"], "silero-vad-v6");
    assert_eq!(md["source_format"], "onnx");
    assert_eq!(md["source_file"], "silero_vad_v6.onnx");
    assert_eq!(md["source_sha256"], s.source_sha256);
    assert_eq!(md["source_ir_version"], "8");
    assert_eq!(md["source_opset"], "18");
    assert_eq!(md["source_producer"], "pytorch 2.8.0");
    assert!(md["converter"].starts_with("amanuensis weights-tool "));

    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert_eq!(cfg, CONFIG_JSON);
    let parsed: VadConfig = serde_json::from_str(&cfg).unwrap();
    assert_eq!(parsed, VadConfig::silero_v6());

    // Deterministic: a second conversion writes identical bytes.
    let out2 = dir.join("out2");
    convert(&input, &out2).unwrap();
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap()
            == std::fs::read(out2.join("model.safetensors")).unwrap()
    );
}

#[test]
fn weights_in_float_data_convert_like_raw_data() {
    let m = silero_model(&V6, 2);
    let mut typed = m.clone();
    for t in &mut typed.graph.as_mut().unwrap().initializer {
        if t.data_type == data_type::FLOAT {
            t.float_data = t
                .raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            t.raw_data.clear();
        }
        if t.data_type == data_type::INT64 {
            t.int64_data = t
                .raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            t.raw_data.clear();
        }
    }
    assert_eq!(map_v6(&typed).unwrap().tensors, map_v6(&m).unwrap().tensors);
}

#[test]
fn the_tiny_model_maps_with_its_own_dims() {
    let tiny = SileroDims::TINY;
    let bytes = silero_model(&tiny, 3).encode_to_vec();
    let t = map_silero_bytes(&bytes, "tiny.onnx", &tiny).unwrap();
    assert_eq!(t.tensors.len(), 14);
    assert_eq!(t.tensors[0].shape, vec![10, 1, 8]);
    // The same bytes are not Silero VAD v6: the first weight checked says why.
    let e = map_silero_bytes(&bytes, "tiny.onnx", &V6).unwrap_err();
    assert!(
        e.to_string().contains("node 0 'Pad'") && e.to_string().contains("pads are [0, 4, 0, 4]"),
        "{e}"
    );
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let tiny = SileroDims::TINY;
    let m = silero_model(&tiny, 4);
    let bytes = m.encode_to_vec();
    // prost writes fields in tag order, so the opset import comes last: a cut just before
    // it leaves a complete model without one, which still maps. Every other cut fails.
    let opset_len = ModelProto {
        opset_import: m.opset_import.clone(),
        ..Default::default()
    }
    .encoded_len();
    for cut in 0..bytes.len() {
        if let Ok(t) = map_silero_bytes(&bytes[..cut], "t.onnx", &tiny) {
            assert_eq!(cut, bytes.len() - opset_len, "a cut at {cut} was accepted");
            assert_eq!(t.opset, None);
        }
    }

    let dir = scratch("silero-truncated");
    let full = silero_model(&V6, 4).encode_to_vec();
    let input = dir.join("cut.onnx");
    std::fs::write(&input, &full[..full.len() / 2]).unwrap();
    let e = convert(&input, &dir.join("out")).unwrap_err();
    assert!(
        matches!(e, VadConvertError::Onnx(OnnxError::Decode { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: not a valid ONNX model", input.display())),
        "{msg}"
    );
    assert!(!dir.join("out").exists(), "nothing is written on failure");
}

#[test]
fn files_that_are_not_models_are_refused() {
    let dir = scratch("silero-not-models");
    let e = convert(&dir.join("absent.onnx"), &dir.join("out")).unwrap_err();
    assert!(matches!(e, VadConvertError::Io { op: "read", .. }), "{e}");
    assert!(e.to_string().contains("absent.onnx"), "{e}");

    let text = dir.join("text.onnx");
    std::fs::write(&text, "this is not a protobuf\n").unwrap();
    let e = convert(&text, &dir.join("out")).unwrap_err();
    assert!(
        matches!(e, VadConvertError::Onnx(OnnxError::Decode { .. })),
        "{e}"
    );

    let no_graph = dir.join("no-graph.onnx");
    let bytes = ModelProto {
        ir_version: 8,
        ..Default::default()
    }
    .encode_to_vec();
    std::fs::write(&no_graph, bytes).unwrap();
    let e = convert(&no_graph, &dir.join("out")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: the ONNX model has no graph", no_graph.display())
    );

    // An empty file decodes as an empty message: no graph either.
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        convert(&empty, &dir.join("out")),
        Err(VadConvertError::Onnx(OnnxError::NoGraph { .. }))
    ));
    assert!(!dir.join("out").exists());
}

#[test]
fn a_wrong_op_sequence_names_the_op() {
    let mut m = silero_model(&V6, 5);
    node_mut(&mut m, 5).op_type = "Mul".into();
    let e = map_err(&m);
    assert!(
        matches!(e, VadConvertError::OpSequence { index: 5, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "test.onnx: node 5 is 'Mul' ('/encoder/feature_extractor/Pow') but Silero VAD v6 has 'Pow' there"
        ),
        "{msg}"
    );
    assert!(msg.contains(&SILERO_V6_OPS.join(", ")), "{msg}");

    let mut short = silero_model(&V6, 5);
    short.graph.as_mut().unwrap().node.pop();
    let msg = map_err(&short).to_string();
    assert!(
        msg.contains("node 24 is missing but Silero VAD v6 has 'Reshape' there"),
        "{msg}"
    );

    let mut long = silero_model(&V6, 5);
    long.graph.as_mut().unwrap().node.push(NodeProto {
        op_type: "Identity".into(),
        name: "extra".into(),
        ..Default::default()
    });
    let msg = map_err(&long).to_string();
    assert!(
        msg.contains("node 25 is 'Identity' ('extra') but Silero VAD v6 has no further node there"),
        "{msg}"
    );

    let mut foreign = silero_model(&V6, 5);
    node_mut(&mut foreign, 18).domain = "com.microsoft".into();
    let msg = map_err(&foreign).to_string();
    assert!(
        msg.contains("node 18 is 'LSTM' of domain 'com.microsoft' ('/decoder/rnn/LSTM')"),
        "{msg}"
    );
}

/// Replaces initializer `name` by one of `dims` with matching (zero) data.
fn reshape(m: &mut ModelProto, name: &str, dims: &[usize]) {
    let n: usize = dims.iter().product();
    *init_mut(m, name) = f32_tensor(name, dims, &vec![0.0; n]);
}

#[test]
fn a_wrong_initializer_shape_names_the_initializer() {
    let cases: [(&str, &[usize], &str); 5] = [
        (
            "encoder.conv_layers.1.weight",
            &[64, 128, 5],
            "test.onnx: initializer 'encoder.conv_layers.1.weight' (encoder convolution 1 weight) has shape [64, 128, 5], expected [64, 128, 3]",
        ),
        (
            BASIS,
            &[258, 256],
            "test.onnx: initializer 'encoder.feature_extractor.forward_basis_buffer' (STFT basis) has shape [258, 256], expected [258, 1, 256]",
        ),
        (
            LSTM_R,
            &[1, 512, 64],
            "test.onnx: initializer 'onnx::LSTM_210' (LSTM recurrent weights R) has shape [1, 512, 64], expected [1, 512, 128]",
        ),
        (
            LSTM_B,
            &[1, 512],
            "test.onnx: initializer 'onnx::LSTM_211' (LSTM biases B) has shape [1, 512], expected [1, 1024]",
        ),
        (
            OUT_W,
            &[1, 128],
            "test.onnx: initializer 'decoder.conv1d.weight' (output convolution weight) has shape [1, 128], expected [1, 128, 1]",
        ),
    ];
    for (name, dims, msg) in cases {
        let mut m = silero_model(&V6, 6);
        reshape(&mut m, name, dims);
        let e = map_err(&m);
        assert!(matches!(e, VadConvertError::UnexpectedShape { .. }), "{e}");
        assert_eq!(e.to_string(), msg);
    }
}

#[test]
fn a_raw_data_length_mismatch_is_an_error() {
    let mut m = silero_model(&V6, 7);
    init_mut(&mut m, LSTM_B).raw_data.truncate(4092);
    let e = map_err(&m);
    assert!(
        matches!(e, VadConvertError::Onnx(OnnxError::DataLength { .. })),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "test.onnx: initializer 'onnx::LSTM_211' of shape [1, 1024] needs 1024 elements (4096 bytes of raw_data) but holds 4092 bytes of raw_data"
    );

    let mut long = silero_model(&V6, 7);
    init_mut(&mut long, BASIS)
        .raw_data
        .extend_from_slice(&[0; 4]);
    assert!(map_err(&long)
        .to_string()
        .contains("'encoder.feature_extractor.forward_basis_buffer'"));

    let mut empty = silero_model(&V6, 7);
    init_mut(&mut empty, OUT_B).raw_data.clear();
    assert!(map_err(&empty)
        .to_string()
        .ends_with("initializer 'decoder.conv1d.bias' of shape [1] needs 1 elements (4 bytes of raw_data) but holds no data"));
}

fn set_attr(m: &mut ModelProto, index: usize, a: AttributeProto) {
    let n = node_mut(m, index);
    n.attribute.retain(|x| x.name != a.name);
    n.attribute.push(a);
}

fn drop_attr(m: &mut ModelProto, index: usize, name: &str) {
    node_mut(m, index).attribute.retain(|x| x.name != name);
}

type Mutation = Box<dyn Fn(&mut ModelProto)>;

#[test]
fn unsupported_settings_are_refused_with_the_node_and_the_difference() {
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|m| set_attr(m, 0, string("mode", "constant"))),
            "node 0 'Pad' ('/encoder/feature_extractor/padding/Pad'): mode is \"constant\", expected \"reflect\"",
        ),
        (
            Box::new(|m| drop_attr(m, 0, "mode")),
            "mode is absent (constant), expected \"reflect\"",
        ),
        (
            Box::new(|m| *init_mut(m, PADS) = i64_tensor(PADS, &[4], &[0, 64, 0, 64])),
            "node 0 'Pad' ('/encoder/feature_extractor/padding/Pad'): pads are [0, 64, 0, 64], expected [0, 128, 0, 128]",
        ),
        (
            Box::new(|m| *init_mut(m, PADS) = f32_tensor(PADS, &[4], &[0.0; 4])),
            "initializer '/encoder/feature_extractor/padding/Reshape_1_output_0' has element type FLOAT (1), expected INT64",
        ),
        (
            Box::new(|m| node_mut(m, 0).input.push("value".into())),
            "node 0 'Pad' ('/encoder/feature_extractor/padding/Pad'): has input 2 ('value'); the runtime's graph has no constant value or axes input",
        ),
        (
            Box::new(|m| set_attr(m, 2, ints("strides", &[64]))),
            "node 2 'Conv' ('/encoder/feature_extractor/Conv'): attribute 'strides' is [64], expected [128]",
        ),
        (
            Box::new(|m| set_attr(m, 2, ints("kernel_shape", &[512]))),
            "attribute 'kernel_shape' is [512], expected [256]",
        ),
        (
            Box::new(|m| node_mut(m, 2).input.push(OUT_B.into())),
            "node 2 'Conv' ('/encoder/feature_extractor/Conv'): has input 2 ('decoder.conv1d.bias'); the runtime's graph has no bias on the STFT basis convolution",
        ),
        (
            Box::new(|m| set_attr(m, 11, ints("strides", &[1]))),
            "node 11 'Conv' ('/encoder/conv_layers.1/Conv'): attribute 'strides' is [1], expected [2]",
        ),
        (
            Box::new(|m| drop_attr(m, 13, "strides")),
            "node 13 'Conv' ('/encoder/conv_layers.2/Conv'): attribute 'strides' is absent, expected [2]",
        ),
        (
            Box::new(|m| set_attr(m, 9, ints("pads", &[0, 0]))),
            "node 9 'Conv' ('/encoder/conv_layers.0/Conv'): attribute 'pads' is [0, 0], expected [1, 1]",
        ),
        (
            Box::new(|m| set_attr(m, 15, ints("dilations", &[2]))),
            "node 15 'Conv' ('/encoder/conv_layers.3/Conv'): attribute 'dilations' is [2], expected [1]",
        ),
        (
            Box::new(|m| set_attr(m, 15, int("group", 2))),
            "attribute 'group' is 2, expected 1",
        ),
        (
            Box::new(|m| set_attr(m, 9, string("auto_pad", "SAME_UPPER"))),
            "attribute 'auto_pad' is \"SAME_UPPER\", expected NOTSET",
        ),
        (
            Box::new(|m| set_attr(m, 9, int("channels_last", 1))),
            "unexpected attribute 'channels_last'",
        ),
        (
            Box::new(|m| set_attr(m, 9, int("strides", 1))),
            "node 9 'Conv' ('/encoder/conv_layers.0/Conv'): attribute 'strides' has attribute type INT (2), expected INTS (7)",
        ),
        (
            Box::new(|m| *init_mut(m, "_v_142") = i64_tensor("_v_142", &[2], &[0, 0])),
            "node 3 'Slice' (''): starts [0, 0], ends [129, 9223372036854775807], axes [1, 2], steps [1, 1]; expected the real part: channels 0..129 and frames 1..",
        ),
        (
            Box::new(|m| *init_mut(m, "_v_147") = i64_tensor("_v_147", &[2], &[128, 1])),
            "expected the imaginary part: channels 129..258",
        ),
        (
            Box::new(|m| *init_mut(m, EXPONENT) = f32_tensor(EXPONENT, &[], &[3.0])),
            "node 5 'Pow' ('/encoder/feature_extractor/Pow'): exponent '/encoder/feature_extractor/Constant_17_output_0' is not the scalar 2.0",
        ),
        (
            Box::new(|m| set_attr(m, 18, int("hidden_size", 64))),
            "node 18 'LSTM' ('/decoder/rnn/LSTM'): hidden_size is 64, expected 128",
        ),
        (
            Box::new(|m| drop_attr(m, 18, "hidden_size")),
            "hidden_size is absent, expected 128",
        ),
        (
            Box::new(|m| set_attr(m, 18, string("direction", "bidirectional"))),
            "node 18 'LSTM' ('/decoder/rnn/LSTM'): direction is \"bidirectional\", expected \"forward\"",
        ),
        (
            Box::new(|m| set_attr(m, 18, int("layout", 1))),
            "attribute 'layout' is 1, expected 0",
        ),
        (
            Box::new(|m| {
                set_attr(
                    m,
                    18,
                    AttributeProto {
                        name: "clip".into(),
                        f: 3.0,
                        r#type: attribute_type::FLOAT,
                        ..Default::default()
                    },
                )
            }),
            "node 18 'LSTM' ('/decoder/rnn/LSTM'): unexpected attribute 'clip'",
        ),
        (
            Box::new(|m| node_mut(m, 18).input[4] = "lens".into()),
            "has a sequence_lens input ('lens'); the runtime's graph has none",
        ),
        (
            Box::new(|m| node_mut(m, 18).input.push("peepholes".into())),
            "has input 7 ('peepholes'); the runtime's graph has no peephole weights",
        ),
        (
            Box::new(|m| node_mut(m, 18).input[3] = String::new()),
            "has no bias input B (input 3)",
        ),
        (
            Box::new(|m| node_mut(m, 18).input[1] = "W".into()),
            "test.onnx: input 1 of node 18 'LSTM' ('/decoder/rnn/LSTM') is 'W', which is not an initializer",
        ),
        (
            Box::new(|m| set_attr(m, 22, ints("kernel_shape", &[3]))),
            "node 22 'Conv' ('/decoder/conv1d/Conv'): attribute 'kernel_shape' is [3], expected [1]",
        ),
        (
            Box::new(|m| {
                let t = init_mut(m, BASIS);
                t.data_location = 1;
                t.raw_data.clear();
            }),
            "initializer 'encoder.feature_extractor.forward_basis_buffer' keeps its data in an external file",
        ),
        (
            Box::new(|m| {
                let t = init_mut(m, "encoder.conv_layers.2.bias");
                t.data_type = 10;
                t.raw_data.truncate(128);
            }),
            "initializer 'encoder.conv_layers.2.bias' has element type FLOAT16 (10), expected FLOAT",
        ),
        (
            Box::new(|m| init_mut(m, OUT_W).dims[1] = -128),
            "initializer 'decoder.conv1d.weight' has invalid dimensions [1, -128, 1]: a dimension is negative",
        ),
        (
            Box::new(|m| {
                init_mut(m, LSTM_W).raw_data[400..404].copy_from_slice(&f32::NAN.to_le_bytes())
            }),
            "test.onnx: initializer 'onnx::LSTM_209' has a non-finite value at element 100 (bits 0x7fc00000)",
        ),
        (
            Box::new(|m| {
                let g = m.graph.as_mut().unwrap();
                let dup = g.initializer[0].clone();
                g.initializer.push(dup);
            }),
            "test.onnx: initializer 'encoder.feature_extractor.forward_basis_buffer' is defined more than once",
        ),
    ];
    for (i, (mutate, want)) in cases.iter().enumerate() {
        let mut m = silero_model(&V6, 8);
        mutate(&mut m);
        let msg = map_err(&m).to_string();
        assert!(
            msg.contains(want),
            "case {i}: expected a message containing\n  {want}\ngot\n  {msg}"
        );
    }
}

#[test]
fn a_failed_conversion_leaves_the_previous_output_in_place() {
    let dir = scratch("silero-keep");
    let out = dir.join("out");
    convert(&write_model(&dir.join("good"), &silero_model(&V6, 9)), &out).unwrap();
    let before: Vec<Vec<u8>> = ["model.safetensors", "config.json"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    let mut bad = silero_model(&V6, 10);
    node_mut(&mut bad, 18).op_type = "GRU".into();
    assert!(convert(&write_model(&dir.join("bad"), &bad), &out).is_err());
    let after: Vec<Vec<u8>> = ["model.safetensors", "config.json"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    assert!(before == after, "a failed conversion changed the output");
    assert_eq!(dir_listing(&out), vec!["config.json", "model.safetensors"]);
}

#[test]
fn the_cli_converts_onnx_and_refuses_a_name() {
    let dir = scratch("silero-cli");
    let input = write_model(&dir, &silero_model(&V6, 11));
    let exe = env!("CARGO_BIN_EXE_weights-tool");
    let run = |extra: &[&str]| {
        Command::new(exe)
            .args(["convert", "--from", "onnx", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(dir.join("out"))
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&[]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(
        stderr.contains("converted silero-vad-v6 ->")
            && stderr.contains("14 tensors, 309633 weights"),
        "{stderr}"
    );
    assert!(dir.join("out/config.json").is_file());

    let named = run(&["--name", "x"]);
    assert!(!named.status.success());
    assert!(String::from_utf8_lossy(&named.stderr).contains("--name applies to --from ct2 only"));
}

/// Writes the fuzz target's seeds (`fuzz/seeds/onnx/`). Run on purpose only:
/// `cargo test --release -p amanuensis-weights-tools -- --ignored write_onnx_fuzz_seeds`.
#[test]
#[ignore]
fn write_onnx_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/onnx");
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = SileroDims::TINY;
    let raw = silero_model(&tiny, 12);
    let mut typed = raw.clone();
    for t in &mut typed.graph.as_mut().unwrap().initializer {
        if t.data_type == data_type::FLOAT {
            t.float_data = t
                .raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            t.raw_data.clear();
        }
    }
    // The real graph's structure at the real sizes, weights left out (the real file is far
    // larger than a fuzz input): reaches every check up to the first weight's data.
    let mut skeleton = silero_model(&V6, 12);
    for t in &mut skeleton.graph.as_mut().unwrap().initializer {
        if t.data_type == data_type::FLOAT && t.dims.len() > 1 {
            t.raw_data.clear();
        }
    }
    for (name, m) in [
        ("tiny.onnx", &raw),
        ("tiny-float-data.onnx", &typed),
        ("v6-without-weights.onnx", &skeleton),
    ] {
        std::fs::write(dir.join(name), m.encode_to_vec()).unwrap();
    }
    assert!(map_silero_bytes(&raw.encode_to_vec(), "tiny.onnx", &tiny).is_ok());
    assert!(map_silero_bytes(&typed.encode_to_vec(), "tiny.onnx", &tiny).is_ok());
}

/// A device, a FIFO or a directory named as an input is refused before it is read: a
/// `/dev/zero` was read until the process ran out of memory (1.5 GB a second).
#[cfg(unix)]
#[test]
fn the_cli_refuses_inputs_that_are_not_regular_files() {
    let exe = env!("CARGO_BIN_EXE_weights-tool");
    let dir = scratch("not-regular-files");
    let out = dir.join("out");
    let runs: [&[&str]; 3] = [
        &["inspect", "/dev/zero"],
        &[
            "convert",
            "--from",
            "onnx",
            "--input",
            "/dev/zero",
            "--output",
        ],
        &[
            "convert",
            "--from",
            "ct2",
            "--input",
            "/dev/zero",
            "--output",
        ],
    ];
    for args in runs {
        let mut c = Command::new(exe);
        c.args(args);
        if args.last() == Some(&"--output") {
            c.arg(&out);
        }
        let start = std::time::Instant::now();
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("/dev/zero") && err.contains("not a regular file"),
            "{args:?}: {err}"
        );
        assert!(
            start.elapsed().as_secs() < 10,
            "{args:?} took {:?}",
            start.elapsed()
        );
    }
    assert!(!out.exists());
}
