//! Safe owners of shim handles. Each object keeps its parent alive through an `Arc`, so the
//! destruction order XRT needs (runs, buffers and kernels, then the hardware context and
//! the xclbin, then the device) follows from ownership and cannot be got wrong.

use crate::shim::{
    BoFlags, BoHandle, DeviceHandle, HwCtxHandle, KernelHandle, RunHandle, RunState, ShimApi,
    ShimError, ShimErrorKind, SyncDir, XclbinHandle,
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

// SAFETY: the mapping is owned by this object alone and only reached through `&mut self`
// (writes) or `&self` (reads); XRT buffers may be used from any thread.
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
        let shim = kernel.shim().clone();
        let handle = shim.bo_alloc(kernel.ctx.device().handle(), size, flags, group)?;
        let mut bo = Bo {
            handle,
            map: std::ptr::null_mut(),
            size,
            kernel: kernel.clone(),
        };
        // On failure `bo` drops here and frees the buffer.
        bo.map = shim.bo_map(handle)?;
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
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kernel.shim().run_free(self.handle);
    }
}
