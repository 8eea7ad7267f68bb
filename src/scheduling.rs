//! Whisper on the scheduler: plan reports for `amanuensis plan` and the ablation ladder
//! of `amanuensis bench --ablation`. Every NPU figure here is a projection of the timing
//! simulator (`npu-sim`), never a measurement, and is printed as such.

use amanuensis_runtime::npu::NpuParams;
use amanuensis_runtime::schedule::{Plan, SchedulerOptions};
use amanuensis_runtime::{ModelFile, Registry};
use amanuensis_whisper::graph::{CROSS_KV, DECODER_STEP, ENCODER, FEATURES};
use amanuensis_whisper::model::{plan_graphs, DeviceSpec};
use anyhow::{anyhow, Result};
use std::fmt::Write as _;
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
    (
        count(FEATURES) + count(ENCODER) + count(CROSS_KV),
        count(DECODER_STEP),
    )
}

/// The full plan report of every graph plus the per-window and per-token summary.
pub fn plan_report(file: &ModelFile, registry: &Registry, spec: &DeviceSpec) -> Result<String> {
    let plans = plan_graphs(file, registry, spec)?;
    let mut s = String::new();
    for p in &plans {
        s.push_str(&p.report());
        s.push('\n');
    }
    let (per_window, per_token) = dispatch_counts(&plans);
    let total_ms: f64 = plans
        .iter()
        .map(|p| p.planning_time.as_secs_f64() * 1e3)
        .sum();
    let _ = writeln!(s, "summary for {} on {}:", file.model.name, spec.device);
    let _ = writeln!(
        s,
        "  device dispatches per 30-s window: {per_window}; per decoded token: {per_token}"
    );
    if let Some(p) = spec.sim_params() {
        let enc = find(&plans, ENCODER)?.timeline.total_ns / 1e6;
        let cross = find(&plans, CROSS_KV)?.timeline.total_ns / 1e6;
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
    /// Projected encoder + cross K/V per window, ms.
    pub encoder_ms: f64,
    /// Device runs per window.
    pub dispatches: usize,
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

/// Projects the measured run under each rung of the ladder.
pub fn ablation(
    file: &ModelFile,
    registry: &Registry,
    params: &NpuParams,
    run: &MeasuredRun,
) -> Result<Vec<AblationRow>> {
    let mut rows = Vec::new();
    for (label, options) in SchedulerOptions::ablation_ladder() {
        let spec = DeviceSpec {
            device: "npu-sim".into(),
            params: params.clone(),
            options,
            factory: None,
        };
        let plans = plan_graphs(file, registry, &spec)?;
        let enc = find(&plans, ENCODER)?;
        let cross = find(&plans, CROSS_KV)?;
        let enc_ns = enc.timeline.total_ns + cross.timeline.total_ns;
        let w = run.windows.max(1) as f64;
        let dec_ns = run.decoder.as_secs_f64() * 1e9 / w;
        // Without overlap each window is encode then decode; with it the NPU encodes
        // window n+1 while the CPU decodes window n, so a window costs the longer of the two.
        let windows_ns = if options.window_overlap {
            enc_ns + (w - 1.0) * enc_ns.max(dec_ns) + dec_ns
        } else {
            w * (enc_ns + dec_ns)
        };
        let wall_s = run.features.as_secs_f64() + windows_ns / 1e9;
        let (dispatches, _) = dispatch_counts(&plans);
        rows.push(AblationRow {
            label: label.to_string(),
            encoder_ms: enc_ns / 1e6,
            dispatches,
            column_busy: enc
                .timeline
                .column_utilisation(options.columns.min(params.columns), is_matmul),
            dma_hidden: enc.timeline.dma_hidden(),
            dma_hidden_matmul: enc.timeline.dma_hidden_in(is_matmul),
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
    let _ = writeln!(s, "| configuration | encoder + cross K/V per window (ms, projected) | runs per window | columns busy in matmuls | DMA hidden under compute (matmuls / all) | end-to-end realtime (projected) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {:.0}% | {:.0}% / {:.0}% | {:.1}× |",
            r.label,
            r.encoder_ms,
            r.dispatches,
            100.0 * r.column_busy,
            100.0 * r.dma_hidden_matmul,
            100.0 * r.dma_hidden,
            r.realtime
        );
    }
    s
}
