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
        let mut prober = self.prober();
        prober.windows_ready(pcm, 0, pcm.len(), true)?;
        Ok(prober.probs)
    }

    /// [`Self::speech_probs`] of a recording that arrives in pieces ([`SpeechProber`]):
    /// the same probabilities, bit for bit, holding one block of windows at a time.
    pub fn prober(&mut self) -> SpeechProber<'_> {
        SpeechProber {
            model: self,
            buf: Vec::new(),
            buf_start: 0,
            next_window: 0,
            probs: Vec::new(),
            input: vec![0.0f32; CHUNK_WINDOWS * (CONTEXT_SAMPLES + WINDOW_SAMPLES)],
            started: false,
        }
    }

    /// Runs windows `first..first + n` of the recording `signal` holds a part of (each
    /// window's samples and its context's must be among them), and appends their
    /// probabilities.
    fn run_block(
        &mut self,
        signal: Held<'_>,
        first: usize,
        n: usize,
        input: &mut Vec<f32>,
        probs: &mut Vec<f32>,
    ) -> Result<(), VadError> {
        let Held {
            span,
            offset,
            total,
        } = signal;
        let row = CONTEXT_SAMPLES + WINDOW_SAMPLES;
        let sample = |i: usize| {
            if i >= total {
                0.0
            } else {
                span.get(i - offset).copied().unwrap_or(f32::NAN)
            }
        };
        // Windows past the end of the recording are zeros; the LSTM is causal, so they
        // change no probability before them and are dropped.
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
        let t = Tensor::from_f32(&[CHUNK_WINDOWS, row], std::mem::take(input))?;
        let out = self.session.run(&[&t])?;
        let p = out[0].f32s()?;
        probs.extend_from_slice(&p[..n]);
        // The input buffer back for the next chunk, rather than a copy per chunk.
        *input = t.into_f32()?;
        Ok(())
    }

    /// The session (run statistics, the device's fallback record).
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// Samples `offset..offset + span.len()` of a recording of `total` samples so far.
#[derive(Clone, Copy)]
struct Held<'a> {
    span: &'a [f32],
    offset: usize,
    total: usize,
}

/// Speech probabilities of a recording fed in pieces ([`VadModel::prober`]): each block of
/// [`CHUNK_WINDOWS`] windows runs as soon as its samples have arrived, exactly the blocks
/// [`VadModel::speech_probs`] runs, so the probabilities are the same bits.
pub struct SpeechProber<'m> {
    model: &'m mut VadModel,
    /// Samples `buf_start..buf_start + buf.len()` of the recording.
    buf: Vec<f32>,
    buf_start: usize,
    next_window: usize,
    probs: Vec<f32>,
    input: Vec<f32>,
    started: bool,
}

impl SpeechProber<'_> {
    /// Adds the next samples of the recording, running the blocks they complete.
    pub fn push(&mut self, samples: &[f32]) -> Result<(), VadError> {
        self.buf.extend_from_slice(samples);
        let total = self.buf_start + self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let r = self.windows_ready(&buf, self.buf_start, total, false);
        self.buf = buf;
        r?;
        // Keep from the next window's context on.
        let keep = (self.next_window * WINDOW_SAMPLES)
            .saturating_sub(CONTEXT_SAMPLES)
            .max(self.buf_start);
        self.buf.drain(..keep - self.buf_start);
        self.buf_start = keep;
        Ok(())
    }

    /// The probabilities of the whole recording pushed (`len / 512 + 1` windows), and its
    /// length in samples.
    pub fn finish(mut self) -> Result<(Vec<f32>, usize), VadError> {
        let total = self.buf_start + self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        self.windows_ready(&buf, self.buf_start, total, true)?;
        Ok((self.probs, total))
    }

    /// Runs every block of windows whose samples `span` (from `offset`, `total` so far)
    /// holds; at the `end` of the recording, the rest too.
    fn windows_ready(
        &mut self,
        span: &[f32],
        offset: usize,
        total: usize,
        end: bool,
    ) -> Result<(), VadError> {
        if !self.started {
            self.model.session.reset_states(&HashMap::new())?;
            self.started = true;
        }
        let windows = total / WINDOW_SAMPLES + 1;
        while self.next_window < windows {
            let first = self.next_window;
            let n = (windows - first).min(CHUNK_WINDOWS);
            // A block that reaches past the samples so far waits for more, unless this is
            // the end (its last windows are then zero-padded, as in `speech_probs`).
            if !end && (n < CHUNK_WINDOWS || (first + n) * WINDOW_SAMPLES > total) {
                break;
            }
            self.model.run_block(
                Held {
                    span,
                    offset,
                    total,
                },
                first,
                n,
                &mut self.input,
                &mut self.probs,
            )?;
            self.next_window += n;
        }
        Ok(())
    }
}
