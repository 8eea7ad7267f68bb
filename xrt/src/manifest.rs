//! The kernel manifest: which compiled NPU binaries implement which catalogue kernel at
//! which input shapes. Format in `docs/npu.md`; an example is `xrt/kernels/npu/manifest.json`.
//!
//! An NPU schedule is compiled for static shapes, so an entry is keyed by the catalogue
//! kernel name (`matmul_bias`, ...) and the exact shapes of the node's inputs (the
//! "variant"). It names the xclbin, the instruction stream (`insts.bin`) that drives one
//! whole dispatch (all tiles, looped by the runtime sequence), the kernel name inside the
//! xclbin, and how the node's tensors map to the kernel's data buffers.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The environment variable naming the kernel directory (holding `manifest.json`) or the
/// manifest file itself.
pub const KERNELS_ENV: &str = "AMANUENSIS_NPU_KERNELS";

/// File name looked up when [`KERNELS_ENV`] names a directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The `format` field every manifest carries.
pub const FORMAT: &str = "amanuensis-npu-kernels";

/// The manifest version this reader understands.
pub const VERSION: u32 = 1;

/// Largest manifest read (it lists file names, not data).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Data buffers one kernel may take (the xclbin declares them; this bounds a typo).
const MAX_ARGS: usize = 32;

/// Error reading or validating a manifest; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("kernel manifest {path}: {source}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Larger than any manifest should be.
    #[error("kernel manifest {path}: {size} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// The manifest.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not valid JSON for the format.
    #[error("kernel manifest {path}: line {line}, column {column}: {message}")]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// Valid JSON, wrong content.
    #[error("kernel manifest {path}: {reason}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong and where (entry index, kernel name).
        reason: String,
    },
    /// [`KERNELS_ENV`] is not set.
    #[error("no NPU kernel manifest: set {KERNELS_ENV} to the directory holding {MANIFEST_FILE}")]
    NotConfigured,
}

/// Element type of a kernel's data buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgDtype {
    /// bfloat16: f32 inputs are rounded to nearest, ties to even (the catalogue's rule).
    Bf16,
    /// IEEE f32, little-endian.
    F32,
    /// i32, little-endian.
    I32,
}

impl ArgDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ArgDtype::Bf16 => 2,
            ArgDtype::F32 | ArgDtype::I32 => 4,
        }
    }
}

impl fmt::Display for ArgDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArgDtype::Bf16 => "bf16",
            ArgDtype::F32 => "f32",
            ArgDtype::I32 => "i32",
        })
    }
}

/// Which tensor of the node a data buffer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgBinding {
    /// The node's input `i` (written before the run).
    Input(usize),
    /// The node's output `i` (read after the run).
    Output(usize),
}

/// One data buffer (kernel argument 3 + position in the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// The tensor it carries.
    pub binding: ArgBinding,
    /// Its element type in device memory.
    pub dtype: ArgDtype,
}

/// Input shapes of a node: the key that selects a compiled variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant(pub Vec<Vec<usize>>);

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if s.is_empty() {
                f.write_str("scalar")?;
            }
            for (j, d) in s.iter().enumerate() {
                if j > 0 {
                    f.write_str("x")?;
                }
                write!(f, "{d}")?;
            }
        }
        Ok(())
    }
}

/// One compiled kernel variant.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelEntry {
    /// Catalogue name (`NpuKernel::name`).
    pub kernel: String,
    /// Input shapes it was compiled for.
    pub variant: Variant,
    /// The xclbin (absolute, or relative to the manifest's directory when written so).
    pub xclbin: PathBuf,
    /// The instruction stream: little-endian 32-bit words.
    pub insts: PathBuf,
    /// Node attributes the binary was compiled for (stride, eps, ...): each must equal
    /// the node's attribute of that name. Empty when the shapes say everything.
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// The kernel's name inside the xclbin (mlir-aie: `MLIR_AIE`).
    pub xclbin_kernel: String,
    /// Data buffers in kernel-argument order (argument 3 + i).
    pub args: Vec<ArgSpec>,
}

impl KernelEntry {
    /// "kernel (variant …)" for messages.
    pub fn label(&self) -> String {
        if self.attrs.is_empty() {
            format!("{} (variant {})", self.kernel, self.variant)
        } else {
            let a: Vec<String> = self.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{} (variant {}; {})",
                self.kernel,
                self.variant,
                a.join(", ")
            )
        }
    }

    /// Whether a node with these attributes matches the entry's `attrs`.
    pub fn matches_attrs(&self, node_attrs: &BTreeMap<String, serde_json::Value>) -> bool {
        self.attrs.iter().all(|(k, v)| node_attrs.get(k) == Some(v))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    format: String,
    version: u32,
    #[serde(default)]
    target: Option<String>,
    kernels: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    kernel: String,
    inputs: Vec<Vec<usize>>,
    xclbin: String,
    insts: String,
    #[serde(default)]
    attrs: BTreeMap<String, serde_json::Value>,
    #[serde(default = "default_xclbin_kernel")]
    xclbin_kernel: String,
    args: Vec<FileArg>,
}

