//! The real device's host flow, checked call by call against the recording double: the
//! exact XRT call sequence of a matmul dispatch, buffer reuse, numbers equal to the
//! catalogue reference bit for bit, and every failure path coming back as a clear error or
//! a `DeviceError::Fault` (never a panic), with nothing leaked or freed out of order.

mod common;

use amanuensis_runtime::device::{Device, DeviceError, DeviceKind, Support};
use amanuensis_runtime::{Graph, Tensor};
use amanuensis_xrt::double::{Call, Failure, Step, DEVICE_LOST, GROUP_ID_BASE};
use amanuensis_xrt::{
    BoFlags, Manifest, NpuXrtDevice, NpuXrtOptions, RecordingShim, RunState, ShimApi, SyncDir,
    XrtError,
};
use common::*;
use std::path::PathBuf;
use std::sync::Arc;

const M: usize = 70;
const K: usize = 96;
const N: usize = 40;
const WORDS: usize = 24;
const TIMEOUT_MS: u32 = 250;

struct Setup {
    fx: Fixture,
    shim: Arc<RecordingShim>,
    graph: Graph,
    xclbin: PathBuf,
    words: Vec<u32>,
}

/// A fixture with one matmul_bias entry (7 kernel arguments: 3 control + 4 data).
fn setup() -> Setup {
    let fx = Fixture::new();
    let xclbin = fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    let words = fake_instructions(WORDS);
    fx.insts("mm.insts.bin", &words);
    fx.manifest(&[matmul_entry(M, K, N, "mm.xclbin", "mm.insts.bin", "")]);
    let shim = Arc::new(RecordingShim::new());
    Setup {
        fx,
        shim,
        graph: linear_graph(M, K, N, true, "{}"),
        xclbin,
        words,
    }
}

fn options() -> NpuXrtOptions {
    NpuXrtOptions {
        timeout_ms: TIMEOUT_MS,
        ..NpuXrtOptions::default()
    }
}

fn open(s: &Setup) -> NpuXrtDevice {
    let manifest = Arc::new(Manifest::load(&s.fx.path("manifest.json")).expect("manifest loads"));
    NpuXrtDevice::with_shim(s.shim.clone(), manifest, options()).expect("device opens")
}

fn inputs() -> (Tensor, Tensor, Tensor) {
    (
        Tensor::from_f32(&[M, K], tricky_data(M * K, 1)).unwrap(),
        Tensor::from_f32(&[N, K], tricky_data(N * K, 2)).unwrap(),
        Tensor::from_f32(&[N], tricky_data(N, 3)).unwrap(),
    )
}

fn fault_reason(r: Result<Vec<Tensor>, DeviceError>) -> String {
    match r {
        Err(DeviceError::Fault { device, reason }) => {
            assert_eq!(device, "npu");
            reason
        }
        Err(e) => panic!("expected a Fault, got the error {e}"),
        Ok(_) => panic!("expected a Fault, got outputs"),
    }
}

/// After the device is dropped: every object freed, in a valid order.
fn assert_clean(shim: &RecordingShim) {
    assert_eq!(
        shim.violations(),
        Vec::<String>::new(),
        "destruction-order or handle violations"
    );
    assert_eq!(shim.live_objects(), 0, "objects leaked");
}

fn execute(
    dev: &mut NpuXrtDevice,
    g: &Graph,
    t: &(Tensor, Tensor, Tensor),
) -> Result<Vec<Tensor>, DeviceError> {
    dev.execute(&g.nodes[0], &[&t.0, &t.1, &t.2])
}

