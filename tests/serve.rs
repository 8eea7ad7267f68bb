//! `amanuensis serve` over real HTTP on loopback: the answers, the bad-input matrix (each
//! case its own test, with the expected status, an OpenAI-shaped error, and the server
//! alive afterwards), limits, timeouts, the queue, cancellation and graceful shutdown.
//!
//! Servers run in this process on ephemeral ports (the shutdown test runs the binary as a
//! child, to send it SIGTERM). Requests are written by hand on a TCP socket so that
//! malformed, oversized and stalled bodies can be sent exactly.

use crate::common;
use amanuensis::serve::{ServeOptions, Server};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
const KEY: &str = "sk-test-key";

fn jfk_wav() -> Vec<u8> {
    std::fs::read(common::data_dir().join("audio/jfk.wav")).expect("jfk.wav")
}

// ---- servers ---------------------------------------------------------------------------

/// Starts a server on an ephemeral port in a thread of its own; it runs until the process
/// exits.
fn start(options: ServeOptions) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let model = common::load_model();
            let server = Server::bind(options, model, amanuensis_operators::standard_registry())
                .await
                .expect("server binds");
            tx.send(server.local_addr().expect("address")).unwrap();
            server
                .run(std::future::pending::<()>())
                .await
                .expect("server runs");
        });
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("server started")
}

fn options() -> ServeOptions {
    ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        workers: 1,
        max_queue: 8,
        batch_size: 4,
        max_body: 1 << 20,
        timeout: Duration::from_secs(120),
        api_key: Some(KEY.into()),
        vad: None,
        connections: Default::default(),
    }
}

/// The server most tests share: API key `KEY`, a 1 MiB body limit.
fn shared() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start(options()))
}

// ---- a minimal HTTP/1.1 client ---------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Reads a response's status line and headers.
fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, headers)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
}

/// The next chunk of a chunked body; `None` at its end.
fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).expect("chunk size");
    let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
    let mut chunk = vec![0u8; n + 2];
    r.read_exact(&mut chunk).expect("chunk");
    chunk.truncate(n);
    (n > 0).then_some(chunk)
}

/// Reads one response (the server closes the connection after it: `Connection: close`).
fn read_response(stream: TcpStream) -> Resp {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut r = BufReader::new(stream);
    let (status, headers) = read_head(&mut r);
    let mut body = Vec::new();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).expect("body");
        }
        None if is_chunked(&headers) => {
            while let Some(chunk) = read_chunk(&mut r) {
                body.extend_from_slice(&chunk);
            }
        }
        None => {
            let _ = r.read_to_end(&mut body);
        }
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).expect("connect")
}

fn head(method: &str, path: &str, extra: &[(&str, String)]) -> String {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in extra {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s
}

fn send(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, String)], body: &[u8]) -> Resp {
    let mut s = connect(addr);
    let mut h = extra.to_vec();
    h.push(("Content-Length", body.len().to_string()));
    s.write_all(head(method, path, &h).as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(s)
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, "GET", path, &[auth()], b"")
}

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {KEY}"))
}

enum Part<'a> {
    Text(&'a str),
    File(&'a str, &'a [u8]),
}

const BOUNDARY: &str = "----amanuensis-test-boundary";

