//! The decoding policy: which token comes next, given the decoder's logits.
//!
//! It reproduces CTranslate2's Whisper `generate` as faster-whisper 1.2.1 calls it: logit
//! filters (suppressed tokens, blank suppression at the first step, Whisper's timestamp
//! rules), greedy decoding ([`greedy_decode`]), beam search ([`beam_search`]), temperature
//! sampling ([`sample_decode`]), the cumulative log-probability, the no-speech probability,
//! and faster-whisper's temperature fallback ([`decode_with_fallback`]). How logits are
//! produced is abstracted by [`StepModel`] (one sequence) and [`BatchStepModel`] (a batch
//! of sequences with a reorderable KV cache).
//!
//! Prompt layout, as CTranslate2 reads it: optional previous context
//! (`<|startofprev|> ...`), then `<|startoftranscript|>`, then the task tokens (ids
//! between `<|startoftranscript|>` and `<|notimestamps|>`), then optional forced prefix
//! text tokens. Timestamp rules are active unless the last task token is
//! `<|notimestamps|>`.

use crate::tokenizer::{Tokenizer, TIME_PRECISION};
use crate::transcript::{compression_ratio, WindowSegment};
use rayon::prelude::*;

/// Produces logits for tokens appended to the sequence fed so far (KV-cached decoder).
pub trait StepModel {
    /// Feed `tokens` after everything already fed; return the logits (length n_vocab) at each
    /// index in `logit_positions` (indices into `tokens`), in order.
    fn step(
        &mut self,
        tokens: &[u32],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<f32>>, StepError>;
}

/// The token ids the decoding policy needs, plus the logits' length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Vocabulary size = expected logits length.
    pub n_vocab: usize,
    /// `<|endoftext|>`; ids below it are text tokens.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|nocaptions|>` / `<|nospeech|>`.
    pub no_speech: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`; ids at or above it are timestamps.
    pub timestamp_begin: u32,
}

impl From<&Tokenizer> for SpecialIds {
    fn from(tok: &Tokenizer) -> SpecialIds {
        SpecialIds {
            n_vocab: tok.n_vocab(),
            eot: tok.eot(),
            sot: tok.sot(),
            no_speech: tok.no_speech(),
            no_timestamps: tok.no_timestamps(),
            timestamp_begin: tok.timestamp_begin(),
        }
    }
}

/// Decoding options, named after faster-whisper's / CTranslate2's arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// The prompt ends with `<|notimestamps|>`; must agree with the prompt.
    pub without_timestamps: bool,
    /// Suppress `suppress_blank_tokens` at the first sampled step.
    pub suppress_blank: bool,
    /// Ids suppressed at every step (`config.json` `suppress_ids`, i.e. `suppress_tokens=[-1]`).
    pub suppress_tokens: Vec<u32>,
    /// Ids suppressed at the first sampled step (`config.json` `suppress_ids_begin`).
    pub suppress_blank_tokens: Vec<u32>,
    /// Last allowed first timestamp, in timestamp steps (faster-whisper: 1.0 s → 50).
    pub max_initial_timestamp_index: Option<u32>,
    /// CTranslate2's `max_length` (faster-whisper passes 448).
    pub max_length: usize,
}

impl Default for DecodeOptions {
    /// faster-whisper's defaults, except that both suppression lists are empty: fill them
    /// from the model's `config.json`.
    fn default() -> DecodeOptions {
        DecodeOptions {
            without_timestamps: false,
            suppress_blank: true,
            suppress_tokens: Vec::new(),
            suppress_blank_tokens: Vec::new(),
            max_initial_timestamp_index: Some(50),
            max_length: 448,
        }
    }
}

/// Outcome of decoding one window.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeResult {
    /// Generated ids, without prompt, forced prefix and `<|endoftext|>`.
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probabilities after the forced prefix, `<|endoftext|>`
    /// included (float32 sum).
    pub sum_logprob: f64,
    /// faster-whisper's `score * len^length_penalty / (len + 1)`, where `len` counts the
    /// forced prefix and `tokens` (CTranslate2 returns both); `sum_logprob / (len + 1)`.
    pub avg_logprob: f64,
    /// Softmax probability of the no-speech token at the `<|startoftranscript|>` position.
    pub no_speech_prob: f32,
    /// CTranslate2's score: `sum_logprob / len^length_penalty`, in float32.
    pub score: f64,
}

/// The error of a step model (a graph run, or a stand-in), carried through decoding.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// Why decoding could not run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The step model failed.
    #[error("decoder step: {0}")]
    Step(#[source] StepError),
    /// The prompt has no `<|startoftranscript|>`.
    #[error("prompt has no <|startoftranscript|> (id {sot})")]
    NoStartOfTranscript { sot: u32 },
    /// A prompt id is outside the vocabulary.
    #[error("prompt token {id} at index {index} is outside the vocabulary of {n_vocab}")]
    PromptTokenOutOfRange {
        index: usize,
        id: u32,
        n_vocab: usize,
    },
    /// The special ids are inconsistent with each other or the vocabulary size.
    #[error("inconsistent special ids: {0:?}")]
    BadSpecialIds(SpecialIds),
    /// `without_timestamps` disagrees with whether the prompt ends with `<|notimestamps|>`.
    #[error(
        "without_timestamps = {without_timestamps} disagrees with the prompt \
         (task tokens end with <|notimestamps|>: {prompt_has_no_timestamps})"
    )]
    TimestampModeMismatch {
        without_timestamps: bool,
        prompt_has_no_timestamps: bool,
    },
    /// The prompt leaves no room for a generated token.
    #[error(
        "prompt of {prompt_len} tokens leaves no room to generate within max_length {max_length}"
    )]
    PromptTooLong {
        prompt_len: usize,
        max_length: usize,
    },
    /// The model returned a different number of logit rows than positions requested.
    #[error("decoding step {step}: model returned {got} logit rows for {expected} positions")]
    LogitRows {
        step: usize,
        expected: usize,
        got: usize,
    },
    /// The model returned a logit row of the wrong length.
    #[error(
        "decoding step {step}: logit row {row} has length {got}, expected n_vocab = {expected}"
    )]
    LogitLength {
        step: usize,
        row: usize,
        expected: usize,
        got: usize,
    },
    /// Every token was suppressed (or the logits hold no finite value).
    #[error("decoding step {step}: no token left to choose after filtering")]
    NothingToChoose { step: usize },
    /// The model returned a different number of sequences than the batch holds.
    #[error("model returned {got} sequences for a batch of {expected}")]
    BatchSize { expected: usize, got: usize },
    /// Beam size 0 or above the limit, patience ≤ 0 or too small for one hypothesis,
    /// non-finite length penalty, or `2 × beam_size` above the vocabulary size.
    #[error(
        "unusable beam options (beam size {}, patience {}, length penalty {}): {reason}",
        options.beam_size,
        options.patience,
        options.length_penalty
    )]
    BadBeamOptions {
        options: BeamOptions,
        reason: String,
    },
    /// Negative or non-finite temperature, or a number of samples of 0 or above the limit.
    #[error("unusable sampling options (temperature {temperature}, best_of {best_of}): {reason}")]
    BadSampling {
        temperature: f32,
        best_of: usize,
        reason: String,
    },
    /// The fallback has no temperature to try.
    #[error("the temperature fallback has an empty list of temperatures")]
    NoTemperatures,
    /// A first try decoded elsewhere was given, but the first temperature samples.
    #[error("a result decoded beforehand needs a first temperature of 0, not {0}")]
    FirstTryNotBeamSearch(f32),
}

impl From<StepError> for DecodeError {
    /// A decoding error that went through a step model (e.g. [`SingleSequence`]) comes
    /// back as itself.
    fn from(e: StepError) -> DecodeError {
        match e.downcast::<DecodeError>() {
            Ok(d) => *d,
            Err(e) => DecodeError::Step(e),
        }
    }
}

/// A logit filter: disables tokens given the tokens sampled so far in this window
/// (excluding the prompt and any forced prefix).
pub trait LogitFilter {
    /// Sets disallowed entries of `logits` to −∞.
    fn apply(&self, logits: &mut [f32], sampled: &[u32]);
}

/// Disables `ids` in `logits`, ignoring ids outside it.
fn disable(logits: &mut [f32], ids: impl IntoIterator<Item = u32>) {
    for id in ids {
        if let Some(x) = logits.get_mut(id as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
}

/// Disables the id range `[from, to)`, clamped to `logits`.
fn disable_range(logits: &mut [f32], from: u32, to: usize) {
    let to = to.min(logits.len());
    let from = (from as usize).min(to);
    logits[from..to].fill(f32::NEG_INFINITY);
}

/// Suppresses a fixed set of tokens at every step (CTranslate2's `disable_ids`).
#[derive(Debug, Clone, Default)]
pub struct SuppressTokens {
    /// Ids to suppress.
    pub ids: Vec<u32>,
}

impl LogitFilter for SuppressTokens {
    fn apply(&self, logits: &mut [f32], _sampled: &[u32]) {
        disable(logits, self.ids.iter().copied());
    }
}

/// Suppresses tokens at the first sampled step only (blank and `<|endoftext|>`).
#[derive(Debug, Clone, Default)]
pub struct SuppressBlank {
    /// Ids to suppress at the first step.
    pub ids: Vec<u32>,
}

impl LogitFilter for SuppressBlank {
    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        if sampled.is_empty() {
            disable(logits, self.ids.iter().copied());
        }
    }
}

/// Whisper's timestamp rules, as CTranslate2 applies them.
#[derive(Debug, Clone)]
pub struct TimestampRules {
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|notimestamps|>`, never sampled.
    pub no_timestamps: u32,
    /// First timestamp id.
    pub timestamp_begin: u32,
    /// Last timestamp id allowed at the first step (absolute id); `None` = no limit.
    pub max_initial_timestamp: Option<u32>,
    /// Whether the first step must be a timestamp. CTranslate2 only enforces this when
    /// no forced prefix follows the task tokens.
    pub first_step_rules: bool,
}

