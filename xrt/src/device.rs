//! [`NpuXrtDevice`]: the real NPU as an [`amanuensis_runtime::device::Device`].
//!
//! One instance per process (opened through the device registry) holds the XRT device
//! and one hardware context per xclbin, at most [`NpuParams::max_hw_contexts`] at once
//! (the least recently used is closed when another is needed). Loading a plan makes an
//! [`XrtProgram`]: every slot of the plan's memory arena gets one buffer that the values
//! of the slot use in turn, every weight its device buffer, written and synced once at load, and every device node its
//! run object with all arguments bound, once. A graph run then only syncs the plan's
//! uploads, starts the runs of each segment (chained, so the host does not wait between
//! them) and syncs the plan's downloads back.
//!
//! Failures: a failing run (error or abort state), a timeout, a lost device or any
//! failure to start or wait come back as [`DeviceError::Fault`] so the session repeats the
//! graph run on the CPU; a fault of the device disables it for the process.
//!
//! `npu-dry` is the same device over the shim's test double: the double's runs compute
//! their outputs with the catalogue's bit-exact references (the dry run never opens a
//! kernel binary), so a transcript is real and every XRT call can be logged.

use crate::args::{read_tensor, write_tensor};
pub use crate::args::{FIRST_DATA_ARG, INSTR_ARG, OPCODE_INSTRUCTIONS};
pub use crate::error::XrtError;
use crate::manifest::{ArgBinding, ArgDtype, KernelEntry, Manifest};
use crate::shim::RunlistState;
use crate::shim::{BoFlags, RunState, ShimApi, ShimError, SyncDir};
use crate::wrap::{Arena, Bo, Device as XrtDevice, HwContext, Kernel, Run, Runlist, Xclbin};
use amanuensis_runtime::device::{
    Device, DeviceError, NodeView, Program, ProgramRunStats, RunContext, Support,
};
use amanuensis_runtime::ir::ValueSource;
use amanuensis_runtime::npu::{
    node_cost_ns, npu_support, NpuLowering, NpuOptions, NpuParams, TilingPass,
};
use amanuensis_runtime::schedule::{Pass, Plan, Slot};
use amanuensis_runtime::tensor::DType;
use amanuensis_runtime::{Dim, Tensor, ValueType, WeightStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// How long one run may take before it counts as hung, ms. The driver resets a
    /// context whose command runs longer than 2 s, so this only needs to exceed that.
    pub timeout_ms: u32,
    /// Parameter set for the cost model; `None` picks one from the manifest's target or
    /// the device name.
    pub params: Option<NpuParams>,
    /// How runs are scheduled.
    pub schedule: NpuOptions,
    /// The dry run: kernel binaries are never opened (the shim is the test double, whose
    /// runs compute with the references).
    pub dry: bool,
}

impl Default for NpuXrtOptions {
    fn default() -> Self {
        NpuXrtOptions {
            device_index: 0,
            timeout_ms: 5000,
            params: None,
            schedule: NpuOptions::default(),
            dry: false,
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

/// One hardware context per xclbin, with its kernels.
struct CtxSlot {
    // Kernels go before the context (declaration order is drop order).
    kernels: HashMap<String, Arc<Kernel>>,
    ctx: Arc<HwContext>,
    last_use: u64,
}

/// What the device shares between its programs.
struct Shared {
    // Drop order: contexts (kernels, contexts, xclbins), then the device.
    contexts: HashMap<PathBuf, CtxSlot>,
    device: Arc<XrtDevice>,
    clock: u64,
    /// Hardware contexts created so far.
    created: usize,
    disabled: Option<String>,
}

/// The real AMD Ryzen AI NPU, driven through XRT (`--device npu`, `--device npu-dry`).
pub struct NpuXrtDevice {
    name: String,
    /// The dry run's double, whose runs this device's programs compute.
    dry_double: Option<Arc<crate::double::RecordingShim>>,
    /// The call log's context (phase, graph, window), when calls are logged.
    calls: Option<crate::calllog::CallContext>,
    shared: Arc<Mutex<Shared>>,
    shim: Arc<dyn ShimApi>,
    manifest: Arc<Manifest>,
    options: NpuXrtOptions,
    device_name: String,
    params: NpuParams,
}

impl std::fmt::Debug for NpuXrtDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpuXrtDevice")
            .field("name", &self.name)
            .field("device_name", &self.device_name)
            .field("backend", &self.shim.describe())
            .field("manifest", &self.manifest.path())
            .finish()
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NpuXrtDevice {
    /// Opens the NPU through the XRT shim of this build with the manifest of
    /// [`crate::KERNELS_ENV`] and the options of [`NpuXrtOptions::from_env`].
    pub fn from_env() -> Result<NpuXrtDevice, XrtError> {
        let shim = crate::detect::real_shim()?;
        let manifest = crate::manifest::load_from_env()?;
        NpuXrtDevice::with_shim(shim, manifest, NpuXrtOptions::from_env())
    }

    /// Opens the NPU through the XRT shim of this build.
    pub fn open(manifest: Arc<Manifest>, options: NpuXrtOptions) -> Result<NpuXrtDevice, XrtError> {
        NpuXrtDevice::with_shim(crate::detect::real_shim()?, manifest, options)
    }

    /// Opens the NPU through any shim (the test double in tests and dry runs).
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
            name: if options.dry { "npu-dry" } else { "npu" }.into(),
            dry_double: None,
            calls: None,
            shared: Arc::new(Mutex::new(Shared {
                contexts: HashMap::new(),
                device,
                clock: 0,
                created: 0,
                disabled: None,
            })),
            shim,
            manifest,
            options,
            device_name,
            params,
        })
    }

