//! Whisper's tokenizer as seen from a CTranslate2 model directory: `vocabulary.txt`
//! (line *i* = token id *i*), byte-level BPE decoding, special and timestamp tokens.
//!
//! Decoding needs only `vocabulary.txt`. Encoding (for `--prompt` text) also needs the
//! directory's `tokenizer.json`, which the Hugging Face `tokenizers` crate loads and runs,
//! so [`Tokenizer::encode`] returns the ids of `encode(text, add_special_tokens=False)`,
//! the call faster-whisper makes. What `tokenizers` does not know is kept here: the
//! vocabulary file, Whisper's special and timestamp tokens, and decoding.
//!
//! Special ids are found by looking up their strings, never hard-coded, so English-only
//! and multilingual vocabularies both work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest `vocabulary.txt` accepted; real Whisper vocabularies are about 0.5 MB.
const MAX_VOCABULARY_BYTES: u64 = 64 << 20;
/// Largest `tokenizer.json` accepted; Whisper's are 2.2 MB (large-v3: 2.5 MB).
const MAX_TOKENIZER_JSON_BYTES: u64 = 64 << 20;
/// File name of the Hugging Face tokenizer in a model directory.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// File name of the CTranslate2 vocabulary in a model directory.
pub const VOCABULARY_TXT: &str = "vocabulary.txt";

/// Text of the end-of-text token.
pub const EOT: &str = "<|endoftext|>";
/// Text of the start-of-transcript token.
pub const SOT: &str = "<|startoftranscript|>";
/// Text of the translate task token.
pub const TRANSLATE: &str = "<|translate|>";
/// Text of the transcribe task token.
pub const TRANSCRIBE: &str = "<|transcribe|>";
/// Text of the start-of-language-model token.
pub const START_OF_LM: &str = "<|startoflm|>";
/// Text of the previous-context token.
pub const START_OF_PREV: &str = "<|startofprev|>";
/// Text of the no-speech token in the original Whisper vocabularies.
pub const NO_CAPTIONS: &str = "<|nocaptions|>";
/// Text of the no-speech token in newer vocabularies (large-v3).
pub const NO_SPEECH: &str = "<|nospeech|>";
/// Text of the no-timestamps token.
pub const NO_TIMESTAMPS: &str = "<|notimestamps|>";
/// Text of the first timestamp token (0.00 s).
pub const FIRST_TIMESTAMP: &str = "<|0.00|>";

/// Seconds per timestamp token step.
pub const TIME_PRECISION: f32 = 0.02;

/// Errors raised while loading a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The vocabulary file is implausibly large.
    #[error("vocabulary {origin} is {size} bytes, more than the {max} accepted")]
    TooLarge { origin: String, size: u64, max: u64 },
    /// The vocabulary file is not UTF-8.
    #[error("vocabulary {origin} is not valid UTF-8 at byte offset {offset}")]
    NotUtf8 { origin: String, offset: usize },
    /// A special token the decoder needs is absent.
    #[error("vocabulary {origin} has no {token} token")]
    MissingToken { origin: String, token: &'static str },
    /// Special tokens are not laid out the way Whisper's decoding rules assume.
    #[error("vocabulary {origin}: {what}")]
    Layout { origin: String, what: String },
    /// A language code has no `<|code|>` token.
    #[error("vocabulary has no language token for {code:?}")]
    UnknownLanguage { code: String },
    /// `tokenizer.json` is not JSON (or is cut short).
    #[error("cannot parse tokenizer {origin}: {source}")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    /// `tokenizer.json` uses a setting whose ids [`Tokenizer::decode`] would not turn back
    /// into the text (anything but a deterministic byte-level BPE).
    #[error("tokenizer {origin}: unsupported {what}")]
    Unsupported { origin: String, what: String },
    /// `tokenizer.json` is JSON that `tokenizers` rejects (a merge of unknown tokens, an
    /// unknown component, ...) or that does not cover the vocabulary.
    #[error("tokenizer {origin}: {what}")]
    Invalid { origin: String, what: String },
    /// `tokenizer.json` and `vocabulary.txt` disagree about a token id.
    #[error("tokenizer {origin}: id {id} is {json:?} there but {vocabulary:?} in vocabulary.txt")]
    VocabularyMismatch {
        origin: String,
        id: u32,
        json: String,
        vocabulary: Option<String>,
    },
    /// [`Tokenizer::encode`] was called on a tokenizer loaded without `tokenizer.json`.
    #[error("encoding text needs the BPE merges of {TOKENIZER_JSON}, which were not loaded (use Tokenizer::from_model_dir or Tokenizer::load_bpe)")]
    NoBpe,
    /// `tokenizers` failed on the input (e.g. the pre-tokenizer's backtracking limit).
    #[error("encoding text: {message}")]
    Encode { message: String },
}

