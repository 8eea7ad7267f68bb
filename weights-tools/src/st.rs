//! Reading safetensors files with validated headers and errors that name the file.

use amanuensis_runtime::files::{read_regular, NO_LIMIT};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amanuensis_runtime::weights::{describe_safetensors_error, header_len_prefix};
use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

/// Why a safetensors file could not be read.
#[derive(Debug, Error)]
pub enum SafetensorsReadError {
    /// The file could not be read from disk.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The header (length prefix, JSON index, offsets) is invalid.
    #[error("corrupt safetensors header in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// One tensor's entry in the header index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Byte range in the file (absolute offsets, header included).
    pub range: std::ops::Range<usize>,
}

/// A fully read safetensors file whose header has been validated.
#[derive(Debug, Clone)]
pub struct SafetensorsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Length of the JSON header (the u64 prefix).
    pub header_len: usize,
    /// The `__metadata__` map (empty when absent).
    pub metadata: BTreeMap<String, String>,
    /// Tensors in file order.
    pub tensors: Vec<TensorEntry>,
}

impl SafetensorsFile {
    /// Reads and validates `path`.
    pub fn read(path: &Path) -> Result<SafetensorsFile, SafetensorsReadError> {
        let bytes = read_regular(path, NO_LIMIT).map_err(|source| SafetensorsReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SafetensorsFile::from_bytes(bytes, path)
    }

    /// Validates already read bytes; `path` labels errors.
    pub fn from_bytes(
        bytes: Vec<u8>,
        path: &Path,
    ) -> Result<SafetensorsFile, SafetensorsReadError> {
        let (header_len, metadata, tensors) = parse_index(&bytes, path)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            bytes,
            header_len,
            metadata,
            tensors,
        })
    }

    /// A tensor's entry by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's raw bytes by name.
    pub fn tensor_data(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| &self.bytes[t.range.clone()])
    }
}

/// Checks that `bytes` form a valid safetensors file; `path` labels errors.
pub fn validate(bytes: &[u8], path: &Path) -> Result<(), SafetensorsReadError> {
    parse_index(bytes, path).map(|_| ())
}

type Index = (usize, BTreeMap<String, String>, Vec<TensorEntry>);

/// Header length, metadata and tensor entries (in file order) of a safetensors file.
fn parse_index(bytes: &[u8], path: &Path) -> Result<Index, SafetensorsReadError> {
    let corrupt = |detail: String| SafetensorsReadError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    // The crate's header-start check is disabled in this version; do it here.
    if bytes.len() >= 9 && bytes[8] != b'{' {
        let n = header_len_prefix(bytes);
        if n.is_some_and(|n| n > 0 && n.checked_add(8).is_some_and(|e| e <= bytes.len() as u64)) {
            return Err(corrupt(format!(
                "header does not start with '{{' (byte 8 is 0x{:02x})",
                bytes[8]
            )));
        }
    }
    let (header_len, meta) = match SafeTensors::read_metadata(bytes) {
        Ok(v) => v,
        Err(e) => return Err(corrupt(describe_safetensors_error(&e, bytes))),
    };
    let data_start = 8 + header_len;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors: Vec<TensorEntry> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorEntry {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            range: data_start + info.data_offsets.0..data_start + info.data_offsets.1,
        })
        .collect();
    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    Ok((header_len, metadata, tensors))
}

/// A tensor to write: name, dtype, shape and little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: &'a [usize],
    /// Payload (`product(shape) * dtype.size()` bytes).
    pub data: &'a [u8],
}

/// Why tensors could not be serialised.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SafetensorsWriteError {
    /// A payload's length disagrees with its dtype and shape.
    #[error("tensor '{name}' has {actual} bytes but its dtype and shape need {expected}")]
    SizeMismatch {
        name: String,
        expected: String,
        actual: usize,
    },
    /// Two tensors share a name.
    #[error("tensor name '{0}' is used twice")]
    DuplicateName(String),
}

/// Serialises tensors and metadata to safetensors bytes, deterministically: the same input
/// always gives the same bytes (metadata keys and tensor names in sorted order; data ordered
/// by decreasing alignment, then name, as the `safetensors` crate does).
pub fn serialize_safetensors(
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, SafetensorsWriteError> {
    let mut order: Vec<&TensorRef<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| b.dtype.size().cmp(&a.dtype.size()).then(a.name.cmp(b.name)));
    for w in order.windows(2) {
        if w[0].name == w[1].name {
            return Err(SafetensorsWriteError::DuplicateName(w[0].name.to_string()));
        }
    }
    let mut offsets = Vec::with_capacity(order.len());
    let mut offset = 0usize;
    for t in &order {
        let expected = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
        if expected != Some(t.data.len()) {
            return Err(SafetensorsWriteError::SizeMismatch {
                name: t.name.to_string(),
                expected: expected.map_or("more than usize::MAX".to_string(), |e| e.to_string()),
                actual: t.data.len(),
            });
        }
        offsets.push((offset, offset + t.data.len()));
        offset += t.data.len();
    }
    // The JSON index, keys sorted: serde_json's string quoting handles escaping.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut entries: Vec<(String, String)> = Vec::with_capacity(order.len() + 1);
    if !metadata.is_empty() {
        let body: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", q(k), q(v)))
            .collect();
        entries.push((
            "__metadata__".to_string(),
            format!("{{{}}}", body.join(",")),
        ));
    }
    for (t, (s, e)) in order.iter().zip(&offsets) {
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        entries.push((
            t.name.to_string(),
            format!(
                "{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{s},{e}]}}",
                q(&format!("{:?}", t.dtype)),
                shape.join(",")
            ),
        ));
    }
    entries[usize::from(!metadata.is_empty())..].sort();
    let mut header = String::from("{");
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&q(k));
        header.push(':');
        header.push_str(v);
    }
    header.push('}');
    // Pad with spaces so tensor data starts 8-byte aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in &order {
        out.extend_from_slice(t.data);
    }
    Ok(out)
}
