//! From speech probabilities to speech segments, and from times in the speech-only audio
//! back to the recording: faster-whisper's `get_speech_timestamps`, `collect_chunks` and
//! `SpeechTimestampsMap`, with the same parameters, defaults and arithmetic, so that the
//! segments are the same sample for sample.

use crate::graph::{SAMPLE_RATE, WINDOW_SAMPLES};
use serde::Serialize;

/// The VAD's parameters (faster-whisper's `VadOptions`, same defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// A window whose probability is at least this is speech.
    pub threshold: f32,
    /// Below this a window is silence even inside speech (default: threshold − 0.15,
    /// at least 0.01).
    pub neg_threshold: Option<f32>,
    /// Speech segments shorter than this are dropped.
    pub min_speech_duration_ms: u32,
    /// Segments longer than this are split, at a silence of more than 98 ms if there is
    /// one, else just before the limit.
    pub max_speech_duration_s: f64,
    /// Silence shorter than this does not end a segment.
    pub min_silence_duration_ms: u32,
    /// Padding added on each side of a segment.
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        VadOptions {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl VadOptions {
    /// Errors name the parameter and its valid range.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "threshold must be within 0..=1, got {}",
                self.threshold
            ));
        }
        if let Some(n) = self.neg_threshold {
            if !(0.0..=1.0).contains(&n) {
                return Err(format!("neg_threshold must be within 0..=1, got {n}"));
            }
            // Above the threshold, a window could be speech and silence at once.
            if n > self.threshold {
                return Err(format!(
                    "neg_threshold ({n}) must not exceed threshold ({})",
                    self.threshold
                ));
            }
        }
        if self.max_speech_duration_s.is_nan() || self.max_speech_duration_s <= 0.0 {
            return Err(format!(
                "max_speech_duration_s must be > 0, got {}",
                self.max_speech_duration_s
            ));
        }
        Ok(())
    }
}

/// One speech segment of the recording, in samples at 16 kHz (`start..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpeechSegment {
    pub start: usize,
    pub end: usize,
}

impl SpeechSegment {
    /// Start in seconds.
    pub fn start_s(&self) -> f64 {
        self.start as f64 / SAMPLE_RATE as f64
    }
    /// End in seconds.
    pub fn end_s(&self) -> f64 {
        self.end as f64 / SAMPLE_RATE as f64
    }
}

/// The speech segments of a recording of `n_samples` samples whose windows have the
/// speech probabilities `probs` (one per 512 samples, as [`crate::VadModel::speech_probs`]
/// gives them).
pub fn speech_segments(probs: &[f32], n_samples: usize, o: &VadOptions) -> Vec<SpeechSegment> {
    // faster-whisper computes these in Python floats (f64) and compares sample counts
    // (ints) against them; the same here.
    let sr = SAMPLE_RATE as f64;
    let win = WINDOW_SAMPLES as i64;
    let threshold = o.threshold;
    let neg_threshold = o
        .neg_threshold
        .unwrap_or_else(|| (threshold - 0.15).max(0.01));
    let min_speech_samples = sr * o.min_speech_duration_ms as f64 / 1000.0;
    let speech_pad_samples = sr * o.speech_pad_ms as f64 / 1000.0;
    let max_speech_samples = sr * o.max_speech_duration_s - win as f64 - 2.0 * speech_pad_samples;
    let min_silence_samples = sr * o.min_silence_duration_ms as f64 / 1000.0;
    let min_silence_samples_at_max_speech = sr * 98.0 / 1000.0;
    let audio_length = n_samples as i64;

    // (start, end) in samples; `None` is Python's empty `current_speech`.
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    let mut current: Option<i64> = None;
    let mut triggered = false;
    let (mut temp_end, mut prev_end, mut next_start) = (0i64, 0i64, 0i64);
    for (i, &p) in probs.iter().enumerate() {
        let at = win * i as i64;
        // Python compares a float32 probability with a float threshold in f64.
        let (p, threshold, neg_threshold) = (p as f64, threshold as f64, neg_threshold as f64);
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = at;
            }
        }
        if p >= threshold && !triggered {
            triggered = true;
            current = Some(at);
            continue;
        }
        if triggered {
            if let Some(start) = current {
                if (at - start) as f64 > max_speech_samples {
                    if prev_end != 0 {
                        speeches.push((start, prev_end));
                        current = None;
                        if next_start < prev_end {
                            triggered = false;
                        } else {
                            current = Some(next_start);
                        }
                        prev_end = 0;
                        next_start = 0;
                        temp_end = 0;
                    } else {
                        speeches.push((start, at));
                        current = None;
                        prev_end = 0;
                        next_start = 0;
                        temp_end = 0;
                        triggered = false;
                        continue;
                    }
                }
            }
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = at;
            }
            if (at - temp_end) as f64 > min_silence_samples_at_max_speech {
                prev_end = temp_end;
            }
            if ((at - temp_end) as f64) < min_silence_samples {
                continue;
            }
            if let Some(start) = current {
                if (temp_end - start) as f64 > min_speech_samples {
                    speeches.push((start, temp_end));
                }
            }
            current = None;
            prev_end = 0;
            next_start = 0;
            temp_end = 0;
            triggered = false;
            continue;
        }
    }
    if let Some(start) = current {
        if (audio_length - start) as f64 > min_speech_samples {
            speeches.push((start, audio_length));
        }
    }
    // Padding: each side by speech_pad, or half the gap when two segments are closer.
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - speech_pad_samples).max(0.0) as i64;
        }
        if i != n - 1 {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if (silence as f64) < 2.0 * speech_pad_samples {
                // Python's `//` on ints floors; silence is never negative here.
                let half = silence.div_euclid(2);
                speeches[i].1 += half;
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0);
            } else {
                speeches[i].1 =
                    (audio_length as f64).min(speeches[i].1 as f64 + speech_pad_samples) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - speech_pad_samples).max(0.0) as i64;
            }
        } else {
            speeches[i].1 =
                (audio_length as f64).min(speeches[i].1 as f64 + speech_pad_samples) as i64;
        }
    }
    speeches
        .into_iter()
        .map(|(s, e)| SpeechSegment {
            start: s.max(0) as usize,
            end: e.max(0) as usize,
        })
        .collect()
}