/// GPT-2's byte-level alphabet: byte `b` is written as the character `BYTE_TO_CHAR[b]`.
///
/// Printable Latin-1 bytes stand for themselves; the 68 others are moved, in increasing
/// byte order, to U+0100 onwards so that every byte has a visible, non-space character.
fn byte_to_char_table() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next_shifted = 0x100u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next_shifted).expect("U+0100..U+0143 are valid scalars");
            next_shifted += 1;
            c
        };
    }
    table
}

/// Inverse of [`byte_to_char_table`], indexed by code point (all targets are below U+0144).
fn char_to_byte_table() -> Vec<Option<u8>> {
    let forward = byte_to_char_table();
    let len = forward.iter().map(|&c| c as usize).max().unwrap_or(0) + 1;
    let mut inverse = vec![None; len];
    for (b, &c) in forward.iter().enumerate() {
        inverse[c as usize] = Some(b as u8);
    }
    inverse
}

/// A Whisper vocabulary with its special ids resolved.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    /// Raw bytes of each text token (ids below `eot`), from the byte-level alphabet.
    text_bytes: Vec<Vec<u8>>,
    ids: HashMap<String, u32>,
    languages: Vec<(String, u32)>,
    eot: u32,
    sot: u32,
    translate: u32,
    transcribe: u32,
    start_of_lm: u32,
    start_of_prev: u32,
    no_speech: u32,
    no_timestamps: u32,
    timestamp_begin: u32,
    /// The encoder of `tokenizer.json`; shared by clones (it is large).
    bpe: Option<Bpe>,
}

/// The BPE encoder: loaded, or a `tokenizer.json` to load on first use (most runs never
/// encode text, and `tokenizers` takes a few tens of MB and a noticeable part of a second
/// to build it).
#[derive(Debug, Clone)]
enum Bpe {
    Loaded(Encoder),
    Deferred(Arc<Deferred>),
}

/// A `tokenizer.json` whose encoder is built the first time it is needed.
#[derive(Debug)]
struct Deferred {
    path: std::path::PathBuf,
    encoder: std::sync::Mutex<Option<Encoder>>,
}

