//! The command line as a user runs it: the sample's transcript, JSON segments, and clear
//! errors (exit code ≠ 0, no panic) on bad inputs.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

const JFK_TEXT: &str =
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// Asserts that `text` has JFK_TEXT's words. Decoded with timestamps (subtitles, `-f
/// all`), whether a comma follows "And so" differs between hosts at every compute type,
/// f32 included (a Zen 4 host writes it, an AMX Xeon did not): the words are compared,
/// not the punctuation (`common::wer::normalize`).
fn assert_jfk_words(text: &str) {
    assert_eq!(
        crate::common::wer::normalize(text),
        crate::common::wer::normalize(JFK_TEXT),
        "{text}"
    );
}

fn run(args: &[&str]) -> Output {
    common::cli().args(args).output().expect("run amanuensis")
}

fn sample() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/jfk.wav")
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: exit code ≠ 0, an `error:` line containing every `needle`, no panic.
fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains("error:"), "no error line: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks '{n}': {err}");
    }
}

#[test]
fn transcribes_the_sample_exactly() {
    let o = run(&["transcribe", &sample()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end_matches('\n'),
        JFK_TEXT
    );
}

#[test]
fn bf16_tiles_on_request_still_transcribe_the_sample_exactly() {
    // AMANUENSIS_BF16_TILES=1 puts the encoder's bf16 products (the first block's too) on
    // AMX tiles where the CPU has them (elsewhere it changes nothing); their sums come in
    // another order, and the sample must still come out exact.
    let o = common::cli()
        .env("AMANUENSIS_BF16_TILES", "1")
        .args(["transcribe", "--compute-type", "int8", &sample()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end_matches('\n'),
        JFK_TEXT
    );
}

#[test]
fn a_narrower_int8_path_writes_the_same_json() {
    // Every int8 path gives the same bits (docs/kernels.md), so a transcription capped at a
    // narrower one (AMANUENSIS_INT8_PATH: what a CPU without the wider instructions runs)
    // writes the same file, log-probabilities included. The split logits kernel exists
    // only on the widest paths, so it is off in every run. Without timestamps the sample
    // is one window whatever the numbers, so a path that computed wrong ones fails here
    // in seconds (with timestamps such a model seeks a few frames a window, for minutes).
    let json = |cap: Option<&str>| {
        let dir = tmp(&format!("int8-path-{}", cap.unwrap_or("widest")));
        let mut c = common::cli();
        c.env("AMANUENSIS_SPLIT", "0");
        if let Some(cap) = cap {
            c.env("AMANUENSIS_INT8_PATH", cap);
        }
        let o = c
            .args(["transcribe", "--compute-type", "int8", "--no-timestamps"])
            .args(["-f", "json", "-o", dir.to_str().unwrap(), &sample()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{cap:?}: {}", stderr(&o));
        let text = std::fs::read_to_string(dir.join("jfk.json")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        text
    };
    let widest = json(None);
    let parsed: serde_json::Value = serde_json::from_str(&widest).unwrap();
    assert_jfk_words(parsed["text"].as_str().unwrap());
    for cap in ["avx-vnni", "avx2"] {
        assert!(json(Some(cap)) == widest, "{cap}: the JSON differs");
    }
}

#[test]
fn bf16x3_attention_on_request_still_transcribes_the_sample_exactly() {
    // AMANUENSIS_BF16X3=1 runs the encoder's attention and its first and last blocks'
    // linears as bf16x3 products on AMX tiles where the CPU has them (elsewhere it changes
    // nothing); the sample must come out exact.
    let o = common::cli()
        .env("AMANUENSIS_BF16X3", "1")
        .args(["transcribe", "--compute-type", "int8", &sample()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end_matches('\n'),
        JFK_TEXT
    );
}

#[test]
fn stderr_stays_short() {
    // The device line and the detected language; no library log lines.
    let o = run(&["transcribe", &sample()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() <= 2, "{} lines on stderr:\n{err}", lines.len());
    assert!(
        lines.iter().all(|l| l.chars().count() <= 100),
        "a long line on stderr:\n{err}"
    );
    assert!(lines.iter().any(|l| l.starts_with("device: ")), "{err}");

    // A file that is no audio: one error line, its OS or decoder text said once.
    let text = tmp("prose.wav");
    std::fs::write(&text, "these are not samples\n".repeat(50)).unwrap();
    let o = run(&["transcribe", text.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(!err.contains("symphonia"), "a library log line:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].matches("prose.wav").count(), 1, "{err}");
    let missing = tmp("absent.wav");
    let o = run(&["transcribe", missing.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert_eq!(err.matches("absent.wav").count(), 1, "{err}");
}

#[test]
fn json_has_timestamped_segments() {
    // Greedy, to compare with the reference decoding.
    // Compared with the model's own timestamps, so without the pause refinement.
    let o = run(&[
        "transcribe",
        "--json",
        "--beam-size",
        "1",
        "--no-refine-timestamps",
        &sample(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let segs = v["segments"].as_array().unwrap();
    // The reference timestamped decoding: <|0.00|> … <|7.60|><|7.60|> … <|10.60|>.
    assert_eq!(segs.len(), 2, "{v}");
    let times: Vec<(f64, f64)> = segs
        .iter()
        .map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
        .collect();
    for ((s, e), (ws, we)) in times.iter().zip([(0.0, 7.6), (7.6, 10.6)]) {
        assert!((s - ws).abs() < 1e-4 && (e - we).abs() < 1e-4, "{times:?}");
    }
    assert_eq!(segs[1]["text"], " ask what you can do for your country.");
    assert_eq!(v["language"], "en");
}

#[test]
fn no_timestamps_json_is_one_segment() {
    let o = run(&["transcribe", "--json", "--no-timestamps", &sample()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["segments"].as_array().unwrap().len(), 1);
    assert_eq!(v["language"], "en");
    assert!(
        v["language_probability"].as_f64().unwrap() > 0.5,
        "detected, not given: {v}"
    );
    assert_eq!(v["text"], JFK_TEXT);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("amanuensis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn empty_and_non_audio_files_fail_cleanly() {
    let empty = tmp("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_failure(
        &run(&["transcribe", empty.to_str().unwrap()]),
        &["empty.wav", "empty"],
    );
    let text = tmp("notes.wav");
    std::fs::write(&text, "these are not samples\n".repeat(50)).unwrap();
    assert_clean_failure(
        &run(&["transcribe", text.to_str().unwrap()]),
        &["notes.wav"],
    );
    let missing = tmp("does-not-exist.wav");
    assert_clean_failure(
        &run(&["transcribe", missing.to_str().unwrap()]),
        &["does-not-exist.wav"],
    );
}

#[test]
fn unsupported_wav_encoding_fails_cleanly() {
    // A RIFF/WAVE file whose fmt chunk declares IMA ADPCM (format tag 0x0011).
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36u32 + 256).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&20u32.to_le_bytes());
    b.extend_from_slice(&0x0011u16.to_le_bytes()); // format tag
    b.extend_from_slice(&1u16.to_le_bytes()); // channels
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&256u16.to_le_bytes()); // block align
    b.extend_from_slice(&4u16.to_le_bytes()); // bits
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&505u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&256u32.to_le_bytes());
    b.extend(std::iter::repeat_n(0u8, 256));
    let p = tmp("adpcm.wav");
    std::fs::write(&p, b).unwrap();
    assert_clean_failure(&run(&["transcribe", p.to_str().unwrap()]), &["adpcm.wav"]);
}

#[test]
fn one_bad_file_does_not_stop_the_others() {
    let empty = tmp("empty2.wav");
    std::fs::write(&empty, b"").unwrap();
    let o = run(&["transcribe", empty.to_str().unwrap(), &sample()]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(JFK_TEXT),
        "the good file was still transcribed: {out}"
    );
    assert!(stderr(&o).contains("empty2.wav"));
}

#[test]
fn unknown_language_fails_cleanly() {
    assert_clean_failure(
        &run(&["transcribe", "--language", "xx", &sample()]),
        &["unknown language code 'xx'"],
    );
}

/// Settings that only a later window might reach (`--best-of` is read when a window first
/// needs the temperature fallback, which the sample never does) are refused before any
/// file is read: one error for the run, naming the setting, and no transcript.
#[test]
fn bad_decoding_settings_fail_before_any_file_is_read() {
    let s = sample();
    for (args, needle) in [
        (&["--best-of", "0"][..], "best_of must be 1 to"),
        (&["--beam-size", "0"], "the beam size must be 1 to"),
        (&["--patience", "0.05"], "rounds to no finished hypothesis"),
        (
            &["--length-penalty", "nan"],
            "the length penalty must be a finite number",
        ),
        (
            &["--temperature", "0,nan"],
            "every temperature must be a finite number",
        ),
    ] {
        let mut all = vec!["transcribe", "-q"];
        all.extend_from_slice(args);
        all.extend([s.as_str(), s.as_str()]);
        let o = run(&all);
        assert_clean_failure(&o, &[needle]);
        let err = stderr(&o);
        assert_eq!(
            err.matches("error:").count(),
            1,
            "{args:?}: one error for the run: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: no transcript: {err}");
    }
}

/// An output directory that cannot be made fails the run before any file is read (the
/// non-audio file's own error never comes).
#[test]
fn an_unusable_output_dir_fails_before_any_file_is_read() {
    let not_a_dir = tmp("output-dir-is-a-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let junk = tmp("junk-before-output-dir.wav");
    std::fs::write(&junk, b"not audio at all").unwrap();
    let o = run(&[
        "transcribe",
        "-q",
        "-o",
        not_a_dir.to_str().unwrap(),
        junk.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["cannot create output directory"]);
    assert!(
        !stderr(&o).contains("junk-before-output-dir"),
        "the file was read: {}",
        stderr(&o)
    );
}

/// A transcript whose file cannot be written (here its name is taken by a directory) is
/// not lost: it goes to standard output, and the run still fails.
#[test]
fn a_transcript_that_cannot_be_written_goes_to_standard_output() {
    let dir = tmp("output-dir-blocked");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("jfk.txt")).unwrap();
    let o = run(&["transcribe", "-q", "-o", dir.to_str().unwrap(), &sample()]);
    assert_clean_failure(&o, &["jfk.txt", "follows on standard output"]);
    assert_jfk_words(&String::from_utf8_lossy(&o.stdout));
}

/// Standard input can be read once: `-` twice is refused before anything is read, by
/// `transcribe` and by `vad` (it used to transcribe stdin, then fail on its second,
/// empty, reading).
#[test]
fn standard_input_given_twice_is_refused() {
    for cmd in ["transcribe", "vad"] {
        let o = run(&[cmd, "-", "-"]);
        assert_clean_failure(&o, &["standard input", "given 2 times"]);
        assert!(
            !stderr(&o).contains("is empty"),
            "{cmd} read standard input: {}",
            stderr(&o)
        );
    }
}

/// `graph build -o` makes the directories of its output file.
#[test]
fn graph_build_makes_the_directory_of_its_output() {
    let dir = tmp("graph-build-out");
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("sub/whisper-tiny.graph");
    let o = run(&["graph", "build", "tiny", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).expect("the graph file was written");
    let file = amanuensis_runtime::ModelFile::parse(&text, "the built graph").expect("it parses");
    assert_eq!(file.model.name, "whisper-tiny");
}

/// `serve`'s settings are checked before the model loads (here there is none to load), and
/// out-of-range ones fail with a message, not a panic or a server that tries to build a
/// hundred thousand workers.
#[test]
fn serve_settings_are_checked_before_the_model_loads() {
    let no_model = tmp("serve-without-a-model");
    for (flag, value, needle) in [
        ("--workers", "0", "--workers must be 1 to 64"),
        ("--workers", "100000", "--workers must be 1 to 64"),
        (
            "--max-queue",
            "18446744073709551615",
            "--max-queue must be 1 to",
        ),
        ("--max-body", "0", "--max-body must be 1 byte to 4GiB"),
        ("--max-body", "5GB", "--max-body must be 1 byte to 4GiB"),
        // Saturating to u64::MAX would mean no limit at all.
        (
            "--max-body",
            "99999999999999999999999GB",
            "too large a size",
        ),
        // Huge durations panicked converting to a Duration, or adding one to the clock.
        ("--timeout", "1e20", "too long a duration"),
        (
            "--timeout",
            "1e19",
            "--timeout must be above 0 and at most 24h",
        ),
        (
            "--timeout",
            "25h",
            "--timeout must be above 0 and at most 24h",
        ),
        ("--header-timeout", "1e300", "too long a duration"),
        (
            "--header-timeout",
            "1e19",
            "--header-timeout must be above 0 and at most 24h",
        ),
        ("--api-key", "", "--api-key must not be empty"),
        (
            "--max-connections",
            "200000",
            "--max-connections must be 1 to",
        ),
    ] {
        let arg = format!("{flag}={value}");
        let o = run(&[
            "serve",
            "--port",
            "0",
            "--model",
            no_model.to_str().unwrap(),
            &arg,
        ]);
        assert_clean_failure(&o, &[needle]);
        assert!(
            !stderr(&o).contains("serve-without-a-model"),
            "{arg}: the model was looked for first: {}",
            stderr(&o)
        );
    }
}

/// `--threads` is 1 to 1024: 0 used to mean one thread silently, and 100000 spent minutes
/// starting threads before anything ran.
#[test]
fn thread_counts_out_of_range_are_refused() {
    for n in ["0", "100000"] {
        let o = run(&["--threads", n, "transcribe", &sample()]);
        assert!(!o.status.success(), "--threads {n} ran");
        assert!(
            stderr(&o).contains("1..=1024") && o.stdout.is_empty(),
            "--threads {n}: {}",
            stderr(&o)
        );
    }
}

/// A float WAV with NaN and infinite samples (a damaged file) is transcribed, those
/// samples silenced, and stderr says how many there were instead of passing over them.
/// (One infinity clipped to 65,536 times full scale, as it once was, set the spectrum's
/// maximum alone and the text became "And so am I, so am I. ...".)
#[test]
fn a_float_wav_with_nan_samples_is_transcribed_with_a_warning() {
    let mut pcm = amanuensis::audio::load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    let inf = f32::INFINITY;
    let damaged = [f32::NAN, inf, f32::NAN, -inf, f32::NAN, inf, f32::NAN];
    for (k, x) in damaged.into_iter().enumerate() {
        pcm[100 + 20_011 * k] = x;
    }
    let file = tmp("nan-samples.wav");
    std::fs::write(&file, common::wav_16k_f32(&pcm)).unwrap();
    let o = run(&["transcribe", "--language", "en", file.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), JFK_TEXT);
    assert!(
        err.contains("nan-samples.wav: 7 sample(s) were NaN, infinite or over"),
        "stderr does not count the damaged samples: {err}"
    );
}

/// Without a terminal there is no progress bar, but a long transcription still says how
/// far it is, in lines (here after every window); `--quiet` silences them, and audio of one
/// window has none.
#[test]
fn without_a_terminal_progress_comes_as_lines() {
    let pcm = amanuensis::audio::load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    // jfk six times: 66 s, three windows.
    let long: Vec<f32> = (0..6).flat_map(|_| pcm.iter().copied()).collect();
    let file = tmp("progress-jfk-x6.wav");
    std::fs::write(&file, common::wav_16k_f32(&long)).unwrap();
    let run_with = |quiet: bool, path: &str| {
        let mut c = common::cli();
        c.env("AMANUENSIS_PROGRESS_SECONDS", "0").args([
            "transcribe",
            "--language",
            "en",
            "--beam-size",
            "1",
        ]);
        if quiet {
            c.arg("--quiet");
        }
        let o = c.arg(path).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = run_with(false, file.to_str().unwrap());
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(" transcribed ("))
        .collect();
    // One per window but the last (whose report is the end), each further on.
    assert!(!lines.is_empty(), "{err}");
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{err}");
    for l in &lines {
        assert!(
            l.starts_with(&format!("{}: 00:00:", file.display()))
                && l.contains(" of 00:01:06.000 transcribed (")
                && l.ends_with("x realtime)"),
            "{l}"
        );
    }
    assert!(!run_with(true, file.to_str().unwrap()).contains(" transcribed ("));
    assert!(!run_with(false, &sample()).contains(" transcribed ("));
}

/// Two inputs of one name under `--output-dir` would write one file, the first transcript
/// lost: refused before any transcription, naming both.
#[test]
fn inputs_that_would_write_one_output_file_are_refused() {
    let dir = tmp("same-name-inputs");
    let (d1, d2) = (dir.join("d1"), dir.join("d2"));
    for d in [&d1, &d2] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(sample(), d.join("a.wav")).unwrap();
    }
    let out = dir.join("out");
    let (a1, a2) = (d1.join("a.wav"), d2.join("a.wav"));
    let o = run(&[
        "transcribe",
        "-o",
        out.to_str().unwrap(),
        a1.to_str().unwrap(),
        a2.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["d1/a.wav and ", "d2/a.wav would both be written to"]);
    assert!(!out.join("a.txt").exists());
}

/// A graph or model file that is a device (or a FIFO, or a directory) is refused before it
/// is read: `--graph /dev/zero` was read until memory ran out.
#[cfg(unix)]
#[test]
fn model_files_that_are_not_regular_files_are_refused() {
    let o = run(&["transcribe", "--graph", "/dev/zero", &sample()]);
    assert_clean_failure(&o, &["/dev/zero", "not a regular file"]);
    // A model directory whose files link to the real model's, one of them to /dev/zero.
    let real = common::model_dir();
    // tokenizer.json is read only to encode text: a prompt.
    for broken in [
        "config.json",
        "model.safetensors",
        "vocabulary.txt",
        "tokenizer.json",
    ] {
        let dir = tmp(&format!("model-with-a-device-{broken}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocabulary.txt",
        ] {
            let target = if f == broken {
                PathBuf::from("/dev/zero")
            } else {
                real.join(f)
            };
            std::os::unix::fs::symlink(target, dir.join(f)).unwrap();
        }
        let model = dir.to_str().unwrap();
        let o = run(&["transcribe", "--model", model, "--prompt", "Hi.", &sample()]);
        assert_clean_failure(&o, &[broken, "not a regular file"]);
    }
}

/// A `--trace` file that cannot be written fails the run before any audio is read, not
/// after the transcription (nor as a panic on tracing-chrome's writer thread).
#[test]
fn an_unwritable_trace_fails_before_transcribing() {
    let file = tmp("trace-parent-is-a-file");
    std::fs::write(&file, b"x").unwrap();
    let trace = file.join("t.json");
    let o = run(&["transcribe", "--trace", trace.to_str().unwrap(), &sample()]);
    assert_clean_failure(&o, &["cannot write trace"]);
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A directory is refused before the run too (it used to be found only when the trace
    // was moved into place, after the transcription, and the exit status was still 0).
    let dir = tmp("trace-is-a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let o = run(&["transcribe", "--trace", dir.to_str().unwrap(), &sample()]);
    assert_clean_failure(&o, &["cannot write trace", "it is a directory"]);
    assert!(o.stdout.is_empty());
}

/// Ctrl-C during a long transcription keeps the windows done: the transcript so far is
/// written, the files not yet begun are skipped (and named), and the exit status is 130.
#[test]
fn ctrl_c_keeps_the_transcript_so_far() {
    use std::io::{BufRead, BufReader, Read};
    let pcm = amanuensis::audio::load_audio(&common::data_dir().join("audio/jfk.wav")).unwrap();
    // jfk twelve times (132 s, five windows), so that there are windows left to skip.
    let long: Vec<f32> = (0..12).flat_map(|_| pcm.iter().copied()).collect();
    let file = tmp("ctrl-c-jfk-x12.wav");
    std::fs::write(&file, common::wav_16k_f32(&long)).unwrap();
    let mut child = common::cli()
        .args(["-vv", "transcribe", "--language", "en"])
        .arg(&file)
        .arg(sample())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("no window was decoded: {log}");
        }
        log.push_str(&line);
        if line.contains("window decoded") {
            break;
        }
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    err.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    let text = out.join().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("stopped by Ctrl-C after"), "{log}");
    assert!(
        log.contains(&format!(
            "{}: not transcribed (stopped by Ctrl-C)",
            sample()
        )),
        "{log}"
    );
    // The first window's text is there; the whole twelve repetitions are not.
    let repetitions = text.matches("ask what you can do for your country").count();
    assert!((1..12).contains(&repetitions), "{repetitions}: {text}");
}

fn graph_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/whisper-base.graph"))
        .unwrap()
}

fn with_graph(name: &str, text: &str) -> Output {
    let g = tmp(name);
    std::fs::write(&g, text).unwrap();
    run(&["transcribe", "--graph", g.to_str().unwrap(), &sample()])
}

#[test]
fn malformed_graphs_fail_cleanly() {
    let base = graph_text();
    // Unknown op.
    let t = base.replacen("\"op\":\"gelu\"", "\"op\":\"swish\"", 1);
    assert_clean_failure(
        &with_graph("unknown-op.graph", &t),
        &["conv1.gelu", "unknown operator 'swish'"],
    );
    // Cycle: conv1 reads conv2's output.
    let t = base.replacen("\"inputs\":[\"mel\",", "\"inputs\":[\"conv2\",", 1);
    assert_ne!(t, base, "test edit applied");
    assert_clean_failure(&with_graph("cycle.graph", &t), &["cycle"]);
    // Shape mismatch: a 512-wide value into a 2048-input linear.
    let t = base.replacen(
        "\"inputs\":[\"block0.gelu\",",
        "\"inputs\":[\"block0.mlp_ln\",",
        1,
    );
    assert_clean_failure(&with_graph("shape.graph", &t), &["block0.fc2", "2048"]);
    // Missing weight: the declaration is gone.
    let t = base.replacen(
        "  {\"name\":\"encoder.conv2.bias\",\"dtype\":\"f16\",\"shape\":[512]},\n",
        "",
        1,
    );
    assert_ne!(t, base, "test edit applied");
    assert_clean_failure(&with_graph("weight.graph", &t), &["encoder.conv2.bias"]);
    // A weight declared with a shape the weight file does not have.
    let t = base.replacen(
        "{\"name\":\"encoder.conv2.bias\",\"dtype\":\"f16\",\"shape\":[512]}",
        "{\"name\":\"encoder.conv2.bias\",\"dtype\":\"f16\",\"shape\":[513]}",
        1,
    );
    assert_clean_failure(
        &with_graph("wshape.graph", &t),
        &["encoder.conv2.bias", "513"],
    );
}

#[test]
fn corrupt_weights_fail_cleanly() {
    let src = common::model_dir();
    let dir = tmp("corrupt-model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "vocabulary.txt"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    // A header length far beyond the file, then garbage.
    let mut bytes = (u64::MAX / 2).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"not\": json");
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    let o = run(&["transcribe", "--model", dir.to_str().unwrap(), &sample()]);
    assert_clean_failure(&o, &["model.safetensors", "safetensors"]);
    // A truncated weight file.
    let full = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &full[..full.len() / 3]).unwrap();
    let o = run(&["transcribe", "--model", dir.to_str().unwrap(), &sample()]);
    assert_clean_failure(
        &o,
        &[
            "model.safetensors",
            "tensor data does not end exactly at the end of the",
            "(truncated or padded)",
        ],
    );
    // Cut inside its header: the header's length and the file's are named.
    std::fs::write(dir.join("model.safetensors"), &full[..1000]).unwrap();
    let o = run(&["transcribe", "--model", dir.to_str().unwrap(), &sample()]);
    assert_clean_failure(&o, &["runs past the end of the 1000-byte file"]);
}

#[test]
fn missing_model_says_how_to_get_it() {
    let o = common::cli()
        .env("AMANUENSIS_MODELS", tmp("no-models"))
        .current_dir(std::env::temp_dir())
        .args(["transcribe", "--model", "tiny", &sample()])
        .output()
        .unwrap();
    assert_clean_failure(&o, &["whisper-tiny", "fetch-model.sh"]);
}

/// A `--model` that is a path is taken as that directory, not as a name to look up: the
/// error names the directory and what is wrong with it.
#[test]
fn a_model_path_without_a_model_says_what_is_wrong_with_it() {
    let missing = tmp("no-such-model-dir");
    let o = run(&[
        "transcribe",
        "--model",
        missing.to_str().unwrap(),
        &sample(),
    ]);
    assert_clean_failure(&o, &[missing.to_str().unwrap(), "does not exist"]);
    assert!(!stderr(&o).contains("whisper-/"), "{}", stderr(&o));
    let empty = tmp("empty-model-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&["transcribe", "--model", empty.to_str().unwrap(), &sample()]);
    assert_clean_failure(&o, &[empty.to_str().unwrap(), "has no model.safetensors"]);
}

#[test]
fn output_dir_writes_each_format() {
    let dir = tmp("outputs");
    for fmt in ["srt", "vtt", "tsv", "txt", "json"] {
        let o = run(&[
            "transcribe",
            "--quiet",
            "--no-refine-timestamps",
            "--format",
            fmt,
            "--output-dir",
            dir.to_str().unwrap(),
            &sample(),
        ]);
        assert!(o.status.success(), "{fmt}: {}", stderr(&o));
        assert!(
            o.stdout.is_empty(),
            "{fmt}: nothing on stdout when writing files"
        );
        let written = std::fs::read_to_string(dir.join(format!("jfk.{fmt}"))).unwrap();
        assert!(
            written.contains("ask what you can do for your country"),
            "{fmt}: {written}"
        );
    }
    let srt = std::fs::read_to_string(dir.join("jfk.srt")).unwrap();
    // One or two cues: where the segment boundary falls has differed between hosts.
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:"), "{srt}");
    let cues = srt.matches(" --> ").count();
    assert!((1..=2).contains(&cues), "{srt}");
    assert!(srt.trim_end().ends_with("for your country."), "{srt}");
}

#[test]
fn explicit_language_is_used_without_detection() {
    let o = run(&["transcribe", "--json", "--language", "en", &sample()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["language"], "en");
    assert!(v.get("language_probability").is_none(), "{v}");
}

#[test]
fn prompt_conditions_the_first_window() {
    // The prompt becomes the previous-text context: `<|startofprev|>` + its tokens.
    let model = common::load_model();
    let opts = amanuensis::TranscribeOptions {
        initial_prompt: Some("  Mr. Dashwood. ".into()),
        ..Default::default()
    };
    let ids = model.tokenizer.encode_prompt("Mr. Dashwood.").unwrap();
    let prompt = model.prompt(&ids, "en", &opts).unwrap();
    assert_eq!(prompt[0], model.tokenizer.start_of_prev());
    assert_eq!(&prompt[1..1 + ids.len()], ids.as_slice());
    assert_eq!(model.tokenizer.decode(&ids), " Mr. Dashwood.");
    // And the CLI accepts it end to end.
    let o = run(&["transcribe", "-q", "--prompt", "Mr. Dashwood.", &sample()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim_end(), JFK_TEXT);
}

#[test]
fn bench_reproduces_whisper_xdna_beside_our_plan() {
    let o = run(&["bench", "--reproduce", "whisper-xdna"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every measured size and context, labelled projections, with our plan beside it.
    for needle in [
        "projections",
        "| large-v3-turbo | 512 | 1582 |",
        "| large-v3 | 1500 | 3344 |",
        "| small (held out) | 1500 | 1507 |",
        "| tiny (held out) | 1500 | 484 |",
    ] {
        assert!(out.contains(needle), "no '{needle}' in:\n{out}");
    }
    assert!(!out.contains("| — ("), "a size without our plan:\n{out}");
    assert_clean_failure(
        &run(&["bench", "--reproduce", "nothing"]),
        &["knows 'whisper-xdna' only"],
    );
}

#[test]
fn subtitle_layout_options_wrap_the_samples_cues() {
    // Lines of at most 42 characters, two to a cue (a common broadcast rule): the words
    // are timed for it without --word-timestamps, and the cues still read as the text.
    let o = run(&[
        "transcribe",
        "-q",
        "-f",
        "srt",
        "--max-line-width",
        "42",
        "--max-line-count",
        "2",
        &sample(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cues = crate::output_formats::parse_srt(&String::from_utf8_lossy(&o.stdout));
    assert!(
        cues.len() >= 2,
        "the sample needs more than one cue: {cues:?}"
    );
    let mut words = Vec::new();
    let mut last_end = 0;
    for (i, (n, start, end, text)) in cues.iter().enumerate() {
        assert_eq!(*n as usize, i + 1);
        assert!(
            start <= end && *start >= last_end && *end <= 11_000,
            "{cues:?}"
        );
        last_end = *end;
        let lines: Vec<&str> = text.lines().collect();
        assert!((1..=2).contains(&lines.len()), "cue {n}: {text:?}");
        for l in lines {
            assert!(l.chars().count() <= 42, "cue {n}: line {l:?} is too long");
            words.extend(l.split_whitespace());
        }
    }
    assert_jfk_words(&words.join(" "));
}

#[test]
fn decoding_thresholds_reach_the_decoder() {
    // Every window has a no-speech probability above 0 and an average log-probability
    // below 0, so with both thresholds at 0 the sample is silence: no text at all.
    let o = run(&[
        "transcribe",
        "-q",
        "--temperature",
        "0",
        "--no-speech-threshold",
        "0",
        "--log-prob-threshold",
        "0",
        &sample(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "");
    // `none` turns a threshold off; a negative value is a value, not an option.
    let o = run(&[
        "transcribe",
        "-q",
        "--compression-ratio-threshold",
        "none",
        "--log-prob-threshold",
        "-0.5",
        "--no-speech-threshold",
        "none",
        &sample(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim_end(), JFK_TEXT);
    for (flag, value) in [
        ("--compression-ratio-threshold", "banana"),
        ("--no-speech-threshold", "inf"),
        ("--max-line-width", "0"),
    ] {
        let o = run(&["transcribe", flag, value, &sample()]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{flag} {value}: {}", stderr(&o));
    }
}

#[test]
fn hotwords_come_before_the_previous_text_and_share_its_room() {
    let model = common::load_model();
    let tok = &model.tokenizer;
    let opts = amanuensis::TranscribeOptions {
        hotwords: Some(" Sintra, Lord Byron ".into()),
        ..Default::default()
    };
    let hot = tok.encode_prompt("Sintra, Lord Byron").unwrap();
    let sot = model.prompt(&[], "en", &Default::default()).unwrap();
    // No previous text: `<|startofprev|>`, the hotwords, the start of the transcript.
    let p = model.prompt(&[], "en", &opts).unwrap();
    assert_eq!(p[0], tok.start_of_prev());
    assert_eq!(&p[1..1 + hot.len()], hot.as_slice());
    assert_eq!(&p[1 + hot.len()..], sot.as_slice());
    // A long previous text keeps its latest tokens in the room the hotwords leave.
    let max = amanuensis::window_loop::MAX_PREVIOUS_TOKENS;
    let previous: Vec<u32> = (0..400).map(|i| 1000 + i).collect();
    let p = model.prompt(&previous, "en", &opts).unwrap();
    let kept = max - hot.len();
    assert_eq!(&p[1 + hot.len()..1 + max], &previous[400 - kept..]);
    assert_eq!(&p[1 + max..], sot.as_slice());
    // Hotwords longer than the room are cut to it, and no previous token is left.
    let long = amanuensis::TranscribeOptions {
        hotwords: Some("Dashwood Norland ".repeat(200)),
        ..Default::default()
    };
    let p = model.prompt(&previous, "en", &long).unwrap();
    assert_eq!(p.len(), 1 + max + sot.len());
    assert_eq!(
        &p[1..1 + max],
        &tok.encode_prompt(&"Dashwood Norland ".repeat(200)).unwrap()[..max]
    );
    // Blank hotwords are none.
    let blank = amanuensis::TranscribeOptions {
        hotwords: Some("  ".into()),
        ..Default::default()
    };
    assert_eq!(model.prompt(&[], "en", &blank).unwrap(), sot);
}

#[test]
fn hotwords_steer_the_spelling_of_a_name() {
    // The FLEURS clip says "Northern Marianas"; the model writes "Mariana's" unless told
    // (at f32, whose words do not depend on the CPU's instruction sets).
    let clip = common::data_dir()
        .join("audio/fleurs_en_006.wav")
        .display()
        .to_string();
    let transcribe = |extra: &[&str]| {
        let mut args = vec![
            "transcribe",
            "-q",
            "--compute-type",
            "f32",
            "--language",
            "en",
        ];
        args.extend_from_slice(extra);
        args.push(&clip);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let plain = transcribe(&[]);
    let hinted = transcribe(&["--hotwords", "Northern Marianas"]);
    let (plain, hinted) = (
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&hinted.stdout),
    );
    assert!(plain.contains("Mariana's"), "{plain}");
    assert!(hinted.contains("Northern Marianas Emergency"), "{hinted}");
}

#[test]
fn format_all_writes_every_format_into_the_output_directory() {
    let dir = std::env::temp_dir().join(format!("amanuensis-format-all-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = run(&[
        "transcribe",
        "-q",
        "-f",
        "all",
        "-o",
        &dir.display().to_string(),
        &sample(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |ext: &str| {
        std::fs::read_to_string(dir.join(format!("jfk.{ext}")))
            .unwrap_or_else(|e| panic!("jfk.{ext}: {e}"))
    };
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    // The words are the sample's; every format holds the same text, punctuation and all.
    let text = words(&read("txt"));
    assert_jfk_words(&text);
    let srt = crate::output_formats::parse_srt(&read("srt"));
    let srt_text: Vec<String> = srt.into_iter().map(|c| c.3).collect();
    assert_eq!(words(&srt_text.join(" ")), text);
    assert!(read("vtt").starts_with("WEBVTT\n"));
    let json: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
    assert_eq!(json["text"], text.as_str());
    let tsv = read("tsv");
    assert!(tsv.starts_with("start\tend\ttext\n"), "{tsv}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        5,
        "one file a format, no temporary file left"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Five formats cannot share standard output.
    let o = run(&["transcribe", "-f", "all", &sample()]);
    assert_clean_failure(&o, &["--output-dir"]);
}

#[test]
fn hallucination_threshold_times_words_and_leaves_speech_alone() {
    // The rule only removes improbable or instant words set in silence (its decisions are
    // unit-tested in whisper/src/hallucination.rs); on the sample it must change nothing
    // but turn word timing on.
    let json = |extra: &[&str]| {
        let mut args = vec!["transcribe", "-q", "--json", "--language", "en"];
        args.extend_from_slice(extra);
        let s = sample();
        args.push(&s);
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let with = json(&["--hallucination-silence-threshold", "2"]);
    let words = json(&["--word-timestamps"]);
    assert_eq!(with["segments"], words["segments"]);
    assert!(with["segments"][0]["words"]
        .as_array()
        .is_some_and(|w| !w.is_empty()));
    for bad in ["0", "-1", "inf", "soon"] {
        let o = run(&[
            "transcribe",
            "--hallucination-silence-threshold",
            bad,
            &sample(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--hallucination-silence-threshold"),
            "{}",
            stderr(&o)
        );
    }
}
