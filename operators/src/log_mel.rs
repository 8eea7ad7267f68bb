//! Whisper's log-mel spectrogram, computed exactly as faster-whisper 1.2.1 does.
//!
//! Recipe (for 16 kHz, `n_fft` 400, hop 160, 80 mels):
//! 1. append `hop` (160) zero samples to the waveform;
//! 2. STFT with a periodic Hann window, centred frames with reflect padding of `n_fft / 2`
//!    on both sides (`1 + len / hop` frames), power spectrum `|X|²`, and drop the last frame;
//! 3. Slaney mel filterbank, `log10(max(mel, 1e-10))`, clamp from below at the global
//!    maximum − 8, then `(x + 4) / 4`;
//! 4. the first window holds frames `[0, min(content_frames, n_frames))` where
//!    `content_frames` is one less than the frame count of step 2; the rest of the window is
//!    zero (padding happens in log-mel space, not on the audio).
//!
//! Transforms and mel products run in `f64`; results are returned as `f32`.

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};

/// Invalid spectrogram settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMelError(pub String);

impl std::fmt::Display for LogMelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid log-mel settings: {}", self.0)
    }
}

impl std::error::Error for LogMelError {}

/// Hz → mel on the Slaney scale (linear below 1 kHz, logarithmic above), as librosa's
/// `hz_to_mel(htk=False)`.
pub fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

/// Mel → Hz on the Slaney scale, the inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

/// `numpy.linspace(start, stop, num)`: `start + i * step`, with the last point exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// The mel filterbank in `f64`, row-major `[n_mels, n_fft / 2 + 1]`; see [`mel_filterbank`].
pub fn mel_filterbank_f64(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f64> {
    let n_bins = n_fft / 2 + 1;
    let sr = f64::from(sample_rate);
    // numpy.fft.rfftfreq(n_fft, 1 / sr)
    let bin_step = 1.0 / (n_fft.max(1) as f64 * (1.0 / sr));
    let fft_freqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * bin_step).collect();
    let mel_points = linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2);
    let hz_points: Vec<f64> = mel_points.iter().map(|&m| mel_to_hz(m)).collect();

    let mut weights = vec![0.0f64; n_mels * n_bins];
    for m in 0..n_mels {
        let (lo, centre, hi) = (hz_points[m], hz_points[m + 1], hz_points[m + 2]);
        let (down, up) = (centre - lo, hi - centre);
        // Slaney normalisation: each triangle has unit area over Hz.
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / down;
            let upper = (hi - f) / up;
            weights[m * n_bins + k] = lower.min(upper).max(0.0) * enorm;
        }
    }
    weights
}

/// The mel filterbank faster-whisper builds (librosa `filters.mel(sr, n_fft, n_mels)` with
/// its defaults: Slaney mel scale, Slaney area normalisation, 0 Hz to `sr / 2`), row-major
/// `[n_mels, n_fft / 2 + 1]`, computed in `f64` and rounded to `f32`.
pub fn mel_filterbank(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    mel_filterbank_f64(sample_rate, n_fft, n_mels)
        .into_iter()
        .map(|w| w as f32)
        .collect()
}

/// Index into a signal of length `len` after numpy-style `reflect` padding (mirror without
/// repeating the edge sample), for any offset: long pads reflect repeatedly, which is the
/// periodic extension with period `2 (len - 1)`.
fn reflect_index(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let j = i.rem_euclid(period);
    if j >= len as isize {
        (period - j) as usize
    } else {
        j as usize
    }
}

/// A log-mel front end with its filterbank, window and FFT plan prepared once.
pub struct LogMel {
    sample_rate: u32,
    n_fft: usize,
    hop: usize,
    n_mels: usize,
    /// `[n_mels, n_bins]` in `f64`.
    filters: Vec<f64>,
    /// Per mel band, the bins `[start, end)` where its filter is non-zero.
    bands: Vec<(usize, usize)>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("sample_rate", &self.sample_rate)
            .field("n_fft", &self.n_fft)
            .field("hop", &self.hop)
            .field("n_mels", &self.n_mels)
            .finish()
    }
}