impl Tokenizer {
    /// Loads a model directory's `vocabulary.txt`.
    pub fn from_vocabulary_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        let io = |source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        let origin = path.display().to_string();
        if size > MAX_VOCABULARY_BYTES {
            return Err(TokenizerError::TooLarge {
                origin,
                size,
                max: MAX_VOCABULARY_BYTES,
            });
        }
        let bytes =
            amanuensis_runtime::files::read_regular(path, MAX_VOCABULARY_BYTES).map_err(io)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| TokenizerError::NotUtf8 {
            origin: origin.clone(),
            offset: e.valid_up_to(),
        })?;
        Self::parse(text, origin)
    }

    /// Loads a model directory: `vocabulary.txt`, plus `tokenizer.json` when present.
    ///
    /// `tokenizer.json` is only checked for size here; its encoder is built (and the file
    /// checked against the vocabulary) the first time text is encoded, so an error in it
    /// surfaces from [`Tokenizer::encode`]. Use [`Tokenizer::load_bpe`] to load it at once.
    /// Without `tokenizer.json` the tokenizer decodes but [`Tokenizer::encode`] returns
    /// [`TokenizerError::NoBpe`]; see [`Tokenizer::has_bpe`].
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        let mut tok = Self::from_vocabulary_file(dir.join(VOCABULARY_TXT))?;
        let json = dir.join(TOKENIZER_JSON);
        // Present but not a regular file (a device, say): the deferred read says so when
        // text is first encoded, rather than "not loaded".
        if json.exists() {
            check_size(&json)?;
            tok.bpe = Some(Bpe::Deferred(Arc::new(Deferred {
                path: json,
                encoder: std::sync::Mutex::new(None),
            })));
        }
        Ok(tok)
    }

    /// Parses the contents of a `vocabulary.txt`.
    pub fn from_vocabulary_str(text: &str) -> Result<Tokenizer, TokenizerError> {
        Self::parse(text, "<in-memory vocabulary>".to_string())
    }

    fn parse(text: &str, origin: String) -> Result<Tokenizer, TokenizerError> {
        let tokens = split_lines(text);
        if tokens.len() > u32::MAX as usize {
            return Err(TokenizerError::Layout {
                origin,
                what: "more than 2^32 tokens".into(),
            });
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // A repeated string keeps its first id, as CTranslate2's lookup does.
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let find = |token: &'static str| {
            ids.get(token).copied().ok_or(TokenizerError::MissingToken {
                origin: origin.clone(),
                token,
            })
        };
        let eot = find(EOT)?;
        let sot = find(SOT)?;
        let translate = find(TRANSLATE)?;
        let transcribe = find(TRANSCRIBE)?;
        let start_of_lm = find(START_OF_LM)?;
        let start_of_prev = find(START_OF_PREV)?;
        let no_speech = find(NO_CAPTIONS).or_else(|_| find(NO_SPEECH))?;
        let no_timestamps = find(NO_TIMESTAMPS)?;
        let timestamp_begin = find(FIRST_TIMESTAMP)?;

        // The decoding rules treat every id >= timestamp_begin as a timestamp and every
        // id < eot as text; both references derive timestamp_begin as no_timestamps + 1.
        if timestamp_begin != no_timestamps + 1 {
            return Err(TokenizerError::Layout {
                origin,
                what: format!(
                    "{FIRST_TIMESTAMP} is id {timestamp_begin}, expected {NO_TIMESTAMPS} + 1 = {}",
                    no_timestamps + 1
                ),
            });
        }
        if eot >= timestamp_begin || sot >= timestamp_begin {
            return Err(TokenizerError::Layout {
                origin,
                what: format!(
                    "{EOT}/{SOT} ({eot}/{sot}) must precede the timestamps ({timestamp_begin})"
                ),
            });
        }

        // Language tokens sit between <|startoftranscript|> and <|translate|>.
        let languages = if translate > sot {
            ((sot + 1)..translate)
                .filter_map(|id| {
                    let t = &tokens[id as usize];
                    let code = t.strip_prefix("<|")?.strip_suffix("|>")?;
                    Some((code.to_string(), id))
                })
                .collect()
        } else {
            Vec::new()
        };

        let inverse = char_to_byte_table();
        let text_bytes = tokens[..eot as usize]
            .iter()
            .map(|t| {
                let mut out = Vec::with_capacity(t.len());
                for c in t.chars() {
                    match inverse.get(c as usize).copied().flatten() {
                        Some(b) => out.push(b),
                        // Not part of the byte alphabet: keep the character as written.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
                    }
                }
                out
            })
            .collect();

        Ok(Tokenizer {
            tokens,
            text_bytes,
            ids,
            languages,
            eot,
            sot,
            translate,
            transcribe,
            start_of_lm,
            start_of_prev,
            no_speech,
            no_timestamps,
            timestamp_begin,
            bpe: None,
        })
    }

    /// Number of tokens (lines of `vocabulary.txt`), i.e. the logits' length.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    /// `<|endoftext|>`; every id below it is a text token.
    pub fn eot(&self) -> u32 {
        self.eot
    }
    /// `<|startoftranscript|>`.
    pub fn sot(&self) -> u32 {
        self.sot
    }
    /// `<|translate|>`.
    pub fn translate(&self) -> u32 {
        self.translate
    }
    /// `<|transcribe|>`.
    pub fn transcribe(&self) -> u32 {
        self.transcribe
    }
    /// `<|startoflm|>`.
    pub fn start_of_lm(&self) -> u32 {
        self.start_of_lm
    }
    /// `<|startofprev|>`, which introduces previous-text context in a prompt.
    pub fn start_of_prev(&self) -> u32 {
        self.start_of_prev
    }
    /// `<|nocaptions|>` (or `<|nospeech|>`), whose probability is the no-speech probability.
    pub fn no_speech(&self) -> u32 {
        self.no_speech
    }
    /// `<|notimestamps|>`.
    pub fn no_timestamps(&self) -> u32 {
        self.no_timestamps
    }
    /// `<|0.00|>`, the first timestamp token; every id at or above it is a timestamp.
    pub fn timestamp_begin(&self) -> u32 {
        self.timestamp_begin
    }

    /// Whether `id` is a timestamp token.
    pub fn is_timestamp(&self, id: u32) -> bool {
        id >= self.timestamp_begin
    }

    /// Seconds a timestamp token stands for, relative to its window; `None` for other ids.
    pub fn timestamp_seconds(&self, id: u32) -> Option<f32> {
        self.is_timestamp(id)
            .then(|| (id - self.timestamp_begin) as f32 * TIME_PRECISION)
    }

    /// Id of the language token `<|code|>`, e.g. `"en"` → 50259.
    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|&(_, id)| id)
    }

    /// Language codes in vocabulary order (`"en"` first for Whisper).
    pub fn language_codes(&self) -> Vec<&str> {
        self.languages.iter().map(|(c, _)| c.as_str()).collect()
    }

    /// Language code of a language token id, e.g. 50259 → `"en"`.
    pub fn language_code(&self, id: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|&&(_, i)| i == id)
            .map(|(c, _)| c.as_str())
    }

    /// The decoder prompt `<|startoftranscript|> [<|lang|>] <|task|> [<|notimestamps|>]`.
    pub fn sot_sequence(
        &self,
        language: Option<&str>,
        translate: bool,
        without_timestamps: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut seq = vec![self.sot];
        if let Some(code) = language {
            let id = self
                .language_token(code)
                .ok_or_else(|| TokenizerError::UnknownLanguage {
                    code: code.to_string(),
                })?;
            seq.push(id);
        }
        seq.push(if translate {
            self.translate
        } else {
            self.transcribe
        });
        if without_timestamps {
            seq.push(self.no_timestamps);
        }
        Ok(seq)
    }

    /// The vocabulary string of `id` (byte-level alphabet for text tokens).
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Id of a vocabulary string (its first occurrence).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Text of the text tokens among `ids` (ids >= `eot` are skipped), decoded as UTF-8
    /// with invalid sequences replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(b) = self.text_bytes.get(id as usize) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Like [`Tokenizer::decode`] but renders timestamp tokens as `<|7.60|>`.
    ///
    /// Each run of text between timestamps is decoded on its own; other special tokens
    /// are skipped.
    pub fn decode_with_timestamps(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut run: Vec<u32> = Vec::new();
        for &id in ids {
            if self.is_timestamp(id) {
                out.push_str(&self.decode(&run));
                run.clear();
                // Integer centiseconds: exact two-decimal rendering without float rounding.
                let centis = u64::from(id - self.timestamp_begin) * 2;
                out.push_str(&format!("<|{}.{:02}|>", centis / 100, centis % 100));
            } else {
                run.push(id);
            }
        }
        out.push_str(&self.decode(&run));
        out
    }

    /// Loads the BPE encoder from a `tokenizer.json`, replacing any loaded before.
    ///
    /// Fails when the file's vocabulary or added tokens disagree with `vocabulary.txt`
    /// for any id, when it does not cover every id below the first timestamp, when
    /// `tokenizers` rejects it, or when its ids would not decode back to the text (see
    /// [`TokenizerError::Unsupported`]).
    pub fn load_bpe(&mut self, path: impl AsRef<Path>) -> Result<(), TokenizerError> {
        let encoder = self.read_bpe(path.as_ref())?;
        self.bpe = Some(Bpe::Loaded(encoder));
        Ok(())
    }

    fn read_bpe(&self, path: &Path) -> Result<Encoder, TokenizerError> {
        check_size(path)?;
        let bytes = amanuensis_runtime::files::read_regular(path, MAX_TOKENIZER_JSON_BYTES)
            .map_err(|source| TokenizerError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        self.parse_bpe(&bytes, path.display().to_string())
    }

    /// Like [`Tokenizer::load_bpe`], from the text of a `tokenizer.json`.
    pub fn load_bpe_str(&mut self, json: &str) -> Result<(), TokenizerError> {
        let encoder = self.parse_bpe(json.as_bytes(), "<in-memory tokenizer.json>".to_string())?;
        self.bpe = Some(Bpe::Loaded(encoder));
        Ok(())
    }

    fn parse_bpe(&self, json: &[u8], origin: String) -> Result<Encoder, TokenizerError> {
        // Well-formed JSON that does not describe a tokenizer is a bad tokenizer, not bad JSON.
        let parse_error = |source: serde_json::Error| {
            if source.classify() == serde_json::error::Category::Data {
                TokenizerError::Invalid {
                    origin: origin.clone(),
                    what: source.to_string(),
                }
            } else {
                TokenizerError::Json {
                    origin: origin.clone(),
                    source,
                }
            }
        };
        // The settings are checked before `tokenizers` sees the file: besides giving a clear
        // error, this keeps from it inputs it does not check (a continuing-subword prefix
        // longer than a merge's right-hand token makes it slice out of bounds).
        let settings: HfSettings = serde_json::from_slice(json).map_err(parse_error)?;
        check_decodable(&settings, &origin)?;
        let hf: tokenizers::Tokenizer = serde_json::from_slice(json).map_err(parse_error)?;
        check_vocabulary(&hf, &self.tokens, self.timestamp_begin, &origin)?;
        Ok(Encoder(Arc::new(hf)))
    }

    /// Whether there is a `tokenizer.json`, loaded or to load on first use, i.e. whether
    /// [`Tokenizer::encode`] can work.
    pub fn has_bpe(&self) -> bool {
        self.bpe.is_some()
    }

    /// The encoder, built now if it was deferred (a failed build is tried again next time).
    fn encoder(&self) -> Result<Encoder, TokenizerError> {
        match self.bpe.as_ref().ok_or(TokenizerError::NoBpe)? {
            Bpe::Loaded(e) => Ok(e.clone()),
            Bpe::Deferred(d) => {
                let mut slot = d.encoder.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = slot.as_ref() {
                    return Ok(e.clone());
                }
                let e = self.read_bpe(&d.path)?;
                *slot = Some(e.clone());
                Ok(e)
            }
        }
    }

    /// Token ids of `text`, as Hugging Face `tokenizers` gives them for
    /// `encode(text, add_special_tokens=False)`.
    ///
    /// Added tokens written in the text (`<|endoftext|>`, `<|en|>`, ...) become their ids,
    /// as they do there; nothing is prepended or appended. Fails with
    /// [`TokenizerError::NoBpe`] when `tokenizer.json` was not loaded.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let Encoder(hf) = self.encoder()?;
        // `encode_fast` skips the character offsets, which nothing here reads.
        let encoding = hf
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode {
                message: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids of an initial prompt as faster-whisper builds them: `" " + prompt.strip()`
    /// encoded with [`Tokenizer::encode`] (Python's `strip` whitespace set).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, TokenizerError> {
        let trimmed = prompt.trim_matches(is_python_whitespace);
        self.encode(&format!(" {trimmed}"))
    }
}