    /// Computes the runs of this device's programs on `double` (the dry run).
    pub fn with_dry_double(mut self, double: Arc<crate::double::RecordingShim>) -> Self {
        self.dry_double = Some(double);
        self
    }

    /// Tags the logged calls from now on with this context (phase, graph, window).
    pub fn with_call_context(mut self, calls: Option<crate::calllog::CallContext>) -> Self {
        self.calls = calls;
        self
    }

    /// The device's name as XRT reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The manifest in use.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The timing parameters of its cost model.
    pub fn params(&self) -> &NpuParams {
        &self.params
    }

    /// Why the device stopped accepting work, if it did.
    pub fn disabled(&self) -> Option<String> {
        lock(&self.shared).disabled.clone()
    }

    /// Hardware contexts currently open.
    pub fn open_contexts(&self) -> usize {
        lock(&self.shared).contexts.len()
    }

    /// Hardware contexts created since the device was opened.
    pub fn contexts_created(&self) -> usize {
        lock(&self.shared).created
    }

    /// Why this entry cannot run (missing files), if so; a dry run opens no file.
    fn entry_problem(&self, e: &KernelEntry) -> Option<String> {
        if self.options.dry {
            return None;
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

    /// The manifest entry of a node, or why there is none.
    fn entry_for(&self, node: &NodeView) -> Result<usize, String> {
        let k = match npu_support(node) {
            Support::Yes { kernel } => kernel,
            Support::No { reason } => return Err(reason),
        };
        let shapes: Vec<Vec<usize>> = node
            .inputs
            .iter()
            .map(static_shape)
            .collect::<Option<_>>()
            .ok_or("shapes are not static")?;
        let idx = self
            .manifest
            .find_index(&k, &shapes, &node.attrs.0)
            .ok_or_else(|| {
                format!(
                    "xclbin for kernel {k} (variant {}) not found in {}",
                    crate::manifest::Variant(shapes.clone()),
                    self.manifest.path().display()
                )
            })?;
        let entry = &self.manifest.entries()[idx];
        if let Some(p) = self.entry_problem(entry) {
            return Err(p);
        }
        for a in &entry.args {
            let (t, what) = match a.binding {
                ArgBinding::Input(i) => (node.inputs.get(i), format!("input {i}")),
                ArgBinding::Output(o) => (node.outputs.get(o), format!("output {o}")),
            };
            match t {
                Some(t) if dtype_fits(t.dtype, a.dtype) => {}
                Some(t) => {
                    return Err(format!(
                        "kernel {}: {what} is {}, the binary takes {}",
                        entry.label(),
                        t.dtype,
                        a.dtype
                    ))
                }
                None => return Err(format!("kernel {}: the node has no {what}", entry.label())),
            }
        }
        Ok(idx)
    }
}

/// The context of an xclbin, created when needed (the least recently used idle one closed
/// when the process holds the most it may; an error when none is idle).
fn context_for<'a>(
    shared: &'a mut Shared,
    shim: &Arc<dyn ShimApi>,
    entry: &KernelEntry,
    max: usize,
    dry: bool,
) -> Result<&'a mut CtxSlot, String> {
    shared.clock += 1;
    let clock = shared.clock;
    if !shared.contexts.contains_key(&entry.xclbin) {
        while shared.contexts.len() >= max.max(1) {
            // Only a context no loaded program uses can close: one whose kernels (and
            // so runs and buffers) are held by nothing but this slot. Closing one still
            // in use would not free it, and the process would hold more contexts than
            // the NPU allows.
            let idle = |s: &CtxSlot| {
                Arc::strong_count(&s.ctx) == 1 + s.kernels.len()
                    && s.kernels.values().all(|k| Arc::strong_count(k) == 1)
            };
            let Some(victim) = shared
                .contexts
                .iter()
                .filter(|(_, s)| idle(s))
                .min_by_key(|(_, s)| s.last_use)
                .map(|(p, _)| p.clone())
            else {
                return Err(format!(
                    "{} needs a hardware context, but all {} the NPU allows this process are held by loaded graphs",
                    entry.xclbin.display(),
                    shared.contexts.len()
                ));
            };
            tracing::info!(
                "npu: closing the hardware context of {} to make room",
                victim.display()
            );
            shared.contexts.remove(&victim);
        }
        let xclbin = Xclbin::load(shim.clone(), &entry.xclbin)
            .map_err(|e| format!("loading xclbin {}: {e}", entry.xclbin.display()))?;
        if !dry {
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
        }
        let ctx = HwContext::create(shared.device.clone(), xclbin).map_err(|e| {
            format!(
                "creating a hardware context for {}: {e}",
                entry.xclbin.display()
            )
        })?;
        shared.created += 1;
        shared.contexts.insert(
            entry.xclbin.clone(),
            CtxSlot {
                kernels: HashMap::new(),
                ctx,
                last_use: clock,
            },
        );
    }
    let slot = shared
        .contexts
        .get_mut(&entry.xclbin)
        .expect("inserted above");
    slot.last_use = clock;
    Ok(slot)
}

