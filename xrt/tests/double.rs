//! The real device's host flow, checked call by call against the recording double: the
//! exact XRT call sequence of loading a one-node matmul plan (everything made once) and of
//! one graph run (uploads, the segment's runs, downloads), numbers equal to the catalogue
//! reference bit for bit, the context limit, and every failure path coming back as a clear
//! load error or a `DeviceError::Fault` the session recovers from on the CPU (never a
//! panic), with nothing leaked or freed out of order.

use crate::common::*;
use amanuensis_runtime::device::{with_view, Device, DeviceError, Program, RunContext, Support};
use amanuensis_runtime::npu::{kernel_of, NpuParams};
use amanuensis_runtime::schedule::{plan, Plan, SchedulerOptions, Step as PlanStep};
use amanuensis_runtime::{Graph, Session, Tensor, WeightStore};
use amanuensis_xrt::double::{Call, Failure, Step, DEVICE_LOST, GROUP_ID_BASE};
use amanuensis_xrt::{
    BoFlags, Manifest, NpuXrtDevice, NpuXrtOptions, RecordingShim, RunState, ShimApi, SyncDir,
    XrtError,
};
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
    xclbin: PathBuf,
}

/// A fixture with one matmul_bias entry (7 kernel arguments: 3 control + 4 data).
fn setup_with(shim: RecordingShim) -> Setup {
    let fx = Fixture::new();
    let xclbin = fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    let words = fake_instructions(WORDS);
    fx.insts("mm.insts.bin", &words);
    fx.manifest(&[matmul_entry(M, K, N, "mm.xclbin", "mm.insts.bin", "")]);
    let shim = Arc::new(shim);
    shim.on_run(matmul_hook(M, K, N, words.clone()));
    Setup { fx, shim, xclbin }
}

fn setup() -> Setup {
    setup_with(RecordingShim::new())
}

fn options() -> NpuXrtOptions {
    NpuXrtOptions {
        timeout_ms: TIMEOUT_MS,
        ..NpuXrtOptions::default()
    }
}

fn open_with(s: &Setup, o: NpuXrtOptions) -> NpuXrtDevice {
    let manifest = Arc::new(Manifest::load(&s.fx.path("manifest.json")).expect("manifest loads"));
    NpuXrtDevice::with_shim(s.shim.clone(), manifest, o).expect("device opens")
}

fn open(s: &Setup) -> NpuXrtDevice {
    open_with(s, options())
}

/// The one-node plan (x in, w and b weights, y out) on `dev`, and its weights.
fn planned_on(dev: &NpuXrtDevice, m: usize, k: usize, n: usize) -> (Arc<Plan>, WeightStore) {
    let (g, weights) = weighted_linear(m, k, n, 0);
    let p = plan(g, &registry(), dev, &SchedulerOptions::full()).expect("plans");
    (Arc::new(p), weights)
}

fn planned(dev: &NpuXrtDevice) -> (Arc<Plan>, WeightStore) {
    planned_on(dev, M, K, N)
}

fn session(p: &Arc<Plan>, w: &WeightStore, dev: &NpuXrtDevice) -> Session {
    let mut s = Session::planned(p.clone(), w, dev).expect("the plan loads");
    s.reset_states(&Default::default()).unwrap();
    s
}

fn input(m: usize, k: usize) -> Tensor {
    Tensor::from_f32(&[m, k], tricky_data(m * k, 1)).unwrap()
}