/// Refuses a `tokenizer.json` larger than [`MAX_TOKENIZER_JSON_BYTES`] before reading it.
fn check_size(path: &Path) -> Result<(), TokenizerError> {
    let size = std::fs::metadata(path)
        .map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > MAX_TOKENIZER_JSON_BYTES {
        return Err(TokenizerError::TooLarge {
            origin: path.display().to_string(),
            size,
            max: MAX_TOKENIZER_JSON_BYTES,
        });
    }
    Ok(())
}

/// Python's `str.isspace`: Unicode White_Space plus the separators U+001C..U+001F.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A loaded `tokenizer.json`.
#[derive(Clone)]
struct Encoder(Arc<tokenizers::Tokenizer>);

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The whole vocabulary and merge table would be printed otherwise.
        f.debug_struct("Encoder")
            .field("vocab_size", &self.0.get_vocab_size(true))
            .finish_non_exhaustive()
    }
}

/// The settings of a `tokenizer.json` that decide whether its ids decode back to the text;
/// everything else is skipped.
#[derive(serde::Deserialize)]
struct HfSettings {
    #[serde(default)]
    pre_tokenizer: Option<HfTyped>,
    model: HfModelSettings,
}

#[derive(serde::Deserialize)]
struct HfTyped {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(serde::Deserialize)]
struct HfModelSettings {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
}

