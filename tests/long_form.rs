//! Long-form audio: `long_public_concat.wav` (75.5 s, nine public clips joined with 0.5 s
//! of silence) is transcribed window by window, seeking by the predicted timestamps.

mod common;

use amanuensis::audio::load_audio;
use amanuensis::wer::{read_manifest, word_errors};
use amanuensis::TranscribeOptions;

#[test]
fn long_concatenation_is_ordered_complete_and_accurate() {
    let dir = common::data_dir().join("audio");
    let rows = read_manifest(&dir.join("manifest.tsv")).unwrap();
    let reference = rows.iter().find(|r| r.file == "long_public_concat.wav").unwrap().transcript.clone();
    let pcm = load_audio(&dir.join("long_public_concat.wav")).unwrap();
    let mut model = common::load_model();
    let t = model.transcribe_pcm(&pcm, &TranscribeOptions::default()).unwrap();
    for s in &t.segments {
        println!("[{:6.2} {:6.2}] {}", s.start, s.end, s.text);
    }
    assert!(t.timings.windows >= 3, "75 s needs at least three windows, used {}", t.timings.windows);
    let mut last_end = 0.0;
    for s in &t.segments {
        assert!(s.start >= last_end - 1e-9, "segments overlap or go back: {} after {last_end}", s.start);
        assert!(s.end > s.start, "empty segment {s:?}");
        assert!(s.end <= t.duration as f64 + 1e-6, "segment past the end of the audio");
        last_end = s.end;
    }
    for (i, a) in t.segments.iter().enumerate() {
        for b in &t.segments[i + 1..] {
            assert_ne!(a.text.trim(), b.text.trim(), "repeated segment");
        }
    }
    let (e, n) = word_errors(&reference, &t.text);
    let wer = e as f64 / n as f64;
    println!("long-form WER {:.2}% ({e} errors / {n} words)", 100.0 * wer);
    // Beam 5 (the default); faster-whisper with beam 5 gets 5.45 %.
    assert!(wer <= 0.055, "WER {:.2}%", 100.0 * wer);
}
