//! Batched decoding: several 30-s windows through one `decoder_step+windows` run per
//! token. Each window's tokens must equal its own decoding alone (same prompt, no
//! previous text), the batched transcription must stay as accurate as the sequential
//! one, and bad batch sizes are refused.

use crate::common;
use crate::common::wer::{read_manifest, word_errors};
use amanuensis::audio::load_audio;
use amanuensis::decoding::{BeamOptions, FallbackOptions};
use amanuensis::lockstep::LockstepWindow;
use amanuensis::model::mel_window;
use amanuensis::{Error, TranscribeOptions};
use amanuensis_runtime::Tensor;

const N_FRAMES: usize = 3000;

/// The cross K/V of every consecutive 30-s window of `long_public_concat.wav` (3 windows).
fn windows(model: &mut amanuensis::WhisperModel) -> Vec<Vec<Tensor>> {
    let pcm = load_audio(&common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let mel = model.features(&pcm).unwrap();
    let frames = mel.shape()[1];
    (0..frames)
        .step_by(N_FRAMES)
        .map(|seek| {
            let w = mel_window(&mel, seek, N_FRAMES.min(frames - seek)).unwrap();
            model.encode_cross(&w).unwrap()
        })
        .collect()
}

/// The batched encoder (`encoder+cross_kv+windows`, one run for 3 windows) gives each
/// window's cross K/V as the encoder run on that window alone: the same GEMMs over more
/// rows, so the values agree to within f32 rounding of the summation order (bound:
/// 1e-4 of the largest magnitude of each layer's output), and the lockstep decode of the
/// stacked output gives each window's tokens decoded alone.
#[test]
fn batched_encoder_equals_each_window_encoded_alone() {
    let mut model = common::load_model();
    let pcm = load_audio(&common::data_dir().join("audio/long_public_concat.wav")).unwrap();
    let mel = model.features(&pcm).unwrap();
    let frames = mel.shape()[1];
    let mels: Vec<Tensor> = (0..frames)
        .step_by(N_FRAMES)
        .map(|seek| mel_window(&mel, seek, N_FRAMES.min(frames - seek)).unwrap())
        .collect();
    assert_eq!(mels.len(), 3);
    let t = std::time::Instant::now();
    let alone: Vec<Vec<Tensor>> = mels
        .iter()
        .map(|m| model.encode_cross(m).unwrap())
        .collect();
    let t_alone = t.elapsed();
    let t = std::time::Instant::now();
    let stacked = model
        .encode_cross_windows(&mels)
        .unwrap()
        .expect("the CPU model has a batched encoder");
    let t_batch = t.elapsed();
    eprintln!("3 windows: one by one {t_alone:.2?}, as one batch {t_batch:.2?}");
    assert_eq!(stacked.len(), alone[0].len());
    for (layer, s) in stacked.iter().enumerate() {
        let one = alone[0][layer].shape();
        assert_eq!(s.shape(), [&[3][..], one].concat(), "layer {layer}");
        let each = s.numel() / 3;
        for (w, a) in alone.iter().enumerate() {
            let (b, a) = (
                &s.f32s().unwrap()[w * each..(w + 1) * each],
                a[layer].f32s().unwrap(),
            );
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst <= 1e-4 * scale,
                "window {w} layer {layer}: off by {worst} (largest magnitude {scale})"
            );
        }
    }
    let prompt = model
        .tokenizer
        .sot_sequence(Some("en"), false, false)
        .unwrap();
    let opts = model.decode_options(false);
    let beam = BeamOptions::default();
    let lockstep: Vec<LockstepWindow> = alone
        .iter()
        .map(|cross| LockstepWindow {
            cross,
            prompt: &prompt,
            opts: &opts,
            interrupt: None,
        })
        .collect();
    let (from_stack, _) = model
        .decode_windows_lockstep(&lockstep, Some(stacked), &beam)
        .unwrap();
    let (from_each, _) = model
        .decode_windows_lockstep(&lockstep, None, &beam)
        .unwrap();
    for (w, (a, b)) in from_stack.into_iter().zip(from_each).enumerate() {
        assert_eq!(a.unwrap().tokens, b.unwrap().tokens, "window {w}");
    }
    // A stack of the wrong shape is refused, not read out of bounds.
    let bad = vec![Tensor::from_f32(&[1, 1], vec![0.0]).unwrap(); alone[0].len()];
    let err = model
        .decode_windows_lockstep(&lockstep, Some(bad), &beam)
        .unwrap_err();
    assert!(err.to_string().contains("stacked cross K/V"), "{err}");
}