#[test]
fn matmul_dispatch_call_sequence_is_exact() {
    let s = setup();
    s.shim.on_run(matmul_hook(M, K, N, s.words.clone()));
    let mut dev = open(&s);
    assert_eq!(dev.name(), "npu");
    assert_eq!(dev.kind(), DeviceKind::Npu);
    assert_eq!(dev.device_name(), "NPU Phoenix");
    assert_eq!(
        dev.supports(&s.graph, &s.graph.nodes[0]),
        Support::Yes {
            kernel: "matmul_bias".into()
        }
    );
    let t = inputs();
    execute(&mut dev, &s.graph, &t).expect("dispatch succeeds");
    drop(dev);

    // Handles are numbered in creation order by the double.
    let (d, x, ctx, k, ib, b0, b1, b2, b3, run) = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    let g = |argno: u32| GROUP_ID_BASE + argno;
    let expected = vec![
        Call::DeviceOpen { index: 0 },
        Call::DeviceName { dev: d },
        // Context: load, check the kernel is there, register (never load_xclbin), create.
        Call::XclbinLoad {
            path: s.xclbin.clone(),
        },
        Call::XclbinKernelNames { xclbin: x },
        Call::RegisterXclbin { dev: d, xclbin: x },
        Call::HwctxCreate { dev: d, xclbin: x },
        Call::XclbinNumArgs {
            xclbin: x,
            kernel: "MLIR_AIE".into(),
        },
        Call::KernelOpen {
            ctx,
            name: "MLIR_AIE".into(),
        },
        // Instruction buffer: cacheable, group of argument 1, filled and synced once.
        Call::KernelGroupId {
            kernel: k,
            argno: 1,
        },
        Call::BoAlloc {
            dev: d,
            bytes: WORDS * 4,
            flags: BoFlags::Cacheable,
            group: g(1),
        },
        Call::BoMap { bo: ib },
        Call::BoSync {
            bo: ib,
            dir: SyncDir::ToDevice,
            size: WORDS * 4,
            offset: 0,
        },
        // Data buffers: host_only, groups of arguments 3+i, sized bf16 A, bf16 W, f32 bias, f32 C.
        Call::KernelGroupId {
            kernel: k,
            argno: 3,
        },
        Call::BoAlloc {
            dev: d,
            bytes: M * K * 2,
            flags: BoFlags::HostOnly,
            group: g(3),
        },
        Call::BoMap { bo: b0 },
        Call::KernelGroupId {
            kernel: k,
            argno: 4,
        },
        Call::BoAlloc {
            dev: d,
            bytes: N * K * 2,
            flags: BoFlags::HostOnly,
            group: g(4),
        },
        Call::BoMap { bo: b1 },
        Call::KernelGroupId {
            kernel: k,
            argno: 5,
        },
        Call::BoAlloc {
            dev: d,
            bytes: N * 4,
            flags: BoFlags::HostOnly,
            group: g(5),
        },
        Call::BoMap { bo: b2 },
        Call::KernelGroupId {
            kernel: k,
            argno: 6,
        },
        Call::BoAlloc {
            dev: d,
            bytes: M * N * 4,
            flags: BoFlags::HostOnly,
            group: g(6),
        },
        Call::BoMap { bo: b3 },
        // The run: opcode 3, instruction buffer, word count, data buffers in order.
        Call::RunCreate { kernel: k },
        Call::RunSetArgU32 {
            run,
            index: 0,
            value: 3,
        },
        Call::RunSetArgBo {
            run,
            index: 1,
            bo: ib,
        },
        Call::RunSetArgU32 {
            run,
            index: 2,
            value: WORDS as u32,
        },
        Call::RunSetArgBo {
            run,
            index: 3,
            bo: b0,
        },
        Call::RunSetArgBo {
            run,
            index: 4,
            bo: b1,
        },
        Call::RunSetArgBo {
            run,
            index: 5,
            bo: b2,
        },
        Call::RunSetArgBo {
            run,
            index: 6,
            bo: b3,
        },
        // The dispatch: inputs to the device, one run, wait with the timeout, output back.
        Call::BoSync {
            bo: b0,
            dir: SyncDir::ToDevice,
            size: M * K * 2,
            offset: 0,
        },
        Call::BoSync {
            bo: b1,
            dir: SyncDir::ToDevice,
            size: N * K * 2,
            offset: 0,
        },
        Call::BoSync {
            bo: b2,
            dir: SyncDir::ToDevice,
            size: N * 4,
            offset: 0,
        },
        Call::RunStart { run },
        Call::RunWait {
            run,
            timeout_ms: TIMEOUT_MS,
        },
        Call::BoSync {
            bo: b3,
            dir: SyncDir::FromDevice,
            size: M * N * 4,
            offset: 0,
        },
        // Teardown: run, buffers, kernel, context, xclbin, device.
        Call::RunFree { run },
        Call::BoFree { bo: b0 },
        Call::BoFree { bo: b1 },
        Call::BoFree { bo: b2 },
        Call::BoFree { bo: b3 },
        Call::BoFree { bo: ib },
        Call::KernelClose { kernel: k },
        Call::HwctxDestroy { ctx },
        Call::XclbinFree { xclbin: x },
        Call::DeviceClose { dev: d },
    ];
    let calls = s.shim.calls();
    for (i, (got, want)) in calls.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "call {i} differs");
    }
    assert_eq!(calls.len(), expected.len(), "call count");
    assert_clean(&s.shim);
}

