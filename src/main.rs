//! The `amanuensis` command line.

use amanuensis::audio;
use amanuensis::model::{self, WhisperModel};
use amanuensis::transcribe::{Task, TranscribeOptions, Transcript};
use amanuensis::whisper::config::WhisperDims;
use amanuensis::whisper::graph::build_whisper_graph;
use amanuensis_runtime::{Graph, ModelFile};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "amanuensis", version, about = "Whisper speech-to-text as a serialized operator graph")]
struct Cli {
    /// Worker threads for the kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe audio files (WAV) and print the text.
    Transcribe(TranscribeArgs),
    /// Measure a transcription: encoder, decoder, realtime factor, memory, overhead.
    Bench(BenchArgs),
    /// Work with graph files.
    #[command(subcommand)]
    Graph(GraphCommand),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model name (`base`) or model directory.
    #[arg(long, short, default_value = "base")]
    model: String,
    /// Graph file (default: graphs/<model>.graph if present, else the built-in one).
    #[arg(long)]
    graph: Option<PathBuf>,
}

#[derive(Args)]
struct TranscribeArgs {
    /// Audio files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Print segments with start/end seconds as JSON.
    #[arg(long)]
    json: bool,
    /// Decode without timestamp tokens. The default for plain-text output, whose text
    /// carries no times; `--json` decodes with timestamps unless this is given.
    #[arg(long, conflicts_with = "timestamps")]
    no_timestamps: bool,
    /// Decode with timestamp tokens even for plain-text output.
    #[arg(long)]
    timestamps: bool,
    /// Language of the audio.
    #[arg(long, default_value = "en")]
    language: String,
    /// Transcribe, or translate into English.
    #[arg(long, value_enum, default_value_t = TaskArg::Transcribe)]
    task: TaskArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Transcribe,
    Translate,
}

#[derive(Args)]
struct BenchArgs {
    /// Audio file to transcribe.
    file: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Subcommand)]
