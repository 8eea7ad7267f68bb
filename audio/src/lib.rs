//! Audio input: decode a file, standard input or bytes to mono `f32` samples at 16 kHz.
//!
//! Supported containers and codecs, and the crates that read them:
//!
//! | container | codecs | read by |
//! |---|---|---|
//! | WAV (RIFF/WAVE, incl. WAVE_FORMAT_EXTENSIBLE) | integer PCM 8/16/24/32 bits, IEEE float 32/64, A-law, µ-law | symphonia (`wav`, `pcm`) |
//! | AIFF / AIFF-C, CAF | integer and float PCM | symphonia (`aiff`, `caf`, `pcm`) |
//! | FLAC | FLAC | symphonia (`flac`) |
//! | MPEG audio (.mp3, .mp2) | MPEG-1/2/2.5 layers I, II, III | symphonia (`mpa`) |
//! | Ogg | Vorbis, FLAC | symphonia (`ogg`, `vorbis`, `flac`) |
//! | Ogg | Opus (channel mapping families 0, 1 and 255) | this module's Ogg demuxer (RFC 7845) and `opus-pure` (pure Rust) |
//! | MP4 / M4A / MOV | AAC-LC, ALAC, Opus | symphonia (`isomp4`, `aac`, `alac`) and `opus-pure`; the edit list is read here |
//! | ADTS (.aac) | AAC-LC | symphonia (`aac`) |
//! | Matroska / WebM | Vorbis, FLAC, Opus, AAC-LC, MP3 | symphonia (`mkv`) and `opus-pure` |
//!
//! Not supported, with an error naming the file: ADPCM and other compressed WAV formats,
//! WMA/ASF, AC-3, RF64, ALAC in CAF, PCM in Matroska, ambisonic Opus (mapping families 2
//! and 3). symphonia 0.5 decodes no HE-AAC extension (SBR/PS): only the AAC-LC core.
//!
//! Samples are scaled like faster-whisper/PyAV (`int16 / 32768.0`), channels are averaged,
//! and any other sample rate is resampled to 16 kHz with rubato.
//!
//! Codec delay and padding are removed where the container states them, so that decoded
//! lossy audio lines up with the original: the LAME/Xing tag of MP3 files, Opus pre-skip
//! and the end granule position of Ogg Opus, the edit list (`elst`) of MP4 files, and the
//! granule positions of Ogg Vorbis (end padding only when the file is seekable). Where
//! nothing states them they stay: MP3/MP2 without a LAME tag, ADTS AAC (1,024 priming
//! samples), and AAC, MP3 or Vorbis in Matroska (the Opus pre-skip there is removed).
//!
//! Decoding streams: [`AudioStream`] decodes one packet at a time, down-mixes it and
//! resamples it in blocks, so only the 16 kHz output grows with the length of the input.
//! [`load_audio`] appends the stream to one vector, reserved up front from the length the
//! header declares. File paths are read through the open file; `-` reads standard input,
//! which need not be seekable (an MP4 file, whose index may follow the data, is then read
//! into memory first, compressed).
//!
//! Damaged input: a file that ends mid-stream (for example an MP3 cut in half) decodes to
//! the audio that is there, with a warning; a file that ends before its first complete
//! audio frame (cut inside its header) is an error. Packets that fail to decode are skipped
//! with a warning, up to [`MAX_BAD_PACKETS`] in a row. Float samples that are NaN or
//! infinite become 0 and those beyond [`MAX_SAMPLE_MAGNITUDE`] are clipped there, with a
//! warning that counts them.

pub mod pauses;

// Modules from the bottom up: each uses only those listed before it.
mod error;
mod limits;
mod mkv;
mod mp4;
mod ogg_opus;
mod opus;
mod packet;
mod resample;
mod sniff;
mod symphonia_source;

pub use error::AudioError;
pub use limits::{MAX_BAD_PACKETS, MAX_SOURCE_RATE, MIN_SOURCE_RATE, SAMPLE_RATE, STDIN_PATH};
pub use packet::{install_panic_filter, MAX_SAMPLE_MAGNITUDE};

use error::{corrupt, SUPPORTED_CODECS, SUPPORTED_CONTAINERS, SUPPORTED_WAV_CODECS};
use ogg_opus::OggOpusSource;
use opus::{dops_as_opus_head, OpusDecoding, OpusHead, OPUS_RATE};
use packet::{catch_decoder_panic, Stats, Step, Trim};
use resample::Resampling;
use sniff::{classify_open_error, sniff, Sniffed};
use symphonia_source::{codec_name, PacketDecoder, SymphoniaSource};

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::Path;

use symphonia::core::codecs::{self as sc, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Bytes read from the start of a source to identify its container and WAV format tag.
const SNIFF_LEN: u64 = 64 * 1024;

/// Largest MP4 or Matroska file read from a non-seekable input into memory.
const MAX_BUFFERED_INPUT: u64 = 4 << 30;

/// Bytes symphonia's probe searches for a container signature (1 MiB), and the 16 bytes
/// it reads past the last position it tries.
const PROBE_WINDOW: u64 = (1 << 20) + 16;

/// Containers whose declared sizes are checked before symphonia reads them.
#[derive(Clone, Copy)]
enum Checked {
    Mp4,
    Matroska,
}

impl Checked {
    fn name(self) -> &'static str {
        match self {
            Checked::Mp4 => "MP4",
            Checked::Matroska => "Matroska",
        }
    }
}

/// Container signatures checked at most behind a weak one (MP3 frame sync, ADTS, ID3).
const MAX_CHECKED_SIGNATURES: usize = 8;

