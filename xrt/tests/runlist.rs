//! Runlists on the recording double: runs of one hardware context execute in the order
//! added, the first failing run stops the list and is named, every misuse XRT rejects is
//! rejected, and an XRT without runlists says so (so the device can chain runs instead).

use crate::common::flow::*;
use crate::common::{fake_instructions, Fixture};
use amanuensis_xrt::double::{Call, Failure, Step};
use amanuensis_xrt::shim::{RunHandle, RunlistHandle};
use amanuensis_xrt::wrap::{Device, HwContext, Kernel, Run, Runlist, Shim, Xclbin};
use amanuensis_xrt::{RecordingShim, RunState, RunlistState, ShimApi, ShimErrorKind};
use std::sync::{Arc, Mutex};

const N: usize = 37;

struct Setup {
    _fx: Fixture,
    shim: Arc<RecordingShim>,
    kernel: Arc<Kernel>,
    words: Vec<u32>,
}

fn setup(shim: RecordingShim) -> Setup {
    let fx = Fixture::new();
    let xclbin = fx.xclbin("add.xclbin", &[("add", ADD_ARGS)]);
    let shim = Arc::new(shim);
    let dyn_shim: Shim = shim.clone();
    let kernel = open_kernel(dyn_shim, &xclbin, "add").expect("kernel opens");
    Setup {
        _fx: fx,
        shim,
        kernel,
        words: fake_instructions(8),
    }
}

fn assert_clean(shim: &RecordingShim) {
    assert_eq!(shim.violations(), Vec::<String>::new());
    assert_eq!(shim.live_objects(), 0, "objects leaked");
}

/// Loads `n` add runs, writes distinct inputs into each, and moves their runs into a list.
fn loaded_list(s: &Setup, n: usize) -> (Vec<AddRun>, Runlist) {
    let ctx: Arc<HwContext> = s.kernel.context().clone();
    let mut runs = Vec::new();
    for i in 0..n {
        let mut r = load_add(&s.kernel, N, &s.words).expect("loads");
        let (a, b) = operands(N, i as u32);
        write_inputs(&mut r, &a, &b).expect("inputs");
        runs.push(r);
    }
    let mut list = Runlist::create(ctx).expect("runlist");
    // The runs move into the list; a stand-in keeps each AddRun's buffers.
    let mut kept = Vec::new();
    for r in runs {
        let AddRun { run, data, instr } = r;
        list.add(run).expect("add");
        let placeholder = Run::create(s.kernel.clone()).expect("placeholder run");
        kept.push(AddRun {
            run: placeholder,
            data,
            instr,
        });
    }
    (kept, list)
}

#[test]
fn runs_of_a_list_execute_in_order_and_compute() {
    let s = setup(RecordingShim::new());
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    s.shim.set_run_hook(move |inv| {
        seen.lock().unwrap().push(inv.run());
        add_hook(inv)
    });
    assert!(s.shim.has_runlist());
    let (kept, mut list) = loaded_list(&s, 3);
    let expected_order: Vec<RunHandle> = list.runs().iter().map(|r| r.handle()).collect();
    s.shim.clear_calls();

    assert_eq!(
        list.execute(500).expect("executes"),
        RunlistState::Completed
    );
    assert!(!list.is_executing());
    assert_eq!(*order.lock().unwrap(), expected_order, "execution order");
    assert_eq!(s.shim.runs_started(), 3);
    let l = list.handle().0;
    assert_eq!(
        s.shim.calls(),
        vec![
            Call::RunlistSubmit { list: l },
            Call::RunlistWait {
                list: l,
                timeout_ms: 500
            },
        ],
        "one submit and one wait for the whole list, no run_start"
    );
    for (i, r) in kept.iter().enumerate() {
        let (a, b) = operands(N, i as u32);
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(read_output(r).expect("reads"), want, "run {i}");
    }

    // The list can run again.
    order.lock().unwrap().clear();
    assert_eq!(list.execute(0).expect("again"), RunlistState::Completed);
    assert_eq!(order.lock().unwrap().len(), 3);

    drop(list);
    drop(kept);
    drop(s.kernel);
    assert_clean(&s.shim);
}

