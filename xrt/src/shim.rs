//! The boundary to XRT: one trait method per C entry point of `shim/npu_shim.h`, over plain
//! handles and codes. The real implementation ([`crate::XrtShim`], only when built with
//! XRT) calls the C++ shim; [`crate::RecordingShim`] is a test double that logs every call;
//! [`crate::LoggingShim`] wraps any of them and writes every call to a JSONL file.

use std::fmt;
use std::path::Path;

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);
    };
}

handle!(
    /// An open device (`xrt::device`).
    DeviceHandle
);
handle!(
    /// A loaded xclbin file (`xrt::xclbin`).
    XclbinHandle
);
handle!(
    /// A hardware context (`xrt::hw_context`).
    HwCtxHandle
);
handle!(
    /// A kernel opened in a hardware context (`xrt::kernel`).
    KernelHandle
);
handle!(
    /// A buffer object (`xrt::bo`).
    BoHandle
);
handle!(
    /// A run object (`xrt::run`), reused for every dispatch of its kernel.
    RunHandle
);

handle!(
    /// A runlist (`xrt::runlist`): runs of one hardware context submitted together.
    RunlistHandle
);

/// Buffer flags the amdxdna driver accepts (XRT's "normal" flag 0 is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoFlags {
    /// Instruction buffers (`xrt::bo::flags::cacheable`).
    Cacheable,
    /// Data buffers (`xrt::bo::flags::host_only`).
    HostOnly,
}

impl BoFlags {
    /// The shim's value (`NPU_BO_CACHEABLE` / `NPU_BO_HOST_ONLY`).
    pub fn code(self) -> u32 {
        match self {
            BoFlags::Cacheable => 1,
            BoFlags::HostOnly => 2,
        }
    }
}

/// Direction of a buffer sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncDir {
    /// Host writes become visible to the device (`XCL_BO_SYNC_BO_TO_DEVICE`).
    ToDevice,
    /// Device writes become visible to the host (`XCL_BO_SYNC_BO_FROM_DEVICE`).
    FromDevice,
}

impl SyncDir {
    /// The shim's value (`NPU_SYNC_TO_DEVICE` / `NPU_SYNC_FROM_DEVICE`).
    pub fn code(self) -> i32 {
        match self {
            SyncDir::ToDevice => 0,
            SyncDir::FromDevice => 1,
        }
    }
}

/// The `ert_cmd_state` a wait returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// 4: the run completed.
    Completed,
    /// 5: the device reported an error.
    Error,
    /// 6: the run was aborted.
    Abort,
    /// 8: the wait timed out (the run may still be in flight).
    Timeout,
    /// 9: the command timed out and the device did not respond to the reset.
    NoResponse,
    /// Any other state (queued, running, ...): not finished when the wait returned.
    Other(i32),
}

impl RunState {
    /// From the numeric `ert_cmd_state`.
    pub fn from_code(code: i32) -> RunState {
        match code {
            4 => RunState::Completed,
            5 => RunState::Error,
            6 => RunState::Abort,
            8 => RunState::Timeout,
            9 => RunState::NoResponse,
            c => RunState::Other(c),
        }
    }

    /// The numeric `ert_cmd_state`.
    pub fn code(self) -> i32 {
        match self {
            RunState::Completed => 4,
            RunState::Error => 5,
            RunState::Abort => 6,
            RunState::Timeout => 8,
            RunState::NoResponse => 9,
            RunState::Other(c) => c,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunState::Completed => write!(f, "completed (4)"),
            RunState::Error => write!(f, "error (5)"),
            RunState::Abort => write!(f, "abort (6)"),
            RunState::Timeout => write!(f, "timeout (8)"),
            RunState::NoResponse => write!(f, "no response (9)"),
            RunState::Other(c) => write!(f, "unfinished state {c}"),
        }
    }
}

/// How a runlist wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunlistState {
    /// Every run of the list completed.
    Completed,
    /// The wait timed out (the list may still be executing).
    Timeout,
    /// The run at position `index` (0-based, in the order added) ended in `state`; the
    /// runs after it did not execute.
    Failed {
        /// Position of the failing run in the list, when XRT named it.
        index: Option<usize>,
        /// Its state (error, abort, timeout, no response).
        state: RunState,
    },
}

impl RunlistState {
    /// From the shim's (state, failed index) pair.
    pub fn from_codes(state: i32, failed: i64) -> RunlistState {
        match (RunState::from_code(state), failed) {
            (RunState::Completed, _) => RunlistState::Completed,
            (RunState::Timeout, f) if f < 0 => RunlistState::Timeout,
            (state, f) => RunlistState::Failed {
                index: usize::try_from(f).ok(),
                state,
            },
        }
    }
}