/// A device value's buffer (the buffer of its arena slot, from byte 0) and the element
/// type it holds on the device.
struct ValueBuffer {
    /// Index in the program's slot buffers.
    bo: usize,
    /// The value's bytes on the device (its slot's buffer may be larger).
    bytes: usize,
    dtype: ArgDtype,
    shape: Vec<usize>,
    want: DType,
}

/// One device node, ready to start: its run with every argument bound at load.
struct NodeRun {
    run: Run,
    label: String,
    node: String,
}

/// How one segment is submitted.
enum Batch {
    /// An `xrt::runlist` of consecutive runs of one hardware context: one submit.
    List {
        list: Runlist,
        /// (kernel label, node) of each run, in order.
        who: Vec<(String, String)>,
    },
    /// Runs started one after another before the host waits for any (no runlists).
    Chain(Vec<NodeRun>),
}

/// Offset and size of every slot of the plan's device arena on this device: the plan's
/// sizes (and so its offsets, since the plan lays slots end to end in order), except that a
/// slot grows when a kernel holds one of its values in a wider type than the graph's, and
/// the slots after it move up by as much.
fn arena_layout(
    slots: &[Slot],
    sized: &[((usize, bool, u32), usize, usize)],
) -> Vec<(usize, usize)> {
    let mut need: Vec<usize> = slots.iter().map(|s| s.bytes as usize).collect();
    for &((k, own, _), bytes, _) in sized {
        if !own {
            need[k] = need[k].max(bytes.div_ceil(SLOT_ALIGN) * SLOT_ALIGN);
        }
    }
    let mut end = 0;
    need.iter()
        .map(|&n| {
            let at = end;
            end += n;
            (at, n)
        })
        .collect()
}

/// Alignment of a grown arena slot (the memory plan's own).
const SLOT_ALIGN: usize = 4096;

/// The NPU's program of one plan: buffers, weights and runs made once at load.
pub struct XrtProgram {
    // Drop order: runs, then instruction and data buffers, then the kernels' contexts
    // (held by the device).
    segments: Vec<Vec<Batch>>,
    _instrs: Vec<Bo>,
    /// One sub-buffer per slot of the plan's device arena (and memory group), dropped
    /// before the arenas they are cut from.
    slot_bos: Vec<Bo>,
    _arenas: Vec<(u32, usize, Arena)>,
    values: HashMap<usize, ValueBuffer>,
    _weights: Vec<Bo>,
    plan: Arc<Plan>,
    shared: Arc<Mutex<Shared>>,
    timeout_ms: u32,
    stats: ProgramRunStats,
    load_bytes: u64,
    calls: Option<crate::calllog::CallContext>,
    /// Host-side timestamps of this run's syncs and submissions, for the trace.
    trace: Option<RunTrace>,
}

/// The current run's host-side spans (lane, what, start, end), when tracing.
struct RunTrace {
    graph: String,
    start: std::time::Instant,
    spans: Vec<(
        u64,
        &'static str,
        String,
        std::time::Instant,
        std::time::Instant,
    )>,
}

/// Trace lanes of the real device: its host thread's syncs and its runs' submit → wait.
const LANE_SYNC: u64 = 1;
const LANE_RUNS: u64 = 2;

impl XrtProgram {
    fn span(&mut self, lane: u64, what: &'static str, name: String, t0: std::time::Instant) {
        if let Some(t) = self.trace.as_mut() {
            t.spans
                .push((lane, what, name, t0, std::time::Instant::now()));
        }
    }
}

