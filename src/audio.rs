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
//! with a warning, up to [`MAX_BAD_PACKETS`] in a row. Float samples that are NaN become
//! 0 and those beyond [`MAX_SAMPLE_MAGNITUDE`] are clipped there.

use std::cell::Cell;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use rubato::{FftFixedInOut, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{self as sc, CodecType, Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

thread_local! {
    /// Depth of decoder calls whose panics are caught and reported as damaged data.
    static DECODER_GUARD: Cell<u32> = const { Cell::new(0) };
}

/// `catch_unwind` around a decoder call, marking the call so that
/// [`install_panic_filter`] keeps its panic message off stderr (the error that replaces
/// it says what happened).
fn catch_decoder_panic<R>(
    f: impl FnOnce() -> R + std::panic::UnwindSafe,
) -> std::thread::Result<R> {
    DECODER_GUARD.with(|g| g.set(g.get() + 1));
    let r = std::panic::catch_unwind(f);
    DECODER_GUARD.with(|g| g.set(g.get() - 1));
    r
}

/// Installs a panic hook that logs (at debug level) instead of printing the panics the
/// audio decoders raise on damaged input, which are caught and turned into errors; every
/// other panic is printed by the previous hook as usual. Call once, at program start.
pub fn install_panic_filter() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if DECODER_GUARD.with(|g| g.get()) > 0 {
            tracing::debug!("audio decoder panic, reported as damaged data: {info}");
        } else {
            previous(info);
        }
    }));
}

/// The sample rate Whisper expects, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;

/// Lowest source sample rate accepted, in Hz.
pub const MIN_SOURCE_RATE: u32 = 1_000;

/// Highest source sample rate accepted, in Hz (the highest rate used in studio audio).
pub const MAX_SOURCE_RATE: u32 = 768_000;

/// The path that stands for standard input.
pub const STDIN_PATH: &str = "-";

/// Packets in a row that may fail to decode (and be skipped) before decoding gives up.
pub const MAX_BAD_PACKETS: u32 = 16;

/// Bytes read from the start of a source to identify its container and WAV format tag.
const SNIFF_LEN: u64 = 64 * 1024;

/// Largest MP4 file read from a non-seekable input into memory.
const MAX_BUFFERED_MP4: u64 = 4 << 30;

/// Largest Ogg packet accepted (Opus audio packets are at most ~8 KB per stream; comment
/// packets may carry cover art).
const MAX_OGG_PACKET: usize = 32 << 20;

/// Codecs decoded inside containers other than WAV, for error messages.
const SUPPORTED_CODECS: &str = "PCM, FLAC, MP3 (MPEG layers I-III), Vorbis, Opus, AAC-LC, ALAC";

/// Codecs decoded inside WAV files, for error messages.
const SUPPORTED_WAV_CODECS: &str = "PCM integer, IEEE float, A-law, mu-law";

/// Containers read, for error messages.
const SUPPORTED_CONTAINERS: &str =
    "WAV, AIFF, CAF, FLAC, MP3, Ogg (Vorbis, Opus, FLAC), MP4/M4A, ADTS AAC, Matroska/WebM";

/// Errors raised while opening or decoding audio; each names the file (or in-memory source).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("cannot read audio file {file}: {source}")]
    Io {
        /// The file concerned.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no content at all.
    #[error("{file} is empty (0 bytes)")]
    Empty {
        /// The file concerned.
        file: String,
    },
    /// The content is not a container this build can read.
    #[error("{file} is not a recognised audio file: {detail}")]
    UnrecognisedFormat {
        /// The file concerned.
        file: String,
        /// What was found instead.
        detail: String,
    },
    /// A recognised container holds a codec this build does not decode.
    #[error("{file}: unsupported codec {codec} in a {container} file (supported: {supported})")]
    UnsupportedCodec {
        /// The file concerned.
        file: String,
        /// The container, e.g. "WAV".
        container: &'static str,
        /// The codec, with its format tag where known.
        codec: String,
        /// The codecs this build decodes in such a container.
        supported: &'static str,
    },
    /// The container or the sample data is damaged or cut short.
    #[error("{file}: truncated or corrupt audio data: {detail}")]
    Corrupt {
        /// The file concerned.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// The stream declares zero channels.
    #[error("{file}: the audio stream declares 0 channels")]
    NoChannels {
        /// The file concerned.
        file: String,
    },
    /// The stream's sample rate is missing or outside the accepted range.
    #[error("{file}: sample rate {rate} Hz is outside the supported range {MIN_SOURCE_RATE}..={MAX_SOURCE_RATE} Hz")]
    BadSampleRate {
        /// The file concerned.
        file: String,
        /// The declared rate (0 if none was declared).
        rate: u64,
    },
    /// The container holds no decodable audio track.
    #[error(
        "{file}: no audio track in a codec this build decodes (supported: {SUPPORTED_CODECS})"
    )]
    NoTrack {
        /// The file concerned.
        file: String,
    },
    /// The resampler could not be built or run.
    #[error("{file}: resampling from {rate} Hz to 16000 Hz failed: {detail}")]
    Resample {
        /// The file concerned.
        file: String,
        /// The source rate.
        rate: u32,
        /// The resampler's message.
        detail: String,
    },
}

