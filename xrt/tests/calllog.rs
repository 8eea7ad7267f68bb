//! The XRT call log: every shim call becomes one JSON line with its op, phase, graph,
//! window, handles, bytes and outcome; the reader parses it back and the summary totals
//! transfers and runs per phase, op, graph and window.

use crate::common::flow::*;
use crate::common::{fake_instructions, Fixture};
use amanuensis_xrt::calllog::{parse_call_log, Dir};
use amanuensis_xrt::double::{Failure, Step};
use amanuensis_xrt::wrap::{Runlist, Shim};
use amanuensis_xrt::{
    read_call_log, summarize_call_log, CallContext, CallLogError, CallLogSummary, LoggingShim,
    Phase, RecordingShim, RunlistState, ShimApi,
};
use std::collections::BTreeSet;
use std::sync::Arc;

const N: usize = 50;
const WORDS: usize = 6;

/// Load phase, then window 0 of graph "encoder" (one chained run), then window 1 (a
/// runlist of two runs), all through a LoggingShim over the double.
fn logged_session(fx: &Fixture) -> (Arc<RecordingShim>, std::path::PathBuf) {
    let xclbin = fx.xclbin("add.xclbin", &[("add", ADD_ARGS)]);
    let log = fx.path("calls.jsonl");
    let inner = Arc::new(RecordingShim::new());
    inner.set_run_hook(add_hook);
    let ctx = CallContext::new();
    let logging: Shim = Arc::new(LoggingShim::create(inner.clone(), &log, ctx.clone()).unwrap());
    let words = fake_instructions(WORDS);

    let kernel = open_kernel(logging, &xclbin, "add").unwrap();
    let mut r0 = load_add(&kernel, N, &words).unwrap();
    let r1 = load_add(&kernel, N, &words).unwrap();
    let r2 = load_add(&kernel, N, &words).unwrap();

    ctx.set_phase(Phase::Run);
    ctx.set_graph(Some("encoder"));
    ctx.set_window(Some(0));
    let (a, b) = operands(N, 1);
    let out = dispatch_add(&mut r0, &a, &b).unwrap();
    assert_eq!(out[7], a[7] + b[7]);

    ctx.set_window(Some(1));
    let mut list = Runlist::create(kernel.context().clone()).unwrap();
    let mut kept = Vec::new();
    for mut r in [r1, r2] {
        write_inputs(&mut r, &a, &b).unwrap();
        let AddRun { run, data, instr } = r;
        list.add(run).unwrap();
        kept.push((data, instr));
    }
    assert_eq!(list.execute(100).unwrap(), RunlistState::Completed);
    ctx.set_graph(None);
    ctx.set_window(None);
    ctx.set_phase(Phase::Load);
    drop(list);
    drop(kept);
    drop(r0);
    drop(kernel);
    // The last reference to the LoggingShim went with the kernel: the log is flushed.
    (inner, log)
}

