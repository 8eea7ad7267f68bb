//! Files transcribed a window at a time (`WhisperModel::scan_audio` and
//! `transcribe_streamed`, what `amanuensis transcribe FILE` runs): every window's
//! spectrogram has the bits of the window cut from the whole recording's, the transcript
//! is the in-memory one, and a file that changes between the two reads is an error naming
//! it.

use crate::common;

use amanuensis::audio::{load_audio, AudioStream};
use amanuensis::model::mel_window;
use amanuensis::{Error, TranscribeOptions, Transcript};

fn bits(t: &amanuensis_runtime::Tensor) -> Vec<u32> {
    t.f32s().unwrap().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn streamed_windows_are_the_bits_of_the_whole_spectrogram() {
    let path = common::data_dir().join("audio/long_public_concat.wav");
    let pcm = load_audio(&path).unwrap();
    let mut model = common::load_model();
    let whole = model.features(&pcm).unwrap();
    let frames = whole.shape()[1];
    let audio = model.scan_file(&path).unwrap();
    assert_eq!(audio.samples(), pcm.len());
    let mut mel = audio.into_spectrogram();
    assert_eq!(mel.frames(), frames);
    // Forward as the window loop goes, a step back (the file is read again from its
    // start), a full window ending at the last frame, and one frame.
    let windows = [
        (0, 3000),
        (2999, 3000),
        (5210, 2100),
        (1000, 3000),
        (frames - 3000, 3000),
        (frames - 1, 1),
        (0, 1),
    ];
    for (seek, size) in windows {
        let got = mel.window(seek, size).unwrap();
        let want = mel_window(&whole, seek, size).unwrap();
        assert_eq!(got.shape(), want.shape());
        assert!(bits(&got) == bits(&want), "window {seek}+{size}");
    }
    let err = mel.window(frames - 10, 11).unwrap_err().to_string();
    assert!(err.contains("outside the"), "{err}");
}

/// What two transcripts share apart from their timings, as JSON.
fn content(t: &Transcript) -> String {
    serde_json::to_string(&(&t.language, &t.segments, &t.text)).unwrap()
}

#[test]
fn a_streamed_file_has_the_in_memory_transcript_with_words() {
    let path = common::data_dir().join("audio/long_public_concat.wav");
    let pcm = load_audio(&path).unwrap();
    let mut model = common::load_model();
    let opts = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    let memory = model.transcribe_pcm(&pcm, &opts).unwrap();
    let audio = model.scan_file(&path).unwrap();
    let mut done = Vec::new();
    let streamed = model
        .transcribe_streamed(audio, &opts, &mut |p| done.push(p.done))
        .unwrap();
    assert!(memory.timings.windows >= 3, "{}", memory.timings.windows);
    assert_eq!(streamed.timings.windows, memory.timings.windows);
    assert_eq!(content(&streamed), content(&memory));
    assert!((streamed.duration - memory.duration).abs() < 1e-6);
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    // The last report is at the last window's end, within a frame of the recording's.
    assert!(
        (done.last().unwrap() - memory.duration as f64).abs() <= 0.011,
        "{done:?}"
    );
}

#[test]
fn a_file_that_changes_between_the_two_reads_is_an_error() {
    let dir = common::data_dir().join("audio");
    let long = std::fs::read(dir.join("long_public_concat.wav")).unwrap();
    let short = std::fs::read(common::data_dir().join("audio/jfk.wav")).unwrap();
    let model = common::load_model();
    let mut opened = 0;
    let audio = model
        .scan_audio(
            "changing.wav",
            Box::new(move || {
                opened += 1;
                let bytes = if opened == 1 { &long } else { &short };
                Ok(Box::new(AudioStream::from_bytes(
                    bytes.clone(),
                    Some("wav"),
                )?))
            }),
        )
        .unwrap();
    let mut model = model;
    let err = model
        .transcribe_streamed(audio, &TranscribeOptions::default(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, Error::Audio(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("changing.wav") && msg.contains("changed while being transcribed"),
        "{msg}"
    );
}

#[test]
fn a_named_pipe_is_read_once_into_memory_not_streamed() {
    // A pipe (a shell's `<(…)`, a FIFO) has no length and cannot be read twice: it is
    // decoded forward, once, into memory.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("jfk.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(common::data_dir().join("audio/jfk.wav")).unwrap();
    let path = fifo.clone();
    let writer = std::thread::spawn(move || std::fs::write(&path, bytes));
    let out = common::cli()
        .args(["transcribe", "--quiet"])
        .arg(&fifo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ask not what your country can do for you"),
        "{text}"
    );
}