/// The first bytes symphonia's probe searches; a forward-only input replays them.
fn probe_window(input: &mut Input) -> std::io::Result<Vec<u8>> {
    let mut window = Vec::new();
    match &mut input.source {
        InputSource::Seekable(s) => {
            (&mut **s).take(PROBE_WINDOW).read_to_end(&mut window)?;
            s.seek(SeekFrom::Start(0))?;
        }
        InputSource::Stream(_) => {
            let InputSource::Stream(mut r) = std::mem::replace(
                &mut input.source,
                InputSource::Stream(Box::new(std::io::empty())),
            ) else {
                unreachable!()
            };
            (&mut r).take(PROBE_WINDOW).read_to_end(&mut window)?;
            input.source = InputSource::Stream(Box::new(Cursor::new(window.clone()).chain(r)));
        }
    }
    Ok(window)
}

/// Every MP4 (`ftyp`, the box starting 4 bytes earlier) and Matroska (EBML header)
/// signature in `window`, in the order symphonia's probe meets them.
fn markers(window: &[u8]) -> Vec<(Checked, u64)> {
    window
        .windows(4)
        .enumerate()
        .filter_map(|(at, w)| match w {
            b"ftyp" if at >= 4 => Some((Checked::Mp4, at as u64 - 4)),
            [0x1A, 0x45, 0xDF, 0xA3] => Some((Checked::Matroska, at as u64)),
            _ => None,
        })
        .collect()
}

/// Whether the signature `markers` found at `at` looks like a real container header: an
/// `ftyp` box of sane size with a printable brand, or an EBML header whose body holds the
/// document type symphonia requires ("matroska" or "webm"). A header that does not end
/// within the window counts as real: it is checked rather than trusted.
fn plausible(window: &[u8], kind: Checked, at: u64) -> bool {
    let at = at as usize;
    match kind {
        Checked::Mp4 => {
            let Some(h) = window.get(at..at + 12) else {
                return false;
            };
            let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            (8..=4096).contains(&size) && h[8..12].iter().all(|b| (0x20..0x7f).contains(b))
        }
        Checked::Matroska => {
            let Some(&first) = window.get(at + 4) else {
                return true;
            };
            let width = first.leading_zeros() as usize + 1;
            if first == 0 || first == 0xFF || width > 8 {
                return first == 0xFF;
            }
            let Some(bytes) = window.get(at + 5..at + 4 + width) else {
                return true;
            };
            let size = bytes
                .iter()
                .fold(u64::from(first) & (0xFF >> width), |v, &b| {
                    v << 8 | u64::from(b)
                });
            let body = at + 4 + width;
            let Some(end) = usize::try_from(size).ok().and_then(|s| body.checked_add(s)) else {
                return true;
            };
            match window.get(body..end) {
                Some(h) => {
                    h.windows(4).any(|w| w == b"webm") || h.windows(8).any(|w| w == b"matroska")
                }
                None => true,
            }
        }
    }
}

/// Decodes an audio file (or standard input when `path` is `-`) to mono `f32` samples at
/// [`SAMPLE_RATE`].
pub fn load_audio(path: &Path) -> Result<Vec<f32>, AudioError> {
    AudioStream::open(path)?.collect_all()
}

/// Decodes audio held in memory to mono `f32` samples at [`SAMPLE_RATE`]; `hint_ext` is a
/// file extension such as `"wav"` that helps identify the container.
pub fn decode_audio_bytes(bytes: Vec<u8>, hint_ext: Option<&str>) -> Result<Vec<f32>, AudioError> {
    AudioStream::from_bytes(bytes, hint_ext)?.collect_all()
}

/// A 16 kHz mono signal delivered in consecutive chunks: a decoder ([`AudioStream`]) or
/// something that filters one.
pub trait SampleSource: Send {
    /// The next non-empty chunk, or `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError>;
}

impl SampleSource for AudioStream {
    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        AudioStream::next_chunk(self)
    }
}

/// A decoder that yields the 16 kHz mono signal of a source in consecutive chunks.
pub struct AudioStream {
    name: String,
    container: &'static str,
    codec: String,
    source: Source,
    source_rate: u32,
    source_channels: usize,
    /// Frames at the source rate the header announces (after codec delay and padding).
    declared_frames: Option<u64>,
    /// Bytes of the input, where known (bounds the up-front reservation of [`Self::collect_all`]).
    input_bytes: Option<u64>,
    mono: Vec<f64>,
    resampler: Option<Resampling>,
    stats: Stats,
    finished: bool,
}

/// Where the packets come from and how they are decoded.
enum Source {
    Symphonia(SymphoniaSource),
    OggOpus(Box<OggOpusSource>),
}

/// The input as opened: its first bytes (for sniffing) and a source that starts at byte 0.
struct Input {
    name: String,
    head: Vec<u8>,
    source: InputSource,
    len: Option<u64>,
}

enum InputSource {
    /// A seekable source positioned at its start.
    Seekable(Box<dyn MediaSource>),
    /// A forward-only source positioned at its start (the sniffed bytes are replayed).
    Stream(Box<dyn Read + Send + Sync>),
}

impl InputSource {
    fn into_media_source(self) -> Box<dyn MediaSource> {
        match self {
            InputSource::Seekable(s) => s,
            InputSource::Stream(r) => Box::new(ReadOnlySource::new(r)),
        }
    }

    fn into_reader(self) -> Box<dyn Read + Send + Sync> {
        match self {
            InputSource::Seekable(s) => Box::new(s),
            InputSource::Stream(r) => r,
        }
    }
}

/// Reads up to `limit` bytes, retrying short reads (pipes deliver data in pieces).
fn read_head(r: &mut dyn Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    r.take(limit).read_to_end(&mut head)?;
    Ok(head)
}

