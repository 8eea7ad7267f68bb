//! Reading ONNX models: the part of `onnx.proto` the converters use, declared by hand as
//! prost messages (no protoc, no build script), and checked access to initializers.
//!
//! Decoding is prost's: every length is checked against the bytes that remain, fields this
//! subset does not declare are skipped, and nesting is limited (prost's recursion limit),
//! so no input makes it panic; a truncated or non-protobuf input is a [`OnnxError::Decode`].
//! Everything after decoding (dimensions, element types, data lengths) is checked here, with
//! errors that name the file and the initializer.

use std::collections::HashMap;

use prost::Message;
use thiserror::Error;

/// The subset of `onnx.proto` (IR version 3 and later) that the converters read. Field
/// numbers are those of `onnx/onnx.proto`; every other field is skipped when decoding.
/// Scalars are declared without presence (an absent field reads as its default), which is
/// what the readers below need.
pub mod proto {
    /// `ModelProto`: the file's top-level message.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// The ONNX IR version the file was written for.
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        /// Name of the exporting tool (e.g. `pytorch`).
        #[prost(string, tag = "2")]
        pub producer_name: String,
        /// Version of the exporting tool.
        #[prost(string, tag = "3")]
        pub producer_version: String,
        /// The graph.
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        /// Operator sets the graph uses.
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
    }

    /// `OperatorSetIdProto`: one imported operator set.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        /// Domain; empty (or `ai.onnx`) for the standard operators.
        #[prost(string, tag = "1")]
        pub domain: String,
        /// Operator set version.
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    /// `GraphProto`: nodes in topological order, initializers, inputs and outputs.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        /// Nodes, in topological order.
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        /// Graph name.
        #[prost(string, tag = "2")]
        pub name: String,
        /// Constant tensors (the weights).
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        /// Graph inputs.
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        /// Graph outputs.
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    /// `NodeProto`: one operator application.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        /// Input value names; an empty name is an omitted optional input.
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        /// Output value names.
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        /// Node name (for messages only).
        #[prost(string, tag = "3")]
        pub name: String,
        /// Operator name (`Conv`, `LSTM`, ...).
        #[prost(string, tag = "4")]
        pub op_type: String,
        /// Attributes.
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        /// Operator domain; empty (or `ai.onnx`) for the standard operators.
        #[prost(string, tag = "7")]
        pub domain: String,
    }

    /// `AttributeProto`: a named attribute value; `type` says which field holds it.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        /// Attribute name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `FLOAT` value.
        #[prost(float, tag = "2")]
        pub f: f32,
        /// `INT` value.
        #[prost(int64, tag = "3")]
        pub i: i64,
        /// `STRING` value (UTF-8 bytes).
        #[prost(bytes = "vec", tag = "4")]
        pub s: Vec<u8>,
        /// `TENSOR` value.
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        /// `FLOATS` value.
        #[prost(float, repeated, packed = "false", tag = "7")]
        pub floats: Vec<f32>,
        /// `INTS` value.
        #[prost(int64, repeated, packed = "false", tag = "8")]
        pub ints: Vec<i64>,
        /// `STRINGS` value.
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
        /// The `AttributeProto.AttributeType` of the value (see [`super::attribute_type`]).
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    /// `ValueInfoProto`: a graph input or output (only its name is read).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        /// Value name.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// `TensorProto`: a tensor's dimensions, element type and data.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// Dimensions, outermost first.
        #[prost(int64, repeated, packed = "false", tag = "1")]
        pub dims: Vec<i64>,
        /// `TensorProto.DataType` of the elements (see [`super::data_type`]).
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        /// `FLOAT` data when `raw_data` is not used.
        #[prost(float, repeated, packed = "true", tag = "4")]
        pub float_data: Vec<f32>,
        /// `INT32` (and smaller integer) data when `raw_data` is not used.
        #[prost(int32, repeated, packed = "true", tag = "5")]
        pub int32_data: Vec<i32>,
        /// `INT64` data when `raw_data` is not used.
        #[prost(int64, repeated, packed = "true", tag = "7")]
        pub int64_data: Vec<i64>,
        /// Tensor name (the value name nodes refer to).
        #[prost(string, tag = "8")]
        pub name: String,
        /// Data as little-endian bytes (used by every current exporter for weights).
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        /// `DOUBLE` data when `raw_data` is not used.
        #[prost(double, repeated, packed = "true", tag = "10")]
        pub double_data: Vec<f64>,
        /// Where external data lives (`location`, `offset`, `length`, ...).
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
        /// `DEFAULT` (0) or `EXTERNAL` (1).
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    /// `StringStringEntryProto`: a key/value pair.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        /// Key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

use proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// `TensorProto.DataType` values.
pub mod data_type {
    /// IEEE binary32.
    pub const FLOAT: i32 = 1;
    /// Signed 64-bit integer.
    pub const INT64: i32 = 7;

    /// The name `onnx.proto` gives a data type id.
    pub fn name(id: i32) -> &'static str {
        match id {
            0 => "UNDEFINED",
            1 => "FLOAT",
            2 => "UINT8",
            3 => "INT8",
            4 => "UINT16",
            5 => "INT16",
            6 => "INT32",
            7 => "INT64",
            8 => "STRING",
            9 => "BOOL",
            10 => "FLOAT16",
            11 => "DOUBLE",
            12 => "UINT32",
            13 => "UINT64",
            14 => "COMPLEX64",
            15 => "COMPLEX128",
            16 => "BFLOAT16",
            17..=20 => "FLOAT8",
            21 => "UINT4",
            22 => "INT4",
            23 => "FLOAT4E2M1",
            _ => "unknown",
        }
    }
}

/// `AttributeProto.AttributeType` values.
pub mod attribute_type {
    /// One float (`f`).
    pub const FLOAT: i32 = 1;
    /// One integer (`i`).
    pub const INT: i32 = 2;
    /// One string (`s`).
    pub const STRING: i32 = 3;
    /// One tensor (`t`).
    pub const TENSOR: i32 = 4;
    /// A list of floats (`floats`).
    pub const FLOATS: i32 = 6;
    /// A list of integers (`ints`).
    pub const INTS: i32 = 7;
    /// A list of strings (`strings`).
    pub const STRINGS: i32 = 8;
}

/// `TensorProto.DataLocation::EXTERNAL`.
const DATA_LOCATION_EXTERNAL: i32 = 1;

/// Why an ONNX model or one of its initializers could not be read.
#[derive(Debug, Error)]
pub enum OnnxError {
    /// The bytes are not a protobuf `ModelProto` (truncated, corrupt, or another format).
    #[error("{file}: not a valid ONNX model (truncated, or not an ONNX protobuf file): {detail}")]
    Decode { file: String, detail: String },
    /// The model has no graph.
    #[error("{file}: the ONNX model has no graph")]
    NoGraph { file: String },
    /// Two initializers share a name.
    #[error("{file}: initializer '{name}' is defined more than once")]
    DuplicateInitializer { file: String, name: String },
    /// A dimension is negative, or the element count overflows.
    #[error("{file}: initializer '{name}' has invalid dimensions {dims:?}: {reason}")]
    BadDims {
        file: String,
        name: String,
        dims: Vec<i64>,
        reason: &'static str,
    },
    /// The element type is not the one needed.
    #[error("{file}: initializer '{name}' has element type {found} ({id}), expected {expected}")]
    UnexpectedType {
        file: String,
        name: String,
        found: &'static str,
        id: i32,
        expected: &'static str,
    },
    /// The data is stored in a separate file.
    #[error("{file}: initializer '{name}' keeps its data in an external file, which is not supported (export the model with its weights inside the .onnx file)")]
    ExternalData { file: String, name: String },
    /// The data does not hold exactly as many elements as the dimensions say.
    #[error("{file}: initializer '{name}' of shape {shape:?} needs {elements} elements ({} bytes of raw_data) but holds {found}", byte_count(*.elements, *.element_size))]
    DataLength {
        file: String,
        name: String,
        shape: Vec<usize>,
        elements: usize,
        /// Bytes per element in `raw_data`.
        element_size: usize,
        /// What the tensor holds instead (`20 bytes of raw_data`, `no data`, ...).
        found: String,
    },
}

