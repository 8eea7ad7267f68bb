//! The log-mel front end as a graph operator.

use super::f32_input;
use crate::log_mel::LogMel;
use amanuensis_runtime::format::Dim;
use amanuensis_runtime::op::{expect_inputs, Attrs, EvalContext, OpDef, Operator, ValueType};
use amanuensis_runtime::{DType, OpError, Tensor};

/// Whisper's log-mel spectrogram of a mono PCM signal, normalised as faster-whisper does
/// (clamped at the recording's maximum − 8, then scaled). Without `n_frames` the output is
/// every content frame of the recording, `[n_mels, mel_frames]`; with it, the first
/// `n_frames` frames, zero-padded in log-mel space.
pub struct LogMelDef;

/// Symbol of the output's frame dim in whole-recording mode.
pub const MEL_FRAMES: &str = "mel_frames";

struct LogMelOp {
    mel: LogMel,
    n_mels: usize,
    n_frames: Option<usize>,
}

impl std::fmt::Debug for LogMelOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LogMel({} mels, {:?} frames)",
            self.n_mels, self.n_frames
        )
    }
}

impl OpDef for LogMelDef {
    fn name(&self) -> &str {
        "log_mel"
    }
    fn summary(&self) -> &str {
        "pcm[n] → log-mel[n_mels, frames] (STFT, Slaney mel filterbank, log10, clamp at max − 8, scale)"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["sample_rate", "n_fft", "hop_length", "n_mels", "n_frames"])?;
        let sample_rate = attrs.usize("sample_rate")?;
        let n_fft = attrs.usize("n_fft")?;
        let hop = attrs.usize("hop_length")?;
        let n_mels = attrs.usize("n_mels")?;
        let n_frames = if attrs.0.contains_key("n_frames") {
            Some(attrs.usize("n_frames")?)
        } else {
            None
        };
        if n_frames == Some(0) {
            return Err(OpError(
                "invalid STFT settings: n_frames must be > 0".into(),
            ));
        }
        // A graph file is untrusted: its settings are checked, not asserted.
        let sample_rate = u32::try_from(sample_rate).map_err(|_| {
            OpError(format!(
                "invalid STFT settings: sample_rate {sample_rate} does not fit in 32 bits"
            ))
        })?;
        let mel =
            LogMel::try_new(sample_rate, n_fft, hop, n_mels).map_err(|e| OpError(e.to_string()))?;
        Ok(Box::new(LogMelOp {
            mel,
            n_mels,
            n_frames,
        }))
    }
}

impl Operator for LogMelOp {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["pcm"])?;
        inputs[0].expect_dtype(DType::F32, "pcm")?;
        inputs[0].expect_rank(1, "pcm")?;
        let frames = match self.n_frames {
            Some(n) => Dim::Known(n),
            None => Dim::Sym(MEL_FRAMES.into()),
        };
        Ok(vec![ValueType::new(
            DType::F32,
            vec![Dim::Known(self.n_mels), frames],
        )])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let pcm = f32_input(inputs[0], "pcm")?;
        if let Some(i) = pcm.iter().position(|x| !x.is_finite()) {
            return Err(OpError(format!(
                "pcm sample {i} is not finite ({})",
                pcm[i]
            )));
        }
        let (mel, frames) = match self.n_frames {
            Some(n) => (self.mel.compute(&pcm, n), n),
            None => self.mel.compute_full(&pcm),
        };
        let mut out = ctx.alloc_f32(&[self.n_mels, frames]);
        out.f32s_mut()?.copy_from_slice(&mel);
        Ok(vec![out])
    }
}

/// The magnitude of a complex spectrum stored as real parts then imaginary parts along one
/// axis (what a convolution with a stacked cos/sin STFT basis produces, as in Silero VAD).
pub struct MagnitudeDef;
#[derive(Debug)]
struct Magnitude {
    axis: usize,
}

impl OpDef for MagnitudeDef {
    fn name(&self) -> &str {
        "magnitude"
    }
    fn summary(&self) -> &str {
        "y[.., k, ..] = sqrt(x[.., k, ..]² + x[.., k + m, ..]²) along `axis` of size 2m"
    }
    fn build(&self, attrs: &Attrs) -> Result<Box<dyn Operator>, OpError> {
        attrs.only(&["axis"])?;
        Ok(Box::new(Magnitude {
            axis: attrs.usize("axis")?,
        }))
    }
}

impl Magnitude {
    fn half(&self, len: usize) -> Result<usize, OpError> {
        if !len.is_multiple_of(2) || len == 0 {
            return Err(OpError(format!(
                "dim {} is {len}; real and imaginary halves need an even, non-zero size",
                self.axis
            )));
        }
        Ok(len / 2)
    }
    fn check_rank(&self, rank: usize) -> Result<(), OpError> {
        if self.axis >= rank {
            return Err(OpError(format!(
                "axis {} is out of range for rank {rank}",
                self.axis
            )));
        }
        Ok(())
    }
}

impl Operator for Magnitude {
    fn infer(&self, inputs: &[ValueType], _: &[ValueType]) -> Result<Vec<ValueType>, OpError> {
        expect_inputs(inputs, &["x"])?;
        let x = &inputs[0];
        x.expect_dtype(DType::F32, "x")?;
        self.check_rank(x.rank())?;
        let mut shape = x.shape.clone();
        shape[self.axis] = match &x.shape[self.axis] {
            Dim::Known(n) => Dim::Known(self.half(*n)?),
            Dim::Sym(s) => Dim::Sym(format!("{s}/2")),
        };
        Ok(vec![ValueType::new(DType::F32, shape)])
    }

    fn eval(&self, ctx: &mut EvalContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let s = x.shape();
        self.check_rank(s.len())?;
        let m = self.half(s[self.axis])?;
        let outer: usize = s[..self.axis].iter().product();
        let inner: usize = s[self.axis + 1..].iter().product();
        let mut shape = s.to_vec();
        shape[self.axis] = m;
        let xv = f32_input(x, "x")?;
        let mut out = ctx.alloc_f32(&shape);
        let o = out.f32s_mut()?;
        let half = m * inner;
        for (src, dst) in xv
            .chunks_exact(2 * half)
            .zip(o.chunks_exact_mut(half))
            .take(outer)
        {
            let (re, im) = src.split_at(half);
            for ((y, &a), &b) in dst.iter_mut().zip(re).zip(im) {
                // Squares summed, then one square root: ONNX's Pow, Add, Sqrt in order.
                *y = (a * a + b * b).sqrt();
            }
        }
        Ok(vec![out])
    }
}
