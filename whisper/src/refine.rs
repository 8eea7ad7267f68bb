//! The segment-timing refinement built on the pauses of the recording.
//!
//! Whisper's timestamp tokens are coarse (the base model likes whole seconds) and it may
//! run two sentences separated by a long pause into one segment. The recording itself
//! says where the speaker is silent: [`amanuensis_audio::pauses::find_pauses`] marks runs of frames whose
//! short-time energy lies well below the speech level around them. The refinement then
//!
//! 1. splits a segment at a long pause that follows a word ending a sentence or clause
//!    ([`split_points`], words from the cross-attention alignment);
//! 2. moves every segment boundary that lies within a tolerance of a pause onto that
//!    pause: the end of a segment to where the pause starts, the start of the next to
//!    where it ends, each kept a short pad inside the pause ([`snap_boundaries`]);
//! 3. when words are reported, widens each segment to hold its words, which are never
//!    moved ([`contain_words`]).
//!
//! The text never changes: a split cuts a segment's tokens between two words.

use crate::transcript::Word;
use amanuensis_audio::pauses::{Pause, PauseOptions};

/// A word ending with one of these ends a sentence or a clause: a pause after it may
/// start a new segment.
pub const CLAUSE_END_MARKS: &str = ".?!…,;:。？！，；：、";
/// Closing marks that may follow the clause mark at the end of a word (`word."`).
pub const CLOSING_MARKS: &str = "\"'”’)]}»」』";

/// How segment boundaries move onto pauses.
#[derive(Debug, Clone, PartialEq)]
pub struct RefineOptions {
    /// How the pauses are found.
    pub pauses: PauseOptions,
    /// A boundary moves onto a pause at most this far (seconds) from where the model
    /// put it (base models are often a second off).
    pub tolerance: f64,
    /// A moved boundary stays this far (seconds) inside its pause: energy misses the
    /// faintest onsets and decays, and subtitles read better with a little lead.
    pub pad: f64,
    /// A segment is split after a sentence or clause end followed by a pause at least
    /// this long (seconds).
    pub split_pause: f64,
    /// Shortest segment a boundary move may leave (seconds).
    pub min_segment: f64,
    /// A segment start may move later past at most this much sound (seconds) before a
    /// pause (a breath or a click), and an end earlier likewise.
    pub max_skipped_sound: f64,
}

impl Default for RefineOptions {
    fn default() -> Self {
        RefineOptions {
            pauses: PauseOptions::default(),
            tolerance: 1.0,
            pad: 0.1,
            split_pause: 0.5,
            min_segment: 0.2,
            max_skipped_sound: 0.3,
        }
    }
}

/// Whether `word` ends a sentence or clause (`country.`, `you,`, `said:"`).
pub fn ends_clause(word: &str) -> bool {
    let trimmed = word
        .trim_end()
        .trim_end_matches(|c| CLOSING_MARKS.contains(c));
    trimmed
        .chars()
        .last()
        .is_some_and(|c| CLAUSE_END_MARKS.contains(c))
}

/// Middle of a word's span.
fn middle(w: &Word) -> f64 {
    0.5 * (w.start + w.end)
}

/// Where to split one segment: `(index of the last word of the first part, pause)` for
/// every word that ends a sentence or clause and is followed, before the middle of the
/// next word, by a pause of at least `opts.split_pause` that lies inside the segment.
/// The pause searched runs from the middle of the word on, since the alignment often
/// stretches a word over the silence next to it. In order, each pause used once.
pub fn split_points(
    start: f64,
    end: f64,
    words: &[Word],
    pauses: &[Pause],
    opts: &RefineOptions,
) -> Vec<(usize, Pause)> {
    let mut out: Vec<(usize, Pause)> = Vec::new();
    for (i, pair) in words.windows(2).enumerate() {
        if !ends_clause(&pair[0].word) {
            continue;
        }
        let (lo, hi) = (middle(&pair[0]), middle(&pair[1]));
        let best = pauses
            .iter()
            .filter(|p| p.duration() >= opts.split_pause && p.end > lo && p.start < hi)
            .filter(|p| p.start > start && p.end < end)
            .filter(|p| out.last().is_none_or(|(_, q)| p.start >= q.end))
            .max_by(|a, b| a.duration().total_cmp(&b.duration()));
        if let Some(&p) = best {
            out.push((i, p));
        }
    }
    out
}

/// The pad kept inside a pause: at most half of it, so that the end before a pause
/// never passes the start after it.
fn pad_in(p: &Pause, opts: &RefineOptions) -> f64 {
    opts.pad.clamp(0.0, p.duration() / 2.0)
}