/// `elements * size` as text, or "more than usize::MAX".
fn byte_count(elements: usize, size: usize) -> String {
    elements
        .checked_mul(size)
        .map_or_else(|| "more than usize::MAX".to_string(), |b| b.to_string())
}

/// A decoded ONNX model with an index of its initializers.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The file name errors are labelled with.
    pub file: String,
    /// `ModelProto.ir_version`.
    pub ir_version: i64,
    /// `producer_name` and `producer_version`, space-separated.
    pub producer: String,
    /// Imported operator sets, `(domain, version)`.
    pub opsets: Vec<(String, i64)>,
    /// The graph.
    pub graph: GraphProto,
    initializers: HashMap<String, usize>,
}

impl OnnxModel {
    /// Decodes an ONNX `ModelProto` from `bytes`; `file` labels errors.
    pub fn decode(bytes: &[u8], file: &str) -> Result<OnnxModel, OnnxError> {
        let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
            file: file.to_string(),
            detail: e.to_string(),
        })?;
        let graph = model.graph.ok_or_else(|| OnnxError::NoGraph {
            file: file.to_string(),
        })?;
        let mut initializers = HashMap::with_capacity(graph.initializer.len());
        for (i, t) in graph.initializer.iter().enumerate() {
            if initializers.insert(t.name.clone(), i).is_some() {
                return Err(OnnxError::DuplicateInitializer {
                    file: file.to_string(),
                    name: t.name.clone(),
                });
            }
        }
        let producer = format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string();
        Ok(OnnxModel {
            file: file.to_string(),
            ir_version: model.ir_version,
            producer,
            opsets: model
                .opset_import
                .into_iter()
                .map(|o| (o.domain, o.version))
                .collect(),
            graph,
            initializers,
        })
    }

    /// The initializer named `name`.
    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.initializers
            .get(name)
            .and_then(|&i| self.graph.initializer.get(i))
    }

    /// Version of the standard operator set (domain `""` or `ai.onnx`), if imported.
    pub fn default_opset(&self) -> Option<i64> {
        self.opsets
            .iter()
            .find(|(d, _)| is_default_domain(d))
            .map(|&(_, v)| v)
    }

    /// The tensor's dimensions (see [`tensor_dims`]).
    pub fn dims(&self, t: &TensorProto) -> Result<Vec<usize>, OnnxError> {
        tensor_dims(t, &self.file)
    }

    /// The tensor's data as little-endian f32 bytes (see [`tensor_f32_le`]).
    pub fn f32_le(&self, t: &TensorProto) -> Result<Vec<u8>, OnnxError> {
        tensor_f32_le(t, &self.file)
    }

    /// The tensor's data as i64 values (see [`tensor_i64`]).
    pub fn i64s(&self, t: &TensorProto) -> Result<Vec<i64>, OnnxError> {
        tensor_i64(t, &self.file)
    }
}

/// True for the standard operators' domain (`""` or `ai.onnx`).
pub fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// Dimensions as `usize`, refusing negative ones and element counts that overflow.
pub fn tensor_dims(t: &TensorProto, file: &str) -> Result<Vec<usize>, OnnxError> {
    let bad = |reason| OnnxError::BadDims {
        file: file.to_string(),
        name: t.name.clone(),
        dims: t.dims.clone(),
        reason,
    };
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad("a dimension is negative")))
        .collect::<Result<Vec<usize>, _>>()?;
    element_count(&dims).ok_or_else(|| bad("the element count overflows"))?;
    Ok(dims)
}