impl XrtProgram {
    /// Bytes written and synced to the device at load (the weights).
    pub fn load_bytes(&self) -> u64 {
        self.load_bytes
    }
}

fn fault(reason: String) -> DeviceError {
    DeviceError::Fault {
        device: "npu".into(),
        reason,
    }
}

impl NpuXrtDevice {
    fn load_program(&self, plan: &Arc<Plan>, weights: &WeightStore) -> Result<XrtProgram, String> {
        if let Some(r) = lock(&self.shared).disabled.clone() {
            return Err(format!("the NPU was disabled after a fault: {r}"));
        }
        let g = &plan.graph;
        if let Some(c) = &self.calls {
            c.set_phase(crate::calllog::Phase::Load);
            c.set_graph(Some(&g.name));
            c.set_window(None);
        }
        let low = plan
            .lowering::<NpuLowering>()
            .ok_or("the plan has no NPU lowering (planned for another device?)")?;
        let _ = low;
        // Every device node's manifest entry, and the device type of every value it touches.
        let mut node_entries: Vec<(usize, usize)> = Vec::new();
        let mut dtypes: HashMap<usize, (ArgDtype, String)> = HashMap::new();
        for seg in &plan.segments {
            for &ni in seg {
                let n = &g.nodes[ni];
                let (ins, outs) = amanuensis_runtime::device::node_types(g, n);
                let view = NodeView {
                    name: &n.name,
                    op_name: &n.op_name,
                    op: n.op.as_ref(),
                    attrs: &n.attrs,
                    inputs: &ins,
                    outputs: &outs,
                    stateful: !n.states.is_empty(),
                };
                let idx = self
                    .entry_for(&view)
                    .map_err(|e| format!("node '{}': {e}", n.name))?;
                let entry = &self.manifest.entries()[idx];
                for a in &entry.args {
                    let v = match a.binding {
                        ArgBinding::Input(i) => n.inputs[i],
                        ArgBinding::Output(o) => n.outputs[o],
                    };
                    if let Some((d, who)) = dtypes.get(&v) {
                        if *d != a.dtype {
                            return Err(format!(
                                "value '{}' is {d} in kernel {who} but {} in kernel {}: a device-resident value needs one type",
                                g.values[v].name,
                                a.dtype,
                                entry.label()
                            ));
                        }
                    } else {
                        dtypes.insert(v, (a.dtype, entry.label()));
                    }
                }
                node_entries.push((ni, idx));
            }
        }
        let mut shared = lock(&self.shared);
        let max_ctx = self.params.max_hw_contexts;
        // Kernels, with one context per xclbin.
        let mut kernels: HashMap<usize, Arc<Kernel>> = HashMap::new();
        for &(_, idx) in &node_entries {
            if kernels.contains_key(&idx) {
                continue;
            }
            let entry = &self.manifest.entries()[idx];
            let slot = context_for(&mut shared, &self.shim, entry, max_ctx, self.options.dry)
                .map_err(|e| format!("kernel {}: {e}", entry.label()))?;
            let k = match slot.kernels.get(&entry.xclbin_kernel) {
                Some(k) => k.clone(),
                None => {
                    let k = Kernel::open(slot.ctx.clone(), &entry.xclbin_kernel).map_err(|e| {
                        format!(
                            "opening kernel '{}' of {}: {e}",
                            entry.xclbin_kernel,
                            entry.xclbin.display()
                        )
                    })?;
                    slot.kernels.insert(entry.xclbin_kernel.clone(), k.clone());
                    k
                }
            };
            // Passing more buffers than the kernel declares crashes XRT: refuse it here.
            let num_args = slot
                .ctx
                .xclbin()
                .num_args(&entry.xclbin_kernel)
                .map_err(|e| format!("argument count of '{}': {e}", entry.xclbin_kernel))?;
            if entry.args.len() as u64 + u64::from(FIRST_DATA_ARG) > u64::from(num_args) {
                return Err(format!(
                    "kernel {}: the manifest lists {} data buffers but '{}' in {} takes {} ({} arguments in all)",
                    entry.label(),
                    entry.args.len(),
                    entry.xclbin_kernel,
                    entry.xclbin.display(),
                    num_args.saturating_sub(FIRST_DATA_ARG),
                    num_args
                ));
            }
            kernels.insert(idx, k);
        }
        drop(shared);
        // Buffers: the plan's device arena, allocated as one buffer object per memory group
        // and cut into one sub-buffer per slot at the slot's offset (the values of a slot
        // use it in turn, each from byte 0); and one buffer per weight, in the memory group
        // of the first argument that uses it.
        let slots: &[Slot] = plan
            .memory
            .iter()
            .find(|m| m.device == plan.device)
            .map(|m| &m.slots[..])
            .unwrap_or(&[]);
        let slot_of: HashMap<&str, usize> = slots
            .iter()
            .enumerate()
            .flat_map(|(k, s)| s.values.iter().map(move |v| (v.as_str(), k)))
            .collect();
        // (value, bytes, group, kernel index) of every device value, in first-use order.
        let mut wanted: Vec<(usize, usize, u32, usize, ArgDtype, Vec<usize>)> = Vec::new();
        let mut weight_bos: HashMap<usize, Bo> = HashMap::new();
        let mut load_bytes = 0u64;
        for &(ni, idx) in &node_entries {
            let n = &g.nodes[ni];
            let entry = &self.manifest.entries()[idx];
            let kernel = &kernels[&idx];
            for (i, a) in entry.args.iter().enumerate() {
                let v = match a.binding {
                    ArgBinding::Input(k) => n.inputs[k],
                    ArgBinding::Output(k) => n.outputs[k],
                };
                if wanted.iter().any(|w| w.0 == v) || weight_bos.contains_key(&v) {
                    continue;
                }
                let info = &g.values[v];
                let shape = static_shape(&info.ty)
                    .ok_or_else(|| format!("value '{}' has a symbolic shape", info.name))?;
                let bytes = shape
                    .iter()
                    .try_fold(a.dtype.size(), |acc, &d| acc.checked_mul(d))
                    .filter(|&b| b > 0 && b <= MAX_BUFFER_BYTES)
                    .ok_or_else(|| {
                        format!("value '{}': buffer size is zero or too large", info.name)
                    })?;
                let argno = FIRST_DATA_ARG + i as u32;
                let group = kernel
                    .group_id(argno)
                    .map_err(|e| format!("group id of argument {argno}: {e}"))?;
                if info.source == ValueSource::Weight {
                    let mut bo =
                        Bo::alloc(kernel, bytes, BoFlags::HostOnly, group).map_err(|e| {
                            format!("allocating {bytes} bytes for '{}': {e}", info.name)
                        })?;
                    let w = weights
                        .get(&info.name)
                        .ok_or_else(|| format!("weight '{}' is not loaded", info.name))?;
                    write_tensor(w, a.dtype, bo.bytes_mut())
                        .map_err(|e| format!("weight '{}': {e}", info.name))?;
                    bo.sync(SyncDir::ToDevice)
                        .map_err(|e| format!("uploading weight '{}': {e}", info.name))?;
                    load_bytes += bytes as u64;
                    weight_bos.insert(v, bo);
                } else {
                    wanted.push((v, bytes, group, idx, a.dtype, shape));
                }
            }
        }
        // A value the memory plan left out (it should not) gets a buffer of its own.
        let key = |v: usize| match slot_of.get(g.values[v].name.as_str()) {
            Some(&k) => (k, false),
            None => (v, true),
        };
        let mut sized: Vec<((usize, bool, u32), usize, usize)> = Vec::new();
        for w in &wanted {
            let (k, own) = key(w.0);
            match sized.iter_mut().find(|s| s.0 == (k, own, w.2)) {
                Some(s) => s.1 = s.1.max(w.1),
                None => sized.push(((k, own, w.2), w.1, w.3)),
            }
        }
        let layout = arena_layout(slots, &sized);
        // One buffer object per memory group (kernels of one NPU use one group for their
        // data; a device that splits them gets one per group), covering the range of the
        // arena its slots lie in: (group, base offset, buffer).
        let mut arenas: Vec<(u32, usize, Arena)> = Vec::new();
        for &((_, own, group), _, idx) in &sized {
            if own || arenas.iter().any(|a| a.0 == group) {
                continue;
            }
            let ranges = sized
                .iter()
                .filter(|s| !s.0 .1 && s.0 .2 == group)
                .map(|s| layout[s.0 .0]);
            let base = ranges.clone().map(|r| r.0).min().unwrap_or(0);
            let end = ranges.map(|r| r.0 + r.1).max().unwrap_or(0);
            let bytes = end - base;
            let arena =
                Arena::alloc(&kernels[&idx], bytes, BoFlags::HostOnly, group).map_err(|e| {
                    format!("allocating the {bytes}-byte arena of memory group {group}: {e}")
                })?;
            arenas.push((group, base, arena));
        }
        let mut slot_bos = Vec::with_capacity(sized.len());
        for &((k, own, group), bytes, idx) in &sized {
            let bo = if own {
                Bo::alloc(&kernels[&idx], bytes, BoFlags::HostOnly, group)
                    .map_err(|e| format!("allocating a {bytes}-byte buffer: {e}"))?
            } else {
                // At the slot's offset, as long as its largest value on this device.
                let (offset, _) = layout[k];
                let (_, base, arena) = arenas.iter().find(|a| a.0 == group).expect("made above");
                arena.slot(bytes, offset - base).map_err(|e| {
                    format!("cutting slot {k} ({bytes} bytes at {offset}) from the arena: {e}")
                })?
            };
            slot_bos.push(bo);
        }
        let mut values: HashMap<usize, ValueBuffer> = HashMap::new();
        for (v, bytes, group, _, dtype, shape) in wanted {
            let (k, own) = key(v);
            let bo = sized
                .iter()
                .position(|s| s.0 == (k, own, group))
                .expect("sized above");
            values.insert(
                v,
                ValueBuffer {
                    bo,
                    bytes,
                    dtype,
                    shape,
                    want: g.values[v].ty.dtype,
                },
            );
        }
        // Runs with every argument bound.
        let mut runs = HashMap::new();
        let mut instrs = Vec::new();
        for &(ni, idx) in &node_entries {
            let n = &g.nodes[ni];
            let entry = &self.manifest.entries()[idx];
            let kernel = &kernels[&idx];
            let err = |what: &str, e: ShimError| format!("kernel {}: {what}: {e}", entry.label());
            let words = if self.options.dry {
                // The dry run never opens kernel binaries: a one-word placeholder stream.
                vec![0u32]
            } else {
                read_instructions(&entry.insts)
                    .map_err(|e| format!("kernel {}: {e}", entry.label()))?
            };
            let instr_group = kernel
                .group_id(INSTR_ARG)
                .map_err(|e| err("group id of the instruction argument", e))?;
            let mut instr = Bo::alloc(kernel, words.len() * 4, BoFlags::Cacheable, instr_group)
                .map_err(|e| err("allocating the instruction buffer", e))?;
            for (dst, w) in instr.bytes_mut().chunks_exact_mut(4).zip(&words) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
            instr
                .sync(SyncDir::ToDevice)
                .map_err(|e| err("syncing the instruction buffer", e))?;
            let run = Run::create(kernel.clone()).map_err(|e| err("creating the run", e))?;
            run.set_u32(0, OPCODE_INSTRUCTIONS)
                .map_err(|e| err("setting the opcode", e))?;
            run.set_bo(INSTR_ARG, &instr)
                .map_err(|e| err("setting the instruction buffer", e))?;
            let n_words = u32::try_from(words.len()).map_err(|_| "instruction stream too long")?;
            run.set_u32(2, n_words)
                .map_err(|e| err("setting the instruction count", e))?;
            for (i, a) in entry.args.iter().enumerate() {
                let v = match a.binding {
                    ArgBinding::Input(k) => n.inputs[k],
                    ArgBinding::Output(k) => n.outputs[k],
                };
                let bo = values
                    .get(&v)
                    .map(|b| &slot_bos[b.bo])
                    .or_else(|| weight_bos.get(&v))
                    .expect("every argument got a buffer above");
                run.set_bo(FIRST_DATA_ARG + i as u32, bo).map_err(|e| {
                    err(
                        &format!("setting argument {}", FIRST_DATA_ARG + i as u32),
                        e,
                    )
                })?;
            }
            if let Some(double) = &self.dry_double {
                let (plan, entry) = (plan.clone(), entry.clone());
                double.set_hook_for_run(run.handle(), move |inv| {
                    crate::reference::compute(&plan, ni, &entry, inv)
                });
            }
            instrs.push(instr);
            runs.insert(
                ni,
                (
                    NodeRun {
                        run,
                        label: entry.label(),
                        node: n.name.clone(),
                    },
                    kernel.clone(),
                ),
            );
        }
        // Each segment: runlists of consecutive runs of one context where XRT has them,
        // else a chain.
        let use_lists = self.options.schedule.runlists && self.shim.has_runlist();
        let mut segments = Vec::with_capacity(plan.segments.len());
        for seg in &plan.segments {
            let mut batches: Vec<Batch> = Vec::new();
            for ni in seg {
                let (r, kernel) = runs
                    .remove(ni)
                    .ok_or_else(|| format!("node {ni} appears in two segments"))?;
                if !use_lists {
                    match batches.last_mut() {
                        Some(Batch::Chain(v)) => v.push(r),
                        _ => batches.push(Batch::Chain(vec![r])),
                    }
                    continue;
                }
                let ctx = kernel.context().clone();
                let same = matches!(batches.last(), Some(Batch::List { list, .. }) if Arc::ptr_eq(list.context(), &ctx));
                if !same {
                    let list =
                        Runlist::create(ctx).map_err(|e| format!("creating a runlist: {e}"))?;
                    batches.push(Batch::List {
                        list,
                        who: Vec::new(),
                    });
                }
                if let Some(Batch::List { list, who }) = batches.last_mut() {
                    who.push((r.label.clone(), r.node.clone()));
                    list.add(r.run)
                        .map_err(|e| format!("adding node '{}' to a runlist: {e}", r.node))?;
                }
            }
            segments.push(batches);
        }
        Ok(XrtProgram {
            trace: None,
            calls: self.calls.clone(),
            segments,
            _instrs: instrs,
            slot_bos,
            _arenas: arenas,
            values,
            _weights: weight_bos.into_values().collect(),
            plan: plan.clone(),
            shared: self.shared.clone(),
            timeout_ms: self.options.timeout_ms,
            stats: ProgramRunStats::default(),
            load_bytes,
        })
    }
}

