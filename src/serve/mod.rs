//! `amanuensis serve`: an OpenAI-compatible transcription server (axum on tokio).
//!
//! The model is loaded once; each worker thread transcribes on a replica of it (sessions
//! of its own on the shared weights). Requests are read and checked on the async side,
//! then queued for the workers through a bounded queue: a full queue answers 429 at once.
//! Every request runs under the `--timeout` deadline (reading the body included); a
//! request whose client goes away or whose deadline passes has its work stopped at the
//! next graph run. Errors have OpenAI's JSON shape ([`error::ApiError`]). See
//! `docs/server.md`.

pub mod engine;
pub mod error;
mod listen;
pub mod metrics;
pub mod request;
pub mod respond;

use amanuensis_runtime::Registry;
use amanuensis_whisper::decoding::FallbackOptions;
use amanuensis_whisper::{Task, TranscribeOptions, WhisperModel};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{CancelOnDrop, Engine, Job};
use error::{ApiError, ServeError};
pub use listen::ConnectionLimits;
use metrics::Metrics;
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Allocations from which glibc's malloc always maps fresh pages and unmaps them on free.
pub const LARGE_ALLOCATION: usize = 1 << 20;

/// Makes every allocation of [`LARGE_ALLOCATION`] bytes or more its own mapping, returned to
/// the system when freed (glibc; a no-op elsewhere). By default glibc raises that threshold
/// each time such a block is freed, up to 32 MB, and later blocks of that size come from
/// its per-thread heaps, where they fragment: a server that batches requests allocates KV
/// caches and cross K/V of a different size for every batch, on several threads, and its
/// resident memory then grew with the requests served (`docs/server.md`).
pub fn fix_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of the allocator; it is called before the
    // server's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as libc::c_int);
    }
}

/// OpenAI's upload limit, the default of `--max-body`.
pub const DEFAULT_MAX_BODY: u64 = 25 * 1024 * 1024;

/// The model id OpenAI's clients send; served by the loaded model.
pub const OPENAI_MODEL_ID: &str = "whisper-1";

/// Requests batched by default: none (1) until batching's throughput is measured and the
/// `/metrics` accounting of a batch's requests (busy workers + queue depth no longer add
/// up to the accepted requests) is settled; `--batch-size 4` turns it on.
pub const DEFAULT_BATCH_SIZE: usize = 1;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (see [`Server::local_addr`]).
    pub port: u16,
    /// Transcription threads, each with its own sessions on the shared weights.
    pub workers: usize,
    /// Accepted requests that may wait for a worker; one more is answered 429.
    pub max_queue: usize,
    /// Requests a worker takes at once, their first windows decoded in lockstep.
    pub batch_size: usize,
    /// Largest request body in bytes; a larger one is answered 413.
    pub max_body: u64,
    /// Deadline of a whole request, from its first byte to its answer.
    pub timeout: Duration,
    /// When set, `/v1/*` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Transcribe only the speech Silero VAD finds in each request (`--vad`); times stay
    /// the recording's.
    pub vad: Option<VadFilter>,
    /// Open connections at once, and the deadline of a request's head.
    pub connections: ConnectionLimits,
}

/// Most workers a server runs: each holds its own sessions (about 165 MB).
pub const MAX_WORKERS: usize = 64;
/// Longest queue of accepted requests.
pub const MAX_QUEUE: usize = 100_000;
/// Most connections a server keeps open at once.
pub const MAX_CONNECTIONS: usize = 100_000;
/// Longest `--timeout` and `--header-timeout`: a day (longer ones overflow the clock's
/// arithmetic and mean no deadline at all).
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Largest `--max-body`: 4 GiB (a body is held in memory before it is decoded).
pub const MAX_BODY: u64 = 4 << 30;

