//! The edit list of an MP4 file's first audio track.
//!
//! symphonia 0.5 parses the `elst` box but does not apply it, so AAC decodes with the
//! encoder's priming samples (typically 1,024) in front and frame padding at the end. The
//! first non-empty edit says where the presentation starts in the media and how long it
//! lasts; only that edit is applied (an initial empty edit, i.e. a leading silence, is
//! ignored).

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
        let len =
            (self.segment_duration > 0).then(|| scale(self.segment_duration, self.movie_timescale));
        (start, len)
    }
}

/// Boxes read per level at most (a real file has a handful).
pub(crate) const MAX_BOXES: usize = 4096;

pub(crate) struct BoxHeader {
    pub(crate) kind: [u8; 4],
    pub(crate) body: u64,
    pub(crate) end: u64,
}

/// The boxes between `start` and `end`.
pub(crate) fn children<R: Read + Seek + ?Sized>(
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

pub(crate) fn read_at<R: Read + Seek + ?Sized>(
    r: &mut R,
    b: &BoxHeader,
    max: usize,
) -> Option<Vec<u8>> {
    let len = usize::try_from(b.end - b.body).ok()?.min(max);
    r.seek(SeekFrom::Start(b.body)).ok()?;
    let mut v = vec![0u8; len];
    r.read_exact(&mut v).ok()?;
    Some(v)
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The time scale of an `mvhd` or `mdhd` box (version 0 or 1).
pub(crate) fn timescale(b: &[u8]) -> Option<u32> {
    match b.first()? {
        0 => be_u32(b, 12),
        1 => be_u32(b, 20),
        _ => None,
    }
}

/// The first edit with a media time (not an empty edit) of an `elst` box.
pub(crate) fn first_edit(b: &[u8]) -> Option<(u64, u64)> {
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