impl XrtProgram {
    fn disable(&self, reason: &str) {
        let mut s = lock(&self.shared);
        if s.disabled.is_none() {
            tracing::warn!("npu: {reason}; the NPU is disabled for this process");
            s.disabled = Some(reason.to_string());
        }
    }

    fn device_fault(&self, reason: String) -> DeviceError {
        self.disable(&reason);
        fault(reason)
    }

    fn buffer(&mut self, v: usize) -> Result<&mut ValueBuffer, DeviceError> {
        let name = &self.plan.graph.values[v].name;
        let e = fault(format!("value '{name}' has no device buffer"));
        self.values.get_mut(&v).ok_or(e)
    }
}

impl Program for XrtProgram {
    fn begin_run(&mut self, cx: &RunContext) -> Result<(), DeviceError> {
        if let Some(r) = lock(&self.shared).disabled.clone() {
            return Err(fault(format!("disabled after an earlier fault: {r}")));
        }
        if let Some(c) = &self.calls {
            c.set_phase(crate::calllog::Phase::Run);
            c.set_graph(Some(cx.graph));
            c.set_window(cx.window.map(|w| w as u64));
        }
        self.trace = amanuensis_runtime::trace::active().then(|| RunTrace {
            graph: cx.graph.to_string(),
            start: std::time::Instant::now(),
            spans: Vec::new(),
        });
        self.stats = ProgramRunStats::default();
        Ok(())
    }