/// Refuses settings whose ids [`Tokenizer::decode`] would not turn back into the text:
/// decoding maps each vocabulary string through GPT-2's byte alphabet, so the encoder must
/// be a byte-level BPE that adds nothing to its tokens, and deterministic.
fn check_decodable(settings: &HfSettings, origin: &str) -> Result<(), TokenizerError> {
    let unsupported = |what: String| TokenizerError::Unsupported {
        origin: origin.to_string(),
        what,
    };
    match settings.pre_tokenizer.as_ref().map(|p| p.kind.as_deref()) {
        Some(Some("ByteLevel")) => {}
        Some(other) => {
            return Err(unsupported(format!(
                "pre_tokenizer {:?} (expected ByteLevel)",
                other.unwrap_or("without a type")
            )))
        }
        None => {
            return Err(unsupported(
                "missing pre_tokenizer (expected ByteLevel)".into(),
            ))
        }
    }
    let model = &settings.model;
    // Files without a type are read as BPE by `tokenizers` when they have merges.
    if let Some(kind) = model.kind.as_deref().filter(|&k| k != "BPE") {
        return Err(unsupported(format!("model type {kind:?} (expected BPE)")));
    }
    if model.dropout.is_some_and(|p| p > 0.0) {
        return Err(unsupported(format!("BPE dropout {:?}", model.dropout)));
    }
    for (name, value) in [
        (
            "continuing_subword_prefix",
            &model.continuing_subword_prefix,
        ),
        ("end_of_word_suffix", &model.end_of_word_suffix),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            return Err(unsupported(format!("{name} {v:?}")));
        }
    }
    Ok(())
}

