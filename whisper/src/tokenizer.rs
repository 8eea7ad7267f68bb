//! Whisper's tokenizer as seen from a CTranslate2 model directory: `vocabulary.txt`
//! (line *i* = token id *i*), byte-level BPE decoding, special and timestamp tokens.
//!
//! Decoding needs only `vocabulary.txt`. Encoding (for `--prompt` text) also needs the
//! directory's `tokenizer.json` (a Hugging Face tokenizers file): its merges drive the
//! byte-level BPE, and its pre-tokenizer and added-token settings are followed so that
//! [`Tokenizer::encode`] returns the ids Hugging Face `tokenizers` returns for
//! `encode(text, add_special_tokens=False)`, which is what faster-whisper uses.
//!
//! Special ids are found by looking up their strings, never hard-coded, so English-only
//! and multilingual vocabularies both work.

use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// `tokenizer.json` is not valid JSON or lacks a field.
    #[error("cannot parse tokenizer {origin}: {source}")]
    Json {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    /// `tokenizer.json` uses a setting this encoder does not implement.
    #[error("tokenizer {origin}: unsupported {what}")]
    Unsupported { origin: String, what: String },
    /// `tokenizer.json` is internally inconsistent (a merge of unknown tokens, ...).
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
    /// The pre-tokenizer's regular expression failed on the input (backtracking limit).
    #[error("pre-tokenizing text at byte offset {offset}: {message}")]
    Pretokenize { offset: usize, message: String },
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
    /// Encoder data from `tokenizer.json`; shared by clones (it is large and read-only
    /// apart from its word cache).
    bpe: Option<Arc<Bpe>>,
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
        let bytes = std::fs::read(path).map_err(io)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| TokenizerError::NotUtf8 {
            origin: origin.clone(),
            offset: e.valid_up_to(),
        })?;
        Self::parse(text, origin)
    }

    /// Loads a model directory: `vocabulary.txt`, plus `tokenizer.json` when present.
    ///
    /// Without `tokenizer.json` the tokenizer decodes but [`Tokenizer::encode`] returns
    /// [`TokenizerError::NoBpe`]; see [`Tokenizer::has_bpe`].
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        let mut tok = Self::from_vocabulary_file(dir.join(VOCABULARY_TXT))?;
        let json = dir.join(TOKENIZER_JSON);
        if json.is_file() {
            tok.load_bpe(&json)?;
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
    /// for any id, when it does not cover every id below the first timestamp, or when it
    /// uses settings [`Tokenizer::encode`] does not implement.
    pub fn load_bpe(&mut self, path: impl AsRef<Path>) -> Result<(), TokenizerError> {
        let path = path.as_ref();
        let io = |source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        };
        let origin = path.display().to_string();
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_TOKENIZER_JSON_BYTES {
            return Err(TokenizerError::TooLarge {
                origin,
                size,
                max: MAX_TOKENIZER_JSON_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        self.load_bpe_bytes(&bytes, origin)
    }

    /// Like [`Tokenizer::load_bpe`], from the text of a `tokenizer.json`.
    pub fn load_bpe_str(&mut self, json: &str) -> Result<(), TokenizerError> {
        self.load_bpe_bytes(json.as_bytes(), "<in-memory tokenizer.json>".to_string())
    }

    fn load_bpe_bytes(&mut self, json: &[u8], origin: String) -> Result<(), TokenizerError> {
        let file: HfFile = serde_json::from_slice(json).map_err(|source| TokenizerError::Json {
            origin: origin.clone(),
            source,
        })?;
        let bpe = Bpe::build(file, &self.tokens, self.timestamp_begin, &origin)?;
        self.bpe = Some(Arc::new(bpe));
        Ok(())
    }

    /// Whether `tokenizer.json` was loaded, i.e. whether [`Tokenizer::encode`] works.
    pub fn has_bpe(&self) -> bool {
        self.bpe.is_some()
    }

    /// Token ids of `text`, as Hugging Face `tokenizers` gives them for
    /// `encode(text, add_special_tokens=False)`.
    ///
    /// Added tokens written in the text (`<|endoftext|>`, `<|en|>`, ...) become their ids,
    /// as they do there; nothing is prepended or appended. Fails with
    /// [`TokenizerError::NoBpe`] when `tokenizer.json` was not loaded.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let bpe = self.bpe.as_deref().ok_or(TokenizerError::NoBpe)?;
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        bpe.encode(text, &mut out)?;
        Ok(out)
    }

    /// Ids of an initial prompt as faster-whisper builds them: `" " + prompt.strip()`
    /// encoded with [`Tokenizer::encode`] (Python's `strip` whitespace set).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, TokenizerError> {
        let trimmed = prompt.trim_matches(is_python_whitespace);
        self.encode(&format!(" {trimmed}"))
    }
}

