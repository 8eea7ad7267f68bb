//! Transcribing only the speech of a recording (`--vad`): Silero VAD finds the speech,
//! the speech segments are joined and transcribed as one recording, and every time
//! (segments and words) is mapped back to the original, as faster-whisper's `vad_filter`
//! does.

use crate::error::Result;
use crate::model::WhisperModel;
use crate::transcript::Transcript;
use crate::window_loop::{Progress, TranscribeOptions};
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
