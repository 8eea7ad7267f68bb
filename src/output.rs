//! Transcript files: plain text, SubRip, WebVTT, verbose JSON and TSV, written atomically.
//!
//! The formats follow openai-whisper's writers (one line per segment for text, integer
//! milliseconds for TSV, subtitle cues laid out from word times by [`SubtitleLayout`]),
//! with the cue text of subtitles made safe: it never holds a blank line (which ends a
//! cue) or the `-->` timing arrow, and WebVTT escapes `&`, `<` and `>`; the only line
//! breaks are those a layout puts between a cue's lines.

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

/// Renders a transcript in `format`, subtitles one cue per segment.
pub fn render(t: &Transcript, format: OutputFormat) -> String {
    render_with(t, format, &SubtitleLayout::default())
}

/// Renders a transcript in `format`, subtitles laid out as `layout` says (other formats
/// ignore it).
pub fn render_with(t: &Transcript, format: OutputFormat, layout: &SubtitleLayout) -> String {
    match format {
        OutputFormat::Txt => render_txt(t),
        OutputFormat::Srt => render_srt(t, layout),
        OutputFormat::Vtt => render_vtt(t, layout),
        OutputFormat::Json => render_json(t),
        OutputFormat::Tsv => render_tsv(t),
    }
}

/// How SubRip and WebVTT cues are laid out from the words' times, as openai-whisper's
/// `--max_line_width`, `--max_line_count`, `--max_words_per_line` and `--highlight_words`
/// do. The default is one cue per segment, on one line. Every other setting needs word
/// timestamps; a segment without them stays one cue of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubtitleLayout {
    /// Characters on a line before the next word starts a new one (a word longer than
    /// this gets a line of its own).
    pub max_line_width: Option<usize>,
    /// Lines in a cue. With `max_line_width` too, cues no longer follow segments: a cue
    /// ends when it is full or before a word that starts over 3 s after the previous one.
    pub max_line_count: Option<usize>,
    /// Words in a cue, each segment's words taken this many at a time; no effect when
    /// both `max_line_width` and `max_line_count` are given.
    pub max_words_per_line: Option<usize>,
    /// Cues word by word: the cue's text while each word is spoken, that word underlined
    /// (`<u>…</u>`), and the plain text between words.
    pub highlight_words: bool,
}

