//! Long-form audio: `long_public_concat.wav` (75.5 s, nine public clips joined with 0.5 s
//! of silence) is transcribed window by window, seeking by the predicted timestamps, and
//! the segment times are refined with the recording's pauses.
//!
//! The clips' places in the recording are computed from the clip files (order from the
//! manifest, lengths from the audio, 0.5 s between clips). Some clips carry silence of
//! their own at their edges (fleurs_en_000 has 1.05 s of room noise before its first
//! word; LJ050-0131's speech stops 0.19 s before its end), so the silence around a join
//! can reach well over 0.5 s from the join on either side. A segment that ends with the
//! speech of one clip and one that starts with the speech of the next then lie up to a
//! second from the join; only a boundary placed inside the silence could be within 0.5 s
//! of the join itself. The boundaries are therefore checked against each clip's speech
//! span, measured on the clip file alone and independently of the refinement's pause
//! finder: from the first to the last 10-ms frame whose level is within
//! [`SPEECH_DB`] of the clip's speech level (the 95th percentile of its frame levels).
//! Faint onsets and decays below that level are left to the 0.5-s tolerance.

use crate::common;

use crate::common::wer::{read_manifest, word_errors};
use amanuensis::audio::load_audio;
use amanuensis::TranscribeOptions;
use amanuensis::{Segment, Transcript};

/// Silence inserted between clips, seconds.
const GAP_S: f64 = 0.5;
/// Tolerance of every boundary check, seconds.
const TOLERANCE_S: f64 = 0.5;
/// Audio sample rate of the test data.
const RATE: u32 = 16_000;
/// A frame this close (dB) to a clip's speech level is speech for the reference spans.
const SPEECH_DB: f64 = 15.0;

/// Start and end (seconds) of the speech in one clip: its first and last 10-ms frame
/// within [`SPEECH_DB`] of the 95th percentile of the frame levels.
fn speech_span(pcm: &[f32]) -> (f64, f64) {
    let hop = RATE as usize / 100;
    let levels: Vec<f64> = pcm
        .chunks_exact(hop)
        .map(|f| {
            10.0 * (f.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / hop as f64)
                .max(1e-10)
                .log10()
        })
        .collect();
    let mut sorted = levels.clone();
    sorted.sort_by(f64::total_cmp);
    let level = sorted[((sorted.len() - 1) as f64 * 0.95).round() as usize];
    let loud = |l: &&f64| **l > level - SPEECH_DB;
    let first = levels
        .iter()
        .position(|l| loud(&l))
        .expect("the clip has speech");
    let last = levels
        .iter()
        .rposition(|l| loud(&l))
        .expect("the clip has speech");
    (first as f64 / 100.0, (last + 1) as f64 / 100.0)
}

/// One clip of the concatenation: where its file starts in the recording and where its
/// speech starts and ends (seconds from the start of the recording).
#[derive(Debug)]
struct Clip {
    file: String,
    start: f64,
    speech_start: f64,
    speech_end: f64,
}

/// The clips of `long_public_concat.wav`, from the manifest's list and the clip files.
fn clips() -> (Vec<Clip>, String, f64) {
    let dir = common::data_dir().join("audio");
    let rows = read_manifest(&dir.join("manifest.tsv")).unwrap();
    let row = rows
        .iter()
        .find(|r| r.file == "long_public_concat.wav")
        .unwrap();
    let list = row
        .source
        .strip_prefix("concatenation of:")
        .expect("the manifest lists the concatenated clips");
    let mut out = Vec::new();
    let mut t = 0.0;
    for file in list.split(',').map(str::trim) {
        let pcm = load_audio(&dir.join(file)).unwrap();
        let len = pcm.len() as f64 / RATE as f64;
        let (lead, trail) = speech_span(&pcm);
        out.push(Clip {
            file: file.to_string(),
            start: t,
            speech_start: t + lead,
            speech_end: t + trail,
        });
        t += len + GAP_S;
    }
    (out, row.transcript.clone(), t - GAP_S)
}

fn print_segments(title: &str, t: &Transcript) {
    println!("{title}");
    for s in &t.segments {
        println!("  [{:6.2} {:6.2}] {}", s.start, s.end, s.text);
    }
}

/// Segments in order, each non-empty, none overlapping the next, all inside the audio.
fn assert_monotonic(t: &Transcript) {
    let mut last_end = 0.0;
    for s in &t.segments {
        assert!(
            s.start >= last_end - 1e-9,
            "segments overlap or go back: {} after {last_end}",
            s.start
        );
        assert!(s.end > s.start, "empty segment {s:?}");
        assert!(
            s.end <= t.duration as f64 + 1e-6,
            "segment past the end of the audio"
        );
        last_end = s.end;
    }
}

