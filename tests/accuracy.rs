//! Transcript accuracy on the public clips (tests/data/audio/manifest.tsv), against the
//! figures faster-whisper 1.2.1 reaches with the same model:
//! - every real-speech clip of ≤ 30 s plus the 44.1 kHz stereo and 8 kHz copies of jfk,
//!   greedy: ≤ 7.5 % (faster-whisper greedy fp32: 7.2 %, 18 errors / 249 words);
//! - the 12 real-speech clips (278 words): beam 5 ≤ 5.8 % (faster-whisper 5.76 %), greedy
//!   ≤ 6.2 % (6.12 %);
//! - silence and white noise give no text.

use crate::common;

use crate::common::wer::{read_manifest, word_errors, ManifestRow};
use amanuensis::audio::load_audio;
use amanuensis::{TranscribeOptions, WhisperModel};

/// Corpus WER of `files` clips: (errors, reference words, files).
fn corpus(
    model: &mut WhisperModel,
    rows: &[&ManifestRow],
    opts: &TranscribeOptions,
) -> (usize, usize, usize) {
    let dir = common::data_dir().join("audio");
    let (mut errors, mut words) = (0usize, 0usize);
    for r in rows {
        let pcm = load_audio(&dir.join(&r.file)).unwrap();
        let t = model.transcribe_pcm(&pcm, opts).unwrap();
        let (e, n) = word_errors(&r.transcript, &t.text);
        println!("{:<28} {e:>2}/{n:<3} {}", r.file, t.text);
        errors += e;
        words += n;
    }
    println!(
        "corpus WER {:.2}% ({errors} errors / {words} words, {} files)",
        100.0 * errors as f64 / words as f64,
        rows.len()
    );
    (errors, words, rows.len())
}

fn greedy() -> TranscribeOptions {
    let mut o = TranscribeOptions::default();
    o.decoding.beam.beam_size = 1;
    o
}

#[test]
fn corpus_wer_on_public_clips_greedy() {
    let rows = read_manifest(&common::data_dir().join("audio/manifest.tsv")).unwrap();
    let set: Vec<&ManifestRow> = rows.iter().filter(|r| r.is_public_clip()).collect();
    let mut model = common::load_model();
    let (errors, words, files) = corpus(&mut model, &set, &greedy());
    assert_eq!(
        files, 13,
        "12 real-speech clips ≤ 30 s minus the 35.5-s Harvard list, plus jfk at 44.1 kHz and 8 kHz"
    );
    assert_eq!(words, 249);
    let wer = errors as f64 / words as f64;
    assert!(wer <= 0.075, "corpus WER {:.2}% > 7.5%", 100.0 * wer);
}

/// The 12 real-speech single clips (synthetic speech, the long concatenation and the
/// resampled copies of jfk excluded).
fn real_speech(rows: &[ManifestRow]) -> Vec<&ManifestRow> {
    rows.iter()
        .filter(|r| {
            !r.transcript.is_empty()
                && !r.file.starts_with("espeak_")
                && !r.file.starts_with("long_")
                && !r.file.starts_with("jfk_")
        })
        .collect()
}

#[test]
fn corpus_wer_beam_search_and_greedy() {
    let rows = read_manifest(&common::data_dir().join("audio/manifest.tsv")).unwrap();
    let set = real_speech(&rows);
    assert_eq!(set.len(), 12);
    let mut model = common::load_model();
    let (e_beam, words, _) = corpus(&mut model, &set, &TranscribeOptions::default());
    assert_eq!(words, 278);
    let (e_greedy, _, _) = corpus(&mut model, &set, &greedy());
    let (beam, greedy) = (e_beam as f64 / words as f64, e_greedy as f64 / words as f64);
    println!(
        "beam 5: {:.2}%, greedy: {:.2}%",
        100.0 * beam,
        100.0 * greedy
    );
    assert!(beam <= 0.058, "beam-5 WER {:.2}% > 5.8%", 100.0 * beam);
    assert!(greedy <= 0.062, "greedy WER {:.2}% > 6.2%", 100.0 * greedy);
}

#[test]
fn silence_and_noise_give_no_text() {
    let dir = common::data_dir().join("audio");
    let mut model = common::load_model();
    for f in ["silence_1s.wav", "white_noise_5s.wav"] {
        let pcm = load_audio(&dir.join(f)).unwrap();
        for without_timestamps in [false, true] {
            let opts = TranscribeOptions {
                without_timestamps,
                ..Default::default()
            };
            let t = model.transcribe_pcm(&pcm, &opts).unwrap();
            assert_eq!(t.text, "", "{f} (without_timestamps={without_timestamps})");
            assert!(t.segments.is_empty(), "{f}");
        }
    }
}
