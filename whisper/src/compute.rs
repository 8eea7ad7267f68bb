//! What the CPU computes a model's linear layers in, and the int8 forms of its weights.
//!
//! - `f32`: weights stay in their stored type (f16, widened exactly as the kernels read
//!   them) and every product is f32. Token-identical to the reference fixtures.
//! - `int8`: the weight matrices of `linear` nodes get int8 forms (per output channel
//!   scales), all but the token embedding and the first and last encoder blocks
//!   ([`linear_weights`] says why). Products of many rows (the encoder, cross K/V) quantize their
//!   activations per row as they run and accumulate in i32; products of few rows (the
//!   decoder's steps, up to the GEMV threshold) keep activations in f32 and widen the
//!   int8 weight in registers: they are bound by reading the weight, and f32 activations
//!   keep them closer to f32. Layer norms,
//!   softmax, attention, GELU, the convolutions, the embedding lookups and the residual
//!   stream stay f32.
//!
//! The int8 forms are made once and kept next to the weights in [`INT8_FILE`]; later loads
//! map that file. When the model directory cannot be written, the forms are made again at
//! each load.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use amanuensis_runtime::quant::Int8Matrix;
use amanuensis_runtime::{ModelFile, WeightStore};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The int8 forms of a model's weights, next to [`crate::model::WEIGHTS_FILE`].
pub const INT8_FILE: &str = "model.int8.safetensors";

/// What the CPU computes linear layers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ComputeType {
    /// f32 products on the stored weights.
    #[default]
    F32,
    /// int8 weights and activations, i32 accumulation.
    Int8,
    /// The fastest type that keeps Whisper's accuracy on this device and CPU: int8 on the
    /// `cpu` device when the CPU has a vector int8 path (AVX-512 VNNI or AVX2), else f32.
    Auto,
}

impl ComputeType {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ComputeType::F32 => "f32",
            ComputeType::Int8 => "int8",
            ComputeType::Auto => "auto",
        }
    }

    /// The type `Auto` stands for on `device`; other types are returned unchanged.
    pub fn resolve(self, device: &str) -> ComputeType {
        match self {
            ComputeType::Auto
                if device == amanuensis_runtime::device::HOST
                    && amanuensis_operators::quantize::int8_is_vectorised() =>
            {
                ComputeType::Int8
            }
            ComputeType::Auto => ComputeType::F32,
            other => other,
        }
    }
}

impl std::fmt::Display for ComputeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ComputeType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(ComputeType::F32),
            "int8" => Ok(ComputeType::Int8),
            "auto" => Ok(ComputeType::Auto),
            "bf16" | "bfloat16" => {
                Err("compute type 'bf16' is not available yet; use f32 or int8".into())
            }
            other => Err(format!(
                "unknown compute type '{other}' (expected auto, f32 or int8)"
            )),
        }
    }
}

/// The weights that get an int8 form: those read as the matrix of a `linear` node in any
/// graph of the file, except
/// - a matrix some other node also reads, which keeps its stored type for every use:
///   Whisper's token embedding is both the embedding table and the logits projection;
/// - the matrices of the first and the last encoder block, which stay f32 products.
///
/// Measured on the public clips of ≤ 30 s (292 words, bench `wer` as in the tests), against
/// f32's 26 errors at greedy and 22 at beam 5: every linear in int8 made 29 and 25; the
/// logits projection kept, 29 and 25 still; the first and last encoder blocks kept too, 24
/// and 22 (the first alone 24 and 24, the last alone 26 and 25). With both kept, the long
/// recording and its ×3 copy give f32's errors exactly (9/165, 27/495, greedy and beam 5).
pub fn linear_weights(file: &ModelFile) -> Vec<String> {
    let declared: BTreeSet<&str> = file.weights.iter().map(|w| w.name.as_str()).collect();
    let mut linear = BTreeSet::new();
    let mut other = BTreeSet::new();
    for n in file.graphs.iter().flat_map(|g| &g.nodes) {
        for (i, w) in n.inputs.iter().enumerate() {
            if !declared.contains(w.as_str()) {
                continue;
            }
            if n.op == "linear" && i == 1 {
                linear.insert(w.clone());
            } else {
                other.insert(w.clone());
            }
        }
    }
    let block = |name: &str| -> Option<usize> {
        name.strip_prefix("encoder.blocks.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    };
    let last = declared.iter().filter_map(|n| block(n)).max();
    linear
        .difference(&other)
        .filter(|n| !matches!(block(n), Some(b) if b == 0 || Some(b) == last))
        .cloned()
        .collect()
}

/// What [`attach_int8`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Int8Source {
    /// Mapped from an int8 weight file made before.
    Cached,
    /// Quantized now and written to the int8 weight file.
    Quantized,
    /// Quantized now; the file could not be written (the reason).
    QuantizedNotSaved(String),
}

/// The identity of the weight file the int8 forms were made from.
fn source_stamp(weights_path: &Path) -> Option<String> {
    let m = std::fs::metadata(weights_path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{} bytes, modified {}.{:09}",
        m.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    ))
}

/// Gives every linear weight of `file` its int8 form: from [`INT8_FILE`] in `dir` when it
/// is there, complete and made from this `weights_path`, else quantized now and saved.
pub fn attach_int8(
    weights: &mut WeightStore,
    file: &ModelFile,
    dir: &Path,
    weights_path: &Path,
) -> Result<Int8Source> {
    let names = linear_weights(file);
    let cache = dir.join(INT8_FILE);
    let stamp = source_stamp(weights_path);
    if cache.is_file() {
        match amanuensis_operators::quantize::load_int8(&cache) {
            Ok((forms, meta)) => {
                let fits = stamp.is_some()
                    && meta.get("source") == stamp.as_ref()
                    && names.iter().all(|n| {
                        forms.get(n).is_some_and(|q| {
                            weights.get(n).is_some_and(|t| t.shape() == [q.n, q.k])
                        })
                    });
                if fits {
                    for n in &names {
                        weights.attach_int8(n, forms[n].clone()).map_err(|reason| {
                            Error::Weights {
                                path: cache.clone(),
                                reason,
                            }
                        })?;
                    }
                    return Ok(Int8Source::Cached);
                }
                tracing::info!(
                    "{} was made from other weights; quantizing again",
                    cache.display()
                );
            }
            Err(e) => tracing::warn!("{e}; quantizing the weights again"),
        }
    }
    let forms: Vec<(String, Arc<Int8Matrix>)> = names
        .par_iter()
        .map(|n| {
            let t = weights.get(n).ok_or_else(|| Error::Weights {
                path: weights_path.to_path_buf(),
                reason: format!("linear weight '{n}' is not loaded"),
            })?;
            let q =
                amanuensis_operators::quantize::quantize_matrix(t).map_err(|e| Error::Weights {
                    path: weights_path.to_path_buf(),
                    reason: format!("'{n}': {}", e.0),
                })?;
            Ok((n.clone(), Arc::new(q)))
        })
        .collect::<Result<_>>()?;
    for (n, q) in &forms {
        weights
            .attach_int8(n, q.clone())
            .map_err(|reason| Error::Weights {
                path: weights_path.to_path_buf(),
                reason,
            })?;
    }
    let mut meta = HashMap::new();
    if let Some(s) = stamp {
        meta.insert("source".to_string(), s);
    }
    Ok(
        match amanuensis_operators::quantize::save_int8(&cache, &forms, &meta) {
            Ok(()) => Int8Source::Quantized,
            Err(e) => {
                tracing::warn!("int8 weights not saved: {e}");
                Int8Source::QuantizedNotSaved(e.to_string())
            }
        },
    )
}
