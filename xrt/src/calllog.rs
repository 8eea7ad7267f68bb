//! The XRT call log: [`LoggingShim`] wraps any [`ShimApi`] and appends every call to a JSONL
//! file, one JSON object per line, tagged with the phase (`load` or `run`), graph and 30-s
//! window that a shared [`CallContext`] holds at the time of the call. [`read_call_log`]
//! parses such a file back and [`CallLogSummary`] totals it per phase, op, graph and window.
//! The format is described in `docs/npu.md` ("XRT call log").

pub use crate::call_context::{CallContext, CallScope, Phase};
use crate::shim::{
    BoFlags, BoHandle, DeviceHandle, HwCtxHandle, KernelHandle, RunHandle, RunState, RunlistHandle,
    RunlistState, ShimApi, ShimError, SyncDir, XclbinHandle,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Direction of a sync, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Host to device.
    ToDevice,
    /// Device to host.
    FromDevice,
}

impl From<SyncDir> for Dir {
    fn from(d: SyncDir) -> Dir {
        match d {
            SyncDir::ToDevice => Dir::ToDevice,
            SyncDir::FromDevice => Dir::FromDevice,
        }
    }
}

/// One line of the log. Fields that do not apply to a call are absent from its line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Position in the log (0, 1, ...).
    pub seq: u64,
    /// When the call began, in µs since the log was opened (monotonic clock).
    pub t_us: u64,
    /// How long the call took, µs.
    pub dur_us: u64,
    /// The [`ShimApi`] method, e.g. `bo_sync`, `runlist_submit`.
    pub op: String,
    /// The phase at the time of the call.
    pub phase: Phase,
    /// The graph at the time of the call, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
    /// The 30-s window at the time of the call, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// Whether the call succeeded.
    pub ok: bool,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes allocated, written, read or synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Direction of a sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<Dir>,
    /// Byte offset of a write, read or sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Device handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// Xclbin handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xclbin: Option<u64>,
    /// Hardware-context handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<u64>,
    /// Kernel handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<u64>,
    /// Buffer handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bo: Option<u64>,
    /// The parent buffer of a sub-buffer (`bo_sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    /// Run handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// Runlist handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runlist: Option<u64>,
    /// Device index (`device_open`) or argument index (`kernel_group_id`, `run_set_arg_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Value of a scalar argument, or the group id a `kernel_group_id` returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// Buffer flags (`cacheable`, `host_only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// Memory group of an allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// Kernel name (`kernel_open`, `xclbin_num_args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Xclbin path (`xclbin_load`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Timeout of a wait, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// How a wait ended: `completed`, `error`, `abort`, `timeout`, `no_response`,
    /// `state_<n>` (for a runlist, the failing run's state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Position in its runlist of the run that failed (`runlist_wait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    /// Runs submitted: 1 for `run_start`, the list's length for `runlist_submit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<u64>,
}

fn state_name(s: RunState) -> String {
    match s {
        RunState::Completed => "completed".into(),
        RunState::Error => "error".into(),
        RunState::Abort => "abort".into(),
        RunState::Timeout => "timeout".into(),
        RunState::NoResponse => "no_response".into(),
        RunState::Other(c) => format!("state_{c}"),
    }
}

fn flags_name(f: BoFlags) -> &'static str {
    match f {
        BoFlags::Cacheable => "cacheable",
        BoFlags::HostOnly => "host_only",
    }
}

struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    seq: u64,
    /// The first failure to write the log; writing stops there.
    failed: Option<String>,
    /// Runs added to each live runlist, for the `runs` of `runlist_submit`.
    list_len: HashMap<u64, u64>,
}

/// A [`ShimApi`] that forwards every call to another and logs it as one JSON line.
///
/// A failure to write the log never fails a shim call: the first one is kept
/// ([`LoggingShim::log_error`]) and logging stops. The log is flushed after every failed
/// call, by [`LoggingShim::flush`] and when the shim is dropped.
pub struct LoggingShim {
    inner: Arc<dyn ShimApi>,
    ctx: CallContext,
    start: Instant,
    path: Option<PathBuf>,
    sink: Mutex<Sink>,
}