fn corrupt(file: &str, detail: impl Into<String>) -> AudioError {
    AudioError::Corrupt {
        file: file.to_string(),
        detail: detail.into(),
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

/// Decoding progress, for the end-of-stream checks.
#[derive(Default)]
struct Stats {
    packets_decoded: u64,
    bad_packets_in_a_row: u32,
    frames_kept: u64,
    /// The source reported that its data stops early (e.g. a WAV data chunk cut short).
    cut_short: bool,
}

/// Where the packets come from and how they are decoded.
enum Source {
    Symphonia(SymphoniaSource),
    OggOpus(Box<OggOpusSource>),
}

/// What one decoding step produced.
enum Step {
    /// A packet was decoded (its kept frames are in the mono buffer, possibly none).
    Data,
    /// The stream ended.
    End,
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
        let len = file.metadata().map_err(io_err)?.len();
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

        let mut edit = None;
        if matches!(sniffed, Sniffed::Known("MP4/M4A")) {
            // An MP4 index (moov) often follows the audio data, and the edit list is read
            // before decoding: a forward-only input is read into memory first.
            if let InputSource::Stream(r) = input.source {
                let mut bytes = Vec::new();
                r.take(MAX_BUFFERED_MP4 + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| AudioError::Io {
                        file: name.clone(),
                        source,
                    })?;
                if bytes.len() as u64 > MAX_BUFFERED_MP4 {
                    return Err(corrupt(&name, "MP4 input on a non-seekable stream is larger than 4 GiB; pass a file path instead"));
                }
                input.len = Some(bytes.len() as u64);
                input.source = InputSource::Seekable(Box::new(Cursor::new(bytes)));
            }
            if let (InputSource::Seekable(s), Some(len)) = (&mut input.source, input.len) {
                mp4::check_sizes(s, 0, len).map_err(|d| corrupt(&name, d))?;
                edit = mp4::audio_edit(s, len);
                s.seek(SeekFrom::Start(0))
                    .map_err(|source| AudioError::Io {
                        file: name.clone(),
                        source,
                    })?;
            }
        }

        // symphonia's probe skips unrecognised bytes to a signature further on: an MP4
        // found that way gets the same size check from its `ftyp` box.
        if let (Sniffed::Unknown, InputSource::Seekable(s), Some(len)) =
            (&sniffed, &mut input.source, input.len)
        {
            if let Some(at) = input.head.windows(4).position(|w| w == b"ftyp") {
                if at >= 4 {
                    mp4::check_sizes(s, at as u64 - 4, len).map_err(|d| corrupt(&name, d))?;
                    s.seek(SeekFrom::Start(0))
                        .map_err(|source| AudioError::Io {
                            file: name.clone(),
                            source,
                        })?;
                }
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
            let decoder = symphonia::default::get_codecs()
                .make(&params, &DecoderOptions::default())
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

/// A codec's name for messages.
fn codec_name(codec: CodecType) -> String {
    if let Some(d) = symphonia::default::get_codecs().get_codec(codec) {
        return d.long_name.to_string();
    }
    let known = [
        (sc::CODEC_TYPE_OPUS, "Opus"),
        (sc::CODEC_TYPE_SPEEX, "Speex"),
        (sc::CODEC_TYPE_WAVPACK, "WavPack"),
        (sc::CODEC_TYPE_MONKEYS_AUDIO, "Monkey's Audio"),
        (sc::CODEC_TYPE_TTA, "True Audio"),
        (sc::CODEC_TYPE_EAC3, "E-AC-3"),
        (sc::CODEC_TYPE_AC4, "AC-4"),
        (sc::CODEC_TYPE_DCA, "DTS"),
        (sc::CODEC_TYPE_ATRAC3, "ATRAC3"),
        (sc::CODEC_TYPE_ATRAC3PLUS, "ATRAC3+"),
        (sc::CODEC_TYPE_WMA, "Windows Media Audio"),
        (sc::CODEC_TYPE_ADPCM_IMA_WAV, "IMA ADPCM"),
        (sc::CODEC_TYPE_ADPCM_MS, "Microsoft ADPCM"),
    ];
    known
        .iter()
        .find(|(c, _)| *c == codec)
        .map_or_else(|| format!("{codec}"), |(_, n)| n.to_string())
}

/// Frames to drop at the start and where to stop, counted in decoded frames.
#[derive(Default, Clone, Copy)]
struct Trim {
    /// Decoded frames seen so far.
    pos: u64,
    /// Frames before this position are codec delay.
    start: u64,
    /// Frames from this position on are padding.
    end: Option<u64>,
}

impl Trim {
    /// The part of the next `n` decoded frames to keep; advances the position.
    fn take(&mut self, n: usize) -> Range<usize> {
        let a = self.pos;
        let b = a + n as u64;
        self.pos = b;
        let lo = self.start.clamp(a, b);
        let hi = self.end.map_or(b, |e| e.clamp(a, b)).max(lo);
        (lo - a) as usize..(hi - a) as usize
    }
}

/// Largest sample magnitude passed on (2^16 times full scale): float samples beyond it
/// are clipped there, and NaN becomes 0. A damaged float file can hold NaN, infinities or
/// values near `f64::MAX`, which would otherwise turn the resampler's FFT into NaN (and
/// make rubato panic) or poison the log-mel spectrum.
pub const MAX_SAMPLE_MAGNITUDE: f64 = 65_536.0;

/// A decoded sample made finite and bounded (see [`MAX_SAMPLE_MAGNITUDE`]).
#[inline]
fn sane(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE)
    }
}

/// Appends the average of the channels of `frames` (of interleaved `samples`), times `gain`.
fn downmix<T: Copy + Into<f64>>(
    samples: &[T],
    channels: usize,
    frames: Range<usize>,
    gain: f64,
    out: &mut Vec<f64>,
) {
    let Some(frames_slice) = samples.get(frames.start * channels..frames.end * channels) else {
        return;
    };
    if channels == 1 {
        out.extend(frames_slice.iter().map(|&s| sane(s.into() * gain)));
    } else {
        let scale = gain / channels as f64;
        out.extend(
            frames_slice
                .chunks_exact(channels)
                .map(|f| sane(f.iter().map(|&s| sane(s.into())).sum::<f64>() * scale)),
        );
    }
}

/// A track demuxed by symphonia.
struct SymphoniaSource {
    format: Box<dyn FormatReader>,
    track_id: u32,
    decoder: PacketDecoder,
    trim: Trim,
    supported: &'static str,
    channels: usize,
    /// The container declares the stream's length (an early end is then a truncation).
    length_known: bool,
}

enum PacketDecoder {
    Symphonia {
        decoder: Box<dyn Decoder>,
        buf: Option<SampleBuffer<f64>>,
    },
    Opus(Box<OpusDecoding>),
}

impl SymphoniaSource {
    /// Channels of the last decoded packet.
    fn decoded_channels(&self) -> usize {
        match &self.decoder {
            PacketDecoder::Symphonia { .. } => self.channels,
            PacketDecoder::Opus(o) => o.channels,
        }
    }

    fn step(
        &mut self,
        name: &str,
        container: &'static str,
        mono: &mut Vec<f64>,
        stats: &mut Stats,
        rate: u32,
    ) -> Result<Step, AudioError> {
        loop {
            if self.trim.end.is_some_and(|e| self.trim.pos >= e) {
                return Ok(Step::End);
            }
            // symphonia's parsers and decoders are not proven panic-free on hostile input:
            // a panic is reported as damaged data rather than taking the process down.
            let next = catch_decoder_panic(AssertUnwindSafe(|| self.format.next_packet()))
                .map_err(|_| corrupt(name, format!("the {container} parser failed")))?;
            let packet = match next {
                Ok(p) => p,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(Step::End)
                }
                Err(SymphoniaError::ResetRequired) => {
                    tracing::warn!("{name}: the stream changes its parameters mid-way (chained streams); decoding stops there");
                    return Ok(Step::End);
                }
                Err(SymphoniaError::IoError(e)) => {
                    return Err(AudioError::Io {
                        file: name.to_string(),
                        source: e,
                    })
                }
                Err(e) => return Err(corrupt(name, e.to_string())),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            if packet.buf().is_empty() {
                // The WAV reader hands out empty packets once the file ends before the length
                // its data chunk declares: keep what was decoded.
                stats.cut_short = self.length_known;
                return Ok(Step::End);
            }
            let result = match &mut self.decoder {
                PacketDecoder::Opus(o) => o.decode(name, packet.buf(), &mut self.trim, mono),
                PacketDecoder::Symphonia { decoder, buf } => {
                    let trim = &mut self.trim;
                    let last_channels = &mut self.channels;
                    catch_decoder_panic(AssertUnwindSafe(|| {
                        let decoded = decoder.decode(&packet)?;
                        let spec = *decoded.spec();
                        if spec.rate != rate {
                            return Err(SymphoniaError::DecodeError(
                                "sample rate changes mid-stream",
                            ));
                        }
                        let channels = spec.channels.count();
                        let frames = decoded.frames();
                        if channels == 0 || frames == 0 {
                            return Ok(0);
                        }
                        *last_channels = channels;
                        let capacity = decoded.capacity();
                        if buf
                            .as_ref()
                            .is_some_and(|b| b.capacity() < capacity * channels)
                        {
                            *buf = None;
                        }
                        let b = buf
                            .get_or_insert_with(|| SampleBuffer::<f64>::new(capacity as u64, spec));
                        b.copy_interleaved_ref(decoded);
                        let keep = trim.take(frames);
                        downmix(b.samples(), channels, keep, 1.0, mono);
                        Ok(frames)
                    }))
                    .map_err(|_| corrupt(name, "the decoder failed on a packet"))?
                    .map_err(|e| match e {
                        SymphoniaError::Unsupported(what) => {
                            PacketError::Unsupported(what.to_string())
                        }
                        other => PacketError::Bad(other.to_string()),
                    })
                }
            };
            match result {
                // A packet that yields no frame (e.g. a partial sample) counts for nothing.
                Ok(0) => {}
                Ok(_) => {
                    stats.packets_decoded += 1;
                    stats.bad_packets_in_a_row = 0;
                    return Ok(Step::Data);
                }
                Err(PacketError::Unsupported(what)) => {
                    return Err(AudioError::UnsupportedCodec {
                        file: name.to_string(),
                        container,
                        codec: what,
                        supported: self.supported,
                    })
                }
                Err(PacketError::Fatal(e)) => return Err(e),
                Err(PacketError::Bad(msg)) => skip_bad_packet(name, &msg, stats)?,
            }
        }
    }
}

/// Why a packet could not be decoded.
enum PacketError {
    /// Damaged packet: skipped.
    Bad(String),
    /// A feature of the codec this build does not decode.
    Unsupported(String),
    /// Decoding cannot go on.
    Fatal(AudioError),
}

fn skip_bad_packet(name: &str, msg: &str, stats: &mut Stats) -> Result<(), AudioError> {
    stats.bad_packets_in_a_row += 1;
    if stats.bad_packets_in_a_row > MAX_BAD_PACKETS {
        return Err(corrupt(
            name,
            format!("{MAX_BAD_PACKETS} packets in a row failed to decode; last: {msg}"),
        ));
    }
    tracing::warn!("{name}: skipping a packet that does not decode: {msg}");
    Ok(())
}

/// Opus always decodes at 48 kHz (RFC 7845 §5.1: the input rate field is informative).
const OPUS_RATE: u32 = 48_000;

/// Samples per channel of the largest Opus packet (120 ms at 48 kHz).
const OPUS_MAX_FRAMES: usize = 5_760;

/// The fields of an Opus identification header (RFC 7845 §5.1).
#[derive(Debug, Clone, PartialEq)]
struct OpusHead {
    channels: usize,
    pre_skip: u16,
    /// Output gain in dB, Q7.8.
    gain_q8: i16,
    family: u8,
    streams: usize,
    coupled: usize,
    mapping: Vec<u8>,
}

impl OpusHead {
    fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < 19 || !b.starts_with(b"OpusHead") {
            return Err(format!(
                "Opus identification header is {} bytes long or lacks its signature",
                b.len()
            ));
        }
        let version = b[8];
        if version >> 4 != 0 {
            return Err(format!(
                "Opus header version {version} is not supported (major version 0 only)"
            ));
        }
        let channels = usize::from(b[9]);
        if channels == 0 {
            return Err("Opus header declares 0 channels".to_string());
        }
        let pre_skip = u16::from_le_bytes([b[10], b[11]]);
        let gain_q8 = i16::from_le_bytes([b[16], b[17]]);
        let family = b[18];
        if family == 0 {
            if channels > 2 {
                return Err(format!(
                    "Opus channel mapping family 0 allows 1 or 2 channels, not {channels}"
                ));
            }
            return Ok(OpusHead {
                channels,
                pre_skip,
                gain_q8,
                family,
                streams: 1,
                coupled: channels - 1,
                mapping: (0..channels as u8).collect(),
            });
        }
        let (Some(&streams), Some(&coupled)) = (b.get(19), b.get(20)) else {
            return Err("Opus header ends before its channel mapping table".to_string());
        };
        let (streams, coupled) = (usize::from(streams), usize::from(coupled));
        let mapping = b
            .get(21..21 + channels)
            .ok_or("Opus header ends inside its channel mapping table")?
            .to_vec();
        if streams == 0 || coupled > streams || streams + coupled > 255 {
            return Err(format!(
                "invalid Opus stream counts ({streams} streams, {coupled} coupled)"
            ));
        }
        if let Some(bad) = mapping
            .iter()
            .find(|&&m| m != 255 && usize::from(m) >= streams + coupled)
        {
            return Err(format!(
                "Opus channel mapping refers to decoded channel {bad} of {}",
                streams + coupled
            ));
        }
        Ok(OpusHead {
            channels,
            pre_skip,
            gain_q8,
            family,
            streams,
            coupled,
            mapping,
        })
    }

    /// A header for a container that stores no `OpusHead` (mono or stereo only).
    fn plain(channels: usize, pre_skip: u32) -> Self {
        let channels = channels.clamp(1, 2);
        OpusHead {
            channels,
            pre_skip: pre_skip.min(u32::from(u16::MAX)) as u16,
            gain_q8: 0,
            family: 0,
            streams: 1,
            coupled: channels - 1,
            mapping: (0..channels as u8).collect(),
        }
    }
}

/// An MP4 Opus configuration (`dOps`, which symphonia hands over behind an `OpusHead`
/// signature) as an Ogg identification header: `dOps` stores its fields big-endian.
fn dops_as_opus_head(b: &[u8]) -> Vec<u8> {
    let mut h = b.to_vec();
    for range in [10..12, 12..16, 16..18] {
        if let Some(field) = h.get_mut(range) {
            field.reverse();
        }
    }
    h
}

/// An Opus decoder (single or multistream) with its output buffer.
struct OpusDecoding {
    dec: OpusDec,
    channels: usize,
    gain: f64,
    pcm: Vec<f32>,
}

enum OpusDec {
    Single(Box<opus_pure::OpusDecoder>),
    Multi(MultiOpus),
}

impl OpusDecoding {
    fn new(name: &str, container: &'static str, head: &OpusHead) -> Result<Self, AudioError> {
        if !matches!(head.family, 0 | 1 | 255) {
            let what = match head.family {
                2 | 3 => " (ambisonics)",
                _ => "",
            };
            return Err(AudioError::UnsupportedCodec {
                file: name.to_string(),
                container,
                codec: format!("Opus with channel mapping family {}{what}", head.family),
                supported: "Opus channel mapping families 0, 1 and 255",
            });
        }
        let made = if head.family == 0 {
            opus_pure::OpusDecoder::new(OPUS_RATE as i32, head.channels)
                .map(|d| OpusDec::Single(Box::new(d)))
        } else {
            MultiOpus::new(head).map(OpusDec::Multi)
        };
        let dec =
            made.map_err(|e| corrupt(name, format!("cannot set up the Opus decoder: {e}")))?;
        Ok(OpusDecoding {
            dec,
            channels: head.channels,
            gain: 10f64.powf(f64::from(head.gain_q8) / 256.0 / 20.0),
            pcm: vec![0.0; OPUS_MAX_FRAMES * head.channels],
        })
    }

    /// Decodes one packet, keeping the frames `trim` lets through.
    fn decode(
        &mut self,
        name: &str,
        packet: &[u8],
        trim: &mut Trim,
        mono: &mut Vec<f64>,
    ) -> Result<usize, PacketError> {
        if packet.is_empty() {
            // The decoder would take it for a lost packet and conceal one.
            return Err(PacketError::Bad("empty Opus packet".to_string()));
        }
        let pcm = &mut self.pcm;
        let dec = &mut self.dec;
        // The pure-Rust decoder is young: a panic on a hostile packet becomes an error.
        let r = catch_decoder_panic(AssertUnwindSafe(|| match dec {
            OpusDec::Single(d) => d
                .decode(packet, OPUS_MAX_FRAMES, pcm)
                .map_err(|e| e.to_string()),
            OpusDec::Multi(d) => d.decode(packet, pcm),
        }))
        .map_err(|_| PacketError::Fatal(corrupt(name, "the Opus decoder failed on a packet")))?;
        let frames = r.map_err(|e| PacketError::Bad(format!("Opus packet: {e}")))?;
        let keep = trim.take(frames);
        downmix(
            &self.pcm[..frames * self.channels],
            self.channels,
            keep,
            self.gain,
            mono,
        );
        Ok(frames)
    }
}

/// An Opus multistream decoder (RFC 7845 §5.1.1): one elementary decoder per stream, and
/// the channel mapping table.
///
/// The streams are split here rather than by opus-pure's `OpusMSDecoder`, which derives
/// the stream layout from the channel count and mapping family alone: the header's own
/// stream counts and mapping table (any family-255 layout) are honoured this way.
struct MultiOpus {
    /// Decoder and channel count of each stream (coupled streams first).
    streams: Vec<(opus_pure::OpusDecoder, usize)>,
    coupled: usize,
    mapping: Vec<u8>,
    bufs: Vec<Vec<f32>>,
}

impl MultiOpus {
    fn new(head: &OpusHead) -> Result<Self, opus_pure::Error> {
        let mut streams = Vec::with_capacity(head.streams);
        for i in 0..head.streams {
            let ch = if i < head.coupled { 2 } else { 1 };
            streams.push((opus_pure::OpusDecoder::new(OPUS_RATE as i32, ch)?, ch));
        }
        let bufs = streams
            .iter()
            .map(|&(_, ch)| vec![0.0; OPUS_MAX_FRAMES * ch])
            .collect();
        Ok(MultiOpus {
            streams,
            coupled: head.coupled,
            mapping: head.mapping.clone(),
            bufs,
        })
    }

    /// Decodes one packet into `out` (interleaved, one slot per output channel); returns
    /// the frames decoded.
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
        let mut rest = packet;
        let mut frames = None;
        let last = self.streams.len() - 1;
        for (i, ((dec, _), buf)) in self.streams.iter_mut().zip(&mut self.bufs).enumerate() {
            let sub = if i < last {
                let (sub, used) = undelimit(rest)?;
                rest = &rest[used..];
                sub
            } else {
                rest.to_vec()
            };
            if sub.is_empty() {
                return Err(format!("stream {i} has an empty packet"));
            }
            let n = dec
                .decode(&sub, OPUS_MAX_FRAMES, buf)
                .map_err(|e| format!("stream {i}: {e}"))?;
            if frames.is_some_and(|f| f != n) {
                return Err(format!(
                    "stream {i} decodes to {n} frames, the others to {}",
                    frames.unwrap_or(0)
                ));
            }
            frames = Some(n);
        }
        let frames = frames.unwrap_or(0);
        let channels = self.mapping.len();
        if out.len() < frames * channels {
            return Err("packet longer than 120 ms".to_string());
        }
        for (c, &m) in self.mapping.iter().enumerate() {
            let m = usize::from(m);
            // Decoded channels: two per coupled stream, then one per mono stream.
            let (stream, ch) = if m == 255 {
                (usize::MAX, 0)
            } else if m < 2 * self.coupled {
                (m / 2, m % 2)
            } else {
                (m - self.coupled, 0)
            };
            for f in 0..frames {
                out[f * channels + c] = match self.streams.get(stream) {
                    Some(&(_, sch)) => self.bufs[stream][f * sch + ch],
                    None => 0.0,
                };
            }
        }
        Ok(frames)
    }
}

/// A frame length of the Opus packet framing (RFC 6716 §3.2.1): value and bytes used.
fn opus_frame_len(b: &[u8]) -> Option<(usize, usize)> {
    let b0 = usize::from(*b.first()?);
    if b0 < 252 {
        Some((b0, 1))
    } else {
        Some((usize::from(*b.get(1)?) * 4 + b0, 2))
    }
}

/// Converts the self-delimited Opus packet at the start of `b` (RFC 6716 Appendix B) to
/// the standard framing by dropping its extra length field; returns the packet and the
/// bytes it occupied in `b`.
fn undelimit(b: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let cut = || "multistream Opus packet is cut short".to_string();
    let len_at = |pos: usize| b.get(pos..).and_then(opus_frame_len).ok_or_else(cut);
    let toc = *b.first().ok_or_else(cut)?;
    let mut out = vec![toc];
    let mut pos = 1;
    let data_len = match toc & 3 {
        0 | 1 => {
            let (n, used) = len_at(pos)?;
            pos += used;
            if toc & 3 == 0 {
                n
            } else {
                2 * n
            }
        }
        2 => {
            let (n1, used1) = len_at(pos)?;
            out.extend_from_slice(&b[pos..pos + used1]);
            pos += used1;
            let (n2, used2) = len_at(pos)?;
            pos += used2;
            n1 + n2
        }
        _ => {
            let count = *b.get(1).ok_or_else(cut)?;
            out.push(count);
            pos = 2;
            let frames = usize::from(count & 0x3F);
            if frames == 0 {
                return Err("Opus packet declares 0 frames".to_string());
            }
            let mut padding = 0usize;
            if count & 0x40 != 0 {
                loop {
                    let p = *b.get(pos).ok_or_else(cut)?;
                    out.push(p);
                    pos += 1;
                    if p == 255 {
                        padding += 254;
                    } else {
                        padding += usize::from(p);
                        break;
                    }
                }
            }
            let mut total = 0usize;
            if count & 0x80 != 0 {
                // VBR: M-1 lengths in the packet, then the self-delimiting last one.
                for _ in 1..frames {
                    let (n, used) = len_at(pos)?;
                    out.extend_from_slice(&b[pos..pos + used]);
                    pos += used;
                    total += n;
                }
                let (n, used) = len_at(pos)?;
                pos += used;
                total += n;
            } else {
                let (n, used) = len_at(pos)?;
                pos += used;
                total = n * frames;
            }
            total + padding
        }
    };
    let end = pos + data_len;
    out.extend_from_slice(b.get(pos..end).ok_or_else(cut)?);
    Ok((out, end))
}

/// Samples per channel (at 48 kHz) of an Opus packet, from its TOC byte (RFC 6716 §3.1).
fn opus_packet_frames(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = usize::from(toc >> 3);
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][config & 3],
        12..=15 => [480, 960][config & 1],
        _ => [120, 240, 480, 960][config & 3],
    };
    let count = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3F),
    };
    Some(frame * count)
}

