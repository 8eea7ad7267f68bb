//! Opus packets: identification header, framing (RFC 6716 Annex B, self-delimited), and
//! decoding of single- and multi-stream packets with `opus-pure`.

use std::panic::AssertUnwindSafe;

use crate::error::{corrupt, AudioError};
use crate::packet::{catch_decoder_panic, downmix, PacketError, Trim};

/// The fields of an Opus identification header (RFC 7845 §5.1).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpusHead {
    pub(crate) channels: usize,
    pub(crate) pre_skip: u16,
    /// Output gain in dB, Q7.8.
    pub(crate) gain_q8: i16,
    pub(crate) family: u8,
    pub(crate) streams: usize,
    pub(crate) coupled: usize,
    pub(crate) mapping: Vec<u8>,
}

impl OpusHead {
    pub(crate) fn parse(b: &[u8]) -> Result<Self, String> {
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
    pub(crate) fn plain(channels: usize, pre_skip: u32) -> Self {
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
pub(crate) fn dops_as_opus_head(b: &[u8]) -> Vec<u8> {
    let mut h = b.to_vec();
    for range in [10..12, 12..16, 16..18] {
        if let Some(field) = h.get_mut(range) {
            field.reverse();
        }
    }
    h
}

/// An Opus decoder (single or multistream) with its output buffer.
pub(crate) struct OpusDecoding {
    pub(crate) dec: OpusDec,
    pub(crate) channels: usize,
    pub(crate) gain: f64,
    pub(crate) pcm: Vec<f32>,
}

pub(crate) enum OpusDec {
    Single(Box<opus_pure::OpusDecoder>),
    Multi(MultiOpus),
}

impl OpusDecoding {
    pub(crate) fn new(
        name: &str,
        container: &'static str,
        head: &OpusHead,
    ) -> Result<Self, AudioError> {
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

    /// Decodes one packet, keeping the frames `trim` lets through; adds to
    /// `frames_repaired` the kept frames [`downmix`] had to make sane.
    pub(crate) fn decode(
        &mut self,
        name: &str,
        packet: &[u8],
        trim: &mut Trim,
        mono: &mut Vec<f64>,
        frames_repaired: &mut u64,
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
        *frames_repaired += downmix(
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
pub(crate) struct MultiOpus {
    /// Decoder and channel count of each stream (coupled streams first).
    pub(crate) streams: Vec<(opus_pure::OpusDecoder, usize)>,
    pub(crate) coupled: usize,
    pub(crate) mapping: Vec<u8>,
    pub(crate) bufs: Vec<Vec<f32>>,
}

impl MultiOpus {
    pub(crate) fn new(head: &OpusHead) -> Result<Self, opus_pure::Error> {
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
    pub(crate) fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
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
pub(crate) fn opus_frame_len(b: &[u8]) -> Option<(usize, usize)> {
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
pub(crate) fn undelimit(b: &[u8]) -> Result<(Vec<u8>, usize), String> {
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
pub(crate) fn opus_packet_frames(packet: &[u8]) -> Option<u64> {
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

/// Opus always decodes at 48 kHz (RFC 7845 §5.1: the input rate field is informative).
pub(crate) const OPUS_RATE: u32 = 48_000;

/// Samples per channel of the largest Opus packet (120 ms at 48 kHz).
pub(crate) const OPUS_MAX_FRAMES: usize = 5_760;
