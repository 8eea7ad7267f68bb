//! Shared helpers of the integration tests: test data, the model, the reference fixture.
#![allow(dead_code)]

pub mod wer;

use std::path::{Path, PathBuf};

/// `tests/data/` of the source tree.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The converted whisper-base model directory. Fails with the command to run when the
/// model has not been fetched.
pub fn model_dir() -> PathBuf {
    let mut cands = Vec::new();
    if let Some(d) = std::env::var_os("AMANUENSIS_MODELS") {
        cands.push(PathBuf::from(d).join("whisper-base"));
    }
    cands.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/whisper-base"));
    for c in &cands {
        if c.join("model.safetensors").is_file() {
            return c.clone();
        }
    }
    panic!(
        "whisper-base model not found in {:?}: run `scripts/fetch-model.sh base` first (the README's test command does)",
        cands
    );
}

/// A tensor of the reference fixture as f32 (I32 tensors converted), with its shape.
pub fn fixture(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes =
        std::fs::read(data_dir().join("whisper-base-jfk.safetensors")).expect("fixture file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture parses");
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture tensor {name}: {e:?}"));
    let data = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        d => panic!("unexpected fixture dtype {d:?}"),
    };
    (data, t.shape().to_vec())
}

/// Fixture token ids.
pub fn fixture_tokens(name: &str) -> Vec<u32> {
    fixture(name).0.into_iter().map(|x| x as u32).collect()
}

/// Loads whisper-base with the committed graph file.
pub fn load_model() -> amanuensis::WhisperModel {
    let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph");
    amanuensis::WhisperModel::load(
        &model_dir(),
        Some(&graph),
        &amanuensis_operators::standard_registry(),
    )
    .expect("model loads")
}

/// Path of the `amanuensis` binary under test.
pub fn cli() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_amanuensis"));
    c.env("AMANUENSIS_MODELS", model_dir().parent().unwrap());
    c
}

/// The converted Silero VAD model directory. Fails with the command to run when it has not
/// been fetched.
pub fn vad_dir() -> PathBuf {
    let dir = model_dir().parent().unwrap().join("silero-vad");
    assert!(
        dir.join("model.safetensors").is_file(),
        "Silero VAD not found in {}: run `scripts/fetch-model.sh vad` first (the README's test command does)",
        dir.display()
    );
    dir
}

/// Loads Silero VAD with the built-in graph for a device (`cpu`, `npu-sim`).
pub fn load_vad(device: &str) -> amanuensis::vad::VadModel {
    let spec = amanuensis::DeviceSpec {
        device: device.into(),
        ..Default::default()
    };
    let d = spec.open().expect("device opens");
    amanuensis::vad::VadModel::load(
        &vad_dir(),
        None,
        &amanuensis_operators::standard_registry(),
        d.as_ref(),
        &spec.options,
    )
    .expect("Silero VAD loads")
}

/// `pcm` (16 kHz mono) as the bytes of a 32-bit float WAV file.
pub fn wav_16k_f32(pcm: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = pcm.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&(16_000u32 * 4).to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}
