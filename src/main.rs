//! The `amanuensis` command line.

use amanuensis::audio;
use amanuensis::decoding::{BeamOptions, FallbackOptions};
use amanuensis::model::{self, DeviceSpec, WhisperModel};
use amanuensis::output::{self, OutputFormat};
use amanuensis::scheduling;
use amanuensis::whisper::config::WhisperDims;
use amanuensis::whisper::graph::build_whisper_graph;
use amanuensis::whisper::graph::CHUNK_SECONDS;
use amanuensis::{Progress, Task, TranscribeOptions, Transcript};
use amanuensis_runtime::npu::{NpuOptions, NpuParams};
use amanuensis_runtime::schedule::SchedulerOptions;
use amanuensis_runtime::{Graph, ModelFile};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "amanuensis",
    version,
    about = "Whisper speech-to-text as a serialized operator graph"
)]
struct Cli {
    /// Worker threads for the kernels, 1 to 1024 (default: all cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Load an operator plugin built as a shared library (repeatable); see docs/plugins.md.
    #[arg(long = "plugin", global = true, value_name = "LIB")]
    plugins: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe audio files (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/AAC/ALAC, WebM/MKV;
    /// `-` reads standard input) and print or write the transcript.
    Transcribe(TranscribeArgs),
    /// Measure a transcription: encoder, decoder, realtime factor, memory, overhead.
    Bench(BenchArgs),
    /// Show how the scheduler places, fuses, transfers, stores and tiles every graph.
    Plan(PlanArgs),
    /// List the devices (cpu, npu-sim, npu-dry, npu) with their status, and why one is unavailable.
    Devices,
    /// Work with graph files.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Find the speech in audio files with Silero VAD and print its segments.
    Vad(VadCmdArgs),
    /// Serve OpenAI's transcription API over HTTP (`POST /v1/audio/transcriptions`,
    /// `/v1/audio/translations`, `GET /v1/models`, `/health`, `/ready`, `/metrics`); see
    /// docs/server.md.
    Serve(ServeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (`0.0.0.0` for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is printed on stderr).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    #[command(flatten)]
    model: ModelArgs,
    /// Transcription workers: each has its own sessions on the one loaded model. The
    /// kernels of each already use every core (`--threads`).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests that may wait for a worker; beyond that the server answers 429 with
    /// Retry-After.
    #[arg(long, default_value_t = 16)]
    max_queue: usize,
    /// Requests a worker takes at once when they wait together (1 to 64; 1 turns batching
    /// off): their first 30-s windows are decoded in lockstep, each request keeping its
    /// own answer, cancellation and deadline.
    #[arg(long, default_value_t = amanuensis::serve::DEFAULT_BATCH_SIZE, value_parser = parse_batch_size)]
    batch_size: usize,
    /// Largest request body (bytes, or with a suffix: 25MB, 512KB, 1MiB); larger ones are
    /// answered 413.
    #[arg(long, default_value = "25MB", value_parser = parse_size)]
    max_body: u64,
    /// Deadline of a whole request, upload included (seconds, or 500ms, 2m); past it the
    /// server answers 504 and stops the request's work.
    #[arg(long, default_value = "300", value_parser = parse_duration)]
    timeout: Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Time a connection has to send a request's whole head, from its opening or from its
    /// previous answer (seconds, or 500ms, 2m); then it is closed.
    #[arg(long, default_value = "30", value_parser = parse_duration)]
    header_timeout: Duration,
    /// API key that `/v1/*` requests must send as `Authorization: Bearer <key>`.
    #[arg(long, env = "AMANUENSIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Transcribe only the speech Silero VAD finds in each request; times stay the
    /// recording's. Tune with the --vad-* options.
    #[arg(long)]
    vad: bool,
    #[command(flatten)]
    vad_options: VadArgs,
}

/// `--batch-size`: a number of windows the library accepts.
fn parse_batch_size(s: &str) -> std::result::Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of windows"))?;
    amanuensis::window_loop::check_batch_size(n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// A positive, finite number of seconds.
fn parse_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// `bench --runs`: 1 to 1000 timed runs (the warm-up run is not timed).
fn parse_runs(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number of timed runs (1 to 1000)")),
    }
}

/// A decoding threshold that `none` turns off.
#[derive(Clone, Copy, Debug)]
struct Threshold(Option<f64>);

impl std::str::FromStr for Threshold {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("none") {
            return Ok(Threshold(None));
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Threshold(Some(v))),
            _ => Err(format!("'{s}' is neither a number nor `none`")),
        }
    }
}

/// `25MB` (megabytes of 1024² bytes, as OpenAI's limit), `512KB`, `1MiB`, or bytes.
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 25MB, 512KB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(format!("unknown size unit '{u}' in '{s}' (B, KB, MB, GB)")),
    };
    let bytes = n * mult as f64;
    // Past u64 the cast would saturate: a typo must not mean "no limit".
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{s}' is too large a size"));
    }
    Ok(bytes as u64)
}

/// `300` (seconds), `500ms`, `30s`, `2m`, `1h`.
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 300, 30s, 500ms, 2m)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("'{s}': the duration must be above 0"));
    }
    // `ServeOptions::check` bounds it further; this only keeps the conversion in range.
    Duration::try_from_secs_f64(v * mult).map_err(|_| format!("'{s}' is too long a duration"))
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// Device the graphs run on: `auto` (the NPU when usable, else the CPU, said on
    /// stderr), `cpu`, `npu` (Ryzen AI through XRT), `npu-dry` (the `npu` device's code
    /// against XRT's test double, on any machine), or `npu-sim` (the NPU timing simulator;
    /// its times are projections). `amanuensis devices` lists what is usable.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Parameter set of the NPU's timing model: phoenix or strix.
    #[arg(long, default_value = "phoenix")]
    npu: String,
    /// Scheduler: skip the fusion pass.
    #[arg(long)]
    no_fusion: bool,
    /// Scheduler: skip the residency pass (a host round trip around every device node).
    #[arg(long)]
    no_residency: bool,
    /// Scheduler: skip an optional pass by name (repeatable; `amanuensis plan` lists them).
    #[arg(long = "skip-pass", value_name = "PASS")]
    skip_pass: Vec<String>,
    /// NPU: columns to use (default: all).
    #[arg(long)]
    columns: Option<usize>,
    /// NPU: single buffers, so DMA and compute do not overlap.
    #[arg(long)]
    no_double_buffer: bool,
    /// NPU: one device run per tile with a host round trip each (the seed design).
    #[arg(long)]
    dispatch_per_tile: bool,
    /// NPU: submit each run on its own instead of a segment's runs together.
    #[arg(long)]
    no_runlists: bool,
    /// NPU: one xclbin per op kind (a hardware-context switch whenever the op changes).
    #[arg(long)]
    xclbin_per_op: bool,
    /// With `--device npu` or `npu-dry`: write every XRT call as one JSON line to FILE
    /// (format in docs/npu.md).
    #[arg(long, value_name = "FILE")]
    xrt_log: Option<PathBuf>,
    /// What the CPU computes linear layers in: `auto` (int8 on the cpu device when the CPU
    /// has AVX-512 VNNI or AVX2, else f32), `f32` (token-identical to the reference), `bf16`
    /// (bf16 products with f32 sums for the encoder and cross K/V; fast with AVX-512 BF16),
    /// or `int8` (per-channel int8 weights, made once into model.int8.safetensors).
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    compute_type: String,
}