impl LogitFilter for TimestampRules {
    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let n = logits.len();
        let tb = self.timestamp_begin;
        disable(logits, [self.no_timestamps]);

        let Some(&last) = sampled.last() else {
            if self.first_step_rules {
                disable_range(logits, 0, tb as usize);
                if let Some(max_id) = self.max_initial_timestamp {
                    disable_range(logits, max_id.saturating_add(1), n);
                }
            }
            return;
        };

        if last >= tb {
            // A lone first timestamp counts as a pair: the next token must be text.
            let penultimate_is_timestamp = sampled.len() < 2 || sampled[sampled.len() - 2] >= tb;
            if penultimate_is_timestamp {
                disable_range(logits, tb, n);
                // All timestamps are gone, so the probability rule below cannot fire.
                return;
            }
            // A single closing timestamp: the next is a timestamp >= it, or the end.
            disable_range(logits, 0, self.eot as usize);
            disable_range(logits, tb, last as usize);
        } else if let Some(&prev_ts) = sampled.iter().rev().find(|&&t| t >= tb) {
            // Timestamps never decrease and each segment has a nonzero length.
            disable_range(logits, tb, prev_ts as usize + 1);
        }

        // If the timestamps together are more likely than any single text token, the next
        // token must be a timestamp. Both sides are log-probabilities with the same
        // normaliser, so it cancels: the rule compares the timestamps' log-sum-exp with the
        // largest text logit (in f64), without normalising all 51,865 logits (a pass of
        // exponentials that took about a quarter of a millisecond a row, every step).
        let split = (tb as usize).min(n);
        let timestamp_mass = logsumexp_f64(&logits[split..]);
        let max_text = row_max(&logits[..split]);
        if timestamp_mass > max_text as f64 {
            disable_range(logits, 0, split);
        }
    }
}

/// `x − max − ln Σ exp(x − max)`, with the sum in float64 and −∞ entries kept at −∞.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    match log_softmax_shift(logits) {
        Some(shift) => logits.iter().map(|&x| x + shift).collect(),
        None => vec![f32::NEG_INFINITY; logits.len()],
    }
}

/// What [`log_softmax`] adds to every logit, `−max − ln Σ exp(x − max)`, or `None` when
/// every entry is −∞ or NaN (then every log-probability is −∞). Decoding ranks tokens by
/// `x + shift` without writing the shifted row out.
fn log_softmax_shift(logits: &[f32]) -> Option<f32> {
    let max = row_max(logits);
    if max == f32::NEG_INFINITY {
        return None;
    }
    // Vectorised, within a few units in the last place of the sequential sum of correctly
    // rounded exponentials (4× faster on a vocabulary row); the f32 shift is the same but
    // in the rarest of rounding ties.
    let sum = amanuensis_kernels::cpu::sum_exp_f64(logits, max);
    Some((-(max as f64) - sum.ln()) as f32)
}

/// The log-probability `x + shift` of a logit (−∞ for a row without a finite entry): the
/// bits [`log_softmax`] writes.
#[inline(always)]
fn shifted(x: f32, shift: Option<f32>) -> f32 {
    match shift {
        Some(s) => x + s,
        None => f32::NEG_INFINITY,
    }
}

/// The largest entry that is not NaN (−∞ for none), over 16 lanes so that it vectorises.
fn row_max(x: &[f32]) -> f32 {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let chunks = x.chunks_exact(L);
    let mut max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for l in 0..L {
            // A NaN never compares greater, so it is passed over as `f32::max` does.
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    for v in lanes {
        max = max.max(v);
    }
    max
}

/// `ln Σ exp(x)`; −∞ for an empty or all-−∞ slice.
#[cfg(test)]
fn logsumexp(x: &[f32]) -> f32 {
    logsumexp_f64(x) as f32
}

/// `ln Σ exp(x)` in f64; −∞ for an empty or all-−∞ slice.
fn logsumexp_f64(x: &[f32]) -> f64 {
    let max = row_max(x);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = x.iter().map(|&v| (v as f64 - max as f64).exp()).sum();
    max as f64 + sum.ln()
}

/// The argmax of the row's [`log_softmax`] and its log-probability, without writing the
/// row out: the log-probability is monotone in the logit, so its largest value is that of
/// the largest logit, and the lowest index holding that value wins, as in [`argmax`] of
/// the whole row (two logits may round to one log-probability).
fn best_token(logits: &[f32]) -> Option<(u32, f32)> {
    let shift = log_softmax_shift(logits)?;
    let best = row_max(logits) + shift;
    let id = logits.iter().position(|&x| x + shift == best)?;
    Some((id as u32, best))
}

/// Index and value of the largest entry; the lowest index wins ties, NaN never wins.
#[cfg(test)]
fn argmax(x: &[f32]) -> Option<(u32, f32)> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i as u32, v)),
        }
    }
    best
}

/// Checks the model's answer to one step.
fn check_logits(
    rows: &[Vec<f32>],
    expected_rows: usize,
    n_vocab: usize,
    step: usize,
) -> Result<(), DecodeError> {
    if rows.len() != expected_rows {
        return Err(DecodeError::LogitRows {
            step,
            expected: expected_rows,
            got: rows.len(),
        });
    }
    for (row, r) in rows.iter().enumerate() {
        if r.len() != n_vocab {
            return Err(DecodeError::LogitLength {
                step,
                row,
                expected: n_vocab,
                got: r.len(),
            });
        }
    }
    Ok(())
}

/// How CTranslate2 splits a Whisper prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PromptLayout {
    /// Index of `<|startoftranscript|>`.
    sot_index: usize,
    /// Index one past the task tokens; tokens from here on are a forced prefix.
    task_end: usize,
}

fn prompt_layout(prompt: &[u32], ids: &SpecialIds) -> Result<PromptLayout, DecodeError> {
    let sot_index = prompt
        .iter()
        .position(|&t| t == ids.sot)
        .ok_or(DecodeError::NoStartOfTranscript { sot: ids.sot })?;
    let mut task_end = sot_index;
    while task_end < prompt.len() && (ids.sot..=ids.no_timestamps).contains(&prompt[task_end]) {
        task_end += 1;
    }
    Ok(PromptLayout {
        sot_index,
        task_end,
    })
}

