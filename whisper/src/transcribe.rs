//! The transcription pipeline: the `features` graph turns the whole recording into a
//! log-mel spectrogram once; then, window by window (30 s at most, seeking by the
//! timestamps the model predicts, as faster-whisper does), the `encoder` and `cross_kv`
//! graphs run and the `decoder_step` graph is driven by the decoding policy. Finally the
//! segment times are refined with the pauses of the recording ([`crate::pauses`]).

use crate::alignment;
use crate::decoding::{
    decode_with_fallback, greedy_decode, split_segments, BatchStepModel, DecodeOptions,
    DecodeResult, FallbackOptions, SpecialIds, StepModel,
};
use crate::graph::{HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::model::WhisperModel;
use crate::pauses::{self, Pause, RefineOptions};
use crate::tokenizer::Tokenizer;
use amanuensis_runtime::{Session, Tensor};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Whisper's `max_initial_timestamp` of 1.0 s in 0.02-s steps.
pub const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;
/// Seconds per mel frame.
pub const FRAME_SECONDS: f64 = HOP_LENGTH as f64 / SAMPLE_RATE as f64;
/// Mel frames per timestamp step (0.02 s): the encoder halves the frame rate.
pub const FRAMES_PER_TIMESTAMP: usize = 2;
/// Width of the median filter over the alignment matrix (faster-whisper's default).
pub const MEDIAN_FILTER_WIDTH: usize = 7;
/// Previous-text tokens kept in the prompt: half the text context minus `<|startofprev|>`.
pub const MAX_PREVIOUS_TOKENS: usize = 223;
/// Above this temperature the previous text no longer conditions the next window
/// (faster-whisper's `prompt_reset_on_temperature`).
pub const PROMPT_RESET_ON_TEMPERATURE: f32 = 0.5;

/// What to do with the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Transcribe,
    Translate,
}

/// Options of one transcription.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// Language code of the audio (e.g. `en`); `None` detects it from the first window.
    pub language: Option<String>,
    pub task: Task,
    /// Decode without timestamp tokens (one segment per window).
    pub without_timestamps: bool,
    /// Beam size, temperature fallback and the no-speech / log-probability / compression
    /// thresholds (faster-whisper's defaults).
    pub decoding: FallbackOptions,
    /// Feed the previous window's text as a prompt to the next (faster-whisper's default).
    pub condition_on_previous_text: bool,
    /// Text that conditions the first window, as if it had been said before the audio
    /// (names, spelling, style).
    pub initial_prompt: Option<String>,
    /// Time every word from the cross-attention of the model's alignment heads.
    pub word_timestamps: bool,
    /// Move segment boundaries onto the pauses of the recording and split segments at
    /// long pauses after a sentence or clause end ([`pauses`]); the text is unchanged.
    /// Ignored without timestamps.
    pub refine_timestamps: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            language: None,
            task: Task::Transcribe,
            without_timestamps: false,
            decoding: FallbackOptions::default(),
            condition_on_previous_text: true,
            initial_prompt: None,
            word_timestamps: false,
            refine_timestamps: true,
        }
    }
}

/// One segment of the transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: usize,
    /// Mel frame at which the window that produced this segment starts.
    pub seek: usize,
    /// Seconds from the start of the audio (millisecond precision).
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f32,
    /// gzip-style compression ratio of the text (high for repetitive hallucinations).
    pub compression_ratio: f64,
    pub temperature: f32,
    /// Word-level timing, when requested (also used internally by the refinement).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// One word with its timing.
#[derive(Debug, Clone, Serialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    /// The word as it appears in the text, with its leading space.
    pub word: String,
    pub probability: f32,
}

/// `len(text) / len(zlib(text))` in UTF-8 bytes, as faster-whisper computes it to detect
/// repetitive output.
pub fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    let compressed = enc.finish().unwrap_or_default();
    bytes.len() as f64 / compressed.len().max(1) as f64
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub features: Duration,
    pub encoder: Duration,
    pub cross_kv: Duration,
    pub decoder: Duration,
    /// Windows encoded.
    pub windows: usize,
    /// Decoder-step runs (one per generated token, plus the prompt, per window).
    pub decoder_steps: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Whole transcription, audio already decoded.
    pub total: Duration,
}

