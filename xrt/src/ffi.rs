//! The real shim: `extern "C"` declarations of `shim/npu_shim.h` and [`XrtShim`], which
//! implements [`ShimApi`] over them. Compiled only when the build found XRT
//! (`cfg(xrt_shim)`).

use crate::shim::{
    BoFlags, BoHandle, DeviceHandle, HwCtxHandle, KernelHandle, RunHandle, RunState, RunlistHandle,
    RunlistState, ShimApi, ShimError, ShimErrorKind, SyncDir, XclbinHandle,
};
use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr, CString};
use std::path::Path;

const MESSAGE_CAPACITY: usize = 512;
/// The ABI version this binding was written for (`NPU_SHIM_ABI_VERSION`).
const ABI_VERSION: c_int = 3;

#[repr(C)]
struct NpuShimError {
    code: c_int,
    message: [c_char; MESSAGE_CAPACITY],
}

impl NpuShimError {
    fn new() -> Self {
        NpuShimError {
            code: 0,
            message: [0; MESSAGE_CAPACITY],
        }
    }

    fn into_error(self, call: &'static str, rc: c_int) -> ShimError {
        // The shim always NUL-terminates; the last byte is forced to NUL anyway.
        let mut bytes: Vec<u8> = self.message.iter().map(|&c| c as u8).collect();
        bytes[MESSAGE_CAPACITY - 1] = 0;
        let msg = CStr::from_bytes_until_nul(&bytes)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let msg = if msg.is_empty() {
            format!("failed with code {rc}")
        } else {
            msg
        };
        ShimError::new(call, ShimErrorKind::from_code(rc), msg)
    }
}

#[repr(C)]
struct Opaque {
    _private: [u8; 0],
}