/// Each window decoded in lockstep gives the tokens it gives alone, with beam search and
/// greedily, with and without timestamps.
#[test]
fn lockstep_windows_equal_each_window_decoded_alone() {
    lockstep_equals_alone(&mut common::load_model(), &[false, true]);
}

/// The same at the int8 compute type (the command line's default on a CPU with a vector
/// int8 path), whose logits projection takes another product on AMX tiles
/// (`linear_w8_split_on`) at every row count: one window's rows and a batch's three must
/// get the same bits.
#[test]
fn lockstep_windows_equal_each_window_decoded_alone_at_int8() {
    let spec = amanuensis::DeviceSpec {
        compute: amanuensis::compute::ComputeType::Int8,
        ..amanuensis::DeviceSpec::default()
    };
    let graph = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph");
    let mut model = amanuensis::WhisperModel::load_on(
        &common::model_dir(),
        Some(&graph),
        &amanuensis_operators::standard_registry(),
        &spec,
    )
    .expect("model loads at int8");
    lockstep_equals_alone(&mut model, &[false]);
}

fn lockstep_equals_alone(model: &mut amanuensis::WhisperModel, timestamp_modes: &[bool]) {
    let crosses = windows(model);
    assert_eq!(crosses.len(), 3);
    for &without_timestamps in timestamp_modes {
        let prompt = model
            .tokenizer
            .sot_sequence(Some("en"), false, without_timestamps)
            .unwrap();
        let opts = model.decode_options(without_timestamps);
        for beam_size in [5, 1] {
            let beam = BeamOptions {
                beam_size,
                ..BeamOptions::default()
            };
            let first_try_only = FallbackOptions {
                temperatures: vec![0.0],
                beam,
                ..FallbackOptions::default()
            };
            let alone: Vec<Vec<u32>> = crosses
                .iter()
                .map(|c| {
                    model
                        .decode_window(c, &prompt, &opts, &first_try_only)
                        .unwrap()
                        .0
                        .tokens
                })
                .collect();
            let lockstep: Vec<LockstepWindow> = crosses
                .iter()
                .map(|cross| LockstepWindow {
                    cross,
                    prompt: &prompt,
                    opts: &opts,
                    interrupt: None,
                })
                .collect();
            let (together, stats) = model
                .decode_windows_lockstep(&lockstep, None, &beam)
                .unwrap();
            assert_eq!(stats.rows, 3 * beam_size);
            let longest = alone.iter().map(Vec::len).max().unwrap();
            assert!(
                stats.steps >= longest && stats.steps <= longest + 2,
                "{} steps for at most {longest} tokens",
                stats.steps
            );
            // A window that finished left the batch: each decoded at least its own
            // tokens' steps, and the batch did not carry the shorter ones to the end.
            let tokens: usize = alone.iter().map(Vec::len).sum();
            assert!(
                stats.row_steps >= beam_size * tokens,
                "{} rows run for {tokens} tokens at beam {beam_size}",
                stats.row_steps
            );
            let shortest = alone.iter().map(Vec::len).min().unwrap();
            if shortest + 2 < longest {
                assert!(
                    stats.row_steps < stats.steps * stats.rows,
                    "{} rows over {} runs of {}: finished windows stayed in the batch",
                    stats.row_steps,
                    stats.steps,
                    stats.rows
                );
            }
            for (w, (a, t)) in alone.iter().zip(together).enumerate() {
                assert_eq!(
                    a,
                    &t.unwrap().tokens,
                    "window {w}, beam {beam_size}, without timestamps {without_timestamps}"
                );
            }
        }
    }
}

