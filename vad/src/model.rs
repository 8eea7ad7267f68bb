//! Loading Silero VAD (the model directory and the graph) and running it over a recording.

use crate::graph::{
    build_silero_graph, CHUNK_WINDOWS, CONTEXT_SAMPLES, GRAPH, MODEL_NAME, WINDOW_SAMPLES,
};
use amanuensis_runtime::device::Device;
use amanuensis_runtime::schedule::{plan, Plan, SchedulerOptions};
use amanuensis_runtime::{Graph, ModelFile, Registry, RuntimeError, Session, Tensor, WeightStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The committed graph, built into the binary.
pub const SILERO_VAD_GRAPH: &str = include_str!("../../graphs/silero-vad.graph");

/// The model directory's weights file.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Errors of loading or running the VAD.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// No model directory was found.
    #[error("no Silero VAD model: none of {} has {WEIGHTS_FILE} (fetch it with `scripts/fetch-model.sh vad`, or set AMANUENSIS_MODELS)", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { searched: Vec<PathBuf> },
    /// The graph or weights do not load, or a run failed.
    #[error("Silero VAD: {0}")]
    Runtime(#[from] RuntimeError),
    /// A tensor did not have the shape the graph gives it.
    #[error("Silero VAD: {0}")]
    Op(#[from] amanuensis_runtime::OpError),
    /// The graph file is not Silero VAD's.
    #[error("{origin}: {reason}")]
    Graph { origin: String, reason: String },
}

/// Where a `silero-vad` model directory is looked for: `$AMANUENSIS_MODELS`, `./models`,
/// and the source tree's `models/` (as for Whisper models).
pub fn find_vad_dir(explicit: Option<&Path>) -> Result<PathBuf, VadError> {
    if let Some(p) = explicit {
        if p.join(WEIGHTS_FILE).is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(VadError::NotFound {
            searched: vec![p.to_path_buf()],
        });
    }
    let searched: Vec<PathBuf> = amanuensis_runtime::models::model_search_path()
        .iter()
        .map(|d| d.join(MODEL_NAME))
        .collect();
    searched
        .iter()
        .find(|d| d.join(WEIGHTS_FILE).is_file())
        .cloned()
        .ok_or(VadError::NotFound { searched })
}

/// A loaded Silero VAD: one session of its graph, planned for a device.
pub struct VadModel {
    session: Session,
    /// The scheduler's plan (placement with reasons, memory), for reports.
    pub plan: Arc<Plan>,
    /// Time spent loading.
    pub load_time: Duration,
}

impl VadModel {
    /// Loads the model in `dir` with the built-in graph, or `graph` when given, planned
    /// for `device` (the CPU, or an NPU where nodes with a kernel run).
    pub fn load(
        dir: &Path,
        graph: Option<&Path>,
        registry: &Registry,
        device: &dyn Device,
        options: &SchedulerOptions,
    ) -> Result<VadModel, VadError> {
        let t0 = Instant::now();
        let (file, origin) = match graph {
            Some(p) => (ModelFile::load(p)?, p.display().to_string()),
            None => (
                ModelFile::parse(SILERO_VAD_GRAPH, "built-in silero-vad.graph")?,
                "built-in silero-vad.graph".to_string(),
            ),
        };
        // The runner assumes the built geometry (window, context, chunk); a graph file
        // made for another would give wrong probabilities, so it is refused.
        let want = build_silero_graph();
        if file.model.hyper_parameters != want.model.hyper_parameters {
            return Err(VadError::Graph {
                origin,
                reason: format!(
                    "hyper_parameters {:?} are not Silero VAD v6's {:?}",
                    file.model.hyper_parameters, want.model.hyper_parameters
                ),
            });
        }
        let def = file
            .graphs
            .iter()
            .find(|g| g.name == GRAPH)
            .ok_or_else(|| VadError::Graph {
                origin: origin.clone(),
                reason: format!("has no graph '{GRAPH}'"),
            })?;
        let weights = WeightStore::load(&dir.join(WEIGHTS_FILE), &file.weights)?;
        let g = Graph::build(def, &file.weights, registry)?;
        let p = Arc::new(plan(g, registry, device, options)?);
        let mut session = Session::planned(p.clone(), &weights, device)?;
        session.reset_states(&HashMap::new())?;
        Ok(VadModel {
            session,
            plan: p,
            load_time: t0.elapsed(),
        })
    }

    /// The speech probability of each 512-sample window of a 16 kHz recording, as
    /// faster-whisper computes them: the recording is zero-padded to whole windows plus
    /// one (so `len / 512 + 1` windows), each window is preceded by the last 64 samples of
    /// the one before (zeros for the first), and the LSTM state runs through the whole
    /// recording from zero.
    pub fn speech_probs(&mut self, pcm: &[f32]) -> Result<Vec<f32>, VadError> {
        let windows = pcm.len() / WINDOW_SAMPLES + 1;
        let row = CONTEXT_SAMPLES + WINDOW_SAMPLES;
        let sample = |i: usize| pcm.get(i).copied().unwrap_or(0.0);
        self.session.reset_states(&HashMap::new())?;
        let mut probs = Vec::with_capacity(windows);
        let mut input = vec![0.0f32; CHUNK_WINDOWS * row];
        for first in (0..windows).step_by(CHUNK_WINDOWS) {
            let n = (windows - first).min(CHUNK_WINDOWS);
            // Windows past the end of the recording are zeros; the LSTM is causal, so
            // they change no probability before them and are dropped.
            input.fill(0.0);
            for (k, r) in input.chunks_exact_mut(row).take(n).enumerate() {
                let start = (first + k) * WINDOW_SAMPLES;
                if start >= CONTEXT_SAMPLES {
                    for (j, v) in r[..CONTEXT_SAMPLES].iter_mut().enumerate() {
                        *v = sample(start - CONTEXT_SAMPLES + j);
                    }
                }
                for (j, v) in r[CONTEXT_SAMPLES..].iter_mut().enumerate() {
                    *v = sample(start + j);
                }
            }
            let t = Tensor::from_f32(&[CHUNK_WINDOWS, row], std::mem::take(&mut input))?;
            let out = self.session.run(&[&t])?;
            let p = out[0].f32s()?;
            probs.extend_from_slice(&p[..n]);
            // The input buffer back for the next chunk, rather than a copy per chunk.
            input = t.into_f32()?;
        }
        Ok(probs)
    }

    /// The session (run statistics, the device's fallback record).
    pub fn session(&self) -> &Session {
        &self.session
    }
}