impl LoggingShim {
    /// Logs the calls made to `inner` into a new file at `path` (replacing any).
    pub fn create(
        inner: Arc<dyn ShimApi>,
        path: &Path,
        ctx: CallContext,
    ) -> std::io::Result<LoggingShim> {
        let file = File::create(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("creating the XRT call log {}: {e}", path.display()),
            )
        })?;
        let mut shim = LoggingShim::to_writer(inner, Box::new(file), ctx);
        shim.path = Some(path.to_path_buf());
        Ok(shim)
    }

    /// Logs the calls made to `inner` into `out`.
    pub fn to_writer(
        inner: Arc<dyn ShimApi>,
        out: Box<dyn Write + Send>,
        ctx: CallContext,
    ) -> LoggingShim {
        LoggingShim {
            inner,
            ctx,
            start: Instant::now(),
            path: None,
            sink: Mutex::new(Sink {
                out: BufWriter::new(out),
                seq: 0,
                failed: None,
                list_len: HashMap::new(),
            }),
        }
    }

    /// The context records are tagged from.
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    /// The wrapped shim.
    pub fn inner(&self) -> &Arc<dyn ShimApi> {
        &self.inner
    }

    /// The log file, when created with [`LoggingShim::create`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes out what is buffered.
    pub fn flush(&self) -> std::io::Result<()> {
        self.lock().out.flush()
    }

    /// The first failure to write the log, if any (logging stopped there).
    pub fn log_error(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, mut rec: CallRecord, flush: bool) {
        let mut sink = self.lock();
        if sink.failed.is_some() {
            return;
        }
        rec.seq = sink.seq;
        sink.seq += 1;
        let result = serde_json::to_writer(&mut sink.out, &rec)
            .map_err(|e| e.to_string())
            .and_then(|()| sink.out.write_all(b"\n").map_err(|e| e.to_string()))
            .and_then(|()| {
                if flush {
                    sink.out.flush().map_err(|e| e.to_string())
                } else {
                    Ok(())
                }
            });
        if let Err(e) = result {
            let what = match &self.path {
                Some(p) => format!("writing the XRT call log {}: {e}", p.display()),
                None => format!("writing the XRT call log: {e}"),
            };
            tracing::warn!("{what}; no further calls are logged");
            sink.failed = Some(what);
        }
    }

    /// Runs `f`, logs it as `op` with the fields of `rec` and those `done` adds on success.
    fn call<T>(
        &self,
        op: &str,
        rec: CallRecord,
        f: impl FnOnce() -> Result<T, ShimError>,
        done: impl FnOnce(&T, &mut CallRecord),
    ) -> Result<T, ShimError> {
        let scope = self.ctx.scope();
        let t0 = self.start.elapsed();
        let result = f();
        let t1 = self.start.elapsed();
        let mut rec = CallRecord {
            op: op.to_string(),
            t_us: t0.as_micros() as u64,
            dur_us: (t1 - t0).as_micros() as u64,
            phase: scope.phase,
            graph: scope.graph.map(|g| g.to_string()),
            window: scope.window,
            ..rec
        };
        match &result {
            Ok(v) => {
                rec.ok = true;
                done(v, &mut rec);
            }
            Err(e) => {
                rec.ok = false;
                rec.error = Some(e.to_string());
            }
        }
        let failed = result.is_err();
        self.write(rec, failed);
        result
    }

    /// Logs an infallible call.
    fn note(&self, op: &str, rec: CallRecord, f: impl FnOnce()) {
        let _ = self.call(
            op,
            rec,
            || {
                f();
                Ok(())
            },
            |_, _| {},
        );
    }
}

impl Drop for LoggingShim {
    fn drop(&mut self) {
        let mut sink = self.lock();
        if sink.failed.is_none() {
            if let Err(e) = sink.out.flush() {
                tracing::warn!("flushing the XRT call log: {e}");
            }
        }
    }
}

fn nothing<T>(_: &T, _: &mut CallRecord) {}

