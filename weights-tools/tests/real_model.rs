//! The converter on the real whisper-base model, as placed by `scripts/fetch-model.sh`:
//! `<models>/whisper-base-ct2/` (the verified CTranslate2 source) and `<models>/whisper-base/`
//! (the converted model), where `<models>` is `$AMANUENSIS_MODELS` or `<workspace>/models`.

use std::path::{Path, PathBuf};

use crate::common::*;
use amanuensis_weights_tools::convert::{
    convert_ct2, expected_tensor_count, ConvertError, ConvertOptions,
};
use amanuensis_weights_tools::ct2::{Ct2Error, Ct2Model};
use amanuensis_weights_tools::st::SafetensorsFile;
use amanuensis_whisper_config::{WhisperConfig, WhisperDims};
use safetensors::Dtype;

const SOURCE_SHA256: &str = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";

fn models_dir() -> PathBuf {
    match std::env::var_os("AMANUENSIS_MODELS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("models"),
    }
}

/// `(ct2 source dir, converted model dir)`; fails when the fetch script has not been run.
fn real_model() -> (PathBuf, PathBuf) {
    let m = models_dir();
    let (src, out) = (m.join("whisper-base-ct2"), m.join("whisper-base"));
    for f in [
        src.join("model.bin"),
        out.join("model.safetensors"),
        out.join("config.json"),
    ] {
        assert!(
            f.is_file(),
            "{} is missing: run scripts/fetch-model.sh first",
            f.display()
        );
    }
    (src, out)
}

fn base_dims() -> WhisperDims {
    WhisperDims::for_size("base").unwrap()
}

/// Copies the CT2 companion files (not model.bin) from `src` to `dst`.
fn copy_companions(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "vocabulary.txt", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
}

