//! The Silero VAD v6 graph, built from the model's fixed geometry.
//!
//! One run takes [`CHUNK_WINDOWS`] windows of [`WINDOW_SAMPLES`] samples, each preceded by
//! the last [`CONTEXT_SAMPLES`] samples of the window before it, and gives one speech
//! probability per window. The LSTM's state is a node state, so consecutive runs continue
//! one recording; the caller resets the session's states between recordings.
//!
//! Per window (shapes for one of the chunk's windows):
//!
//! ```text
//! [576] → pad_reflect 128|128 → [832] → conv1d(stft.basis, stride 128) → [258, 5]
//!       → slice frames 1.. → [258, 4] → magnitude (re/im halves) → [129, 4]
//!       → conv 129→128 (pad 1) → relu → conv 128→64 (stride 2) → relu
//!       → conv 64→64 (stride 2) → relu → conv 64→128 → relu → [128, 1]
//! ```
//!
//! then over the chunk's windows in order: LSTM 128 → relu → linear 128→1 → sigmoid.

use amanuensis_runtime::format::{
    Dim, GraphDef, ModelFile, ModelInfo, NodeDef, ValueDecl, WeightDecl, FORMAT_TAG, FORMAT_VERSION,
};
use amanuensis_runtime::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The file name (and model name) of the committed graph.
pub const MODEL_NAME: &str = "silero-vad";
/// The graph's name inside the file.
pub const GRAPH: &str = "vad";
/// The model's sample rate.
pub const SAMPLE_RATE: usize = 16_000;
/// Samples per window, one probability each (32 ms).
pub const WINDOW_SAMPLES: usize = 512;
/// Samples of the previous window prepended to each window.
pub const CONTEXT_SAMPLES: usize = 64;
/// Windows per graph run: a static shape, so that a device can plan the graph; 256 windows
/// are 8.2 s of audio.
pub const CHUNK_WINDOWS: usize = 256;
/// The LSTM's width.
pub const HIDDEN: usize = 128;
/// STFT of the front end: a 256-tap basis (129 cosine then 129 sine rows) at hop 128,
/// over the window reflection-padded by 128 on each side.
const N_FFT: usize = 256;
const HOP: usize = 128;
const PAD: usize = 128;
/// The encoder's convolutions: (input, output channels, stride).
const CONVS: [(usize, usize, usize); 4] = [(129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)];

/// Graph input: the chunk's windows with their context, `[CHUNK_WINDOWS, 576]`.
pub const INPUT: &str = "windows";
/// Graph output: one speech probability per window, `[CHUNK_WINDOWS]`.
pub const OUTPUT: &str = "speech_probs";