fn check_special_ids(ids: &SpecialIds) -> Result<(), DecodeError> {
    let n = ids.n_vocab;
    let ok = ids.eot < ids.sot
        && ids.sot < ids.no_timestamps
        && ids.no_timestamps < ids.timestamp_begin
        && (ids.timestamp_begin as usize) < n
        && (ids.no_speech as usize) < n;
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadSpecialIds(*ids))
    }
}

/// A validated prompt, with the limits and logit filters CTranslate2 derives from it.
struct Plan {
    layout: PromptLayout,
    /// Forced prefix tokens after the task tokens.
    prefix_len: usize,
    /// Tokens that may be generated after the forced prefix.
    free_steps: usize,
    suppress: SuppressTokens,
    blank: SuppressBlank,
    timestamps: Option<TimestampRules>,
}

impl Plan {
    fn new(prompt: &[u32], ids: &SpecialIds, opts: &DecodeOptions) -> Result<Plan, DecodeError> {
        check_special_ids(ids)?;
        if let Some((index, &id)) = prompt
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= ids.n_vocab)
        {
            return Err(DecodeError::PromptTokenOutOfRange {
                index,
                id,
                n_vocab: ids.n_vocab,
            });
        }
        let layout = prompt_layout(prompt, ids)?;
        let prompt_has_no_timestamps = prompt[layout.task_end - 1] == ids.no_timestamps;
        if prompt_has_no_timestamps != opts.without_timestamps {
            return Err(DecodeError::TimestampModeMismatch {
                without_timestamps: opts.without_timestamps,
                prompt_has_no_timestamps,
            });
        }
        let prefix_len = prompt.len() - layout.task_end;

        // CTranslate2 feeds everything before the last task token as the "prompt" (start_step
        // tokens) and allows min(max_length / 2, max_length - start_step) decoding steps.
        // The forced prefix is returned with the hypothesis (return_prefix), so its steps
        // count against that limit.
        let start_step = layout.task_end - 1;
        let total = (opts.max_length / 2).min(opts.max_length.saturating_sub(start_step));
        let free_steps = total.saturating_sub(prefix_len);
        if free_steps == 0 {
            return Err(DecodeError::PromptTooLong {
                prompt_len: prompt.len(),
                max_length: opts.max_length,
            });
        }

        let suppress = SuppressTokens {
            ids: opts.suppress_tokens.clone(),
        };
        let blank = SuppressBlank {
            ids: if opts.suppress_blank {
                opts.suppress_blank_tokens.clone()
            } else {
                Vec::new()
            },
        };
        let timestamps = (!opts.without_timestamps).then(|| TimestampRules {
            eot: ids.eot,
            no_timestamps: ids.no_timestamps,
            timestamp_begin: ids.timestamp_begin,
            max_initial_timestamp: opts
                .max_initial_timestamp_index
                .map(|i| ids.timestamp_begin.saturating_add(i)),
            first_step_rules: prefix_len == 0,
        });
        Ok(Plan {
            layout,
            prefix_len,
            free_steps,
            suppress,
            blank,
            timestamps,
        })
    }

    /// The logit positions of the prompt step: `<|startoftranscript|>` and the last token.
    fn prompt_positions(&self, prompt: &[u32]) -> [usize; 2] {
        [self.layout.sot_index, prompt.len() - 1]
    }

    /// Applies CTranslate2's processors in its order: suppressed tokens, blank suppression,
    /// timestamp rules (which read the logits left by the first two).
    fn filter(&self, logits: &mut [f32], sampled: &[u32]) {
        self.suppress.apply(logits, sampled);
        self.blank.apply(logits, sampled);
        if let Some(t) = &self.timestamps {
            t.apply(logits, sampled);
        }
    }

    /// Builds the result from a hypothesis and its cumulative float32 log-probability.
    fn finish(
        &self,
        tokens: Vec<u32>,
        sum_logprob: f32,
        length_penalty: f32,
        no_speech_prob: f32,
    ) -> DecodeResult {
        let len = self.prefix_len + tokens.len();
        let score = final_score(sum_logprob, len, length_penalty);
        // faster-whisper recovers the cumulative log-probability in float64 and averages
        // over len + 1 tokens (the end token). With len 0 this is NaN, as in the references.
        let avg_logprob =
            score as f64 * (len as f64).powf(length_penalty as f64) / (len + 1) as f64;
        DecodeResult {
            tokens,
            sum_logprob: sum_logprob as f64,
            avg_logprob,
            no_speech_prob,
            score: score as f64,
        }
    }
}

/// CTranslate2's finalized score: `cum / len^length_penalty`, in float32.
fn final_score(sum_logprob: f32, len: usize, length_penalty: f32) -> f32 {
    sum_logprob / (len as f32).powf(length_penalty)
}

/// Softmax probability of `id` from raw logits.
fn probability(logits: &[f32], id: u32) -> f32 {
    log_softmax(logits)[id as usize].exp()
}

/// Greedy (temperature 0, `beam_size=1`) decoding of one window.
///
/// The first [`StepModel::step`] call feeds the whole prompt and asks for the logits at the
/// `<|startoftranscript|>` position (for the no-speech probability) and at the last
/// position; every later call feeds the single token just chosen and asks for position 0.
/// Each step filters the logits (suppressed tokens, blank suppression at the first step,
/// timestamp rules), takes the argmax of their log-softmax (lowest id on ties) and adds
/// that log-probability to the sum. Decoding stops at `<|endoftext|>` or after
/// `min(max_length / 2, max_length − (task_end − 1))` decoding steps, CTranslate2's limit,
/// which a forced prefix counts against.
pub fn greedy_decode(
    model: &mut dyn StepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
) -> Result<DecodeResult, DecodeError> {
    greedy_core(model, prompt, ids, opts, 1.0)
}

/// Greedy decoding with CTranslate2's final score `cum / len^length_penalty`.
fn greedy_core(
    model: &mut dyn StepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    length_penalty: f32,
) -> Result<DecodeResult, DecodeError> {
    let plan = Plan::new(prompt, ids, opts)?;
    let positions = plan.prompt_positions(prompt);
    let mut rows = model.step(prompt, &positions)?;
    check_logits(&rows, positions.len(), ids.n_vocab, 0)?;
    let mut logits = rows.pop().expect("two rows checked above");
    let no_speech_prob = probability(&rows[0], ids.no_speech);

    let mut generated: Vec<u32> = Vec::new();
    // CTranslate2 accumulates the score in float32.
    let mut sum_logprob = 0f32;
    for step in 0..plan.free_steps {
        plan.filter(&mut logits, &generated);
        let (id, logprob) = match best_token(&logits) {
            Some((id, lp)) if lp > f32::NEG_INFINITY => (id, lp),
            _ => return Err(DecodeError::NothingToChoose { step }),
        };
        sum_logprob += logprob;
        if id == ids.eot {
            break;
        }
        generated.push(id);
        if step + 1 == plan.free_steps {
            break;
        }
        let mut rows = model.step(&[id], &[0])?;
        check_logits(&rows, 1, ids.n_vocab, step + 1)?;
        logits = rows.pop().expect("one row checked above");
    }
    Ok(plan.finish(generated, sum_logprob, length_penalty, no_speech_prob))
}

// ---------------------------------------------------------------------------------------
// Batched decoding: beam search, sampling, temperature fallback