#[test]
fn first_failing_run_stops_the_list_and_is_named() {
    let s = setup(RecordingShim::new());
    let (kept, mut list) = loaded_list(&s, 3);
    let bad = list.runs()[1].handle();
    s.shim.set_run_hook(add_hook);
    s.shim
        .set_hook_for_run(bad, |_| Err("the kernel trapped".into()));
    let state = list.execute(500).expect("wait returns a state");
    assert_eq!(
        state,
        RunlistState::Failed {
            index: Some(1),
            state: RunState::Error
        }
    );
    assert_eq!(
        state.to_string(),
        "run 1 of the list ended in state error (5)"
    );
    assert_eq!(s.shim.runs_started(), 2, "the third run never executed");
    let (a, b) = operands(N, 0);
    let first: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(read_output(&kept[0]).unwrap(), first);
    assert_eq!(
        read_output(&kept[2]).unwrap(),
        vec![0.0; N],
        "untouched output"
    );
    drop(list);
    drop(kept);
    drop(s.kernel);
    assert_clean(&s.shim);
}

#[test]
fn misuse_is_rejected_as_xrt_rejects_it() {
    let s = setup(RecordingShim::new());
    let shim: &RecordingShim = &s.shim;
    let mut r = load_add(&s.kernel, N, &s.words).unwrap();
    let ctx = s.kernel.context().handle();
    let list = shim.runlist_create(ctx).unwrap();
    let run = r.run.handle();

    shim.runlist_add(list, run).unwrap();
    let e = shim.runlist_add(list, run).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Xrt);
    assert!(e.message.contains("already part of runlist"), "{e}");

    // A run of a list must not be started on its own.
    let e = r.run.start().unwrap_err();
    assert!(e.message.contains("part of runlist"), "{e}");
    assert_eq!(shim.violations().len(), 1);

    shim.runlist_submit(list).unwrap();
    let e = shim.runlist_submit(list).unwrap_err();
    assert!(e.message.contains("already executing"), "{e}");
    let other = Run::create(s.kernel.clone()).unwrap();
    let e = shim.runlist_add(list, other.handle()).unwrap_err();
    assert!(e.message.contains("executing"), "{e}");
    let e = shim.runlist_reset(list).unwrap_err();
    assert!(e.message.contains("executing"), "{e}");
    assert_eq!(
        shim.runlist_wait(list, 10).unwrap(),
        RunlistState::Completed
    );

    // Handles that are not runlists or runs.
    let e = shim.runlist_submit(RunlistHandle(9999)).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);
    let e = shim.runlist_add(list, RunHandle(9999)).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);

    // Reset hands the run back: it may be started on its own again.
    shim.runlist_reset(list).unwrap();
    shim.set_run_hook(add_hook);
    let (a, b) = operands(N, 5);
    let out = dispatch_add(&mut r, &a, &b).expect("runs alone after reset");
    assert_eq!(out[3], a[3] + b[3]);

    // Freeing a submitted list without waiting is flagged.
    shim.runlist_add(list, run).unwrap();
    shim.runlist_submit(list).unwrap();
    shim.runlist_free(list);
    assert!(shim
        .violations()
        .iter()
        .any(|v| v.contains("freed while executing")));
    drop(other);
    drop(r);
}

