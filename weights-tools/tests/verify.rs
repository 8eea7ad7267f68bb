//! `weights-tool verify`: the committed whisper-base graph against the converted weights,
//! and a doctored graph whose every mismatch is reported at once.

use crate::common;

use amanuensis_weights_tools::verify::verify;
use std::path::{Path, PathBuf};

fn weights() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = std::env::var_os("AMANUENSIS_MODELS")
        .map(PathBuf::from)
        .unwrap_or(root.join("models"));
    let w = dir.join("whisper-base/model.safetensors");
    assert!(
        w.is_file(),
        "{} is missing: run scripts/fetch-model.sh first",
        w.display()
    );
    w
}

fn graph() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("graphs/whisper-base.graph")
}

#[test]
fn committed_graph_matches_converted_weights() {
    let r = verify(&graph(), &weights()).unwrap();
    assert_eq!(r.problems, Vec::<String>::new());
    assert_eq!(r.declared, 245);
    assert_eq!(r.stored, 245);
    assert!(r.unused.is_empty(), "{:?}", r.unused);
}

#[test]
fn every_mismatch_is_reported_at_once() {
    let text = std::fs::read_to_string(graph()).unwrap();
    let bad = text
        .replacen(
            "\"name\":\"encoder.conv1.bias\",\"dtype\":\"f16\",\"shape\":[512]",
            "\"name\":\"encoder.conv1.bias\",\"dtype\":\"f16\",\"shape\":[256]",
            1,
        )
        .replacen(
            "\"name\":\"encoder.ln_post.weight\",\"dtype\":\"f16\"",
            "\"name\":\"encoder.ln_post.weight\",\"dtype\":\"f32\"",
            1,
        )
        .replacen(
            "\"name\":\"decoder.ln.bias\"",
            "\"name\":\"decoder.ln.offset\"",
            1,
        );
    let p = common::scratch("verify-bad").join("bad.graph");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bad).unwrap();
    let r = verify(&p, &weights()).unwrap();
    assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
    assert!(
        r.problems[0].contains("encoder.conv1.bias") && r.problems[0].contains("[256]"),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("encoder.ln_post.weight") && p.contains("f32")),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("decoder.ln.offset") && p.contains("missing")),
        "{:?}",
        r.problems
    );
    assert_eq!(r.unused, vec!["decoder.ln.bias".to_string()]);
}

#[test]
fn bad_graph_file_is_a_clear_error() {
    let p = common::scratch("verify-garbage").join("garbage.graph");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, "{ not json").unwrap();
    let e = verify(&p, &weights()).unwrap_err().to_string();
    assert!(
        e.contains("garbage.graph") && e.contains("not valid JSON"),
        "{e}"
    );
}
