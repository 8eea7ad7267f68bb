//! `npu-dry`: the `npu` device's code against the shim's test double. The double's runs
//! compute with the catalogue's bit-exact references (a per-run hook installed when the
//! run is made), so a dry transcript is real; no kernel binary is opened. The kernel
//! manifest is the one the project ships for whisper-base's plan (or the one
//! [`crate::KERNELS_ENV`] names), and every shim call can be logged (`--xrt-log`).

use crate::calllog::{CallContext, LoggingShim};
use crate::device::{read_tensor, write_tensor, NpuXrtDevice, NpuXrtOptions, FIRST_DATA_ARG};
use crate::double::{RecordingShim, RunInvocation};
use crate::manifest::{ArgBinding, KernelEntry, Manifest};
use crate::shim::ShimApi;
use amanuensis_runtime::npu::kernel_of;
use amanuensis_runtime::schedule::Plan;
use amanuensis_runtime::tensor::DType;
use std::path::Path;
use std::sync::Arc;

/// The kernel manifest the project ships: every catalogue kernel variant whisper-base's
/// encoder and cross K/V plans need (binaries are not in the repository).
pub const SHIPPED_MANIFEST: &str = include_str!("../kernels/whisper-base/manifest.json");

/// Where the shipped manifest's relative paths resolve (never opened by a dry run).
pub const SHIPPED_MANIFEST_DIR: &str = "xrt/kernels/whisper-base";

/// The manifest a dry run uses: [`crate::KERNELS_ENV`]'s when set, else the shipped one.
pub fn dry_manifest() -> Result<Arc<Manifest>, String> {
    if crate::manifest::manifest_path_from_env().is_some() {
        return crate::manifest::load_from_env().map_err(|e| e.to_string());
    }
    let dir = Path::new(SHIPPED_MANIFEST_DIR);
    Manifest::parse(SHIPPED_MANIFEST, &dir.join("manifest.json"), dir)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Call logs of the devices opened so far (devices live as long as the process, so
/// their logs are flushed explicitly: [`flush_call_logs`]).
static OPEN_LOGS: std::sync::Mutex<Vec<Arc<LoggingShim>>> = std::sync::Mutex::new(Vec::new());

/// Writes out every open call log; the first write error, if any.
pub fn flush_call_logs() -> Result<(), String> {
    for l in OPEN_LOGS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        l.flush()
            .map_err(|e| format!("writing the XRT call log: {e}"))?;
        if let Some(e) = l.log_error() {
            return Err(e);
        }
    }
    Ok(())
}

/// Wraps a shim in the call log when `--xrt-log` asked for one; returns the shim and the
/// context its records are tagged from.
pub fn logged(shim: Arc<dyn ShimApi>) -> Result<(Arc<dyn ShimApi>, Option<CallContext>), String> {
    match crate::register::call_log_path() {
        None => Ok((shim, None)),
        Some(path) => {
            let ctx = CallContext::new();
            let l =
                Arc::new(LoggingShim::create(shim, &path, ctx.clone()).map_err(|e| e.to_string())?);
            OPEN_LOGS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(l.clone());
            Ok((l, Some(ctx)))
        }
    }
}

/// Opens the dry-run device.
pub fn dry_device(options: NpuXrtOptions) -> Result<NpuXrtDevice, String> {
    let manifest = dry_manifest()?;
    // Long runs make many calls: the double keeps no call list (the log file has them).
    let double = Arc::new(RecordingShim::dry().with_call_list(false));
    double.declare_manifest(&manifest);
    let (shim, calls) = logged(double.clone())?;
    NpuXrtDevice::with_shim(
        shim,
        manifest,
        NpuXrtOptions {
            dry: true,
            ..options
        },
    )
    .map(|d| d.with_dry_double(double).with_call_context(calls))
    .map_err(|e| e.to_string())
}

/// Computes node `node` of `plan` for one execution of its run: reads the inputs from
/// the argument buffers in the entry's element types, evaluates the kernel's reference,
/// writes the outputs back.
pub fn compute(
    plan: &Plan,
    node: usize,
    entry: &KernelEntry,
    inv: &mut RunInvocation<'_>,
) -> Result<(), String> {
    let n = &plan.graph.nodes[node];
    let k =
        kernel_of(n.op.as_ref())?.ok_or_else(|| format!("node '{}' has no NPU kernel", n.name))?;
    let arg_of = |b: ArgBinding| {
        entry
            .args
            .iter()
            .position(|a| a.binding == b)
            .map(|i| (FIRST_DATA_ARG + i as u32, entry.args[i].dtype))
            .ok_or_else(|| format!("kernel {}: no argument for {b:?}", entry.label()))
    };
    let mut inputs = Vec::with_capacity(entry.variant.0.len());
    for (i, shape) in entry.variant.0.iter().enumerate() {
        let (argno, dtype) = arg_of(ArgBinding::Input(i))?;
        // A buffer may be larger than the value: values of one arena slot share it.
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let src = inv.arg(argno)?;
        let src = src
            .get(..bytes)
            .ok_or_else(|| format!("a {}-byte buffer does not hold shape {shape:?}", src.len()))?;
        inputs.push(read_tensor(src, dtype, DType::F32, shape)?);
    }
    let refs: Vec<_> = inputs.iter().collect();
    let outs = k.eval(&refs).map_err(|e| e.to_string())?;
    for (o, t) in outs.iter().enumerate() {
        let (argno, dtype) = arg_of(ArgBinding::Output(o))?;
        let bytes = t.numel() * dtype.size();
        let dst = inv.arg_mut(argno)?;
        let len = dst.len();
        let dst = dst
            .get_mut(..bytes)
            .ok_or_else(|| format!("output {o}: {bytes} bytes exceed its {len}-byte buffer"))?;
        write_tensor(t, dtype, dst)?;
    }
    Ok(())
}