/// Ogg Opus (RFC 7845), demuxed here page by page from a forward-only reader.
///
/// symphonia 0.5 demuxes Ogg Opus but neither applies the pre-skip nor trims the end
/// from the last granule position, so the timing is handled here: decoded sample `i` of
/// a stream ends at granule position `start_gp + i + 1`, where `start_gp` is the granule
/// position of the first audio page less the duration of the packets completed on it;
/// samples at or before granule `pre_skip`, and after the final page's granule position,
/// are dropped. Chained streams (concatenated Ogg Opus files) are decoded one after the
/// other; other logical streams multiplexed with the Opus one are ignored.
struct OggOpusSource {
    pages: OggPages,
    serial: u32,
    opus: OpusDecoding,
    channels: usize,
    trim: Trim,
    /// Pre-skip of the current stream, in 48 kHz samples.
    pre_skip: i64,
    /// Granule position before the first decoded sample of the current stream.
    start_gp: i64,
    stage: OggStage,
    /// Sequence number of the last page of the stream, to notice lost pages.
    last_seq: Option<u32>,
    /// Completed packets not yet decoded.
    queue: std::collections::VecDeque<Vec<u8>>,
    /// The start of a packet that continues on the next page.
    partial: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OggStage {
    /// The comment header (`OpusTags`) comes next.
    Tags,
    /// Before the first audio page.
    FirstAudio,
    Audio,
    /// After the page flagged end-of-stream.
    Ended,
}

/// One Ogg page.
struct OggPage {
    flags: u8,
    granule: i64,
    serial: u32,
    seq: u32,
    offset: u64,
    lacing: Vec<u8>,
    body: Vec<u8>,
}

impl OggPage {
    const CONTINUED: u8 = 1;
    const BOS: u8 = 2;
    const EOS: u8 = 4;

