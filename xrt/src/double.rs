//! [`RecordingShim`]: a test double of the XRT shim. It logs every call with its
//! arguments, keeps host and device copies of every buffer (so a missing sync shows up as
//! wrong numbers), checks handles and the destruction order, can run a dispatch through a
//! closure (e.g. a catalogue reference kernel), executes runlists run by run, and can be
//! told to fail at any step.
//!
//! Its xclbins are files that start with the real magic `xclbin2\0` followed by lines
//! `name:num_args` ([`fake_xclbin`]); anything else is rejected as XRT would.
//!
//! In dry mode ([`RecordingShim::dry`]) it stands in for an NPU that computes: xclbins need
//! not exist on disk (their kernels come from [`RecordingShim::declare_xclbin`] or
//! [`RecordingShim::declare_manifest`], or any name is accepted), every run calls the hook
//! installed for its run, kernel or for all runs ([`RunInvocation`]), and the memory of all
//! live buffers is capped ([`RecordingShim::with_memory_cap`]).

use crate::manifest::Manifest;
use crate::shim::{
    no_runlist_message, BoFlags, BoHandle, DeviceHandle, HwCtxHandle, KernelHandle, RunHandle,
    RunState, RunlistHandle, RunlistState, ShimApi, ShimError, ShimErrorKind, SyncDir,
    XclbinHandle,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The magic an xclbin file starts with.
pub const XCLBIN_MAGIC: &[u8; 8] = b"xclbin2\0";

/// Argument count a dry-mode xclbin without declared kernels reports for any kernel.
pub const PERMISSIVE_NUM_ARGS: u32 = 64;

/// Default cap on the bytes of all live buffers (the double keeps a host and a device copy
/// of each, so it holds about twice this).
pub const DEFAULT_MEMORY_CAP: usize = 4 << 30;

/// Offset the double adds to an argument index to make its memory group id, so tests can
/// tell a group id from an argument index.
pub const GROUP_ID_BASE: u32 = 0x100;

/// Contents of a fake xclbin that declares these kernels with these argument counts.
pub fn fake_xclbin(kernels: &[(&str, u32)]) -> Vec<u8> {
    let mut v = XCLBIN_MAGIC.to_vec();
    for (name, n) in kernels {
        v.extend_from_slice(format!("{name}:{n}\n").as_bytes());
    }
    v
}

/// One logged call, with its arguments (handles as raw numbers).
///
/// Each variant's fields are the C entry point's arguments under the names `npu_shim.h`
/// gives them, so they are not documented one by one.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `npu_device_open`.
    DeviceOpen { index: u32 },
    /// `npu_device_name`.
    DeviceName { dev: u64 },
    /// `npu_device_close`.
    DeviceClose { dev: u64 },
    /// `npu_xclbin_load`.
    XclbinLoad { path: PathBuf },
    /// `npu_xclbin_kernel_names`.
    XclbinKernelNames { xclbin: u64 },
    /// `npu_xclbin_num_args`.
    XclbinNumArgs { xclbin: u64, kernel: String },
    /// `npu_xclbin_free`.
    XclbinFree { xclbin: u64 },
    /// `npu_register_xclbin`.
    RegisterXclbin { dev: u64, xclbin: u64 },
    /// `npu_hwctx_create`.
    HwctxCreate { dev: u64, xclbin: u64 },
    /// `npu_hwctx_destroy`.
    HwctxDestroy { ctx: u64 },
    /// `npu_kernel_open`.
    KernelOpen { ctx: u64, name: String },
    /// `npu_kernel_group_id`.
    KernelGroupId { kernel: u64, argno: u32 },
    /// `npu_kernel_close`.
    KernelClose { kernel: u64 },
    /// `npu_bo_alloc`.
    BoAlloc {
        dev: u64,
        bytes: usize,
        flags: BoFlags,
        group: u32,
    },
    /// `npu_bo_sub`.
    BoSub {
        parent: u64,
        size: usize,
        offset: usize,
    },
    /// `npu_bo_map`.
    BoMap { bo: u64 },
    /// `npu_bo_sync`.
    BoSync {
        bo: u64,
        dir: SyncDir,
        size: usize,
        offset: usize,
    },
    /// `npu_bo_write` (`bytes` copied at `offset`).
    BoWrite {
        bo: u64,
        offset: usize,
        bytes: usize,
    },
    /// `npu_bo_read` (`bytes` copied from `offset`).
    BoRead {
        bo: u64,
        offset: usize,
        bytes: usize,
    },
    /// `npu_bo_free`.
    BoFree { bo: u64 },
    /// `npu_run_create`.
    RunCreate { kernel: u64 },
    /// `npu_run_set_arg_u32`.
    RunSetArgU32 { run: u64, index: u32, value: u32 },
    /// `npu_run_set_arg_u64`.
    RunSetArgU64 { run: u64, index: u32, value: u64 },
    /// `npu_run_set_arg_bo`.
    RunSetArgBo { run: u64, index: u32, bo: u64 },
    /// `npu_run_start`.
    RunStart { run: u64 },
    /// `npu_run_wait`.
    RunWait { run: u64, timeout_ms: u32 },
    /// `npu_run_free`.
    RunFree { run: u64 },
    /// `npu_runlist_create`.
    RunlistCreate { ctx: u64 },
    /// `npu_runlist_add`.
    RunlistAdd { list: u64, run: u64 },
    /// `npu_runlist_execute`.
    RunlistSubmit { list: u64 },
    /// `npu_runlist_wait`.
    RunlistWait { list: u64, timeout_ms: u32 },
    /// `npu_runlist_reset`.
    RunlistReset { list: u64 },
    /// `npu_runlist_free`.
    RunlistFree { list: u64 },
}

/// The fallible entry points, for failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// `npu_device_open`.
    DeviceOpen,
    /// `npu_device_name`.
    DeviceName,
    /// `npu_xclbin_load`.
    XclbinLoad,
    /// `npu_xclbin_kernel_names`.
    XclbinKernelNames,
    /// `npu_xclbin_num_args`.
    XclbinNumArgs,
    /// `npu_register_xclbin`.
    RegisterXclbin,
    /// `npu_hwctx_create`.
    HwctxCreate,
    /// `npu_kernel_open`.
    KernelOpen,
    /// `npu_kernel_group_id`.
    KernelGroupId,
    /// `npu_bo_alloc`.
    BoAlloc,
    /// `npu_bo_sub`.
    BoSub,
    /// `npu_bo_map`.
    BoMap,
    /// `npu_bo_sync`.
    BoSync,
    /// `npu_run_create`.
    RunCreate,
    /// Any `npu_run_set_arg_*`.
    RunSetArg,
    /// `npu_run_start`.
    RunStart,
    /// `npu_run_wait`.
    RunWait,
    /// `npu_bo_write`.
    BoWrite,
    /// `npu_bo_read`.
    BoRead,
    /// `npu_runlist_create`.
    RunlistCreate,
    /// `npu_runlist_add`.
    RunlistAdd,
    /// `npu_runlist_execute`.
    RunlistSubmit,
    /// `npu_runlist_wait` (a [`Failure::State`] of timeout makes it time out, any other
    /// state makes the list fail without naming a run).
    RunlistWait,
    /// `npu_runlist_reset`.
    RunlistReset,
}

