//! [`NpuXrtDevice`]: the real NPU as an [`amanuensis_runtime::device::Device`].
//!
//! One node = one dispatch: the kernel's instruction stream loops over all of the node's
//! tiles on the device (the mlir-aie runtime sequence), so the host submits one run per
//! node, never one per tile. Everything a dispatch needs (hardware context, kernel,
//! instruction buffer, data buffers, run object with its arguments set) is created on the
//! first dispatch of a manifest entry and reused by every later one; a dispatch only copies
//! inputs in, syncs, starts, waits and copies outputs out.
//!
//! Failures: a failing run (error or abort state) disables that manifest entry; a timeout,
//! a lost device or any failure to start or wait disables the whole device. Both come back
//! as [`DeviceError::Fault`] so the executor re-runs the node on the CPU.

use crate::manifest::{ArgBinding, ArgDtype, KernelEntry, Manifest, ManifestError};
use crate::shim::{BoFlags, RunState, ShimApi, ShimError, SyncDir};
use crate::wrap::{Bo, Device as XrtDevice, HwContext, Kernel, Run, Xclbin};
use amanuensis_runtime::device::npu_sim::NpuParams;
use amanuensis_runtime::device::{
    node_types, npu_support, Device, DeviceError, DeviceKind, NpuCaps, Support,
};
use amanuensis_runtime::ir::{Graph, Node};
use amanuensis_runtime::tensor::{DType, Data};
use amanuensis_runtime::{Dim, OpError, Tensor, ValueType};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `run` opcode of the instruction-stream flow (2, the legacy TXN flow, is deprecated).
pub const OPCODE_INSTRUCTIONS: u32 = 3;

/// Kernel argument holding the instruction buffer; data buffers start at 3.
pub const INSTR_ARG: u32 = 1;

/// First data-buffer argument.
pub const FIRST_DATA_ARG: u32 = 3;

/// Environment variable overriding the run timeout in milliseconds.
pub const TIMEOUT_ENV: &str = "AMANUENSIS_NPU_TIMEOUT_MS";

/// Largest instruction stream accepted (npu1's device heap, which holds them, is 64 MiB).
const MAX_INSTRUCTION_BYTES: u64 = 64 << 20;

/// Largest data buffer allocated for one tensor (bounds a bad manifest entry).
const MAX_BUFFER_BYTES: usize = 1 << 31;

/// Why an XRT without hw_context (Debian's 2.13) cannot drive the NPU.
pub fn no_hwctx_message(xrt_version: &str) -> String {
    format!("XRT {xrt_version} has no hw_context; the NPU needs XRT >= 2.14 (>= 2.17 in practice)")
}

/// Settings of the real device.
#[derive(Debug, Clone, PartialEq)]
pub struct NpuXrtOptions {
    /// XRT device index.
    pub device_index: u32,
    /// How long one dispatch may take before it counts as hung, ms. The driver resets a
    /// context whose command runs longer than 2 s, so this only needs to exceed that.
    pub timeout_ms: u32,
    /// Hardware contexts kept open at once (npu1 allows 6, npu4+ 16); the least recently
    /// used one is closed when another xclbin is needed.
    pub max_hw_contexts: usize,
    /// Parameter set for the cost model; `None` picks one from the manifest's target or
    /// the device name.
    pub params: Option<NpuParams>,
}

impl Default for NpuXrtOptions {
    fn default() -> Self {
        NpuXrtOptions {
            device_index: 0,
            timeout_ms: 5000,
            max_hw_contexts: 6,
            params: None,
        }
    }
}

impl NpuXrtOptions {
    /// Defaults, with the timeout from [`TIMEOUT_ENV`] when it is set to a positive integer.
    pub fn from_env() -> NpuXrtOptions {
        let mut o = NpuXrtOptions::default();
        if let Some(ms) = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&v| v > 0)
        {
            o.timeout_ms = ms;
        }
        o
    }
}

