//! Weights from a safetensors file, checked against a graph file's declarations and kept
//! in their stored dtype: operators widen f16 to their f32 compute type exactly where they
//! read it, so no f32 copy of the model is made.

use crate::error::{Result, RuntimeError};
use crate::format::WeightDecl;
use crate::tensor::{DType, Data, F16Buf, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A tensor entry as found in a weight file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    pub name: String,
    /// `None` for a dtype this runtime does not handle (named in `dtype_name`).
    pub dtype: Option<DType>,
    pub dtype_name: String,
    pub shape: Vec<usize>,
}

/// Loaded weights by name, in compute dtype.
#[derive(Debug, Default, Clone)]
pub struct WeightStore {
    tensors: HashMap<String, Arc<Tensor>>,
}

fn werr(path: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Weights {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::files::read_regular(path, crate::files::NO_LIMIT).map_err(|e| RuntimeError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn map_dtype(d: safetensors::Dtype) -> Option<DType> {
    match d {
        safetensors::Dtype::F32 => Some(DType::F32),
        safetensors::Dtype::F16 => Some(DType::F16),
        safetensors::Dtype::I32 => Some(DType::I32),
        _ => None,
    }
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        werr(
            path,
            format!(
                "not a valid safetensors file: {}",
                describe_safetensors_error(&e, bytes)
            ),
        )
    })
}

/// The header length a safetensors file's first 8 bytes give, if it has 8 bytes.
pub fn header_len_prefix(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Turns the safetensors crate's terse error (its `Display` is its `Debug`) about the file
/// `bytes` into a sentence.
pub fn describe_safetensors_error(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError;
    let n = header_len_prefix(bytes);
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!(
                "file is {} bytes, shorter than the 8-byte header length prefix",
                bytes.len()
            )
        }
        SafeTensorError::HeaderTooLarge => {
            format!("header length {} exceeds the 100 MB limit", n.unwrap_or(0))
        }
        SafeTensorError::InvalidHeaderLength => format!(
            "header length {} runs past the end of the {}-byte file",
            n.unwrap_or(0),
            bytes.len()
        ),
        SafeTensorError::InvalidHeader => "header is not valid UTF-8".to_string(),
        SafeTensorError::InvalidHeaderStart => "header does not start with '{'".to_string(),
        SafeTensorError::InvalidHeaderDeserialization => {
            // Re-parse to recover serde's line/column detail, which the crate drops.
            let detail = n
                .and_then(|n| bytes.get(8..8usize.checked_add(usize::try_from(n).ok()?)?))
                .and_then(|h| serde_json::from_slice::<serde_json::Value>(h).err())
                .map(|e| e.to_string())
                .unwrap_or_else(|| "it is JSON but not a valid tensor index".to_string());
            format!("header is not a valid safetensors JSON index: {detail}")
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("data offsets of tensor '{name}' are not contiguous with the previous tensor")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its dtype and shape".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "tensor data does not end exactly at the end of the {}-byte file (truncated or padded)",
            bytes.len()
        ),
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape overflows when multiplied out".to_string()
        }
        other => other.to_string(),
    }
}

/// Lists a weight file's tensors without loading their data into the store.
pub fn list_tensors(path: &Path) -> Result<Vec<StoredTensor>> {
    list_tensors_in(&read(path)?, path)
}

