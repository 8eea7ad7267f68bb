//! Transcript files: exact renderings of hand-built and real transcripts, SubRip and WebVTT
//! read back by an independent parser (`rsubs-lib`), JSON and TSV read back, and the file
//! naming and atomic writing.

use crate::common;

use amanuensis::audio::load_audio;
use amanuensis::output::{
    output_path, render, render_with, write_output, OutputError, OutputFormat, SubtitleLayout,
};
use amanuensis::{Segment, Task, TranscribeOptions, Transcript, Word};
use clap::ValueEnum;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn seg(id: usize, start: f64, end: f64, text: &str) -> Segment {
    Segment {
        id,
        seek: 0,
        start,
        end,
        text: text.into(),
        tokens: vec![50364, 400 + id as u32, 50414],
        avg_logprob: -0.2 - 0.013 * id as f64,
        no_speech_prob: 0.0123 + id as f32 * 0.001,
        compression_ratio: 1.25 + id as f64 * 0.1,
        temperature: 0.0,
        words: Vec::new(),
    }
}

fn transcript(segments: Vec<Segment>) -> Transcript {
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<String>()
        .trim()
        .to_string();
    Transcript {
        language: "en".into(),
        language_probability: None,
        task: Task::Transcribe,
        duration: 3727.5,
        segments,
        text,
        stopped_at: None,
        timings: Default::default(),
    }
}

/// Segments that exercise every rule: f32-derived times (7.6 as f32 is 7.599999904…),
/// markup and `&`, line breaks and a tab, the timing arrow, unicode, negative times, an end
/// before its start, an empty text, a multi-hour time and carries into minutes and hours.
fn tricky() -> Transcript {
    let mut segs = vec![
        seg(
            0,
            0.0,
            7.6f32 as f64,
            " And so my fellow <b>Americans</b> & friends",
        ),
        seg(
            1,
            7.6f32 as f64,
            10.6f32 as f64,
            " line one\nline two\r\n\tafter a tab",
        ),
        seg(2, 3723.456, 3725.5, " a --> b ---> c"),
        seg(3, 3725.5, 3727.0, " Ça va ? 日本語の字幕 🎤 naïve — «ok»"),
        seg(4, -0.5, -0.2, " negative"),
        seg(5, 20.0, 19.5, " ends before it starts"),
        seg(6, 30.0, 31.0, "  \n\t "),
        seg(7, 59.9996, 3599.9999, " carry"),
    ];
    segs[3].words = vec![
        Word {
            start: 3725.5,
            end: 3725.9,
            word: " Ça".into(),
            probability: 0.75,
        },
        Word {
            start: 3725.9,
            end: 3726.2,
            word: " va".into(),
            probability: 0.5,
        },
    ];
    let mut t = transcript(segs);
    t.language_probability = Some(0.96875);
    t
}

fn empty() -> Transcript {
    let mut t = transcript(Vec::new());
    t.duration = 0.0;
    t
}

/// The cues of [`tricky`] as a reader must see them: (start ms, end ms, SubRip text,
/// original text on one line). The empty segment 6 has no cue.
fn tricky_cues() -> Vec<(u64, u64, &'static str, &'static str)> {
    vec![
        (
            0,
            7600,
            "And so my fellow <b>Americans</b> & friends",
            "And so my fellow <b>Americans</b> & friends",
        ),
        (
            7600,
            10600,
            "line one line two after a tab",
            "line one line two after a tab",
        ),
        (3_723_456, 3_725_500, "a -> b -> c", "a --> b ---> c"),
        (
            3_725_500,
            3_727_000,
            "Ça va ? 日本語の字幕 🎤 naïve — «ok»",
            "Ça va ? 日本語の字幕 🎤 naïve — «ok»",
        ),
        (0, 0, "negative", "negative"),
        (
            20_000,
            20_000,
            "ends before it starts",
            "ends before it starts",
        ),
        (60_000, 3_600_000, "carry", "carry"),
    ]
}