fn default_xclbin_kernel() -> String {
    "MLIR_AIE".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArg {
    #[serde(default)]
    input: Option<usize>,
    #[serde(default)]
    output: Option<usize>,
    dtype: ArgDtype,
}

/// A loaded, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    path: PathBuf,
    target: Option<String>,
    entries: Vec<KernelEntry>,
    index: HashMap<(String, Variant), Vec<usize>>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let read = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_path_buf(),
                size,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Manifest::parse(&text, path, dir)
    }

    /// Parses manifest text; relative file names resolve against `dir`.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> Result<Manifest, ManifestError> {
        let doc: FileDoc = serde_json::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let invalid = |reason: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if doc.format != FORMAT {
            return Err(invalid(format!(
                "format is '{}', expected '{FORMAT}'",
                doc.format
            )));
        }
        if doc.version != VERSION {
            return Err(invalid(format!(
                "version {} is not supported (this build reads version {VERSION})",
                doc.version
            )));
        }
        let mut entries = Vec::with_capacity(doc.kernels.len());
        let mut index = HashMap::new();
        for (i, e) in doc.kernels.into_iter().enumerate() {
            let at = |what: String| invalid(format!("kernels[{i}] ('{}'): {what}", e.kernel));
            if e.kernel.trim().is_empty() {
                return Err(invalid(format!("kernels[{i}]: empty kernel name")));
            }
            if e.xclbin.is_empty() || e.insts.is_empty() {
                return Err(at("empty xclbin or insts file name".into()));
            }
            if e.xclbin_kernel.is_empty() {
                return Err(at("empty xclbin_kernel".into()));
            }
            if e.inputs.iter().any(|s| s.contains(&0)) {
                return Err(at("input shapes must have no zero dimension".into()));
            }
            for (n, s) in e.inputs.iter().enumerate() {
                if s.iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                    .is_none()
                {
                    return Err(at(format!("input {n}: element count overflows")));
                }
            }
            if e.args.is_empty() || e.args.len() > MAX_ARGS {
                return Err(at(format!(
                    "{} arguments (expected 1 to {MAX_ARGS})",
                    e.args.len()
                )));
            }
            let mut args = Vec::with_capacity(e.args.len());
            let mut seen = HashSet::new();
            for (n, a) in e.args.iter().enumerate() {
                let binding = match (a.input, a.output) {
                    (Some(x), None) => {
                        if x >= e.inputs.len() {
                            return Err(at(format!(
                                "args[{n}] refers to input {x}, but the variant has {} inputs",
                                e.inputs.len()
                            )));
                        }
                        ArgBinding::Input(x)
                    }
                    (None, Some(y)) => ArgBinding::Output(y),
                    _ => {
                        return Err(at(format!(
                            "args[{n}] needs exactly one of \"input\" or \"output\""
                        )))
                    }
                };
                if !seen.insert(binding) {
                    return Err(at(format!("args[{n}] repeats {binding:?}")));
                }
                args.push(ArgSpec {
                    binding,
                    dtype: a.dtype,
                });
            }
            if !args
                .iter()
                .any(|a| matches!(a.binding, ArgBinding::Output(_)))
            {
                return Err(at("no output argument".into()));
            }
            let variant = Variant(e.inputs);
            let key = (e.kernel.clone(), variant.clone());
            let same: &mut Vec<usize> = index.entry(key).or_default();
            if let Some(&prev) = same
                .iter()
                .find(|&&p| entries_attrs(&entries, p) == &e.attrs)
            {
                return Err(at(format!(
                    "same kernel, input shapes and attrs as kernels[{prev}]"
                )));
            }
            same.push(i);
            entries.push(KernelEntry {
                kernel: e.kernel,
                variant,
                xclbin: dir.join(e.xclbin),
                insts: dir.join(e.insts),
                attrs: e.attrs,
                xclbin_kernel: e.xclbin_kernel,
                args,
            });
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            target: doc.target,
            entries,
            index,
        })
    }

    /// The manifest file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The NPU generation the binaries were built for (`npu1`, `npu2`), if stated.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// All entries, in file order.
    pub fn entries(&self) -> &[KernelEntry] {
        &self.entries
    }

    /// Index of the entry for a kernel at these input shapes whose `attrs` the node's
    /// attributes match (the first one, in file order).
    pub fn find_index(
        &self,
        kernel: &str,
        inputs: &[Vec<usize>],
        node_attrs: &BTreeMap<String, serde_json::Value>,
    ) -> Option<usize> {
        self.index
            .get(&(kernel.to_string(), Variant(inputs.to_vec())))?
            .iter()
            .copied()
            .find(|&i| self.entries[i].matches_attrs(node_attrs))
    }

    /// The entry for a kernel at these input shapes and node attributes.
    pub fn find(
        &self,
        kernel: &str,
        inputs: &[Vec<usize>],
        node_attrs: &BTreeMap<String, serde_json::Value>,
    ) -> Option<&KernelEntry> {
        self.find_index(kernel, inputs, node_attrs)
            .map(|i| &self.entries[i])
    }

    /// Entries whose xclbin or instruction file is missing, with the missing path.
    pub fn missing_files(&self) -> Vec<(&KernelEntry, &Path)> {
        let mut out = Vec::new();
        for e in &self.entries {
            if !e.xclbin.is_file() {
                out.push((e, e.xclbin.as_path()));
            } else if !e.insts.is_file() {
                out.push((e, e.insts.as_path()));
            }
        }
        out
    }
}

