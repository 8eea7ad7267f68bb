//! Tokenizer on the real whisper-base vocabulary, and the greedy decoding policy driven by
//! scripted logits.
//!
//! Reference values come from `tests/data/FIXTURES.md` (faster-whisper 1.2.1 /
//! CTranslate2 4.8.5 on jfk.wav with whisper-base).

use std::path::PathBuf;

use amanuensis::decoding::{
    greedy_decode, split_segments, DecodeError, DecodeOptions, LogitFilter, SpecialIds, StepError,
    StepModel, SuppressBlank, SuppressTokens, TimestampRules,
};
use amanuensis::tokenizer::Tokenizer;

// ---------------------------------------------------------------------------------------
// Reference data

/// `tokens_greedy`: prompt (4) + generated (25) + `<|endoftext|>`.
const TOKENS_GREEDY: [u32; 30] = [
    50258, 50259, 50359, 50363, 400, 370, 452, 7177, 6280, 11, 1029, 406, 437, 428, 1941, 393, 360,
    337, 291, 11, 1029, 437, 291, 393, 360, 337, 428, 1941, 13, 50257,
];
/// `tokens_greedy_ts`: prompt (3) + generated (28) + `<|endoftext|>`.
const TOKENS_GREEDY_TS: [u32; 32] = [
    50258, 50259, 50359, 50364, 400, 370, 452, 7177, 6280, 1029, 406, 437, 428, 1941, 393, 360,
    337, 291, 11, 50744, 50744, 1029, 437, 291, 393, 360, 337, 428, 1941, 13, 50894, 50257,
];
const TEXT_GREEDY: &str = " And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
const TEXT_GREEDY_TS: &str = "<|0.00|> And so my fellow Americans ask not what your country can do for you,<|7.60|><|7.60|> ask what you can do for your country.<|10.60|>";

/// whisper-base `config.json` `suppress_ids` (faster-whisper's expanded `suppress_tokens=[-1]`).
const SUPPRESS_IDS: [u32; 88] = [
    1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 359,
    503, 522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 3246, 3253, 3268,
    3536, 3846, 3961, 4183, 4667, 6585, 6647, 7273, 9061, 9383, 10428, 10929, 11938, 12033, 12331,
    12562, 13793, 14157, 14635, 15265, 15618, 16553, 16604, 18362, 18956, 20075, 21675, 22520,
    26130, 26161, 26435, 28279, 29464, 31650, 32302, 32470, 36865, 42863, 47425, 49870, 50254,
    50258, 50358, 50359, 50360, 50361, 50362,
];
/// whisper-base `config.json` `suppress_ids_begin`.
const SUPPRESS_IDS_BEGIN: [u32; 2] = [220, 50257];

fn real_tokenizer() -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocabulary.txt");
    Tokenizer::from_vocabulary_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn faster_whisper_options(without_timestamps: bool) -> DecodeOptions {
    DecodeOptions {
        without_timestamps,
        suppress_blank: true,
        suppress_tokens: SUPPRESS_IDS.to_vec(),
        suppress_blank_tokens: SUPPRESS_IDS_BEGIN.to_vec(),
        max_initial_timestamp_index: Some(50),
        max_length: 448,
    }
}

// ---------------------------------------------------------------------------------------
// Tokenizer on the real vocabulary

#[test]
fn real_vocabulary_special_ids_match_the_reference_table() {
    let tok = real_tokenizer();
    assert_eq!(tok.n_vocab(), 51865);
    assert_eq!(tok.eot(), 50257);
    assert_eq!(tok.sot(), 50258);
    assert_eq!(tok.language_token("en"), Some(50259));
    assert_eq!(tok.translate(), 50358);
    assert_eq!(tok.transcribe(), 50359);
    assert_eq!(tok.start_of_lm(), 50360);
    assert_eq!(tok.start_of_prev(), 50361);
    assert_eq!(tok.no_speech(), 50362);
    assert_eq!(tok.no_timestamps(), 50363);
    assert_eq!(tok.timestamp_begin(), 50364);
    // config.json lang_ids: 99 ids, 50259..=50357.
    let codes = tok.language_codes();
    assert_eq!(codes.len(), 99);
    assert_eq!(codes[0], "en");
    assert_eq!(tok.language_token(codes[98]), Some(50357));
    assert_eq!(tok.language_code(50259), Some("en"));
    assert_eq!(tok.language_token("xx"), None);
    // Id 50256 is the empty line of vocabulary.txt.
    assert_eq!(tok.token_str(50256), Some(""));
    assert_eq!(tok.token_str(51864), Some("<|30.00|>"));
    assert_eq!(tok.token_str(51865), None);
    assert_eq!(
        tok.sot_sequence(Some("en"), false, true).unwrap(),
        vec![50258, 50259, 50359, 50363]
    );
    assert_eq!(
        tok.sot_sequence(Some("en"), false, false).unwrap(),
        TOKENS_GREEDY_TS[..3].to_vec()
    );
    assert_eq!(tok.timestamp_seconds(50744), Some(380.0 * 0.02));
    assert_eq!(tok.timestamp_seconds(50363), None);
}