/// Product of `dims`, `None` on overflow.
fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Checks the common preconditions of reading a tensor's data: embedded, of type
/// `expected`; returns the dimensions and element count.
fn data_preconditions(
    t: &TensorProto,
    file: &str,
    expected: i32,
) -> Result<(Vec<usize>, usize), OnnxError> {
    if t.data_location == DATA_LOCATION_EXTERNAL || !t.external_data.is_empty() {
        return Err(OnnxError::ExternalData {
            file: file.to_string(),
            name: t.name.clone(),
        });
    }
    if t.data_type != expected {
        return Err(OnnxError::UnexpectedType {
            file: file.to_string(),
            name: t.name.clone(),
            found: data_type::name(t.data_type),
            id: t.data_type,
            expected: data_type::name(expected),
        });
    }
    let dims = tensor_dims(t, file)?;
    let n = element_count(&dims).unwrap_or(usize::MAX);
    Ok((dims, n))
}

/// Where a tensor's data was found, for a length error.
fn describe_data(raw: usize, typed: usize, typed_field: &str) -> String {
    match (raw, typed) {
        (0, 0) => "no data".to_string(),
        (r, 0) => format!("{r} bytes of raw_data"),
        (0, n) => format!("{n} values in {typed_field}"),
        (r, n) => format!("both raw_data ({r} bytes) and {typed_field} ({n} values)"),
    }
}

/// A FLOAT tensor's data as little-endian f32 bytes, from `raw_data` (copied) or
/// `float_data`. The data must hold exactly product(dims) elements.
pub fn tensor_f32_le(t: &TensorProto, file: &str) -> Result<Vec<u8>, OnnxError> {
    let (dims, n) = data_preconditions(t, file, data_type::FLOAT)?;
    let (raw, typed) = (t.raw_data.len(), t.float_data.len());
    let bytes = n.checked_mul(4);
    if n == 0 && raw == 0 && typed == 0 {
        return Ok(Vec::new());
    }
    if typed == 0 && Some(raw) == bytes {
        return Ok(t.raw_data.clone());
    }
    if raw == 0 && typed == n {
        return Ok(t.float_data.iter().flat_map(|x| x.to_le_bytes()).collect());
    }
    Err(OnnxError::DataLength {
        file: file.to_string(),
        name: t.name.clone(),
        shape: dims,
        elements: n,
        element_size: 4,
        found: describe_data(raw, typed, "float_data"),
    })
}

/// An INT64 tensor's values, from `raw_data` (little-endian) or `int64_data`. The data must
/// hold exactly product(dims) elements.
pub fn tensor_i64(t: &TensorProto, file: &str) -> Result<Vec<i64>, OnnxError> {
    let (dims, n) = data_preconditions(t, file, data_type::INT64)?;
    let (raw, typed) = (t.raw_data.len(), t.int64_data.len());
    let bytes = n.checked_mul(8);
    if n == 0 && raw == 0 && typed == 0 {
        return Ok(Vec::new());
    }
    if typed == 0 && Some(raw) == bytes {
        return Ok(t
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect());
    }
    if raw == 0 && typed == n {
        return Ok(t.int64_data.clone());
    }
    Err(OnnxError::DataLength {
        file: file.to_string(),
        name: t.name.clone(),
        shape: dims,
        elements: n,
        element_size: 8,
        found: describe_data(raw, typed, "int64_data"),
    })
}

/// Why an attribute could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeIssue {
    /// The node has the attribute more than once.
    Repeated,
    /// The attribute's declared type is not the one expected.
    WrongType { found: i32, expected: i32 },
    /// A string attribute is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for AttributeIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeIssue::Repeated => write!(f, "is given more than once"),
            AttributeIssue::WrongType { found, expected } => write!(
                f,
                "has attribute type {} ({found}), expected {} ({expected})",
                attribute_type_name(*found),
                attribute_type_name(*expected)
            ),
            AttributeIssue::NotUtf8 => write!(f, "is not valid UTF-8"),
        }
    }
}