enum GraphCommand {
    /// Print a graph file's graphs, op counts and weight bytes.
    Inspect {
        /// Graph file.
        file: PathBuf,
    },
    /// Write the graph file of a Whisper size from its hyper-parameters.
    Build {
        /// tiny, base, small, medium, large-v3, ...
        size: String,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global() {
            eprintln!("warning: could not size the thread pool: {e}");
        }
    }
    let result = match cli.command {
        Command::Transcribe(a) => transcribe(a),
        Command::Bench(a) => bench(a),
        Command::Graph(GraphCommand::Inspect { file }) => graph_inspect(&file),
        Command::Graph(GraphCommand::Build { size, output }) => graph_build(&size, output.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMANUENSIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn load_model(args: &ModelArgs) -> Result<WhisperModel> {
    let dir = model::find_model_dir(&args.model)?;
    let registry = amanuensis_operators::standard_registry();
    let m = WhisperModel::load(&dir, args.graph.as_deref(), &registry)
        .with_context(|| format!("loading model from {}", dir.display()))?;
    tracing::info!(model = %m.name, dir = %dir.display(), graph = %m.graph_origin, load_ms = m.load_time.as_millis() as u64, "model loaded");
    Ok(m)
}

fn transcribe(a: TranscribeArgs) -> Result<ExitCode> {
    let mut model = load_model(&a.model)?;
    if model.tokenizer.language_token(&a.language).is_none() {
        bail!(
            "unknown language code '{}' (known: {})",
            a.language,
            model.tokenizer.language_codes().join(", ")
        );
    }
    let opts = TranscribeOptions {
        language: a.language.clone(),
        task: match a.task {
            TaskArg::Transcribe => Task::Transcribe,
            TaskArg::Translate => Task::Translate,
        },
        without_timestamps: a.no_timestamps || (!a.json && !a.timestamps),
        ..TranscribeOptions::default()
    };
    let mut failed = 0;
    for file in &a.files {
        // One bad file must not stop the others.
        match transcribe_file(&mut model, file, &opts) {
            Ok(t) => {
                if a.json {
                    let mut v = serde_json::to_value(&t)?;
                    v["file"] = serde_json::Value::String(file.display().to_string());
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    if a.files.len() > 1 {
                        println!("{}:", file.display());
                    }
                    println!("{}", t.text);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e:#}", file.display());
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn transcribe_file(model: &mut WhisperModel, file: &Path, opts: &TranscribeOptions) -> Result<Transcript> {
    let pcm = audio::load_audio(file)?;
    model.transcribe_pcm(&pcm, opts)
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    let t_load = Instant::now();
    let mut model = load_model(&a.model)?;
    let load = t_load.elapsed();
    let t_audio = Instant::now();
    let pcm = audio::load_audio(&a.file)?;
    let audio_time = t_audio.elapsed();
    let opts = TranscribeOptions { without_timestamps: true, ..TranscribeOptions::default() };
    let threads = rayon::current_num_threads();
    println!("bench: {} ({:.2} s of audio), model {}, {threads} threads", a.file.display(), pcm.len() as f64 / 16000.0, model.name);
    // Warm-up: first-touch allocations and buffer pools.
    let warm = model.transcribe_pcm(&pcm, &opts)?;
    println!("text: {}", warm.text);
    for s in [&mut model.encoder, &mut model.cross_kv, &mut model.decoder] {
        s.take_stats();
    }
    let runs = a.runs.max(1);
    let mut walls = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let tr = model.transcribe_pcm(&pcm, &opts)?;
        walls.push(t.elapsed());
        last = Some(tr);
    }
    let tr = last.expect("runs >= 1");
    walls.sort();
    let median = walls[walls.len() / 2];
    let mut stats = model.encoder.take_stats();
    let enc_stats = stats.clone();
    let cross = model.cross_kv.take_stats();
    let dec = model.decoder.take_stats();
    stats.merge(&cross);
    stats.merge(&dec);
    let per_run_kernel = stats.kernel / runs as u32;
    let per_run_wall_in_exec = stats.wall / runs as u32;
    let n_tok = tr.timings.decoder_steps.max(1);
    let duration = pcm.len() as f64 / 16000.0;
    println!("load:                 {:8.1} ms (graph validation + weights)", ms(load));
    println!("audio decode:         {:8.1} ms", ms(audio_time));
    println!("encoder per window:   {:8.1} ms", ms(enc_stats.wall / runs as u32));
    println!("cross K/V per window: {:8.1} ms", ms(cross.wall / runs as u32));
    println!("decoder per token:    {:8.2} ms ({} steps, {} tokens)", ms(dec.wall / runs as u32) / n_tok as f64, n_tok, tr.timings.tokens);
    println!("transcribe (median):  {:8.1} ms of {runs} runs; realtime factor {:.1}x", ms(median), duration / median.as_secs_f64());
    println!("end to end:           {:8.1} ms (load + decode audio + transcribe)", ms(load + audio_time + median));
    let outside_kernels = median.saturating_sub(per_run_kernel);
    println!(
        "outside kernels:      {:8.1} ms = {:.2}% of transcribe wall (executor itself: {:.2} ms = {:.2}%)",
        ms(outside_kernels),
        100.0 * outside_kernels.as_secs_f64() / median.as_secs_f64(),
        ms(per_run_wall_in_exec.saturating_sub(per_run_kernel)),
        100.0 * per_run_wall_in_exec.saturating_sub(per_run_kernel).as_secs_f64() / median.as_secs_f64()
    );
    println!("peak intermediates:   {:8.1} MB (executor)", stats.peak_bytes as f64 / 1e6);
    if let Some(rss) = peak_rss_bytes() {
        println!("peak RSS:             {:8.1} MB", rss as f64 / 1e6);
    }
    let mut ops: Vec<_> = stats.per_op.iter().collect();
    ops.sort_by(|a, b| b.1 .1.cmp(&a.1 .1));
    println!("kernel time by op (per run):");
    for (op, (n, t)) in ops {
        println!("  {op:<20} {:8.1} ms  ({} calls)", ms(*t / runs as u32), n / runs);
    }
    Ok(ExitCode::SUCCESS)
}

fn graph_inspect(path: &Path) -> Result<ExitCode> {
    let file = ModelFile::load(path)?;
    let registry = amanuensis_operators::standard_registry();
    println!("{}: model {} ({}), format version {}", path.display(), file.model.name, file.model.family, file.version);
    let hp: Vec<String> = file.model.hyper_parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("hyper-parameters: {}", hp.join(" "));
    let weight_bytes: usize = file.weights.iter().map(|w| w.shape.iter().product::<usize>() * w.dtype.size()).sum();
    println!("weights: {} tensors, {:.1} MB as stored", file.weights.len(), weight_bytes as f64 / 1e6);
    let decl: std::collections::HashMap<&str, usize> = file
        .weights
        .iter()
        .map(|w| (w.name.as_str(), w.shape.iter().product::<usize>() * w.dtype.size()))
        .collect();
    for gdef in &file.graphs {
        let g = Graph::build(gdef, &file.weights, &registry)?;
        let wb: usize = g.weight_names().filter_map(|n| decl.get(n)).sum();
        println!(
            "graph '{}': {} nodes, {} inputs, {} outputs, {} states, {} weights ({:.1} MB)",
            g.name,
            g.nodes.len(),
            gdef.inputs.len(),
            gdef.outputs.len(),
            gdef.states.len(),
            g.weight_names().count(),
            wb as f64 / 1e6
        );
        for v in &gdef.inputs {
            println!("  in  {:<14} {}{}", v.name, v.dtype, amanuensis_runtime::format::shape_string(&v.shape));
        }
        for v in gdef.outputs.iter().take(4) {
            println!("  out {:<14} {}{}", v.name, v.dtype, amanuensis_runtime::format::shape_string(&v.shape));
        }
        if gdef.outputs.len() > 4 {
            println!("  out ... ({} more)", gdef.outputs.len() - 4);
        }
        let counts: Vec<String> = g.op_counts().iter().map(|(k, v)| format!("{k}×{v}")).collect();
        println!("  ops: {}", counts.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn graph_build(size: &str, output: Option<&Path>) -> Result<ExitCode> {
    let size = size.trim_start_matches("whisper-");
    let dims = WhisperDims::for_size(size).with_context(|| format!("unknown Whisper size '{size}'"))?;
    let file = build_whisper_graph(&format!("whisper-{size}"), &dims);
    // Validate before writing: a graph that does not load is never written.
    model::validate_graphs(&file, &amanuensis_operators::standard_registry())?;
    let text = file.to_text();
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