/// A KV-cached decoder holding a batch of sequences that share one audio window.
///
/// Contract, as the decoding policies use it: after [`reset`](Self::reset) the model holds
/// one empty sequence. [`step`](Self::step) appends one row of tokens to every sequence
/// (rows in batch order) and returns, per sequence, the logits at the requested row
/// indices. [`reorder`](Self::reorder) replaces the batch by copies of existing sequences:
/// new sequence `i` is old sequence `src[i]` with its whole cached state (self-attention
/// keys/values of every layer, and its length); indices may repeat or be left out, so the
/// batch may grow (1 → beam size) or shrink (finished samples dropped). The window's
/// cross-attention keys/values are the same for every sequence.
pub trait BatchStepModel {
    /// Feed one row of tokens per sequence (all rows the same length) after everything
    /// already fed for that sequence; return, per sequence, the logits (n_vocab) at each
    /// index of `logit_positions` (indices into the row).
    fn step(
        &mut self,
        tokens: &[Vec<u32>],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<Vec<f32>>>, StepError>;
    /// Re-arrange the batch: afterwards sequence i continues the cached state of old
    /// sequence src[i]. src may repeat indices and change the batch size (e.g. 1 → 5
    /// after the prompt).
    fn reorder(&mut self, src: &[usize]) -> Result<(), StepError>;
    /// Forget everything fed: afterwards the batch is one empty sequence.
    fn reset(&mut self) -> Result<(), StepError>;
}

/// Presents a [`BatchStepModel`] holding a single sequence as a [`StepModel`].
pub struct SingleSequence<'a>(pub &'a mut dyn BatchStepModel);

impl StepModel for SingleSequence<'_> {
    fn step(
        &mut self,
        tokens: &[u32],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<f32>>, StepError> {
        let mut out = self.0.step(&[tokens.to_vec()], logit_positions)?;
        if out.len() != 1 {
            return Err(DecodeError::BatchSize {
                expected: 1,
                got: out.len(),
            }
            .into());
        }
        Ok(out.pop().expect("one sequence checked above"))
    }
}

/// Checks the model's answer to one batched step and returns it.
fn check_batch(
    out: Vec<Vec<Vec<f32>>>,
    sequences: usize,
    rows: usize,
    n_vocab: usize,
    step: usize,
) -> Result<Vec<Vec<Vec<f32>>>, DecodeError> {
    if out.len() != sequences {
        return Err(DecodeError::BatchSize {
            expected: sequences,
            got: out.len(),
        });
    }
    for seq in &out {
        check_logits(seq, rows, n_vocab, step)?;
    }
    Ok(out)
}

/// Feeds one token per sequence and returns each sequence's logits.
fn step_tokens(
    model: &mut dyn BatchStepModel,
    tokens: &[u32],
    n_vocab: usize,
    step: usize,
) -> Result<Vec<Vec<f32>>, DecodeError> {
    let rows: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    let out = check_batch(model.step(&rows, &[0])?, tokens.len(), 1, n_vocab, step)?;
    Ok(out
        .into_iter()
        .map(|mut r| r.pop().expect("one row checked"))
        .collect())
}

/// Feeds the prompt as a batch of one; returns the no-speech probability at
/// `<|startoftranscript|>` and the logits at the last prompt position.
fn step_prompt(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    plan: &Plan,
    ids: &SpecialIds,
) -> Result<(f32, Vec<f32>), DecodeError> {
    let positions = plan.prompt_positions(prompt);
    let mut out = check_batch(
        model.step(&[prompt.to_vec()], &positions)?,
        1,
        2,
        ids.n_vocab,
        0,
    )?;
    let mut rows = out.pop().expect("one sequence checked");
    let last = rows.pop().expect("two rows checked");
    Ok((probability(&rows[0], ids.no_speech), last))
}

/// Largest beam size or number of samples accepted: it bounds the per-step allocations
/// and the KV caches, which grow with it (whisper-base at 1024 beams took 1.7 GB and 25 s
/// for 11 s of audio; a larger model's caches are several times as large). Beam search
/// gains nothing measurable past 10 or so.
pub const MAX_HYPOTHESES: usize = 128;

/// Beam search parameters (faster-whisper's `beam_size`, `patience`, `length_penalty`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamOptions {
    /// Number of beams; 1 means greedy decoding, as CTranslate2 then switches strategy.
    pub beam_size: usize,
    /// The search stops once `round(beam_size × patience)` hypotheses have finished.
    pub patience: f32,
    /// Final scores are `cum_logprob / length^length_penalty`; 0 also enables early exit.
    pub length_penalty: f32,
}

impl BeamOptions {
    /// What makes these options unusable for any vocabulary, if anything: a beam size of 0
    /// or above [`MAX_HYPOTHESES`], a patience that is not a positive number or leaves
    /// `round(beam_size × patience)` below one hypothesis, or a length penalty that is not
    /// finite.
    pub fn problem(&self) -> Option<String> {
        let b = self.beam_size;
        if !(1..=MAX_HYPOTHESES).contains(&b) {
            return Some(format!("the beam size must be 1 to {MAX_HYPOTHESES}"));
        }
        if !(self.patience.is_finite() && self.patience > 0.0) {
            return Some("the patience must be a positive number".into());
        }
        // CTranslate2 rejects num_hypotheses (1) > round(beam_size × patience).
        if (b as f32 * self.patience).round() < 1.0 {
            return Some(format!(
                "beam size × patience = {} rounds to no finished hypothesis",
                b as f32 * self.patience
            ));
        }
        if !self.length_penalty.is_finite() {
            return Some("the length penalty must be a finite number".into());
        }
        None
    }

    /// [`DecodeError::BadBeamOptions`] if [`Self::problem`] finds one.
    pub fn check(&self) -> Result<(), DecodeError> {
        match self.problem() {
            Some(reason) => Err(DecodeError::BadBeamOptions {
                options: *self,
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// What makes sampling at `temperature` with `best_of` samples unusable, if anything.
fn sampling_problem(temperature: f32, best_of: usize) -> Option<String> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Some("the temperature must be a finite number, 0 or above".into());
    }
    if !(1..=MAX_HYPOTHESES).contains(&best_of) {
        return Some(format!("best_of must be 1 to {MAX_HYPOTHESES}"));
    }
    None
}

impl Default for BeamOptions {
    /// faster-whisper's defaults: 5 beams, patience 1, length penalty 1.
    fn default() -> BeamOptions {
        BeamOptions {
            beam_size: 5,
            patience: 1.0,
            length_penalty: 1.0,
        }
    }
}

/// The score CTranslate2 gives the first free step's secondary beams after a forced
/// prefix, and to `<|endoftext|>` candidates it discards there.
const PREFIX_SECONDARY_SCORE: f32 = -1e10;

/// One active beam: its tokens after the forced prefix and cumulative log-probability.
#[derive(Debug, Clone)]
struct Beam {
    seq: Vec<u32>,
    score: f32,
}

/// A scored continuation: `beam`'s sequence followed by `token`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
}

/// Ordering key: NaN ranks below everything.
fn rank_key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// The `k` best `beam score + log-probability` over all beams and tokens, best first;
/// equal scores keep the lower flat index (beam × n_vocab + token) first. Each beam's row
/// is given as its filtered logits and their [`log_softmax_shift`]: the log-probabilities
/// are never written out. Each beam gives its own `k` best ([`beam_top`], on both cores),
/// and the best `k` of those, in that order, are the best `k` of all.
fn top_candidates(beams: &[Beam], rows: &[(&[f32], Option<f32>)], k: usize) -> Vec<Candidate> {
    let per_beam: Vec<Vec<Candidate>> = beams
        .par_iter()
        .zip(rows)
        .enumerate()
        .map(|(b, (beam, &(logits, shift)))| beam_top(b, beam.score, logits, shift, k))
        .collect();
    // In flat order; a stable sort on the score keeps equal scores in that order.
    let mut all: Vec<Candidate> = per_beam.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        rank_key(b.score)
            .partial_cmp(&rank_key(a.score))
            .expect("rank keys are never NaN")
    });
    all.truncate(k);
    all
}

