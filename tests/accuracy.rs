//! Transcript accuracy on the public clips (tests/data/audio/manifest.tsv): corpus WER of
//! every real-speech clip of ≤ 30 s plus the 44.1 kHz stereo and 8 kHz copies of jfk must be
//! ≤ 7.5% (faster-whisper greedy fp32 gets 7.2% on this set), and silence and white noise
//! must give no text.

mod common;

use amanuensis::audio::load_audio;
use amanuensis::wer::{read_manifest, word_errors};
use amanuensis::TranscribeOptions;

/// Synthetic speech and the long concatenation are not part of this set.
fn in_set(file: &str, seconds: f64, transcript: &str) -> bool {
    !transcript.is_empty() && seconds <= 30.0 && !file.starts_with("espeak_") && !file.starts_with("long_")
}

#[test]
fn corpus_wer_on_public_clips() {
    let dir = common::data_dir().join("audio");
    let rows = read_manifest(&dir.join("manifest.tsv")).unwrap();
    let mut model = common::load_model();
    let opts = TranscribeOptions { without_timestamps: false, ..Default::default() };
    let (mut errors, mut words, mut files) = (0usize, 0usize, 0usize);
    for r in rows.iter().filter(|r| in_set(&r.file, r.seconds, &r.transcript)) {
        let pcm = load_audio(&dir.join(&r.file)).unwrap();
        let t = model.transcribe_pcm(&pcm, &opts).unwrap();
        let (e, n) = word_errors(&r.transcript, &t.text);
        println!("{:<28} {e:>2}/{n:<3} {}", r.file, t.text);
        errors += e;
        words += n;
        files += 1;
    }
    let wer = errors as f64 / words as f64;
    println!("corpus WER {:.2}% ({errors} errors / {words} words, {files} files)", 100.0 * wer);
    assert_eq!(files, 13, "12 real-speech clips ≤ 30 s minus the 35.5-s Harvard list, plus jfk at 44.1 kHz and 8 kHz");
    assert!(wer <= 0.075, "corpus WER {:.2}% > 7.5%", 100.0 * wer);
}

#[test]
fn silence_and_noise_give_no_text() {
    let dir = common::data_dir().join("audio");
    let mut model = common::load_model();
    for f in ["silence_1s.wav", "white_noise_5s.wav"] {
        let pcm = load_audio(&dir.join(f)).unwrap();
        for without_timestamps in [false, true] {
            let opts = TranscribeOptions { without_timestamps, ..Default::default() };
            let t = model.transcribe_pcm(&pcm, &opts).unwrap();
            assert_eq!(t.text, "", "{f} (without_timestamps={without_timestamps})");
            assert!(t.segments.is_empty(), "{f}");
        }
    }
}