#[test]
fn later_dispatches_reuse_context_buffers_and_run() {
    let s = setup();
    s.shim.on_run(matmul_hook(M, K, N, s.words.clone()));
    let mut dev = open(&s);
    let t = inputs();
    execute(&mut dev, &s.graph, &t).expect("first dispatch");
    s.shim.clear_calls();
    for _ in 0..3 {
        execute(&mut dev, &s.graph, &t).expect("later dispatch");
    }
    let calls = s.shim.calls();
    // Per dispatch: 3 input syncs, start, wait, 1 output sync; nothing is created again.
    assert_eq!(calls.len(), 3 * 6, "{calls:#?}");
    for chunk in calls.chunks(6) {
        assert!(matches!(
            chunk[0],
            Call::BoSync {
                dir: SyncDir::ToDevice,
                ..
            }
        ));
        assert!(matches!(
            chunk[1],
            Call::BoSync {
                dir: SyncDir::ToDevice,
                ..
            }
        ));
        assert!(matches!(
            chunk[2],
            Call::BoSync {
                dir: SyncDir::ToDevice,
                ..
            }
        ));
        assert!(matches!(chunk[3], Call::RunStart { .. }));
        assert!(matches!(
            chunk[4],
            Call::RunWait {
                timeout_ms: TIMEOUT_MS,
                ..
            }
        ));
        assert!(matches!(
            chunk[5],
            Call::BoSync {
                dir: SyncDir::FromDevice,
                ..
            }
        ));
    }
    assert_eq!(s.shim.runs_started(), 4);
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn matmul_output_equals_the_catalogue_reference_bit_for_bit() {
    let s = setup();
    s.shim.on_run(matmul_hook(M, K, N, s.words.clone()));
    let mut dev = open(&s);
    let t = inputs();
    let node = &s.graph.nodes[0];
    let got = execute(&mut dev, &s.graph, &t).expect("dispatch succeeds");
    let want = node
        .op
        .npu_kernel()
        .unwrap()
        .eval(&[&t.0, &t.1, &t.2])
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].shape(), &[M, N]);
    let (g, w) = (got[0].f32s().unwrap(), want[0].f32s().unwrap());
    let mut differing = 0;
    for (i, (a, b)) in g.iter().zip(w).enumerate() {
        if a.to_bits() != b.to_bits() {
            differing += 1;
            eprintln!(
                "element {i}: device {a:e} ({:#010x}) vs reference {b:e} ({:#010x})",
                a.to_bits(),
                b.to_bits()
            );
        }
    }
    assert_eq!(differing, 0, "elements differing from the reference");
    // The data exercise the special cases (3e38 rounds to inf in bf16, NaN follows).
    assert!(
        w.iter().any(|v| v.is_nan()) || w.iter().any(|v| v.is_infinite()),
        "test data reach inf/NaN"
    );
    assert!(
        w.iter().filter(|v| v.is_finite() && **v != 0.0).count() > M * N / 2,
        "most outputs are ordinary numbers"
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn input_sync_failure_is_a_fault_that_disables_the_device() {
    let s = setup();
    s.shim.on_run(matmul_hook(M, K, N, s.words.clone()));
    let mut dev = open(&s);
    let t = inputs();
    execute(&mut dev, &s.graph, &t).expect("first dispatch");
    // Syncs so far: the instruction buffer, 3 inputs, 1 output; the next input sync fails.
    s.shim
        .fail_nth(Step::BoSync, 5, Failure::xrt("sync refused"));
    let reason = fault_reason(execute(&mut dev, &s.graph, &t));
    assert!(
        reason.contains("syncing input 0 to the device") && reason.contains("sync refused"),
        "{reason}"
    );
    assert!(dev.disabled().is_some());
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn no_variant_for_these_shapes_is_a_clear_no() {
    let s = setup();
    let dev = open(&s);
    let other = linear_graph(M + 1, K, N, true, "{}");
    match dev.supports(&other, &other.nodes[0]) {
        Support::No { reason } => {
            let want = format!(
                "xclbin for kernel matmul_bias (variant {}x{K}, {N}x{K}, {N}) not found in {}",
                M + 1,
                s.fx.path("manifest.json").display()
            );
            assert_eq!(reason, want);
        }
        y => panic!("expected No, got {y:?}"),
    }
    // Without bias the op has two inputs: another variant, also absent.
    let nobias = linear_graph(M, K, N, false, "{}");
    assert!(
        matches!(dev.supports(&nobias, &nobias.nodes[0]), Support::No { reason } if reason.contains(&format!("variant {M}x{K}, {N}x{K})")))
    );
}

#[test]
fn manifest_attrs_must_match_the_node() {
    let fx = Fixture::new();
    fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    fx.insts("mm.insts.bin", &fake_instructions(8));
    fx.manifest(&[matmul_entry(
        M,
        K,
        N,
        "mm.xclbin",
        "mm.insts.bin",
        r#", "attrs": {"variant_tag": 2}"#,
    )]);
    let manifest = Arc::new(Manifest::load(&fx.path("manifest.json")).unwrap());
    let dev = NpuXrtDevice::with_shim(Arc::new(RecordingShim::new()), manifest, options()).unwrap();
    let g1 = linear_graph(M, K, N, true, r#"{"variant_tag": 1}"#);
    let g2 = linear_graph(M, K, N, true, r#"{"variant_tag": 2}"#);
    assert!(matches!(
        dev.supports(&g1, &g1.nodes[0]),
        Support::No { .. }
    ));
    assert_eq!(
        dev.supports(&g2, &g2.nodes[0]),
        Support::Yes {
            kernel: "matmul_bias".into()
        }
    );
}

#[test]
fn device_missing_is_a_clear_open_error() {
    let s = setup();
    s.shim
        .fail_always(Step::DeviceOpen, Failure::xrt("No devices found"));
    let manifest = Arc::new(Manifest::load(&s.fx.path("manifest.json")).unwrap());
    let err = NpuXrtDevice::with_shim(s.shim.clone(), manifest.clone(), options()).unwrap_err();
    assert!(matches!(err, XrtError::Open { index: 0, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "opening NPU device 0 (recording double): npu_device_open: No devices found"
        ),
        "{msg}"
    );
    // A device index that does not exist fails the same way.
    let shim = Arc::new(RecordingShim::new());
    let err = NpuXrtDevice::with_shim(
        shim.clone(),
        manifest,
        NpuXrtOptions {
            device_index: 3,
            ..options()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("No such device with index '3'"),
        "{err}"
    );
    assert_clean(&shim);
}

#[test]
fn xrt_without_hw_context_is_refused_with_the_version() {
    let s = setup();
    let manifest = Arc::new(Manifest::load(&s.fx.path("manifest.json")).unwrap());
    let shim = Arc::new(RecordingShim::without_hwctx());
    let err = NpuXrtDevice::with_shim(shim.clone(), manifest, options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the NPU device is unavailable: XRT 2.13.0 has no hw_context; the NPU needs XRT >= 2.14 (>= 2.17 in practice)"
    );
    assert!(
        shim.calls().is_empty(),
        "nothing is opened: {:?}",
        shim.calls()
    );
}

#[test]
fn xclbin_missing_is_refused_before_any_xrt_call() {
    let s = setup();
    std::fs::remove_file(&s.xclbin).unwrap();
    let mut dev = open(&s);
    match dev.supports(&s.graph, &s.graph.nodes[0]) {
        Support::No { reason } => {
            assert_eq!(
                reason,
                format!("xclbin {} for kernel matmul_bias (variant {M}x{K}, {N}x{K}, {N}) does not exist", s.xclbin.display())
            )
        }
        y => panic!("expected No, got {y:?}"),
    }
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("does not exist") && reason.contains("mm.xclbin"),
        "{reason}"
    );
    assert!(!s
        .shim
        .calls()
        .iter()
        .any(|c| matches!(c, Call::XclbinLoad { .. })));
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn xclbin_corrupt_disables_only_that_entry() {
    let s = setup();
    std::fs::write(&s.xclbin, b"this is not an xclbin").unwrap();
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("loading xclbin")
            && reason.contains("mm.xclbin")
            && reason.contains("Invalid xclbin"),
        "{reason}"
    );
    assert_eq!(
        dev.disabled(),
        None,
        "a bad binary does not disable the device"
    );
    // The entry is now refused without touching XRT again.
    let n = s.shim.calls().len();
    let again = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(again.contains("failed earlier"), "{again}");
    assert_eq!(s.shim.calls().len(), n);
    assert!(
        matches!(dev.supports(&s.graph, &s.graph.nodes[0]), Support::No { reason } if reason.contains("failed earlier"))
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn kernel_absent_from_the_xclbin_names_what_it_has() {
    let s = setup();
    s.fx.xclbin("mm.xclbin", &[("OTHER", 7), ("ALSO_NOT_IT", 5)]);
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains(&format!(
            "kernel 'MLIR_AIE' is not in xclbin {} (it has: OTHER, ALSO_NOT_IT)",
            s.xclbin.display()
        )),
        "{reason}"
    );
    assert!(
        !s.shim
            .calls()
            .iter()
            .any(|c| matches!(c, Call::RegisterXclbin { .. })),
        "checked before registering"
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn kernel_open_failure_in_xrt_is_a_fault() {
    let s = setup();
    s.shim
        .fail_always(Step::KernelOpen, Failure::xrt("No such compute unit"));
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("opening kernel 'MLIR_AIE'") && reason.contains("No such compute unit"),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn more_buffers_than_the_kernel_declares_is_refused() {
    let s = setup();
    s.fx.xclbin("mm.xclbin", &[("MLIR_AIE", 5)]);
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("the manifest lists 4 data buffers but 'MLIR_AIE'")
            && reason.contains("takes 2 (5 arguments in all)"),
        "{reason}"
    );
    assert!(!s
        .shim
        .calls()
        .iter()
        .any(|c| matches!(c, Call::BoAlloc { .. })));
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn bad_instruction_file_is_refused() {
    let s = setup();
    s.fx.write("mm.insts.bin", &[1, 2, 3, 4, 5, 6]);
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("6 bytes is not a positive multiple of 4"),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn run_timeout_disables_the_device() {
    let s = setup();
    s.shim
        .fail_always(Step::RunWait, Failure::State(RunState::Timeout));
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains(&format!(
            "did not finish within {TIMEOUT_MS} ms (state timeout (8))"
        )),
        "{reason}"
    );
    assert!(dev.disabled().is_some());
    assert!(
        matches!(
            s.shim.calls().last(),
            Some(Call::RunWait {
                timeout_ms: TIMEOUT_MS,
                ..
            })
        ),
        "no output read after a timeout"
    );
    let n = s.shim.calls().len();
    let again = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        again.starts_with("disabled after an earlier fault"),
        "{again}"
    );
    assert_eq!(
        s.shim.calls().len(),
        n,
        "a disabled device makes no XRT calls"
    );
    assert!(
        matches!(dev.supports(&s.graph, &s.graph.nodes[0]), Support::No { reason } if reason.contains("disabled after a fault"))
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn run_error_state_disables_the_entry_not_the_device() {
    let s = setup();
    s.shim.on_run(Box::new(|_| Err("kernel trapped".into())));
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("the run ended in state error (5)"),
        "{reason}"
    );
    assert_eq!(dev.disabled(), None);
    assert!(fault_reason(execute(&mut dev, &s.graph, &inputs())).contains("failed earlier"));
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn run_abort_state_is_a_fault() {
    let s = setup();
    s.shim
        .fail_nth(Step::RunWait, 0, Failure::State(RunState::Abort));
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(reason.contains("state abort (6)"), "{reason}");
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn device_lost_mid_run_is_a_fault_and_disables_the_device() {
    let s = setup();
    s.shim.on_run(matmul_hook(M, K, N, s.words.clone()));
    s.shim.fail_nth(Step::RunWait, 1, Failure::DeviceLost);
    let mut dev = open(&s);
    let t = inputs();
    execute(&mut dev, &s.graph, &t).expect("first dispatch works");
    let reason = fault_reason(execute(&mut dev, &s.graph, &t));
    assert!(
        reason.contains("waiting for the run") && reason.contains(DEVICE_LOST),
        "{reason}"
    );
    assert!(dev.disabled().is_some());
    assert!(
        fault_reason(execute(&mut dev, &s.graph, &t)).contains("disabled after an earlier fault")
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn device_lost_at_start_is_a_fault() {
    let s = setup();
    s.shim.fail_nth(Step::RunStart, 0, Failure::DeviceLost);
    let mut dev = open(&s);
    let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
    assert!(
        reason.contains("starting the run") && reason.contains(DEVICE_LOST),
        "{reason}"
    );
    assert!(dev.disabled().is_some());
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn context_creation_failure_is_a_fault_without_leaks() {
    for step in [
        Step::RegisterXclbin,
        Step::HwctxCreate,
        Step::BoAlloc,
        Step::BoMap,
        Step::RunCreate,
        Step::RunSetArg,
    ] {
        let s = setup();
        s.shim.fail_always(step, Failure::xrt("resource busy"));
        let mut dev = open(&s);
        let reason = fault_reason(execute(&mut dev, &s.graph, &inputs()));
        assert!(reason.contains("resource busy"), "{step:?}: {reason}");
        drop(dev);
        assert_clean(&s.shim);
    }
}

#[test]
fn least_recently_used_context_is_closed_when_the_limit_is_reached() {
    let fx = Fixture::new();
    let (m2, k2, n2) = (33, 64, 17);
    let xa = fx.xclbin("a.xclbin", &[("MLIR_AIE", 7)]);
    let xb = fx.xclbin("b.xclbin", &[("MLIR_AIE", 7)]);
    let wa = fake_instructions(8);
    let wb = fake_instructions(12);
    fx.insts("a.bin", &wa);
    fx.insts("b.bin", &wb);
    fx.manifest(&[
        matmul_entry(M, K, N, "a.xclbin", "a.bin", ""),
        matmul_entry(m2, k2, n2, "b.xclbin", "b.bin", ""),
    ]);
    let shim = Arc::new(RecordingShim::new());
    let manifest = Arc::new(Manifest::load(&fx.path("manifest.json")).unwrap());
    let opts = NpuXrtOptions {
        max_hw_contexts: 1,
        ..options()
    };
    let mut dev = NpuXrtDevice::with_shim(shim.clone(), manifest, opts).unwrap();
    let ga = linear_graph(M, K, N, true, "{}");
    let gb = linear_graph(m2, k2, n2, true, "{}");
    let ta = inputs();
    let tb = (
        Tensor::from_f32(&[m2, k2], tricky_data(m2 * k2, 4)).unwrap(),
        Tensor::from_f32(&[n2, k2], tricky_data(n2 * k2, 5)).unwrap(),
        Tensor::from_f32(&[n2], tricky_data(n2, 6)).unwrap(),
    );
    for (g, t, (m, k, n), w) in [
        (&ga, &ta, (M, K, N), &wa),
        (&gb, &tb, (m2, k2, n2), &wb),
        (&ga, &ta, (M, K, N), &wa),
    ] {
        shim.on_run(matmul_hook(m, k, n, w.clone()));
        let got = execute(&mut dev, g, t).expect("dispatch");
        let want = g.nodes[0]
            .op
            .npu_kernel()
            .unwrap()
            .eval(&[&t.0, &t.1, &t.2])
            .unwrap();
        let same = got[0]
            .f32s()
            .unwrap()
            .iter()
            .zip(want[0].f32s().unwrap())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "outputs equal the reference after switching contexts");
        assert_eq!(dev.open_contexts(), 1);
    }
    let calls = shim.calls();
    let creates: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Call::HwctxCreate { .. }))
        .map(|(i, _)| i)
        .collect();
    let destroys: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Call::HwctxDestroy { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(creates.len(), 3, "a, b, a again");
    assert_eq!(destroys.len(), 2);
    assert!(
        destroys[0] < creates[1] && destroys[1] < creates[2],
        "each context closes before the next opens"
    );
    let loads: Vec<&PathBuf> = calls
        .iter()
        .filter_map(|c| {
            if let Call::XclbinLoad { path } = c {
                Some(path)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(loads, vec![&xa, &xb, &xa]);
    drop(dev);
    assert_clean(&shim);
}

#[test]
fn wrong_input_dtype_is_not_supported() {
    let fx = Fixture::new();
    fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    fx.insts("mm.insts.bin", &fake_instructions(8));
    let entry = format!(
        r#"{{"kernel": "matmul_bias", "inputs": [[{M},{K}],[{N},{K}],[{N}]], "xclbin": "mm.xclbin", "insts": "mm.insts.bin",
            "args": [{{"input":0,"dtype":"i32"}},{{"input":1,"dtype":"bf16"}},{{"input":2,"dtype":"f32"}},{{"output":0,"dtype":"f32"}}]}}"#
    );
    fx.manifest(&[entry]);
    let manifest = Arc::new(Manifest::load(&fx.path("manifest.json")).unwrap());
    let dev = NpuXrtDevice::with_shim(Arc::new(RecordingShim::new()), manifest, options()).unwrap();
    let g = linear_graph(M, K, N, true, "{}");
    assert!(
        matches!(dev.supports(&g, &g.nodes[0]), Support::No { reason } if reason.contains("input 0 is f32, the binary takes i32"))
    );
}

#[test]
fn caps_follow_the_manifest_target() {
    let s = setup();
    let dev = open(&s);
    let caps = dev.npu_caps().expect("an NPU has caps");
    let phoenix = amanuensis_runtime::npu::NpuParams::phoenix().caps();
    assert_eq!(caps, phoenix);
    assert_eq!(s.shim.describe(), "recording double");
}
