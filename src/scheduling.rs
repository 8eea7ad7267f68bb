//! Whisper on the scheduler: plan reports for `amanuensis plan` and the ablation ladder
//! of `amanuensis bench --ablation`. Every NPU figure here is a projection of the timing
//! simulator (`npu-sim`), never a measurement, and is printed as such.

use amanuensis_runtime::npu::{NpuLowering, NpuOptions, NpuParams};
use amanuensis_runtime::schedule::{Plan, SchedulerOptions};
use amanuensis_runtime::{ModelFile, Registry, Session, Tensor, WeightStore};
use amanuensis_whisper::graph::{CROSS_KV, DECODER_STEP, ENCODER, FEATURES, WINDOW};
use amanuensis_whisper::model::{plan_graphs, DeviceSpec};
use anyhow::{anyhow, Result};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

fn find<'a>(plans: &'a [Plan], name: &str) -> Result<&'a Plan> {
    plans
        .iter()
        .find(|p| p.graph.name == name)
        .ok_or_else(|| anyhow!("the graph file has no graph '{name}'"))
}

/// Runs submitted to the device per 30-s window (features, encoder, cross K/V) and per
/// decoded token (decoder step); a graph without a plan counts 0.
pub fn dispatch_counts<'a>(plans: impl IntoIterator<Item = &'a Plan> + Clone) -> (usize, usize) {
    let count = |g: &str| {
        plans
            .clone()
            .into_iter()
            .find(|p| p.graph.name == g)
            .map(|p| p.dispatches())
            .unwrap_or(0)
    };
    // A model on a device runs the encoder and cross K/V as one joined graph.
    let window = match count(WINDOW) {
        0 => count(ENCODER) + count(CROSS_KV),
        n => n,
    };
    (count(FEATURES) + window, count(DECODER_STEP))
}

/// The full plan report of every graph plus the per-window and per-token summary.
pub fn plan_report(file: &ModelFile, registry: &Registry, spec: &DeviceSpec) -> Result<String> {
    let plans = plan_graphs(file, registry, spec)?;
    let mut s = String::new();
    for p in &plans {
        s.push_str(&p.report());
        s.push('\n');
    }
    let total_ms: f64 = plans
        .iter()
        .map(|p| p.planning_time.as_secs_f64() * 1e3)
        .sum();
    let _ = writeln!(s, "summary for {} on {}:", file.model.name, spec.device);
    if file.model.family != "whisper" {
        // Another model (Silero VAD): per graph run, as Whisper's windows mean nothing here.
        for p in &plans {
            let on_device = p.decisions().iter().filter(|d| !d.on_host()).count();
            let _ = write!(
                s,
                "  graph {}: {on_device} of {} nodes on the device, {} device run(s) per graph run",
                p.graph.name,
                p.decisions().len(),
                p.dispatches()
            );
            match (spec.sim_params(), p.projected_ns) {
                (Some(sim), Some(ns)) => {
                    let _ = writeln!(s, ", projected ({}) {:.3} ms", sim.name, ns / 1e6);
                }
                _ => s.push('\n'),
            }
        }
        let _ = writeln!(s, "  planning all graphs took {total_ms:.1} ms");
        return Ok(s);
    }
    let (per_window, per_token) = dispatch_counts(&plans);
    let _ = writeln!(
        s,
        "  device dispatches per 30-s window: {per_window}; per decoded token: {per_token}"
    );
    if let Some(p) = spec.sim_params() {
        let enc = find(&plans, ENCODER)?.projected_ns.unwrap_or(0.0) / 1e6;
        let cross = find(&plans, CROSS_KV)?.projected_ns.unwrap_or(0.0) / 1e6;
        let _ = writeln!(s, "  projected (npu-sim, {}): encoder {enc:.2} ms + cross K/V {cross:.2} ms per 30-s window", p.name);
    }
    let _ = writeln!(s, "  planning all graphs took {total_ms:.1} ms");
    Ok(s)
}