/// Every id must mean the same string in `tokenizer.json` and `vocabulary.txt`; the model
/// vocabulary and the added tokens together must cover every id below the first timestamp,
/// and every byte of the byte alphabet (`tokenizers` silently drops a character it has no
/// token for when the model has no unknown token).
fn check_vocabulary(
    hf: &tokenizers::Tokenizer,
    tokens: &[String],
    timestamp_begin: u32,
    origin: &str,
) -> Result<(), TokenizerError> {
    let vocab = hf.get_vocab(true);
    let mut covered = vec![false; tokens.len()];
    // In id order, so that the error names the first disagreement.
    let mut entries: Vec<(&String, u32)> = vocab.iter().map(|(t, &id)| (t, id)).collect();
    entries.sort_unstable_by_key(|&(_, id)| id);
    for (json, id) in entries {
        let txt = tokens.get(id as usize);
        if txt != Some(json) {
            return Err(TokenizerError::VocabularyMismatch {
                origin: origin.to_string(),
                id,
                json: json.clone(),
                vocabulary: txt.cloned(),
            });
        }
        covered[id as usize] = true;
    }
    let invalid = |what: String| TokenizerError::Invalid {
        origin: origin.to_string(),
        what,
    };
    let limit = (timestamp_begin as usize).min(covered.len());
    if let Some(id) = covered[..limit].iter().position(|&c| !c) {
        return Err(invalid(format!(
            "id {id} ({:?} in vocabulary.txt) is neither in model.vocab nor in added_tokens",
            tokens[id]
        )));
    }
    for (b, c) in byte_to_char_table().iter().enumerate() {
        if !vocab.contains_key(c.encode_utf8(&mut [0; 4]) as &str) {
            return Err(invalid(format!(
                "model.vocab has no token {c:?} for byte 0x{b:02X}"
            )));
        }
    }
    Ok(())
}

/// Splits on `\n` only, keeping empty lines; a final `\n` does not start another line.
/// A trailing `\r` is removed only when every line has one (some tokens end in `\r`).
fn split_lines(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = body.split('\n').collect();
    let strip_cr = lines.iter().all(|l| l.ends_with('\r'));
    lines
        .into_iter()
        .map(|l| if strip_cr { &l[..l.len() - 1] } else { l }.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection_with_68_shifted_bytes() {
        let table = byte_to_char_table();
        let mut seen = std::collections::HashSet::new();
        for &c in &table {
            assert!(seen.insert(c), "duplicate {c:?}");
        }
        let shifted: Vec<char> = table
            .iter()
            .copied()
            .filter(|&c| c as u32 >= 0x100)
            .collect();
        assert_eq!(shifted.len(), 68);
        assert_eq!(shifted.first(), Some(&'\u{100}'));
        assert_eq!(shifted.last(), Some(&'\u{143}'));
        // Space (0x20) is the 33rd non-printable byte: 0x00..=0x1F come before it.
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[0xAD], '\u{143}');
        assert_eq!(table[b'A' as usize], 'A');
    }

    #[test]
    fn split_lines_keeps_empty_lines_and_strips_cr_only_when_uniform() {
        assert_eq!(split_lines("a\n\nb\n"), vec!["a", "", "b"]);
        assert_eq!(split_lines("a\n\nb"), vec!["a", "", "b"]);
        assert_eq!(split_lines("a\r\nb\r\n"), vec!["a", "b"]);
        assert_eq!(split_lines("a\r\nb\n"), vec!["a\r", "b"]);
        assert!(split_lines("").is_empty());
    }
}
