//! Identifying a source by its first bytes: container, WAV format tag, Ogg codec.

use symphonia::core::errors::Error as SymphoniaError;

use crate::error::{AudioError, SUPPORTED_CONTAINERS, SUPPORTED_WAV_CODECS};
use crate::limits::{MAX_SOURCE_RATE, MIN_SOURCE_RATE};

/// Maps a symphonia error raised while opening a source to an [`AudioError`].
pub(crate) fn classify_open_error(name: &str, sniffed: &Sniffed, e: SymphoniaError) -> AudioError {
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
pub(crate) enum Sniffed {
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
    pub(crate) fn container(&self) -> &'static str {
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
pub(crate) struct WavFormat {
    pub(crate) tag: u16,
    /// For WAVE_FORMAT_EXTENSIBLE, the format tag embedded in the sub-format GUID.
    pub(crate) sub_tag: Option<u16>,
    pub(crate) channels: u16,
    pub(crate) sample_rate: u32,
    pub(crate) block_align: u16,
    pub(crate) bits: u16,
    /// The length the `data` chunk declares, if its header is within the sniffed prefix.
    pub(crate) data_len: Option<u32>,
}

pub(crate) const WAVE_FORMAT_PCM: u16 = 0x0001;
pub(crate) const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
pub(crate) const WAVE_FORMAT_ALAW: u16 = 0x0006;
pub(crate) const WAVE_FORMAT_MULAW: u16 = 0x0007;
pub(crate) const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

impl WavFormat {
    pub(crate) fn effective_tag(&self) -> u16 {
        if self.tag == WAVE_FORMAT_EXTENSIBLE {
            self.sub_tag.unwrap_or(0)
        } else {
            self.tag
        }
    }

    pub(crate) fn describe(&self) -> String {
        let tag = self.effective_tag();
        let ext = if self.tag == WAVE_FORMAT_EXTENSIBLE {
            " (in WAVE_FORMAT_EXTENSIBLE)"
        } else {
            ""
        };
        format!("{} (format tag 0x{tag:04X}){ext}", wav_tag_name(tag))
    }

    pub(crate) fn check(&self, name: &str) -> Result<(), AudioError> {
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
pub(crate) fn wav_tag_name(tag: u16) -> &'static str {
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

pub(crate) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Identifies the container from the first bytes and, for WAV, reads the `fmt ` chunk by
/// walking the chunk list (other chunks such as `LIST` may precede it).
pub(crate) fn sniff(head: &[u8]) -> Sniffed {
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
pub(crate) fn wav_data_len(head: &[u8], mut pos: usize) -> Option<u32> {
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
pub(crate) fn ogg_has_opus(head: &[u8]) -> bool {
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
