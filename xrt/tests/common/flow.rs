//! The host flow of the NPU device (`NpuXrtDevice::ensure_loaded` then `dispatch`), call for
//! call, for a tiny "add" kernel: c = a + b over f32 buffers (arguments 3, 4, 5).

use amanuensis_xrt::double::RunInvocation;
use amanuensis_xrt::wrap::{Bo, Device, HwContext, Kernel, Run, Shim, Xclbin};
use amanuensis_xrt::{BoFlags, RunState, ShimError, SyncDir};
use std::path::Path;
use std::sync::Arc;

/// The kernel's arguments: opcode, instructions, word count, a, b, c.
pub const ADD_ARGS: u32 = 6;

/// Device, context and kernel, opened as the device opens them.
pub fn open_kernel(shim: Shim, xclbin: &Path, name: &str) -> Result<Arc<Kernel>, String> {
    let device = Device::open(shim.clone(), 0).map_err(|e| e.to_string())?;
    device.name().map_err(|e| e.to_string())?;
    let x = Xclbin::load(shim, xclbin).map_err(|e| e.to_string())?;
    let names = x.kernel_names().map_err(|e| e.to_string())?;
    if !names.iter().any(|n| n == name) {
        return Err(format!("kernel {name} not in {names:?}"));
    }
    let ctx = HwContext::create(device, x).map_err(|e| e.to_string())?;
    let n = ctx.xclbin().num_args(name).map_err(|e| e.to_string())?;
    if n < ADD_ARGS {
        return Err(format!("{n} arguments"));
    }
    Kernel::open(ctx, name).map_err(|e| e.to_string())
}

/// A loaded run of the add kernel over `n` elements. Field order is drop order: the run
/// before the buffers it refers to.
pub struct AddRun {
    pub run: Run,
    pub data: Vec<Bo>,
    pub instr: Bo,
}

/// Instruction buffer, three data buffers, a run with every argument set.
pub fn load_add(kernel: &Arc<Kernel>, n: usize, words: &[u32]) -> Result<AddRun, ShimError> {
    let mut instr = Bo::alloc(
        kernel,
        words.len() * 4,
        BoFlags::Cacheable,
        kernel.group_id(1)?,
    )?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    instr.write(0, &bytes)?;
    instr.sync(SyncDir::ToDevice)?;
    let mut data = Vec::new();
    for argno in 3..ADD_ARGS {
        data.push(Bo::alloc(
            kernel,
            n * 4,
            BoFlags::HostOnly,
            kernel.group_id(argno)?,
        )?);
    }
    let run = Run::create(kernel.clone())?;
    run.set_u32(0, 3)?;
    run.set_bo(1, &instr)?;
    run.set_u32(2, words.len() as u32)?;
    for (i, bo) in data.iter().enumerate() {
        run.set_bo(3 + i as u32, bo)?;
    }
    Ok(AddRun { run, data, instr })
}

pub fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Inputs in and synced (`bo_write`, `bo_sync` to the device).
pub fn write_inputs(r: &mut AddRun, a: &[f32], b: &[f32]) -> Result<(), ShimError> {
    r.data[0].write(0, &to_bytes(a))?;
    r.data[0].sync(SyncDir::ToDevice)?;
    r.data[1].write(0, &to_bytes(b))?;
    r.data[1].sync(SyncDir::ToDevice)
}

/// Output synced back and read (`bo_sync` from the device, `bo_read`).
pub fn read_output(r: &AddRun) -> Result<Vec<f32>, ShimError> {
    r.data[2].sync(SyncDir::FromDevice)?;
    let mut out = vec![0u8; r.data[2].size()];
    r.data[2].read(0, &mut out)?;
    Ok(from_bytes(&out))
}

/// One dispatch: inputs in, start, wait, output out.
pub fn dispatch_add(r: &mut AddRun, a: &[f32], b: &[f32]) -> Result<Vec<f32>, String> {
    write_inputs(r, a, b).map_err(|e| e.to_string())?;
    r.run.start().map_err(|e| e.to_string())?;
    match r.run.wait(1000).map_err(|e| e.to_string())? {
        RunState::Completed => {}
        s => return Err(format!("run ended in state {s}")),
    }
    read_output(r).map_err(|e| e.to_string())
}

/// The add kernel's reference, computing on the double's device buffers.
pub fn add_hook(inv: &mut RunInvocation<'_>) -> Result<(), String> {
    let a = inv.read_f32(3)?;
    let b = inv.read_f32(4)?;
    if a.len() != b.len() {
        return Err(format!("a has {} elements, b {}", a.len(), b.len()));
    }
    let c: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    inv.write_f32(5, &c)
}

/// Test data: distinct values whose sums are exact in f32.
pub fn operands(n: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let a = (0..n).map(|i| (i as f32) * 0.5 + seed as f32).collect();
    let b = (0..n).map(|i| -(i as f32) * 0.25 + 1000.0).collect();
    (a, b)
}