/// The best of `candidates` by length less distance from `at` (long, close pauses win).
fn best_pause<'a>(candidates: impl Iterator<Item = &'a Pause>, at: (f64, f64)) -> Option<Pause> {
    let distance = |p: &Pause| p.distance_to(at.0).min(p.distance_to(at.1));
    candidates
        .map(|p| (p.duration() - distance(p), p))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p)| *p)
}

/// Moves segment boundaries onto nearby pauses. `bounds` are the segments' `(start,
/// end)`, in order and not overlapping; `fixed[k]` (one entry per segment) says the
/// boundary before segment `k` is already placed (a split) and stays.
///
/// Between two segments that touch (a gap shorter than the shortest pause), one pause
/// within `tolerance` of the boundary takes both sides: the earlier segment ends at its
/// start, the later begins at its end (each `pad` inside). Where the model left a gap,
/// the end and the start each move to the pause within `tolerance` of themselves, as
/// does the start of the first segment and the end of the last. A start moves later, or
/// an end earlier, past at most `max_skipped_sound` of sound; no segment becomes shorter
/// than `min_segment`; times stay within `0..=duration`.
pub fn snap_boundaries(
    bounds: &mut [(f64, f64)],
    fixed: &[bool],
    pauses: &[Pause],
    duration: f64,
    opts: &RefineOptions,
) {
    let n = bounds.len();
    let tol = opts.tolerance.max(0.0);
    let min_gap = opts.pauses.min_duration;
    for k in 0..=n {
        if k < n && fixed.get(k).copied().unwrap_or(false) {
            continue;
        }
        let prev = k.checked_sub(1).map(|i| bounds[i]);
        let next = (k < n).then(|| bounds[k]);
        // A pause must leave both neighbours at least `min_segment` long.
        let fits = |p: &Pause| {
            prev.is_none_or(|(s, _)| p.start + pad_in(p, opts) >= s + opts.min_segment)
                && next.is_none_or(|(_, e)| p.end - pad_in(p, opts) <= e - opts.min_segment)
        };
        match (prev, next) {
            (Some((_, e)), Some((s, _))) if s - e < min_gap => {
                let at = (e, s);
                let near = pauses
                    .iter()
                    .filter(|p| p.distance_to(e).min(p.distance_to(s)) <= tol && fits(p));
                if let Some(p) = best_pause(near, at) {
                    let pad = pad_in(&p, opts);
                    bounds[k - 1].1 = p.start + pad;
                    bounds[k].0 = p.end - pad;
                }
            }
            _ => {
                let mut new_end = None;
                let mut new_start = None;
                if let Some((_, e)) = prev {
                    let next_start = next.map_or(f64::INFINITY, |(s, _)| s);
                    let near = pauses.iter().filter(|p| {
                        p.distance_to(e) <= tol
                            && p.end >= e - opts.max_skipped_sound
                            && p.start < next_start
                            && fits(p)
                    });
                    new_end = best_pause(near, (e, e));
                }
                if let Some((s, _)) = next {
                    let prev_end = prev.map_or(f64::NEG_INFINITY, |(_, e)| e);
                    let near = pauses.iter().filter(|p| {
                        p.distance_to(s) <= tol
                            && p.start <= s + opts.max_skipped_sound
                            && p.end > prev_end
                            && fits(p)
                    });
                    new_start = best_pause(near, (s, s));
                }
                // Two different pauses in the wrong order: the longer one takes both sides.
                if let (Some(a), Some(b)) = (new_end, new_start) {
                    if a.start > b.end {
                        let longer = if a.duration() >= b.duration() { a } else { b };
                        new_end = Some(longer);
                        new_start = Some(longer);
                    }
                }
                if let Some(p) = new_end {
                    bounds[k - 1].1 = p.start + pad_in(&p, opts);
                }
                if let Some(p) = new_start {
                    bounds[k].0 = p.end - pad_in(&p, opts);
                }
            }
        }
    }
    for b in bounds.iter_mut() {
        b.0 = b.0.clamp(0.0, duration.max(0.0));
        b.1 = b.1.clamp(b.0, duration.max(b.0));
    }
}

