//! Transcribing only the speech of a recording (`--vad`): Silero VAD finds the speech,
//! the speech segments are joined and transcribed as one recording, and every time
//! (segments and words) is mapped back to the original, as faster-whisper's `vad_filter`
//! does. With a batch size above 1 the speech is instead merged into chunks of at most
//! 30 s that end in silence, each one window of the batched pipeline, as faster-whisper's
//! `BatchedInferencePipeline` does.

use crate::error::Result;
use crate::graph::{HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::model::WhisperModel;
use crate::transcript::Transcript;
use crate::window_loop::{GivenWindows, Progress, TranscribeOptions};
use amanuensis_vad::{speech_segments, SpeechMap, SpeechSegment, VadModel, VadOptions};

/// What the VAD kept of a recording.
#[derive(Debug, Clone)]
pub struct SpeechReport {
    pub segments: Vec<SpeechSegment>,
    /// Seconds of speech kept, of `duration`.
    pub speech_seconds: f64,
    pub duration: f64,
}

impl WhisperModel {
    /// Transcribes the speech of `pcm` (16 kHz mono) as found by `vad`; the transcript's
    /// times are the recording's. A recording without speech gives an empty transcript.
    pub fn transcribe_speech(
        &mut self,
        vad: &mut VadModel,
        vad_options: &VadOptions,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(Transcript, SpeechReport)> {
        let probs = vad.speech_probs(pcm)?;
        if opts.batch_size > 1 {
            return self.transcribe_speech_chunks(&probs, vad_options, pcm, opts, progress);
        }
        let segments = speech_segments(&probs, pcm.len(), vad_options);
        let map = SpeechMap::new(&segments);
        let speech = map.join(pcm);
        let mut t = self.transcribe_pcm_with_progress(&speech, opts, progress)?;
        restore_times(&mut t, &map);
        t.duration = pcm.len() as f32 / amanuensis_vad::graph::SAMPLE_RATE as f32;
        let report = SpeechReport {
            segments,
            speech_seconds: map.speech_seconds(),
            duration: t.duration as f64,
        };
        Ok((t, report))
    }
}

impl WhisperModel {
    /// The batched pipeline over speech chunks: speech segments of at most 30 s, merged
    /// while their span stays within 30 s, each transcribed as one window of the recording
    /// (the silence inside a chunk stays, so times need no mapping).
    fn transcribe_speech_chunks(
        &mut self,
        probs: &[f32],
        vad_options: &VadOptions,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(Transcript, SpeechReport)> {
        let window = N_FRAMES * HOP_LENGTH;
        let segments = speech_segments(probs, pcm.len(), vad_options);
        let segments = split_long_speech(&segments, probs, window);
        let cuts: Vec<(usize, usize)> = speech_chunks(&segments, window)
            .into_iter()
            .map(|(start, end)| {
                let seek = start / HOP_LENGTH;
                (seek, (end.div_ceil(HOP_LENGTH) - seek).min(N_FRAMES))
            })
            .collect();
        let speech: Vec<(usize, usize)> = segments
            .iter()
            .map(|s| (s.start / HOP_LENGTH, s.end.div_ceil(HOP_LENGTH)))
            .collect();
        let given = GivenWindows {
            cuts: &cuts,
            speech: &speech,
        };
        let mut t = self.transcribe_pcm_windows(pcm, Some(given), opts, progress)?;
        t.duration = pcm.len() as f32 / SAMPLE_RATE as f32;
        let speech_seconds = segments
            .iter()
            .map(|s| (s.end - s.start) as f64 / SAMPLE_RATE as f64)
            .sum();
        let report = SpeechReport {
            segments,
            speech_seconds,
            duration: t.duration as f64,
        };
        Ok((t, report))
    }
}

/// Speech segments longer than `max` samples cut into pieces of at most `max`, each cut at
/// the least speech-like moment of the last third of the piece: the lowest VAD probability
/// around a 32-ms frame boundary (the earliest of equals). faster-whisper's batched pipeline cuts long speech
/// where the VAD last saw 98 ms of silence, else at the maximum length, mid-word if need
/// be; a window that starts mid-sentence is where Whisper drops text, and in speech
/// without such silences (one clip after another) the weakest moment is still most often
/// a pause between sentences.
pub fn split_long_speech(
    segments: &[SpeechSegment],
    probs: &[f32],
    max: usize,
) -> Vec<SpeechSegment> {
    let frame = amanuensis_vad::graph::WINDOW_SAMPLES;
    let p = |i: usize| probs.get(i).copied().unwrap_or(1.0);
    // At the boundary before frame i: the two frames beside it, and half of the next two.
    let weakness = |i: usize| {
        let before = |k: usize| i.checked_sub(k).map_or(1.0, p);
        before(1) + p(i) + 0.5 * (before(2) + p(i + 1))
    };
    let mut out = Vec::with_capacity(segments.len());
    for s in segments {
        let mut start = s.start;
        while s.end - start > max {
            // Cut at a frame boundary within [start + 2/3 max, start + max].
            let lo = (start + max * 2 / 3).div_ceil(frame);
            let hi = (start + max) / frame;
            let cut = (lo..=hi)
                .filter(|&i| i < probs.len())
                .min_by(|&a, &b| weakness(a).total_cmp(&weakness(b)))
                .map_or(start + max, |i| i * frame)
                .clamp(start + 1, start + max);
            out.push(SpeechSegment { start, end: cut });
            start = cut;
        }
        out.push(SpeechSegment { start, end: s.end });
    }
    out
}

/// Speech segments merged into chunks `(start, end)` in samples: consecutive segments join
/// a chunk while the chunk's span (silences between them included) stays within `max`
/// samples, as faster-whisper's `merge_segments`. Segments are in order and each at most
/// `max` long.
pub fn speech_chunks(segments: &[SpeechSegment], max: usize) -> Vec<(usize, usize)> {
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    for s in segments {
        match chunks.last_mut() {
            Some((start, end)) if s.end.saturating_sub(*start) <= max => *end = s.end,
            _ => chunks.push((s.start, s.end.min(s.start + max))),
        }
    }
    chunks
}

/// Maps a transcript of the joined speech back to the recording: a word's start and end
/// through the speech segment of its middle, a segment with words from its first and last
/// word, one without from its own start and end.
pub fn restore_times(t: &mut Transcript, map: &SpeechMap) {
    if map.segments().is_empty() {
        return;
    }
    for s in &mut t.segments {
        if s.words.is_empty() {
            s.start = map.original_time(s.start, None, false);
            s.end = map.original_time(s.end, None, true);
        } else {
            for w in &mut s.words {
                let chunk = map.chunk_index((w.start + w.end) / 2.0, false);
                w.start = map.original_time(w.start, Some(chunk), false);
                w.end = map.original_time(w.end, Some(chunk), false);
            }
            s.start = s.words[0].start;
            s.end = s.words[s.words.len() - 1].end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: usize, end: usize) -> SpeechSegment {
        SpeechSegment { start, end }
    }

    #[test]
    fn long_speech_is_cut_at_its_weakest_moment_in_the_last_third() {
        let frame = amanuensis_vad::graph::WINDOW_SAMPLES;
        // 100 frames of speech with dips at frames 40 (too early) and 80.
        let mut probs = vec![0.9f32; 100];
        probs[40] = 0.05;
        probs[80] = 0.3;
        let long = [seg(0, 100 * frame)];
        let pieces = split_long_speech(&long, &probs, 90 * frame);
        assert_eq!(pieces, [seg(0, 80 * frame), seg(80 * frame, 100 * frame)]);
        // Short segments are kept as they are; every piece is at most `max` long.
        assert_eq!(
            split_long_speech(&[seg(5, 50)], &probs, 90 * frame),
            [seg(5, 50)]
        );
        let flat = vec![0.9f32; 1000];
        let pieces = split_long_speech(&[seg(0, 1000 * frame)], &flat, 90 * frame);
        assert!(
            pieces.iter().all(|p| p.end - p.start <= 90 * frame),
            "{pieces:?}"
        );
        assert_eq!(pieces.first().unwrap().start, 0);
        assert_eq!(pieces.last().unwrap().end, 1000 * frame);
        for w in pieces.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }

    #[test]
    fn speech_chunks_merge_while_the_span_fits() {
        let segments = [
            seg(0, 10),
            seg(15, 25),
            seg(28, 40),
            seg(41, 45),
            seg(90, 95),
        ];
        assert_eq!(
            speech_chunks(&segments, 30),
            [(0, 25), (28, 45), (90, 95)],
            "a chunk closes when the next segment would end past its start + 30"
        );
        assert_eq!(speech_chunks(&[], 30), []);
        assert_eq!(
            speech_chunks(&[seg(5, 50)], 30),
            [(5, 35)],
            "clamped to max"
        );
    }
}
