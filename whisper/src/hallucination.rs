//! openai-whisper's `hallucination_silence_threshold`: segments that look invented and sit
//! in silence are dropped, with the rest of their window, and decoding starts again there.
//!
//! Whisper writes text over silence, noise and music, often repeating earlier text. Such
//! a segment's words, timed from the cross-attention, give it away: they are improbable,
//! or last almost nothing, or are drawn out over seconds. When a segment scores as an
//! anomaly on its first eight words and has more than the threshold of silence (or other
//! anomalies) on both sides, it and everything after it in the window go, and the next
//! window starts at it. A window whose first worded segment is an anomaly starting more
//! than the threshold into the window starts again at that segment. Rules and constants
//! are openai-whisper's (`transcribe.py`, 2023-11 onwards).

use crate::alignment::{TimedSegment, DEFAULT_APPEND_PUNCTUATIONS, DEFAULT_PREPEND_PUNCTUATIONS};
use crate::transcript::Word;

/// How unlike spoken words a word looks: 1 when its probability is below 0.15, plus
/// 15 a second it lasts under 0.133 s, plus a point a second it lasts over 2 s.
pub fn word_anomaly_score(w: &Word) -> f64 {
    let duration = w.end - w.start;
    let mut score = 0.0;
    if w.probability < 0.15 {
        score += 1.0;
    }
    if duration < 0.133 {
        score += (0.133 - duration) * 15.0;
    }
    if duration > 2.0 {
        score += duration - 2.0;
    }
    score
}

/// Whether a segment's words look invented: of its first eight words that are not
/// punctuation, the anomaly scores sum to 3 or more, or to about one a word. A segment
/// without words is not.
pub fn is_anomaly(words: &[Word]) -> bool {
    if words.is_empty() {
        return false;
    }
    let punctuation = [DEFAULT_PREPEND_PUNCTUATIONS, DEFAULT_APPEND_PUNCTUATIONS].concat();
    let spoken: Vec<&Word> = words
        .iter()
        .filter(|w| !punctuation.contains(w.word.as_str()))
        .take(8)
        .collect();
    let score: f64 = spoken.iter().map(|w| word_anomaly_score(w)).sum();
    score >= 3.0 || score + 0.01 >= spoken.len() as f64
}

/// One window, as the check sees it (times in seconds from the start of the recording).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The silence (seconds) that must surround an anomaly for it to go.
    pub threshold: f64,
    /// Where the window starts.
    pub time_offset: f64,
    /// Where a whole 30-s window from `time_offset` would end.
    pub window_end: f64,
    /// How long the window's content is.
    pub duration: f64,
    /// The end of the recording.
    pub content_end: f64,
    /// The end of the last word of the windows before.
    pub speech_before: f64,
}

/// What to do with a window's segments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    /// Keep them all.
    Keep,
    /// Keep none; decode again from `gap` seconds into the window.
    SkipWindow { gap: f64 },
    /// Keep the segments before `index`; the next window starts at `next_start`
    /// seconds, or the recording is done (`None`).
    From {
        index: usize,
        next_start: Option<f64>,
    },
}

