//! Ogg Opus (RFC 7845): pages, packets and granule positions, read from a forward-only
//! reader.

use std::io::Read;

use crate::error::{corrupt, AudioError};
use crate::limits::MAX_OGG_PACKET;
use crate::opus::{opus_packet_frames, OpusDecoding, OpusHead};
use crate::packet::{skip_bad_packet, PacketError, Stats, Step, Trim};

/// Ogg Opus (RFC 7845), demuxed here page by page from a forward-only reader.
///
/// symphonia 0.5 demuxes Ogg Opus but neither applies the pre-skip nor trims the end
/// from the last granule position, so the timing is handled here: decoded sample `i` of
/// a stream ends at granule position `start_gp + i + 1`, where `start_gp` is the granule
/// position of the first audio page less the duration of the packets completed on it;
/// samples at or before granule `pre_skip`, and after the final page's granule position,
/// are dropped. Chained streams (concatenated Ogg Opus files) are decoded one after the
/// other; other logical streams multiplexed with the Opus one are ignored.
pub(crate) struct OggOpusSource {
    pub(crate) pages: OggPages,
    pub(crate) serial: u32,
    pub(crate) opus: OpusDecoding,
    pub(crate) channels: usize,
    pub(crate) trim: Trim,
    /// Pre-skip of the current stream, in 48 kHz samples.
    pub(crate) pre_skip: i64,
    /// Granule position before the first decoded sample of the current stream.
    pub(crate) start_gp: i64,
    pub(crate) stage: OggStage,
    /// Sequence number of the last page of the stream, to notice lost pages.
    pub(crate) last_seq: Option<u32>,
    /// Completed packets not yet decoded.
    pub(crate) queue: std::collections::VecDeque<Vec<u8>>,
    /// The start of a packet that continues on the next page.
    pub(crate) partial: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OggStage {
    /// The comment header (`OpusTags`) comes next.
    Tags,
    /// Before the first audio page.
    FirstAudio,
    Audio,
    /// After the page flagged end-of-stream.
    Ended,
}

/// One Ogg page.
pub(crate) struct OggPage {
    pub(crate) flags: u8,
    pub(crate) granule: i64,
    pub(crate) serial: u32,
    pub(crate) seq: u32,
    pub(crate) offset: u64,
    pub(crate) lacing: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl OggPage {
    const CONTINUED: u8 = 1;
    const BOS: u8 = 2;
    const EOS: u8 = 4;

    /// The first packet on the page if it starts there (for headers, which fit in a page).
    pub(crate) fn first_packet(&self) -> &[u8] {
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
pub(crate) struct OggPages {
    pub(crate) r: std::io::BufReader<Box<dyn Read + Send + Sync>>,
    pub(crate) offset: u64,
    /// The input ended inside a page.
    pub(crate) truncated: bool,
}

pub(crate) const fn ogg_crc_table() -> [u32; 256] {
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

pub(crate) static OGG_CRC: [u32; 256] = ogg_crc_table();

pub(crate) fn ogg_crc(crc: u32, data: &[u8]) -> u32 {
    data.iter().fold(crc, |c, &b| {
        (c << 8) ^ OGG_CRC[usize::from((c >> 24) as u8 ^ b)]
    })
}

impl OggPages {
    pub(crate) fn new(r: Box<dyn Read + Send + Sync>) -> Self {
        OggPages {
            r: std::io::BufReader::with_capacity(64 * 1024, r),
            offset: 0,
            truncated: false,
        }
    }

    /// Fills `buf` as far as the input allows; returns the bytes read.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
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
    pub(crate) fn next(&mut self, name: &str) -> Result<Option<OggPage>, AudioError> {
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
    pub(crate) fn new(name: &str, reader: Box<dyn Read + Send + Sync>) -> Result<Self, AudioError> {
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

    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    pub(crate) fn step(
        &mut self,
        name: &str,
        mono: &mut Vec<f64>,
        stats: &mut Stats,
    ) -> Result<Step, AudioError> {
        loop {
            if let Some(packet) = self.queue.pop_front() {
                match self.opus.decode(
                    name,
                    &packet,
                    &mut self.trim,
                    mono,
                    &mut stats.frames_repaired,
                ) {
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
    pub(crate) fn take_page(&mut self, name: &str, page: OggPage) -> Result<(), AudioError> {
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
