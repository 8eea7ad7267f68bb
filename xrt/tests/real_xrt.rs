//! The real XRT library (only when the build found it): on a machine without an NPU every
//! entry point reached returns a clear error instead of crashing.

#![cfg(xrt_shim)]

use amanuensis_xrt::shim::{DeviceHandle, XclbinHandle};
use amanuensis_xrt::{ShimApi, ShimErrorKind, XrtShim};
use std::path::Path;

#[test]
fn shim_reports_the_version_it_was_built_against() {
    let shim = XrtShim::new().expect("ABI matches");
    assert_eq!(shim.xrt_version(), amanuensis_xrt::XRT_VERSION);
    assert_eq!(shim.has_hwctx(), amanuensis_xrt::BUILT_WITH_HWCTX);
    assert!(shim
        .describe()
        .starts_with(&format!("XRT {}", amanuensis_xrt::XRT_VERSION)));
}

#[test]
fn opening_a_device_without_an_npu_is_a_clear_error() {
    if !amanuensis_xrt::accel_nodes().is_empty() {
        eprintln!("this machine has /dev/accel nodes; the no-device case is not checkable here");
        return;
    }
    let shim = XrtShim::new().unwrap();
    let err = shim.device_open(0).expect_err("no device on this machine");
    assert_eq!(err.call, "npu_device_open");
    assert_eq!(err.kind, ShimErrorKind::Xrt);
    assert!(!err.message.is_empty());
    eprintln!("XRT says: {err}");
}

#[test]
fn loading_a_missing_or_corrupt_xclbin_is_a_clear_error() {
    let shim = XrtShim::new().unwrap();
    let err = shim
        .xclbin_load(Path::new("/nonexistent/kernel.xclbin"))
        .expect_err("missing file");
    assert_eq!(err.kind, ShimErrorKind::Xrt);
    assert!(err.message.contains("/nonexistent/kernel.xclbin"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xclbin");
    std::fs::write(&bad, b"definitely not an xclbin").unwrap();
    let err = shim.xclbin_load(&bad).expect_err("corrupt file");
    assert_eq!(err.kind, ShimErrorKind::Xrt);
    assert!(!err.message.is_empty());
}

#[cfg(not(xrt_hwctx))]
#[test]
fn xrt_without_hw_context_refuses_with_the_exact_message() {
    use amanuensis_xrt::{Manifest, NpuXrtDevice, NpuXrtOptions, XrtError};
    use std::sync::Arc;
    let shim = XrtShim::new().unwrap();
    let want = format!(
        "XRT {} has no hw_context; the NPU needs XRT >= 2.14 (>= 2.17 in practice)",
        amanuensis_xrt::XRT_VERSION
    );
    // The 2.13 variant returns before touching its arguments.
    let err = shim
        .hwctx_create(DeviceHandle(0), XclbinHandle(0))
        .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ShimErrorKind::Unsupported, want.as_str())
    );
    let err = shim
        .register_xclbin(DeviceHandle(0), XclbinHandle(0))
        .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ShimErrorKind::Unsupported, want.as_str())
    );

    let manifest = Arc::new(
        Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/npu/manifest.json"))
            .unwrap(),
    );
    let err = NpuXrtDevice::open(manifest, NpuXrtOptions::default()).unwrap_err();
    assert!(matches!(err, XrtError::NoHwContext(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("the NPU device is unavailable: {want}")
    );
}

#[cfg(xrt_hwctx)]
#[test]
fn null_handles_are_refused_not_dereferenced() {
    let shim = XrtShim::new().unwrap();
    let err = shim
        .hwctx_create(DeviceHandle(0), XclbinHandle(0))
        .unwrap_err();
    assert_eq!(err.kind, ShimErrorKind::Argument);
}

#[test]
fn shim_reports_runlist_support_as_built() {
    let shim = XrtShim::new().unwrap();
    assert_eq!(shim.has_runlist(), amanuensis_xrt::BUILT_WITH_RUNLIST);
    if amanuensis_xrt::BUILT_WITH_RUNLIST {
        assert!(shim.has_hwctx(), "runlists live on hardware contexts");
    }
}

#[cfg(not(xrt_runlist))]
#[test]
fn xrt_without_runlist_refuses_with_the_exact_message() {
    use amanuensis_xrt::shim::{HwCtxHandle, RunHandle, RunlistHandle};
    let shim = XrtShim::new().unwrap();
    let expected = amanuensis_xrt::no_runlist_message(amanuensis_xrt::XRT_VERSION);
    assert!(expected.contains("has no runlist (needs >= 2.18)"));
    // The entry points fail before looking at their (here meaningless) handles.
    let errors = [
        shim.runlist_create(HwCtxHandle(0)).map(|_| ()),
        shim.runlist_add(RunlistHandle(0), RunHandle(0)),
        shim.runlist_submit(RunlistHandle(0)),
        shim.runlist_wait(RunlistHandle(0), 1).map(|_| ()),
        shim.runlist_reset(RunlistHandle(0)),
    ];
    let calls = [
        "npu_runlist_create",
        "npu_runlist_add",
        "npu_runlist_execute",
        "npu_runlist_wait",
        "npu_runlist_reset",
    ];
    for (r, call) in errors.into_iter().zip(calls) {
        let e = r.expect_err("no runlist in this build");
        assert_eq!(e.call, call);
        assert_eq!(e.kind, ShimErrorKind::Unsupported);
        assert_eq!(e.message, expected);
    }
}

#[cfg(xrt_runlist)]
#[test]
fn null_runlist_handles_are_refused_not_dereferenced() {
    use amanuensis_xrt::shim::{HwCtxHandle, RunHandle, RunlistHandle};
    let shim = XrtShim::new().unwrap();
    let e = shim.runlist_create(HwCtxHandle(0)).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);
    let e = shim
        .runlist_add(RunlistHandle(0), RunHandle(0))
        .unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);
    let e = shim.runlist_wait(RunlistHandle(0), 1).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);
}

#[test]
fn null_buffer_handles_are_refused_by_write_and_read() {
    use amanuensis_xrt::shim::BoHandle;
    let shim = XrtShim::new().unwrap();
    let e = shim.bo_write(BoHandle(0), 0, &[1, 2, 3]).unwrap_err();
    assert_eq!((e.call, e.kind), ("npu_bo_write", ShimErrorKind::Argument));
    let mut out = [0u8; 3];
    let e = shim.bo_read(BoHandle(0), 0, &mut out).unwrap_err();
    assert_eq!((e.call, e.kind), ("npu_bo_read", ShimErrorKind::Argument));
}