impl LogMel {
    /// Builds the front end.
    ///
    /// # Panics
    /// If the settings are invalid (see [`LogMel::try_new`]); callers handling untrusted
    /// settings should use `try_new`.
    pub fn new(sample_rate: u32, n_fft: usize, hop: usize, n_mels: usize) -> Self {
        match Self::try_new(sample_rate, n_fft, hop, n_mels) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// Builds the front end; `n_fft` must be even and in `2..=65536`, `hop` and `n_mels`
    /// non-zero (`n_mels` at most 1024) and `sample_rate` non-zero.
    pub fn try_new(
        sample_rate: u32,
        n_fft: usize,
        hop: usize,
        n_mels: usize,
    ) -> Result<Self, LogMelError> {
        if sample_rate == 0 || hop == 0 || n_mels == 0 || n_mels > 1024 {
            return Err(LogMelError(format!(
                "sample_rate {sample_rate}, hop {hop}, n_mels {n_mels} (all must be > 0, n_mels ≤ 1024)"
            )));
        }
        if !(2..=65_536).contains(&n_fft) || n_fft & 1 == 1 {
            return Err(LogMelError(format!(
                "n_fft {n_fft} must be even and in 2..=65536"
            )));
        }
        let n_bins = n_fft / 2 + 1;
        let filters = mel_filterbank_f64(sample_rate, n_fft, n_mels);
        let bands = filters
            .chunks_exact(n_bins)
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |e| e + 1);
                (start, end)
            })
            .collect();
        // Periodic Hann window (numpy `hanning(n_fft + 1)[:-1]`).
        let window = (0..n_fft)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos())
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n_fft);
        Ok(LogMel {
            sample_rate,
            n_fft,
            hop,
            n_mels,
            filters,
            bands,
            window,
            fft,
        })
    }

    /// Number of mel bands.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// FFT size in samples.
    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    /// Hop between frames in samples.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Sample rate the filterbank was built for.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The filterbank in `f64`, row-major `[n_mels, n_fft / 2 + 1]`.
    pub fn filters(&self) -> &[f64] {
        &self.filters
    }

    /// Number of content frames for `n_samples` of audio: `(n_samples + hop) / hop − 1`,
    /// i.e. `n_samples / hop` (1,100 for 176,000 samples).
    pub fn content_frames(&self, n_samples: usize) -> usize {
        n_samples / self.hop
    }

    /// The first window of `n_frames_out` frames, row-major `[n_mels, n_frames_out]`:
    /// content frames `[0, min(content_frames, n_frames_out))`, the rest exactly `0.0`.
    /// Empty input gives an all-zero window (it has no content frames).
    pub fn compute(&self, pcm: &[f32], n_frames_out: usize) -> Vec<f32> {
        let (full, frames) = self.compute_full(pcm);
        let keep = frames.min(n_frames_out);
        let mut out = vec![0.0f32; self.n_mels * n_frames_out];
        for m in 0..self.n_mels {
            out[m * n_frames_out..][..keep].copy_from_slice(&full[m * frames..][..keep]);
        }
        out
    }

    /// All content frames, row-major `[n_mels, frames]`, and `frames` (= `pcm.len() / hop`).
    ///
    /// The clamp uses the maximum over every STFT frame except the dropped last one, which
    /// includes one frame beyond the content frames, exactly like faster-whisper; windows
    /// cut from this array therefore match faster-whisper's long-form segments.
    ///
    /// Audio shorter than `n_fft / 2 + 1` samples (after the appended `hop` zeros) is
    /// padded by repeated reflection, as numpy's `pad(mode="reflect")` does. Samples must be
    /// finite: NaN or infinite input gives meaningless output (callers validate).
    pub fn compute_full(&self, pcm: &[f32]) -> (Vec<f32>, usize) {
        let span = SignalSpan {
            samples: pcm,
            offset: 0,
            total: pcm.len(),
        };
        let stft_frames = self.stft_frames(pcm.len());
        let logmel = self.log10_frames(&span, 0..stft_frames);
        let max = logmel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let content = stft_frames - 1;
        (self.normalize(&logmel, content, max, content), content)
    }

    /// STFT frames of a recording of `n_samples` (one more than its content frames): the
    /// global maximum of [`Self::compute_full`]'s clamp is taken over these.
    pub fn stft_frames(&self, n_samples: usize) -> usize {
        (n_samples + self.hop) / self.hop
    }

    /// The samples `[start, end)` of a recording of `total` samples that frames `frames`
    /// read (reflect padding included), so that a long recording can be held a part at a
    /// time: [`Self::log10_frames`] of those frames needs a span covering this range.
    pub fn samples_for_frames(&self, frames: Range<usize>, total: usize) -> Range<usize> {
        if frames.is_empty() {
            return 0..0;
        }
        let len = (total + self.hop) as isize;
        let half = (self.n_fft / 2) as isize;
        let first = (frames.start * self.hop) as isize - half;
        let past = ((frames.end - 1) * self.hop) as isize - half + self.n_fft as isize;
        // Reflection maps indices before 0 onto 1..=half and indices past the end onto the
        // last samples; padding longer than the signal reflects repeatedly (all of it).
        let (mut lo, mut hi) = (first.max(0), past.min(len));
        if first < 0 {
            hi = hi.max(half + 1);
        }
        if past > len {
            lo = lo.min(2 * (len - 1) - (past - 1));
        }
        if first < -(len - 1) || past - 1 > 2 * (len - 1) {
            lo = 0;
            hi = len;
        }
        let clip = |i: isize| (i.max(0) as usize).min(total);
        clip(lo)..clip(hi)
    }

    /// `log10(max(mel, 1e-10))` of STFT frames `frames` (step 2 and the first half of step
    /// 3 of the recipe), frame-major `[frames, n_mels]`, from `span`, which must cover
    /// [`Self::samples_for_frames`] (samples it lacks read as NaN). Each frame's value
    /// depends only on its own samples, so any split of a recording into spans gives the
    /// same bits as the whole.
    pub fn log10_frames(&self, span: &SignalSpan<'_>, frames: Range<usize>) -> Vec<f32> {
        let n_mels = self.n_mels;
        let n_fft = self.n_fft;
        let hop = self.hop;
        let half = (n_fft / 2) as isize;
        // Step 1: `hop` zeros appended (faster-whisper's `padding=160`).
        let len = span.total + hop;
        let pcm = span.samples;
        let offset = span.offset;
        let sample = |i: isize| -> f64 {
            let j = reflect_index(i, len);
            if j < span.total {
                j.checked_sub(offset)
                    .and_then(|k| pcm.get(k))
                    .map_or(f64::NAN, |&x| f64::from(x))
            } else {
                0.0
            }
        };

        let mut logmel = vec![0.0f32; frames.len() * n_mels];
        const FRAMES_PER_BLOCK: usize = 64;
        logmel
            .par_chunks_mut(FRAMES_PER_BLOCK * n_mels)
            .enumerate()
            .for_each_init(
                || {
                    (
                        self.fft.make_input_vec(),
                        self.fft.make_output_vec(),
                        self.fft.make_scratch_vec(),
                        vec![0.0f64; n_fft / 2 + 1],
                    )
                },
                |(frame, spec, scratch, power), (block, out)| {
                    for (f_in_block, out_frame) in out.chunks_exact_mut(n_mels).enumerate() {
                        let t = frames.start + block * FRAMES_PER_BLOCK + f_in_block;
                        let start = (t * hop) as isize - half;
                        let local = start - offset as isize;
                        if start >= 0
                            && start as usize + n_fft <= span.total
                            && local >= 0
                            && local as usize + n_fft <= pcm.len()
                        {
                            let src = &pcm[local as usize..local as usize + n_fft];
                            for ((d, &s), &w) in frame.iter_mut().zip(src).zip(&self.window) {
                                *d = f64::from(s) * w;
                            }
                        } else {
                            for (k, (d, &w)) in frame.iter_mut().zip(&self.window).enumerate() {
                                *d = sample(start + k as isize) * w;
                            }
                        }
                        // Lengths are fixed by construction, so the FFT cannot fail.
                        if self.fft.process_with_scratch(frame, spec, scratch).is_err() {
                            out_frame.fill(f32::NAN);
                            continue;
                        }
                        for (p, c) in power.iter_mut().zip(spec.iter()) {
                            *p = c.norm_sqr();
                        }
                        let n_bins = power.len();
                        for (m, o) in out_frame.iter_mut().enumerate() {
                            let (b0, b1) = self.bands[m];
                            let row = &self.filters[m * n_bins..][b0..b1];
                            let e: f64 = row.iter().zip(&power[b0..b1]).map(|(w, p)| w * p).sum();
                            *o = e.max(1e-10).log10() as f32;
                        }
                    }
                },
            );
        logmel
    }

    /// Step 3's clamp at `max − 8` and rescale of the first `frames` frames of frame-major
    /// `logmel`, row-major `[n_mels, width]` with the columns past `frames` exactly `0.0`
    /// (a window's padding). `max` is the maximum over the recording's STFT frames.
    pub fn normalize(&self, logmel: &[f32], frames: usize, max: f32, width: usize) -> Vec<f32> {
        let n_mels = self.n_mels;
        let floor = f64::from(max) - 8.0;
        let mut out = vec![0.0f32; n_mels * width];
        for t in 0..frames.min(width) {
            for m in 0..n_mels {
                let x = f64::from(logmel[t * n_mels + m]).max(floor);
                out[m * width + t] = ((x + 4.0) / 4.0) as f32;
            }
        }
        out
    }
}

