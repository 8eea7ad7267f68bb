//! Word-level timestamps from the decoder's cross-attention (the faster-whisper way).
//!
//! The text of a window is fed back through the decoder once, teacher-forced, as
//! `sot sequence, <|notimestamps|>, text tokens, <|endoftext|>`
//! ([`alignment_input_tokens`]). The cross-attention probabilities of the model's
//! alignment heads ([`gather_alignment_heads`]) become a token × frame similarity matrix
//! ([`alignment_matrix`]); the monotonic path through it ([`negative_dtw`]) gives each
//! token its first frame; tokens are grouped into words ([`split_to_word_tokens`]) which
//! get start, end and probability ([`find_alignment`]); punctuation joins its neighbour
//! ([`merge_punctuations`]); finally duration heuristics and the segments' own bounds
//! tidy the words up ([`add_word_timestamps`]).
//!
//! Everything here is pure host-side arithmetic on plain slices, in the float widths and
//! operation orders of the reference implementation where they affect results.

use crate::tokenizer::Tokenizer;
use crate::transcript::{WindowSegment, Word};

/// Median filter width applied along the frame axis of the attention.
pub const MEDIAN_FILTER_WIDTH: usize = 7;
/// Mel frames per second (16 kHz audio, hop of 160 samples).
pub const MEL_FRAMES_PER_SECOND: f64 = 100.0;
/// Encoder positions per second (the second convolution halves the mel frame rate).
pub const ALIGNMENT_FRAMES_PER_SECOND: f64 = 50.0;
/// Punctuation merged into the following word (faster-whisper's default).
pub const DEFAULT_PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// Punctuation merged into the preceding word (faster-whisper's default).
pub const DEFAULT_APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
/// A word that is (a substring of) this ends a sentence, for the long-word heuristic.
pub const SENTENCE_END_MARKS: &str = ".。!！?？";
/// Python's `string.punctuation`: a sub-word that strips to a substring of it starts a word.
pub const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Languages written without spaces: words are split at every complete code point.
pub const UNICODE_SPLIT_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// Errors of the alignment arithmetic: inconsistent shapes or parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlignmentError {
    /// A buffer's length disagrees with the dimensions given for it.
    #[error("{what}: {len} values, but the dimensions {dims:?} need {expected}")]
    Shape {
        what: &'static str,
        len: usize,
        dims: Vec<usize>,
        expected: usize,
    },
    /// Dimensions whose product does not fit in memory addressing.
    #[error("{what}: dimensions {dims:?} overflow")]
    Overflow {
        what: &'static str,
        dims: Vec<usize>,
    },
    /// The median filter needs an odd width (its window is centred on each frame).
    #[error("median filter width {0} is not odd")]
    MedianFilterWidth(usize),
    /// An alignment head names a layer or head the model does not have.
    #[error(
        "alignment head (layer {layer}, head {head}) is outside {layers} layers × {heads} heads"
    )]
    Head {
        layer: usize,
        head: usize,
        layers: usize,
        heads: usize,
    },
    /// The rows asked for lie outside a matrix (alignment matrix or logits).
    #[error("rows {start}..{end} are outside the {rows} rows of the matrix")]
    Rows {
        start: usize,
        end: usize,
        rows: usize,
    },
    /// A token id has no logit (it is not below the vocabulary size).
    #[error("token {token} at text position {position} is outside the {vocab}-entry vocabulary")]
    Token {
        token: u32,
        position: usize,
        vocab: usize,
    },
    /// The DTW path and the word split disagree on the number of tokens.
    #[error("word boundary {boundary} is past the {rows} aligned token rows")]
    Boundary { boundary: usize, rows: usize },
}

/// The product of `dims`, or an overflow error naming `what`.
fn product(what: &'static str, dims: &[usize]) -> Result<usize, AlignmentError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| AlignmentError::Overflow {
            what,
            dims: dims.to_vec(),
        })
}