impl fmt::Display for RunlistState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunlistState::Completed => write!(f, "completed"),
            RunlistState::Timeout => write!(f, "timed out"),
            RunlistState::Failed {
                index: Some(i),
                state,
            } => write!(f, "run {i} of the list ended in state {state}"),
            RunlistState::Failed { index: None, state } => {
                write!(f, "a run of the list ended in state {state}")
            }
        }
    }
}

/// Why a build without runlists cannot create one.
pub fn no_runlist_message(xrt_version: &str) -> String {
    format!("XRT {xrt_version} has no runlist (needs >= 2.18)")
}

/// Category of a shim failure (the C codes `NPU_SHIM_ERR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShimErrorKind {
    /// XRT threw (message is the exception's text).
    Xrt,
    /// The XRT the shim was built against lacks the entry point.
    Unsupported,
    /// A null handle, empty name, zero size or invalid flag.
    Argument,
    /// A non-standard C++ exception.
    Unknown,
}

impl ShimErrorKind {
    /// From the C code (anything unknown maps to `Unknown`).
    pub fn from_code(code: i32) -> ShimErrorKind {
        match code {
            1 => ShimErrorKind::Xrt,
            2 => ShimErrorKind::Unsupported,
            3 => ShimErrorKind::Argument,
            _ => ShimErrorKind::Unknown,
        }
    }
}

/// A failed shim call: which entry point, the category, and XRT's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {message}")]
pub struct ShimError {
    /// The entry point, e.g. `npu_device_open`.
    pub call: &'static str,
    /// Category.
    pub kind: ShimErrorKind,
    /// The message (an exception's `what()`).
    pub message: String,
}

impl ShimError {
    /// A new error.
    pub fn new(call: &'static str, kind: ShimErrorKind, message: impl Into<String>) -> ShimError {
        ShimError {
            call,
            kind,
            message: message.into(),
        }
    }
}

/// The C entry points of `npu_shim.h`, one method each. Free/close methods cannot fail.
///
/// `bo_map` returns a pointer valid for the buffer's size until `bo_free`; the safe
/// wrappers in this crate never hand it out.
pub trait ShimApi: Send + Sync {
    /// What this is ("XRT 2.17.0 (shim ABI 1)", "recording double").
    fn describe(&self) -> String;
    /// Version of the XRT the shim was built against ("2.13.0").
    fn xrt_version(&self) -> String;
    /// Whether hw_context/register_xclbin are available (XRT >= 2.14).
    fn has_hwctx(&self) -> bool;
    /// Whether runlists are available (XRT >= 2.18); without them a caller chains
    /// `run_start`/`run_wait` instead.
    fn has_runlist(&self) -> bool {
        false
    }
    /// The context a call log tags its records with, when this shim writes one
    /// ([`crate::LoggingShim`]); the device sets phase, graph and window through it.
    fn call_context(&self) -> Option<crate::call_context::CallContext> {
        None
    }

    /// `xrt::device(index)`.
    fn device_open(&self, index: u32) -> Result<DeviceHandle, ShimError>;
    /// `device::get_info<name>()`.
    fn device_name(&self, dev: DeviceHandle) -> Result<String, ShimError>;
    /// Destroys the device object.
    fn device_close(&self, dev: DeviceHandle);

    /// `xrt::xclbin(path)`.
    fn xclbin_load(&self, path: &Path) -> Result<XclbinHandle, ShimError>;
    /// Names of the kernels in the xclbin.
    fn xclbin_kernel_names(&self, xclbin: XclbinHandle) -> Result<Vec<String>, ShimError>;
    /// Argument count of a kernel in the xclbin (3 control arguments + data buffers).
    fn xclbin_num_args(&self, xclbin: XclbinHandle, kernel: &str) -> Result<u32, ShimError>;
    /// Destroys the xclbin object.
    fn xclbin_free(&self, xclbin: XclbinHandle);

    /// `device::register_xclbin` (never `load_xclbin`: amdxdna does not implement it).
    fn register_xclbin(&self, dev: DeviceHandle, xclbin: XclbinHandle) -> Result<(), ShimError>;
    /// `xrt::hw_context(device, xclbin uuid)`.
    fn hwctx_create(
        &self,
        dev: DeviceHandle,
        xclbin: XclbinHandle,
    ) -> Result<HwCtxHandle, ShimError>;
    /// Destroys the hardware context.
    fn hwctx_destroy(&self, ctx: HwCtxHandle);

    /// `xrt::kernel(hw_context, name)`.
    fn kernel_open(&self, ctx: HwCtxHandle, name: &str) -> Result<KernelHandle, ShimError>;
    /// `kernel::group_id(argno)`.
    fn kernel_group_id(&self, kernel: KernelHandle, argno: u32) -> Result<u32, ShimError>;
    /// Destroys the kernel object.
    fn kernel_close(&self, kernel: KernelHandle);

