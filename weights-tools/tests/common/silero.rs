//! A writer of synthetic Silero VAD ONNX models: the graph of `silero_vad_v6.onnx` (same
//! nodes, attributes, constants and initializer names, including the LSTM's export-artifact
//! names) at any `SileroDims`, with deterministic pseudo-random weights.

use amanuensis_weights_tools::onnx::proto::*;
use amanuensis_weights_tools::onnx::{attribute_type, data_type};
use amanuensis_weights_tools::silero::SileroDims;

/// Names of the real model's initializers.
pub const BASIS: &str = "encoder.feature_extractor.forward_basis_buffer";
pub const LSTM_W: &str = "onnx::LSTM_209";
pub const LSTM_R: &str = "onnx::LSTM_210";
pub const LSTM_B: &str = "onnx::LSTM_211";
pub const OUT_W: &str = "decoder.conv1d.weight";
pub const OUT_B: &str = "decoder.conv1d.bias";
pub const PADS: &str = "/encoder/feature_extractor/padding/Reshape_1_output_0";
pub const EXPONENT: &str = "/encoder/feature_extractor/Constant_17_output_0";

/// xorshift64*: deterministic test values without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A value in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// A FLOAT tensor with its data in `raw_data`.
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An INT64 tensor with its data in `raw_data`.
pub fn i64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::INT64,
        raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

pub fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: attribute_type::STRING,
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    input: &[&str],
    output: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: input.iter().map(|s| s.to_string()).collect(),
        output: output.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        op_type: op.into(),
        attribute: attrs,
        domain: String::new(),
    }
}

fn conv_attrs(kernel: i64, pad: i64, stride: i64) -> Vec<AttributeProto> {
    vec![
        ints("dilations", &[1]),
        int("group", 1),
        ints("kernel_shape", &[kernel]),
        ints("pads", &[pad, pad]),
        ints("strides", &[stride]),
    ]
}

fn value(name: &str) -> ValueInfoProto {
    ValueInfoProto { name: name.into() }
}

