//! Word-level timestamps: the attention → matrix arithmetic, the DTW path, word splitting,
//! punctuation merging and the per-window heuristics.
//!
//! Small cases are worked out by hand in the comments. The `*_WINDOW` references at the
//! end were recorded from faster-whisper 1.2.1 with CTranslate2 4.8.5 (whisper-base,
//! float32, CPU, greedy, `word_timestamps=True`, no VAD) on `jfk.wav` and
//! `long_public_concat.wav`: for each 30 s window, the segments handed to
//! `add_word_timestamps`, the DTW path and token probabilities returned by
//! `Whisper.align`, the word timings of `find_alignment`, and the final words.

use std::path::PathBuf;

use amanuensis::alignment::{
    add_word_timestamps, alignment_input_tokens, alignment_matrix, alignment_matrix_of, dtw,
    find_alignment, gather_alignment_heads, last_word_end, merge_punctuations, negative_dtw,
    round_centiseconds, split_to_word_tokens, split_tokens_on_unicode, text_rows,
    text_token_probabilities, window_text_tokens, word_timings_from_path, AlignmentError,
    AttentionValues, TimedSegment, WordTiming, DEFAULT_APPEND_PUNCTUATIONS,
    DEFAULT_PREPEND_PUNCTUATIONS,
};
use amanuensis::tokenizer::Tokenizer;
use amanuensis::transcript::{WindowSegment, Word};

fn tokenizer() -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocabulary.txt");
    Tokenizer::from_vocabulary_file(&path).expect("tests/data/vocabulary.txt loads")
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol,
            "{what}[{i}]: {a} vs {e} (tolerance {tol})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Attention → alignment matrix

/// One head, three tokens, five encoder positions; `num_frames = 8` keeps the first four.
/// The kept part of each row sums to 0.8, so renormalising multiplies by 1.25:
///   t0 = [0.5, 0.25, 0.25, 0], t1 = [0.25, 0.5, 0, 0.25], t2 = [0, 0.25, 0.5, 0.25].
const PROBS_3X5: [f32; 15] = [
    0.4, 0.2, 0.2, 0.0, 0.2, //
    0.2, 0.4, 0.0, 0.2, 0.2, //
    0.0, 0.2, 0.4, 0.2, 0.2, //
];
const S: f32 = 1.224_744_9; // sqrt(1.5): 0.25 / sqrt(0.125 / 3)
const R: f32 = std::f32::consts::SQRT_2; // (1/6) / sqrt(1/72)
const H: f32 = std::f32::consts::FRAC_1_SQRT_2; // (1/12) / sqrt(1/72)

/// Column by column over the three tokens (population variance):
///   f0 [0.5, 0.25, 0]  mean 1/4, var 1/24 → [ S, 0, -S]
///   f1 [0.25, 0.5, 0.25] mean 1/3, var 1/72 → [-H, R, -H]
///   f2 [0.25, 0, 0.5]  mean 1/4, var 1/24 → [ 0, -S, S]
///   f3 [0, 0.25, 0.25] mean 1/6, var 1/72 → [-R, H, H]
const STANDARDIZED_3X4: [f32; 12] = [
    S, -H, 0.0, -R, //
    0.0, R, -S, H, //
    -S, -H, S, H, //
];

/// Width 3, reflecting without repeating the edge: x[-1] = x[1], x[4] = x[2].
///   t0 [S, -H, 0, -R]: med(-H,S,-H), med(S,-H,0), med(-H,0,-R), med(0,-R,0)
///   t1 [0, R, -S, H]:  med(R,0,R),   med(0,R,-S), med(R,-S,H),  med(-S,H,-S)
///   t2 [-S,-H,S,H]:    med(-H,-S,-H), med(-S,-H,S), med(-H,S,H), med(S,H,S)
const FILTERED_3X4: [f32; 12] = [
    -H, 0.0, -H, 0.0, //
    R, 0.0, H, -S, //
    -H, -H, H, S, //
];

#[test]
fn standardization_is_over_tokens_after_renormalising_the_kept_frames() {
    let m = alignment_matrix(&PROBS_3X5, 1, 3, 5, 8, 1).unwrap();
    assert_close(&m, &STANDARDIZED_3X4, 1e-5, "standardised");
}

#[test]
fn median_filter_reflects_at_the_edges() {
    let m = alignment_matrix(&PROBS_3X5, 1, 3, 5, 8, 3).unwrap();
    assert_close(&m, &FILTERED_3X4, 1e-5, "filtered");
}

#[test]
fn heads_are_averaged_after_filtering() {
    // Head 2 has head 1's token rows in reverse order; standardising and filtering
    // commute with that, so its filtered rows are FILTERED_3X4's reversed.
    let mut weights = PROBS_3X5.to_vec();
    for t in (0..3).rev() {
        weights.extend_from_slice(&PROBS_3X5[t * 5..t * 5 + 5]);
    }
    let m = alignment_matrix(&weights, 2, 3, 5, 8, 3).unwrap();
    let expected = [
        -H,
        -H / 2.0,
        0.0,
        S / 2.0, // (row0 + row2) / 2
        R,
        0.0,
        H,
        -S, // row1
        -H,
        -H / 2.0,
        0.0,
        S / 2.0, // (row2 + row0) / 2
    ];
    assert_close(&m, &expected, 1e-5, "mean over heads");
}

#[test]
fn raw_scores_give_the_same_matrix_as_probabilities() {
    // Scores with the same softmax over the kept frames: ln of the probabilities, with a
    // large offset per row and -inf for the zero probabilities.
    let scores: Vec<f32> = PROBS_3X5
        .iter()
        .enumerate()
        .map(|(i, &p)| p.ln() + 20.0 * (i / 5) as f32)
        .collect();
    let from_scores = alignment_matrix_of(AttentionValues::Scores, &scores, 1, 3, 5, 8, 3).unwrap();
    assert_close(&from_scores, &FILTERED_3X4, 1e-5, "from scores");
}

#[test]
fn rows_no_longer_than_half_the_filter_are_not_filtered() {
    // num_frames 7 keeps 3 frames; width 7 has rank 3 >= 3, so only standardisation runs.
    // Kept rows: [0.4,0.2,0.2]/0.8, [0.2,0.4,0]/0.6, [0,0.2,0.4]/0.6.
    let m = alignment_matrix(&PROBS_3X5, 1, 3, 5, 7, 7).unwrap();
    let kept = [
        0.5f32,
        0.25,
        0.25,
        1.0 / 3.0,
        2.0 / 3.0,
        0.0,
        0.0,
        1.0 / 3.0,
        2.0 / 3.0,
    ];
    let mut expected = vec![0f32; 9];
    for j in 0..3 {
        let col: Vec<f64> = (0..3).map(|t| f64::from(kept[t * 3 + j])).collect();
        let mean = col.iter().sum::<f64>() / 3.0;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0;
        for t in 0..3 {
            expected[t * 3 + j] = ((col[t] - mean) / var.sqrt()) as f32;
        }
    }
    assert_close(&m, &expected, 1e-5, "unfiltered");
}

#[test]
fn a_column_of_equal_values_standardises_to_zero() {
    // Frame 0 is 0.25 for all tokens (rows sum to exactly 1): zero variance, where a
    // literal division would give NaN. The other columns standardise as usual.
    let w = [0.25f32, 0.25, 0.5, 0.25, 0.5, 0.25, 0.25, 0.125, 0.625];
    let m = alignment_matrix(&w, 1, 3, 3, 6, 1).unwrap();
    assert_eq!([m[0], m[3], m[6]], [0.0, 0.0, 0.0]);
    assert!(m.iter().all(|v| v.is_finite()), "{m:?}");
    // Frame 1: [0.25, 0.5, 0.125], mean 7/24, population variance 7/288.
    let (mean, std) = (7.0f64 / 24.0, (7.0f64 / 288.0).sqrt());
    let expected: Vec<f32> = [0.25, 0.5, 0.125]
        .iter()
        .map(|v| ((v - mean) / std) as f32)
        .collect();
    assert_close(&[m[1], m[4], m[7]], &expected, 1e-5, "frame 1");
}

#[test]
fn alignment_matrix_checks_its_inputs() {
    assert!(matches!(
        alignment_matrix(&PROBS_3X5, 1, 3, 4, 8, 7),
        Err(AlignmentError::Shape {
            len: 15,
            expected: 12,
            ..
        })
    ));
    assert_eq!(
        alignment_matrix(&PROBS_3X5, 1, 3, 5, 8, 6),
        Err(AlignmentError::MedianFilterWidth(6))
    );
    assert!(matches!(
        alignment_matrix(&[], usize::MAX, 2, 3, 8, 7),
        Err(AlignmentError::Overflow { .. })
    ));
    // Fewer than two mel frames leave no encoder position to align against.
    assert_eq!(alignment_matrix(&PROBS_3X5, 1, 3, 5, 1, 7), Ok(Vec::new()));
}

