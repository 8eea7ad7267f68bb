//! Streaming resampling to 16 kHz with rubato, the output aligned to the input.

use rubato::{FftFixedInOut, Resampler};

use crate::limits::SAMPLE_RATE;

/// Streaming resampler from a source rate to 16 kHz with the output aligned to the input.
///
/// rubato's synchronous FFT resampler is used rather than its asynchronous sinc resampler:
/// for a fixed rational ratio it computes an exact band-limited resampling with a
/// Blackman-Harris² windowed-sinc filter of `chunk_in` taps (cut-off ~0.99 × Nyquist).
/// On band-limited test signals (sums of sinusoids below 0.9 × the lower Nyquist
/// frequency) its f64 output matches the analytic signal to a relative RMS error of ~1e-10
/// for 44.1, 22.05, 48 and 8 kHz input, whereas the sinc resampler (256 taps, cubic, best
/// fractional alignment) reached only ~2e-3, and its reported `output_delay` differed from
/// its measured delay. On real audio, jfk_44k1_stereo.wav resampled this way matches the
/// 16 kHz jfk.wav to 3.3e-4 relative error, about the int16 quantisation level.
///
/// The FFT block holds an EVEN number of rational units so that the filter's centre
/// (`chunk_in / 2` input samples) is a whole number of output samples: the delay is then
/// removed exactly.
pub(crate) struct Resampling {
    pub(crate) inner: FftFixedInOut<f64>,
    pub(crate) chunk_in: usize,
    pub(crate) pending: Vec<f64>,
    pub(crate) out_buf: Vec<Vec<f64>>,
    /// Output samples still to drop at the start (the filter's delay).
    pub(crate) skip: usize,
    pub(crate) rate_in: u32,
    pub(crate) frames_in: u64,
    pub(crate) frames_out: u64,
}

impl Resampling {
    /// Smallest FFT block, in output or input samples (whichever is smaller); sets the filter
    /// length and hence the steepness of the anti-aliasing cut-off (~0.99 × Nyquist).
    const MIN_BLOCK: u64 = 1024;

    pub(crate) fn new(rate_in: u32) -> Result<Self, String> {
        let g = gcd(u64::from(rate_in), u64::from(SAMPLE_RATE));
        let in_unit = u64::from(rate_in) / g;
        let out_unit = u64::from(SAMPLE_RATE) / g;
        let units = Self::MIN_BLOCK.div_ceil(in_unit.min(out_unit));
        let units = units + (units & 1);
        let chunk_in = (units * in_unit) as usize;
        let chunk_out = (units * out_unit) as usize;
        let inner = FftFixedInOut::<f64>::new(rate_in as usize, SAMPLE_RATE as usize, chunk_in, 1)
            .map_err(|e| e.to_string())?;
        if inner.input_frames_next() != chunk_in || inner.output_frames_next() != chunk_out {
            return Err(format!(
                "unexpected block sizes {}/{} (wanted {chunk_in}/{chunk_out})",
                inner.input_frames_next(),
                inner.output_frames_next()
            ));
        }
        // The filter is centred on input sample chunk_in / 2, i.e. output sample
        // chunk_out / 2 (whole because `units` is even).
        let skip = inner.output_delay();
        if skip != chunk_out / 2 {
            return Err(format!(
                "unexpected resampler delay {skip} (wanted {})",
                chunk_out / 2
            ));
        }
        let out_buf = vec![vec![0.0; chunk_out]];
        Ok(Resampling {
            inner,
            chunk_in,
            pending: Vec::with_capacity(chunk_in),
            out_buf,
            skip,
            rate_in,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Output length for `n` input frames: `round(n × 16000 / rate)`, halves rounded up.
    pub(crate) fn expected_out(&self, n: u64) -> u64 {
        let num = u128::from(n) * u128::from(SAMPLE_RATE) * 2 + u128::from(self.rate_in);
        (num / (2 * u128::from(self.rate_in))) as u64
    }

    pub(crate) fn push(&mut self, input: &[f64], out: &mut Vec<f32>) -> Result<(), String> {
        self.frames_in += input.len() as u64;
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.chunk_in {
                self.process_pending(out, u64::MAX)?;
            }
        }
        Ok(())
    }

    /// Runs one full block through the resampler, emitting at most `limit` samples in total.
    pub(crate) fn process_pending(&mut self, out: &mut Vec<f32>, limit: u64) -> Result<(), String> {
        self.pending.resize(self.chunk_in, 0.0);
        let (_, n) = self
            .inner
            .process_into_buffer(&[&self.pending], &mut self.out_buf, None)
            .map_err(|e| e.to_string())?;
        self.pending.clear();
        let produced = &self.out_buf[0][..n];
        let drop = self.skip.min(produced.len());
        self.skip -= drop;
        let room = limit.saturating_sub(self.frames_out) as usize;
        let kept = &produced[drop..][..(produced.len() - drop).min(room)];
        out.extend(kept.iter().map(|&s| s as f32));
        self.frames_out += kept.len() as u64;
        Ok(())
    }

    /// Flushes the filter with zeros until the expected number of samples was emitted.
    pub(crate) fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), String> {
        let total = self.expected_out(self.frames_in);
        if self.frames_out > total {
            // Cannot happen (the filter's look-ahead holds output back), kept for safety.
            let excess = (self.frames_out - total) as usize;
            out.truncate(out.len().saturating_sub(excess));
            self.frames_out = total;
        }
        while self.frames_out < total {
            self.process_pending(out, total)?;
        }
        Ok(())
    }
}

pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