/// One beam's `k` best candidates, `score + (x + shift)` over its row, in token order
/// (those [`top_candidates_of_rows`] would keep of the row alone). The candidates' rank
/// never falls as the logit rises, so they are found from the row's k-th largest logit:
/// every token whose score is above that logit's, and the first `k` whose score equals it
/// (a lower logit may round to the same score). A row with fewer than `k` finite logits
/// is ranked in full.
fn beam_top(b: usize, score: f32, logits: &[f32], shift: Option<f32>, k: usize) -> Vec<Candidate> {
    let candidate = |token: usize| Candidate {
        beam: b,
        token: token as u32,
        score: score + shifted(logits[token], shift),
    };
    let kth = kth_largest(logits, k);
    let floor = rank_key(score + shifted(kth, shift));
    if floor == f32::NEG_INFINITY {
        let row: Vec<f32> = logits.iter().map(|&x| shifted(x, shift)).collect();
        return top_candidates_of_rows(
            &[Beam {
                seq: Vec::new(),
                score,
            }],
            &[&row],
            k,
        )
        .into_iter()
        .map(|c| Candidate { beam: b, ..c })
        .collect();
    }
    let (mut above, mut level) = (Vec::new(), Vec::new());
    const L: usize = 16;
    for (c, block) in logits.chunks(L).enumerate() {
        // A block whose largest logit scores below the floor holds no candidate.
        if score + shifted(lane_max(block), shift) < floor {
            continue;
        }
        for (l, &x) in block.iter().enumerate() {
            // NaN never compares: its rank, −∞, is below the floor.
            let s = score + shifted(x, shift);
            if s > floor {
                above.push(candidate(c * L + l));
            } else if s == floor && level.len() < k {
                level.push(candidate(c * L + l));
            }
        }
    }
    above.extend(level);
    above.sort_by_key(|c| c.token);
    above
}

/// The largest entry of a block of at most 16 that is not NaN (−∞ for none), lane by lane
/// so that a whole block vectorises.
#[inline(always)]
fn lane_max(block: &[f32]) -> f32 {
    const L: usize = 16;
    if block.len() < L {
        return block
            .iter()
            .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    }
    let mut lanes = [f32::NEG_INFINITY; L];
    for l in 0..L {
        lanes[l] = if block[l] > lanes[l] {
            block[l]
        } else {
            lanes[l]
        };
    }
    lanes
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
}

/// The `k`-th largest entry of `x` that is not NaN, counting repeats; −∞ if fewer than `k`.
/// Blocks of 16 wholly below the current k-th are passed over, so a vocabulary row is
/// nearly one vectorised pass of maxima.
fn kth_largest(x: &[f32], k: usize) -> f32 {
    const L: usize = 16;
    // Descending, at most k.
    let mut best: Vec<f32> = Vec::with_capacity(k + 1);
    let offer = |v: f32, best: &mut Vec<f32>| {
        if v.is_nan() || (best.len() == k && v <= best[k - 1]) {
            return;
        }
        let at = best.partition_point(|&b| b >= v);
        best.insert(at, v);
        best.truncate(k);
    };
    for c in x.chunks(L) {
        if best.len() == k && lane_max(c) <= best[k - 1] {
            continue;
        }
        for &v in c {
            offer(v, &mut best);
        }
    }
    if k == 0 || best.len() < k {
        f32::NEG_INFINITY
    } else {
        best[k - 1]
    }
}

/// The `k` best `beam score + log-probability` over all beams and tokens, best first;
/// equal scores keep the lower flat index (beam × n_vocab + token) first, from rows of
/// log-probabilities written out: the definition [`top_candidates`] keeps, and its
/// fallback for a row of fewer than `k` finite logits.
fn top_candidates_of_rows(beams: &[Beam], log_probs: &[&[f32]], k: usize) -> Vec<Candidate> {
    let mut top: Vec<Candidate> = Vec::with_capacity(k + 1);
    for (b, (beam, lp)) in beams.iter().zip(log_probs).enumerate() {
        for (token, &x) in lp.iter().enumerate() {
            // CTranslate2 adds the beam's score to the log-probabilities in float32.
            let score = beam.score + x;
            let key = rank_key(score);
            if top.len() == k && key <= rank_key(top[k - 1].score) {
                continue;
            }
            // Later flat indices go after equal scores.
            let at = top.partition_point(|c| rank_key(c.score) >= key);
            top.insert(
                at,
                Candidate {
                    beam: b,
                    token: token as u32,
                    score,
                },
            );
            top.truncate(k);
        }
    }
    top
}

/// Beam search of one window, as CTranslate2's `BeamSearch` runs for Whisper.
///
/// Starts by [`BatchStepModel::reset`], feeds the prompt as a batch of one, then expands to
/// `beam_size` sequences with [`BatchStepModel::reorder`]. Each step filters every beam's
/// logits on its own history (suppressed tokens, blank suppression at the first step,
/// timestamp rules), adds the beam's cumulative log-probability to their log-softmax and
/// keeps the `2 × beam_size` best candidates over all beams and tokens. Among the first
/// `beam_size` candidates, `<|endoftext|>` ones finish a hypothesis and are replaced by the
/// next candidates that are not `<|endoftext|>`. The search stops once
/// `round(beam_size × patience)` hypotheses have finished (or, with length penalty 0, as
/// soon as the best candidate finishes), or at the length limit, where every remaining beam
/// finishes. The result is the hypothesis with the best `cum / length^length_penalty`.
/// `beam_size` 1 is greedy decoding with that final score.
pub fn beam_search(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    beam: &BeamOptions,
) -> Result<DecodeResult, DecodeError> {
    let b = beam.beam_size;
    beam.check()?;
    if 2 * b > ids.n_vocab {
        return Err(DecodeError::BadBeamOptions {
            options: *beam,
            reason: format!(
                "twice the beam size is above the vocabulary's {} tokens",
                ids.n_vocab
            ),
        });
    }
    model.reset()?;
    if b == 1 {
        // CTranslate2 uses its greedy search for beam_size 1; patience plays no part.
        return greedy_core(
            &mut SingleSequence(model),
            prompt,
            ids,
            opts,
            beam.length_penalty,
        );
    }
    // At least 1: `check` refused options that round to none.
    let max_finished = (b as f32 * beam.patience).round() as usize;
    let plan = Plan::new(prompt, ids, opts)?;
    let lp = beam.length_penalty;
    // More candidates than beams, so that finished ones can be replaced.
    let n_candidates = 2 * b;
    // With length penalty 0 scores need no normalisation: the first finished best beam wins.
    let early_exit = lp == 0.0;

    let (no_speech_prob, first_logits) = step_prompt(model, prompt, &plan, ids)?;
    let has_prefix = plan.prefix_len > 0;
    // Without a prefix, CTranslate2 runs its first step on the single prompt sequence.
    // With one, the prefix steps leave beam_size copies of it, the first scored 0 and the
    // others −1e10, all fed the same tokens: one logits row serves them all.
    let mut beams: Vec<Beam> = if has_prefix {
        (0..b)
            .map(|i| Beam {
                seq: Vec::new(),
                score: if i == 0 { 0.0 } else { PREFIX_SECONDARY_SCORE },
            })
            .collect()
    } else {
        vec![Beam {
            seq: Vec::new(),
            score: 0.0,
        }]
    };
    // Logits of each model sequence; at the first step every beam reads sequence 0.
    let mut rows: Vec<Vec<f32>> = vec![first_logits];
    let mut finished: Vec<(Vec<u32>, f32)> = Vec::new();
    let mut top_beam_finished = false;

    for step in 0..plan.free_steps {
        let first = step == 0;
        // The rows are independent: filtered and normalised on both cores.
        let shifts: Vec<Option<f32>> = rows
            .par_iter_mut()
            .enumerate()
            .map(|(r, logits)| {
                plan.filter(logits, &beams[r].seq);
                log_softmax_shift(logits)
            })
            .collect();
        let row_of = |beam: usize| if first { 0 } else { beam };
        let per_beam: Vec<(&[f32], Option<f32>)> = (0..beams.len())
            .map(|i| (rows[row_of(i)].as_slice(), shifts[row_of(i)]))
            .collect();
        let mut cands = top_candidates(&beams, &per_beam, n_candidates);
        if cands.len() < n_candidates || rank_key(cands[0].score) == f32::NEG_INFINITY {
            return Err(DecodeError::NothingToChoose { step });
        }
        if first && has_prefix {
            // At the first free step after a prefix, CTranslate2 replaces an end token
            // in any but the best candidate by token 0 with score −1e10 (short
            // hypotheses would otherwise dominate), continuing the first beam.
            for c in cands.iter_mut().skip(1).filter(|c| c.token == ids.eot) {
                *c = Candidate {
                    beam: 0,
                    token: 0,
                    score: PREFIX_SECONDARY_SCORE,
                };
            }
        }

        let is_last = step + 1 == plan.free_steps;
        let mut chosen: Vec<usize> = Vec::with_capacity(b);
        let mut next_secondary = b;
        for k in 0..b {
            let c = cands[k];
            let mut pick = k;
            if c.token == ids.eot || is_last {
                if k == 0 {
                    top_beam_finished = true;
                }
                // The end token is not part of the hypothesis, but its log-probability is.
                let mut toks = beams[c.beam].seq.clone();
                if c.token != ids.eot {
                    toks.push(c.token);
                }
                finished.push((toks, c.score));
                // The slot goes to the next secondary candidate that is not an end token;
                // if none is left, the finished candidate itself stays active.
                if let Some(j) = (next_secondary..n_candidates).find(|&j| cands[j].token != ids.eot)
                {
                    pick = j;
                    next_secondary = j + 1;
                }
            }
            chosen.push(pick);
        }

        let done = is_last
            || if early_exit {
                top_beam_finished && !finished.is_empty()
            } else {
                finished.len() >= max_finished
            };
        if done {
            break;
        }

        let src: Vec<usize> = chosen.iter().map(|&j| row_of(cands[j].beam)).collect();
        let tokens: Vec<u32> = chosen.iter().map(|&j| cands[j].token).collect();
        beams = chosen
            .iter()
            .map(|&j| {
                let c = cands[j];
                let mut seq = beams[c.beam].seq.clone();
                seq.push(c.token);
                Beam {
                    seq,
                    score: c.score,
                }
            })
            .collect();
        model.reorder(&src)?;
        rows = step_tokens(model, &tokens, ids.n_vocab, step + 1)?;
    }

    // Highest final score wins; ties keep the hypothesis that finished first.
    let mut best: Option<(usize, f32)> = None;
    for (i, (toks, cum)) in finished.iter().enumerate() {
        let s = rank_key(final_score(*cum, plan.prefix_len + toks.len(), lp));
        if best.is_none_or(|(_, bs)| s > bs) {
            best = Some((i, s));
        }
    }
    let (i, _) = best.expect("the last step finishes every beam");
    let (toks, cum) = finished.swap_remove(i);
    Ok(plan.finish(toks, cum, lp, no_speech_prob))
}