#[test]
fn decode_reproduces_the_greedy_transcript() {
    let tok = real_tokenizer();
    let generated = &TOKENS_GREEDY[4..29];
    assert_eq!(tok.decode(generated), TEXT_GREEDY);
    // Special tokens (prompt, end token) are skipped by decode.
    assert_eq!(tok.decode(&TOKENS_GREEDY), TEXT_GREEDY);
}

#[test]
fn decode_with_timestamps_reproduces_the_timestamped_transcript() {
    let tok = real_tokenizer();
    let generated = &TOKENS_GREEDY_TS[3..31];
    assert_eq!(tok.decode_with_timestamps(generated), TEXT_GREEDY_TS);
    assert_eq!(tok.decode_with_timestamps(&[50364 + 1500]), "<|30.00|>");
    assert_eq!(tok.decode_with_timestamps(&[50364 + 1]), "<|0.02|>");
}

#[test]
fn non_ascii_tokens_decode_through_the_byte_alphabet() {
    let tok = real_tokenizer();
    // UTF-8 "é" is C3 A9, written in the byte alphabet as "Ã©".
    let e_acute = tok.token_id("Ã©").expect("token Ã© exists");
    assert_eq!(e_acute, 526);
    assert_eq!(tok.decode(&[e_acute]), "é");
    let ete = tok.token_id("ĠÃ©tÃ©").expect("token ' été' exists");
    assert_eq!(tok.decode(&[ete]), " été");
    // A lone byte-alphabet "é" is the single byte E9: invalid UTF-8, replaced.
    let lone = tok.token_id("é").expect("token é exists");
    assert_eq!(tok.decode(&[lone]), "\u{FFFD}");
    // Text split across tokens is joined before UTF-8 decoding.
    let mut ids = vec![tok.token_id("Ġcaf").unwrap()];
    ids.push(e_acute);
    assert_eq!(tok.decode(&ids), " café");
    // Newline (byte 0A) is "Ċ" in the alphabet.
    assert_eq!(tok.decode(&[tok.token_id("Ċ").unwrap()]), "\n");
}