    fn upload(&mut self, value: usize, tensor: &Tensor) -> Result<(), DeviceError> {
        let t0 = std::time::Instant::now();
        let name = self.plan.graph.values[value].name.clone();
        let r = self.upload_inner(value, tensor);
        self.span(LANE_SYNC, "sync to device", name, t0);
        r
    }

    fn run_segment(&mut self, segment: usize) -> Result<(), DeviceError> {
        let t0 = std::time::Instant::now();
        let r = self.run_segment_inner(segment);
        let n = self.plan.segments.get(segment).map_or(0, |s| s.len());
        self.span(
            LANE_RUNS,
            "submit → wait",
            format!("segment {segment} ({n} runs)"),
            t0,
        );
        r
    }

    fn download(&mut self, value: usize) -> Result<Tensor, DeviceError> {
        let t0 = std::time::Instant::now();
        let name = self.plan.graph.values[value].name.clone();
        let r = self.download_inner(value);
        self.span(LANE_SYNC, "sync from device", name, t0);
        r
    }

    fn end_run(&mut self) -> Result<ProgramRunStats, DeviceError> {
        if let Some(t) = self.trace.take() {
            let spans = t
                .spans
                .into_iter()
                .map(
                    |(lane, what, name, a, b)| amanuensis_runtime::trace::DeviceSpan {
                        lane,
                        lane_name: match lane {
                            LANE_SYNC => "host buffer syncs (measured)".into(),
                            _ => "device runs, submit to wait (measured)".into(),
                        },
                        name: what.to_string(),
                        start_us: a.saturating_duration_since(t.start).as_secs_f64() * 1e6,
                        dur_us: b.saturating_duration_since(a).as_secs_f64() * 1e6,
                        args: serde_json::json!({ "graph": t.graph, "value": name }),
                    },
                )
                .collect();
            amanuensis_runtime::trace::record_run(
                amanuensis_runtime::trace::DEVICE_PID + 1,
                "npu (XRT, host-side timestamps)",
                spans,
                t.start,
                t.start.elapsed().as_secs_f64() * 1e6,
                false,
            );
        }
        Ok(std::mem::take(&mut self.stats))
    }
}

