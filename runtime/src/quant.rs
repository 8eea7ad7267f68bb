//! int8 forms of weight matrices, attached to the weight tensors they quantize.
//!
//! A weight matrix `[n, k]` read by a linear layer may carry an [`Int8Matrix`]: its values
//! quantized per output channel (`scale[j] = max|w[j]|/127`) in the packed layout of the
//! int8 CPU kernels (`amanuensis_kernels::cpu::int8`), its scales and its column sums.
//! Linear kernels use it when present; every other reader (an embedding lookup of the same
//! tensor, a device upload) still sees the stored f16/f32 values.
//!
//! The forms are made once per model and kept in a safetensors file of their own
//! ([`INT8_FORMAT`]; `<name>.packed` i8, `<name>.scales` f32, `<name>.sums` i32), which
//! later loads map in place.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, RuntimeError};

/// The `format` metadata of an int8 weight file, with its layout version.
pub const INT8_FORMAT: &str = "amanuensis-int8-v1";

/// Packed int8 values: owned, or read in place from a mapped int8 weight file.
#[derive(Clone)]
enum Packed {
    Owned(Vec<i8>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

/// An `[n, k]` weight quantized to int8 in the kernels' packed layout.
#[derive(Clone)]
pub struct Int8Matrix {
    pub n: usize,
    pub k: usize,
    packed: Packed,
    /// One scale per (padded) output column.
    pub scales: Vec<f32>,
    /// `Σ_k` of each (padded) column's values.
    pub sums: Vec<i32>,
    /// When set, few-row products compute again from the stored (f16) weight the outputs
    /// within this much of each row's largest: for a logits projection, whose largest
    /// outputs decide the token. Chosen by the model at load, not kept in the file.
    pub rescore_band: Option<f32>,
}

impl Int8Matrix {
    /// A matrix from its parts; the caller (the quantizer) guarantees the lengths.
    pub fn new(n: usize, k: usize, packed: Vec<i8>, scales: Vec<f32>, sums: Vec<i32>) -> Self {
        Int8Matrix {
            n,
            k,
            packed: Packed::Owned(packed),
            scales,
            sums,
            rescore_band: None,
        }
    }

    /// The packed values.
    pub fn packed(&self) -> &[i8] {
        match &self.packed {
            Packed::Owned(v) => v,
            Packed::Mapped { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + *len])
            }
        }
    }

    /// Bytes held (values, scales and sums).
    pub fn bytes(&self) -> usize {
        self.packed().len() + 4 * (self.scales.len() + self.sums.len())
    }
}

impl PartialEq for Int8Matrix {
    fn eq(&self, o: &Self) -> bool {
        self.n == o.n
            && self.k == o.k
            && self.scales == o.scales
            && self.sums == o.sums
            && self.packed() == o.packed()
    }
}

impl std::fmt::Debug for Int8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.packed {
            Packed::Owned(_) => "owned",
            Packed::Mapped { .. } => "mapped",
        };
        write!(f, "Int8Matrix([{}, {}], {how})", self.n, self.k)
    }
}

