//! The transcription pipeline: the `features` graph turns the whole recording into a
//! log-mel spectrogram once; then, window by window (30 s at most, seeking by the
//! timestamps the model predicts, as faster-whisper does), the `encoder` and `cross_kv`
//! graphs run and the `decoder_step` graph is driven by the decoding policy. Finally the
//! segment times are refined with the pauses of the recording ([`crate::refine`]).

use crate::alignment;
use crate::decoding::{split_segments, FallbackOptions};
use crate::error::Result;
use crate::graph::{HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::model::{mel_window, WhisperModel};
use crate::refine::{self, RefineOptions};
use crate::tokenizer::Tokenizer;
use crate::transcript::{
    compression_ratio, Segment, Task, Timings, Transcript, WindowSegment, Word,
};
use amanuensis_audio::pauses::{self, Pause};
use amanuensis_runtime::Tensor;
use std::time::Instant;

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

/// Seconds rounded to the millisecond, so that 7.6 prints as 7.6 and not 7.599999904632568.
fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Progress of a transcription, reported after each window.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Seconds of audio done.
    pub done: f64,
    /// Seconds of audio in all.
    pub total: f64,
    /// The text this window added, as decoded (empty for a silent window): what a caller
    /// streams before the transcription ends. The segments' boundaries may still move when
    /// they are refined at the end; their text does not.
    pub text: &'a str,
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
        .any(refine::ends_clause);
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
        let splits = refine::split_points(seg.start, seg.end, &seg.words, pauses, opts);
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
    refine::snap_boundaries(&mut bounds, &fixed, pauses, duration, opts);
    if keep_words {
        let words: Vec<&[Word]> = out.iter().map(|s| s.words.as_slice()).collect();
        refine::contain_words(&mut bounds, &words);
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
    /// Word timings of one window's segments: a teacher-forced pass over the window's
    /// text, the alignment heads' attention through median filter and DTW, then
    /// faster-whisper's word heuristics.
    #[allow(clippy::too_many_arguments)]
    fn word_timings(
        &mut self,
        cross: &[Tensor],
        language: &str,
        opts: &TranscribeOptions,
        window: &[WindowSegment],
        seek: usize,
        segment_size: usize,
        last_speech_timestamp: f64,
    ) -> Result<alignment::WindowWords> {
        let tok = &self.tokenizer;
        let eot = tok.eot();
        let text = alignment::window_text_tokens(window, eot);
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
            window,
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
        progress: &mut dyn FnMut(Progress<'_>),
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
                    text: "",
                });
                continue;
            }

            let ratio = compression_ratio(&self.tokenizer.decode(&result.tokens));
            let window = split_segments(
                &result.tokens,
                &self.tokenizer,
                time_offset,
                segment_duration,
            );
            let mut times: Vec<(f64, f64, Vec<Word>)> = window
                .iter()
                .map(|s| (s.start, s.end, Vec::new()))
                .collect();
            let mut next = next_seek(&result.tokens, timestamp_begin, seek, segment_size);
            // The refinement splits segments between words, so it needs them where a
            // segment holds a long pause; they then change neither seeking nor times.
            let split_candidate = refine
                && window
                    .iter()
                    .any(|s| may_split(s.start, s.end, &s.text, &pauses, &refine_opts));
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
                    let mut words = seg.words;
                    for w in &mut words {
                        w.start = round_ms(w.start);
                        w.end = round_ms(w.end);
                    }
                    if opts.word_timestamps {
                        *slot = (seg.start, seg.end, words);
                    } else {
                        slot.2 = words;
                    }
                }
            }
            let first_new = segments.len();
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
            let text: String = segments[first_new..]
                .iter()
                .map(|s| s.text.as_str())
                .collect();
            progress(Progress {
                done: (seek as f64 * FRAME_SECONDS).min(duration),
                total: duration,
                text: &text,
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
