//! Word error rate (WER) and the test-audio manifest.
//!
//! Normalisation: lower-case, delete apostrophes (`'` and `’`), turn every other
//! non-alphanumeric character into a space, collapse whitespace, split into words.
//! Numbers are not spelled out ("10" and "ten" differ). Errors are counted with a
//! word-level Levenshtein distance; corpus WER = total edits / total reference words.

use std::path::Path;

/// Normalises text into words for WER scoring.
pub fn normalize(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\'' || c == '\u{2019}' {
            continue;
        }
        if c.is_alphanumeric() {
            cleaned.extend(c.to_lowercase());
        } else {
            cleaned.push(' ');
        }
    }
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// Word-level Levenshtein distance between two word sequences.
pub fn edit_distance<S: AsRef<str>>(reference: &[S], hypothesis: &[S]) -> usize {
    strsim::generic_levenshtein(
        &reference.iter().map(AsRef::as_ref).collect::<Vec<&str>>(),
        &hypothesis.iter().map(AsRef::as_ref).collect::<Vec<&str>>(),
    )
}

/// Returns `(edits, reference words)` after normalising both texts.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    (edit_distance(&r, &h), r.len())
}

/// WER of one pair (edits / reference words); `None` when the reference has no words.
pub fn wer(reference: &str, hypothesis: &str) -> Option<f64> {
    let (e, n) = word_errors(reference, hypothesis);
    (n > 0).then(|| e as f64 / n as f64)
}

/// Accumulates edits and reference words over many utterances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Corpus {
    /// Total word edits (substitutions + insertions + deletions).
    pub edits: usize,
    /// Total reference words.
    pub ref_words: usize,
    /// Number of utterances added.
    pub utterances: usize,
}

impl Corpus {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one reference/hypothesis pair and returns its `(edits, reference words)`.
    pub fn add(&mut self, reference: &str, hypothesis: &str) -> (usize, usize) {
        let (e, n) = word_errors(reference, hypothesis);
        self.edits += e;
        self.ref_words += n;
        self.utterances += 1;
        (e, n)
    }

    /// Corpus WER = total edits / total reference words; `None` if there are no reference words.
    pub fn wer(&self) -> Option<f64> {
        (self.ref_words > 0).then(|| self.edits as f64 / self.ref_words as f64)
    }
}

/// One row of `manifest.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRow {
    /// File name relative to the manifest's directory.
    pub file: String,
    /// Duration in seconds.
    pub seconds: f64,
    /// Sample rate of the file, in Hz.
    pub sample_rate: u32,
    /// Where the audio comes from.
    pub source: String,
    /// Licence note.
    pub license: String,
    /// Ground-truth transcript; empty means "no speech".
    pub transcript: String,
}

impl ManifestRow {
    /// One of the public clips of up to 30 s the accuracy bars are stated on: real speech
    /// with a transcript, neither synthetic (`espeak_`) nor the long concatenation.
    pub fn is_public_clip(&self) -> bool {
        !self.transcript.is_empty()
            && self.seconds <= 30.0
            && !self.file.starts_with("espeak_")
            && !self.file.starts_with("long_")
    }
}

/// Errors reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {file}: {source}")]
    Io {
        /// The manifest path.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The header line is missing or lacks a required column.
    #[error("manifest {file}: bad header: {detail}")]
    Header {
        /// The manifest path.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A data line is malformed.
    #[error("manifest {file} line {line}: {detail}")]
    Row {
        /// The manifest path.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

const MANIFEST_COLUMNS: [&str; 6] = [
    "file",
    "seconds",
    "sample_rate",
    "source",
    "license",
    "transcript",
];

/// Parses `manifest.tsv` (tab-separated, header line, columns
/// `file, seconds, sample_rate, source, license, transcript`).
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>, ManifestError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        file: file.clone(),
        source,
    })?;
    parse_manifest(&text, &file)
}

/// Parses manifest text; `file` names it in errors.
pub fn parse_manifest(text: &str, file: &str) -> Result<Vec<ManifestRow>, ManifestError> {
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l,
            None => {
                return Err(ManifestError::Header {
                    file: file.into(),
                    detail: "file is empty".into(),
                })
            }
        }
    };
    let names: Vec<&str> = header
        .trim_start_matches('\u{feff}')
        .split('\t')
        .map(str::trim)
        .collect();
    let mut idx = [0usize; 6];
    for (slot, want) in idx.iter_mut().zip(MANIFEST_COLUMNS) {
        *slot = names
            .iter()
            .position(|n| *n == want)
            .ok_or_else(|| ManifestError::Header {
                file: file.into(),
                detail: format!("missing column `{want}` (found: {})", names.join(", ")),
            })?;
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let row_err = |detail: String| ManifestError::Row {
            file: file.into(),
            line: line_no,
            detail,
        };
        // A trailing empty transcript may lose its tab in hand-edited files.
        let get = |k: usize| -> Result<&str, ManifestError> {
            let col = idx[k];
            match fields.get(col) {
                Some(v) => Ok(v),
                None if MANIFEST_COLUMNS[k] == "transcript" => Ok(""),
                None => Err(row_err(format!("missing column `{}`", MANIFEST_COLUMNS[k]))),
            }
        };
        let seconds_s = get(1)?;
        let rate_s = get(2)?;
        let seconds = seconds_s
            .trim()
            .parse::<f64>()
            .map_err(|e| row_err(format!("seconds `{seconds_s}`: {e}")))?;
        let sample_rate = rate_s
            .trim()
            .parse::<u32>()
            .map_err(|e| row_err(format!("sample_rate `{rate_s}`: {e}")))?;
        let file_name = get(0)?.trim().to_string();
        if file_name.is_empty() {
            return Err(row_err("empty file name".into()));
        }
        rows.push(ManifestRow {
            file: file_name,
            seconds,
            sample_rate,
            source: get(3)?.to_string(),
            license: get(4)?.to_string(),
            transcript: get(5)?.trim().to_string(),
        });
    }
    Ok(rows)
}