/// The result of transcribing one audio signal.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub language: String,
    /// Probability of the language when it was detected rather than given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_probability: Option<f32>,
    pub task: Task,
    /// Seconds of audio.
    pub duration: f32,
    pub segments: Vec<Segment>,
    /// All segment texts joined, leading/trailing spaces trimmed.
    pub text: String,
    #[serde(skip)]
    pub timings: Timings,
}

/// Feeds tokens through the `decoder_step` graph, keeping the KV cache in the session's
/// states and the cross-attention K/V of the current window as borrowed inputs.
struct GraphStepper<'a> {
    session: &'a mut Session,
    cross: &'a [Tensor],
    offset: usize,
    n_vocab: usize,
    steps: usize,
    /// Reused by `reorder` for the cache rows that move.
    scratch: Vec<f32>,
}

impl<'a> GraphStepper<'a> {
    /// A stepper over a fresh KV cache holding one empty sequence.
    fn fresh(
        session: &'a mut Session,
        cross: &'a [Tensor],
        n_vocab: usize,
    ) -> Result<GraphStepper<'a>> {
        let mut s = GraphStepper {
            session,
            cross,
            offset: 0,
            n_vocab,
            steps: 0,
            scratch: Vec::new(),
        };
        s.reset()?;
        Ok(s)
    }

    /// Runs one decoder step for `batch` rows of `n` tokens each.
    fn run_batch(
        &mut self,
        ids: Vec<i32>,
        batch: usize,
        n: usize,
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let tokens_t = Tensor::from_i32(&[batch, n], ids)?;
        let offset_t = Tensor::scalar_i32(self.offset as i32);
        let idx: Vec<i32> = logit_positions.iter().map(|&p| p as i32).collect();
        let idx_t = Tensor::from_i32(&[idx.len()], idx)?;
        let mut inputs: Vec<&Tensor> = vec![&tokens_t, &offset_t, &idx_t];
        inputs.extend(self.cross.iter());
        let mut out = self.session.run(&inputs)?;
        self.offset += n;
        self.steps += 1;
        let logits = out.pop().context("decoder_step returned no logits")?;
        let v = logits.f32s()?;
        let per_seq = logit_positions.len() * self.n_vocab;
        let rows = v
            .chunks_exact(per_seq.max(1))
            .map(|seq| seq.chunks_exact(self.n_vocab).map(|r| r.to_vec()).collect())
            .collect();
        self.session.recycle(logits);
        Ok(rows)
    }
}

impl BatchStepModel for GraphStepper<'_> {
    fn step(
        &mut self,
        tokens: &[Vec<u32>],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let n = tokens.first().map_or(0, |r| r.len());
        if tokens.iter().any(|r| r.len() != n) {
            bail!("every sequence of a batched decoder step must feed the same number of tokens");
        }
        let batch = self
            .session
            .states_mut()
            .first()
            .map_or(1, |s| s.shape()[0]);
        if tokens.len() != batch {
            bail!(
                "decoder step got {} sequences but the KV cache holds {batch}",
                tokens.len()
            );
        }
        let ids: Vec<i32> = tokens.iter().flatten().map(|&t| t as i32).collect();
        self.run_batch(ids, batch, n, logit_positions)
    }

    fn reorder(&mut self, src: &[usize]) -> Result<()> {
        let scratch = &mut self.scratch;
        let offset = self.offset;
        let states = self.session.states_mut();
        let Some(first) = states.first() else {
            return Ok(());
        };
        let (old_batch, cap, d) = (first.shape()[0], first.shape()[1], first.shape()[2]);
        if let Some(&bad) = src.iter().find(|&&i| i >= old_batch) {
            bail!("reorder: sequence {bad} does not exist (batch of {old_batch})");
        }
        // Only the filled rows of each cache move; rows past `offset` are rewritten before
        // they are read.
        let filled = offset.min(cap) * d;
        let stride = cap * d;
        if src.len() == old_batch {
            // Same batch size: move only the sequences whose parent changed, through a
            // scratch copy so that a source is read before it is overwritten.
            let moved: Vec<usize> = (0..src.len()).filter(|&i| src[i] != i).collect();
            if moved.is_empty() {
                return Ok(());
            }
            for st in states.iter_mut() {
                let data = st.f32s_mut()?;
                scratch.clear();
                for &i in &moved {
                    scratch.extend_from_slice(&data[src[i] * stride..src[i] * stride + filled]);
                }
                for (k, &i) in moved.iter().enumerate() {
                    data[i * stride..i * stride + filled]
                        .copy_from_slice(&scratch[k * filled..(k + 1) * filled]);
                }
            }
            return Ok(());
        }
        for st in states.iter_mut() {
            let old = st.f32s()?;
            let mut new = vec![0f32; src.len() * stride];
            for (b, &from) in src.iter().enumerate() {
                new[b * stride..b * stride + filled]
                    .copy_from_slice(&old[from * stride..from * stride + filled]);
            }
            *st = Tensor::from_f32(&[src.len(), cap, d], new)?;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        let mut bindings = HashMap::new();
        bindings.insert("batch", 1usize);
        self.session.reset_states(&bindings)?;
        self.offset = 0;
        Ok(())
    }
}