/// The speech of a recording joined into one signal, and the map from times in it back to
/// the recording.
#[derive(Debug, Clone)]
pub struct SpeechMap {
    segments: Vec<SpeechSegment>,
    /// Per segment: its end in the joined signal, in samples.
    chunk_end: Vec<usize>,
    /// Per segment: seconds of the recording removed before it.
    silence_before: Vec<f64>,
}

impl SpeechMap {
    /// The map of `segments` (in order, not overlapping).
    pub fn new(segments: &[SpeechSegment]) -> SpeechMap {
        let (mut previous_end, mut silent) = (0usize, 0usize);
        let mut chunk_end = Vec::with_capacity(segments.len());
        let mut silence_before = Vec::with_capacity(segments.len());
        for s in segments {
            silent += s.start.saturating_sub(previous_end);
            previous_end = s.end;
            chunk_end.push(s.end - silent);
            silence_before.push(silent as f64 / SAMPLE_RATE as f64);
        }
        SpeechMap {
            segments: segments.to_vec(),
            chunk_end,
            silence_before,
        }
    }

    /// The segments.
    pub fn segments(&self) -> &[SpeechSegment] {
        &self.segments
    }

    /// The speech samples of `pcm`, segment after segment.
    pub fn join(&self, pcm: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.segments.iter().map(|s| s.end - s.start).sum());
        for s in &self.segments {
            out.extend_from_slice(&pcm[s.start.min(pcm.len())..s.end.min(pcm.len())]);
        }
        out
    }

    /// Seconds of speech.
    pub fn speech_seconds(&self) -> f64 {
        self.chunk_end.last().copied().unwrap_or(0) as f64 / SAMPLE_RATE as f64
    }

    /// Which segment a time of the joined signal falls in; an end time exactly at a
    /// segment's end belongs to that segment, not the next.
    pub fn chunk_index(&self, time: f64, is_end: bool) -> usize {
        let sample = (time * SAMPLE_RATE as f64) as usize;
        if is_end {
            if let Some(i) = self.chunk_end.iter().position(|&e| e == sample) {
                return i;
            }
        }
        // bisect_right, clamped to the last segment.
        let i = self.chunk_end.partition_point(|&e| e <= sample);
        i.min(self.chunk_end.len().saturating_sub(1))
    }

    /// The recording's time of `time` in the joined signal, rounded to 10 ms as
    /// faster-whisper rounds it; `chunk` fixes the segment (a word's start and end are
    /// mapped through the segment of their middle).
    pub fn original_time(&self, time: f64, chunk: Option<usize>, is_end: bool) -> f64 {
        if self.chunk_end.is_empty() {
            return time;
        }
        let i = chunk.unwrap_or_else(|| self.chunk_index(time, is_end));
        round2(self.silence_before[i] + time)
    }
}

