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