impl StepModel for GraphStepper<'_> {
    fn step(&mut self, tokens: &[u32], logit_positions: &[usize]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut rows = self.run_batch(ids, 1, tokens.len(), logit_positions)?;
        rows.pop().context("decoder_step returned no sequence")
    }
}

/// Seconds rounded to the millisecond, so that 7.6 prints as 7.6 and not 7.599999904632568.
fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Progress of a transcription, reported after each window.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Seconds of audio done.
    pub done: f64,
    /// Seconds of audio in all.
    pub total: f64,
}

/// Columns `seek..seek+size` of a `[n_mels, frames]` spectrogram, zero-padded to a full
/// window of [`N_FRAMES`] (faster-whisper pads in log-mel space).
pub fn mel_window(mel: &Tensor, seek: usize, size: usize) -> Result<Tensor> {
    let (n_mels, frames) = (mel.shape()[0], mel.shape()[1]);
    if seek + size > frames || size > N_FRAMES {
        bail!("mel window {seek}+{size} is outside the {frames} frames of the recording");
    }
    let src = mel.f32s()?;
    let mut out = vec![0f32; n_mels * N_FRAMES];
    for m in 0..n_mels {
        out[m * N_FRAMES..m * N_FRAMES + size]
            .copy_from_slice(&src[m * frames + seek..m * frames + seek + size]);
    }
    Ok(Tensor::from_f32(&[n_mels, N_FRAMES], out)?)
}

/// Where the next window starts, by faster-whisper's rule: after the last complete
/// timestamp pair when the window ends inside speech, else after the whole window.
pub fn next_seek(tokens: &[u32], timestamp_begin: u32, seek: usize, segment_size: usize) -> usize {
    let is_ts = |t: u32| t >= timestamp_begin;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let last_pair = (1..n)
        .rev()
        .find(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]));
    match last_pair {
        Some(i) if !single_timestamp_ending => {
            seek + (tokens[i - 1] - timestamp_begin) as usize * FRAMES_PER_TIMESTAMP
        }
        _ => seek + segment_size,
    }
}

/// Whether a segment (`start..end`, `text`) could be split by the refinement: its text
/// has a sentence or clause mark before its last word and a pause long enough to split
/// at lies inside it. Only then are words aligned when they were not asked for.
fn may_split(start: f64, end: f64, text: &str, pauses: &[Pause], opts: &RefineOptions) -> bool {
    let inner_mark = text
        .split_whitespace()
        .rev()
        .skip(1)
        .any(pauses::ends_clause);
    inner_mark
        && pauses
            .iter()
            .any(|p| p.duration() >= opts.split_pause && p.start > start && p.end < end)
}

/// The index at which `tokens` splits into a part decoding to `head` and one decoding to
/// `tail`, if there is one.
fn token_cut(tokens: &[u32], tok: &Tokenizer, head: &str, tail: &str) -> Option<usize> {
    (1..tokens.len())
        .find(|&k| tok.decode(&tokens[..k]) == head && tok.decode(&tokens[k..]) == tail)
}

