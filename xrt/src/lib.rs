//! The real AMD Ryzen AI NPU device: XRT through a small C++ shim, the kernel manifest, and
//! device detection.
//!
//! - [`NpuXrtDevice`] implements [`amanuensis_runtime::device::Device`] (`--device npu`).
//!   It runs a node when its operator offers an NPU kernel and the [`Manifest`] has a
//!   compiled binary for that kernel at the node's input shapes; a timeout, an error state
//!   or a lost device comes back as `DeviceError::Fault` so the executor falls back to the
//!   CPU.
//! - [`ShimApi`] is the boundary to XRT, one method per C entry point of
//!   `shim/npu_shim.h`; [`XrtShim`] is the real one (only when the build found XRT headers:
//!   `cfg(xrt_shim)`), [`RecordingShim`] a test double that logs every call.
//! - [`LoggingShim`] wraps any shim and writes every call to a JSONL file tagged with the
//!   phase, graph and window a shared [`CallContext`] holds ([`calllog`]).
//! - [`detect`] reports which of `cpu`, `npu-sim`, `npu` are usable and why not.
//!
//! See `docs/npu.md`.

mod args;
pub mod call_context;
pub mod calllog;
mod detect;
mod device;
pub mod double;
pub mod dry;
mod error;
#[cfg(xrt_shim)]
mod ffi;
pub mod manifest;
mod reference;
mod register;
pub mod shim;
pub mod wrap;

pub use calllog::{call_log_path, set_call_log};
pub use calllog::{
    read_call_log, summarize_call_log, CallContext, CallLogError, CallLogSummary, CallRecord,
    CallScope, LoggingShim, Phase, Totals,
};
pub use detect::{
    accel_nodes, auto_device, detect, npu_status, probe_npu, real_shim, AccelNode, DeviceStatus,
    NpuProbe, StatusTable,
};
pub use device::XrtProgram;
pub use device::{
    no_hwctx_message, NpuXrtDevice, NpuXrtOptions, XrtError, FIRST_DATA_ARG, INSTR_ARG,
    OPCODE_INSTRUCTIONS, TIMEOUT_ENV,
};
pub use double::{KernelHook, RecordingShim, RunInvocation};
pub use dry::flush_call_logs;
#[cfg(xrt_shim)]
pub use ffi::XrtShim;
pub use manifest::{
    ArgBinding, ArgDtype, ArgSpec, KernelEntry, Manifest, ManifestError, Variant, KERNELS_ENV,
};
pub use register::register_devices;
pub use shim::{
    no_runlist_message, BoFlags, RunState, RunlistState, ShimApi, ShimError, ShimErrorKind, SyncDir,
};

/// Whether this build contains the XRT shim.
pub const BUILT_WITH_XRT: bool = cfg!(xrt_shim);

/// Whether the shim in this build can create hardware contexts (XRT >= 2.14).
pub const BUILT_WITH_HWCTX: bool = cfg!(xrt_hwctx);

/// Whether the shim in this build can submit runlists (XRT >= 2.18).
pub const BUILT_WITH_RUNLIST: bool = cfg!(xrt_runlist);

/// The XRT version this build was compiled against (empty without XRT).
pub const XRT_VERSION: &str = env!("AMANUENSIS_XRT_VERSION");