#[test]
fn vocabulary_file_errors_name_the_file() {
    let missing =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/no-such-vocabulary.txt");
    let err = Tokenizer::from_vocabulary_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-vocabulary.txt"), "{err}");
    let err = Tokenizer::from_vocabulary_str("a\nb\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("<|endoftext|>"), "{err}");
}

#[test]
fn carriage_returns_are_stripped_only_when_every_line_has_one() {
    let lines = tiny_vocabulary_lines();
    let crlf = lines.iter().map(|l| format!("{l}\r\n")).collect::<String>();
    let tok = Tokenizer::from_vocabulary_str(&crlf).unwrap();
    assert_eq!(tok.n_vocab(), lines.len());
    assert_eq!(tok.token_str(1), Some("a"));
    assert_eq!(tok.eot(), 10);
    // One line without \r: all \r are kept, so the specials are not found.
    let mixed = format!("x\n{crlf}");
    assert!(Tokenizer::from_vocabulary_str(&mixed).is_err());
}

// ---------------------------------------------------------------------------------------
// A tiny vocabulary for scripted decoding

const BLANK: u32 = 0; // "Ġ" = " "
const A: u32 = 1;
const B: u32 = 2;
const C: u32 = 3;
const EOT: u32 = 10;
const SOT: u32 = 11;
const EN: u32 = 12;
const TRANSCRIBE: u32 = 15;
const PREV: u32 = 17;
const NO_SPEECH: u32 = 18;
const NO_TS: u32 = 19;
const TS0: u32 = 20;
const N_VOCAB: usize = 32;

fn tiny_vocabulary_lines() -> Vec<String> {
    let mut v: Vec<String> = ["Ġ", "a", "b", "c", "Ġd", "e", "f", "g", "h", "i"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|fr|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ] {
        v.push(s.to_string());
    }
    for i in 0..12 {
        v.push(format!("<|{:.2}|>", i as f64 * 0.02));
    }
    v
}

fn tiny_tokenizer() -> Tokenizer {
    let text = tiny_vocabulary_lines().join("\n") + "\n";
    Tokenizer::from_vocabulary_str(&text).unwrap()
}

fn tiny_ids() -> SpecialIds {
    let ids = SpecialIds::from(&tiny_tokenizer());
    assert_eq!(
        ids,
        SpecialIds {
            n_vocab: N_VOCAB,
            eot: EOT,
            sot: SOT,
            no_speech: NO_SPEECH,
            no_timestamps: NO_TS,
            timestamp_begin: TS0
        }
    );
    ids
}

fn prompt(timestamps: bool) -> Vec<u32> {
    if timestamps {
        vec![SOT, EN, TRANSCRIBE]
    } else {
        vec![SOT, EN, TRANSCRIBE, NO_TS]
    }
}

fn opts(timestamps: bool) -> DecodeOptions {
    DecodeOptions {
        without_timestamps: !timestamps,
        suppress_blank: true,
        suppress_tokens: vec![],
        suppress_blank_tokens: vec![BLANK, EOT],
        max_initial_timestamp_index: Some(3),
        max_length: 448,
    }
}

/// Logits of 0 everywhere except the listed ids.
fn logits(n: usize, set: &[(u32, f32)]) -> Vec<f32> {
    let mut v = vec![0.0; n];
    for &(id, x) in set {
        v[id as usize] = x;
    }
    v
}

/// A decoder whose logits at a position are a function of the whole sequence up to and
/// including that position; it records every call.
struct Scripted<F: FnMut(&[u32]) -> Vec<f32>> {
    history: Vec<u32>,
    calls: Vec<(Vec<u32>, Vec<usize>)>,
    script: F,
}

impl<F: FnMut(&[u32]) -> Vec<f32>> Scripted<F> {
    fn new(script: F) -> Self {
        Scripted {
            history: Vec::new(),
            calls: Vec::new(),
            script,
        }
    }
}

impl<F: FnMut(&[u32]) -> Vec<f32>> StepModel for Scripted<F> {
    fn step(
        &mut self,
        tokens: &[u32],
        logit_positions: &[usize],
    ) -> Result<Vec<Vec<f32>>, StepError> {
        self.calls.push((tokens.to_vec(), logit_positions.to_vec()));
        let base = self.history.len();
        self.history.extend_from_slice(tokens);
        Ok(logit_positions
            .iter()
            .map(|&p| (self.script)(&self.history[..base + p + 1]))
            .collect())
    }
}

/// The tokens generated so far, for a script that knows the prompt length.
/// Empty for positions inside the prompt.
fn generated(history: &[u32], prompt_len: usize) -> &[u32] {
    history.get(prompt_len..).unwrap_or(&[])
}

/// log-softmax in float64, −∞ entries excluded.
fn ref_log_softmax(x: &[f32], id: u32) -> f64 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
    x[id as usize] as f64 - m - z.ln()
}

// ---------------------------------------------------------------------------------------
// Scripted decoding

#[test]
fn first_call_feeds_the_prompt_then_one_token_per_step() {
    let ids = tiny_ids();
    let p = prompt(false);
    let plen = p.len();
    let mut model = Scripted::new(|h: &[u32]| match generated(h, plen) {
        [] => logits(N_VOCAB, &[(A, 5.0)]),
        [A] => logits(N_VOCAB, &[(B, 5.0)]),
        _ => logits(N_VOCAB, &[(EOT, 5.0)]),
    });
    let r = greedy_decode(&mut model, &p, &ids, &opts(false)).unwrap();
    assert_eq!(r.tokens, vec![A, B]);
    assert_eq!(
        model.calls,
        vec![
            (p.clone(), vec![0, plen - 1]),
            (vec![A], vec![0]),
            (vec![B], vec![0])
        ]
    );

    // With previous-text context the first logit position is <|startoftranscript|>'s.
    let ctx = vec![PREV, C, B, SOT, EN, TRANSCRIBE, NO_TS];
    let clen = ctx.len();
    let mut model = Scripted::new(|h: &[u32]| match generated(h, clen) {
        [] => logits(N_VOCAB, &[(A, 5.0)]),
        _ => logits(N_VOCAB, &[(EOT, 5.0)]),
    });
    let r = greedy_decode(&mut model, &ctx, &ids, &opts(false)).unwrap();
    assert_eq!(r.tokens, vec![A]);
    assert_eq!(
        model.calls,
        vec![(ctx.clone(), vec![3, clen - 1]), (vec![A], vec![0])]
    );
}

