//! Text → token ids, compared with Hugging Face `tokenizers` on whisper-base's
//! `tokenizer.json`, plus the encoder's rules on small hand-made tokenizers.
//!
//! Reference ids: `tests/data/tokenizer/encode_cases.json`, written by
//! `tests/data/tokenizer/make_fixtures.py` (`encode(text, add_special_tokens=False).ids`,
//! the call faster-whisper makes).

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use amanuensis::tokenizer::{Tokenizer, TokenizerError};

#[derive(serde::Deserialize)]
struct Fixture {
    tokenizers_version: String,
    cases: Vec<Case>,
    prompts: Vec<PromptCase>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    text: String,
    has_added_token: bool,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct PromptCase {
    prompt: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let path = common::data_dir().join("tokenizer/encode_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn whisper_base() -> Tokenizer {
    let dir = common::model_dir();
    let tok = Tokenizer::from_model_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(tok.has_bpe(), "{} has no tokenizer.json", dir.display());
    tok
}

// ---------------------------------------------------------------------------------------
// whisper-base against Hugging Face tokenizers

#[test]
fn encode_matches_hugging_face_on_every_fixture_case() {
    let fx = fixture();
    assert!(fx.cases.len() >= 60, "only {} cases", fx.cases.len());
    let tok = whisper_base();
    let mut failures = Vec::new();
    // Twice: the second pass is served from the word cache and must agree.
    for pass in 0..2 {
        for c in &fx.cases {
            let got = tok
                .encode(&c.text)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            if got != c.ids {
                failures.push(format!(
                    "pass {pass} {} {:?}:\n  tokenizers {}: {:?}\n  ours: {:?}",
                    c.name, c.text, fx.tokenizers_version, c.ids, got
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_inverts_encode_for_text_without_added_tokens() {
    let fx = fixture();
    let tok = whisper_base();
    let mut checked = 0;
    for c in fx.cases.iter().filter(|c| !c.has_added_token) {
        let ids = tok.encode(&c.text).unwrap();
        assert_eq!(tok.decode(&ids), c.text, "case {}", c.name);
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} cases without added tokens");
}

#[test]
fn added_tokens_in_text_become_their_ids() {
    let tok = whisper_base();
    let eot = tok.eot();
    assert_eq!(tok.encode("<|endoftext|>").unwrap(), vec![eot]);
    let ids = tok.encode("<|startofprev|><|en|>").unwrap();
    assert_eq!(
        ids,
        vec![tok.start_of_prev(), tok.language_token("en").unwrap()]
    );
    // Timestamps are not added tokens in tokenizer.json: their text is ordinary text.
    let ids = tok.encode("<|0.00|>").unwrap();
    assert!(
        !ids.contains(&tok.timestamp_begin()) && ids.len() > 1,
        "{ids:?}"
    );
}

#[test]
fn encode_prompt_matches_faster_whisper() {
    let fx = fixture();
    let tok = whisper_base();
    assert!(fx.prompts.len() >= 5);
    for p in &fx.prompts {
        assert_eq!(
            tok.encode_prompt(&p.prompt).unwrap(),
            p.ids,
            "prompt {:?}",
            p.prompt
        );
    }
}

#[test]
fn vocabulary_alone_decodes_but_cannot_encode() {
    let path = common::data_dir().join("vocabulary.txt");
    let tok = Tokenizer::from_vocabulary_file(&path).unwrap();
    assert!(!tok.has_bpe());
    let err = tok.encode("hello").unwrap_err();
    assert!(matches!(err, TokenizerError::NoBpe), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    assert_eq!(tok.decode(&[15947, 1002]), "Hello world");
}

#[test]
fn load_bpe_errors_name_the_file() {
    let mut tok =
        Tokenizer::from_vocabulary_file(common::data_dir().join("vocabulary.txt")).unwrap();
    let missing =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/no-such-tokenizer.json");
    let err = tok.load_bpe(&missing).unwrap_err().to_string();
    assert!(err.contains("no-such-tokenizer.json"), "{err}");
    let err = tok.load_bpe_str("{\"model\": ").unwrap_err();
    assert!(matches!(err, TokenizerError::Json { .. }), "{err:?}");
    assert!(!tok.has_bpe());
}

#[test]
fn a_model_directorys_tokenizer_json_is_built_on_first_encode_and_its_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::data_dir().join("vocabulary.txt"),
        dir.path().join("vocabulary.txt"),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": ").unwrap();
    // Loading the directory does not parse it: decoding needs only the vocabulary.
    let tok = Tokenizer::from_model_dir(dir.path()).expect("the vocabulary loads");
    assert!(tok.has_bpe());
    assert_eq!(tok.decode(&[15947, 1002]), "Hello world");
    // The first encode builds the encoder and reports the broken file by name, each time.
    for _ in 0..2 {
        let err = tok.encode("hello").unwrap_err();
        assert!(matches!(err, TokenizerError::Json { .. }), "{err:?}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
    // A good file is built once and shared by clones.
    let good = whisper_base();
    let copy = good.clone();
    assert_eq!(
        good.encode(" hello").unwrap(),
        copy.encode(" hello").unwrap()
    );
}

/// Load and encode times (the fastest of a few runs, to see past a busy machine). Bounds
/// are ~10x the measured values, so that only a real regression fails; the measured
/// numbers are printed.
#[test]
fn loading_and_encoding_are_fast() {
    let fx = fixture();
    let paragraph = &fx
        .cases
        .iter()
        .find(|c| c.name == "paragraph_200_words")
        .unwrap()
        .text;
    assert_eq!(paragraph.split(' ').count(), 200);
    let dir = common::model_dir();
    let vocabulary = dir.join("vocabulary.txt");
    let json = dir.join("tokenizer.json");

    let (mut load_vocabulary, mut load_json, mut cold) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut tok = None;
    for _ in 0..3 {
        let t = Instant::now();
        let mut fresh = Tokenizer::from_vocabulary_file(&vocabulary).unwrap();
        load_vocabulary = load_vocabulary.min(t.elapsed());
        let t = Instant::now();
        fresh.load_bpe(&json).unwrap();
        load_json = load_json.min(t.elapsed());
        // A fresh tokenizer has an empty word cache.
        let t = Instant::now();
        fresh.encode(paragraph).unwrap();
        cold = cold.min(t.elapsed());
        tok = Some(fresh);
    }
    let tok = tok.unwrap();
    let n_ids = tok.encode(paragraph).unwrap().len();
    let mut warm = Duration::MAX;
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(tok.encode(paragraph).unwrap().len(), n_ids);
        warm = warm.min(t.elapsed());
    }
    println!(
        "load vocabulary.txt {load_vocabulary:?}, tokenizer.json {load_json:?}; \
         200-word prompt ({n_ids} ids): cold {cold:?}, cached {warm:?}"
    );
    // `tokenizers` builds its merge table and vocabulary maps at load: 0.40 s to 3.05 s
    // wall were measured with the machine at load average 10 to 13 on 2 cores.
    assert!(
        load_json.as_millis() < 10_000,
        "tokenizer.json load took {load_json:?}"
    );
    assert!(cold.as_micros() < 5000, "cold encode took {cold:?}");
    assert!(warm.as_micros() < 1000, "cached encode took {warm:?}");
}

// ---------------------------------------------------------------------------------------
// Hand-made tokenizers: the encoder's rules in isolation

/// GPT-2's byte alphabet, written independently of the library.
fn byte_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + shifted).unwrap()
}

const SPECIALS: [&str; 9] = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
];

/// Tokens of the small vocabulary: the 256 bytes, then `extra`, then the specials and two
/// timestamps.
fn small_vocabulary(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(SPECIALS.iter().map(|s| s.to_string()));
    v.push("<|0.00|>".into());
    v.push("<|0.02|>".into());
    v
}

/// A `tokenizer.json` for `tokens` (everything before the specials goes in model.vocab,
/// the specials become added tokens) with the given merges and pre-tokenizer.
fn small_json(
    tokens: &[String],
    merges: serde_json::Value,
    pre_tokenizer: serde_json::Value,
) -> String {
    let eot = tokens.iter().position(|t| t == "<|endoftext|>").unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens[..eot]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(k, s)| {
            serde_json::json!({"id": eot + k, "content": s, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "vocab": vocab, "merges": merges}
    })
    .to_string()
}

fn byte_level(add_prefix_space: bool, use_regex: bool) -> serde_json::Value {
    serde_json::json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                       "trim_offsets": true, "use_regex": use_regex})
}

fn small_tokenizer(
    extra: &[&str],
    merges: serde_json::Value,
    pre: serde_json::Value,
) -> Result<Tokenizer, TokenizerError> {
    let tokens = small_vocabulary(extra);
    let mut tok = Tokenizer::from_vocabulary_str(&(tokens.join("\n") + "\n")).unwrap();
    tok.load_bpe_str(&small_json(&tokens, merges, pre))?;
    Ok(tok)
}

fn id_of(tok: &Tokenizer, s: &str) -> u32 {
    tok.token_id(s).unwrap_or_else(|| panic!("no token {s:?}"))
}

#[test]
fn lower_ranked_merges_apply_first_and_ties_go_leftmost() {
    let merges = serde_json::json!(["b c", "a b", "a a", "a bc"]);
    let tok = small_tokenizer(&["bc", "ab", "aa", "abc"], merges, byte_level(false, true)).unwrap();
    // "b c" (rank 0) wins over "a b" (rank 1), then "a bc" makes "abc".
    assert_eq!(tok.encode("abc").unwrap(), vec![id_of(&tok, "abc")]);
    // Three a's: the leftmost pair merges first, leaving a lone "a" on the right.
    assert_eq!(
        tok.encode("aaa").unwrap(),
        vec![id_of(&tok, "aa"), id_of(&tok, "a")]
    );
    assert_eq!(
        tok.encode("aaaa").unwrap(),
        vec![id_of(&tok, "aa"), id_of(&tok, "aa")]
    );
    // Equal ranks at two places both merge, left first.
    assert_eq!(
        tok.encode("abab").unwrap(),
        vec![id_of(&tok, "ab"), id_of(&tok, "ab")]
    );
    // "abbc": "b c" (rank 0) takes the second b, so "a b" (rank 1) still gets the first.
    assert_eq!(
        tok.encode("abbc").unwrap(),
        vec![id_of(&tok, "ab"), id_of(&tok, "bc")]
    );
}

#[test]
fn merges_may_be_written_as_pairs() {
    let merges = serde_json::json!([["b", "c"], ["a", "bc"]]);
    let tok = small_tokenizer(&["bc", "abc"], merges, byte_level(false, true)).unwrap();
    assert_eq!(tok.encode("abc").unwrap(), vec![id_of(&tok, "abc")]);
}

#[test]
fn regex_split_keeps_merges_inside_words() {
    let merges = serde_json::json!(["Ġ a", "a a"]);
    let extra = ["Ġa", "aa"];
    let split = small_tokenizer(&extra, merges.clone(), byte_level(false, true)).unwrap();
    let ga = id_of(&split, "Ġa");
    let a = id_of(&split, "a");
    let sp = id_of(&split, "Ġ");
    // "a a": words "a" and " a".
    assert_eq!(split.encode("a a").unwrap(), vec![a, ga]);
    // Two spaces before a letter: the first stands alone, the second joins the word.
    assert_eq!(split.encode("a  a").unwrap(), vec![a, sp, ga]);
    // Without the regex the whole text is one word: "a" "Ġa"... still merges left to right.
    let whole = small_tokenizer(&extra, merges.clone(), byte_level(false, false)).unwrap();
    assert_eq!(whole.encode("aa a").unwrap(), vec![id_of(&whole, "aa"), ga]);
    // add_prefix_space puts a space before text that does not start with one.
    let prefixed = small_tokenizer(&extra, merges, byte_level(true, true)).unwrap();
    assert_eq!(prefixed.encode("a").unwrap(), vec![ga]);
    assert_eq!(prefixed.encode(" a").unwrap(), vec![ga]);
    // ... and to each piece between added tokens.
    let eot = prefixed.eot();
    assert_eq!(
        prefixed.encode("a<|endoftext|>a").unwrap(),
        vec![ga, eot, ga]
    );
}

#[test]
fn tokenizer_json_must_agree_with_the_vocabulary() {
    let tokens = small_vocabulary(&["ab"]);
    let mut tok = Tokenizer::from_vocabulary_str(&(tokens.join("\n") + "\n")).unwrap();
    // A different string for id 256.
    let mut other = tokens.clone();
    other[256] = "ba".into();
    let json = small_json(&other, serde_json::json!([]), byte_level(false, true));
    match tok.load_bpe_str(&json).unwrap_err() {
        TokenizerError::VocabularyMismatch {
            id,
            json,
            vocabulary,
            ..
        } => {
            assert_eq!(
                (id, json.as_str(), vocabulary.as_deref()),
                (256, "ba", Some("ab"))
            );
        }
        e => panic!("{e:?}"),
    }
    // An id the vocabulary does not have.
    let mut longer = tokens.clone();
    longer.insert(256, "zz".into());
    let json = small_json(&longer, serde_json::json!([]), byte_level(false, true));
    let err = tok.load_bpe_str(&json).unwrap_err();
    assert!(
        matches!(err, TokenizerError::VocabularyMismatch { .. }),
        "{err:?}"
    );
    // A token left out of both model.vocab and added_tokens.
    let mut json: serde_json::Value = serde_json::from_str(&small_json(
        &tokens,
        serde_json::json!([]),
        byte_level(false, true),
    ))
    .unwrap();
    json["model"]["vocab"].as_object_mut().unwrap().remove("ab");
    let err = tok.load_bpe_str(&json.to_string()).unwrap_err();
    assert!(err.to_string().contains("id 256"), "{err}");
    assert!(!tok.has_bpe());
}

#[test]
fn settings_decoding_cannot_invert_are_refused() {
    let tokens = small_vocabulary(&["ab"]);
    let base: serde_json::Value = serde_json::from_str(&small_json(
        &tokens,
        serde_json::json!(["a b"]),
        byte_level(false, true),
    ))
    .unwrap();
    let mut tok = Tokenizer::from_vocabulary_str(&(tokens.join("\n") + "\n")).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 4] = [
        ("pre_tokenizer", |j| {
            j["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"})
        }),
        ("dropout", |j| {
            j["model"]["dropout"] = serde_json::json!(0.1)
        }),
        ("end_of_word_suffix", |j| {
            j["model"]["end_of_word_suffix"] = serde_json::json!("</w>")
        }),
        ("continuing_subword_prefix", |j| {
            j["model"]["continuing_subword_prefix"] = serde_json::json!("##")
        }),
    ];
    for (what, edit) in cases {
        let mut j = base.clone();
        edit(&mut j);
        let err = tok.load_bpe_str(&j.to_string()).unwrap_err();
        assert!(
            matches!(err, TokenizerError::Unsupported { .. }) && err.to_string().contains(what),
            "{what}: {err:?}"
        );
        assert!(!tok.has_bpe());
    }
    // A model `tokenizers` does not read as BPE.
    let mut j = base.clone();
    j["model"]["type"] = serde_json::json!("WordPiece");
    let err = tok.load_bpe_str(&j.to_string()).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::Unsupported { .. } | TokenizerError::Invalid { .. }
        ),
        "{err:?}"
    );
    // A merge whose result is not a token.
    let mut j = base.clone();
    j["model"]["merges"] = serde_json::json!(["b a"]);
    let err = tok.load_bpe_str(&j.to_string()).unwrap_err();
    assert!(
        matches!(err, TokenizerError::Invalid { .. }) && err.to_string().contains("`ba`"),
        "{err}"
    );
    assert!(!tok.has_bpe());
    // The unmodified file loads.
    tok.load_bpe_str(&base.to_string()).unwrap();
    assert_eq!(tok.encode("ab").unwrap(), vec![256]);
}