impl ServeOptions {
    /// Whether these options can run a server; [`Server::bind`] checks them too, but a
    /// caller that loads a model first can fail before that.
    pub fn check(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::Option(m));
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return bad(format!(
                "--workers must be 1 to {MAX_WORKERS} (each has its own sessions, about 165 MB)"
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.max_queue) {
            return bad(format!("--max-queue must be 1 to {MAX_QUEUE}"));
        }
        amanuensis_whisper::window_loop::check_batch_size(self.batch_size)
            .or_else(|e| bad(format!("--batch-size: {e}")))?;
        if !(1..=MAX_BODY).contains(&self.max_body) {
            return bad("--max-body must be 1 byte to 4GiB".into());
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return bad("--timeout must be above 0 and at most 24h".into());
        }
        if self.api_key.as_deref() == Some("") {
            return bad("--api-key must not be empty".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections.max_connections) {
            return bad(format!("--max-connections must be 1 to {MAX_CONNECTIONS}"));
        }
        let header_timeout = self.connections.header_timeout;
        if header_timeout.is_zero() || header_timeout > MAX_TIMEOUT {
            return bad("--header-timeout must be above 0 and at most 24h".into());
        }
        Ok(())
    }
}

/// The server's voice-activity filter: where the model is and its parameters.
#[derive(Debug, Clone)]
pub struct VadFilter {
    /// A `silero-vad` model directory.
    pub dir: std::path::PathBuf,
    pub options: amanuensis_vad::VadOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8000,
            workers: 1,
            max_queue: 16,
            batch_size: DEFAULT_BATCH_SIZE,
            max_body: DEFAULT_MAX_BODY,
            timeout: Duration::from_secs(300),
            api_key: None,
            vad: None,
            connections: ConnectionLimits::default(),
        }
    }
}

struct AppState {
    options: ServeOptions,
    engine: Engine,
    metrics: Arc<Metrics>,
    /// Model ids a request may name.
    models: Vec<String>,
    /// Set once shutdown has begun: `/ready` answers 503.
    draining: AtomicBool,
}

/// A bound server with its workers running.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Starts the workers on replicas of `model` and binds the address. Call from within a
    /// tokio runtime.
    pub async fn bind(
        options: ServeOptions,
        model: WhisperModel,
        registry: Registry,
    ) -> Result<Server, ServeError> {
        options.check()?;
        let addr = format!("{}:{}", options.host, options.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let metrics = Arc::new(Metrics::default());
        let name = model.name.clone();
        let short = name.strip_prefix("whisper-").unwrap_or(&name).to_string();
        let engine = Engine::start(
            model,
            registry,
            options.workers,
            options.max_queue,
            options.batch_size,
            options.vad.clone(),
            metrics.clone(),
        )?;
        let mut models = vec![OPENAI_MODEL_ID.to_string(), name];
        if !models.contains(&short) {
            models.push(short);
        }
        Ok(Server {
            state: Arc::new(AppState {
                options,
                engine,
                metrics,
                models,
                draining: AtomicBool::new(false),
            }),
            listener,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::Io)
    }

    /// Serves until `shutdown` completes; then stops accepting connections, answers every
    /// request already accepted, and stops the workers.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state.clone();
        let app = router(self.state.clone());
        let limits = state.options.connections;
        listen::serve(self.listener, app, limits, shutdown, || {
            state.draining.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: finishing the accepted requests");
        })
        .await;
        // Every connection is closed: the router and its state clones are gone.
        if let Ok(state) = Arc::try_unwrap(state) {
            tokio::task::spawn_blocking(move || state.engine.shutdown())
                .await
                .ok();
        }
        Ok(())
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Routes with their label in the metrics; anything else is `other`.
const ROUTES: [&str; 7] = [
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
    "/v1/models/{id}",
];

fn route_label(path: &str) -> &'static str {
    if let Some(r) = ROUTES.iter().find(|r| **r == path) {
        return r;
    }
    if path.starts_with("/v1/models/") {
        return "/v1/models/{id}";
    }
    "other"
}

fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(
            usize::try_from(state.options.max_body).unwrap_or(usize::MAX),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every answer by route and status, and times the audio routes.
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics.record_request(route, resp.status().as_u16());
    if route.starts_with("/v1/audio/") {
        st.metrics.record_latency(route, t0.elapsed().as_secs_f64());
    }
    resp
}

/// With an API key set: `Authorization: Bearer <key>` or 401.
async fn authorize(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = st.options.api_key.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => ApiError::unauthorized(
            "missing API key: send it as the header 'Authorization: Bearer <key>'",
        )
        .into_response(),
        Some(g) if !same_key(g.trim(), key) => {
            ApiError::unauthorized("incorrect API key").into_response()
        }
        Some(_) => next.run(req).await,
    }
}