/// A window whose own stop flag is set stops; the others in its batch finish as alone.
#[test]
fn a_stopped_window_leaves_its_batch_and_the_others_finish() {
    use std::sync::atomic::AtomicBool;
    let mut model = common::load_model();
    let crosses = windows(&mut model);
    let prompt = model
        .tokenizer
        .sot_sequence(Some("en"), false, false)
        .unwrap();
    let opts = model.decode_options(false);
    let beam = BeamOptions::default();
    let stopped = AtomicBool::new(true);
    let lockstep: Vec<LockstepWindow> = crosses
        .iter()
        .enumerate()
        .map(|(i, cross)| LockstepWindow {
            cross,
            prompt: &prompt,
            opts: &opts,
            interrupt: (i == 1).then_some(&stopped),
        })
        .collect();
    let (together, _) = model
        .decode_windows_lockstep(&lockstep, None, &beam)
        .unwrap();
    let first_try_only = FallbackOptions {
        temperatures: vec![0.0],
        ..FallbackOptions::default()
    };
    let mut together = together.into_iter();
    for (w, cross) in crosses.iter().enumerate() {
        let result = together.next().unwrap();
        if w == 1 {
            assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
        } else {
            let alone = model
                .decode_window(cross, &prompt, &opts, &first_try_only)
                .unwrap()
                .0;
            assert_eq!(result.unwrap().tokens, alone.tokens, "window {w}");
        }
    }
}

/// Consecutive windows without previous text, 3 at a time, in recording order, on the
/// long concatenation. Less accurate than the sequential loop, whose seeking by
/// timestamps never cuts a word and whose previous text conditions the next window: 15
/// word errors of 165 against 9 when measured (docs/performance.md); bounded here at 5
/// points of word error rate above the sequential loop's.
#[test]
fn batched_transcription_is_as_accurate_as_sequential() {
    let dir = common::data_dir().join("audio");
    let manifest = read_manifest(&dir.join("manifest.tsv")).unwrap();
    let reference = &manifest
        .iter()
        .find(|r| r.file == "long_public_concat.wav")
        .unwrap()
        .transcript;
    let pcm = load_audio(&dir.join("long_public_concat.wav")).unwrap();
    let mut model = common::load_model();
    let opts = TranscribeOptions {
        language: Some("en".into()),
        ..TranscribeOptions::default()
    };
    let sequential = model.transcribe_pcm(&pcm, &opts).unwrap();
    let batched = model
        .transcribe_pcm(
            &pcm,
            &TranscribeOptions {
                batch_size: 3,
                ..opts.clone()
            },
        )
        .unwrap();
    let (e_seq, n) = word_errors(reference, &sequential.text);
    let (e_bat, _) = word_errors(reference, &batched.text);
    eprintln!("sequential {e_seq}/{n} word errors, batched {e_bat}/{n}");
    assert!(
        (e_bat as f64 - e_seq as f64) / n as f64 <= 0.05,
        "batched {e_bat} vs sequential {e_seq} errors of {n} words:\n{}",
        batched.text
    );
    assert!(batched.timings.windows >= 3);
    let cuts = amanuensis::window_loop::window_cuts(7549, &[]);
    assert_eq!(cuts, [(0, 3000), (3000, 3000), (6000, 1549)]);
    for pair in batched.segments.windows(2) {
        assert!(pair[0].start <= pair[1].start, "{pair:?}");
    }
    // Each window's segments lie inside it.
    for s in &batched.segments {
        let window_start = s.seek as f64 / 100.0;
        assert!(
            s.start >= window_start - 0.5 && s.end <= window_start + 30.5,
            "{s:?}"
        );
    }

    // Stopped after its first batch (`stop_early`, the CLI's Ctrl-C), a batched
    // transcription keeps that batch's windows, as the whole run decoded them (each
    // window's tokens do not depend on its batch), and says where the rest begins.
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    model.stop_early = Some(stop.clone());
    let mut done = Vec::new();
    let part = model
        .transcribe_pcm_with_progress(
            &pcm,
            &TranscribeOptions {
                batch_size: 2,
                ..opts.clone()
            },
            &mut |p| {
                done.push(p.done);
                stop.store(true, Ordering::Relaxed);
            },
        )
        .unwrap();
    model.stop_early = None;
    // Two windows' progress, then the stop: where the third window starts.
    assert_eq!(done.len(), 2, "{done:?}");
    let at = part.stopped_at.expect("stopped before the end");
    assert_eq!(f64::from(at), done[1] as f32 as f64);
    let third = batched
        .segments
        .iter()
        .map(|s| s.seek)
        .filter(|&seek| seek > 0)
        .collect::<std::collections::BTreeSet<_>>();
    let third = *third.iter().nth(1).expect("three windows with text");
    assert!(
        (f64::from(at) - third as f64 / 100.0).abs() < 0.011,
        "{at} vs {third}"
    );
    let kept = batched.segments.iter().filter(|s| s.seek < third).count();
    assert_eq!(part.segments.len(), kept);
    for (p, w) in part.segments.iter().zip(&batched.segments) {
        assert_eq!((&p.text, p.seek), (&w.text, w.seek));
    }
}