/// No segment text twice (the repetition loops of a hallucinating decoder).
fn assert_no_repeats(t: &Transcript) {
    for (i, a) in t.segments.iter().enumerate() {
        for b in &t.segments[i + 1..] {
            assert_ne!(a.text.trim(), b.text.trim(), "repeated segment");
        }
    }
}

/// Distance from `t` to the nearest of `times`.
fn nearest(t: f64, times: impl Iterator<Item = f64>) -> f64 {
    times.map(|x| (x - t).abs()).fold(f64::INFINITY, f64::min)
}

/// The boundary checks (see the module comment); returns the violations.
fn boundary_violations(clips: &[Clip], segments: &[Segment]) -> Vec<String> {
    let starts = || segments.iter().map(|s| s.start);
    let ends = || segments.iter().map(|s| s.end);
    let mut bad = Vec::new();
    println!("  clip                      file start  speech from   to   | nearest seg start  seg end | boundary-join");
    for (i, c) in clips.iter().enumerate() {
        let ds = nearest(c.speech_start, starts());
        let de = nearest(c.speech_end, ends());
        let dj = nearest(c.start, starts().chain(ends()));
        println!(
            "  {:24} {:7.3} {:8.2} {:8.2} | {:13.2} {:10.2} | {:.2}",
            c.file, c.start, c.speech_start, c.speech_end, ds, de, dj
        );
        // Every clip's speech starts a segment...
        if ds > TOLERANCE_S {
            bad.push(format!(
                "no segment starts within {TOLERANCE_S} s of {}'s speech at {:.2}",
                c.file, c.speech_start
            ));
        }
        // ...and, except for the last clip (the recording's own end), ends one.
        if i + 1 < clips.len() && de > TOLERANCE_S {
            bad.push(format!(
                "no segment ends within {TOLERANCE_S} s of {}'s speech end at {:.2}",
                c.file, c.speech_end
            ));
        }
        // The join itself: a segment boundary within the tolerance of it, or inside the
        // silence around it where the clips' own silence makes that longer.
        if i > 0 {
            let (quiet_from, quiet_to) = (clips[i - 1].speech_end, c.speech_start);
            let near_join = starts()
                .chain(ends())
                .any(|b| (b - c.start).abs() <= TOLERANCE_S || (b >= quiet_from && b <= quiet_to));
            if !near_join {
                bad.push(format!(
                    "no segment boundary at the join before {} ({:.3})",
                    c.file, c.start
                ));
            }
        }
    }
    // A segment starts near the start of a clip's speech or inside it (a split at a
    // pause within the clip), never in the silence between clips; likewise for ends.
    for s in segments {
        let start_ok = clips.iter().any(|c| {
            (s.start - c.speech_start).abs() <= TOLERANCE_S
                || (s.start > c.speech_start && s.start < c.speech_end)
        });
        if !start_ok {
            bad.push(format!(
                "segment starting at {:.2} starts in the silence between clips: {}",
                s.start, s.text
            ));
        }
        let end_ok = clips.iter().any(|c| {
            (s.end - c.speech_end).abs() <= TOLERANCE_S
                || (s.end > c.speech_start && s.end < c.speech_end)
        });
        if !end_ok {
            bad.push(format!(
                "segment ending at {:.2} ends in the silence between clips: {}",
                s.end, s.text
            ));
        }
    }
    bad
}