const TRICKY_SRT: &str = "1
00:00:00,000 --> 00:00:07,600
And so my fellow <b>Americans</b> & friends

2
00:00:07,600 --> 00:00:10,600
line one line two after a tab

3
01:02:03,456 --> 01:02:05,500
a -> b -> c

4
01:02:05,500 --> 01:02:07,000
Ça va ? 日本語の字幕 🎤 naïve — «ok»

5
00:00:00,000 --> 00:00:00,000
negative

6
00:00:20,000 --> 00:00:20,000
ends before it starts

7
00:01:00,000 --> 01:00:00,000
carry
";

const TRICKY_VTT: &str = "WEBVTT

00:00:00.000 --> 00:00:07.600
And so my fellow &lt;b&gt;Americans&lt;/b&gt; &amp; friends

00:00:07.600 --> 00:00:10.600
line one line two after a tab

01:02:03.456 --> 01:02:05.500
a --&gt; b ---&gt; c

01:02:05.500 --> 01:02:07.000
Ça va ? 日本語の字幕 🎤 naïve — «ok»

00:00:00.000 --> 00:00:00.000
negative

00:00:20.000 --> 00:00:20.000
ends before it starts

00:01:00.000 --> 01:00:00.000
carry
";

const TRICKY_TSV: &str = "start\tend\ttext
0\t7600\tAnd so my fellow <b>Americans</b> & friends
7600\t10600\tline one line two after a tab
3723456\t3725500\ta --> b ---> c
3725500\t3727000\tÇa va ? 日本語の字幕 🎤 naïve — «ok»
0\t0\tnegative
20000\t20000\tends before it starts
30000\t31000\t
60000\t3600000\tcarry
";

const TRICKY_TXT: &str = "And so my fellow <b>Americans</b> & friends
line one line two after a tab
a --> b ---> c
Ça va ? 日本語の字幕 🎤 naïve — «ok»
negative
ends before it starts

carry
";

/// Milliseconds since midnight of the parser's time of day (its crate need not be named).
macro_rules! time_ms {
    ($t:expr) => {{
        let t = $t;
        t.hour() as u64 * 3_600_000
            + t.minute() as u64 * 60_000
            + t.second() as u64 * 1000
            + t.millisecond() as u64
    }};
}

/// Cues of a SubRip text read by `rsubs-lib`: (sequence number, start ms, end ms, text).
pub(crate) fn parse_srt(s: &str) -> Vec<(u32, u64, u64, String)> {
    let srt = rsubs_lib::SRT::parse(s)
        .unwrap_or_else(|e| panic!("SubRip output does not parse: {e:?}\n{s}"));
    srt.lines
        .iter()
        .map(|l| {
            (
                l.sequence_number,
                time_ms!(l.start),
                time_ms!(l.end),
                // The parser joins a cue's lines with CRLF.
                l.text.replace("\r\n", "\n"),
            )
        })
        .collect()
}

/// Cues of a WebVTT text read by `rsubs-lib`: (start ms, end ms, text with the character
/// references resolved).
fn parse_vtt(s: &str) -> Vec<(u64, u64, String)> {
    let vtt = rsubs_lib::VTT::parse(s)
        .unwrap_or_else(|e| panic!("WebVTT output does not parse: {e:?}\n{s}"));
    assert!(
        vtt.styles.is_empty() && vtt.regions.is_empty(),
        "no style or region blocks expected"
    );
    vtt.lines
        .iter()
        .map(|l| {
            assert!(
                l.settings.is_empty(),
                "cue settings appeared: {:?}",
                l.settings
            );
            assert_eq!(l.identifier, None, "cue identifier appeared");
            let text = l
                .text
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            (time_ms!(l.start), time_ms!(l.end), text)
        })
        .collect()
}