/// Python's `round(x, 2)` for the values here (half to even on the scaled value).
fn round2(x: f64) -> f64 {
    let scaled = x * 100.0;
    let r = scaled.round();
    let r = if (scaled - scaled.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - scaled.signum()
    } else {
        r
    };
    r / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_parameter() {
        let ok = VadOptions::default();
        assert_eq!(ok.validate(), Ok(()));
        let equal = VadOptions {
            neg_threshold: Some(0.5),
            ..ok.clone()
        };
        assert_eq!(equal.validate(), Ok(()));
        let above = VadOptions {
            neg_threshold: Some(0.6),
            ..ok.clone()
        };
        assert_eq!(
            above.validate(),
            Err("neg_threshold (0.6) must not exceed threshold (0.5)".into())
        );
        let nan = VadOptions {
            threshold: f32::NAN,
            ..ok
        };
        assert!(nan
            .validate()
            .unwrap_err()
            .starts_with("threshold must be within"));
    }

    fn probs_of(pattern: &[(f32, usize)]) -> Vec<f32> {
        pattern
            .iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    #[test]
    fn a_speech_run_is_padded_and_short_gaps_do_not_split_it() {
        // 1 s silence, 2 s speech, 0.5 s silence, 1 s speech, 3 s silence (31.25 windows/s).
        let probs = probs_of(&[(0.1, 31), (0.9, 62), (0.1, 16), (0.9, 31), (0.1, 94)]);
        let n = probs.len() * 512 - 100;
        let s = speech_segments(&probs, n, &VadOptions::default());
        // One segment: starts at window 31 less 400 ms, ends where the last silence starts
        // (window 31 + 62 + 16 + 31 = 140) plus 400 ms.
        assert_eq!(
            s,
            vec![SpeechSegment {
                start: 31 * 512 - 6400,
                end: 140 * 512 + 6400
            }]
        );
    }

    #[test]
    fn long_silence_splits_and_close_segments_share_the_gap() {
        let probs = probs_of(&[(0.9, 40), (0.1, 70), (0.9, 40), (0.1, 80)]);
        let n = probs.len() * 512;
        let o = VadOptions {
            min_silence_duration_ms: 1000,
            speech_pad_ms: 1200,
            ..Default::default()
        };
        let s = speech_segments(&probs, n, &o);
        assert_eq!(s.len(), 2, "{s:?}");
        // Gap 40·512..110·512 = 35840 samples < 2 × 19200: each side takes half.
        assert_eq!(
            s[0],
            SpeechSegment {
                start: 0,
                end: 40 * 512 + 17920
            }
        );
        assert_eq!(s[1].start, 110 * 512 - 17920);
    }

    #[test]
    fn max_duration_splits_a_long_segment() {
        let probs = probs_of(&[(0.9, 400)]);
        let o = VadOptions {
            max_speech_duration_s: 5.0,
            speech_pad_ms: 0,
            ..Default::default()
        };
        let s = speech_segments(&probs, 400 * 512, &o);
        assert!(s.len() >= 2, "{s:?}");
        assert!(s.iter().all(|x| x.end - x.start <= 80_000), "{s:?}");
    }

    #[test]
    fn times_map_back_through_removed_silence() {
        let segs = [
            SpeechSegment {
                start: 16000,
                end: 48000,
            },
            SpeechSegment {
                start: 80000,
                end: 96000,
            },
        ];
        let m = SpeechMap::new(&segs);
        assert_eq!(m.speech_seconds(), 3.0);
        assert_eq!(m.original_time(0.5, None, false), 1.5);
        // 2.0 s is the first segment's end in the joined signal: as an end it stays there.
        assert_eq!(m.original_time(2.0, None, true), 3.0);
        assert_eq!(m.original_time(2.0, None, false), 5.0);
        assert_eq!(m.original_time(2.5, None, false), 5.5);
        let pcm: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
        let j = m.join(&pcm);
        assert_eq!(j.len(), 48000);
        assert_eq!((j[0], j[32000]), (16000.0, 80000.0));
    }

    #[test]
    fn no_probabilities_no_segments() {
        assert!(speech_segments(&[], 0, &VadOptions::default()).is_empty());
        assert!(speech_segments(&[0.2; 50], 50 * 512, &VadOptions::default()).is_empty());
    }
}