/// What an injected failure does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call returns this error.
    Error {
        /// Its category.
        kind: ShimErrorKind,
        /// Its message.
        message: String,
    },
    /// `run_wait` returns this state (other steps treat it as an XRT error).
    State(RunState),
    /// The device disappears: this call and every later fallible call fail.
    DeviceLost,
}

impl Failure {
    /// An XRT exception with `message`.
    pub fn xrt(message: &str) -> Failure {
        Failure::Error {
            kind: ShimErrorKind::Xrt,
            message: message.to_string(),
        }
    }
}

/// Message of every call after [`Failure::DeviceLost`].
pub const DEVICE_LOST: &str = "device lost: the NPU stopped responding (amdxdna reset)";

/// What a dispatch sees: the run's instruction words and data buffers (device copies).
pub struct RunView<'a> {
    /// The xclbin the kernel came from.
    pub xclbin: &'a Path,
    /// The kernel's name in the xclbin.
    pub kernel: &'a str,
    /// Argument 0.
    pub opcode: u32,
    /// The instruction buffer's first `argument 2` words.
    pub instructions: &'a [u32],
    /// Arguments 3, 4, ... in order.
    pub buffers: Vec<&'a mut [u8]>,
}

/// The dispatch callback: fills output buffers from input buffers; an `Err` makes the run
/// end in the error state.
pub type RunHook = Box<dyn FnMut(&mut RunView<'_>) -> Result<(), String> + Send>;

/// One execution of a run, as a [`KernelHook`] sees it: which kernel, its control
/// arguments, and the device copies of the buffers bound to its data arguments, writable.
pub struct RunInvocation<'a> {
    run: RunHandle,
    xclbin: &'a Path,
    kernel: &'a str,
    opcode: u32,
    instructions: &'a [u32],
    data: Vec<&'a mut [u8]>,
}

impl<'a> RunInvocation<'a> {
    /// The kernel's name in its xclbin.
    pub fn kernel_name(&self) -> &str {
        self.kernel
    }

    /// The xclbin the kernel came from (as given to `xclbin_load`).
    pub fn xclbin(&self) -> &Path {
        self.xclbin
    }

    /// The run being executed.
    pub fn run(&self) -> RunHandle {
        self.run
    }

    /// Argument 0.
    pub fn opcode(&self) -> u32 {
        self.opcode
    }

    /// The first `argument 2` words of the instruction buffer (argument 1).
    pub fn instructions(&self) -> &[u32] {
        self.instructions
    }

    /// Number of data arguments (3, 4, ...).
    pub fn data_count(&self) -> usize {
        self.data.len()
    }

    fn slot(&self, index: u32) -> Result<usize, String> {
        let first = crate::FIRST_DATA_ARG;
        index
            .checked_sub(first)
            .map(|i| i as usize)
            .filter(|&i| i < self.data.len())
            .ok_or_else(|| {
                format!(
                    "kernel '{}': argument {index} is not a data buffer (data arguments are {first}..{})",
                    self.kernel,
                    first as usize + self.data.len()
                )
            })
    }

    /// The bytes of the buffer bound to kernel argument `index` (3 is the first data buffer).
    pub fn arg(&self, index: u32) -> Result<&[u8], String> {
        let i = self.slot(index)?;
        Ok(&*self.data[i])
    }

    /// The bytes of the buffer bound to kernel argument `index`, writable.
    pub fn arg_mut(&mut self, index: u32) -> Result<&mut [u8], String> {
        let i = self.slot(index)?;
        Ok(&mut *self.data[i])
    }

    /// Every data buffer, writable at once (element `i` is argument `3 + i`), for a kernel
    /// that reads some while writing others without copying.
    pub fn args_mut(&mut self) -> &mut [&'a mut [u8]] {
        &mut self.data
    }