/// Like [`list_tensors`], for the bytes of a weight file; `origin` names it in errors.
pub fn list_tensors_in(bytes: &[u8], origin: &Path) -> Result<Vec<StoredTensor>> {
    let st = parse(origin, bytes)?;
    let mut out = stored_tensors(&st);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn stored_tensors(st: &safetensors::SafeTensors<'_>) -> Vec<StoredTensor> {
    st.tensors()
        .into_iter()
        .map(|(name, view)| StoredTensor {
            name,
            dtype: map_dtype(view.dtype()),
            dtype_name: format!("{:?}", view.dtype()),
            shape: view.shape().to_vec(),
        })
        .collect()
}

/// Every mismatch between declarations and a weight file's contents: missing tensors,
/// wrong dtype, wrong shape. Empty when they agree.
pub fn check_declarations(decls: &[WeightDecl], stored: &[StoredTensor]) -> Vec<String> {
    let by_name: HashMap<&str, &StoredTensor> =
        stored.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut problems = Vec::new();
    for d in decls {
        match by_name.get(d.name.as_str()) {
            None => problems.push(format!(
                "'{}': missing (graph expects {} {:?})",
                d.name, d.dtype, d.shape
            )),
            Some(t) => {
                if t.dtype != Some(d.dtype) {
                    problems.push(format!(
                        "'{}': dtype {} in the file, graph expects {}",
                        d.name,
                        t.dtype_name.to_lowercase(),
                        d.dtype
                    ));
                }
                if t.shape != d.shape {
                    problems.push(format!(
                        "'{}': shape {:?} in the file, graph expects {:?}",
                        d.name, t.shape, d.shape
                    ));
                }
            }
        }
    }
    problems
}

impl WeightStore {
    /// Loads the declared weights from a safetensors file. Every mismatch is reported at
    /// once; tensors the declarations do not name are ignored.
    ///
    /// The file is memory-mapped and f16 tensors are used in place (the pages are read as
    /// they are first used and shared with the page cache), so loading copies nothing but
    /// the few tensors of other types. The file must not be changed while the store lives.
    pub fn load(path: &Path, decls: &[WeightDecl]) -> Result<WeightStore> {
        let io = |e| RuntimeError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; the only hazard, the
        // file being truncated or rewritten by someone else while mapped, is documented
        // above (as for every mmap-based loader).
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
        Self::from_source(&map, Some(&map), path, decls)
    }

    /// Like [`WeightStore::load`], for the bytes of a safetensors file (copied); `path`
    /// names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, decls: &[WeightDecl]) -> Result<WeightStore> {
        Self::from_source(bytes, None, path, decls)
    }

    /// The store of `bytes`; f16 payloads are used in place when `bytes` is `map`.
    fn from_source(
        bytes: &[u8],
        map: Option<&Arc<memmap2::Mmap>>,
        path: &Path,
        decls: &[WeightDecl],
    ) -> Result<WeightStore> {
        let st = parse(path, bytes)?;
        let stored = stored_tensors(&st);
        let problems = check_declarations(decls, &stored);
        if !problems.is_empty() {
            return Err(werr(
                path,
                format!(
                    "{} problem(s) against the graph's weight declarations:\n  {}",
                    problems.len(),
                    problems.join("\n  ")
                ),
            ));
        }
        let mut tensors = HashMap::with_capacity(decls.len());
        for d in decls {
            let view = st
                .tensor(&d.name)
                .map_err(|e| werr(path, format!("'{}': {e:?}", d.name)))?;
            let raw = view.data();
            // Payloads need not be aligned, so decode element by element from bytes.
            let data = match d.dtype {
                DType::F16 => Data::F16(
                    map.and_then(|m| {
                        let offset = raw.as_ptr() as usize - m.as_ptr() as usize;
                        F16Buf::mapped(m.clone(), offset, raw.len() / 2)
                    })
                    // Not mapped, or not 2-byte aligned in the file: decode a copy.
                    .unwrap_or_else(|| {
                        raw.chunks_exact(2)
                            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                            .collect::<Vec<_>>()
                            .into()
                    }),
                ),
                DType::F32 => Data::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                DType::I32 => Data::I32(
                    raw.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            };
            let t = Tensor::new(&d.shape, data)
                .map_err(|e| werr(path, format!("'{}': {e}", d.name)))?;
            // Kept in its stored type: operators widen f16 exactly where they read it
            // (the linear kernels a few rows at a time), so no f32 copy is made.
            tensors.insert(d.name.clone(), Arc::new(t));
        }
        Ok(WeightStore { tensors })
    }

    /// A store from tensors already in memory (tests, generated models), f16 ones widened
    /// to f32 here: these are small, and their users read them back as f32.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> WeightStore {
        WeightStore {
            tensors: tensors
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v.widen_f16())))
                .collect(),
        }
    }

    /// The weight of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.tensors.get(name)
    }

    /// Total bytes held (int8 forms included).
    pub fn bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.bytes() + t.int8().map_or(0, |q| q.bytes()))
            .sum()
    }

    /// Attaches an int8 form to the weight `name` (see [`crate::quant`]).
    pub fn attach_int8(
        &mut self,
        name: &str,
        q: Arc<crate::quant::Int8Matrix>,
    ) -> std::result::Result<(), String> {
        let t = self
            .tensors
            .get_mut(name)
            .ok_or_else(|| format!("no weight '{name}' to attach an int8 form to"))?;
        // Sessions made before keep the tensor without the form.
        let owned = (**t).clone();
        *t = Arc::new(
            owned
                .with_int8(q)
                .map_err(|e| format!("'{name}': {}", e.0))?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file holding `w`, f16 `[3]`, whose payload (at byte 8 + header
    /// length) starts at a multiple of 8, or at an odd offset.
    fn file_with_payload(aligned: bool) -> (tempfile::NamedTempFile, Vec<half::f16>) {
        let values: Vec<half::f16> = [0.5f32, -3.0, 65504.0]
            .into_iter()
            .map(half::f16::from_f32)
            .collect();
        let mut header = r#"{"w":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}}"#.to_string();
        while (8 + header.len()) % if aligned { 8 } else { 2 } != usize::from(!aligned) {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        for v in &values {
            bytes.extend(v.to_bits().to_le_bytes());
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        (f, values)
    }

    fn decl() -> Vec<WeightDecl> {
        vec![WeightDecl {
            name: "w".into(),
            dtype: DType::F16,
            shape: vec![3],
        }]
    }

    fn f16_of(store: &WeightStore) -> F16Buf {
        match store.get("w").unwrap().data() {
            Data::F16(v) => v.clone(),
            other => panic!("expected f16 storage, got {other:?}"),
        }
    }

    #[test]
    fn f16_weights_are_used_in_place_from_the_mapped_file() {
        // The payload aligned, as writers lay it out.
        let (f, values) = file_with_payload(true);
        let store = WeightStore::load(f.path(), &decl()).unwrap();
        let w = f16_of(&store);
        assert!(w.is_mapped(), "aligned f16 payload should be read in place");
        assert_eq!(&w[..], &values[..]);
    }

    #[test]
    fn f16_weights_at_an_odd_offset_are_copied_not_misread() {
        let (f, values) = file_with_payload(false);
        let store = WeightStore::load(f.path(), &decl()).unwrap();
        let w = f16_of(&store);
        assert!(!w.is_mapped(), "a misaligned payload must be copied");
        assert_eq!(&w[..], &values[..]);
    }

    #[test]
    fn a_truncated_mapped_file_is_an_error_naming_it() {
        let (f, _) = file_with_payload(true);
        let len = std::fs::metadata(f.path()).unwrap().len();
        f.as_file().set_len(len - 2).unwrap();
        let e = WeightStore::load(f.path(), &decl())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("truncated"), "{e}");
    }
}