fn multipart(fields: &[(&str, Part)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, part) in fields {
        b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(v) => {
                b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{v}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(file_name, data) => {
                b.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                b.extend_from_slice(data);
                b.extend_from_slice(b"\r\n");
            }
        }
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn form_headers(key: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![(
        "Content-Type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    )];
    if let Some(k) = key {
        h.push(("Authorization", format!("Bearer {k}")));
    }
    h
}

fn post_form(addr: SocketAddr, path: &str, fields: &[(&str, Part)]) -> Resp {
    send(
        addr,
        "POST",
        path,
        &form_headers(Some(KEY)),
        &multipart(fields),
    )
}

fn transcribe(addr: SocketAddr, file: &[u8], extra: &[(&str, Part)]) -> Resp {
    let mut fields = vec![
        ("file", Part::File("audio.wav", file)),
        ("model", Part::Text("whisper-1")),
    ];
    for (k, v) in extra {
        fields.push((
            k,
            match v {
                Part::Text(t) => Part::Text(t),
                Part::File(n, d) => Part::File(n, d),
            },
        ));
    }
    post_form(addr, "/v1/audio/transcriptions", &fields)
}

// ---- checks -------------------------------------------------------------------------

/// `{"error": {"message", "type", "param", "code"}}` with the given status.
fn assert_error(r: &Resp, status: u16, kind: &str, param: Option<&str>, code: &str) {
    assert_eq!(r.status, status, "status of {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let e = v
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object: {v}"));
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.len() > 10),
        "message explains: {v}"
    );
    assert_eq!(e["type"], kind, "{v}");
    assert_eq!(e["param"].as_str(), param, "{v}");
    assert_eq!(e["code"], code, "{v}");
}

/// The server answers `/health` and still transcribes jfk correctly.
fn assert_alive(addr: SocketAddr) {
    let h = get(addr, "/health");
    assert_eq!(h.status, 200, "{}", h.text());
    let r = transcribe(addr, &jfk_wav(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], JFK);
}

/// The value of an unlabelled metric.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let m = get(addr, "/metrics").text();
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not in:\n{m}"))
}

/// Waits (up to a minute) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "gave up waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn normalise(w: &str) -> String {
    w.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

// ---- answers ------------------------------------------------------------------------

#[test]
fn serve_transcribes_jfk_as_json_text_and_stream() {
    let addr = shared();
    let r = transcribe(addr, &jfk_wav(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], JFK);
    let r = transcribe(addr, &jfk_wav(), &[("response_format", Part::Text("text"))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim_end(), JFK);
    let r = transcribe(addr, &jfk_wav(), &[("stream", Part::Text("true"))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events: Vec<Value> = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    let (done, deltas) = events.split_last().expect("events");
    assert_eq!(done["type"], "transcript.text.done");
    assert_eq!(done["text"], JFK);
    let joined: String = deltas
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "transcript.text.delta");
            d["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(joined, JFK);
}

/// Sends a `stream=true` request for `file` and reads its events as they arrive, each with
/// the time since the request was sent; a status other than 200 comes back with no events.
/// An SSE response being read: its status, and the body as events arrive.
struct EventStream {
    status: u16,
    body: BufReader<TcpStream>,
    pending: String,
    t0: Instant,
}

/// Sends a `stream=true` transcription of `file` and reads the response's head.
fn open_stream(addr: SocketAddr, file: &[u8]) -> EventStream {
    let body = multipart(&[
        ("file", Part::File("audio.wav", file)),
        ("model", Part::Text("whisper-1")),
        ("stream", Part::Text("true")),
    ]);
    let mut s = connect(addr);
    let mut h = form_headers(Some(KEY));
    h.push(("Content-Length", body.len().to_string()));
    let t0 = Instant::now();
    s.write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
        .unwrap();
    s.write_all(&body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let chunked = is_chunked(&headers);
    assert!(
        status != 200 || chunked,
        "a stream is sent in chunks as it is made"
    );
    EventStream {
        status,
        body: r,
        pending: String::new(),
        t0,
    }
}

impl EventStream {
    /// The events of the next chunk, each with the time since the request was sent;
    /// `None` at the end of the body.
    fn next_events(&mut self) -> Option<Vec<(Duration, Value)>> {
        let chunk = read_chunk(&mut self.body)?;
        self.pending
            .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        let mut events = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let event: String = self.pending.drain(..end + 2).collect();
            let data = event.trim().strip_prefix("data: ").expect("a data line");
            events.push((
                self.t0.elapsed(),
                serde_json::from_str(data).expect("event JSON"),
            ));
        }
        Some(events)
    }
}

/// The status and every event of a `stream=true` transcription (none unless 200).
fn stream_events(addr: SocketAddr, file: &[u8]) -> (u16, Vec<(Duration, Value)>) {
    let mut stream = open_stream(addr, file);
    let mut events = Vec::new();
    if stream.status == 200 {
        while let Some(more) = stream.next_events() {
            events.extend(more);
        }
    }
    (stream.status, events)
}

#[test]
fn serve_stream_sends_each_windows_text_as_soon_as_it_is_decoded() {
    // The 75-s recording (2.4 MB as WAV) is over the shared server's 1 MiB limit.
    static ROOMY: OnceLock<SocketAddr> = OnceLock::new();
    let addr = *ROOMY.get_or_init(|| {
        start(ServeOptions {
            max_body: 8 << 20,
            ..options()
        })
    });
    // 75 s of speech: three or more 30-s windows, each decoded in turn.
    let long = std::fs::read(common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let (status, events) = stream_events(addr, &long);
    assert_eq!(status, 200);
    let ((done_at, done), deltas) = events.split_last().expect("events");
    assert_eq!(done["type"], "transcript.text.done", "{done}");
    assert!(
        deltas.len() >= 2,
        "one delta per window with text: {events:?}"
    );
    let joined: String = deltas
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["type"], "transcript.text.delta", "{d}");
            d["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(joined, done["text"].as_str().unwrap());
    // The first window's text came while the later windows were still being decoded:
    // the stream is not the finished transcript cut into pieces at the end.
    let first_at = deltas[0].0;
    assert!(
        *done_at > first_at + Duration::from_millis(500),
        "first delta at {first_at:?}, done at {done_at:?}"
    );
    // The same text as without streaming.
    let r = transcribe(addr, &long, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], done["text"]);
}

#[test]
fn bad_input_non_audio_bytes_with_stream_gets_its_status_not_a_stream() {
    let addr = shared();
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let (status, events) = stream_events(addr, &junk);
    assert_eq!(status, 400);
    assert!(events.is_empty());
    let r = transcribe(addr, &junk, &[("stream", Part::Text("true"))]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("file"),
        "invalid_audio",
    );
    assert_alive(addr);
}

#[test]
fn serve_verbose_json_has_segments_and_words() {
    let addr = shared();
    let r = transcribe(
        addr,
        &jfk_wav(),
        &[
            ("response_format", Part::Text("verbose_json")),
            ("timestamp_granularities[]", Part::Text("word")),
            ("timestamp_granularities[]", Part::Text("segment")),
            ("language", Part::Text("en")),
            ("unknown_field", Part::Text("ignored")),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["task"], "transcribe");
    assert_eq!(v["language"], "english");
    assert_eq!(v["duration"], 11.0);
    // Decoded with timestamps, the text's punctuation may differ from JFK's; the words
    // do not.
    let words: Vec<String> = v["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| normalise(w["word"].as_str().unwrap()))
        .collect();
    let expected: Vec<String> = JFK.split_whitespace().map(normalise).collect();
    assert_eq!(words, expected);
    let text_words: Vec<String> = v["text"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(normalise)
        .collect();
    assert_eq!(text_words, expected);
    let segs = v["segments"].as_array().unwrap();
    let seg_text: String = segs.iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert_eq!(seg_text.trim(), v["text"].as_str().unwrap());
    let mut last = 0.0;
    for s in segs {
        let (a, b) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            last <= a && a <= b && b <= 11.0,
            "segment times in order: {s}"
        );
        last = b;
    }
}

#[test]
fn serve_translation_endpoint_answers_in_english() {
    let addr = shared();
    let r = post_form(
        addr,
        "/v1/audio/translations",
        &[
            ("file", Part::File("jfk.wav", &jfk_wav())),
            ("model", Part::Text("whisper-1")),
            // OpenAI's translations take no language: the field is ignored like any
            // unknown one, not checked (and refused) as in a transcription.
            ("language", Part::Text("klingon")),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], JFK);
}

#[test]
fn serve_models_health_ready_and_metrics() {
    let addr = shared();
    let m = get(addr, "/v1/models").json();
    let ids: Vec<&str> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["whisper-1", "whisper-base", "base"]);
    assert_eq!(get(addr, "/v1/models/whisper-1").json()["id"], "whisper-1");
    assert_eq!(get(addr, "/health").json()["status"], "ok");
    let ready = get(addr, "/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    let r = transcribe(addr, &jfk_wav(), &[]);
    assert_eq!(r.json()["text"], JFK);
    let text = get(addr, "/metrics").text();
    for needle in [
        "amanuensis_requests_total{route=\"/v1/audio/transcriptions\",status=\"200\"}",
        "amanuensis_request_duration_seconds_bucket{route=\"/v1/audio/transcriptions\",le=\"+Inf\"}",
        "# TYPE amanuensis_request_duration_seconds histogram",
        "amanuensis_queue_depth ",
        "amanuensis_realtime_factor ",
    ] {
        assert!(text.contains(needle), "{needle} in /metrics:\n{text}");
    }
    assert!(metric(addr, "amanuensis_audio_seconds_total") >= 11.0);
    let rtf = metric(addr, "amanuensis_realtime_factor");
    assert!(rtf > 0.0 && rtf.is_finite(), "realtime factor {rtf}");
}

#[test]
fn serve_good_request_unaffected_by_bad_ones_around_it() {
    let addr = shared();
    let good = std::thread::spawn(move || transcribe(addr, &jfk_wav(), &[]));
    for _ in 0..5 {
        let r = transcribe(addr, b"RIFF\x10\0\0\0WAVEjunk", &[]);
        assert_eq!(r.status, 400);
        let r = transcribe(addr, &jfk_wav(), &[("temperature", Part::Text("hot"))]);
        assert_eq!(r.status, 400);
    }
    let r = good.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], JFK);
}

#[test]
fn two_workers_each_batching_answer_every_request() {
    // Two workers that batch at the same time run two lockstep coordinators on the
    // kernels' pool of two threads; each once blocked its pool thread waiting for its
    // windows, whose beam rows then had no pool thread left, and every request hung.
    let addr = start(ServeOptions {
        workers: 2,
        batch_size: 2,
        ..options()
    });
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || transcribe(addr, &jfk_wav(), &[])))
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["text"], JFK);
    }
}

// ---- the bad-input matrix ---------------------------------------------------------------

#[test]
fn bad_input_empty_file() {
    let addr = shared();
    let r = transcribe(addr, b"", &[]);
    assert_error(&r, 400, "invalid_request_error", Some("file"), "empty_file");
    assert_alive(addr);
}

#[test]
fn bad_input_non_audio_bytes() {
    let addr = shared();
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let r = transcribe(addr, &junk, &[]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("file"),
        "invalid_audio",
    );
    assert!(
        r.text().contains("not a recognised audio file"),
        "{}",
        r.text()
    );
    assert_alive(addr);
}

#[test]
fn bad_input_truncated_mp3() {
    let addr = shared();
    let mp3 = std::fs::read(common::data_dir().join("audio/encoded/jfk.mp3")).unwrap();
    // Cut inside the first frame's header: nothing decodes.
    let r = transcribe(addr, &mp3[..200], &[]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("file"),
        "invalid_audio",
    );
    // Cut after 8 s of frames: MP3 frames stand alone, so the part that arrived is
    // transcribed, and it is the start of the jfk text.
    let r = transcribe(addr, &mp3[..60_000], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.json()["text"].as_str().unwrap().to_string();
    assert!(text.len() > 20, "{text}");
    let words = |s: &str| -> Vec<String> { s.split_whitespace().map(normalise).collect() };
    let (got, full) = (words(&text), words(JFK));
    assert_eq!(got[..], full[..got.len()], "{text}");
    assert_alive(addr);
}

#[test]
fn bad_input_body_over_max_body() {
    let addr = shared();
    // A declared length over the limit is refused before the body is sent at all.
    let mut s = connect(addr);
    let mut h = form_headers(Some(KEY));
    h.push(("Content-Length", (8u64 << 20).to_string()));
    s.write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
        .unwrap();
    let r = read_response(s);
    assert_error(
        &r,
        413,
        "invalid_request_error",
        Some("file"),
        "request_too_large",
    );
    // A chunked body (no length) is stopped once it passes the limit.
    let mut s = connect(addr);
    let mut h = form_headers(Some(KEY));
    h.push(("Transfer-Encoding", "chunked".into()));
    s.write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
        .unwrap();
    let body = multipart(&[
        ("model", Part::Text("whisper-1")),
        ("file", Part::File("big.wav", &vec![7u8; 3 << 20])),
    ]);
    let mut sent = 0;
    for chunk in body.chunks(64 << 10) {
        let w = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|_| s.write_all(chunk))
            .and_then(|_| s.write_all(b"\r\n"));
        if w.is_err() {
            break; // the server answered and closed: it did not read the rest
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let r = read_response(s);
    assert_error(
        &r,
        413,
        "invalid_request_error",
        Some("file"),
        "request_too_large",
    );
    assert!(sent <= body.len());
    assert_alive(addr);
}

#[test]
fn bad_input_no_file_field() {
    let addr = shared();
    let r = post_form(
        addr,
        "/v1/audio/transcriptions",
        &[("model", Part::Text("whisper-1"))],
    );
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("file"),
        "missing_required_parameter",
    );
    assert_alive(addr);
}

#[test]
fn bad_input_no_model_field() {
    let addr = shared();
    let r = post_form(
        addr,
        "/v1/audio/transcriptions",
        &[("file", Part::File("jfk.wav", &jfk_wav()))],
    );
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("model"),
        "missing_required_parameter",
    );
    let r = post_form(
        addr,
        "/v1/audio/transcriptions",
        &[
            ("file", Part::File("jfk.wav", &jfk_wav())),
            ("model", Part::Text("gpt-9")),
        ],
    );
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
    assert_alive(addr);
}

#[test]
fn bad_input_malformed_multipart() {
    let addr = shared();
    // A body that does not follow its declared boundary.
    let r = send(
        addr,
        "POST",
        "/v1/audio/transcriptions",
        &form_headers(Some(KEY)),
        b"--not-the-boundary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nxx",
    );
    assert_error(&r, 400, "invalid_request_error", None, "invalid_multipart");
    // A form cut off in the middle of its file part.
    let body = multipart(&[
        ("model", Part::Text("whisper-1")),
        ("file", Part::File("jfk.wav", &jfk_wav())),
    ]);
    let r = send(
        addr,
        "POST",
        "/v1/audio/transcriptions",
        &form_headers(Some(KEY)),
        &body[..body.len() / 2],
    );
    assert_error(&r, 400, "invalid_request_error", None, "invalid_multipart");
    // Not multipart at all.
    let r = send(
        addr,
        "POST",
        "/v1/audio/transcriptions",
        &[auth(), ("Content-Type", "application/json".into())],
        br#"{"model": "whisper-1"}"#,
    );
    assert_error(&r, 400, "invalid_request_error", None, "invalid_multipart");
    assert_alive(addr);
}

#[test]
fn bad_input_unknown_response_format() {
    let addr = shared();
    let r = transcribe(addr, &jfk_wav(), &[("response_format", Part::Text("docx"))]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("response_format"),
        "invalid_value",
    );
    assert_alive(addr);
}

#[test]
fn bad_input_unknown_language() {
    let addr = shared();
    let r = transcribe(addr, &jfk_wav(), &[("language", Part::Text("klingon"))]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("language"),
        "unsupported_language",
    );
    assert_alive(addr);
}

#[test]
fn bad_input_oversized_text_fields() {
    let addr = shared();
    // A prompt past the 64-KiB limit of a text field is refused, not read and tokenized.
    let prompt = "word ".repeat(20_000);
    let r = transcribe(addr, &jfk_wav(), &[("prompt", Part::Text(&prompt))]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("prompt"),
        "invalid_value",
    );
    // A long bad value is quoted back cut short, not whole.
    let language = "x".repeat(50_000);
    let r = transcribe(addr, &jfk_wav(), &[("language", Part::Text(&language))]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("language"),
        "unsupported_language",
    );
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("'{}…'", "x".repeat(40))) && message.len() < 2_000,
        "{} bytes: {}",
        message.len(),
        &message[..200]
    );
    assert_alive(addr);
}