#[test]
fn no_speech_prob_comes_from_raw_logits_at_the_sot_position() {
    let ids = tiny_ids();
    let p = prompt(false);
    let plen = p.len();
    let sot_logits = logits(N_VOCAB, &[(NO_SPEECH, 2.0), (A, 1.0)]);
    let expected = ref_log_softmax(&sot_logits, NO_SPEECH).exp();
    let sot_logits_for_model = sot_logits.clone();
    let mut model = Scripted::new(move |h: &[u32]| {
        if h.len() == 1 {
            sot_logits_for_model.clone()
        } else {
            match generated(h, plen) {
                // The last prompt position has a very different no-speech logit.
                [] => logits(N_VOCAB, &[(NO_SPEECH, 9.0), (A, 5.0)]),
                _ => logits(N_VOCAB, &[(EOT, 5.0)]),
            }
        }
    });
    // Suppressing the no-speech token must not change its reported probability.
    let o = DecodeOptions {
        suppress_tokens: vec![NO_SPEECH],
        ..opts(false)
    };
    let r = greedy_decode(&mut model, &p, &ids, &o).unwrap();
    assert!(
        (r.no_speech_prob as f64 - expected).abs() < 1e-6,
        "{} vs {expected}",
        r.no_speech_prob
    );
    assert_eq!(r.tokens, vec![A]);
}

#[test]
fn first_step_is_a_timestamp_no_later_than_the_initial_limit() {
    let ids = tiny_ids();
    let p = prompt(true);
    let plen = p.len();
    let script = move |h: &[u32]| match generated(h, plen) {
        // Text is best, then a late timestamp, then early ones.
        [] => logits(
            N_VOCAB,
            &[
                (A, 10.0),
                (TS0 + 5, 9.0),
                (TS0 + 2, 5.0),
                (TS0 + 1, 4.0),
                (NO_TS, 11.0),
            ],
        ),
        _ => logits(N_VOCAB, &[(EOT, 5.0)]),
    };
    let r = greedy_decode(&mut Scripted::new(script), &p, &ids, &opts(true)).unwrap();
    assert_eq!(
        r.tokens,
        vec![TS0 + 2],
        "limit index 3 allows <|0.00|>..<|0.06|>"
    );

    let no_limit = DecodeOptions {
        max_initial_timestamp_index: None,
        ..opts(true)
    };
    let r = greedy_decode(&mut Scripted::new(script), &p, &ids, &no_limit).unwrap();
    assert_eq!(r.tokens, vec![TS0 + 5]);
}

#[test]
fn timestamps_come_in_pairs_and_never_decrease() {
    let ids = tiny_ids();
    let p = prompt(true);
    let plen = p.len();
    let mut model = Scripted::new(|h: &[u32]| match generated(h, plen) {
        [] => logits(N_VOCAB, &[(TS0, 5.0)]),
        // A lone first timestamp acts as a pair: text must follow, although a timestamp
        // has the highest logit.
        [_] => logits(N_VOCAB, &[(TS0 + 4, 10.0), (A, 5.0)]),
        // After text, timestamps up to the last one (TS0) are forbidden; TS0 + 4 wins.
        [_, _] => logits(N_VOCAB, &[(TS0, 12.0), (TS0 + 4, 10.0), (A, 5.0)]),
        // After a single closing timestamp: no text, no earlier timestamp, equal allowed.
        [_, _, _] => logits(
            N_VOCAB,
            &[(B, 10.0), (TS0 + 3, 8.0), (TS0 + 4, 6.0), (EOT, 1.0)],
        ),
        // After a pair: no timestamp.
        [_, _, _, _] => logits(N_VOCAB, &[(TS0 + 6, 10.0), (C, 3.0)]),
        _ => logits(N_VOCAB, &[(EOT, 10.0)]),
    });
    let r = greedy_decode(&mut model, &p, &ids, &opts(true)).unwrap();
    assert_eq!(r.tokens, vec![TS0, A, TS0 + 4, TS0 + 4, C]);
}

#[test]
fn summed_timestamp_probability_beats_the_best_text_token() {
    let ids = tiny_ids();
    let p = prompt(true);
    let plen = p.len();
    // After [<|0.00|>, a], timestamps 21..=31 (11 of them) are allowed. Each has logit v,
    // the best text token 5.0: the rule fires when v + ln 11 > 5.
    let run = |v: f32| {
        let mut model = Scripted::new(move |h: &[u32]| match generated(h, plen) {
            [] => logits(N_VOCAB, &[(TS0, 5.0)]),
            [_] => logits(N_VOCAB, &[(A, 5.0)]),
            [_, _] => {
                let mut l = logits(N_VOCAB, &[(B, 5.0)]);
                l[TS0 as usize..].fill(v);
                l
            }
            _ => logits(N_VOCAB, &[(EOT, 20.0)]),
        });
        greedy_decode(&mut model, &p, &ids, &opts(true))
            .unwrap()
            .tokens
    };
    assert!(3.0 + 11f32.ln() > 5.0 && 2.5 + 11f32.ln() < 5.0);
    // Fires: every timestamp ties, the lowest allowed one (21) is chosen.
    assert_eq!(run(3.0), vec![TS0, A, TS0 + 1]);
    assert_eq!(run(2.5), vec![TS0, A, B]);
}