    /// The first packet on the page if it starts there (for headers, which fit in a page).
    fn first_packet(&self) -> &[u8] {
        let mut len = 0usize;
        for &l in &self.lacing {
            len += usize::from(l);
            if l < 255 {
                break;
            }
        }
        &self.body[..len.min(self.body.len())]
    }
}

/// Reads Ogg pages, checking their CRC and resynchronising after damaged data.
struct OggPages {
    r: std::io::BufReader<Box<dyn Read + Send + Sync>>,
    offset: u64,
    /// The input ended inside a page.
    truncated: bool,
}

const fn ogg_crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut j = 0;
        while j < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            j += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
}

static OGG_CRC: [u32; 256] = ogg_crc_table();

fn ogg_crc(crc: u32, data: &[u8]) -> u32 {
    data.iter().fold(crc, |c, &b| {
        (c << 8) ^ OGG_CRC[usize::from((c >> 24) as u8 ^ b)]
    })
}

impl OggPages {
    fn new(r: Box<dyn Read + Send + Sync>) -> Self {
        OggPages {
            r: std::io::BufReader::with_capacity(64 * 1024, r),
            offset: 0,
            truncated: false,
        }
    }

    /// Fills `buf` as far as the input allows; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    /// The next page with a valid CRC, or `None` at the end of the input.
    fn next(&mut self, name: &str) -> Result<Option<OggPage>, AudioError> {
        let io = |source| AudioError::Io {
            file: name.to_string(),
            source,
        };
        let mut skipped = 0u64;
        loop {
            let mut h = [0u8; 27];
            let start = self.offset;
            let n = self.fill(&mut h[..4]).map_err(io)?;
            if n < 4 {
                self.truncated |= n > 0 || skipped > 0;
                return Ok(None);
            }
            if &h[..4] != b"OggS" {
                // Lost sync: search for the next capture pattern one byte further on.
                let mut win = [h[1], h[2], h[3]];
                loop {
                    let mut b = [0u8; 1];
                    if self.fill(&mut b).map_err(io)? == 0 {
                        self.truncated = true;
                        return Ok(None);
                    }
                    skipped += 1;
                    if &win == b"Ogg" && b[0] == b'S' {
                        break;
                    }
                    win = [win[1], win[2], b[0]];
                }
                h[..4].copy_from_slice(b"OggS");
            }
            let page_start = if skipped > 0 { self.offset - 4 } else { start };
            if self.fill(&mut h[4..]).map_err(io)? < 23 {
                self.truncated = true;
                return Ok(None);
            }
            let mut lacing = vec![0u8; usize::from(h[26])];
            if self.fill(&mut lacing).map_err(io)? < lacing.len() {
                self.truncated = true;
                return Ok(None);
            }
            let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
            let mut body = vec![0u8; body_len];
            if self.fill(&mut body).map_err(io)? < body_len {
                self.truncated = true;
                return Ok(None);
            }
            if skipped > 0 {
                tracing::warn!(
                    "{name}: skipped {skipped} bytes of non-Ogg data before byte {page_start}"
                );
                skipped = 0;
            }
            if h[4] != 0 {
                tracing::warn!(
                    "{name}: skipping an Ogg page of unknown version {} at byte {page_start}",
                    h[4]
                );
                continue;
            }
            let stored = u32::from_le_bytes([h[22], h[23], h[24], h[25]]);
            h[22..26].fill(0);
            let crc = ogg_crc(ogg_crc(ogg_crc(0, &h), &lacing), &body);
            if crc != stored {
                tracing::warn!(
                    "{name}: skipping a damaged Ogg page (CRC mismatch) at byte {page_start}"
                );
                continue;
            }
            let le_u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            return Ok(Some(OggPage {
                flags: h[5],
                granule: i64::from_le_bytes([h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13]]),
                serial: le_u32_at(14),
                seq: le_u32_at(18),
                offset: page_start,
                lacing,
                body,
            }));
        }
    }
}