#[test]
fn lockstep_decoding_on_one_kernel_thread_finishes_with_the_same_transcript() {
    // The lockstep coordinator runs on a thread of the kernels' pool while the windows'
    // threads hand that pool their beam rows; with one kernel thread it once waited for
    // them on the only pool thread, and the decode hung. It must finish, with the bits of
    // two threads.
    let file = common::data_dir().join("audio/long_public_concat.wav");
    let run = |threads: &str| {
        let mut child = common::cli()
            .args(["transcribe", "--threads", threads, "--batch-size", "3"])
            .args(["--beam-size", "5", "--language", "en", "-q", "--json"])
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("--threads {threads} --batch-size 3 did not finish in 300 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let one = run("1");
    assert!(one.contains("\"segments\""), "{one}");
    assert_eq!(one, run("2"));
}

#[test]
fn batch_size_zero_or_absurd_is_refused() {
    let mut model = common::load_model();
    let pcm = vec![0f32; 16_000];
    for batch_size in [0, 65, 100_000] {
        let opts = TranscribeOptions {
            batch_size,
            ..TranscribeOptions::default()
        };
        let err = model.transcribe_pcm(&pcm, &opts).unwrap_err();
        assert!(
            matches!(err, Error::BatchSize { given, max: 64 } if given == batch_size),
            "{err}"
        );
    }
    for arg in ["0", "65", "eight"] {
        let out = common::cli()
            .args(["transcribe", "--batch-size", arg, "samples/jfk.wav"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--batch-size {arg} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--batch-size"), "{err}");
    }
}

/// Prints the word error rate of the text in the file `$WER_HYP` against the text in
/// `$WER_REF`, scored as every accuracy test scores (docs/performance.md's batch
/// figures): `WER_REF=ref.txt WER_HYP=hyp.txt cargo test --release --test integration --
/// --ignored --nocapture batch::wer_of_files`.
#[test]
#[ignore]
fn wer_of_files() {
    let read = |var: &str| {
        let path = std::env::var(var).unwrap_or_else(|_| panic!("set {var}"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let (errors, words) = word_errors(&read("WER_REF"), &read("WER_HYP"));
    println!(
        "WER {:.2} % ({errors}/{words} words)",
        100.0 * errors as f64 / words as f64
    );
}
