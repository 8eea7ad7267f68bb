//! Word timestamps on jfk.wav: every word of the transcript, in order, inside its
//! segment, at the times faster-whisper 1.2.1 gives for the same model (recorded once;
//! the list also matches the recording by ear: the pause after "Americans" falls inside
//! " ask", which Whisper's alignment stretches back to the end of the previous word).

use crate::common;

use amanuensis::audio::load_audio;
use amanuensis::TranscribeOptions;

/// (word, start, end) from faster-whisper 1.2.1 (`word_timestamps=True`, greedy).
const REFERENCE: &[(&str, f64, f64)] = &[
    (" And", 0.0, 0.52),
    (" so", 0.52, 0.84),
    (" my", 0.84, 1.18),
    (" fellow", 1.18, 1.56),
    (" Americans", 1.56, 2.1),
    (" ask", 2.1, 3.72),
    (" not", 3.72, 4.24),
    (" what", 4.24, 5.52),
    (" your", 5.52, 5.76),
    (" country", 5.76, 6.24),
    (" can", 6.24, 6.62),
    (" do", 6.62, 6.82),
    (" for", 6.82, 7.08),
    (" you,", 7.08, 7.42),
    (" ask", 7.42, 8.46),
    (" what", 8.46, 8.76),
    (" you", 8.76, 9.04),
    (" can", 9.04, 9.32),
    (" do", 9.32, 9.56),
    (" for", 9.56, 9.78),
    (" your", 9.78, 9.94),
    (" country.", 9.94, 10.36),
];

/// The tolerance for word times.
const TOLERANCE_S: f64 = 0.2;

#[test]
fn jfk_word_timestamps() {
    let pcm = load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    let mut model = common::load_model();
    let mut opts = TranscribeOptions {
        word_timestamps: true,
        language: Some("en".into()),
        ..Default::default()
    };
    opts.decoding.beam.beam_size = 1; // the reference run was greedy
    let t = model.transcribe_pcm(&pcm, &opts).unwrap();
    let mut words = Vec::new();
    for s in &t.segments {
        assert!(!s.words.is_empty(), "segment without words: {s:?}");
        for w in &s.words {
            assert!(
                w.start >= s.start - 1e-9 && w.end <= s.end + 1e-9,
                "{w:?} outside its segment [{}, {}]",
                s.start,
                s.end
            );
            assert!(w.end >= w.start);
            assert!((0.0..=1.0).contains(&w.probability));
            words.push(w.clone());
        }
    }
    let got: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
    let want: Vec<&str> = REFERENCE.iter().map(|r| r.0).collect();
    assert_eq!(got, want);
    let mut prev_end = 0.0;
    let mut max_dev = 0f64;
    for (w, &(_, start, end)) in words.iter().zip(REFERENCE) {
        assert!(w.start >= prev_end - 1e-9, "times go back at {w:?}");
        prev_end = w.end;
        max_dev = max_dev
            .max((w.start - start).abs())
            .max((w.end - end).abs());
    }
    println!("max deviation from the reference word times: {max_dev:.3} s");
    assert!(max_dev <= TOLERANCE_S, "{max_dev}");
}
