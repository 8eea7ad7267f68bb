//! The transcription pipeline: the `features` graph turns the whole recording into a
//! log-mel spectrogram once; then, window by window (30 s at most, seeking by the
//! timestamps the model predicts, as faster-whisper does), the `encoder` and `cross_kv`
//! graphs run and the `decoder_step` graph is driven by the decoding policy. Finally the
//! segment times are refined with the pauses of the recording ([`crate::refine`]).

use crate::alignment;
use crate::decoding::{split_segments, DecodeOptions, DecodeResult, FallbackOptions};
use crate::error::{Error, Result};
use crate::graph::{ENCODER_WINDOWS, HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::hallucination;
use crate::lockstep::LockstepWindow;
use crate::model::WhisperModel;
use crate::refine::{self, RefineOptions};
use crate::spectrogram::{Spectrogram, StreamedAudio};
use crate::tokenizer::Tokenizer;
use crate::transcript::{
    compression_ratio, Segment, Task, Timings, Transcript, WindowSegment, Word,
};
use amanuensis_audio::pauses::{self, Pause};
use amanuensis_runtime::Tensor;
use std::time::{Duration, Instant};

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
    /// Words or phrases the model should expect (names, jargon), given to every window
    /// after `<|startofprev|>` and before the previous text, as faster-whisper's
    /// `hotwords` are; at most [`MAX_PREVIOUS_TOKENS`] tokens, which the previous text
    /// then shares.
    pub hotwords: Option<String>,
    /// Time every word from the cross-attention of the model's alignment heads.
    pub word_timestamps: bool,
    /// openai-whisper's `hallucination_silence_threshold` (seconds), with word timestamps
    /// in the sequential loop: a segment whose words look invented (improbable, instant or
    /// drawn out; [`hallucination`]) and that has silence of more than this before and
    /// after it is dropped with the rest of its window, and the next window starts at it;
    /// a window whose first such segment starts more than this after the window does
    /// starts again there.
    pub hallucination_silence_threshold: Option<f64>,
    /// Move segment boundaries onto the pauses of the recording and split segments at
    /// long pauses after a sentence or clause end ([`pauses`]); the text is unchanged.
    /// Ignored without timestamps.
    pub refine_timestamps: bool,
    /// 30-s windows decoded together (1 ..= [`MAX_BATCH_SIZE`]). 1 is the sequential
    /// window loop; above 1, [`WhisperModel::transcribe_pcm_batched`]'s consecutive windows
    /// without previous-text conditioning.
    pub batch_size: usize,
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
            hotwords: None,
            word_timestamps: false,
            hallucination_silence_threshold: None,
            refine_timestamps: true,
            batch_size: 1,
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

/// What a window's decoding gave, for [`WhisperModel::window_segments`].
struct DecodedWindow<'a> {
    result: &'a DecodeResult,
    temperature: f32,
    seek: usize,
    segment_size: usize,
    /// The next window starts at this one's end, not at its last timestamp: text after
    /// the last timestamp is kept as a segment ending with the window.
    fixed_windows: bool,
}

/// One recording of [`WhisperModel::transcribe_together`].
pub struct TogetherItem<'a> {
    /// 16 kHz mono samples.
    pub pcm: &'a [f32],
    pub opts: &'a TranscribeOptions,
    /// This recording's stop flag (its request's cancellation or deadline).
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What [`WhisperModel::transcribe_together`] decoded in lockstep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TogetherStats {
    /// Lockstep decodes run (each of two windows or more).
    pub batches: usize,
    /// Windows decoded in them.
    pub windows: usize,
    /// Decoder runs they took.
    pub steps: usize,
}

/// A recording prepared up to its first window ([`WhisperModel::prepare_first_window`]).
pub struct FirstWindow {
    t0: Instant,
    mel: Spectrogram,
    ctx: LoopContext,
    acc: Accumulated,
    /// The first window's cross K/V, language and prompt (none for empty audio).
    first: Option<(Vec<Tensor>, String, Vec<u32>)>,
    language: Option<String>,
    language_probability: Option<f32>,
    decode: DecodeOptions,
}

impl FirstWindow {
    /// The first window as a lockstep decode takes it, if the recording has one.
    pub fn lockstep_window(&self) -> Option<LockstepWindow<'_>> {
        self.first
            .as_ref()
            .map(|(cross, _, prompt)| LockstepWindow {
                cross,
                prompt,
                opts: &self.decode,
                interrupt: None,
            })
    }

    /// Frames of the spectrogram: more than one window's means the window loop goes on
    /// after the first.
    pub fn frames(&self) -> usize {
        self.mel.frames()
    }
}

/// What stays the same over a recording's windows.
struct LoopContext {
    duration: f64,
    timestamp_begin: u32,
    refine: bool,
    pauses: Vec<Pause>,
    refine_opts: RefineOptions,
}

/// What the windows add up to.
#[derive(Default)]
struct Accumulated {
    segments: Vec<Segment>,
    all_tokens: Vec<u32>,
    last_speech_timestamp: f64,
    timings: Timings,
}

impl WhisperModel {
    /// Turns one decoded window into segments (word-timed when asked or when the
    /// refinement may split them) appended to `acc`. Returns where the next window starts
    /// by the predicted timestamps, or `None` when the no-speech rule drops the window.
    fn window_segments(
        &mut self,
        cross: &[Tensor],
        lang: &str,
        opts: &TranscribeOptions,
        decoded: &DecodedWindow,
        ctx: &LoopContext,
        acc: &mut Accumulated,
    ) -> Result<Option<usize>> {
        let DecodedWindow {
            result,
            temperature,
            seek,
            segment_size,
            fixed_windows,
        } = *decoded;
        let closed;
        let tokens = if fixed_windows
            && result
                .tokens
                .last()
                .is_some_and(|&t| t < ctx.timestamp_begin)
            && result.tokens.iter().any(|&t| t >= ctx.timestamp_begin)
        {
            let mut t = result.tokens.clone();
            t.push(ctx.timestamp_begin + (segment_size / FRAMES_PER_TIMESTAMP) as u32);
            closed = t;
            &closed
        } else {
            &result.tokens
        };
        let time_offset = seek as f64 * FRAME_SECONDS;
        let segment_duration = segment_size as f64 * FRAME_SECONDS;
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
            return Ok(None);
        }