impl AudioStream {
    /// Opens an audio file for streaming decoding; `-` opens standard input.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        if path.as_os_str() == STDIN_PATH {
            return Self::from_reader(std::io::stdin(), "standard input");
        }
        let name = path.display().to_string();
        let io_err = |source| AudioError::Io {
            file: name.clone(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            // A pipe (a FIFO, a shell's `<(…)`) has no length and cannot seek: read it
            // forward, as standard input.
            return Self::from_reader(file, &name);
        }
        let len = meta.len();
        if len == 0 {
            return Err(AudioError::Empty {
                file: format!("audio file {name}"),
            });
        }
        let head = read_head(&mut file, SNIFF_LEN).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let ext = path.extension().and_then(|e| e.to_str());
        let input = Input {
            name,
            head,
            source: InputSource::Seekable(Box::new(file)),
            len: Some(len),
        };
        Self::from_input(input, ext)
    }

    /// Opens audio held in memory for streaming decoding.
    pub fn from_bytes(bytes: Vec<u8>, hint_ext: Option<&str>) -> Result<Self, AudioError> {
        if bytes.is_empty() {
            return Err(AudioError::Empty {
                file: "in-memory audio".to_string(),
            });
        }
        let name = format!("in-memory audio ({} bytes)", bytes.len());
        let head = bytes[..bytes.len().min(SNIFF_LEN as usize)].to_vec();
        let len = Some(bytes.len() as u64);
        let input = Input {
            name,
            head,
            source: InputSource::Seekable(Box::new(Cursor::new(bytes))),
            len,
        };
        Self::from_input(input, hint_ext)
    }

    /// Opens a forward-only byte stream (a pipe, standard input) for streaming decoding;
    /// `name` is used in error messages. The container is identified from its content.
    pub fn from_reader<R: Read + Send + Sync + 'static>(
        mut reader: R,
        name: &str,
    ) -> Result<Self, AudioError> {
        let name = name.to_string();
        let head = read_head(&mut reader, SNIFF_LEN).map_err(|source| AudioError::Io {
            file: name.clone(),
            source,
        })?;
        if head.is_empty() {
            return Err(AudioError::Empty { file: name });
        }
        let replay = Cursor::new(head.clone()).chain(reader);
        let input = Input {
            name,
            head,
            source: InputSource::Stream(Box::new(replay)),
            len: None,
        };
        Self::from_input(input, None)
    }

    fn from_input(mut input: Input, ext: Option<&str>) -> Result<Self, AudioError> {
        let name = input.name.clone();
        let sniffed = sniff(&input.head);
        // Reject what the header already shows to be unusable, with a precise message,
        // before handing the stream to a demuxer (whose messages omit format tags).
        match &sniffed {
            Sniffed::Wav(fmt) => fmt.check(&name)?,
            Sniffed::Foreign(kind) => {
                return Err(AudioError::UnrecognisedFormat {
                    file: name,
                    detail: format!("{kind} data (supported containers: {SUPPORTED_CONTAINERS})"),
                })
            }
            Sniffed::TruncatedRiff => {
                return Err(corrupt(
                    &name,
                    format!(
                        "file ends inside the 12-byte RIFF header ({} bytes)",
                        input.head.len()
                    ),
                ))
            }
            Sniffed::OggOpus => {
                let source = OggOpusSource::new(&name, input.source.into_reader())?;
                return Self::with_source(
                    input.name,
                    "Ogg",
                    "Opus".to_string(),
                    Source::OggOpus(Box::new(source)),
                    OPUS_RATE,
                    None,
                    input.len,
                );
            }
            _ => {}
        }

        // symphonia allocates lengths that MP4 and Matroska indexes declare before reading
        // them, so those containers are checked first (`mp4::check_sizes`,
        // `mkv::check_structure`), from where symphonia's probe will find them: at the
        // start, or behind unrecognised bytes, which the probe skips (up to 1 MiB).
        let mut checked = match &sniffed {
            Sniffed::Known("MP4/M4A") => vec![(Checked::Mp4, 0)],
            Sniffed::Known("Matroska/WebM") => vec![(Checked::Matroska, 0)],
            _ => Vec::new(),
        };
        // A frame sync (MP3, ADTS) or an ID3 tag at the start is a weak signature:
        // symphonia's probe may reject or skip it (an ID3 tag's declared length can jump
        // past the first container signatures) and go on to a container further in. So
        // such inputs have every container signature that is plausibly real checked (not
        // four bytes of compressed audio that happen to match). Otherwise the probe takes
        // the first signature.
        let weak = matches!(sniffed, Sniffed::Known("MP3" | "ADTS AAC"));
        if matches!(sniffed, Sniffed::Unknown) || weak {
            let window = probe_window(&mut input).map_err(|source| AudioError::Io {
                file: name.clone(),
                source,
            })?;
            let found = markers(&window);
            checked = if weak {
                found
                    .into_iter()
                    .filter(|&(kind, at)| plausible(&window, kind, at))
                    .take(MAX_CHECKED_SIGNATURES)
                    .collect()
            } else {
                found.into_iter().take(1).collect()
            };
        }
        let mut edit = None;
        for (kind, at) in checked {
            // The check needs the whole input (an MP4 index often follows the audio): a
            // forward-only input is read into memory first.
            if let InputSource::Stream(r) = input.source {
                let mut bytes = Vec::new();
                r.take(MAX_BUFFERED_INPUT + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| AudioError::Io {
                        file: name.clone(),
                        source,
                    })?;
                if bytes.len() as u64 > MAX_BUFFERED_INPUT {
                    return Err(corrupt(&name, format!("{} input on a non-seekable stream is larger than 4 GiB; pass a file path instead", kind.name())));
                }
                input.len = Some(bytes.len() as u64);
                input.source = InputSource::Seekable(Box::new(Cursor::new(bytes)));
            }
            if let (InputSource::Seekable(s), Some(len)) = (&mut input.source, input.len) {
                match kind {
                    Checked::Mp4 => {
                        mp4::check_sizes(s, at, len).map_err(|d| corrupt(&name, d))?;
                        if at == 0 {
                            edit = mp4::audio_edit(s, len);
                        }
                    }
                    Checked::Matroska => {
                        mkv::check_structure(s, at, len).map_err(|d| corrupt(&name, d))?
                    }
                }
                s.seek(SeekFrom::Start(0))
                    .map_err(|source| AudioError::Io {
                        file: name.clone(),
                        source,
                    })?;
            }
        }

        let mut hint = Hint::new();
        if let Some(ext) = ext {
            hint.with_extension(ext);
        }
        let mss = MediaSourceStream::new(input.source.into_media_source(), Default::default());
        let format_opts = FormatOptions {
            enable_gapless: true,
            ..Default::default()
        };
        let probed = catch_decoder_panic(AssertUnwindSafe(|| {
            symphonia::default::get_probe().format(
                &hint,
                mss,
                &format_opts,
                &MetadataOptions::default(),
            )
        }))
        .map_err(|_| corrupt(&name, "the container parser failed on this input"))?
        .map_err(|e| classify_open_error(&name, &sniffed, e))?;
        let format = probed.format;
        let container = sniffed.container();

        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| AudioError::NoTrack { file: name.clone() })?;
        let params = track.codec_params.clone();
        let track_id = track.id;

        // Opus always decodes at 48 kHz, whatever rate a container records.
        let is_opus = params.codec == sc::CODEC_TYPE_OPUS;
        let source_rate = if is_opus {
            OPUS_RATE
        } else {
            params.sample_rate.unwrap_or(0)
        };
        if !(MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&source_rate) {
            return Err(AudioError::BadSampleRate {
                file: name,
                rate: u64::from(source_rate),
            });
        }
        let codec = codec_name(params.codec);
        let supported = if container == "WAV" {
            SUPPORTED_WAV_CODECS
        } else {
            SUPPORTED_CODECS
        };

        // symphonia's Matroska reader reports the duration in other units than frames, and
        // a WAV written to a pipe declares 0xFFFFFFFF bytes: its length is unknown.
        let unknown_len = match &sniffed {
            Sniffed::Wav(fmt) => fmt.data_len == Some(u32::MAX),
            Sniffed::Known(k) => *k == "Matroska/WebM",
            _ => false,
        };
        let mut declared = if unknown_len { None } else { params.n_frames };
        let mut trim = Trim::default();
        if let Some(edit) = edit {
            let (start, len) = edit.frames(source_rate);
            trim.start = start;
            trim.end = len.map(|l| start + l);
            declared = len.or(declared.map(|d| d.saturating_sub(start)));
        }

        let mut channels = params.channels.map_or(0, |c| c.count());
        let decoder = if is_opus {
            // symphonia demuxes Opus (Matroska/WebM, MP4) but has no decoder for it.
            let head = match params.extra_data.as_deref() {
                Some(extra) if extra.starts_with(b"OpusHead") => {
                    let head = if container == "MP4/M4A" {
                        dops_as_opus_head(extra)
                    } else {
                        extra.to_vec()
                    };
                    OpusHead::parse(&head).map_err(|d| corrupt(&name, d))?
                }
                _ => OpusHead::plain(
                    params.channels.map_or(0, |c| c.count()),
                    params.delay.unwrap_or(0),
                ),
            };
            let opus = OpusDecoding::new(&name, container, &head)?;
            // In MP4 the edit list already starts after the pre-skip.
            if edit.is_none() {
                trim.start += u64::from(head.pre_skip);
            }
            channels = head.channels;
            PacketDecoder::Opus(Box::new(opus))
        } else {
            // symphonia sizes a decoder's output buffer from the header before decoding
            // anything: a damaged ALAC cookie or PCM sample entry can ask for gigabytes.
            if let Some((frames, channels)) = declared_packet_size(&params) {
                if frames.saturating_mul(channels) > MAX_PACKET_SAMPLES {
                    return Err(corrupt(
                        &name,
                        format!(
                            "its {codec} header declares packets of {frames} frames \
                             × {channels} channels, more than the {MAX_PACKET_SAMPLES} \
                             samples a packet may hold"
                        ),
                    ));
                }
            }
            // Decoder set-up parses the codec's own header (Vorbis codebooks, FLAC stream
            // info, ...) and can panic on damaged data, as decoding can.
            let decoder = catch_decoder_panic(AssertUnwindSafe(|| {
                symphonia::default::get_codecs().make(&params, &DecoderOptions::default())
            }))
            .map_err(|_| {
                corrupt(
                    &name,
                    format!("cannot set up the {codec} decoder: its set-up data is damaged"),
                )
            })?
            .map_err(|e| match e {
                SymphoniaError::Unsupported(what) => AudioError::UnsupportedCodec {
                    file: name.clone(),
                    container,
                    codec: match &sniffed {
                        Sniffed::Wav(fmt) => fmt.describe(),
                        _ => format!("{codec} ({what})"),
                    },
                    supported,
                },
                other => corrupt(&name, format!("cannot set up the {codec} decoder: {other}")),
            })?;
            PacketDecoder::Symphonia { decoder, buf: None }
        };
        let source = Source::Symphonia(SymphoniaSource {
            format,
            track_id,
            decoder,
            trim,
            supported,
            channels: 0,
            length_known: declared.is_some(),
        });
        let mut stream = Self::with_source(
            name,
            container,
            codec,
            source,
            source_rate,
            declared,
            input.len,
        )?;
        stream.source_channels = channels;
        Ok(stream)
    }

    fn with_source(
        name: String,
        container: &'static str,
        codec: String,
        source: Source,
        source_rate: u32,
        declared_frames: Option<u64>,
        input_bytes: Option<u64>,
    ) -> Result<Self, AudioError> {
        let resampler = if source_rate == SAMPLE_RATE {
            None
        } else {
            Some(
                Resampling::new(source_rate).map_err(|detail| AudioError::Resample {
                    file: name.clone(),
                    rate: source_rate,
                    detail,
                })?,
            )
        };
        let source_channels = match &source {
            Source::OggOpus(s) => s.channels(),
            Source::Symphonia(_) => 0,
        };
        Ok(AudioStream {
            name,
            container,
            codec,
            source,
            source_rate,
            source_channels,
            declared_frames,
            input_bytes,
            mono: Vec::new(),
            resampler,
            stats: Stats::default(),
            finished: false,
        })
    }

    /// The sample rate of the source, in Hz.
    pub fn source_sample_rate(&self) -> u32 {
        self.source_rate
    }

    /// The number of channels of the source (0 if the container does not say before decoding).
    pub fn source_channels(&self) -> usize {
        self.source_channels
    }

    /// The name used in error messages (the file path, or a description of in-memory data).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container, e.g. `"Ogg"` or `"MP4/M4A"`.
    pub fn container(&self) -> &str {
        self.container
    }

    /// The codec, e.g. `"Opus"` or `"MP3"`.
    pub fn codec(&self) -> &str {
        &self.codec
    }

    /// The number of 16 kHz samples the header announces, if it does (a hint: a damaged
    /// file may hold fewer).
    pub fn expected_len(&self) -> Option<u64> {
        let frames = self.declared_frames?;
        Some(match &self.resampler {
            None => frames,
            Some(r) => r.expected_out(frames),
        })
    }

    /// Returns the next non-empty chunk of 16 kHz mono samples, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        let mut out = Vec::new();
        while out.is_empty() && !self.finished {
            self.step(&mut out)?;
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    /// Decodes the rest of the stream into one vector.
    ///
    /// The vector is reserved from the length the header announces (bounded by the input's
    /// size), and otherwise grows by an eighth at a time, so its capacity stays close to its
    /// length: a long recording is never held twice.
    pub fn collect_all(mut self) -> Result<Vec<f32>, AudioError> {
        // Headroom kept for one step: the largest packets (64 Ki-frame FLAC blocks, WAV
        // packets) yield fewer 16 kHz samples than this.
        const STEP_ROOM: usize = 64 * 1024;
        // At most 1 KiB of output per input byte: more than any codec's compression of
        // speech, and bounds what a forged header can make us reserve.
        // Without an input size, at most 10 minutes are reserved on the header's word.
        let cap = self
            .input_bytes
            .map_or(10 * 60 * u64::from(SAMPLE_RATE), |b| b.saturating_mul(256));
        let hint = self.expected_len().map(|n| n.min(cap) as usize);
        let mut all: Vec<f32> = Vec::with_capacity(hint.map_or(0, |n| n + STEP_ROOM));
        while !self.finished {
            if all.capacity() - all.len() < STEP_ROOM {
                all.reserve_exact((all.len() / 8).max(1 << 20));
            }
            self.step(&mut all)?;
        }
        if all.capacity() - all.len() > STEP_ROOM {
            all.shrink_to_fit();
        }
        Ok(all)
    }

    /// Decodes one packet (or finishes the stream) and appends its 16 kHz output to `out`.
    fn step(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let r = self.step_inner(out);
        if r.is_err() {
            self.finished = true;
        }
        r
    }

    fn step_inner(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        if self.finished {
            return Ok(());
        }
        self.mono.clear();
        let step = match &mut self.source {
            Source::Symphonia(s) => s.step(
                &self.name,
                self.container,
                &mut self.mono,
                &mut self.stats,
                self.source_rate,
            )?,
            Source::OggOpus(s) => s.step(&self.name, &mut self.mono, &mut self.stats)?,
        };
        if let (Source::Symphonia(s), 0) = (&self.source, self.source_channels) {
            self.source_channels = s.decoded_channels();
        }
        self.stats.frames_kept += self.mono.len() as u64;
        if !self.mono.is_empty() {
            match &mut self.resampler {
                None => out.extend(self.mono.iter().map(|&s| s as f32)),
                Some(r) => r
                    .push(&self.mono, out)
                    .map_err(|detail| AudioError::Resample {
                        file: self.name.clone(),
                        rate: self.source_rate,
                        detail,
                    })?,
            }
        }
        if let Step::End = step {
            self.finish(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.finished = true;
        if self.stats.packets_decoded == 0 && self.declared_frames != Some(0) {
            return Err(corrupt(
                &self.name,
                format!(
                    "the {} stream ends before its first complete audio frame (file cut short?)",
                    self.codec
                ),
            ));
        }
        let secs = |frames: u64| frames as f64 / f64::from(self.source_rate);
        match self.declared_frames {
            Some(d) if self.stats.cut_short || self.stats.frames_kept < d => tracing::warn!(
                "{}: audio ends after {:.2} s of the {:.2} s the header announces; the file is truncated",
                self.name,
                secs(self.stats.frames_kept),
                secs(d)
            ),
            _ if self.stats.cut_short => {
                tracing::warn!("{}: data ends before the declared length; the file is truncated", self.name)
            }
            _ => {}
        }
        if self.stats.frames_repaired > 0 {
            tracing::warn!(
                "{}: {} sample(s) were NaN, infinite or over {MAX_SAMPLE_MAGNITUDE} times full \
                 scale, and were made silent or clipped (the file may be damaged)",
                self.name,
                self.stats.frames_repaired
            );
        }
        if let Some(r) = &mut self.resampler {
            r.finish(out).map_err(|detail| AudioError::Resample {
                file: self.name.clone(),
                rate: self.source_rate,
                detail,
            })?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AudioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioStream")
            .field("name", &self.name)
            .field("container", &self.container)
            .field("codec", &self.codec)
            .field("source_rate", &self.source_rate)
            .field("source_channels", &self.source_channels)
            .finish_non_exhaustive()
    }
}

impl Iterator for AudioStream {
    type Item = Result<Vec<f32>, AudioError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// Samples in one packet past which a header is taken as damaged: 2^22 (4,194,304) is
/// 8 channels of 524,288 frames, over 10 s at 48 kHz, where real encoders write 4,096
/// (ALAC) or a few thousand (PCM in MP4) frames a packet.
const MAX_PACKET_SAMPLES: u64 = 1 << 22;

/// The packet size (frames, channels) the header makes symphonia allocate for, where the
/// file states it.
fn declared_packet_size(params: &sc::CodecParameters) -> Option<(u64, u64)> {
    let channels = params.channels.map_or(1, |c| c.count().max(1) as u64);
    if params.codec == sc::CODEC_TYPE_ALAC {
        // The magic cookie opens with the frame length (u32, big-endian); byte 9 is the
        // channel count.
        let cookie = params.extra_data.as_deref()?;
        let frames = u32::from_be_bytes(cookie.get(..4)?.try_into().ok()?);
        let channels = cookie.get(9).map_or(channels, |&c| u64::from(c).max(1));
        return Some((u64::from(frames), channels));
    }
    params.max_frames_per_packet.map(|f| (f, channels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ogg_opus::{ogg_crc, OggPages};
    use crate::opus::{opus_frame_len, opus_packet_frames, undelimit};
    use crate::packet::downmix;

    /// A sum of sinusoids below 0.9 × the lower Nyquist frequency, sampled at `rate`.
    fn tones(rate: u32, n: usize, fmax: f64) -> (Vec<f64>, impl Fn(f64) -> f64) {
        let comps: Vec<(f64, f64, f64)> = (0..12)
            .map(|i| {
                let x = i as f64 / 12.0;
                (0.03 + 0.02 * x, 60.0 + x * (fmax - 60.0), 2.1 * i as f64)
            })
            .collect();
        let f = move |t: f64| -> f64 {
            comps
                .iter()
                .map(|(a, fr, p)| a * (2.0 * std::f64::consts::PI * fr * t + p).sin())
                .sum()
        };
        let x = (0..n).map(|k| f(k as f64 / rate as f64)).collect();
        (x, f)
    }

    fn resample_all(rate: u32, x: &[f64], piece: usize) -> Vec<f32> {
        let mut r = Resampling::new(rate).unwrap();
        let mut out = Vec::new();
        for c in x.chunks(piece) {
            r.push(c, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn resampling_matches_band_limited_signal() {
        for &(rate, fmax, secs) in &[
            (44_100u32, 7_000.0, 2),
            (8_000, 3_500.0, 2),
            (48_000, 7_000.0, 2),
            (22_050, 7_000.0, 2),
            (11_025, 4_900.0, 2),
            (44_101, 7_000.0, 2),
        ] {
            let n = rate as usize * secs + 37;
            let (x, f) = tones(rate, n, fmax);
            let y = resample_all(rate, &x, 999);
            let expected = ((n as f64) * 16_000.0 / rate as f64).round() as usize;
            assert_eq!(y.len(), expected, "length at {rate} Hz");
            // Away from the edges (where the signal is truncated) the output must equal the
            // analytic signal at the output instants: time-aligned and band-limited.
            let (mut e2, mut r2) = (0.0, 0.0);
            for (k, &v) in y.iter().enumerate().skip(2_000).take(y.len() - 4_000) {
                let r = f(k as f64 / 16_000.0);
                e2 += (v as f64 - r).powi(2);
                r2 += r * r;
            }
            let rel = (e2 / r2).sqrt();
            eprintln!("{rate} Hz ({secs} s) → 16 kHz: relative RMS error {rel:.2e}");
            // A rate coprime with 16 kHz needs one block of 2 × 44,101 samples: that filter's
            // cut-off is so steep that the signal's abrupt ends ring for ~0.3 s, inside the
            // margin; measured 6.2e-6 (2.4e-8 for the usual rates, i.e. f32 rounding).
            let bound = if rate == 44_101 { 2e-5 } else { 1e-6 };
            assert!(rel < bound, "{rate} Hz: relative RMS error {rel:e}");
        }
    }

    #[test]
    fn resampling_is_independent_of_push_sizes() {
        let (x, _) = tones(44_100, 30_000, 6_000.0);
        let a = resample_all(44_100, &x, 1);
        let b = resample_all(44_100, &x, 30_000);
        assert_eq!(a, b);
    }

    #[test]
    fn resampling_tiny_inputs() {
        assert!(resample_all(44_100, &[], 10).is_empty());
        assert_eq!(resample_all(44_100, &[0.5; 3], 10).len(), 1);
        assert_eq!(resample_all(8_000, &[0.5; 3], 10).len(), 6);
    }

    #[test]
    fn trim_keeps_the_window_between_delay_and_end() {
        let mut t = Trim {
            start: 5,
            end: Some(12),
            pos: 0,
        };
        assert!(t.take(3).is_empty());
        assert_eq!(t.take(4), 2..4);
        assert_eq!(t.take(10), 0..5);
        assert!(t.take(4).is_empty());
        let mut open = Trim::default();
        assert_eq!(open.take(7), 0..7);
    }

    #[test]
    fn downmix_averages_and_scales() {
        let mut out = Vec::new();
        let repaired = downmix(&[1.0f32, 3.0, 5.0, 7.0, 9.0, 11.0], 2, 1..3, 0.5, &mut out);
        assert_eq!((out, repaired), (vec![3.0, 5.0], 0));
    }

    #[test]
    fn downmix_counts_the_frames_it_makes_sane() {
        let big = 1e9f64;
        let mut out = Vec::new();
        let mono = [0.5, f64::NAN, big, -f64::INFINITY, 0.25, -big];
        assert_eq!(downmix(&mono, 1, 0..6, 1.0, &mut out), 4);
        let m = MAX_SAMPLE_MAGNITUDE;
        assert_eq!(out, [0.5, 0.0, m, 0.0, 0.25, -m]);
        // Stereo: a frame counts once, whether one or both channels changed, and an
        // infinity in one channel cannot cancel the other's (the channels are bounded
        // before their mean).
        out.clear();
        let inf = f64::INFINITY;
        let stereo = [0.5, 0.5, inf, -inf, f64::NAN, f64::NAN, 1.0, 0.0];
        assert_eq!(downmix(&stereo, 2, 0..4, 1.0, &mut out), 2);
        assert_eq!(out, [0.5, 0.0, 0.0, 0.5]);
        // In range before the gain, out of range after it.
        out.clear();
        assert_eq!(downmix(&[m, 1.0], 1, 0..2, 2.0, &mut out), 1);
        assert_eq!(out, [m, 2.0]);
    }

    #[test]
    fn opus_packet_durations() {
        // config 1 (SILK NB 20 ms), code 0: 960 samples; config 31 (CELT FB 20 ms), code 1:
        // two frames; config 16 (CELT NB 2.5 ms), code 3 with 6 frames.
        assert_eq!(opus_packet_frames(&[1 << 3]), Some(960));
        assert_eq!(opus_packet_frames(&[(31 << 3) | 1]), Some(1920));
        assert_eq!(opus_packet_frames(&[(16 << 3) | 3, 6]), Some(720));
        assert_eq!(opus_packet_frames(&[(13 << 3) | 3]), None);
        assert_eq!(opus_packet_frames(&[]), None);
    }

    #[test]
    fn self_delimited_opus_packets_are_split() {
        // Code 0: TOC, self-delimiting length 3, 3 bytes, then the next stream's data.
        let (p, used) = undelimit(&[0x08, 3, 1, 2, 3, 0xAA]).unwrap();
        assert_eq!((p, used), (vec![0x08, 1, 2, 3], 5));
        // Code 2: TOC, first length 1, self-delimiting second length 2.
        let (p, used) = undelimit(&[0x0A, 1, 2, 9, 8, 7, 0xAA]).unwrap();
        assert_eq!((p, used), (vec![0x0A, 1, 9, 8, 7], 6));
        // Code 3 VBR with padding: 2 frames, padding 1, first length 1, last length 2.
        let (p, used) = undelimit(&[0x0B, 0xC2, 1, 1, 2, 5, 6, 7, 0, 0xAA]).unwrap();
        assert_eq!((p, used), (vec![0x0B, 0xC2, 1, 1, 5, 6, 7, 0], 9));
        // Code 3 CBR: 3 frames of 2 bytes.
        let (p, used) = undelimit(&[0x0B, 0x03, 2, 1, 1, 2, 2, 3, 3, 0xAA]).unwrap();
        assert_eq!((p, used), (vec![0x0B, 0x03, 1, 1, 2, 2, 3, 3], 9));
        // Two-byte length: 252 + 4 × 1 = 256.
        assert_eq!(opus_frame_len(&[252, 1]), Some((256, 2)));
        assert!(undelimit(&[0x08, 10, 1]).is_err());
        assert!(undelimit(&[0x0B, 0x00, 1]).is_err());
    }

    fn opus_head(channels: u8, family: u8, table: &[u8]) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.extend_from_slice(&[
            1, channels, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0x00, 0x02, family,
        ]);
        h.extend_from_slice(table);
        h
    }

    #[test]
    fn opus_head_parsing() {
        let h = OpusHead::parse(&opus_head(2, 0, &[])).unwrap();
        assert_eq!(
            (h.channels, h.pre_skip, h.gain_q8, h.streams, h.coupled),
            (2, 312, 512, 1, 1)
        );
        let h = OpusHead::parse(&opus_head(6, 1, &[4, 2, 0, 4, 1, 2, 3, 5])).unwrap();
        assert_eq!(
            (h.streams, h.coupled, h.mapping.as_slice()),
            (4, 2, &[0u8, 4, 1, 2, 3, 5][..])
        );
        assert!(OpusHead::parse(&opus_head(3, 0, &[]))
            .unwrap_err()
            .contains("family 0"));
        assert!(OpusHead::parse(&opus_head(2, 1, &[1, 0, 0, 9]))
            .unwrap_err()
            .contains("decoded channel 9"));
        assert!(OpusHead::parse(&opus_head(6, 1, &[4, 2, 0]))
            .unwrap_err()
            .contains("mapping table"));
        assert!(OpusHead::parse(b"OpusHead\x01").is_err());
        // Ambisonics is refused with a clear message.
        let h = OpusHead::parse(&opus_head(4, 2, &[4, 0, 0, 1, 2, 3])).unwrap();
        let e = OpusDecoding::new("x.opus", "Ogg", &h).err().unwrap();
        assert!(matches!(e, AudioError::UnsupportedCodec { .. }), "{e:?}");
        assert!(
            e.to_string().contains(
                "x.opus: unsupported codec Opus with channel mapping family 2 (ambisonics)"
            ),
            "{e}"
        );
    }

    #[test]
    fn ogg_crc_of_a_known_page() {
        // An empty page (no segments): header only, checksum computed with the field zeroed.
        let mut page = b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        let crc = ogg_crc(0, &page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        // The same table-driven CRC computed bit by bit.
        let mut bitwise = 0u32;
        let mut zeroed = page.clone();
        zeroed[22..26].fill(0);
        for &b in &zeroed {
            bitwise ^= u32::from(b) << 24;
            for _ in 0..8 {
                bitwise = if bitwise & 0x8000_0000 != 0 {
                    (bitwise << 1) ^ 0x04C1_1DB7
                } else {
                    bitwise << 1
                };
            }
        }
        assert_eq!(crc, bitwise);
        let mut pages = OggPages::new(Box::new(Cursor::new(page.clone())));
        let p = pages.next("t").unwrap().unwrap();
        assert_eq!((p.flags, p.serial, p.lacing.len()), (2, 1, 0));
        assert!(pages.next("t").unwrap().is_none());
        // A corrupted page is skipped.
        page[14] = 7;
        let mut pages = OggPages::new(Box::new(Cursor::new(page)));
        assert!(pages.next("t").unwrap().is_none());
    }

    #[test]
    fn mp4_edit_list_entries() {
        // Version 0: an empty edit (media time -1), then 11,000 ms from media time 1,024.
        let mut elst = vec![0, 0, 0, 0, 0, 0, 0, 2];
        elst.extend_from_slice(&[0, 0, 0, 100, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 0, 0]);
        elst.extend_from_slice(&[0, 0, 0x2A, 0xF8, 0, 0, 4, 0, 0, 1, 0, 0]);
        let mut moov_children = Vec::new();
        let mvhd = [vec![0u8; 12], 1000u32.to_be_bytes().to_vec(), vec![0u8; 84]].concat();
        moov_children.extend(mp4_box(b"mvhd", &mvhd));
        let mdhd = [
            vec![0u8; 12],
            16_000u32.to_be_bytes().to_vec(),
            vec![0u8; 8],
        ]
        .concat();
        let hdlr = [vec![0u8; 8], b"soun".to_vec(), vec![0u8; 13]].concat();
        let mdia = [mp4_box(b"mdhd", &mdhd), mp4_box(b"hdlr", &hdlr)].concat();
        let trak = [
            mp4_box(b"tkhd", &[0; 84]),
            mp4_box(b"edts", &mp4_box(b"elst", &elst)),
            mp4_box(b"mdia", &mdia),
        ]
        .concat();
        moov_children.extend(mp4_box(b"trak", &trak));
        let file = [
            mp4_box(b"ftyp", b"M4A \0\0\0\0"),
            mp4_box(b"mdat", &[0; 10]),
            mp4_box(b"moov", &moov_children),
        ]
        .concat();
        let edit = mp4::audio_edit(&mut Cursor::new(&file), file.len() as u64).unwrap();
        assert_eq!(
            edit,
            mp4::Edit {
                media_time: 1024,
                segment_duration: 11_000,
                movie_timescale: 1000,
                media_timescale: 16_000
            }
        );
        assert_eq!(edit.frames(16_000), (1024, Some(176_000)));
        assert_eq!(edit.frames(48_000), (3072, Some(528_000)));
        // A box running past its parent stops the walk.
        let mut bad = file.clone();
        let at = bad.len() - moov_children.len() - 8;
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            mp4::audio_edit(&mut Cursor::new(&bad), bad.len() as u64),
            None
        );
    }

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        [
            ((body.len() + 8) as u32).to_be_bytes().to_vec(),
            kind.to_vec(),
            body.to_vec(),
        ]
        .concat()
    }

    #[test]
    fn ogg_opus_is_told_from_other_ogg() {
        let page = |body: &[u8]| {
            let mut p = b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0".to_vec();
            p.push(1);
            p.push(body.len() as u8);
            p.extend_from_slice(body);
            p
        };
        assert!(matches!(
            sniff(&page(b"OpusHead\x01\x01")),
            Sniffed::OggOpus
        ));
        assert!(matches!(
            sniff(&page(b"\x01vorbis\0\0")),
            Sniffed::Known("Ogg")
        ));
        // A Theora stream first, then Opus: still Opus.
        let both = [page(b"\x80theora\0\0"), page(b"OpusHead\x01\x02")].concat();
        assert!(matches!(sniff(&both), Sniffed::OggOpus));
    }

    #[test]
    fn ebml_header_plausibility_reads_every_size_width() {
        // EBML magic, a size of 16 in 1 byte and in 8 bytes (first byte 0x01: no value
        // bits; the fuzz build's overflow check caught a shift by 8 there), then 16 bytes.
        let header = |size: &[u8], body: &[u8; 16]| {
            let mut w = vec![0u8; 4];
            w.extend_from_slice(&[0x1A, 0x45, 0xDF, 0xA3]);
            w.extend_from_slice(size);
            w.extend_from_slice(body);
            w.extend_from_slice(b"webm trailing bytes outside the header");
            w
        };
        let named = b"\x42\x82\x84webm\0\0\0\0\0\0\0\0\0";
        let unnamed = b"\x42\x82\x84abcd\0\0\0\0\0\0\0\0\0";
        for size in [&[0x90][..], &[0x01, 0, 0, 0, 0, 0, 0, 0x10]] {
            assert!(plausible(&header(size, named), Checked::Matroska, 4));
            assert!(
                !plausible(&header(size, unnamed), Checked::Matroska, 4),
                "size {size:?}: the document type lies outside the header"
            );
        }
        // A header running past the window is checked rather than trusted.
        assert!(plausible(
            &header(&[0x01, 0, 0, 0, 0, 0, 0x10, 0], unnamed),
            Checked::Matroska,
            4
        ));
    }

    #[test]
    fn sniff_walks_chunks() {
        let mut wav = b"RIFF\0\0\0\0WAVELIST\x03\0\0\0abc\0".to_vec();
        wav.extend_from_slice(b"fmt \x10\0\0\0");
        wav.extend_from_slice(&[0x11, 0, 2, 0, 0x44, 0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0]);
        match sniff(&wav) {
            Sniffed::Wav(f) => {
                assert_eq!(
                    (f.tag, f.channels, f.sample_rate, f.bits),
                    (0x11, 2, 44_100, 4)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(sniff(b"fLaC\0\0\0\"\x10"), Sniffed::Known("FLAC")));
        assert!(matches!(sniff(b"hello world"), Sniffed::Unknown));
    }
}