/// The name `onnx.proto` gives an attribute type id.
pub fn attribute_type_name(id: i32) -> &'static str {
    match id {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "INT",
        3 => "STRING",
        4 => "TENSOR",
        5 => "GRAPH",
        6 => "FLOATS",
        7 => "INTS",
        8 => "STRINGS",
        9 => "TENSORS",
        10 => "GRAPHS",
        11 => "SPARSE_TENSOR",
        12 => "SPARSE_TENSORS",
        13 => "TYPE_PROTO",
        14 => "TYPE_PROTOS",
        _ => "unknown",
    }
}

/// The node's attribute `name` if present, checked to occur once and to be of type `ty`.
pub fn attribute<'a>(
    node: &'a NodeProto,
    name: &str,
    ty: i32,
) -> Result<Option<&'a AttributeProto>, AttributeIssue> {
    let mut found = node.attribute.iter().filter(|a| a.name == name);
    let Some(a) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(AttributeIssue::Repeated);
    }
    if a.r#type != ty {
        return Err(AttributeIssue::WrongType {
            found: a.r#type,
            expected: ty,
        });
    }
    Ok(Some(a))
}

/// An `INT` attribute.
pub fn attr_int(node: &NodeProto, name: &str) -> Result<Option<i64>, AttributeIssue> {
    Ok(attribute(node, name, attribute_type::INT)?.map(|a| a.i))
}

/// An `INTS` attribute.
pub fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Result<Option<&'a [i64]>, AttributeIssue> {
    Ok(attribute(node, name, attribute_type::INTS)?.map(|a| a.ints.as_slice()))
}