/// Python's `str.isspace`: Unicode White_Space plus the separators U+001C..U+001F.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

// ---------------------------------------------------------------------------------------
// Byte-level BPE encoder

/// GPT-2's pre-tokenizer pattern (contractions, letter/number/other runs with an optional
/// leading space, whitespace), used by the `ByteLevel` pre-tokenizer when `use_regex`.
const GPT2_SPLIT_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Words up to this many bytes are cached (longer ones are rare and cheap to redo
/// relative to their length).
const CACHE_MAX_WORD_BYTES: usize = 64;
/// At most this many cached words; once full, new words are encoded but not stored.
const CACHE_CAPACITY: usize = 16_384;

/// Multiply-rotate hasher for the merge table and the vocabulary read from
/// `tokenizer.json`: SipHash would dominate loading and encoding time, and keys from the
/// model's own files need no protection against collision attacks.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        // Fold the well-mixed high half into the low bits the table indexes with.
        self.0 ^ (self.0 >> 29)
    }
}

type FastBuild = BuildHasherDefault<FastHasher>;
/// Ids of already encoded words, keyed by the words' bytes.
type WordCache = HashMap<Box<[u8]>, Box<[u32]>>;
/// Receives a piece of text free of added tokens, its byte offset in the input, and the
/// output ids.
type PieceFn<'a> = dyn FnMut(&str, usize, &mut Vec<u32>) -> Result<(), TokenizerError> + 'a;
type MergeMap = HashMap<u64, Merge, FastBuild>;

/// Result of merging an adjacent token pair.
#[derive(Debug, Clone, Copy)]
struct Merge {
    /// Position in the merge list; lower merges first.
    rank: u32,
    /// Id of the merged token.
    id: u32,
}

fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// Tokens matched in the raw text before pre-tokenization (Hugging Face "added tokens").
struct AddedTokens {
    matcher: aho_corasick::AhoCorasick,
    /// Id of each pattern of `matcher`.
    ids: Vec<u32>,
}

impl AddedTokens {
    fn new(
        tokens: Vec<(String, u32)>,
        origin: &str,
    ) -> Result<Option<AddedTokens>, TokenizerError> {
        if tokens.is_empty() {
            return Ok(None);
        }
        let (patterns, ids): (Vec<String>, Vec<u32>) = tokens.into_iter().unzip();
        let matcher = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| TokenizerError::Invalid {
                origin: origin.to_string(),
                what: format!("cannot index the added tokens: {e}"),
            })?;
        Ok(Some(AddedTokens { matcher, ids }))
    }
}

