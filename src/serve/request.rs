//! The multipart form of `/v1/audio/transcriptions` and `/v1/audio/translations`, read
//! and checked field by field as OpenAI's API defines it. Unknown fields are ignored.

use super::error::ApiError;
use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::http::StatusCode;

/// What the response is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    pub const NAMES: &'static str = "json, text, srt, verbose_json, vtt";

    fn parse(s: &str) -> Option<ResponseFormat> {
        Some(match s {
            "json" => ResponseFormat::Json,
            "text" => ResponseFormat::Text,
            "srt" => ResponseFormat::Srt,
            "vtt" => ResponseFormat::Vtt,
            "verbose_json" => ResponseFormat::VerboseJson,
            _ => return None,
        })
    }
}

/// A request's fields after checking.
#[derive(Debug)]
pub struct Form {
    pub file: Vec<u8>,
    pub file_name: Option<String>,
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub response_format: ResponseFormat,
    /// `None`: 0, the default temperature fallback.
    pub temperature: Option<f32>,
    pub segment_timestamps: bool,
    pub word_timestamps: bool,
    pub stream: bool,
}

/// A multipart error as the API reports it: 413 when the body passed the limit, else 400.
pub fn multipart_error(e: MultipartError, max_body: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(max_body)
    } else {
        ApiError::bad_request(
            "invalid_multipart",
            format!(
                "the body is not a valid multipart/form-data form: {}",
                e.body_text()
            ),
        )
    }
}

/// Raw fields as read from the form.
#[derive(Default)]
struct Raw {
    file: Option<(Vec<u8>, Option<String>)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    granularities: Vec<String>,
    stream: Option<String>,
}

/// Largest text field (every field but `file`), in bytes. Whisper reads at most 224 tokens
/// of a prompt, about a kilobyte of text; a larger field is refused rather than read,
/// tokenized or quoted back whole.
pub const MAX_TEXT_FIELD: usize = 64 * 1024;

/// Reads every field of the form (unknown ones are skipped) and checks them. `languages`
/// are the codes a `language` field may name, or `None` for an endpoint that takes no
/// language (translations, as OpenAI's): the field is then skipped like unknown ones.
pub async fn read_form(
    mut mp: Multipart,
    max_body: u64,
    languages: Option<&[String]>,
    models: &[String],
) -> Result<Form, ApiError> {
    let mut raw = Raw::default();
    let err = |e| multipart_error(e, max_body);
    while let Some(field) = mp.next_field().await.map_err(err)? {
        let name = field.name().unwrap_or("").to_string();
        let (slot, param) = match name.as_str() {
            "file" => {
                let file_name = field.file_name().map(str::to_string);
                let bytes = field.bytes().await.map_err(err)?;
                raw.file = Some((bytes.to_vec(), file_name));
                continue;
            }
            "model" => (&mut raw.model, "model"),
            "language" if languages.is_some() => (&mut raw.language, "language"),
            "prompt" => (&mut raw.prompt, "prompt"),
            "response_format" => (&mut raw.response_format, "response_format"),
            "temperature" => (&mut raw.temperature, "temperature"),
            "stream" => (&mut raw.stream, "stream"),
            "timestamp_granularities[]" | "timestamp_granularities" => {
                let v = read_text(field, "timestamp_granularities", &err).await?;
                raw.granularities.push(v);
                continue;
            }
            // Fields this server does not know are ignored, as OpenAI does.
            _ => continue,
        };
        *slot = Some(read_text(field, param, &err).await?);
    }
    check(raw, languages.unwrap_or_default(), models)
}

