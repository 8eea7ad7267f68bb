//! Finding and loading a Whisper model: the model directory (weights, config, vocabulary)
//! and the graph file, validated against the operator registry and each other.

use crate::config::{WhisperConfig, WhisperDims, CONFIG_FORMAT, CONFIG_VERSION};
use crate::decoding::{
    decode_with_fallback, decode_with_fallback_after, greedy_decode, BatchStepModel, BeamOptions,
    DecodeError, DecodeOptions, DecodeResult, FallbackOptions, SpecialIds, StepError, StepModel,
};
use crate::error::{Error, Result};
use crate::graph::{
    window_graph, windows_decoder_graph, windows_encoder_graph, CROSS_KV, DECODER_ALIGN,
    DECODER_STEP, ENCODER, FEATURES, N_FRAMES, WINDOW,
};
use crate::lockstep::{LockstepStats, LockstepWindow};
use crate::tokenizer::Tokenizer;
use amanuensis_runtime::schedule::Plan;
use amanuensis_runtime::{DType, Graph, ModelFile, Registry, Session, Tensor, WeightStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The committed graph of whisper-base, built into the binary so that an installed
/// `amanuensis` needs only the model directory.
pub const WHISPER_BASE_GRAPH: &str = include_str!("../../graphs/whisper-base.graph");

pub use amanuensis_runtime::models::{model_search_path, MODELS_ENV};

/// Files of a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const VOCABULARY_FILE: &str = "vocabulary.txt";

/// Resolves `--model`: an existing directory path, or a name such as `base` or
/// `whisper-base` looked up in [`model_search_path`].
pub fn find_model_dir(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    let weights = p.join(WEIGHTS_FILE);
    if weights.is_file() {
        return Ok(p.to_path_buf());
    }
    if weights.exists() {
        // A device, a FIFO or a directory of that name (or a symlink to one).
        return Err(Error::Weights {
            path: weights,
            reason: "not a regular file (a directory, device or FIFO)".into(),
        });
    }
    // A path (not a bare name such as `base`) is not looked up under the model folders.
    if spec.contains(std::path::MAIN_SEPARATOR) || spec.contains('/') || spec.starts_with('.') {
        return Err(Error::ModelDirNotFound {
            path: p.to_path_buf(),
            file: WEIGHTS_FILE,
            exists: p.is_dir(),
        });
    }
    let name = if spec.starts_with("whisper-") {
        spec.to_string()
    } else {
        format!("whisper-{spec}")
    };
    let searched = model_search_path();
    for d in &searched {
        let cand = d.join(&name);
        if cand.join(WEIGHTS_FILE).is_file() {
            return Ok(cand);
        }
    }
    Err(Error::ModelNotFound {
        name: spec.to_string(),
        file: WEIGHTS_FILE,
        env: MODELS_ENV,
        searched: searched.iter().map(|d| d.join(&name)).collect(),
    })
}

/// Reads and checks a model directory's `config.json`.
pub fn read_config(dir: &Path) -> Result<WhisperConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = amanuensis_runtime::files::read_regular_text(
        &path,
        amanuensis_runtime::files::MAX_TEXT_FILE,
    )
    .map_err(|e| Error::Weights {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let cfg: WhisperConfig = serde_json::from_str(&text).map_err(|e| Error::Weights {
        path: path.clone(),
        reason: format!("not a valid model config: {e}"),
    })?;
    if cfg.format != CONFIG_FORMAT || cfg.version != CONFIG_VERSION {
        return Err(Error::Weights {
            reason: format!(
                "format '{}' version {} is not '{CONFIG_FORMAT}' version {CONFIG_VERSION}; re-run weights-tool convert",
                cfg.format, cfg.version
            ),
            path,
        });
    }
    Ok(cfg)
}

/// The graph file to use: `explicit` if given; else `graphs/<name>.graph` in the current
/// directory; else the built-in whisper-base graph.
pub fn load_graph_file(explicit: Option<&Path>, model_name: &str) -> Result<(ModelFile, String)> {
    if let Some(p) = explicit {
        return Ok((ModelFile::load(p)?, p.display().to_string()));
    }
    let local = PathBuf::from("graphs").join(format!("{model_name}.graph"));
    if local.is_file() {
        return Ok((ModelFile::load(&local)?, local.display().to_string()));
    }
    if model_name == "whisper-base" {
        return Ok((
            ModelFile::parse(WHISPER_BASE_GRAPH, "built-in whisper-base.graph")?,
            "built-in whisper-base.graph".into(),
        ));
    }
    Err(Error::graph(
        format!("for '{model_name}'"),
        format!(
            "none found: pass --graph FILE (build one with `amanuensis graph build {model_name}`)"
        ),
    ))
}

/// Reads the Whisper hyper-parameters recorded in a graph file.
pub fn graph_dims(file: &ModelFile) -> Result<WhisperDims> {
    let hp = serde_json::Value::Object(file.model.hyper_parameters.clone().into_iter().collect());
    serde_json::from_value(hp).map_err(|e| {
        Error::graph(
            &file.model.name,
            format!("hyper_parameters are not Whisper's: {e}"),
        )
    })
}

pub use crate::devices::{plan_graphs, validate_graphs, DeviceFactory, DeviceSpec};

/// A loaded Whisper model: config, tokenizer and one session per graph.
pub struct WhisperModel {
    pub name: String,
    pub dir: PathBuf,
    pub config: WhisperConfig,
    pub tokenizer: Tokenizer,
    /// The weights every session reads (shared, not copied, by [`WhisperModel::replica`]).
    weights: WeightStore,
    /// The graph file named at load, for [`WhisperModel::replica`].
    graph_file: Option<PathBuf>,
    /// When set, every graph run first checks it and stops the transcription with
    /// [`Error::Interrupted`] once it is true (a cancelled request, a deadline).
    pub interrupt: Option<Arc<AtomicBool>>,
    /// When set, the transcription checks it before each window (window by window) or
    /// each batch of windows (`--batch-size`), and once it is true returns what it has
    /// transcribed, with [`Transcript::stopped_at`] set: a user's Ctrl-C keeps the work
    /// done.
    ///
    /// [`Transcript::stopped_at`]: crate::transcript::Transcript::stopped_at
    pub stop_early: Option<Arc<AtomicBool>>,
    pub features: Session,
    pub encoder: Session,
    pub cross_kv: Session,
    /// On a device: the encoder and cross K/V as one planned graph ([`WINDOW`]), so the
    /// encoder output stays on the device; `encoder` and `cross_kv` then run on the host
    /// only when called on their own.
    pub window: Option<Session>,
    /// On the CPU: the encoder and cross K/V over a batch of windows
    /// ([`crate::graph::ENCODER_WINDOWS`]), for the batched pipeline. On a device `None`:
    /// windows go one by one through [`WhisperModel::window`], whose plan is the device's.
    pub encoder_windows: Option<Session>,
    pub decoder: Session,
    /// `decoder_step` over several windows in lockstep ([`crate::graph::DECODER_WINDOWS`]),
    /// always on the host, like the decoder; each row as it decodes alone.
    pub decoder_windows: Session,
    /// The same graph whose rows stream the stored weights where they have int8 forms
    /// (faster; `None` when no weight has one): for the batched pipeline's windows.
    pub decoder_windows_streamed: Option<Session>,
    /// Teacher-forced decoder exposing cross-attention, for word timestamps.
    pub align: Session,
    /// Where the graph came from (a path or "built-in ...").
    pub graph_origin: String,
    /// Time spent loading.
    pub load_time: Duration,
    /// Bytes of weights held in memory.
    pub weight_bytes: usize,
    /// The device the graphs were planned for.
    pub device: DeviceSpec,
    /// The scheduler's plan of each graph.
    pub plans: Vec<Arc<Plan>>,
    /// Where the int8 forms came from, when this load made them ready (not on replicas).
    pub int8_source: Option<crate::compute::Int8Source>,
}

impl WhisperModel {
    /// Loads a model directory with a graph file (see [`load_graph_file`]).
    pub fn load(dir: &Path, graph: Option<&Path>, registry: &Registry) -> Result<WhisperModel> {
        Self::load_on(dir, graph, registry, &DeviceSpec::default())
    }

    /// Loads a model for a device: on the CPU every graph runs as validated; on an NPU
    /// every graph goes through the scheduler's passes first.
    pub fn load_on(
        dir: &Path,
        graph: Option<&Path>,
        registry: &Registry,
        spec: &DeviceSpec,
    ) -> Result<WhisperModel> {
        Self::load_sharing(dir, graph, registry, spec, None)
    }

    /// The weights (with their int8 forms when the compute type is int8).
    pub fn weights(&self) -> &WeightStore {
        &self.weights
    }

    /// Another model on the same weights (shared, not reloaded nor copied) with sessions
    /// of its own, so that several threads can transcribe at once. `registry` must hold
    /// the operators the model was loaded with.
    pub fn replica(&self, registry: &Registry) -> Result<WhisperModel> {
        Self::load_sharing(
            &self.dir,
            self.graph_file.as_deref(),
            registry,
            &self.device,
            Some(&self.weights),
        )
    }

    fn load_sharing(
        dir: &Path,
        graph: Option<&Path>,
        registry: &Registry,
        spec: &DeviceSpec,
        shared: Option<&WeightStore>,
    ) -> Result<WhisperModel> {
        let t0 = Instant::now();
        let config = read_config(dir)?;
        let (file, graph_origin) = load_graph_file(graph, &config.name)?;
        let dims = graph_dims(&file)?;
        if dims != config.dims {
            return Err(Error::graph(
                &graph_origin,
                format!(
                    "is for {:?} but the model in {} has {:?}",
                    dims,
                    dir.display(),
                    config.dims
                ),
            ));
        }
        let vocab_path = dir.join(VOCABULARY_FILE);
        let tokenizer = Tokenizer::from_model_dir(dir)?;
        if tokenizer.n_vocab() != dims.n_vocab {
            return Err(Error::Weights {
                reason: format!(
                    "has {} tokens, the model {}",
                    tokenizer.n_vocab(),
                    dims.n_vocab
                ),
                path: vocab_path,
            });
        }
        let compute = spec.compute.resolve(&spec.device);
        let mut file = file;
        if compute == crate::compute::ComputeType::Int8
            && !spec.planned()
            && amanuensis_operators::quantize::bf16_is_native()
        {
            let on_tiles = amanuensis_operators::quantize::bf16_on_tiles();
            let marked = crate::graph::bf16_encoder(&mut file, on_tiles)
                .map_err(|e| Error::graph(&graph_origin, e))?;
            tracing::debug!(marked, on_tiles, "encoder nodes with bf16 products");
        }
        if compute == crate::compute::ComputeType::Int8
            && !spec.planned()
            && amanuensis_operators::quantize::bf16x3_on_tiles()
        {
            let marked = crate::graph::bf16x3_encoder(&mut file);
            tracing::debug!(marked, "encoder nodes with bf16x3 products on tiles");
        }
        if compute == crate::compute::ComputeType::Bf16 && !spec.planned() {
            let marked = crate::graph::bf16_products(&mut file);
            tracing::debug!(marked, "nodes with bf16 products");
        }
        // Not at int8: its words moved with GELU's last bits (docs/performance.md).
        if compute == crate::compute::ComputeType::Bf16 && !spec.planned() {
            let marked = crate::graph::f32_encoder_gelu(&mut file);
            tracing::debug!(marked, "GELU nodes evaluated in f32");
        }
        if compute != crate::compute::ComputeType::F32 && !spec.planned() {
            let changed = crate::graph::f16_cross_kv(&mut file)
                .map_err(|e| Error::graph(&graph_origin, e))?;
            tracing::debug!(changed, "cross K/V values kept in f16");
            let changed = crate::graph::heads_major_cross_kv(&mut file, dims.n_text_head)
                .map_err(|e| Error::graph(&graph_origin, e))?;
            tracing::debug!(changed, "cross K/V values stored by head");
        }
        if !spec.planned() {
            let changed = crate::graph::heads_major_self_kv(&mut file)
                .map_err(|e| Error::graph(&graph_origin, e))?;
            tracing::debug!(changed, "self-attention caches stored by head");
        }
        if compute != crate::compute::ComputeType::F32 && spec.planned() {
            return Err(Error::Device {
                device: spec.device.clone(),
                reason: format!(
                    "compute type {} is for the cpu device; NPU kernels compute in bf16 \
                     (use --compute-type f32)",
                    compute
                ),
            });
        }
        let mut int8_source = None;
        let weights = match shared {
            Some(w) => w.clone(),
            None => {
                let path = dir.join(WEIGHTS_FILE);
                let mut w = WeightStore::load(&path, &file.weights)?;
                if compute == crate::compute::ComputeType::Int8 {
                    int8_source = Some(crate::compute::attach_int8(&mut w, &file, dir, &path)?);
                }
                w
            }
        };
        // Each graph is built once and planned for the device (the host too: its memory
        // plan is the arena the CPU executes from); the scheduler's passes edit it in
        // place. On an accelerator the encoder and cross K/V run as one joined graph; the
        // separate ones stay on the host for callers that want one of them alone.
        let accelerated = spec.planned();
        let d = spec.open()?;
        let mut host_graphs: std::collections::HashMap<String, Arc<Graph>> =
            std::collections::HashMap::new();
        let mut plans: std::collections::HashMap<String, Arc<Plan>> =
            std::collections::HashMap::new();
        for g in validate_graphs(&file, registry)? {
            if accelerated && (g.name == ENCODER || g.name == CROSS_KV) {
                host_graphs.insert(g.name.clone(), Arc::new(g));
            } else {
                let p = amanuensis_runtime::schedule::plan(g, registry, d.as_ref(), &spec.options)?;
                plans.insert(p.graph.name.clone(), Arc::new(p));
            }
        }
        let device = accelerated.then_some(d.clone());
        let window = match &device {
            Some(d) => {
                let def = window_graph(&file).map_err(|e| Error::graph(&graph_origin, e))?;
                let g = Graph::build(&def, &file.weights, registry)?;
                let p = Arc::new(amanuensis_runtime::schedule::plan(
                    g,
                    registry,
                    d.as_ref(),
                    &spec.options,
                )?);
                plans.insert(WINDOW.to_string(), p.clone());
                Some(Session::planned(p, &weights, d.as_ref())?)
            }
            None => None,
        };
        let plan_list: Vec<Arc<Plan>> = file
            .graphs
            .iter()
            .map(|g| g.name.as_str())
            .chain([WINDOW])
            .filter_map(|n| plans.get(n).cloned())
            .collect();
        let mut session = |name: &str| -> Result<Session> {
            let missing = || Error::graph(&graph_origin, format!("has no graph '{name}'"));
            Ok(match host_graphs.remove(name) {
                Some(g) => Session::new(g, &weights)?,
                None => Session::planned(
                    plans.remove(name).ok_or_else(missing)?,
                    &weights,
                    d.as_ref(),
                )?,
            })
        };
        let features = session(FEATURES)?;
        let encoder = session(ENCODER)?;
        let cross_kv = session(CROSS_KV)?;
        let decoder = session(DECODER_STEP)?;
        let align = session(DECODER_ALIGN)?;
        // Derived from `decoder_step`, not stored, so not among the file's plans. It runs on
        // the host: planned for the CPU, and on an accelerator left unplanned like the host
        // graphs above, so that the device's program and call log are unchanged.
        let windows_session = |stream_rows: bool| -> Result<Session> {
            let def = windows_decoder_graph(&file, stream_rows)
                .map_err(|e| Error::graph(&graph_origin, e))?;
            let g = Graph::build(&def, &file.weights, registry)?;
            Ok(if accelerated {
                Session::new(Arc::new(g), &weights)?
            } else {
                let p = amanuensis_runtime::schedule::plan(g, registry, d.as_ref(), &spec.options)?;
                Session::planned(Arc::new(p), &weights, d.as_ref())?
            })
        };
        let decoder_windows = windows_session(false)?;
        // Only int8 weights compute differently when streamed.
        let decoder_windows_streamed = if compute == crate::compute::ComputeType::Int8 {
            Some(windows_session(true)?)
        } else {
            None
        };
        let encoder_windows = if accelerated {
            None
        } else {
            let def = windows_encoder_graph(&file).map_err(|e| Error::graph(&graph_origin, e))?;
            let g = Graph::build(&def, &file.weights, registry)?;
            let p = amanuensis_runtime::schedule::plan(g, registry, d.as_ref(), &spec.options)?;
            Some(Session::planned(Arc::new(p), &weights, d.as_ref())?)
        };
        Ok(WhisperModel {
            name: config.name.clone(),
            dir: dir.to_path_buf(),
            weight_bytes: weights.bytes(),
            config,
            tokenizer,
            graph_file: graph.map(Path::to_path_buf),
            interrupt: None,
            stop_early: None,
            features,
            encoder,
            cross_kv,
            window,
            encoder_windows,
            decoder,
            decoder_windows,
            decoder_windows_streamed,
            align,
            graph_origin,
            load_time: t0.elapsed(),
            device: DeviceSpec {
                compute,
                ..spec.clone()
            },
            plans: plan_list,
            int8_source,
            weights,
        })
    }
}

/// Whisper's `max_initial_timestamp` of 1.0 s in 0.02-s steps.
pub const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;

/// Feeds tokens through the `decoder_step` graph, keeping the KV cache in the session's
/// states and the cross-attention K/V of the current window as borrowed inputs.
struct GraphStepper<'a> {
    session: &'a mut Session,
    cross: &'a [Tensor],
    offset: usize,
    n_vocab: usize,
    steps: usize,
    /// Where each sequence's KV cache lives: sequence i (the decoding policy's numbering)
    /// in the caches' sequence `slots[i]`. A reorder then copies a cache only for a
    /// parent's second and later children, instead of every sequence whose parent
    /// changed; rows go through the graph in slot order (a row's result does not depend
    /// on its place in the batch).
    slots: Vec<usize>,
    /// Checked before every step ([`WhisperModel::interrupt`]).
    interrupt: Option<Arc<AtomicBool>>,
}

impl<'a> GraphStepper<'a> {
    /// A stepper over a fresh KV cache holding one empty sequence.
    fn fresh(
        session: &'a mut Session,
        cross: &'a [Tensor],
        n_vocab: usize,
    ) -> Result<GraphStepper<'a>> {
        let mut s = GraphStepper {
            session,
            cross,
            offset: 0,
            n_vocab,
            steps: 0,
            slots: vec![0],
            interrupt: None,
        };
        s.reset().map_err(DecodeError::from)?;
        Ok(s)
    }

    /// The stepper stops with [`Error::Interrupted`] once `flag` is set.
    fn interruptible(mut self, flag: Option<Arc<AtomicBool>>) -> Self {
        self.interrupt = flag;
        self
    }

    /// Runs one decoder step for `batch` rows of `n` tokens each.
    fn run_batch(
        &mut self,
        ids: Vec<i32>,
        batch: usize,
        n: usize,
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        check_interrupt(self.interrupt.as_ref())?;
        let tokens_t = Tensor::from_i32(&[batch, n], ids)?;
        let offset_t = Tensor::scalar_i32(self.offset as i32);
        let idx: Vec<i32> = logit_positions.iter().map(|&p| p as i32).collect();
        let idx_t = Tensor::from_i32(&[idx.len()], idx)?;
        let mut inputs: Vec<&Tensor> = vec![&tokens_t, &offset_t, &idx_t];
        inputs.extend(self.cross.iter());
        // A step is dozens of small parallel sections: the pool's other threads spin
        // through it rather than fall asleep between sections.
        let session = &mut *self.session;
        let mut out = crate::warm_pool::keep_warm(|| session.run(&inputs))?;
        self.offset += n;
        self.steps += 1;
        let logits = out
            .pop()
            .ok_or_else(|| Error::graph(DECODER_STEP, "returned no logits"))?;
        let v = logits.f32s()?;
        let per_seq = logit_positions.len() * self.n_vocab;
        let rows = v
            .chunks_exact(per_seq.max(1))
            .map(|seq| seq.chunks_exact(self.n_vocab).map(|r| r.to_vec()).collect())
            .collect();
        let last = self.session.graph().outputs.len() - 1;
        self.session.recycle(last, logits);
        Ok(rows)
    }
}

