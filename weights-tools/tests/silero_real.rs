//! The Silero VAD converter on the real `silero_vad_v6.onnx`, as placed by
//! `scripts/fetch-model.sh vad`: `<models>/silero-vad-src/silero_vad_v6.onnx` (the verified
//! source) and `<models>/silero-vad/` (the converted model), where `<models>` is
//! `$AMANUENSIS_MODELS` or `<workspace>/models`.
//!
//! When the file is absent these tests print that they are skipped, unless
//! `AMANUENSIS_REQUIRE_MODELS` is set, which makes its absence a failure.

use std::path::{Path, PathBuf};

use crate::common::*;
use amanuensis_weights_tools::convert::sha256_hex;
use amanuensis_weights_tools::onnx::OnnxError;
use amanuensis_weights_tools::silero::{
    convert_silero_vad, map_silero_bytes, SileroDims, VadConvertError, VadConvertOptions,
};
use amanuensis_weights_tools::st::SafetensorsFile;
use safetensors::Dtype;

/// sha256 of `faster_whisper/assets/silero_vad_v6.onnx` in faster-whisper 1.2.1.
const SOURCE_SHA256: &str = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2";

/// Each output tensor's shape and the sha256 of its f32 LE bytes, computed independently
/// with the `onnx` Python package (numpy arrays of the mapped initializers).
const TENSORS: [(&str, &[usize], &str); 14] = [
    (
        "decoder.out.bias",
        &[1],
        "fdf35d0e2e9745ec365fcbf302a2e1baca0c65a7eb74b77553980e5ac699d5ae",
    ),
    (
        "decoder.out.weight",
        &[1, 128],
        "8d8d9d049452e1e4ee055ed63f9ba333b78604f06de59d3110b594ef825c8c11",
    ),
    (
        "decoder.rnn.bias",
        &[1024],
        "7749ecea6e2e3508029584571e0005f651e3a317680125ac80e56d1e482b71f1",
    ),
    (
        "decoder.rnn.weight_hh",
        &[512, 128],
        "77d739cded26ac3db2884961c1ab43897f27b30df418a15e257d972232b31080",
    ),
    (
        "decoder.rnn.weight_ih",
        &[512, 128],
        "d9d3f5d1e31deb6a9ef2ea12af6ae356d9c9cc84230bb280a474f2b11ea6e6ee",
    ),
    (
        "encoder.conv_layers.0.bias",
        &[128],
        "2fc8e47e334c0a4b75e409fbc6f4cebb273415a0033ea9556ef9f61ba1c171be",
    ),
    (
        "encoder.conv_layers.0.weight",
        &[128, 129, 3],
        "a92e5738625f0ff6f6f0040acb60cd04cee6004a5eae186fc668734f42561bbf",
    ),
    (
        "encoder.conv_layers.1.bias",
        &[64],
        "0bb7d324d0132fb0bad269b95e0488231bd9dc32bd1efaa72fd9625c1a056af0",
    ),
    (
        "encoder.conv_layers.1.weight",
        &[64, 128, 3],
        "cf584c08db8bc7ccb4bb0ff15df32ef9cc3592c25719419f301b7a80e269719d",
    ),
    (
        "encoder.conv_layers.2.bias",
        &[64],
        "f365efd052d4684a687a17346bfb0f9f314dd1ac026919dbca431ed069f82f9e",
    ),
    (
        "encoder.conv_layers.2.weight",
        &[64, 64, 3],
        "6d704d150603e86ba1207f0781af0647ea5c3bc2e28823cc380092e8b66b3ef9",
    ),
    (
        "encoder.conv_layers.3.bias",
        &[128],
        "0c98e9449cd914c70804f640e3a8c6db0d37e8a61fa109e139b456a420ce4c7e",
    ),
    (
        "encoder.conv_layers.3.weight",
        &[128, 64, 3],
        "ad94ea7e2472060ff0a17e906f4bd41fd56a6a17e84a4ea8bf9baa7486e5f8b4",
    ),
    (
        "stft.basis",
        &[258, 1, 256],
        "3b69ddad309d34245d2960d93be421e5a99360c26e200e7efb309da25b6eecd9",
    ),
];

/// The models directories searched, in order.
fn models_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("AMANUENSIS_MODELS") {
        v.push(PathBuf::from(d));
    }
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    v
}