impl Window {
    /// The cut for a window's word-timed segments.
    pub fn cut(&self, segments: &[TimedSegment]) -> Cut {
        let worded = |from: usize| (from..segments.len()).find(|&j| !segments[j].words.is_empty());
        if let Some(i) = worded(0) {
            let gap = segments[i].start - self.time_offset;
            if is_anomaly(&segments[i].words) && gap > self.threshold {
                return Cut::SkipWindow { gap };
            }
        }
        let mut last_end = self.speech_before;
        for (i, s) in segments.iter().enumerate() {
            let (start, end) = (s.start, s.end);
            if s.words.is_empty() {
                continue;
            }
            if is_anomaly(&s.words) {
                let next = worded(i + 1);
                let next_start = next.map_or(self.time_offset + self.duration, |j| {
                    segments[j].words[0].start
                });
                let silence_before = start - last_end > self.threshold
                    || start < self.threshold
                    || start - self.time_offset < 2.0;
                let silence_after = next_start - end > self.threshold
                    || next.is_some_and(|j| is_anomaly(&segments[j].words))
                    || self.window_end - end < 2.0;
                if silence_before && silence_after {
                    let resume = (self.time_offset + 1.0).max(start);
                    return Cut::From {
                        index: i,
                        next_start: (self.content_end - end >= self.threshold).then_some(resume),
                    };
                }
            }
            last_end = end;
        }
        Cut::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(word: &str, start: f64, end: f64, probability: f32) -> Word {
        Word {
            start,
            end,
            word: word.into(),
            probability,
        }
    }

    /// A spoken sentence: probable words of a few tenths of a second.
    fn spoken(at: f64) -> Vec<Word> {
        (0..5)
            .map(|i| w(" word", at + 0.3 * i as f64, at + 0.3 * (i + 1) as f64, 0.9))
            .collect()
    }

    /// Text over silence: improbable words of no duration.
    fn invented(at: f64) -> Vec<Word> {
        (0..5).map(|_| w(" again", at, at, 0.01)).collect()
    }

    #[test]
    fn scores_follow_probability_and_duration() {
        assert_eq!(word_anomaly_score(&w(" a", 1.0, 1.3, 0.9)), 0.0);
        assert_eq!(word_anomaly_score(&w(" a", 1.0, 1.3, 0.1)), 1.0);
        assert!((word_anomaly_score(&w(" a", 1.0, 1.0, 0.9)) - 0.133 * 15.0).abs() < 1e-12);
        assert!((word_anomaly_score(&w(" a", 1.0, 4.5, 0.9)) - 1.5).abs() < 1e-12);
        assert!(!is_anomaly(&spoken(0.0)));
        assert!(is_anomaly(&invented(0.0)));
        assert!(!is_anomaly(&[]));
        // Punctuation does not count, and only the first eight words do.
        let mut words = spoken(0.0);
        words.insert(0, w(",", 0.0, 0.0, 0.0));
        assert!(!is_anomaly(&words));
        let mut long = spoken(0.0);
        long.extend(spoken(2.0));
        long.extend(invented(4.0));
        assert!(!is_anomaly(&long));
    }

    /// Segments of these words, each spanning its words.
    fn segs(words: &[&[Word]]) -> Vec<TimedSegment> {
        words
            .iter()
            .map(|w| TimedSegment {
                start: w[0].start,
                end: w[w.len() - 1].end,
                words: w.to_vec(),
            })
            .collect()
    }

    fn window(time_offset: f64) -> Window {
        Window {
            threshold: 2.0,
            time_offset,
            window_end: time_offset + 30.0,
            duration: 30.0,
            content_end: 120.0,
            speech_before: time_offset,
        }
    }

    #[test]
    fn an_invented_segment_in_silence_goes_with_the_rest_of_its_window() {
        let a = spoken(31.0);
        let b = invented(45.0);
        let c = spoken(46.0);
        // Silence before it, and it is followed by speech 1 s later: kept.
        assert_eq!(window(30.0).cut(&segs(&[&a, &b, &c])), Cut::Keep);
        // Silence on both sides: it and what follows go; the next window starts at it.
        let c = spoken(50.0);
        assert_eq!(
            window(30.0).cut(&segs(&[&a, &b, &c])),
            Cut::From {
                index: 1,
                next_start: Some(45.0)
            }
        );
        // Near the end of the recording, the recording is done.
        let end = Window {
            content_end: 46.0,
            ..window(30.0)
        };
        assert_eq!(
            end.cut(&segs(&[&a, &b, &c])),
            Cut::From {
                index: 1,
                next_start: None
            }
        );
    }

    #[test]
    fn a_window_opening_on_an_invented_segment_after_silence_starts_again_there() {
        let b = invented(35.0);
        let c = spoken(40.0);
        assert_eq!(
            window(30.0).cut(&segs(&[&b, &c])),
            Cut::SkipWindow { gap: 5.0 }
        );
        // Within the threshold of the window's start it is judged by its surroundings.
        let b = invented(31.0);
        assert_eq!(
            window(30.0).cut(&segs(&[&b, &c])),
            Cut::From {
                index: 0,
                next_start: Some(31.0)
            }
        );
        // Spoken words are never cut.
        let a = spoken(35.0);
        assert_eq!(window(30.0).cut(&segs(&[&a, &c])), Cut::Keep);
    }
}
