//! Regression tests for what fuzzing (`fuzz/`, `docs/reliability.md`) found in the audio
//! and tokenizer parsers; each test is named after its finding, and the fuzzer's input is
//! kept in `tests/data/fuzz-regressions/`.

use std::path::PathBuf;

use amanuensis::audio::{decode_audio_bytes, MAX_SAMPLE_MAGNITUDE};

fn regression_input(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-regressions")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A WAV file of IEEE float samples (tag 3) holding `samples` at `rate` Hz, mono.
fn float_wav(rate: u32, bits: u16, samples: &[f64]) -> Vec<u8> {
    let bytes = usize::from(bits / 8);
    let mut data = Vec::new();
    for &s in samples {
        if bits == 32 {
            data.extend_from_slice(&(s as f32).to_le_bytes());
        } else {
            data.extend_from_slice(&s.to_le_bytes());
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((4 + 8 + 16 + 8 + data.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&3u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * bytes as u32).to_le_bytes());
    out.extend_from_slice(&(bytes as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Found by the `audio` target: a float WAV whose samples include NaN made the resampler's
/// FFT fail inside rubato, which panicked ("Imaginary part of first value was non-zero").
#[test]
fn float_wav_with_nan_samples_does_not_panic_the_resampler() {
    let out = decode_audio_bytes(regression_input("audio-float-wav-nan-samples.wav"), None)
        .expect("the damaged float WAV decodes");
    assert!(!out.is_empty());
    assert!(out.iter().all(|s| s.is_finite()), "non-finite output");

    // NaN, infinities and huge values, at 16 kHz (no resampling) and at 44.1 kHz (the FFT
    // resampler), in 32- and 64-bit floats.
    let mut samples: Vec<f64> = (0..4410).map(|i| 0.5 * (i as f64 * 0.05).sin()).collect();
    for (i, v) in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e30,
        -1e300,
        f64::MAX,
    ]
    .into_iter()
    .enumerate()
    {
        samples[100 + 500 * i] = v;
    }
    for (rate, bits) in [(16_000, 32), (16_000, 64), (44_100, 32), (44_100, 64)] {
        let out = decode_audio_bytes(float_wav(rate, bits, &samples), None)
            .unwrap_or_else(|e| panic!("{rate} Hz, {bits} bits: {e}"));
        let expected = (samples.len() as u64 * 16_000).div_ceil(u64::from(rate)) as usize;
        assert!(
            out.len().abs_diff(expected) <= 1,
            "{} vs {expected}",
            out.len()
        );
        assert!(out.iter().all(|s| s.is_finite()), "{rate} Hz, {bits} bits");
        if rate == 16_000 {
            // Without resampling the bad samples come out as 0 or clipped, the rest as written.
            assert_eq!(out[100], 0.0);
            assert_eq!(f64::from(out[600]), MAX_SAMPLE_MAGNITUDE);
            assert_eq!(f64::from(out[1100]), -MAX_SAMPLE_MAGNITUDE);
            assert_eq!(out[7], (samples[7] as f32));
        }
    }
}