/// Whether a client's bearer token is the key, in time that depends on neither: the
/// SHA-256 digests are compared, every byte, so a wrong guess tells neither how many of
/// its first bytes were right nor how long the key is.
fn same_key(given: &str, key: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(key));
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "no endpoint {} {} (see GET /v1/models, POST /v1/audio/transcriptions, POST /v1/audio/translations)",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let depth = st.metrics.queue_depth.load(Ordering::Relaxed);
    let (status, word) = if st.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if !st.engine.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "queue_full")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        status,
        Json(json!({
            "status": word,
            "model": st.engine.model_name,
            "queue_depth": depth,
            "queue_capacity": st.engine.capacity,
            "workers": st.engine.workers,
        })),
    )
        .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        st.metrics.render(st.engine.workers, st.engine.capacity),
    )
        .into_response()
}

fn model_object(id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "amanuensis"})
}

async fn list_models(State(st): State<Arc<AppState>>) -> Response {
    let data: Vec<_> = st.models.iter().map(|m| model_object(m)).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if st.models.contains(&id) {
        Json(model_object(&id)).into_response()
    } else {
        let mut e = ApiError::not_found(format!(
            "model '{}' is not served here",
            request::shown(&id)
        ));
        e.param = Some("model");
        e.code = Some("model_not_found");
        e.into_response()
    }
}

async fn transcriptions(State(st): State<Arc<AppState>>, req: Request) -> Response {
    handle(st, req, Task::Transcribe).await
}

async fn translations(State(st): State<Arc<AppState>>, req: Request) -> Response {
    handle(st, req, Task::Translate).await
}

/// One transcription request under the server's deadline. Dropping this future (the
/// client went away) or passing the deadline stops its work.
async fn handle(st: Arc<AppState>, req: Request, task: Task) -> Response {
    let limit = st.options.max_body;
    // A declared length over the limit is refused before any of the body is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        let mut r = ApiError::too_large(limit).into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    // Moves into a streamed body, so that the work goes on while events are sent.
    let stop_on_drop = CancelOnDrop(cancel.clone());
    let timeout = st.options.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let work = process(&st, req, task, cancel, stop_on_drop, deadline);
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::timeout(timeout.as_secs_f64()).into_response(),
    }
}

async fn process(
    st: &AppState,
    req: Request,
    task: Task,
    cancel: Arc<AtomicBool>,
    stop_on_drop: CancelOnDrop,
    deadline: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::bad_request(
            "invalid_multipart",
            format!(
                "the body must be a multipart/form-data form: {}",
                e.body_text()
            ),
        )
    })?;
    // OpenAI's translations take no language: the source language is detected.
    let languages = (task == Task::Transcribe).then_some(&st.engine.languages[..]);
    let mut form = request::read_form(mp, st.options.max_body, languages, &st.models).await?;
    let mut decoding = FallbackOptions::default();
    if let Some(t) = form.temperature {
        decoding.temperatures = vec![t];
    }
    let options = TranscribeOptions {
        language: form.language.clone(),
        task,
        initial_prompt: form.prompt.clone(),
        word_timestamps: form.word_timestamps,
        decoding,
        ..TranscribeOptions::default()
    };
    let plain_text = matches!(
        form.response_format,
        request::ResponseFormat::Json | request::ResponseFormat::Text
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let extension = form
        .file_name
        .as_deref()
        .and_then(|n| std::path::Path::new(n).extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (delta_tx, delta_rx) = match form.stream {
        true => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    st.engine.submit(Job {
        audio: std::mem::take(&mut form.file),
        extension,
        options,
        plain_text,
        cancel,
        deltas: delta_tx,
        reply: tx,
    })?;
    if let Some(deltas) = delta_rx {
        let live = respond::Live::new(deltas, rx, deadline, st.options.timeout, stop_on_drop);
        return live.respond().await;
    }
    let done = rx
        .await
        .map_err(|_| ApiError::internal("the worker stopped before answering"))??;
    drop(stop_on_drop);
    Ok(respond::render(&form, &done.transcript, done.audio_seconds))
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn same_key_accepts_only_the_whole_key() {
        assert!(same_key("s3cret", "s3cret"));
        for wrong in ["", "s3cre", "s3cret!", "S3cret", "s3creu", "s3cret\0"] {
            assert!(!same_key(wrong, "s3cret"), "{wrong:?}");
        }
    }
}