impl XrtProgram {
    fn upload_inner(&mut self, value: usize, tensor: &Tensor) -> Result<(), DeviceError> {
        let (k, n, dtype) = {
            let b = self.buffer(value)?;
            (b.bo, b.bytes, b.dtype)
        };
        let bo = &mut self.slot_bos[k];
        write_tensor(tensor, dtype, &mut bo.bytes_mut()[..n])
            .map_err(|e| DeviceError::Kernel(e.into()))?;
        let bytes = n as u64;
        let r = bo.sync_range(SyncDir::ToDevice, n, 0);
        r.map_err(|e| self.device_fault(format!("syncing a value to the device: {e}")))?;
        self.stats.bytes_to_device += bytes;
        Ok(())
    }

    fn run_segment_inner(&mut self, segment: usize) -> Result<(), DeviceError> {
        let timeout = self.timeout_ms;
        let mut batches = std::mem::take(
            self.segments
                .get_mut(segment)
                .ok_or_else(|| fault(format!("no segment {segment}")))?,
        );
        let r = run_batches(&mut batches, timeout);
        self.segments[segment] = batches;
        match r {
            Ok(n) => {
                self.stats.device_runs += n;
                Ok(())
            }
            Err(reason) => Err(self.device_fault(reason)),
        }
    }