#[test]
fn every_call_is_one_json_line_in_order() {
    let fx = Fixture::new();
    let (inner, log) = logged_session(&fx);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        inner.calls().len(),
        "one line per call of the double"
    );
    let recs = read_call_log(&log).unwrap();
    assert_eq!(recs.len(), lines.len());
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        assert!(r.ok, "{r:?}");
        assert!(r.error.is_none());
    }
    assert!(
        recs.windows(2).all(|w| w[0].t_us <= w[1].t_us),
        "t_us is monotonic"
    );
    // The ops are the ShimApi method names.
    let ops: BTreeSet<&str> = recs.iter().map(|r| r.op.as_str()).collect();
    let want: BTreeSet<&str> = [
        "device_open",
        "device_name",
        "device_close",
        "xclbin_load",
        "xclbin_kernel_names",
        "xclbin_num_args",
        "xclbin_free",
        "register_xclbin",
        "hwctx_create",
        "hwctx_destroy",
        "kernel_open",
        "kernel_group_id",
        "kernel_close",
        "bo_alloc",
        "bo_map",
        "bo_write",
        "bo_sync",
        "bo_read",
        "bo_free",
        "run_create",
        "run_set_arg_u32",
        "run_set_arg_bo",
        "run_start",
        "run_wait",
        "run_free",
        "runlist_create",
        "runlist_add",
        "runlist_submit",
        "runlist_wait",
        "runlist_free",
    ]
    .into_iter()
    .collect();
    assert_eq!(ops, want);

    // Field spelling on the wire.
    let first_sync = lines
        .iter()
        .find(|l| l.contains(r#""op":"bo_sync""#) && l.contains(r#""phase":"run""#))
        .expect("a sync in phase run");
    for field in [
        r#""dir":"to_device""#,
        r#""graph":"encoder""#,
        r#""window":0"#,
        r#""ok":true"#,
        &format!(r#""bytes":{}"#, N * 4),
        r#""t_us":"#,
        r#""bo":"#,
    ] {
        assert!(first_sync.contains(field), "{field} in {first_sync}");
    }
    assert!(lines[0].starts_with(r#"{"seq":0,"#), "{}", lines[0]);
    assert!(lines[0].contains(r#""op":"device_open""#));
    assert!(lines[0].contains(r#""phase":"load""#));
    assert!(
        !lines[0].contains("graph") && !lines[0].contains("window"),
        "unset fields are absent: {}",
        lines[0]
    );

    // Handles link records: the bo a sync names is one a bo_alloc returned.
    let allocated: BTreeSet<u64> = recs
        .iter()
        .filter(|r| r.op == "bo_alloc")
        .filter_map(|r| r.bo)
        .collect();
    assert_eq!(allocated.len(), 3 * 4);
    assert!(recs
        .iter()
        .filter(|r| r.op == "bo_sync")
        .all(|r| r.bo.is_some_and(|b| allocated.contains(&b))));
    let submit = recs.iter().find(|r| r.op == "runlist_submit").unwrap();
    assert_eq!(submit.runs, Some(2));
    assert_eq!(submit.window, Some(1));
    let wait = recs.iter().find(|r| r.op == "run_wait").unwrap();
    assert_eq!(wait.state.as_deref(), Some("completed"));
    assert_eq!(wait.timeout_ms, Some(1000));
}

#[test]
fn summary_totals_transfers_and_runs_per_phase_graph_and_window() {
    let fx = Fixture::new();
    let (_inner, log) = logged_session(&fx);
    let s = summarize_call_log(&log).unwrap();
    let data = (N * 4) as u64;
    let instr = (WORDS * 4) as u64;

    // Load: three instruction buffers written and synced, 3 x (instr + 3 data) allocated.
    let load = &s.by_phase[&Phase::Load];
    assert_eq!(load.bytes_to_device, 3 * instr);
    assert_eq!(load.bytes_written, 3 * instr);
    assert_eq!(load.bytes_allocated, 3 * (instr + 3 * data));
    assert_eq!(load.bytes_from_device, 0);
    assert_eq!(load.runs, 0);

    // Run: window 0 moved 2 inputs in and 1 output out with one run; window 1 two lists'
    // worth of inputs in, one runlist of two runs, nothing read back.
    let run = &s.by_phase[&Phase::Run];
    assert_eq!(run.runs, 3);
    assert_eq!(run.bytes_to_device, 6 * data);
    assert_eq!(run.bytes_from_device, data);
    assert_eq!(run.bytes_read, data);
    let w0 = &s.by_window[&0];
    assert_eq!(
        (w0.runs, w0.bytes_to_device, w0.bytes_from_device),
        (1, 2 * data, data)
    );
    let w1 = &s.by_window[&1];
    assert_eq!(
        (w1.runs, w1.bytes_to_device, w1.bytes_from_device),
        (2, 4 * data, 0)
    );
    assert_eq!(s.by_graph["encoder"].runs, 3);
    assert_eq!(s.by_graph.len(), 1);
    assert_eq!(s.by_op["run_start"].calls, 1);
    assert_eq!(s.by_op["runlist_submit"].runs, 2);
    assert_eq!(s.total.calls, load.calls + run.calls);
    assert_eq!(s.total.errors, 0);
    // The table names every group.
    let table = s.to_string();
    for row in [
        "total",
        "phase load",
        "phase run",
        "graph encoder",
        "window 1",
        "op bo_sync",
    ] {
        assert!(table.contains(row), "{row} in\n{table}");
    }
    // And serializes for tools.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["by_window"]["1"]["runs"], 2);
    assert_eq!(
        CallLogSummary::from_records(&read_call_log(&log).unwrap()),
        s
    );
}

#[test]
fn a_failed_call_is_logged_with_its_error_and_flushed_at_once() {
    let fx = Fixture::new();
    let log = fx.path("calls.jsonl");
    let inner = Arc::new(RecordingShim::new());
    inner.fail_nth(Step::DeviceOpen, 0, Failure::xrt("No such device"));
    let ctx = CallContext::new();
    let logging = LoggingShim::create(inner.clone(), &log, ctx.clone()).unwrap();
    let e = logging.device_open(0).unwrap_err();
    assert_eq!(e.message, "No such device");
    // Read while the shim is alive: the failure is on disk already.
    let recs = read_call_log(&log).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].op, "device_open");
    assert!(!recs[0].ok);
    assert_eq!(
        recs[0].error.as_deref(),
        Some("npu_device_open: No such device")
    );
    assert_eq!(recs[0].index, Some(0));
    let s = CallLogSummary::from_records(&recs);
    assert_eq!((s.total.calls, s.total.errors), (1, 1));
    assert!(logging.log_error().is_none());
    assert!(logging.describe().contains("calls logged to"));
    assert!(logging.has_runlist());
    // The device reaches the context through the trait object.
    let as_dyn: &dyn ShimApi = &logging;
    as_dyn.call_context().unwrap().set_window(Some(4));
    assert_eq!(ctx.scope().window, Some(4));
    assert!(inner.call_context().is_none());
    drop(logging);
}

#[test]
fn syncs_from_the_device_and_allocation_details_are_recorded() {
    let fx = Fixture::new();
    let (_inner, log) = logged_session(&fx);
    let recs = read_call_log(&log).unwrap();
    let from: Vec<_> = recs
        .iter()
        .filter(|r| r.op == "bo_sync" && r.dir == Some(Dir::FromDevice))
        .collect();
    assert_eq!(from.len(), 1);
    assert_eq!(from[0].bytes, Some((N * 4) as u64));
    assert_eq!(from[0].offset, Some(0));
    let alloc = recs.iter().find(|r| r.op == "bo_alloc").unwrap();
    assert_eq!(alloc.flags.as_deref(), Some("cacheable"));
    assert_eq!(alloc.group, Some(amanuensis_xrt::double::GROUP_ID_BASE + 1));
    let load = recs.iter().find(|r| r.op == "xclbin_load").unwrap();
    assert!(load.path.as_deref().unwrap().ends_with("add.xclbin"));
    assert!(load.xclbin.is_some());
    let open = recs.iter().find(|r| r.op == "kernel_open").unwrap();
    assert_eq!(open.name.as_deref(), Some("add"));
}

#[test]
fn a_bad_line_is_named_by_number() {
    let fx = Fixture::new();
    let p = fx.write(
        "bad.jsonl",
        b"{\"seq\":0,\"t_us\":1,\"dur_us\":0,\"op\":\"device_open\",\"phase\":\"load\",\"ok\":true}\n\nnot json\n",
    );
    match read_call_log(&p) {
        Err(CallLogError::Parse { path, line, .. }) => {
            assert_eq!(path, p);
            assert_eq!(line, 3);
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let e = read_call_log(&fx.path("missing.jsonl")).unwrap_err();
    assert!(matches!(e, CallLogError::Io { .. }));
    assert!(e.to_string().contains("missing.jsonl"));
    let ok = parse_call_log(&b"\n"[..], &p).unwrap();
    assert!(ok.is_empty());
}

/// A writer that fails after `left` bytes.
struct Failing {
    left: usize,
}

impl std::io::Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left < buf.len() {
            return Err(std::io::Error::other("disk full"));
        }
        self.left -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_log_that_cannot_be_written_never_fails_a_call() {
    let inner = Arc::new(RecordingShim::new());
    inner.fail_always(Step::DeviceName, Failure::xrt("gone"));
    let logging = LoggingShim::to_writer(
        inner.clone(),
        Box::new(Failing { left: 10 }),
        CallContext::new(),
    );
    let dev = logging.device_open(0).expect("the call itself succeeds");
    // A failing call flushes, which hits the full disk.
    assert!(logging.device_name(dev).is_err());
    let e = logging.log_error().expect("the write failure is kept");
    assert!(e.contains("disk full"), "{e}");
    logging.device_close(dev);
    assert_eq!(inner.live_objects(), 0);
}

#[test]
fn the_context_is_shared_by_its_clones() {
    let ctx = CallContext::new();
    let other = ctx.clone();
    other.set_phase(Phase::Run);
    other.set_graph(Some("decoder"));
    other.set_window(Some(3));
    let s = ctx.scope();
    assert_eq!(s.phase, Phase::Run);
    assert_eq!(s.graph.as_deref(), Some("decoder"));
    assert_eq!(s.window, Some(3));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CallContext>();
    send_sync::<LoggingShim>();
}
