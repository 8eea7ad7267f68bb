//! The log-mel spectrogram a recording's windows are cut from: held whole (what the
//! `features` graph returns for samples in memory), or computed a window at a time from an
//! audio file read twice, so that an hour of audio never sits in memory.
//!
//! A streamed recording is read once to measure it ([`WhisperModel::scan_audio`]): its
//! length, the maximum of its log-mel values (the clamp of step 3 of the recipe in
//! `amanuensis_operators::log_mel` is relative to the whole recording's maximum) and its
//! pause levels. Then the window loop reads it again, forward, keeping only the samples of
//! the window at hand. Each mel frame depends only on its own 400 samples, so every window
//! has exactly the bits of the same window cut from the whole spectrogram (tested in
//! `tests/streamed.rs`). The front end is the `features` graph's `log_mel` node's: its
//! settings come from the graph file, and any other features graph is not streamed.

use std::path::Path;
use std::time::{Duration, Instant};

use amanuensis_audio::pauses::LevelMeter;
use amanuensis_audio::{AudioError, AudioStream, SampleSource};
use amanuensis_operators::log_mel::{LogMel, SignalSpan};
use amanuensis_runtime::Tensor;

use crate::error::{Error, Result};
use crate::graph::{FEATURES, N_FRAMES, SAMPLE_RATE};
use crate::model::{check_interrupt, mel_window, WhisperModel};

/// Opens the recording from its start (again); called once per pass.
pub type Opener = Box<dyn FnMut() -> std::result::Result<Box<dyn SampleSource>, AudioError> + Send>;

/// Every sample of the recording `open` opens, in one vector (`samples` expected).
pub fn read_all(open: &mut Opener, samples: usize) -> Result<Vec<f32>> {
    let mut source = open()?;
    // `samples` is what a measuring pass found, but the reservation must not trust it
    // blindly: at most a day of 16-kHz audio up front, the rest as it comes.
    let mut pcm = Vec::with_capacity(samples.min(24 * 3600 * 16_000));
    while let Some(chunk) = source.next_chunk()? {
        pcm.extend_from_slice(&chunk);
    }
    Ok(pcm)
}

/// An [`Opener`] decoding the audio file at `path` from its start at each call.
pub fn file_opener(path: &Path) -> Opener {
    let owned = path.to_path_buf();
    Box::new(move || Ok(Box::new(AudioStream::open(&owned)?)))
}

/// STFT frames the measuring pass computes at a time (30 s of audio): large enough for the
/// frames to spread over every core, small enough to hold (1 MB of log-mel values).
const SCAN_FRAMES: usize = N_FRAMES;

/// The spectrogram of a recording, whole or streamed.
pub enum Spectrogram {
    /// `[n_mels, frames]`, every content frame.
    Whole(Tensor),
    /// Computed window by window from a file.
    Streamed(Box<StreamedMel>),
}

impl Spectrogram {
    /// Content frames of the recording (10 ms each).
    pub fn frames(&self) -> usize {
        match self {
            Spectrogram::Whole(t) => t.shape()[1],
            Spectrogram::Streamed(s) => s.audio.front_end.content_frames(s.audio.samples),
        }
    }

    /// Frames `seek..seek + size`, zero-padded to a `[n_mels, N_FRAMES]` window (as
    /// [`mel_window`] cuts one from the whole spectrogram).
    pub fn window(&mut self, seek: usize, size: usize) -> Result<Tensor> {
        match self {
            Spectrogram::Whole(t) => mel_window(t, seek, size),
            Spectrogram::Streamed(s) => s.window(seek, size),
        }
    }

    /// Time spent computing streamed windows so far (zero when whole).
    pub(crate) fn take_compute_time(&mut self) -> Duration {
        match self {
            Spectrogram::Whole(_) => Duration::ZERO,
            Spectrogram::Streamed(s) => std::mem::take(&mut s.compute_time),
        }
    }
}

/// A recording measured by [`WhisperModel::scan_audio`], ready to be transcribed a window
/// at a time ([`WhisperModel::transcribe_streamed`]).
pub struct StreamedAudio {
    name: String,
    open: Opener,
    front_end: LogMel,
    /// 16 kHz samples.
    samples: usize,
    /// Maximum `log10` mel value over the recording's STFT frames.
    max_log10: f32,
    /// Energy levels of 10-ms frames, for the pauses timestamps are refined onto.
    levels: Vec<f32>,
    /// How long the measuring pass took.
    scan_time: Duration,
}