impl ShimApi for LoggingShim {
    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!(
                "{} (calls logged to {})",
                self.inner.describe(),
                p.display()
            ),
            None => format!("{} (calls logged)", self.inner.describe()),
        }
    }

    fn xrt_version(&self) -> String {
        self.inner.xrt_version()
    }

    fn has_hwctx(&self) -> bool {
        self.inner.has_hwctx()
    }

    fn has_runlist(&self) -> bool {
        self.inner.has_runlist()
    }

    fn call_context(&self) -> Option<CallContext> {
        Some(self.ctx.clone())
    }

    fn device_open(&self, index: u32) -> Result<DeviceHandle, ShimError> {
        let rec = CallRecord {
            index: Some(index.into()),
            ..CallRecord::default()
        };
        self.call(
            "device_open",
            rec,
            || self.inner.device_open(index),
            |h, r| r.dev = Some(h.0),
        )
    }

    fn device_name(&self, dev: DeviceHandle) -> Result<String, ShimError> {
        let rec = CallRecord {
            dev: Some(dev.0),
            ..CallRecord::default()
        };
        self.call(
            "device_name",
            rec,
            || self.inner.device_name(dev),
            |n, r| r.name = Some(n.clone()),
        )
    }

    fn device_close(&self, dev: DeviceHandle) {
        let rec = CallRecord {
            dev: Some(dev.0),
            ..CallRecord::default()
        };
        self.note("device_close", rec, || self.inner.device_close(dev));
    }

    fn xclbin_load(&self, path: &Path) -> Result<XclbinHandle, ShimError> {
        let rec = CallRecord {
            path: Some(path.display().to_string()),
            ..CallRecord::default()
        };
        self.call(
            "xclbin_load",
            rec,
            || self.inner.xclbin_load(path),
            |h, r| r.xclbin = Some(h.0),
        )
    }

    fn xclbin_kernel_names(&self, xclbin: XclbinHandle) -> Result<Vec<String>, ShimError> {
        let rec = CallRecord {
            xclbin: Some(xclbin.0),
            ..CallRecord::default()
        };
        self.call(
            "xclbin_kernel_names",
            rec,
            || self.inner.xclbin_kernel_names(xclbin),
            |n, r| r.name = Some(n.join(",")),
        )
    }

    fn xclbin_num_args(&self, xclbin: XclbinHandle, kernel: &str) -> Result<u32, ShimError> {
        let rec = CallRecord {
            xclbin: Some(xclbin.0),
            name: Some(kernel.to_string()),
            ..CallRecord::default()
        };
        self.call(
            "xclbin_num_args",
            rec,
            || self.inner.xclbin_num_args(xclbin, kernel),
            |n, r| r.value = Some((*n).into()),
        )
    }

    fn xclbin_free(&self, xclbin: XclbinHandle) {
        let rec = CallRecord {
            xclbin: Some(xclbin.0),
            ..CallRecord::default()
        };
        self.note("xclbin_free", rec, || self.inner.xclbin_free(xclbin));
    }

    fn register_xclbin(&self, dev: DeviceHandle, xclbin: XclbinHandle) -> Result<(), ShimError> {
        let rec = CallRecord {
            dev: Some(dev.0),
            xclbin: Some(xclbin.0),
            ..CallRecord::default()
        };
        self.call(
            "register_xclbin",
            rec,
            || self.inner.register_xclbin(dev, xclbin),
            nothing,
        )
    }

    fn hwctx_create(
        &self,
        dev: DeviceHandle,
        xclbin: XclbinHandle,
    ) -> Result<HwCtxHandle, ShimError> {
        let rec = CallRecord {
            dev: Some(dev.0),
            xclbin: Some(xclbin.0),
            ..CallRecord::default()
        };
        self.call(
            "hwctx_create",
            rec,
            || self.inner.hwctx_create(dev, xclbin),
            |h, r| r.ctx = Some(h.0),
        )
    }

    fn hwctx_destroy(&self, ctx: HwCtxHandle) {
        let rec = CallRecord {
            ctx: Some(ctx.0),
            ..CallRecord::default()
        };
        self.note("hwctx_destroy", rec, || self.inner.hwctx_destroy(ctx));
    }

    fn kernel_open(&self, ctx: HwCtxHandle, name: &str) -> Result<KernelHandle, ShimError> {
        let rec = CallRecord {
            ctx: Some(ctx.0),
            name: Some(name.to_string()),
            ..CallRecord::default()
        };
        self.call(
            "kernel_open",
            rec,
            || self.inner.kernel_open(ctx, name),
            |h, r| r.kernel = Some(h.0),
        )
    }

    fn kernel_group_id(&self, kernel: KernelHandle, argno: u32) -> Result<u32, ShimError> {
        let rec = CallRecord {
            kernel: Some(kernel.0),
            index: Some(argno.into()),
            ..CallRecord::default()
        };
        self.call(
            "kernel_group_id",
            rec,
            || self.inner.kernel_group_id(kernel, argno),
            |g, r| r.value = Some((*g).into()),
        )
    }

    fn kernel_close(&self, kernel: KernelHandle) {
        let rec = CallRecord {
            kernel: Some(kernel.0),
            ..CallRecord::default()
        };
        self.note("kernel_close", rec, || self.inner.kernel_close(kernel));
    }

    fn bo_alloc(
        &self,
        dev: DeviceHandle,
        bytes: usize,
        flags: BoFlags,
        group: u32,
    ) -> Result<BoHandle, ShimError> {
        let rec = CallRecord {
            dev: Some(dev.0),
            bytes: Some(bytes as u64),
            flags: Some(flags_name(flags).into()),
            group: Some(group),
            ..CallRecord::default()
        };
        self.call(
            "bo_alloc",
            rec,
            || self.inner.bo_alloc(dev, bytes, flags, group),
            |h, r| r.bo = Some(h.0),
        )
    }

    fn bo_sub(&self, parent: BoHandle, size: usize, offset: usize) -> Result<BoHandle, ShimError> {
        let rec = CallRecord {
            parent: Some(parent.0),
            bytes: Some(size as u64),
            offset: Some(offset as u64),
            ..CallRecord::default()
        };
        self.call(
            "bo_sub",
            rec,
            || self.inner.bo_sub(parent, size, offset),
            |h, r| r.bo = Some(h.0),
        )
    }

    fn bo_map(&self, bo: BoHandle) -> Result<*mut u8, ShimError> {
        let rec = CallRecord {
            bo: Some(bo.0),
            ..CallRecord::default()
        };
        self.call("bo_map", rec, || self.inner.bo_map(bo), nothing)
    }

    fn bo_sync(
        &self,
        bo: BoHandle,
        dir: SyncDir,
        size: usize,
        offset: usize,
    ) -> Result<(), ShimError> {
        let rec = CallRecord {
            bo: Some(bo.0),
            dir: Some(dir.into()),
            bytes: Some(size as u64),
            offset: Some(offset as u64),
            ..CallRecord::default()
        };
        self.call(
            "bo_sync",
            rec,
            || self.inner.bo_sync(bo, dir, size, offset),
            nothing,
        )
    }

    fn bo_write(&self, bo: BoHandle, offset: usize, data: &[u8]) -> Result<(), ShimError> {
        let rec = CallRecord {
            bo: Some(bo.0),
            bytes: Some(data.len() as u64),
            offset: Some(offset as u64),
            ..CallRecord::default()
        };
        self.call(
            "bo_write",
            rec,
            || self.inner.bo_write(bo, offset, data),
            nothing,
        )
    }

    fn bo_read(&self, bo: BoHandle, offset: usize, out: &mut [u8]) -> Result<(), ShimError> {
        let rec = CallRecord {
            bo: Some(bo.0),
            bytes: Some(out.len() as u64),
            offset: Some(offset as u64),
            ..CallRecord::default()
        };
        self.call(
            "bo_read",
            rec,
            || self.inner.bo_read(bo, offset, out),
            nothing,
        )
    }

    fn bo_free(&self, bo: BoHandle) {
        let rec = CallRecord {
            bo: Some(bo.0),
            ..CallRecord::default()
        };
        self.note("bo_free", rec, || self.inner.bo_free(bo));
    }

    fn run_create(&self, kernel: KernelHandle) -> Result<RunHandle, ShimError> {
        let rec = CallRecord {
            kernel: Some(kernel.0),
            ..CallRecord::default()
        };
        self.call(
            "run_create",
            rec,
            || self.inner.run_create(kernel),
            |h, r| r.run = Some(h.0),
        )
    }

    fn run_set_arg_u32(&self, run: RunHandle, index: u32, value: u32) -> Result<(), ShimError> {
        let rec = CallRecord {
            run: Some(run.0),
            index: Some(index.into()),
            value: Some(value.into()),
            ..CallRecord::default()
        };
        self.call(
            "run_set_arg_u32",
            rec,
            || self.inner.run_set_arg_u32(run, index, value),
            nothing,
        )
    }

    fn run_set_arg_u64(&self, run: RunHandle, index: u32, value: u64) -> Result<(), ShimError> {
        let rec = CallRecord {
            run: Some(run.0),
            index: Some(index.into()),
            value: Some(value),
            ..CallRecord::default()
        };
        self.call(
            "run_set_arg_u64",
            rec,
            || self.inner.run_set_arg_u64(run, index, value),
            nothing,
        )
    }

    fn run_set_arg_bo(&self, run: RunHandle, index: u32, bo: BoHandle) -> Result<(), ShimError> {
        let rec = CallRecord {
            run: Some(run.0),
            index: Some(index.into()),
            bo: Some(bo.0),
            ..CallRecord::default()
        };
        self.call(
            "run_set_arg_bo",
            rec,
            || self.inner.run_set_arg_bo(run, index, bo),
            nothing,
        )
    }

    fn run_start(&self, run: RunHandle) -> Result<(), ShimError> {
        let rec = CallRecord {
            run: Some(run.0),
            ..CallRecord::default()
        };
        self.call(
            "run_start",
            rec,
            || self.inner.run_start(run),
            |_, r| r.runs = Some(1),
        )
    }

    fn run_wait(&self, run: RunHandle, timeout_ms: u32) -> Result<RunState, ShimError> {
        let rec = CallRecord {
            run: Some(run.0),
            timeout_ms: Some(timeout_ms),
            ..CallRecord::default()
        };
        self.call(
            "run_wait",
            rec,
            || self.inner.run_wait(run, timeout_ms),
            |s, r| r.state = Some(state_name(*s)),
        )
    }

    fn run_free(&self, run: RunHandle) {
        let rec = CallRecord {
            run: Some(run.0),
            ..CallRecord::default()
        };
        self.note("run_free", rec, || self.inner.run_free(run));
    }

    fn runlist_create(&self, ctx: HwCtxHandle) -> Result<RunlistHandle, ShimError> {
        let rec = CallRecord {
            ctx: Some(ctx.0),
            ..CallRecord::default()
        };
        self.call(
            "runlist_create",
            rec,
            || self.inner.runlist_create(ctx),
            |h, r| r.runlist = Some(h.0),
        )
    }

    fn runlist_add(&self, list: RunlistHandle, run: RunHandle) -> Result<(), ShimError> {
        let rec = CallRecord {
            runlist: Some(list.0),
            run: Some(run.0),
            ..CallRecord::default()
        };
        let r = self.call(
            "runlist_add",
            rec,
            || self.inner.runlist_add(list, run),
            nothing,
        );
        if r.is_ok() {
            *self.lock().list_len.entry(list.0).or_default() += 1;
        }
        r
    }

    fn runlist_submit(&self, list: RunlistHandle) -> Result<(), ShimError> {
        let n = self.lock().list_len.get(&list.0).copied().unwrap_or(0);
        let rec = CallRecord {
            runlist: Some(list.0),
            ..CallRecord::default()
        };
        self.call(
            "runlist_submit",
            rec,
            || self.inner.runlist_submit(list),
            |_, r| r.runs = Some(n),
        )
    }

    fn runlist_wait(
        &self,
        list: RunlistHandle,
        timeout_ms: u32,
    ) -> Result<RunlistState, ShimError> {
        let rec = CallRecord {
            runlist: Some(list.0),
            timeout_ms: Some(timeout_ms),
            ..CallRecord::default()
        };
        self.call(
            "runlist_wait",
            rec,
            || self.inner.runlist_wait(list, timeout_ms),
            |s, r| match s {
                RunlistState::Completed => r.state = Some("completed".into()),
                RunlistState::Timeout => r.state = Some("timeout".into()),
                RunlistState::Failed { index, state } => {
                    r.state = Some(state_name(*state));
                    r.failed = index.map(|i| i as u64);
                }
            },
        )
    }

    fn runlist_reset(&self, list: RunlistHandle) -> Result<(), ShimError> {
        let rec = CallRecord {
            runlist: Some(list.0),
            ..CallRecord::default()
        };
        let r = self.call(
            "runlist_reset",
            rec,
            || self.inner.runlist_reset(list),
            nothing,
        );
        if r.is_ok() {
            self.lock().list_len.remove(&list.0);
        }
        r
    }

    fn runlist_free(&self, list: RunlistHandle) {
        let rec = CallRecord {
            runlist: Some(list.0),
            ..CallRecord::default()
        };
        self.note("runlist_free", rec, || self.inner.runlist_free(list));
        self.lock().list_len.remove(&list.0);
    }
}