#[test]
fn suppress_blank_applies_at_the_first_step_only() {
    let ids = tiny_ids();
    let p = prompt(false);
    let plen = p.len();
    let script = move |h: &[u32]| match generated(h, plen) {
        [] => logits(N_VOCAB, &[(BLANK, 10.0), (EOT, 9.0), (A, 8.0)]),
        [_] => logits(N_VOCAB, &[(BLANK, 10.0), (A, 8.0)]),
        _ => logits(N_VOCAB, &[(EOT, 10.0)]),
    };
    let r = greedy_decode(&mut Scripted::new(script), &p, &ids, &opts(false)).unwrap();
    assert_eq!(r.tokens, vec![A, BLANK]);

    let off = DecodeOptions {
        suppress_blank: false,
        ..opts(false)
    };
    let r = greedy_decode(&mut Scripted::new(script), &p, &ids, &off).unwrap();
    assert_eq!(r.tokens, vec![BLANK, BLANK]);
}

#[test]
fn suppressed_tokens_are_never_chosen() {
    let ids = tiny_ids();
    let p = prompt(false);
    let plen = p.len();
    let mut model = Scripted::new(|h: &[u32]| {
        if generated(h, plen).len() < 3 {
            logits(N_VOCAB, &[(A, 10.0), (B, 9.0)])
        } else {
            logits(N_VOCAB, &[(A, 10.0), (EOT, 9.5)])
        }
    });
    let o = DecodeOptions {
        suppress_tokens: vec![A],
        ..opts(false)
    };
    let r = greedy_decode(&mut model, &p, &ids, &o).unwrap();
    assert_eq!(r.tokens, vec![B, B, B]);
}

#[test]
fn end_token_stops_and_scores_use_the_filtered_log_probabilities() {
    let ids = tiny_ids();
    let p = prompt(false);
    let plen = p.len();
    let step1 = logits(N_VOCAB, &[(BLANK, 6.0), (EOT, 6.0), (A, 3.0), (B, 1.0)]);
    let step2 = logits(N_VOCAB, &[(B, 2.0), (C, 1.5)]);
    let step3 = logits(N_VOCAB, &[(EOT, 4.0), (A, 1.0)]);
    let (s1, s2, s3) = (step1.clone(), step2.clone(), step3.clone());
    let mut model = Scripted::new(move |h: &[u32]| match generated(h, plen) {
        [] => s1.clone(),
        [_] => s2.clone(),
        _ => s3.clone(),
    });
    let r = greedy_decode(&mut model, &p, &ids, &opts(false)).unwrap();
    assert_eq!(r.tokens, vec![A, B], "end token not included");
    assert_eq!(model.calls.len(), 3, "nothing is fed after the end token");

    // Step 1 is scored after blank and end suppression.
    let mut filtered1 = step1.clone();
    filtered1[BLANK as usize] = f32::NEG_INFINITY;
    filtered1[EOT as usize] = f32::NEG_INFINITY;
    let lp = [
        ref_log_softmax(&filtered1, A),
        ref_log_softmax(&step2, B),
        ref_log_softmax(&step3, EOT),
    ];
    let unfiltered = ref_log_softmax(&step1, A);
    assert!(
        (lp[0] - unfiltered).abs() > 1.0,
        "the test must distinguish filtered from raw"
    );
    let sum: f64 = lp.iter().sum();
    assert!(
        (r.sum_logprob - sum).abs() < 1e-5,
        "{} vs {sum}",
        r.sum_logprob
    );
    assert!(
        (r.score - sum / 2.0).abs() < 1e-5,
        "score = sum / generated count"
    );
    assert!(
        (r.avg_logprob - sum / 3.0).abs() < 1e-5,
        "avg = sum / (count + 1)"
    );
}