impl DeviceArgs {
    fn spec(&self) -> Result<DeviceSpec> {
        let params = NpuParams::by_name(&self.npu).with_context(|| {
            format!(
                "unknown NPU parameter set '{}' (known: phoenix, strix)",
                self.npu
            )
        })?;
        let known = amanuensis::devices::registry().names();
        if self.device != "auto" && !known.contains(&self.device.as_str()) {
            bail!(
                "unknown device '{}' (available: auto, {}; see `amanuensis devices`)",
                self.device,
                known.join(", ")
            );
        }
        if self.columns == Some(0) || self.columns.is_some_and(|c| c > params.columns) {
            bail!(
                "--columns must be between 1 and {} for {}",
                params.columns,
                params.name
            );
        }
        let mut options = SchedulerOptions::default();
        if self.no_fusion {
            options.skip.insert("fusion".into());
        }
        if self.no_residency {
            options.skip.insert("residency".into());
        }
        options.skip.extend(self.skip_pass.iter().cloned());
        let npu = NpuOptions {
            columns: self.columns.unwrap_or(usize::MAX),
            double_buffer: !self.no_double_buffer,
            dispatch_per_tile: self.dispatch_per_tile,
            runlists: !self.no_runlists,
            xclbin_per_op: self.xclbin_per_op,
        };
        let compute = self
            .compute_type
            .parse::<amanuensis::compute::ComputeType>()
            .map_err(anyhow::Error::msg)?;
        Ok(DeviceSpec {
            device: self.device.clone(),
            params,
            npu,
            options,
            factory: None,
            compute,
        })
    }
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Stop after this pass and print the plan as it is then (it cannot run).
    #[arg(long, value_name = "PASS")]
    stop_after: Option<String>,
    /// Write the kernel manifest this plan's device nodes need (one xclbin for all;
    /// activations f32, weight matrices bf16) to FILE.
    #[arg(long, value_name = "FILE")]
    emit_manifest: Option<PathBuf>,
    /// Model name, for the graph file (default: the built-in whisper-base graph).
    #[arg(long, short, default_value = "base")]
    model: String,
    /// Graph file (default: graphs/<model>.graph if present, else the built-in one).
    #[arg(long)]
    graph: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model name (`base`) or model directory.
    #[arg(long, short, default_value = "base")]
    model: String,
    /// Graph file (default: graphs/<model>.graph if present, else the built-in one).
    #[arg(long)]
    graph: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Silero VAD's parameters (faster-whisper's `vad_parameters`, same defaults).
#[derive(Args, Clone)]
struct VadArgs {
    /// A 32-ms window whose speech probability is at least this is speech.
    #[arg(long = "vad-threshold", default_value_t = 0.5)]
    threshold: f32,
    /// Below this a window is silence even inside speech (default: threshold - 0.15).
    #[arg(long = "vad-neg-threshold")]
    neg_threshold: Option<f32>,
    /// Speech segments shorter than this are dropped.
    #[arg(long = "vad-min-speech-duration-ms", default_value_t = 0)]
    min_speech_duration_ms: u32,
    /// Speech segments longer than this are split (default: no limit).
    #[arg(long = "vad-max-speech-duration-s", default_value_t = f64::INFINITY)]
    max_speech_duration_s: f64,
    /// Silence shorter than this does not end a speech segment.
    #[arg(long = "vad-min-silence-duration-ms", default_value_t = 2000)]
    min_silence_duration_ms: u32,
    /// Padding kept on each side of a speech segment.
    #[arg(long = "vad-speech-pad-ms", default_value_t = 400)]
    speech_pad_ms: u32,
    /// Silero VAD model directory (default: silero-vad in $AMANUENSIS_MODELS, ./models or the source tree's models/, the first that has it).
    // Not `model`: clap names an argument by its field, and `transcribe` and `serve` also
    // flatten the Whisper model's `--model`; one name would make `--vad-model` set both.
    #[arg(long = "vad-model", value_name = "DIR")]
    vad_model: Option<PathBuf>,
}

impl VadArgs {
    fn options(&self) -> Result<amanuensis::vad::VadOptions> {
        let o = amanuensis::vad::VadOptions {
            threshold: self.threshold,
            neg_threshold: self.neg_threshold,
            min_speech_duration_ms: self.min_speech_duration_ms,
            max_speech_duration_s: self.max_speech_duration_s,
            min_silence_duration_ms: self.min_silence_duration_ms,
            speech_pad_ms: self.speech_pad_ms,
        };
        o.validate().map_err(|e| anyhow!("--vad-*: {e}"))?;
        Ok(o)
    }

    /// Loads the VAD for the device of `spec` (nodes with an NPU kernel run there).
    fn load(&self, spec: &DeviceSpec) -> Result<amanuensis::vad::VadModel> {
        let dir = amanuensis::vad::find_vad_dir(self.vad_model.as_deref())?;
        let device = spec.open()?;
        amanuensis::vad::VadModel::load(&dir, None, &registry()?, device.as_ref(), &spec.options)
            .with_context(|| format!("loading Silero VAD from {}", dir.display()))
    }
}