/// A call log that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CallLogError {
    /// The file cannot be read.
    #[error("reading the XRT call log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a call record.
    #[error("XRT call log {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Parses a call log read from `reader` (`path` names it in errors). Blank lines are
/// skipped.
pub fn parse_call_log(reader: impl BufRead, path: &Path) -> Result<Vec<CallRecord>, CallLogError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| CallLogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = serde_json::from_str(&line).map_err(|e| CallLogError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// Reads and parses the call log at `path`.
pub fn read_call_log(path: &Path) -> Result<Vec<CallRecord>, CallLogError> {
    let file = File::open(path).map_err(|source| CallLogError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_call_log(BufReader::new(file), path)
}

/// Totals over a set of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Calls.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Runs submitted (one per `run_start`, the list's length per `runlist_submit`).
    pub runs: u64,
    /// Bytes synced to the device.
    pub bytes_to_device: u64,
    /// Bytes synced from the device.
    pub bytes_from_device: u64,
    /// Bytes copied into buffers through `bo_write`.
    pub bytes_written: u64,
    /// Bytes copied out of buffers through `bo_read`.
    pub bytes_read: u64,
    /// Bytes allocated.
    pub bytes_allocated: u64,
    /// Time spent in the calls, µs.
    pub us: u64,
}

impl Totals {
    /// Adds one call.
    pub fn add(&mut self, r: &CallRecord) {
        self.calls += 1;
        self.us += r.dur_us;
        if !r.ok {
            self.errors += 1;
            return;
        }
        self.runs += r.runs.unwrap_or(0);
        let bytes = r.bytes.unwrap_or(0);
        match (r.op.as_str(), r.dir) {
            ("bo_sync", Some(Dir::ToDevice)) => self.bytes_to_device += bytes,
            ("bo_sync", Some(Dir::FromDevice)) => self.bytes_from_device += bytes,
            ("bo_write", _) => self.bytes_written += bytes,
            ("bo_read", _) => self.bytes_read += bytes,
            ("bo_alloc", _) => self.bytes_allocated += bytes,
            _ => {}
        }
    }
}

/// A call log totalled per phase, op, graph and window (only calls made with a graph or
/// window set count under one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallLogSummary {
    /// Every call.
    pub total: Totals,
    /// Per phase.
    pub by_phase: BTreeMap<Phase, Totals>,
    /// Per op.
    pub by_op: BTreeMap<String, Totals>,
    /// Per graph.
    pub by_graph: BTreeMap<String, Totals>,
    /// Per window index.
    pub by_window: BTreeMap<u64, Totals>,
}

