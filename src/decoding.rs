//! The decoding policy: which token comes next, given the decoder's logits.
//!
//! It reproduces CTranslate2's Whisper `generate` as faster-whisper 1.2.1 calls it at
//! temperature 0 with `beam_size=1`: logit filters (suppressed tokens, blank suppression
//! at the first step, Whisper's timestamp rules), argmax, the cumulative log-probability
//! and the no-speech probability. How logits are produced is abstracted by [`StepModel`].
//!
//! Prompt layout, as CTranslate2 reads it: optional previous context
//! (`<|startofprev|> ...`), then `<|startoftranscript|>`, then the task tokens (ids
//! between `<|startoftranscript|>` and `<|notimestamps|>`), then optional forced prefix
//! text tokens. Timestamp rules are active unless the last task token is
//! `<|notimestamps|>`.

use crate::tokenizer::{Tokenizer, TIME_PRECISION};

/// Produces logits for tokens appended to the sequence fed so far (KV-cached decoder).
pub trait StepModel {
    /// Feed `tokens` after everything already fed; return the logits (length n_vocab) at each
    /// index in `logit_positions` (indices into `tokens`), in order.
    fn step(&mut self, tokens: &[u32], logit_positions: &[usize]) -> anyhow::Result<Vec<Vec<f32>>>;
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
    /// Sum of the chosen tokens' log-probabilities, `<|endoftext|>` included (float32 sum).
    pub sum_logprob: f64,
    /// faster-whisper's `score * len / (len + 1)` = `sum_logprob / (len + 1)`.
    pub avg_logprob: f64,
    /// Softmax probability of the no-speech token at the `<|startoftranscript|>` position.
    pub no_speech_prob: f32,
    /// CTranslate2's score: `sum_logprob / len` (length penalty 1), in float32.
    pub score: f64,
}

/// Why decoding could not run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
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
        // token must be a timestamp.
        let log_probs = log_softmax(logits);
        let split = (tb as usize).min(n);
        let timestamp_logprob = logsumexp(&log_probs[split..]);
        let max_text_logprob = log_probs[..split]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if timestamp_logprob > max_text_logprob {
            disable_range(logits, 0, split);
        }
    }
}

/// `x − max − ln Σ exp(x − max)`, with the sum in float64 and −∞ entries kept at −∞.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![f32::NEG_INFINITY; logits.len()];
    }
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let shift = (-(max as f64) - sum.ln()) as f32;
    logits.iter().map(|&x| x + shift).collect()
}

/// `ln Σ exp(x)`; −∞ for an empty or all-−∞ slice.
fn logsumexp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (max as f64 + sum.ln()) as f32
}

/// Index and value of the largest entry; the lowest index wins ties, NaN never wins.
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

/// Greedy (temperature 0, `beam_size=1`) decoding of one window.
///
/// The first [`StepModel::step`] call feeds the whole prompt and asks for the logits at the
/// `<|startoftranscript|>` position (for the no-speech probability) and at the last
/// position; every later call feeds the single token just chosen and asks for position 0.
/// Each step filters the logits (suppressed tokens, blank suppression at the first step,
/// timestamp rules), takes the argmax of their log-softmax (lowest id on ties) and adds
/// that log-probability to the sum. Decoding stops at `<|endoftext|>` or after
/// `min(max_length / 2, max_length − (task_end − 1))` sampled tokens, CTranslate2's limit.
pub fn greedy_decode(
    model: &mut dyn StepModel,
    prompt: &[u32],
    ids: &SpecialIds,
    opts: &DecodeOptions,
) -> anyhow::Result<DecodeResult> {
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
        }
        .into());
    }
    let layout = prompt_layout(prompt, ids)?;
    let prompt_has_no_timestamps = prompt[layout.task_end - 1] == ids.no_timestamps;
    if prompt_has_no_timestamps != opts.without_timestamps {
        return Err(DecodeError::TimestampModeMismatch {
            without_timestamps: opts.without_timestamps,
            prompt_has_no_timestamps,
        }
        .into());
    }
    let has_prefix = layout.task_end < prompt.len();

    // CTranslate2 feeds everything before the last task token as the "prompt" (start_step
    // tokens), then decodes at most min(max_length / 2, max_length - start_step) tokens
    // beyond the forced prefix.
    let start_step = layout.task_end - 1;
    let max_new = (opts.max_length / 2).min(opts.max_length.saturating_sub(start_step));
    if max_new == 0 {
        return Err(DecodeError::PromptTooLong {
            prompt_len: prompt.len(),
            max_length: opts.max_length,
        }
        .into());
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
        first_step_rules: !has_prefix,
    });
    let mut filters: Vec<&dyn LogitFilter> = vec![&suppress, &blank];
    if let Some(t) = &timestamps {
        filters.push(t);
    }

    let positions = [layout.sot_index, prompt.len() - 1];
    let mut rows = model.step(prompt, &positions)?;
    check_logits(&rows, positions.len(), ids.n_vocab, 0)?;
    let mut logits = rows.pop().expect("two rows checked above");
    let no_speech_prob = log_softmax(&rows[0])[ids.no_speech as usize].exp();

    let mut generated: Vec<u32> = Vec::new();
    // CTranslate2 accumulates the score in float32.
    let mut sum_logprob = 0f32;
    for step in 0..max_new {
        for f in &filters {
            f.apply(&mut logits, &generated);
        }
        let log_probs = log_softmax(&logits);
        let (id, logprob) = match argmax(&log_probs) {
            Some((id, lp)) if lp > f32::NEG_INFINITY => (id, lp),
            _ => return Err(DecodeError::NothingToChoose { step }.into()),
        };
        sum_logprob += logprob;
        if id == ids.eot {
            break;
        }
        generated.push(id);
        if step + 1 == max_new {
            break;
        }
        let mut rows = model.step(&[id], &[0])?;
        check_logits(&rows, 1, ids.n_vocab, step + 1)?;
        logits = rows.pop().expect("one row checked above");
    }

    // CTranslate2 divides in float32 (length_penalty 1); faster-whisper then recovers
    // the cumulative log-probability in float64 and averages over len + 1 tokens.
    // With no generated token both are undefined (−∞ / NaN), as in the references.
    let len = generated.len();
    let score = (sum_logprob / len as f32) as f64;
    let avg_logprob = score * len as f64 / (len + 1) as f64;
    Ok(DecodeResult {
        tokens: generated,
        sum_logprob: sum_logprob as f64,
        avg_logprob,
        no_speech_prob,
        score,
    })
}

/// A transcribed span of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Start time in seconds.
    pub start: f32,
    /// End time in seconds.
    pub end: f32,
    /// Decoded text of the segment's text tokens (leading space kept).
    pub text: String,
    /// The segment's tokens, timestamps included.
    pub tokens: Vec<u32>,
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
    time_offset: f32,
    window_duration: f32,
) -> Vec<Segment> {
    let tb = tok.timestamp_begin();
    let is_ts = |t: u32| t >= tb;
    let time = |ts: u32| (time_offset as f64 + (ts - tb) as f64 * TIME_PRECISION as f64) as f32;
    let make = |start: f32, end: f32, toks: &[u32]| Segment {
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
            Some(&last) if last != tb => ((last - tb) as f64 * TIME_PRECISION as f64) as f32,
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
    fn argmax_prefers_lowest_index_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some((1, 3.0)));
        assert_eq!(argmax(&[f32::NAN, 2.0]), Some((1, 2.0)));
        assert_eq!(argmax(&[]), None);
    }
}