    /// `xrt::bo(device, bytes, flags, group)`.
    fn bo_alloc(
        &self,
        dev: DeviceHandle,
        bytes: usize,
        flags: BoFlags,
        group: u32,
    ) -> Result<BoHandle, ShimError>;
    /// `xrt::bo(parent, size, offset)`: bytes `[offset, offset + size)` of `parent` as a
    /// buffer of its own (sharing the parent's memory; freed before the parent).
    fn bo_sub(&self, parent: BoHandle, size: usize, offset: usize) -> Result<BoHandle, ShimError>;
    /// `bo::map()`.
    fn bo_map(&self, bo: BoHandle) -> Result<*mut u8, ShimError>;
    /// `bo::sync(direction, size, offset)`.
    fn bo_sync(
        &self,
        bo: BoHandle,
        dir: SyncDir,
        size: usize,
        offset: usize,
    ) -> Result<(), ShimError>;
    /// `bo::write(data, len, offset)`: copies into the buffer's host storage (no sync).
    fn bo_write(&self, bo: BoHandle, offset: usize, data: &[u8]) -> Result<(), ShimError>;
    /// `bo::read(out, len, offset)`: copies from the buffer's host storage (no sync).
    fn bo_read(&self, bo: BoHandle, offset: usize, out: &mut [u8]) -> Result<(), ShimError>;
    /// Destroys the buffer.
    fn bo_free(&self, bo: BoHandle);

    /// `xrt::run(kernel)`.
    fn run_create(&self, kernel: KernelHandle) -> Result<RunHandle, ShimError>;
    /// `run::set_arg(index, u32)`.
    fn run_set_arg_u32(&self, run: RunHandle, index: u32, value: u32) -> Result<(), ShimError>;
    /// `run::set_arg(index, u64)`.
    fn run_set_arg_u64(&self, run: RunHandle, index: u32, value: u64) -> Result<(), ShimError>;
    /// `run::set_arg(index, bo)`.
    fn run_set_arg_bo(&self, run: RunHandle, index: u32, bo: BoHandle) -> Result<(), ShimError>;
    /// `run::start()`.
    fn run_start(&self, run: RunHandle) -> Result<(), ShimError>;
    /// `run::wait(timeout)` (0 blocks forever).
    fn run_wait(&self, run: RunHandle, timeout_ms: u32) -> Result<RunState, ShimError>;
    /// Destroys the run object.
    fn run_free(&self, run: RunHandle);

    /// `xrt::runlist(hw_context)`. The default is the answer of a build without runlists.
    fn runlist_create(&self, ctx: HwCtxHandle) -> Result<RunlistHandle, ShimError> {
        let _ = ctx;
        Err(ShimError::new(
            "npu_runlist_create",
            ShimErrorKind::Unsupported,
            no_runlist_message(&self.xrt_version()),
        ))
    }
    /// `runlist::add(run)`: the run must be of a kernel of the list's context, in no other
    /// list, and must not be started on its own afterwards.
    fn runlist_add(&self, list: RunlistHandle, run: RunHandle) -> Result<(), ShimError> {
        let _ = (list, run);
        Err(ShimError::new(
            "npu_runlist_add",
            ShimErrorKind::Unsupported,
            no_runlist_message(&self.xrt_version()),
        ))
    }
    /// `runlist::execute()`: submits every run of the list, to execute in order.
    fn runlist_submit(&self, list: RunlistHandle) -> Result<(), ShimError> {
        let _ = list;
        Err(ShimError::new(
            "npu_runlist_execute",
            ShimErrorKind::Unsupported,
            no_runlist_message(&self.xrt_version()),
        ))
    }
    /// `runlist::wait(timeout)` (0 blocks forever); a failing run is a
    /// [`RunlistState::Failed`], not an error.
    fn runlist_wait(
        &self,
        list: RunlistHandle,
        timeout_ms: u32,
    ) -> Result<RunlistState, ShimError> {
        let _ = (list, timeout_ms);
        Err(ShimError::new(
            "npu_runlist_wait",
            ShimErrorKind::Unsupported,
            no_runlist_message(&self.xrt_version()),
        ))
    }
    /// `runlist::reset()`: removes every run (the list must not be executing).
    fn runlist_reset(&self, list: RunlistHandle) -> Result<(), ShimError> {
        let _ = list;
        Err(ShimError::new(
            "npu_runlist_reset",
            ShimErrorKind::Unsupported,
            no_runlist_message(&self.xrt_version()),
        ))
    }
    /// Destroys the runlist (it does not wait for an executing one).
    fn runlist_free(&self, list: RunlistHandle) {
        let _ = list;
    }
}
