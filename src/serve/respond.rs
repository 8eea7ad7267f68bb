//! Response bodies: OpenAI's `json`, `text`, `srt`, `vtt` and `verbose_json`, and the
//! server-sent events of `stream=true`.

use super::engine::{CancelOnDrop, Done};
use super::error::ApiError;
use super::request::{Form, ResponseFormat};
use crate::output::{self, OutputFormat};
use amanuensis_whisper::{Task, Transcript};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

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

/// The response for a finished transcription (not streamed).
pub fn render(form: &Form, t: &Transcript, audio_seconds: f64) -> Response {
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

/// A `stream=true` response: a `transcript.text.delta` event with each window's text as
/// soon as the worker has decoded it, then `transcript.text.done` with the whole text (or
/// an OpenAI-shaped `error` event if the work fails or passes the deadline after the
/// events began). The deltas concatenate to the done event's text.
pub struct Live {
    first: Option<String>,
    deltas: mpsc::UnboundedReceiver<String>,
    reply: Option<oneshot::Receiver<Result<Done, ApiError>>>,
    deadline: Instant,
    timeout: Duration,
    text: DeltaText,
    /// Stops the work when the body is dropped: the client went away mid-stream.
    _stop_on_drop: CancelOnDrop,
}

impl Live {
    pub fn new(
        deltas: mpsc::UnboundedReceiver<String>,
        reply: oneshot::Receiver<Result<Done, ApiError>>,
        deadline: Instant,
        timeout: Duration,
        stop_on_drop: CancelOnDrop,
    ) -> Live {
        Live {
            first: None,
            deltas,
            reply: Some(reply),
            deadline,
            timeout,
            text: DeltaText::default(),
            _stop_on_drop: stop_on_drop,
        }
    }

    /// Waits for the first window's text or the outcome before answering, so that a
    /// file that is not audio still gets its HTTP status and error body, not a 200 stream.
    pub async fn respond(mut self) -> Result<Response, ApiError> {
        loop {
            match self.deltas.recv().await {
                Some(d) => {
                    if let Some(delta) = self.text.next(&d) {
                        self.first = Some(delta_event(&delta));
                        break;
                    }
                }
                None => {
                    // Done without text (silence) or failed: one answer, known now.
                    let reply = self.reply.take().expect("taken only here and at the end");
                    let done = reply
                        .await
                        .map_err(|_| ApiError::internal("the worker stopped before answering"))??;
                    return Ok(with_type(
                        done_event(&done.transcript.text),
                        "text/event-stream",
                    ));
                }
            }
        }
        let events = futures_util::stream::unfold(self, |mut live| async move {
            let event = live.next_event().await?;
            Some((Ok::<_, Infallible>(Bytes::from(event)), live))
        });
        let mut r = Body::from_stream(events).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(r)
    }

    /// The next event, or `None` once the done (or error) event has been sent.
    async fn next_event(&mut self) -> Option<String> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        self.reply.as_ref()?;
        loop {
            tokio::select! {
                d = self.deltas.recv() => match d {
                    Some(d) => {
                        if let Some(delta) = self.text.next(&d) {
                            return Some(delta_event(&delta));
                        }
                    }
                    None => {
                        let reply = self.reply.take()?;
                        return Some(match tokio::time::timeout_at(self.deadline, reply).await {
                            Ok(Ok(Ok(done))) => done_event(&done.transcript.text),
                            Ok(Ok(Err(e))) => error_event(&e),
                            Ok(Err(_)) => error_event(&ApiError::internal(
                                "the worker stopped before answering",
                            )),
                            Err(_) => error_event(&ApiError::timeout(self.timeout.as_secs_f64())),
                        });
                    }
                },
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.reply = None;
                    return Some(error_event(&ApiError::timeout(self.timeout.as_secs_f64())));
                }
            }
        }
    }
}

/// Turns each window's text into a delta such that the deltas concatenate to the
/// transcript's text, which is trimmed: leading space is dropped from the first, and a
/// delta's trailing space is held back until more text follows it.
#[derive(Default)]
struct DeltaText {
    started: bool,
    held_space: String,
}

impl DeltaText {
    fn next(&mut self, window_text: &str) -> Option<String> {
        let text = if self.started {
            window_text
        } else {
            window_text.trim_start()
        };
        let body = text.trim_end();
        if body.is_empty() {
            if self.started {
                self.held_space.push_str(text);
            }
            return None;
        }
        self.started = true;
        let delta = std::mem::take(&mut self.held_space) + body;
        self.held_space = text[body.len()..].to_string();
        Some(delta)
    }
}

fn delta_event(delta: &str) -> String {
    let ev = json!({"type": "transcript.text.delta", "delta": delta});
    format!("data: {ev}\n\n")
}

fn done_event(text: &str) -> String {
    let ev = json!({"type": "transcript.text.done", "text": text});
    format!("data: {ev}\n\n")
}

fn error_event(e: &ApiError) -> String {
    format!("data: {}\n\n", e.to_json())
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

#[cfg(test)]
mod tests {
    use super::DeltaText;

    #[test]
    fn deltas_concatenate_to_the_trimmed_text() {
        let windows = [
            " ",
            " And so my fellow",
            " Americans, ",
            "",
            "  ",
            " ask not. ",
        ];
        let mut d = DeltaText::default();
        let joined: String = windows.iter().filter_map(|w| d.next(w)).collect();
        assert_eq!(joined, windows.concat().trim());
        assert_eq!(joined, "And so my fellow Americans,    ask not.");
    }
}