#[derive(Args)]
struct VadCmdArgs {
    /// Audio files (`-` for standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    vad: VadArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print JSON: per file its duration and speech segments in seconds and samples.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TranscribeArgs {
    /// Audio files (`-` for standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Output format; `all` writes every format (needs --output-dir).
    #[arg(long, short = 'f', value_enum, default_value_t = FormatArg::Txt)]
    format: FormatArg,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Write FILE.EXT into this directory for each input instead of printing.
    #[arg(long, short = 'o')]
    output_dir: Option<PathBuf>,
    /// Decode without timestamp tokens (30-s windows, one segment each). The default for
    /// plain-text output of audio that fits one window, whose text carries no times;
    /// longer audio and `--json` decode with timestamps unless this is given.
    #[arg(long, conflicts_with = "timestamps")]
    no_timestamps: bool,
    /// Decode with timestamp tokens even for plain-text output of short audio.
    #[arg(long)]
    timestamps: bool,
    /// Do not feed the previous window's text to the next one.
    #[arg(long)]
    no_condition_on_previous_text: bool,
    /// Text that conditions the first window (names, spelling, style).
    #[arg(long)]
    prompt: Option<String>,
    /// Words or phrases to expect in every window (names, jargon), given to the model
    /// before the previous text, as faster-whisper's `hotwords`.
    #[arg(long, value_name = "TEXT")]
    hotwords: Option<String>,
    /// Beam width at temperature 0; 1 decodes greedily.
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Beam search stops after beam_size × patience finished hypotheses.
    #[arg(long, default_value_t = 1.0)]
    patience: f32,
    /// Exponent of the length normalisation of beam scores.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
    /// Samples per try when falling back to temperatures above 0.
    #[arg(long, default_value_t = 5)]
    best_of: usize,
    /// 30-s windows decoded together (1 to 64). Above 1, the recording is cut into
    /// consecutive windows decoded N at a time in lockstep, without previous-text
    /// conditioning (faster-whisper's batched pipeline); 1 is the sequential window loop.
    #[arg(long, default_value_t = 1, value_parser = parse_batch_size)]
    batch_size: usize,
    /// Temperatures tried in order while a window's result looks like a failure (see
    /// --compression-ratio-threshold and --log-prob-threshold).
    #[arg(long, value_delimiter = ',', default_value = "0,0.2,0.4,0.6,0.8,1.0")]
    temperature: Vec<f32>,
    /// A window's text whose gzip compression ratio is above this (repetition) is decoded
    /// again at the next temperature; `none` never retries for it.
    #[arg(long, value_name = "RATIO", default_value = "2.4")]
    compression_ratio_threshold: Threshold,
    /// A window's text whose average token log-probability is below this is decoded again
    /// at the next temperature; `none` never retries for it.
    #[arg(
        long,
        value_name = "LOGPROB",
        default_value = "-1",
        allow_negative_numbers = true
    )]
    log_prob_threshold: Threshold,
    /// A window whose no-speech probability is above this, and whose average
    /// log-probability is below --log-prob-threshold, is silence: no text and no retry.
    /// `none` keeps every window's text.
    #[arg(long, value_name = "PROB", default_value = "0.6")]
    no_speech_threshold: Threshold,
    /// Time every word (JSON output lists them per segment).
    #[arg(long)]
    word_timestamps: bool,
    /// Drop text that looks invented (improbable, instant or drawn-out words) when over
    /// SECONDS of silence surround it, and decode again after it (openai-whisper's
    /// option; for recordings with long silences or noise, without --vad). Times words.
    #[arg(
        long,
        value_name = "SECONDS",
        conflicts_with = "no_timestamps",
        allow_negative_numbers = true,
        value_parser = parse_seconds
    )]
    hallucination_silence_threshold: Option<f64>,
    /// Subtitles (srt, vtt): characters on a line before the next word starts a new one.
    /// Times words, as --word-timestamps does.
    #[arg(long, value_name = "CHARS", conflicts_with = "no_timestamps", value_parser = clap::value_parser!(u32).range(1..))]
    max_line_width: Option<u32>,
    /// Subtitles: lines in a cue. With --max-line-width too, cues are filled across
    /// segments, and a pause over 3 s starts a new one. Times words.
    #[arg(long, value_name = "LINES", conflicts_with = "no_timestamps", value_parser = clap::value_parser!(u32).range(1..))]
    max_line_count: Option<u32>,
    /// Subtitles: words in a cue, each segment's words taken this many at a time (no
    /// effect with both --max-line-width and --max-line-count). Times words.
    #[arg(long, value_name = "WORDS", conflicts_with = "no_timestamps", value_parser = clap::value_parser!(u32).range(1..))]
    max_words_per_line: Option<u32>,
    /// Subtitles: a cue for each word while it is spoken, the word underlined. Times words.
    #[arg(long, conflicts_with = "no_timestamps")]
    highlight_words: bool,
    /// Keep the model's segment times: do not move boundaries onto the pauses of the
    /// recording nor split segments at long pauses.
    #[arg(long)]
    no_refine_timestamps: bool,
    /// Transcribe only the speech Silero VAD finds (`scripts/fetch-model.sh vad`); times
    /// stay those of the recording. Tune with the --vad-* options.
    #[arg(long)]
    vad: bool,
    #[command(flatten)]
    vad_options: VadArgs,
    /// No progress bar (or, without a terminal, progress lines) and no notes on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Language of the audio (a code such as `en`), or `auto` to detect it from the first
    /// 30 s.
    #[arg(long, default_value = "auto")]
    language: String,
    /// Transcribe, or translate into English.
    #[arg(long, value_enum, default_value_t = TaskArg::Transcribe)]
    task: TaskArg,
    /// Write a Chrome trace (Perfetto, chrome://tracing) of the run: host spans and, on
    /// npu-sim, the simulated device lanes.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// `--format`: a transcript format, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// Plain text, one segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// The transcript with all segment fields, pretty-printed.
    Json,
    /// Tab-separated `start`, `end` (integer milliseconds) and `text`.
    Tsv,
    /// Every format above, one file each.
    All,
}

impl FormatArg {
    fn formats(self) -> Vec<OutputFormat> {
        match self {
            FormatArg::Txt => vec![OutputFormat::Txt],
            FormatArg::Srt => vec![OutputFormat::Srt],
            FormatArg::Vtt => vec![OutputFormat::Vtt],
            FormatArg::Json => vec![OutputFormat::Json],
            FormatArg::Tsv => vec![OutputFormat::Tsv],
            FormatArg::All => OutputFormat::ALL.to_vec(),
        }
    }
}

impl TranscribeArgs {
    /// The subtitle layout the options ask for.
    fn subtitle_layout(&self) -> output::SubtitleLayout {
        output::SubtitleLayout {
            max_line_width: self.max_line_width.map(|n| n as usize),
            max_line_count: self.max_line_count.map(|n| n as usize),
            max_words_per_line: self.max_words_per_line.map(|n| n as usize),
            highlight_words: self.highlight_words,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Transcribe,
    Translate,
}

#[derive(Args)]
struct BenchArgs {
    /// Audio file to transcribe.
    #[arg(required_unless_present = "reproduce")]
    file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3, value_parser = parse_runs)]
    runs: usize,
    /// Beam width (1 = greedy).
    #[arg(long, default_value_t = 1)]
    beam_size: usize,
    /// Write a Chrome trace of the timed runs.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print the scheduler ablation table: projected encoder time and realtime factor
    /// from the seed design to the full schedule (npu-sim), with decoding measured here.
    #[arg(long)]
    ablation: bool,
    /// Instead of transcribing, price another NPU pipeline's described schedule with
    /// npu-sim and set it beside its measured times and our plan of the same model size
    /// (all NPU figures projections): `whisper-xdna`.
    #[arg(long, value_name = "PIPELINE")]
    reproduce: Option<String>,
}