impl OggOpusSource {
    fn new(name: &str, reader: Box<dyn Read + Send + Sync>) -> Result<Self, AudioError> {
        let mut pages = OggPages::new(reader);
        // The stream starts with beginning-of-stream pages, one per logical stream.
        loop {
            let Some(page) = pages.next(name)? else {
                return Err(corrupt(
                    name,
                    "the Ogg file ends before its Opus identification header",
                ));
            };
            if page.flags & OggPage::BOS == 0 {
                return Err(AudioError::NoTrack {
                    file: name.to_string(),
                });
            }
            if page.first_packet().starts_with(b"OpusHead") {
                let head = OpusHead::parse(page.first_packet()).map_err(|d| corrupt(name, d))?;
                let opus = OpusDecoding::new(name, "Ogg", &head)?;
                return Ok(OggOpusSource {
                    pages,
                    serial: page.serial,
                    opus,
                    channels: head.channels,
                    trim: Trim::default(),
                    pre_skip: i64::from(head.pre_skip),
                    start_gp: 0,
                    stage: OggStage::Tags,
                    last_seq: Some(page.seq),
                    queue: Default::default(),
                    partial: Vec::new(),
                });
            }
        }
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn step(
        &mut self,
        name: &str,
        mono: &mut Vec<f64>,
        stats: &mut Stats,
    ) -> Result<Step, AudioError> {
        loop {
            if let Some(packet) = self.queue.pop_front() {
                match self.opus.decode(name, &packet, &mut self.trim, mono) {
                    Ok(0) => {}
                    Ok(_) => {
                        stats.packets_decoded += 1;
                        stats.bad_packets_in_a_row = 0;
                        return Ok(Step::Data);
                    }
                    Err(PacketError::Bad(msg)) => skip_bad_packet(name, &msg, stats)?,
                    Err(PacketError::Unsupported(msg)) => return Err(corrupt(name, msg)),
                    Err(PacketError::Fatal(e)) => return Err(e),
                }
                continue;
            }
            let Some(page) = self.pages.next(name)? else {
                if self.pages.truncated || !self.partial.is_empty() || self.stage != OggStage::Ended
                {
                    stats.cut_short = true;
                }
                return Ok(Step::End);
            };
            self.take_page(name, page)?;
        }
    }

    /// Collects the packets a page completes and updates the trimming from its granule.
    fn take_page(&mut self, name: &str, page: OggPage) -> Result<(), AudioError> {
        if page.serial != self.serial {
            if self.stage == OggStage::Ended && page.flags & OggPage::BOS != 0 {
                if !page.first_packet().starts_with(b"OpusHead") {
                    return Err(corrupt(
                        name,
                        format!("a chained Ogg stream at byte {} is not Opus", page.offset),
                    ));
                }
                // The next link of a chained file: a fresh decoder and timeline.
                let head = OpusHead::parse(page.first_packet()).map_err(|d| corrupt(name, d))?;
                self.opus = OpusDecoding::new(name, "Ogg", &head)?;
                self.channels = self.channels.max(head.channels);
                self.serial = page.serial;
                self.trim = Trim::default();
                self.pre_skip = i64::from(head.pre_skip);
                self.start_gp = 0;
                self.stage = OggStage::Tags;
                self.last_seq = Some(page.seq);
                self.partial.clear();
            }
            return Ok(());
        }
        if self.stage == OggStage::Ended {
            return Ok(());
        }
        if let Some(last) = self.last_seq {
            if page.seq != last.wrapping_add(1) {
                tracing::warn!(
                    "{name}: Ogg pages missing before byte {} (sequence {} after {last})",
                    page.offset,
                    page.seq
                );
                self.partial.clear();
            }
        }
        self.last_seq = Some(page.seq);

        let mut packets = Vec::new();
        let continued = page.flags & OggPage::CONTINUED != 0;
        if !continued && !self.partial.is_empty() {
            self.partial.clear();
        }
        // Continued data whose packet start was lost is dropped up to its end.
        let mut dropping = continued && self.partial.is_empty();
        let mut at = 0usize;
        for &l in &page.lacing {
            let seg = &page.body[at..at + usize::from(l)];
            at += usize::from(l);
            if dropping {
                dropping = l == 255;
                continue;
            }
            if self.partial.len() + seg.len() > MAX_OGG_PACKET {
                return Err(corrupt(
                    name,
                    format!(
                        "Ogg packet at byte {} is larger than {MAX_OGG_PACKET} bytes",
                        page.offset
                    ),
                ));
            }
            self.partial.extend_from_slice(seg);
            if l < 255 {
                packets.push(std::mem::take(&mut self.partial));
            }
        }

        let mut packets = packets.into_iter();
        if self.stage == OggStage::Tags {
            let Some(tags) = packets.next() else {
                return Ok(());
            };
            if !tags.starts_with(b"OpusTags") {
                tracing::warn!(
                    "{name}: the Opus comment header is missing (page at byte {})",
                    page.offset
                );
            }
            self.stage = OggStage::FirstAudio;
        }
        let packets: Vec<Vec<u8>> = packets.collect();
        let eos = page.flags & OggPage::EOS != 0;
        if !packets.is_empty() && page.granule >= 0 {
            let gp = page.granule;
            if self.stage == OggStage::FirstAudio {
                let dur: i64 = packets
                    .iter()
                    .map(|p| opus_packet_frames(p).unwrap_or(0) as i64)
                    .sum();
                // A single-page stream may end (granule < duration): that is end trimming.
                let start_gp = if eos && gp < dur { 0 } else { gp - dur };
                self.trim.start = (self.pre_skip - start_gp).max(0) as u64;
                self.start_gp = start_gp;
                self.stage = OggStage::Audio;
            }
            if eos {
                self.trim.end = Some((gp - self.start_gp).max(0) as u64);
            }
        }
        if eos {
            self.stage = OggStage::Ended;
        }
        self.queue.extend(packets);
        Ok(())
    }
}

/// The edit list of an MP4 file's first audio track.
///
/// symphonia 0.5 parses the `elst` box but does not apply it, so AAC decodes with the
/// encoder's priming samples (typically 1,024) in front and frame padding at the end. The
/// first non-empty edit says where the presentation starts in the media and how long it
/// lasts; only that edit is applied (an initial empty edit, i.e. a leading silence, is
/// ignored).
mod mp4 {
    use std::io::{Read, Seek, SeekFrom};

    /// The first non-empty edit of an audio track.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Edit {
        /// Start of the presentation in the media, in media time-scale units.
        pub media_time: u64,
        /// Length of the presentation in movie time-scale units (0: the whole media).
        pub segment_duration: u64,
        pub movie_timescale: u32,
        pub media_timescale: u32,
    }

    impl Edit {
        /// Frames to skip and frames to keep (if bounded) at `rate` Hz.
        pub fn frames(&self, rate: u32) -> (u64, Option<u64>) {
            let scale = |v: u64, ts: u32| -> u64 {
                ((u128::from(v) * u128::from(rate) + u128::from(ts) / 2) / u128::from(ts)) as u64
            };
            let start = scale(self.media_time, self.media_timescale);
            let len = (self.segment_duration > 0)
                .then(|| scale(self.segment_duration, self.movie_timescale));
            (start, len)
        }
    }

    /// Boxes read per level at most (a real file has a handful).
    const MAX_BOXES: usize = 4096;

    struct BoxHeader {
        kind: [u8; 4],
        body: u64,
        end: u64,
    }

    /// The boxes between `start` and `end`.
    fn children<R: Read + Seek + ?Sized>(
        r: &mut R,
        start: u64,
        end: u64,
    ) -> Option<Vec<BoxHeader>> {
        let mut out = Vec::new();
        let mut pos = start;
        while pos + 8 <= end && out.len() < MAX_BOXES {
            r.seek(SeekFrom::Start(pos)).ok()?;
            let mut h = [0u8; 8];
            r.read_exact(&mut h).ok()?;
            let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            let kind = [h[4], h[5], h[6], h[7]];
            let (body, size) = match size32 {
                0 => (pos + 8, end - pos),
                1 => {
                    let mut l = [0u8; 8];
                    r.read_exact(&mut l).ok()?;
                    (pos + 16, u64::from_be_bytes(l))
                }
                n => (pos + 8, u64::from(n)),
            };
            if size < body - pos || pos.checked_add(size)? > end {
                return None;
            }
            out.push(BoxHeader {
                kind,
                body,
                end: pos + size,
            });
            pos += size;
        }
        Some(out)
    }

    fn read_at<R: Read + Seek + ?Sized>(r: &mut R, b: &BoxHeader, max: usize) -> Option<Vec<u8>> {
        let len = usize::try_from(b.end - b.body).ok()?.min(max);
        r.seek(SeekFrom::Start(b.body)).ok()?;
        let mut v = vec![0u8; len];
        r.read_exact(&mut v).ok()?;
        Some(v)
    }

    fn be_u32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    fn be_u64(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }

    /// The time scale of an `mvhd` or `mdhd` box (version 0 or 1).
    fn timescale(b: &[u8]) -> Option<u32> {
        match b.first()? {
            0 => be_u32(b, 12),
            1 => be_u32(b, 20),
            _ => None,
        }
    }