/// The deterministic generator of temperature sampling (SplitMix64). Decoding keeps its
/// own: a transcript at temperature > 0 is fixed by the seed and this stream, and changing
/// the stream changes which hallucinations the fallback thresholds see (tests pin them).
#[derive(Debug, Clone)]
pub struct SampleRng(u64);

impl SampleRng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> SampleRng {
        SampleRng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Draws a token from `softmax(log_probs / temperature)`; `None` if nothing has weight.
fn draw(log_probs: &[f32], temperature: f32, rng: &mut SampleRng) -> Option<u32> {
    // CTranslate2 multiplies by 1/T in float32 before the softmax.
    let inv = 1.0f32 / temperature;
    let scaled: Vec<f32> = log_probs.iter().map(|&x| x * inv).collect();
    let max = scaled
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let weight = |x: f32| {
        if x.is_nan() {
            0.0
        } else {
            ((x - max) as f64).exp()
        }
    };
    let total: f64 = scaled.iter().map(|&x| weight(x)).sum();
    let u = rng.next_f64() * total;
    let mut acc = 0.0;
    let mut last = None;
    for (i, &x) in scaled.iter().enumerate() {
        let w = weight(x);
        if w > 0.0 {
            acc += w;
            last = Some(i as u32);
            if u < acc {
                return last;
            }
        }
    }
    // Rounding left u at the very top: the last token with weight.
    last
}

/// Temperature sampling of one window: `best_of` independent samples, as CTranslate2 runs
/// `beam_size=1, num_hypotheses=best_of, sampling_topk=0, sampling_temperature=T`.
///
/// Starts by [`BatchStepModel::reset`] and feeds the prompt as a batch of one, expanded to
/// `best_of` sequences; each step samples every unfinished sequence from
/// `softmax(filtered log-probabilities / T)` and adds the temperature-1 log-probability of
/// the drawn token to its score; finished sequences are dropped from the batch. The result
/// is the sample with the best `cum / length` (the first of equals), the one faster-whisper
/// reads. Temperature 0 is greedy decoding, as in CTranslate2. Deterministic for a seed.
pub fn sample_decode(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    temperature: f32,
    best_of: usize,
    rng_seed: u64,
) -> Result<DecodeResult, DecodeError> {
    let mut rng = SampleRng::new(rng_seed);
    sample_decode_with(
        model,
        prompt,
        ids,
        opts,
        temperature,
        best_of,
        1.0,
        &mut rng,
    )
}

/// [`sample_decode`] with a length penalty and a caller-owned generator.
#[allow(clippy::too_many_arguments)]
pub fn sample_decode_with(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    temperature: f32,
    best_of: usize,
    length_penalty: f32,
    rng: &mut SampleRng,
) -> Result<DecodeResult, DecodeError> {
    let problem = sampling_problem(temperature, best_of).or_else(|| {
        (!length_penalty.is_finite()).then(|| "the length penalty must be a finite number".into())
    });
    if let Some(reason) = problem {
        return Err(DecodeError::BadSampling {
            temperature,
            best_of,
            reason,
        });
    }
    model.reset()?;
    if temperature == 0.0 {
        // CTranslate2 takes the argmax at temperature 0: every sample is the greedy one.
        return greedy_core(
            &mut SingleSequence(model),
            prompt,
            ids,
            opts,
            length_penalty,
        );
    }
    let plan = Plan::new(prompt, ids, opts)?;
    let (no_speech_prob, first_logits) = step_prompt(model, prompt, &plan, ids)?;

    let mut samples: Vec<Beam> = vec![
        Beam {
            seq: Vec::new(),
            score: 0.0
        };
        best_of
    ];
    // Sample index of each model sequence; at the first step all read sequence 0.
    let mut alive: Vec<usize> = (0..best_of).collect();
    let mut rows: Vec<Vec<f32>> = vec![first_logits];
    for step in 0..plan.free_steps {
        let first = step == 0;
        let is_last = step + 1 == plan.free_steps;
        let shared = first.then(|| {
            let mut l = rows[0].clone();
            plan.filter(&mut l, &[]);
            log_softmax(&l)
        });
        let mut still: Vec<usize> = Vec::with_capacity(alive.len());
        let mut fed: Vec<u32> = Vec::with_capacity(alive.len());
        for (r, &s) in alive.iter().enumerate() {
            let own;
            let log_probs = match &shared {
                Some(lp) => lp,
                None => {
                    plan.filter(&mut rows[r], &samples[s].seq);
                    own = log_softmax(&rows[r]);
                    &own
                }
            };
            let id =
                draw(log_probs, temperature, rng).ok_or(DecodeError::NothingToChoose { step })?;
            // The score is the temperature-1 log-probability of the drawn token.
            samples[s].score += log_probs[id as usize];
            if id == ids.eot {
                continue;
            }
            samples[s].seq.push(id);
            if !is_last {
                still.push(r);
                fed.push(id);
            }
        }
        if still.is_empty() {
            break;
        }
        let src: Vec<usize> = if first {
            vec![0; still.len()]
        } else {
            still.clone()
        };
        if first || still.len() != alive.len() {
            model.reorder(&src)?;
        }
        alive = still.iter().map(|&r| alive[r]).collect();
        rows = step_tokens(model, &fed, ids.n_vocab, step + 1)?;
    }

    // CTranslate2 sorts the samples by final score; faster-whisper reads the first.
    let mut best = 0;
    let mut best_score = f32::NEG_INFINITY;
    for (i, s) in samples.iter().enumerate() {
        let sc = rank_key(final_score(
            s.score,
            plan.prefix_len + s.seq.len(),
            length_penalty,
        ));
        if i == 0 || sc > best_score {
            best = i;
            best_score = sc;
        }
    }
    let s = samples.swap_remove(best);
    Ok(plan.finish(s.seq, s.score, length_penalty, no_speech_prob))
}

/// faster-whisper's temperature fallback settings (`generate_with_fallback`).
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackOptions {
    /// Temperatures tried in order; 0 (or below) means beam search, above 0 sampling.
    pub temperatures: Vec<f32>,
    /// Retry when the text's compression ratio is above this.
    pub compression_ratio_threshold: Option<f64>,
    /// Retry when the average log-probability is below this.
    pub log_prob_threshold: Option<f64>,
    /// A window whose no-speech probability is above this and whose average log-probability
    /// is below `log_prob_threshold` is silence: no retry. Compared in float64, as Python does.
    pub no_speech_threshold: Option<f64>,
    /// Samples per try at temperatures above 0.
    pub best_of: usize,
    /// Beam search at temperature 0; its length penalty also scores the samples.
    pub beam: BeamOptions,
    /// Seed of the sampling generator, which runs on across the tries of one call.
    pub seed: u64,
}

impl FallbackOptions {
    /// Checks every setting a window may reach, before any is decoded: the list of
    /// temperatures (not empty, each a finite number), the beam options, and `best_of`
    /// where a temperature above 0 would sample. Otherwise a bad `best_of` would surface
    /// only when some window first needed the fallback, deep into a long recording.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.temperatures.is_empty() {
            return Err(DecodeError::NoTemperatures);
        }
        for &t in &self.temperatures {
            if !t.is_finite() {
                return Err(DecodeError::BadSampling {
                    temperature: t,
                    best_of: self.best_of,
                    reason: "every temperature must be a finite number".into(),
                });
            }
            if t > 0.0 {
                if let Some(reason) = sampling_problem(t, self.best_of) {
                    return Err(DecodeError::BadSampling {
                        temperature: t,
                        best_of: self.best_of,
                        reason,
                    });
                }
            }
        }
        self.beam.check()
    }
}