/// Splits `segment` after the words `cuts` (indices of each part's last word) at the
/// tokens whose texts the words spell. Returns the parts, or `None` when the words do
/// not spell the text exactly (a word spilling over from a neighbouring segment).
fn split_segment(segment: &Segment, cuts: &[usize], tok: &Tokenizer) -> Option<Vec<Segment>> {
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut rest = segment.clone();
    let mut taken = 0;
    for &cut in cuts {
        let n = (cut + 1).checked_sub(taken).filter(|&n| n > 0)?;
        let head: String = rest
            .words
            .get(..n)?
            .iter()
            .map(|w| w.word.as_str())
            .collect();
        let tail = rest.text.strip_prefix(&head)?.to_string();
        let k = token_cut(&rest.tokens, tok, &head, &tail)?;
        let mut first = rest.clone();
        first.text = head;
        first.tokens = rest.tokens[..k].to_vec();
        first.words = rest.words[..n].to_vec();
        rest.text = tail;
        rest.tokens = rest.tokens[k..].to_vec();
        rest.words = rest.words[n..].to_vec();
        parts.push(first);
        taken = cut + 1;
    }
    parts.push(rest);
    Some(parts)
}

/// Refines segment times with the recording's `pauses` (see [`pauses`]): splits segments
/// at long pauses after a sentence or clause end, moves boundaries onto nearby pauses,
/// and when `keep_words` widens segments to hold their words (which never move). Texts
/// and tokens are only divided, never changed. Segments are renumbered.
pub fn refine_segments(
    segments: Vec<Segment>,
    tok: &Tokenizer,
    pauses: &[Pause],
    duration: f64,
    keep_words: bool,
    opts: &RefineOptions,
) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    // Whether the boundary before each output segment was placed by a split.
    let mut fixed: Vec<bool> = Vec::with_capacity(segments.len());
    for seg in segments {
        let splits = pauses::split_points(seg.start, seg.end, &seg.words, pauses, opts);
        let cuts: Vec<usize> = splits.iter().map(|s| s.0).collect();
        let parts = if splits.is_empty() {
            None
        } else {
            split_segment(&seg, &cuts, tok)
        };
        match parts {
            Some(mut parts) => {
                for (i, (_, p)) in splits.iter().enumerate() {
                    let pad = opts.pad.clamp(0.0, p.duration() / 2.0);
                    parts[i].end = p.start + pad;
                    parts[i + 1].start = p.end - pad;
                }
                fixed.push(false);
                fixed.extend(std::iter::repeat_n(true, parts.len() - 1));
                out.extend(parts);
            }
            None => {
                fixed.push(false);
                out.push(seg);
            }
        }
    }
    let mut bounds: Vec<(f64, f64)> = out.iter().map(|s| (s.start, s.end)).collect();
    pauses::snap_boundaries(&mut bounds, &fixed, pauses, duration, opts);
    if keep_words {
        let words: Vec<&[Word]> = out.iter().map(|s| s.words.as_slice()).collect();
        pauses::contain_words(&mut bounds, &words);
    }
    for (i, (seg, (start, end))) in out.iter_mut().zip(bounds).enumerate() {
        seg.id = i;
        seg.start = round_ms(start);
        seg.end = round_ms(end).max(seg.start);
        // Words already lie inside; this only absorbs rounding.
        for w in &mut seg.words {
            w.start = w.start.clamp(seg.start, seg.end);
            w.end = w.end.clamp(w.start, seg.end);
        }
    }
    out
}

impl WhisperModel {
    /// Runs the `features` graph: the log-mel spectrogram `[n_mels, frames]` of a whole
    /// recording (16 kHz mono).
    pub fn features(&mut self, pcm: &[f32]) -> Result<Tensor> {
        let pcm_t = Tensor::from_f32(&[pcm.len()], pcm.to_vec())?;
        let mut out = self.features.run(&[&pcm_t])?;
        out.pop().context("features graph returned no output")
    }

    /// Runs the `encoder` graph on one `[n_mels, 3000]` window (on a device, the joined
    /// encoder + cross K/V graph, returning only the encoder output).
    pub fn encode_window(&mut self, window: &Tensor) -> Result<Tensor> {
        if let Some(w) = self.window.as_mut() {
            let mut want = vec![false; w.graph().outputs.len()];
            *want.last_mut().context("the window graph has no outputs")? = true;
            let mut out = w.run_selected(&[window], &want)?;
            return out
                .pop()
                .flatten()
                .context("window graph returned no encoder output");
        }
        let mut out = self.encoder.run(&[window])?;
        out.pop().context("encoder returned no output")
    }

