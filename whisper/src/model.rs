//! Finding and loading a Whisper model: the model directory (weights, config, vocabulary)
//! and the graph file, validated against the operator registry and each other.

use crate::config::{WhisperConfig, WhisperDims, CONFIG_FORMAT, CONFIG_VERSION};
use crate::graph::{
    window_graph, CROSS_KV, DECODER_ALIGN, DECODER_STEP, ENCODER, FEATURES, WINDOW,
};
use crate::tokenizer::Tokenizer;
use amanuensis_runtime::schedule::Plan;
use amanuensis_runtime::{Graph, ModelFile, Registry, Session, WeightStore};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The committed graph of whisper-base, built into the binary so that an installed
/// `amanuensis` needs only the model directory.
pub const WHISPER_BASE_GRAPH: &str = include_str!("../../graphs/whisper-base.graph");

/// Environment variable naming the folder that holds model directories.
pub const MODELS_ENV: &str = "AMANUENSIS_MODELS";

/// Files of a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const VOCABULARY_FILE: &str = "vocabulary.txt";

/// Folders searched for model directories, in order: `$AMANUENSIS_MODELS`, `./models`,
/// and the `models/` folder of the source tree this binary was built from.
pub fn model_search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(MODELS_ENV) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("models"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    dirs
}

/// Resolves `--model`: an existing directory path, or a name such as `base` or
/// `whisper-base` looked up in [`model_search_path`].
pub fn find_model_dir(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.join(WEIGHTS_FILE).is_file() {
        return Ok(p.to_path_buf());
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
    let list: Vec<String> = searched
        .iter()
        .map(|d| d.join(&name).display().to_string())
        .collect();
    bail!(
        "model '{spec}' not found (looked for {WEIGHTS_FILE} in: {}). Run `scripts/fetch-model.sh base` to download and convert whisper-base, or set {MODELS_ENV}.",
        list.join(", ")
    )
}

/// Reads and checks a model directory's `config.json`.
pub fn read_config(dir: &Path) -> Result<WhisperConfig> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: WhisperConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid model config", path.display()))?;
    if cfg.format != CONFIG_FORMAT || cfg.version != CONFIG_VERSION {
        bail!(
            "{}: format '{}' version {} is not '{CONFIG_FORMAT}' version {CONFIG_VERSION}; re-run weights-tool convert",
            path.display(),
            cfg.format,
            cfg.version
        );
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
    bail!("no graph file for '{model_name}': pass --graph FILE (build one with `amanuensis graph build {model_name}`)")
}

/// Reads the Whisper hyper-parameters recorded in a graph file.
pub fn graph_dims(file: &ModelFile) -> Result<WhisperDims> {
    let hp = serde_json::Value::Object(file.model.hyper_parameters.clone().into_iter().collect());
    serde_json::from_value(hp)
        .map_err(|e| anyhow!("graph file's hyper_parameters are not Whisper's: {e}"))
}

pub use crate::devices::{plan_graphs, validate_graphs, DeviceFactory, DeviceSpec};

/// A loaded Whisper model: config, tokenizer and one session per graph.
pub struct WhisperModel {
    pub name: String,
    pub dir: PathBuf,
    pub config: WhisperConfig,
    pub tokenizer: Tokenizer,
    pub features: Session,
    pub encoder: Session,
    pub cross_kv: Session,
    /// On a device: the encoder and cross K/V as one planned graph ([`WINDOW`]), so the
    /// encoder output stays on the device; `encoder` and `cross_kv` then run on the host
    /// only when called on their own.
    pub window: Option<Session>,
    pub decoder: Session,
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
    /// The scheduler's plan of each graph (empty on the plain CPU path).
    pub plans: Vec<Arc<Plan>>,
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
        let t0 = Instant::now();
        let config = read_config(dir)?;
        let (file, graph_origin) = load_graph_file(graph, &config.name)?;
        let dims = graph_dims(&file)?;
        if dims != config.dims {
            bail!(
                "graph {graph_origin} is for {:?} but the model in {} has {:?}",
                dims,
                dir.display(),
                config.dims
            );
        }
        let vocab_path = dir.join(VOCABULARY_FILE);
        let tokenizer = Tokenizer::from_model_dir(dir)?;
        if tokenizer.n_vocab() != dims.n_vocab {
            bail!(
                "{} has {} tokens, the model {}",
                vocab_path.display(),
                tokenizer.n_vocab(),
                dims.n_vocab
            );
        }
        let weights = WeightStore::load(&dir.join(WEIGHTS_FILE), &file.weights)?;
        // Each graph is built once; on a device the scheduler's passes edit it in place.
        // On a device the encoder and cross K/V run as one graph; the separate ones stay
        // on the host for callers that want one of them alone.
        let planned = spec.planned();
        let device = if planned { Some(spec.open()?) } else { None };
        let mut host_graphs: std::collections::HashMap<String, Arc<Graph>> =
            std::collections::HashMap::new();
        let mut plans: std::collections::HashMap<String, Arc<Plan>> =
            std::collections::HashMap::new();
        for g in validate_graphs(&file, registry)? {
            let on_host = !planned || g.name == ENCODER || g.name == CROSS_KV;
            if on_host {
                host_graphs.insert(g.name.clone(), Arc::new(g));
            } else if let Some(d) = &device {
                let p = amanuensis_runtime::schedule::plan(g, registry, d.as_ref(), &spec.options)?;
                plans.insert(p.graph.name.clone(), Arc::new(p));
            }
        }
        let window = match &device {
            Some(d) => {
                let def = window_graph(&file).map_err(|e| anyhow!("{graph_origin}: {e}"))?;
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
            let missing = || anyhow!("graph file {graph_origin} has no graph '{name}'");
            Ok(match (&device, host_graphs.remove(name)) {
                (_, Some(g)) => Session::new(g, &weights)?,
                (Some(d), None) => Session::planned(
                    plans.remove(name).ok_or_else(missing)?,
                    &weights,
                    d.as_ref(),
                )?,
                (None, None) => return Err(missing()),
            })
        };
        let features = session(FEATURES)?;
        let encoder = session(ENCODER)?;
        let cross_kv = session(CROSS_KV)?;
        let decoder = session(DECODER_STEP)?;
        let align = session(DECODER_ALIGN)?;
        Ok(WhisperModel {
            name: config.name.clone(),
            dir: dir.to_path_buf(),
            weight_bytes: weights.bytes(),
            config,
            tokenizer,
            features,
            encoder,
            cross_kv,
            window,
            decoder,
            align,
            graph_origin,
            load_time: t0.elapsed(),
            device: spec.clone(),
            plans: plan_list,
        })
    }
}