/// A Silero-shaped model of sizes `d` whose weights come from `seed`.
pub fn silero_model(d: &SileroDims, seed: u64) -> ModelProto {
    let mut rng = Rng::new(seed);
    let bins = d.bins();
    let h = d.hidden;
    let mut init = Vec::new();
    init.push(f32_tensor(
        BASIS,
        &[2 * bins, 1, d.n_fft],
        &rng.values(2 * bins * d.n_fft),
    ));
    let mut in_ch = bins;
    for (i, &c) in d.channels.iter().enumerate() {
        init.push(f32_tensor(
            &format!("encoder.conv_layers.{i}.weight"),
            &[c, in_ch, 3],
            &rng.values(c * in_ch * 3),
        ));
        init.push(f32_tensor(
            &format!("encoder.conv_layers.{i}.bias"),
            &[c],
            &rng.values(c),
        ));
        in_ch = c;
    }
    init.push(f32_tensor(OUT_W, &[1, h, 1], &rng.values(h)));
    init.push(f32_tensor(OUT_B, &[1], &rng.values(1)));
    init.push(f32_tensor(
        LSTM_W,
        &[1, 4 * h, in_ch],
        &rng.values(4 * h * in_ch),
    ));
    init.push(f32_tensor(LSTM_R, &[1, 4 * h, h], &rng.values(4 * h * h)));
    init.push(f32_tensor(LSTM_B, &[1, 8 * h], &rng.values(8 * h)));
    let (b, p) = (bins as i64, d.pad as i64);
    init.push(i64_tensor(
        "/encoder/feature_extractor/padding/Constant_4_output_0",
        &[1],
        &[-1],
    ));
    init.push(i64_tensor(
        "/encoder/feature_extractor/Constant_output_0",
        &[1],
        &[1],
    ));
    init.push(f32_tensor(EXPONENT, &[], &[2.0]));
    init.push(i64_tensor(PADS, &[4], &[0, p, 0, p]));
    init.push(i64_tensor("_v_142", &[2], &[0, 1]));
    init.push(i64_tensor("_v_143", &[2], &[b, i64::MAX]));
    init.push(i64_tensor("_v_144", &[2], &[1, 2]));
    init.push(i64_tensor("_v_145", &[2], &[1, 1]));
    init.push(i64_tensor("_v_147", &[2], &[b, 1]));
    init.push(i64_tensor("_v_148", &[2], &[i64::MAX, i64::MAX]));

    let fe = "/encoder/feature_extractor";
    let mut nodes = vec![
        node(
            "Pad",
            &format!("{fe}/padding/Pad"),
            &["input", PADS],
            &["pad_out"],
            vec![string("mode", "reflect")],
        ),
        node(
            "Unsqueeze",
            &format!("{fe}/Unsqueeze"),
            &["pad_out", "/encoder/feature_extractor/Constant_output_0"],
            &["unsq_out"],
            vec![],
        ),
        node(
            "Conv",
            &format!("{fe}/Conv"),
            &["unsq_out", BASIS],
            &["stft_out"],
            conv_attrs(d.n_fft as i64, 0, d.hop as i64),
        ),
        node(
            "Slice",
            "",
            &["stft_out", "_v_142", "_v_143", "_v_144", "_v_145"],
            &["re"],
            vec![],
        ),
        node(
            "Slice",
            "",
            &["stft_out", "_v_147", "_v_148", "_v_144", "_v_145"],
            &["im"],
            vec![],
        ),
        node(
            "Pow",
            &format!("{fe}/Pow"),
            &["re", EXPONENT],
            &["re2"],
            vec![],
        ),
        node(
            "Pow",
            &format!("{fe}/Pow_1"),
            &["im", EXPONENT],
            &["im2"],
            vec![],
        ),
        node(
            "Add",
            &format!("{fe}/Add"),
            &["re2", "im2"],
            &["sum"],
            vec![],
        ),
        node("Sqrt", &format!("{fe}/Sqrt"), &["sum"], &["mag"], vec![]),
    ];
    let mut prev = "mag".to_string();
    for i in 0..4 {
        let conv_out = format!("conv{i}_out");
        let relu_out = format!("relu{i}_out");
        nodes.push(node(
            "Conv",
            &format!("/encoder/conv_layers.{i}/Conv"),
            &[
                &prev,
                &format!("encoder.conv_layers.{i}.weight"),
                &format!("encoder.conv_layers.{i}.bias"),
            ],
            &[&conv_out],
            conv_attrs(3, 1, d.strides[i] as i64),
        ));
        nodes.push(node(
            "Relu",
            &format!("/encoder/relu_{i}/Relu"),
            &[&conv_out],
            &[&relu_out],
            vec![],
        ));
        prev = relu_out;
    }
    nodes.extend([
        node(
            "Transpose",
            "/Transpose",
            &[&prev],
            &["tr"],
            vec![ints("perm", &[0, 2, 1])],
        ),
        node(
            "LSTM",
            "/decoder/rnn/LSTM",
            &["tr", LSTM_W, LSTM_R, LSTM_B, "", "h", "c"],
            &["lstm_out", "hn", "cn"],
            vec![int("hidden_size", h as i64)],
        ),
        node(
            "Squeeze",
            "/decoder/rnn/Squeeze",
            &["lstm_out", "/encoder/feature_extractor/Constant_output_0"],
            &["sq"],
            vec![],
        ),
        node("Relu", "/decoder/relu/Relu", &["sq"], &["dr"], vec![]),
        node(
            "Transpose",
            "/decoder/Transpose",
            &["dr"],
            &["dt"],
            vec![ints("perm", &[1, 2, 0])],
        ),
        node(
            "Conv",
            "/decoder/conv1d/Conv",
            &["dt", OUT_W, OUT_B],
            &["logit"],
            conv_attrs(1, 0, 1),
        ),
        node(
            "Sigmoid",
            "/decoder/sigmoid/Sigmoid",
            &["logit"],
            &["prob"],
            vec![],
        ),
        node(
            "Reshape",
            "/Reshape",
            &[
                "prob",
                "/encoder/feature_extractor/padding/Constant_4_output_0",
            ],
            &["speech_probs"],
            vec![int("allowzero", 0)],
        ),
    ]);

    ModelProto {
        ir_version: 8,
        producer_name: "pytorch".into(),
        producer_version: "2.8.0".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "main_graph".into(),
            initializer: init,
            input: vec![value("input"), value("h"), value("c")],
            output: vec![value("speech_probs"), value("hn"), value("cn")],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
    }
}

/// The model's initializer `name` (panics when absent).
pub fn init_mut<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

/// The model's node `index`.
pub fn node_mut(m: &mut ModelProto, index: usize) -> &mut NodeProto {
    &mut m.graph.as_mut().unwrap().node[index]
}

/// The model's initializer `name`.
pub fn init<'a>(m: &'a ModelProto, name: &str) -> &'a TensorProto {
    m.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}