    /// Argument `index` read as little-endian f32 values.
    pub fn read_f32(&self, index: u32) -> Result<Vec<f32>, String> {
        let b = self.arg(index)?;
        if b.len() % 4 != 0 {
            return Err(format!(
                "argument {index}: {} bytes is not a whole number of f32",
                b.len()
            ));
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Writes `values` as little-endian f32 into argument `index`, which they must fill.
    pub fn write_f32(&mut self, index: u32, values: &[f32]) -> Result<(), String> {
        let b = self.arg_mut(index)?;
        if b.len() != values.len() * 4 {
            return Err(format!(
                "argument {index}: {} f32 values do not fill {} bytes",
                values.len(),
                b.len()
            ));
        }
        for (d, v) in b.chunks_exact_mut(4).zip(values) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
}

/// A computing hook: called for each executed run with its [`RunInvocation`]; an `Err`
/// makes the run end in the error state. It runs with the double locked, so it must not
/// call the shim.
pub type KernelHook = Arc<dyn Fn(&mut RunInvocation<'_>) -> Result<(), String> + Send + Sync>;

struct BoState {
    /// The host and device copies; empty for a sub-buffer, whose bytes are its parent's.
    host: Box<[u8]>,
    dev: Box<[u8]>,
    /// A sub-buffer's parent and its offset there.
    sub: Option<(u64, usize)>,
    size: usize,
}

#[derive(Clone, Copy)]
enum ArgVal {
    U32(u32),
    U64(u64),
    Bo(u64),
}

struct RunObj {
    kernel: u64,
    args: BTreeMap<u32, ArgVal>,
    pending: Option<RunState>,
}

struct XclbinObj {
    path: PathBuf,
    /// `None`: a dry-mode xclbin with no declared kernels, which accepts any name.
    kernels: Option<Vec<(String, u32)>>,
}

struct RunlistObj {
    ctx: u64,
    runs: Vec<u64>,
    executing: bool,
    outcome: Option<RunlistState>,
}

#[derive(Default)]
struct State {
    next: u64,
    log: Vec<Call>,
    counts: HashMap<Step, usize>,
    failures: Vec<(Step, Option<usize>, Failure)>,
    lost: bool,
    devices: HashMap<u64, ()>,
    xclbins: HashMap<u64, XclbinObj>,
    registered: HashMap<(u64, u64), ()>,
    ctxs: HashMap<u64, (u64, u64)>,
    kernels: HashMap<u64, (u64, String)>,
    bos: HashMap<u64, BoState>,
    runs: HashMap<u64, RunObj>,
    violations: Vec<String>,
    hook: Option<RunHook>,
    runs_started: usize,
    runlists: HashMap<u64, RunlistObj>,
    /// Run -> the runlist it is in.
    in_list: HashMap<u64, u64>,
    any_hook: Option<KernelHook>,
    kernel_hooks: HashMap<(PathBuf, String), KernelHook>,
    run_hooks: HashMap<u64, KernelHook>,
    declared: HashMap<PathBuf, Vec<(String, u32)>>,
    allocated: usize,
    keep_log: bool,
}

impl State {
    /// The buffer that owns a buffer's bytes, the buffer's offset in it, and its size.
    fn resolve(&self, bo: u64, call: &'static str) -> Result<(u64, usize, usize), ShimError> {
        let b = self
            .bos
            .get(&bo)
            .ok_or_else(|| State::bad(call, "invalid buffer handle"))?;
        match b.sub {
            None => Ok((bo, 0, b.size)),
            Some((parent, offset)) => {
                let (root, base, _) = self.resolve(parent, call)?;
                Ok((root, base + offset, b.size))
            }
        }
    }

    /// The owning buffer and the absolute range of `size` bytes at `offset` of `bo`.
    fn span(
        &mut self,
        bo: u64,
        offset: usize,
        size: usize,
        call: &'static str,
    ) -> Result<(&mut BoState, usize, usize), ShimError> {
        let (root, base, len) = self.resolve(bo, call)?;
        let end = offset.checked_add(size).filter(|&e| e <= len);
        let Some(end) = end else {
            return Err(State::bad(call, "size + offset exceed the buffer"));
        };
        let r = self.bos.get_mut(&root).expect("resolved");
        Ok((r, base + offset, base + end))
    }

    fn handle(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Counts the call and applies any injected failure.
    fn gate(&mut self, step: Step, call: &'static str) -> Result<Option<RunState>, ShimError> {
        let n = *self.counts.get(&step).unwrap_or(&0);
        self.counts.insert(step, n + 1);
        if self.lost {
            return Err(ShimError::new(call, ShimErrorKind::Xrt, DEVICE_LOST));
        }
        let hit = self
            .failures
            .iter()
            .find(|(s, nth, _)| *s == step && nth.is_none_or(|k| k == n))
            .map(|(_, _, f)| f.clone());
        match hit {
            None => Ok(None),
            Some(Failure::Error { kind, message }) => Err(ShimError::new(call, kind, message)),
            Some(Failure::State(s)) if matches!(step, Step::RunWait | Step::RunlistWait) => {
                Ok(Some(s))
            }
            Some(Failure::State(s)) => Err(ShimError::new(
                call,
                ShimErrorKind::Xrt,
                format!("state {s}"),
            )),
            Some(Failure::DeviceLost) => {
                self.lost = true;
                Err(ShimError::new(call, ShimErrorKind::Xrt, DEVICE_LOST))
            }
        }
    }

    fn bad(call: &'static str, what: &str) -> ShimError {
        ShimError::new(call, ShimErrorKind::Argument, what.to_string())
    }

    /// Executes run `run` (for `call`): checks its arguments against the mlir-aie calling
    /// convention, then computes it through the hook that applies, if any.
    fn execute_run(&mut self, run: u64, call: &'static str) -> Result<RunState, ShimError> {
        let st = self;
        let r = st
            .runs
            .get(&run)
            .ok_or_else(|| State::bad(call, "invalid run handle"))?;
        // The mlir-aie calling convention: opcode, instruction buffer, word count, data buffers.
        let opcode = match r.args.get(&0) {
            Some(ArgVal::U32(v)) => *v,
            _ => return Err(State::bad(call, "argument 0 (opcode) is not a u32")),
        };
        let instr_bo = match r.args.get(&1) {
            Some(ArgVal::Bo(b)) => *b,
            _ => {
                return Err(State::bad(
                    call,
                    "argument 1 (instructions) is not a buffer",
                ))
            }
        };
        let words = match r.args.get(&2) {
            Some(ArgVal::U32(v)) => *v as usize,
            Some(ArgVal::U64(v)) => {
                return Err(State::bad(
                    call,
                    &format!(
                        "argument 2 (instruction count) is a u64 ({v}); the kernel takes a u32"
                    ),
                ))
            }
            _ => {
                return Err(State::bad(
                    call,
                    "argument 2 (instruction count) is not set",
                ))
            }
        };
        let mut data = Vec::new();
        for (i, a) in r.args.range(3..) {
            match a {
                ArgVal::Bo(b) if *i as usize == 3 + data.len() => data.push(*b),
                _ => {
                    return Err(State::bad(
                        call,
                        &format!("argument {i} is not the next data buffer"),
                    ))
                }
            }
        }
        let (_, kernel_name) = st
            .kernels
            .get(&r.kernel)
            .cloned()
            .ok_or_else(|| State::bad(call, "kernel was closed"))?;
        let ctx = st.kernels[&r.kernel].0;
        let xclbin_path = st
            .ctxs
            .get(&ctx)
            .and_then(|&(_, x)| st.xclbins.get(&x))
            .map(|x| x.path.clone())
            .unwrap_or_default();
        let instr_bytes = &st
            .bos
            .get(&instr_bo)
            .ok_or_else(|| State::bad(call, "instruction buffer was freed"))?
            .dev;
        if words * 4 > instr_bytes.len() {
            return Err(State::bad(
                call,
                "instruction count exceeds the instruction buffer",
            ));
        }
        let instructions: Vec<u32> = instr_bytes[..words * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Take the device copies out so the hook can borrow them all mutably: a buffer's
        // own copy is moved out, a sub-buffer's range of its parent copied (sub-buffers of
        // one arena are separate slices of it).
        let mut taken: Vec<(u64, Option<usize>, Box<[u8]>)> = Vec::new();
        for b in &data {
            let resolved = st.resolve(*b, call);
            let Ok((root, base, size)) = resolved else {
                put_back(st, taken);
                return Err(State::bad(call, "data buffer was freed"));
            };
            let owner = st.bos.get_mut(&root).expect("resolved");
            if root == *b {
                taken.push((root, None, std::mem::take(&mut owner.dev)));
            } else {
                let range = owner.dev[base..base + size].to_vec().into_boxed_slice();
                taken.push((root, Some(base), range));
            }
        }
        let kernel_hook = st
            .run_hooks
            .get(&run)
            .or_else(|| {
                st.kernel_hooks
                    .get(&(xclbin_path.clone(), kernel_name.clone()))
            })
            .or(st.any_hook.as_ref())
            .cloned();
        let result = match (kernel_hook, st.hook.as_mut()) {
            (Some(hook), _) => {
                let mut inv = RunInvocation {
                    run: RunHandle(run),
                    xclbin: &xclbin_path,
                    kernel: &kernel_name,
                    opcode,
                    instructions: &instructions,
                    data: taken.iter_mut().map(|(_, _, d)| &mut d[..]).collect(),
                };
                hook(&mut inv)
            }
            (None, Some(hook)) => {
                let mut view = RunView {
                    xclbin: &xclbin_path,
                    kernel: &kernel_name,
                    opcode,
                    instructions: &instructions,
                    buffers: taken.iter_mut().map(|(_, _, d)| &mut d[..]).collect(),
                };
                hook(&mut view)
            }
            (None, None) => Ok(()),
        };
        put_back(st, taken);
        st.runs_started += 1;
        Ok(match result {
            Ok(()) => RunState::Completed,
            Err(msg) => {
                tracing::debug!("recording double: run hook failed: {msg}");
                RunState::Error
            }
        })
    }
}

/// Returns the device copies a run took out (whole buffers moved back, sub-buffer ranges
/// copied back into their parents).
fn put_back(st: &mut State, taken: Vec<(u64, Option<usize>, Box<[u8]>)>) {
    for (h, base, d) in taken {
        let owner = st.bos.get_mut(&h).expect("taken buffer exists");
        match base {
            None => owner.dev = d,
            Some(b) => owner.dev[b..b + d.len()].copy_from_slice(&d),
        }
    }
}

/// The recording test double of the XRT shim.
pub struct RecordingShim {
    state: Mutex<State>,
    hwctx: bool,
    runlist: bool,
    dry: bool,
    memory_cap: usize,
    one_data_group: bool,
    device_name: String,
}

impl Default for RecordingShim {
    fn default() -> Self {
        RecordingShim::new()
    }
}

impl RecordingShim {
    /// A double of a working NPU ("NPU Phoenix") with XRT >= 2.14.
    pub fn new() -> RecordingShim {
        RecordingShim {
            state: Mutex::new(State {
                keep_log: true,
                ..State::default()
            }),
            hwctx: true,
            runlist: true,
            dry: false,
            memory_cap: DEFAULT_MEMORY_CAP,
            one_data_group: false,
            device_name: "NPU Phoenix".into(),
        }
    }

    /// A double in dry mode: xclbin paths need not exist (declared kernels or any name are
    /// accepted), and runs compute through the installed [`KernelHook`]s.
    pub fn dry() -> RecordingShim {
        RecordingShim {
            dry: true,
            ..RecordingShim::new()
        }
    }

    /// The same double without runlists (XRT 2.14 to 2.17), so callers chain runs.
    pub fn without_runlist(self) -> RecordingShim {
        RecordingShim {
            runlist: false,
            ..self
        }
    }

    /// The same double refusing allocations that would take the bytes of all live buffers
    /// over `bytes`.
    pub fn with_memory_cap(self, bytes: usize) -> RecordingShim {
        RecordingShim {
            memory_cap: bytes,
            ..self
        }
    }

    /// The same double giving every data argument (3 and up) one memory group,
    /// `GROUP_ID_BASE + 3`, as a device whose kernels keep all their data in one memory
    /// does; by default each argument has a group of its own.
    pub fn with_one_data_group(self) -> RecordingShim {
        RecordingShim {
            one_data_group: true,
            ..self
        }
    }

    /// The same double keeping ([`RecordingShim::calls`]) or not keeping its call list;
    /// a long dry run turns it off to stay within memory.
    pub fn with_call_list(self, keep: bool) -> RecordingShim {
        self.lock().keep_log = keep;
        self
    }

    /// Whether this is a dry-mode double.
    pub fn is_dry(&self) -> bool {
        self.dry
    }

    /// Declares the kernels (name, argument count) of the xclbin at `path`, used when the
    /// file is not a readable fake xclbin (dry mode).
    pub fn declare_xclbin(&self, path: &Path, kernels: &[(&str, u32)]) {
        self.lock().declared.insert(
            path.to_path_buf(),
            kernels.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        );
    }

    /// Declares every xclbin of `manifest` with the kernels its entries name and the
    /// argument count they need (3 control arguments + their data buffers).
    pub fn declare_manifest(&self, manifest: &Manifest) {
        let mut s = self.lock();
        for e in manifest.entries() {
            let args = crate::FIRST_DATA_ARG + e.args.len() as u32;
            let ks = s.declared.entry(e.xclbin.clone()).or_default();
            match ks.iter_mut().find(|(n, _)| *n == e.xclbin_kernel) {
                Some((_, a)) => *a = (*a).max(args),
                None => ks.push((e.xclbin_kernel.clone(), args)),
            }
        }
    }

    /// Computes every run that has no more specific hook with `hook`.
    pub fn set_run_hook(
        &self,
        hook: impl Fn(&mut RunInvocation<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().any_hook = Some(Arc::new(hook));
    }

    /// Computes the runs of kernel `kernel` of the xclbin at `xclbin` with `hook` (before
    /// [`RecordingShim::set_run_hook`]'s).
    pub fn set_kernel_hook(
        &self,
        xclbin: &Path,
        kernel: &str,
        hook: impl Fn(&mut RunInvocation<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock()
            .kernel_hooks
            .insert((xclbin.to_path_buf(), kernel.to_string()), Arc::new(hook));
    }

    /// Computes run `run` with `hook` (before any kernel or global hook); forgotten when
    /// the run is freed.
    pub fn set_hook_for_run(
        &self,
        run: RunHandle,
        hook: impl Fn(&mut RunInvocation<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().run_hooks.insert(run.0, Arc::new(hook));
    }

    /// Removes every hook (runs then complete and change nothing).
    pub fn clear_hooks(&self) {
        let mut s = self.lock();
        s.any_hook = None;
        s.kernel_hooks.clear();
        s.run_hooks.clear();
        s.hook = None;
    }

    /// Bytes of all live buffers (what the memory cap bounds).
    pub fn allocated_bytes(&self) -> usize {
        self.lock().allocated
    }

    /// Runlists still alive.
    pub fn live_runlists(&self) -> usize {
        self.lock().runlists.len()
    }

    /// A double of a build against XRT 2.13 (no hw_context).
    pub fn without_hwctx() -> RecordingShim {
        RecordingShim {
            hwctx: false,
            ..RecordingShim::new()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the `nth` call (0-based) of `step` fail.
    pub fn fail_nth(&self, step: Step, nth: usize, failure: Failure) {
        self.lock().failures.push((step, Some(nth), failure));
    }

    /// Makes every call of `step` fail.
    pub fn fail_always(&self, step: Step, failure: Failure) {
        self.lock().failures.push((step, None, failure));
    }

    /// Runs `hook` for every started run (without one, runs complete and change nothing).
    pub fn on_run(&self, hook: RunHook) {
        self.lock().hook = Some(hook);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().log.clone()
    }

    /// Forgets the calls logged so far (objects stay alive).
    pub fn clear_calls(&self) {
        self.lock().log.clear();
    }

    /// Destruction-order and handle violations seen (freeing a parent before its children,
    /// using a freed handle, syncing out of range, ...). Empty when all is well.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Objects still alive (devices, xclbins, contexts, kernels, buffers, runs).
    pub fn live_objects(&self) -> usize {
        let s = self.lock();
        s.devices.len()
            + s.xclbins.len()
            + s.ctxs.len()
            + s.kernels.len()
            + s.bos.len()
            + s.runs.len()
            + s.runlists.len()
    }

    /// Runs started so far.
    pub fn runs_started(&self) -> usize {
        self.lock().runs_started
    }

    fn record(&self, call: Call) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        if s.keep_log {
            s.log.push(call);
        }
        s
    }
}

fn parse_fake_xclbin(path: &Path) -> Result<Vec<(String, u32)>, String> {
    let bytes = std::fs::read(path)
        .map_err(|_| format!("Failed to open file '{}' for reading", path.display()))?;
    if bytes.len() < XCLBIN_MAGIC.len() || &bytes[..XCLBIN_MAGIC.len()] != XCLBIN_MAGIC {
        return Err("Invalid xclbin".into());
    }
    let text = std::str::from_utf8(&bytes[XCLBIN_MAGIC.len()..])
        .map_err(|_| "Invalid xclbin".to_string())?;
    let mut kernels = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (name, n) = line.split_once(':').ok_or("Invalid xclbin")?;
        kernels.push((
            name.to_string(),
            n.parse().map_err(|_| "Invalid xclbin".to_string())?,
        ));
    }
    Ok(kernels)
}

impl ShimApi for RecordingShim {
    fn describe(&self) -> String {
        "recording double".into()
    }

    fn xrt_version(&self) -> String {
        match (self.hwctx, self.runlist) {
            (false, _) => "2.13.0".into(),
            (true, false) => "2.17.0".into(),
            (true, true) => "2.18.0".into(),
        }
    }

    fn has_hwctx(&self) -> bool {
        self.hwctx
    }

    fn has_runlist(&self) -> bool {
        self.hwctx && self.runlist
    }

    fn device_open(&self, index: u32) -> Result<DeviceHandle, ShimError> {
        let mut s = self.record(Call::DeviceOpen { index });
        s.gate(Step::DeviceOpen, "npu_device_open")?;
        if index != 0 {
            return Err(ShimError::new(
                "npu_device_open",
                ShimErrorKind::Xrt,
                format!("No such device with index '{index}'"),
            ));
        }
        let h = s.handle();
        s.devices.insert(h, ());
        Ok(DeviceHandle(h))
    }

    fn device_name(&self, dev: DeviceHandle) -> Result<String, ShimError> {
        let mut s = self.record(Call::DeviceName { dev: dev.0 });
        s.gate(Step::DeviceName, "npu_device_name")?;
        if !s.devices.contains_key(&dev.0) {
            return Err(State::bad("npu_device_name", "invalid device handle"));
        }
        Ok(self.device_name.clone())
    }

    fn device_close(&self, dev: DeviceHandle) {
        let mut s = self.record(Call::DeviceClose { dev: dev.0 });
        if s.devices.remove(&dev.0).is_none() {
            s.violations
                .push(format!("device_close of unknown device {}", dev.0));
        }
        let left = s.ctxs.len() + s.kernels.len() + s.bos.len() + s.runs.len();
        if left > 0 {
            s.violations.push(format!(
                "device {} closed with {left} objects still alive",
                dev.0
            ));
        }
    }

    fn xclbin_load(&self, path: &Path) -> Result<XclbinHandle, ShimError> {
        let mut s = self.record(Call::XclbinLoad {
            path: path.to_path_buf(),
        });
        s.gate(Step::XclbinLoad, "npu_xclbin_load")?;
        let kernels = match parse_fake_xclbin(path) {
            Ok(k) => Some(k),
            // A dry run never reads kernel binaries: any path is accepted.
            Err(_) if self.dry => s.declared.get(path).cloned(),
            Err(m) => match s.declared.get(path) {
                Some(k) => Some(k.clone()),
                None => return Err(ShimError::new("npu_xclbin_load", ShimErrorKind::Xrt, m)),
            },
        };
        let h = s.handle();
        s.xclbins.insert(
            h,
            XclbinObj {
                path: path.to_path_buf(),
                kernels,
            },
        );
        Ok(XclbinHandle(h))
    }

    fn xclbin_kernel_names(&self, xclbin: XclbinHandle) -> Result<Vec<String>, ShimError> {
        let mut s = self.record(Call::XclbinKernelNames { xclbin: xclbin.0 });
        s.gate(Step::XclbinKernelNames, "npu_xclbin_kernel_names")?;
        let x = s
            .xclbins
            .get(&xclbin.0)
            .ok_or_else(|| State::bad("npu_xclbin_kernel_names", "invalid xclbin handle"))?;
        Ok(x.kernels.iter().flatten().map(|(n, _)| n.clone()).collect())
    }

    fn xclbin_num_args(&self, xclbin: XclbinHandle, kernel: &str) -> Result<u32, ShimError> {
        let mut s = self.record(Call::XclbinNumArgs {
            xclbin: xclbin.0,
            kernel: kernel.to_string(),
        });
        s.gate(Step::XclbinNumArgs, "npu_xclbin_num_args")?;
        let x = s
            .xclbins
            .get(&xclbin.0)
            .ok_or_else(|| State::bad("npu_xclbin_num_args", "invalid xclbin handle"))?;
        let Some(kernels) = &x.kernels else {
            return Ok(PERMISSIVE_NUM_ARGS);
        };
        kernels
            .iter()
            .find(|(n, _)| n == kernel)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                State::bad(
                    "npu_xclbin_num_args",
                    &format!("kernel '{kernel}' is not in the xclbin"),
                )
            })
    }

    fn xclbin_free(&self, xclbin: XclbinHandle) {
        let mut s = self.record(Call::XclbinFree { xclbin: xclbin.0 });
        if s.xclbins.remove(&xclbin.0).is_none() {
            s.violations
                .push(format!("xclbin_free of unknown xclbin {}", xclbin.0));
        }
        if s.ctxs.values().any(|&(_, x)| x == xclbin.0) {
            s.violations.push(format!(
                "xclbin {} freed while a hw_context uses it",
                xclbin.0
            ));
        }
    }

    fn register_xclbin(&self, dev: DeviceHandle, xclbin: XclbinHandle) -> Result<(), ShimError> {
        let mut s = self.record(Call::RegisterXclbin {
            dev: dev.0,
            xclbin: xclbin.0,
        });
        if !self.hwctx {
            return Err(ShimError::new(
                "npu_register_xclbin",
                ShimErrorKind::Unsupported,
                crate::no_hwctx_message(&self.xrt_version()),
            ));
        }
        s.gate(Step::RegisterXclbin, "npu_register_xclbin")?;
        if !s.devices.contains_key(&dev.0) || !s.xclbins.contains_key(&xclbin.0) {
            return Err(State::bad("npu_register_xclbin", "invalid handle"));
        }
        s.registered.insert((dev.0, xclbin.0), ());
        Ok(())
    }

    fn hwctx_create(
        &self,
        dev: DeviceHandle,
        xclbin: XclbinHandle,
    ) -> Result<HwCtxHandle, ShimError> {
        let mut s = self.record(Call::HwctxCreate {
            dev: dev.0,
            xclbin: xclbin.0,
        });
        if !self.hwctx {
            return Err(ShimError::new(
                "npu_hwctx_create",
                ShimErrorKind::Unsupported,
                crate::no_hwctx_message(&self.xrt_version()),
            ));
        }
        s.gate(Step::HwctxCreate, "npu_hwctx_create")?;
        if !s.registered.contains_key(&(dev.0, xclbin.0)) {
            return Err(ShimError::new(
                "npu_hwctx_create",
                ShimErrorKind::Xrt,
                "xclbin is not registered with the device",
            ));
        }
        let h = s.handle();
        s.ctxs.insert(h, (dev.0, xclbin.0));
        Ok(HwCtxHandle(h))
    }

    fn hwctx_destroy(&self, ctx: HwCtxHandle) {
        let mut s = self.record(Call::HwctxDestroy { ctx: ctx.0 });
        if s.ctxs.remove(&ctx.0).is_none() {
            s.violations
                .push(format!("hwctx_destroy of unknown context {}", ctx.0));
        }
        if s.kernels.values().any(|&(c, _)| c == ctx.0) {
            s.violations.push(format!(
                "context {} destroyed while a kernel of it is alive",
                ctx.0
            ));
        }
        if s.runlists.values().any(|l| l.ctx == ctx.0) {
            s.violations.push(format!(
                "context {} destroyed while a runlist of it is alive",
                ctx.0
            ));
        }
    }

    fn kernel_open(&self, ctx: HwCtxHandle, name: &str) -> Result<KernelHandle, ShimError> {
        let mut s = self.record(Call::KernelOpen {
            ctx: ctx.0,
            name: name.to_string(),
        });
        s.gate(Step::KernelOpen, "npu_kernel_open")?;
        let &(_, x) = s
            .ctxs
            .get(&ctx.0)
            .ok_or_else(|| State::bad("npu_kernel_open", "invalid context handle"))?;
        let known = s.xclbins.get(&x).is_some_and(|xb| {
            xb.kernels
                .as_ref()
                .is_none_or(|ks| ks.iter().any(|(n, _)| n == name))
        });
        if !known {
            return Err(ShimError::new(
                "npu_kernel_open",
                ShimErrorKind::Xrt,
                format!("No such compute unit '{name}'"),
            ));
        }
        let h = s.handle();
        s.kernels.insert(h, (ctx.0, name.to_string()));
        Ok(KernelHandle(h))
    }

    fn kernel_group_id(&self, kernel: KernelHandle, argno: u32) -> Result<u32, ShimError> {
        let mut s = self.record(Call::KernelGroupId {
            kernel: kernel.0,
            argno,
        });
        s.gate(Step::KernelGroupId, "npu_kernel_group_id")?;
        if !s.kernels.contains_key(&kernel.0) {
            return Err(State::bad("npu_kernel_group_id", "invalid kernel handle"));
        }
        if self.one_data_group && argno >= 3 {
            return Ok(GROUP_ID_BASE + 3);
        }
        Ok(GROUP_ID_BASE + argno)
    }

    fn kernel_close(&self, kernel: KernelHandle) {
        let mut s = self.record(Call::KernelClose { kernel: kernel.0 });
        if s.kernels.remove(&kernel.0).is_none() {
            s.violations
                .push(format!("kernel_close of unknown kernel {}", kernel.0));
        }
        if s.runs.values().any(|r| r.kernel == kernel.0) {
            s.violations.push(format!(
                "kernel {} closed while a run of it is alive",
                kernel.0
            ));
        }
    }

    fn bo_alloc(
        &self,
        dev: DeviceHandle,
        bytes: usize,
        flags: BoFlags,
        group: u32,
    ) -> Result<BoHandle, ShimError> {
        let mut s = self.record(Call::BoAlloc {
            dev: dev.0,
            bytes,
            flags,
            group,
        });
        s.gate(Step::BoAlloc, "npu_bo_alloc")?;
        if !s.devices.contains_key(&dev.0) {
            return Err(State::bad("npu_bo_alloc", "invalid device handle"));
        }
        if bytes == 0 {
            return Err(State::bad("npu_bo_alloc", "zero size"));
        }
        let total = s
            .allocated
            .checked_add(bytes)
            .filter(|&t| t <= self.memory_cap);
        let Some(total) = total else {
            return Err(ShimError::new(
                "npu_bo_alloc",
                ShimErrorKind::Xrt,
                format!(
                    "out of memory: {bytes} more bytes would exceed the double's cap of {} bytes ({} allocated)",
                    self.memory_cap, s.allocated
                ),
            ));
        };
        s.allocated = total;
        let h = s.handle();
        s.bos.insert(
            h,
            BoState {
                host: vec![0u8; bytes].into_boxed_slice(),
                dev: vec![0u8; bytes].into_boxed_slice(),
                sub: None,
                size: bytes,
            },
        );
        Ok(BoHandle(h))
    }

    fn bo_sub(&self, parent: BoHandle, size: usize, offset: usize) -> Result<BoHandle, ShimError> {
        let mut s = self.record(Call::BoSub {
            parent: parent.0,
            size,
            offset,
        });
        s.gate(Step::BoSub, "npu_bo_sub")?;
        if size == 0 {
            return Err(State::bad("npu_bo_sub", "zero size"));
        }
        s.span(parent.0, offset, size, "npu_bo_sub")?;
        let h = s.handle();
        s.bos.insert(
            h,
            BoState {
                host: Box::default(),
                dev: Box::default(),
                sub: Some((parent.0, offset)),
                size,
            },
        );
        Ok(BoHandle(h))
    }

    fn bo_map(&self, bo: BoHandle) -> Result<*mut u8, ShimError> {
        let mut s = self.record(Call::BoMap { bo: bo.0 });
        s.gate(Step::BoMap, "npu_bo_map")?;
        let (root, start, _) = s.span(bo.0, 0, 0, "npu_bo_map")?;
        // The boxed slice never moves while the buffer lives, so the pointer stays valid.
        Ok(root.host[start..].as_mut_ptr())
    }

    fn bo_sync(
        &self,
        bo: BoHandle,
        dir: SyncDir,
        size: usize,
        offset: usize,
    ) -> Result<(), ShimError> {
        let mut s = self.record(Call::BoSync {
            bo: bo.0,
            dir,
            size,
            offset,
        });
        s.gate(Step::BoSync, "npu_bo_sync")?;
        let (b, offset, end) = s.span(bo.0, offset, size, "npu_bo_sync")?;
        match dir {
            SyncDir::ToDevice => b.dev[offset..end].copy_from_slice(&b.host[offset..end]),
            SyncDir::FromDevice => b.host[offset..end].copy_from_slice(&b.dev[offset..end]),
        }
        Ok(())
    }

    fn bo_write(&self, bo: BoHandle, offset: usize, data: &[u8]) -> Result<(), ShimError> {
        let mut s = self.record(Call::BoWrite {
            bo: bo.0,
            offset,
            bytes: data.len(),
        });
        s.gate(Step::BoWrite, "npu_bo_write")?;
        let (b, offset, end) = s.span(bo.0, offset, data.len(), "npu_bo_write")?;
        b.host[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn bo_read(&self, bo: BoHandle, offset: usize, out: &mut [u8]) -> Result<(), ShimError> {
        let mut s = self.record(Call::BoRead {
            bo: bo.0,
            offset,
            bytes: out.len(),
        });
        s.gate(Step::BoRead, "npu_bo_read")?;
        let (b, offset, end) = s.span(bo.0, offset, out.len(), "npu_bo_read")?;
        out.copy_from_slice(&b.host[offset..end]);
        Ok(())
    }

    fn bo_free(&self, bo: BoHandle) {
        let mut s = self.record(Call::BoFree { bo: bo.0 });
        match s.bos.remove(&bo.0) {
            Some(b) => s.allocated = s.allocated.saturating_sub(b.host.len()),
            None => s
                .violations
                .push(format!("bo_free of unknown buffer {}", bo.0)),
        }
        if s.bos
            .values()
            .any(|b| matches!(b.sub, Some((p, _)) if p == bo.0))
        {
            s.violations
                .push(format!("buffer {} freed before its sub-buffers", bo.0));
        }
        let used = s.runs.values().any(|r| {
            r.args
                .values()
                .any(|a| matches!(a, ArgVal::Bo(b) if *b == bo.0))
        });
        if used {
            s.violations.push(format!(
                "buffer {} freed while a run still refers to it",
                bo.0
            ));
        }
    }

    fn run_create(&self, kernel: KernelHandle) -> Result<RunHandle, ShimError> {
        let mut s = self.record(Call::RunCreate { kernel: kernel.0 });
        s.gate(Step::RunCreate, "npu_run_create")?;
        if !s.kernels.contains_key(&kernel.0) {
            return Err(State::bad("npu_run_create", "invalid kernel handle"));
        }
        let h = s.handle();
        s.runs.insert(
            h,
            RunObj {
                kernel: kernel.0,
                args: BTreeMap::new(),
                pending: None,
            },
        );
        Ok(RunHandle(h))
    }

    fn run_set_arg_u32(&self, run: RunHandle, index: u32, value: u32) -> Result<(), ShimError> {
        let mut s = self.record(Call::RunSetArgU32 {
            run: run.0,
            index,
            value,
        });
        s.gate(Step::RunSetArg, "npu_run_set_arg_u32")?;
        let r = s
            .runs
            .get_mut(&run.0)
            .ok_or_else(|| State::bad("npu_run_set_arg_u32", "invalid run handle"))?;
        r.args.insert(index, ArgVal::U32(value));
        Ok(())
    }

    fn run_set_arg_u64(&self, run: RunHandle, index: u32, value: u64) -> Result<(), ShimError> {
        let mut s = self.record(Call::RunSetArgU64 {
            run: run.0,
            index,
            value,
        });
        s.gate(Step::RunSetArg, "npu_run_set_arg_u64")?;
        let r = s
            .runs
            .get_mut(&run.0)
            .ok_or_else(|| State::bad("npu_run_set_arg_u64", "invalid run handle"))?;
        r.args.insert(index, ArgVal::U64(value));
        Ok(())
    }

    fn run_set_arg_bo(&self, run: RunHandle, index: u32, bo: BoHandle) -> Result<(), ShimError> {
        let mut s = self.record(Call::RunSetArgBo {
            run: run.0,
            index,
            bo: bo.0,
        });
        s.gate(Step::RunSetArg, "npu_run_set_arg_bo")?;
        if !s.bos.contains_key(&bo.0) {
            return Err(State::bad("npu_run_set_arg_bo", "invalid buffer handle"));
        }
        let r = s
            .runs
            .get_mut(&run.0)
            .ok_or_else(|| State::bad("npu_run_set_arg_bo", "invalid run handle"))?;
        r.args.insert(index, ArgVal::Bo(bo.0));
        Ok(())
    }

    fn run_start(&self, run: RunHandle) -> Result<(), ShimError> {
        let mut s = self.record(Call::RunStart { run: run.0 });
        s.gate(Step::RunStart, "npu_run_start")?;
        if let Some(&list) = s.in_list.get(&run.0) {
            s.violations.push(format!(
                "run {} started on its own while in runlist {list}",
                run.0
            ));
            return Err(State::bad(
                "npu_run_start",
                &format!("run is part of runlist {list}: execute the list instead"),
            ));
        }
        let state = s.execute_run(run.0, "npu_run_start")?;
        s.runs.get_mut(&run.0).expect("run exists").pending = Some(state);
        Ok(())
    }

    fn run_wait(&self, run: RunHandle, timeout_ms: u32) -> Result<RunState, ShimError> {
        let mut s = self.record(Call::RunWait {
            run: run.0,
            timeout_ms,
        });
        let injected = s.gate(Step::RunWait, "npu_run_wait")?;
        let r = s
            .runs
            .get_mut(&run.0)
            .ok_or_else(|| State::bad("npu_run_wait", "invalid run handle"))?;
        let state = r.pending.take().unwrap_or(RunState::Other(1));
        Ok(injected.unwrap_or(state))
    }

    fn run_free(&self, run: RunHandle) {
        let mut s = self.record(Call::RunFree { run: run.0 });
        if s.runs.remove(&run.0).is_none() {
            s.violations
                .push(format!("run_free of unknown run {}", run.0));
        }
        if let Some(list) = s.in_list.get(&run.0).copied() {
            s.violations
                .push(format!("run {} freed while in runlist {list}", run.0));
        }
        s.run_hooks.remove(&run.0);
    }

    fn runlist_create(&self, ctx: HwCtxHandle) -> Result<RunlistHandle, ShimError> {
        let mut s = self.record(Call::RunlistCreate { ctx: ctx.0 });
        if !self.has_runlist() {
            return Err(ShimError::new(
                "npu_runlist_create",
                ShimErrorKind::Unsupported,
                no_runlist_message(&self.xrt_version()),
            ));
        }
        s.gate(Step::RunlistCreate, "npu_runlist_create")?;
        if !s.ctxs.contains_key(&ctx.0) {
            return Err(State::bad("npu_runlist_create", "invalid context handle"));
        }
        let h = s.handle();
        s.runlists.insert(
            h,
            RunlistObj {
                ctx: ctx.0,
                runs: Vec::new(),
                executing: false,
                outcome: None,
            },
        );
        Ok(RunlistHandle(h))
    }

    fn runlist_add(&self, list: RunlistHandle, run: RunHandle) -> Result<(), ShimError> {
        const CALL: &str = "npu_runlist_add";
        let mut s = self.record(Call::RunlistAdd {
            list: list.0,
            run: run.0,
        });
        s.gate(Step::RunlistAdd, CALL)?;
        let run_ctx = s
            .runs
            .get(&run.0)
            .and_then(|r| s.kernels.get(&r.kernel))
            .map(|&(c, _)| c)
            .ok_or_else(|| State::bad(CALL, "invalid run handle"))?;
        if let Some(other) = s.in_list.get(&run.0) {
            return Err(ShimError::new(
                CALL,
                ShimErrorKind::Xrt,
                format!("run is already part of runlist {other}"),
            ));
        }
        let l = s
            .runlists
            .get_mut(&list.0)
            .ok_or_else(|| State::bad(CALL, "invalid runlist handle"))?;
        if l.ctx != run_ctx {
            return Err(ShimError::new(
                CALL,
                ShimErrorKind::Xrt,
                "the run's kernel is not of the runlist's hw_context",
            ));
        }
        if l.executing {
            return Err(ShimError::new(
                CALL,
                ShimErrorKind::Xrt,
                "runlist is executing",
            ));
        }
        l.runs.push(run.0);
        s.in_list.insert(run.0, list.0);
        Ok(())
    }

    fn runlist_submit(&self, list: RunlistHandle) -> Result<(), ShimError> {
        const CALL: &str = "npu_runlist_execute";
        let mut s = self.record(Call::RunlistSubmit { list: list.0 });
        s.gate(Step::RunlistSubmit, CALL)?;
        let l = s
            .runlists
            .get(&list.0)
            .ok_or_else(|| State::bad(CALL, "invalid runlist handle"))?;
        if l.executing {
            return Err(ShimError::new(
                CALL,
                ShimErrorKind::Xrt,
                "runlist is already executing",
            ));
        }
        let runs = l.runs.clone();
        // In order; the first failing run stops the list, as the chained command does.
        let mut outcome = RunlistState::Completed;
        for (i, r) in runs.into_iter().enumerate() {
            match s.execute_run(r, CALL)? {
                RunState::Completed => {}
                state => {
                    outcome = RunlistState::Failed {
                        index: Some(i),
                        state,
                    };
                    break;
                }
            }
        }
        let l = s.runlists.get_mut(&list.0).expect("checked above");
        l.executing = true;
        l.outcome = Some(outcome);
        Ok(())
    }

    fn runlist_wait(
        &self,
        list: RunlistHandle,
        timeout_ms: u32,
    ) -> Result<RunlistState, ShimError> {
        const CALL: &str = "npu_runlist_wait";
        let mut s = self.record(Call::RunlistWait {
            list: list.0,
            timeout_ms,
        });
        let injected = s.gate(Step::RunlistWait, CALL)?;
        let l = s
            .runlists
            .get_mut(&list.0)
            .ok_or_else(|| State::bad(CALL, "invalid runlist handle"))?;
        match injected {
            Some(RunState::Timeout) => return Ok(RunlistState::Timeout),
            Some(state) => {
                l.executing = false;
                l.outcome = None;
                return Ok(RunlistState::Failed { index: None, state });
            }
            None => {}
        }
        l.executing = false;
        // A list that is not executing has nothing to wait for (XRT returns at once).
        Ok(l.outcome.take().unwrap_or(RunlistState::Completed))
    }

    fn runlist_reset(&self, list: RunlistHandle) -> Result<(), ShimError> {
        const CALL: &str = "npu_runlist_reset";
        let mut s = self.record(Call::RunlistReset { list: list.0 });
        s.gate(Step::RunlistReset, CALL)?;
        let l = s
            .runlists
            .get_mut(&list.0)
            .ok_or_else(|| State::bad(CALL, "invalid runlist handle"))?;
        if l.executing {
            return Err(ShimError::new(
                CALL,
                ShimErrorKind::Xrt,
                "runlist is executing",
            ));
        }
        let runs = std::mem::take(&mut l.runs);
        l.outcome = None;
        for r in runs {
            s.in_list.remove(&r);
        }
        Ok(())
    }

    fn runlist_free(&self, list: RunlistHandle) {
        let mut s = self.record(Call::RunlistFree { list: list.0 });
        let Some(l) = s.runlists.remove(&list.0) else {
            s.violations
                .push(format!("runlist_free of unknown runlist {}", list.0));
            return;
        };
        if l.executing {
            s.violations.push(format!(
                "runlist {} freed while executing (not waited for)",
                list.0
            ));
        }
        for r in l.runs {
            s.in_list.remove(&r);
        }
    }
}
