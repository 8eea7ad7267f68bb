//! Regression tests for what fuzzing (`fuzz/`, `docs/reliability.md`) found in the audio
//! and tokenizer parsers; each test is named after its finding, and the fuzzer's input is
//! kept in `tests/data/fuzz-regressions/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use amanuensis::audio::{decode_audio_bytes, AudioError, MAX_SAMPLE_MAGNITUDE};

/// The system allocator, recording the largest single allocation.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// The fuzz targets' bound on one allocation for small inputs (`fuzz/src/lib.rs`).
const ALLOC_BOUND: usize = 64 << 20;

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
            // Without resampling NaN and infinities come out as 0, huge finite values
            // clipped, the rest as written.
            assert_eq!(out[100], 0.0);
            assert_eq!(out[600], 0.0);
            assert_eq!(out[1100], 0.0);
            assert_eq!(f64::from(out[1600]), MAX_SAMPLE_MAGNITUDE);
            assert_eq!(out[7], (samples[7] as f32));
        }
    }
}

/// Decodes `bytes`, expecting a corrupt-data error that mentions `what`, and no single
/// allocation beyond the fuzzing bound on the way.
fn assert_refused_without_large_allocation(bytes: Vec<u8>, what: &str) {
    LARGEST.store(0, Ordering::Relaxed);
    let r = decode_audio_bytes(bytes, None);
    let largest = LARGEST.load(Ordering::Relaxed);
    match r {
        Err(e @ AudioError::Corrupt { .. }) => {
            assert!(e.to_string().contains(what), "{what}: {e}")
        }
        other => panic!("{what}: expected a corrupt-data error, got {other:?}"),
    }
    assert!(
        largest < ALLOC_BOUND,
        "{what}: allocated {largest} bytes at once"
    );
}

fn put_be_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Found by the `audio_mp4` target: an `hdlr` box declaring 1.7 GB inside a 3 KB file made
/// symphonia's MP4 reader allocate that much before reading it. Every size and count of
/// the index is now checked against its box first; the same holds for the sample tables
/// and the `esds` descriptors, which symphonia also allocates from.
#[test]
fn mp4_sizes_past_their_box_are_refused_before_symphonia_allocates_them() {
    assert_refused_without_large_allocation(
        regression_input("audio-mp4-hdlr-size-past-its-parent.m4a"),
        "box",
    );

    // A 0.5-s AAC file with its index (moov) at the end; its offsets, from its boxes.
    let good = regression_input("aac-jfk-0.5s.m4a");
    let box_at = |kind: &[u8]| {
        good.windows(4)
            .position(|w| w == kind)
            .unwrap_or_else(|| panic!("no {kind:?}"))
            - 4
    };
    let decoded = decode_audio_bytes(good.clone(), None).expect("the intact file decodes");
    assert!(decoded.len() > 7_000, "{}", decoded.len());

    let mut hdlr = good.clone();
    put_be_u32(&mut hdlr, box_at(b"hdlr"), 0x6666_0000);
    assert_refused_without_large_allocation(hdlr, "'hdlr' box");
    // stsz: version/flags, sample size 0 (a table follows), sample count.
    let mut stsz = good.clone();
    put_be_u32(&mut stsz, box_at(b"stsz") + 16, 0x4000_0000);
    assert_refused_without_large_allocation(stsz, "'stsz' table");
    let mut stco = good.clone();
    put_be_u32(&mut stco, box_at(b"stco") + 12, 0x2000_0000);
    assert_refused_without_large_allocation(stco, "'stco' table");
    // The ES_Descriptor's length (four bytes of 7 bits after its tag) made ~256 MB.
    let mut esds = good.clone();
    let tag = box_at(b"esds") + 12;
    assert_eq!(esds[tag], 3, "ES_Descriptor tag");
    esds[tag + 1..tag + 5].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0x7F]);
    assert_refused_without_large_allocation(esds, "descriptor (tag 3)");

    // The same audio with its index first still decodes to the same samples.
    let faststart = decode_audio_bytes(regression_input("aac-jfk-0.5s-faststart.m4a"), None)
        .expect("the faststart file decodes");
    assert_eq!(faststart, decoded);
}

