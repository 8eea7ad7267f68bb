//! The transcription pipeline for one window of up to 30 s: encoder graph → cross-KV
//! graph → decoder-step graph driven by the greedy decoding policy → segments.

use crate::decoding::{greedy_decode, split_segments, DecodeOptions, DecodeResult, SpecialIds, StepModel};
use crate::model::WhisperModel;
use crate::whisper::graph::{CHUNK_SECONDS, SAMPLE_RATE};
use amanuensis_runtime::{Session, Tensor};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// faster-whisper's default no-speech threshold: a window whose no-speech probability is
/// above it, and whose average log-probability is below [`LOG_PROB_THRESHOLD`], is silent.
pub const NO_SPEECH_THRESHOLD: f32 = 0.6;
/// faster-whisper's default average log-probability threshold.
pub const LOG_PROB_THRESHOLD: f64 = -1.0;
/// Whisper's `max_initial_timestamp` of 1.0 s in 0.02-s steps.
pub const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;

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
    /// Language code of the audio (e.g. `en`).
    pub language: String,
    pub task: Task,
    /// Decode without timestamp tokens (one segment per window).
    pub without_timestamps: bool,
    /// `None` disables no-speech detection.
    pub no_speech_threshold: Option<f32>,
    pub log_prob_threshold: Option<f64>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            language: "en".into(),
            task: Task::Transcribe,
            without_timestamps: false,
            no_speech_threshold: Some(NO_SPEECH_THRESHOLD),
            log_prob_threshold: Some(LOG_PROB_THRESHOLD),
        }
    }
}

/// One segment of the transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: usize,
    /// Seconds from the start of the audio (millisecond precision).
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f32,
    pub temperature: f32,
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub encoder: Duration,
    pub cross_kv: Duration,
    pub decoder: Duration,
    /// Decoder-step runs (one per generated token, plus the prompt).
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
}

impl StepModel for GraphStepper<'_> {
    fn step(&mut self, tokens: &[u32], logit_positions: &[usize]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let tokens_t = Tensor::from_i32(&[1, ids.len()], ids)?;
        let offset_t = Tensor::scalar_i32(self.offset as i32);
        let idx: Vec<i32> = logit_positions.iter().map(|&p| p as i32).collect();
        let idx_t = Tensor::from_i32(&[idx.len()], idx)?;
        let mut inputs: Vec<&Tensor> = vec![&tokens_t, &offset_t, &idx_t];
        inputs.extend(self.cross.iter());
        let mut out = self.session.run(&inputs)?;
        self.offset += tokens.len();
        self.steps += 1;
        let logits = out.pop().context("decoder_step returned no logits")?;
        let v = logits.f32s()?;
        let rows = v.chunks_exact(self.n_vocab).map(|r| r.to_vec()).collect();
        self.session.recycle(logits);
        Ok(rows)
    }
}

/// Seconds rounded to the millisecond, so that 7.6 prints as 7.6 and not 7.599999904632568.
fn round_ms(seconds: f32) -> f64 {
    (seconds as f64 * 1000.0).round() / 1000.0
}

impl WhisperModel {
    /// Runs the `encoder` graph: 16 kHz mono samples (≤ 30 s) → encoder output.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Tensor> {
        let max = CHUNK_SECONDS * SAMPLE_RATE;
        if pcm.len() > max {
            bail!(
                "audio is {:.1} s long; this version transcribes at most {CHUNK_SECONDS} s (long-form audio is not supported yet)",
                pcm.len() as f32 / SAMPLE_RATE as f32
            );
        }
        let pcm_t = Tensor::from_f32(&[pcm.len()], pcm.to_vec())?;
        let mut out = self.encoder.run(&[&pcm_t])?;
        out.pop().context("encoder returned no output")
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
    pub fn decode_greedy(&mut self, cross: &[Tensor], prompt: &[u32], opts: &DecodeOptions) -> Result<(DecodeResult, usize)> {
        let mut bindings = HashMap::new();
        bindings.insert("batch", 1usize);
        self.decoder.reset_states(&bindings)?;
        let mut stepper = GraphStepper {
            session: &mut self.decoder,
            cross,
            offset: 0,
            n_vocab: self.config.dims.n_vocab,
            steps: 0,
        };
        let ids = SpecialIds::from(&self.tokenizer);
        let result = greedy_decode(&mut stepper, prompt, &ids, opts)?;
        Ok((result, stepper.steps))
    }

    /// Transcribes 16 kHz mono samples of at most 30 s.
    pub fn transcribe_pcm(&mut self, pcm: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        let t0 = Instant::now();
        let duration = pcm.len() as f32 / SAMPLE_RATE as f32;
        let mut timings = Timings::default();

        let t = Instant::now();
        let enc = self.encode(pcm)?;
        timings.encoder = t.elapsed();
        let t = Instant::now();
        let cross = self.cross_kv(&enc)?;
        timings.cross_kv = t.elapsed();

        let translate = opts.task == Task::Translate;
        let prompt = self.tokenizer.sot_sequence(Some(&opts.language), translate, opts.without_timestamps)?;
        let dopts = self.decode_options(opts.without_timestamps);
        let t = Instant::now();
        let (result, steps) = self.decode_greedy(&cross, &prompt, &dopts)?;
        timings.decoder_steps = steps;
        timings.decoder = t.elapsed();
        timings.tokens = result.tokens.len();

        let silent = match (opts.no_speech_threshold, opts.log_prob_threshold) {
            (Some(ns), lp) => result.no_speech_prob > ns && lp.map_or(true, |lp| result.avg_logprob < lp),
            (None, _) => false,
        };
        let mut segments = Vec::new();
        if !silent {
            for s in split_segments(&result.tokens, &self.tokenizer, 0.0, duration) {
                if s.text.trim().is_empty() {
                    continue;
                }
                segments.push(Segment {
                    id: segments.len(),
                    start: round_ms(s.start),
                    end: round_ms(s.end.min(duration.max(s.start))),
                    text: s.text,
                    tokens: s.tokens,
                    avg_logprob: result.avg_logprob,
                    no_speech_prob: result.no_speech_prob,
                    temperature: 0.0,
                });
            }
        }
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
        timings.total = t0.elapsed();
        Ok(Transcript { language: opts.language.clone(), task: opts.task, duration, segments, text, timings })
    }
}