impl BatchStepModel for GraphStepper<'_> {
    fn step(
        &mut self,
        tokens: &[Vec<u32>],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<Vec<f32>>>, StepError> {
        let n = tokens.first().map_or(0, |r| r.len());
        if tokens.iter().any(|r| r.len() != n) {
            return Err(Error::graph(
                DECODER_STEP,
                "every sequence of a batched step must feed the same number of tokens",
            )
            .into());
        }
        let batch = self
            .session
            .states_mut()
            .first()
            .map_or(1, |s| s.shape()[0]);
        if tokens.len() != batch {
            return Err(Error::graph(
                DECODER_STEP,
                format!(
                    "got {} sequences but the KV cache holds {batch}",
                    tokens.len()
                ),
            )
            .into());
        }
        check_slots(&self.slots, batch)?;
        // Rows in slot order: slot p holds the sequence `at_slot[p]`.
        let mut at_slot = vec![0; batch];
        for (i, &p) in self.slots.iter().enumerate() {
            at_slot[p] = i;
        }
        let ids: Vec<i32> = at_slot
            .iter()
            .flat_map(|&i| tokens[i].iter().map(|&t| t as i32))
            .collect();
        let mut by_slot: Vec<Option<Vec<Vec<f32>>>> = self
            .run_batch(ids, batch, n, logit_positions)?
            .into_iter()
            .map(Some)
            .collect();
        self.slots
            .iter()
            .map(|&p| {
                by_slot.get_mut(p).and_then(Option::take).ok_or_else(|| {
                    Error::graph(DECODER_STEP, format!("returned no logits for sequence {p}"))
                        .into()
                })
            })
            .collect()
    }

    fn reorder(&mut self, src: &[usize]) -> Result<(), StepError> {
        let offset = self.offset;
        let states = self.session.states_mut();
        let Some(first) = states.first() else {
            return Ok(());
        };
        let old_batch = first.shape()[0];
        if let Some(&bad) = src.iter().find(|&&i| i >= old_batch) {
            return Err(Error::graph(
                DECODER_STEP,
                format!("reorder: sequence {bad} does not exist (batch of {old_batch})"),
            )
            .into());
        }
        check_slots(&self.slots, old_batch)?;
        // The parents' caches, by slot.
        let parents: Vec<usize> = src.iter().map(|&i| self.slots[i]).collect();
        if src.len() == old_batch {
            // Same batch size: each parent's first child keeps the parent's slot; the
            // other children get the slots of parents without children, copied from
            // their parent's (a kept slot, so no copy reads a slot another writes).
            let (new_slots, copies) = place_children(&parents);
            self.slots = new_slots;
            if copies.is_empty() {
                return Ok(());
            }
            let moved: Vec<usize> = copies.iter().map(|&(to, _)| to).collect();
            let mut from: Vec<usize> = (0..old_batch).collect();
            for &(to, f) in &copies {
                from[to] = f;
            }
            CacheRuns::move_in_states(states, offset, &moved, |to| from[to])
                .map_err(|e| Error::graph(DECODER_STEP, e))?;
            return Ok(());
        }
        // Another batch size: the caches are laid out afresh, sequence i in slot i.
        self.slots = (0..src.len()).collect();
        if src.len() > old_batch {
            // Growing (a beam search's first step): in place, in the memory an earlier
            // search left (see `reset`); fresh caches of five sequences are 55 MB to
            // allocate and zero, 5–23 ms a window.
            return CacheRuns::grow_in_states(states, offset, &parents)
                .map_err(|e| Error::graph(DECODER_STEP, e).into());
        }
        for st in states.iter_mut() {
            gather_sequences(st, &parents, offset).map_err(|e| Error::graph(DECODER_STEP, e))?;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), StepError> {
        self.offset = 0;
        self.slots = vec![0];
        // KV caches of several sequences (a beam search's) become one zeroed sequence
        // but keep their memory, for the next search to grow into without allocating.
        let states = self.session.states_mut();
        let caches = states.first().is_some_and(|t| t.shape().first() > Some(&1))
            && states
                .iter()
                .all(|t| t.dtype() == DType::F32 && matches!(t.shape().len(), 3 | 4));
        if caches {
            for st in states.iter_mut() {
                let mut shape = st.shape().to_vec();
                shape[0] = 1;
                let per: usize = shape.iter().product();
                let mut data = std::mem::replace(st, Tensor::zeros(DType::F32, &[0])).into_f32()?;
                data.truncate(per);
                data.fill(0.0);
                *st = Tensor::from_f32(&shape, data)?;
            }
            return Ok(());
        }
        let mut bindings = HashMap::new();
        bindings.insert("batch", 1usize);
        self.session.reset_states(&bindings)?;
        self.offset = 0;
        Ok(())
    }
}

/// The slot map (`GraphStepper::slots`) places as many sequences as the caches hold.
fn check_slots(slots: &[usize], batch: usize) -> Result<(), StepError> {
    if slots.len() == batch {
        return Ok(());
    }
    Err(Error::graph(
        DECODER_STEP,
        format!(
            "the stepper places {} sequences but the KV cache holds {batch}",
            slots.len()
        ),
    )
    .into())
}

/// Slots for the children of a reorder whose parents' caches are in slots `parents`
/// (child i of the parent in slot `parents[i]`, as many children as slots): each parent's
/// first child takes its slot, every other child the next slot no child took. Returns the
/// children's slots and the copies `(to, from)` that fill the slots given to later children
/// (each `from` a slot that keeps its cache, each `to` one whose cache no child keeps).
fn place_children(parents: &[usize]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let n = parents.len();
    let mut taken = vec![false; n];
    let mut slots = vec![usize::MAX; n];
    for (i, &p) in parents.iter().enumerate() {
        if !taken[p] {
            taken[p] = true;
            slots[i] = p;
        }
    }
    let mut free = (0..n).filter(|&p| !taken[p]);
    let mut copies = Vec::new();
    for (i, &p) in parents.iter().enumerate() {
        if slots[i] == usize::MAX {
            let to = free.next().expect("as many slots as children");
            slots[i] = to;
            copies.push((to, p));
        }
    }
    (slots, copies)
}

impl StepModel for GraphStepper<'_> {
    fn step(
        &mut self,
        tokens: &[u32],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<f32>>, StepError> {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut rows = self.run_batch(ids, 1, tokens.len(), logit_positions)?;
        Ok(rows
            .pop()
            .ok_or_else(|| Error::graph(DECODER_STEP, "returned no sequence"))?)
    }
}

/// [`Error::Interrupted`] when `flag` is set.
pub(crate) fn check_interrupt(flag: Option<&Arc<AtomicBool>>) -> Result<()> {
    match flag {
        Some(f) if f.load(Ordering::Relaxed) => Err(Error::Interrupted),
        _ => Ok(()),
    }
}

/// Columns `seek..seek+size` of a `[n_mels, frames]` spectrogram, zero-padded to a full
/// window of [`N_FRAMES`] (faster-whisper pads in log-mel space).
pub fn mel_window(mel: &Tensor, seek: usize, size: usize) -> Result<Tensor> {
    let &[n_mels, frames] = mel.shape() else {
        return Err(Error::graph(
            FEATURES,
            format!("a spectrogram is [n_mels, frames], not {:?}", mel.shape()),
        ));
    };
    if seek.checked_add(size).is_none_or(|end| end > frames) || size > N_FRAMES {
        return Err(Error::graph(
            FEATURES,
            format!("mel window {seek}+{size} is outside the {frames} frames of the recording"),
        ));
    }
    let src = mel.f32s()?;
    let mut out = vec![0f32; n_mels * N_FRAMES];
    for m in 0..n_mels {
        out[m * N_FRAMES..m * N_FRAMES + size]
            .copy_from_slice(&src[m * frames + seek..m * frames + seek + size]);
    }
    Ok(Tensor::from_f32(&[n_mels, N_FRAMES], out)?)
}

/// Running the graphs: features, encoder, cross K/V, the decoding policy on the
/// `decoder_step` graph, language detection, the alignment pass.
impl WhisperModel {
    /// Runs the `features` graph: the log-mel spectrogram `[n_mels, frames]` of a whole
    /// recording (16 kHz mono).
    pub fn features(&mut self, pcm: &[f32]) -> Result<Tensor> {
        check_interrupt(self.interrupt.as_ref())?;
        let pcm_t = Tensor::from_f32(&[pcm.len()], pcm.to_vec())?;
        let mut out = self.features.run(&[&pcm_t])?;
        out.pop()
            .ok_or_else(|| Error::graph(FEATURES, "returned no output"))
    }

    /// Runs the `encoder` graph on one `[n_mels, 3000]` window.
    pub fn encode_window(&mut self, window: &Tensor) -> Result<Tensor> {
        check_interrupt(self.interrupt.as_ref())?;
        if let Some(w) = self.window.as_mut() {
            // On a device: the joined graph, returning only the encoder output.
            let mut want = vec![false; w.graph().outputs.len()];
            if let Some(last) = want.last_mut() {
                *last = true;
            }
            let mut out = w.run_selected(&[window], &want)?;
            return out
                .pop()
                .flatten()
                .ok_or_else(|| Error::graph(WINDOW, "returned no encoder output"));
        }
        let mut out = self.encoder.run(&[window])?;
        out.pop()
            .ok_or_else(|| Error::graph(ENCODER, "returned no output"))
    }

    /// The cross K/V of one `[n_mels, 3000]` window: on a device the joined graph, whose
    /// encoder output never leaves the device; else the encoder then the cross K/V graph.
    pub fn encode_cross(&mut self, window: &Tensor) -> Result<Vec<Tensor>> {
        check_interrupt(self.interrupt.as_ref())?;
        if let Some(w) = self.window.as_mut() {
            let n = w.graph().outputs.len();
            let want: Vec<bool> = (0..n).map(|i| i + 1 < n).collect();
            let out = w.run_selected(&[window], &want)?;
            return Ok(out.into_iter().flatten().collect());
        }
        let enc = self.encode_window(window)?;
        self.cross_kv(&enc)
    }

    /// The cross K/V of several `[n_mels, 3000]` windows in one run of the
    /// [`crate::graph::ENCODER_WINDOWS`] graph: each layer's keys and values stacked as
    /// `[windows, n_audio_ctx, s]`, the layout the lockstep decoder reads. `None` where the
    /// model has no such graph (on a device), or for fewer than two windows.
    pub fn encode_cross_windows(&mut self, windows: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        check_interrupt(self.interrupt.as_ref())?;
        let Some(session) = self.encoder_windows.as_mut() else {
            return Ok(None);
        };
        let Some(first) = windows.first().filter(|_| windows.len() >= 2) else {
            return Ok(None);
        };
        let shape = first.shape().to_vec();
        let mut data = Vec::with_capacity(windows.len() * first.numel());
        for (i, w) in windows.iter().enumerate() {
            if w.shape() != shape {
                return Err(Error::graph(
                    crate::graph::ENCODER_WINDOWS,
                    format!("window {i} is {:?}, window 0 {shape:?}", w.shape()),
                ));
            }
            data.extend_from_slice(w.f32s()?);
        }
        let mut batch_shape = vec![windows.len()];
        batch_shape.extend_from_slice(&shape);
        let batch = Tensor::from_f32(&batch_shape, data)?;
        Ok(Some(session.run(&[&batch])?))
    }

    /// The encoder output of the first 30-s window of a recording.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Tensor> {
        let mel = self.features(pcm)?;
        let size = mel.shape()[1].min(N_FRAMES);
        let window = mel_window(&mel, 0, size)?;
        self.encode_window(&window)
    }

    /// Runs the `cross_kv` graph: the cross-attention keys and values of every decoder
    /// layer, computed once per window.
    pub fn cross_kv(&mut self, encoder_out: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.cross_kv.run(&[encoder_out])?)
    }

    /// The decoding options faster-whisper uses at temperature 0.
    pub fn decode_options(&self, without_timestamps: bool) -> DecodeOptions {
        DecodeOptions {
            without_timestamps,
            suppress_blank: true,
            suppress_tokens: self.config.suppress_ids.clone(),
            suppress_blank_tokens: self.config.suppress_ids_begin.clone(),
            max_initial_timestamp_index: Some(MAX_INITIAL_TIMESTAMP_INDEX),
            max_length: self.config.dims.n_text_ctx,
        }
    }

    /// Greedy decoding of one window from `prompt`, with a fresh KV cache. Returns the
    /// result and the number of decoder-step runs.
    pub fn decode_greedy(
        &mut self,
        cross: &[Tensor],
        prompt: &[u32],
        opts: &DecodeOptions,
    ) -> Result<(DecodeResult, usize)> {
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?
            .interruptible(self.interrupt.clone());
        let ids = SpecialIds::from(&self.tokenizer);
        let result = greedy_decode(&mut stepper, prompt, &ids, opts)?;
        Ok((result, stepper.steps))
    }

    /// Decodes one window with faster-whisper's policy: beam search (or greedy) at
    /// temperature 0, then sampling at rising temperatures while the result looks like a
    /// failure. Returns the result, the temperature used and the decoder-step runs.
    pub fn decode_window(
        &mut self,
        cross: &[Tensor],
        prompt: &[u32],
        opts: &DecodeOptions,
        fallback: &FallbackOptions,
    ) -> Result<(DecodeResult, f32, usize)> {
        let tok = &self.tokenizer;
        let ids = SpecialIds::from(tok);
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?
            .interruptible(self.interrupt.clone());
        let (result, temperature) =
            decode_with_fallback(&mut stepper, prompt, &ids, opts, fallback, &|t| {
                tok.decode(t)
            })?;
        Ok((result, temperature, stepper.steps))
    }

    /// The first try (beam search at temperature 0, greedy for one beam) of several
    /// windows decoded in lockstep on [`WhisperModel::decoder_windows`]; results in the
    /// windows' order (see [`crate::lockstep::decode_lockstep`]).
    /// Each window's tokens are those it gets decoded alone (`decode_window`'s first try).
    pub fn decode_windows_lockstep(
        &mut self,
        windows: &[LockstepWindow],
        stacked: Option<Vec<Tensor>>,
        beam: &BeamOptions,
    ) -> Result<(Vec<Result<DecodeResult>>, LockstepStats)> {
        self.lockstep(windows, stacked, beam, false)
    }

    /// [`WhisperModel::decode_windows_lockstep`] on
    /// [`WhisperModel::decoder_windows_streamed`] where there is one: faster, and a
    /// window's tokens may then differ from those it gets alone (for the batched pipeline,
    /// whose windows are cut differently from sequential decoding anyway).
    pub fn decode_windows_lockstep_streamed(
        &mut self,
        windows: &[LockstepWindow],
        stacked: Option<Vec<Tensor>>,
        beam: &BeamOptions,
    ) -> Result<(Vec<Result<DecodeResult>>, LockstepStats)> {
        self.lockstep(windows, stacked, beam, true)
    }

    fn lockstep(
        &mut self,
        windows: &[LockstepWindow],
        stacked: Option<Vec<Tensor>>,
        beam: &BeamOptions,
        streamed: bool,
    ) -> Result<(Vec<Result<DecodeResult>>, LockstepStats)> {
        check_interrupt(self.interrupt.as_ref())?;
        let ids = SpecialIds::from(&self.tokenizer);
        let session = match (&mut self.decoder_windows_streamed, streamed) {
            (Some(s), true) => s,
            _ => &mut self.decoder_windows,
        };
        crate::lockstep::decode_lockstep(
            session,
            windows,
            stacked,
            &ids,
            beam,
            self.interrupt.as_deref(),
        )
    }

    /// [`WhisperModel::decode_window`] of a window whose first try was decoded already
    /// ([`WhisperModel::decode_windows_lockstep`]): the decoder runs only when that try
    /// needs the temperature fallback.
    pub fn decode_window_after(
        &mut self,
        cross: &[Tensor],
        prompt: &[u32],
        opts: &DecodeOptions,
        fallback: &FallbackOptions,
        first: DecodeResult,
    ) -> Result<(DecodeResult, f32, usize)> {
        let tok = &self.tokenizer;
        let ids = SpecialIds::from(tok);
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?
            .interruptible(self.interrupt.clone());
        let (result, temperature) = decode_with_fallback_after(
            &mut stepper,
            prompt,
            &ids,
            opts,
            fallback,
            &|t| tok.decode(t),
            first,
        )?;
        Ok((result, temperature, stepper.steps))
    }

    /// Language probabilities from one window's cross-attention K/V: the decoder reads
    /// `<|startoftranscript|>` and the language tokens' logits are normalised among
    /// themselves. Sorted, most probable first.
    pub fn detect_language(&mut self, cross: &[Tensor]) -> Result<Vec<(String, f32)>> {
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?
            .interruptible(self.interrupt.clone());
        let logits = StepModel::step(&mut stepper, &[self.tokenizer.sot()], &[0])
            .map_err(DecodeError::from)?
            .pop()
            .ok_or_else(|| Error::graph(DECODER_STEP, "returned no logits"))?;
        let langs: Vec<(String, f32)> = self
            .config
            .lang_ids
            .iter()
            .filter_map(|&id| {
                Some((
                    self.tokenizer.language_code(id)?.to_string(),
                    *logits.get(id as usize)?,
                ))
            })
            .collect();
        if langs.is_empty() {
            return Err(Error::Weights {
                path: self.dir.join(CONFIG_FILE),
                reason: "the model has no language tokens".into(),
            });
        }
        let max = langs.iter().map(|l| l.1).fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = langs.iter().map(|l| ((l.1 - max) as f64).exp()).sum();
        let mut probs: Vec<(String, f32)> = langs
            .into_iter()
            .map(|(c, l)| (c, (((l - max) as f64).exp() / z) as f32))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(probs)
    }

    /// Logits at every position of `tokens`, fed one at a time through `decoder_step`
    /// with a fresh KV cache (a reference for the batched paths).
    pub fn step_logits(&mut self, cross: &[Tensor], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?
            .interruptible(self.interrupt.clone());
        let mut out = Vec::with_capacity(tokens.len());
        for &t in tokens {
            out.extend(StepModel::step(&mut stepper, &[t], &[0]).map_err(DecodeError::from)?);
        }
        Ok(out)
    }

    /// Teacher-forced decoder pass over `tokens` (one window's cross-attention K/V):
    /// the cross-attention probabilities of the model's alignment heads
    /// `[alignment heads, tokens, n_audio_ctx]` and the logits `[tokens, n_vocab]`.
    pub fn align_tokens(
        &mut self,
        cross: &[Tensor],
        tokens: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        check_interrupt(self.interrupt.as_ref())?;
        let d = self.config.dims;
        if tokens.len() > d.n_text_ctx {
            return Err(Error::graph(
                DECODER_ALIGN,
                format!(
                    "{} tokens exceed the text context of {}",
                    tokens.len(),
                    d.n_text_ctx
                ),
            ));
        }
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let tokens_t = Tensor::from_i32(&[1, ids.len()], ids)?;
        let offset_t = Tensor::scalar_i32(0);
        let mut inputs: Vec<&Tensor> = vec![&tokens_t, &offset_t];
        inputs.extend(cross.iter());
        let mut out = self.align.run(&inputs)?.into_iter();
        let logits = out
            .next()
            .ok_or_else(|| Error::graph(DECODER_ALIGN, "returned no logits"))?
            .into_f32()?;
        let per_layer: Vec<Tensor> = out.collect();
        let (n, frames) = (tokens.len(), d.n_audio_ctx);
        let mut heads = Vec::with_capacity(self.config.alignment_heads.len() * n * frames);
        for &[layer, head] in &self.config.alignment_heads {
            let w = per_layer
                .get(layer as usize)
                .ok_or_else(|| {
                    Error::graph(
                        DECODER_ALIGN,
                        format!(
                            "alignment head layer {layer} is outside the decoder's {} layers",
                            d.n_text_layer
                        ),
                    )
                })?
                .f32s()?;
            if head as usize >= d.n_text_head {
                return Err(Error::graph(
                    DECODER_ALIGN,
                    format!(
                        "alignment head {head} is outside the {} heads",
                        d.n_text_head
                    ),
                ));
            }
            // A graph given with --graph may return weights of another size: an error
            // naming it, not a slice out of bounds.
            let part = w
                .get(head as usize * n * frames..(head as usize + 1) * n * frames)
                .ok_or_else(|| {
                    Error::graph(
                        DECODER_ALIGN,
                        format!(
                            "layer {layer}'s cross-attention weights hold {} values, not \
                             {} heads x {n} tokens x {frames} frames",
                            w.len(),
                            d.n_text_head
                        ),
                    )
                })?;
            heads.extend_from_slice(part);
        }
        Ok((heads, logits))
    }
}

