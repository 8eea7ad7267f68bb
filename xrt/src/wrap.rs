//! Safe owners of shim handles. Each object keeps its parent alive through an `Arc`, so the
//! destruction order XRT needs (runs, buffers and kernels, then the hardware context and
//! the xclbin, then the device) follows from ownership and cannot be got wrong.

use crate::shim::{
    BoFlags, BoHandle, DeviceHandle, HwCtxHandle, KernelHandle, RunHandle, RunState, RunlistHandle,
    RunlistState, ShimApi, ShimError, ShimErrorKind, SyncDir, XclbinHandle,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shim shared by every object of one device.
pub type Shim = Arc<dyn ShimApi>;

/// An open device.
pub struct Device {
    shim: Shim,
    handle: DeviceHandle,
}

impl Device {
    /// Opens device `index`.
    pub fn open(shim: Shim, index: u32) -> Result<Arc<Device>, ShimError> {
        let handle = shim.device_open(index)?;
        Ok(Arc::new(Device { shim, handle }))
    }

    /// The device's name as XRT reports it (e.g. "NPU Phoenix").
    pub fn name(&self) -> Result<String, ShimError> {
        self.shim.device_name(self.handle)
    }

    /// The shim.
    pub fn shim(&self) -> &Shim {
        &self.shim
    }

    /// The raw handle.
    pub fn handle(&self) -> DeviceHandle {
        self.handle
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.shim.device_close(self.handle);
    }
}

/// A loaded xclbin.
pub struct Xclbin {
    shim: Shim,
    handle: XclbinHandle,
    path: PathBuf,
}

impl Xclbin {
    /// Reads and parses an xclbin file.
    pub fn load(shim: Shim, path: &Path) -> Result<Xclbin, ShimError> {
        let handle = shim.xclbin_load(path)?;
        Ok(Xclbin {
            shim,
            handle,
            path: path.to_path_buf(),
        })
    }

    /// Kernel names in the xclbin.
    pub fn kernel_names(&self) -> Result<Vec<String>, ShimError> {
        self.shim.xclbin_kernel_names(self.handle)
    }

    /// Argument count of one kernel.
    pub fn num_args(&self, kernel: &str) -> Result<u32, ShimError> {
        self.shim.xclbin_num_args(self.handle, kernel)
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw handle.
    pub fn handle(&self) -> XclbinHandle {
        self.handle
    }
}

impl Drop for Xclbin {
    fn drop(&mut self) {
        self.shim.xclbin_free(self.handle);
    }
}

/// A hardware context: an xclbin registered on a device with its resources reserved.
pub struct HwContext {
    handle: HwCtxHandle,
    xclbin: Xclbin,
    device: Arc<Device>,
}

impl HwContext {
    /// Registers `xclbin` with `device` and creates the context (milliseconds: cache it).
    pub fn create(device: Arc<Device>, xclbin: Xclbin) -> Result<Arc<HwContext>, ShimError> {
        let shim = device.shim().clone();
        shim.register_xclbin(device.handle(), xclbin.handle())?;
        let handle = shim.hwctx_create(device.handle(), xclbin.handle())?;
        Ok(Arc::new(HwContext {
            handle,
            xclbin,
            device,
        }))
    }

    /// The xclbin.
    pub fn xclbin(&self) -> &Xclbin {
        &self.xclbin
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The raw handle.
    pub fn handle(&self) -> HwCtxHandle {
        self.handle
    }
}

impl Drop for HwContext {
    fn drop(&mut self) {
        // Fields (the xclbin, then the device reference) drop after this.
        self.device.shim().hwctx_destroy(self.handle);
    }
}

/// A kernel of a hardware context.
pub struct Kernel {
    handle: KernelHandle,
    name: String,
    ctx: Arc<HwContext>,
}

impl Kernel {
    /// Opens kernel `name` in `ctx`.
    pub fn open(ctx: Arc<HwContext>, name: &str) -> Result<Arc<Kernel>, ShimError> {
        let handle = ctx.device().shim().kernel_open(ctx.handle, name)?;
        Ok(Arc::new(Kernel {
            handle,
            name: name.to_string(),
            ctx,
        }))
    }

    /// The memory group of argument `argno` (1 = instructions, 3+i = data buffer i).
    pub fn group_id(&self, argno: u32) -> Result<u32, ShimError> {
        self.shim().kernel_group_id(self.handle, argno)
    }

    /// Its name in the xclbin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The context.
    pub fn context(&self) -> &Arc<HwContext> {
        &self.ctx
    }

    /// The raw handle.
    pub fn handle(&self) -> KernelHandle {
        self.handle
    }

    fn shim(&self) -> &Shim {
        self.ctx.device().shim()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.shim().kernel_close(self.handle);
    }
}

/// A mapped buffer object of a kernel's argument (it keeps the kernel, hence the context,
/// alive: buffers go before the context that uses them).
pub struct Bo {
    handle: BoHandle,
    map: *mut u8,
    size: usize,
    kernel: Arc<Kernel>,
}

// SAFETY: the mapping is owned by this object alone (a slot's is a range of its arena's,
// which the arena never views) and only reached through `&mut self` (writes) or `&self`
// (reads); XRT buffers may be used from any thread.
unsafe impl Send for Bo {}

impl Bo {
    /// Allocates `size` bytes with `flags` in memory group `group` for `kernel` and maps them.
    pub fn alloc(
        kernel: &Arc<Kernel>,
        size: usize,
        flags: BoFlags,
        group: u32,
    ) -> Result<Bo, ShimError> {
        if size == 0 {
            return Err(ShimError::new(
                "npu_bo_alloc",
                ShimErrorKind::Argument,
                "zero-size buffer",
            ));
        }
        let handle = kernel
            .shim()
            .bo_alloc(kernel.ctx.device().handle(), size, flags, group)?;
        Bo::mapped(handle, size, kernel)
    }

    /// Takes ownership of buffer `handle` of `size` bytes and maps it.
    fn mapped(handle: BoHandle, size: usize, kernel: &Arc<Kernel>) -> Result<Bo, ShimError> {
        let mut bo = Bo {
            handle,
            map: std::ptr::null_mut(),
            size,
            kernel: kernel.clone(),
        };
        // On failure `bo` drops here and frees the buffer.
        bo.map = kernel.shim().bo_map(handle)?;
        Ok(bo)
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The host view of the buffer.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `map` points to `size` mapped bytes that live until bo_free in Drop; no
        // mutable view exists while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.map, self.size) }
    }

    /// The host view of the buffer, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.map, self.size) }
    }

    /// Syncs the whole buffer in `dir`.
    pub fn sync(&self, dir: SyncDir) -> Result<(), ShimError> {
        self.kernel.shim().bo_sync(self.handle, dir, self.size, 0)
    }

    /// Syncs `size` bytes from `offset` in `dir`.
    pub fn sync_range(&self, dir: SyncDir, size: usize, offset: usize) -> Result<(), ShimError> {
        self.check_range("npu_bo_sync", offset, size)?;
        self.kernel.shim().bo_sync(self.handle, dir, size, offset)
    }

    /// Copies `data` into the host view at `offset` through the shim (`bo::write`), so the
    /// copy shows in a call log; it is not synced.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), ShimError> {
        self.check_range("npu_bo_write", offset, data.len())?;
        self.kernel.shim().bo_write(self.handle, offset, data)
    }

    /// Copies the host view from `offset` into `out` through the shim (`bo::read`); sync
    /// from the device first.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), ShimError> {
        self.check_range("npu_bo_read", offset, out.len())?;
        self.kernel.shim().bo_read(self.handle, offset, out)
    }

    fn check_range(&self, call: &'static str, offset: usize, len: usize) -> Result<(), ShimError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(ShimError::new(
                call,
                ShimErrorKind::Argument,
                format!(
                    "{len} bytes at offset {offset} exceed the {}-byte buffer",
                    self.size
                ),
            )),
        }
    }

    /// The kernel it was allocated for.
    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    /// The raw handle.
    pub fn handle(&self) -> BoHandle {
        self.handle
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        self.kernel.shim().bo_free(self.handle);
    }
}