impl Default for FallbackOptions {
    /// faster-whisper's defaults.
    fn default() -> FallbackOptions {
        FallbackOptions {
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            best_of: 5,
            beam: BeamOptions::default(),
            seed: 0,
        }
    }
}

/// `str.strip()`: Python also counts U+001C..U+001F as whitespace.
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Decodes a window as faster-whisper's `generate_with_fallback` does.
///
/// Tries each temperature in turn (beam search at 0, sampling above) until a result needs
/// no fallback: its compression ratio (of `text_of(prefix + tokens)`, stripped, where
/// `text_of` decodes text tokens as the tokenizer does) is at most the threshold and its
/// average log-probability is at least the threshold; a likely-silent result (no-speech
/// probability above its threshold with a low average log-probability) also ends the
/// search. If every try fails, returns the try with the highest average log-probability
/// among those under the compression-ratio threshold (all tries if none is), the first of
/// equals, together with the LAST temperature, as faster-whisper reports it. The model is
/// reset before every try. Returns the result and the temperature reported.
pub fn decode_with_fallback(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    fb: &FallbackOptions,
    text_of: &dyn Fn(&[u32]) -> String,
) -> Result<(DecodeResult, f32), DecodeError> {
    fallback_from(model, prompt, ids, opts, fb, text_of, None)
}

/// [`decode_with_fallback`] whose first try, at the first temperature (which must be 0 or
/// below: beam search), was already decoded elsewhere (in lockstep with other windows):
/// `first` is judged as that try, and the model runs only if a fallback is needed.
pub fn decode_with_fallback_after(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    fb: &FallbackOptions,
    text_of: &dyn Fn(&[u32]) -> String,
    first: DecodeResult,
) -> Result<(DecodeResult, f32), DecodeError> {
    match fb.temperatures.first() {
        None => return Err(DecodeError::NoTemperatures),
        Some(&t) if t > 0.0 => return Err(DecodeError::FirstTryNotBeamSearch(t)),
        Some(_) => {}
    }
    fallback_from(model, prompt, ids, opts, fb, text_of, Some(first))
}

fn fallback_from(
    model: &mut dyn BatchStepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
    fb: &FallbackOptions,
    text_of: &dyn Fn(&[u32]) -> String,
    mut first: Option<DecodeResult>,
) -> Result<(DecodeResult, f32), DecodeError> {
    // Every try's settings, before the first: a bad `best_of` must not wait for the one
    // window that samples.
    fb.check()?;
    let last_temperature = *fb.temperatures.last().ok_or(DecodeError::NoTemperatures)?;
    let prefix = &prompt[prompt_layout(prompt, ids)?.task_end..];
    let mut rng = SampleRng::new(fb.seed);
    let mut all: Vec<DecodeResult> = Vec::new();
    let mut below_cr: Vec<usize> = Vec::new();
    for &temperature in &fb.temperatures {
        let result = if let Some(done) = first.take() {
            done
        } else if temperature > 0.0 {
            sample_decode_with(
                model,
                prompt,
                ids,
                opts,
                temperature,
                fb.best_of,
                fb.beam.length_penalty,
                &mut rng,
            )?
        } else {
            beam_search(model, prompt, ids, opts, &fb.beam)?
        };
        // faster-whisper's tokens are CTranslate2's hypothesis: forced prefix included.
        let mut tokens = prefix.to_vec();
        tokens.extend_from_slice(&result.tokens);
        let ratio = compression_ratio(python_strip(&text_of(&tokens)));
        let avg = result.avg_logprob;

        let mut needs_fallback = false;
        if let Some(t) = fb.compression_ratio_threshold {
            if ratio > t {
                needs_fallback = true; // too repetitive
            } else {
                below_cr.push(all.len());
            }
        }
        if let Some(t) = fb.log_prob_threshold {
            if avg < t {
                needs_fallback = true; // average log-probability too low
            }
        }
        if let (Some(ns), Some(lp)) = (fb.no_speech_threshold, fb.log_prob_threshold) {
            if result.no_speech_prob as f64 > ns && avg < lp {
                needs_fallback = false; // silence: a retry would not help
            }
        }
        if !needs_fallback {
            return Ok((result, temperature));
        }
        all.push(result);
    }

    // Python's max(): the first maximum wins, a NaN first element is never replaced.
    let pool: Vec<usize> = if below_cr.is_empty() {
        (0..all.len()).collect()
    } else {
        below_cr
    };
    let mut best = pool[0];
    for &i in &pool[1..] {
        if all[i].avg_logprob > all[best].avg_logprob {
            best = i;
        }
    }
    Ok((all.swap_remove(best), last_temperature))
}