/// Error setting up the real device or one of its kernels.
#[derive(Debug, thiserror::Error)]
pub enum XrtError {
    /// The manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// This binary was built without the XRT shim.
    #[error("the NPU device is unavailable: this build has no XRT support ({0})")]
    NotBuilt(String),
    /// The XRT this binary was built against cannot drive the NPU.
    #[error("the NPU device is unavailable: {0}")]
    NoHwContext(String),
    /// Opening the device failed.
    #[error("opening NPU device {index} ({backend}): {source}{hint}")]
    Open {
        /// Device index.
        index: u32,
        /// The shim's description.
        backend: String,
        /// The shim error.
        source: ShimError,
        /// A hint about the likely cause (may be empty).
        hint: String,
    },
    /// Setting up one manifest entry failed.
    #[error("NPU kernel {label}: {reason}")]
    Kernel {
        /// "kernel (variant …)".
        label: String,
        /// What failed, naming files and XRT's message.
        reason: String,
    },
}

/// One hardware context per xclbin, with its kernels.
struct CtxSlot {
    // Kernels go before the context (declaration order is drop order).
    kernels: HashMap<String, Arc<Kernel>>,
    ctx: Arc<HwContext>,
    last_use: u64,
}

/// A manifest entry ready to dispatch.
struct Loaded {
    // Declaration order is drop order: the run, then the buffers, then the kernel.
    run: Run,
    data: Vec<Bo>,
    _instr: Bo,
    xclbin: PathBuf,
    out_shapes: Vec<Vec<usize>>,
}

/// Which failures disable what.
enum Scope {
    /// Only this manifest entry.
    Entry,
    /// The whole device.
    Device,
}

/// The real AMD Ryzen AI NPU, driven through XRT (`--device npu`).
pub struct NpuXrtDevice {
    // Drop order: loaded entries (runs, buffers), then contexts (kernels, contexts,
    // xclbins), then the device.
    loaded: HashMap<usize, Loaded>,
    contexts: HashMap<PathBuf, CtxSlot>,
    device: Arc<XrtDevice>,
    shim: Arc<dyn ShimApi>,
    manifest: Arc<Manifest>,
    options: NpuXrtOptions,
    device_name: String,
    params: NpuParams,
    failed: HashMap<usize, String>,
    disabled: Option<String>,
    clock: u64,
}

impl std::fmt::Debug for NpuXrtDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpuXrtDevice")
            .field("device_name", &self.device_name)
            .field("backend", &self.shim.describe())
            .field("manifest", &self.manifest.path())
            .field("loaded", &self.loaded.len())
            .field("contexts", &self.contexts.len())
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// The real shim of this build, or why there is none.
pub fn real_shim() -> Result<Arc<dyn ShimApi>, XrtError> {
    #[cfg(xrt_shim)]
    {
        let shim = crate::ffi::XrtShim::new().map_err(|e| XrtError::NotBuilt(e.to_string()))?;
        Ok(Arc::new(shim))
    }
    #[cfg(not(xrt_shim))]
    {
        let why = env!("AMANUENSIS_XRT_MISSING");
        Err(XrtError::NotBuilt(if why.is_empty() {
            "built without XRT".to_string()
        } else {
            format!("built without XRT: {why}")
        }))
    }
}

impl NpuXrtDevice {
    /// Opens the NPU through the XRT shim of this build with the manifest of
    /// [`crate::KERNELS_ENV`] and the options of [`NpuXrtOptions::from_env`].
    pub fn from_env() -> Result<NpuXrtDevice, XrtError> {
        let shim = real_shim()?;
        let manifest = crate::manifest::load_from_env()?;
        NpuXrtDevice::with_shim(shim, manifest, NpuXrtOptions::from_env())
    }

    /// Opens the NPU through the XRT shim of this build.
    pub fn open(manifest: Arc<Manifest>, options: NpuXrtOptions) -> Result<NpuXrtDevice, XrtError> {
        NpuXrtDevice::with_shim(real_shim()?, manifest, options)
    }