#[test]
fn converting_the_real_model_gives_the_openai_layout() {
    let (src, fetched) = real_model();
    let out = scratch("real-convert");
    let summary = convert_ct2(&ConvertOptions {
        input: src.clone(),
        output: out.clone(),
        name: None,
    })
    .unwrap();
    assert_eq!(
        summary.name, "whisper-base",
        "name derived from the dimensions"
    );
    assert_eq!(summary.dims, base_dims());
    assert_eq!(summary.source_sha256, SOURCE_SHA256);
    // 7 + 6*15 encoder + 4 + 6*24 decoder.
    assert_eq!(summary.tensor_count, 245);
    assert_eq!(expected_tensor_count(6, 6), 245);

    let st = SafetensorsFile::read(&out.join("model.safetensors")).unwrap();
    let mut got: Vec<(String, Vec<usize>)> = st
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    got.sort();
    assert_eq!(got, expected_tensors(512, 80, 1500, 448, 51865, 6, 6));
    assert!(
        st.tensors.iter().all(|t| t.dtype == Dtype::F16),
        "float16 kept"
    );
    // 145,206,285 payload bytes in model.bin, less 13 bytes of scalars and 18 zero key
    // biases of 512 float16 values.
    let data: usize = st.tensors.iter().map(|t| t.range.len()).sum();
    assert_eq!(data, 145_206_285 - 13 - 18 * 1024);
    assert_eq!(st.metadata["source_sha256"], SOURCE_SHA256);
    assert_eq!(st.metadata["layout"], "openai-whisper-v1");

    // Bit-exact against the CT2 payloads.
    let bin = std::fs::read(src.join("model.bin")).unwrap();
    let m = Ct2Model::parse(&bin, "model.bin").unwrap();
    let ct2 = |name: &str| m.resolve(name).unwrap().data;
    assert_eq!(
        st.tensor_data("decoder.token_embedding.weight").unwrap(),
        ct2("decoder/projection/weight")
    );
    assert_eq!(
        st.tensor_data("encoder.conv1.weight").unwrap(),
        ct2("encoder/conv1/weight")
    );
    let fused = ct2("encoder/layer_4/self_attention/linear_0/weight");
    let third = 512 * 512 * 2;
    assert_eq!(
        st.tensor_data("encoder.blocks.4.attn.query.weight")
            .unwrap(),
        &fused[..third]
    );
    assert_eq!(
        st.tensor_data("encoder.blocks.4.attn.key.weight").unwrap(),
        &fused[third..2 * third]
    );
    assert_eq!(
        st.tensor_data("encoder.blocks.4.attn.value.weight")
            .unwrap(),
        &fused[2 * third..]
    );
    let kv = ct2("decoder/layer_5/attention/linear_1/weight");
    assert_eq!(
        st.tensor_data("decoder.blocks.5.cross_attn.key.weight")
            .unwrap(),
        &kv[..third]
    );
    assert_eq!(
        st.tensor_data("decoder.blocks.5.cross_attn.value.weight")
            .unwrap(),
        &kv[third..]
    );
    let kv_bias = ct2("decoder/layer_5/attention/linear_1/bias");
    assert_eq!(
        st.tensor_data("decoder.blocks.5.cross_attn.value.bias")
            .unwrap(),
        &kv_bias[1024..]
    );
    // A known value: a LayerNorm gain is a float16 near 1, not a byte-shifted bit pattern.
    let g = st.tensor_data("decoder.ln.weight").unwrap();
    let g0 = half::f16::from_le_bytes([g[0], g[1]]).to_f32();
    assert!(g0 > 0.05 && g0 < 20.0, "decoder.ln.weight[0] = {g0}");

    // The fetched model holds the same tensors (its provenance may name another converter build).
    let prev = SafetensorsFile::read(&fetched.join("model.safetensors")).unwrap();
    assert_eq!(prev.tensors.len(), st.tensors.len());
    for t in &st.tensors {
        let p = prev
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} missing in the fetched model", t.name));
        assert_eq!((p.dtype, &p.shape), (t.dtype, &t.shape), "{}", t.name);
        assert!(
            prev.tensor_data(&t.name).unwrap() == st.tensor_data(&t.name).unwrap(),
            "{} differs",
            t.name
        );
    }

    // config.json.
    let cfg: WhisperConfig =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg.name, "whisper-base");
    assert_eq!(cfg.dims, base_dims());
    assert_eq!(cfg.suppress_ids.len(), 88);
    assert_eq!(cfg.suppress_ids_begin, vec![220, 50257]);
    assert_eq!(cfg.lang_ids, (50259..=50357).collect::<Vec<u32>>());
    assert_eq!(
        cfg.alignment_heads,
        vec![
            [3, 1],
            [4, 2],
            [4, 3],
            [4, 7],
            [5, 1],
            [5, 2],
            [5, 4],
            [5, 6]
        ]
    );
    let fetched_cfg: WhisperConfig =
        serde_json::from_slice(&std::fs::read(fetched.join("config.json")).unwrap()).unwrap();
    assert_eq!(fetched_cfg, cfg);
    for f in ["vocabulary.txt", "tokenizer.json"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(src.join(f)).unwrap(),
            "{f} copied"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_truncated_real_model_fails_with_the_offset() {
    let (src, _) = real_model();
    let dir = scratch("real-truncated");
    let bin = std::fs::read(src.join("model.bin")).unwrap();
    let cut = bin.len() * 7 / 10;
    copy_companions(&src, &dir.join("ct2"));
    std::fs::write(dir.join("ct2/model.bin"), &bin[..cut]).unwrap();
    let out = dir.join("out");
    let err = convert_ct2(&ConvertOptions {
        input: dir.join("ct2/model.bin"),
        output: out.clone(),
        name: None,
    })
    .unwrap_err();
    // 70 % lands inside the payload of an encoder weight (table in docs/ct2-format.md).
    match &err {
        ConvertError::Ct2(Ct2Error::Truncated {
            offset, what, left, ..
        }) => {
            assert!(
                *offset < cut && offset + left == cut,
                "offset {offset}, left {left}, cut {cut}"
            );
            assert!(
                what.starts_with("payload of 'decoder/")
                    || what.starts_with("payload of 'encoder/"),
                "{what}"
            );
        }
        other => panic!("expected a truncation error, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("model.bin: truncated at byte ") && msg.contains(" left)"),
        "{msg}"
    );
    assert!(
        !out.exists(),
        "a failed conversion created its output directory"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_real_safetensors_header_is_a_clear_error() {
    let (_, fetched) = real_model();
    let good = std::fs::read(fetched.join("model.safetensors")).unwrap();
    assert!(SafetensorsFile::from_bytes(good.clone(), Path::new("x")).is_ok());
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let dir = scratch("real-st-corrupt");
    let path = dir.join("model.safetensors");

    // Header length overwritten.
    let mut b = good.clone();
    b[..8].copy_from_slice(&(header_len as u64 + 1_000_000_000).to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let msg = SafetensorsFile::read(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "corrupt safetensors header in {}: ",
            path.display()
        )),
        "{msg}"
    );
    let limit_msg = format!(
        "header length {} exceeds the 100 MB limit",
        header_len + 1_000_000_000
    );
    assert!(msg.contains(&limit_msg), "{msg}");
    // Header length a little too long: the index swallows tensor bytes.
    let mut b = good.clone();
    b[..8].copy_from_slice(&(header_len as u64 + 8).to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let msg = SafetensorsFile::read(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "corrupt safetensors header in {}: ",
            path.display()
        )),
        "{msg}"
    );

    // Garbage JSON in the header, length intact.
    let mut b = good.clone();
    b[8 + header_len / 2..8 + header_len / 2 + 16].copy_from_slice(b"}}garbage!{{[[::");
    std::fs::write(&path, &b).unwrap();
    let msg = SafetensorsFile::read(&path).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "corrupt safetensors header in {}: ",
            path.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("not a valid safetensors JSON index"), "{msg}");

    // A truncated file.
    std::fs::write(&path, &good[..good.len() - 4096]).unwrap();
    let msg = SafetensorsFile::read(&path).unwrap_err().to_string();
    assert!(msg.starts_with("corrupt safetensors header in "), "{msg}");
    assert!(msg.contains("truncated or padded"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