    /// The cross K/V of one `[n_mels, 3000]` window: on a device the joined graph, whose
    /// encoder output never leaves the device; else the encoder then the cross K/V graph.
    pub fn encode_cross(&mut self, window: &Tensor) -> Result<Vec<Tensor>> {
        if let Some(w) = self.window.as_mut() {
            let n = w.graph().outputs.len();
            let want: Vec<bool> = (0..n).map(|i| i + 1 < n).collect();
            let out = w.run_selected(&[window], &want)?;
            return Ok(out.into_iter().flatten().collect());
        }
        let enc = self.encode_window(window)?;
        self.cross_kv(&enc)
    }

    /// The encoder output of the first 30-s window of a recording.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Tensor> {
        let mel = self.features(pcm)?;
        let size = mel.shape()[1].min(N_FRAMES);
        let window = mel_window(&mel, 0, size)?;
        self.encode_window(&window)
    }

    /// Runs the `cross_kv` graph: the cross-attention keys and values of every decoder
    /// layer, computed once per window.
    pub fn cross_kv(&mut self, encoder_out: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.cross_kv.run(&[encoder_out])?)
    }

    /// The decoding options faster-whisper uses at temperature 0.
    pub fn decode_options(&self, without_timestamps: bool) -> DecodeOptions {
        DecodeOptions {
            without_timestamps,
            suppress_blank: true,
            suppress_tokens: self.config.suppress_ids.clone(),
            suppress_blank_tokens: self.config.suppress_ids_begin.clone(),
            max_initial_timestamp_index: Some(MAX_INITIAL_TIMESTAMP_INDEX),
            max_length: self.config.dims.n_text_ctx,
        }
    }

    /// Greedy decoding of one window from `prompt`, with a fresh KV cache. Returns the
    /// result and the number of decoder-step runs.
    pub fn decode_greedy(
        &mut self,
        cross: &[Tensor],
        prompt: &[u32],
        opts: &DecodeOptions,
    ) -> Result<(DecodeResult, usize)> {
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?;
        let ids = SpecialIds::from(&self.tokenizer);
        let result = greedy_decode(&mut stepper, prompt, &ids, opts)?;
        Ok((result, stepper.steps))
    }

    /// Decodes one window with faster-whisper's policy: beam search (or greedy) at
    /// temperature 0, then sampling at rising temperatures while the result looks like a
    /// failure. Returns the result, the temperature used and the decoder-step runs.
    pub fn decode_window(
        &mut self,
        cross: &[Tensor],
        prompt: &[u32],
        opts: &DecodeOptions,
        fallback: &FallbackOptions,
    ) -> Result<(DecodeResult, f32, usize)> {
        let tok = &self.tokenizer;
        let ids = SpecialIds::from(tok);
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?;
        let (result, temperature) =
            decode_with_fallback(&mut stepper, prompt, &ids, opts, fallback, &|t| {
                tok.decode(t)
            })?;
        Ok((result, temperature, stepper.steps))
    }

    /// Language probabilities from one window's cross-attention K/V: the decoder reads
    /// `<|startoftranscript|>` and the language tokens' logits are normalised among
    /// themselves. Sorted, most probable first.
    pub fn detect_language(&mut self, cross: &[Tensor]) -> Result<Vec<(String, f32)>> {
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?;
        let logits = StepModel::step(&mut stepper, &[self.tokenizer.sot()], &[0])?
            .pop()
            .context("no logits")?;
        let langs: Vec<(String, f32)> = self
            .config
            .lang_ids
            .iter()
            .filter_map(|&id| {
                Some((
                    self.tokenizer.language_code(id)?.to_string(),
                    *logits.get(id as usize)?,
                ))
            })
            .collect();
        if langs.is_empty() {
            bail!("the model has no language tokens");
        }
        let max = langs.iter().map(|l| l.1).fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = langs.iter().map(|l| ((l.1 - max) as f64).exp()).sum();
        let mut probs: Vec<(String, f32)> = langs
            .into_iter()
            .map(|(c, l)| (c, (((l - max) as f64).exp() / z) as f32))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(probs)
    }

    /// Logits at every position of `tokens`, fed one at a time through `decoder_step`
    /// with a fresh KV cache (a reference for the batched paths).
    pub fn step_logits(&mut self, cross: &[Tensor], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut stepper = GraphStepper::fresh(&mut self.decoder, cross, self.config.dims.n_vocab)?;
        let mut out = Vec::with_capacity(tokens.len());
        for &t in tokens {
            out.extend(StepModel::step(&mut stepper, &[t], &[0])?);
        }
        Ok(out)
    }

    /// Teacher-forced decoder pass over `tokens` (one window's cross-attention K/V):
    /// the cross-attention probabilities of the model's alignment heads
    /// `[alignment heads, tokens, n_audio_ctx]` and the logits `[tokens, n_vocab]`.
    pub fn align_tokens(
        &mut self,
        cross: &[Tensor],
        tokens: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let d = self.config.dims;
        if tokens.len() > d.n_text_ctx {
            bail!(
                "{} tokens exceed the text context of {}",
                tokens.len(),
                d.n_text_ctx
            );
        }
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let tokens_t = Tensor::from_i32(&[1, ids.len()], ids)?;
        let offset_t = Tensor::scalar_i32(0);
        let mut inputs: Vec<&Tensor> = vec![&tokens_t, &offset_t];
        inputs.extend(cross.iter());
        let mut out = self.align.run(&inputs)?.into_iter();
        let logits = out
            .next()
            .context("decoder_align returned no logits")?
            .into_f32()?;
        let per_layer: Vec<Tensor> = out.collect();
        let (n, frames) = (tokens.len(), d.n_audio_ctx);
        let mut heads = Vec::with_capacity(self.config.alignment_heads.len() * n * frames);
        for &[layer, head] in &self.config.alignment_heads {
            let w = per_layer
                .get(layer as usize)
                .with_context(|| {
                    format!(
                        "alignment head layer {layer} is outside the decoder's {} layers",
                        d.n_text_layer
                    )
                })?
                .f32s()?;
            if head as usize >= d.n_text_head {
                bail!(
                    "alignment head {head} is outside the {} heads",
                    d.n_text_head
                );
            }
            heads.extend_from_slice(
                &w[head as usize * n * frames..(head as usize + 1) * n * frames],
            );
        }
        Ok((heads, logits))
    }

    /// Word timings of one window's segments: a teacher-forced pass over the window's
    /// text, the alignment heads' attention through median filter and DTW, then
    /// faster-whisper's word heuristics.
    #[allow(clippy::too_many_arguments)]
    fn word_timings(
        &mut self,
        cross: &[Tensor],
        language: &str,
        opts: &TranscribeOptions,
        window: &[crate::decoding::Segment],
        seek: usize,
        segment_size: usize,
        last_speech_timestamp: f64,
    ) -> Result<alignment::WindowWords> {
        let tok = &self.tokenizer;
        let eot = tok.eot();
        let segs: Vec<alignment::WindowSegment> = window
            .iter()
            .map(|s| alignment::WindowSegment {
                start: s.start as f64,
                end: s.end as f64,
                tokens: s.tokens.clone(),
            })
            .collect();
        let text = alignment::window_text_tokens(&segs, eot);
        let alignment_words = if text.is_empty() {
            Vec::new()
        } else {
            let start = tok.sot_sequence(Some(language), opts.task == Task::Translate, false)?;
            let input = alignment::alignment_input_tokens(&start, &text, tok);
            let (heads, logits) = self.align_tokens(cross, &input)?;
            let d = self.config.dims;
            let n = input.len();
            let n_heads = self.config.alignment_heads.len();
            let matrix = alignment::alignment_matrix(
                &heads,
                n_heads,
                n,
                d.n_audio_ctx,
                segment_size,
                MEDIAN_FILTER_WIDTH,
            )?;
            let frames = segment_size / 2;
            if frames == 0 {
                Vec::new()
            } else {
                let rows = alignment::text_rows(&matrix, n, frames, start.len(), text.len())?;
                let probs = alignment::text_token_probabilities(
                    &logits,
                    n,
                    d.n_vocab,
                    start.len(),
                    &text,
                    eot,
                )?;
                alignment::find_alignment(&self.tokenizer, language, &text, &probs, rows, frames)?
            }
        };
        Ok(alignment::add_word_timestamps(
            &segs,
            alignment_words,
            eot,
            seek,
            alignment::DEFAULT_PREPEND_PUNCTUATIONS,
            alignment::DEFAULT_APPEND_PUNCTUATIONS,
            last_speech_timestamp,
        ))
    }

    /// The decoder prompt: previous text (if any) after `<|startofprev|>`, then the
    /// start-of-transcript sequence for `language`.
    pub fn prompt(
        &self,
        previous: &[u32],
        language: &str,
        opts: &TranscribeOptions,
    ) -> Result<Vec<u32>> {
        let tok = &self.tokenizer;
        let mut prompt = Vec::new();
        if !previous.is_empty() {
            prompt.push(tok.start_of_prev());
            prompt
                .extend_from_slice(&previous[previous.len().saturating_sub(MAX_PREVIOUS_TOKENS)..]);
        }
        let translate = opts.task == Task::Translate;
        prompt.extend(tok.sot_sequence(Some(language), translate, opts.without_timestamps)?);
        Ok(prompt)
    }

    /// Transcribes 16 kHz mono samples of any length.
    pub fn transcribe_pcm(&mut self, pcm: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        self.transcribe_pcm_with_progress(pcm, opts, &mut |_| {})
    }

    /// Transcribes 16 kHz mono samples of any length, reporting progress after each window.
    pub fn transcribe_pcm_with_progress(
        &mut self,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Transcript> {
        let t0 = Instant::now();
        let duration = pcm.len() as f64 / SAMPLE_RATE as f64;
        let mut timings = Timings::default();
        let t = Instant::now();
        let mel = self.features(pcm)?;
        timings.features = t.elapsed();
        let content_frames = mel.shape()[1];
        let timestamp_begin = self.tokenizer.timestamp_begin();
        let dopts = self.decode_options(opts.without_timestamps);

        let mut language = opts.language.clone();
        let mut language_probability = None;
        let mut seek = 0usize;
        let mut all_tokens: Vec<u32> = match &opts.initial_prompt {
            Some(p) => self.tokenizer.encode_prompt(p)?,
            None => Vec::new(),
        };
        let mut prompt_reset_since = 0usize;
        let mut last_speech_timestamp = 0.0f64;
        let refine = opts.refine_timestamps && !opts.without_timestamps;
        let refine_opts = RefineOptions::default();
        let pauses = if refine {
            pauses::find_pauses(pcm, SAMPLE_RATE as u32, &refine_opts.pauses)
        } else {
            Vec::new()
        };
        let mut segments: Vec<Segment> = Vec::new();
        while seek < content_frames {
            let time_offset = seek as f64 * FRAME_SECONDS;
            let segment_size = N_FRAMES.min(content_frames - seek);
            let segment_duration = segment_size as f64 * FRAME_SECONDS;

            let t = Instant::now();
            let window = mel_window(&mel, seek, segment_size)?;
            // Device call logs and traces name the window their runs belong to.
            for s in [&mut self.encoder, &mut self.cross_kv] {
                s.set_window(Some(timings.windows));
            }
            if let Some(w) = self.window.as_mut() {
                w.set_window(Some(timings.windows));
            }
            let cross = if self.window.is_some() {
                let cross = self.encode_cross(&window)?;
                timings.encoder += t.elapsed();
                cross
            } else {
                let enc = self.encode_window(&window)?;
                timings.encoder += t.elapsed();
                let t = Instant::now();
                let cross = self.cross_kv(&enc)?;
                timings.cross_kv += t.elapsed();
                cross
            };
            timings.windows += 1;

            let lang = match &language {
                Some(l) => l.clone(),
                None => {
                    let t = Instant::now();
                    let probs = self.detect_language(&cross)?;
                    timings.decoder += t.elapsed();
                    let (code, p) = probs[0].clone();
                    tracing::info!(language = %code, probability = p, "detected language");
                    language_probability = Some(p);
                    language = Some(code.clone());
                    code
                }
            };
            let prompt = self.prompt(&all_tokens[prompt_reset_since..], &lang, opts)?;
            let t = Instant::now();
            let (result, temperature, steps) =
                self.decode_window(&cross, &prompt, &dopts, &opts.decoding)?;
            timings.decoder += t.elapsed();
            timings.decoder_steps += steps;
            timings.tokens += result.tokens.len();

            // faster-whisper's no-speech rule: skip the window when the model thinks it is
            // silent, unless the decoded text is confident (an average log-probability
            // above the threshold; NaN, from an empty result, is not).
            let silent = match opts.decoding.no_speech_threshold {
                Some(ns) => {
                    f64::from(result.no_speech_prob) > ns
                        && !opts
                            .decoding
                            .log_prob_threshold
                            .is_some_and(|lp| result.avg_logprob > lp)
                }
                None => false,
            };
            if silent {
                seek += segment_size;
                progress(Progress {
                    done: (seek as f64 * FRAME_SECONDS).min(duration),
                    total: duration,
                });
                continue;
            }

            let ratio = compression_ratio(&self.tokenizer.decode(&result.tokens));
            let window = split_segments(
                &result.tokens,
                &self.tokenizer,
                time_offset as f32,
                segment_duration as f32,
            );
            let mut times: Vec<(f64, f64, Vec<Word>)> = window
                .iter()
                .map(|s| (s.start as f64, s.end as f64, Vec::new()))
                .collect();
            let mut next = next_seek(&result.tokens, timestamp_begin, seek, segment_size);
            // The refinement splits segments between words, so it needs them where a
            // segment holds a long pause; they then change neither seeking nor times.
            let split_candidate = refine
                && window.iter().any(|s| {
                    may_split(s.start as f64, s.end as f64, &s.text, &pauses, &refine_opts)
                });
            if (opts.word_timestamps || split_candidate) && !window.is_empty() {
                let t = Instant::now();
                let timed = self.word_timings(
                    &cross,
                    &lang,
                    opts,
                    &window,
                    seek,
                    segment_size,
                    last_speech_timestamp,
                )?;
                timings.decoder += t.elapsed();
                if let Some(end) = alignment::last_word_end(&timed.segments) {
                    last_speech_timestamp = end;
                    // faster-whisper moves the next window to the last word's end unless
                    // the window ended on a lone timestamp.
                    let n = result.tokens.len();
                    let single_timestamp_ending = n >= 2
                        && result.tokens[n - 2] < timestamp_begin
                        && result.tokens[n - 1] >= timestamp_begin;
                    if opts.word_timestamps && !single_timestamp_ending && end > time_offset {
                        next = (end * 100.0).round_ties_even() as usize;
                    }
                }
                for (slot, seg) in times.iter_mut().zip(timed.segments) {
                    let words = seg
                        .words
                        .into_iter()
                        .map(|w| Word {
                            start: round_ms(w.start),
                            end: round_ms(w.end),
                            word: w.word,
                            probability: w.probability as f32,
                        })
                        .collect();
                    if opts.word_timestamps {
                        *slot = (seg.start, seg.end, words);
                    } else {
                        slot.2 = words;
                    }
                }
            }
            for (s, (start, end, words)) in window.into_iter().zip(times) {
                if start == end || s.text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend_from_slice(&s.tokens);
                segments.push(Segment {
                    id: segments.len(),
                    seek,
                    start: round_ms(start),
                    end: round_ms(end.min(duration.max(start))),
                    text: s.text,
                    tokens: s.tokens,
                    avg_logprob: result.avg_logprob,
                    no_speech_prob: result.no_speech_prob,
                    compression_ratio: ratio,
                    temperature,
                    words,
                });
            }
            if !opts.condition_on_previous_text || temperature > PROMPT_RESET_ON_TEMPERATURE {
                prompt_reset_since = all_tokens.len();
            }
            // Never move backwards: a window must always make progress.
            seek = next.max(seek + 1);
            progress(Progress {
                done: (seek as f64 * FRAME_SECONDS).min(duration),
                total: duration,
            });
        }
        if refine {
            segments = refine_segments(
                segments,
                &self.tokenizer,
                &pauses,
                duration,
                opts.word_timestamps,
                &refine_opts,
            );
        }
        if !opts.word_timestamps {
            segments.iter_mut().for_each(|s| s.words.clear());
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<String>()
            .trim()
            .to_string();
        timings.total = t0.elapsed();
        Ok(Transcript {
            // Silent audio never reaches detection; report English, the model's default.
            language: language.unwrap_or_else(|| "en".into()),
            language_probability,
            task: opts.task,
            duration: duration as f32,
            segments,
            text,
            timings,
        })
    }
}