/// A `STRING` attribute, as UTF-8.
pub fn attr_string<'a>(node: &'a NodeProto, name: &str) -> Result<Option<&'a str>, AttributeIssue> {
    match attribute(node, name, attribute_type::STRING)? {
        None => Ok(None),
        Some(a) => std::str::from_utf8(&a.s)
            .map(Some)
            .map_err(|_| AttributeIssue::NotUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    fn model_with(initializer: Vec<TensorProto>) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(GraphProto {
                name: "g".into(),
                initializer,
                ..Default::default()
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 18,
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            raw_data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_initializers_from_raw_and_typed_data() {
        let mut typed = f32_tensor("b", &[3], &[]);
        typed.float_data = vec![1.0, -2.0, 0.5];
        let ints = TensorProto {
            name: "p".into(),
            dims: vec![2],
            data_type: data_type::INT64,
            raw_data: [7i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        };
        let bytes = model_with(vec![f32_tensor("a", &[2, 1], &[1.5, 2.5]), typed, ints]);
        let m = OnnxModel::decode(&bytes, "m.onnx").unwrap();
        assert_eq!(m.ir_version, 8);
        assert_eq!(m.default_opset(), Some(18));
        assert_eq!(m.producer, "test");
        let a = m.initializer("a").unwrap();
        assert_eq!(m.dims(a).unwrap(), vec![2, 1]);
        assert_eq!(
            m.f32_le(a).unwrap(),
            [1.5f32, 2.5]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
        );
        let b = m.initializer("b").unwrap();
        assert_eq!(
            m.f32_le(b).unwrap(),
            [1.0f32, -2.0, 0.5]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
        );
        assert_eq!(m.i64s(m.initializer("p").unwrap()).unwrap(), vec![7, -1]);
        assert!(m.initializer("nope").is_none());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = model_with(vec![f32_tensor("a", &[4], &[1.0, 2.0, 3.0, 4.0])]);
        for cut in 0..bytes.len() {
            // Some cuts end on a field boundary and decode (to a smaller model); none may panic.
            if let Ok(m) = OnnxModel::decode(&bytes[..cut], "m.onnx") {
                if let Some(t) = m.initializer("a") {
                    let _ = m.f32_le(t);
                }
            }
        }
        let err = OnnxModel::decode(&bytes[..bytes.len() - 3], "m.onnx").unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("m.onnx: not a valid ONNX model"));
    }

    #[test]
    fn text_is_not_a_model() {
        let err = OnnxModel::decode(b"hello, world\n", "x.onnx").unwrap_err();
        assert!(matches!(err, OnnxError::Decode { .. }), "{err}");
    }

    #[test]
    fn no_graph_is_an_error() {
        let bytes = ModelProto {
            ir_version: 8,
            ..Default::default()
        }
        .encode_to_vec();
        let err = OnnxModel::decode(&bytes, "m.onnx").unwrap_err();
        assert_eq!(err.to_string(), "m.onnx: the ONNX model has no graph");
    }

    #[test]
    fn tensor_problems_are_named() {
        let file = "m.onnx";
        let short = f32_tensor("w", &[2, 3], &[0.0; 5]);
        let e = tensor_f32_le(&short, file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.onnx: initializer 'w' of shape [2, 3] needs 6 elements (24 bytes of raw_data) but holds 20 bytes of raw_data"
        );
        let mut both = f32_tensor("w", &[1], &[1.0]);
        both.float_data = vec![1.0];
        assert!(matches!(
            tensor_f32_le(&both, file),
            Err(OnnxError::DataLength { .. })
        ));
        let neg = f32_tensor("w", &[-1, 2], &[]);
        assert!(matches!(
            tensor_f32_le(&neg, file),
            Err(OnnxError::BadDims { .. })
        ));
        let huge = f32_tensor("w", &[i64::MAX, i64::MAX], &[]);
        assert!(matches!(
            tensor_dims(&huge, file),
            Err(OnnxError::BadDims { .. })
        ));
        let mut f16 = f32_tensor("w", &[1], &[]);
        f16.data_type = 10;
        f16.raw_data = vec![0, 0];
        let e = tensor_f32_le(&f16, file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.onnx: initializer 'w' has element type FLOAT16 (10), expected FLOAT"
        );
        let mut ext = f32_tensor("w", &[1], &[]);
        ext.data_location = 1;
        ext.external_data = vec![StringStringEntryProto {
            key: "location".into(),
            value: "w.bin".into(),
        }];
        assert!(matches!(
            tensor_f32_le(&ext, file),
            Err(OnnxError::ExternalData { .. })
        ));
        let dup = model_with(vec![
            f32_tensor("a", &[], &[1.0]),
            f32_tensor("a", &[], &[2.0]),
        ]);
        assert!(matches!(
            OnnxModel::decode(&dup, file),
            Err(OnnxError::DuplicateInitializer { .. })
        ));
    }

    #[test]
    fn attributes_are_checked_for_type_and_repetition() {
        let node = NodeProto {
            op_type: "Conv".into(),
            attribute: vec![
                AttributeProto {
                    name: "strides".into(),
                    ints: vec![2],
                    r#type: attribute_type::INTS,
                    ..Default::default()
                },
                AttributeProto {
                    name: "group".into(),
                    i: 1,
                    r#type: attribute_type::INT,
                    ..Default::default()
                },
                AttributeProto {
                    name: "group".into(),
                    i: 2,
                    r#type: attribute_type::INT,
                    ..Default::default()
                },
                AttributeProto {
                    name: "mode".into(),
                    s: vec![0xff],
                    r#type: attribute_type::STRING,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(attr_ints(&node, "strides").unwrap(), Some(&[2i64][..]));
        assert_eq!(attr_ints(&node, "pads").unwrap(), None);
        assert_eq!(attr_int(&node, "group"), Err(AttributeIssue::Repeated));
        assert_eq!(
            attr_int(&node, "strides"),
            Err(AttributeIssue::WrongType {
                found: attribute_type::INTS,
                expected: attribute_type::INT
            })
        );
        assert_eq!(attr_string(&node, "mode"), Err(AttributeIssue::NotUtf8));
    }
}