impl std::fmt::Debug for StreamedAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedAudio")
            .field("name", &self.name)
            .field("samples", &self.samples)
            .field("max_log10", &self.max_log10)
            .finish()
    }
}

impl StreamedAudio {
    /// Length in 16 kHz samples.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.samples as f64 / SAMPLE_RATE as f64
    }

    /// The name errors use (the file's path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long measuring the recording took.
    pub fn scan_time(&self) -> Duration {
        self.scan_time
    }

    /// Decodes the whole recording into memory, for what needs every sample at once
    /// (voice-activity detection, batched windows).
    pub fn load_all(mut self) -> Result<Vec<f32>> {
        let pcm = read_all(&mut self.open, self.samples)?;
        if pcm.len() != self.samples {
            return Err(changed(&self.name, self.samples, pcm.len()).into());
        }
        Ok(pcm)
    }

    /// The pause levels, taken out (the spectrogram does not need them).
    pub(crate) fn take_levels(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.levels)
    }

    /// The spectrogram, computed window by window.
    pub fn into_spectrogram(self) -> Spectrogram {
        Spectrogram::Streamed(Box::new(StreamedMel {
            audio: self,
            stream: None,
            buf: Vec::new(),
            buf_start: 0,
            compute_time: Duration::ZERO,
        }))
    }
}

/// The audio changed between the two passes over it.
fn changed(name: &str, before: usize, now: usize) -> AudioError {
    AudioError::Corrupt {
        file: name.to_string(),
        detail: format!(
            "the audio changed while being transcribed: {before} samples when measured, {now} when read again"
        ),
    }
}

/// A streamed recording's spectrogram: the samples of the window at hand, decoded forward.
pub struct StreamedMel {
    audio: StreamedAudio,
    /// The second pass's decoder; reopened when a window starts before `buf_start`.
    stream: Option<Box<dyn SampleSource>>,
    /// Samples `buf_start..buf_start + buf.len()` of the recording.
    buf: Vec<f32>,
    buf_start: usize,
    compute_time: Duration,
}

impl StreamedMel {
    fn window(&mut self, seek: usize, size: usize) -> Result<Tensor> {
        let t = Instant::now();
        let a = &self.audio;
        let frames = a.front_end.content_frames(a.samples);
        if seek + size > frames || size > N_FRAMES {
            return Err(Error::graph(
                FEATURES,
                format!("mel window {seek}+{size} is outside the {frames} frames of the recording"),
            ));
        }
        let need = a.front_end.samples_for_frames(seek..seek + size, a.samples);
        self.read_to(need.start, need.end)?;
        let a = &self.audio;
        let span = SignalSpan {
            samples: &self.buf,
            offset: self.buf_start,
            total: a.samples,
        };
        let logmel = a.front_end.log10_frames(&span, seek..seek + size);
        let mel = a.front_end.normalize(&logmel, size, a.max_log10, N_FRAMES);
        let window = Tensor::from_f32(&[a.front_end.n_mels(), N_FRAMES], mel)?;
        self.compute_time += t.elapsed();
        Ok(window)
    }

    /// Holds samples `start..end` (and none before `start`), decoding forward, or from the
    /// beginning again when `start` lies behind what is held.
    fn read_to(&mut self, start: usize, end: usize) -> Result<()> {
        if self.stream.is_none() || start < self.buf_start {
            self.stream = Some((self.audio.open)()?);
            self.buf.clear();
            self.buf_start = 0;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let drop = start.saturating_sub(self.buf_start).min(self.buf.len());
        self.buf.drain(..drop);
        self.buf_start += drop;
        while self.buf_start + self.buf.len() < end {
            let Some(chunk) = stream.next_chunk()? else {
                let now = self.buf_start + self.buf.len();
                return Err(changed(&self.audio.name, self.audio.samples, now).into());
            };
            // Samples before `start` (a chunk straddling it) are not kept.
            let decoded = self.buf_start + self.buf.len();
            let skip = start.saturating_sub(decoded).min(chunk.len());
            if self.buf.is_empty() {
                self.buf_start = decoded + skip;
            }
            self.buf.extend_from_slice(&chunk[skip..]);
        }
        Ok(())
    }
}

impl WhisperModel {
    /// The front end of the `features` graph when it is the single `log_mel` node the
    /// streamed spectrogram reproduces; `None` for any other features graph.
    pub fn streamable_front_end(&self) -> Option<LogMel> {
        let g = self.features.graph();
        let [node] = &g.nodes[..] else {
            return None;
        };
        let a = &node.attrs;
        if node.op_name != "log_mel" || a.0.contains_key("n_frames") {
            return None;
        }
        let rate = u32::try_from(a.usize("sample_rate").ok()?).ok()?;
        if rate as usize != SAMPLE_RATE {
            return None;
        }
        LogMel::try_new(
            rate,
            a.usize("n_fft").ok()?,
            a.usize("hop_length").ok()?,
            a.usize("n_mels").ok()?,
        )
        .ok()
    }