/// Settings `tokenizers` implements and decoding does not care about are followed.
#[test]
fn normalizer_and_added_token_stripping_are_followed() {
    let tokens = small_vocabulary(&[]);
    let mut base: serde_json::Value = serde_json::from_str(&small_json(
        &tokens,
        serde_json::json!([]),
        byte_level(false, true),
    ))
    .unwrap();
    let bytes = |tok: &Tokenizer, s: &str| -> Vec<u32> {
        s.bytes()
            .map(|b| id_of(tok, &byte_char(b).to_string()))
            .collect()
    };
    // NFC composes "e" + U+0301 into "é" (C3 A9) before the bytes are encoded.
    let mut j = base.clone();
    j["normalizer"] = serde_json::json!({"type": "NFC"});
    let mut tok = Tokenizer::from_vocabulary_str(&(tokens.join("\n") + "\n")).unwrap();
    tok.load_bpe_str(&j.to_string()).unwrap();
    assert_eq!(tok.encode("e\u{301}").unwrap(), bytes(&tok, "\u{e9}"));
    // lstrip: the space before <|endoftext|> belongs to the added token.
    base["added_tokens"][0]["lstrip"] = serde_json::json!(true);
    tok.load_bpe_str(&base.to_string()).unwrap();
    let eot = tok.eot();
    assert_eq!(
        tok.encode("a <|endoftext|>").unwrap(),
        [bytes(&tok, "a"), vec![eot]].concat()
    );
}
