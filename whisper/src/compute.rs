//! What the CPU computes a model's linear layers in, and the int8 forms of its weights.
//!
//! - `f32`: weights stay in their stored type (f16, widened exactly as the kernels read
//!   them) and every product is f32. Token-identical to the reference fixtures.
//! - `int8`: the weight matrices of `linear` nodes get int8 forms (per output channel
//!   scales), all but the first and last encoder blocks; the logits projection's outputs
//!   near each row's largest are computed again from the stored weight
//!   ([`linear_weights`] says why). Products of many rows (the encoder, cross K/V) quantize their
//!   activations per row as they run and accumulate in i32; products of few rows (the
//!   decoder's steps, up to the GEMV threshold) keep activations in f32 and widen the
//!   int8 weight in registers: they are bound by reading the weight, and f32 activations
//!   keep them closer to f32. On a CPU with AMX or AVX-512 VNNI the logits projection
//!   cuts each f32 row into three int8 pieces and multiplies them exactly in i32, within a
//!   few parts in 10⁷ of the f32-activation product
//!   (`amanuensis_kernels::cpu::int8::linear_w8_split_on`).
//!   On a CPU with AVX-512 BF16 the encoder's attention but the
//!   first block's, and its last block's linears, multiply in bf16 with f32 sums
//!   ([`crate::graph::bf16_encoder`]); with `AMANUENSIS_BF16_TILES=1` on AMX tiles, the
//!   first block's attention and linears too; the softmax stays f32. Layer norms, softmax, the decoder's attention, GELU, the
//!   convolutions, the embedding lookups and the residual stream stay f32.
//! - Both `int8` and `bf16` keep the decoder's cross-attention keys and values in f16
//!   ([`crate::graph::f16_cross_kv`]): every step reads all of them, and f16 halves those
//!   bytes; the attention reads them in place, widening each value exactly, with f32
//!   scores, softmax and sums.
//!
//! - `bf16`: every product of many rows (the encoder's linears, attention and the cross
//!   K/V projections) rounds both operands to bf16 and sums in f32
//!   (`amanuensis_kernels::cpu::bf16`, `vdpbf16ps` on AVX-512 BF16, a portable loop of the
//!   same bits elsewhere, slower than f32 there). The weights stay in their stored type and
//!   are packed per call; the decoder's few-row products stream the f16 weights in f32, as
//!   `f32` does (bf16 would not shrink what they read). Softmax, layer norms, the
//!   convolutions and the residual stream stay f32; the encoder's GELU is evaluated in f32
//!   rather than f64 (relative error below 2e-6; [`crate::graph::bf16_products`],
//!   [`crate::graph::f32_encoder_gelu`]).
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
    /// bf16 products with f32 sums for every product of many rows (the encoder, cross
    /// K/V); the decoder's few-row products read the stored f16 weights in f32.
    Bf16,
    /// The fastest type that keeps Whisper's accuracy on this device and CPU: int8 on the
    /// `cpu` device when the CPU has a vector int8 path (AVX-512 VNNI, AVX-VNNI or AVX2),
    /// else f32.
    Auto,
}

impl ComputeType {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ComputeType::F32 => "f32",
            ComputeType::Int8 => "int8",
            ComputeType::Bf16 => "bf16",
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
            "bf16" | "bfloat16" => Ok(ComputeType::Bf16),
            "auto" => Ok(ComputeType::Auto),
            other => Err(format!(
                "unknown compute type '{other}' (expected auto, f32, bf16 or int8)"
            )),
        }
    }
}

/// How far below a row's largest logit the logits projection's outputs are computed again
/// from the stored weight (see [`linear_weights`]): tokens more than 10 below the best have
/// under e⁻¹⁰ of its probability each.
pub const LOGITS_RESCORE_BAND: f32 = 10.0;

/// The weights that get an int8 form, and of those the ones whose largest outputs are
/// computed again exactly: every matrix read by a `linear` node in any graph of the file,
/// except those of the first and the last encoder block, which stay f32 products; a matrix
/// some other node also reads (Whisper's token embedding, which is also the logits
/// projection) is rescored.
///
/// Measured on the public clips of ≤ 30 s (292 words, counted as the tests do), against
/// f32's 26 errors at greedy and 22 at beam 5:
/// - every linear in int8 with quantized inputs: 29 and 25; the first and last encoder
///   blocks kept in f32 (the first alone: 24 and 24; the last alone: 26 and 25) and the
///   logits projection too: 24 and 22;
/// - the logits projection in weight-only int8 without rescoring: 25 and 21 on the clips,
///   but 10/165 and 30/495 at greedy on the long recording and its ×3 copy (f32: 9, 27).
pub fn linear_weights(file: &ModelFile) -> (Vec<String>, BTreeSet<String>) {
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
    let names: Vec<String> = linear
        .into_iter()
        .filter(|n| !matches!(block(n), Some(b) if b == 0 || Some(b) == last))
        .collect();
    let rescored = names
        .iter()
        .filter(|n| other.contains(*n))
        .cloned()
        .collect();
    (names, rescored)
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
    let (names, rescored) = linear_weights(file);
    // The rescoring band is the model's choice at load, not part of the stored form.
    let with_band = |n: &String, q: &Arc<Int8Matrix>| -> Arc<Int8Matrix> {
        if rescored.contains(n) {
            let mut q = (**q).clone();
            q.rescore_band = Some(LOGITS_RESCORE_BAND);
            Arc::new(q)
        } else {
            q.clone()
        }
    };
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
                        weights
                            .attach_int8(n, with_band(n, &forms[n]))
                            .map_err(|reason| Error::Weights {
                                path: cache.clone(),
                                reason,
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
            .attach_int8(n, with_band(n, q))
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
