//! The dry-run double: kernel binaries need not exist, buffers hold real bytes, every run
//! computes through the hook installed for it (per run, per kernel or for all), and the
//! memory of live buffers is capped.

use crate::common::flow::*;
use crate::common::*;
use amanuensis_kernels::npu::matmul_bias;
use amanuensis_runtime::Tensor;
use amanuensis_xrt::double::{Call, RunInvocation, PERMISSIVE_NUM_ARGS};
use amanuensis_xrt::wrap::{Bo, Device, HwContext, Kernel, Run, Shim, Xclbin};
use amanuensis_xrt::{
    BoFlags, Manifest, NpuXrtDevice, NpuXrtOptions, RecordingShim, RunState, ShimApi, ShimErrorKind,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const N: usize = 129;

fn nowhere(name: &str) -> PathBuf {
    PathBuf::from("/nonexistent/amanuensis-dry-run").join(name)
}

fn shim_of(s: &Arc<RecordingShim>) -> Shim {
    s.clone()
}

#[test]
fn add_kernel_computes_through_the_device_call_sequence_without_binaries() {
    let shim = Arc::new(RecordingShim::dry());
    assert!(shim.is_dry() && shim.has_hwctx() && shim.has_runlist());
    let xclbin = nowhere("add.xclbin");
    assert!(!xclbin.exists());
    shim.declare_xclbin(&xclbin, &[("add", ADD_ARGS)]);
    shim.set_kernel_hook(&xclbin, "add", add_hook);

    let kernel = open_kernel(shim_of(&shim), &xclbin, "add").expect("opens without a file");
    // Instruction words are whatever the caller has: a dry run never reads insts files.
    let mut r = load_add(&kernel, N, &[0u32; 4]).unwrap();
    let (a, b) = operands(N, 7);
    let out = dispatch_add(&mut r, &a, &b).expect("runs");
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(to_bytes(&out), to_bytes(&want), "bytes of c = a + b");
    // Inputs are untouched, and the host copy of the output only changed through the sync.
    let mut a_back = vec![0u8; N * 4];
    r.data[0].read(0, &mut a_back).unwrap();
    assert_eq!(a_back, to_bytes(&a));
    assert!(shim.calls().contains(&Call::XclbinLoad {
        path: xclbin.clone()
    }));
    assert_eq!(shim.runs_started(), 1);
    drop(r);
    drop(kernel);
    assert_eq!(shim.violations(), Vec::<String>::new());
    assert_eq!(shim.live_objects(), 0);
}

#[test]
fn a_missing_output_sync_shows_as_stale_bytes() {
    let shim = Arc::new(RecordingShim::dry());
    shim.set_run_hook(add_hook);
    let kernel = open_kernel(shim_of(&shim), &nowhere("a.xclbin"), "add");
    // Undeclared: the xclbin lists no kernels, so the flow's name check refuses it...
    let e = kernel.err().expect("refused");
    assert!(e.contains("not in []"), "{e}");
    // ...while opening the kernel directly accepts any name.
    let device = Device::open(shim_of(&shim), 0).unwrap();
    let x = Xclbin::load(shim_of(&shim), &nowhere("a.xclbin")).unwrap();
    assert_eq!(x.kernel_names().unwrap(), Vec::<String>::new());
    assert_eq!(x.num_args("anything").unwrap(), PERMISSIVE_NUM_ARGS);
    let ctx = HwContext::create(device, x).unwrap();
    let kernel = Kernel::open(ctx, "anything").unwrap();
    let mut r = load_add(&kernel, N, &[1, 2, 3]).unwrap();
    let (a, b) = operands(N, 1);
    write_inputs(&mut r, &a, &b).unwrap();
    r.run.start().unwrap();
    assert_eq!(r.run.wait(10).unwrap(), RunState::Completed);
    let mut c = vec![0u8; N * 4];
    r.data[2].read(0, &mut c).unwrap();
    assert_eq!(c, vec![0u8; N * 4], "not synced from the device yet");
    let c = read_output(&r).unwrap();
    assert_eq!(c[5], a[5] + b[5]);
}

#[test]
fn a_recording_double_still_refuses_missing_binaries() {
    let shim = RecordingShim::new();
    let e = shim.xclbin_load(&nowhere("x.xclbin")).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Xrt);
    assert!(e.message.contains("Failed to open file"), "{e}");
    // Unless declared.
    shim.declare_xclbin(&nowhere("x.xclbin"), &[("k", 5)]);
    let x = shim.xclbin_load(&nowhere("x.xclbin")).unwrap();
    assert_eq!(shim.xclbin_kernel_names(x).unwrap(), vec!["k".to_string()]);
    shim.xclbin_free(x);
}