/// What a real CPU run measured, per 30-s window, to combine with the projected encoder.
#[derive(Debug, Clone)]
pub struct MeasuredRun {
    /// Seconds of audio.
    pub audio_s: f64,
    /// Windows decoded.
    pub windows: usize,
    /// Log-mel features (whole recording), measured.
    pub features: Duration,
    /// Decoder time of the whole run (all windows), measured.
    pub decoder: Duration,
    /// CPU encoder + cross K/V time of the whole run, measured (the baseline), when the
    /// run was on the CPU.
    pub cpu_encoder: Option<Duration>,
}

/// One row of the ablation table.
#[derive(Debug, Clone)]
pub struct AblationRow {
    /// What the row adds.
    pub label: String,
    /// Projected encoder + cross K/V per window, ms (replayed from the executed commands).
    pub encoder_ms: f64,
    /// Device runs per window, as executed.
    pub dispatches: usize,
    /// Hardware-context switches per window.
    pub context_switches: usize,
    /// Column busy fraction during the matmul-class dispatches.
    pub column_busy: f64,
    /// Fraction of shim DMA time overlapped by compute, all kernels.
    pub dma_hidden: f64,
    /// The same during the matmul-class kernels.
    pub dma_hidden_matmul: f64,
    /// Projected end-to-end realtime factor of the measured run.
    pub realtime: f64,
}

fn is_matmul(kernel: &str) -> bool {
    kernel.starts_with("matmul") || kernel.starts_with("conv1d")
}

/// One rung of the ladder: the scheduler's switches, the NPU's options, window overlap.
pub struct Rung {
    /// What the rung adds.
    pub label: &'static str,
    /// Scheduler passes.
    pub options: SchedulerOptions,
    /// NPU scheduling.
    pub npu: NpuOptions,
    /// Whether the NPU encodes window n+1 while the CPU decodes window n.
    pub window_overlap: bool,
}

/// The ablation ladder (a)–(g), each row adding one thing to the previous, and (h): (f)
/// with one xclbin per op kind, so every change of op between runs switches contexts.
pub fn ablation_ladder() -> Vec<Rung> {
    let off = |passes: &[&str]| {
        let mut o = SchedulerOptions::default();
        for p in passes {
            o.skip.insert(p.to_string());
        }
        o
    };
    let seed = NpuOptions::seed();
    let b = NpuOptions {
        dispatch_per_tile: false,
        ..seed
    };
    let d = NpuOptions {
        columns: usize::MAX,
        ..b
    };
    let e = NpuOptions {
        double_buffer: true,
        ..d
    };
    let f = NpuOptions {
        runlists: true,
        ..e
    };
    let h = NpuOptions {
        xclbin_per_op: true,
        ..f
    };
    let rung = |label, options, npu, window_overlap| Rung {
        label,
        options,
        npu,
        window_overlap,
    };
    vec![
        rung(
            "(a) seed: op per run, host round trip per tile, 1 column, single buffers",
            off(&["fusion", "residency"]),
            seed,
            false,
        ),
        rung(
            "(b) + residency (intermediates stay on the device, one run per op)",
            off(&["fusion"]),
            b,
            false,
        ),
        rung("(c) + fusion", SchedulerOptions::default(), b, false),
        rung("(d) + 4 columns", SchedulerOptions::default(), d, false),
        rung(
            "(e) + double-buffered DMA",
            SchedulerOptions::default(),
            e,
            false,
        ),
        rung(
            "(f) + runlists (a segment's runs submitted together)",
            SchedulerOptions::default(),
            f,
            false,
        ),
        rung("(g) + window overlap", SchedulerOptions::default(), f, true),
        rung(
            "(h) = (g) with one xclbin per op kind (a context switch per op change)",
            SchedulerOptions::default(),
            h,
            true,
        ),
    ]
}

