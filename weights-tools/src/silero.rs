//! Silero VAD v6 (ONNX, as shipped in the faster-whisper wheel) → the project's VAD model
//! directory (`model.safetensors`, all float32, and `config.json`). The mapping and the
//! checks are documented in `docs/weights.md`.
//!
//! The ONNX graph is validated against what the runtime's VAD graph computes: the exact
//! operator sequence, the reflect padding, the STFT basis convolution, the encoder
//! convolutions' strides and padding, the spectrum slices, the LSTM's settings and every
//! weight's shape and type. Weights are found through the nodes that use them (the LSTM's
//! have export-artifact names such as `onnx::LSTM_209`), never by name alone.

use amanuensis_runtime::files::{read_regular, NO_LIMIT};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::convert::{sha256_hex, CONVERTER_VERSION};
use crate::fsutil::{write_atomic, WriteError};
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::onnx::{
    attr_int, attr_ints, attr_string, is_default_domain, AttributeIssue, OnnxError, OnnxModel,
};
use crate::st::{serialize_safetensors, validate, TensorRef};

/// `format` of the VAD `config.json`.
pub const VAD_CONFIG_FORMAT: &str = "amanuensis-vad";
/// `version` of the VAD `config.json`.
pub const VAD_CONFIG_VERSION: u32 = 1;
/// Name of the converted model, and the safetensors layout name.
pub const SILERO_V6_NAME: &str = "silero-vad-v6";
/// Sample rate the model runs at.
pub const SAMPLE_RATE: u32 = 16_000;
/// New samples per model call.
pub const WINDOW_SAMPLES: usize = 512;
/// Samples of the previous window prepended to each call (the ONNX input is 576 wide).
pub const CONTEXT_SAMPLES: usize = 64;

/// The VAD model directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VadConfig {
    /// Always [`VAD_CONFIG_FORMAT`].
    pub format: String,
    /// Always [`VAD_CONFIG_VERSION`].
    pub version: u32,
    /// Model name (`silero-vad-v6`).
    pub name: String,
    /// Input sample rate, Hz.
    pub sample_rate: u32,
    /// New samples per call.
    pub window_samples: usize,
    /// Samples of the previous call prepended to the window.
    pub context_samples: usize,
    /// LSTM state width.
    pub hidden_size: usize,
}

impl VadConfig {
    /// The configuration of Silero VAD v6.
    pub fn silero_v6() -> VadConfig {
        VadConfig {
            format: VAD_CONFIG_FORMAT.to_string(),
            version: VAD_CONFIG_VERSION,
            name: SILERO_V6_NAME.to_string(),
            sample_rate: SAMPLE_RATE,
            window_samples: WINDOW_SAMPLES,
            context_samples: CONTEXT_SAMPLES,
            hidden_size: SileroDims::V6.hidden,
        }
    }
}

/// The sizes of a Silero-shaped graph. [`SileroDims::V6`] is the real model, the only one
/// the converter writes; [`SileroDims::TINY`] is a miniature of the same graph for tests
/// and the fuzz target (a real-sized model does not fit in a fuzz input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SileroDims {
    /// STFT window (the basis convolution's kernel).
    pub n_fft: usize,
    /// STFT hop (the basis convolution's stride).
    pub hop: usize,
    /// Reflect padding on each side of the input.
    pub pad: usize,
    /// Output channels of the four encoder convolutions.
    pub channels: [usize; 4],
    /// Strides of the four encoder convolutions.
    pub strides: [usize; 4],
    /// LSTM hidden size.
    pub hidden: usize,
}

impl SileroDims {
    /// Silero VAD v6 at 16 kHz.
    pub const V6: SileroDims = SileroDims {
        n_fft: 256,
        hop: 128,
        pad: 128,
        channels: [128, 64, 64, 128],
        strides: [1, 2, 2, 1],
        hidden: 128,
    };

    /// A miniature with the same structure (tests, fuzzing).
    pub const TINY: SileroDims = SileroDims {
        n_fft: 8,
        hop: 4,
        pad: 4,
        channels: [3, 2, 2, 4],
        strides: [1, 2, 2, 1],
        hidden: 4,
    };

    /// Frequency bins of the STFT (`n_fft / 2 + 1`): the basis holds real and imaginary
    /// rows for each.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }
}

