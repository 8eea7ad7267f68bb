//! Transcribe a WAV file with the library API.
//!
//! ```sh
//! cargo run --release --example transcribe -- samples/jfk.wav
//! ```

use amanuensis::{audio, model, TranscribeOptions, WhisperModel};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let file: PathBuf = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| "samples/jfk.wav".into());
    let dir = model::find_model_dir("base")?;
    let registry = amanuensis_operators::standard_registry();
    let mut whisper = WhisperModel::load(&dir, None, &registry)?;
    let pcm = audio::load_audio(&file)?;
    let opts = TranscribeOptions { without_timestamps: false, ..Default::default() };
    let transcript = whisper.transcribe_pcm(&pcm, &opts)?;
    for s in &transcript.segments {
        println!("[{:6.2} → {:6.2}] {}", s.start, s.end, s.text.trim());
    }
    Ok(())
}