impl CallLogSummary {
    /// Totals of `records`.
    pub fn from_records(records: &[CallRecord]) -> CallLogSummary {
        let mut s = CallLogSummary::default();
        for r in records {
            s.add(r);
        }
        s
    }

    /// Adds one call.
    pub fn add(&mut self, r: &CallRecord) {
        self.total.add(r);
        self.by_phase.entry(r.phase).or_default().add(r);
        self.by_op.entry(r.op.clone()).or_default().add(r);
        if let Some(g) = &r.graph {
            self.by_graph.entry(g.clone()).or_default().add(r);
        }
        if let Some(w) = r.window {
            self.by_window.entry(w).or_default().add(r);
        }
    }
}

/// Reads the call log at `path` and totals it.
pub fn summarize_call_log(path: &Path) -> Result<CallLogSummary, CallLogError> {
    Ok(CallLogSummary::from_records(&read_call_log(path)?))
}

impl fmt::Display for CallLogSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn row(f: &mut fmt::Formatter<'_>, name: &str, t: &Totals) -> fmt::Result {
            writeln!(
                f,
                "{name:<24} {:>9} {:>7} {:>8} {:>14} {:>14} {:>12}",
                t.calls, t.errors, t.runs, t.bytes_to_device, t.bytes_from_device, t.us
            )
        }
        writeln!(
            f,
            "{:<24} {:>9} {:>7} {:>8} {:>14} {:>14} {:>12}",
            "", "calls", "errors", "runs", "bytes to dev", "bytes from dev", "µs in calls"
        )?;
        row(f, "total", &self.total)?;
        for (p, t) in &self.by_phase {
            row(f, &format!("phase {p}"), t)?;
        }
        for (g, t) in &self.by_graph {
            row(f, &format!("graph {g}"), t)?;
        }
        for (w, t) in &self.by_window {
            row(f, &format!("window {w}"), t)?;
        }
        for (o, t) in &self.by_op {
            row(f, &format!("op {o}"), t)?;
        }
        Ok(())
    }
}

static CALL_LOG: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Where the XRT devices opened from now on write their call log (`--xrt-log`).
pub fn set_call_log(path: Option<PathBuf>) -> Result<(), String> {
    *CALL_LOG.lock().unwrap_or_else(|p| p.into_inner()) = path;
    Ok(())
}

/// The call log path set by [`set_call_log`].
pub fn call_log_path() -> Option<PathBuf> {
    CALL_LOG.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