#[test]
fn bad_input_bad_temperature() {
    let addr = shared();
    for t in ["hot", "1.5", "-0.1", "NaN"] {
        let r = transcribe(addr, &jfk_wav(), &[("temperature", Part::Text(t))]);
        assert_error(
            &r,
            400,
            "invalid_request_error",
            Some("temperature"),
            "invalid_value",
        );
    }
    assert_alive(addr);
}

#[test]
fn bad_input_bad_timestamp_granularity_and_stream() {
    let addr = shared();
    let r = transcribe(
        addr,
        &jfk_wav(),
        &[
            ("response_format", Part::Text("verbose_json")),
            ("timestamp_granularities[]", Part::Text("syllable")),
        ],
    );
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("timestamp_granularities"),
        "invalid_value",
    );
    let r = transcribe(addr, &jfk_wav(), &[("stream", Part::Text("maybe"))]);
    assert_error(
        &r,
        400,
        "invalid_request_error",
        Some("stream"),
        "invalid_value",
    );
    assert_alive(addr);
}

#[test]
fn bad_input_wrong_or_missing_api_key() {
    let addr = shared();
    let body = multipart(&[
        ("file", Part::File("jfk.wav", &jfk_wav())),
        ("model", Part::Text("whisper-1")),
    ]);
    for key in [None, Some("sk-wrong")] {
        let r = send(
            addr,
            "POST",
            "/v1/audio/transcriptions",
            &form_headers(key),
            &body,
        );
        assert_error(&r, 401, "authentication_error", None, "invalid_api_key");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = send(addr, "GET", "/v1/models", &[], b"");
    assert_error(&r, 401, "authentication_error", None, "invalid_api_key");
    // Probes stay open.
    assert_eq!(send(addr, "GET", "/health", &[], b"").status, 200);
    assert_alive(addr);
}

#[test]
fn bad_input_wrong_method() {
    let addr = shared();
    let r = get(addr, "/v1/audio/transcriptions");
    assert_error(&r, 405, "invalid_request_error", None, "method_not_allowed");
    let r = send(addr, "DELETE", "/health", &[], b"");
    assert_error(&r, 405, "invalid_request_error", None, "method_not_allowed");
    assert_alive(addr);
}

#[test]
fn bad_input_unknown_path() {
    let addr = shared();
    let r = get(addr, "/v1/audio/transcribe");
    assert_error(&r, 404, "invalid_request_error", None, "not_found");
    let r = get(addr, "/v1/models/gpt-9");
    assert_error(
        &r,
        404,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
    assert_alive(addr);
}

/// A server with a short deadline, for the stall and timeout tests.
fn short_deadline() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        start(ServeOptions {
            timeout: Duration::from_millis(1500),
            max_body: 4 << 20,
            ..options()
        })
    })
}