#[test]
fn max_length_limits_the_number_of_generated_tokens() {
    let ids = tiny_ids();
    let always_a = |_: &[u32]| logits(N_VOCAB, &[(A, 5.0)]);

    // Prompt of 4: CTranslate2 allows min(max_length / 2, max_length - 3) tokens.
    let o = DecodeOptions {
        max_length: 10,
        ..opts(false)
    };
    let mut model = Scripted::new(always_a);
    let r = greedy_decode(&mut model, &prompt(false), &ids, &o).unwrap();
    assert_eq!(r.tokens, vec![A; 5]);
    assert_eq!(model.calls.len(), 5, "the last chosen token is not fed");
    let raw = logits(N_VOCAB, &[(A, 5.0)]);
    let mut first = raw.clone();
    first[BLANK as usize] = f32::NEG_INFINITY;
    first[EOT as usize] = f32::NEG_INFINITY;
    let sum = ref_log_softmax(&first, A) + 4.0 * ref_log_softmax(&raw, A);
    assert!(
        (r.score - sum / 5.0).abs() < 1e-5,
        "no end token: score = sum / 5, got {}",
        r.score
    );
    assert!((r.avg_logprob - sum / 6.0).abs() < 1e-5);

    let r = greedy_decode(
        &mut Scripted::new(always_a),
        &prompt(false),
        &ids,
        &opts(false),
    )
    .unwrap();
    assert_eq!(r.tokens.len(), 224, "448 / 2");

    // A long previous context: 305 prompt tokens leave 448 - 304 = 144.
    let mut long = vec![PREV];
    long.extend([C; 300]);
    long.extend([SOT, EN, TRANSCRIBE, NO_TS]);
    let mut model = Scripted::new(always_a);
    let r = greedy_decode(&mut model, &long, &ids, &opts(false)).unwrap();
    assert_eq!(r.tokens.len(), 144);
    assert_eq!(
        model.history.len(),
        448,
        "the decoder sees exactly max_length positions"
    );

    let too_long = DecodeOptions {
        max_length: 3,
        ..opts(false)
    };
    let err = greedy_decode(
        &mut Scripted::new(always_a),
        &prompt(false),
        &ids,
        &too_long,
    )
    .unwrap_err();
    assert!(
        matches!(Some(&err), Some(DecodeError::PromptTooLong { .. })),
        "{err}"
    );
}

#[test]
fn ties_go_to_the_lowest_id() {
    let ids = tiny_ids();
    let p = prompt(false);
    let plen = p.len();
    let mut model = Scripted::new(|h: &[u32]| match generated(h, plen) {
        [] => logits(N_VOCAB, &[(C, 7.0), (B, 7.0), (TS0 + 3, 7.0)]),
        _ => logits(N_VOCAB, &[(EOT, 7.0)]),
    });
    assert_eq!(
        greedy_decode(&mut model, &p, &ids, &opts(false))
            .unwrap()
            .tokens,
        vec![B]
    );
}

#[test]
fn forced_prefix_skips_the_initial_timestamp_rule() {
    let ids = tiny_ids();
    let p = vec![SOT, EN, TRANSCRIBE, A, B];
    let plen = p.len();
    let mut model = Scripted::new(|h: &[u32]| match generated(h, plen) {
        [] => logits(N_VOCAB, &[(C, 10.0), (TS0, 5.0)]),
        _ => logits(N_VOCAB, &[(EOT, 10.0)]),
    });
    let r = greedy_decode(&mut model, &p, &ids, &opts(true)).unwrap();
    assert_eq!(
        r.tokens,
        vec![C],
        "prefix excluded, text allowed at the first free step"
    );
    assert_eq!(model.calls[0].1, vec![0, 4]);
}

#[test]
fn forced_prefix_counts_against_max_length_and_in_the_score_length() {
    // CTranslate2 returns the forced prefix with the hypothesis: its steps count against
    // the decoding limit and its tokens in the length that normalises the score.
    let ids = tiny_ids();
    let p = vec![SOT, EN, TRANSCRIBE, NO_TS, A, B];
    let always_c = |_: &[u32]| logits(N_VOCAB, &[(C, 5.0)]);
    let o = DecodeOptions {
        max_length: 10,
        ..opts(false)
    };
    let mut model = Scripted::new(always_c);
    let r = greedy_decode(&mut model, &p, &ids, &o).unwrap();
    // min(10 / 2, 10 − 3) = 5 steps, 2 of them the prefix.
    assert_eq!(r.tokens, vec![C; 3]);
    // Blank suppression applies at the first step after the prefix.
    let raw = logits(N_VOCAB, &[(C, 5.0)]);
    let mut first = raw.clone();
    first[BLANK as usize] = f32::NEG_INFINITY;
    first[EOT as usize] = f32::NEG_INFINITY;
    let sum = ref_log_softmax(&first, C) + 2.0 * ref_log_softmax(&raw, C);
    assert!((r.sum_logprob - sum).abs() < 1e-5);
    assert!(
        (r.score - sum / 5.0).abs() < 1e-5,
        "score over prefix + generated"
    );
    assert!((r.avg_logprob - sum / 6.0).abs() < 1e-5);

    // A prefix that fills the limit leaves nothing to generate.
    let o = DecodeOptions {
        max_length: 4,
        ..opts(false)
    };
    let err = greedy_decode(&mut Scripted::new(always_c), &p, &ids, &o).unwrap_err();
    assert!(
        matches!(Some(&err), Some(DecodeError::PromptTooLong { .. })),
        "{err}"
    );
}

