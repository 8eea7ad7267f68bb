//! `npu-dry`: the `npu` device's code against the shim's test double. The double's runs
//! compute with the catalogue's bit-exact references (a per-run hook installed when the
//! run is made), so a dry transcript is real; no kernel binary is opened. The kernel
//! manifest is the one the project ships for whisper-base's plan (or the one
//! [`crate::KERNELS_ENV`] names), and every shim call can be logged (`--xrt-log`).

use crate::calllog::{call_log_path, CallContext, LoggingShim};
use crate::device::{NpuXrtDevice, NpuXrtOptions};
use crate::double::RecordingShim;
use crate::manifest::Manifest;
use crate::shim::ShimApi;
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
    match call_log_path() {
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

pub use crate::reference::compute;