/// `<models>` holding `silero-vad-src/silero_vad_v6.onnx`; `None` (after saying so) when
/// the fetch script has not been run, unless `AMANUENSIS_REQUIRE_MODELS` is set.
fn real_models_dir(test: &str) -> Option<PathBuf> {
    let dirs = models_dirs();
    if let Some(d) = dirs
        .iter()
        .find(|d| d.join("silero-vad-src/silero_vad_v6.onnx").is_file())
    {
        return Some(d.clone());
    }
    let where_ = dirs
        .iter()
        .map(|d| {
            d.join("silero-vad-src/silero_vad_v6.onnx")
                .display()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(" or ");
    if std::env::var_os("AMANUENSIS_REQUIRE_MODELS").is_some_and(|v| !v.is_empty()) {
        panic!("Silero VAD source not found at {where_}: run `scripts/fetch-model.sh vad` first (AMANUENSIS_REQUIRE_MODELS is set)");
    }
    eprintln!(
        "{test}: skipped: Silero VAD source not found at {where_} (run `scripts/fetch-model.sh vad`; set AMANUENSIS_REQUIRE_MODELS=1 to fail instead)"
    );
    None
}

#[test]
fn converting_the_real_silero_vad_v6_gives_the_pinned_tensors() {
    let Some(models) =
        real_models_dir("converting_the_real_silero_vad_v6_gives_the_pinned_tensors")
    else {
        return;
    };
    let src = models.join("silero-vad-src/silero_vad_v6.onnx");
    let out = scratch("silero-real");
    let s = convert_silero_vad(&VadConvertOptions {
        input: src.clone(),
        output: out.clone(),
    })
    .unwrap();
    assert_eq!(
        s.source_sha256,
        SOURCE_SHA256,
        "{} is not the pinned file",
        src.display()
    );
    assert_eq!(s.tensor_count, 14);
    assert_eq!(s.parameters, 309_633);

    let st = SafetensorsFile::read(&out.join("model.safetensors")).unwrap();
    let mut got: Vec<(String, Vec<usize>, String)> = st
        .tensors
        .iter()
        .map(|t| {
            assert_eq!(t.dtype, Dtype::F32);
            let data = st.tensor_data(&t.name).unwrap();
            (t.name.clone(), t.shape.clone(), sha256_hex(data))
        })
        .collect();
    got.sort();
    let want: Vec<(String, Vec<usize>, String)> = TENSORS
        .iter()
        .map(|(n, s, h)| (n.to_string(), s.to_vec(), h.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(st.metadata["source_producer"], "pytorch 2.8.0");
    assert_eq!(st.metadata["source_opset"], "18");
    assert_eq!(st.metadata["source_ir_version"], "8");

    // The model the fetch script converted holds the same tensors, when it is there.
    let fetched = models.join("silero-vad/model.safetensors");
    if fetched.is_file() {
        let f = SafetensorsFile::read(&fetched).unwrap();
        assert_eq!(f.tensors.len(), 14);
        for t in &st.tensors {
            assert!(
                f.tensor_data(&t.name) == st.tensor_data(&t.name),
                "{}: '{}' differs from a fresh conversion",
                fetched.display(),
                t.name
            );
        }
        let cfg = std::fs::read_to_string(models.join("silero-vad/config.json")).unwrap();
        assert_eq!(
            cfg,
            std::fs::read_to_string(out.join("config.json")).unwrap()
        );
    }
}

#[test]
fn the_real_silero_vad_truncated_or_corrupted_is_refused() {
    let Some(models) = real_models_dir("the_real_silero_vad_truncated_or_corrupted_is_refused")
    else {
        return;
    };
    let bytes = std::fs::read(models.join("silero-vad-src/silero_vad_v6.onnx")).unwrap();
    let v6 = SileroDims::V6;
    for frac in [0.1, 0.5, 0.7, 0.99] {
        let cut = (bytes.len() as f64 * frac) as usize;
        let e = map_silero_bytes(&bytes[..cut], "real.onnx", &v6).unwrap_err();
        assert!(
            matches!(e, VadConvertError::Onnx(OnnxError::Decode { .. })),
            "cut at {cut}: {e}"
        );
    }
    // The real model at the tiny sizes: the first size check (the padding) fails.
    let e = map_silero_bytes(&bytes, "real.onnx", &SileroDims::TINY).unwrap_err();
    assert!(
        e.to_string()
            .contains("pads are [0, 128, 0, 128], expected [0, 4, 0, 4]"),
        "{e}"
    );
}