/// Found by the `audio_mp4` target: bytes before the `ftyp` box hid the MP4 signature from
/// the check above, while symphonia's probe skipped them and reserved a 2.2 GB `stco`
/// table. The check now also runs from an `ftyp` found further on.
#[test]
fn mp4_behind_leading_garbage_gets_the_same_size_check() {
    let bytes = regression_input("audio-mp4-stco-count-behind-leading-garbage.m4a");
    LARGEST.store(0, Ordering::Relaxed);
    let r = decode_audio_bytes(bytes, Some("m4a"));
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(r.is_err(), "{:?}", r.map(|v| v.len()));
    assert!(largest < ALLOC_BOUND, "allocated {largest} bytes at once");
}

/// Found by the `audio_mp4` target: an MP4 behind 8 bytes starting with an ADTS frame
/// sync (`FF F9`). The sniffer took it for ADTS AAC and skipped the MP4 size check, while
/// symphonia's probe passed over the sync and reserved 9.7 GB for a 1.2-billion-entry
/// `stts` table. A frame sync or an ID3 tag at the start is now searched past for a
/// container signature as unknown bytes are.
#[test]
fn mp4_behind_a_frame_sync_or_an_id3_tag_gets_the_same_size_check() {
    let found = regression_input("audio-mp4-stts-count-behind-an-adts-frame-sync.m4a");
    assert_eq!(&found[..2], &[0xFF, 0xF9]);
    assert_refused_without_large_allocation(found.clone(), "stts");
    // The same MP4 behind an (empty) ID3v2 tag, and from a pipe.
    let mut id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    id3.extend_from_slice(&found[8..]);
    assert_refused_without_large_allocation(id3, "stts");
    LARGEST.store(0, Ordering::Relaxed);
    assert!(decode_from_reader(found).is_err());
    assert!(LARGEST.load(Ordering::Relaxed) < ALLOC_BOUND);
    // Real MP3 and ADTS files are not mistaken for containers.
    // (jfk.mp3 holds the 11-s clip, the ADTS and MP2 files its first 3 s.)
    for (name, seconds) in [("jfk.mp3", 11), ("jfk.aac", 3), ("jfk.mp2", 3)] {
        let pcm = decode_audio_bytes(encoded(name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            pcm.len() >= 16_000 * seconds,
            "{name}: {} samples",
            pcm.len()
        );
    }
}

/// Found by a CI smoke run of the `audio` target: a WebM behind an ID3 tag and an `ftyp`
/// signature whose box size is implausible. Only the first signature behind a weak one was
/// considered; it was rejected as implausible, so the Matroska walk never ran, while
/// symphonia's probe went on to the WebM and allocated a 26 GB EBML-laced frame (an abort).
/// Every plausible signature behind a weak one is now checked.
#[test]
fn matroska_behind_an_id3_tag_and_an_implausible_ftyp_gets_the_structure_check() {
    let found = regression_input("audio-mkv-behind-an-id3-tag-and-an-implausible-ftyp.mka");
    assert_eq!(&found[..3], b"ID3");
    assert_refused_without_large_allocation(found.clone(), "does not start an element");
    LARGEST.store(0, Ordering::Relaxed);
    assert!(decode_from_reader(found).is_err());
    assert!(LARGEST.load(Ordering::Relaxed) < ALLOC_BOUND);
    // The intact WebM behind the same kind of prefix still decodes.
    // The tag's 16 bytes (its length, syncsafe, is 0x10) hold the implausible `ftyp`,
    // which symphonia's probe skips with the tag.
    let webm = encoded("jfk_opus.webm");
    let alone = decode_audio_bytes(webm.clone(), None).expect("the WebM alone decodes");
    let mut behind = b"ID3\x04\x00\x00\x00\x00\x00\x10".to_vec();
    behind.extend_from_slice(b"\x3d\x4a\x7b\x7cftypNOPE\x00\x00\x00\x00");
    behind.extend_from_slice(&webm);
    let pcm = decode_audio_bytes(behind, None).expect("the WebM behind an ID3 tag decodes");
    assert_eq!(pcm.len(), alone.len());
}

/// Found by the `audio_ogg_opus` target: a 31-byte MP4 whose `ftyp` box declares a 64-bit
/// size of 2^64 - 1. The size check's walk over the top-level boxes saturated its position
/// at u64::MAX and then overflowed computing the next box's (a panic with overflow checks,
/// a wrapped seek without). The walk now ends at a box that runs past the file, and the
/// file is refused as audio with an error, from memory and from a pipe.
#[test]
fn mp4_box_size_of_2_pow_64_ends_the_size_check_without_overflow() {
    let found = regression_input("audio-mp4-ftyp-largesize-overflows-the-box-walk.m4a");
    assert_eq!(&found[4..8], b"ftyp");
    for from_pipe in [false, true] {
        LARGEST.store(0, Ordering::Relaxed);
        let r = match from_pipe {
            false => decode_audio_bytes(found.clone(), None),
            true => decode_from_reader(found.clone()),
        };
        assert!(r.is_err(), "pipe {from_pipe}: {r:?}");
        assert!(LARGEST.load(Ordering::Relaxed) < ALLOC_BOUND);
    }
}

fn encoded(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/audio/encoded")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Decodes `bytes` from a forward-only reader, as from a pipe.
fn decode_from_reader(bytes: Vec<u8>) -> Result<Vec<f32>, AudioError> {
    amanuensis::audio::AudioStream::from_reader(std::io::Cursor::new(bytes), "a pipe")?
        .collect_all()
}

/// Found by the `audio` target: a 947-byte WebM whose block declares EBML-laced frames of
/// 289 TB made symphonia's Matroska reader allocate that much before reading them; the
/// allocation failed and aborted the process (no panic, so nothing could catch it). The
/// Matroska structure is now walked before symphonia sees it: every element must fit in
/// its parent, laced frames in their block, and SeekHead entries must name elements.
#[test]
fn matroska_lacing_sizes_past_their_block_are_refused_before_symphonia_allocates_them() {
    let found = regression_input("audio-mkv-ebml-lacing-289tb-frame.mka");
    assert_refused_without_large_allocation(found.clone(), "frames declare");
    // The same from a pipe (read into memory and checked), and behind bytes the probe skips.
    LARGEST.store(0, Ordering::Relaxed);
    let e = decode_from_reader(found.clone()).expect_err("refused from a pipe");
    assert!(e.to_string().contains("frames declare"), "{e}");
    assert!(LARGEST.load(Ordering::Relaxed) < ALLOC_BOUND);
    let mut behind = b"\x00\x01 not audio ".to_vec();
    behind.extend_from_slice(&found);
    assert_refused_without_large_allocation(behind, "frames declare");

    // Intact files of every codec still decode, from memory and from a pipe alike.
    for name in [
        "jfk_opus.webm",
        "jfk_vorbis.mkv",
        "jfk_flac.mkv",
        "jfk_aac.mkv",
        "jfk_mp3.mkv",
    ] {
        let bytes = encoded(name);
        let decoded =
            decode_audio_bytes(bytes.clone(), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(decoded.len() > 40_000, "{name}: {} samples", decoded.len());
        let piped = decode_from_reader(bytes).unwrap_or_else(|e| panic!("{name} piped: {e}"));
        assert_eq!(piped, decoded, "{name}");
    }

    // The first block of the Opus WebM (7 bytes: track 1, time 0, flags, a 3-byte packet)
    // made EBML-laced: one stored size, 0x3FFF bytes, where no byte is left.
    let good = encoded("jfk_opus.webm");
    let cluster = good
        .windows(4)
        .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
        .expect("a cluster");
    let block = cluster + good[cluster..].iter().position(|&b| b == 0xA3).unwrap();
    assert_eq!(
        good[block..block + 3],
        [0xA3, 0x87, 0x81],
        "a 7-byte simple block"
    );
    let mut laced = good.clone();
    laced[block + 5] = 0x86;
    laced[block + 6..block + 9].copy_from_slice(&[0x01, 0x7F, 0xFF]);
    assert_refused_without_large_allocation(laced, "frames declare 16383 bytes");

    // A SeekHead entry for the Cues that points one byte into an element.
    let cues_entry = good
        .windows(7)
        .position(|w| w == [0x53, 0xAB, 0x84, 0x1C, 0x53, 0xBB, 0x6B])
        .expect("a SeekHead entry for the Cues");
    let mut seek = good.clone();
    let at = cues_entry + 7;
    assert_eq!(good[at..at + 2], [0x53, 0xAC], "its SeekPosition");
    let n = usize::from(good[at + 2] & 0x0F);
    let last = at + 3 + n - 1;
    seek[last] = seek[last].wrapping_add(1);
    assert_refused_without_large_allocation(seek, "does not start an element");
}

/// Found by the `audio_mp4` target (first seen as a crash in `stsd`): an MP4 behind 8
/// unrecognised bytes, read from a pipe, skipped the size check, which only ran on
/// seekable input; symphonia's probe skipped the bytes and reserved 31 GB for an `stsc`
/// table of 1.9 billion entries, and the failed allocation aborted the process. A pipe
/// whose first MiB holds an MP4 or Matroska signature is now read into memory and gets
/// the same check.
#[test]
fn mp4_behind_leading_garbage_on_a_pipe_gets_the_same_size_check() {
    for (name, what) in [
        (
            "audio-mp4-stsc-count-behind-leading-garbage-on-a-pipe.m4a",
            "past the end of the",
        ),
        (
            "audio-mp4-stco-count-behind-leading-garbage.m4a",
            "'stco' table",
        ),
    ] {
        let bytes = regression_input(name);
        LARGEST.store(0, Ordering::Relaxed);
        let piped = decode_from_reader(bytes.clone());
        let largest = LARGEST.load(Ordering::Relaxed);
        match piped {
            Err(e @ AudioError::Corrupt { .. }) => {
                assert!(e.to_string().contains(what), "{name}: {e}")
            }
            other => panic!(
                "{name}: expected a corrupt-data error, got {:?}",
                other.map(|v| v.len())
            ),
        }
        assert!(
            largest < ALLOC_BOUND,
            "{name}: allocated {largest} bytes at once"
        );
        assert_refused_without_large_allocation(bytes, what);
    }

    // An intact MP4 from a pipe still decodes as from memory.
    let good = regression_input("aac-jfk-0.5s.m4a");
    let from_memory = decode_audio_bytes(good.clone(), None).expect("decodes from memory");
    assert!(from_memory.len() > 7_000, "{}", from_memory.len());
    assert_eq!(
        decode_from_reader(good).expect("decodes from a pipe"),
        from_memory
    );
}

#[test]
fn vorbis_codebook_whose_lookup_table_size_overflows_is_refused_not_a_panic() {
    // A Matroska Vorbis track whose setup header declares a codebook for which symphonia's
    // lookup-table size (`lookup1_values`) overflows: it panicked while the decoder was set
    // up, outside the guard that turned decoding panics into errors.
    amanuensis::audio::install_panic_filter();
    let found = regression_input("audio-mkv-vorbis-codebook-lookup-values-overflow.mka");
    let e = decode_audio_bytes(found.clone(), None).expect_err("refused");
    assert!(
        matches!(e, AudioError::Corrupt { .. }),
        "a damaged file, not another kind of error: {e:?}"
    );
    assert!(
        e.to_string().contains("cannot set up the Vorbis decoder"),
        "{e}"
    );
    let e = decode_from_reader(found).expect_err("refused from a pipe");
    assert!(
        e.to_string().contains("cannot set up the Vorbis decoder"),
        "{e}"
    );
    // The intact file it was mutated from still decodes.
    let intact = decode_audio_bytes(encoded("jfk_vorbis.mkv"), None).expect("intact Vorbis");
    assert!(intact.len() > 40_000, "{} samples", intact.len());
}

/// Found by the `audio_mp4` smoke run in CI: an ALAC magic cookie declaring a frame length
/// near 2^31 made symphonia's ALAC decoder allocate its output buffer (gigabytes) before
/// decoding a packet. The packet size a header declares is now bounded first.
#[test]
fn alac_cookie_with_a_huge_frame_length_is_refused_before_the_decoder_allocates() {
    let good = encoded("jfk_alac.m4a");
    // The `alac` box inside the sample entry: size 36, then version and flags, then the
    // 24-byte cookie, which opens with the frame length.
    let inner = good
        .windows(8)
        .position(|w| w == [0, 0, 0, 36, b'a', b'l', b'a', b'c'])
        .expect("the ALAC sample entry's cookie box");
    let cookie = inner + 12;
    assert_eq!(
        good[cookie..cookie + 4],
        4096u32.to_be_bytes(),
        "the stored frame length"
    );
    // Still decodes as stored (the bound is far above real frame lengths).
    let samples = decode_audio_bytes(good.clone(), None).expect("the ALAC file decodes");
    assert!(samples.len() > 16_000 * 10, "{} samples", samples.len());
    for frames in [0x7fff_ffffu32, 1 << 23] {
        let mut bad = good.clone();
        put_be_u32(&mut bad, cookie, frames);
        assert_refused_without_large_allocation(bad, "frames");
    }
}
