//! Memory and speed over an hour of audio: builds one hour from the public clips in
//! tests/data/audio (each followed by 2 s of silence, repeated), writes it as a 16-bit WAV
//! under target/bench, transcribes that file, and prints the resident memory after every
//! window, the peak, and the growth between the first and the last ten minutes.
//!
//! By default the file is streamed (read twice, a window at a time, as `amanuensis
//! transcribe FILE` does); `memory` decodes it into memory first (as for standard input).
//!
//! ```sh
//! cargo run --release --example hour_bench                    # 60 minutes, streamed
//! cargo run --release --example hour_bench -- 10              # minutes of audio
//! cargo run --release --example hour_bench -- 60 f32          # compute type (default: auto)
//! cargo run --release --example hour_bench -- 60 auto memory  # the whole hour in memory
//! ```

use amanuensis::audio::{load_audio, SAMPLE_RATE};
use amanuensis::Progress;
use amanuensis::{model, TranscribeOptions, WhisperModel};
use std::path::Path;
use std::time::Instant;

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> anyhow::Result<()> {
    let minutes: f64 = std::env::args()
        .nth(1)
        .map(|m| m.parse())
        .transpose()?
        .unwrap_or(60.0);
    let compute: amanuensis::compute::ComputeType = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "auto".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio");
    let clips = [
        "jfk.wav",
        "librivox_ss_0870.wav",
        "librivox_ss_0890.wav",
        "librivox_ss_0930.wav",
        "ljspeech_LJ050-0131.wav",
        "fw_stereo_left.wav",
        "fleurs_en_000.wav",
        "fleurs_en_002.wav",
        "fleurs_en_004.wav",
        "fleurs_en_006.wav",
        "fleurs_en_008.wav",
        "osr_us_0034_harvard.wav",
    ];
    let streamed = match std::env::args().nth(3).as_deref() {
        None | Some("streamed") => true,
        Some("memory") => false,
        Some(other) => anyhow::bail!("mode {other:?}: expected `streamed` or `memory`"),
    };
    let mut cycle = Vec::new();
    for c in clips {
        cycle.extend(load_audio(&dir.join(c))?);
        cycle.extend(std::iter::repeat_n(0.0f32, 2 * SAMPLE_RATE as usize));
    }
    let total = (minutes * 60.0 * SAMPLE_RATE as f64) as usize;
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&bench_dir)?;
    let wav = bench_dir.join(format!("hour_bench_{minutes}min.wav"));
    write_wav(&wav, cycle.iter().copied().cycle().take(total), total)?;
    drop(cycle);
    let registry = amanuensis_operators::standard_registry();
    let spec = amanuensis::DeviceSpec {
        compute,
        ..Default::default()
    };
    let mut m = WhisperModel::load_on(&model::find_model_dir("base")?, None, &registry, &spec)?;
    let (audio, pcm) = if streamed {
        (Some(m.scan_file(&wav)?), Vec::new())
    } else {
        (None, load_audio(&wav)?)
    };
    println!(
        "audio: {minutes} min ({}), compute type {}; RSS after loading the model{}: {} MB",
        wav.display(),
        m.device.compute,
        if streamed {
            format!(
                " and measuring the file ({:.2} s)",
                audio.as_ref().map_or(0.0, |a| a.scan_time().as_secs_f64())
            )
        } else {
            " and decoding the file into memory".into()
        },
        status_kb("VmRSS:").unwrap_or(0) / 1024
    );
    let t0 = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut report = |p: Progress| {
        let rss = status_kb("VmRSS:").unwrap_or(0);
        samples.push((p.done, rss));
        if samples.len().is_multiple_of(20) {
            println!(
                "  {:6.1} min of audio, RSS {:5} MB, {:5.1}x realtime",
                p.done / 60.0,
                rss / 1024,
                p.done / t0.elapsed().as_secs_f64()
            );
        }
    };
    let opts = TranscribeOptions {
        language: Some("en".into()),
        ..Default::default()
    };
    let t = match audio {
        Some(audio) => m.transcribe_streamed(audio, &opts, &mut report)?,
        None => m.transcribe_pcm_with_progress(&pcm, &opts, &mut report)?,
    };
    let wall = t0.elapsed().as_secs_f64();
    let span = minutes * 60.0;
    let window_max = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|s| s.0 >= from && s.0 <= to)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    let first = window_max(0.0, span.min(600.0));
    let last = window_max((span - 600.0).max(0.0), span);
    println!(
        "segments: {}, windows: {}",
        t.segments.len(),
        t.timings.windows
    );
    println!("wall {wall:.1} s, {:.1}x realtime", span / wall);
    println!(
        "peak RSS (VmHWM): {} MB",
        status_kb("VmHWM:").unwrap_or(0) / 1024
    );
    println!(
        "max RSS in the first 10 min of audio: {} MB; in the last 10 min: {} MB; growth {} MB",
        first / 1024,
        last / 1024,
        (last as i64 - first as i64) / 1024
    );
    Ok(())
}

/// Writes `total` samples as a 16-bit mono WAV at 16 kHz, without holding them.
fn write_wav(path: &Path, samples: impl Iterator<Item = f32>, total: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let data = u32::try_from(total * 2)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"RIFF")?;
    w.write_all(&(36 + data).to_le_bytes())?;
    w.write_all(b"WAVEfmt ")?;
    w.write_all(&16u32.to_le_bytes())?;
    w.write_all(&1u16.to_le_bytes())?; // PCM
    w.write_all(&1u16.to_le_bytes())?; // mono
    w.write_all(&SAMPLE_RATE.to_le_bytes())?;
    w.write_all(&(SAMPLE_RATE * 2).to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&16u16.to_le_bytes())?;
    w.write_all(b"data")?;
    w.write_all(&data.to_le_bytes())?;
    for x in samples {
        let q = (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        w.write_all(&q.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}
