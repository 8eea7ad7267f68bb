//! Transcribing only the speech of a recording (`--vad`): Silero VAD finds the speech,
//! the speech segments are joined and transcribed as one recording, and every time
//! (segments and words) is mapped back to the original, as faster-whisper's `vad_filter`
//! does. With a batch size above 1 the speech is instead merged into chunks of at most
//! 30 s that end in silence, each one window of the batched pipeline, as faster-whisper's
//! `BatchedInferencePipeline` does.

use crate::error::{Error, Result};
use crate::graph::{HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::model::WhisperModel;
use crate::spectrogram::{read_all, Opener};
use crate::transcript::Transcript;
use crate::window_loop::{check_options, GivenWindows, Progress, TranscribeOptions};
use amanuensis_audio::{AudioError, SampleSource};
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
        // Before the VAD's pass, as the window loop checks before its own work.
        check_options(opts)?;
        check_vad_options(vad_options)?;
        let probs = vad.speech_probs(pcm)?;
        self.transcribe_speech_probed(&probs, vad_options, pcm, opts, progress)
    }

    /// [`Self::transcribe_speech`] with the speech probabilities of `pcm` already measured
    /// (as [`VadModel::speech_probs`] gives them, one per 512 samples), for a caller that
    /// needed them first: to know how much speech there is, say.
    pub fn transcribe_speech_probed(
        &mut self,
        probs: &[f32],
        vad_options: &VadOptions,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(Transcript, SpeechReport)> {
        check_options(opts)?;
        check_vad_options(vad_options)?;
        if opts.batch_size > 1 {
            return self.transcribe_speech_chunks(probs, vad_options, pcm, opts, progress);
        }
        let segments = speech_segments(probs, pcm.len(), vad_options);
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

/// [`VadOptions::validate`] as this crate's error: a NaN threshold, say, would find no
/// speech and give an empty transcript without a word.
fn check_vad_options(o: &VadOptions) -> Result<()> {
    o.validate().map_err(|reason| Error::Option {
        option: "vad_options",
        reason,
    })
}

/// A recording's speech probabilities, measured by reading it once ([`probe_speech`]).
#[derive(Debug, Clone)]
pub struct ProbedSpeech {
    /// Per 512-sample window, as [`amanuensis_vad::VadModel::speech_probs`] gives them.
    pub probs: Vec<f32>,
    /// The recording's length in 16 kHz samples.
    pub samples: usize,
}

/// How many samples of a recording of `samples` samples, with the speech probabilities
/// `probs`, [`WhisperModel::transcribe_speech`] keeps and decodes (one at a time, not
/// batched): the length of its speech segments joined.
pub fn speech_samples(probs: &[f32], samples: usize, vad_options: &VadOptions) -> usize {
    speech_segments(probs, samples, vad_options)
        .iter()
        .map(|s| s.end - s.start)
        .sum()
}

/// Reads a recording once through `open`, feeding it to the VAD a block at a time: the
/// probabilities [`VadModel::speech_probs`] gives for the whole, bit for bit.
pub fn probe_speech(vad: &mut VadModel, open: &mut Opener) -> Result<ProbedSpeech> {
    let mut source = open()?;
    let mut prober = vad.prober();
    while let Some(chunk) = source.next_chunk()? {
        prober.push(&chunk)?;
    }
    let (probs, samples) = prober.finish()?;
    Ok(ProbedSpeech { probs, samples })
}

/// Only the samples of `segments` (in order, not overlapping) of a source: the speech
/// [`SpeechMap::join`] gives, a chunk at a time.
struct SpeechOnly {
    inner: Box<dyn SampleSource>,
    segments: Vec<SpeechSegment>,
    /// The next segment not yet passed.
    next: usize,
    /// Samples read from `inner`.
    read: usize,
}

impl SampleSource for SpeechOnly {
    fn next_chunk(&mut self) -> std::result::Result<Option<Vec<f32>>, AudioError> {
        while self.next < self.segments.len() {
            let Some(chunk) = self.inner.next_chunk()? else {
                return Ok(None);
            };
            let (start, end) = (self.read, self.read + chunk.len());
            self.read = end;
            let mut out = Vec::new();
            while let Some(s) = self.segments.get(self.next) {
                let (lo, hi) = (s.start.max(start), s.end.min(end));
                if lo < hi {
                    out.extend_from_slice(&chunk[lo - start..hi - start]);
                }
                if s.end > end {
                    break;
                }
                self.next += 1;
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

impl WhisperModel {
    /// [`Self::transcribe_speech`] of a recording read through `open` (named `name` in
    /// errors) and probed by [`probe_speech`]: only its speech is read again, a window at a
    /// time ([`Self::transcribe_streamed`]), so memory does not grow with its length. The
    /// transcript is the one `transcribe_speech` gives for the same samples. With a batch
    /// size above 1 the recording is decoded into memory (the batched chunks need it).
    pub fn transcribe_speech_streamed(
        &mut self,
        vad_options: &VadOptions,
        probed: ProbedSpeech,
        name: &str,
        mut open: Opener,
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(Transcript, SpeechReport)> {
        // Before the recording is read again.
        check_options(opts)?;
        check_vad_options(vad_options)?;
        if opts.batch_size > 1 {
            let pcm = read_all(&mut open, probed.samples)?;
            return self.transcribe_speech_probed(&probed.probs, vad_options, &pcm, opts, progress);
        }
        let segments = speech_segments(&probed.probs, probed.samples, vad_options);
        let map = SpeechMap::new(&segments);
        let kept = segments.clone();
        let speech: Opener = Box::new(move || {
            Ok(Box::new(SpeechOnly {
                inner: open()?,
                segments: kept.clone(),
                next: 0,
                read: 0,
            }))
        });
        let audio = self.scan_audio(name, speech)?;
        let mut t = self.transcribe_streamed(audio, opts, progress)?;
        restore_times(&mut t, &map);
        t.duration = probed.samples as f32 / SAMPLE_RATE as f32;
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
        // As faster-whisper's batched pipeline: no speech segment over a window; a longer
        // one is cut at its last 98-ms silence, else at the limit. (Cutting at the least
        // speech-like moment of the last third instead measured worse: 6.67 % word errors
        // on the long concatenation three times over, against 6.26 %.)
        let chunk_options = VadOptions {
            max_speech_duration_s: vad_options
                .max_speech_duration_s
                .min((window / SAMPLE_RATE) as f64),
            ..vad_options.clone()
        };
        let segments = speech_segments(probs, pcm.len(), &chunk_options);
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
        // Summed in samples: a float sum of no segments would be -0.0.
        let speech_samples: usize = segments.iter().map(|s| s.end - s.start).sum();
        let speech_seconds = speech_samples as f64 / SAMPLE_RATE as f64;
        let report = SpeechReport {
            segments,
            speech_seconds,
            duration: t.duration as f64,
        };
        Ok((t, report))
    }
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
    if let Some(s) = &mut t.stopped_at {
        *s = map.original_time(*s as f64, None, true) as f32;
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