fn qerr(path: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Weights {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes int8 forms to `path` (through a temporary file renamed into place, so a reader
/// never sees half a file), with `meta` added to the file's metadata.
pub fn save_int8(
    path: &Path,
    forms: &[(String, Arc<Int8Matrix>)],
    meta: &HashMap<String, String>,
) -> Result<()> {
    use safetensors::tensor::TensorView;
    let mut bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, q) in forms {
        let packed: &[u8] = bytemuck::cast_slice(q.packed());
        bufs.push((
            format!("{name}.packed"),
            safetensors::Dtype::I8,
            vec![q.n, q.k, packed.len()],
            packed.to_vec(),
        ));
        bufs.push((
            format!("{name}.scales"),
            safetensors::Dtype::F32,
            vec![q.scales.len()],
            q.scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        bufs.push((
            format!("{name}.sums"),
            safetensors::Dtype::I32,
            vec![q.sums.len()],
            q.sums.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let mut views = Vec::with_capacity(bufs.len());
    for (name, dtype, shape, data) in &bufs {
        // `.packed` is stored flat; its declared shape [n, k, bytes] is kept in the metadata.
        let flat = if name.ends_with(".packed") {
            vec![data.len()]
        } else {
            shape.clone()
        };
        let v = TensorView::new(*dtype, flat, data)
            .map_err(|e| qerr(path, format!("'{name}': {e:?}")))?;
        views.push((name.clone(), v));
    }
    let mut meta = meta.clone();
    meta.insert("format".into(), INT8_FORMAT.into());
    for (name, _, shape, _) in bufs.iter().filter(|b| b.0.ends_with(".packed")) {
        meta.insert(name.clone(), format!("{}x{}", shape[0], shape[1]));
    }
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| qerr(path, format!("cannot serialize: {e:?}")))?;
    // Unique per process and per call, so that loads racing in threads or processes each
    // write a file of their own and the last rename wins with a whole file.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{call}", std::process::id()));
    let io = |e| RuntimeError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Int8 forms by weight name, and an int8 weight file's metadata.
pub type Int8Forms = (HashMap<String, Arc<Int8Matrix>>, HashMap<String, String>);

/// The int8 forms in `path` (values mapped in place) and the file's metadata.
///
/// Every form is checked: its declared `[n, k]`, and value, scale and sum counts that
/// match it for the packed layout (`packed_len(n, k)` given by the caller's kernels).
pub fn load_int8(
    path: &Path,
    packed_len: impl Fn(usize, usize) -> usize,
    padded_n: impl Fn(usize) -> usize,
) -> Result<Int8Forms> {
    let io = |e| RuntimeError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only private map; the file is written only by `save_int8`, which
    // renames a complete file into place rather than rewriting this one.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
    let (_, header) = safetensors::SafeTensors::read_metadata(&map[..])
        .map_err(|e| qerr(path, format!("not a valid int8 weight file: {e:?}")))?;
    let st = safetensors::SafeTensors::deserialize(&map[..])
        .map_err(|e| qerr(path, format!("not a valid int8 weight file: {e:?}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(INT8_FORMAT) {
        return Err(qerr(
            path,
            format!(
                "is not an int8 weight file of format {INT8_FORMAT} (format: {:?})",
                meta.get("format")
            ),
        ));
    }
    let mut forms = HashMap::new();
    for (key, dims) in meta.iter().filter(|(k, _)| k.ends_with(".packed")) {
        let name = &key[..key.len() - ".packed".len()];
        let bad = |r: String| qerr(path, format!("'{name}': {r}"));
        let (n, k) = dims
            .split_once('x')
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
            .ok_or_else(|| bad(format!("bad shape '{dims}'")))?;
        let get = |suffix: &str, dtype: safetensors::Dtype, len: usize| {
            let v = st
                .tensor(&format!("{name}.{suffix}"))
                .map_err(|e| bad(format!("{suffix}: {e:?}")))?;
            let elems = v.data().len() / dtype.size();
            if v.dtype() != dtype || elems != len {
                return Err(bad(format!(
                    "{suffix} is {:?} × {elems}, expected {dtype:?} × {len}",
                    v.dtype()
                )));
            }
            Ok(v.data())
        };
        let packed = get("packed", safetensors::Dtype::I8, packed_len(n, k))?;
        let offset = packed.as_ptr() as usize - map.as_ptr() as usize;
        let scales: Vec<f32> = get("scales", safetensors::Dtype::F32, padded_n(n))?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(s) = scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return Err(bad(format!("holds the scale {s}")));
        }
        let sums: Vec<i32> = get("sums", safetensors::Dtype::I32, padded_n(n))?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let q = Int8Matrix {
            n,
            k,
            packed: Packed::Mapped {
                map: map.clone(),
                offset,
                len: packed.len(),
            },
            scales,
            sums,
            rescore_band: None,
        };
        forms.insert(name.to_string(), Arc::new(q));
    }
    Ok((forms, meta))
}