/// The encoding half of a `tokenizer.json`.
struct Bpe {
    /// Token id of each single byte.
    byte_ids: [u32; 256],
    /// `(left id, right id)` → merge.
    merges: MergeMap,
    /// Added tokens matched on the raw text (`normalized: false`), then those matched on
    /// the normalized text (`normalized: true`); without a normalizer the texts agree, but
    /// the two passes are kept apart as Hugging Face keeps them.
    raw_added: Option<AddedTokens>,
    normalized_added: Option<AddedTokens>,
    /// `None` when the pre-tokenizer does not split (`use_regex: false`).
    split: Option<fancy_regex::Regex>,
    add_prefix_space: bool,
    /// Encoded words by their bytes.
    cache: Mutex<WordCache>,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpe")
            .field("merges", &self.merges.len())
            .field(
                "raw_added",
                &self.raw_added.as_ref().map_or(0, |a| a.ids.len()),
            )
            .field(
                "normalized_added",
                &self.normalized_added.as_ref().map_or(0, |a| a.ids.len()),
            )
            .field("use_regex", &self.split.is_some())
            .field("add_prefix_space", &self.add_prefix_space)
            .finish()
    }
}

/// The parts of a Hugging Face `tokenizer.json` the encoder reads.
#[derive(serde::Deserialize)]
struct HfFile {
    #[serde(default)]
    added_tokens: Vec<HfAddedToken>,
    #[serde(default)]
    normalizer: Option<serde_json::Value>,
    #[serde(default)]
    pre_tokenizer: Option<serde_json::Value>,
    model: HfModel,
}

#[derive(serde::Deserialize)]
struct HfAddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "default_true")]
    normalized: bool,
}

fn default_true() -> bool {
    true
}

#[derive(serde::Deserialize)]
struct HfModel {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    ignore_merges: bool,
    vocab: HashMap<String, u32, FastBuild>,
    merges: Vec<HfMerge>,
}

/// A merge is written `"a b"` in older files and `["a", "b"]` in newer ones.
enum HfMerge {
    Joined(String),
    Pair(String, String),
}