/// Splits one window's generated tokens into segments, as faster-whisper does.
///
/// Each pair of consecutive timestamps closes a segment (the pair's second timestamp
/// opens the next one). With a single timestamp at the very end, the tokens after the
/// last pair form a final segment ending there; otherwise those tokens are an unfinished
/// segment and are dropped (the next window starts at the last pair). Without any pair,
/// the whole window is one segment from `time_offset`, lasting until its last timestamp
/// when it has one other than `<|0.00|>`, else `window_duration`.
pub fn split_segments(
    tokens: &[u32],
    tok: &Tokenizer,
    time_offset: f64,
    window_duration: f64,
) -> Vec<WindowSegment> {
    let tb = tok.timestamp_begin();
    let is_ts = |t: u32| t >= tb;
    let time = |ts: u32| time_offset + f64::from(ts - tb) * f64::from(TIME_PRECISION);
    let make = |start: f64, end: f64, toks: &[u32]| WindowSegment {
        start,
        end,
        text: tok.decode(toks),
        tokens: toks.to_vec(),
    };

    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let mut slices: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
        .collect();

    if slices.is_empty() {
        let duration = match tokens.iter().rev().find(|&&t| is_ts(t)) {
            Some(&last) if last != tb => f64::from(last - tb) * f64::from(TIME_PRECISION),
            _ => window_duration,
        };
        return vec![make(time_offset, time_offset + duration, tokens)];
    }

    if single_timestamp_ending {
        slices.push(n);
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut last_slice = 0;
    for &cut in &slices {
        let part = &tokens[last_slice..cut];
        // Every slice ends with a timestamp; it starts with one unless the window began
        // with text, which the timestamp rules never produce.
        let start = if is_ts(part[0]) {
            time(part[0])
        } else {
            time_offset
        };
        let end = match part.last() {
            Some(&t) if is_ts(t) => time(t),
            _ => start,
        };
        segments.push(make(start, end, part));
        last_slice = cut;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_definition_and_keeps_neg_infinity() {
        let x = [1.0f32, 2.0, f32::NEG_INFINITY, 0.5];
        let lp = log_softmax(&x);
        let z: f64 = [1.0f64, 2.0, 0.5].iter().map(|v| v.exp()).sum();
        for (i, &v) in [1.0f64, 2.0, 0.5].iter().enumerate() {
            let j = if i == 2 { 3 } else { i };
            assert!((lp[j] as f64 - (v - z.ln())).abs() < 1e-6);
        }
        assert_eq!(lp[2], f32::NEG_INFINITY);
        assert_eq!(logsumexp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert!((logsumexp(&[0.0, 0.0]) - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn vectorised_log_softmax_gives_the_sequential_f64_bits() {
        // The sequential form: f32::max fold, libm exp of each f32 difference, f64 sum in
        // order. The vectorised sum differs from it by a few units in the last place of an
        // f64, far below the f32 shift's rounding: every output must have the same bits.
        fn sequential(logits: &[f32]) -> Vec<f32> {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                return vec![f32::NEG_INFINITY; logits.len()];
            }
            let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let shift = (-(max as f64) - sum.ln()) as f32;
            logits.iter().map(|&x| x + shift).collect()
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for r in 0..300 {
            // Vocabulary rows of Whisper's scale: most logits spread over a few units,
            // a few tokens far above, at lengths with every lane remainder.
            let n = if r % 3 == 0 { 51_865 } else { 1_000 + r };
            let spread = 1.0 + (r % 7) as f64 * 2.0;
            let mut row: Vec<f32> = (0..n)
                .map(|_| ((uniform() - 0.5) * 2.0 * spread) as f32)
                .collect();
            for _ in 0..(r % 5) {
                let i = (uniform() * n as f64) as usize;
                row[i] = (uniform() * 40.0) as f32;
            }
            if r % 4 == 0 {
                for i in (0..n).step_by(3) {
                    row[i] = f32::NEG_INFINITY;
                }
            }
            rows.push(row);
        }
        rows.push(vec![f32::NEG_INFINITY; 17]);
        rows.push(vec![3.0; 5]);
        rows.push(vec![-800.0, 0.0, -1e30, 2.5]);
        for (r, row) in rows.iter().enumerate() {
            let (got, want) = (log_softmax(row), sequential(row));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "row {r} entry {i}: {g} vs {w}");
            }
        }
        // A NaN logit turns the row into NaN, as before.
        assert!(log_softmax(&[1.0, f32::NAN, 2.0])
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn timestamps_are_forced_exactly_when_their_mass_beats_the_best_text_token() {
        // 10 text tokens (0..8 text, 8 = end, 9 = no-timestamps) then 6 timestamps; one
        // text token sampled and no timestamp, so only this rule applies. The text's best
        // logit is 2.0; six timestamps at t have mass t + ln 6.
        let rules = TimestampRules {
            eot: 8,
            no_timestamps: 9,
            timestamp_begin: 10,
            max_initial_timestamp: None,
            first_step_rules: false,
        };
        let ln6 = 6f32.ln();
        for (t, forced) in [(2.0 - ln6 + 1e-3, true), (2.0 - ln6 - 1e-3, false)] {
            let mut logits = vec![0.0f32; 16];
            logits[3] = 2.0;
            for l in &mut logits[10..] {
                *l = t;
            }
            // Against the definition: log-probabilities, normalised over every token.
            let lp: Vec<f64> = {
                let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
                logits.iter().map(|&x| x as f64 - z.ln()).collect()
            };
            let mass = lp[10..].iter().map(|v| v.exp()).sum::<f64>().ln();
            assert_eq!(mass > lp[3], forced, "t = {t}");
            rules.apply(&mut logits, &[5]);
            let text_disabled = logits[..10].iter().all(|&x| x == f32::NEG_INFINITY);
            assert_eq!(text_disabled, forced, "t = {t}: {logits:?}");
        }
    }

    /// Rows with the awkward cases of a vocabulary row: repeated logits, logits close
    /// enough to round to one log-probability, NaN, −∞ runs (filtered tokens) and rows
    /// with fewer finite entries than candidates.
    fn awkward_rows(seed: u64, beams: usize, n: usize) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        (0..beams)
            .map(|b| {
                let mut row: Vec<f32> = (0..n)
                    .map(|_| match next() % 16 {
                        0 => f32::NEG_INFINITY,
                        1 => f32::NAN,
                        // A few values repeated many times.
                        2..=4 => [1.5f32, 3.25, -2.0][(next() % 3) as usize],
                        // Neighbours of 3.25 one or two ulps apart.
                        5 => f32::from_bits(3.25f32.to_bits() + next() % 3),
                        _ => (next() % 20_000) as f32 / 1000.0 - 10.0,
                    })
                    .collect();
                match (seed + b as u64) % 5 {
                    // Fewer finite entries than candidates.
                    0 => {
                        for (i, v) in row.iter_mut().enumerate() {
                            if i % 97 != 3 {
                                *v = f32::NEG_INFINITY;
                            }
                        }
                    }
                    // Nothing finite at all.
                    1 if b == 1 => row.fill(f32::NEG_INFINITY),
                    _ => {}
                }
                row
            })
            .collect()
    }

    #[test]
    fn fused_candidates_equal_those_of_written_out_log_probabilities() {
        // The ranking from logits and shifts must be that of the log-softmax rows it
        // replaces: same tokens, same beams, same score bits, same order.
        for seed in 0..60u64 {
            let n = [17, 160, 1000, 51_865][(seed % 4) as usize];
            let rows = awkward_rows(seed, 1 + (seed % 5) as usize, n);
            let beams: Vec<Beam> = (0..rows.len())
                .map(|i| Beam {
                    seq: Vec::new(),
                    score: [0.0, -1.75, -1e10, -3.5, -0.125][i],
                })
                .collect();
            let shifts: Vec<Option<f32>> = rows.iter().map(|r| log_softmax_shift(r)).collect();
            let written: Vec<Vec<f32>> = rows.iter().map(|r| log_softmax(r)).collect();
            for k in [1, 2, 10] {
                let fused: Vec<(&[f32], Option<f32>)> = rows
                    .iter()
                    .map(|r| r.as_slice())
                    .zip(shifts.iter().copied())
                    .collect();
                let refs: Vec<&[f32]> = written.iter().map(|r| r.as_slice()).collect();
                let got = top_candidates(&beams, &fused, k);
                let want = top_candidates_of_rows(&beams, &refs, k);
                let key = |c: &Candidate| (c.beam, c.token, c.score.to_bits());
                assert_eq!(
                    got.iter().map(key).collect::<Vec<_>>(),
                    want.iter().map(key).collect::<Vec<_>>(),
                    "seed {seed}, n {n}, k {k}"
                );
            }
        }
    }

    #[test]
    fn the_best_token_is_the_argmax_of_the_written_out_log_probabilities() {
        for seed in 0..40u64 {
            for row in awkward_rows(seed, 3, [5, 300, 51_865][(seed % 3) as usize]) {
                let want = match argmax(&log_softmax(&row)) {
                    Some((id, lp)) if lp > f32::NEG_INFINITY => Some((id, lp.to_bits())),
                    _ => None,
                };
                let got = best_token(&row).map(|(id, lp)| (id, lp.to_bits()));
                assert_eq!(got, want, "seed {seed}");
            }
        }
        assert_eq!(best_token(&[f32::NAN, f32::NAN]), None);
        assert_eq!(best_token(&[]), None);
    }

    #[test]
    fn argmax_prefers_lowest_index_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some((1, 3.0)));
        assert_eq!(argmax(&[f32::NAN, 2.0]), Some((1, 2.0)));
        assert_eq!(argmax(&[]), None);
    }
}