#[test]
fn extensions_and_cli_names() {
    let expected = [
        (OutputFormat::Txt, "txt"),
        (OutputFormat::Srt, "srt"),
        (OutputFormat::Vtt, "vtt"),
        (OutputFormat::Json, "json"),
        (OutputFormat::Tsv, "tsv"),
    ];
    assert_eq!(
        OutputFormat::ALL.to_vec(),
        expected.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    for (f, ext) in expected {
        assert_eq!(f.extension(), ext);
        // The command-line value is the extension.
        assert_eq!(OutputFormat::from_str(ext, false), Ok(f));
    }
    assert!(OutputFormat::from_str("docx", false).is_err());
}

#[test]
fn the_parser_is_strict() {
    // The checks below mean something only if malformed files are rejected.
    assert!(
        rsubs_lib::SRT::parse("1\n00:00:01.000 --> 00:00:02,000\nx\n").is_err(),
        "SubRip with '.' accepted"
    );
    assert!(
        rsubs_lib::SRT::parse("x\n00:00:01,000 --> 00:00:02,000\nx\n").is_err(),
        "SubRip without number accepted"
    );
    assert!(
        rsubs_lib::VTT::parse("00:00:01.000 --> 00:00:02.000\nx\n").is_err(),
        "WebVTT without header accepted"
    );
    assert!(
        rsubs_lib::VTT::parse("WEBVTT\n\n00:00:01,000 --> 00:00:02.000\nx\n").is_err(),
        "WebVTT with ',' accepted"
    );
}

#[test]
fn srt_exact_and_parsed() {
    let t = tricky();
    let srt = render(&t, OutputFormat::Srt);
    assert_eq!(srt, TRICKY_SRT);
    let cues = parse_srt(&srt);
    let expected = tricky_cues();
    assert_eq!(cues.len(), expected.len(), "{cues:?}");
    for (i, (cue, exp)) in cues.iter().zip(&expected).enumerate() {
        assert_eq!(
            cue,
            &(i as u32 + 1, exp.0, exp.1, exp.2.to_string()),
            "cue {}",
            i + 1
        );
    }
}

#[test]
fn vtt_exact_and_parsed() {
    let t = tricky();
    let vtt = render(&t, OutputFormat::Vtt);
    assert_eq!(vtt, TRICKY_VTT);
    // Escaping keeps the text intact for a reader, arrows included.
    let cues = parse_vtt(&vtt);
    let expected: Vec<_> = tricky_cues()
        .into_iter()
        .map(|c| (c.0, c.1, c.3.to_string()))
        .collect();
    assert_eq!(cues, expected);
}

#[test]
fn subtitle_text_never_breaks_a_cue() {
    // Whatever the text, each cue is exactly three lines and only the timing line has
    // the arrow.
    let nasty = transcript(vec![
        seg(0, 1.0, 2.0, "a\n\nb\r\n\r\nc --> d -->> e ----> f"),
        seg(1, 2.0, 3.0, "\u{2028}x\u{2029}y\u{85}z\u{0b}w\u{0c}v"),
    ]);
    let srt = render(&nasty, OutputFormat::Srt);
    assert_eq!(srt, "1\n00:00:01,000 --> 00:00:02,000\na b c -> d ->> e -> f\n\n2\n00:00:02,000 --> 00:00:03,000\nx y z w v\n");
    let vtt = render(&nasty, OutputFormat::Vtt);
    assert_eq!(
        vtt,
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\na b c --&gt; d --&gt;&gt; e ----&gt; f\n\n00:00:02.000 --> 00:00:03.000\nx y z w v\n"
    );
    assert_eq!(parse_srt(&srt).len(), 2);
    assert_eq!(parse_vtt(&vtt)[0].2, "a b c --> d -->> e ----> f");
}

#[test]
fn hours_past_99() {
    let t = transcript(vec![
        seg(0, 360_001.5, 1_000_000.0, " long"),
        seg(1, 1_000_000.0, 1e12, " longer"),
    ]);
    assert_eq!(
        render(&t, OutputFormat::Srt),
        "1\n100:00:01,500 --> 277:46:40,000\nlong\n\n2\n277:46:40,000 --> 277777777:46:40,000\nlonger\n"
    );
    assert_eq!(
        render(&t, OutputFormat::Vtt),
        "WEBVTT\n\n100:00:01.500 --> 277:46:40.000\nlong\n\n277:46:40.000 --> 277777777:46:40.000\nlonger\n"
    );
    assert_eq!(
        render(&t, OutputFormat::Tsv),
        "start\tend\ttext\n360001500\t1000000000\tlong\n1000000000\t1000000000000000\tlonger\n"
    );
}

#[test]
fn non_finite_times_are_clamped() {
    let t = transcript(vec![seg(0, f64::NAN, f64::NEG_INFINITY, " nan")]);
    assert_eq!(
        render(&t, OutputFormat::Srt),
        "1\n00:00:00,000 --> 00:00:00,000\nnan\n"
    );
    assert_eq!(
        render(&t, OutputFormat::Tsv),
        "start\tend\ttext\n0\t0\tnan\n"
    );
}

#[test]
fn txt_one_trimmed_segment_per_line() {
    assert_eq!(render(&tricky(), OutputFormat::Txt), TRICKY_TXT);
    assert_eq!(render(&empty(), OutputFormat::Txt), "");
}

#[test]
fn tsv_reads_back() {
    let t = tricky();
    let tsv = render(&t, OutputFormat::Tsv);
    assert_eq!(tsv, TRICKY_TSV);
    let mut lines = tsv.lines();
    assert_eq!(lines.next(), Some("start\tend\ttext"));
    let rows: Vec<(u64, u64, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "row {l:?}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows.len(),
        t.segments.len(),
        "one row per segment, the empty one included"
    );
    // The rows are the cues plus the empty segment 6, in segment order.
    let mut expected: Vec<(u64, u64, String)> = tricky_cues()
        .into_iter()
        .map(|c| (c.0, c.1, c.3.to_string()))
        .collect();
    expected.insert(6, (30_000, 31_000, String::new()));
    assert_eq!(rows, expected);
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JsonTranscript {
    text: String,
    language: String,
    #[serde(default)]
    language_probability: Option<f32>,
    task: String,
    duration: f32,
    segments: Vec<JsonSegment>,
}

#[derive(Deserialize, Debug)]
struct JsonSegment {
    id: usize,
    seek: usize,
    start: f64,
    end: f64,
    text: String,
    tokens: Vec<u32>,
    avg_logprob: f64,
    no_speech_prob: f32,
    compression_ratio: f64,
    temperature: f32,
    #[serde(default)]
    words: Vec<JsonWord>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JsonWord {
    start: f64,
    end: f64,
    word: String,
    probability: f32,
}

/// Equal to within one unit in the last place: serde_json's default float parser is not
/// guaranteed to be correctly rounded.
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
}

#[test]
fn json_round_trips() {
    for t in [tricky(), empty()] {
        let json = render(&t, OutputFormat::Json);
        assert!(json.starts_with("{\n  \""), "pretty-printed: {json:.40}");
        assert!(json.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in ["text", "language", "duration", "segments"] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        let back: JsonTranscript = serde_json::from_str(&json).unwrap();
        assert_eq!(back.text, t.text);
        assert_eq!(back.language, t.language);
        assert_eq!(back.language_probability, t.language_probability);
        assert_eq!(back.task, "transcribe");
        assert_eq!(back.duration, t.duration);
        assert_eq!(back.segments.len(), t.segments.len());
        for (b, s) in back.segments.iter().zip(&t.segments) {
            let v = &value["segments"][b.id];
            for key in [
                "id",
                "start",
                "end",
                "text",
                "tokens",
                "avg_logprob",
                "no_speech_prob",
                "compression_ratio",
                "temperature",
            ] {
                assert!(v.get(key).is_some(), "segment {} lacks {key}", s.id);
            }
            // Words appear only when there are some.
            assert_eq!(
                v.get("words").is_some(),
                !s.words.is_empty(),
                "segment {}",
                s.id
            );
            assert_eq!(
                (b.id, b.seek, &b.text, &b.tokens),
                (s.id, s.seek, &s.text, &s.tokens)
            );
            assert!(
                close(b.start, s.start) && close(b.end, s.end),
                "segment {}: {b:?}",
                s.id
            );
            assert!(
                close(b.avg_logprob, s.avg_logprob)
                    && close(b.compression_ratio, s.compression_ratio)
            );
            assert_eq!(
                (b.no_speech_prob, b.temperature),
                (s.no_speech_prob, s.temperature)
            );
            assert_eq!(b.words.len(), s.words.len());
            for (bw, w) in b.words.iter().zip(&s.words) {
                assert_eq!((&bw.word, bw.probability), (&w.word, w.probability));
                assert!(close(bw.start, w.start) && close(bw.end, w.end));
            }
        }
    }
}

#[test]
fn empty_transcript() {
    let t = empty();
    assert_eq!(render(&t, OutputFormat::Srt), "");
    assert_eq!(render(&t, OutputFormat::Vtt), "WEBVTT\n");
    assert_eq!(render(&t, OutputFormat::Tsv), "start\tend\ttext\n");
    assert!(parse_srt("").is_empty());
    assert!(parse_vtt(&render(&t, OutputFormat::Vtt)).is_empty());
}

#[test]
fn output_paths() {
    let out = Path::new("out");
    assert_eq!(
        output_path(Path::new("talk.mp3"), out, OutputFormat::Srt),
        PathBuf::from("out/talk.srt")
    );
    assert_eq!(
        output_path(Path::new("/data/in/talk.v2.wav"), out, OutputFormat::Json),
        PathBuf::from("out/talk.v2.json")
    );
    assert_eq!(
        output_path(
            Path::new("rec/noext"),
            Path::new("/abs/dir"),
            OutputFormat::Txt
        ),
        PathBuf::from("/abs/dir/noext.txt")
    );
    assert_eq!(
        output_path(Path::new("-"), out, OutputFormat::Vtt),
        PathBuf::from("out/stdin.vtt")
    );
    assert_eq!(
        output_path(Path::new("./-"), out, OutputFormat::Tsv),
        PathBuf::from("out/-.tsv"),
        "only a bare '-' is stdin"
    );
    assert_eq!(
        output_path(Path::new("/"), out, OutputFormat::Txt),
        PathBuf::from("out/transcript.txt")
    );
    assert_eq!(
        output_path(Path::new("talk.mp3"), Path::new(""), OutputFormat::Srt),
        PathBuf::from("talk.srt")
    );
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("output_formats")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_output_creates_dirs_and_replaces_atomically() {
    let root = scratch("write");
    let dir = root.join("a/b");
    let t = tricky();
    for f in OutputFormat::ALL {
        let p = write_output(&t, Path::new("in/talk.wav"), &dir, f).unwrap();
        assert_eq!(p, dir.join(format!("talk.{}", f.extension())));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), render(&t, f));
    }
    // Nothing but the five files: no temporary file is left behind.
    assert_eq!(
        entries(&dir),
        ["talk.json", "talk.srt", "talk.tsv", "talk.txt", "talk.vtt"]
    );
    // An existing file is replaced whole.
    std::fs::write(dir.join("talk.srt"), "x".repeat(10_000)).unwrap();
    let p = write_output(&empty(), Path::new("talk.wav"), &dir, OutputFormat::Srt).unwrap();
    assert_eq!(std::fs::read_to_string(p).unwrap(), "");
    assert_eq!(entries(&dir).len(), 5);
    let p = write_output(&t, Path::new("-"), &dir, OutputFormat::Vtt).unwrap();
    assert_eq!(p, dir.join("stdin.vtt"));
    assert_eq!(std::fs::read_to_string(p).unwrap(), TRICKY_VTT);
}

#[test]
fn write_output_errors_name_the_path() {
    let root = scratch("errors");
    let file = root.join("not-a-dir");
    std::fs::write(&file, "occupied").unwrap();
    for dir in [file.clone(), file.join("sub")] {
        let err =
            write_output(&tricky(), Path::new("talk.wav"), &dir, OutputFormat::Srt).unwrap_err();
        assert!(
            matches!(&err, OutputError::CreateDir { path, .. } if path == &dir),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&dir.display().to_string()),
            "message does not name {}: {msg}",
            dir.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "occupied");

    // A directory where the file should go: the rename fails, the temporary file goes.
    let out = root.join("out");
    std::fs::create_dir_all(out.join("talk.srt")).unwrap();
    let err = write_output(&tricky(), Path::new("talk.wav"), &out, OutputFormat::Srt).unwrap_err();
    assert!(
        matches!(&err, OutputError::Rename { path, .. } if path == &out.join("talk.srt")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&out.join("talk.srt").display().to_string()),
        "{err}"
    );
    assert_eq!(entries(&out), ["talk.srt"]);
}

const JFK_SRT: &str = "1
00:00:00,000 --> 00:00:07,600
And so my fellow Americans ask not what your country can do for you,

2
00:00:07,600 --> 00:00:10,600
ask what you can do for your country.
";

const JFK_VTT: &str = "WEBVTT

00:00:00.000 --> 00:00:07.600
And so my fellow Americans ask not what your country can do for you,

00:00:07.600 --> 00:00:10.600
ask what you can do for your country.
";

#[test]
fn jfk_subtitles_from_the_model() {
    let mut model = common::load_model();
    let pcm = load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    // Greedy decoding, whose timestamps are the reference's (FIXTURES.md).
    let mut opts = TranscribeOptions {
        without_timestamps: false,
        refine_timestamps: false,
        ..Default::default()
    };
    opts.decoding.beam.beam_size = 1;
    let t = model.transcribe_pcm(&pcm, &opts).unwrap();
    assert_eq!(render(&t, OutputFormat::Srt), JFK_SRT);
    assert_eq!(render(&t, OutputFormat::Vtt), JFK_VTT);
    assert_eq!(
        render(&t, OutputFormat::Txt),
        "And so my fellow Americans ask not what your country can do for you,\nask what you can do for your country.\n"
    );
    assert_eq!(
        render(&t, OutputFormat::Tsv),
        "start\tend\ttext\n0\t7600\tAnd so my fellow Americans ask not what your country can do for you,\n7600\t10600\task what you can do for your country.\n"
    );
    // The parsed cues are the segments.
    let srt = parse_srt(JFK_SRT);
    let vtt = parse_vtt(JFK_VTT);
    assert_eq!(srt.len(), t.segments.len());
    assert_eq!(vtt.len(), t.segments.len());
    for (i, s) in t.segments.iter().enumerate() {
        let (a, b) = (
            (s.start * 1000.0).round() as u64,
            (s.end * 1000.0).round() as u64,
        );
        assert_eq!(srt[i], (i as u32 + 1, a, b, s.text.trim().to_string()));
        assert_eq!(vtt[i], (a, b, s.text.trim().to_string()));
    }
}

/// A segment timed word by word: `(word with its leading space, start, end)`.
fn worded(id: usize, words: &[(&str, f64, f64)]) -> Segment {
    let text: String = words.iter().map(|w| w.0).collect();
    let mut s = seg(id, words[0].1, words[words.len() - 1].2, &text);
    s.words = words
        .iter()
        .map(|&(word, start, end)| Word {
            start,
            end,
            word: word.into(),
            probability: 0.9,
        })
        .collect();
    s
}

/// Two segments of a sentence, then another sentence 4.1 s after it.
fn fox() -> Transcript {
    transcript(vec![
        worded(
            0,
            &[
                (" The", 0.0, 0.3),
                (" quick", 0.3, 0.6),
                (" brown", 0.6, 0.9),
                (" fox", 0.9, 1.2),
                (" jumps", 1.2, 1.5),
            ],
        ),
        worded(
            1,
            &[
                (" over", 1.5, 1.8),
                (" the", 1.8, 2.0),
                (" lazy", 2.0, 2.4),
                (" dog.", 2.4, 2.9),
            ],
        ),
        worded(
            2,
            &[
                (" Then", 7.0, 7.3),
                (" it", 7.3, 7.4),
                (" slept.", 7.4, 8.0),
            ],
        ),
    ])
}

fn layout(width: Option<usize>, count: Option<usize>, words: Option<usize>) -> SubtitleLayout {
    SubtitleLayout {
        max_line_width: width,
        max_line_count: count,
        max_words_per_line: words,
        highlight_words: false,
    }
}

#[test]
fn subtitle_lines_fill_to_the_width_and_cues_to_the_line_count() {
    // Width and count together: cues run across segments, a line takes words while they
    // fit in 16 characters, a cue ends after 2 lines or before a word 4.6 s after the
    // previous one's start.
    let got = render_with(&fox(), OutputFormat::Srt, &layout(Some(16), Some(2), None));
    assert_eq!(
        got,
        "1\n00:00:00,000 --> 00:00:01,800\nThe quick brown\nfox jumps over\n\n\
         2\n00:00:01,800 --> 00:00:02,900\nthe lazy dog.\n\n\
         3\n00:00:07,000 --> 00:00:08,000\nThen it slept.\n"
    );
    let cues = parse_srt(&got);
    assert_eq!(cues.len(), 3);
    assert_eq!(cues[0].3, "The quick brown\nfox jumps over");
    // WebVTT: the same cues.
    let vtt = render_with(&fox(), OutputFormat::Vtt, &layout(Some(16), Some(2), None));
    let parsed = parse_vtt(&vtt);
    assert_eq!(
        parsed,
        vec![
            (0, 1800, "The quick brown\nfox jumps over".to_string()),
            (1800, 2900, "the lazy dog.".to_string()),
            (7000, 8000, "Then it slept.".to_string()),
        ]
    );
}

#[test]
fn subtitle_lines_without_a_count_keep_one_cue_per_segment() {
    let got = render_with(&fox(), OutputFormat::Srt, &layout(Some(16), None, None));
    let cues: Vec<(u64, u64, String)> = parse_srt(&got)
        .into_iter()
        .map(|(_, a, b, t)| (a, b, t))
        .collect();
    assert_eq!(
        cues,
        vec![
            (0, 1500, "The quick brown\nfox jumps".to_string()),
            (1500, 2900, "over the lazy\ndog.".to_string()),
            (7000, 8000, "Then it slept.".to_string()),
        ]
    );
    // A word longer than the width gets a line of its own, never an empty line.
    let got = render_with(&fox(), OutputFormat::Srt, &layout(Some(3), None, None));
    let first = &parse_srt(&got)[0].3;
    assert_eq!(first, "The\nquick\nbrown\nfox\njumps");
}

#[test]
fn subtitle_words_per_line_split_each_segment() {
    let got = render_with(&fox(), OutputFormat::Vtt, &layout(None, None, Some(2)));
    let texts: Vec<String> = parse_vtt(&got).into_iter().map(|c| c.2).collect();
    assert_eq!(
        texts,
        [
            "The quick",
            "brown fox",
            "jumps",
            "over the",
            "lazy dog.",
            "Then it",
            "slept."
        ]
    );
    // With both the width and the count, cues no longer follow segments or word groups.
    let both = render_with(
        &fox(),
        OutputFormat::Vtt,
        &layout(Some(16), Some(2), Some(2)),
    );
    assert_eq!(
        both,
        render_with(&fox(), OutputFormat::Vtt, &layout(Some(16), Some(2), None))
    );
}

#[test]
fn highlighted_words_get_a_cue_each_and_keep_the_escapes() {
    let t = transcript(vec![worded(
        0,
        &[
            (" Fish", 1.0, 1.4),
            (" &", 1.5, 1.6),
            (" <chips>", 1.6, 2.0),
        ],
    )]);
    let highlight = SubtitleLayout {
        highlight_words: true,
        ..SubtitleLayout::default()
    };
    assert_eq!(
        render_with(&t, OutputFormat::Vtt, &highlight),
        "WEBVTT\n\n\
         00:00:01.000 --> 00:00:01.400\n<u>Fish</u> &amp; &lt;chips&gt;\n\n\
         00:00:01.400 --> 00:00:01.500\nFish &amp; &lt;chips&gt;\n\n\
         00:00:01.500 --> 00:00:01.600\nFish <u>&amp;</u> &lt;chips&gt;\n\n\
         00:00:01.600 --> 00:00:02.000\nFish &amp; <u>&lt;chips&gt;</u>\n"
    );
    let srt = render_with(&t, OutputFormat::Srt, &highlight);
    let texts: Vec<String> = parse_srt(&srt).into_iter().map(|c| c.3).collect();
    assert_eq!(
        texts,
        [
            "<u>Fish</u> & <chips>",
            "Fish & <chips>",
            "Fish <u>&</u> <chips>",
            "Fish & <u><chips></u>"
        ]
    );
}

#[test]
fn a_segment_without_word_times_stays_one_cue() {
    // Word times are missing where the model gave none (or the caller did not ask): such a
    // segment is one cue, unwrapped, between the laid-out ones; an empty one is left out.
    let mut segs = fox().segments;
    segs.insert(1, seg(9, 1.5, 1.5, " a segment without word times"));
    segs.insert(2, seg(10, 1.5, 1.5, "  "));
    let got = render_with(
        &transcript(segs),
        OutputFormat::Srt,
        &layout(Some(16), Some(2), None),
    );
    let texts: Vec<String> = parse_srt(&got).into_iter().map(|c| c.3).collect();
    assert_eq!(
        texts,
        [
            "The quick brown\nfox jumps",
            "a segment without word times",
            "over the lazy\ndog.",
            "Then it slept."
        ]
    );
    // The default layout is the one-cue-per-segment rendering.
    let t = fox();
    for f in [OutputFormat::Srt, OutputFormat::Vtt] {
        assert_eq!(
            render_with(&t, f, &SubtitleLayout::default()),
            render(&t, f)
        );
    }
}

#[test]
fn laid_out_subtitle_text_never_breaks_a_cue() {
    // Words that hold line breaks, the timing arrow split over two words, and a word of
    // spaces: no blank line inside a cue and no arrow in its text.
    let t = transcript(vec![worded(
        0,
        &[
            (" one\n\ntwo", 0.0, 0.5),
            (" --", 0.5, 0.6),
            (">", 0.6, 0.7),
            ("   ", 0.7, 0.8),
            (" three", 0.8, 1.2),
        ],
    )]);
    for f in [OutputFormat::Srt, OutputFormat::Vtt] {
        let got = render_with(&t, f, &layout(Some(8), Some(3), None));
        assert_eq!(
            got.matches("-->").count(),
            1,
            "only the timing arrow: {got}"
        );
        let body = got.split_once("\n\n").map_or(got.as_str(), |p| p.1);
        assert!(
            !body.trim_end().contains("\n\n"),
            "blank line in a cue: {got:?}"
        );
    }
}