        let ratio = compression_ratio(&self.tokenizer.decode(&result.tokens));
        let window = split_segments(tokens, &self.tokenizer, time_offset, segment_duration);
        let mut times: Vec<alignment::TimedSegment> = window
            .iter()
            .map(|s| alignment::TimedSegment {
                start: s.start,
                end: s.end,
                words: Vec::new(),
            })
            .collect();
        let mut next = next_seek(&result.tokens, ctx.timestamp_begin, seek, segment_size);
        // The refinement splits segments between words, so it needs them where a
        // segment holds a long pause; they then change neither seeking nor times.
        let split_candidate = ctx.refine
            && window
                .iter()
                .any(|s| may_split(s.start, s.end, &s.text, &ctx.pauses, &ctx.refine_opts));
        // openai-whisper's rule for invented text, sequential windows only.
        let hallucination_threshold = opts
            .hallucination_silence_threshold
            .filter(|_| opts.word_timestamps && !fixed_windows);
        let speech_before = acc.last_speech_timestamp;
        if (opts.word_timestamps || split_candidate) && !window.is_empty() {
            let t = Instant::now();
            let timed = self.word_timings(
                cross,
                lang,
                opts,
                &window,
                seek,
                segment_size,
                acc.last_speech_timestamp,
            )?;
            acc.timings.decoder += t.elapsed();
            if let Some(end) = alignment::last_word_end(&timed.segments) {
                acc.last_speech_timestamp = end;
                // faster-whisper moves the next window to the last word's end unless
                // the window ended on a lone timestamp.
                let n = result.tokens.len();
                let single_timestamp_ending = n >= 2
                    && result.tokens[n - 2] < ctx.timestamp_begin
                    && result.tokens[n - 1] >= ctx.timestamp_begin;
                if opts.word_timestamps && !single_timestamp_ending && end > time_offset {
                    let window_end = (seek + N_FRAMES) as f64 * FRAME_SECONDS;
                    // With the hallucination rule, a window whose words end near its end
                    // is taken whole (openai-whisper's variant).
                    next = match hallucination_threshold {
                        Some(t) if window_end - end <= t => seek + segment_size,
                        _ => (end * 100.0).round_ties_even() as usize,
                    };
                }
            }
            for (slot, seg) in times.iter_mut().zip(timed.segments) {
                let mut words = seg.words;
                for w in &mut words {
                    w.start = round_ms(w.start);
                    w.end = round_ms(w.end);
                }
                if opts.word_timestamps {
                    *slot = alignment::TimedSegment { words, ..seg };
                } else {
                    slot.words = words;
                }
            }
        }
        let mut window = window;
        if let Some(threshold) = hallucination_threshold {
            let check = hallucination::Window {
                threshold,
                time_offset,
                window_end: (seek + N_FRAMES) as f64 * FRAME_SECONDS,
                duration: segment_duration,
                content_end: ctx.duration,
                speech_before,
            };
            match check.cut(&times) {
                hallucination::Cut::Keep => {}
                hallucination::Cut::SkipWindow { gap } => {
                    // Nothing of this window is kept; it starts again at its first words.
                    acc.last_speech_timestamp = speech_before;
                    return Ok(Some(seek + (gap * 100.0).round_ties_even() as usize));
                }
                hallucination::Cut::From { index, next_start } => {
                    window.truncate(index);
                    times.truncate(index);
                    next = match next_start {
                        Some(t) => (t * 100.0).round_ties_even() as usize,
                        // Too little is left after it: the recording is done.
                        None => (ctx.duration / FRAME_SECONDS).ceil() as usize,
                    };
                    acc.last_speech_timestamp =
                        alignment::last_word_end(&times).unwrap_or(speech_before);
                }
            }
        }
        for (s, alignment::TimedSegment { start, end, words }) in window.into_iter().zip(times) {
            if start == end || s.text.trim().is_empty() {
                continue;
            }
            acc.all_tokens.extend_from_slice(&s.tokens);
            acc.segments.push(Segment {
                id: acc.segments.len(),
                seek,
                start: round_ms(start),
                end: round_ms(end.min(ctx.duration.max(start))),
                text: s.text,
                tokens: s.tokens,
                avg_logprob: result.avg_logprob,
                no_speech_prob: result.no_speech_prob,
                compression_ratio: ratio,
                temperature,
                words,
            });
        }
        Ok(Some(next))
    }
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

    /// The decoder prompt: the hotwords and the previous text (if any) after
    /// `<|startofprev|>`, then the start-of-transcript sequence for `language`. The two
    /// share [`MAX_PREVIOUS_TOKENS`]: the hotwords' first tokens, then the latest of the
    /// previous text's that still fit (faster-whisper gives each that many, which can run
    /// past the decoder's 448 positions).
    pub fn prompt(
        &self,
        previous: &[u32],
        language: &str,
        opts: &TranscribeOptions,
    ) -> Result<Vec<u32>> {
        let tok = &self.tokenizer;
        let mut hotwords = match opts.hotwords.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => tok.encode_prompt(h)?,
            _ => Vec::new(),
        };
        hotwords.truncate(MAX_PREVIOUS_TOKENS);
        let room = MAX_PREVIOUS_TOKENS - hotwords.len();
        let previous = &previous[previous.len().saturating_sub(room)..];
        let mut prompt = Vec::new();
        if !previous.is_empty() || !hotwords.is_empty() {
            prompt.push(tok.start_of_prev());
            prompt.extend_from_slice(&hotwords);
            prompt.extend_from_slice(previous);
        }
        let translate = opts.task == Task::Translate;
        prompt.extend(tok.sot_sequence(Some(language), translate, opts.without_timestamps)?);
        Ok(prompt)
    }

    /// Transcribes 16 kHz mono samples of any length.
    pub fn transcribe_pcm(&mut self, pcm: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        self.transcribe_pcm_with_progress(pcm, opts, &mut |_| {})
    }

    /// Transcribes 16 kHz mono samples of any length, reporting progress after each window
    /// (`opts.batch_size` windows at a time above 1).
    pub fn transcribe_pcm_with_progress(
        &mut self,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        check_options(opts)?;
        if opts.batch_size > 1 {
            return self.transcribe_pcm_batched(pcm, opts, progress);
        }
        self.transcribe_sequential(pcm, opts, progress)
    }

    /// The window loop: each window seeks by the previous one's timestamps and is
    /// conditioned on its text.
    fn transcribe_sequential(
        &mut self,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        let first = self.prepare_first_window(pcm, opts)?;
        self.continue_sequential(first, None, opts, progress)
    }

    /// A recording up to its first window: the spectrogram, the first window's cross K/V,
    /// its language and its prompt, which is all a lockstep decode of it needs.
    pub fn prepare_first_window(
        &mut self,
        pcm: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<FirstWindow> {
        let started = self.start_first_window(pcm, opts)?;
        self.finish_first_window(started, None, opts)
    }

    /// The spectrogram and state of a recording, before its first window is encoded.
    fn start_first_window(&mut self, pcm: &[f32], opts: &TranscribeOptions) -> Result<Started> {
        let t0 = Instant::now();
        let (mel, ctx, acc) = self.start(pcm, opts)?;
        Ok(Started { t0, mel, ctx, acc })
    }

    /// The first window of a started recording: its cross K/V (`cross`, when it was
    /// encoded in a batch with others, else encoded here), language and prompt.
    fn finish_first_window(
        &mut self,
        started: Started,
        cross: Option<Vec<Tensor>>,
        opts: &TranscribeOptions,
    ) -> Result<FirstWindow> {
        let Started {
            t0,
            mut mel,
            ctx,
            mut acc,
        } = started;
        let content_frames = mel.frames();
        let mut language = opts.language.clone();
        let mut language_probability = None;
        let mut first = None;
        if content_frames > 0 {
            let cross = match cross {
                Some(cross) => cross,
                None => {
                    let size = N_FRAMES.min(content_frames);
                    self.encode_at(&mut mel, 0, size, &mut acc.timings)?
                }
            };
            let lang =
                self.language_of(&cross, &mut language, &mut language_probability, &mut acc)?;
            let prompt = self.prompt(&acc.all_tokens, &lang, opts)?;
            first = Some((cross, lang, prompt));
        }
        Ok(FirstWindow {
            t0,
            mel,
            ctx,
            acc,
            first,
            language,
            language_probability,
            decode: self.decode_options(opts.without_timestamps),
        })
    }

    /// The window loop from a prepared first window; `decoded` is that window's first
    /// try when it was decoded in lockstep with others.
    pub fn continue_sequential(
        &mut self,
        prepared: FirstWindow,
        mut decoded: Option<DecodeResult>,
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        let FirstWindow {
            t0,
            mut mel,
            ctx,
            mut acc,
            mut first,
            mut language,
            mut language_probability,
            decode: dopts,
        } = prepared;
        let duration = ctx.duration;
        let content_frames = mel.frames();
        let mut seek = 0usize;
        let mut prompt_reset_since = 0usize;
        let mut stopped_at = None;
        while seek < content_frames {
            if self.stop_requested() {
                stopped_at = Some((seek as f64 * FRAME_SECONDS).min(duration) as f32);
                break;
            }
            let segment_size = N_FRAMES.min(content_frames - seek);
            let (cross, lang, prompt) = match first.take() {
                Some(prepared) => prepared,
                None => {
                    let cross = self.encode_at(&mut mel, seek, segment_size, &mut acc.timings)?;
                    let lang = self.language_of(
                        &cross,
                        &mut language,
                        &mut language_probability,
                        &mut acc,
                    )?;
                    let prompt = self.prompt(&acc.all_tokens[prompt_reset_since..], &lang, opts)?;
                    (cross, lang, prompt)
                }
            };
            let t = Instant::now();
            let (result, temperature, steps) = match decoded.take() {
                Some(done) => {
                    self.decode_window_after(&cross, &prompt, &dopts, &opts.decoding, done)?
                }
                None => self.decode_window(&cross, &prompt, &dopts, &opts.decoding)?,
            };
            acc.timings.decoder += t.elapsed();
            acc.timings.decoder_steps += steps;
            acc.timings.tokens += result.tokens.len();

            let decoded = DecodedWindow {
                result: &result,
                temperature,
                seek,
                segment_size,
                fixed_windows: false,
            };
            let first_new = acc.segments.len();
            let Some(next) = self.window_segments(&cross, &lang, opts, &decoded, &ctx, &mut acc)?
            else {
                seek += segment_size;
                progress(Progress {
                    done: (seek as f64 * FRAME_SECONDS).min(duration),
                    total: duration,
                    text: "",
                });
                continue;
            };
            if !opts.condition_on_previous_text || temperature > PROMPT_RESET_ON_TEMPERATURE {
                prompt_reset_since = acc.all_tokens.len();
            }
            // Never move backwards: a window must always make progress.
            seek = next.max(seek + 1);
            let text = window_text(&acc.segments[first_new..]);
            tracing::debug!(
                done_s = seek as f64 * FRAME_SECONDS,
                temperature,
                "window decoded"
            );
            progress(Progress {
                done: (seek as f64 * FRAME_SECONDS).min(duration),
                total: duration,
                text: &text,
            });
        }
        let mut t = self.finish(opts, ctx, acc, language, language_probability, t0);
        t.stopped_at = stopped_at;
        Ok(t)
    }

    /// Transcribes several recordings (a server's waiting requests), each exactly as
    /// [`Self::transcribe_pcm`] would alone, but with their first windows decoded in
    /// lockstep where they can be: a recording joins a lockstep batch when its first try
    /// is beam search (or greedy) and another recording's prompt has the same layout and
    /// the same beam options. Later windows (recordings over 30 s) and fallbacks run on
    /// their own. Each recording's `interrupt` stops only its own work. Results are in the
    /// items' order.
    pub fn transcribe_together(
        &mut self,
        items: &[TogetherItem],
    ) -> (Vec<Result<Transcript>>, TogetherStats) {
        let saved = self.interrupt.take();
        let mut stats = TogetherStats::default();
        let mut started: Vec<Option<Result<Started>>> = Vec::with_capacity(items.len());
        for item in items {
            self.interrupt = item.interrupt.clone();
            let p = check_options(item.opts)
                .and_then(|()| self.start_first_window(item.pcm, item.opts));
            started.push(Some(p));
        }
        // The first windows through the encoder as one batch (each weight read once for
        // all of them); if that fails, each is encoded on its own below.
        self.interrupt = None;
        let mut crosses = self.encode_first_windows(&mut started);
        let mut prepared: Vec<Option<Result<FirstWindow>>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.interrupt = item.interrupt.clone();
            let p = match started[i].take() {
                Some(Ok(s)) => self.finish_first_window(s, crosses[i].take(), item.opts),
                Some(Err(e)) => Err(e),
                None => Err(Error::Interrupted),
            };
            prepared.push(Some(p));
        }
        // Windows decode together when their steps line up: same prompt length, same
        // position of <|startoftranscript|>, same beam options.
        let sot = self.tokenizer.sot();
        let mut groups: std::collections::BTreeMap<(usize, usize, usize, u32, u32), Vec<usize>> =
            Default::default();
        for (i, (item, p)) in items.iter().zip(&prepared).enumerate() {
            let Some(Ok(first)) = p else { continue };
            let Some(w) = first.lockstep_window() else {
                continue;
            };
            let fb = &item.opts.decoding;
            if fb.temperatures.first().is_none_or(|&t| t > 0.0) {
                continue;
            }
            let sot_at = w.prompt.iter().position(|&t| t == sot).unwrap_or(0);
            let key = (
                w.prompt.len(),
                sot_at,
                fb.beam.beam_size,
                fb.beam.patience.to_bits(),
                fb.beam.length_penalty.to_bits(),
            );
            groups.entry(key).or_default().push(i);
        }
        let mut decoded: Vec<Option<Result<DecodeResult>>> =
            std::iter::repeat_with(|| None).take(items.len()).collect();
        for group in groups.into_values().filter(|g| g.len() >= 2) {
            let beam = items[group[0]].opts.decoding.beam;
            let windows: Vec<LockstepWindow> = group
                .iter()
                .filter_map(|&i| {
                    let Some(Ok(first)) = &prepared[i] else {
                        return None;
                    };
                    let mut w = first.lockstep_window()?;
                    w.interrupt = items[i].interrupt.as_deref();
                    Some(w)
                })
                .collect();
            self.interrupt = None;
            match self.decode_windows_lockstep(&windows, None, &beam) {
                Ok((results, st)) => {
                    stats.batches += 1;
                    stats.windows += group.len();
                    stats.steps += st.steps;
                    for (&i, r) in group.iter().zip(results) {
                        decoded[i] = Some(r);
                    }
                }
                // The shared decoder failed: each window is decoded on its own below.
                Err(e) => tracing::warn!("lockstep decode failed, decoding one by one: {e}"),
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.interrupt = item.interrupt.clone();
            let result = match (prepared[i].take(), decoded[i].take()) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
                (Some(Ok(first)), done) => self.continue_sequential(
                    first,
                    done.and_then(Result::ok),
                    item.opts,
                    &mut |_| {},
                ),
                (None, _) => Err(Error::Interrupted),
            };
            out.push(result);
        }
        self.interrupt = saved;
        (out, stats)
    }

    /// Transcribes 16 kHz mono samples in consecutive 30-s windows, `opts.batch_size`
    /// windows at a time decoded in lockstep (faster-whisper's batched pipeline): every window's
    /// prompt is the initial prompt only (no previous text), windows do not seek by the
    /// predicted timestamps, and a window whose first try needs the temperature fallback
    /// is re-decoded on its own. Results are in recording order. (A batch of one still
    /// takes this path: the windows' own results, for comparing with a batch of many.)
    pub fn transcribe_pcm_batched(
        &mut self,
        pcm: &[f32],
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        self.transcribe_pcm_windows(pcm, None, opts, progress)
    }

    /// [`Self::transcribe_pcm_batched`] over the given windows (the speech chunks of
    /// `--vad`), or over consecutive windows cut at pauses when `None`.
    pub fn transcribe_pcm_windows(
        &mut self,
        pcm: &[f32],
        given: Option<GivenWindows<'_>>,
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        check_options(opts)?;
        let batch_size = opts.batch_size;
        let t0 = Instant::now();
        let (mut mel, ctx, mut acc) = self.start(pcm, opts)?;
        let content_frames = mel.frames();
        let dopts = self.decode_options(opts.without_timestamps);
        // Lockstep decodes the first try, which must be beam search (or greedy).
        let lockstep = opts
            .decoding
            .temperatures
            .first()
            .is_some_and(|&t| t <= 0.0);
        let initial: Vec<u32> = acc.all_tokens.clone();
        let mut language = opts.language.clone();
        let mut language_probability = None;
        let speech = given.as_ref().map_or(&[][..], |g| g.speech);
        let windows = match given.map(|g| g.cuts) {
            Some(cuts) => {
                if let Some(&(seek, size)) = cuts.iter().find(|&&(_, size)| size > N_FRAMES) {
                    return Err(Error::graph(
                        crate::graph::FEATURES,
                        format!("window {seek}+{size} is longer than {N_FRAMES} mel frames"),
                    ));
                }
                // A window reaching past the last frame ends there.
                cuts.iter()
                    .filter_map(|&(seek, size)| {
                        let size = size.min(content_frames.saturating_sub(seek));
                        (size > 0).then_some((seek, size))
                    })
                    .collect()
            }
            None if ctx.refine => window_cuts(content_frames, &ctx.pauses),
            None => window_cuts(
                content_frames,
                &pauses::find_pauses(pcm, SAMPLE_RATE as u32, &ctx.refine_opts.pauses),
            ),
        };
        // Windows to decode: the cuts, then the rests of windows whose text stopped short
        // of their speech (in recording order once sorted below).
        let mut pending = windows;
        let mut continued = false;
        let mut done_frames = 0;
        let mut stopped_at = None;
        'rounds: for round in 0.. {
            if pending.is_empty() {
                break;
            }
            if round > MAX_REST_ROUNDS {
                tracing::warn!(
                    windows = pending.len(),
                    "stopped decoding rests of windows after {MAX_REST_ROUNDS} rounds"
                );
                break;
            }
            let mut rests = Vec::new();
            for (k, chunk) in pending.chunks(batch_size).enumerate() {
                if self.stop_requested() {
                    // The transcript is whole up to the first window not decoded: of this
                    // batch and those after it, or a rest found in a batch already done.
                    let first_gap = pending[k * batch_size..]
                        .iter()
                        .chain(&rests)
                        .map(|&(seek, _)| seek)
                        .min();
                    stopped_at = first_gap
                        .map(|seek| (seek as f64 * FRAME_SECONDS).min(ctx.duration) as f32);
                    break 'rounds;
                }
                self.decode_batch(
                    &mut mel,
                    chunk,
                    &initial,
                    &dopts,
                    lockstep,
                    speech,
                    (opts, &ctx),
                    (&mut language, &mut language_probability),
                    &mut acc,
                    &mut rests,
                    &mut |seek, segment_size, text: &str| {
                        done_frames = done_frames.max(seek + segment_size);
                        progress(Progress {
                            done: (done_frames as f64 * FRAME_SECONDS).min(ctx.duration),
                            total: ctx.duration,
                            text,
                        })
                    },
                )?;
                tracing::debug!(
                    done_s = done_frames as f64 * FRAME_SECONDS,
                    windows = chunk.len(),
                    "batch decoded"
                );
            }
            continued |= !rests.is_empty();
            pending = rests;
        }
        if continued {
            acc.segments.sort_by_key(|s| s.seek);
            for (id, s) in acc.segments.iter_mut().enumerate() {
                s.id = id;
            }
        }
        let mut t = self.finish(opts, ctx, acc, language, language_probability, t0);
        t.stopped_at = stopped_at;
        Ok(t)
    }

    /// Whether [`WhisperModel::stop_early`] asks the window loop to stop.
    fn stop_requested(&self) -> bool {
        self.stop_early
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Encodes and decodes one batch of windows of the batched pipeline, appending their
    /// segments to `acc` and, where a window's text ends over [`REST_MIN_FRAMES`] of
    /// `speech` before the window does, the rest of it to `rests`.
    #[allow(clippy::too_many_arguments)]
    fn decode_batch(
        &mut self,
        mel: &mut Spectrogram,
        chunk: &[(usize, usize)],
        initial: &[u32],
        dopts: &DecodeOptions,
        lockstep: bool,
        speech: &[(usize, usize)],
        (opts, ctx): (&TranscribeOptions, &LoopContext),
        (language, language_probability): (&mut Option<String>, &mut Option<f32>),
        acc: &mut Accumulated,
        rests: &mut Vec<(usize, usize)>,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<()> {
        let EncodedBatch {
            crosses,
            mut stacked,
        } = self.encode_batch(mel, chunk, &mut acc.timings)?;
        let lang = self.language_of(&crosses[0], language, language_probability, acc)?;
        let prompt = self.prompt(initial, &lang, opts)?;
        let t = Instant::now();
        let mut firsts: Vec<Option<DecodeResult>> = if lockstep {
            let windows: Vec<LockstepWindow> = crosses
                .iter()
                .map(|cross| LockstepWindow {
                    cross,
                    prompt: &prompt,
                    opts: dopts,
                    interrupt: None,
                })
                .collect();
            let (results, stats) = self.decode_windows_lockstep_streamed(
                &windows,
                stacked.take(),
                &opts.decoding.beam,
            )?;
            acc.timings.decoder_steps += stats.steps;
            results
                .into_iter()
                .map(|r| r.map(Some))
                .collect::<Result<_>>()?
        } else {
            vec![None; chunk.len()]
        };
        acc.timings.decoder += t.elapsed();
        for (i, &(seek, segment_size)) in chunk.iter().enumerate() {
            let cross = &crosses[i];
            let t = Instant::now();
            let (result, temperature, steps) = match firsts[i].take() {
                Some(first) => {
                    self.decode_window_after(cross, &prompt, dopts, &opts.decoding, first)?
                }
                None => self.decode_window(cross, &prompt, dopts, &opts.decoding)?,
            };
            acc.timings.decoder += t.elapsed();
            acc.timings.decoder_steps += steps;
            acc.timings.tokens += result.tokens.len();
            let decoded = DecodedWindow {
                result: &result,
                temperature,
                seek,
                segment_size,
                fixed_windows: true,
            };
            let first_new = acc.segments.len();
            let kept = self.window_segments(cross, &lang, opts, &decoded, ctx, acc)?;
            let new = &acc.segments[first_new..];
            // Only a window the no-speech rule kept, and whose text has times.
            if kept.is_some() && !opts.without_timestamps {
                let text_end = new
                    .last()
                    .map_or(seek, |s| (s.end / FRAME_SECONDS).round() as usize);
                if let Some(rest) = untranscribed_rest(seek, segment_size, text_end, speech) {
                    rests.push(rest);
                }
            }
            progress(seek, segment_size, &window_text(new));
        }
        Ok(())
    }

    /// The log-mel spectrogram of the recording, what its windows share, and the
    /// accumulator holding the initial prompt's tokens.
    fn start(
        &mut self,
        pcm: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<(Spectrogram, LoopContext, Accumulated)> {
        let t = Instant::now();
        let mel = Spectrogram::Whole(self.features(pcm)?);
        let features = t.elapsed();
        self.start_with(mel, features, pcm.len(), opts, |o| {
            pauses::find_pauses(pcm, SAMPLE_RATE as u32, o)
        })
    }

    /// [`Self::start`] for a spectrogram computed in `features` from `samples` samples,
    /// with `pauses` finding the recording's pauses when timestamps are refined.
    fn start_with(
        &mut self,
        mel: Spectrogram,
        features: Duration,
        samples: usize,
        opts: &TranscribeOptions,
        pauses: impl FnOnce(&pauses::PauseOptions) -> Vec<Pause>,
    ) -> Result<(Spectrogram, LoopContext, Accumulated)> {
        let mut acc = Accumulated::default();
        acc.timings.features = features;
        if let Some(p) = &opts.initial_prompt {
            acc.all_tokens = self.tokenizer.encode_prompt(p)?;
        }
        let refine = opts.refine_timestamps && !opts.without_timestamps;
        let refine_opts = RefineOptions::default();
        let pauses = if refine {
            pauses(&refine_opts.pauses)
        } else {
            Vec::new()
        };
        let ctx = LoopContext {
            duration: samples as f64 / SAMPLE_RATE as f64,
            timestamp_begin: self.tokenizer.timestamp_begin(),
            refine,
            pauses,
            refine_opts,
        };
        Ok((mel, ctx, acc))
    }

    /// Transcribes a recording measured by [`WhisperModel::scan_audio`], computing its
    /// spectrogram a window at a time as the window loop reaches it, so memory does not grow
    /// with the recording's length. The transcript is the one [`Self::transcribe_pcm`]
    /// gives for the same samples, bit for bit. With `opts.batch_size` above 1 the
    /// recording is decoded into memory first (the batched windows need all of it).
    pub fn transcribe_streamed(
        &mut self,
        mut audio: StreamedAudio,
        opts: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        check_options(opts)?;
        if opts.batch_size > 1 {
            let pcm = audio.load_all()?;
            return self.transcribe_pcm_batched(&pcm, opts, progress);
        }
        let scan_time = audio.scan_time();
        // The transcription's wall time includes the measuring pass, as its features time
        // does.
        let t0 = Instant::now()
            .checked_sub(scan_time)
            .unwrap_or_else(Instant::now);
        let samples = audio.samples();
        let levels = audio.take_levels();
        let mel = audio.into_spectrogram();
        let (mel, ctx, acc) = self.start_with(mel, scan_time, samples, opts, |o| {
            pauses::pauses_from_levels(&levels, o)
        })?;
        let first = self.finish_first_window(Started { t0, mel, ctx, acc }, None, opts)?;
        self.continue_sequential(first, None, opts, progress)
    }

    /// The cross K/V of the first windows of the `started` recordings that have one,
    /// encoded as one batch when there are two or more (`None` for the others, and for
    /// all when the batch failed). Each recording's timings get its share of the batch.
    fn encode_first_windows(
        &mut self,
        started: &mut [Option<Result<Started>>],
    ) -> Vec<Option<Vec<Tensor>>> {
        let mut out: Vec<Option<Vec<Tensor>>> = vec![None; started.len()];
        let firsts: Vec<usize> = (0..started.len())
            .filter(|&i| matches!(&started[i], Some(Ok(s)) if s.mel.frames() > 0))
            .collect();
        if firsts.len() < 2 || self.encoder_windows.is_none() {
            return out;
        }
        for group in firsts.chunks(ENCODER_BATCH).filter(|g| g.len() >= 2) {
            let t = Instant::now();
            let batch = (|| -> Result<Vec<Vec<Tensor>>> {
                let mut mels = Vec::with_capacity(group.len());
                for &i in group {
                    if let Some(Ok(s)) = &mut started[i] {
                        let frames = s.mel.frames();
                        mels.push(s.mel.window(0, N_FRAMES.min(frames))?);
                    }
                }
                let stacked = self
                    .encode_cross_windows(&mels)?
                    .ok_or_else(|| Error::graph(ENCODER_WINDOWS, "returned no output"))?;
                (0..group.len()).map(|w| unstack(&stacked, w)).collect()
            })();
            match batch {
                Ok(crosses) => {
                    let share = t.elapsed() / group.len() as u32;
                    for (&i, cross) in group.iter().zip(crosses) {
                        if let Some(Ok(s)) = &mut started[i] {
                            s.acc.timings.encoder += share;
                            s.acc.timings.windows += 1;
                        }
                        out[i] = Some(cross);
                    }
                }
                Err(e) => tracing::warn!("batched encoder failed, encoding one by one: {e}"),
            }
        }
        out
    }

    /// The cross K/V of the windows `(seek, segment_size)` of `chunk`: each window's own,
    /// and, when they were encoded as one batch ([`WhisperModel::encode_cross_windows`]),
    /// the stacked tensors the lockstep decoder takes as they are.
    fn encode_batch(
        &mut self,
        mel: &mut Spectrogram,
        chunk: &[(usize, usize)],
        timings: &mut Timings,
    ) -> Result<EncodedBatch> {
        if self.encoder_windows.is_none() || chunk.len() < 2 {
            let mut crosses = Vec::with_capacity(chunk.len());
            for &(seek, size) in chunk {
                crosses.push(self.encode_at(mel, seek, size, timings)?);
            }
            return Ok(EncodedBatch {
                crosses,
                stacked: None,
            });
        }
        if chunk.len() > ENCODER_BATCH {
            let mut crosses = Vec::with_capacity(chunk.len());
            for part in chunk.chunks(ENCODER_BATCH) {
                crosses.extend(self.encode_batch(mel, part, timings)?.crosses);
            }
            return Ok(EncodedBatch {
                crosses,
                stacked: None,
            });
        }
        let t = Instant::now();
        let mels = chunk
            .iter()
            .map(|&(seek, size)| mel.window(seek, size))
            .collect::<Result<Vec<_>>>()?;
        timings.features += mel.take_compute_time();
        if let Some(s) = self.encoder_windows.as_mut() {
            s.set_window(Some(timings.windows));
        }
        let Some(stacked) = self.encode_cross_windows(&mels)? else {
            return Err(Error::graph(ENCODER_WINDOWS, "returned no output"));
        };
        drop(mels);
        let crosses = (0..chunk.len())
            .map(|w| unstack(&stacked, w))
            .collect::<Result<Vec<_>>>()?;
        timings.encoder += t.elapsed();
        timings.windows += chunk.len();
        Ok(EncodedBatch {
            crosses,
            stacked: Some(stacked),
        })
    }

    /// The cross K/V of the window of `segment_size` frames at `seek`.
    fn encode_at(
        &mut self,
        mel: &mut Spectrogram,
        seek: usize,
        segment_size: usize,
        timings: &mut Timings,
    ) -> Result<Vec<Tensor>> {
        let window = mel.window(seek, segment_size)?;
        timings.features += mel.take_compute_time();
        let t = Instant::now();
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
        Ok(cross)
    }

    /// The language asked for, or the one detected from this window (the first).
    fn language_of(
        &mut self,
        cross: &[Tensor],
        language: &mut Option<String>,
        probability: &mut Option<f32>,
        acc: &mut Accumulated,
    ) -> Result<String> {
        if let Some(l) = language {
            return Ok(l.clone());
        }
        let t = Instant::now();
        let probs = self.detect_language(cross)?;
        acc.timings.decoder += t.elapsed();
        let (code, p) = probs[0].clone();
        tracing::info!(language = %code, probability = p, "detected language");
        *probability = Some(p);
        *language = Some(code.clone());
        Ok(code)
    }

    /// The transcript of the accumulated segments, refined.
    fn finish(
        &self,
        opts: &TranscribeOptions,
        ctx: LoopContext,
        acc: Accumulated,
        language: Option<String>,
        language_probability: Option<f32>,
        t0: Instant,
    ) -> Transcript {
        let Accumulated {
            mut segments,
            mut timings,
            ..
        } = acc;
        if ctx.refine {
            segments = refine_segments(
                segments,
                &self.tokenizer,
                &ctx.pauses,
                ctx.duration,
                opts.word_timestamps,
                &ctx.refine_opts,
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
        Transcript {
            // Silent audio never reaches detection; report English, the model's default.
            language: language.unwrap_or_else(|| "en".into()),
            language_probability,
            task: opts.task,
            duration: ctx.duration as f32,
            segments,
            text,
            stopped_at: None,
            timings,
        }
    }
}

/// Consecutive windows `(start, frames)` covering `frames` mel frames for a batched
/// transcription: each ends at the middle of the last pause in its final
/// [`CUT_SEARCH_SECONDS`], so that windows rarely cut a word, or after 30 s when there is
/// none.
pub fn window_cuts(frames: usize, pauses: &[Pause]) -> Vec<(usize, usize)> {
    let to_frame = |seconds: f64| (seconds / FRAME_SECONDS).round() as usize;
    let search = (CUT_SEARCH_SECONDS / FRAME_SECONDS) as usize;
    let mut cuts = Vec::new();
    let mut start = 0;
    while start < frames {
        let mut end = (start + N_FRAMES).min(frames);
        if end < frames {
            let earliest = end.saturating_sub(search).max(start + 1);
            if let Some(cut) = pauses
                .iter()
                .map(|p| to_frame((p.start + p.end) / 2.0))
                .filter(|&m| m >= earliest && m < end)
                .max()
            {
                end = cut;
            }
        }
        cuts.push((start, end - start));
        start = end;
    }
    cuts
}

/// How far back from a window's 30-s end a batched transcription looks for a pause to
/// cut at.
pub const CUT_SEARCH_SECONDS: f64 = 8.0;

/// The text a window's new segments add, as [`Progress::text`] reports it.
fn window_text(segments: &[Segment]) -> String {
    segments.iter().map(|s| s.text.as_str()).collect()
}

/// Largest `batch_size` accepted: windows decoded together (each holds its cross K/V,
/// 36 MB for whisper-base, and a KV cache per beam while it decodes).
pub const MAX_BATCH_SIZE: usize = 64;

/// Checks what a transcription's options can be checked for before any audio is decoded:
/// the batch size ([`check_batch_size`]) and every decoding setting a window may reach
/// ([`FallbackOptions::check`]), so that a bad one fails at once, not at the first window
/// that needs it.
pub fn check_options(opts: &TranscribeOptions) -> Result<()> {
    check_batch_size(opts.batch_size)?;
    opts.decoding.check()?;
    if let Some(t) = opts.hallucination_silence_threshold {
        // 0 or less would skip each suspect window by a frame at a time (thousands of
        // decodes), NaN would end the recording early.
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::Option {
                option: "hallucination_silence_threshold",
                reason: format!("must be a positive number of seconds, got {t}"),
            });
        }
    }
    Ok(())
}

/// [`Error::BatchSize`] unless `1 ..= MAX_BATCH_SIZE`.
pub fn check_batch_size(batch_size: usize) -> Result<()> {
    if (1..=MAX_BATCH_SIZE).contains(&batch_size) {
        Ok(())
    } else {
        Err(Error::BatchSize {
            given: batch_size,
            max: MAX_BATCH_SIZE,
        })
    }
}

/// Windows per run of the batched encoder on the CPU. Its GEMMs already have 1,500 rows a
/// window and are compute-bound, while a larger batch's activations no longer stay in
/// cache: per window, three rounds of 8 windows on the 2-core development machine took
/// 0.65–0.87 s one by one, 0.73–0.84 s in batches of 2, 0.77–0.91 s in batches of 4 and
/// 0.83–1.00 s as one batch of 8. Two keep the batch dimension's one weight pass per run
/// at no cost; larger batches (the decoder's) are encoded two at a time.
pub const ENCODER_BATCH: usize = 2;

/// Speech (mel frames) a window's text must leave untranscribed before the window's rest
/// is decoded again: 1.5 s.
pub const REST_MIN_FRAMES: usize = 150;

/// Rounds of rests after the first pass: a rest's own rest (a third speaker's sentence
/// dropped in turn) is decoded too, up to this many times.
pub const MAX_REST_ROUNDS: usize = 3;

/// Windows given to [`WhisperModel::transcribe_pcm_windows`].
#[derive(Debug, Clone, Copy)]
pub struct GivenWindows<'a> {
    /// `(first mel frame, frames)` of each window: at most 30 s, in order; a window past
    /// the recording's last frame ends there.
    pub cuts: &'a [(usize, usize)],
    /// Where the recording has speech, `(first frame, end frame)` in order. A window whose
    /// text ends (by its last timestamp) over [`REST_MIN_FRAMES`] of this speech before the
    /// window does has its rest decoded as a window of its own: Whisper sometimes closes a
    /// window after one speaker's sentence although more speech follows, which the
    /// sequential loop recovers by seeking and the batched pipeline would lose.
    pub speech: &'a [(usize, usize)],
}

/// The rest `(seek, frames)` of the window `seek..seek + size` after its text's end, when
/// the window has text and over [`REST_MIN_FRAMES`] of `speech` lie after it.
pub fn untranscribed_rest(
    seek: usize,
    size: usize,
    text_end: usize,
    speech: &[(usize, usize)],
) -> Option<(usize, usize)> {
    // A window without text gets no rest: decoding nearly the same audio again would
    // give nothing again.
    if text_end <= seek {
        return None;
    }
    let (start, end) = (text_end, seek + size);
    let spoken: usize = speech
        .iter()
        .map(|&(a, b)| b.min(end).saturating_sub(a.max(start)))
        .sum();
    (start < end && spoken > REST_MIN_FRAMES).then_some((start, end - start))
}

/// A recording whose spectrogram is computed, before its first window is encoded.
struct Started {
    t0: Instant,
    mel: Spectrogram,
    ctx: LoopContext,
    acc: Accumulated,
}

/// A batch of windows through the encoder: each window's cross K/V, and the stacked
/// tensors they were cut from when the windows were encoded as one batch.
struct EncodedBatch {
    crosses: Vec<Vec<Tensor>>,
    stacked: Option<Vec<Tensor>>,
}

/// Window `w`'s part of each stacked `[windows, ..]` tensor.
fn unstack(stacked: &[Tensor], w: usize) -> Result<Vec<Tensor>> {
    stacked
        .iter()
        .map(|t| {
            t.index_outer(w)
                .map_err(|e| Error::graph(ENCODER_WINDOWS, format!("output {:?}: {e}", t.shape())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hallucination_threshold_must_be_a_positive_number_of_seconds() {
        let with = |t| TranscribeOptions {
            hallucination_silence_threshold: Some(t),
            ..TranscribeOptions::default()
        };
        assert!(check_options(&with(2.0)).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = check_options(&with(bad)).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Option {
                        option: "hallucination_silence_threshold",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_mel_window_outside_the_spectrogram_is_an_error() {
        let mel = Tensor::from_f32(&[2, 10], vec![0.0; 20]).unwrap();
        assert!(crate::model::mel_window(&mel, 4, 6).is_ok());
        // seek + size wrapped around in release builds and passed the check.
        assert!(crate::model::mel_window(&mel, usize::MAX, 1).is_err());
        assert!(crate::model::mel_window(&mel, 5, 6).is_err());
        let flat = Tensor::from_f32(&[20], vec![0.0; 20]).unwrap();
        assert!(crate::model::mel_window(&flat, 0, 1).is_err());
    }

    #[test]
    fn a_windows_rest_is_decoded_again_only_over_enough_speech() {
        let speech = [(0, 400), (1000, 1400), (2000, 2100)];
        // Text ends at 600 in 0..3000: 400 frames of speech after it (1000..1400).
        assert_eq!(untranscribed_rest(0, 3000, 600, &speech), Some((600, 2400)));
        // Text ends at 1350: 50 + 100 frames of speech left, not over 150.
        assert_eq!(untranscribed_rest(0, 3000, 1350, &speech), None);
        assert_eq!(
            untranscribed_rest(0, 3000, 1300, &speech),
            Some((1300, 1700))
        );
        // Text reaching the window's end, or past it, leaves nothing.
        assert_eq!(untranscribed_rest(0, 3000, 3000, &speech), None);
        assert_eq!(untranscribed_rest(0, 3000, 3500, &speech), None);
        // Without speech information nothing is decoded again.
        assert_eq!(untranscribed_rest(0, 3000, 0, &[]), None);
        // A window without text (its text ends where it starts) gets no rest.
        assert_eq!(untranscribed_rest(1000, 400, 1000, &speech), None);
        assert_eq!(untranscribed_rest(1000, 400, 0, &speech), None);
    }
}