/// Operator types of the Silero VAD v6 graph, in node order.
pub const SILERO_V6_OPS: [&str; 25] = [
    "Pad",
    "Unsqueeze",
    "Conv",
    "Slice",
    "Slice",
    "Pow",
    "Pow",
    "Add",
    "Sqrt",
    "Conv",
    "Relu",
    "Conv",
    "Relu",
    "Conv",
    "Relu",
    "Conv",
    "Relu",
    "Transpose",
    "LSTM",
    "Squeeze",
    "Relu",
    "Transpose",
    "Conv",
    "Sigmoid",
    "Reshape",
];

// Node indices in SILERO_V6_OPS.
const PAD: usize = 0;
const STFT: usize = 2;
const SLICE_REAL: usize = 3;
const SLICE_IMAG: usize = 4;
const POW: [usize; 2] = [5, 6];
const ENCODER_CONV: [usize; 4] = [9, 11, 13, 15];
const LSTM: usize = 18;
const OUT_CONV: usize = 22;

/// Why a Silero VAD conversion failed.
#[derive(Debug, Error)]
pub enum VadConvertError {
    /// A file could not be read or written.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The ONNX file or one of its initializers is malformed.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// The graph's operators differ from Silero VAD v6's.
    #[error("{file}: node {index} {found} but Silero VAD v6 has {expected} there (its graph is {sequence})", sequence = SILERO_V6_OPS.join(", "))]
    OpSequence {
        file: String,
        index: usize,
        /// What the file has (`is 'Mul' ('/name')`, or `is missing`).
        found: String,
        /// What Silero VAD v6 has (`'Pow'`, or `no further node`).
        expected: String,
    },
    /// A node's attributes or inputs differ from what the runtime's graph computes.
    #[error("{file}: node {index} '{op}' ('{node}'): {detail}")]
    UnsupportedNode {
        file: String,
        index: usize,
        op: String,
        node: String,
        detail: String,
    },
    /// A node input that must be a weight is not an initializer.
    #[error("{file}: input {input} of node {index} '{op}' ('{node}') is '{name}', which is not an initializer (weights must be stored in the graph)")]
    MissingInitializer {
        file: String,
        index: usize,
        op: String,
        node: String,
        input: usize,
        name: String,
    },
    /// An initializer's shape differs from Silero VAD v6's.
    #[error("{file}: initializer '{name}' ({role}) has shape {shape:?}, expected {expected:?}")]
    UnexpectedShape {
        file: String,
        name: String,
        role: String,
        shape: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A weight is NaN or infinite.
    #[error("{file}: initializer '{name}' has a non-finite value at element {index} (bits 0x{bits:08x})")]
    NonFinite {
        file: String,
        name: String,
        index: usize,
        bits: u32,
    },
    /// Serialising the safetensors file failed.
    #[error("cannot serialize {path}: {detail}")]
    Serialize { path: PathBuf, detail: String },
}

impl From<WriteError> for VadConvertError {
    fn from(e: WriteError) -> VadConvertError {
        VadConvertError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// One output tensor: float32, little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VadTensor {
    /// Output name (`stft.basis`, `decoder.rnn.weight_ih`, ...).
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Little-endian f32 payload.
    pub data: Vec<u8>,
}

/// The validated, mapped model.
#[derive(Debug, Clone)]
pub struct SileroTensors {
    /// Output tensors, in the order of `docs/weights.md`.
    pub tensors: Vec<VadTensor>,
    /// `ModelProto.ir_version` of the source.
    pub ir_version: i64,
    /// Version of the standard operator set the source imports, if any.
    pub opset: Option<i64>,
    /// The source's producer name and version.
    pub producer: String,
}

/// Validation context: the model and the file name for errors.
struct Checker<'m> {
    model: &'m OnnxModel,
    file: &'m str,
}

impl<'m> Checker<'m> {
    fn node(&self, index: usize) -> &'m NodeProto {
        &self.model.graph.node[index]
    }

    fn node_error(&self, index: usize, detail: String) -> VadConvertError {
        let n = self.node(index);
        VadConvertError::UnsupportedNode {
            file: self.file.to_string(),
            index,
            op: n.op_type.clone(),
            node: n.name.clone(),
            detail,
        }
    }

    fn attr_error(&self, index: usize, name: &str, issue: AttributeIssue) -> VadConvertError {
        self.node_error(index, format!("attribute '{name}' {issue}"))
    }