    fn download_inner(&mut self, value: usize) -> Result<Tensor, DeviceError> {
        let b = self.buffer(value)?;
        let (k, n, dtype, want, shape) = (b.bo, b.bytes, b.dtype, b.want, b.shape.clone());
        let bo = &self.slot_bos[k];
        let r = bo.sync_range(SyncDir::FromDevice, n, 0);
        let bytes = n as u64;
        if let Err(e) = r {
            return Err(self.device_fault(format!("syncing a value from the device: {e}")));
        }
        let t = read_tensor(&self.slot_bos[k].bytes()[..n], dtype, want, &shape)
            .map_err(|e| DeviceError::Kernel(e.into()))?;
        self.stats.bytes_from_device += bytes;
        Ok(t)
    }
}

/// Executes a segment's batches; returns the runs completed, or why it failed.
fn run_batches(batches: &mut [Batch], timeout_ms: u32) -> Result<usize, String> {
    let mut done = 0;
    for b in batches.iter_mut() {
        match b {
            Batch::List { list, who } => {
                list.submit()
                    .map_err(|e| format!("submitting a runlist: {e}"))?;
                match list.wait(timeout_ms) {
                    Ok(RunlistState::Completed) => done += who.len(),
                    Ok(RunlistState::Timeout) => {
                        return Err(format!(
                            "a runlist of {} runs did not finish within {timeout_ms} ms",
                            who.len()
                        ))
                    }
                    Ok(RunlistState::Failed { index, state }) => {
                        let at = index
                            .and_then(|i| who.get(i))
                            .map(|(l, n)| format!("kernel {l} (node '{n}')"))
                            .unwrap_or_else(|| "a run".into());
                        return Err(format!("{at} in a runlist ended in state {state}"));
                    }
                    Err(e) => return Err(format!("waiting for a runlist: {e}")),
                }
            }
            Batch::Chain(runs) => {
                // Every run is started before the host waits, so the device goes from
                // one to the next without a host round trip in between.
                for r in runs.iter() {
                    r.run.start().map_err(|e| {
                        format!("starting kernel {} for node '{}': {e}", r.label, r.node)
                    })?;
                }
                for r in runs.iter() {
                    let state = r.run.wait(timeout_ms).map_err(|e| {
                        format!("waiting for kernel {} (node '{}'): {e}", r.label, r.node)
                    })?;
                    match state {
                        RunState::Completed => done += 1,
                        RunState::Timeout => {
                            return Err(format!(
                                "kernel {} (node '{}') did not finish within {timeout_ms} ms (state {state})",
                                r.label, r.node
                            ))
                        }
                        other => {
                            return Err(format!(
                                "kernel {} (node '{}') ended in state {other}",
                                r.label, r.node
                            ))
                        }
                    }
                }
            }
        }
    }
    Ok(done)
}

impl Device for NpuXrtDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, node: &NodeView) -> Support {
        if let Some(r) = self.disabled() {
            return Support::No {
                reason: format!("the NPU was disabled after a fault: {r}"),
            };
        }
        match self.entry_for(node) {
            Ok(idx) => Support::Yes {
                kernel: self.manifest.entries()[idx].kernel.clone(),
            },
            Err(reason) => Support::No { reason },
        }
    }

    fn cost_ns(&self, node: &NodeView) -> Option<f64> {
        node_cost_ns(node, &self.params, &self.options.schedule)
    }

    fn lowering_passes(&self) -> Vec<Box<dyn Pass>> {
        vec![Box::new(TilingPass {
            params: self.params.clone(),
            options: self.options.schedule,
            xclbin_of: None,
        })]
    }

    fn load(
        &self,
        plan: &Arc<Plan>,
        weights: &WeightStore,
    ) -> Result<Box<dyn Program>, DeviceError> {
        match self.load_program(plan, weights) {
            Ok(p) => Ok(Box::new(p)),
            Err(reason) => {
                tracing::warn!("npu: loading graph '{}': {reason}", plan.graph.name);
                Err(fault(reason))
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