#[test]
fn runs_of_another_context_are_refused() {
    let fx = Fixture::new();
    let x1 = fx.xclbin("a.xclbin", &[("add", ADD_ARGS)]);
    let x2 = fx.xclbin("b.xclbin", &[("add", ADD_ARGS)]);
    let shim = Arc::new(RecordingShim::new());
    let device = Device::open(shim.clone(), 0).unwrap();
    let kernel_of = |x: &std::path::Path| {
        let x = Xclbin::load(shim.clone(), x).unwrap();
        Kernel::open(HwContext::create(device.clone(), x).unwrap(), "add").unwrap()
    };
    let (k1, k2) = (kernel_of(&x1), kernel_of(&x2));
    let mut list = Runlist::create(k1.context().clone()).unwrap();
    let foreign = Run::create(k2.clone()).unwrap();
    let foreign_handle = foreign.handle();
    let e = list.add(foreign).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Argument);
    assert!(e.message.contains("another hardware context"), "{e}");
    // The shim itself refuses it too.
    let other = Run::create(k2.clone()).unwrap();
    let e = shim.runlist_add(list.handle(), other.handle()).unwrap_err();
    assert_eq!(e.kind, ShimErrorKind::Xrt);
    assert!(e.message.contains("hw_context"), "{e}");
    assert_ne!(foreign_handle, other.handle());
    // Nothing was added: an empty list completes at once.
    assert!(list.is_empty());
    assert_eq!(list.execute(10).unwrap(), RunlistState::Completed);
    drop((list, other, k1, k2, device));
    assert_clean(&shim);
}

#[test]
fn wait_timeout_keeps_the_list_executing_until_it_completes() {
    let s = setup(RecordingShim::new());
    s.shim.set_run_hook(add_hook);
    let (kept, mut list) = loaded_list(&s, 2);
    s.shim
        .fail_nth(Step::RunlistWait, 0, Failure::State(RunState::Timeout));
    list.submit().unwrap();
    assert_eq!(list.wait(5).unwrap(), RunlistState::Timeout);
    assert!(list.is_executing());
    assert_eq!(list.wait(5).unwrap(), RunlistState::Completed);
    assert!(!list.is_executing());
    drop((list, kept));
}

#[test]
fn injected_failures_come_back_as_errors_or_states() {
    let s = setup(RecordingShim::new());
    let (kept, mut list) = loaded_list(&s, 2);
    s.shim
        .fail_nth(Step::RunlistWait, 0, Failure::State(RunState::NoResponse));
    assert_eq!(
        list.execute(5).unwrap(),
        RunlistState::Failed {
            index: None,
            state: RunState::NoResponse
        }
    );
    s.shim.fail_nth(Step::RunlistSubmit, 1, Failure::DeviceLost);
    let e = list.submit().unwrap_err();
    assert_eq!(e.call, "npu_runlist_execute");
    assert!(!list.is_executing());
    drop((list, kept));
}

#[test]
fn xrt_without_runlist_says_which_version_it_needs() {
    let s = setup(RecordingShim::new().without_runlist());
    assert!(s.shim.has_hwctx());
    assert!(!s.shim.has_runlist());
    let e = match Runlist::create(s.kernel.context().clone()) {
        Err(e) => e,
        Ok(_) => panic!("a runlist without runlist support"),
    };
    assert_eq!(e.kind, ShimErrorKind::Unsupported);
    assert_eq!(e.message, "XRT 2.17.0 has no runlist (needs >= 2.18)");
    assert_eq!(e.message, amanuensis_xrt::no_runlist_message("2.17.0"));
    // The fallback: the same run, chained start/wait.
    s.shim.set_run_hook(add_hook);
    let mut r = load_add(&s.kernel, N, &s.words).unwrap();
    let (a, b) = operands(N, 2);
    let out = dispatch_add(&mut r, &a, &b).unwrap();
    assert_eq!(
        out,
        a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>()
    );
}

#[test]
fn dropping_a_submitted_list_waits_for_it_first() {
    let s = setup(RecordingShim::new());
    s.shim.set_run_hook(add_hook);
    let (kept, mut list) = loaded_list(&s, 2);
    list.submit().unwrap();
    let l = list.handle().0;
    s.shim.clear_calls();
    drop(list);
    let calls = s.shim.calls();
    assert_eq!(
        calls[..2],
        [
            Call::RunlistWait {
                list: l,
                timeout_ms: 5000
            },
            Call::RunlistFree { list: l },
        ]
    );
    drop(kept);
    drop(s.kernel);
    assert_clean(&s.shim);
}
