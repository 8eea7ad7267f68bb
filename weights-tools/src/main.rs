//! `weights-tool`: convert CTranslate2 Whisper models and the Silero VAD ONNX model, inspect
//! weight files, verify weights against a graph.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use amanuensis_weights_tools::convert::{convert_ct2, ConvertOptions};
use amanuensis_weights_tools::inspect::inspect_path;
use amanuensis_weights_tools::silero::{convert_silero_vad, VadConvertOptions};
use amanuensis_weights_tools::verify::verify;
use clap::{Parser, Subcommand, ValueEnum};

/// Weight-file tools for the Amanuensis Whisper runtime.
#[derive(Debug, Parser)]
#[command(name = "weights-tool", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Source formats `convert` reads.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceFormat {
    /// A CTranslate2 Whisper model directory (model.bin, config.json, vocabulary.txt, tokenizer.json).
    Ct2,
    /// The Silero VAD v6 ONNX file (silero_vad_v6.onnx, as shipped in the faster-whisper wheel).
    Onnx,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a model into the project's model directory (model.safetensors + config.json + tokenizer files).
    Convert {
        /// Source format.
        #[arg(long = "from", value_enum)]
        from: SourceFormat,
        /// Source model directory or its model.bin (ct2); the .onnx file (onnx).
        #[arg(long)]
        input: PathBuf,
        /// Output model directory.
        #[arg(long)]
        output: PathBuf,
        /// Model name for config.json (default: derived from the dimensions, e.g. whisper-base;
        /// ct2 only: the VAD model is always silero-vad-v6).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tensors of a safetensors file or a CTranslate2 model.bin.
    Inspect {
        /// The file to list.
        file: PathBuf,
    },
    /// Check that a weights file provides every weight a graph needs.
    Verify {
        /// Serialized graph.
        #[arg(long)]
        graph: PathBuf,
        /// Weights file (safetensors).
        #[arg(long)]
        weights: PathBuf,
        /// Also check an int8 weight file (`model.int8.safetensors`, written at the first
        /// `--compute-type int8` load): each form must equal quantizing its weight now.
        #[arg(long, value_name = "FILE")]
        int8: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Convert {
            from: SourceFormat::Ct2,
            input,
            output,
            name,
        } => {
            let start = Instant::now();
            let s = convert_ct2(&ConvertOptions {
                input,
                output,
                name,
            })?;
            eprintln!(
                "converted {} -> {}: {} tensors, {} bytes, {} encoder + {} decoder layers, width {}, in {:.2} s",
                s.name,
                s.output.display(),
                s.tensor_count,
                s.safetensors_bytes,
                s.dims.n_audio_layer,
                s.dims.n_text_layer,
                s.dims.n_audio_state,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Convert {
            from: SourceFormat::Onnx,
            input,
            output,
            name,
        } => {
            if name.is_some() {
                return Err(
                    "--name applies to --from ct2 only (the VAD model is silero-vad-v6)".into(),
                );
            }
            let start = Instant::now();
            let s = convert_silero_vad(&VadConvertOptions { input, output })?;
            eprintln!(
                "converted {} -> {}: {} tensors, {} weights (float32), {} bytes, in {:.2} s",
                s.name,
                s.output.display(),
                s.tensor_count,
                s.parameters,
                s.safetensors_bytes,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Inspect { file } => {
            let text = inspect_path(&file)?.to_string();
            // A closed pipe (`| head`) is a normal way to stop reading, not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Verify {
            graph,
            weights,
            int8,
        } => {
            if let Some(int8) = int8 {
                let r = amanuensis_weights_tools::verify::verify_int8(&graph, &weights, &int8)?;
                for p in &r.problems {
                    println!("mismatch: {p}");
                }
                if !r.problems.is_empty() {
                    return Err(format!(
                        "{} of {} int8 forms in {} are not the quantization of {}",
                        r.problems.len(),
                        r.forms,
                        int8.display(),
                        weights.display()
                    )
                    .into());
                }
                println!(
                    "ok: all {} int8 forms in {} are the quantization of {}",
                    r.forms,
                    int8.display(),
                    weights.display()
                );
            }
            let r = verify(&graph, &weights)?;
            for u in &r.unused {
                eprintln!("note: '{u}' is in the weight file but no graph uses it");
            }
            if r.problems.is_empty() {
                println!(
                    "ok: {} provides all {} weights declared by {} ({} tensors in the file)",
                    weights.display(),
                    r.declared,
                    graph.display(),
                    r.stored
                );
                Ok(())
            } else {
                for p in &r.problems {
                    println!("mismatch: {p}");
                }
                Err(format!(
                    "{} problem(s) between {} and {}",
                    r.problems.len(),
                    graph.display(),
                    weights.display()
                )
                .into())
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weights-tool: error: {e}");
            ExitCode::FAILURE
        }
    }
}