/// Widens each segment to hold its words (`words[k]` for segment `k`; words are never
/// moved), then ends each segment no later than the next one starts.
pub fn contain_words(bounds: &mut [(f64, f64)], words: &[&[Word]]) {
    for (b, ws) in bounds.iter_mut().zip(words) {
        if let (Some(first), Some(last)) = (ws.first(), ws.last()) {
            b.0 = b.0.min(first.start);
            b.1 = b.1.max(last.end);
        }
    }
    for k in 1..bounds.len() {
        if bounds[k - 1].1 > bounds[k].0 {
            bounds[k - 1].1 = bounds[k].0.max(bounds[k - 1].0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, start: f64, end: f64) -> Word {
        Word {
            word: text.into(),
            start,
            end,
            probability: 0.9,
        }
    }

    #[test]
    fn clause_ends() {
        for w in [" country.", " you,", " said:\"", " why?)", " 好。"] {
            assert!(ends_clause(w), "{w}");
        }
        for w in [" country", " Mr", " -hearted", ""] {
            assert!(!ends_clause(w), "{w}");
        }
    }

    #[test]
    fn splits_at_a_long_pause_after_a_clause_end_only() {
        let words = [
            word(" one,", 0.0, 0.5),
            word(" two", 0.5, 1.6), // stretched over the pause at 0.6..1.3
            word(" three", 1.6, 2.0),
            word(" four.", 2.0, 2.4), // followed by a pause too short to split
            word(" five", 2.6, 3.0),
            word(" six", 3.0, 3.5), // a long pause, but no clause end
            word(" seven.", 4.3, 4.8),
        ];
        let pauses = [
            Pause {
                start: 0.6,
                end: 1.3,
            },
            Pause {
                start: 2.4,
                end: 2.7,
            },
            Pause {
                start: 3.5,
                end: 4.3,
            },
            Pause {
                start: 4.8,
                end: 6.0,
            }, // after the segment: not a split
        ];
        let got = split_points(0.0, 4.9, &words, &pauses, &RefineOptions::default());
        assert_eq!(got, vec![(0, pauses[0])]);
    }

    #[test]
    fn touching_boundaries_move_onto_the_pause_between_them() {
        let pauses = [
            Pause {
                start: 0.0,
                end: 0.4,
            },
            Pause {
                start: 4.2,
                end: 5.0,
            },
            Pause {
                start: 9.0,
                end: 10.0,
            },
        ];
        // The model put the boundary at 5.6, 0.6 s after the pause; the recording ends
        // in a second of silence.
        let mut b = vec![(0.0, 5.6), (5.6, 10.0)];
        snap_boundaries(
            &mut b,
            &[false, false],
            &pauses,
            10.0,
            &RefineOptions::default(),
        );
        let want = [(0.3, 4.3), (4.9, 9.1)];
        for (g, w) in b.iter().zip(want) {
            assert!(
                (g.0 - w.0).abs() < 1e-9 && (g.1 - w.1).abs() < 1e-9,
                "{b:?}"
            );
        }
    }

    #[test]
    fn boundaries_far_from_any_pause_stay() {
        // A touching boundary 1.5 s from the pause; a gap whose end and start are 1.3
        // and 1.2 s from it.
        let pauses = [Pause {
            start: 3.3,
            end: 3.8,
        }];
        let mut b = vec![(0.0, 1.8), (1.8, 2.0), (5.0, 6.0)];
        snap_boundaries(&mut b, &[false; 3], &pauses, 6.0, &RefineOptions::default());
        assert_eq!(b, vec![(0.0, 1.8), (1.8, 2.0), (5.0, 6.0)]);
        // Across a gap, the end and the start move separately onto the pause.
        let mut b = vec![(0.0, 2.6), (3.9, 6.0)];
        snap_boundaries(&mut b, &[false; 2], &pauses, 6.0, &RefineOptions::default());
        assert!(
            (b[0].1 - 3.4).abs() < 1e-9 && (b[1].0 - 3.7).abs() < 1e-9,
            "{b:?}"
        );
    }

    #[test]
    fn a_start_skips_little_sound_and_segments_keep_a_minimum_length() {
        // The segment starts 0.5 s of sound before a pause: more than a breath, so the
        // start stays.
        let pauses = [Pause {
            start: 0.5,
            end: 1.0,
        }];
        let mut b = vec![(0.0, 3.0)];
        snap_boundaries(&mut b, &[false], &pauses, 3.0, &RefineOptions::default());
        assert_eq!(b, vec![(0.0, 3.0)]);
        // A pause that would leave the next segment 0.05 s long is not used.
        let pauses = [Pause {
            start: 1.0,
            end: 1.4,
        }];
        let mut b = vec![(0.0, 1.0), (1.0, 1.45)];
        snap_boundaries(&mut b, &[false; 2], &pauses, 3.0, &RefineOptions::default());
        assert_eq!(b, vec![(0.0, 1.0), (1.0, 1.45)]);
    }

    #[test]
    fn words_stay_inside_widened_segments() {
        let w0 = [word(" a", 0.0, 0.5), word(" b,", 0.5, 2.1)];
        let w1 = [word(" c", 2.1, 3.7)];
        // Snapping put the boundary in the pause 2.2..3.3; the words did not move.
        let mut b = vec![(0.3, 2.3), (3.2, 3.7)];
        contain_words(&mut b, &[&w0, &w1]);
        assert_eq!(b, vec![(0.0, 2.1), (2.1, 3.7)]);
    }
}