#[test]
fn bad_input_body_stalls_halfway() {
    let addr = short_deadline();
    let body = multipart(&[
        ("model", Part::Text("whisper-1")),
        ("file", Part::File("jfk.wav", &jfk_wav())),
    ]);
    let mut s = connect(addr);
    let mut h = form_headers(Some(KEY));
    h.push(("Content-Length", body.len().to_string()));
    s.write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
        .unwrap();
    s.write_all(&body[..body.len() / 2]).unwrap();
    // ... and nothing more: the deadline answers.
    let r = read_response(s);
    assert_error(&r, 504, "timeout_error", None, "timeout");
    // No worker was taken by it.
    assert_eq!(metric(addr, "amanuensis_workers_busy"), 0.0);
    assert_eq!(get(addr, "/health").status, 200);
    let r = transcribe(addr, b"not audio at all, but a quick answer", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
}

/// Waits until the server closes `s` (end of stream or a reset); fails if it sends
/// anything or keeps the connection past `limit`.
fn wait_closed(mut s: TcpStream, limit: Duration) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "the server answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was still open after {limit:?} ({e})"),
    }
}

#[test]
fn a_connection_stalled_in_its_request_head_is_closed_after_the_header_timeout() {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    let addr = *ADDR.get_or_init(|| {
        start(ServeOptions {
            connections: amanuensis::serve::ConnectionLimits {
                header_timeout: Duration::from_secs(1),
                ..Default::default()
            },
            ..options()
        })
    });
    // Half a request line, and one that opens and sends nothing: neither holds its
    // connection (and a file descriptor) past the deadline.
    let opened = Instant::now();
    let mut half = connect(addr);
    half.write_all(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: loc")
        .unwrap();
    let silent = connect(addr);
    for s in [half, silent] {
        wait_closed(s, Duration::from_secs(60));
        let took = opened.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "closed after {took:?}, before the 1-s deadline"
        );
    }
    assert_alive(addr);
}

