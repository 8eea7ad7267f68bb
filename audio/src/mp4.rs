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
pub fn check_sizes<R: Read + Seek + ?Sized>(r: &mut R, start: u64, len: u64) -> Result<(), String> {
    let mut pos = start;
    let mut count = 0;
    // A box may declare more bytes than the file has (`pos` then saturates at u64::MAX),
    // so the room left is computed without overflow.
    while len.checked_sub(pos).is_some_and(|left| left >= 8) && count < MAX_BOXES {
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
                if size < header {
                    "less than its header, of"
                } else {
                    "more than"
                },
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
        b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"udta" | b"mvex"
        | b"moof" | b"traf" | b"ilst" | b"sinf" | b"schi" | b"wave" => {
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

#[cfg(test)]
mod tests {
    use super::check_sizes;

    /// Found by the `audio_ogg_opus` target: an `ftyp` box whose 64-bit size is 2^64 - 1
    /// left the walk at u64::MAX, and the next box's position overflowed.
    #[test]
    fn a_box_larger_than_the_file_ends_the_walk_without_overflow() {
        let found: &[u8] = include_bytes!(
            "../../tests/data/fuzz-regressions/audio-mp4-ftyp-largesize-overflows-the-box-walk.m4a"
        );
        let mut r = std::io::Cursor::new(found);
        assert_eq!(check_sizes(&mut r, 0, found.len() as u64), Ok(()));
    }
}