/// Runs one 30-s window of the encoder and cross K/V graphs on npu-sim under each rung
/// and projects the measured run with the times replayed from the commands that ran.
pub fn ablation(
    file: &ModelFile,
    registry: &Registry,
    weights: &WeightStore,
    params: &NpuParams,
    run: &MeasuredRun,
) -> Result<Vec<AblationRow>> {
    let mut rows = Vec::new();
    for r in ablation_ladder() {
        let spec = DeviceSpec {
            device: "npu-sim".into(),
            params: params.clone(),
            npu: r.npu,
            options: r.options.clone(),
            ..DeviceSpec::default()
        };
        let device = spec.open()?;
        let mut plans = plan_graphs(file, registry, &spec)?;
        let (dispatch_plan, _) = dispatch_counts(&plans);
        let mut enc_ns = 0.0;
        let mut runs = 0;
        let mut switches = 0;
        let mut enc_tl = None;
        let mut input: Option<Tensor> = None;
        for name in [ENCODER, CROSS_KV] {
            let i = plans
                .iter()
                .position(|p| p.graph.name == name)
                .ok_or_else(|| anyhow!("the graph file has no graph '{name}'"))?;
            let plan = Arc::new(plans.swap_remove(i));
            let g = &plan.graph;
            let x = match input.take() {
                Some(t) => t,
                None => {
                    let v = &g.values[g.inputs[0]];
                    let shape: Vec<usize> =
                        v.ty.shape.iter().map(|d| d.known().unwrap_or(1)).collect();
                    Tensor::zeros(v.ty.dtype, &shape)
                }
            };
            let mut session = Session::planned(plan.clone(), weights, device.as_ref())?;
            session.reset_states(&Default::default())?;
            let out = session.run(&[&x])?;
            let st = session.take_stats();
            enc_ns += st.simulated_ns;
            runs += st.dispatches;
            if let Some(low) = plan.lowering::<NpuLowering>() {
                switches += low.timeline.context_switches;
                if name == ENCODER {
                    enc_tl = Some((low.timeline.clone(), low.options.queue(params).columns));
                }
            }
            input = out.into_iter().next();
        }
        if runs != dispatch_plan {
            anyhow::bail!(
                "rung {}: {runs} runs executed, the plan said {dispatch_plan}",
                r.label
            );
        }
        let w = run.windows.max(1) as f64;
        let dec_ns = run.decoder.as_secs_f64() * 1e9 / w;
        // Without overlap each window is encode then decode; with it the NPU encodes
        // window n+1 while the CPU decodes window n, so a window costs the longer of the two.
        let windows_ns = if r.window_overlap {
            enc_ns + (w - 1.0) * enc_ns.max(dec_ns) + dec_ns
        } else {
            w * (enc_ns + dec_ns)
        };
        let wall_s = run.features.as_secs_f64() + windows_ns / 1e9;
        let (tl, cols) = enc_tl.ok_or_else(|| anyhow!("the encoder has no NPU schedule"))?;
        rows.push(AblationRow {
            label: r.label.to_string(),
            encoder_ms: enc_ns / 1e6,
            dispatches: runs,
            context_switches: switches,
            column_busy: tl.column_utilisation(cols, is_matmul),
            dma_hidden: tl.dma_hidden(),
            dma_hidden_matmul: tl.dma_hidden_in(is_matmul),
            realtime: run.audio_s / wall_s,
        });
    }
    Ok(rows)
}

/// The ablation table as Markdown.
pub fn ablation_table(rows: &[AblationRow], params: &NpuParams, run: &MeasuredRun) -> String {
    let mut s = String::new();
    let w = run.windows.max(1) as f64;
    let _ = write!(s, "Projected by npu-sim ({}; {:.0} MHz array clock), not measured on an NPU. Decoding and log-mel are measured on this CPU: {:.1} ms decoding per window, {:.1} ms features for {:.1} s of audio in {} windows.", params.name, params.clock_hz / 1e6, run.decoder.as_secs_f64() * 1e3 / w, run.features.as_secs_f64() * 1e3, run.audio_s, run.windows);
    if let Some(c) = run.cpu_encoder {
        let _ = write!(s, " For comparison, the CPU encoder + cross K/V measured {:.1} ms per window in the same run.", c.as_secs_f64() * 1e3 / w);
    }
    s.push('\n');
    s.push('\n');
    let _ = writeln!(s, "| configuration | encoder + cross K/V per window (ms, projected) | runs per window | context switches | columns busy in matmuls | DMA hidden under compute (matmuls / all) | end-to-end realtime (projected) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {:.0}% | {:.0}% / {:.0}% | {:.1}× |",
            r.label,
            r.encoder_ms,
            r.dispatches,
            r.context_switches,
            100.0 * r.column_busy,
            100.0 * r.dma_hidden_matmul,
            100.0 * r.dma_hidden,
            r.realtime
        );
    }
    s
}