    /// Opens the NPU through any shim (the test double in tests).
    pub fn with_shim(
        shim: Arc<dyn ShimApi>,
        manifest: Arc<Manifest>,
        options: NpuXrtOptions,
    ) -> Result<NpuXrtDevice, XrtError> {
        if !shim.has_hwctx() {
            return Err(XrtError::NoHwContext(no_hwctx_message(&shim.xrt_version())));
        }
        let device = XrtDevice::open(shim.clone(), options.device_index).map_err(|source| {
            XrtError::Open {
                index: options.device_index,
                backend: shim.describe(),
                source,
                hint: open_hint(),
            }
        })?;
        let device_name = device.name().unwrap_or_else(|e| format!("unknown ({e})"));
        let params = options
            .params
            .clone()
            .unwrap_or_else(|| pick_params(manifest.target(), &device_name));
        Ok(NpuXrtDevice {
            loaded: HashMap::new(),
            contexts: HashMap::new(),
            device,
            shim,
            manifest,
            options,
            device_name,
            params,
            failed: HashMap::new(),
            disabled: None,
            clock: 0,
        })
    }

    /// The device's name as XRT reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The manifest in use.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Why the device stopped accepting work, if it did.
    pub fn disabled(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    /// Hardware contexts currently open.
    pub fn open_contexts(&self) -> usize {
        self.contexts.len()
    }

    /// Sets up the entry for `kernel` at these input shapes now instead of at its first
    /// dispatch (`outputs` are the node's output shapes).
    pub fn preload(
        &mut self,
        kernel: &str,
        inputs: &[Vec<usize>],
        attrs: &BTreeMap<String, serde_json::Value>,
        outputs: &[Vec<usize>],
    ) -> Result<(), XrtError> {
        let Some(idx) = self.manifest.find_index(kernel, inputs, attrs) else {
            return Err(XrtError::Kernel {
                label: format!(
                    "{kernel} (variant {})",
                    crate::manifest::Variant(inputs.to_vec())
                ),
                reason: format!("not found in {}", self.manifest.path().display()),
            });
        };
        self.ensure_loaded(idx, inputs, outputs)
    }

    fn fault(&self, reason: String) -> DeviceError {
        DeviceError::Fault {
            device: "npu".into(),
            reason,
        }
    }

    /// Why this entry cannot run now (missing files, earlier failure), if so.
    fn entry_problem(&self, idx: usize, e: &KernelEntry) -> Option<String> {
        if let Some(r) = self.failed.get(&idx) {
            return Some(format!(
                "kernel {} failed earlier on this device: {r}",
                e.label()
            ));
        }
        if !e.xclbin.is_file() {
            return Some(format!(
                "xclbin {} for kernel {} does not exist",
                e.xclbin.display(),
                e.label()
            ));
        }
        if !e.insts.is_file() {
            return Some(format!(
                "instruction file {} for kernel {} does not exist",
                e.insts.display(),
                e.label()
            ));
        }
        None
    }

    /// The context for an xclbin, created (and another evicted) when needed.
    fn context_for(&mut self, entry: &KernelEntry) -> Result<&mut CtxSlot, String> {
        self.clock += 1;
        let clock = self.clock;
        if !self.contexts.contains_key(&entry.xclbin) {
            while self.contexts.len() >= self.options.max_hw_contexts.max(1) {
                let victim = self
                    .contexts
                    .iter()
                    .min_by_key(|(_, s)| s.last_use)
                    .map(|(p, _)| p.clone())
                    .expect("contexts is not empty");
                tracing::info!(
                    "npu: closing the hardware context of {} to make room",
                    victim.display()
                );
                self.loaded.retain(|_, l| l.xclbin != victim);
                self.contexts.remove(&victim);
            }
            let xclbin = Xclbin::load(self.shim.clone(), &entry.xclbin)
                .map_err(|e| format!("loading xclbin {}: {e}", entry.xclbin.display()))?;
            let names = xclbin
                .kernel_names()
                .map_err(|e| format!("reading xclbin {}: {e}", entry.xclbin.display()))?;
            if !names.iter().any(|n| n == &entry.xclbin_kernel) {
                return Err(format!(
                    "kernel '{}' is not in xclbin {} (it has: {})",
                    entry.xclbin_kernel,
                    entry.xclbin.display(),
                    if names.is_empty() {
                        "no kernels".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            }
            let ctx = HwContext::create(self.device.clone(), xclbin).map_err(|e| {
                format!(
                    "creating a hardware context for {}: {e}",
                    entry.xclbin.display()
                )
            })?;
            self.contexts.insert(
                entry.xclbin.clone(),
                CtxSlot {
                    kernels: HashMap::new(),
                    ctx,
                    last_use: clock,
                },
            );
        }
        let slot = self
            .contexts
            .get_mut(&entry.xclbin)
            .expect("inserted above");
        slot.last_use = clock;
        Ok(slot)
    }

    fn ensure_loaded(
        &mut self,
        idx: usize,
        inputs: &[Vec<usize>],
        outputs: &[Vec<usize>],
    ) -> Result<(), XrtError> {
        if let Some(l) = self.loaded.get(&idx) {
            if l.out_shapes == outputs {
                return Ok(());
            }
            self.loaded.remove(&idx);
        }
        let entry = self.manifest.entries()[idx].clone();
        let err = |reason: String| XrtError::Kernel {
            label: entry.label(),
            reason,
        };
        if let Some(p) = self.entry_problem(idx, &entry) {
            return Err(err(p));
        }
        let words = read_instructions(&entry.insts).map_err(err)?;
        // Buffer sizes from the variant's shapes.
        let mut sizes = Vec::with_capacity(entry.args.len());
        for (n, a) in entry.args.iter().enumerate() {
            let shape = match a.binding {
                ArgBinding::Input(i) => inputs.get(i),
                ArgBinding::Output(o) => outputs.get(o),
            }
            .ok_or_else(|| {
                err(format!(
                    "args[{n}] refers to {:?}, which the node does not have",
                    a.binding
                ))
            })?;
            let bytes = shape
                .iter()
                .try_fold(a.dtype.size(), |acc, &d| acc.checked_mul(d))
                .filter(|&b| b > 0 && b <= MAX_BUFFER_BYTES)
                .ok_or_else(|| {
                    err(format!(
                        "args[{n}]: buffer size of shape {shape:?} is zero or too large"
                    ))
                })?;
            sizes.push(bytes);
        }
        for o in 0..outputs.len() {
            if !entry
                .args
                .iter()
                .any(|a| a.binding == ArgBinding::Output(o))
            {
                return Err(err(format!(
                    "the manifest entry has no argument for output {o}"
                )));
            }
        }

        let slot = self.context_for(&entry).map_err(err)?;
        let num_args = slot
            .ctx
            .xclbin()
            .num_args(&entry.xclbin_kernel)
            .map_err(|e| err(format!("argument count of '{}': {e}", entry.xclbin_kernel)))?;
        // Passing more buffers than the kernel declares crashes XRT: refuse it here.
        if entry.args.len() as u64 + u64::from(FIRST_DATA_ARG) > u64::from(num_args) {
            return Err(err(format!(
                "the manifest lists {} data buffers but '{}' in {} takes {} ({} arguments in all)",
                entry.args.len(),
                entry.xclbin_kernel,
                entry.xclbin.display(),
                num_args.saturating_sub(FIRST_DATA_ARG),
                num_args
            )));
        }
        let kernel = match slot.kernels.get(&entry.xclbin_kernel) {
            Some(k) => k.clone(),
            None => {
                let k = Kernel::open(slot.ctx.clone(), &entry.xclbin_kernel).map_err(|e| {
                    err(format!(
                        "opening kernel '{}' of {}: {e}",
                        entry.xclbin_kernel,
                        entry.xclbin.display()
                    ))
                })?;
                slot.kernels.insert(entry.xclbin_kernel.clone(), k.clone());
                k
            }
        };
        let shim_err = |what: &str, e: ShimError| err(format!("{what}: {e}"));

        let instr_group = kernel
            .group_id(INSTR_ARG)
            .map_err(|e| shim_err("group id of the instruction argument", e))?;
        let mut instr = Bo::alloc(&kernel, words.len() * 4, BoFlags::Cacheable, instr_group)
            .map_err(|e| shim_err("allocating the instruction buffer", e))?;
        for (dst, w) in instr.bytes_mut().chunks_exact_mut(4).zip(&words) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        instr
            .sync(SyncDir::ToDevice)
            .map_err(|e| shim_err("syncing the instruction buffer", e))?;

        let mut data = Vec::with_capacity(entry.args.len());
        for (i, &bytes) in sizes.iter().enumerate() {
            let argno = FIRST_DATA_ARG + i as u32;
            let group = kernel
                .group_id(argno)
                .map_err(|e| shim_err(&format!("group id of argument {argno}"), e))?;
            let bo = Bo::alloc(&kernel, bytes, BoFlags::HostOnly, group).map_err(|e| {
                shim_err(&format!("allocating {bytes} bytes for argument {argno}"), e)
            })?;
            data.push(bo);
        }

        let run = Run::create(kernel.clone()).map_err(|e| shim_err("creating the run", e))?;
        run.set_u32(0, OPCODE_INSTRUCTIONS)
            .map_err(|e| shim_err("setting the opcode", e))?;
        run.set_bo(INSTR_ARG, &instr)
            .map_err(|e| shim_err("setting the instruction buffer", e))?;
        let n_words =
            u32::try_from(words.len()).map_err(|_| err("instruction stream too long".into()))?;
        run.set_u32(2, n_words)
            .map_err(|e| shim_err("setting the instruction count", e))?;
        for (i, bo) in data.iter().enumerate() {
            run.set_bo(FIRST_DATA_ARG + i as u32, bo).map_err(|e| {
                shim_err(
                    &format!("setting argument {}", FIRST_DATA_ARG + i as u32),
                    e,
                )
            })?;
        }
        self.loaded.insert(
            idx,
            Loaded {
                run,
                data,
                _instr: instr,
                xclbin: entry.xclbin.clone(),
                out_shapes: outputs.to_vec(),
            },
        );
        Ok(())
    }

    /// Runs a loaded entry: inputs in, run, outputs out.
    fn dispatch(
        &mut self,
        idx: usize,
        inputs: &[&Tensor],
        out_types: &[ValueType],
    ) -> Result<Vec<Tensor>, (Scope, String)> {
        let entry = &self.manifest.entries()[idx];
        let timeout = self.options.timeout_ms;
        let l = self
            .loaded
            .get_mut(&idx)
            .ok_or((Scope::Entry, "entry not loaded".to_string()))?;
        for (a, bo) in entry.args.iter().zip(l.data.iter_mut()) {
            if let ArgBinding::Input(i) = a.binding {
                let t = inputs
                    .get(i)
                    .ok_or((Scope::Entry, format!("input {i} is missing")))?;
                write_tensor(t, a.dtype, bo.bytes_mut())
                    .map_err(|m| (Scope::Entry, format!("input {i}: {m}")))?;
                bo.sync(SyncDir::ToDevice).map_err(|e| {
                    (
                        Scope::Device,
                        format!("syncing input {i} to the device: {e}"),
                    )
                })?;
            }
        }
        l.run
            .start()
            .map_err(|e| (Scope::Device, format!("starting the run: {e}")))?;
        let state = l
            .run
            .wait(timeout)
            .map_err(|e| (Scope::Device, format!("waiting for the run: {e}")))?;
        match state {
            RunState::Completed => {}
            RunState::Error | RunState::Abort => {
                return Err((Scope::Entry, format!("the run ended in state {state}")));
            }
            RunState::Timeout => {
                return Err((
                    Scope::Device,
                    format!("the run did not finish within {timeout} ms (state {state})"),
                ));
            }
            other => {
                return Err((
                    Scope::Device,
                    format!("the run ended in state {other} after waiting {timeout} ms"),
                ))
            }
        }
        let mut outs: Vec<Option<Tensor>> = vec![None; out_types.len()];
        for (a, bo) in entry.args.iter().zip(l.data.iter()) {
            if let ArgBinding::Output(o) = a.binding {
                let Some(ty) = out_types.get(o) else { continue };
                bo.sync(SyncDir::FromDevice).map_err(|e| {
                    (
                        Scope::Device,
                        format!("syncing output {o} from the device: {e}"),
                    )
                })?;
                let shape = &l.out_shapes[o];
                outs[o] = Some(
                    read_tensor(bo.bytes(), a.dtype, ty.dtype, shape)
                        .map_err(|m| (Scope::Entry, format!("output {o}: {m}")))?,
                );
            }
        }
        outs.into_iter()
            .enumerate()
            .map(|(o, t)| t.ok_or((Scope::Entry, format!("output {o} has no buffer"))))
            .collect()
    }
}

/// A hint about why opening failed, from what the system shows.
fn open_hint() -> String {
    match crate::detect::accel_nodes() {
        nodes if nodes.is_empty() => {
            " (no /dev/accel device: is the amdxdna driver loaded on a Ryzen AI machine?)".into()
        }
        _ => String::new(),
    }
}

/// The timing-model parameters that match the binaries' target or the device.
fn pick_params(target: Option<&str>, device_name: &str) -> NpuParams {
    let t = target.unwrap_or("").to_ascii_lowercase();
    let n = device_name.to_ascii_lowercase();
    if t == "npu2"
        || t.starts_with("npu4")
        || t.starts_with("npu5")
        || t.starts_with("npu6")
        || n.contains("strix")
        || n.contains("krackan")
    {
        NpuParams::strix()
    } else {
        NpuParams::phoenix()
    }
}

/// Reads an instruction stream: little-endian 32-bit words.
fn read_instructions(path: &Path) -> Result<Vec<u32>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("instruction file {}: {e}", path.display()))?;
    if meta.len() > MAX_INSTRUCTION_BYTES {
        return Err(format!(
            "instruction file {}: {} bytes exceeds the {MAX_INSTRUCTION_BYTES}-byte limit",
            path.display(),
            meta.len()
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("instruction file {}: {e}", path.display()))?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return Err(format!(
            "instruction file {}: {} bytes is not a positive multiple of 4 (32-bit words)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Writes a tensor into a data buffer in the kernel's element type.
fn write_tensor(t: &Tensor, dtype: ArgDtype, dst: &mut [u8]) -> Result<(), String> {
    let n = t.numel();
    if n.checked_mul(dtype.size()) != Some(dst.len()) {
        return Err(format!(
            "{} elements do not fill a {}-byte {dtype} buffer",
            n,
            dst.len()
        ));
    }
    match (dtype, t.data()) {
        (ArgDtype::Bf16, Data::F32(v)) => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(v) {
                d.copy_from_slice(&half::bf16::from_f32(x).to_bits().to_le_bytes());
            }
        }
        (ArgDtype::Bf16, Data::F16(v)) => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(v) {
                d.copy_from_slice(&half::bf16::from_f32(x.to_f32()).to_bits().to_le_bytes());
            }
        }
        (ArgDtype::F32, Data::F32(v)) => {
            for (d, &x) in dst.chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        (ArgDtype::F32, Data::F16(v)) => {
            for (d, &x) in dst.chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_f32().to_le_bytes());
            }
        }
        (ArgDtype::I32, Data::I32(v)) => {
            for (d, &x) in dst.chunks_exact_mut(4).zip(v) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        (d, _) => return Err(format!("a {} tensor cannot fill a {d} buffer", t.dtype())),
    }
    Ok(())
}

/// Reads a data buffer into a tensor of the node's output type.
fn read_tensor(
    src: &[u8],
    dtype: ArgDtype,
    want: DType,
    shape: &[usize],
) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    if n.checked_mul(dtype.size()) != Some(src.len()) {
        return Err(format!(
            "a {}-byte {dtype} buffer does not hold shape {shape:?}",
            src.len()
        ));
    }
    let t = match (dtype, want) {
        (ArgDtype::F32, DType::F32) => Tensor::from_f32(
            shape,
            src.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (ArgDtype::Bf16, DType::F32) => Tensor::from_f32(
            shape,
            src.chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
        ),
        (ArgDtype::I32, DType::I32) => Tensor::from_i32(
            shape,
            src.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (d, w) => return Err(format!("a {d} buffer cannot become a {w} tensor")),
    };
    t.map_err(|e| e.to_string())
}

/// Whether a tensor type can travel in a buffer of this element type.
fn dtype_fits(t: DType, a: ArgDtype) -> bool {
    matches!(
        (t, a),
        (DType::F32 | DType::F16, ArgDtype::Bf16 | ArgDtype::F32) | (DType::I32, ArgDtype::I32)
    )
}

fn static_shape(t: &ValueType) -> Option<Vec<usize>> {
    t.shape.iter().map(Dim::known).collect()
}

impl Device for NpuXrtDevice {
    fn name(&self) -> &str {
        "npu"
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Npu
    }

    fn supports(&self, graph: &Graph, node: &Node) -> Support {
        if let Some(r) = &self.disabled {
            return Support::No {
                reason: format!("the NPU was disabled after a fault: {r}"),
            };
        }
        let kernel = match npu_support(graph, node) {
            Support::Yes { kernel } => kernel,
            no => return no,
        };
        let (ins, outs) = node_types(graph, node);
        let Some(shapes) = ins.iter().map(static_shape).collect::<Option<Vec<_>>>() else {
            return Support::No {
                reason: "shapes are not static".into(),
            };
        };
        let Some(idx) = self.manifest.find_index(&kernel, &shapes, &node.attrs.0) else {
            return Support::No {
                reason: format!(
                    "xclbin for kernel {kernel} (variant {}) not found in {}",
                    crate::manifest::Variant(shapes),
                    self.manifest.path().display()
                ),
            };
        };
        let entry = &self.manifest.entries()[idx];
        if let Some(p) = self.entry_problem(idx, entry) {
            return Support::No { reason: p };
        }
        for a in &entry.args {
            let (t, what) = match a.binding {
                ArgBinding::Input(i) => (ins.get(i), format!("input {i}")),
                ArgBinding::Output(o) => (outs.get(o), format!("output {o}")),
            };
            match t {
                Some(t) if dtype_fits(t.dtype, a.dtype) => {}
                Some(t) => {
                    return Support::No {
                        reason: format!(
                            "kernel {}: {what} is {}, the binary takes {}",
                            entry.label(),
                            t.dtype,
                            a.dtype
                        ),
                    }
                }
                None => {
                    return Support::No {
                        reason: format!("kernel {}: the node has no {what}", entry.label()),
                    }
                }
            }
        }
        Support::Yes { kernel }
    }

    fn npu_caps(&self) -> Option<NpuCaps> {
        Some(self.params.caps())
    }

    fn execute(&mut self, node: &Node, inputs: &[&Tensor]) -> Result<Vec<Tensor>, DeviceError> {
        if let Some(r) = &self.disabled {
            return Err(self.fault(format!("disabled after an earlier fault: {r}")));
        }
        let Some(k) = node.op.npu_kernel() else {
            return Err(self.fault(format!(
                "node '{}' ({}) has no NPU kernel",
                node.name, node.op_name
            )));
        };
        let kernel = k.name().to_string();
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let Some(idx) = self.manifest.find_index(&kernel, &shapes, &node.attrs.0) else {
            return Err(self.fault(format!(
                "node '{}': xclbin for kernel {kernel} (variant {}) not found in {}",
                node.name,
                crate::manifest::Variant(shapes),
                self.manifest.path().display()
            )));
        };
        let label = self.manifest.entries()[idx].label();
        if let Some(r) = self.failed.get(&idx) {
            return Err(self.fault(format!(
                "node '{}': kernel {label} failed earlier: {r}",
                node.name
            )));
        }
        let in_types: Vec<ValueType> = inputs
            .iter()
            .map(|t| {
                ValueType::new(
                    t.dtype(),
                    t.shape().iter().map(|&d| Dim::Known(d)).collect(),
                )
            })
            .collect();
        let out_types = node.op.infer(&in_types, &[])?;
        let Some(out_shapes) = out_types
            .iter()
            .map(static_shape)
            .collect::<Option<Vec<_>>>()
        else {
            return Err(DeviceError::Kernel(OpError(format!(
                "node '{}': output shapes are not static for static inputs",
                node.name
            ))));
        };
        if let Err(e) = self.ensure_loaded(idx, &shapes, &out_shapes) {
            let reason = e.to_string();
            tracing::warn!(
                "npu: node '{}': {reason}; this kernel variant will run on the CPU",
                node.name
            );
            self.failed.insert(idx, reason.clone());
            return Err(self.fault(format!("node '{}': {reason}", node.name)));
        }
        match self.dispatch(idx, inputs, &out_types) {
            Ok(outs) => Ok(outs),
            Err((scope, reason)) => {
                let reason = format!("kernel {label}: {reason}");
                match scope {
                    Scope::Entry => {
                        tracing::warn!(
                            "npu: node '{}': {reason}; this kernel variant is disabled",
                            node.name
                        );
                        self.failed.insert(idx, reason.clone());
                    }
                    Scope::Device => {
                        tracing::warn!(
                            "npu: node '{}': {reason}; the NPU is disabled for this process",
                            node.name
                        );
                        self.disabled = Some(reason.clone());
                    }
                }
                Err(self.fault(format!("node '{}': {reason}", node.name)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshalling_rounds_to_bf16_and_round_trips_f32_and_i32() {
        let t = Tensor::from_f32(
            &[4],
            vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, f32::NAN],
        )
        .unwrap();
        let mut b = vec![0u8; 8];
        write_tensor(&t, ArgDtype::Bf16, &mut b).unwrap();
        let bits: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        // Ties go to even: 1+2^-8 -> 1.0 (0x3f80), 1+3*2^-8 -> 1+2^-6 (0x3f82); -0 keeps its sign.
        assert_eq!(&bits[..3], &[0x3f80, 0x3f82, 0x8000]);
        assert!(half::bf16::from_bits(bits[3]).is_nan());

        let f16 = Tensor::new(
            &[2],
            Data::F16(vec![half::f16::from_f32(0.5), half::f16::from_f32(-3.0)]),
        )
        .unwrap();
        let mut b = vec![0u8; 8];
        write_tensor(&f16, ArgDtype::F32, &mut b).unwrap();
        assert_eq!(
            read_tensor(&b, ArgDtype::F32, DType::F32, &[2])
                .unwrap()
                .f32s()
                .unwrap(),
            &[0.5, -3.0]
        );

        let i = Tensor::from_i32(&[3], vec![-7, 0, 1 << 30]).unwrap();
        let mut b = vec![0u8; 12];
        write_tensor(&i, ArgDtype::I32, &mut b).unwrap();
        assert_eq!(
            read_tensor(&b, ArgDtype::I32, DType::I32, &[3])
                .unwrap()
                .i32s()
                .unwrap(),
            &[-7, 0, 1 << 30]
        );
    }

    #[test]
    fn marshalling_refuses_mismatched_sizes_and_types() {
        let t = Tensor::from_f32(&[3], vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            write_tensor(&t, ArgDtype::F32, &mut [0u8; 8]).unwrap_err(),
            "3 elements do not fill a 8-byte f32 buffer"
        );
        assert_eq!(
            write_tensor(&t, ArgDtype::I32, &mut [0u8; 12]).unwrap_err(),
            "a f32 tensor cannot fill a i32 buffer"
        );
        assert_eq!(
            read_tensor(&[0u8; 6], ArgDtype::Bf16, DType::F32, &[2]).unwrap_err(),
            "a 6-byte bf16 buffer does not hold shape [2]"
        );
        assert_eq!(
            read_tensor(&[0u8; 8], ArgDtype::F32, DType::I32, &[2]).unwrap_err(),
            "a f32 buffer cannot become a i32 tensor"
        );
    }

    #[test]
    fn instruction_files_must_be_whole_words() {
        let dir = std::env::temp_dir().join(format!("amanuensis-xrt-insts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("i.bin");
        std::fs::write(&p, [1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(read_instructions(&p).unwrap(), vec![1, u32::MAX]);
        std::fs::write(&p, []).unwrap();
        assert!(read_instructions(&p)
            .unwrap_err()
            .contains("0 bytes is not a positive multiple of 4"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
