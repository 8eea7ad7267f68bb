//! Containers and codecs read by symphonia: packet decoding, codec-delay trimming, down-mixing.

use std::panic::AssertUnwindSafe;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{self as sc, CodecType, Decoder};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatReader;

use crate::error::{corrupt, AudioError};
use crate::opus::OpusDecoding;
use crate::packet::{
    catch_decoder_panic, downmix, skip_bad_packet, PacketError, Stats, Step, Trim,
};

/// A codec's name for messages.
pub(crate) fn codec_name(codec: CodecType) -> String {
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

/// A track demuxed by symphonia.
pub(crate) struct SymphoniaSource {
    pub(crate) format: Box<dyn FormatReader>,
    pub(crate) track_id: u32,
    pub(crate) decoder: PacketDecoder,
    pub(crate) trim: Trim,
    pub(crate) supported: &'static str,
    pub(crate) channels: usize,
    /// The container declares the stream's length (an early end is then a truncation).
    pub(crate) length_known: bool,
}

pub(crate) enum PacketDecoder {
    Symphonia {
        decoder: Box<dyn Decoder>,
        buf: Option<SampleBuffer<f64>>,
    },
    Opus(Box<OpusDecoding>),
}

impl SymphoniaSource {
    /// Channels of the last decoded packet.
    pub(crate) fn decoded_channels(&self) -> usize {
        match &self.decoder {
            PacketDecoder::Symphonia { .. } => self.channels,
            PacketDecoder::Opus(o) => o.channels,
        }
    }

    pub(crate) fn step(
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
                PacketDecoder::Opus(o) => o.decode(
                    name,
                    packet.buf(),
                    &mut self.trim,
                    mono,
                    &mut stats.frames_repaired,
                ),
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
                        stats.frames_repaired += downmix(b.samples(), channels, keep, 1.0, mono);
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