    fn ints(&self, index: usize, name: &str) -> Result<Option<&'m [i64]>, VadConvertError> {
        attr_ints(self.node(index), name).map_err(|e| self.attr_error(index, name, e))
    }

    fn int(&self, index: usize, name: &str) -> Result<Option<i64>, VadConvertError> {
        attr_int(self.node(index), name).map_err(|e| self.attr_error(index, name, e))
    }

    fn string(&self, index: usize, name: &str) -> Result<Option<&'m str>, VadConvertError> {
        attr_string(self.node(index), name).map_err(|e| self.attr_error(index, name, e))
    }

    /// An `INTS` attribute that must equal `expected`, or may be absent when `absent_ok`
    /// (ONNX's default for it is then `expected`, or implied by a checked weight shape).
    fn ints_eq(
        &self,
        index: usize,
        name: &str,
        expected: &[i64],
        absent_ok: bool,
    ) -> Result<(), VadConvertError> {
        match self.ints(index, name)? {
            Some(v) if v == expected => Ok(()),
            None if absent_ok => Ok(()),
            got => Err(self.node_error(
                index,
                format!(
                    "attribute '{name}' is {}, expected {expected:?}",
                    got.map_or("absent".to_string(), |v| format!("{v:?}"))
                ),
            )),
        }
    }

    /// Refuses attributes outside `known`: one the runtime does not implement would
    /// otherwise be ignored silently.
    fn only_attributes(&self, index: usize, known: &[&str]) -> Result<(), VadConvertError> {
        if let Some(a) = self
            .node(index)
            .attribute
            .iter()
            .find(|a| !known.contains(&a.name.as_str()))
        {
            return Err(self.node_error(
                index,
                format!(
                    "unexpected attribute '{}' (the runtime's graph implements only {})",
                    a.name,
                    known.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Input `input` of node `index`, or "" when absent.
    fn input(&self, index: usize, input: usize) -> &'m str {
        self.node(index)
            .input
            .get(input)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Inputs from `from` on must be absent or empty (omitted optional inputs).
    fn no_inputs_from(&self, index: usize, from: usize, what: &str) -> Result<(), VadConvertError> {
        let inputs = &self.node(index).input;
        if let Some((i, name)) = inputs
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, n)| !n.is_empty())
        {
            return Err(self.node_error(
                index,
                format!("has input {i} ('{name}'); the runtime's graph has no {what}"),
            ));
        }
        Ok(())
    }

    /// The initializer feeding input `input` of node `index`.
    fn init(&self, index: usize, input: usize) -> Result<&'m TensorProto, VadConvertError> {
        let name = self.input(index, input);
        self.model.initializer(name).ok_or_else(|| {
            let n = self.node(index);
            VadConvertError::MissingInitializer {
                file: self.file.to_string(),
                index,
                op: n.op_type.clone(),
                node: n.name.clone(),
                input,
                name: name.to_string(),
            }
        })
    }

    /// An INT64 initializer's values.
    fn i64s(&self, index: usize, input: usize) -> Result<Vec<i64>, VadConvertError> {
        let t = self.init(index, input)?;
        Ok(self.model.i64s(t)?)
    }

    /// A FLOAT initializer of exactly `expected` shape, as f32 LE bytes, checked finite.
    fn weight(
        &self,
        index: usize,
        input: usize,
        role: &str,
        expected: &[usize],
    ) -> Result<(String, Vec<u8>), VadConvertError> {
        let t = self.init(index, input)?;
        let shape = self.model.dims(t)?;
        if shape != expected {
            return Err(VadConvertError::UnexpectedShape {
                file: self.file.to_string(),
                name: t.name.clone(),
                role: role.to_string(),
                shape,
                expected: expected.to_vec(),
            });
        }
        let data = self.model.f32_le(t)?;
        if let Some((i, bits)) = data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .enumerate()
            .find(|&(_, b)| !f32::from_bits(b).is_finite())
        {
            return Err(VadConvertError::NonFinite {
                file: self.file.to_string(),
                name: t.name.clone(),
                index: i,
                bits,
            });
        }
        Ok((t.name.clone(), data))
    }

    /// Checks a convolution's attributes: kernel, stride, symmetric padding, no dilation,
    /// one group, explicit padding.
    fn conv_attributes(
        &self,
        index: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<(), VadConvertError> {
        self.only_attributes(
            index,
            &[
                "kernel_shape",
                "strides",
                "pads",
                "dilations",
                "group",
                "auto_pad",
            ],
        )?;
        self.ints_eq(index, "kernel_shape", &[kernel as i64], true)?;
        self.ints_eq(index, "strides", &[stride as i64], stride == 1)?;
        self.ints_eq(index, "pads", &[pad as i64, pad as i64], pad == 0)?;
        self.ints_eq(index, "dilations", &[1], true)?;
        match self.int(index, "group")? {
            None | Some(1) => {}
            Some(g) => {
                return Err(self.node_error(index, format!("attribute 'group' is {g}, expected 1")))
            }
        }
        match self.string(index, "auto_pad")? {
            None | Some("NOTSET") => Ok(()),
            Some(p) => Err(self.node_error(
                index,
                format!("attribute 'auto_pad' is {p:?}, expected NOTSET (explicit pads)"),
            )),
        }
    }
}

/// Checks the operator sequence and domains.
fn check_ops(model: &OnnxModel, file: &str) -> Result<(), VadConvertError> {
    let nodes = &model.graph.node;
    for index in 0..nodes.len().max(SILERO_V6_OPS.len()) {
        let (found, expected) = (nodes.get(index), SILERO_V6_OPS.get(index));
        let ok = match (found, expected) {
            (Some(n), Some(&op)) => n.op_type == op && is_default_domain(&n.domain),
            _ => false,
        };
        if !ok {
            let found = match found {
                Some(n) if is_default_domain(&n.domain) => {
                    format!("is '{}' ('{}')", n.op_type, n.name)
                }
                Some(n) => format!("is '{}' of domain '{}' ('{}')", n.op_type, n.domain, n.name),
                None => "is missing".to_string(),
            };
            let expected = match expected {
                Some(op) => format!("'{op}'"),
                None => "no further node".to_string(),
            };
            return Err(VadConvertError::OpSequence {
                file: file.to_string(),
                index,
                found,
                expected,
            });
        }
    }
    Ok(())
}

/// Validates a decoded Silero-shaped graph of sizes `dims` and maps its weights.
pub fn map_silero(
    model: &OnnxModel,
    file: &str,
    dims: &SileroDims,
) -> Result<SileroTensors, VadConvertError> {
    check_ops(model, file)?;
    let c = Checker { model, file };
    let bins = dims.bins();
    let mut out = Vec::with_capacity(14);
    let mut push = |name: &str, shape: Vec<usize>, data: Vec<u8>| {
        out.push(VadTensor {
            name: name.to_string(),
            shape,
            data,
        })
    };

    // Pad: reflect, `pad` samples on both sides of the sample axis of the [batch, samples] input.
    c.only_attributes(PAD, &["mode"])?;
    match c.string(PAD, "mode")? {
        Some("reflect") => {}
        m => {
            return Err(c.node_error(
                PAD,
                format!(
                    "mode is {}, expected \"reflect\"",
                    m.map_or("absent (constant)".to_string(), |m| format!("{m:?}"))
                ),
            ))
        }
    }
    let pads = c.i64s(PAD, 1)?;
    let p = dims.pad as i64;
    if pads != [0, p, 0, p] {
        return Err(c.node_error(PAD, format!("pads are {pads:?}, expected [0, {p}, 0, {p}]")));
    }
    c.no_inputs_from(PAD, 2, "constant value or axes input")?;

    // The STFT as a convolution with the [2 * bins, 1, n_fft] basis, no bias.
    c.conv_attributes(STFT, dims.n_fft, dims.hop, 0)?;
    c.no_inputs_from(STFT, 2, "bias on the STFT basis convolution")?;
    let (_, basis) = c.weight(STFT, 1, "STFT basis", &[2 * bins, 1, dims.n_fft])?;
    push("stft.basis", vec![2 * bins, 1, dims.n_fft], basis);

    // Real and imaginary halves of the spectrum, first frame dropped.
    for (index, start, part) in [(SLICE_REAL, 0, "real"), (SLICE_IMAG, bins, "imaginary")] {
        let starts = c.i64s(index, 1)?;
        let ends = c.i64s(index, 2)?;
        let axes = c.i64s(index, 3)?;
        let steps = if c.input(index, 4).is_empty() {
            vec![1, 1]
        } else {
            c.i64s(index, 4)?
        };
        let b = bins as i64;
        let channel_end_ok = match ends.first() {
            Some(&e) if start == 0 => e == b,
            Some(&e) => e >= 2 * b,
            None => false,
        };
        if starts != [start as i64, 1]
            || !channel_end_ok
            || ends.get(1) != Some(&i64::MAX)
            || ends.len() != 2
            || axes != [1, 2]
            || steps != [1, 1]
        {
            return Err(c.node_error(
                index,
                format!(
                    "starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?}; expected the {part} part: channels {start}..{} and frames 1.. on axes [1, 2] with steps 1",
                    start + bins
                ),
            ));
        }
    }

    // Squares of both halves.
    for index in POW {
        let t = c.init(index, 1)?;
        let shape = model.dims(t)?;
        let v = model.f32_le(t)?;
        if shape.iter().product::<usize>() != 1 || v != 2f32.to_le_bytes() {
            return Err(c.node_error(
                index,
                format!(
                    "exponent '{}' is not the scalar 2.0 (shape {shape:?}, {} bytes)",
                    t.name,
                    v.len()
                ),
            ));
        }
    }

    // Encoder: four kernel-3 convolutions with bias, padding 1.
    let mut in_ch = bins;
    for (i, &index) in ENCODER_CONV.iter().enumerate() {
        let out_ch = dims.channels[i];
        c.conv_attributes(index, 3, dims.strides[i], 1)?;
        c.no_inputs_from(index, 3, "further inputs")?;
        let (_, w) = c.weight(
            index,
            1,
            &format!("encoder convolution {i} weight"),
            &[out_ch, in_ch, 3],
        )?;
        let (_, b) = c.weight(
            index,
            2,
            &format!("encoder convolution {i} bias"),
            &[out_ch],
        )?;
        push(
            &format!("encoder.conv_layers.{i}.weight"),
            vec![out_ch, in_ch, 3],
            w,
        );
        push(&format!("encoder.conv_layers.{i}.bias"), vec![out_ch], b);
        in_ch = out_ch;
    }

    // LSTM: one forward layer, default activations, weights W, R, B as inputs 1, 2, 3.
    let h = dims.hidden;
    c.only_attributes(
        LSTM,
        &["hidden_size", "direction", "layout", "input_forget"],
    )?;
    match c.int(LSTM, "hidden_size")? {
        Some(v) if v == h as i64 => {}
        v => {
            return Err(c.node_error(
                LSTM,
                format!(
                    "hidden_size is {}, expected {h}",
                    v.map_or("absent".to_string(), |v| v.to_string())
                ),
            ))
        }
    }
    match c.string(LSTM, "direction")? {
        None | Some("forward") => {}
        Some(d) => {
            return Err(c.node_error(LSTM, format!("direction is {d:?}, expected \"forward\"")))
        }
    }
    for name in ["layout", "input_forget"] {
        match c.int(LSTM, name)? {
            None | Some(0) => {}
            Some(v) => {
                return Err(c.node_error(LSTM, format!("attribute '{name}' is {v}, expected 0")))
            }
        }
    }
    if c.input(LSTM, 3).is_empty() {
        return Err(c.node_error(
            LSTM,
            "has no bias input B (input 3); Silero VAD v6 has one".to_string(),
        ));
    }
    if !c.input(LSTM, 4).is_empty() {
        return Err(c.node_error(
            LSTM,
            format!(
                "has a sequence_lens input ('{}'); the runtime's graph has none",
                c.input(LSTM, 4)
            ),
        ));
    }
    c.no_inputs_from(LSTM, 7, "peephole weights")?;
    let (_, w) = c.weight(LSTM, 1, "LSTM input weights W", &[1, 4 * h, in_ch])?;
    let (_, r) = c.weight(LSTM, 2, "LSTM recurrent weights R", &[1, 4 * h, h])?;
    let (_, b) = c.weight(LSTM, 3, "LSTM biases B", &[1, 8 * h])?;
    push("decoder.rnn.weight_ih", vec![4 * h, in_ch], w);
    push("decoder.rnn.weight_hh", vec![4 * h, h], r);
    push("decoder.rnn.bias", vec![8 * h], b);

    // Output: a kernel-1 convolution from the hidden state to one logit.
    c.conv_attributes(OUT_CONV, 1, 1, 0)?;
    c.no_inputs_from(OUT_CONV, 3, "further inputs")?;
    let (_, w) = c.weight(OUT_CONV, 1, "output convolution weight", &[1, h, 1])?;
    let (_, b) = c.weight(OUT_CONV, 2, "output convolution bias", &[1])?;
    push("decoder.out.weight", vec![1, h], w);
    push("decoder.out.bias", vec![1], b);

    Ok(SileroTensors {
        tensors: out,
        ir_version: model.ir_version,
        opset: model.default_opset(),
        producer: model.producer.clone(),
    })
}

/// Decodes ONNX bytes and maps them as a Silero graph of sizes `dims` (no file system
/// access: what `convert_silero_vad` does before writing, and what the fuzz target runs).
pub fn map_silero_bytes(
    bytes: &[u8],
    file: &str,
    dims: &SileroDims,
) -> Result<SileroTensors, VadConvertError> {
    let model = OnnxModel::decode(bytes, file)?;
    map_silero(&model, file, dims)
}

/// Serialises mapped tensors to safetensors bytes (F32), with `metadata`.
pub fn serialize_vad(
    tensors: &[VadTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, crate::st::SafetensorsWriteError> {
    let refs: Vec<TensorRef<'_>> = tensors
        .iter()
        .map(|t| TensorRef {
            name: &t.name,
            dtype: Dtype::F32,
            shape: &t.shape,
            data: &t.data,
        })
        .collect();
    serialize_safetensors(&refs, metadata)
}

/// What `convert_silero_vad` is asked to do.
#[derive(Debug, Clone)]
pub struct VadConvertOptions {
    /// The Silero VAD v6 `.onnx` file.
    pub input: PathBuf,
    /// Output model directory (created if needed).
    pub output: PathBuf,
}

/// What `convert_silero_vad` produced.
#[derive(Debug, Clone)]
pub struct VadConvertSummary {
    /// Model name written to `config.json`.
    pub name: String,
    /// Number of tensors written.
    pub tensor_count: usize,
    /// Number of weights (f32 values) written.
    pub parameters: usize,
    /// Size of `model.safetensors`.
    pub safetensors_bytes: u64,
    /// sha256 of the source `.onnx`, lower-case hex.
    pub source_sha256: String,
    /// The output directory.
    pub output: PathBuf,
}

/// Converts the Silero VAD v6 ONNX file into the project's VAD model directory.
///
/// Everything is checked before anything is written; files are written atomically and
/// `config.json` last (an existing one is removed first), so a directory with a
/// `config.json` holds a complete conversion.
pub fn convert_silero_vad(opts: &VadConvertOptions) -> Result<VadConvertSummary, VadConvertError> {
    let bytes = read_regular(&opts.input, NO_LIMIT).map_err(|source| VadConvertError::Io {
        op: "read",
        path: opts.input.clone(),
        source,
    })?;
    let label = opts.input.display().to_string();
    let mapped = map_silero_bytes(&bytes, &label, &SileroDims::V6)?;
    let config = VadConfig::silero_v6();

    let source_sha256 = sha256_hex(&bytes);
    let source_file = opts
        .input
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| label.clone());
    let metadata: BTreeMap<String, String> = [
        ("format", "pt".to_string()),
        ("layout", SILERO_V6_NAME.to_string()),
        ("name", config.name.clone()),
        (
            "converter",
            format!("amanuensis weights-tool {CONVERTER_VERSION}"),
        ),
        ("source_format", "onnx".to_string()),
        ("source_file", source_file),
        ("source_sha256", source_sha256.clone()),
        ("source_ir_version", mapped.ir_version.to_string()),
        (
            "source_opset",
            mapped
                .opset
                .map_or_else(|| "none".to_string(), |v| v.to_string()),
        ),
        ("source_producer", mapped.producer.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let out_dir = &opts.output;
    let st_path = out_dir.join("model.safetensors");
    let serialized =
        serialize_vad(&mapped.tensors, &metadata).map_err(|e| VadConvertError::Serialize {
            path: st_path.clone(),
            detail: e.to_string(),
        })?;
    validate(&serialized, &st_path).map_err(|e| VadConvertError::Serialize {
        path: st_path.clone(),
        detail: e.to_string(),
    })?;
    let cfg_out = out_dir.join("config.json");
    let mut cfg_json =
        serde_json::to_string_pretty(&config).map_err(|e| VadConvertError::Serialize {
            path: cfg_out.clone(),
            detail: e.to_string(),
        })?;
    cfg_json.push('\n');

    std::fs::create_dir_all(out_dir).map_err(|source| VadConvertError::Io {
        op: "create directory",
        path: out_dir.clone(),
        source,
    })?;
    remove_if_present(&cfg_out)?;
    write_atomic(&st_path, &serialized)?;
    write_atomic(&cfg_out, cfg_json.as_bytes())?;

    Ok(VadConvertSummary {
        name: config.name,
        tensor_count: mapped.tensors.len(),
        parameters: mapped.tensors.iter().map(|t| t.data.len() / 4).sum(),
        safetensors_bytes: serialized.len() as u64,
        source_sha256,
        output: out_dir.clone(),
    })
}

fn remove_if_present(path: &Path) -> Result<(), VadConvertError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VadConvertError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}