fn entries_attrs(entries: &[KernelEntry], i: usize) -> &BTreeMap<String, serde_json::Value> {
    &entries[i].attrs
}

/// The manifest path [`KERNELS_ENV`] points to (`dir/manifest.json`, or the file itself).
pub fn manifest_path_from_env() -> Option<PathBuf> {
    let v = std::env::var_os(KERNELS_ENV).filter(|v| !v.is_empty())?;
    let p = PathBuf::from(v);
    Some(if p.is_dir() { p.join(MANIFEST_FILE) } else { p })
}

/// Loads a manifest once per process: later calls with the same path share it.
pub fn load_shared(path: &Path) -> Result<Arc<Manifest>, ManifestError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Manifest>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(m.clone());
    }
    let m = Arc::new(Manifest::load(path)?);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, m.clone());
    Ok(m)
}

/// Loads the manifest [`KERNELS_ENV`] points to (shared per process).
pub fn load_from_env() -> Result<Arc<Manifest>, ManifestError> {
    let path = manifest_path_from_env().ok_or(ManifestError::NotConfigured)?;
    load_shared(&path)
}

/// The manifest text for the device nodes of `plans`: one entry per catalogue kernel,
/// input shapes and attributes, all in one xclbin (so a graph runs in one hardware
/// context), activations in f32 and weight matrices in bf16 (the catalogue's operand
/// type; vectors such as biases stay f32). This is how the shipped whisper-base
/// manifest is made (`amanuensis plan --emit-manifest`).
pub fn manifest_for_plans(
    plans: &[&amanuensis_runtime::schedule::Plan],
    target: &str,
    xclbin: &str,
) -> Result<String, String> {
    use amanuensis_runtime::ir::ValueSource;
    use amanuensis_runtime::npu::kernel_of;
    use serde_json::json;
    let mut seen: Vec<(
        String,
        Vec<Vec<usize>>,
        serde_json::Value,
        serde_json::Value,
    )> = Vec::new();
    let mut kernels = Vec::new();
    for plan in plans {
        let g = &plan.graph;
        for seg in &plan.segments {
            for &ni in seg {
                let n = &g.nodes[ni];
                let k = kernel_of(n.op.as_ref())?
                    .ok_or_else(|| format!("node '{}' has no NPU kernel", n.name))?;
                let shape = |v: usize| -> Result<Vec<usize>, String> {
                    g.values[v]
                        .ty
                        .shape
                        .iter()
                        .map(|d| d.known())
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("value '{}' has a symbolic shape", g.values[v].name))
                };
                let inputs: Vec<Vec<usize>> = n
                    .inputs
                    .iter()
                    .map(|&v| shape(v))
                    .collect::<Result<_, _>>()?;
                let mut args = Vec::new();
                // The matrix kernels take bf16 weight operands (their contract); every other
                // tensor travels as f32.
                let gemm = k.name().starts_with("matmul") || k.name().starts_with("conv1d");
                for (i, &v) in n.inputs.iter().enumerate() {
                    let matrix = gemm
                        && g.values[v].source == ValueSource::Weight
                        && g.values[v].ty.rank() >= 2;
                    args.push(json!({"input": i, "dtype": if matrix { "bf16" } else { "f32" }}));
                }
                for o in 0..n.outputs.len() {
                    args.push(json!({"output": o, "dtype": "f32"}));
                }
                let attrs = serde_json::Value::Object(n.attrs.0.clone().into_iter().collect());
                let args = serde_json::Value::Array(args);
                if let Some((_, _, _, a)) = seen
                    .iter()
                    .find(|(kn, sh, at, _)| kn == k.name() && *sh == inputs && *at == attrs)
                {
                    if *a != args {
                        return Err(format!(
                            "kernel {} at {} is needed with two argument layouts",
                            k.name(),
                            Variant(inputs)
                        ));
                    }
                    continue;
                }
                seen.push((
                    k.name().to_string(),
                    inputs.clone(),
                    attrs.clone(),
                    args.clone(),
                ));
                let variant = Variant(inputs.clone()).to_string().replace(", ", "_");
                let mut tag = variant.clone();
                for (key, val) in &n.attrs.0 {
                    tag.push_str(&format!("_{key}{val}"));
                }
                kernels.push(json!({
                    "kernel": k.name(),
                    "inputs": inputs,
                    "attrs": attrs,
                    "xclbin": xclbin,
                    "insts": format!("{}/{tag}.insts.bin", k.name()),
                    "xclbin_kernel": format!("{}_{tag}", k.name()),
                    "args": args,
                }));
            }
        }
    }
    let doc = json!({"format": FORMAT, "version": VERSION, "target": target, "kernels": kernels});
    serde_json::to_string_pretty(&doc)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}