#[test]
fn connections_over_the_limit_wait_until_one_closes() {
    let addr = start(ServeOptions {
        connections: amanuensis::serve::ConnectionLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(600),
        },
        ..options()
    });
    let first = connect(addr);
    let second = connect(addr);
    // The third is in the listen backlog: its request is not read while two are open.
    let mut third = connect(addr);
    third
        .write_all(head("GET", "/health", &[]).as_bytes())
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 16];
    match third.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a third connection was served past the limit of 2: {other:?}"),
    }
    drop(first);
    let r = read_response(third);
    assert_eq!(r.status, 200, "{}", r.text());
    drop(second);
    assert_alive(addr);
}

#[test]
fn request_over_the_timeout_gets_504_and_frees_its_worker() {
    let addr = short_deadline();
    let long = std::fs::read(common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let cancelled = metric(addr, "amanuensis_cancelled_total");
    let r = transcribe(addr, &long, &[]);
    assert_error(&r, 504, "timeout_error", None, "timeout");
    // The 75-s recording is stopped at its next graph run, not transcribed to its end.
    wait_until("the worker is freed", || {
        metric(addr, "amanuensis_workers_busy") == 0.0
            && metric(addr, "amanuensis_cancelled_total") > cancelled
    });
    assert_eq!(metric(addr, "amanuensis_audio_seconds_total"), 0.0);
    assert_eq!(get(addr, "/ready").status, 200);
}

#[test]
fn full_queue_answers_429_and_a_disconnect_cancels_work() {
    let addr = start(ServeOptions {
        max_queue: 1,
        max_body: 4 << 20,
        ..options()
    });
    let long = std::fs::read(common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let body = multipart(&[
        ("model", Part::Text("whisper-1")),
        ("file", Part::File("long.wav", &long)),
    ]);
    let open = |body: &[u8]| {
        let mut s = connect(addr);
        let mut h = form_headers(Some(KEY));
        h.push(("Content-Length", body.len().to_string()));
        s.write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
            .unwrap();
        s.write_all(body).unwrap();
        s
    };
    let first = open(&body);
    wait_until("the first request is transcribing", || {
        metric(addr, "amanuensis_workers_busy") == 1.0
    });
    let second = open(&body);
    wait_until("the second request is queued", || {
        metric(addr, "amanuensis_queue_depth") == 1.0
    });
    assert_eq!(get(addr, "/ready").status, 503);
    let r = transcribe(addr, &jfk_wav(), &[]);
    assert_error(&r, 429, "rate_limit_error", None, "queue_full");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Both clients go away: the running transcription stops, the queued one never starts.
    drop(first);
    drop(second);
    wait_until("both are cancelled and the worker is free", || {
        metric(addr, "amanuensis_cancelled_total") == 2.0
            && metric(addr, "amanuensis_workers_busy") == 0.0
            && metric(addr, "amanuensis_queue_depth") == 0.0
    });
    assert_eq!(metric(addr, "amanuensis_audio_seconds_total"), 0.0);
    assert_alive(addr);
}

#[test]
fn a_client_that_leaves_mid_stream_cancels_its_work() {
    let addr = start(ServeOptions {
        max_body: 8 << 20,
        ..options()
    });
    // 75 s of speech: the first window's text arrives while the later windows are decoded.
    let long = std::fs::read(common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let mut stream = open_stream(addr, &long);
    assert_eq!(stream.status, 200);
    let first = loop {
        let events = stream.next_events().expect("a delta before the end");
        if let Some((_, e)) = events.into_iter().next() {
            break e;
        }
    };
    assert_eq!(first["type"], "transcript.text.delta", "{first}");
    assert_eq!(metric(addr, "amanuensis_requests_in_progress"), 1.0);
    // The client goes away with the later windows still to decode: their work stops.
    drop(stream);
    wait_until(
        "the streamed request is cancelled and its worker freed",
        || {
            metric(addr, "amanuensis_cancelled_total") == 1.0
                && metric(addr, "amanuensis_workers_busy") == 0.0
                && metric(addr, "amanuensis_requests_in_progress") == 0.0
        },
    );
    // Not counted as transcribed audio: it did not run to its end.
    assert_eq!(metric(addr, "amanuensis_audio_seconds_total"), 0.0);
    assert_alive(addr);
    let r = transcribe(addr, &jfk_wav(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["text"], JFK);
}

#[test]
fn sigterm_finishes_accepted_requests_then_exits_0() {
    // Alone (the default) and batched: with batching one worker holds several requests.
    for batch_size in ["1", "4"] {
        sigterm_with_requests_in_flight(batch_size);
    }
}

fn sigterm_with_requests_in_flight(batch_size: &str) {
    let mut child = common::cli()
        .args([
            "serve",
            "--port",
            "0",
            "--device",
            "cpu",
            "--max-queue",
            "8",
            "--batch-size",
            batch_size,
            // Long enough that only the stop itself can close the idle connections below.
            "--header-timeout",
            "10m",
        ])
        .env_remove("AMANUENSIS_API_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("amanuensis serve starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the server exited before listening");
        }
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let body = multipart(&[
        ("model", Part::Text("whisper-1")),
        ("file", Part::File("jfk.wav", &jfk_wav())),
    ]);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut h = form_headers(None);
                h.push(("Content-Length", body.len().to_string()));
                let mut s = connect(addr);
                s.write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
                    .unwrap();
                s.write_all(&body).unwrap();
                read_response(s)
            })
        })
        .collect();
    let plain = |path: &str| {
        read_response({
            let mut s = connect(addr);
            s.write_all(head("GET", path, &[]).as_bytes()).unwrap();
            s
        })
    };
    wait_until("all three requests are accepted", || {
        let m = plain("/metrics").text();
        let v = |n: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(&format!("{n} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // One that is already answered counts too (11 s of audio each), so that a busy
        // machine polling late does not wait forever for a state that has passed.
        let answered = (v("amanuensis_audio_seconds_total") / 11.0).round();
        v("amanuensis_requests_in_progress") + v("amanuensis_queue_depth") + answered == 3.0
    });
    // Connections with no request in progress must not hold the stop: one that sent half a
    // request head, one that sent nothing, and a kept-alive one that, after its answer,
    // sent half of its next request's head.
    let mut stalled = connect(addr);
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: lo")
        .unwrap();
    let silent = connect(addr);
    let mut kept = connect(addr);
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut kept_reader = BufReader::new(kept.try_clone().unwrap());
    let (status, headers) = read_head(&mut kept_reader);
    assert_eq!(status, 200);
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .expect("a /health answer has a length");
    kept_reader.read_exact(&mut vec![0; len]).unwrap();
    // ... and then half of its next request's head.
    kept.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "batch size {batch_size}: {}", r.text());
        assert_eq!(r.json()["text"], JFK, "batch size {batch_size}");
    }
    let answered = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("server status") {
            break exit;
        }
        if answered.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("batch size {batch_size}: the server still ran 60 s after its last answer");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop((stalled, silent, kept));
    assert_eq!(
        exit.code(),
        Some(0),
        "batch size {batch_size}: exit status {exit:?}"
    );
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(
        rest.contains("every accepted request was answered"),
        "{rest}"
    );
}

