//! WER scoring against the shipped manifest and the reference transcripts of jfk.wav.

use std::path::PathBuf;

use crate::common::wer::*;

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

// Unit checks of the scorer itself.
#[test]
fn normalization() {
    assert_eq!(
        normalize("And so, my fellow Americans: ask NOT!"),
        ["and", "so", "my", "fellow", "americans", "ask", "not"]
    );
    // Apostrophes (straight and curly) are deleted, not turned into spaces.
    assert_eq!(
        normalize("Don't  you’re o'clock"),
        ["dont", "youre", "oclock"]
    );
    // Other punctuation splits words; numbers stay digits.
    assert_eq!(
        normalize("Mr. Smith-Jones paid $10.50"),
        ["mr", "smith", "jones", "paid", "10", "50"]
    );
    assert_eq!(normalize("  \t\n "), Vec::<String>::new());
    assert_eq!(normalize("Ünïcode ÉCOLE"), ["ünïcode", "école"]);
}

#[test]
fn substitution() {
    assert_eq!(word_errors("the cat sat", "the bat sat"), (1, 3));
}

#[test]
fn insertion() {
    assert_eq!(word_errors("the cat sat", "the cat sat down"), (1, 3));
    assert_eq!(word_errors("a b", "x a y b z"), (3, 2));
}

#[test]
fn deletion() {
    assert_eq!(
        word_errors("the cat sat on the mat", "the cat on mat"),
        (2, 6)
    );
}

#[test]
fn mixed_edits() {
    // kitten → sitting at word level: k i t t e n vs s i t t i n g:
    // 2 substitutions (k→s, e→i) + 1 insertion (g) = 3.
    assert_eq!(word_errors("k i t t e n", "s i t t i n g"), (3, 6));
    // Completely different: max(len) edits.
    assert_eq!(word_errors("a b c", "d e"), (3, 3));
}

#[test]
fn punctuation_and_case_do_not_count() {
    assert_eq!(
        word_errors(
            "And so my fellow Americans, ask not what your country can do for you.",
            "and so my fellow americans ask not what your country can do for you"
        ),
        (0, 14)
    );
    assert_eq!(
        word_errors("It's the neighbor's house.", "its the neighbors house"),
        (0, 4)
    );
    // Splitting on hyphens makes one reference word two.
    assert_eq!(word_errors("cold-hearted", "cold hearted"), (0, 2));
    assert_eq!(word_errors("cold-hearted", "coldhearted"), (2, 2));
}

#[test]
fn empty_reference() {
    assert_eq!(word_errors("", ""), (0, 0));
    assert_eq!(word_errors("", "hello there"), (2, 0));
    assert_eq!(wer("", "hello"), None);
    assert_eq!(word_errors("hello there", ""), (2, 2));
    assert_eq!(wer("hello there", ""), Some(1.0));
}

#[test]
fn corpus_accumulates() {
    let mut c = Corpus::new();
    c.add("the cat sat", "the bat sat"); // 1/3
    c.add("a b c d e", "a b c d e"); // 0/5
    c.add("", "noise"); // 1/0
    assert_eq!((c.edits, c.ref_words, c.utterances), (2, 8, 3));
    assert_eq!(c.wer(), Some(0.25));
    assert_eq!(Corpus::new().wer(), None);
}

#[test]
fn manifest_parsing() {
    let text = "file\tseconds\tsample_rate\tsource\tlicense\ttranscript\n\
                a.wav\t1.500\t16000\tx/y@1:a.wav\tMIT\tHello, world.\n\
                silence.wav\t1.000\t16000\tgenerated\tCC0\t\n\
                b.wav\t2\t8000\ts\tl\n";
    let rows = parse_manifest(text, "m.tsv").unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].file, "a.wav");
    assert_eq!(rows[0].seconds, 1.5);
    assert_eq!(rows[0].transcript, "Hello, world.");
    assert_eq!(rows[1].transcript, "");
    assert_eq!(rows[2].sample_rate, 8000);
    assert_eq!(rows[2].transcript, "");

    let err = parse_manifest("file\tseconds\n", "m.tsv")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m.tsv") && err.contains("sample_rate"),
        "{err}"
    );
    let err = parse_manifest(
        "file\tseconds\tsample_rate\tsource\tlicense\ttranscript\nx.wav\tabc\t16000\ts\tl\tt\n",
        "m.tsv",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2") && err.contains("abc"), "{err}");
}