#[test]
fn inconsistent_inputs_are_errors() {
    let ids = tiny_ids();
    let ok = |_: &[u32]| logits(N_VOCAB, &[(EOT, 5.0)]);
    let err_of = |p: &[u32], o: &DecodeOptions, short: bool| {
        let f = move |h: &[u32]| if short { vec![0.0; N_VOCAB - 1] } else { ok(h) };
        greedy_decode(&mut Scripted::new(f), p, &ids, o).unwrap_err()
    };
    let e = err_of(&[EN, TRANSCRIBE], &opts(false), false);
    assert!(
        matches!(Some(&e), Some(DecodeError::NoStartOfTranscript { .. })),
        "{e}"
    );
    let e = err_of(&prompt(true), &opts(false), false);
    assert!(
        matches!(Some(&e), Some(DecodeError::TimestampModeMismatch { .. })),
        "{e}"
    );
    let e = err_of(&prompt(false), &opts(false), true);
    assert!(
        matches!(Some(&e), Some(DecodeError::LogitLength { step: 0, expected: N_VOCAB, got, .. }) if *got == N_VOCAB - 1),
        "{e}"
    );
    let e = err_of(&[SOT, 99, NO_TS], &opts(false), false);
    assert!(
        matches!(
            Some(&e),
            Some(DecodeError::PromptTokenOutOfRange {
                index: 1,
                id: 99,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn filters_work_on_plain_slices() {
    let mut l = vec![1.0f32; N_VOCAB];
    SuppressTokens {
        ids: vec![2, 5, 1000],
    }
    .apply(&mut l, &[]);
    assert_eq!(
        (l[2], l[5], l[3]),
        (f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0)
    );

    let blank = SuppressBlank {
        ids: vec![BLANK, EOT],
    };
    let mut l = vec![1.0f32; N_VOCAB];
    blank.apply(&mut l, &[A]);
    assert!(l.iter().all(|&x| x == 1.0), "not the first step");
    blank.apply(&mut l, &[]);
    assert_eq!(
        (l[0], l[10], l[1]),
        (f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0)
    );

    let rules = TimestampRules {
        eot: EOT,
        no_timestamps: NO_TS,
        timestamp_begin: TS0,
        max_initial_timestamp: Some(TS0 + 3),
        first_step_rules: true,
    };
    let mut l = vec![0.0f32; N_VOCAB];
    rules.apply(&mut l, &[]);
    let allowed: Vec<usize> = (0..N_VOCAB).filter(|&i| l[i] > f32::NEG_INFINITY).collect();
    assert_eq!(allowed, vec![20, 21, 22, 23]);
    // After text following <|0.04|>: <|0.00|>..<|0.04|> and <|notimestamps|> are out; the
    // 9 remaining timestamps outweigh each text token, so only timestamps remain.
    let mut l = vec![0.0f32; N_VOCAB];
    rules.apply(&mut l, &[TS0 + 2, A]);
    let allowed: Vec<usize> = (0..N_VOCAB).filter(|&i| l[i] > f32::NEG_INFINITY).collect();
    assert_eq!(allowed, (23..32).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// Real ids: replaying the reference token streams

/// A decoder that puts logit 20 on the reference's next token and 0 elsewhere (high enough
/// that the ~1000 timestamps after <|10.60|> together do not outweigh <|endoftext|>).
fn replay(
    reference: &'static [u32],
    prompt_len: usize,
    n_vocab: usize,
) -> impl FnMut(&[u32]) -> Vec<f32> {
    move |h: &[u32]| {
        let next = reference.get(h.len()).copied().unwrap_or(50257);
        if h.len() < prompt_len {
            return vec![0.0; n_vocab]; // sot position: uniform
        }
        logits(n_vocab, &[(next, 20.0)])
    }
}

#[test]
fn reference_streams_pass_the_rules_with_real_ids() {
    let tok = real_tokenizer();
    let ids = SpecialIds::from(&tok);

    let mut model = Scripted::new(replay(&TOKENS_GREEDY, 4, tok.n_vocab()));
    let r = greedy_decode(
        &mut model,
        &TOKENS_GREEDY[..4],
        &ids,
        &faster_whisper_options(true),
    )
    .unwrap();
    assert_eq!(r.tokens, TOKENS_GREEDY[4..29].to_vec());
    assert!((r.no_speech_prob as f64 - 1.0 / 51865.0).abs() < 1e-9);
    assert_eq!(tok.decode(&r.tokens), TEXT_GREEDY);

    let mut model = Scripted::new(replay(&TOKENS_GREEDY_TS, 3, tok.n_vocab()));
    let r = greedy_decode(
        &mut model,
        &TOKENS_GREEDY_TS[..3],
        &ids,
        &faster_whisper_options(false),
    )
    .unwrap();
    assert_eq!(r.tokens, TOKENS_GREEDY_TS[3..31].to_vec());
    assert_eq!(tok.decode_with_timestamps(&r.tokens), TEXT_GREEDY_TS);
}

#[test]
fn timestamp_rules_override_the_raw_argmax_with_real_ids() {
    // The reference's first token <|0.00|> is imposed: here the raw argmax is text.
    let tok = real_tokenizer();
    let ids = SpecialIds::from(&tok);
    let n = tok.n_vocab();
    let mut model = Scripted::new(move |h: &[u32]| match h.len() {
        1..=3 => logits(n, &[(400, 9.0), (50364 + 60, 8.0), (50364, 4.0)]),
        _ => logits(n, &[(50257, 9.0)]),
    });
    let r = greedy_decode(
        &mut model,
        &TOKENS_GREEDY_TS[..3],
        &ids,
        &faster_whisper_options(false),
    )
    .unwrap();
    assert_eq!(
        r.tokens,
        vec![50364],
        "<|1.20|> is past max_initial_timestamp 1.00 s"
    );
}

// ---------------------------------------------------------------------------------------
// Segments

#[test]
fn split_segments_reproduces_the_reference_segments() {
    let tok = real_tokenizer();
    let segs = split_segments(&TOKENS_GREEDY_TS[3..31], &tok, 0.0, 11.0);
    assert_eq!(segs.len(), 2);
    assert!(
        (segs[0].start - 0.0).abs() < 1e-6 && (segs[0].end - 7.6).abs() < 1e-6,
        "{segs:?}"
    );
    assert_eq!(
        segs[0].text,
        " And so my fellow Americans ask not what your country can do for you,"
    );
    assert_eq!(segs[0].tokens, TOKENS_GREEDY_TS[3..20].to_vec());
    assert!(
        (segs[1].start - 7.6).abs() < 1e-6 && (segs[1].end - 10.6).abs() < 1e-6,
        "{segs:?}"
    );
    assert_eq!(segs[1].text, " ask what you can do for your country.");
    assert_eq!(segs[1].tokens, TOKENS_GREEDY_TS[20..31].to_vec());

    // The window offset shifts every time.
    let shifted = split_segments(&TOKENS_GREEDY_TS[3..31], &tok, 30.0, 30.0);
    assert!((shifted[1].start - 37.6).abs() < 1e-5 && (shifted[1].end - 40.6).abs() < 1e-5);
}

#[test]
fn split_segments_without_pairs_is_one_window_segment() {
    let tok = real_tokenizer();
    // No timestamps at all: the whole window.
    let segs = split_segments(&TOKENS_GREEDY[4..29], &tok, 30.0, 11.0);
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].start, segs[0].end), (30.0, 41.0));
    assert_eq!(segs[0].text, TEXT_GREEDY);

    // Timestamps but no pair: ends at the last timestamp.
    let toks = [50364, 400, 370, 50364 + 150];
    let segs = split_segments(&toks, &tok, 30.0, 11.0);
    assert_eq!(segs.len(), 1);
    assert!(
        (segs[0].start - 30.0).abs() < 1e-6 && (segs[0].end - 33.0).abs() < 1e-5,
        "{segs:?}"
    );
    assert_eq!(segs[0].text, " And so");
}

#[test]
fn split_segments_drops_an_unfinished_last_segment() {
    let tok = real_tokenizer();
    // <|0.00|> And so <|1.00|><|1.00|> my fellow   (no closing timestamp)
    let toks = [50364, 400, 370, 50414, 50414, 452, 7177];
    let segs = split_segments(&toks, &tok, 0.0, 30.0);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].text, " And so");
    assert!((segs[0].end - 1.0).abs() < 1e-6);
}