#[test]
fn model_replica_transcribes_alike_and_its_interrupt_stops_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let model = common::load_model();
    let mut replica = model
        .replica(&amanuensis_operators::standard_registry())
        .expect("replica");
    let pcm = amanuensis::audio::decode_audio_bytes(jfk_wav(), Some("wav")).unwrap();
    let opts = amanuensis::TranscribeOptions {
        without_timestamps: true,
        ..Default::default()
    };
    assert_eq!(replica.transcribe_pcm(&pcm, &opts).unwrap().text, JFK);
    let flag = Arc::new(AtomicBool::new(true));
    replica.interrupt = Some(flag.clone());
    let e = replica.transcribe_pcm(&pcm, &opts).unwrap_err();
    assert!(
        matches!(e, amanuensis::Error::Interrupted),
        "interrupted, not {e}"
    );
    flag.store(false, Ordering::Relaxed);
    assert_eq!(replica.transcribe_pcm(&pcm, &opts).unwrap().text, JFK);
}

/// Requests waiting together are transcribed as one batch (their first windows decoded in
/// lockstep), each answered with the transcript it gets alone; a request among them whose
/// client leaves is cancelled without disturbing the others.
#[test]
fn concurrent_requests_are_batched_and_each_gets_its_own_transcript() {
    let addr = start(ServeOptions {
        max_body: 4 << 20,
        ..options()
    });
    let dir = common::data_dir().join("audio");
    let files = [
        "jfk.wav",
        "fleurs_en_000.wav",
        "librivox_ss_0870.wav",
        "ljspeech_LJ050-0131.wav",
    ];
    let clips: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let alone: Vec<String> = clips
        .iter()
        .map(|c| {
            let r = transcribe(addr, c, &[]);
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(alone[0], JFK);
    assert_eq!(metric(addr, "amanuensis_batches_total"), 0.0);
    // Keep the worker busy so that the next requests wait together in the queue.
    let long = std::fs::read(dir.join("long_public_concat.wav")).unwrap();
    let blocker = std::thread::spawn(move || transcribe(addr, &long, &[]).status);
    // The worker's busy gauge may still count the last request above, whose answer has
    // already arrived; a request in progress with none queued is the long one, taken.
    wait_until("the long request is transcribing", || {
        metric(addr, "amanuensis_requests_in_progress") == 1.0
            && metric(addr, "amanuensis_queue_depth") == 0.0
    });
    let waiting: Vec<_> = clips
        .into_iter()
        .map(|c| std::thread::spawn(move || transcribe(addr, &c, &[])))
        .collect();
    // One more client sends its request and leaves.
    let body = multipart(&[
        ("model", Part::Text("whisper-1")),
        ("file", Part::File("jfk.wav", &jfk_wav())),
    ]);
    let mut h = form_headers(Some(KEY));
    h.push(("Content-Length", body.len().to_string()));
    let mut leaving = connect(addr);
    leaving
        .write_all(head("POST", "/v1/audio/transcriptions", &h).as_bytes())
        .unwrap();
    leaving.write_all(&body).unwrap();
    wait_until("every request is queued", || {
        metric(addr, "amanuensis_queue_depth") == 5.0
    });
    drop(leaving);
    assert_eq!(blocker.join().unwrap(), 200);
    for ((t, want), file) in waiting.into_iter().zip(&alone).zip(files) {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{file}: {}", r.text());
        assert_eq!(r.json()["text"].as_str().unwrap(), want, "{file}");
    }
    // The leaving request may be among the first four taken (and dropped there), so at
    // least three of the four clips were decoded together.
    assert!(metric(addr, "amanuensis_batches_total") >= 1.0);
    assert!(metric(addr, "amanuensis_batched_requests_total") >= 3.0);
    wait_until("the leaving client's request is cancelled", || {
        metric(addr, "amanuensis_cancelled_total") == 1.0
    });
    assert_alive(addr);
}

/// `--vad` on the server: a request of noise, speech, silence and a tone is answered with
/// the speech's text alone, at the recording's times.
#[test]
fn vad_filter_transcribes_only_the_speech_at_the_recordings_times() {
    let addr = start(ServeOptions {
        max_body: 4 << 20,
        vad: Some(amanuensis::serve::VadFilter {
            dir: common::vad_dir(),
            options: amanuensis::vad::VadOptions::default(),
        }),
        ..options()
    });
    let body = crate::vad::wav(&crate::vad::noise_speech_silence_tone());
    let r = transcribe(
        addr,
        &body,
        &[("response_format", Part::Text("verbose_json"))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let words = |t: &str| -> String {
        t.chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .to_lowercase()
    };
    assert_eq!(words(v["text"].as_str().unwrap().trim()), words(JFK));
    let start = v["segments"][0]["start"].as_f64().unwrap();
    assert!((start - 25.0).abs() <= 0.3, "first segment at {start} s");
    assert!((v["duration"].as_f64().unwrap() - 61.0).abs() < 0.01);
}
