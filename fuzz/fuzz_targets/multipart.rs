//! The server's upload form: the bytes as the body of a `multipart/form-data` request
//! (boundary `AMANUENSIS-FUZZ`), parsed by axum's multipart reader and checked field by
//! field by `serve::request::read_form`, as `POST /v1/audio/transcriptions` does.
#![no_main]

use amanuensis::serve::request::read_form;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{header, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const BOUNDARY: &str = "AMANUENSIS-FUZZ";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    amanuensis_fuzz::begin_input(data.len());
    let languages = vec!["en".to_string(), "de".to_string()];
    let models = vec!["whisper-1".to_string(), "base".to_string()];
    runtime().block_on(async {
        let req = Request::builder()
            .method("POST")
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(data.to_vec()))
            .expect("a request");
        let Ok(mp) = Multipart::from_request(req, &()).await else {
            return;
        };
        // Half the input size as the body limit, so the too-large path runs too.
        let _ = read_form(mp, (data.len() / 2) as u64, Some(&languages), &models).await;
    });
});