/// The catalogue reference of the plan's node (what the CPU computes).
fn reference(p: &Plan, w: &WeightStore, x: &Tensor) -> Tensor {
    let g = &p.graph;
    let k = kernel_of(g.nodes[0].op.as_ref()).unwrap().unwrap();
    let wt = |n: &str| w.get(n).unwrap().clone();
    k.eval(&[x, &wt("w"), &wt("b")]).unwrap().remove(0)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.f32s().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// One graph run driven through the program by the plan's steps (no CPU fallback), so
/// the device's own error comes back.
fn drive(prog: &mut dyn Program, p: &Plan, x: &Tensor) -> Result<Tensor, DeviceError> {
    prog.begin_run(&RunContext {
        graph: &p.graph.name,
        window: None,
    })?;
    let mut out = None;
    for s in &p.steps {
        match *s {
            PlanStep::Upload(v) => prog.upload(v, x)?,
            PlanStep::Segment(k) => prog.run_segment(k)?,
            PlanStep::Download(v) => out = Some(prog.download(v)?),
            PlanStep::Host(n) => panic!("node {n} is on the host"),
        }
    }
    prog.end_run()?;
    Ok(out.expect("the plan downloads y"))
}

fn fault_reason<T>(r: Result<T, DeviceError>) -> String {
    match r {
        Err(DeviceError::Fault { device, reason }) => {
            assert_eq!(device, "npu");
            reason
        }
        Err(e) => panic!("expected a Fault, got the error {e}"),
        Ok(_) => panic!("expected a Fault, got a result"),
    }
}

fn load_error(dev: &NpuXrtDevice, p: &Arc<Plan>, w: &WeightStore) -> String {
    fault_reason(dev.load(p, w).map(|_| ()))
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

/// A session run falls back to the CPU: the output equals the reference, one fallback.
fn assert_falls_back(p: &Arc<Plan>, w: &WeightStore, sess: &mut Session, x: &Tensor) {
    let before = sess.stats().fallbacks;
    let y = sess.run(&[x]).expect("the CPU repeats the run").remove(0);
    assert_eq!(bits(&y), bits(&reference(p, w, x)));
    assert_eq!(sess.stats().fallbacks, before + 1);
}

fn label() -> String {
    format!("kernel matmul_bias (variant {M}x{K}, {N}x{K}, {N}) (node 'fc')")
}

/// Offset and size of a device value's slot in the plan's arena.
fn slot_of(p: &Plan, value: &str) -> (usize, usize) {
    let m = p
        .memory
        .iter()
        .find(|m| m.device == p.device)
        .expect("a device memory plan");
    let s = &m.slots[m.slot_index(value).expect("the value has a slot")];
    (s.offset as usize, s.bytes as usize)
}

/// The load phase's calls for the one-node plan, given the handles the double numbers in
/// creation order (device 1, xclbin 2, context 3, kernel 4, weights w 5 and b 6, the arenas
/// of x's and y's memory groups 7 and 8, their slots x 9 and y 10, instructions 11, run 12).
fn load_calls(s: &Setup, p: &Plan) -> Vec<Call> {
    let (d, x, ctx, k, bw, bb, ax, ay, bx, by, ib, run) = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    let g = |argno: u32| GROUP_ID_BASE + argno;
    let alloc = |argno: u32, bytes: usize, flags: BoFlags| {
        vec![
            Call::KernelGroupId { kernel: k, argno },
            Call::BoAlloc {
                dev: d,
                bytes,
                flags,
                group: g(argno),
            },
        ]
    };
    let sync_up = |bo: u64, size: usize| Call::BoSync {
        bo,
        dir: SyncDir::ToDevice,
        size,
        offset: 0,
    };
    let mut v = vec![
        // Context: load, check the kernel is there, register (never load_xclbin), create.
        Call::XclbinLoad {
            path: s.xclbin.clone(),
        },
        Call::XclbinKernelNames { xclbin: x },
        Call::RegisterXclbin { dev: d, xclbin: x },
        Call::HwctxCreate { dev: d, xclbin: x },
        Call::KernelOpen {
            ctx,
            name: "MLIR_AIE".into(),
        },
        // The manifest's buffers must not exceed the kernel's arguments.
        Call::XclbinNumArgs {
            xclbin: x,
            kernel: "MLIR_AIE".into(),
        },
    ];
    // Data buffers, host_only, in the groups of arguments 3+i: the weights first, bf16 w
    // and f32 b, each allocated, written and synced once; then the plan's arena for the
    // values, one buffer per memory group (the double gives every argument its own) over
    // the slots of that group (x's and y's, in the graph's f32), each slot a sub-buffer.
    v.push(Call::KernelGroupId {
        kernel: k,
        argno: 3,
    });
    v.extend(alloc(4, N * K * 2, BoFlags::HostOnly));
    v.push(Call::BoMap { bo: bw });
    v.push(sync_up(bw, N * K * 2));
    v.extend(alloc(5, N * 4, BoFlags::HostOnly));
    v.push(Call::BoMap { bo: bb });
    v.push(sync_up(bb, N * 4));
    v.push(Call::KernelGroupId {
        kernel: k,
        argno: 6,
    });
    let (sx, sy) = (slot_of(p, "x"), slot_of(p, "y"));
    assert!(sx.1 >= M * K * 4 && sy.1 >= M * N * 4, "{sx:?} {sy:?}");
    for (argno, slot) in [(3, sx), (6, sy)] {
        v.push(Call::BoAlloc {
            dev: d,
            bytes: slot.1,
            flags: BoFlags::HostOnly,
            group: g(argno),
        });
    }
    // Each slot's sub-buffer is as long as its value on the device (bf16 x, f32 y).
    for (arena, size, bo) in [(ax, M * K * 2, bx), (ay, M * N * 4, by)] {
        v.push(Call::BoSub {
            parent: arena,
            size,
            offset: 0,
        });
        v.push(Call::BoMap { bo });
    }
    // Instruction buffer: cacheable, group of argument 1, filled and synced once.
    v.extend(alloc(1, WORDS * 4, BoFlags::Cacheable));
    v.push(Call::BoMap { bo: ib });
    v.push(sync_up(ib, WORDS * 4));
    // The run: opcode 3, instruction buffer, word count, data buffers in order.
    v.push(Call::RunCreate { kernel: k });
    v.push(Call::RunSetArgU32 {
        run,
        index: 0,
        value: 3,
    });
    v.push(Call::RunSetArgBo {
        run,
        index: 1,
        bo: ib,
    });
    v.push(Call::RunSetArgU32 {
        run,
        index: 2,
        value: WORDS as u32,
    });
    for (i, bo) in [bx, bw, bb, by].into_iter().enumerate() {
        v.push(Call::RunSetArgBo {
            run,
            index: 3 + i as u32,
            bo,
        });
    }
    v
}

fn assert_calls(got: &[Call], want: &[Call], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}: call {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: call count {got:#?}");
}

/// The frees of a program and device, in the valid order; buffers of one kind are freed
/// in any order among themselves.
fn assert_teardown(calls: &[Call], list: Option<u64>) {
    let mut i = 0;
    if let Some(list) = list {
        assert_eq!(calls[i], Call::RunlistFree { list });
        i += 1;
    }
    assert_eq!(calls[i], Call::RunFree { run: 12 });
    assert_eq!(calls[i + 1], Call::BoFree { bo: 11 });
    // Slots before their arenas, then the weights.
    for (at, pair) in [(2, [9, 10]), (4, [7, 8]), (6, [5, 6])] {
        let mut got: Vec<u64> = calls[i + at..i + at + 2]
            .iter()
            .map(|c| match c {
                Call::BoFree { bo } => *bo,
                other => panic!("expected a buffer free, got {other:?}"),
            })
            .collect();
        got.sort();
        assert_eq!(got, pair);
    }
    assert_calls(
        &calls[i + 8..],
        &[
            Call::KernelClose { kernel: 4 },
            Call::HwctxDestroy { ctx: 3 },
            Call::XclbinFree { xclbin: 2 },
            Call::DeviceClose { dev: 1 },
        ],
        "teardown",
    );
}

#[test]
fn load_and_run_call_sequences_are_exact_with_a_runlist() {
    let s = setup();
    let dev = open(&s);
    assert_eq!(dev.name(), "npu");
    assert_eq!(dev.device_name(), "NPU Phoenix");
    assert_calls(
        &s.shim.calls(),
        &[Call::DeviceOpen { index: 0 }, Call::DeviceName { dev: 1 }],
        "open",
    );
    let (p, w) = planned(&dev);
    assert_eq!(p.segments, vec![vec![0]], "{}", p.report());
    assert_eq!(s.shim.calls().len(), 2, "planning makes no XRT call");
    s.shim.clear_calls();
    let mut sess = session(&p, &w, &dev);
    let mut want = load_calls(&s, &p);
    // The segment's one run goes into a runlist of the kernel's context.
    want.push(Call::RunlistCreate { ctx: 3 });
    want.push(Call::RunlistAdd { list: 13, run: 12 });
    assert_calls(&s.shim.calls(), &want, "load");

    s.shim.clear_calls();
    let x = input(M, K);
    let y = sess.run(&[&x]).expect("runs").remove(0);
    assert_eq!(bits(&y), bits(&reference(&p, &w, &x)));
    // The run: x up, the runlist submitted and waited for with the timeout, y down.
    let run_calls = vec![
        Call::BoSync {
            bo: 9,
            dir: SyncDir::ToDevice,
            size: M * K * 2,
            offset: 0,
        },
        Call::RunlistSubmit { list: 13 },
        Call::RunlistWait {
            list: 13,
            timeout_ms: TIMEOUT_MS,
        },
        Call::BoSync {
            bo: 10,
            dir: SyncDir::FromDevice,
            size: M * N * 4,
            offset: 0,
        },
    ];
    assert_calls(&s.shim.calls(), &run_calls, "run");
    let st = sess.stats();
    assert_eq!((st.dispatches, st.fallbacks), (1, 0));
    assert_eq!(st.bytes_to_device, (M * K * 2) as u64);
    assert_eq!(st.bytes_from_device, (M * N * 4) as u64);

    s.shim.clear_calls();
    drop(sess);
    drop(dev);
    assert_teardown(&s.shim.calls(), Some(13));
    assert_clean(&s.shim);
}

#[test]
fn values_sit_at_the_memory_plans_offsets_in_one_arena_per_memory_group() {
    let s = setup_with(RecordingShim::new().with_one_data_group());
    let dev = open(&s);
    let (p, w) = planned(&dev);
    s.shim.clear_calls();
    let mut sess = session(&p, &w, &dev);
    let calls = s.shim.calls();
    let (sx, sy) = (slot_of(&p, "x"), slot_of(&p, "y"));
    assert_ne!(sx.0, sy.0, "x and y are live together, so in two slots");
    // One arena buffer, from the lower slot to the end of the higher; the weights have
    // buffers of their own.
    let base = sx.0.min(sy.0);
    let end = (sx.0 + sx.1).max(sy.0 + sy.1);
    let allocs: Vec<usize> = calls
        .iter()
        .filter_map(|c| match c {
            Call::BoAlloc {
                bytes,
                flags: BoFlags::HostOnly,
                ..
            } => Some(*bytes),
            _ => None,
        })
        .collect();
    assert_eq!(allocs, vec![N * K * 2, N * 4, end - base], "{calls:#?}");
    let arena = 7;
    let subs: Vec<(u64, usize, usize)> = calls
        .iter()
        .filter_map(|c| match c {
            Call::BoSub {
                parent,
                size,
                offset,
            } => Some((*parent, *offset, *size)),
            _ => None,
        })
        .collect();
    assert_eq!(
        subs,
        vec![
            (arena, sx.0 - base, M * K * 2),
            (arena, sy.0 - base, M * N * 4)
        ],
        "each value at its slot's offset"
    );
    let x = input(M, K);
    let y = sess.run(&[&x]).expect("runs").remove(0);
    assert_eq!(bits(&y), bits(&reference(&p, &w, &x)));
    drop(sess);
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn without_runlists_the_segment_runs_are_chained() {
    let s = setup_with(RecordingShim::new().without_runlist());
    assert!(!s.shim.has_runlist());
    let dev = open(&s);
    let (p, w) = planned(&dev);
    s.shim.clear_calls();
    let mut sess = session(&p, &w, &dev);
    assert_calls(&s.shim.calls(), &load_calls(&s, &p), "load");
    s.shim.clear_calls();
    let x = input(M, K);
    let y = sess.run(&[&x]).expect("runs").remove(0);
    assert_eq!(bits(&y), bits(&reference(&p, &w, &x)));
    assert_calls(
        &s.shim.calls(),
        &[
            Call::BoSync {
                bo: 9,
                dir: SyncDir::ToDevice,
                size: M * K * 2,
                offset: 0,
            },
            Call::RunStart { run: 12 },
            Call::RunWait {
                run: 12,
                timeout_ms: TIMEOUT_MS,
            },
            Call::BoSync {
                bo: 10,
                dir: SyncDir::FromDevice,
                size: M * N * 4,
                offset: 0,
            },
        ],
        "run",
    );
    s.shim.clear_calls();
    drop(sess);
    drop(dev);
    assert_teardown(&s.shim.calls(), None);
    assert_clean(&s.shim);
}

#[test]
fn runlists_switched_off_chain_the_runs_even_where_xrt_has_them() {
    let s = setup();
    let mut o = options();
    o.schedule.runlists = false;
    let dev = open_with(&s, o);
    let (p, w) = planned(&dev);
    let mut sess = session(&p, &w, &dev);
    s.shim.clear_calls();
    sess.run(&[&input(M, K)]).unwrap();
    let calls = s.shim.calls();
    assert!(calls.contains(&Call::RunStart { run: 12 }), "{calls:#?}");
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::RunlistSubmit { .. })));
    drop(sess);
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn later_runs_repeat_only_the_run_part() {
    let s = setup();
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let mut sess = session(&p, &w, &dev);
    let x = input(M, K);
    sess.run(&[&x]).expect("first run");
    s.shim.clear_calls();
    let xs: Vec<Tensor> = (0..3)
        .map(|i| Tensor::from_f32(&[M, K], tricky_data(M * K, 10 + i)).unwrap())
        .collect();
    for x in &xs {
        let y = sess.run(&[x]).expect("later run").remove(0);
        assert_eq!(bits(&y), bits(&reference(&p, &w, x)), "new inputs arrive");
    }
    let calls = s.shim.calls();
    // Per run: x up, submit, wait, y down; nothing allocated, bound or synced again
    // (the weights stay on the device).
    assert_eq!(calls.len(), 3 * 4, "{calls:#?}");
    for chunk in calls.chunks(4) {
        assert!(matches!(
            chunk[0],
            Call::BoSync {
                bo: 9,
                dir: SyncDir::ToDevice,
                ..
            }
        ));
        assert_eq!(chunk[1], Call::RunlistSubmit { list: 13 });
        assert!(matches!(
            chunk[2],
            Call::RunlistWait {
                timeout_ms: TIMEOUT_MS,
                ..
            }
        ));
        assert!(matches!(
            chunk[3],
            Call::BoSync {
                bo: 10,
                dir: SyncDir::FromDevice,
                ..
            }
        ));
    }
    assert_eq!(s.shim.runs_started(), 4);
    assert_eq!(sess.stats().dispatches, 4);
    drop(sess);
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn matmul_output_equals_the_catalogue_reference_bit_for_bit() {
    let s = setup();
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let mut prog = dev.load(&p, &w).expect("loads");
    let x = input(M, K);
    let got = drive(prog.as_mut(), &p, &x).expect("runs");
    let want = reference(&p, &w, &x);
    assert_eq!(got.shape(), &[M, N]);
    let (g, wv) = (got.f32s().unwrap(), want.f32s().unwrap());
    let mut differing = 0;
    for (i, (a, b)) in g.iter().zip(wv).enumerate() {
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
        wv.iter().any(|v| v.is_nan()) || wv.iter().any(|v| v.is_infinite()),
        "test data reach inf/NaN"
    );
    assert!(
        wv.iter().filter(|v| v.is_finite() && **v != 0.0).count() > M * N / 2,
        "most outputs are ordinary numbers"
    );
    let st = prog.end_run().unwrap();
    assert_eq!(st, Default::default(), "end_run hands the stats over once");
    drop(prog);
    drop(dev);
    assert_clean(&s.shim);
}

/// Makes the device fault through `inject`, then checks the program's reason, that the
/// device is disabled for the process, and that a session falls back to the CPU.
fn fault_case(s: &Setup, dev: &NpuXrtDevice, runs_before: usize, inject: impl Fn()) -> String {
    let (p, w) = planned(dev);
    let mut prog = dev.load(&p, &w).expect("loads");
    let x = input(M, K);
    for _ in 0..runs_before {
        drive(prog.as_mut(), &p, &x).expect("runs before the fault");
    }
    inject();
    let reason = fault_reason(drive(prog.as_mut(), &p, &x));
    assert!(dev.disabled().is_some(), "a fault disables the device");
    // A disabled device refuses further runs without an XRT call.
    let n = s.shim.calls().len();
    let again = fault_reason(drive(prog.as_mut(), &p, &x));
    assert!(
        again.starts_with("disabled after an earlier fault"),
        "{again}"
    );
    assert_eq!(
        s.shim.calls().len(),
        n,
        "a disabled device makes no XRT calls"
    );
    drop(prog);
    reason
}

/// A session on a fresh device whose first run meets the fault: it falls back to the
/// CPU, and so do later runs.
fn session_falls_back(s: &Setup, inject: impl Fn()) {
    let dev = open(s);
    let (p, w) = planned(&dev);
    let mut sess = session(&p, &w, &dev);
    inject();
    let x = input(M, K);
    assert_falls_back(&p, &w, &mut sess, &x);
    assert_falls_back(&p, &w, &mut sess, &x);
    // The next plan keeps the node on the host, saying why.
    let (p2, _) = planned(&dev);
    assert!(p2.segments.is_empty());
    assert!(
        p2.decisions()[0].reason.contains("disabled after a fault"),
        "{:?}",
        p2.decisions()[0]
    );
}

#[test]
fn input_sync_failure_is_a_fault_that_disables_the_device() {
    let s = setup();
    let dev = open(&s);
    // Syncs at load: w, b, the instructions; then per run x up and y down.
    let reason = fault_case(&s, &dev, 1, || {
        s.shim
            .fail_nth(Step::BoSync, 5, Failure::xrt("sync refused"))
    });
    assert!(
        reason.contains("syncing a value to the device") && reason.contains("sync refused"),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
    let s = setup();
    session_falls_back(&s, || {
        s.shim
            .fail_nth(Step::BoSync, 3, Failure::xrt("sync refused"))
    });
}

#[test]
fn output_sync_failure_is_a_fault() {
    let s = setup();
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 0, || {
        s.shim
            .fail_nth(Step::BoSync, 4, Failure::xrt("sync refused"))
    });
    assert!(
        reason.contains("syncing a value from the device") && reason.contains("sync refused"),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn runlist_timeout_is_a_fault_that_disables_the_device() {
    let s = setup();
    let dev = open(&s);
    // Only the first wait times out: the list is waited for again before it is freed.
    let reason = fault_case(&s, &dev, 0, || {
        s.shim
            .fail_nth(Step::RunlistWait, 0, Failure::State(RunState::Timeout))
    });
    assert_eq!(
        reason,
        format!("a runlist of 1 runs did not finish within {TIMEOUT_MS} ms")
    );
    let (p, _) = planned(&dev);
    assert!(
        matches!(with_view(&p.graph, &p.graph.nodes[0], |v| dev.supports(v)), Support::No { reason } if reason.contains("disabled after a fault"))
    );
    drop(dev);
    assert_clean(&s.shim);
    let s = setup();
    session_falls_back(&s, || {
        s.shim
            .fail_nth(Step::RunlistWait, 0, Failure::State(RunState::Timeout))
    });
}

#[test]
fn chained_run_timeout_is_a_fault() {
    let s = setup_with(RecordingShim::new().without_runlist());
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 0, || {
        s.shim
            .fail_always(Step::RunWait, Failure::State(RunState::Timeout))
    });
    assert_eq!(
        reason,
        format!(
            "{} did not finish within {TIMEOUT_MS} ms (state timeout (8))",
            label()
        )
    );
    drop(dev);
    assert_clean(&s.shim);
    let s = setup_with(RecordingShim::new().without_runlist());
    session_falls_back(&s, || {
        s.shim
            .fail_always(Step::RunWait, Failure::State(RunState::Timeout))
    });
}

#[test]
fn run_error_state_is_a_fault_naming_the_node() {
    let shim = |chained: bool| {
        if chained {
            RecordingShim::new().without_runlist()
        } else {
            RecordingShim::new()
        }
    };
    for chained in [false, true] {
        let s = setup_with(shim(chained));
        let dev = open(&s);
        let reason = fault_case(&s, &dev, 1, || {
            s.shim.on_run(Box::new(|_| Err("kernel trapped".into())))
        });
        let want = if chained {
            format!("{} ended in state error (5)", label())
        } else {
            format!("{} in a runlist ended in state error (5)", label())
        };
        assert_eq!(reason, want);
        drop(dev);
        assert_clean(&s.shim);
        let s = setup_with(shim(chained));
        session_falls_back(&s, || {
            s.shim.on_run(Box::new(|_| Err("kernel trapped".into())))
        });
    }
}

#[test]
fn run_abort_state_is_a_fault() {
    let s = setup();
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 0, || {
        s.shim
            .fail_nth(Step::RunlistWait, 0, Failure::State(RunState::Abort))
    });
    assert_eq!(reason, "a run in a runlist ended in state abort (6)");
    drop(dev);
    assert_clean(&s.shim);
    let s = setup_with(RecordingShim::new().without_runlist());
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 0, || {
        s.shim
            .fail_nth(Step::RunWait, 0, Failure::State(RunState::Abort))
    });
    assert_eq!(reason, format!("{} ended in state abort (6)", label()));
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn device_lost_mid_run_is_a_fault_and_disables_the_device() {
    let s = setup();
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 1, || {
        s.shim.fail_nth(Step::RunlistWait, 1, Failure::DeviceLost)
    });
    assert!(
        reason.starts_with("waiting for a runlist") && reason.contains(DEVICE_LOST),
        "{reason}"
    );
    drop(dev);
    // The list cannot be waited for on a lost device before it is freed: the double
    // notes that, and nothing else.
    assert_eq!(
        s.shim.violations(),
        vec!["runlist 13 freed while executing (not waited for)".to_string()]
    );
    assert_eq!(s.shim.live_objects(), 0, "objects leaked");
    let s = setup();
    session_falls_back(&s, || {
        s.shim.fail_nth(Step::RunlistWait, 0, Failure::DeviceLost)
    });
}

#[test]
fn device_lost_at_start_is_a_fault() {
    let s = setup();
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 0, || {
        s.shim.fail_nth(Step::RunlistSubmit, 0, Failure::DeviceLost)
    });
    assert!(
        reason.starts_with("submitting a runlist") && reason.contains(DEVICE_LOST),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
    let s = setup_with(RecordingShim::new().without_runlist());
    let dev = open(&s);
    let reason = fault_case(&s, &dev, 0, || {
        s.shim.fail_nth(Step::RunStart, 0, Failure::DeviceLost)
    });
    assert!(
        reason.starts_with(&format!(
            "starting kernel matmul_bias (variant {M}x{K}, {N}x{K}, {N}) for node 'fc'"
        )) && reason.contains(DEVICE_LOST),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
    let s = setup_with(RecordingShim::new().without_runlist());
    session_falls_back(&s, || {
        s.shim.fail_nth(Step::RunStart, 0, Failure::DeviceLost)
    });
}

#[test]
fn load_failures_are_load_errors_without_leaks() {
    for step in [
        Step::XclbinLoad,
        Step::XclbinKernelNames,
        Step::XclbinNumArgs,
        Step::RegisterXclbin,
        Step::HwctxCreate,
        Step::KernelOpen,
        Step::KernelGroupId,
        Step::BoAlloc,
        Step::BoMap,
        Step::BoSync,
        Step::RunCreate,
        Step::RunSetArg,
        Step::RunlistCreate,
        Step::RunlistAdd,
    ] {
        let s = setup();
        let dev = open(&s);
        let (p, w) = planned(&dev);
        s.shim.fail_always(step, Failure::xrt("resource busy"));
        let reason = load_error(&dev, &p, &w);
        assert!(reason.contains("resource busy"), "{step:?}: {reason}");
        // The session keeps working: the graph runs on the CPU.
        let session = Session::planned(p.clone(), &w, &dev).unwrap();
        assert!(session.plan().is_none(), "{step:?}: no device program");
        assert_eq!(session.stats().fallbacks, 1, "{step:?}");
        assert_eq!(
            dev.disabled(),
            None,
            "{step:?}: a load error is not a fault of the device"
        );
        drop(dev);
        assert_clean(&s.shim);
    }
}

#[test]
fn allocation_beyond_the_device_memory_is_a_load_error() {
    // Room for the weights and less than x's slot of the arena.
    let s = setup_with(RecordingShim::new().with_memory_cap(N * K * 2 + N * 4 + M * K * 2));
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let reason = load_error(&dev, &p, &w);
    let (_, x_slot) = slot_of(&p, "x");
    assert!(
        reason.contains(&format!(
            "allocating the {x_slot}-byte arena of memory group {}",
            GROUP_ID_BASE + 3
        )) && reason.contains("out of memory"),
        "{reason}"
    );
    assert_eq!(s.shim.allocated_bytes(), 0, "what was allocated is freed");
    drop(dev);
    assert_clean(&s.shim);
}

fn supports(dev: &NpuXrtDevice, g: &Graph) -> Support {
    with_view(g, &g.nodes[0], |v| dev.supports(v))
}

#[test]
fn no_variant_for_these_shapes_is_a_clear_no() {
    let s = setup();
    let dev = open(&s);
    let ok = linear_graph(M, K, N, true, "{}");
    assert_eq!(
        supports(&dev, &ok),
        Support::Yes {
            kernel: "matmul_bias".into()
        }
    );
    let other = linear_graph(M + 1, K, N, true, "{}");
    match supports(&dev, &other) {
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
        matches!(supports(&dev, &nobias), Support::No { reason } if reason.contains(&format!("variant {M}x{K}, {N}x{K})")))
    );
    // The scheduler keeps such a node on the host with that reason; the session computes it.
    let (g, w) = weighted_linear(M + 1, K, N, 0);
    let p = Arc::new(plan(g, &registry(), &dev, &SchedulerOptions::full()).unwrap());
    assert!(p.segments.is_empty());
    assert!(
        p.decisions()[0].reason.contains("not found in"),
        "{:?}",
        p.decisions()[0]
    );
    let mut sess = session(&p, &w, &dev);
    let x = input(M + 1, K);
    assert_eq!(
        bits(&sess.run(&[&x]).unwrap()[0]),
        bits(&reference(&p, &w, &x))
    );
    assert_eq!(s.shim.calls().len(), 2, "only the device was opened");
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
    assert!(matches!(supports(&dev, &g1), Support::No { .. }));
    assert_eq!(
        supports(&dev, &g2),
        Support::Yes {
            kernel: "matmul_bias".into()
        }
    );
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
    match supports(&dev, &g) {
        Support::No { reason } => assert_eq!(
            reason,
            format!("kernel matmul_bias (variant {M}x{K}, {N}x{K}, {N}): input 0 is f32, the binary takes i32")
        ),
        y => panic!("expected No, got {y:?}"),
    }
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
fn missing_kernel_files_keep_the_node_on_the_host_without_xrt_calls() {
    let s = setup();
    let dev = open(&s);
    // A plan made while the files were there, loaded after the xclbin went away.
    let (p_before, w) = planned(&dev);
    std::fs::remove_file(&s.xclbin).unwrap();
    let reason = load_error(&dev, &p_before, &w);
    assert_eq!(
        reason,
        format!(
            "node 'fc': xclbin {} for kernel matmul_bias (variant {M}x{K}, {N}x{K}, {N}) does not exist",
            s.xclbin.display()
        )
    );
    let g = linear_graph(M, K, N, true, "{}");
    match supports(&dev, &g) {
        Support::No { reason } => assert_eq!(
            reason,
            format!(
                "xclbin {} for kernel matmul_bias (variant {M}x{K}, {N}x{K}, {N}) does not exist",
                s.xclbin.display()
            )
        ),
        y => panic!("expected No, got {y:?}"),
    }
    let (p, w) = planned(&dev);
    assert!(p.segments.is_empty(), "{}", p.report());
    assert!(p.decisions()[0].reason.contains("does not exist"));
    let mut sess = session(&p, &w, &dev);
    let x = input(M, K);
    assert_eq!(
        bits(&sess.run(&[&x]).unwrap()[0]),
        bits(&reference(&p, &w, &x))
    );
    assert_eq!(sess.stats().fallbacks, 0);
    // The instruction file too.
    s.fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    std::fs::remove_file(s.fx.path("mm.insts.bin")).unwrap();
    assert!(
        matches!(supports(&dev, &g), Support::No { reason } if reason.starts_with("instruction file") && reason.ends_with("does not exist"))
    );
    assert!(!s
        .shim
        .calls()
        .iter()
        .any(|c| matches!(c, Call::XclbinLoad { .. })));
    assert_eq!(dev.disabled(), None);
    drop(sess);
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn xclbin_corrupt_is_a_load_error_that_does_not_disable_the_device() {
    let s = setup();
    let dev = open(&s);
    let (p, w) = planned(&dev);
    std::fs::write(&s.xclbin, b"this is not an xclbin").unwrap();
    let reason = load_error(&dev, &p, &w);
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
    // Once the binary is good again, the same device loads the plan.
    s.fx.xclbin("mm.xclbin", &[("MLIR_AIE", 7)]);
    let mut sess = session(&p, &w, &dev);
    let x = input(M, K);
    assert_eq!(
        bits(&sess.run(&[&x]).unwrap()[0]),
        bits(&reference(&p, &w, &x))
    );
    assert_eq!(sess.stats().fallbacks, 0);
    drop(sess);
    drop(dev);
    assert_clean(&s.shim);
}

#[test]
fn kernel_absent_from_the_xclbin_names_what_it_has() {
    let s = setup();
    s.fx.xclbin("mm.xclbin", &[("OTHER", 7), ("ALSO_NOT_IT", 5)]);
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let reason = load_error(&dev, &p, &w);
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
fn kernel_open_failure_in_xrt_is_a_load_error() {
    let s = setup();
    s.shim
        .fail_always(Step::KernelOpen, Failure::xrt("No such compute unit"));
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let reason = load_error(&dev, &p, &w);
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
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let reason = load_error(&dev, &p, &w);
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
fn bad_instruction_file_is_a_load_error() {
    let s = setup();
    s.fx.write("mm.insts.bin", &[1, 2, 3, 4, 5, 6]);
    let dev = open(&s);
    let (p, w) = planned(&dev);
    let reason = load_error(&dev, &p, &w);
    assert!(
        reason.contains("6 bytes is not a positive multiple of 4"),
        "{reason}"
    );
    drop(dev);
    assert_clean(&s.shim);
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
    let mut params = NpuParams::phoenix();
    params.max_hw_contexts = 1;
    let opts = NpuXrtOptions {
        params: Some(params),
        ..options()
    };
    let dev = NpuXrtDevice::with_shim(shim.clone(), manifest, opts).unwrap();
    let (pa, weights_a) = planned_on(&dev, M, K, N);
    let (pb, weights_b) = planned_on(&dev, m2, k2, n2);
    for (p, w, (m, k, n), words) in [
        (&pa, &weights_a, (M, K, N), &wa),
        (&pb, &weights_b, (m2, k2, n2), &wb),
        (&pa, &weights_a, (M, K, N), &wa),
    ] {
        shim.on_run(matmul_hook(m, k, n, words.clone()));
        let mut sess = session(p, w, &dev);
        let x = input(m, k);
        let got = sess.run(&[&x]).expect("runs").remove(0);
        assert_eq!(
            bits(&got),
            bits(&reference(p, w, &x)),
            "outputs equal the reference after switching contexts"
        );
        assert_eq!(sess.stats().fallbacks, 0);
        assert_eq!(dev.open_contexts(), 1);
    }
    assert_eq!(dev.contexts_created(), 3);
    let calls = shim.calls();
    let at = |f: fn(&Call) -> bool| -> Vec<usize> {
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| f(c))
            .map(|(i, _)| i)
            .collect()
    };
    let creates = at(|c| matches!(c, Call::HwctxCreate { .. }));
    let destroys = at(|c| matches!(c, Call::HwctxDestroy { .. }));
    assert_eq!(creates.len(), 3, "a, b, a again");
    assert_eq!(destroys.len(), 2);
    assert!(
        destroys[0] < creates[1] && destroys[1] < creates[2],
        "each context closes before the next opens"
    );
    let loads: Vec<&PathBuf> = calls
        .iter()
        .filter_map(|c| match c {
            Call::XclbinLoad { path } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(loads, vec![&xa, &xb, &xa]);
    drop(dev);
    assert_clean(&shim);
}

#[test]
fn params_follow_the_manifest_target() {
    let s = setup();
    let dev = open(&s);
    assert_eq!(dev.params(), &NpuParams::phoenix());
    assert_eq!(s.shim.describe(), "recording double");
}

#[test]
fn a_plan_needing_more_xclbins_than_the_context_limit_runs_on_the_cpu() {
    let n2 = 24;
    let fx = Fixture::new();
    // The dry double: no files; the runs compute with the reference in the entries' types.
    // y stays on the device between the two nodes, so both entries hold it as f32.
    let second = format!(
        r#"{{"kernel": "matmul_bias", "inputs": [[{M},{N}],[{n2},{N}],[{n2}]], "xclbin": "b.xclbin", "insts": "b.bin",
            "args": [{{"input":0,"dtype":"f32"}},{{"input":1,"dtype":"bf16"}},{{"input":2,"dtype":"f32"}},{{"output":0,"dtype":"f32"}}]}}"#
    );
    fx.manifest(&[matmul_entry(M, K, N, "a.xclbin", "a.bin", ""), second]);
    let text = format!(
        r#"{{"format": "amanuensis-graph", "version": 1,
      "model": {{"name": "t", "family": "t", "hyper_parameters": {{}}}},
      "weights": [{{"name":"w1","dtype":"f32","shape":[{N},{K}]}},{{"name":"b1","dtype":"f32","shape":[{N}]}},
                  {{"name":"w2","dtype":"f32","shape":[{n2},{N}]}},{{"name":"b2","dtype":"f32","shape":[{n2}]}}],
      "graphs": [{{"name": "main",
        "inputs": [{{"name":"x","dtype":"f32","shape":[{M},{K}]}}],
        "outputs": [{{"name":"z","dtype":"f32","shape":[{M},{n2}]}}],
        "nodes": [{{"name":"fc1","op":"npu_linear","inputs":["x","w1","b1"],"outputs":["y"],"attrs":{{}}}},
                  {{"name":"fc2","op":"npu_linear","inputs":["y","w2","b2"],"outputs":["z"],"attrs":{{}}}}]}}]}}"#
    );
    let file = amanuensis_runtime::ModelFile::parse(&text, "t.graph").unwrap();
    let g = Graph::build(&file.graphs[0], &file.weights, &registry()).unwrap();
    let t = |shape: &[usize], seed| {
        Tensor::from_f32(shape, tricky_data(shape.iter().product(), seed)).unwrap()
    };
    let weights = WeightStore::from_tensors([
        ("w1".to_string(), t(&[N, K], 2)),
        ("b1".to_string(), t(&[N], 3)),
        ("w2".to_string(), t(&[n2, N], 4)),
        ("b2".to_string(), t(&[n2], 5)),
    ]);
    let manifest = Arc::new(Manifest::load(&fx.path("manifest.json")).unwrap());
    let shim = Arc::new(RecordingShim::dry());
    shim.declare_manifest(&manifest);
    let mut params = NpuParams::phoenix();
    params.max_hw_contexts = 1;
    let opts = NpuXrtOptions {
        params: Some(params),
        dry: true,
        ..options()
    };
    let dev = NpuXrtDevice::with_shim(shim.clone(), manifest, opts)
        .unwrap()
        .with_dry_double(shim.clone());
    let p = Arc::new(plan(g, &registry(), &dev, &SchedulerOptions::full()).unwrap());
    assert_eq!(p.segments, vec![vec![0, 1]], "{}", p.report());
    // The plan's one segment needs two contexts at once, the NPU allows this process one:
    // loading fails before a second context opens, and the graph runs on the CPU.
    let mut sess = session(&p, &weights, &dev);
    assert_eq!(sess.stats().fallbacks, 1);
    assert!(sess.plan().is_none(), "no device program was loaded");
    let x = input(M, K);
    let z = sess.run(&[&x]).unwrap().remove(0);
    let mut host = Session::new(p.graph.clone(), &weights).unwrap();
    let want = host.run(&[&x]).unwrap().remove(0);
    assert_eq!(bits(&z), bits(&want), "the CPU's result");
    let calls = shim.calls();
    let creates = calls
        .iter()
        .filter(|c| matches!(c, Call::HwctxCreate { .. }))
        .count();
    let destroys = calls
        .iter()
        .filter(|c| matches!(c, Call::HwctxDestroy { .. }))
        .count();
    // XRT never had more contexts open than the limit.
    assert_eq!((creates, destroys), (1, 0));
    assert_eq!(dev.open_contexts(), 1);
    drop(sess);
    drop(dev);
    assert_clean(&shim);
}
