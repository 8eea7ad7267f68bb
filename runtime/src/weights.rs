//! Weights from a safetensors file, checked against a graph file's declarations and kept
//! in their stored dtype: operators widen f16 to their f32 compute type exactly where they
//! read it, so no f32 copy of the model is made.

use crate::error::{Result, RuntimeError};
use crate::format::WeightDecl;
use crate::tensor::{DType, Data, Tensor};
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
    std::fs::read(path).map_err(|e| RuntimeError::Io {
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
            format!("not a valid safetensors file (corrupt or truncated header/data): {e:?}"),
        )
    })
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
    pub fn load(path: &Path, decls: &[WeightDecl]) -> Result<WeightStore> {
        Self::from_bytes(&read(path)?, path, decls)
    }

    /// Like [`WeightStore::load`], for the bytes of a safetensors file; `path` names it
    /// in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, decls: &[WeightDecl]) -> Result<WeightStore> {
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
                    raw.chunks_exact(2)
                        .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                        .collect(),
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

    /// Total bytes held.
    pub fn bytes(&self) -> usize {
        self.tensors.values().map(|t| t.bytes()).sum()
    }
}