    /// Whether [`Self::scan_file`] can stream `path`: a regular file (not `-`, standard
    /// input, nor a pipe such as a shell's `<(…)`: they cannot be read twice) and a
    /// features graph that is the plain `log_mel` node.
    pub fn can_stream(&self, path: &Path) -> bool {
        path.as_os_str() != amanuensis_audio::STDIN_PATH
            && std::fs::metadata(path).is_ok_and(|m| m.is_file())
            && self.streamable_front_end().is_some()
    }

    /// [`Self::scan_audio`] of an audio file, reopened by path for the second pass.
    pub fn scan_file(&self, path: &Path) -> Result<StreamedAudio> {
        self.scan_audio(&path.display().to_string(), file_opener(path))
    }

    /// Measures a recording for [`Self::transcribe_streamed`], reading it once through
    /// `open`: its length, its spectrogram's maximum and its pause levels, in memory
    /// proportional to a window, not to the recording. `name` is used in errors.
    ///
    /// Errors if the features graph is not the plain `log_mel` node
    /// ([`Self::streamable_front_end`]) or on a decoding error. (An [`AudioStream`]'s
    /// samples are finite and bounded: the decoders make them so.)
    pub fn scan_audio(&self, name: &str, mut open: Opener) -> Result<StreamedAudio> {
        let t0 = Instant::now();
        let lm = self.streamable_front_end().ok_or_else(|| {
            Error::graph(
                FEATURES,
                "is not a single log_mel node, so its spectrogram cannot be streamed",
            )
        })?;
        let mut stream = open()?;
        let mut meter = LevelMeter::new(SAMPLE_RATE as u32);
        let (hop, half, n_fft) = (lm.hop(), lm.n_fft() / 2, lm.n_fft());
        let mut buf: Vec<f32> = Vec::new();
        let mut buf_start = 0usize;
        let mut next_frame = 0usize;
        let mut max = f32::NEG_INFINITY;
        let mut fold = |logmel: Vec<f32>| {
            max = logmel.iter().copied().fold(max, f32::max);
        };
        while let Some(chunk) = stream.next_chunk()? {
            check_interrupt(self.interrupt.as_ref())?;
            meter.push(&chunk);
            buf.extend_from_slice(&chunk);
            let decoded = buf_start + buf.len();
            // Frames whose samples (reflected ones included) are all decoded have their
            // final values however long the recording turns out to be.
            let ready = if decoded > n_fft {
                (decoded + half - n_fft) / hop + 1
            } else {
                0
            };
            if ready >= next_frame + SCAN_FRAMES {
                let span = SignalSpan {
                    samples: &buf,
                    offset: buf_start,
                    total: decoded,
                };
                fold(lm.log10_frames(&span, next_frame..ready));
                next_frame = ready;
                let keep_from = (next_frame * hop).saturating_sub(half);
                buf.drain(..keep_from - buf_start);
                buf_start = keep_from;
            }
        }
        let samples = buf_start + buf.len();
        let span = SignalSpan {
            samples: &buf,
            offset: buf_start,
            total: samples,
        };
        fold(lm.log10_frames(&span, next_frame..lm.stft_frames(samples)));
        Ok(StreamedAudio {
            name: name.to_string(),
            open,
            front_end: lm,
            samples,
            max_log10: max,
            levels: meter.finish(),
            scan_time: t0.elapsed(),
        })
    }
}