    /// The first edit with a media time (not an empty edit) of an `elst` box.
    fn first_edit(b: &[u8]) -> Option<(u64, u64)> {
        let version = *b.first()?;
        let count = be_u32(b, 4)? as usize;
        let entry = if version == 1 { 20 } else { 12 };
        for i in 0..count.min((b.len().saturating_sub(8)) / entry) {
            let at = 8 + i * entry;
            let (duration, media_time) = if version == 1 {
                (be_u64(b, at)?, be_u64(b, at + 8)? as i64)
            } else {
                (
                    u64::from(be_u32(b, at)?),
                    i64::from(be_u32(b, at + 4)? as i32),
                )
            };
            if media_time >= 0 {
                return Some((duration, media_time as u64));
            }
        }
        None
    }

    /// Nesting depth of boxes checked at most (real files nest about 8 deep).
    const MAX_DEPTH: usize = 32;

    /// Checks that no size or count in the index (`moov`, `moof`) claims more bytes than
    /// its box holds: every box must fit in its parent, every table (`stsz`, `stco`,
    /// `co64`, `stsc`, `stts`, `ctts`, `elst`) in its box and every descriptor in its `esds`.
    ///
    /// symphonia 0.5 allocates what these fields declare before reading it (a 1.7 GB
    /// buffer for a 3 KB file whose `hdlr` box claims that size), so a file is refused
    /// here first. Only the index is held to this: a data box (`mdat`) cut short at the end
    /// of the file stays a truncated file that decodes as far as it goes.
    pub fn check_sizes<R: Read + Seek + ?Sized>(
        r: &mut R,
        start: u64,
        len: u64,
    ) -> Result<(), String> {
        let mut pos = start;
        let mut count = 0;
        while pos + 8 <= len && count < MAX_BOXES {
            count += 1;
            r.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
            let mut h = [0u8; 16];
            r.read_exact(&mut h[..8]).map_err(|e| e.to_string())?;
            let kind = [h[4], h[5], h[6], h[7]];
            let (header, size) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
                0 => (8, len - pos),
                1 => {
                    if pos + 16 > len {
                        break;
                    }
                    r.read_exact(&mut h[8..]).map_err(|e| e.to_string())?;
                    (
                        16,
                        u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
                    )
                }
                n => (8, u64::from(n)),
            };
            if size < header {
                return Err(format!(
                    "the '{}' box at byte {pos} declares {size} bytes, less than its header",
                    kind_str(&kind)
                ));
            }
            let end = pos.saturating_add(size);
            if &kind == b"moov" || &kind == b"moof" {
                if end > len {
                    return Err(format!(
                        "the '{}' box at byte {pos} declares {size} bytes, past the end of the {len}-byte file",
                        kind_str(&kind)
                    ));
                }
                let mut body = vec![0u8; (size - header) as usize];
                r.read_exact(&mut body).map_err(|e| e.to_string())?;
                check_box(&kind, &body, pos + header, 0)?;
            }
            pos = end;
        }
        Ok(())
    }

    fn kind_str(kind: &[u8; 4]) -> String {
        kind.iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    char::from(c)
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Checks the boxes laid end to end in `b` (which starts at byte `at` of the file).
    fn check_children(b: &[u8], at: u64, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "boxes nested more than {MAX_DEPTH} deep at byte {at}"
            ));
        }
        let mut p = 0usize;
        while b.len() - p >= 8 {
            let kind = [b[p + 4], b[p + 5], b[p + 6], b[p + 7]];
            let left = (b.len() - p) as u64;
            let (header, size) = match be_u32(b, p).unwrap_or(0) {
                0 => (8, left),
                1 => match be_u64(b, p + 8) {
                    Some(n) => (16, n),
                    None => (16, u64::MAX),
                },
                n => (8, u64::from(n)),
            };
            if size < header || size > left {
                return Err(format!(
                    "the '{}' box at byte {} declares {size} bytes, {} the {left} left in its parent",
                    kind_str(&kind),
                    at + p as u64,
                    if size < header { "less than its header, of" } else { "more than" },
                ));
            }
            let body = &b[p + header as usize..p + size as usize];
            check_box(&kind, body, at + p as u64 + header, depth + 1)?;
            p += size as usize;
        }
        Ok(())
    }

    /// Checks one box's body, by kind.
    fn check_box(kind: &[u8; 4], body: &[u8], at: u64, depth: usize) -> Result<(), String> {
        // Bytes per entry of the tables whose count symphonia reserves up front, and where
        // the count sits.
        let table = |entry: u64, count_at: usize| -> Result<(), String> {
            let Some(count) = be_u32(body, count_at) else {
                return Ok(());
            };
            let room = (body.len() - count_at - 4) as u64;
            if u64::from(count) * entry > room {
                return Err(format!(
                    "the '{}' table at byte {at} declares {count} entries of {entry} bytes in {room} bytes",
                    kind_str(kind)
                ));
            }
            Ok(())
        };
        match kind {
            b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"udta"
            | b"mvex" | b"moof" | b"traf" | b"ilst" | b"sinf" | b"schi" | b"wave" => {
                check_children(body, at, depth)
            }
            // A full box (version and flags first) in ISO files, a plain container in
            // QuickTime ones, whose first child is then `hdlr`.
            b"meta" if body.get(4..8) == Some(b"hdlr") => check_children(body, at, depth),
            b"meta" => check_children(body.get(4..).unwrap_or(&[]), at + 4, depth),
            // Items of `ilst` are containers of `data` boxes.
            _ if depth > 0 && kind[0] == 0xA9 => check_children(body, at, depth),
            b"stsd" => {
                table(8, 4)?;
                check_sample_entries(body.get(8..).unwrap_or(&[]), at + 8, depth)
            }
            b"stsz" if be_u32(body, 4) == Some(0) => table(4, 8),
            b"stco" => table(4, 4),
            b"co64" | b"stts" | b"ctts" => table(8, 4),
            b"stsc" => table(12, 4),
            b"elst" => table(if body.first() == Some(&1) { 20 } else { 12 }, 4),
            b"esds" => check_descriptors(body.get(4..).unwrap_or(&[]), at + 4, depth),
            _ => Ok(()),
        }
    }

    /// Checks the sample entries of an `stsd` box: for audio entries, the boxes after the
    /// fixed fields (whose length depends on the entry's version).
    fn check_sample_entries(b: &[u8], at: u64, depth: usize) -> Result<(), String> {
        let mut p = 0usize;
        while b.len() - p >= 8 {
            let kind = [b[p + 4], b[p + 5], b[p + 6], b[p + 7]];
            let size = be_u32(b, p).unwrap_or(0) as usize;
            if size < 8 || size > b.len() - p {
                return Err(format!(
                    "the '{}' sample entry at byte {} declares {size} bytes, {} left in its 'stsd'",
                    kind_str(&kind),
                    at + p as u64,
                    b.len() - p
                ));
            }
            let entry = &b[p + 8..p + size];
            let audio = matches!(
                &kind,
                b"mp4a" | b"alac" | b"Opus" | b"fLaC" | b"lpcm" | b"sowt" | b"twos" | b"enca"
            );
            if audio {
                let fields = match entry.get(8..10) {
                    Some([0, 1]) => 44,
                    Some([0, 2]) => 64,
                    _ => 28,
                };
                if let Some(children) = entry.get(fields..) {
                    check_children(children, at + (p + 8 + fields) as u64, depth + 1)?;
                }
            }
            p += size;
        }
        Ok(())
    }

    /// Checks that the MPEG-4 descriptors of an `esds` box (ISO 14496-1 §7.2.2), and those
    /// nested in them, declare no more bytes than they hold.
    fn check_descriptors(b: &[u8], at: u64, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "descriptors nested more than {MAX_DEPTH} deep at byte {at}"
            ));
        }
        let mut p = 0usize;
        while p < b.len() {
            let tag = b[p];
            p += 1;
            // The length: up to four bytes of 7 bits, the high bit flagging another byte.
            let mut len = 0usize;
            for _ in 0..4 {
                let Some(&c) = b.get(p) else {
                    return Ok(());
                };
                p += 1;
                len = (len << 7) | usize::from(c & 0x7F);
                if c & 0x80 == 0 {
                    break;
                }
            }
            if len > b.len() - p {
                return Err(format!(
                    "MPEG-4 descriptor (tag {tag}) at byte {} declares {len} bytes, {} left in its 'esds' box",
                    at + p as u64,
                    b.len() - p
                ));
            }
            let inner = &b[p..p + len];
            let nested = match tag {
                // ES_Descriptor: ES_ID, flags, then optional fields the flags announce.
                3 => inner.get(2).map(|&flags| {
                    let url = if flags & 0x40 != 0 {
                        1 + inner
                            .get(3 + 2 * usize::from(flags >> 7))
                            .map_or(0, |&n| usize::from(n))
                    } else {
                        0
                    };
                    3 + 2 * usize::from(flags >> 7) + url + 2 * usize::from(flags & 0x20 != 0)
                }),
                // DecoderConfigDescriptor: 13 bytes of fields.
                4 => Some(13),
                _ => None,
            };
            if let Some(skip) = nested {
                if let Some(rest) = inner.get(skip..) {
                    check_descriptors(rest, at + (p + skip) as u64, depth + 1)?;
                }
            }
            p += len;
        }
        Ok(())
    }

    /// Reads the edit of the first audio (`soun`) track, if it has one; `None` when the
    /// file has none or its boxes cannot be walked.
    pub fn audio_edit<R: Read + Seek + ?Sized>(r: &mut R, len: u64) -> Option<Edit> {
        let top = children(r, 0, len)?;
        let moov = top.iter().find(|b| &b.kind == b"moov")?;
        let boxes = children(r, moov.body, moov.end)?;
        let mvhd = boxes.iter().find(|b| &b.kind == b"mvhd")?;
        let movie_timescale = timescale(&read_at(r, mvhd, 64)?)?;
        for trak in boxes.iter().filter(|b| &b.kind == b"trak") {
            let parts = children(r, trak.body, trak.end)?;
            let Some(mdia) = parts.iter().find(|b| &b.kind == b"mdia") else {
                continue;
            };
            let media = children(r, mdia.body, mdia.end)?;
            let is_audio = media
                .iter()
                .find(|b| &b.kind == b"hdlr")
                .and_then(|h| read_at(r, h, 16))
                .is_some_and(|h| h.get(8..12) == Some(b"soun"));
            if !is_audio {
                continue;
            }
            let media_timescale =
                timescale(&read_at(r, media.iter().find(|b| &b.kind == b"mdhd")?, 64)?)?;
            let edts = parts.iter().find(|b| &b.kind == b"edts")?;
            let elst = children(r, edts.body, edts.end)?
                .into_iter()
                .find(|b| &b.kind == b"elst")?;
            let (segment_duration, media_time) = first_edit(&read_at(r, &elst, 8 + 20 * 64)?)?;
            if movie_timescale == 0 || media_timescale == 0 {
                return None;
            }
            return Some(Edit {
                media_time,
                segment_duration,
                movie_timescale,
                media_timescale,
            });
        }
        None
    }
}