#[test]
fn declared_kernels_come_from_the_manifest() {
    let fx = Fixture::new();
    // The manifest's files do not exist: dry mode does not need them.
    fx.manifest(&[
        matmul_entry(4, 8, 2, "mm.xclbin", "mm.insts", ""),
        matmul_entry(4, 8, 3, "mm.xclbin", "mm3.insts", ""),
    ]);
    let manifest = Manifest::load(&fx.path("manifest.json")).expect("manifest parses");
    let shim = RecordingShim::dry();
    shim.declare_manifest(&manifest);
    let x = shim.xclbin_load(&fx.path("mm.xclbin")).unwrap();
    assert_eq!(
        shim.xclbin_kernel_names(x).unwrap(),
        vec!["MLIR_AIE".to_string()]
    );
    assert_eq!(shim.xclbin_num_args(x, "MLIR_AIE").unwrap(), 3 + 4);
    let e = shim.xclbin_num_args(x, "other").unwrap_err();
    assert!(e.message.contains("not in the xclbin"), "{e}");
    shim.xclbin_free(x);
}

#[test]
fn the_most_specific_hook_computes_each_run() {
    let shim = Arc::new(RecordingShim::dry());
    let xclbin = nowhere("h.xclbin");
    shim.declare_xclbin(&xclbin, &[("add", ADD_ARGS)]);
    let fill = |v: f32| move |inv: &mut RunInvocation<'_>| inv.write_f32(5, &[v; N]);
    shim.set_run_hook(fill(1.0));
    shim.set_kernel_hook(&xclbin, "add", fill(2.0));
    shim.set_kernel_hook(&nowhere("other.xclbin"), "add", fill(9.0));
    let kernel = open_kernel(shim_of(&shim), &xclbin, "add").unwrap();
    let mut r = load_add(&kernel, N, &[0]).unwrap();
    shim.set_hook_for_run(r.run.handle(), fill(3.0));
    let (a, b) = operands(N, 0);
    assert_eq!(
        dispatch_add(&mut r, &a, &b).unwrap(),
        vec![3.0; N],
        "per run"
    );
    // A new run on the same buffers: the kernel's hook.
    let run2 = Run::create(kernel.clone()).unwrap();
    run2.set_u32(0, 3).unwrap();
    run2.set_bo(1, &r.instr).unwrap();
    run2.set_u32(2, 1).unwrap();
    for (i, bo) in r.data.iter().enumerate() {
        run2.set_bo(3 + i as u32, bo).unwrap();
    }
    let old = std::mem::replace(&mut r.run, run2);
    drop(old);
    assert_eq!(
        dispatch_add(&mut r, &a, &b).unwrap(),
        vec![2.0; N],
        "per kernel"
    );
    shim.clear_hooks();
    shim.set_run_hook(fill(1.0));
    assert_eq!(
        dispatch_add(&mut r, &a, &b).unwrap(),
        vec![1.0; N],
        "for all"
    );
    shim.clear_hooks();
    let (a2, b2) = operands(N, 3);
    assert_eq!(
        dispatch_add(&mut r, &a2, &b2).unwrap(),
        vec![1.0; N],
        "without a hook a run changes nothing"
    );
}

#[test]
fn hook_errors_end_the_run_in_the_error_state() {
    let shim = Arc::new(RecordingShim::dry());
    let xclbin = nowhere("e.xclbin");
    shim.declare_xclbin(&xclbin, &[("add", ADD_ARGS)]);
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s2 = seen.clone();
    shim.set_run_hook(move |inv| {
        assert_eq!(inv.kernel_name(), "add");
        assert_eq!(
            inv.xclbin(),
            Path::new("/nonexistent/amanuensis-dry-run/e.xclbin")
        );
        assert_eq!(inv.opcode(), 3);
        assert_eq!(inv.instructions(), &[7, 8]);
        assert_eq!(inv.data_count(), 3);
        assert_eq!(inv.args_mut().len(), 3);
        let e = inv.arg(2).unwrap_err();
        *s2.lock().unwrap() = e.clone();
        Err(e)
    });
    let kernel = open_kernel(shim_of(&shim), &xclbin, "add").unwrap();
    let mut r = load_add(&kernel, N, &[7, 8]).unwrap();
    let (a, b) = operands(N, 0);
    let e = dispatch_add(&mut r, &a, &b).unwrap_err();
    assert!(e.contains("error"), "{e}");
    assert_eq!(
        *seen.lock().unwrap(),
        "kernel 'add': argument 2 is not a data buffer (data arguments are 3..6)"
    );
}

