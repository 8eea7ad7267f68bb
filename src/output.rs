//! Transcript files: plain text, SubRip, WebVTT, verbose JSON and TSV, written atomically.
//!
//! The formats follow openai-whisper's writers (one line per segment for text, integer
//! milliseconds for TSV), with the cue text of subtitles made safe: it never holds a line
//! break (a blank line ends a cue) or the `-->` timing arrow, and WebVTT escapes `&`, `<`
//! and `>`.

use amanuensis_whisper::transcript::{Segment, Transcript};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A transcript file format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Plain text, one segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// The transcript with all segment fields, pretty-printed.
    Json,
    /// Tab-separated `start`, `end` (integer milliseconds) and `text`.
    Tsv,
}

impl OutputFormat {
    /// Every format, in a stable order (for writing all of them).
    pub const ALL: [OutputFormat; 5] = [
        OutputFormat::Txt,
        OutputFormat::Srt,
        OutputFormat::Vtt,
        OutputFormat::Json,
        OutputFormat::Tsv,
    ];

    /// The file extension of the format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Txt => "txt",
            OutputFormat::Srt => "srt",
            OutputFormat::Vtt => "vtt",
            OutputFormat::Json => "json",
            OutputFormat::Tsv => "tsv",
        }
    }
}

/// Why a transcript file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output directory could not be created.
    #[error("cannot create output directory {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The temporary file next to the target could not be created or written.
    #[error("cannot write {} (through temporary file {}): {source}", .path.display(), .temp.display())]
    Write {
        path: PathBuf,
        temp: PathBuf,
        source: std::io::Error,
    },
    /// The finished temporary file could not be renamed onto the target.
    #[error("cannot move temporary file {} into place as {}: {source}", .temp.display(), .path.display())]
    Rename {
        path: PathBuf,
        temp: PathBuf,
        source: std::io::Error,
    },
}

/// Renders a transcript in `format`.
pub fn render(t: &Transcript, format: OutputFormat) -> String {
    match format {
        OutputFormat::Txt => render_txt(t),
        OutputFormat::Srt => render_srt(t),
        OutputFormat::Vtt => render_vtt(t),
        OutputFormat::Json => render_json(t),
        OutputFormat::Tsv => render_tsv(t),
    }
}

/// `<output_dir>/<stem of input>.<ext>`; standard input (`-`) is named `stdin`.
pub fn output_path(input: &Path, output_dir: &Path, format: OutputFormat) -> PathBuf {
    let stem = if input == Path::new("-") {
        "stdin".into()
    } else {
        // Paths such as `/` or `..` have no stem; they still need a file name.
        input
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_else(|| "transcript".into())
    };
    let mut name = stem;
    name.push(".");
    name.push(format.extension());
    output_dir.join(name)
}

/// Writes the transcript in `format` to [`output_path`], creating `output_dir` if needed.
/// The text goes to a temporary file in the same directory that is then renamed over the
/// target, so an interrupted run leaves either the old file or the complete new one.
pub fn write_output(
    t: &Transcript,
    input: &Path,
    output_dir: &Path,
    format: OutputFormat,
) -> Result<PathBuf, OutputError> {
    std::fs::create_dir_all(output_dir).map_err(|source| OutputError::CreateDir {
        path: output_dir.to_path_buf(),
        source,
    })?;
    let path = output_path(input, output_dir, format);
    let text = render(t, format);
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`,
/// so a reader never sees a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let write_err = |temp: &Path, source| OutputError::Write {
        path: path.to_path_buf(),
        temp: temp.to_path_buf(),
        source,
    };
    // A uniquely named file beside the target (the same file system, so the rename is
    // atomic); it is removed if anything fails before it is persisted.
    let mut temp = tempfile::Builder::new()
        .prefix(".amanuensis-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| write_err(dir, e))?;
    // On disk before the rename, so a crash cannot leave an empty file under the name.
    if let Err(e) = temp
        .write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
    {
        return Err(write_err(temp.path(), e));
    }
    temp.persist(path).map_err(|e| OutputError::Rename {
        path: path.to_path_buf(),
        temp: e.file.path().to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Seconds → whole milliseconds, rounded (7.6 s is 7600 ms, not 7599) and never negative.
fn to_ms(seconds: f64) -> u64 {
    if seconds.is_nan() || seconds <= 0.0 {
        return 0;
    }
    // `as` saturates for values beyond u64 (and for +inf).
    (seconds * 1000.0).round() as u64
}

/// A segment's start and end in milliseconds, with end ≥ start.
fn segment_ms(s: &Segment) -> (u64, u64) {
    let start = to_ms(s.start);
    (start, to_ms(s.end).max(start))
}

/// `HH:MM:SS<sep>mmm`; the hours take more digits when they pass 99.
fn timestamp(ms: u64, sep: char) -> String {
    let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{f:03}")
}

/// The text on one line: line breaks and tabs become spaces, runs of spaces collapse to
/// one, and the ends are trimmed.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c {
            '\n' | '\r' | '\t' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => ' ',
            c => c,
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

fn render_txt(t: &Transcript) -> String {
    let mut out = String::new();
    for s in &t.segments {
        out.push_str(&one_line(&s.text));
        out.push('\n');
    }
    out
}

/// SubRip has no escapes, so the timing arrow is shortened; repeated because replacing
/// `-->` in `--->` gives `-->` again.
fn srt_text(text: &str) -> String {
    let mut s = one_line(text);
    while s.contains("-->") {
        s = s.replace("-->", "->");
    }
    s
}

/// WebVTT cue text with its three special characters escaped (which also rules out `-->`).
fn vtt_text(text: &str) -> String {
    let s = one_line(text);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The cues of a subtitle format: (start ms, end ms, text). Segments with no text are left
/// out: a cue that shows nothing only confuses players.
fn cues(t: &Transcript, text: fn(&str) -> String) -> Vec<(u64, u64, String)> {
    t.segments
        .iter()
        .filter_map(|s| {
            let txt = text(&s.text);
            if txt.is_empty() {
                return None;
            }
            let (a, b) = segment_ms(s);
            Some((a, b, txt))
        })
        .collect()
}

fn render_srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, (a, b, text)) in cues(t, srt_text).into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{}\n{} --> {}\n{text}\n",
            i + 1,
            timestamp(a, ','),
            timestamp(b, ',')
        );
    }
    out
}

fn render_vtt(t: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n");
    for (a, b, text) in cues(t, vtt_text) {
        let _ = write!(
            out,
            "\n{} --> {}\n{text}\n",
            timestamp(a, '.'),
            timestamp(b, '.')
        );
    }
    out
}

fn render_json(t: &Transcript) -> String {
    // The transcript types hold only strings, numbers and sequences (non-finite numbers
    // become `null`), so serialization cannot fail; the fallback is never reached.
    let mut s = serde_json::to_string_pretty(t)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    s.push('\n');
    s
}

fn render_tsv(t: &Transcript) -> String {
    let mut out = String::from("start\tend\ttext\n");
    for s in &t.segments {
        let (a, b) = segment_ms(s);
        let _ = writeln!(out, "{a}\t{b}\t{}", one_line(&s.text));
    }
    out
}