/// Where one sequence's filled positions lie in a KV-cache state: `[batch, capacity, d]`
/// (one run per sequence) or, stored by head, `[batch, heads, capacity, hd]` (one run per
/// head). Positions past the offset are rewritten before they are read, so only these
/// move when beams are reordered.
pub(crate) struct CacheRuns {
    /// Elements per sequence.
    pub stride: usize,
    /// The filled runs, relative to a sequence's start.
    pub filled: Vec<std::ops::Range<usize>>,
}

/// Replaces a KV cache `[batch, ..]` by the cache of sequences `src` (sequence i the old
/// sequence `src[i]`), copying only the positions before `offset`.
pub(crate) fn gather_sequences(
    state: &mut Tensor,
    src: &[usize],
    offset: usize,
) -> std::result::Result<(), String> {
    let runs = CacheRuns::of(state.shape(), offset)?;
    let batch = state.shape()[0];
    if let Some(&bad) = src.iter().find(|&&i| i >= batch) {
        return Err(format!("sequence {bad} does not exist (batch of {batch})"));
    }
    let mut shape = state.shape().to_vec();
    shape[0] = src.len();
    if src.windows(2).all(|p| p[0] < p[1]) && src.len() <= batch {
        // Keeping some sequences in order: each moves down or stays, so it is moved in
        // place, lowest first (no source is overwritten before it is read), and the cache
        // then shrinks. A lockstep batch's cache is hundreds of MB; a copy would double it.
        let mut data = std::mem::replace(state, Tensor::zeros(DType::F32, &[0]))
            .into_f32()
            .map_err(|e| e.to_string())?;
        for (b, &from) in src.iter().enumerate().filter(|&(b, &from)| b != from) {
            for r in &runs.filled {
                data.copy_within(
                    from * runs.stride + r.start..from * runs.stride + r.end,
                    b * runs.stride + r.start,
                );
            }
        }
        // Positions past the offset are still zero in every sequence.
        data.truncate(src.len() * runs.stride);
        data.shrink_to_fit();
        *state = Tensor::from_f32(&shape, data).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let old = state.f32s().map_err(|e| e.to_string())?;
    let mut new = vec![0f32; src.len() * runs.stride];
    for (b, &from) in src.iter().enumerate() {
        for r in &runs.filled {
            new[b * runs.stride + r.start..b * runs.stride + r.end]
                .copy_from_slice(&old[from * runs.stride + r.start..from * runs.stride + r.end]);
        }
    }
    *state = Tensor::from_f32(&shape, new).map_err(|e| e.to_string())?;
    Ok(())
}

impl CacheRuns {
    pub fn of(shape: &[usize], offset: usize) -> std::result::Result<CacheRuns, String> {
        let (heads, cap, hd) = match *shape {
            [_, cap, d] => (1, cap, d),
            [_, heads, cap, hd] => (heads, cap, hd),
            _ => {
                return Err(format!(
                    "a KV cache of shape {shape:?}, expected rank 3 or 4"
                ))
            }
        };
        let n = offset.min(cap) * hd;
        Ok(CacheRuns {
            stride: heads * cap * hd,
            filled: (0..heads).map(|h| h * cap * hd..h * cap * hd + n).collect(),
        })
    }

    /// Sequence `i` of `moved` becomes sequence `from(i)`. A source that is itself among
    /// `moved` is read into `scratch` first, so that it is read before it is overwritten;
    /// the others (most of a beam step's: beams that kept their place) are copied straight.
    pub fn move_sequences(
        &self,
        data: &mut [f32],
        moved: &[usize],
        from: impl Fn(usize) -> usize,
        scratch: &mut Vec<f32>,
    ) {
        let mut saved: Vec<usize> = moved
            .iter()
            .map(|&i| from(i))
            .filter(|f| moved.contains(f))
            .collect();
        saved.sort_unstable();
        saved.dedup();
        scratch.clear();
        for &f in &saved {
            for r in &self.filled {
                let at = f * self.stride;
                scratch.extend_from_slice(&data[at + r.start..at + r.end]);
            }
        }
        let per: usize = self.filled.iter().map(|r| r.len()).sum();
        for &i in moved {
            let f = from(i);
            let slot = saved.binary_search(&f).ok();
            let mut k = slot.map_or(0, |s| s * per);
            for r in &self.filled {
                let at = i * self.stride + r.start;
                match slot {
                    Some(_) => data[at..at + r.len()].copy_from_slice(&scratch[k..k + r.len()]),
                    None => {
                        data.copy_within(f * self.stride + r.start..f * self.stride + r.end, at)
                    }
                }
                k += r.len();
            }
        }
    }

    /// [`move_sequences`](Self::move_sequences) over every cache of a step (`states`), the
    /// caches shared out between the cores: a beam step moves a few MB of them.
    pub fn move_in_states(
        states: &mut [Tensor],
        offset: usize,
        moved: &[usize],
        from: impl Fn(usize) -> usize + Sync,
    ) -> std::result::Result<(), String> {
        use rayon::prelude::*;
        states.par_iter_mut().try_for_each(|st| {
            let runs = CacheRuns::of(st.shape(), offset)?;
            let data = st.f32s_mut().map_err(|e| e.to_string())?;
            runs.move_sequences(data, moved, &from, &mut Vec::new());
            Ok(())
        })
    }

    /// Widens every cache of a step (`states`, `[batch, ..]`) to the sequences `src`
    /// (sequence i the old sequence `src[i]`, `src.len()` above the batch), in place: each
    /// buffer is lengthened (zeros; within its capacity when an earlier, wider search left
    /// one) and the positions before `offset` moved as [`move_sequences`](Self::move_sequences)
    /// moves them. The same values as [`gather_sequences`] where, as in a step's caches,
    /// the positions past `offset` are still zero.
    pub fn grow_in_states(
        states: &mut [Tensor],
        offset: usize,
        src: &[usize],
    ) -> std::result::Result<(), String> {
        use rayon::prelude::*;
        let room = |st: &Tensor| {
            let per: usize = st.shape().iter().skip(1).product();
            st.f32_capacity() >= src.len() * per
        };
        if !states.iter().all(room) {
            // No earlier search's memory (the first search): fresh caches, allocated on
            // this thread as before. Growing the old buffers instead (`realloc`, some on
            // the pool's threads) left glibc holding about 50 MB more in some runs.
            for st in states.iter_mut() {
                gather_sequences(st, src, offset)?;
            }
            return Ok(());
        }
        states.par_iter_mut().try_for_each(|st| {
            let runs = CacheRuns::of(st.shape(), offset)?;
            let batch = st.shape()[0];
            if let Some(&bad) = src.iter().find(|&&i| i >= batch) {
                return Err(format!("sequence {bad} does not exist (batch of {batch})"));
            }
            if src.len() < batch {
                return Err(format!("{} sequences do not widen {batch}", src.len()));
            }
            let mut shape = st.shape().to_vec();
            shape[0] = src.len();
            let mut data = std::mem::replace(st, Tensor::zeros(DType::F32, &[0]))
                .into_f32()
                .map_err(|e| e.to_string())?;
            data.resize(src.len() * runs.stride, 0.0);
            let moved: Vec<usize> = (0..src.len()).filter(|&i| src[i] != i).collect();
            runs.move_sequences(&mut data, &moved, |i| src[i], &mut Vec::new());
            *st = Tensor::from_f32(&shape, data).map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod cache_runs_tests {
    use super::{gather_sequences, place_children, CacheRuns, Tensor};

    #[test]
    fn children_find_their_parents_caches_with_the_fewest_copies() {
        // Every choice of parents for 1 to 5 sequences.
        for n in 1..=5usize {
            for code in 0..n.pow(n as u32) {
                let parents: Vec<usize> = (0..n).map(|i| code / n.pow(i as u32) % n).collect();
                let (slots, copies) = place_children(&parents);
                let mut sorted = slots.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "{parents:?}: {slots:?}");
                let mut distinct = parents.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(copies.len(), n - distinct.len(), "{parents:?}");
                // No copy reads a slot a copy writes, so their order does not matter.
                for &(_, from) in &copies {
                    assert!(copies.iter().all(|&(to, _)| to != from), "{parents:?}");
                }
                // Slot p holds parent p's cache; after the copies each child's slot holds
                // its parent's, and a parent's first child kept the parent's slot.
                let mut holds: Vec<usize> = (0..n).collect();
                for &(to, from) in &copies {
                    holds[to] = holds[from];
                }
                for (i, &p) in parents.iter().enumerate() {
                    assert_eq!(holds[slots[i]], p, "{parents:?}: child {i}");
                    if parents[..i].iter().all(|&q| q != p) {
                        assert_eq!(slots[i], p, "{parents:?}: first child {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn growing_in_place_equals_gathering_into_a_fresh_cache() {
        // Widening to more sequences (a beam search's first step, and wider), offset 3 of
        // capacity 4, in either layout, from buffers with and without spare capacity (a
        // wider search's memory, holding its old values past the end).
        for (batch, src) in [(1usize, vec![0usize, 0, 0]), (2, vec![1, 0, 1, 1, 0])] {
            for shape in [vec![batch, 4, 4], vec![batch, 2, 4, 2]] {
                // Values at the filled positions; those past the offset are still zero.
                let runs = CacheRuns::of(&shape, 3).unwrap();
                let mut values = vec![0f32; 16 * batch];
                for b in 0..batch {
                    for r in &runs.filled {
                        for p in r.clone() {
                            values[b * 16 + p] = (b * 16 + p) as f32 + 1.0;
                        }
                    }
                }
                let mut fresh = Tensor::from_f32(&shape, values.clone()).unwrap();
                gather_sequences(&mut fresh, &src, 3).unwrap();
                for spare in [0usize, 200] {
                    let mut data = Vec::with_capacity(values.len() + spare);
                    data.extend(std::iter::repeat_n(-7.5f32, values.len() + spare));
                    data.truncate(values.len());
                    data.copy_from_slice(&values);
                    let mut states = vec![Tensor::from_f32(&shape, data).unwrap(); 2];
                    CacheRuns::grow_in_states(&mut states, 3, &src).unwrap();
                    for st in &states {
                        assert_eq!(st.shape(), fresh.shape(), "{shape:?} {src:?}");
                        assert_eq!(
                            st.f32s().unwrap(),
                            fresh.f32s().unwrap(),
                            "{shape:?} {src:?}"
                        );
                    }
                }
                // A state that is not a cache, a sequence that does not exist, or fewer
                // sequences, is refused.
                for odd in [
                    Tensor::from_f32(&[], vec![0.0]),
                    Tensor::from_f32(&[4], vec![0.0; 4]),
                ] {
                    let mut odd = [odd.unwrap()];
                    assert!(CacheRuns::grow_in_states(&mut odd, 3, &src).is_err());
                }
                let st = || vec![Tensor::from_f32(&shape, values.clone()).unwrap()];
                assert!(CacheRuns::grow_in_states(&mut st(), 3, &[0, batch]).is_err());
                if batch > 1 {
                    assert!(CacheRuns::grow_in_states(&mut st(), 3, &[0]).is_err());
                }
            }
        }
    }

    #[test]
    fn reordering_by_runs_moves_the_filled_positions_of_either_layout() {
        // 3 sequences, 2 heads, capacity 4, head size 2, offset 3; sequence i becomes
        // old sequence from[i].
        // Every parent kept or moved: sources read from the scratch (themselves moved)
        // and copied straight (kept in place), cycles, one parent for many.
        let froms: [&[usize]; 6] = [
            &[2, 0, 0],
            &[0, 0, 1, 4, 3],
            &[1, 2, 3, 4, 0],
            &[4, 4, 4, 4, 4],
            &[0, 1, 2, 3, 4],
            &[3, 3, 0, 0, 2],
        ];
        for from in froms {
            let n = from.len();
            let moved: Vec<usize> = (0..n).filter(|&i| from[i] != i).collect();
            for shape in [vec![n, 4, 4], vec![n, 2, 4, 2]] {
                let runs = CacheRuns::of(&shape, 3).unwrap();
                assert_eq!(runs.stride, 16);
                let mut data: Vec<f32> = (0..16 * n).map(|x| x as f32).collect();
                let old = data.clone();
                let mut scratch = Vec::new();
                runs.move_sequences(&mut data, &moved, |i| from[i], &mut scratch);
                let filled: usize = runs.filled.iter().map(|r| r.len()).sum();
                assert_eq!(filled, 12, "{shape:?}: 3 of 4 positions of 4 values");
                let mut unfilled = [true; 16];
                for r in &runs.filled {
                    unfilled[r.clone()].fill(false);
                }
                for (i, &f) in from.iter().enumerate() {
                    for r in &runs.filled {
                        assert_eq!(
                            data[i * 16 + r.start..i * 16 + r.end],
                            old[f * 16 + r.start..f * 16 + r.end],
                            "{from:?} {shape:?}: sequence {i}"
                        );
                    }
                    // Positions past the offset are never touched.
                    for (p, _) in unfilled.iter().enumerate().filter(|(_, &u)| u) {
                        assert_eq!(data[i * 16 + p], old[i * 16 + p], "{from:?} {shape:?}");
                    }
                }
                // All of a step's caches at once give the same.
                let mut states: Vec<Tensor> = (0..3)
                    .map(|_| Tensor::from_f32(&shape, old.clone()).unwrap())
                    .collect();
                CacheRuns::move_in_states(&mut states, 3, &moved, |i| from[i]).unwrap();
                for st in &states {
                    assert_eq!(st.f32s().unwrap(), &data[..], "{from:?} {shape:?}");
                }
            }
        }
        assert!(CacheRuns::of(&[3, 4], 1).is_err());
    }

    #[test]
    fn gathering_sequences_in_place_keeps_what_a_copy_keeps() {
        // 5 sequences, 2 heads, capacity 4, head size 2, offset 3. An increasing selection
        // (a lockstep batch dropping finished windows) moves in place; any other copies.
        let data: Vec<f32> = (0..80).map(|x| x as f32 + 1.0).collect();
        for src in [
            vec![0usize, 2, 4],
            vec![1, 3],
            vec![0, 1, 2, 3, 4],
            vec![4, 0, 0, 2],
        ] {
            let mut state = Tensor::from_f32(&[5, 2, 4, 2], data.clone()).unwrap();
            gather_sequences(&mut state, &src, 3).unwrap();
            assert_eq!(state.shape(), [src.len(), 2, 4, 2]);
            let got = state.f32s().unwrap();
            let runs = CacheRuns::of(&[5, 2, 4, 2], 3).unwrap();
            for (b, &from) in src.iter().enumerate() {
                for r in &runs.filled {
                    assert_eq!(
                        got[b * 16 + r.start..b * 16 + r.end],
                        data[from * 16 + r.start..from * 16 + r.end],
                        "{src:?}: sequence {b}"
                    );
                }
            }
        }
        let mut state = Tensor::from_f32(&[5, 2, 4, 2], data).unwrap();
        assert!(gather_sequences(&mut state, &[1, 5], 3).is_err());
    }
}