/// Maps a symphonia error raised while opening a source to an [`AudioError`].
fn classify_open_error(name: &str, sniffed: &Sniffed, e: SymphoniaError) -> AudioError {
    let file = name.to_string();
    match (sniffed, e) {
        (Sniffed::Wav(_) | Sniffed::WavWithoutFmt, SymphoniaError::IoError(io)) => {
            AudioError::Corrupt {
                file,
                detail: format!("WAV header cut short ({io})"),
            }
        }
        (Sniffed::Wav(_) | Sniffed::WavWithoutFmt, other) => AudioError::Corrupt {
            file,
            detail: format!("invalid WAV structure ({other})"),
        },
        (_, SymphoniaError::IoError(io)) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
            AudioError::Io { file, source: io }
        }
        (Sniffed::Unknown, _) => AudioError::UnrecognisedFormat {
            file,
            detail: format!(
                "no known audio container signature (supported containers: {SUPPORTED_CONTAINERS})"
            ),
        },
        (k, SymphoniaError::IoError(io)) => AudioError::Corrupt {
            file,
            detail: format!("the {} header is cut short ({io})", k.container()),
        },
        (k, SymphoniaError::Unsupported(what)) => AudioError::UnrecognisedFormat {
            file,
            detail: format!(
                "this {} file uses a feature that is not supported ({what})",
                k.container()
            ),
        },
        (k, other) => AudioError::Corrupt {
            file,
            detail: format!("invalid {} structure ({other})", k.container()),
        },
    }
}

/// What the first bytes of a source reveal.
#[derive(Debug)]
enum Sniffed {
    /// RIFF/WAVE with its `fmt ` chunk.
    Wav(WavFormat),
    /// RIFF/WAVE whose `fmt ` chunk is not within the sniffed prefix (or is cut short).
    WavWithoutFmt,
    /// A RIFF file too short to hold its own header.
    TruncatedRiff,
    /// Ogg whose beginning-of-stream pages include an Opus stream.
    OggOpus,
    /// A container handed to symphonia.
    Known(&'static str),
    /// A container that is recognised but not read.
    Foreign(&'static str),
    /// No signature recognised.
    Unknown,
}

impl Sniffed {
    /// The container's name for messages.
    fn container(&self) -> &'static str {
        match self {
            Sniffed::Wav(_) | Sniffed::WavWithoutFmt | Sniffed::TruncatedRiff => "WAV",
            Sniffed::OggOpus => "Ogg",
            Sniffed::Known(k) | Sniffed::Foreign(k) => k,
            Sniffed::Unknown => "audio",
        }
    }
}

/// The fields of a WAV `fmt ` chunk needed to judge whether it can be decoded.
#[derive(Debug)]
struct WavFormat {
    tag: u16,
    /// For WAVE_FORMAT_EXTENSIBLE, the format tag embedded in the sub-format GUID.
    sub_tag: Option<u16>,
    channels: u16,
    sample_rate: u32,
    block_align: u16,
    bits: u16,
    /// The length the `data` chunk declares, if its header is within the sniffed prefix.
    data_len: Option<u32>,
}

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

impl WavFormat {
    fn effective_tag(&self) -> u16 {
        if self.tag == WAVE_FORMAT_EXTENSIBLE {
            self.sub_tag.unwrap_or(0)
        } else {
            self.tag
        }
    }

    fn describe(&self) -> String {
        let tag = self.effective_tag();
        let ext = if self.tag == WAVE_FORMAT_EXTENSIBLE {
            " (in WAVE_FORMAT_EXTENSIBLE)"
        } else {
            ""
        };
        format!("{} (format tag 0x{tag:04X}){ext}", wav_tag_name(tag))
    }