#[test]
fn allocations_beyond_the_memory_cap_are_refused() {
    let shim = Arc::new(RecordingShim::dry().with_memory_cap(1000));
    let xclbin = nowhere("m.xclbin");
    shim.declare_xclbin(&xclbin, &[("add", ADD_ARGS)]);
    let kernel = open_kernel(shim_of(&shim), &xclbin, "add").unwrap();
    let first = Bo::alloc(&kernel, 600, BoFlags::HostOnly, 0).unwrap();
    assert_eq!(shim.allocated_bytes(), 600);
    let e = match Bo::alloc(&kernel, 600, BoFlags::HostOnly, 0) {
        Err(e) => e,
        Ok(_) => panic!("allocated beyond the cap"),
    };
    assert_eq!(e.kind, ShimErrorKind::Xrt);
    assert_eq!(
        e.message,
        "out of memory: 600 more bytes would exceed the double's cap of 1000 bytes (600 allocated)"
    );
    drop(first);
    assert_eq!(shim.allocated_bytes(), 0);
    let again = Bo::alloc(&kernel, 1000, BoFlags::HostOnly, 0).unwrap();
    assert_eq!(shim.allocated_bytes(), 1000);
    drop(again);
}

#[test]
fn out_of_range_writes_and_reads_are_refused() {
    let shim = Arc::new(RecordingShim::dry());
    let xclbin = nowhere("r.xclbin");
    shim.declare_xclbin(&xclbin, &[("add", ADD_ARGS)]);
    let kernel = open_kernel(shim_of(&shim), &xclbin, "add").unwrap();
    let mut bo = Bo::alloc(&kernel, 16, BoFlags::HostOnly, 0).unwrap();
    let e = bo.write(10, &[0u8; 8]).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);
    assert_eq!(e.message, "8 bytes at offset 10 exceed the 16-byte buffer");
    let mut out = [0u8; 4];
    assert!(bo.read(usize::MAX, &mut out).is_err());
    // The shim checks too (for callers that skip the wrapper).
    let e = shim.bo_write(bo.handle(), 14, &[1, 2, 3]).unwrap_err();
    assert_eq!(e.call, "npu_bo_write");
    bo.write(12, &[1, 2, 3, 4]).unwrap();
    bo.read(12, &mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4]);
    assert_eq!(
        &bo.bytes()[12..],
        &[1, 2, 3, 4],
        "bo_write lands in the mapping"
    );
}

#[test]
fn the_device_computes_matmul_through_a_kernel_hook_bit_for_bit() {
    const M: usize = 33;
    const K: usize = 40;
    const NN: usize = 24;
    let fx = Fixture::new();
    let xclbin = fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    fx.insts("mm.insts.bin", &fake_instructions(12));
    fx.manifest(&[matmul_entry(M, K, NN, "mm.xclbin", "mm.insts.bin", "")]);
    let manifest = Arc::new(Manifest::load(&fx.path("manifest.json")).unwrap());
    let shim = Arc::new(RecordingShim::dry());
    shim.declare_manifest(&manifest);
    shim.set_kernel_hook(&xclbin, "MLIR_AIE", |inv| {
        let bf16 = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect()
        };
        let a = bf16(inv.arg(3)?);
        let w = bf16(inv.arg(4)?);
        let bias = inv.read_f32(5)?;
        let mut out = vec![0.0f32; M * NN];
        matmul_bias(&a, M, K, &w, NN, Some(&bias), &mut out).map_err(|e| e.to_string())?;
        inv.write_f32(6, &out)
    });
    let options = NpuXrtOptions {
        timeout_ms: 100,
        ..NpuXrtOptions::default()
    };
    let dev = NpuXrtDevice::with_shim(shim.clone(), manifest, options).unwrap();
    let (graph, weights) = weighted_linear(M, K, NN, 4);
    let p = amanuensis_runtime::schedule::plan(
        graph,
        &registry(),
        &dev,
        &amanuensis_runtime::schedule::SchedulerOptions::full(),
    )
    .unwrap();
    let p = Arc::new(p);
    let mut sess = amanuensis_runtime::Session::planned(p.clone(), &weights, &dev).unwrap();
    sess.reset_states(&Default::default()).unwrap();
    let x = Tensor::from_f32(&[M, K], tricky_data(M * K, 4)).unwrap();
    let got = sess.run(&[&x]).unwrap();
    let k = amanuensis_runtime::npu::kernel_of(p.graph.nodes[0].op.as_ref())
        .unwrap()
        .unwrap();
    let (w, b) = (weights.get("w").unwrap(), weights.get("b").unwrap());
    let want = k.eval(&[&x, w, b]).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> { t.f32s().unwrap().iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&got[0]), bits(&want[0]));
    assert_eq!(sess.stats().fallbacks, 0);
    assert_eq!(shim.runs_started(), 1);
    drop(sess);
    drop(dev);
    assert_eq!(shim.violations(), Vec::<String>::new());
    assert_eq!(shim.live_objects(), 0);
}

#[test]
fn the_double_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RecordingShim>();
    let shim = Arc::new(RecordingShim::dry().with_call_list(false));
    let dyn_shim: Shim = shim.clone();
    let h = std::thread::spawn(move || dyn_shim.device_open(0).map(|d| d.0));
    let dev = h.join().unwrap().unwrap();
    assert!(shim.calls().is_empty(), "the call list is off");
    shim.device_close(amanuensis_xrt::shim::DeviceHandle(dev));
    assert_eq!(shim.live_objects(), 0);
}
