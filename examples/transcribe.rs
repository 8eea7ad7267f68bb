//! Transcribe an audio file with the library API, with word timings.
//!
//! ```sh
//! cargo run --release --example transcribe -- samples/jfk.wav
//! ```

use amanuensis::{TranscribeOptions, Transcriber};

fn main() -> anyhow::Result<()> {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "samples/jfk.wav".into());
    let mut transcriber = Transcriber::new("base")?;
    let opts = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    let transcript = transcriber.transcribe(&file, &opts)?;
    println!("language: {}", transcript.language);
    for s in &transcript.segments {
        println!("[{:6.2} → {:6.2}] {}", s.start, s.end, s.text.trim());
        for w in &s.words {
            println!(
                "    {:6.2} {:6.2} {:<12} p={:.2}",
                w.start,
                w.end,
                w.word.trim(),
                w.probability
            );
        }
    }
    Ok(())
}