    fn check(&self, name: &str) -> Result<(), AudioError> {
        let tag = self.effective_tag();
        if !matches!(
            tag,
            WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT | WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW
        ) {
            return Err(AudioError::UnsupportedCodec {
                file: name.to_string(),
                container: "WAV",
                codec: self.describe(),
                supported: SUPPORTED_WAV_CODECS,
            });
        }
        if self.channels == 0 {
            return Err(AudioError::NoChannels {
                file: name.to_string(),
            });
        }
        if !(MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&self.sample_rate) {
            return Err(AudioError::BadSampleRate {
                file: name.to_string(),
                rate: u64::from(self.sample_rate),
            });
        }
        let bits_ok = match tag {
            WAVE_FORMAT_PCM => matches!(self.bits, 8 | 16 | 24 | 32),
            WAVE_FORMAT_IEEE_FLOAT => matches!(self.bits, 32 | 64),
            _ => true,
        };
        if !bits_ok {
            return Err(AudioError::UnsupportedCodec {
                file: name.to_string(),
                container: "WAV",
                codec: format!("{} with {} bits per sample", self.describe(), self.bits),
                supported: SUPPORTED_WAV_CODECS,
            });
        }
        // A frame of interleaved samples must fill the declared block exactly; otherwise the
        // samples would be read out of step (A-law/mu-law always use 8-bit samples).
        let sample_bytes = if matches!(tag, WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW) {
            1
        } else {
            u32::from(self.bits) / 8
        };
        let frame_bytes = u32::from(self.channels) * sample_bytes;
        if u32::from(self.block_align) != frame_bytes {
            return Err(AudioError::Corrupt {
                file: name.to_string(),
                detail: format!(
                    "fmt chunk declares a block size of {} bytes, but {} channels of {} bytes need {frame_bytes}",
                    self.block_align, self.channels, sample_bytes
                ),
            });
        }
        Ok(())
    }
}

/// A readable name for a WAV format tag (from the registered `WAVE_FORMAT_*` values).
fn wav_tag_name(tag: u16) -> &'static str {
    match tag {
        0x0000 => "unknown",
        0x0001 => "PCM",
        0x0002 => "Microsoft ADPCM",
        0x0003 => "IEEE float",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG audio",
        0x0055 => "MPEG Layer 3 (MP3)",
        0x00FF => "AAC",
        0x0161..=0x0163 => "Windows Media Audio",
        0x2000 => "AC-3",
        0xF1AC => "FLAC",
        _ => "unregistered codec",
    }
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Identifies the container from the first bytes and, for WAV, reads the `fmt ` chunk by
/// walking the chunk list (other chunks such as `LIST` may precede it).
fn sniff(head: &[u8]) -> Sniffed {
    let starts = |sig: &[u8]| head.starts_with(sig);
    if head.len() < 12 && starts(b"RIFF") {
        return Sniffed::TruncatedRiff;
    }
    if head.len() >= 12 && starts(b"RIFF") && &head[8..12] == b"WAVE" {
        let mut pos = 12usize;
        while let (Some(id), Some(len)) = (head.get(pos..pos + 4), le_u32(head, pos + 4)) {
            let body = pos + 8;
            if id == b"fmt " {
                let (Some(tag), Some(channels), Some(sample_rate), Some(block_align), Some(bits)) = (
                    le_u16(head, body),
                    le_u16(head, body + 2),
                    le_u32(head, body + 4),
                    le_u16(head, body + 12),
                    le_u16(head, body + 14),
                ) else {
                    return Sniffed::WavWithoutFmt;
                };
                // WAVEFORMATEXTENSIBLE: cbSize at 16, sub-format GUID at 24, whose first two
                // bytes are the actual format tag.
                let sub_tag = if tag == WAVE_FORMAT_EXTENSIBLE && len >= 40 {
                    le_u16(head, body + 24)
                } else {
                    None
                };
                let data_len =
                    wav_data_len(head, body.saturating_add(len as usize + (len as usize & 1)));
                return Sniffed::Wav(WavFormat {
                    tag,
                    sub_tag,
                    channels,
                    sample_rate,
                    block_align,
                    bits,
                    data_len,
                });
            }
            // Chunks are word-aligned: odd lengths carry one pad byte.
            let Some(next) = body.checked_add(len as usize + (len as usize & 1)) else {
                break;
            };
            pos = next;
        }
        return Sniffed::WavWithoutFmt;
    }
    if starts(b"RIFF") {
        return Sniffed::Foreign("RIFF (not WAVE)");
    }
    if starts(b"RIFX") || starts(b"RF64") || starts(b"BW64") {
        return Sniffed::Foreign("big-endian or 64-bit WAV (RIFX/RF64)");
    }
    if starts(b"fLaC") {
        return Sniffed::Known("FLAC");
    }
    if starts(b"OggS") {
        return if ogg_has_opus(head) {
            Sniffed::OggOpus
        } else {
            Sniffed::Known("Ogg")
        };
    }
    if head.len() >= 2 && head[0] == 0xFF && head[1] & 0xF6 == 0xF0 {
        return Sniffed::Known("ADTS AAC");
    }
    if starts(b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        return Sniffed::Known("MP3");
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Sniffed::Known("MP4/M4A");
    }
    if starts(b"FORM") {
        return Sniffed::Known("AIFF");
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Sniffed::Known("Matroska/WebM");
    }
    if starts(b"caff") {
        return Sniffed::Known("CAF");
    }
    if starts(&[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        return Sniffed::Foreign("ASF (WMA/WMV)");
    }
    Sniffed::Unknown
}

/// The length declared by the `data` chunk at or after `pos`.
fn wav_data_len(head: &[u8], mut pos: usize) -> Option<u32> {
    while let (Some(id), Some(len)) = (head.get(pos..pos + 4), le_u32(head, pos + 4)) {
        if id == b"data" {
            return Some(len);
        }
        pos = pos.checked_add(8 + len as usize + (len as usize & 1))?;
    }
    None
}

/// Whether one of the beginning-of-stream pages at the start of an Ogg file opens an Opus
/// stream (each logical stream's first page holds only its identification header).
fn ogg_has_opus(head: &[u8]) -> bool {
    let mut pos = 0usize;
    while let Some(h) = head.get(pos..pos + 27) {
        if &h[..4] != b"OggS" || h[5] & 2 == 0 {
            break;
        }
        let nseg = usize::from(h[26]);
        let Some(lacing) = head.get(pos + 27..pos + 27 + nseg) else {
            break;
        };
        let body = pos + 27 + nseg;
        if head.get(body..body + 8) == Some(b"OpusHead") {
            return true;
        }
        pos = body + lacing.iter().map(|&l| usize::from(l)).sum::<usize>();
    }
    false
}

/// Streaming resampler from a source rate to 16 kHz with the output aligned to the input.
///
/// rubato's synchronous FFT resampler is used rather than its asynchronous sinc resampler:
/// for a fixed rational ratio it computes an exact band-limited resampling with a
/// Blackman-Harris² windowed-sinc filter of `chunk_in` taps (cut-off ~0.99 × Nyquist).
/// On band-limited test signals (sums of sinusoids below 0.9 × the lower Nyquist
/// frequency) its f64 output matches the analytic signal to a relative RMS error of ~1e-10
/// for 44.1, 22.05, 48 and 8 kHz input, whereas the sinc resampler (256 taps, cubic, best
/// fractional alignment) reached only ~2e-3, and its reported `output_delay` differed from
/// its measured delay. On real audio, jfk_44k1_stereo.wav resampled this way matches the
/// 16 kHz jfk.wav to 3.3e-4 relative error, about the int16 quantisation level.
///
/// The FFT block holds an EVEN number of rational units so that the filter's centre
/// (`chunk_in / 2` input samples) is a whole number of output samples: the delay is then
/// removed exactly.
struct Resampling {
    inner: FftFixedInOut<f64>,
    chunk_in: usize,
    pending: Vec<f64>,
    out_buf: Vec<Vec<f64>>,
    /// Output samples still to drop at the start (the filter's delay).
    skip: usize,
    rate_in: u32,
    frames_in: u64,
    frames_out: u64,
}

impl Resampling {
    /// Smallest FFT block, in output or input samples (whichever is smaller); sets the filter
    /// length and hence the steepness of the anti-aliasing cut-off (~0.99 × Nyquist).
    const MIN_BLOCK: u64 = 1024;

    fn new(rate_in: u32) -> Result<Self, String> {
        let g = gcd(u64::from(rate_in), u64::from(SAMPLE_RATE));
        let in_unit = u64::from(rate_in) / g;
        let out_unit = u64::from(SAMPLE_RATE) / g;
        let units = Self::MIN_BLOCK.div_ceil(in_unit.min(out_unit));
        let units = units + (units & 1);
        let chunk_in = (units * in_unit) as usize;
        let chunk_out = (units * out_unit) as usize;
        let inner = FftFixedInOut::<f64>::new(rate_in as usize, SAMPLE_RATE as usize, chunk_in, 1)
            .map_err(|e| e.to_string())?;
        if inner.input_frames_next() != chunk_in || inner.output_frames_next() != chunk_out {
            return Err(format!(
                "unexpected block sizes {}/{} (wanted {chunk_in}/{chunk_out})",
                inner.input_frames_next(),
                inner.output_frames_next()
            ));
        }
        // The filter is centred on input sample chunk_in / 2, i.e. output sample
        // chunk_out / 2 (whole because `units` is even).
        let skip = inner.output_delay();
        if skip != chunk_out / 2 {
            return Err(format!(
                "unexpected resampler delay {skip} (wanted {})",
                chunk_out / 2
            ));
        }
        let out_buf = vec![vec![0.0; chunk_out]];
        Ok(Resampling {
            inner,
            chunk_in,
            pending: Vec::with_capacity(chunk_in),
            out_buf,
            skip,
            rate_in,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// Output length for `n` input frames: `round(n × 16000 / rate)`, halves rounded up.
    fn expected_out(&self, n: u64) -> u64 {
        let num = u128::from(n) * u128::from(SAMPLE_RATE) * 2 + u128::from(self.rate_in);
        (num / (2 * u128::from(self.rate_in))) as u64
    }

    fn push(&mut self, input: &[f64], out: &mut Vec<f32>) -> Result<(), String> {
        self.frames_in += input.len() as u64;
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.chunk_in {
                self.process_pending(out, u64::MAX)?;
            }
        }
        Ok(())
    }

    /// Runs one full block through the resampler, emitting at most `limit` samples in total.
    fn process_pending(&mut self, out: &mut Vec<f32>, limit: u64) -> Result<(), String> {
        self.pending.resize(self.chunk_in, 0.0);
        let (_, n) = self
            .inner
            .process_into_buffer(&[&self.pending], &mut self.out_buf, None)
            .map_err(|e| e.to_string())?;
        self.pending.clear();
        let produced = &self.out_buf[0][..n];
        let drop = self.skip.min(produced.len());
        self.skip -= drop;
        let room = limit.saturating_sub(self.frames_out) as usize;
        let kept = &produced[drop..][..(produced.len() - drop).min(room)];
        out.extend(kept.iter().map(|&s| s as f32));
        self.frames_out += kept.len() as u64;
        Ok(())
    }

    /// Flushes the filter with zeros until the expected number of samples was emitted.
    fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), String> {
        let total = self.expected_out(self.frames_in);
        if self.frames_out > total {
            // Cannot happen (the filter's look-ahead holds output back), kept for safety.
            let excess = (self.frames_out - total) as usize;
            out.truncate(out.len().saturating_sub(excess));
            self.frames_out = total;
        }
        while self.frames_out < total {
            self.process_pending(out, total)?;
        }
        Ok(())
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

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
        downmix(&[1.0f32, 3.0, 5.0, 7.0, 9.0, 11.0], 2, 1..3, 0.5, &mut out);
        assert_eq!(out, [3.0, 5.0]);
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