#[derive(Subcommand)]
enum GraphCommand {
    /// Print a graph file's graphs, op counts and weight bytes.
    Inspect {
        /// Graph file.
        file: PathBuf,
    },
    /// Write a graph as Graphviz dot: as loaded, or after the scheduler's passes with
    /// `--device` (placement colours, fused groups boxed).
    Dot {
        /// Graph file.
        file: PathBuf,
        /// Which graph of the file (default: the first).
        #[arg(long)]
        graph: Option<String>,
        /// Show the graph after the scheduler's passes for this device (cpu, npu-sim).
        #[arg(long)]
        device: Option<String>,
        /// Draw each weight as its own node.
        #[arg(long)]
        weights: bool,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Write the graph file of a Whisper size from its hyper-parameters, or of Silero VAD.
    Build {
        /// tiny, base, small, medium, large-v3, ..., or silero-vad
        size: String,
        /// Output file (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = PLUGINS.set(cli.plugins.clone());
    let trace_path = match &cli.command {
        Command::Transcribe(a) => a.trace.clone(),
        Command::Bench(a) => a.trace.clone(),
        _ => None,
    };
    let trace = match init_logging(cli.verbose, trace_path.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            return ExitCode::FAILURE;
        }
    };
    audio::install_panic_filter();
    if let Some(n) = cli.threads {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if usize::from(n) > cores {
            // Measured on 2 cores: jfk in 0.75 s with 2 threads, 1.1 s with 64, 4.4 s with
            // 256; every parallel section is cut into that many pieces.
            eprintln!(
                "warning: --threads {n} is more than the {cores} this machine runs at once: \
                 slower, not faster"
            );
        }
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global()
        {
            eprintln!("warning: could not size the thread pool: {e}");
        }
    }
    let result = match cli.command {
        // The work runs on a thread of the kernels' pool: from any other thread each
        // parallel kernel hands its work to the pool and sleeps until it is done (two
        // context switches each, about 70 a decoder step; 0.5-1 ms a token measured).
        Command::Transcribe(a) => rayon::scope(|_| transcribe(a)),
        Command::Bench(a) => rayon::scope(|_| bench(a)),
        Command::Plan(a) => plan(a),
        Command::Devices => {
            print!("{}", devices_table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph(GraphCommand::Inspect { file }) => graph_inspect(&file),
        Command::Graph(GraphCommand::Dot {
            file,
            graph,
            device,
            weights,
            output,
        }) => graph_dot(
            &file,
            graph.as_deref(),
            device.as_deref(),
            weights,
            output.as_deref(),
        ),
        Command::Graph(GraphCommand::Build { size, output }) => {
            graph_build(&size, output.as_deref())
        }
        Command::Serve(a) => serve(a),
        Command::Vad(a) => vad_command(a),
    };
    // What the user asked to be written and was not fails the run, after its own output.
    let mut written = true;
    if let Err(e) = amanuensis_xrt::flush_call_logs() {
        eprintln!("error: {e}");
        written = false;
    }
    if let Some(t) = trace {
        match t.finish() {
            Ok(p) => eprintln!("wrote trace {}", p.display()),
            Err(e) => {
                eprintln!("error: writing the trace: {}", describe(&e));
                written = false;
            }
        }
    }
    match result {
        Ok(code) if written => code,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// `--plugin` libraries, loaded into every registry the commands build.
static PLUGINS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// The standard operators plus the `--plugin` libraries.
fn registry() -> Result<amanuensis_runtime::Registry> {
    let mut reg = amanuensis_operators::standard_registry();
    for p in PLUGINS.get().map(|v| v.as_slice()).unwrap_or(&[]) {
        let info = amanuensis_runtime::load_plugin(p, &mut reg)
            .with_context(|| format!("loading plugin {}", p.display()))?;
        tracing::info!("loaded plugin {info}");
    }
    Ok(reg)
}

fn graph_dot(
    path: &Path,
    graph: Option<&str>,
    device: Option<&str>,
    weights: bool,
    output: Option<&Path>,
) -> Result<ExitCode> {
    use amanuensis_runtime::dot;
    let file = ModelFile::load(path)?;
    let reg = registry()?;
    let gdef = match graph {
        Some(name) => file
            .graphs
            .iter()
            .find(|g| g.name == name)
            .with_context(|| format!("{} has no graph '{name}'", path.display()))?,
        None => file
            .graphs
            .first()
            .with_context(|| format!("{} has no graphs", path.display()))?,
    };
    let text = match device {
        None => dot::to_dot(
            &Graph::build(gdef, &file.weights, &reg)?,
            &dot::DotAnnotations {
                show_weights: weights,
                ..Default::default()
            },
        ),
        Some(d) => {
            let spec = DeviceSpec {
                device: d.to_string(),
                ..DeviceSpec::default()
            };
            let dev = spec.open()?;
            let plan = amanuensis_runtime::schedule::plan(
                Graph::build(gdef, &file.weights, &reg)?,
                &reg,
                dev.as_ref(),
                &spec.options,
            )?;
            let mut ann = dot::plan_annotations(&plan);
            ann.show_weights = weights;
            dot::to_dot(&plan.graph, &ann)
        }
    };
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes on one line, each cause once: our errors often quote their
/// source (`cannot read x.wav: No such file or directory`), which anyhow's `{:#}` would
/// then print a second time.
fn describe(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn init_logging(
    verbose: u8,
    trace: Option<&Path>,
) -> Result<Option<amanuensis::tracefile::TraceFile>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // Only our own crates (`amanuensis*`) speak at the default verbosity: a decoder
    // library's log line would repeat, less clearly, the error we print anyway.
    let level = match verbose {
        0 => "off,amanuensis=warn",
        1 => "warn,amanuensis=info",
        2 => "warn,amanuensis=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMANUENSIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    match trace {
        None => {
            let _ = tracing_subscriber::registry().with(fmt).try_init();
            Ok(None)
        }
        Some(path) => {
            let (layer, file) = amanuensis::tracefile::TraceFile::start(path)?;
            let _ = tracing_subscriber::registry()
                .with(fmt)
                .with(layer)
                .try_init();
            Ok(Some(file))
        }
    }
}

fn load_model(args: &ModelArgs, quiet: bool) -> Result<WhisperModel> {
    let dir = model::find_model_dir(&args.model)?;
    let registry = registry()?;
    let mut spec = args.device.spec()?;
    if let Some(log) = &args.device.xrt_log {
        if !matches!(spec.device.as_str(), "npu" | "npu-dry" | "auto") {
            bail!(
                "--xrt-log needs --device npu or npu-dry (got {})",
                spec.device
            );
        }
        amanuensis::devices::set_xrt_log(Some(log.clone()))?;
    }
    if let Some(line) = spec.resolve_auto() {
        if !quiet {
            eprintln!("{line}");
        }
    }
    let m = WhisperModel::load_on(&dir, args.graph.as_deref(), &registry, &spec)
        .with_context(|| format!("loading model from {}", dir.display()))?;
    if spec.device != "cpu" && !quiet {
        let (per_window, per_token) = scheduling::dispatch_counts(m.plans.iter().map(|p| &**p));
        let what = match spec.device.as_str() {
            "npu-sim" => format!("{} timing model; times are projections", spec.params.name),
            "npu-dry" => "the npu device against XRT's test double".to_string(),
            "npu" => "Ryzen AI NPU".to_string(),
            other => other.to_string(),
        };
        eprintln!("device {} ({what}): {per_window} device runs per 30-s window, {per_token} per decoded token", spec.device);
    }
    tracing::info!(model = %m.name, dir = %dir.display(), graph = %m.graph_origin, load_ms = m.load_time.as_millis() as u64, "model loaded");
    Ok(m)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    use amanuensis::serve::{shutdown_signal, ServeOptions, Server};
    amanuensis::serve::fix_large_allocations();
    let options = ServeOptions {
        host: a.host.clone(),
        port: a.port,
        workers: a.workers,
        max_queue: a.max_queue,
        batch_size: a.batch_size,
        max_body: a.max_body,
        timeout: a.timeout,
        api_key: a.api_key.clone(),
        connections: amanuensis::serve::ConnectionLimits {
            max_connections: a.max_connections as usize,
            header_timeout: a.header_timeout,
        },
        vad: if a.vad {
            Some(amanuensis::serve::VadFilter {
                dir: amanuensis::vad::find_vad_dir(a.vad_options.vad_model.as_deref())?,
                options: a.vad_options.options()?,
            })
        } else {
            None
        },
    };
    // Checked before the model loads: a bad setting fails at once.
    options.check()?;
    let model = load_model(&a.model, false)?;
    let registry = registry()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let server = Server::bind(options, model, registry).await?;
        let addr = server.local_addr()?;
        eprintln!(
            "listening on http://{addr} (model {}, {} worker(s), queue {}, body limit {} bytes, timeout {:?}{})",
            a.model.model,
            a.workers,
            a.max_queue,
            a.max_body,
            a.timeout,
            if a.api_key.is_some() { ", API key required" } else { "" }
        );
        server.run(shutdown_signal()).await?;
        eprintln!("stopped: every accepted request was answered");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn transcribe(a: TranscribeArgs) -> Result<ExitCode> {
    let mut model = load_model(&a.model, a.quiet)?;
    let language = if a.language == "auto" {
        None
    } else {
        Some(a.language.clone())
    };
    if language.is_some() && model.tokenizer.language_token(&a.language).is_none() {
        bail!(
            "unknown language code '{}' (known: {})",
            a.language,
            model.tokenizer.language_codes().join(", ")
        );
    }
    let opts = TranscribeOptions {
        language,
        task: match a.task {
            TaskArg::Transcribe => Task::Transcribe,
            TaskArg::Translate => Task::Translate,
        },
        without_timestamps: a.no_timestamps,
        condition_on_previous_text: !a.no_condition_on_previous_text,
        initial_prompt: a.prompt.clone(),
        hotwords: a.hotwords.clone(),
        word_timestamps: a.word_timestamps
            || a.subtitle_layout().needs_words()
            || a.hallucination_silence_threshold.is_some(),
        hallucination_silence_threshold: a.hallucination_silence_threshold,
        refine_timestamps: !a.no_refine_timestamps,
        batch_size: a.batch_size,
        decoding: FallbackOptions {
            temperatures: a.temperature.clone(),
            compression_ratio_threshold: a.compression_ratio_threshold.0,
            log_prob_threshold: a.log_prob_threshold.0,
            no_speech_threshold: a.no_speech_threshold.0,
            best_of: a.best_of,
            beam: BeamOptions {
                beam_size: a.beam_size,
                patience: a.patience,
                length_penalty: a.length_penalty,
            },
            ..FallbackOptions::default()
        },
    };
    // Once for every file, before any is read: a bad setting is one error, not one a file
    // (and not one that waits for the first window needing the temperature fallback).
    amanuensis::window_loop::check_options(&opts).map_err(|e| anyhow!("{e}"))?;
    let formats = if a.json {
        vec![OutputFormat::Json]
    } else {
        a.format.formats()
    };
    if formats.len() > 1 && a.output_dir.is_none() {
        bail!("--format all writes one file per format: give it a directory with --output-dir");
    }
    stdin_at_most_once(&a.files)?;
    // The output directory is made (or found unusable) before any file is transcribed, so
    // that a long transcription is not done only to find nowhere to write it.
    if let Some(dir) = &a.output_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        // Two inputs of one name would write one file, the second transcript over the
        // first: refused before either is transcribed.
        let mut seen = std::collections::HashMap::new();
        for file in &a.files {
            let path = output::output_path(file, dir, formats[0]);
            if let Some(first) = seen.insert(path.clone(), file) {
                bail!(
                    "{} and {} would both be written to {}: transcribe them into different \
                     --output-dir folders (or rename one)",
                    first.display(),
                    file.display(),
                    path.display()
                );
            }
        }
    }
    let layout = a.subtitle_layout();
    let subtitles = formats
        .iter()
        .any(|f| matches!(f, OutputFormat::Srt | OutputFormat::Vtt));
    if layout.needs_words() && !subtitles && !a.quiet {
        eprintln!(
            "note: --max-line-width, --max-line-count, --max-words-per-line and \
             --highlight-words lay out subtitles: they change nothing in {} output",
            formats[0].extension()
        );
    }
    let plain_text_only = formats == [OutputFormat::Txt];
    let mut vad = if a.vad {
        let o = a.vad_options.options()?;
        // On the Whisper model's device (`auto` already resolved).
        Some((a.vad_options.load(&model.device)?, o))
    } else {
        None
    };
    let stop = stop_on_ctrl_c(a.batch_size);
    model.stop_early = stop.clone();
    let stopping = || stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    let mut failed = 0;
    let mut stopped = false;
    for file in &a.files {
        if stopping() {
            eprintln!("{}: not transcribed (stopped by Ctrl-C)", file.display());
            stopped = true;
            continue;
        }
        // One bad file must not stop the others.
        match transcribe_file(&mut model, vad.as_mut(), file, &opts, &a, plain_text_only) {
            Ok(t) => {
                if let Some(at) = t.stopped_at {
                    stopped = true;
                    eprintln!(
                        "{}: stopped by Ctrl-C after {} of {}: the transcript is whole only up to there",
                        file.display(),
                        clock(at.into()),
                        clock(t.duration.into())
                    );
                }
                if let (Some(p), false) = (t.language_probability, a.quiet) {
                    eprintln!(
                        "{}: detected language '{}' with probability {p:.2}",
                        file.display(),
                        t.language
                    );
                }
                match &a.output_dir {
                    Some(dir) => {
                        let mut ok = true;
                        for &format in &formats {
                            match output::write_output_with(&t, file, dir, format, &layout) {
                                Ok(path) if !a.quiet => {
                                    eprintln!("{}: wrote {}", file.display(), path.display())
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    // The transcript is not lost with the file: it goes to
                                    // standard output instead.
                                    ok = false;
                                    eprintln!(
                                        "error: {}: {e}; the {} transcript follows on standard output",
                                        file.display(),
                                        format.extension()
                                    );
                                    print!("{}", output::render_with(&t, format, &layout));
                                }
                            }
                        }
                        if !ok {
                            failed += 1;
                        }
                    }
                    None => {
                        let format = formats[0];
                        if a.files.len() > 1 && format == OutputFormat::Txt {
                            println!("{}:", file.display());
                        }
                        print!("{}", output::render_with(&t, format, &layout));
                    }
                }
            }
            Err(e) => {
                failed += 1;
                // Audio errors already name the file.
                let msg = describe(&e);
                let name = file.display().to_string();
                if msg.contains(&name) {
                    eprintln!("error: {msg}");
                } else {
                    eprintln!("error: {name}: {msg}");
                }
            }
        }
    }
    Ok(if stopped {
        // As a shell reports a command ended by SIGINT.
        ExitCode::from(130)
    } else if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The first Ctrl-C sets the returned flag: the transcription stops before its next
/// window (or batch of windows) and keeps what it has, and the files not yet begun are
/// skipped. A second Ctrl-C quits at once.
fn stop_on_ctrl_c(batch_size: usize) -> Option<Arc<AtomicBool>> {
    let what = if batch_size > 1 { "batch" } else { "window" };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current {what}; Ctrl-C again to quit at once");
    });
    match installed {
        Ok(()) => Some(stop),
        Err(e) => {
            tracing::warn!("Ctrl-C will quit at once: cannot handle it ({e})");
            None
        }
    }
}

fn transcribe_file(
    model: &mut WhisperModel,
    vad: Option<&mut (amanuensis::vad::VadModel, amanuensis::vad::VadOptions)>,
    file: &Path,
    opts: &TranscribeOptions,
    a: &TranscribeArgs,
    plain_text_only: bool,
) -> Result<Transcript> {
    // A file is read a window at a time (memory does not grow with its length): measured
    // once (with --vad, probed for speech), then read again; batches and standard input
    // need the recording whole.
    type VadOptions = amanuensis::vad::VadOptions;
    enum Input<'v> {
        Whole(Vec<f32>),
        Streamed(amanuensis::spectrogram::StreamedAudio),
        /// With `--vad`: the samples (`None`: read again, a window at a time) and their
        /// speech probabilities.
        Speech(
            Option<Vec<f32>>,
            amanuensis::speech_filter::ProbedSpeech,
            &'v VadOptions,
        ),
    }
    let input = if a.batch_size == 1 && model.can_stream(file) {
        match vad {
            None => Input::Streamed(model.scan_file(file)?),
            Some((vad, o)) => {
                let probed = amanuensis::speech_filter::probe_speech(
                    vad,
                    &mut amanuensis::spectrogram::file_opener(file),
                )?;
                Input::Speech(None, probed, o)
            }
        }
    } else {
        let pcm = audio::load_audio(file)?;
        match vad {
            None => Input::Whole(pcm),
            Some((vad, o)) => {
                let probed = amanuensis::speech_filter::ProbedSpeech {
                    probs: vad.speech_probs(&pcm)?,
                    samples: pcm.len(),
                };
                Input::Speech(Some(pcm), probed, o)
            }
        }
    };
    // The length of what is decoded: with --vad, one window at a time, the speech joined
    // (as the server measures it); batches decode windows of the recording itself.
    let samples = match &input {
        Input::Whole(pcm) => pcm.len(),
        Input::Streamed(s) => s.samples(),
        Input::Speech(_, p, o) if a.batch_size == 1 => {
            amanuensis::speech_filter::speech_samples(&p.probs, p.samples, o)
        }
        Input::Speech(_, p, _) => p.samples,
    };
    let mut opts = opts.clone();
    let one_window = samples <= CHUNK_SECONDS * audio::SAMPLE_RATE as usize;
    if !a.no_timestamps && plain_text_only && !a.timestamps && !opts.word_timestamps && one_window {
        opts.without_timestamps = true;
    }
    let bar = progress_bar(samples, a.quiet);
    // Without a terminal (a log file, a service), a line now and then instead of a bar.
    let every = progress_line_every();
    let mut next_line = (bar.is_none() && !a.quiet && !one_window).then(|| Instant::now() + every);
    let t0 = Instant::now();
    let mut report = |p: Progress<'_>| {
        let rtf = p.done / t0.elapsed().as_secs_f64().max(1e-9);
        if let Some(b) = &bar {
            // The total of what is decoded (the speech with --vad, the recording in batches).
            b.set_length((p.total * 1000.0) as u64);
            b.set_position((p.done * 1000.0) as u64);
            b.set_message(format!("{rtf:.1}x realtime"));
        }
        if let Some(at) = &mut next_line {
            if Instant::now() >= *at && p.done < p.total {
                eprintln!(
                    "{}: {} of {} transcribed ({rtf:.1}x realtime)",
                    file.display(),
                    clock(p.done),
                    clock(p.total)
                );
                *at = Instant::now() + every;
            }
        }
    };
    let voice = |r: amanuensis::Result<(Transcript, amanuensis::speech_filter::SpeechReport)>| {
        r.map(|(t, r)| {
            if !a.quiet {
                eprintln!(
                    "{}: voice activity: {} speech segment(s), {:.1} s of {:.1} s transcribed",
                    file.display(),
                    r.segments.len(),
                    r.speech_seconds,
                    r.duration
                );
            }
            t
        })
    };
    let t = match input {
        Input::Speech(None, probed, vad_options) => voice(model.transcribe_speech_streamed(
            vad_options,
            probed,
            &file.display().to_string(),
            amanuensis::spectrogram::file_opener(file),
            &opts,
            &mut report,
        )),
        Input::Speech(Some(pcm), probed, vad_options) => voice(model.transcribe_speech_probed(
            &probed.probs,
            vad_options,
            &pcm,
            &opts,
            &mut report,
        )),
        Input::Whole(pcm) => model.transcribe_pcm_with_progress(&pcm, &opts, &mut report),
        Input::Streamed(audio) => model.transcribe_streamed(audio, &opts, &mut report),
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(t?)
}

/// `amanuensis vad`: the speech segments of each file.
fn vad_command(a: VadCmdArgs) -> Result<ExitCode> {
    let options = a.vad.options()?;
    let mut spec = a.device.spec()?;
    if let Some(line) = spec.resolve_auto() {
        eprintln!("{line}");
    }
    stdin_at_most_once(&a.files)?;
    let mut vad = a.vad.load(&spec)?;
    let mut failed = 0;
    let mut reports = Vec::new();
    for file in &a.files {
        // A file is fed to the VAD as it is decoded; standard input is read whole.
        let result = if file.as_os_str() == audio::STDIN_PATH {
            audio::load_audio(file)
                .map_err(anyhow::Error::from)
                .and_then(|pcm| {
                    let t0 = Instant::now();
                    let probs = vad.speech_probs(&pcm)?;
                    Ok((probs, pcm.len(), t0.elapsed()))
                })
        } else {
            let t0 = Instant::now();
            amanuensis::speech_filter::probe_speech(
                &mut vad,
                &mut amanuensis::spectrogram::file_opener(file),
            )
            .map(|p| (p.probs, p.samples, t0.elapsed()))
            .map_err(anyhow::Error::from)
        }
        .map(|(probs, n, took)| {
            let segs = amanuensis::vad::speech_segments(&probs, n, &options);
            (n, segs, took)
        });
        match result {
            Ok((n, segs, took)) => {
                let duration = n as f64 / audio::SAMPLE_RATE as f64;
                if a.json {
                    reports.push(serde_json::json!({
                        "file": file.display().to_string(),
                        "duration": duration,
                        "vad_seconds": took.as_secs_f64(),
                        "segments": segs.iter().map(|s| serde_json::json!({
                            "start": s.start_s(),
                            "end": s.end_s(),
                            "start_sample": s.start,
                            "end_sample": s.end,
                        })).collect::<Vec<_>>(),
                    }));
                } else {
                    if a.files.len() > 1 {
                        println!("{}:", file.display());
                    }
                    for s in &segs {
                        println!("[{} --> {}] speech", clock(s.start_s()), clock(s.end_s()));
                    }
                    // Summed from 0.0: a float sum of no segments would print -0.0.
                    let speech = segs.iter().fold(0.0, |a, s| a + s.end_s() - s.start_s());
                    eprintln!(
                        "{}: {} speech segment(s), {speech:.1} s of {duration:.1} s (VAD in {:.1} ms)",
                        file.display(),
                        segs.len(),
                        took.as_secs_f64() * 1e3
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {}", file.display(), describe(&e));
            }
        }
    }
    if a.json {
        let v = if a.files.len() == 1 && reports.len() == 1 {
            reports.pop().unwrap_or_default()
        } else {
            serde_json::Value::Array(reports)
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `HH:MM:SS.mmm`.
fn clock(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// How often a transcription of audio longer than one window says how far it is when
/// stderr is not a terminal (no progress bar): `AMANUENSIS_PROGRESS_SECONDS`, else 30 s.
fn progress_line_every() -> Duration {
    std::env::var("AMANUENSIS_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64)
}

/// A progress bar on stderr for audio longer than one window, when stderr is a terminal.
fn progress_bar(samples: usize, quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let total_ms = samples as u64 * 1000 / audio::SAMPLE_RATE as u64;
    if quiet
        || !std::io::stderr().is_terminal()
        || samples <= CHUNK_SECONDS * audio::SAMPLE_RATE as usize
    {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total_ms);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {percent:>3}% of audio, {msg}, ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
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
    if let Some(what) = &a.reproduce {
        if what != "whisper-xdna" {
            bail!("--reproduce knows 'whisper-xdna' only, not '{what}'");
        }
        let params = a.model.device.spec()?.params;
        let rows = amanuensis::reproduce::reproduce(&params, Some(&registry()?))?;
        print!("{}", amanuensis::reproduce::table(&rows, &params));
        return Ok(ExitCode::SUCCESS);
    }
    let file = a
        .file
        .clone()
        .ok_or_else(|| anyhow!("bench needs an audio file"))?;
    let t_load = Instant::now();
    let mut model = load_model(&a.model, false)?;
    let load = t_load.elapsed();
    let t_audio = Instant::now();
    let pcm = audio::load_audio(&file)?;
    let audio_time = t_audio.elapsed();
    let mut opts = TranscribeOptions {
        without_timestamps: true,
        language: Some("en".into()),
        ..TranscribeOptions::default()
    };
    opts.decoding.beam.beam_size = a.beam_size;
    let threads = rayon::current_num_threads();
    println!(
        "bench: {} ({:.2} s of audio), model {}, {threads} threads, beam size {}",
        file.display(),
        pcm.len() as f64 / 16000.0,
        model.name,
        a.beam_size
    );
    // Warm-up: first-touch allocations and buffer pools.
    let warm = model.transcribe_pcm(&pcm, &opts)?;
    println!("text: {}", warm.text);
    for s in [
        &mut model.features,
        &mut model.encoder,
        &mut model.cross_kv,
        &mut model.decoder,
    ] {
        s.take_stats();
    }
    let runs = a.runs;
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
    let feat = model.features.take_stats();
    // On a device the encoder and cross K/V run as one graph: its figures count as the
    // encoder's.
    let mut stats = model.encoder.take_stats();
    if let Some(w) = model.window.as_mut() {
        stats.merge(&w.take_stats());
    }
    let enc_stats = stats.clone();
    stats.merge(&feat);
    let cross = model.cross_kv.take_stats();
    let dec = model.decoder.take_stats();
    stats.merge(&cross);
    stats.merge(&dec);
    let per_run_kernel = stats.kernel / runs as u32;
    let per_run_wall_in_exec = stats.wall / runs as u32;
    let n_tok = tr.timings.decoder_steps.max(1);
    let duration = pcm.len() as f64 / 16000.0;
    println!(
        "load:                 {:8.1} ms (graph validation + weights)",
        ms(load)
    );
    println!("audio decode:         {:8.1} ms", ms(audio_time));
    let windows = (tr.timings.windows * runs).max(1) as u32;
    println!(
        "log-mel features:     {:8.1} ms",
        ms(feat.wall / runs as u32)
    );
    println!(
        "encoder per window:   {:8.1} ms ({} windows)",
        ms(enc_stats.wall / windows),
        tr.timings.windows
    );
    if model.window.is_some() {
        println!(
            "cross K/V per window:  (in the encoder's graph on {})",
            model.device.device
        );
    } else {
        println!("cross K/V per window: {:8.1} ms", ms(cross.wall / windows));
    }
    println!(
        "decoder per token:    {:8.2} ms ({} steps, {} tokens)",
        ms(dec.wall / runs as u32) / n_tok as f64,
        n_tok,
        tr.timings.tokens
    );
    // The step's graph above; this adds what the search does between steps (filtering,
    // normalising, choosing, reordering the beams' caches), as the last run measured it.
    println!(
        "decoding per token:   {:8.2} ms (the graph and the search's host work, last run)",
        ms(tr.timings.decoder) / n_tok as f64
    );
    println!(
        "transcribe (median):  {:8.1} ms of {runs} runs; realtime factor {:.1}x",
        ms(median),
        duration / median.as_secs_f64()
    );
    println!(
        "end to end:           {:8.1} ms (load + decode audio + transcribe)",
        ms(load + audio_time + median)
    );
    let outside_kernels = median.saturating_sub(per_run_kernel);
    println!(
        "outside kernels:      {:8.1} ms = {:.2}% of transcribe wall (executor itself: {:.2} ms = {:.2}%)",
        ms(outside_kernels),
        100.0 * outside_kernels.as_secs_f64() / median.as_secs_f64(),
        ms(per_run_wall_in_exec.saturating_sub(per_run_kernel)),
        100.0 * per_run_wall_in_exec.saturating_sub(per_run_kernel).as_secs_f64() / median.as_secs_f64()
    );
    println!(
        "peak intermediates:   {:8.1} MB (executor)",
        stats.peak_bytes as f64 / 1e6
    );
    if let Some(rss) = peak_rss_bytes() {
        println!("peak RSS:             {:8.1} MB", rss as f64 / 1e6);
    }
    let mut ops: Vec<_> = stats.per_op.iter().collect();
    ops.sort_by_key(|(_, (_, t))| std::cmp::Reverse(*t));
    println!("kernel time by op (per run):");
    for (op, (n, t)) in ops {
        println!(
            "  {op:<20} {:8.1} ms  ({} calls)",
            ms(*t / runs as u32),
            n / runs
        );
    }
    if model.device.device != "npu-sim" && enc_stats.dispatches > 0 {
        println!(
            "device {}: {} runs per window, {:.2} MB to the device and {:.2} MB back per window",
            model.device.device,
            enc_stats.dispatches / windows as usize,
            (enc_stats.bytes_to_device + cross.bytes_to_device) as f64 / 1e6 / windows as f64,
            (enc_stats.bytes_from_device + cross.bytes_from_device) as f64 / 1e6 / windows as f64
        );
    }
    if model.device.device == "npu-sim" {
        let p = &model.device.params;
        println!("npu-sim projection ({}; not a measurement):", p.name);
        println!(
            "  encoder + cross K/V per window: {:8.2} ms projected ({} device runs; replayed from the commands that ran)",
            (enc_stats.simulated_ns + cross.simulated_ns) / 1e6 / windows as f64,
            (enc_stats.dispatches + cross.dispatches) / windows as usize
        );
        if stats.fallbacks > 0 {
            println!("  device faults re-run on the CPU: {}", stats.fallbacks);
        }
    }
    if a.ablation {
        let run = scheduling::MeasuredRun {
            audio_s: duration,
            windows: tr.timings.windows,
            features: tr.timings.features,
            decoder: tr.timings.decoder,
            // On npu-sim the measured encoder is the reference kernels' time, no baseline.
            cpu_encoder: (model.device.device == "cpu")
                .then(|| tr.timings.encoder + tr.timings.cross_kv),
        };
        let (file, _) = model::load_graph_file(a.model.graph.as_deref(), &model.name)?;
        let registry = registry()?;
        let params = &model.device.params;
        let weights = amanuensis_runtime::WeightStore::load(
            &model.dir.join(model::WEIGHTS_FILE),
            &file.weights,
        )?;
        let rows = scheduling::ablation(&file, &registry, &weights, params, &run)?;
        println!("\nscheduler ablation:");
        print!("{}", scheduling::ablation_table(&rows, params, &run));
    }
    Ok(ExitCode::SUCCESS)
}

fn plan(a: PlanArgs) -> Result<ExitCode> {
    let mut spec = a.device.spec()?;
    spec.options.stop_after = a.stop_after.clone();
    if let Some(line) = spec.resolve_auto() {
        eprintln!("{line}");
    }
    let name = format!("whisper-{}", a.model.trim_start_matches("whisper-"));
    let (file, origin) = model::load_graph_file(a.graph.as_deref(), &name)?;
    let registry = registry()?;
    println!(
        "plan of {origin} for device {}{}",
        spec.device,
        if spec.device == "npu-sim" {
            format!(" ({} parameters; times are projections)", spec.params.name)
        } else {
            String::new()
        }
    );
    print!("{}", scheduling::plan_report(&file, &registry, &spec)?);
    if let Some(out) = &a.emit_manifest {
        // The fused kernels, and the unfused ones the device must accept at placement
        // before the fusion pass can replace them.
        let mut plans = model::plan_graphs(&file, &registry, &spec)?;
        let mut unfused = spec.clone();
        unfused.options.skip.insert("fusion".into());
        plans.extend(model::plan_graphs(&file, &registry, &unfused)?);
        let refs: Vec<_> = plans.iter().collect();
        let xclbin = format!("{}.xclbin", file.model.name);
        let text = amanuensis_xrt::manifest::manifest_for_plans(&refs, "npu1", &xclbin)
            .map_err(|e| anyhow::anyhow!(e))?;
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote kernel manifest {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn graph_inspect(path: &Path) -> Result<ExitCode> {
    let file = ModelFile::load(path)?;
    let registry = registry()?;
    println!(
        "{}: model {} ({}), format version {}",
        path.display(),
        file.model.name,
        file.model.family,
        file.version
    );
    let hp: Vec<String> = file
        .model
        .hyper_parameters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("hyper-parameters: {}", hp.join(" "));
    let weight_bytes: usize = file
        .weights
        .iter()
        .map(|w| w.shape.iter().product::<usize>() * w.dtype.size())
        .sum();
    println!(
        "weights: {} tensors, {:.1} MB as stored",
        file.weights.len(),
        weight_bytes as f64 / 1e6
    );
    let decl: std::collections::HashMap<&str, usize> = file
        .weights
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.shape.iter().product::<usize>() * w.dtype.size(),
            )
        })
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
            println!(
                "  in  {:<14} {}{}",
                v.name,
                v.dtype,
                amanuensis_runtime::format::shape_string(&v.shape)
            );
        }
        for v in gdef.outputs.iter().take(4) {
            println!(
                "  out {:<14} {}{}",
                v.name,
                v.dtype,
                amanuensis_runtime::format::shape_string(&v.shape)
            );
        }
        if gdef.outputs.len() > 4 {
            println!("  out ... ({} more)", gdef.outputs.len() - 4);
        }
        let counts: Vec<String> = g
            .op_counts()
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        println!("  ops: {}", counts.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard input can be read once: `-` given twice would find it empty the second time.
fn stdin_at_most_once(files: &[PathBuf]) -> Result<()> {
    let stdin = files
        .iter()
        .filter(|f| f.as_os_str() == audio::STDIN_PATH)
        .count();
    if stdin > 1 {
        bail!("`-` (standard input) is given {stdin} times: it can be read only once");
    }
    Ok(())
}

fn graph_build(size: &str, output: Option<&Path>) -> Result<ExitCode> {
    let file = if size == amanuensis::vad::graph::MODEL_NAME {
        amanuensis::vad::graph::build_silero_graph()
    } else {
        let size = size.trim_start_matches("whisper-");
        let dims = WhisperDims::for_size(size)
            .with_context(|| format!("unknown Whisper size '{size}'"))?;
        build_whisper_graph(&format!("whisper-{size}"), &dims)
    };
    // Validate before writing: a graph that does not load is never written.
    model::validate_graphs(&file, &registry()?)?;
    let text = file.to_text();
    match output {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create directory {}", dir.display()))?;
            }
            output::write_atomically(p, text.as_bytes())?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `amanuensis devices`: every registered device with its status and details.
fn devices_table() -> String {
    let mut s = format!("{:<9}{:<13}{}\n", "device", "status", "details");
    for (name, summary, st) in amanuensis::devices::device_statuses() {
        let status = if st.available {
            "available"
        } else {
            "unavailable"
        };
        let mut lines = if st.details.is_empty() {
            vec![summary]
        } else {
            st.details
        }
        .into_iter();
        s.push_str(&format!(
            "{name:<9}{status:<13}{}\n",
            lines.next().unwrap_or_default()
        ));
        for l in lines {
            s.push_str(&format!("{:<22}{l}\n", ""));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of the whole command line (defaults that parse, no
    /// two flags with one short or long name, …), which it otherwise runs only in debug
    /// builds when a command is parsed; the tests build with optimisation. (They do not
    /// see two flattened fields sharing a name: the test below does.)
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// `amanuensis serve` with no options runs with the library's defaults.
    #[test]
    fn serve_defaults_are_the_librarys() {
        let Command::Serve(a) = Cli::try_parse_from(["amanuensis", "serve"])
            .expect("parses")
            .command
        else {
            panic!("not serve");
        };
        let d = amanuensis::serve::ServeOptions::default();
        assert_eq!(a.host, d.host);
        assert_eq!(a.port, d.port);
        assert_eq!(a.workers, d.workers);
        assert_eq!(a.max_queue, d.max_queue);
        assert_eq!(a.batch_size, d.batch_size);
        assert_eq!(a.max_body, d.max_body);
        assert_eq!(a.timeout, d.timeout);
        assert_eq!(a.max_connections as usize, d.connections.max_connections);
        assert_eq!(a.header_timeout, d.connections.header_timeout);
    }

    /// `--vad-model` names the VAD's directory only; the Whisper model stays `--model`'s.
    #[test]
    fn vad_model_does_not_set_the_whisper_model() {
        /// The Whisper model and the VAD directory a command line gives.
        fn models(args: &[&str]) -> (String, Option<PathBuf>) {
            match Cli::try_parse_from(args).expect("parses").command {
                Command::Transcribe(a) => (a.model.model, a.vad_options.vad_model),
                Command::Serve(a) => (a.model.model, a.vad_options.vad_model),
                _ => panic!("not transcribe or serve: {args:?}"),
            }
        }
        let vad = Some(PathBuf::from("vad-dir"));
        assert_eq!(
            models(&[
                "amanuensis",
                "transcribe",
                "--vad",
                "--vad-model",
                "vad-dir",
                "a.wav"
            ]),
            ("base".to_string(), vad.clone())
        );
        assert_eq!(
            models(&[
                "amanuensis",
                "serve",
                "--model",
                "m-dir",
                "--vad-model",
                "vad-dir"
            ]),
            ("m-dir".to_string(), vad)
        );
    }
}