#[test]
fn alignment_heads_are_gathered_by_layer_then_as_listed() {
    // 3 layers × 2 heads × (1 token × 2 frames); value = 10 * layer + head (+0.5 on frame 1).
    let layers: Vec<Vec<f32>> = (0..3)
        .map(|l| {
            (0..2)
                .flat_map(|h| {
                    let v = (10 * l + h) as f32;
                    [v, v + 0.5]
                })
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = layers.iter().map(Vec::as_slice).collect();
    let heads = [(2, 1), (0, 1), (2, 0)];
    let out = gather_alignment_heads(&refs, 2, 1, 2, &heads).unwrap();
    assert_eq!(out, vec![1.0, 1.5, 21.0, 21.5, 20.0, 20.5]);
    assert_eq!(
        gather_alignment_heads(&refs, 2, 1, 2, &[(3, 0)]),
        Err(AlignmentError::Head {
            layer: 3,
            head: 0,
            layers: 3,
            heads: 2
        })
    );
}

#[test]
fn text_rows_start_at_the_no_timestamps_position() {
    // 7 input rows: 3 sot-sequence rows, <|notimestamps|>, 2 text, <|endoftext|>.
    let m: Vec<f32> = (0..14).map(|v| v as f32).collect();
    assert_eq!(text_rows(&m, 7, 2, 3, 2).unwrap(), &m[6..12]);
    assert_eq!(
        text_rows(&m, 7, 2, 3, 4),
        Err(AlignmentError::Rows {
            start: 3,
            end: 8,
            rows: 7
        })
    );
}

#[test]
fn token_probabilities_use_the_text_vocabulary_only() {
    // Vocabulary of 6 with eot = 4: ids 4 and 5 take no mass.
    // Row 1 predicts text[0] = 2: softmax([0, ln 2, ln 3, 0]) → 3 / 7 (the ln 9 at id 5
    // is ignored). Row 2 predicts text[1] = 0: [ln 4, 0, 0, 0] → 4 / 7.
    let ln = |x: f32| x.ln();
    let logits = [
        9.0,
        9.0,
        9.0,
        9.0,
        9.0,
        9.0, //
        0.0,
        ln(2.0),
        ln(3.0),
        0.0,
        5.0,
        ln(9.0), //
        ln(4.0),
        0.0,
        0.0,
        0.0,
        7.0,
        7.0, //
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0, //
    ];
    let p = text_token_probabilities(&logits, 4, 6, 1, &[2, 0], 4).unwrap();
    assert_close(&p, &[3.0 / 7.0, 4.0 / 7.0], 1e-6, "probabilities");
    assert!(matches!(
        text_token_probabilities(&logits, 4, 6, 1, &[4], 4),
        Err(AlignmentError::Token { token: 4, .. })
    ));
}

#[test]
fn alignment_input_is_sot_sequence_notimestamps_text_eot() {
    let tok = tokenizer();
    let seq = alignment_input_tokens(&[50258, 50259, 50359], &[400, 370], &tok);
    assert_eq!(seq, vec![50258, 50259, 50359, 50363, 400, 370, 50257]);
}

// ---------------------------------------------------------------------------------------
// DTW

#[test]
fn dtw_three_way_tie_takes_the_left_step() {
    // similarity [[1,0],[0,1]]; accumulated −similarity (rows i, columns j, from 1):
    //   (1,1) = −1 (diagonal from the origin)
    //   (2,1) = −1 (up), (1,2) = −1 (left)
    //   (2,2): diagonal −1, up −1, left −1 all tie → left; −1 + −1 = −2.
    // Back from (2,2): left to (2,1), up to (1,1), diagonal to the origin.
    let (text, time) = negative_dtw(&[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
    assert_eq!(text, vec![0, 1, 1]);
    assert_eq!(time, vec![0, 0, 1]);
}

#[test]
fn dtw_tie_of_diagonal_and_up_takes_the_dearer_left() {
    // similarity [[1,0],[-1,5]]: (1,1) = −1, (1,2) = −1 + 0 = −1, (2,1) = −1 + 1 = 0.
    // At (2,2) diagonal (−1) and up (−1) tie, neither is strictly smallest, so the left
    // step (0) is taken although it is dearer: (2,2) = −5 + 0 = −5.
    let (text, time) = negative_dtw(&[1.0, 0.0, -1.0, 5.0], 2, 2).unwrap();
    assert_eq!(text, vec![0, 1, 1]);
    assert_eq!(time, vec![0, 0, 1]);
}

#[test]
fn dtw_strict_diagonal_minimum_is_taken() {
    // similarity [[1,-2],[-2,3]]: (1,1) = −1, (1,2) = (2,1) = −1 + 2 = +1. At (2,2) the
    // diagonal (−1) is strictly smallest → (0,0), (1,1).
    let (text, time) = negative_dtw(&[1.0, -2.0, -2.0, 3.0], 2, 2).unwrap();
    assert_eq!(text, vec![0, 1]);
    assert_eq!(time, vec![0, 1]);
}

#[test]
fn dtw_rectangular_path() {
    // similarity [[1,1,0,0],[0,0,1,1]] (2 rows × 4 columns). Column by column:
    //   j1: (1,1) = −1 diag; (2,1) = −1 up
    //   j2: (1,2) = −2 left; (2,2): diag −1, up −2, left −1 → up, = −2
    //   j3: (1,3) = −2 left; (2,3): diag −2, up −2, left −2 → left, = −3
    //   j4: (1,4) = −2 left; (2,4): diag −2, up −2, left −3 → left, = −4
    // Back: (2,4) ← (2,3) ← (2,2) ↑ (1,2) ← (1,1) ↖ origin.
    let (text, time) = negative_dtw(&[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0], 2, 4).unwrap();
    assert_eq!(text, vec![0, 0, 1, 1, 1]);
    assert_eq!(time, vec![0, 1, 1, 2, 3]);
}

#[test]
fn dtw_minimises_cost_and_handles_single_rows_and_columns() {
    // `dtw` takes costs directly: the same case as above, negated.
    let (text, time) = dtw(&[-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0], 2, 4).unwrap();
    assert_eq!((text, time), (vec![0, 0, 1, 1, 1], vec![0, 1, 1, 2, 3]));
    assert_eq!(
        dtw(&[3.0, 1.0, 2.0], 1, 3).unwrap(),
        (vec![0, 0, 0], vec![0, 1, 2])
    );
    assert_eq!(
        dtw(&[3.0, 1.0, 2.0], 3, 1).unwrap(),
        (vec![0, 1, 2], vec![0, 0, 0])
    );
    assert_eq!(dtw(&[], 0, 5).unwrap(), (vec![], vec![]));
    assert!(matches!(
        dtw(&[1.0; 5], 2, 3),
        Err(AlignmentError::Shape { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Words

/// `tokens_greedy` text of FIXTURES.md.
const JFK_TEXT: [u32; 25] = [
    400, 370, 452, 7177, 6280, 11, 1029, 406, 437, 428, 1941, 393, 360, 337, 291, 11, 1029, 437,
    291, 393, 360, 337, 428, 1941, 13,
];

#[test]
fn jfk_tokens_split_into_words_with_punctuation_apart() {
    let tok = tokenizer();
    let mut tokens = JFK_TEXT.to_vec();
    tokens.push(tok.eot());
    let (words, word_tokens) = split_to_word_tokens(&tokens, &tok, "en");
    let expected = [
        " And",
        " so",
        " my",
        " fellow",
        " Americans",
        ",",
        " ask",
        " not",
        " what",
        " your",
        " country",
        " can",
        " do",
        " for",
        " you",
        ",",
        " ask",
        " what",
        " you",
        " can",
        " do",
        " for",
        " your",
        " country",
        ".",
        "",
    ];
    assert_eq!(words, expected);
    let singles: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    assert_eq!(word_tokens, singles);
}

#[test]
fn subwords_join_unless_spaced_special_or_punctuation() {
    let tok = tokenizer();
    // " Americ" "ans" "'s" "," " (" " world" ")" eot: "'s" is not a substring of the
    // ASCII punctuation string, so it joins; "," and ")" are.
    let (words, word_tokens) =
        split_to_word_tokens(&[1656, 599, 311, 11, 522, 1002, 8, 50257], &tok, "en");
    assert_eq!(words, [" Americans's", ",", " (", " world", ")", ""]);
    assert_eq!(
        word_tokens,
        vec![
            vec![1656, 599, 311],
            vec![11],
            vec![522],
            vec![1002],
            vec![8],
            vec![50257]
        ]
    );
    // "..." is not a substring of it either; a timestamp is special.
    let (words, _) = split_to_word_tokens(&[2425, 485, 1097, 30, 0, 13, 50364, 2425], &tok, "en");
    assert_eq!(
        words,
        [" Hello...", " ...", "?", "!", ".", "<|0.00|>", " Hello"]
    );
}

#[test]
fn unicode_split_for_languages_without_spaces() {
    let tok = tokenizer();
    // 487 = bytes E3 81, 241 = byte 93: together "こ"; 3065 = "は".
    let (words, word_tokens) = split_to_word_tokens(&[487, 241, 3065, 50257], &tok, "ja");
    assert_eq!(words, ["こ", "は", ""]);
    assert_eq!(word_tokens, vec![vec![487, 241], vec![3065], vec![50257]]);
    // The same tokens in a spaced language form one word.
    let (words, _) = split_to_word_tokens(&[487, 241, 3065, 50257], &tok, "en");
    assert_eq!(words, ["こは", ""]);
    // A byte that can never complete a character is a word of its own (its U+FFFD is in
    // the full decoding too); so is a character cut by the end of the tokens.
    let (words, word_tokens) = split_tokens_on_unicode(&[241, 3503], &tok);
    assert_eq!(words, ["\u{fffd}", "こ"]);
    assert_eq!(word_tokens, vec![vec![241], vec![3503]]);
    let (words, _) = split_to_word_tokens(&[3503, 487, 50364], &tok, "zh");
    assert_eq!(words, ["こ", "\u{fffd}", "<|0.00|>"]);
}

fn timing(word: &str, tokens: &[u32]) -> WordTiming {
    WordTiming {
        word: word.to_string(),
        tokens: tokens.to_vec(),
        start: 0.0,
        end: 0.0,
        probability: 0.0,
    }
}

fn merged(words: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
    let mut w: Vec<WordTiming> = words.iter().map(|(s, t)| timing(s, t)).collect();
    merge_punctuations(
        &mut w,
        DEFAULT_PREPEND_PUNCTUATIONS,
        DEFAULT_APPEND_PUNCTUATIONS,
    );
    w.into_iter().map(|w| (w.word, w.tokens)).collect()
}

fn owned(words: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
    words
        .iter()
        .map(|(s, t)| (s.to_string(), t.to_vec()))
        .collect()
}

#[test]
fn punctuation_merges_into_its_neighbours() {
    // Appended marks join the word before; the absorbed entries stay, emptied.
    assert_eq!(
        merged(&[(" Hello", &[1]), (",", &[2]), (" world", &[3]), (".", &[4])]),
        owned(&[
            (" Hello,", &[1, 2]),
            ("", &[]),
            (" world.", &[3, 4]),
            ("", &[])
        ])
    );
    // A spaced opening mark joins the word after it; the emptied word then counts as
    // "appended" (the empty string is a substring) without changing anything.
    assert_eq!(
        merged(&[(" Hello", &[1]), (" (", &[2]), ("world", &[3]), (")", &[4])]),
        owned(&[
            (" Hello", &[1]),
            ("", &[]),
            (" (world)", &[2, 3, 4]),
            ("", &[])
        ])
    );
    // Several opening marks chain right to left onto the same word.
    assert_eq!(
        merged(&[(" \"", &[1]), (" (", &[2]), (" yes", &[3])]),
        owned(&[("", &[]), ("", &[]), (" \" ( yes", &[1, 2, 3])])
    );
    // An unspaced opening mark is not prepended (nor appended: it is not in that list);
    // a word ending in a space takes nothing.
    assert_eq!(
        merged(&[(" a", &[1]), ("(", &[2]), (" b ", &[3]), (",", &[4])]),
        owned(&[(" a", &[1]), ("(", &[2]), (" b ", &[3]), (",", &[4])])
    );
    // Substring semantics: "!！" is part of the appended string, "?!" is not.
    assert_eq!(
        merged(&[(" a", &[1]), ("!！", &[2]), (" b", &[3]), ("?!", &[4])]),
        owned(&[(" a!！", &[1, 2]), ("", &[]), (" b", &[3]), ("?!", &[4])])
    );
}

#[test]
fn times_round_to_centiseconds_like_numpy() {
    // NumPy scales by 100 and rounds half to even: 2.675 * 100 = 267.5 exactly → 268,
    // where Python's correctly rounded round() would give 2.67.
    let cases = [
        (2.675, 2.68),
        (1.115, 1.12),
        (1.005, 1.0),
        (0.125, 0.12),
        (0.375, 0.38),
        (10.125, 10.12),
        (0.285, 0.28),
        (29.994999999999997, 29.99),
        (5.015, 5.01),
        (7.659999999999999, 7.66),
    ];
    for (x, expected) in cases {
        assert_eq!(round_centiseconds(x), expected, "round({x}, 2)");
    }
}

#[test]
fn word_probability_is_the_numpy_mean_of_its_tokens() {
    let tok = tokenizer();
    // Eleven "a" tokens make one word. NumPy sums eleven values as eight interleaved
    // partial sums plus the rest: its mean is 0.13253535707983816 where a left-to-right
    // sum would give 0.13253535707983818.
    // Single-precision values, written with their full decimal expansion.
    let probs: Vec<f32> = [
        0.9480541348457336f64,
        0.009496040642261505,
        0.0008937107631936669,
        0.4693923890590668,
        9.203048648487311e-06,
        9.574810944101841e-10,
        1.8458540251842237e-09,
        2.827041489794624e-09,
        0.029429739341139793,
        0.0006136639858596027,
        4.0561939584904394e-08,
    ]
    .iter()
    .map(|&p| p as f32)
    .collect();
    let text = [64u32; 11];
    // Diagonal path over the 11 tokens and the end token.
    let steps: Vec<usize> = (0..12).collect();
    let words = word_timings_from_path(&tok, "en", &text, &probs, &steps, &steps).unwrap();
    assert_eq!(words.len(), 1);
    assert_eq!(words[0].word, "aaaaaaaaaaa");
    assert_eq!((words[0].start, words[0].end), (0.0, 0.22));
    assert_eq!(words[0].probability, 0.13253535707983816);
}

// ---------------------------------------------------------------------------------------
// Per-window heuristics (expected values from faster-whisper's own add_word_timestamps)

fn seg(start: f64, end: f64, tokens: &[u32]) -> WindowSegment {
    WindowSegment {
        start,
        end,
        // Alignment reads the tokens only.
        text: String::new(),
        tokens: tokens.to_vec(),
    }
}

fn wt(word: &str, tokens: &[u32], start: f64, end: f64, probability: f64) -> WordTiming {
    WordTiming {
        word: word.to_string(),
        tokens: tokens.to_vec(),
        start,
        end,
        probability,
    }
}

fn word(w: &str, start: f64, end: f64, probability: f64) -> Word {
    Word {
        word: w.to_string(),
        start,
        end,
        probability: probability as f32,
    }
}

fn run_window(
    segments: &[WindowSegment],
    alignment: Vec<WordTiming>,
    seek: usize,
    last: f64,
) -> (Vec<TimedSegment>, f64) {
    let out = add_word_timestamps(
        segments,
        alignment,
        50257,
        seek,
        DEFAULT_PREPEND_PUNCTUATIONS,
        DEFAULT_APPEND_PUNCTUATIONS,
        last,
    );
    (out.segments, out.last_speech_timestamp)
}

#[test]
fn long_first_word_after_a_pause_is_cut_to_twice_the_median() {
    // Durations 1.5, 1.1, 0.2 → median 1.1, capped at 0.7; max 1.4. The first word ends
    // 6.5 s after the last speech (> 4 × 0.7) and lasts 1.5 > 1.4: it now starts at
    // 11.5 − 1.4 = 10.1, and so does the segment.
    let segments = [seg(10.0, 13.0, &[50364, 2425, 1002, 13, 50514])];
    let alignment = vec![
        wt(" Hello", &[2425], 0.0, 1.5, 0.9),
        wt(" world", &[1002], 1.5, 2.6, 0.8),
        wt(".", &[13], 2.6, 2.8, 0.7),
    ];
    let (out, last) = run_window(&segments, alignment, 1000, 5.0);
    assert_eq!(
        out,
        vec![TimedSegment {
            start: 10.1,
            end: 12.6,
            words: vec![
                word(" Hello", 10.1, 11.5, 0.9),
                word(" world.", 11.5, 12.6, 0.8)
            ],
        }]
    );
    assert_eq!(last, 12.6);
}

#[test]
fn long_first_pair_after_a_pause_splits_at_a_boundary() {
    // Durations 1.5, 2.0, 0.4, 0.3 → median 0.95, capped at 0.7; max 1.4. After the
    // pause the second word (11.5–13.5 s) is too long as well: the pair meets at
    // max(13.5 / 2, 13.5 − 1.4) = 12.1, and the first word starts at 12.1 − 1.4 = 10.7.
    let segments = [seg(10.0, 15.0, &[50364, 2425, 1002, 1028, 586, 50614])];
    let alignment = vec![
        wt(" Hello", &[2425], 0.0, 1.5, 0.9),
        wt(" world", &[1002], 1.5, 3.5, 0.8),
        wt(" again", &[1028], 3.5, 3.9, 0.7),
        wt(" now", &[586], 3.9, 4.2, 0.6),
    ];
    let (out, last) = run_window(&segments, alignment, 1000, 5.0);
    assert_eq!(
        out,
        vec![TimedSegment {
            start: 10.7,
            end: 14.2,
            words: vec![
                word(" Hello", 10.7, 12.1, 0.9),
                word(" world", 12.1, 13.5, 0.8),
                word(" again", 13.5, 13.9, 0.7),
                word(" now", 13.9, 14.2, 0.6),
            ],
        }]
    );
    assert_eq!(last, 14.2);
}

#[test]
fn segment_bounds_win_over_words_that_overhang_them() {
    // Median 1.25 → 0.7. The first word starts 1 s before the segment (which starts
    // inside it): it starts at max(0, min(11.4 − 0.7, 11.0)) = 10.7 (in float,
    // 10.700000000000001). The last ends 0.9 s after the segment: it ends at
    // max(11.8 + 0.7, 12.0) = 12.5. The segment keeps 11.0–12.0.
    let segments = [seg(11.0, 12.0, &[50364, 2425, 1002, 50414])];
    let alignment = vec![
        wt(" Hello", &[2425], 0.0, 1.4, 0.9),
        wt(" world", &[1002], 1.8, 2.9, 0.8),
    ];
    let (out, last) = run_window(&segments, alignment, 1000, 10.0);
    assert_eq!(
        out,
        vec![TimedSegment {
            start: 11.0,
            end: 12.0,
            words: vec![
                word(" Hello", 10.700000000000001, 11.4, 0.9),
                word(" world", 11.8, 12.5, 0.8),
            ],
        }]
    );
    assert_eq!(last, 12.0);
}

#[test]
fn long_words_at_sentence_ends_are_truncated() {
    // Durations 0.3, 1.6, 1.6 → median 0.7 (capped), max 1.4. "." (0.3–1.9) ends at
    // 0.3 + 1.4 = 1.7; " world" after it (1.9–3.5) starts at 3.5 − 1.4 = 2.1. Then "."
    // joins " Hello" with " Hello"'s times.
    let segments = [seg(0.0, 4.0, &[50364, 2425, 13, 1002, 50564])];
    let alignment = vec![
        wt(" Hello", &[2425], 0.0, 0.3, 0.9),
        wt(".", &[13], 0.3, 1.9, 0.5),
        wt(" world", &[1002], 1.9, 3.5, 0.8),
    ];
    let (out, last) = run_window(&segments, alignment, 0, 0.0);
    assert_eq!(
        out,
        vec![TimedSegment {
            start: 0.0,
            end: 3.5,
            words: vec![
                word(" Hello.", 0.0, 0.3, 0.9),
                word(" world", 2.1, 3.5, 0.8)
            ],
        }]
    );
    assert_eq!(last, 3.5);
}

#[test]
fn merged_words_stay_with_the_segment_they_start_in() {
    // "," belongs to the second segment's tokens but is appended to " Hello": the first
    // segment takes the 2-token word, the second only " world". Offset 250 frames = 2.5 s.
    let segments = [
        seg(2.5, 3.0, &[50364, 2425, 50389]),
        seg(3.0, 3.6, &[50389, 11, 1002, 50419]),
    ];
    let alignment = vec![
        wt(" Hello", &[2425], 0.0, 0.3, 0.9),
        wt(",", &[11], 0.3, 0.3, 0.5),
        wt(" world", &[1002], 0.5, 1.1, 0.8),
    ];
    assert_eq!(window_text_tokens(&segments, 50257), vec![2425, 11, 1002]);
    let (out, last) = run_window(&segments, alignment, 250, 1.0);
    assert_eq!(
        out,
        vec![
            TimedSegment {
                start: 2.5,
                end: 2.8,
                words: vec![word(" Hello,", 2.5, 2.8, 0.9)],
            },
            TimedSegment {
                start: 3.0,
                end: 3.6,
                words: vec![word(" world", 3.0, 3.6, 0.8)],
            },
        ]
    );
    assert_eq!(last, 3.6);
    assert_eq!(last_word_end(&out), Some(3.6));
}

#[test]
fn a_window_without_words_keeps_its_segments() {
    let segments = [seg(0.0, 2.0, &[50364, 50464])];
    let (out, last) = run_window(&segments, Vec::new(), 0, 3.0);
    assert_eq!(
        out,
        vec![TimedSegment {
            start: 0.0,
            end: 2.0,
            words: vec![]
        }]
    );
    assert_eq!(last, 3.0);
    assert_eq!(last_word_end(&out), Some(2.0));
    assert_eq!(last_word_end(&[]), None);
}

// ---------------------------------------------------------------------------------------
// Synthetic end to end: attention → matrix → path → words → segment

#[test]
fn diagonal_attention_puts_words_where_the_diagonal_does() {
    let tok = tokenizer();
    let start = [50258u32, 50259, 50359];
    let text = [400u32, 370, 452, 7177, 6280]; // " And so my fellow Americans"
    let input = alignment_input_tokens(&start, &text, &tok);
    let tokens = input.len(); // 10
    let frames = 1500;
    let num_frames = 200; // 100 encoder positions of audio
    let n = num_frames / 2;
    // Row 3 + k predicts text token k and attends frames [b[k], b[k + 1]); row 8 predicts
    // the end token and attends [95, 100). Other rows attend the audio uniformly.
    let bounds = [10usize, 25, 45, 60, 80, 95, 100];
    let heads = 2;
    let mut weights = vec![0f32; heads * tokens * frames];
    for h in 0..heads {
        for t in 0..tokens {
            let row = &mut weights[(h * tokens + t) * frames..][..frames];
            // Half the mass (per head a different share) past the audio, to be renormalised away.
            let audio = if h == 0 { 0.5 } else { 0.3 };
            row[n..].fill((1.0 - audio) / (frames - n) as f32);
            let k = t.wrapping_sub(3);
            if k < 6 {
                let (a, b) = (bounds[k], bounds[k + 1]);
                for (j, v) in row[..n].iter_mut().enumerate() {
                    let inside = (a..b).contains(&j);
                    // A small ripple keeps columns from being exactly flat.
                    let ripple = 1.0 + 0.01 * ((j * 7 + t) % 5) as f32;
                    *v = audio
                        * ripple
                        * if inside {
                            0.9 / (b - a) as f32
                        } else {
                            0.1 / (n - (b - a)) as f32
                        };
                }
            } else {
                row[..n].fill(audio / n as f32);
            }
        }
    }

    let matrix = alignment_matrix(&weights, heads, tokens, frames, num_frames, 7).unwrap();
    assert_eq!(matrix.len(), tokens * n);
    let rows = text_rows(&matrix, tokens, n, start.len(), text.len()).unwrap();
    let probs = [0.9f32, 0.8, 0.7, 0.6, 0.5];
    let words = find_alignment(&tok, "en", &text, &probs, rows, n).unwrap();

    let names: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(names, [" And", " so", " my", " fellow", " Americans"]);
    let frame = 1.0 / 50.0;
    for (k, w) in words.iter().enumerate() {
        // The path starts at frame 0, so the first word starts there whatever it attends.
        let expected_start = if k == 0 { 0.0 } else { bounds[k] as f64 / 50.0 };
        let expected_end = bounds[k + 1] as f64 / 50.0;
        assert!(
            (w.start - expected_start).abs() <= frame + 1e-9,
            "{w:?} start vs {expected_start}"
        );
        assert!(
            (w.end - expected_end).abs() <= frame + 1e-9,
            "{w:?} end vs {expected_end}"
        );
        assert_eq!(w.probability, f64::from(probs[k]));
        assert_eq!(w.tokens, vec![text[k]]);
    }

    // One segment 0.3–1.9 s at seek 0: durations ≈ 0.5, 0.4, 0.3, 0.4, 0.3 → median 0.4;
    // no pause; the segment start lies inside the first word but less than 0.5 s after
    // its start, so the segment takes the words' bounds.
    let mut seg_tokens = vec![50364 + 15];
    seg_tokens.extend_from_slice(&text);
    seg_tokens.push(50364 + 95);
    let segments = [seg(0.3, 1.9, &seg_tokens)];
    assert_eq!(window_text_tokens(&segments, tok.eot()), text.to_vec());
    let (out, last) = run_window(&segments, words.clone(), 0, 0.0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].start, words[0].start);
    assert_eq!(out[0].end, round_centiseconds(words[4].end));
    assert_eq!(out[0].words.len(), 5);
    assert_eq!(last, out[0].end);
}

// ---------------------------------------------------------------------------------------
// Recorded faster-whisper windows

/// (word, start, end, probability).
type RefWord = (&'static str, f64, f64, f64);
/// (segment start, end, words).
type RefSegment = (f64, f64, &'static [RefWord]);

struct RefWindow {
    seek: usize,
    num_frames: usize,
    last_speech_timestamp: f64,
    /// Segments handed to add_word_timestamps: (start, end, tokens incl. timestamps).
    segments: &'static [(f64, f64, &'static [u32])],
    /// CTranslate2's DTW path from (0, 0): `r` = next frame, `u` = next token, `d` = both.
    path_moves: &'static str,
    /// CTranslate2's text token probabilities (single-precision values).
    probs: &'static [f64],
    /// find_alignment: (word, start, end, probability), window-relative.
    aligned: &'static [RefWord],
    /// add_word_timestamps: (segment start, end, words (word, start, end, probability)).
    expected: &'static [RefSegment],
}

fn decode_path(moves: &str) -> (Vec<usize>, Vec<usize>) {
    let (mut i, mut j) = (0usize, 0usize);
    let (mut text, mut time) = (vec![0], vec![0]);
    for m in moves.chars() {
        match m {
            'r' => j += 1,
            'u' => i += 1,
            'd' => {
                i += 1;
                j += 1
            }
            other => panic!("bad move {other:?}"),
        }
        text.push(i);
        time.push(j);
    }
    (text, time)
}

fn check_window(name: &str, w: &RefWindow) {
    let tok = tokenizer();
    let segments: Vec<WindowSegment> = w.segments.iter().map(|&(s, e, t)| seg(s, e, t)).collect();
    let text = window_text_tokens(&segments, tok.eot());
    assert_eq!(
        text.len(),
        w.probs.len(),
        "{name}: one probability per text token"
    );

    let (text_indices, time_indices) = decode_path(w.path_moves);
    assert_eq!(
        text_indices.last(),
        Some(&text.len()),
        "{name}: path ends on the end token"
    );
    assert_eq!(
        time_indices.last(),
        Some(&(w.num_frames / 2 - 1)),
        "{name}: path ends on the last frame"
    );

    let probs: Vec<f32> = w.probs.iter().map(|&p| p as f32).collect();
    let aligned =
        word_timings_from_path(&tok, "en", &text, &probs, &text_indices, &time_indices).unwrap();
    let got: Vec<(&str, f64, f64, f64)> = aligned
        .iter()
        .map(|a| (a.word.as_str(), a.start, a.end, a.probability))
        .collect();
    assert_eq!(got, w.aligned, "{name}: find_alignment");

    let out = add_word_timestamps(
        &segments,
        aligned,
        tok.eot(),
        w.seek,
        DEFAULT_PREPEND_PUNCTUATIONS,
        DEFAULT_APPEND_PUNCTUATIONS,
        w.last_speech_timestamp,
    );
    assert_eq!(out.segments.len(), w.expected.len(), "{name}: segments");
    for (k, (got, &(start, end, words))) in out.segments.iter().zip(w.expected).enumerate() {
        let got_words: Vec<(&str, f64, f64, f32)> = got
            .words
            .iter()
            .map(|x| (x.word.as_str(), x.start, x.end, x.probability))
            .collect();
        // Transcript words keep the probability in f32.
        let want_words: Vec<(&str, f64, f64, f32)> = words
            .iter()
            .map(|&(w, s, e, p)| (w, s, e, p as f32))
            .collect();
        assert_eq!(got_words, want_words, "{name}: words of segment {k}");
        assert_eq!(
            (got.start, got.end),
            (start, end),
            "{name}: bounds of segment {k}"
        );
    }
    let last_end = w.expected.last().map(|s| s.1).unwrap();
    assert_eq!(
        out.last_speech_timestamp, last_end,
        "{name}: last speech timestamp"
    );
}

#[test]
fn jfk_window_matches_faster_whisper() {
    check_window("jfk", &JFK_WINDOW);
}

#[test]
fn long_concat_windows_match_faster_whisper() {
    check_window("long window 0", &LONG_WINDOW_0);
    check_window("long window 1", &LONG_WINDOW_1);
    check_window("long window 2", &LONG_WINDOW_2);
}

const JFK_WINDOW: RefWindow = RefWindow {
    seek: 0,
    num_frames: 1100,
    last_speech_timestamp: 0.0,
    segments: &[
        (
            0.0,
            7.6000000000000005,
            &[
                50364, 400, 370, 452, 7177, 6280, 1029, 406, 437, 428, 1941, 393, 360, 337, 291,
                11, 50744,
            ],
        ),
        (
            7.6000000000000005,
            10.6,
            &[50744, 1029, 437, 291, 393, 360, 337, 428, 1941, 13, 50894],
        ),
    ],
    path_moves: concat!(
        "rrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrr",
        "rurrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrr",
        "rurrrrrrrrrrrrrrrrrrrurrrrrrrrrrurrrrrrrrrrrrrurrrrrrrrrrrrrrrrruurrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrr",
        "rrrrurrrrrrrrrrrrurrrrrrrrrrrurrrrrrrrurrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrru",
        "rrrrrrrrrrrrr",
    ),
    probs: &[
        0.6432374119758606,
        0.9871084094047546,
        0.7963692545890808,
        0.9954758286476135,
        0.9258452653884888,
        0.28359225392341614,
        0.6561055779457092,
        0.7547212839126587,
        0.9823319315910339,
        0.9989086389541626,
        0.9966051578521729,
        0.9948520064353943,
        0.99483722448349,
        0.996421217918396,
        0.3777950704097748,
        0.9024831652641296,
        0.9623236656188965,
        0.9864707589149475,
        0.9966296553611755,
        0.9923226237297058,
        0.9964544773101807,
        0.9963706731796265,
        0.9990542531013489,
        0.8766554594039917,
    ],
    aligned: &[
        (" And", 0.0, 0.52, 0.6432374119758606),
        (" so", 0.52, 0.84, 0.9871084094047546),
        (" my", 0.84, 1.18, 0.7963692545890808),
        (" fellow", 1.18, 1.56, 0.9954758286476135),
        (" Americans", 1.56, 2.1, 0.9258452653884888),
        (" ask", 2.1, 3.72, 0.28359225392341614),
        (" not", 3.72, 4.24, 0.6561055779457092),
        (" what", 4.24, 5.52, 0.7547212839126587),
        (" your", 5.52, 5.76, 0.9823319315910339),
        (" country", 5.76, 6.24, 0.9989086389541626),
        (" can", 6.24, 6.62, 0.9966051578521729),
        (" do", 6.62, 6.82, 0.9948520064353943),
        (" for", 6.82, 7.08, 0.99483722448349),
        (" you", 7.08, 7.42, 0.996421217918396),
        (",", 7.42, 7.42, 0.3777950704097748),
        (" ask", 7.42, 8.46, 0.9024831652641296),
        (" what", 8.46, 8.76, 0.9623236656188965),
        (" you", 8.76, 9.04, 0.9864707589149475),
        (" can", 9.04, 9.32, 0.9966296553611755),
        (" do", 9.32, 9.56, 0.9923226237297058),
        (" for", 9.56, 9.78, 0.9964544773101807),
        (" your", 9.78, 9.94, 0.9963706731796265),
        (" country", 9.94, 10.36, 0.9990542531013489),
        (".", 10.36, 10.72, 0.8766554594039917),
    ],
    expected: &[
        (
            0.0,
            7.42,
            &[
                (" And", 0.0, 0.52, 0.6432374119758606),
                (" so", 0.52, 0.84, 0.9871084094047546),
                (" my", 0.84, 1.18, 0.7963692545890808),
                (" fellow", 1.18, 1.56, 0.9954758286476135),
                (" Americans", 1.56, 2.1, 0.9258452653884888),
                (" ask", 2.1, 3.72, 0.28359225392341614),
                (" not", 3.72, 4.24, 0.6561055779457092),
                (" what", 4.24, 5.52, 0.7547212839126587),
                (" your", 5.52, 5.76, 0.9823319315910339),
                (" country", 5.76, 6.24, 0.9989086389541626),
                (" can", 6.24, 6.62, 0.9966051578521729),
                (" do", 6.62, 6.82, 0.9948520064353943),
                (" for", 6.82, 7.08, 0.99483722448349),
                (" you,", 7.08, 7.42, 0.996421217918396),
            ],
        ),
        (
            7.42,
            10.36,
            &[
                (" ask", 7.42, 8.46, 0.9024831652641296),
                (" what", 8.46, 8.76, 0.9623236656188965),
                (" you", 8.76, 9.04, 0.9864707589149475),
                (" can", 9.04, 9.32, 0.9966296553611755),
                (" do", 9.32, 9.56, 0.9923226237297058),
                (" for", 9.56, 9.78, 0.9964544773101807),
                (" your", 9.78, 9.94, 0.9963706731796265),
                (" country.", 9.94, 10.36, 0.9990542531013489),
            ],
        ),
    ],
};

const LONG_WINDOW_0: RefWindow = RefWindow {
    seek: 0,
    num_frames: 3000,
    last_speech_timestamp: 0.0,
    segments: &[
        (
            0.0,
            11.0,
            &[
                50364, 400, 370, 452, 7177, 6280, 11, 1029, 406, 437, 428, 1941, 393, 360, 337,
                291, 11, 1029, 437, 291, 393, 360, 337, 428, 1941, 13, 50914,
            ],
        ),
        (
            11.0,
            19.0,
            &[
                50914, 400, 2221, 13, 2619, 23453, 6092, 632, 550, 31339, 281, 1949, 577, 709, 456,
                1062, 312, 582, 24064, 356, 294, 702, 1347, 281, 360, 337, 552, 13, 51314,
            ],
        ),
        (
            19.0,
            28.0,
            &[
                51314, 16581, 281, 312, 2831, 3554, 12, 25471, 293, 2831, 19074, 307, 281, 312,
                3171, 12, 67, 7631, 1744, 11, 415, 1062, 754, 362, 668, 1027, 669, 9364, 3647, 13,
                51764,
            ],
        ),
    ],
    path_moves: concat!(
        "rrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrr",
        "rrurrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrr",
        "rrrurrrrrrrrrrrrrrrrrrurrrrrrrrrrrurrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrr",
        "rrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrr",
        "rrrrrrurrrrrrrrrrrurrrrrrrrrrrurrrrrrrrurrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrurrrrrrrr",
        "urrrrrrrrurrrrrrrrrrrrrrrrrrrurrrrrrrrrrurrrrrrrrrrrrrurrrrrrrrrrrrrurrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrurr",
        "rrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrurrrrrrrrrrurrrrrrrrrrrurrrrrrrrrrrurrrrrr",
        "urrrrrrrrrrurrrrrrurrrrrrrrurrrrrrrrrrrurrrrrrrrrrurrrrrrrurrrrrrrrrrrrrrurrrrrr",
        "rrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrr",
        "rrrrurrrrrurrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrrurrrrrr",
        "rrrrrrrrrrrrurrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrurrrrrrrrurrrrrrrrurrrrrrrrrrurrrrrruurrrrrrrrrurrrrrrrrrrrrrrrrrrrurrrr",
        "rrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrurrrrrrrrrrrrrr",
        "urrrrrrrrrrrrrurrrrrrrurrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
    ),
    probs: &[
        0.6275659203529358,
        0.9785301089286804,
        0.7261162996292114,
        0.9942821264266968,
        0.9268555641174316,
        0.43137845396995544,
        0.9225886464118958,
        0.771608293056488,
        0.7899818420410156,
        0.9801656007766724,
        0.998417854309082,
        0.9925105571746826,
        0.9953162670135498,
        0.9935908317565918,
        0.9948315620422363,
        0.6600036025047302,
        0.9125102162361145,
        0.9722374677658081,
        0.9885285496711731,
        0.995843231678009,
        0.9916859269142151,
        0.9972680807113647,
        0.9959906935691833,
        0.9991029500961304,
        0.7506283521652222,
        0.6594555377960205,
        0.9360426068305969,
        0.9664707779884338,
        0.957241952419281,
        0.7823435068130493,
        0.9616045355796814,
        0.9526432752609253,
        0.9540663957595825,
        0.7714075446128845,
        0.9910210967063904,
        0.998992383480072,
        0.9964955449104309,
        0.9975504279136658,
        0.9945359230041504,
        0.996850311756134,
        0.9971351623535156,
        0.899935245513916,
        0.5139400959014893,
        0.8245733380317688,
        0.8572182059288025,
        0.7561402916908264,
        0.998816728591919,
        0.997096061706543,
        0.9971869587898254,
        0.9966692328453064,
        0.978339433670044,
        0.8507311940193176,
        0.914340615272522,
        0.9748714566230774,
        0.9980790615081787,
        0.9922627210617065,
        0.988445520401001,
        0.5993434190750122,
        0.992403507232666,
        0.9142272472381592,
        0.9979242086410522,
        0.9701438546180725,
        0.5226765275001526,
        0.9975383281707764,
        0.9976230263710022,
        0.690967857837677,
        0.90194171667099,
        0.4693485200405121,
        0.9170429110527039,
        0.9991484880447388,
        0.746036946773529,
        0.9847220778465271,
        0.9978623986244202,
        0.9957308173179626,
        0.9884790778160095,
        0.9940093755722046,
        0.9901665449142456,
        0.7733328342437744,
        0.993010938167572,
        0.9973164200782776,
        0.9466228485107422,
    ],
    aligned: &[
        (" And", 0.0, 0.52, 0.6275659203529358),
        (" so", 0.52, 0.82, 0.9785301089286804),
        (" my", 0.82, 1.18, 0.7261162996292114),
        (" fellow", 1.18, 1.58, 0.9942821264266968),
        (" Americans", 1.58, 2.1, 0.9268555641174316),
        (",", 2.1, 2.76, 0.43137845396995544),
        (" ask", 2.76, 3.74, 0.9225886464118958),
        (" not", 3.74, 4.22, 0.771608293056488),
        (" what", 4.22, 5.52, 0.7899818420410156),
        (" your", 5.52, 5.76, 0.9801656007766724),
        (" country", 5.76, 6.26, 0.998417854309082),
        (" can", 6.26, 6.62, 0.9925105571746826),
        (" do", 6.62, 6.84, 0.9953162670135498),
        (" for", 6.84, 7.06, 0.9935908317565918),
        (" you", 7.06, 7.34, 0.9948315620422363),
        (",", 7.34, 7.78, 0.6600036025047302),
        (" ask", 7.78, 8.48, 0.9125102162361145),
        (" what", 8.48, 8.76, 0.9722374677658081),
        (" you", 8.76, 9.04, 0.9885285496711731),
        (" can", 9.04, 9.34, 0.995843231678009),
        (" do", 9.34, 9.56, 0.9916859269142151),
        (" for", 9.56, 9.78, 0.9972680807113647),
        (" your", 9.78, 9.94, 0.9959906935691833),
        (" country", 9.94, 10.38, 0.9991029500961304),
        (".", 10.38, 11.16, 0.7506283521652222),
        (" And", 11.16, 11.84, 0.6594555377960205),
        (" Mr", 11.84, 12.1, 0.9360426068305969),
        (".", 12.1, 12.26, 0.9664707779884338),
        (" John", 12.26, 12.42, 0.957241952419281),
        (" Dashwood", 12.42, 13.0, 0.8719740211963654),
        (" had", 13.0, 13.26, 0.9526432752609253),
        (" then", 13.26, 13.52, 0.9540663957595825),
        (" leisure", 13.52, 14.08, 0.7714075446128845),
        (" to", 14.08, 14.36, 0.9910210967063904),
        (" consider", 14.36, 14.84, 0.998992383480072),
        (" how", 14.84, 15.22, 0.9964955449104309),
        (" much", 15.22, 15.74, 0.9975504279136658),
        (" there", 15.74, 16.0, 0.9945359230041504),
        (" might", 16.0, 16.2, 0.996850311756134),
        (" be", 16.2, 16.42, 0.9971351623535156),
        (" prudently", 16.42, 16.96, 0.7461495598157247),
        (" in", 16.96, 17.08, 0.8572182059288025),
        (" his", 17.08, 17.24, 0.7561402916908264),
        (" power", 17.24, 17.46, 0.998816728591919),
        (" to", 17.46, 17.66, 0.997096061706543),
        (" do", 17.66, 17.8, 0.9971869587898254),
        (" for", 17.8, 18.08, 0.9966692328453064),
        (" them", 18.08, 18.32, 0.978339433670044),
        (".", 18.32, 19.28, 0.8507311940193176),
        (" Unless", 19.28, 19.56, 0.914340615272522),
        (" to", 19.56, 19.82, 0.9748714566230774),
        (" be", 19.82, 19.92, 0.9980790615081787),
        (" rather", 19.92, 20.28, 0.9922627210617065),
        (" cold", 20.28, 20.74, 0.988445520401001),
        ("-hearted", 20.74, 21.1, 0.7958734631538391),
        (" and", 21.1, 21.46, 0.9142272472381592),
        (" rather", 21.46, 21.78, 0.9979242086410522),
        (" selfish", 21.78, 22.36, 0.9701438546180725),
        (" is", 22.36, 22.92, 0.5226765275001526),
        (" to", 22.92, 23.08, 0.9975383281707764),
        (" be", 23.08, 23.24, 0.9976230263710022),
        (" ill", 23.24, 23.44, 0.690967857837677),
        ("-disposed", 23.44, 24.12, 0.8218704089522362),
        (",", 24.12, 24.52, 0.746036946773529),
        (" he", 24.52, 25.26, 0.9847220778465271),
        (" might", 25.26, 25.46, 0.9978623986244202),
        (" even", 25.46, 25.74, 0.9957308173179626),
        (" have", 25.74, 26.0, 0.9884790778160095),
        (" been", 26.0, 26.14, 0.9940093755722046),
        (" made", 26.14, 26.5, 0.9901665449142456),
        (" amiable", 26.5, 27.02, 0.8831718862056732),
        (" himself", 27.02, 27.68, 0.9973164200782776),
        (".", 27.68, 28.3, 0.9466228485107422),
    ],
    expected: &[
        (
            0.0,
            10.38,
            &[
                (" And", 0.0, 0.52, 0.6275659203529358),
                (" so", 0.52, 0.82, 0.9785301089286804),
                (" my", 0.82, 1.18, 0.7261162996292114),
                (" fellow", 1.18, 1.58, 0.9942821264266968),
                (" Americans,", 1.58, 2.1, 0.9268555641174316),
                (" ask", 2.76, 3.74, 0.9225886464118958),
                (" not", 3.74, 4.22, 0.771608293056488),
                (" what", 4.22, 5.52, 0.7899818420410156),
                (" your", 5.52, 5.76, 0.9801656007766724),
                (" country", 5.76, 6.26, 0.998417854309082),
                (" can", 6.26, 6.62, 0.9925105571746826),
                (" do", 6.62, 6.84, 0.9953162670135498),
                (" for", 6.84, 7.06, 0.9935908317565918),
                (" you,", 7.06, 7.34, 0.9948315620422363),
                (" ask", 7.78, 8.48, 0.9125102162361145),
                (" what", 8.48, 8.76, 0.9722374677658081),
                (" you", 8.76, 9.04, 0.9885285496711731),
                (" can", 9.04, 9.34, 0.995843231678009),
                (" do", 9.34, 9.56, 0.9916859269142151),
                (" for", 9.56, 9.78, 0.9972680807113647),
                (" your", 9.78, 9.94, 0.9959906935691833),
                (" country.", 9.94, 10.38, 0.9991029500961304),
            ],
        ),
        (
            11.24,
            18.32,
            &[
                (" And", 11.24, 11.84, 0.6594555377960205),
                (" Mr.", 11.84, 12.1, 0.9360426068305969),
                (" John", 12.26, 12.42, 0.957241952419281),
                (" Dashwood", 12.42, 13.0, 0.8719740211963654),
                (" had", 13.0, 13.26, 0.9526432752609253),
                (" then", 13.26, 13.52, 0.9540663957595825),
                (" leisure", 13.52, 14.08, 0.7714075446128845),
                (" to", 14.08, 14.36, 0.9910210967063904),
                (" consider", 14.36, 14.84, 0.998992383480072),
                (" how", 14.84, 15.22, 0.9964955449104309),
                (" much", 15.22, 15.74, 0.9975504279136658),
                (" there", 15.74, 16.0, 0.9945359230041504),
                (" might", 16.0, 16.2, 0.996850311756134),
                (" be", 16.2, 16.42, 0.9971351623535156),
                (" prudently", 16.42, 16.96, 0.7461495598157247),
                (" in", 16.96, 17.08, 0.8572182059288025),
                (" his", 17.08, 17.24, 0.7561402916908264),
                (" power", 17.24, 17.46, 0.998816728591919),
                (" to", 17.46, 17.66, 0.997096061706543),
                (" do", 17.66, 17.8, 0.9971869587898254),
                (" for", 17.8, 18.08, 0.9966692328453064),
                (" them.", 18.08, 18.32, 0.978339433670044),
            ],
        ),
        (
            19.28,
            27.68,
            &[
                (" Unless", 19.28, 19.56, 0.914340615272522),
                (" to", 19.56, 19.82, 0.9748714566230774),
                (" be", 19.82, 19.92, 0.9980790615081787),
                (" rather", 19.92, 20.28, 0.9922627210617065),
                (" cold", 20.28, 20.74, 0.988445520401001),
                ("-hearted", 20.74, 21.1, 0.7958734631538391),
                (" and", 21.1, 21.46, 0.9142272472381592),
                (" rather", 21.46, 21.78, 0.9979242086410522),
                (" selfish", 21.78, 22.36, 0.9701438546180725),
                (" is", 22.36, 22.92, 0.5226765275001526),
                (" to", 22.92, 23.08, 0.9975383281707764),
                (" be", 23.08, 23.24, 0.9976230263710022),
                (" ill", 23.24, 23.44, 0.690967857837677),
                ("-disposed,", 23.44, 24.12, 0.8218704089522362),
                (" he", 24.52, 25.26, 0.9847220778465271),
                (" might", 25.26, 25.46, 0.9978623986244202),
                (" even", 25.46, 25.74, 0.9957308173179626),
                (" have", 25.74, 26.0, 0.9884790778160095),
                (" been", 26.0, 26.14, 0.9940093755722046),
                (" made", 26.14, 26.5, 0.9901665449142456),
                (" amiable", 26.5, 27.02, 0.8831718862056732),
                (" himself.", 27.02, 27.68, 0.9973164200782776),
            ],
        ),
    ],
};

const LONG_WINDOW_1: RefWindow = RefWindow {
    seek: 2768,
    num_frames: 3000,
    last_speech_timestamp: 27.68,
    segments: &[
        (
            27.68,
            36.68,
            &[
                50364, 16581, 257, 1185, 307, 7545, 337, 264, 18004, 9860, 3131, 295, 5354, 436,
                434, 833, 13, 682, 341, 3843, 485, 50814,
            ],
        ),
        (
            36.68,
            46.68,
            &[
                50814, 2908, 11, 3462, 281, 264, 2964, 6101, 9235, 11, 13273, 294, 264, 7009, 727,
                8953, 2261, 538, 3552, 281, 2217, 924, 13, 51314,
            ],
        ),
        (
            46.68,
            53.68,
            &[
                51314, 1407, 264, 6830, 293, 1951, 1858, 2524, 307, 257, 13590, 293, 10343, 3954,
                295, 383, 686, 424, 11, 294, 597, 390, 1027, 4618, 13, 51664,
            ],
        ),
    ],
    path_moves: concat!(
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrr",
        "rrrrrrrrrrrrrurrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrurrrrrrrurrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrr",
        "rrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrr",
        "rrrrrrrrrrurrrrrrurrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrru",
        "rrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrr",
        "rrrrurrrrrrrrrrrrrrrrrrrrrrurrrrrrurrrrrrrurrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrurr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrr",
        "rrrrrrrrurrrrrrrrrrrrrrrrrrrrurrrrrrrurrrrrrrrrrrrrrrrrurrrrrrrrrrrurrrrrrrrrrrr",
        "rrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrr",
        "rurrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrurrrrrurrrrrrrrrrrrrurrrrrrrrrrurrrrrrrrrrrrur",
        "rrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrurrrrrrrrrrrrrrrrrrrrrrrurrrr",
        "rrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrurrrrrrru",
        "rrrrrrrrurrrrrrurrrrrrrurrrrurrrrrrrrurrrrrrrrrrrrurrrrrrrrrrrrrrrrrrurrrrrrrrrr",
        "rrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
    ),
    probs: &[
        0.02489675022661686,
        0.8778629302978516,
        0.9982942938804626,
        0.993190586566925,
        0.994623064994812,
        0.8434285521507263,
        0.9921951293945312,
        0.9846950173377991,
        0.9910150170326233,
        0.9758519530296326,
        0.9842482209205627,
        0.9808939695358276,
        0.5286120772361755,
        0.4061497747898102,
        0.9983401298522949,
        0.6349788904190063,
        0.943133533000946,
        0.9943547248840332,
        0.9940680265426636,
        0.2331056147813797,
        0.058152083307504654,
        0.8023890256881714,
        0.996321439743042,
        0.9976792931556702,
        0.9539634585380554,
        0.9766621589660645,
        0.888388454914093,
        0.9851123690605164,
        0.9127857685089111,
        0.8186126351356506,
        0.9946520328521729,
        0.9929986000061035,
        0.5846536159515381,
        0.9484425187110901,
        0.9975953698158264,
        0.9980629086494446,
        0.9528013467788696,
        0.9570556282997131,
        0.681553065776825,
        0.9968706965446472,
        0.9918185472488403,
        0.8455715775489807,
        0.919728696346283,
        0.9964943528175354,
        0.9331166744232178,
        0.8922443389892578,
        0.6870157718658447,
        0.5745415091514587,
        0.9871653318405151,
        0.9257438778877258,
        0.8614482283592224,
        0.9756543636322021,
        0.8837797045707703,
        0.9962432384490967,
        0.9982049465179443,
        0.9960135221481323,
        0.26053717732429504,
        0.7735227346420288,
        0.9716297388076782,
        0.6064944863319397,
        0.7550644278526306,
        0.9982855916023254,
        0.9684976935386658,
        0.9772719144821167,
        0.9973329305648804,
        0.403583288192749,
    ],
    aligned: &[
        (" Unless", 0.0, 1.22, 0.02489675022661686),
        (" a", 1.22, 1.46, 0.8778629302978516),
        (" system", 1.46, 1.82, 0.9982942938804626),
        (" is", 1.82, 2.04, 0.993190586566925),
        (" established", 2.04, 2.76, 0.994623064994812),
        (" for", 2.76, 3.3, 0.8434285521507263),
        (" the", 3.3, 3.44, 0.9921951293945312),
        (" frequent", 3.44, 3.84, 0.9846950173377991),
        (" formal", 3.84, 4.36, 0.9910150170326233),
        (" review", 4.36, 4.86, 0.9758519530296326),
        (" of", 4.86, 5.52, 0.9842482209205627),
        (" activities", 5.52, 6.02, 0.9808939695358276),
        (" they're", 6.02, 6.48, 0.46738092601299286),
        (" under", 6.48, 6.84, 0.9983401298522949),
        (".", 6.84, 7.38, 0.6349788904190063),
        (" In", 7.38, 7.66, 0.943133533000946),
        (" this", 7.66, 7.9, 0.9943547248840332),
        (" regard...", 7.9, 9.92, 0.6135868206620216),
        (" However", 9.92, 10.44, 0.058152083307504654),
        (",", 10.44, 10.86, 0.8023890256881714),
        (" due", 10.86, 11.3, 0.996321439743042),
        (" to", 11.3, 11.42, 0.9976792931556702),
        (" the", 11.42, 11.56, 0.9539634585380554),
        (" slow", 11.56, 11.76, 0.9766621589660645),
        (" communication", 11.76, 12.22, 0.888388454914093),
        (" channels", 12.22, 13.0, 0.9851123690605164),
        (",", 13.0, 13.56, 0.9127857685089111),
        (" styles", 13.56, 13.98, 0.8186126351356506),
        (" in", 13.98, 14.38, 0.9946520328521729),
        (" the", 14.38, 14.52, 0.9929986000061035),
        (" west", 14.52, 14.86, 0.5846536159515381),
        (" could", 14.86, 15.08, 0.9484425187110901),
        (" lag", 15.08, 15.38, 0.9975953698158264),
        (" behind", 15.38, 16.0, 0.9980629086494446),
        (" by", 16.0, 16.38, 0.9528013467788696),
        (" 25", 16.38, 16.88, 0.9570556282997131),
        (" to", 16.88, 17.24, 0.681553065776825),
        (" 30", 17.24, 17.58, 0.9968706965446472),
        (" years", 17.58, 17.98, 0.9918185472488403),
        (".", 17.98, 20.22, 0.8455715775489807),
        (" To", 20.22, 20.64, 0.919728696346283),
        (" the", 20.64, 20.74, 0.9964943528175354),
        (" north", 20.74, 21.0, 0.9331166744232178),
        (" and", 21.0, 21.2, 0.8922443389892578),
        (" within", 21.2, 21.44, 0.6870157718658447),
        (" easy", 21.44, 21.78, 0.5745415091514587),
        (" reach", 21.78, 22.08, 0.9871653318405151),
        (" is", 22.08, 22.32, 0.9257438778877258),
        (" a", 22.32, 22.42, 0.8614482283592224),
        (" romantic", 22.42, 22.88, 0.9756543636322021),
        (" and", 22.88, 23.14, 0.8837797045707703),
        (" fascinating", 23.14, 23.6, 0.9962432384490967),
        (" town", 23.6, 24.06, 0.9982049465179443),
        (" of", 24.06, 24.32, 0.9960135221481323),
        (" Cintra", 24.32, 24.74, 0.6685632169246674),
        (",", 24.74, 24.88, 0.6064944863319397),
        (" in", 24.88, 24.96, 0.7550644278526306),
        (" which", 24.96, 25.12, 0.9982855916023254),
        (" was", 25.12, 25.36, 0.9684976935386658),
        (" made", 25.36, 25.72, 0.9772719144821167),
        (" famous", 25.72, 26.18, 0.9973329305648804),
        (".", 26.18, 26.7, 0.403583288192749),
    ],
    expected: &[
        (
            27.68,
            36.68,
            &[
                (" Unless", 27.68, 28.9, 0.02489675022661686),
                (" a", 28.9, 29.14, 0.8778629302978516),
                (" system", 29.14, 29.5, 0.9982942938804626),
                (" is", 29.5, 29.72, 0.993190586566925),
                (" established", 29.72, 30.44, 0.994623064994812),
                (" for", 30.44, 30.98, 0.8434285521507263),
                (" the", 30.98, 31.12, 0.9921951293945312),
                (" frequent", 31.12, 31.52, 0.9846950173377991),
                (" formal", 31.52, 32.04, 0.9910150170326233),
                (" review", 32.04, 32.54, 0.9758519530296326),
                (" of", 32.54, 33.2, 0.9842482209205627),
                (" activities", 33.2, 33.7, 0.9808939695358276),
                (" they're", 33.7, 34.16, 0.46738092601299286),
                (" under.", 34.16, 34.52, 0.9983401298522949),
                (" In", 35.06, 35.34, 0.943133533000946),
                (" this", 35.34, 35.58, 0.9943547248840332),
                (" regard...", 35.58, 36.68, 0.6135868206620216),
            ],
        ),
        (
            37.6,
            45.66,
            &[
                (" However,", 37.6, 38.12, 0.058152083307504654),
                (" due", 38.54, 38.98, 0.996321439743042),
                (" to", 38.98, 39.1, 0.9976792931556702),
                (" the", 39.1, 39.24, 0.9539634585380554),
                (" slow", 39.24, 39.44, 0.9766621589660645),
                (" communication", 39.44, 39.9, 0.888388454914093),
                (" channels,", 39.9, 40.68, 0.9851123690605164),
                (" styles", 41.24, 41.66, 0.8186126351356506),
                (" in", 41.66, 42.06, 0.9946520328521729),
                (" the", 42.06, 42.2, 0.9929986000061035),
                (" west", 42.2, 42.54, 0.5846536159515381),
                (" could", 42.54, 42.76, 0.9484425187110901),
                (" lag", 42.76, 43.06, 0.9975953698158264),
                (" behind", 43.06, 43.68, 0.9980629086494446),
                (" by", 43.68, 44.06, 0.9528013467788696),
                (" 25", 44.06, 44.56, 0.9570556282997131),
                (" to", 44.56, 44.92, 0.681553065776825),
                (" 30", 44.92, 45.26, 0.9968706965446472),
                (" years.", 45.26, 45.66, 0.9918185472488403),
            ],
        ),
        (
            47.9,
            53.86,
            &[
                (" To", 47.9, 48.32, 0.919728696346283),
                (" the", 48.32, 48.42, 0.9964943528175354),
                (" north", 48.42, 48.68, 0.9331166744232178),
                (" and", 48.68, 48.88, 0.8922443389892578),
                (" within", 48.88, 49.12, 0.6870157718658447),
                (" easy", 49.12, 49.46, 0.5745415091514587),
                (" reach", 49.46, 49.76, 0.9871653318405151),
                (" is", 49.76, 50.0, 0.9257438778877258),
                (" a", 50.0, 50.1, 0.8614482283592224),
                (" romantic", 50.1, 50.56, 0.9756543636322021),
                (" and", 50.56, 50.82, 0.8837797045707703),
                (" fascinating", 50.82, 51.28, 0.9962432384490967),
                (" town", 51.28, 51.74, 0.9982049465179443),
                (" of", 51.74, 52.0, 0.9960135221481323),
                (" Cintra,", 52.0, 52.42, 0.6685632169246674),
                (" in", 52.56, 52.64, 0.7550644278526306),
                (" which", 52.64, 52.8, 0.9982855916023254),
                (" was", 52.8, 53.04, 0.9684976935386658),
                (" made", 53.04, 53.4, 0.9772719144821167),
                (" famous.", 53.4, 53.86, 0.9973329305648804),
            ],
        ),
    ],
};

const LONG_WINDOW_2: RefWindow = RefWindow {
    seek: 5386,
    num_frames: 2162,
    last_speech_timestamp: 53.86,
    segments: &[
        (
            53.86,
            58.86,
            &[
                50364, 1407, 28201, 934, 257, 27064, 2696, 295, 1080, 34350, 284, 307, 8287, 538,
                3257, 3146, 2044, 13, 50614,
            ],
        ),
        (
            58.86,
            63.86,
            &[
                50614, 5126, 561, 500, 380, 519, 466, 552, 382, 25851, 570, 436, 362, 27044, 293,
                393, 3603, 13, 50864,
            ],
        ),
        (
            63.86,
            72.86,
            &[
                50864, 440, 14335, 2039, 8497, 311, 30524, 14781, 8935, 848, 300, 456, 645, 572,
                28536, 7055, 294, 264, 4790, 13, 51314,
            ],
        ),
    ],
    path_moves: concat!(
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrr",
        "urrrrrrrrrrrurrrrrrrrrurrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrurrrrrrrrurrrrrrrrrrrr",
        "rrurrrrrrurrrrrrrrurrrrrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrrr",
        "urrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrurrrrrrrrrrrrurrrrrrrrrrurrurrrrrrrurrrrrrrrrrrrurrrrrrrrurrrrrr",
        "rrrurrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrurrrrrrrurrrrrrrrrrrrrrrur",
        "rrrrrrrrrrrrrrurrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrr",
        "rrrurrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrurrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrurrrrrrrrrrrrrurrrrrrurrrrrrrrurrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrr",
        "urrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrurrrrrrurrrrrrrrrrrrrrrrrurr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrurrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        "rrrrrrrrrrrrr",
    ),
    probs: &[
        0.01840090937912464,
        0.9327499270439148,
        0.6562358736991882,
        0.9950966238975525,
        0.8195220232009888,
        0.9793093204498291,
        0.9876108765602112,
        0.5581270456314087,
        0.18500934541225433,
        0.5538842678070068,
        0.8795437216758728,
        0.9726319313049316,
        0.9961758852005005,
        0.8988149762153625,
        0.9491409063339233,
        0.9806256294250488,
        0.6371602416038513,
        0.9840741157531738,
        0.8090696930885315,
        0.9179591536521912,
        0.9896835088729858,
        0.9985590577125549,
        0.8084205389022827,
        0.5495193600654602,
        0.9869689345359802,
        0.9053916931152344,
        0.9114060997962952,
        0.9988676309585571,
        0.9978811144828796,
        0.9946228265762329,
        0.9661230444908142,
        0.9503476023674011,
        0.9977383613586426,
        0.9318423867225647,
        0.9597007632255554,
        0.6858731508255005,
        0.3997699022293091,
        0.9043143391609192,
        0.9882992506027222,
        0.6665425896644592,
        0.9808813333511353,
        0.8574643731117249,
        0.9797176718711853,
        0.6893431544303894,
        0.9972672462463379,
        0.9917427897453308,
        0.9950644373893738,
        0.9737061262130737,
        0.995412290096283,
        0.9951167106628418,
        0.9950592517852783,
        0.9637864232063293,
        0.9853691458702087,
    ],
    aligned: &[
        (" To", 0.0, 0.74, 0.01840090937912464),
        (" foreigners", 0.74, 1.14, 0.9327499270439148),
        (" after", 1.14, 1.56, 0.6562358736991882),
        (" a", 1.56, 1.78, 0.9950966238975525),
        (" glowing", 1.78, 1.96, 0.8195220232009888),
        (" account", 1.96, 2.38, 0.9793093204498291),
        (" of", 2.38, 2.64, 0.9876108765602112),
        (" its", 2.64, 2.8, 0.5581270456314087),
        (" splendor", 2.8, 3.2, 0.3694468066096306),
        (" is", 3.2, 3.36, 0.8795437216758728),
        (" recorded", 3.36, 3.72, 0.9726319313049316),
        (" by", 3.72, 3.96, 0.9961758852005005),
        (" Lord", 3.96, 4.24, 0.8988149762153625),
        (" Byron", 4.24, 4.72, 0.9648832678794861),
        (".", 4.72, 5.6, 0.6371602416038513),
        (" Many", 5.6, 6.38, 0.9840741157531738),
        (" people", 6.38, 6.62, 0.8090696930885315),
        (" don't", 6.62, 6.86, 0.9538213312625885),
        (" think", 6.86, 7.0, 0.9985590577125549),
        (" about", 7.0, 7.24, 0.8084205389022827),
        (" them", 7.24, 7.4, 0.5495193600654602),
        (" as", 7.4, 7.58, 0.9869689345359802),
        (" dinosaurs", 7.58, 7.84, 0.9053916931152344),
        (" because", 7.84, 8.34, 0.9114060997962952),
        (" they", 8.34, 8.54, 0.9988676309585571),
        (" have", 8.54, 8.68, 0.9978811144828796),
        (" feathers", 8.68, 8.98, 0.9946228265762329),
        (" and", 8.98, 9.28, 0.9661230444908142),
        (" can", 9.28, 9.4, 0.9503476023674011),
        (" fly", 9.4, 9.68, 0.9977383613586426),
        (".", 9.68, 11.18, 0.9318423867225647),
        (" The", 11.18, 11.74, 0.9597007632255554),
        (" Northern", 11.74, 12.16, 0.6858731508255005),
        (" Mariana's", 12.16, 13.26, 0.7641278306643168),
        (" Emergency", 13.26, 13.82, 0.6665425896644592),
        (" Management", 13.82, 14.24, 0.9808813333511353),
        (" Office", 14.24, 14.92, 0.8574643731117249),
        (" said", 14.92, 15.48, 0.9797176718711853),
        (" that", 15.48, 15.74, 0.6893431544303894),
        (" there", 15.74, 15.86, 0.9972672462463379),
        (" were", 15.86, 16.02, 0.9917427897453308),
        (" no", 16.02, 16.28, 0.9950644373893738),
        (" damages", 16.28, 16.66, 0.9737061262130737),
        (" reported", 16.66, 17.28, 0.995412290096283),
        (" in", 17.28, 17.66, 0.9951167106628418),
        (" the", 17.66, 17.78, 0.9950592517852783),
        (" nation", 17.78, 18.12, 0.9637864232063293),
        (".", 18.12, 19.18, 0.9853691458702087),
    ],
    expected: &[
        (
            53.86,
            58.58,
            &[
                (" To", 53.86, 54.6, 0.01840090937912464),
                (" foreigners", 54.6, 55.0, 0.9327499270439148),
                (" after", 55.0, 55.42, 0.6562358736991882),
                (" a", 55.42, 55.64, 0.9950966238975525),
                (" glowing", 55.64, 55.82, 0.8195220232009888),
                (" account", 55.82, 56.24, 0.9793093204498291),
                (" of", 56.24, 56.5, 0.9876108765602112),
                (" its", 56.5, 56.66, 0.5581270456314087),
                (" splendor", 56.66, 57.06, 0.3694468066096306),
                (" is", 57.06, 57.22, 0.8795437216758728),
                (" recorded", 57.22, 57.58, 0.9726319313049316),
                (" by", 57.58, 57.82, 0.9961758852005005),
                (" Lord", 57.82, 58.1, 0.8988149762153625),
                (" Byron.", 58.1, 58.58, 0.9648832678794861),
            ],
        ),
        (
            59.64,
            63.54,
            &[
                (" Many", 59.64, 60.24, 0.9840741157531738),
                (" people", 60.24, 60.48, 0.8090696930885315),
                (" don't", 60.48, 60.72, 0.9538213312625885),
                (" think", 60.72, 60.86, 0.9985590577125549),
                (" about", 60.86, 61.1, 0.8084205389022827),
                (" them", 61.1, 61.26, 0.5495193600654602),
                (" as", 61.26, 61.44, 0.9869689345359802),
                (" dinosaurs", 61.44, 61.7, 0.9053916931152344),
                (" because", 61.7, 62.2, 0.9114060997962952),
                (" they", 62.2, 62.4, 0.9988676309585571),
                (" have", 62.4, 62.54, 0.9978811144828796),
                (" feathers", 62.54, 62.84, 0.9946228265762329),
                (" and", 62.84, 63.14, 0.9661230444908142),
                (" can", 63.14, 63.26, 0.9503476023674011),
                (" fly.", 63.26, 63.54, 0.9977383613586426),
            ],
        ),
        (
            65.04,
            71.98,
            &[
                (" The", 65.04, 65.6, 0.9597007632255554),
                (" Northern", 65.6, 66.02, 0.6858731508255005),
                (" Mariana's", 66.02, 67.12, 0.7641278306643168),
                (" Emergency", 67.12, 67.68, 0.6665425896644592),
                (" Management", 67.68, 68.1, 0.9808813333511353),
                (" Office", 68.1, 68.78, 0.8574643731117249),
                (" said", 68.78, 69.34, 0.9797176718711853),
                (" that", 69.34, 69.6, 0.6893431544303894),
                (" there", 69.6, 69.72, 0.9972672462463379),
                (" were", 69.72, 69.88, 0.9917427897453308),
                (" no", 69.88, 70.14, 0.9950644373893738),
                (" damages", 70.14, 70.52, 0.9737061262130737),
                (" reported", 70.52, 71.14, 0.995412290096283),
                (" in", 71.14, 71.52, 0.9951167106628418),
                (" the", 71.52, 71.64, 0.9950592517852783),
                (" nation.", 71.64, 71.98, 0.9637864232063293),
            ],
        ),
    ],
};