/// A text field, refused past [`MAX_TEXT_FIELD`] bytes without reading the rest of it.
async fn read_text(
    mut field: Field<'_>,
    param: &'static str,
    err: &impl Fn(MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(err)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ApiError::invalid(
                param,
                "invalid_value",
                format!("field '{param}' is longer than {MAX_TEXT_FIELD} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A value of the request as an error message quotes it: at most 40 characters.
pub(super) fn shown(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

fn check(raw: Raw, languages: &[String], models: &[String]) -> Result<Form, ApiError> {
    let Some((file, file_name)) = raw.file else {
        return Err(ApiError::invalid(
            "file",
            "missing_required_parameter",
            "the form has no 'file' field: send the audio file as the multipart field 'file'",
        ));
    };
    if file.is_empty() {
        return Err(ApiError::invalid(
            "file",
            "empty_file",
            "the uploaded file is empty",
        ));
    }
    let model = match raw.model.map(|m| m.trim().to_string()) {
        None => {
            return Err(ApiError::invalid(
                "model",
                "missing_required_parameter",
                format!(
                    "the form has no 'model' field (available: {})",
                    models.join(", ")
                ),
            ))
        }
        Some(m) if !models.contains(&m) => {
            return Err(ApiError::invalid(
                "model",
                "model_not_found",
                format!(
                    "model '{}' is not served here (available: {})",
                    shown(&m),
                    models.join(", ")
                ),
            ))
        }
        Some(m) => m,
    };
    let response_format = match raw.response_format.as_deref().map(str::trim) {
        None | Some("") => ResponseFormat::Json,
        Some(s) => ResponseFormat::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "response_format",
                "invalid_value",
                format!(
                    "response_format '{}' is not one of {}",
                    shown(s),
                    ResponseFormat::NAMES
                ),
            )
        })?,
    };
    let language = match raw.language.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => {
            let code = l.to_ascii_lowercase();
            if !languages.contains(&code) {
                return Err(ApiError::invalid(
                    "language",
                    "unsupported_language",
                    format!(
                        "language '{}' is not an ISO-639-1 code the model knows (known: {})",
                        shown(l),
                        languages.join(", ")
                    ),
                ));
            }
            Some(code)
        }
    };
    let temperature = match raw.temperature.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => {
            let t: f32 = s.parse().map_err(|_| {
                ApiError::invalid(
                    "temperature",
                    "invalid_value",
                    format!("temperature '{}' is not a number", shown(s)),
                )
            })?;
            if !(0.0..=1.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature",
                    "invalid_value",
                    format!("temperature {} is outside 0 to 1", shown(s)),
                ));
            }
            (t > 0.0).then_some(t)
        }
    };
    let mut segment_timestamps = false;
    let mut word_timestamps = false;
    for g in &raw.granularities {
        match g.trim() {
            "segment" => segment_timestamps = true,
            "word" => word_timestamps = true,
            other => {
                return Err(ApiError::invalid(
                    "timestamp_granularities",
                    "invalid_value",
                    format!(
                        "timestamp granularity '{}' is not 'segment' or 'word'",
                        shown(other)
                    ),
                ))
            }
        }
    }
    if (segment_timestamps || word_timestamps) && response_format != ResponseFormat::VerboseJson {
        return Err(ApiError::invalid(
            "timestamp_granularities",
            "invalid_value",
            "timestamp_granularities needs response_format 'verbose_json'",
        ));
    }
    let stream = match raw.stream.as_deref().map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(s) => {
            return Err(ApiError::invalid(
                "stream",
                "invalid_value",
                format!("stream '{}' is not 'true' or 'false'", shown(s)),
            ))
        }
    };
    if stream && !matches!(response_format, ResponseFormat::Json | ResponseFormat::Text) {
        return Err(ApiError::invalid(
            "stream",
            "invalid_value",
            "stream=true gives server-sent text events; use response_format 'json' or 'text' with it",
        ));
    }
    let prompt = raw.prompt.filter(|p| !p.trim().is_empty());
    Ok(Form {
        file,
        file_name,
        model,
        language,
        prompt,
        response_format,
        temperature,
        segment_timestamps,
        word_timestamps,
        stream,
    })
}