extern "C" {
    fn npu_shim_abi_version() -> c_int;
    fn npu_shim_xrt_version() -> *const c_char;
    fn npu_shim_has_hwctx() -> c_int;
    fn npu_shim_has_runlist() -> c_int;

    fn npu_device_open(index: c_uint, out: *mut *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_device_name(
        dev: *mut Opaque,
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_device_close(dev: *mut Opaque);

    fn npu_xclbin_load(path: *const c_char, out: *mut *mut Opaque, err: *mut NpuShimError)
        -> c_int;
    fn npu_xclbin_kernel_names(
        x: *mut Opaque,
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_xclbin_num_args(
        x: *mut Opaque,
        kernel: *const c_char,
        out: *mut c_uint,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_xclbin_free(x: *mut Opaque);

    fn npu_register_xclbin(dev: *mut Opaque, x: *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_hwctx_create(
        dev: *mut Opaque,
        x: *mut Opaque,
        out: *mut *mut Opaque,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_hwctx_destroy(ctx: *mut Opaque);

    fn npu_kernel_open(
        ctx: *mut Opaque,
        name: *const c_char,
        out: *mut *mut Opaque,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_kernel_group_id(
        k: *mut Opaque,
        argno: c_int,
        out: *mut c_int,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_kernel_close(k: *mut Opaque);

    fn npu_bo_alloc(
        dev: *mut Opaque,
        bytes: usize,
        flags: c_uint,
        group: c_uint,
        out: *mut *mut Opaque,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_bo_sub(
        parent: *mut Opaque,
        size: usize,
        offset: usize,
        out: *mut *mut Opaque,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_bo_map(bo: *mut Opaque, out: *mut *mut c_void, err: *mut NpuShimError) -> c_int;
    fn npu_bo_sync(
        bo: *mut Opaque,
        dir: c_int,
        size: usize,
        offset: usize,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_bo_write(
        bo: *mut Opaque,
        src: *const c_void,
        size: usize,
        offset: usize,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_bo_read(
        bo: *mut Opaque,
        dst: *mut c_void,
        size: usize,
        offset: usize,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_bo_free(bo: *mut Opaque);

    fn npu_run_create(k: *mut Opaque, out: *mut *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_run_set_arg_u32(
        run: *mut Opaque,
        index: c_int,
        value: u32,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_run_set_arg_u64(
        run: *mut Opaque,
        index: c_int,
        value: u64,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_run_set_arg_bo(
        run: *mut Opaque,
        index: c_int,
        bo: *mut Opaque,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_run_start(run: *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_run_wait(
        run: *mut Opaque,
        timeout_ms: c_uint,
        state: *mut c_int,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_run_free(run: *mut Opaque);

    fn npu_runlist_create(ctx: *mut Opaque, out: *mut *mut Opaque, err: *mut NpuShimError)
        -> c_int;
    fn npu_runlist_add(list: *mut Opaque, run: *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_runlist_execute(list: *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_runlist_wait(
        list: *mut Opaque,
        timeout_ms: c_uint,
        state: *mut c_int,
        failed: *mut c_longlong,
        err: *mut NpuShimError,
    ) -> c_int;
    fn npu_runlist_reset(list: *mut Opaque, err: *mut NpuShimError) -> c_int;
    fn npu_runlist_free(list: *mut Opaque);
}

fn ptr(h: u64) -> *mut Opaque {
    h as usize as *mut Opaque
}

fn handle(p: *mut Opaque) -> u64 {
    p as usize as u64
}

/// Calls `f` with a fresh error block and converts a nonzero return into a [`ShimError`].
fn check(call: &'static str, f: impl FnOnce(*mut NpuShimError) -> c_int) -> Result<(), ShimError> {
    let mut err = NpuShimError::new();
    let rc = f(&mut err);
    if rc == 0 {
        Ok(())
    } else {
        Err(err.into_error(call, rc))
    }
}

fn c_string(call: &'static str, s: &str) -> Result<CString, ShimError> {
    CString::new(s).map_err(|_| {
        ShimError::new(
            call,
            ShimErrorKind::Argument,
            format!("'{s}' contains a NUL byte"),
        )
    })
}

/// Reads a string the shim returns through (buf, cap, len), growing the buffer once if needed.
fn read_string(
    call: &'static str,
    f: impl Fn(*mut c_char, usize, *mut usize, *mut NpuShimError) -> c_int,
) -> Result<String, ShimError> {
    let mut buf = vec![0u8; 256];
    for _ in 0..2 {
        let mut len = 0usize;
        check(call, |e| {
            f(buf.as_mut_ptr() as *mut c_char, buf.len(), &mut len, e)
        })?;
        if len <= buf.len() {
            buf.truncate(len);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        // Names are short; a very long answer is a broken library, not data to trust.
        if len > 1 << 20 {
            return Err(ShimError::new(
                call,
                ShimErrorKind::Unknown,
                format!("implausible length {len}"),
            ));
        }
        buf = vec![0u8; len];
    }
    Err(ShimError::new(
        call,
        ShimErrorKind::Unknown,
        "length changed between calls",
    ))
}

/// The XRT shim compiled into this build (the only one that reaches hardware).
#[derive(Debug)]
pub struct XrtShim {
    _private: (),
}

impl XrtShim {
    /// The shim; fails if the compiled shim's ABI differs from this binding's.
    pub fn new() -> Result<XrtShim, ShimError> {
        // SAFETY: takes no arguments, returns a constant.
        let abi = unsafe { npu_shim_abi_version() };
        if abi != ABI_VERSION {
            return Err(ShimError::new(
                "npu_shim_abi_version",
                ShimErrorKind::Unsupported,
                format!("shim ABI {abi}, binding expects {ABI_VERSION}"),
            ));
        }
        Ok(XrtShim { _private: () })
    }

    /// Version of the XRT headers the shim was compiled against.
    pub fn xrt_version() -> String {
        // SAFETY: returns a pointer to a static NUL-terminated string literal.
        unsafe { CStr::from_ptr(npu_shim_xrt_version()) }
            .to_string_lossy()
            .into_owned()
    }
}

// SAFETY: XrtShim holds no state; the XRT objects behind the handles may be used from any
// thread (the device uses them from one thread at a time through `&mut self`).
unsafe impl Send for XrtShim {}
unsafe impl Sync for XrtShim {}

impl ShimApi for XrtShim {
    fn describe(&self) -> String {
        format!("XRT {} (shim ABI {ABI_VERSION})", XrtShim::xrt_version())
    }

    fn xrt_version(&self) -> String {
        XrtShim::xrt_version()
    }

    fn has_hwctx(&self) -> bool {
        // SAFETY: takes no arguments, returns a constant.
        unsafe { npu_shim_has_hwctx() != 0 }
    }

    fn has_runlist(&self) -> bool {
        // SAFETY: takes no arguments, returns a constant.
        unsafe { npu_shim_has_runlist() != 0 }
    }

    fn device_open(&self, index: u32) -> Result<DeviceHandle, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `out` and `e` are valid for writes for the duration of the call.
        check("npu_device_open", |e| unsafe {
            npu_device_open(index, &mut out, e)
        })?;
        Ok(DeviceHandle(handle(out)))
    }

    fn device_name(&self, dev: DeviceHandle) -> Result<String, ShimError> {
        // SAFETY: `dev` came from npu_device_open and is not closed (wrapper invariant); the
        // shim writes at most `cap` bytes to `buf`.
        read_string("npu_device_name", |b, c, l, e| unsafe {
            npu_device_name(ptr(dev.0), b, c, l, e)
        })
    }

    fn device_close(&self, dev: DeviceHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_device_close(ptr(dev.0)) }
    }

    fn xclbin_load(&self, path: &Path) -> Result<XclbinHandle, ShimError> {
        let p = c_string("npu_xclbin_load", &path.to_string_lossy())?;
        let mut out = std::ptr::null_mut();
        // SAFETY: `p` is NUL-terminated and outlives the call; `out`, `e` valid for writes.
        check("npu_xclbin_load", |e| unsafe {
            npu_xclbin_load(p.as_ptr(), &mut out, e)
        })?;
        Ok(XclbinHandle(handle(out)))
    }

    fn xclbin_kernel_names(&self, xclbin: XclbinHandle) -> Result<Vec<String>, ShimError> {
        // SAFETY: as device_name.
        let s = read_string("npu_xclbin_kernel_names", |b, c, l, e| unsafe {
            npu_xclbin_kernel_names(ptr(xclbin.0), b, c, l, e)
        })?;
        Ok(s.split('\n')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn xclbin_num_args(&self, xclbin: XclbinHandle, kernel: &str) -> Result<u32, ShimError> {
        let k = c_string("npu_xclbin_num_args", kernel)?;
        let mut out: c_uint = 0;
        // SAFETY: valid handle (wrapper invariant), NUL-terminated name, writable outputs.
        check("npu_xclbin_num_args", |e| unsafe {
            npu_xclbin_num_args(ptr(xclbin.0), k.as_ptr(), &mut out, e)
        })?;
        Ok(out)
    }

    fn xclbin_free(&self, xclbin: XclbinHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_xclbin_free(ptr(xclbin.0)) }
    }

    fn register_xclbin(&self, dev: DeviceHandle, xclbin: XclbinHandle) -> Result<(), ShimError> {
        // SAFETY: valid handles (wrapper invariant).
        check("npu_register_xclbin", |e| unsafe {
            npu_register_xclbin(ptr(dev.0), ptr(xclbin.0), e)
        })
    }

    fn hwctx_create(
        &self,
        dev: DeviceHandle,
        xclbin: XclbinHandle,
    ) -> Result<HwCtxHandle, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: valid handles (wrapper invariant); writable outputs.
        check("npu_hwctx_create", |e| unsafe {
            npu_hwctx_create(ptr(dev.0), ptr(xclbin.0), &mut out, e)
        })?;
        Ok(HwCtxHandle(handle(out)))
    }

    fn hwctx_destroy(&self, ctx: HwCtxHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_hwctx_destroy(ptr(ctx.0)) }
    }

    fn kernel_open(&self, ctx: HwCtxHandle, name: &str) -> Result<KernelHandle, ShimError> {
        let n = c_string("npu_kernel_open", name)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: valid handle, NUL-terminated name, writable outputs.
        check("npu_kernel_open", |e| unsafe {
            npu_kernel_open(ptr(ctx.0), n.as_ptr(), &mut out, e)
        })?;
        Ok(KernelHandle(handle(out)))
    }

    fn kernel_group_id(&self, kernel: KernelHandle, argno: u32) -> Result<u32, ShimError> {
        let argno = c_int::try_from(argno).map_err(|_| {
            ShimError::new(
                "npu_kernel_group_id",
                ShimErrorKind::Argument,
                "argument index too large",
            )
        })?;
        let mut out: c_int = 0;
        // SAFETY: valid handle; writable outputs.
        check("npu_kernel_group_id", |e| unsafe {
            npu_kernel_group_id(ptr(kernel.0), argno, &mut out, e)
        })?;
        Ok(out as u32)
    }

    fn kernel_close(&self, kernel: KernelHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_kernel_close(ptr(kernel.0)) }
    }

    fn bo_alloc(
        &self,
        dev: DeviceHandle,
        bytes: usize,
        flags: BoFlags,
        group: u32,
    ) -> Result<BoHandle, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: valid handle; writable outputs.
        check("npu_bo_alloc", |e| unsafe {
            npu_bo_alloc(ptr(dev.0), bytes, flags.code(), group, &mut out, e)
        })?;
        Ok(BoHandle(handle(out)))
    }

    fn bo_sub(&self, parent: BoHandle, size: usize, offset: usize) -> Result<BoHandle, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: valid handle; writable outputs.
        check("npu_bo_sub", |e| unsafe {
            npu_bo_sub(ptr(parent.0), size, offset, &mut out, e)
        })?;
        Ok(BoHandle(handle(out)))
    }

    fn bo_map(&self, bo: BoHandle) -> Result<*mut u8, ShimError> {
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid handle; writable outputs.
        check("npu_bo_map", |e| unsafe {
            npu_bo_map(ptr(bo.0), &mut out, e)
        })?;
        if out.is_null() {
            return Err(ShimError::new(
                "npu_bo_map",
                ShimErrorKind::Xrt,
                "XRT returned a null mapping",
            ));
        }
        Ok(out as *mut u8)
    }

    fn bo_sync(
        &self,
        bo: BoHandle,
        dir: SyncDir,
        size: usize,
        offset: usize,
    ) -> Result<(), ShimError> {
        // SAFETY: valid handle.
        check("npu_bo_sync", |e| unsafe {
            npu_bo_sync(ptr(bo.0), dir.code(), size, offset, e)
        })
    }

    fn bo_write(&self, bo: BoHandle, offset: usize, data: &[u8]) -> Result<(), ShimError> {
        // SAFETY: valid handle; `data` is readable for its length during the call (XRT
        // checks offset + length against the buffer's size).
        check("npu_bo_write", |e| unsafe {
            npu_bo_write(
                ptr(bo.0),
                data.as_ptr() as *const c_void,
                data.len(),
                offset,
                e,
            )
        })
    }

    fn bo_read(&self, bo: BoHandle, offset: usize, out: &mut [u8]) -> Result<(), ShimError> {
        // SAFETY: valid handle; `out` is writable for its length during the call.
        check("npu_bo_read", |e| unsafe {
            npu_bo_read(
                ptr(bo.0),
                out.as_mut_ptr() as *mut c_void,
                out.len(),
                offset,
                e,
            )
        })
    }

    fn bo_free(&self, bo: BoHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_bo_free(ptr(bo.0)) }
    }

    fn run_create(&self, kernel: KernelHandle) -> Result<RunHandle, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: valid handle; writable outputs.
        check("npu_run_create", |e| unsafe {
            npu_run_create(ptr(kernel.0), &mut out, e)
        })?;
        Ok(RunHandle(handle(out)))
    }

    fn run_set_arg_u32(&self, run: RunHandle, index: u32, value: u32) -> Result<(), ShimError> {
        // SAFETY: valid handle.
        check("npu_run_set_arg_u32", |e| unsafe {
            npu_run_set_arg_u32(ptr(run.0), index as c_int, value, e)
        })
    }

    fn run_set_arg_u64(&self, run: RunHandle, index: u32, value: u64) -> Result<(), ShimError> {
        // SAFETY: valid handle.
        check("npu_run_set_arg_u64", |e| unsafe {
            npu_run_set_arg_u64(ptr(run.0), index as c_int, value, e)
        })
    }

    fn run_set_arg_bo(&self, run: RunHandle, index: u32, bo: BoHandle) -> Result<(), ShimError> {
        // SAFETY: valid handles.
        check("npu_run_set_arg_bo", |e| unsafe {
            npu_run_set_arg_bo(ptr(run.0), index as c_int, ptr(bo.0), e)
        })
    }

    fn run_start(&self, run: RunHandle) -> Result<(), ShimError> {
        // SAFETY: valid handle.
        check("npu_run_start", |e| unsafe { npu_run_start(ptr(run.0), e) })
    }

    fn run_wait(&self, run: RunHandle, timeout_ms: u32) -> Result<RunState, ShimError> {
        let mut state: c_int = 0;
        // SAFETY: valid handle; writable outputs.
        check("npu_run_wait", |e| unsafe {
            npu_run_wait(ptr(run.0), timeout_ms, &mut state, e)
        })?;
        Ok(RunState::from_code(state))
    }

    fn run_free(&self, run: RunHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_run_free(ptr(run.0)) }
    }

    fn runlist_create(&self, ctx: HwCtxHandle) -> Result<RunlistHandle, ShimError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: valid handle (wrapper invariant); writable outputs.
        check("npu_runlist_create", |e| unsafe {
            npu_runlist_create(ptr(ctx.0), &mut out, e)
        })?;
        Ok(RunlistHandle(handle(out)))
    }

    fn runlist_add(&self, list: RunlistHandle, run: RunHandle) -> Result<(), ShimError> {
        // SAFETY: valid handles.
        check("npu_runlist_add", |e| unsafe {
            npu_runlist_add(ptr(list.0), ptr(run.0), e)
        })
    }

    fn runlist_submit(&self, list: RunlistHandle) -> Result<(), ShimError> {
        // SAFETY: valid handle.
        check("npu_runlist_execute", |e| unsafe {
            npu_runlist_execute(ptr(list.0), e)
        })
    }

    fn runlist_wait(
        &self,
        list: RunlistHandle,
        timeout_ms: u32,
    ) -> Result<RunlistState, ShimError> {
        let mut state: c_int = 0;
        let mut failed: c_longlong = -1;
        // SAFETY: valid handle; writable outputs.
        check("npu_runlist_wait", |e| unsafe {
            npu_runlist_wait(ptr(list.0), timeout_ms, &mut state, &mut failed, e)
        })?;
        Ok(RunlistState::from_codes(state, failed))
    }

    fn runlist_reset(&self, list: RunlistHandle) -> Result<(), ShimError> {
        // SAFETY: valid handle.
        check("npu_runlist_reset", |e| unsafe {
            npu_runlist_reset(ptr(list.0), e)
        })
    }

    fn runlist_free(&self, list: RunlistHandle) {
        // SAFETY: called once per handle by its owner.
        unsafe { npu_runlist_free(ptr(list.0)) }
    }
}