#[test]
fn long_concatenation_is_ordered_complete_and_accurate() {
    let dir = common::data_dir().join("audio");
    let (clips, reference, total) = clips();
    let pcm = load_audio(&dir.join("long_public_concat.wav")).unwrap();
    assert!(
        (pcm.len() as f64 / RATE as f64 - total).abs() < 1.0 / RATE as f64,
        "the recording is not the clips joined by {GAP_S} s: {} s vs {total} s",
        pcm.len() as f64 / RATE as f64
    );
    let mut model = common::load_model();

    let plain = model
        .transcribe_pcm(
            &pcm,
            &TranscribeOptions {
                refine_timestamps: false,
                ..Default::default()
            },
        )
        .unwrap();
    print_segments("model timestamps (refinement off):", &plain);
    let before = boundary_violations(&clips, &plain.segments);
    println!("  {} boundary violations", before.len());

    let t = model
        .transcribe_pcm(&pcm, &TranscribeOptions::default())
        .unwrap();
    print_segments("refined timestamps (default):", &t);
    let after = boundary_violations(&clips, &t.segments);
    println!("  {} boundary violations", after.len());

    assert!(
        t.timings.windows >= 3,
        "75 s needs at least three windows, used {}",
        t.timings.windows
    );
    assert_monotonic(&t);
    assert_no_repeats(&t);
    assert!(after.is_empty(), "{after:#?}");
    // The refinement only divides and re-times segments: same text, same tokens.
    assert_eq!(t.text, plain.text);
    let tokens = |t: &Transcript| {
        t.segments
            .iter()
            .flat_map(|s| s.tokens.clone())
            .collect::<Vec<u32>>()
    };
    assert_eq!(tokens(&t), tokens(&plain));
    let (e, n) = word_errors(&reference, &t.text);
    let wer = e as f64 / n as f64;
    println!("long-form WER {:.2}% ({e} errors / {n} words)", 100.0 * wer);
    // Beam 5 (the default); faster-whisper with beam 5 gets 5.45 %.
    assert!(wer <= 0.055, "WER {:.2}%", 100.0 * wer);
}

#[test]
fn long_concatenation_with_words_splits_at_the_join_and_keeps_words_inside() {
    let dir = common::data_dir().join("audio");
    let pcm = load_audio(&dir.join("long_public_concat.wav")).unwrap();
    let mut model = common::load_model();
    let t = model
        .transcribe_pcm(
            &pcm,
            &TranscribeOptions {
                word_timestamps: true,
                ..Default::default()
            },
        )
        .unwrap();
    print_segments("refined timestamps with words:", &t);
    assert_monotonic(&t);
    assert_no_repeats(&t);
    let mut prev_end = 0.0;
    for s in &t.segments {
        assert!(!s.words.is_empty(), "segment without words: {s:?}");
        assert_eq!(
            s.words.iter().map(|w| w.word.as_str()).collect::<String>(),
            s.text,
            "words spell the segment"
        );
        for w in &s.words {
            assert!(
                w.start >= s.start - 1e-9 && w.end <= s.end + 1e-9,
                "{w:?} outside [{}, {}]",
                s.start,
                s.end
            );
            assert!(
                w.start >= prev_end - 1e-9 && w.end >= w.start,
                "word times go back at {w:?}"
            );
            prev_end = w.end;
        }
    }
    // librivox_ss_0890 ends "... ill disposed" and 0930 starts "he might": the model
    // runs them into one sentence with a comma; the pause between them splits it.
    assert!(
        t.segments
            .iter()
            .any(|s| s.text.trim_end().ends_with("disposed,")),
        "no segment ends at the join of 0890 and 0930"
    );
}

/// A transcription stopped early (`stop_early`, the CLI's Ctrl-C) keeps the windows it has
/// decoded: the same segments as the whole run up to where it stopped, and `stopped_at`.
#[test]
fn stopping_early_keeps_the_windows_already_decoded() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let pcm = load_audio(&common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let mut model = common::load_model();
    let opts = TranscribeOptions {
        language: Some("en".into()),
        ..Default::default()
    };
    let whole = model.transcribe_pcm(&pcm, &opts).unwrap();
    assert_eq!(whole.stopped_at, None);

    let stop = Arc::new(AtomicBool::new(false));
    model.stop_early = Some(stop.clone());
    let mut first_done = None;
    let part = model
        .transcribe_pcm_with_progress(&pcm, &opts, &mut |p| {
            // Stop once the first window is done.
            first_done.get_or_insert(p.done);
            stop.store(true, Ordering::Relaxed);
        })
        .unwrap();
    let at = part.stopped_at.expect("stopped before the end");
    assert_eq!(Some(f64::from(at)), first_done.map(|d| (d as f32).into()));
    assert!(at > 10.0 && at < whole.duration - 10.0, "stopped at {at}");
    assert!(
        !part.segments.is_empty() && part.segments.len() < whole.segments.len(),
        "{} of {} segments",
        part.segments.len(),
        whole.segments.len()
    );
    for (p, w) in part.segments.iter().zip(&whole.segments) {
        assert_eq!(p.text, w.text);
        assert!(p.end <= f64::from(at) + 0.01, "{p:?} ends after {at}");
    }
    assert!(whole.text.starts_with(&part.text), "{}", part.text);

    // Cleared, the next transcription runs to the end.
    stop.store(false, Ordering::Relaxed);
    let again = model.transcribe_pcm(&pcm, &opts).unwrap();
    assert_eq!(again.text, whole.text);
}
