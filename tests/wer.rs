//! WER scoring against the shipped manifest and the reference transcripts of jfk.wav.

use std::path::PathBuf;

use amanuensis::wer::{normalize, read_manifest, word_errors, Corpus};

fn manifest_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio/manifest.tsv")
}

#[test]
fn manifest_has_every_clip() {
    let rows = read_manifest(&manifest_path()).unwrap();
    assert_eq!(rows.len(), 19);
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    assert!((total - 239.4).abs() < 0.05, "total {total} s");
    let dir = manifest_path().parent().unwrap().to_path_buf();
    for r in &rows {
        assert!(dir.join(&r.file).is_file(), "{} listed but missing", r.file);
    }
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r.file == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    let jfk = by_name("jfk.wav");
    assert_eq!((jfk.seconds, jfk.sample_rate), (11.0, 16_000));
    assert!(jfk.transcript.starts_with("And so my fellow Americans,"));
    assert_eq!(by_name("jfk_8k.wav").sample_rate, 8_000);
    assert_eq!(by_name("jfk_44k1_stereo.wav").sample_rate, 44_100);
    // Empty transcript = no speech.
    assert_eq!(by_name("silence_1s.wav").transcript, "");
    assert_eq!(by_name("white_noise_5s.wav").transcript, "");
    assert_eq!(rows.iter().filter(|r| r.transcript.is_empty()).count(), 2);
}

#[test]
fn jfk_reference_transcripts_score_zero() {
    let rows = read_manifest(&manifest_path()).unwrap();
    let jfk = &rows
        .iter()
        .find(|r| r.file == "jfk.wav")
        .unwrap()
        .transcript;
    // faster-whisper's greedy transcripts of jfk.wav, without and with timestamps (the
    // latter lacks the comma after "Americans"): punctuation does not count.
    let no_ts = " And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    let ts = " And so my fellow Americans ask not what your country can do for you, ask what you can do for your country.";
    assert_eq!(word_errors(jfk, no_ts), (0, 22));
    assert_eq!(word_errors(jfk, ts), (0, 22));
    // Hand-counted: "ask not" → "ask" (1 deletion), "country" → "county" (1 substitution),
    // an extra "well" at the start (1 insertion).
    let hyp = "Well and so my fellow Americans, ask what your county can do for you, ask what you can do for your country.";
    assert_eq!(word_errors(jfk, hyp), (3, 22));
}

#[test]
fn normalisation_of_manifest_texts() {
    // Apostrophes vanish; hyphen, colon and period split words; numbers stay digits.
    assert_eq!(
        normalize("many people don't think the whole-number ratio is 3:2."),
        ["many", "people", "dont", "think", "the", "whole", "number", "ratio", "is", "3", "2"]
    );
    assert_eq!(
        normalize("She saw a cat in the neighbor's house."),
        ["she", "saw", "a", "cat", "in", "the", "neighbors", "house"]
    );
    // "10" and "ten" differ; "Mr." and "mister" differ.
    assert_eq!(
        word_errors(
            "lag behind by 25 to 30 year",
            "lag behind by twenty-five to 30 year"
        ),
        (2, 7)
    );
    assert_eq!(
        word_errors("mister john dashwood", "Mr. John Dashwood"),
        (1, 3)
    );
}

#[test]
fn corpus_wer_over_manifest() {
    let rows = read_manifest(&manifest_path()).unwrap();
    let mut perfect = Corpus::new();
    let mut damaged = Corpus::new();
    let mut ref_words = 0;
    for r in &rows {
        perfect.add(&r.transcript, &r.transcript);
        // Drop the first word of every non-empty reference: one deletion each.
        let words = normalize(&r.transcript);
        ref_words += words.len();
        let hyp = words.iter().skip(1).cloned().collect::<Vec<_>>().join(" ");
        damaged.add(&r.transcript, &hyp);
    }
    assert_eq!(perfect.wer(), Some(0.0));
    assert_eq!(perfect.ref_words, ref_words);
    assert_eq!(damaged.edits, 17, "one deletion per non-empty transcript");
    let expected = 17.0 / ref_words as f64;
    assert!((damaged.wer().unwrap() - expected).abs() < 1e-12);
    // "no speech" clips: any output word is an insertion against zero reference words.
    let mut silence = Corpus::new();
    silence.add("", "thank you");
    assert_eq!(
        (silence.edits, silence.ref_words, silence.wer()),
        (2, 0, None)
    );
}