/// Checks that `len` equals the product of `dims`.
fn check_shape(what: &'static str, len: usize, dims: &[usize]) -> Result<(), AlignmentError> {
    let expected = product(what, dims)?;
    if len != expected {
        return Err(AlignmentError::Shape {
            what,
            len,
            dims: dims.to_vec(),
            expected,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Inputs of the teacher-forced pass

/// The token sequence fed to the decoder for alignment:
/// `start_sequence + [<|notimestamps|>] + text + [<|endoftext|>]`.
///
/// `start_sequence` is the bare sot sequence (`<|startoftranscript|>`, language, task),
/// without previous-text prompt.
pub fn alignment_input_tokens(start_sequence: &[u32], text: &[u32], tok: &Tokenizer) -> Vec<u32> {
    let mut seq = Vec::with_capacity(start_sequence.len() + text.len() + 2);
    seq.extend_from_slice(start_sequence);
    seq.push(tok.no_timestamps());
    seq.extend_from_slice(text);
    seq.push(tok.eot());
    seq
}

/// The probability of each text token given its prefix, from the logits of the
/// teacher-forced pass (`logits`: `[positions, vocab]`, row `p` for input position `p`).
///
/// Text token `t` is predicted at row `start_len + t` (the row of `<|notimestamps|>` for
/// `t = 0`). The softmax runs over the text vocabulary only (ids below `eot`), so the
/// special and timestamp tokens take no probability mass.
pub fn text_token_probabilities(
    logits: &[f32],
    positions: usize,
    vocab: usize,
    start_len: usize,
    text: &[u32],
    eot: u32,
) -> Result<Vec<f32>, AlignmentError> {
    check_shape("logits", logits.len(), &[positions, vocab])?;
    let end = start_len + text.len();
    if end > positions {
        return Err(AlignmentError::Rows {
            start: start_len,
            end,
            rows: positions,
        });
    }
    let text_vocab = (eot as usize).min(vocab);
    let mut probs = Vec::with_capacity(text.len());
    for (t, &token) in text.iter().enumerate() {
        if token as usize >= text_vocab {
            return Err(AlignmentError::Token {
                token,
                position: t,
                vocab: text_vocab,
            });
        }
        let row = &logits[(start_len + t) * vocab..][..text_vocab];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
        let p = f64::from(row[token as usize] - max).exp() / sum;
        probs.push(p as f32);
    }
    Ok(probs)
}

/// Stacks the alignment heads' attention into `[heads, tokens, frames]`.
///
/// `per_layer[l]` is layer `l`'s cross-attention `[heads_per_layer, tokens, frames]`;
/// `alignment_heads` lists `(layer, head)` pairs (the model's `alignment_heads`). Heads
/// are ordered by layer, then as listed within a layer, which fixes the float order of
/// the later mean over heads.
pub fn gather_alignment_heads(
    per_layer: &[&[f32]],
    heads_per_layer: usize,
    tokens: usize,
    frames: usize,
    alignment_heads: &[(usize, usize)],
) -> Result<Vec<f32>, AlignmentError> {
    let head_len = product("attention head", &[tokens, frames])?;
    for layer in per_layer {
        check_shape(
            "layer cross-attention",
            layer.len(),
            &[heads_per_layer, tokens, frames],
        )?;
    }
    for &(layer, head) in alignment_heads {
        if layer >= per_layer.len() || head >= heads_per_layer {
            return Err(AlignmentError::Head {
                layer,
                head,
                layers: per_layer.len(),
                heads: heads_per_layer,
            });
        }
    }
    let mut out = Vec::with_capacity(alignment_heads.len() * head_len);
    for (l, layer) in per_layer.iter().enumerate() {
        for &(_, head) in alignment_heads.iter().filter(|&&(hl, _)| hl == l) {
            out.extend_from_slice(&layer[head * head_len..][..head_len]);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Attention → alignment matrix

/// What the values of an attention tensor are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionValues {
    /// Softmax probabilities over all encoder positions (rows sum to 1).
    Probabilities,
    /// Scaled dot products before the softmax.
    Scores,
}

/// The token × frame alignment matrix `[tokens, num_frames / 2]` from the alignment
/// heads' attention probabilities `weights`: `[heads, tokens, frames]`.
///
/// Steps: keep the first `num_frames / 2` encoder positions (the audio's; `num_frames`
/// counts mel frames) and renormalise each row over them; standardise every frame
/// column over the token axis per head (population variance, no epsilon); median-filter
/// every row along frames (`median_filter_width`, odd, reflect padding; rows no longer
/// than half the width are left as they are); average the heads.
/// Returns an empty matrix when no frame is left.
pub fn alignment_matrix(
    weights: &[f32],
    heads: usize,
    tokens: usize,
    frames: usize,
    num_frames: usize,
    median_filter_width: usize,
) -> Result<Vec<f32>, AlignmentError> {
    alignment_matrix_of(
        AttentionValues::Probabilities,
        weights,
        heads,
        tokens,
        frames,
        num_frames,
        median_filter_width,
    )
}

/// [`alignment_matrix`] for attention given either as probabilities or as raw scores.
pub fn alignment_matrix_of(
    values: AttentionValues,
    weights: &[f32],
    heads: usize,
    tokens: usize,
    frames: usize,
    num_frames: usize,
    median_filter_width: usize,
) -> Result<Vec<f32>, AlignmentError> {
    check_shape(
        "alignment heads' attention",
        weights.len(),
        &[heads, tokens, frames],
    )?;
    if median_filter_width.is_multiple_of(2) {
        return Err(AlignmentError::MedianFilterWidth(median_filter_width));
    }
    let n = (num_frames / 2).min(frames);
    if n == 0 || tokens == 0 || heads == 0 {
        return Ok(Vec::new());
    }

    // [heads, tokens, n], each row a distribution over the audio's frames only.
    let mut probs = Vec::with_capacity(heads * tokens * n);
    for row in weights.chunks_exact(frames) {
        let row = &row[..n];
        let start = probs.len();
        match values {
            AttentionValues::Probabilities => {
                // Softmax over a prefix of the scores equals the full softmax renormalised.
                // A row with no mass on the audio at all stays zero rather than NaN.
                let sum: f32 = row.iter().sum();
                probs.extend(row.iter().map(|&p| if sum > 0.0 { p / sum } else { 0.0 }));
            }
            AttentionValues::Scores => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                probs.extend(row.iter().map(|&s| (s - max).exp()));
                let sum: f32 = probs[start..].iter().sum();
                let inv = 1.0 / sum;
                probs[start..].iter_mut().for_each(|p| *p *= inv);
            }
        }
    }

    standardize_tokens(&mut probs, heads, tokens, n);

    let mut filtered = vec![0f32; probs.len()];
    for (src, dst) in probs.chunks_exact(n).zip(filtered.chunks_exact_mut(n)) {
        median_filter_row(src, dst, median_filter_width);
    }

    // Mean over heads, summed in head order then divided.
    let plane = tokens * n;
    let mut matrix = vec![0f32; plane];
    for head in filtered.chunks_exact(plane) {
        for (m, &v) in matrix.iter_mut().zip(head) {
            *m += v;
        }
    }
    let count = heads as f32;
    matrix.iter_mut().for_each(|m| *m /= count);
    Ok(matrix)
}

/// Standardises `x` (`[heads, tokens, n]`) over the token axis for every head and frame:
/// `(x - mean) / sqrt(E[x²] - mean²)` with single-precision sums in token order.
///
/// A column of equal values has zero variance; it standardises to 0 rather than to the
/// infinities a literal division would give, which would poison the path search.
fn standardize_tokens(x: &mut [f32], heads: usize, tokens: usize, n: usize) {
    let plane = tokens * n;
    if plane == 0 || x.len() != heads * plane {
        return;
    }
    let count = tokens as f32;
    for head in x.chunks_exact_mut(plane) {
        for j in 0..n {
            let (mut sum, mut sum_sq) = (0f32, 0f32);
            for k in 0..tokens {
                let v = head[k * n + j];
                sum += v;
                sum_sq += v * v;
            }
            let mean = sum / count;
            let variance = (sum_sq / count - mean * mean).max(0.0);
            let rstd = 1.0 / variance.sqrt();
            for k in 0..tokens {
                let v = &mut head[k * n + j];
                *v = if rstd.is_finite() {
                    (*v - mean) * rstd
                } else {
                    0.0
                };
            }
        }
    }
}

/// Median of a centred window of `width` (odd) values around each element of `src`,
/// reflecting at the edges without repeating the edge value (`… x2 x1 | x0 x1 x2 …`).
/// Rows of at most `width / 2` values are copied unchanged.
fn median_filter_row(src: &[f32], dst: &mut [f32], width: usize) {
    let len = src.len().min(dst.len());
    let rank = width / 2;
    if len <= rank {
        dst[..len].copy_from_slice(&src[..len]);
        return;
    }
    let mut window = vec![0f32; 2 * rank + 1];
    for (j, out) in dst[..len].iter_mut().enumerate() {
        for (slot, w) in window.iter_mut().enumerate() {
            // Offset k = slot - rank in -rank..=rank; reflect below 0 and past the end.
            let pos = j as isize + slot as isize - rank as isize;
            let mut read = pos.unsigned_abs();
            if read >= len {
                read = 2 * len - read - 2;
            }
            *w = src[read];
        }
        window.sort_unstable_by(f32::total_cmp);
        *out = window[rank];
    }
}

// ---------------------------------------------------------------------------------------
// Dynamic time warping

/// A DTW cell reached from its upper-left neighbour.
const DIAGONAL: u8 = 0;
/// A DTW cell reached from the cell above (same frame, previous token).
const UP: u8 = 1;
/// A DTW cell reached from the cell to the left (same token, previous frame).
const LEFT: u8 = 2;

/// Minimum-cost monotonic path through `cost` (`[rows, cols]`) from `(0, 0)` to
/// `(rows - 1, cols - 1)` with diagonal, down and right steps.
///
/// Each cell takes the diagonal predecessor only when it is strictly cheapest, else the
/// upper one only when it is strictly cheapest, else the left one, even when the left one
/// is dearer than a tie of the other two. Costs accumulate in single precision. Returns
/// `(text_indices, time_indices)`, the path's row and column of each step in order;
/// both are empty when the matrix is.
pub fn dtw(
    cost: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(Vec<usize>, Vec<usize>), AlignmentError> {
    check_shape("DTW cost", cost.len(), &[rows, cols])?;
    if rows == 0 || cols == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let stride = cols + 1;
    let mut acc = vec![f32::INFINITY; (rows + 1) * stride];
    let mut trace = vec![LEFT; (rows + 1) * stride];
    acc[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = acc[(i - 1) * stride + j - 1];
            let c1 = acc[(i - 1) * stride + j];
            let c2 = acc[i * stride + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, DIAGONAL)
            } else if c1 < c0 && c1 < c2 {
                (c1, UP)
            } else {
                (c2, LEFT)
            };
            acc[i * stride + j] = cost[(i - 1) * cols + j - 1] + c;
            trace[i * stride + j] = t;
        }
    }

    let (mut i, mut j) = (rows, cols);
    let mut text = Vec::with_capacity(rows + cols);
    let mut time = Vec::with_capacity(rows + cols);
    while i > 0 && j > 0 {
        text.push(i - 1);
        time.push(j - 1);
        match trace[i * stride + j] {
            DIAGONAL => {
                i -= 1;
                j -= 1;
            }
            UP => i -= 1,
            _ => j -= 1,
        }
    }
    // With finite costs the path leaves (1, 1) diagonally and never runs along a border;
    // should infinities push it there, the border steps have no cell and are left out.
    text.reverse();
    time.reverse();
    Ok((text, time))
}

/// [`dtw`] on the negated matrix: the path that maximises the summed similarity.
pub fn negative_dtw(
    matrix: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(Vec<usize>, Vec<usize>), AlignmentError> {
    let negated: Vec<f32> = matrix.iter().map(|&v| -v).collect();
    dtw(&negated, rows, cols)
}

// ---------------------------------------------------------------------------------------
// Tokens → words

/// Whitespace as Python's `str.strip()` sees it: Unicode white space plus the
/// information separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s` without leading and trailing [`is_py_space`] characters.
fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Splits `tokens` into words for `language`: at spaces and punctuation for most
/// languages, at every complete code point for those written without spaces
/// ([`UNICODE_SPLIT_LANGUAGES`]).
pub fn split_to_word_tokens(
    tokens: &[u32],
    tok: &Tokenizer,
    language: &str,
) -> (Vec<String>, Vec<Vec<u32>>) {
    if UNICODE_SPLIT_LANGUAGES.contains(&language) {
        split_tokens_on_unicode(tokens, tok)
    } else {
        split_tokens_on_spaces(tokens, tok)
    }
}

/// Groups `tokens` into the shortest runs that decode to whole code points.
///
/// A run ends as soon as its decoding has no U+FFFD, or its first U+FFFD is also a
/// U+FFFD in the decoding of all tokens (a genuinely invalid sequence, not a character
/// cut between tokens). Tokens left over at the end, still mid-character, are dropped.
/// Timestamp tokens decode as `<|t.tt|>`, other special tokens as nothing.
pub fn split_tokens_on_unicode(tokens: &[u32], tok: &Tokenizer) -> (Vec<String>, Vec<Vec<u32>>) {
    const REPLACEMENT: char = '\u{fffd}';
    let full: Vec<char> = tok.decode_with_timestamps(tokens).chars().collect();
    let mut words = Vec::new();
    let mut word_tokens = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut offset = 0usize;
    for &token in tokens {
        current.push(token);
        let decoded = tok.decode_with_timestamps(&current);
        let first_bad = decoded.chars().position(|c| c == REPLACEMENT);
        let complete = match first_bad {
            None => true,
            Some(p) => full.get(p + offset) == Some(&REPLACEMENT),
        };
        if complete {
            offset += decoded.chars().count();
            words.push(decoded);
            word_tokens.push(std::mem::take(&mut current));
        }
    }
    (words, word_tokens)
}

/// Groups `tokens` into words: a sub-word (see [`split_tokens_on_unicode`]) starts a new
/// word when it is a special token, begins with a space, or strips to a substring of
/// [`ASCII_PUNCTUATION`] (the empty string included); otherwise it joins the previous word.
pub fn split_tokens_on_spaces(tokens: &[u32], tok: &Tokenizer) -> (Vec<String>, Vec<Vec<u32>>) {
    let (subwords, subword_tokens) = split_tokens_on_unicode(tokens, tok);
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<u32>> = Vec::new();
    for (subword, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks.first().is_some_and(|&t| t >= tok.eot());
        let with_space = subword.starts_with(' ');
        let punctuation = ASCII_PUNCTUATION.contains(py_strip(&subword));
        match (words.last_mut(), word_tokens.last_mut()) {
            (Some(word), Some(wt)) if !(special || with_space || punctuation) => {
                word.push_str(&subword);
                wt.extend(toks);
            }
            _ => {
                words.push(subword);
                word_tokens.push(toks);
            }
        }
    }
    (words, word_tokens)
}

// ---------------------------------------------------------------------------------------
// Words with times

/// A word of a window with its tokens, times relative to the window start (seconds) and
/// mean token probability.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    /// The word's text, with its leading space if any.
    pub word: String,
    /// The word's token ids.
    pub tokens: Vec<u32>,
    /// Start, seconds from the window start.
    pub start: f64,
    /// End, seconds from the window start.
    pub end: f64,
    /// Mean probability of the word's tokens.
    pub probability: f64,
}

/// Sum of `values` in NumPy's order (eight interleaved partial sums for runs of 8 to
/// 128, halves beyond), so that means match NumPy's to the last bit.
fn numpy_sum(values: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        values.iter().fold(0.0, |acc, &v| acc + v)
    } else if n <= BLOCK {
        let mut r = [0f64; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk += values[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[whole..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_sum(&values[..half]) + numpy_sum(&values[half..])
    }
}

/// Mean of `values` as NumPy computes it (NaN when empty).
fn numpy_mean(values: &[f64]) -> f64 {
    numpy_sum(values) / values.len() as f64
}

/// Median of `values` as NumPy computes it: the middle value, or the mean of the two
/// middle values (NaN when empty).
fn numpy_median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Word timings of one window from its alignment.
///
/// `text` are the window's text tokens (ids below `eot`), `text_token_probs` their
/// probabilities ([`text_token_probabilities`]) and `matrix` the alignment matrix rows of
/// those tokens plus the end token (`[text.len() + 1, frames]`, see [`text_rows`]).
/// Each token's time is the first frame the path reaches it; a word runs from its first
/// token's time to the next word's. The trailing end-of-text word is dropped. Returns no
/// words when there is no frame or no text.
pub fn find_alignment(
    tok: &Tokenizer,
    language: &str,
    text: &[u32],
    text_token_probs: &[f32],
    matrix: &[f32],
    frames: usize,
) -> Result<Vec<WordTiming>, AlignmentError> {
    let rows = text.len() + 1;
    check_shape("alignment matrix", matrix.len(), &[rows, frames])?;
    if frames == 0 {
        return Ok(Vec::new());
    }
    let (text_indices, time_indices) = negative_dtw(matrix, rows, frames)?;
    word_timings_from_path(
        tok,
        language,
        text,
        text_token_probs,
        &text_indices,
        &time_indices,
    )
}

/// Word timings from a DTW path through the rows of `text` plus the end token (the second
/// half of [`find_alignment`], for a path computed elsewhere).
///
/// `text_indices`/`time_indices` are the path's row and frame at each step.
pub fn word_timings_from_path(
    tok: &Tokenizer,
    language: &str,
    text: &[u32],
    text_token_probs: &[f32],
    text_indices: &[usize],
    time_indices: &[usize],
) -> Result<Vec<WordTiming>, AlignmentError> {
    if text_indices.len() != time_indices.len() {
        return Err(AlignmentError::Shape {
            what: "DTW path time indices",
            len: time_indices.len(),
            dims: vec![text_indices.len()],
            expected: text_indices.len(),
        });
    }
    let mut with_eot = text.to_vec();
    with_eot.push(tok.eot());
    let (words, word_tokens) = split_to_word_tokens(&with_eot, tok, language);
    if word_tokens.len() <= 1 {
        return Ok(Vec::new());
    }

    // Start of each word in tokens; the last entry is where the end token's word starts.
    let mut boundaries = Vec::with_capacity(word_tokens.len());
    boundaries.push(0usize);
    for t in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries.last().copied().unwrap_or(0) + t.len());
    }

    // Time of the first path step on each token row.
    let jump_times: Vec<f64> = time_indices
        .iter()
        .enumerate()
        .filter(|&(k, _)| k == 0 || text_indices[k] != text_indices[k - 1])
        .map(|(_, &t)| t as f64 / ALIGNMENT_FRAMES_PER_SECOND)
        .collect();
    let time_at = |b: usize| {
        jump_times.get(b).copied().ok_or(AlignmentError::Boundary {
            boundary: b,
            rows: jump_times.len(),
        })
    };

    let probs: Vec<f64> = text_token_probs.iter().map(|&p| f64::from(p)).collect();
    let mut out = Vec::with_capacity(words.len() - 1);
    for (w, (word, tokens)) in words.into_iter().zip(word_tokens).enumerate() {
        let Some(&next) = boundaries.get(w + 1) else {
            break;
        };
        let first = boundaries[w];
        let slice = &probs[first.min(probs.len())..next.min(probs.len())];
        out.push(WordTiming {
            word,
            tokens,
            start: time_at(first)?,
            end: time_at(next)?,
            probability: numpy_mean(slice),
        });
    }
    Ok(out)
}

/// The rows of a full alignment matrix (`[rows, frames]`, one row per input token) that
/// [`find_alignment`] uses: `text_len + 1` rows from `start_len`, i.e. the positions that
/// predict each text token and then the end token.
pub fn text_rows(
    matrix: &[f32],
    rows: usize,
    frames: usize,
    start_len: usize,
    text_len: usize,
) -> Result<&[f32], AlignmentError> {
    check_shape("alignment matrix", matrix.len(), &[rows, frames])?;
    let end = start_len + text_len + 1;
    if end > rows {
        return Err(AlignmentError::Rows {
            start: start_len,
            end,
            rows,
        });
    }
    Ok(&matrix[start_len * frames..end * frames])
}

/// Joins punctuation words to their neighbours, leaving the absorbed entries with an
/// empty word and no tokens (they keep their place and times).
///
/// First, right to left, a word that begins with a space and strips to a substring of
/// `prepended` moves to the front of the following kept word. Then, left to right, a word
/// that is a substring of `appended` (the empty word included) moves to the end of the
/// preceding kept word, unless that word ends with a space.
pub fn merge_punctuations(words: &mut [WordTiming], prepended: &str, appended: &str) {
    if words.len() >= 2 {
        let mut j = words.len() - 1;
        for i in (0..words.len() - 1).rev() {
            let previous = &words[i];
            if previous.word.starts_with(' ') && prepended.contains(py_strip(&previous.word)) {
                let word = std::mem::take(&mut words[i].word);
                let tokens = std::mem::take(&mut words[i].tokens);
                let following = &mut words[j];
                following.word.insert_str(0, &word);
                following.tokens.splice(0..0, tokens);
            } else {
                j = i;
            }
        }
    }

    let mut i = 0;
    for j in 1..words.len() {
        if !words[i].word.ends_with(' ') && appended.contains(words[j].word.as_str()) {
            let word = std::mem::take(&mut words[j].word);
            let tokens = std::mem::take(&mut words[j].tokens);
            words[i].word.push_str(&word);
            words[i].tokens.extend(tokens);
        } else {
            i = j;
        }
    }
}

// ---------------------------------------------------------------------------------------
// A window's segments

/// A segment with its words and its bounds adjusted to them.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedSegment {
    /// Start, seconds from the start of the audio.
    pub start: f64,
    /// End, seconds from the start of the audio.
    pub end: f64,
    /// The segment's words, in order.
    pub words: Vec<Word>,
}

/// The outcome of [`add_word_timestamps`] for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowWords {
    /// One entry per input segment, in order.
    pub segments: Vec<TimedSegment>,
    /// End of the last segment that received words (the input value if none did).
    pub last_speech_timestamp: f64,
}

/// The window's text tokens to align: every segment's ids below `eot`, concatenated.
pub fn window_text_tokens(segments: &[WindowSegment], eot: u32) -> Vec<u32> {
    segments
        .iter()
        .flat_map(|s| s.tokens.iter().copied().filter(|&t| t < eot))
        .collect()
}

/// `x` rounded to two decimals the way NumPy rounds a float64: scale by 100, round half
/// to even, scale back.
pub fn round_centiseconds(x: f64) -> f64 {
    (x * 100.0).round_ties_even() / 100.0
}

/// Python's `max(a, b)`: `b` only when it is strictly greater.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `b` only when it is strictly smaller.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// End time of the transcript so far: the last word's end, else the last segment's end.
pub fn last_word_end(segments: &[TimedSegment]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .find_map(|s| s.words.last().map(|w| w.end))
        .or_else(|| segments.last().map(|s| s.end))
}

/// Distributes a window's aligned words over its segments and tidies their times.
///
/// `alignment` is [`find_alignment`]'s output for [`window_text_tokens`] of `segments`;
/// `eot` the end-of-text id (segment ids at or above it are not text); `seek` the
/// window's first mel frame; `last_speech_timestamp` the end of speech before this
/// window (seconds). Word times are rounded to centiseconds before the boundary fixes,
/// which may leave unrounded values.
pub fn add_word_timestamps(
    segments: &[WindowSegment],
    mut alignment: Vec<WordTiming>,
    eot: u32,
    seek: usize,
    prepended: &str,
    appended: &str,
    mut last_speech_timestamp: f64,
) -> WindowWords {
    // Typical word length: the median of the non-zero durations, capped at 0.7 s.
    let durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d != 0.0)
        .collect();
    let median_duration = if durations.is_empty() {
        0.0
    } else {
        py_min(0.7, numpy_median(&durations))
    };
    // Longest plausible word: twice the typical one.
    let max_duration = median_duration * 2.0;

    // A long sentence-final mark ends max_duration after it starts; a long word right
    // after one starts max_duration before it ends.
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_END_MARKS.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END_MARKS.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }

    merge_punctuations(&mut alignment, prepended, appended);

    let time_offset = seek as f64 / MEL_FRAMES_PER_SECOND;
    let mut word_index = 0;
    let mut out = Vec::with_capacity(segments.len());
    for segment in segments {
        let text_tokens = segment.tokens.iter().filter(|&&t| t < eot).count();
        let (mut start, mut end) = (segment.start, segment.end);

        // A segment takes whole merged words until it holds as many tokens as its text;
        // a word spilling over a boundary stays with the segment where it starts.
        let mut saved_tokens = 0;
        let mut words: Vec<Word> = Vec::new();
        while word_index < alignment.len() && saved_tokens < text_tokens {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(Word {
                    word: timing.word.clone(),
                    start: round_centiseconds(time_offset + timing.start),
                    end: round_centiseconds(time_offset + timing.end),
                    probability: timing.probability as f32,
                });
            }
            saved_tokens += timing.tokens.len();
            word_index += 1;
        }

        if !words.is_empty() {
            // After a pause longer than four typical words, a first word (or first pair)
            // that is too long is cut to max_duration, ending where it ended.
            let first_too_long = words[0].end - words[0].start > max_duration
                || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0);
            if words[0].end - last_speech_timestamp > median_duration * 4.0 && first_too_long {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = py_max(words[1].end / 2.0, words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = py_max(0.0, words[0].end - max_duration);
            }

            // A first word starting over 0.5 s before the segment (which starts inside
            // it) starts at the segment, at most a typical word before its end; otherwise
            // the segment starts with its first word.
            if start < words[0].end && start - 0.5 > words[0].start {
                words[0].start = py_max(0.0, py_min(words[0].end - median_duration, start));
            } else {
                start = words[0].start;
            }

            // A last word ending over 0.5 s after the segment (which ends inside it) ends
            // at the segment, at least a typical word after its start; otherwise the
            // segment ends with its last word.
            let last = words.len() - 1;
            if end > words[last].start && end + 0.5 < words[last].end {
                words[last].end = py_max(words[last].start + median_duration, end);
            } else {
                end = words[last].end;
            }

            // Speech resumes from here for the next segment's pause test.
            last_speech_timestamp = end;
        }
        out.push(TimedSegment { start, end, words });
    }
    WindowWords {
        segments: out,
        last_speech_timestamp,
    }
}