impl SubtitleLayout {
    /// Whether the layout needs word timestamps (anything but the default).
    pub fn needs_words(&self) -> bool {
        *self != Self::default()
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
    write_output_with(t, input, output_dir, format, &SubtitleLayout::default())
}

/// [`write_output`] with subtitles laid out as `layout` says.
pub fn write_output_with(
    t: &Transcript,
    input: &Path,
    output_dir: &Path,
    format: OutputFormat,
    layout: &SubtitleLayout,
) -> Result<PathBuf, OutputError> {
    std::fs::create_dir_all(output_dir).map_err(|source| OutputError::CreateDir {
        path: output_dir.to_path_buf(),
        source,
    })?;
    let path = output_path(input, output_dir, format);
    let text = render_with(t, format, layout);
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

/// SubRip has no escapes, so the timing arrow is shortened.
fn srt_text(text: &str) -> String {
    without_arrows(one_line(text))
}

/// `s` with every `-->` shortened to `->`; repeated because replacing `-->` in `--->`
/// gives `-->` again.
fn without_arrows(mut s: String) -> String {
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
fn cues(
    t: &Transcript,
    text: fn(&str) -> String,
    layout: &SubtitleLayout,
) -> Vec<(u64, u64, String)> {
    if layout.needs_words() {
        return word_cues(t, text, layout);
    }
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

/// A word placed in a cue: its times and text, and whether it starts a new line.
struct Placed<'a> {
    start: f64,
    end: f64,
    text: &'a str,
    new_line: bool,
}

/// A cue being laid out: its words, or a segment without word times, whole.
enum LaidOut<'a> {
    Words(Vec<Placed<'a>>),
    Segment(&'a Segment),
}

/// Groups the words of `t` into cues and lines by the rules of [`SubtitleLayout`].
fn lay_out<'a>(t: &'a Transcript, layout: &SubtitleLayout) -> Vec<LaidOut<'a>> {
    // Cues follow segments unless both the width and the count bound them.
    let by_segment = layout.max_line_width.is_none() || layout.max_line_count.is_none();
    let width = layout.max_line_width.unwrap_or(usize::MAX);
    let group = layout.max_words_per_line.unwrap_or(usize::MAX).max(1);
    let mut out = Vec::new();
    let mut cue: Vec<Placed> = Vec::new();
    let (mut line_len, mut lines) = (0usize, 1usize);
    let mut last_start = f64::NEG_INFINITY;
    for s in &t.segments {
        if s.words.is_empty() {
            if !s.text.trim().is_empty() {
                if !cue.is_empty() {
                    out.push(LaidOut::Words(std::mem::take(&mut cue)));
                }
                out.push(LaidOut::Segment(s));
                (line_len, lines) = (0, 1);
            }
            continue;
        }
        for (i, w) in s.words.iter().enumerate() {
            let len = w.word.chars().count();
            let long_pause = !by_segment && w.start - last_start > 3.0;
            let group_start = by_segment && i % group == 0 && !cue.is_empty();
            last_start = w.start;
            if line_len > 0 && line_len + len <= width && !long_pause && !group_start {
                line_len += len;
                cue.push(Placed {
                    start: w.start,
                    end: w.end,
                    text: &w.word,
                    new_line: false,
                });
                continue;
            }
            // The word starts a line: of a new cue when the cue is full (or a pause or a
            // group ends it), else of the cue at hand.
            let text = w.word.trim();
            let full = layout
                .max_line_count
                .is_some_and(|n| long_pause || lines >= n);
            let new_line = if group_start || (!cue.is_empty() && full) {
                out.push(LaidOut::Words(std::mem::take(&mut cue)));
                lines = 1;
                false
            } else if line_len > 0 {
                lines += 1;
                true
            } else {
                false
            };
            line_len = text.chars().count();
            cue.push(Placed {
                start: w.start,
                end: w.end,
                text,
                new_line,
            });
        }
    }
    if !cue.is_empty() {
        out.push(LaidOut::Words(cue));
    }
    out
}

/// The text of a cue's words, each line made safe by `text`, the word at `underline`
/// (if any) in `<u>…</u>`. Empty when no word shows anything.
fn cue_text(words: &[Placed], text: fn(&str) -> String, underline: Option<usize>) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for (i, w) in words.iter().enumerate() {
        let body = text(w.text);
        if body.is_empty() {
            continue;
        }
        if w.new_line && !lines.last().is_some_and(String::is_empty) {
            lines.push(String::new());
        }
        let line = lines.last_mut().expect("at least one line");
        // A word that the model wrote with a leading space keeps it inside its line.
        if !line.is_empty() && w.text.starts_with(char::is_whitespace) {
            line.push(' ');
        }
        if underline == Some(i) {
            let _ = write!(line, "<u>{body}</u>");
        } else {
            line.push_str(&body);
        }
    }
    // Words joined without a space could form the SubRip timing arrow again.
    let joined: Vec<String> = lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(without_arrows)
        .collect();
    joined.join("\n")
}

/// The cues of [`cues`] laid out from word times.
fn word_cues(
    t: &Transcript,
    text: fn(&str) -> String,
    layout: &SubtitleLayout,
) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    for cue in lay_out(t, layout) {
        let words = match cue {
            LaidOut::Segment(s) => {
                let (a, b) = segment_ms(s);
                out.push((a, b, text(&s.text)));
                continue;
            }
            LaidOut::Words(words) => words,
        };
        let plain = cue_text(&words, text, None);
        if plain.is_empty() {
            continue;
        }
        let start = to_ms(words[0].start);
        let end = to_ms(words[words.len() - 1].end).max(start);
        if !layout.highlight_words {
            out.push((start, end, plain));
            continue;
        }
        let mut shown = start;
        for (i, w) in words.iter().enumerate() {
            if text(w.text).is_empty() {
                continue;
            }
            let a = to_ms(w.start).max(shown);
            let b = to_ms(w.end).max(a);
            if a > shown {
                out.push((shown, a, plain.clone()));
            }
            out.push((a, b, cue_text(&words, text, Some(i))));
            shown = b;
        }
    }
    out
}

fn render_srt(t: &Transcript, layout: &SubtitleLayout) -> String {
    let mut out = String::new();
    for (i, (a, b, text)) in cues(t, srt_text, layout).into_iter().enumerate() {
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

fn render_vtt(t: &Transcript, layout: &SubtitleLayout) -> String {
    let mut out = String::from("WEBVTT\n");
    for (a, b, text) in cues(t, vtt_text, layout) {
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