/// Consecutive samples `[offset, offset + samples.len())` of a recording of `total`
/// samples: what [`LogMel::log10_frames`] reads when the recording is not held whole.
#[derive(Debug, Clone, Copy)]
pub struct SignalSpan<'a> {
    pub samples: &'a [f32],
    pub offset: usize,
    pub total: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/whisper-base-jfk.safetensors")
    }

    fn fixture_f32(name: &str) -> (Vec<f32>, Vec<usize>) {
        let path = fixture_path();
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors fixture");
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("tensor {name}: {e:?}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name} dtype");
        let data = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (data, t.shape().to_vec())
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn filterbank_matches_fixture() {
        let (want, shape) = fixture_f32("mel_filters");
        assert_eq!(shape, [80, 201]);
        let got = mel_filterbank(16_000, 400, 80);
        let d = max_abs_diff(&got, &want);
        eprintln!("mel filterbank max |diff| = {d:e}");
        assert!(d <= 1e-6, "filterbank max |diff| {d:e} > 1e-6");
    }

    #[test]
    fn jfk_mel_matches_fixture() {
        let (audio, shape) = fixture_f32("audio");
        assert_eq!(shape, [176_000]);
        let (want, shape) = fixture_f32("mel");
        assert_eq!(shape, [80, 3000]);
        let lm = LogMel::new(16_000, 400, 160, 80);
        let (_, frames) = lm.compute_full(&audio);
        assert_eq!(frames, 1100);
        let got = lm.compute(&audio, 3000);
        let d = max_abs_diff(&got, &want);
        let mean = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / got.len() as f64;
        eprintln!("jfk log-mel max |diff| = {d:e}, mean {mean:e}");
        assert!(d <= 1e-4, "log-mel max |diff| {d:e} > 1e-4");
        // Padding columns are exactly zero, as in the fixture.
        for m in 0..80 {
            assert!(got[m * 3000 + 1100..(m + 1) * 3000]
                .iter()
                .all(|&x| x == 0.0));
        }
    }

    #[test]
    fn frames_from_a_span_are_the_bits_of_the_whole_recording() {
        let lm = LogMel::new(16_000, 400, 160, 80);
        let mut rng = fastrand::Rng::with_seed(11);
        // Lengths around the reflect-padding edge cases: shorter than the padding, one
        // hop, and long ones ending mid-hop.
        for total in [1usize, 150, 201, 399, 1_000, 48_123, 96_000] {
            let pcm: Vec<f32> = (0..total).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let whole = SignalSpan {
                samples: &pcm,
                offset: 0,
                total,
            };
            let n = lm.stft_frames(total);
            let all = lm.log10_frames(&whole, 0..n);
            let mut ranges = vec![0..n, 0..1.min(n), n.saturating_sub(1)..n];
            for _ in 0..20 {
                let a = rng.usize(0..n);
                ranges.push(a..rng.usize(a..=n));
            }
            for frames in ranges {
                let need = lm.samples_for_frames(frames.clone(), total);
                let span = SignalSpan {
                    samples: &pcm[need.clone()],
                    offset: need.start,
                    total,
                };
                let part = lm.log10_frames(&span, frames.clone());
                let want = &all[frames.start * 80..frames.end * 80];
                assert!(
                    part.iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{total} samples, frames {frames:?} from samples {need:?}"
                );
            }
        }
    }

    #[test]
    fn thirty_seconds_is_fast() {
        let (audio, _) = fixture_f32("audio");
        let pcm: Vec<f32> = audio.iter().cycle().take(480_000).copied().collect();
        let lm = LogMel::new(16_000, 400, 160, 80);
        let _ = lm.compute(&pcm, 3000); // warm up the thread pool
        let t0 = std::time::Instant::now();
        let runs = 5;
        for _ in 0..runs {
            let out = lm.compute(&pcm, 3000);
            assert_eq!(out.len(), 80 * 3000);
        }
        let per = t0.elapsed().as_secs_f64() / runs as f64;
        eprintln!("log-mel of 30 s: {:.2} ms", per * 1e3);
        assert!(per < 0.05, "30 s log-mel took {:.1} ms", per * 1e3);
    }

    /// Straightforward reference: explicit numpy-style padding and a direct DFT.
    fn naive(pcm: &[f32], n_fft: usize, hop: usize, n_mels: usize) -> (Vec<f64>, usize) {
        let mut x: Vec<f64> = pcm.iter().map(|&v| v as f64).collect();
        x.resize(x.len() + hop, 0.0);
        let half = n_fft / 2;
        // Reflect padding done iteratively, one mirror image at a time, like numpy.
        let mut padded = x.clone();
        let (mut left, mut right) = (half, half);
        while left > 0 || right > 0 {
            let l = padded.len();
            let chunk = (x.len() - 1).min(left);
            let pre: Vec<f64> = (1..=chunk).rev().map(|k| padded[k]).collect();
            left -= chunk;
            let chunk_r = (x.len() - 1).min(right);
            let post: Vec<f64> = (1..=chunk_r).map(|k| padded[l - 1 - k]).collect();
            right -= chunk_r;
            padded = [pre, padded, post].concat();
        }
        let frames = 1 + (padded.len() - n_fft) / hop - 1;
        let fb = mel_filterbank_f64(16_000, n_fft, n_mels);
        let n_bins = n_fft / 2 + 1;
        let mut logmel = vec![0.0; frames * n_mels];
        for t in 0..frames {
            let mut power = vec![0.0; n_bins];
            for (k, p) in power.iter_mut().enumerate() {
                let (mut re, mut im) = (0.0, 0.0);
                for i in 0..n_fft {
                    let w =
                        0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos();
                    let a = -2.0 * std::f64::consts::PI * (k * i) as f64 / n_fft as f64;
                    re += padded[t * hop + i] * w * a.cos();
                    im += padded[t * hop + i] * w * a.sin();
                }
                *p = re * re + im * im;
            }
            for m in 0..n_mels {
                let e: f64 = (0..n_bins).map(|k| fb[m * n_bins + k] * power[k]).sum();
                logmel[t * n_mels + m] = e.max(1e-10).log10();
            }
        }
        let max = logmel.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let content = frames - 1;
        let mut out = vec![0.0; n_mels * content];
        for t in 0..content {
            for m in 0..n_mels {
                out[m * content + t] = (logmel[t * n_mels + m].max(max - 8.0) + 4.0) / 4.0;
            }
        }
        (out, content)
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| (rng.f32() - 0.5) * 0.6).collect()
    }

    #[test]
    fn matches_naive_reference_including_short_inputs() {
        let (n_fft, hop, n_mels) = (64, 16, 8);
        let lm = LogMel::new(16_000, n_fft, hop, n_mels);
        // Lengths around the reflect-padding limit: len + hop must exceed n_fft / 2 for a
        // single mirror image; shorter signals reflect repeatedly.
        for &n in &[0usize, 1, 5, 15, 16, 17, 40, 100, 333] {
            let pcm = noise(n, n as u64 + 1);
            let (got, frames) = lm.compute_full(&pcm);
            let (want, want_frames) = naive(&pcm, n_fft, hop, n_mels);
            assert_eq!(frames, want_frames, "frames for {n} samples");
            assert_eq!(frames, n / hop);
            let d = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-5, "{n} samples: max |diff| {d:e}");
        }
    }

    #[test]
    fn whisper_sized_short_inputs() {
        let lm = LogMel::new(16_000, 400, 160, 80);
        // Empty input: no content frames, the window is all zeros.
        assert!(lm.compute(&[], 3000).iter().all(|&x| x == 0.0));
        assert_eq!(lm.compute_full(&[]).1, 0);
        // 30 samples (shorter than n_fft / 2 + 1 even with the appended zeros): no content
        // frame either; 400 samples: 2 frames, finite and within the normalised range.
        assert!(lm.compute(&noise(30, 3), 10).iter().all(|&x| x == 0.0));
        let (full, frames) = lm.compute_full(&noise(400, 4));
        assert_eq!(frames, 2);
        assert!(full
            .iter()
            .all(|x| x.is_finite() && (-1.5..=1.5).contains(x)));
        // The window truncates when there are more content frames than requested.
        let pcm = noise(16_000, 5);
        let (full, frames) = lm.compute_full(&pcm);
        assert_eq!(frames, 100);
        let win = lm.compute(&pcm, 40);
        for m in 0..80 {
            assert_eq!(&win[m * 40..(m + 1) * 40], &full[m * 100..m * 100 + 40]);
        }
    }

    #[test]
    fn reflect_index_is_numpy_reflect() {
        // numpy.pad([0, 1, 2], 5, mode="reflect") = [1 0 1 2 1 | 0 1 2 | 1 0 1 2 1]
        let got: Vec<usize> = (-5..8).map(|i| reflect_index(i, 3)).collect();
        assert_eq!(got, [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]);
        assert_eq!(reflect_index(-3, 1), 0);
    }

    #[test]
    fn mel_scale_round_trip_and_invalid_settings() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
        assert!((hz_to_mel(8000.0) - 45.245640471924965).abs() < 1e-12);
        assert!(LogMel::try_new(16_000, 401, 160, 80).is_err());
        assert!(LogMel::try_new(16_000, 400, 0, 80).is_err());
        assert!(LogMel::try_new(0, 400, 160, 80).is_err());
    }
}