/// A device arena: one buffer object that is only ever used through sub-buffers of it
/// (its slots), so it is never mapped and no host view overlaps theirs. Its slots must be
/// dropped first.
pub struct Arena {
    handle: BoHandle,
    size: usize,
    kernel: Arc<Kernel>,
}

impl Arena {
    /// Allocates an arena of `size` bytes with `flags` in memory group `group` for `kernel`.
    pub fn alloc(
        kernel: &Arc<Kernel>,
        size: usize,
        flags: BoFlags,
        group: u32,
    ) -> Result<Arena, ShimError> {
        if size == 0 {
            return Err(ShimError::new(
                "npu_bo_alloc",
                ShimErrorKind::Argument,
                "zero-size buffer",
            ));
        }
        let handle = kernel
            .shim()
            .bo_alloc(kernel.ctx.device().handle(), size, flags, group)?;
        Ok(Arena {
            handle,
            size,
            kernel: kernel.clone(),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes `[offset, offset + size)` as a buffer of their own (`xrt::bo(parent, size,
    /// offset)`), mapped; slots of one arena must not overlap.
    pub fn slot(&self, size: usize, offset: usize) -> Result<Bo, ShimError> {
        match offset.checked_add(size) {
            Some(end) if size > 0 && end <= self.size => {}
            _ => {
                return Err(ShimError::new(
                    "npu_bo_sub",
                    ShimErrorKind::Argument,
                    format!(
                        "{size} bytes at offset {offset} are empty or exceed the {}-byte arena",
                        self.size
                    ),
                ))
            }
        }
        let handle = self.kernel.shim().bo_sub(self.handle, size, offset)?;
        Bo::mapped(handle, size, &self.kernel)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        self.kernel.shim().bo_free(self.handle);
    }
}

/// A run object of one kernel, set up once and started for every dispatch.
pub struct Run {
    handle: RunHandle,
    kernel: Arc<Kernel>,
}

impl Run {
    /// A run of `kernel`.
    pub fn create(kernel: Arc<Kernel>) -> Result<Run, ShimError> {
        let handle = kernel.shim().run_create(kernel.handle)?;
        Ok(Run { handle, kernel })
    }

    /// Sets a 32-bit scalar argument.
    pub fn set_u32(&self, index: u32, value: u32) -> Result<(), ShimError> {
        self.kernel
            .shim()
            .run_set_arg_u32(self.handle, index, value)
    }

    /// Sets a buffer argument.
    pub fn set_bo(&self, index: u32, bo: &Bo) -> Result<(), ShimError> {
        self.kernel
            .shim()
            .run_set_arg_bo(self.handle, index, bo.handle())
    }

    /// Starts the run.
    pub fn start(&self) -> Result<(), ShimError> {
        self.kernel.shim().run_start(self.handle)
    }

    /// Waits up to `timeout_ms`.
    pub fn wait(&self, timeout_ms: u32) -> Result<RunState, ShimError> {
        self.kernel.shim().run_wait(self.handle, timeout_ms)
    }

    /// Sets a 64-bit scalar argument.
    pub fn set_u64(&self, index: u32, value: u64) -> Result<(), ShimError> {
        self.kernel
            .shim()
            .run_set_arg_u64(self.handle, index, value)
    }

    /// The kernel.
    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.kernel
    }

    /// The raw handle.
    pub fn handle(&self) -> RunHandle {
        self.handle
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kernel.shim().run_free(self.handle);
    }
}

/// A runlist of one hardware context: it owns the runs added to it, so a run in a list
/// cannot be started on its own (XRT leaves that undefined) and outlives the list.
///
/// Build it once (add the runs with their arguments set), then [`Runlist::submit`] and
/// [`Runlist::wait`] (or [`Runlist::execute`]) as often as needed. Dropping a list that is
/// still executing waits up to 5 s for it first.
pub struct Runlist {
    handle: RunlistHandle,
    // Freed after the list (Drop runs before the fields drop).
    runs: Vec<Run>,
    ctx: Arc<HwContext>,
    executing: bool,
}

impl Runlist {
    /// An empty runlist on `ctx`; fails with [`ShimErrorKind::Unsupported`] on an XRT
    /// without runlists (check [`ShimApi::has_runlist`] to fall back to chained runs).
    pub fn create(ctx: Arc<HwContext>) -> Result<Runlist, ShimError> {
        let handle = ctx.device().shim().runlist_create(ctx.handle())?;
        Ok(Runlist {
            handle,
            runs: Vec::new(),
            ctx,
            executing: false,
        })
    }

    /// Appends `run` (of a kernel of this list's context). On failure the run is dropped.
    pub fn add(&mut self, run: Run) -> Result<(), ShimError> {
        if !Arc::ptr_eq(run.kernel().context(), &self.ctx) {
            return Err(ShimError::new(
                "npu_runlist_add",
                ShimErrorKind::Argument,
                format!(
                    "run of kernel '{}' belongs to another hardware context",
                    run.kernel().name()
                ),
            ));
        }
        if self.executing {
            return Err(ShimError::new(
                "npu_runlist_add",
                ShimErrorKind::Argument,
                "the runlist is executing: wait for it first",
            ));
        }
        self.shim().runlist_add(self.handle, run.handle())?;
        self.runs.push(run);
        Ok(())
    }

    /// Submits every run, to execute in the order added.
    pub fn submit(&mut self) -> Result<(), ShimError> {
        self.shim().runlist_submit(self.handle)?;
        self.executing = true;
        Ok(())
    }

    /// Waits up to `timeout_ms` (0 blocks forever). The list stays executing after a
    /// timeout (wait again); it is done after completion or a failed run.
    pub fn wait(&mut self, timeout_ms: u32) -> Result<RunlistState, ShimError> {
        let state = self.shim().runlist_wait(self.handle, timeout_ms)?;
        if state != RunlistState::Timeout {
            self.executing = false;
        }
        Ok(state)
    }

    /// Submits and waits.
    pub fn execute(&mut self, timeout_ms: u32) -> Result<RunlistState, ShimError> {
        self.submit()?;
        self.wait(timeout_ms)
    }

    /// Empties the list and hands its runs back (they may then be started on their own or
    /// added to another list).
    pub fn reset(&mut self) -> Result<Vec<Run>, ShimError> {
        self.shim().runlist_reset(self.handle)?;
        self.executing = false;
        Ok(std::mem::take(&mut self.runs))
    }

    /// The runs, in order.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Number of runs.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether the list has no runs.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether it was submitted and not yet waited to the end.
    pub fn is_executing(&self) -> bool {
        self.executing
    }

    /// The context.
    pub fn context(&self) -> &Arc<HwContext> {
        &self.ctx
    }

    /// The raw handle.
    pub fn handle(&self) -> RunlistHandle {
        self.handle
    }

    fn shim(&self) -> &Shim {
        self.ctx.device().shim()
    }
}

/// How long dropping a still-executing runlist waits for it before freeing it anyway.
const RUNLIST_DRAIN_MS: u32 = 5000;

impl Drop for Runlist {
    fn drop(&mut self) {
        let shim = self.ctx.device().shim();
        if self.executing {
            // XRT's destructor does not wait, and the runs and buffers go next: give the
            // device the chance to finish with them first.
            if let Err(e) = shim.runlist_wait(self.handle, RUNLIST_DRAIN_MS) {
                tracing::warn!("waiting for a runlist before freeing it: {e}");
            }
        }
        shim.runlist_free(self.handle);
    }
}
