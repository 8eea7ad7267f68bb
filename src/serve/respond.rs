//! Response bodies: OpenAI's `json`, `text`, `srt`, `vtt` and `verbose_json`, and the
//! server-sent events of `stream=true`.

use super::request::{Form, ResponseFormat};
use crate::output::{self, OutputFormat};
use amanuensis_whisper::{Task, Transcript};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

fn with_type(body: String, content_type: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn usage(audio_seconds: f64) -> Value {
    json!({"type": "duration", "seconds": audio_seconds.ceil() as u64})
}

/// The response for a finished transcription.
pub fn render(form: &Form, t: &Transcript, audio_seconds: f64) -> Response {
    if form.stream {
        return with_type(sse(t), "text/event-stream");
    }
    match form.response_format {
        ResponseFormat::Json => with_type(
            json!({"text": t.text, "usage": usage(audio_seconds)}).to_string(),
            "application/json",
        ),
        ResponseFormat::Text => with_type(format!("{}\n", t.text), "text/plain; charset=utf-8"),
        ResponseFormat::Srt => with_type(
            output::render(t, OutputFormat::Srt),
            "application/x-subrip; charset=utf-8",
        ),
        ResponseFormat::Vtt => with_type(
            output::render(t, OutputFormat::Vtt),
            "text/vtt; charset=utf-8",
        ),
        ResponseFormat::VerboseJson => with_type(
            verbose_json(form, t, audio_seconds).to_string(),
            "application/json",
        ),
    }
}

fn verbose_json(form: &Form, t: &Transcript, audio_seconds: f64) -> Value {
    let mut v = json!({
        "task": match t.task { Task::Transcribe => "transcribe", Task::Translate => "translate" },
        "language": language_name(&t.language),
        "duration": t.duration,
        "text": t.text,
        "usage": usage(audio_seconds),
    });
    // Segments unless only word times were asked for, as OpenAI does.
    if form.segment_timestamps || !form.word_timestamps {
        v["segments"] = t
            .segments
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "seek": s.seek,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": s.tokens,
                    "temperature": s.temperature,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio,
                    "no_speech_prob": s.no_speech_prob,
                })
            })
            .collect();
    }
    if form.word_timestamps {
        v["words"] = t
            .segments
            .iter()
            .flat_map(|s| &s.words)
            .map(|w| json!({"word": w.word.trim(), "start": w.start, "end": w.end}))
            .collect();
    }
    v
}

/// `transcript.text.delta` events, one per segment, whose deltas concatenate to the
/// text, then `transcript.text.done` with the whole text.
fn sse(t: &Transcript) -> String {
    let mut out = String::new();
    let n = t.segments.len();
    for (i, s) in t.segments.iter().enumerate() {
        let mut delta: &str = &s.text;
        if i == 0 {
            delta = delta.trim_start();
        }
        if i + 1 == n {
            delta = delta.trim_end();
        }
        if delta.is_empty() {
            continue;
        }
        let ev = json!({"type": "transcript.text.delta", "delta": delta});
        out.push_str(&format!("data: {ev}\n\n"));
    }
    let done = json!({"type": "transcript.text.done", "text": t.text});
    out.push_str(&format!("data: {done}\n\n"));
    out
}

/// Whisper's name of a language code (what OpenAI's `verbose_json` reports); the code
/// itself when it has none.
pub fn language_name(code: &str) -> &str {
    LANGUAGE_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(code, |(_, n)| n)
}

const LANGUAGE_NAMES: [(&str, &str); 100] = [
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];
