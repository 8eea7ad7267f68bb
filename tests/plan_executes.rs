//! The plan is the program: what runs is what the scheduler planned, checked call by call.
//!
//! - `npu-dry` (the real NPU device's code against XRT's test double, computing with the
//!   catalogue's references) transcribes jfk exactly as the CPU does, and its XRT call log
//!   shows one device, one hardware context per xclbin, every weight synced once at load,
//!   and per 30-s window only the log-mel going up, only the cross K/V coming back, and
//!   as many runs as `amanuensis plan` reports, the same for every window of a 75-s file.
//! - `npu-sim` replays the commands its program issued, which equal the plan's projection.
//! - The shipped kernel manifest is exactly what the plan of whisper-base needs.

use crate::common;

use amanuensis_xrt::calllog::{read_call_log, CallRecord, Dir, Phase};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const JFK_TEXT: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// Bytes of the cross K/V tensors of one window: 6 layers × (K, V) × 1500 × 512 f32.
const CROSS_KV_BYTES: u64 = 6 * 2 * 1500 * 512 * 4;

/// Runs the CLI; returns stdout (asserting success).
fn run(args: &[&str]) -> String {
    let out = common::cli().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "amanuensis {args:?} failed:\n{stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs per 30-s window `amanuensis plan --device DEVICE` reports.
fn planned_runs_per_window(device: &str) -> usize {
    let out = run(&["plan", "--device", device]);
    let line = out
        .lines()
        .find(|l| l.contains("device dispatches per 30-s window:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    line.split("window: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read the runs in '{line}'"))
}

/// Per-window figures of the run phase.
#[derive(Debug, Default, Clone, PartialEq)]
struct Window {
    to_device: u64,
    from_device: u64,
    runs: u64,
}

/// Checks the load-phase properties of a log and returns its per-window figures.
fn check_log(log: &[CallRecord]) -> BTreeMap<u64, Window> {
    let count = |op: &str| log.iter().filter(|r| r.op == op).count();
    assert_eq!(count("device_open"), 1, "one device for the whole process");
    // At most one hardware context per xclbin.
    let xclbins: Vec<&str> = log
        .iter()
        .filter(|r| r.op == "xclbin_load")
        .filter_map(|r| r.path.as_deref())
        .collect();
    assert!(!xclbins.is_empty());
    assert!(count("hwctx_create") <= xclbins.len());
    let mut seen = xclbins.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        xclbins.len(),
        "an xclbin loaded twice: {xclbins:?}"
    );
    // Every buffer synced to the device in the load phase (weights, instructions) once.
    let mut load_syncs: HashMap<u64, usize> = HashMap::new();
    for r in log
        .iter()
        .filter(|r| r.phase == Phase::Load && r.op == "bo_sync" && r.dir == Some(Dir::ToDevice))
    {
        *load_syncs.entry(r.bo.unwrap()).or_default() += 1;
    }
    assert!(
        load_syncs.len() > 30,
        "weights and instructions go up at load"
    );
    assert!(
        load_syncs.values().all(|&n| n == 1),
        "a buffer synced twice at load"
    );
    let weight_bytes: u64 = log
        .iter()
        .filter(|r| r.phase == Phase::Load && r.op == "bo_sync" && r.dir == Some(Dir::ToDevice))
        .filter_map(|r| r.bytes)
        .sum();
    // Encoder + cross K/V weights (matrices bf16, vectors f32) and the instruction streams:
    // 49.1 MB for whisper-base.
    assert!(
        weight_bytes > 15_000_000 && weight_bytes < 60_000_000,
        "{weight_bytes} bytes at load"
    );
    // No buffer synced at load is synced to the device again while running.
    for r in log
        .iter()
        .filter(|r| r.phase == Phase::Run && r.op == "bo_sync" && r.dir == Some(Dir::ToDevice))
    {
        assert!(
            !load_syncs.contains_key(&r.bo.unwrap()),
            "weight or instruction buffer {} re-synced in window {:?}",
            r.bo.unwrap(),
            r.window
        );
    }
    let mut windows: BTreeMap<u64, Window> = BTreeMap::new();
    for r in log.iter().filter(|r| r.phase == Phase::Run) {
        let Some(w) = r.window else { continue };
        let e = windows.entry(w).or_default();
        match (r.op.as_str(), r.dir) {
            ("bo_sync", Some(Dir::ToDevice)) => e.to_device += r.bytes.unwrap_or(0),
            ("bo_sync", Some(Dir::FromDevice)) => e.from_device += r.bytes.unwrap_or(0),
            ("run_start", _) => e.runs += 1,
            ("runlist_submit", _) => e.runs += r.runs.unwrap_or(0),
            _ => {}
        }
    }
    windows
}

#[test]
fn npu_dry_transcribes_jfk_with_resident_buffers_and_weights_uploaded_once() {
    let dir = std::env::temp_dir().join(format!("amanuensis-dry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("calls.jsonl");
    let jfk = common::data_dir().join("audio/jfk.wav");
    let text = run(&[
        "transcribe",
        "--device",
        "npu-dry",
        "--xrt-log",
        log_path.to_str().unwrap(),
        jfk.to_str().unwrap(),
    ]);
    assert_eq!(text.trim(), JFK_TEXT);
    let log = read_call_log(&log_path).unwrap();
    let windows = check_log(&log);
    let planned = planned_runs_per_window("npu-dry") as u64;
    println!("jfk: {windows:?}; planned {planned} runs per window");
    assert_eq!(windows.len(), 1);
    let w = &windows[&0];
    // Up: the log-mel window (80 × 3000 f32 = 0.96 MB), nothing else from the host.
    assert_eq!(w.to_device, 80 * 3000 * 4);
    assert!(w.to_device <= 2_000_000);
    // Down: only what the CPU needs, the decoder's cross K/V (the encoder output stays).
    assert_eq!(w.from_device, CROSS_KV_BYTES);
    assert_eq!(w.runs, planned);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn npu_dry_figures_are_flat_per_window_on_a_long_recording() {
    let dir = std::env::temp_dir().join(format!("amanuensis-dry-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("calls.jsonl");
    let long = common::data_dir().join("audio/long_public_concat.wav");
    run(&[
        "transcribe",
        "--device",
        "npu-dry",
        "--beam-size",
        "1",
        "--xrt-log",
        log_path.to_str().unwrap(),
        long.to_str().unwrap(),
    ]);
    let log = read_call_log(&log_path).unwrap();
    let windows = check_log(&log);
    let planned = planned_runs_per_window("npu-dry") as u64;
    for (i, w) in &windows {
        println!("window {i}: {w:?}");
    }
    assert!(windows.len() >= 3, "a 75-s recording takes several windows");
    for w in windows.values() {
        assert_eq!(w.to_device, 80 * 3000 * 4);
        assert_eq!(w.from_device, CROSS_KV_BYTES);
        assert_eq!(w.runs, planned);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_kernel_manifest_is_what_the_plan_needs() {
    let dir = std::env::temp_dir().join(format!("amanuensis-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("manifest.json");
    let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph");
    run(&[
        "plan",
        "--device",
        "npu-sim",
        "--graph",
        graph.to_str().unwrap(),
        "--emit-manifest",
        out.to_str().unwrap(),
    ]);
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("xrt/kernels/whisper-base/manifest.json");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&shipped).unwrap(),
        "regenerate with `amanuensis plan --device npu-sim --emit-manifest {}`",
        shipped.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn npu_sim_replays_exactly_the_commands_the_plan_projects() {
    use amanuensis_runtime::npu::NpuLowering;
    let m = amanuensis::WhisperModel::load_on(
        &common::model_dir(),
        Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph")),
        &amanuensis_operators::standard_registry(),
        &amanuensis::DeviceSpec::npu_sim(),
    )
    .unwrap();
    let mut m = m;
    let pcm = amanuensis::audio::load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    let mel = m.features(&pcm).unwrap();
    let window = amanuensis::model::mel_window(&mel, 0, 1100).unwrap();
    let w = m
        .window
        .as_mut()
        .expect("on a device the window graph is planned");
    // Every output asked for: the run issues exactly the plan's steps.
    let outs = w.run(&[&window]).unwrap();
    assert_eq!(outs.len(), 13);
    let stats = w.take_stats();
    let plan = w.plan().unwrap().clone();
    let low = plan.lowering::<NpuLowering>().unwrap();
    assert_eq!(stats.dispatches, plan.dispatches());
    assert_eq!(stats.dispatches, 71);
    assert_eq!(stats.bytes_to_device, 80 * 3000 * 4);
    assert_eq!(stats.bytes_from_device, CROSS_KV_BYTES + 1500 * 512 * 4);
    assert!(
        (stats.simulated_ns - low.timeline.total_ns).abs() < 1.0,
        "replayed {} ns, projected {} ns",
        stats.simulated_ns,
        low.timeline.total_ns
    );
    // The transcriber asks for the cross K/V only: the encoder output stays on the device.
    let cross = m.encode_cross(&window).unwrap();
    assert_eq!(cross.len(), 12);
    assert_eq!(cross[0].f32s().unwrap(), outs[0].f32s().unwrap());
    let w = m.window.as_mut().unwrap();
    let stats = w.take_stats();
    assert_eq!(stats.bytes_from_device, CROSS_KV_BYTES);
    assert!(stats.simulated_ns < low.timeline.total_ns);
}

#[test]
fn plan_lists_every_pass_with_its_report_and_stops_after_any() {
    let out = run(&["plan", "--device", "npu-sim"]);
    let passes = [
        "placement",
        "fusion",
        "transfers",
        "residency",
        "segments",
        "memory",
        "tiling",
    ];
    let enc = out.split("graph 'encoder'").nth(1).unwrap();
    let mut at = 0;
    for p in passes {
        let i = enc[at..]
            .find(&format!("pass {p} "))
            .unwrap_or_else(|| panic!("pass {p} missing or out of order:\n{enc}"));
        at += i;
    }
    assert!(enc.contains("20 groups fused"), "{enc}");
    assert!(enc.contains("140 redundant transfers removed"), "{enc}");
    let took = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("planning all graphs took "))
        .unwrap();
    println!("planning whisper-base: {took}");

    let out = run(&["plan", "--device", "npu-sim", "--stop-after", "fusion"]);
    let enc = out.split("graph 'encoder'").nth(1).unwrap();
    assert!(enc.contains("pass fusion"), "{enc}");
    assert!(!enc.contains("pass transfers"), "{enc}");
    assert!(enc.contains("stopped after pass 'fusion'"), "{enc}");

    let out = run(&[
        "plan",
        "--device",
        "npu-sim",
        "--no-fusion",
        "--skip-pass",
        "residency",
    ]);
    let enc = out.split("graph 'encoder'").nth(1).unwrap();
    assert!(
        enc.contains("pass fusion") && enc.contains("(skipped)"),
        "{enc}"
    );

    for (args, want) in [
        (&["--stop-after", "nope"][..], "names no pass 'nope'"),
        (
            &["--skip-pass", "memory"][..],
            "pass 'memory' cannot be skipped",
        ),
    ] {
        let o = common::cli()
            .args(["plan", "--device", "npu-sim"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

/// The CPU executes from the host arena of its plan: every graph of a CPU transcription
/// (and the host side of an `npu-sim` one) is planned, and every host value is written
/// into the buffer of the slot its memory plan gave it; a value whose slot another live
/// value still held would be counted as unplanned.
#[test]
fn cpu_and_host_sides_execute_from_the_plans_arena() {
    let pcm = amanuensis::audio::load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    let mut text: Option<String> = None;
    for spec in [
        amanuensis::DeviceSpec::default(),
        amanuensis::DeviceSpec::npu_sim(),
    ] {
        let mut m = amanuensis::WhisperModel::load_on(
            &common::model_dir(),
            Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph")),
            &amanuensis_operators::standard_registry(),
            &spec,
        )
        .unwrap();
        // Five graphs planned on the CPU; on the simulator, the joined window graph
        // replaces the encoder and cross K/V.
        assert_eq!(
            m.plans.len(),
            if spec.planned() { 4 } else { 5 },
            "{}",
            spec.device
        );
        for p in &m.plans {
            let host = p.memory.iter().find(|mp| mp.device == "cpu").unwrap();
            // The layer stacks reuse slots (features and cross K/V hold values that all
            // live to the end).
            let stack =
                ["encoder", "decoder_step", "decoder_align"].contains(&p.graph.name.as_str());
            assert!(
                !stack || 2 * host.slots.len() < host.buffers.len(),
                "{}: graph '{}' plans {} host buffers in {} slots: little reuse",
                spec.device,
                p.graph.name,
                host.buffers.len(),
                host.slots.len()
            );
        }
        let mut opts = amanuensis::TranscribeOptions::default();
        opts.decoding.beam.beam_size = 1;
        let t = m.transcribe_pcm(&pcm, &opts).unwrap();
        // The same transcript on both (the CLI's exact one is checked by the CLI tests).
        match &text {
            None => text = Some(t.text.clone()),
            Some(cpu) => assert_eq!(&t.text, cpu, "{} against cpu", spec.device),
        }
        assert!(t.text.contains("ask not what your country can do for you"));
        let sessions = [("features", &m.features), ("decoder_step", &m.decoder)];
        for (name, s) in sessions {
            let st = s.stats();
            assert!(st.runs > 0, "{}: {name} never ran", spec.device);
            assert_eq!(
                st.unplanned_buffers, 0,
                "{}: {name} used buffers beside its memory plan",
                spec.device
            );
            // Between runs the decoder's slots keep their buffers (features' one value is
            // its output, which the caller keeps).
            let (slots, held) = s.host_arena();
            assert!(
                slots > 0 && (name == "features" || held > 0),
                "{}: {name} arena {slots} slots, {held} bytes",
                spec.device
            );
        }
        let enc = m.window.as_ref().unwrap_or(&m.encoder);
        assert_eq!(enc.stats().unplanned_buffers, 0, "{}: encoder", spec.device);
    }
}

#[test]
fn cpu_fusion_changes_no_bit_of_a_transcript() {
    // On the CPU the fused ops compute their chains' arithmetic (the linear's compute-type
    // attributes included), so the JSON (text, times, probabilities) is byte for byte the
    // one of the unfused plan, at each compute type.
    for ct in ["int8", "f32", "bf16"] {
        let base = [
            "transcribe",
            "--device",
            "cpu",
            "--compute-type",
            ct,
            "--json",
            "--word-timestamps",
            "-q",
            "samples/jfk.wav",
        ];
        let fused = run(&base);
        let mut args = base.to_vec();
        args.push("--no-fusion");
        let unfused = run(&args);
        assert!(fused.contains("ask not what your country"), "{fused}");
        assert_eq!(fused, unfused, "--compute-type {ct}");
    }
    // The plan says what it fused on the host.
    let out = run(&["plan", "--device", "cpu"]);
    let enc = out.split("graph 'encoder'").nth(1).unwrap();
    assert!(enc.contains("38 groups fused"), "{enc}");
    assert!(enc.contains("6 × linear_gelu"), "{enc}");
    assert!(enc.contains("6 × linear_group"), "{enc}");
    assert!(enc.contains("6 × layer_norm_linear_gelu"), "{enc}");
}