// By hand rather than `#[serde(untagged)]`, which buffers each of the ~50k merges before
// trying the variants and doubles the parse time.
impl<'de> serde::Deserialize<'de> for HfMerge {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HfMerge, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HfMerge;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a merge: "a b" or ["a", "b"]"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HfMerge, E> {
                Ok(HfMerge::Joined(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<HfMerge, E> {
                Ok(HfMerge::Joined(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HfMerge, A::Error> {
                use serde::de::Error;
                let a = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let b = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(3, &self));
                }
                Ok(HfMerge::Pair(a, b))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Settings of a `ByteLevel` pre-tokenizer (`trim_offsets` only affects offsets).
#[derive(serde::Deserialize)]
struct HfByteLevel {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "default_true")]
    add_prefix_space: bool,
    #[serde(default = "default_true")]
    use_regex: bool,
}

impl Bpe {
    fn build(
        file: HfFile,
        tokens: &[String],
        timestamp_begin: u32,
        origin: &str,
    ) -> Result<Bpe, TokenizerError> {
        let unsupported = |what: String| TokenizerError::Unsupported {
            origin: origin.to_string(),
            what,
        };
        let invalid = |what: String| TokenizerError::Invalid {
            origin: origin.to_string(),
            what,
        };

        // Settings: anything that would change the ids and is not implemented is refused
        // rather than silently ignored.
        if let Some(n) = file.normalizer.as_ref().filter(|v| !v.is_null()) {
            return Err(unsupported(format!("normalizer {n}")));
        }
        let pre = file
            .pre_tokenizer
            .filter(|v| !v.is_null())
            .ok_or_else(|| unsupported("missing pre_tokenizer (expected ByteLevel)".into()))?;
        let pre_text = pre.to_string();
        let pre: HfByteLevel = serde_json::from_value(pre)
            .map_err(|e| unsupported(format!("pre_tokenizer {pre_text}: {e}")))?;
        if pre.kind != "ByteLevel" {
            return Err(unsupported(format!(
                "pre_tokenizer {pre_text} (expected ByteLevel)"
            )));
        }
        let model = file.model;
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
        if model.ignore_merges {
            return Err(unsupported("ignore_merges: true".into()));
        }

        // Every id must mean the same string in both files, and together the model
        // vocabulary and the added tokens must cover all non-timestamp ids.
        let mut covered = vec![false; tokens.len()];
        let mut check = |id: u32, json: &str| -> Result<(), TokenizerError> {
            let txt = tokens.get(id as usize);
            if txt.map(String::as_str) != Some(json) {
                return Err(TokenizerError::VocabularyMismatch {
                    origin: origin.to_string(),
                    id,
                    json: json.to_string(),
                    vocabulary: txt.cloned(),
                });
            }
            covered[id as usize] = true;
            Ok(())
        };
        for (token, &id) in &model.vocab {
            check(id, token)?;
        }
        for t in &file.added_tokens {
            check(t.id, &t.content)?;
        }
        let limit = (timestamp_begin as usize).min(covered.len());
        if let Some(id) = covered[..limit].iter().position(|&c| !c) {
            return Err(invalid(format!(
                "id {id} ({:?} in vocabulary.txt) is neither in model.vocab nor in added_tokens",
                tokens[id]
            )));
        }

        let table = byte_to_char_table();
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let c = table[b].to_string();
            *slot = *model.vocab.get(&c).ok_or_else(|| {
                invalid(format!("model.vocab has no token {c:?} for byte 0x{b:02X}"))
            })?;
        }

        let lookup = |s: &str, rank: usize| {
            model.vocab.get(s).copied().ok_or_else(|| {
                invalid(format!(
                    "merge {rank} uses {s:?}, which is not in model.vocab"
                ))
            })
        };
        let mut merges = MergeMap::with_capacity_and_hasher(model.merges.len(), Default::default());
        let mut joined = String::new();
        for (rank, m) in model.merges.iter().enumerate() {
            let (a, b) = match m {
                HfMerge::Joined(s) => {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => (a, b),
                        _ => return Err(invalid(format!("merge {rank} {s:?} is not two tokens"))),
                    }
                }
                HfMerge::Pair(a, b) => (a.as_str(), b.as_str()),
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let merge = Merge {
                rank: u32::try_from(rank).map_err(|_| invalid("more than 2^32 merges".into()))?,
                id: lookup(&joined, rank)?,
            };
            // A repeated pair keeps its last rank, as Hugging Face's table does.
            merges.insert(pair_key(lookup(a, rank)?, lookup(b, rank)?), merge);
        }

        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for t in file.added_tokens {
            if t.lstrip || t.rstrip || t.single_word {
                return Err(unsupported(format!(
                    "added token {:?} with lstrip/rstrip/single_word",
                    t.content
                )));
            }
            if t.content.is_empty() {
                continue;
            }
            if t.normalized {
                normalized.push((t.content, t.id));
            } else {
                raw.push((t.content, t.id));
            }
        }

        let split = if pre.use_regex {
            let re = fancy_regex::Regex::new(GPT2_SPLIT_PATTERN)
                .map_err(|e| invalid(format!("pre-tokenizer pattern does not compile: {e}")))?;
            Some(re)
        } else {
            None
        };

        Ok(Bpe {
            byte_ids,
            merges,
            raw_added: AddedTokens::new(raw, origin)?,
            normalized_added: AddedTokens::new(normalized, origin)?,
            split,
            add_prefix_space: pre.add_prefix_space,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Appends the ids of `text`: added tokens first (raw, then normalized), then each
    /// remaining piece pre-tokenized and BPE-encoded.
    fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        for_each_piece(
            self.raw_added.as_ref(),
            text,
            0,
            out,
            &mut |piece, offset, out| {
                for_each_piece(
                    self.normalized_added.as_ref(),
                    piece,
                    offset,
                    out,
                    &mut |p, o, out| self.encode_piece(p, o, out),
                )
            },
        )
    }

    /// Pre-tokenizes a piece free of added tokens and encodes each word.
    fn encode_piece(
        &self,
        piece: &str,
        offset: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let prefixed;
        let piece = if self.add_prefix_space && !piece.starts_with(' ') {
            prefixed = format!(" {piece}");
            prefixed.as_str()
        } else {
            piece
        };
        let Some(re) = &self.split else {
            self.encode_word(piece.as_bytes(), out);
            return Ok(());
        };
        let mut end = 0;
        for m in re.find_iter(piece) {
            let m = m.map_err(|e| TokenizerError::Pretokenize {
                offset: offset + end,
                message: e.to_string(),
            })?;
            // The pattern matches every character, but a gap would be its own word.
            if m.start() > end {
                self.encode_word(&piece.as_bytes()[end..m.start()], out);
            }
            self.encode_word(m.as_str().as_bytes(), out);
            end = m.end();
        }
        if end < piece.len() {
            self.encode_word(&piece.as_bytes()[end..], out);
        }
        Ok(())
    }

    /// Appends the ids of one pre-tokenized word, through the cache.
    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        match word {
            [] => return,
            &[b] => {
                out.push(self.byte_ids[usize::from(b)]);
                return;
            }
            _ => {}
        }
        let cacheable = word.len() <= CACHE_MAX_WORD_BYTES;
        if cacheable {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ids) = cache.get(word) {
                out.extend_from_slice(ids);
                return;
            }
        }
        let start = out.len();
        self.merge_word(word, out);
        if cacheable {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() < CACHE_CAPACITY {
                cache.insert(word.into(), out[start..].into());
            }
        }
    }

    /// BPE on one word: repeatedly merges the lowest-ranked adjacent pair, the leftmost
    /// one on ties, until no pair has a merge.
    ///
    /// Symbols live in a doubly linked list over the word's bytes; candidate merges wait
    /// in a min-heap keyed by (rank, position) and are dropped when stale, so a word of
    /// n bytes costs O(n log n).
    fn merge_word(&self, word: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = word.len();
        let mut id: Vec<u32> = word
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut alive = vec![true; n];

        // Entries (rank, left position, merged id), smallest first.
        let mut heap = BinaryHeap::with_capacity(n);
        let push = |heap: &mut BinaryHeap<std::cmp::Reverse<(u32, usize, u32)>>,
                    pos: usize,
                    l: u32,
                    r: u32| {
            if let Some(m) = self.merges.get(&pair_key(l, r)) {
                heap.push(std::cmp::Reverse((m.rank, pos, m.id)));
            }
        };
        for i in 0..n - 1 {
            push(&mut heap, i, id[i], id[i + 1]);
        }
        while let Some(std::cmp::Reverse((_, pos, merged))) = heap.pop() {
            let right = next[pos];
            if !alive[pos] || right == NONE {
                continue;
            }
            // Stale unless the pair now at `pos` still merges into `merged` (a pair
            // starting at a given position with a given result can only be one split).
            match self.merges.get(&pair_key(id[pos], id[right])) {
                Some(m) if m.id == merged => {}
                _ => continue,
            }
            id[pos] = merged;
            alive[right] = false;
            let after = next[right];
            next[pos] = after;
            if after != NONE {
                prev[after] = pos;
            }
            let before = prev[pos];
            if before != NONE {
                push(&mut heap, before, id[before], merged);
            }
            if after != NONE {
                push(&mut heap, pos, merged, id[after]);
            }
        }
        let mut i = 0;
        while i != NONE {
            out.push(id[i]);
            i = next[i];
        }
    }
}

/// Splits `text` around the matches of `added` (leftmost-longest): each match appends
/// its id, each non-empty piece between them goes to `f` with its byte offset in the
/// original input.
fn for_each_piece(
    added: Option<&AddedTokens>,
    text: &str,
    offset: usize,
    out: &mut Vec<u32>,
    f: &mut PieceFn<'_>,
) -> Result<(), TokenizerError> {
    let Some(added) = added else {
        return if text.is_empty() {
            Ok(())
        } else {
            f(text, offset, out)
        };
    };
    let mut end = 0;
    for m in added.matcher.find_iter(text) {
        if m.start() > end {
            f(&text[end..m.start()], offset + end, out)?;
        }
        out.push(added.ids[m.pattern().as_usize()]);
        end = m.end();
    }
    if end < text.len() {
        f(&text[end..], offset + end, out)?;
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