fn node(nodes: &mut Vec<NodeDef>, name: &str, op: &str, inputs: &[&str], attrs: Value) -> String {
    nodes.push(NodeDef {
        name: name.to_string(),
        op: op.to_string(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![name.to_string()],
        states: Vec::new(),
        attrs: match attrs {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        },
    });
    name.to_string()
}

fn weight(weights: &mut Vec<WeightDecl>, name: &str, shape: &[usize]) -> String {
    weights.push(WeightDecl {
        name: name.to_string(),
        dtype: DType::F32,
        shape: shape.to_vec(),
    });
    name.to_string()
}

fn decl(name: &str, shape: Vec<Dim>) -> ValueDecl {
    ValueDecl {
        name: name.to_string(),
        dtype: DType::F32,
        shape,
    }
}

/// The graph file of Silero VAD v6 (`graphs/silero-vad.graph`).
pub fn build_silero_graph() -> ModelFile {
    let mut w = Vec::new();
    let mut n = Vec::new();
    let x = node(
        &mut n,
        "unsqueeze",
        "unsqueeze",
        &[INPUT],
        json!({"axis": 1}),
    );
    let x = node(
        &mut n,
        "stft.pad",
        "pad_reflect",
        &[&x],
        json!({"before": PAD, "after": PAD}),
    );
    let basis = weight(&mut w, "stft.basis", &[2 * (N_FFT / 2 + 1), 1, N_FFT]);
    let x = node(
        &mut n,
        "stft",
        "conv1d",
        &[&x, &basis],
        json!({"stride": HOP}),
    );
    // The first frame (centred on the left padding) is dropped, as the model does.
    let x = node(
        &mut n,
        "stft.frames",
        "slice",
        &[&x],
        json!({"axis": 2, "start": 1}),
    );
    let mut x = node(
        &mut n,
        "stft.magnitude",
        "magnitude",
        &[&x],
        json!({"axis": 1}),
    );
    for (i, &(c_in, c_out, stride)) in CONVS.iter().enumerate() {
        let p = format!("encoder.conv_layers.{i}");
        let cw = weight(&mut w, &format!("{p}.weight"), &[c_out, c_in, 3]);
        let cb = weight(&mut w, &format!("{p}.bias"), &[c_out]);
        let c = node(
            &mut n,
            &format!("encoder.conv{i}"),
            "conv1d",
            &[&x, &cw, &cb],
            json!({"stride": stride, "padding": 1}),
        );
        x = node(
            &mut n,
            &format!("encoder.relu{i}"),
            "relu",
            &[&c],
            json!({}),
        );
    }
    let x = node(&mut n, "encoder.out", "squeeze", &[&x], json!({"axis": 2}));
    let w_ih = weight(&mut w, "decoder.rnn.weight_ih", &[4 * HIDDEN, HIDDEN]);
    let w_hh = weight(&mut w, "decoder.rnn.weight_hh", &[4 * HIDDEN, HIDDEN]);
    let b = weight(&mut w, "decoder.rnn.bias", &[8 * HIDDEN]);
    let x = node(
        &mut n,
        "decoder.rnn",
        "lstm",
        &[&x, &w_ih, &w_hh, &b],
        json!({}),
    );
    n.last_mut().unwrap().states = vec!["lstm.h".into(), "lstm.c".into()];
    let x = node(&mut n, "decoder.relu", "relu", &[&x], json!({}));
    let ow = weight(&mut w, "decoder.out.weight", &[1, HIDDEN]);
    let ob = weight(&mut w, "decoder.out.bias", &[1]);
    let x = node(&mut n, "decoder.out", "linear", &[&x, &ow, &ob], json!({}));
    let x = node(&mut n, "decoder.sigmoid", "sigmoid", &[&x], json!({}));
    node(&mut n, "probs", "squeeze", &[&x], json!({"axis": 1}));
    n.last_mut().unwrap().outputs = vec![OUTPUT.into()];
    let graph = GraphDef {
        name: GRAPH.into(),
        inputs: vec![decl(
            INPUT,
            vec![
                Dim::Known(CHUNK_WINDOWS),
                Dim::Known(CONTEXT_SAMPLES + WINDOW_SAMPLES),
            ],
        )],
        outputs: vec![decl(OUTPUT, vec![Dim::Known(CHUNK_WINDOWS)])],
        states: vec![
            decl("lstm.h", vec![Dim::Known(HIDDEN)]),
            decl("lstm.c", vec![Dim::Known(HIDDEN)]),
        ],
        nodes: n,
    };
    let mut hp = BTreeMap::new();
    hp.insert("sample_rate".into(), json!(SAMPLE_RATE));
    hp.insert("window_samples".into(), json!(WINDOW_SAMPLES));
    hp.insert("context_samples".into(), json!(CONTEXT_SAMPLES));
    hp.insert("chunk_windows".into(), json!(CHUNK_WINDOWS));
    hp.insert("hidden_size".into(), json!(HIDDEN));
    ModelFile {
        format: FORMAT_TAG.to_string(),
        version: FORMAT_VERSION,
        model: ModelInfo {
            name: MODEL_NAME.into(),
            family: "silero-vad".into(),
            hyper_parameters: hp,
        },
        weights: w,
        graphs: vec![graph],
    }
}
