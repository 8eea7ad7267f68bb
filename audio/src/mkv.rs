//! A structural check of Matroska / WebM files before symphonia reads them.
//!
//! symphonia 0.5's Matroska reader allocates every length it reads before reading the
//! bytes: a binary or string element's declared size, and the frame sizes of a laced
//! block (EBML lacing stores them as signed differences, so a few bytes can declare
//! hundreds of terabytes). An allocation that fails aborts the process; no panic guard can
//! catch it. So the file is walked here first, the way symphonia walks it, and refused if
//! any length it would allocate runs past what holds it.
//!
//! symphonia reads element headers one after another, entering master elements and
//! stepping over the others; it also jumps to positions the file names (`SeekHead`
//! entries, cue points). The walk here visits the same headers and requires:
//! - every element ID to be well formed (symphonia otherwise searches forward for the
//!   next top-level ID, into bytes nobody checked);
//! - every element of known size to fit in its parent and end its parent's children
//!   exactly; a non-master element may run past the end of the file (a truncated file)
//!   only by a bounded length;
//! - every laced frame of a `SimpleBlock` or `Block` to fit in its block;
//! - every position symphonia may jump to to be the start of an element visited here.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

/// EBML header, `Segment`, and the master elements below them, from the Matroska
/// specification (a superset of those symphonia enters).
const MASTERS: &[u32] = &[
    0x1A45_DFA3, // EBML
    0x1853_8067, // Segment
    0x114D_9B74, // SeekHead
    0x4DBB,      // Seek
    0x1549_A966, // Info
    0x6924,      // ChapterTranslate
    0x1F43_B675, // Cluster
    0x5854,      // SilentTracks
    0xA0,        // BlockGroup
    0x75A1,      // BlockAdditions
    0xA6,        // BlockMore
    0x8E,        // Slices
    0xE8,        // TimeSlice
    0x1654_AE6B, // Tracks
    0xAE,        // TrackEntry
    0x41E4,      // BlockAdditionMapping
    0x6624,      // TrackTranslate
    0xE0,        // Video
    0x55B0,      // Colour
    0x55D0,      // MasteringMetadata
    0x7670,      // Projection
    0xE1,        // Audio
    0xE2,        // TrackOperation
    0xE3,        // TrackCombinePlanes
    0xE4,        // TrackPlane
    0xE9,        // TrackJoinBlocks
    0x6D80,      // ContentEncodings
    0x6240,      // ContentEncoding
    0x5034,      // ContentCompression
    0x5035,      // ContentEncryption
    0x47E7,      // ContentEncAESSettings
    0x1C53_BB6B, // Cues
    0xBB,        // CuePoint
    0xB7,        // CueTrackPositions
    0xDB,        // CueReference
    0x1941_A469, // Attachments
    0x61A7,      // AttachedFile
    0x1043_A770, // Chapters
    0x45B9,      // EditionEntry
    0x4520,      // EditionDisplay
    0xB6,        // ChapterAtom
    0x8F,        // ChapterTrack
    0x80,        // ChapterDisplay
    0x6944,      // ChapProcess
    0x6911,      // ChapProcessCommand
    0x1254_C367, // Tags
    0x7373,      // Tag
    0x63C0,      // Targets
    0x67C8,      // SimpleTag
];

const SEGMENT: u32 = 0x1853_8067;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const CUE_CLUSTER_POSITION: u32 = 0xF1;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK: u32 = 0xA1;
/// The elements symphonia reads where a `SeekHead` entry points.
const SEEK_TARGETS: &[u64] = &[0x1654_AE6B, 0x1549_A966, 0x1254_C367, 0x1C53_BB6B];

/// Longest non-master element that may run past the end of the file. symphonia allocates
/// its declared size and then fails to read it; real audio blocks are far smaller.
pub(crate) const MAX_TRUNCATED_ELEMENT: u64 = 16 << 20;

/// Elements visited at most (a two-hour Opus file at 20-ms frames holds about 400,000
/// blocks); more is refused rather than walked.
const MAX_ELEMENTS: usize = 8 << 20;

/// A forward reader over the file that knows its position.
struct Walk<'a, R: Read + Seek + ?Sized> {
    r: BufReader<&'a mut R>,
    pos: u64,
}

impl<R: Read + Seek + ?Sized> Walk<'_, R> {
    fn go(&mut self, to: u64) -> Result<(), String> {
        if to != self.pos {
            let delta = i64::try_from(to.wrapping_sub(self.pos)).unwrap_or(i64::MIN);
            if to > self.pos && delta > 0 && delta < 1 << 20 {
                // Within the buffer (or close): no seek of the underlying reader.
                self.r.seek_relative(delta).map_err(|e| e.to_string())?;
            } else {
                self.r
                    .seek(SeekFrom::Start(to))
                    .map_err(|e| e.to_string())?;
            }
            self.pos = to;
        }
        Ok(())
    }

    /// The next byte, or `None` at the end of the file.
    fn byte(&mut self) -> Result<Option<u8>, String> {
        let b = match self.r.fill_buf().map_err(|e| e.to_string())?.first() {
            Some(&b) => b,
            None => return Ok(None),
        };
        self.r.consume(1);
        self.pos += 1;
        Ok(Some(b))
    }
}

/// An element header as symphonia reads it: an unknown size (`0xFF`) and a size of 0
/// both leave the element's end open.
struct Header {
    id: u32,
    data: u64,
    size: Option<u64>,
}

enum Vint {
    Value(u64, u32),
    Unknown,
    End,
}

/// An EBML variable-size integer: its value (marker bit cleared) and width.
fn read_vint<R: Read + Seek + ?Sized>(w: &mut Walk<R>, at: u64) -> Result<Vint, String> {
    let Some(first) = w.byte()? else {
        return Ok(Vint::End);
    };
    if first == 0xFF {
        return Ok(Vint::Unknown);
    }
    if first == 0 {
        return Err(format!("invalid variable-size integer at byte {at}"));
    }
    let width = first.leading_zeros();
    let mut v = u64::from(first ^ (0x80 >> width));
    for _ in 0..width {
        let Some(b) = w.byte()? else {
            return Ok(Vint::End);
        };
        v = v << 8 | u64::from(b);
    }
    Ok(Vint::Value(v, width + 1))
}

/// The header at `pos`, or `None` if the file ends inside it.
fn read_header<R: Read + Seek + ?Sized>(
    w: &mut Walk<R>,
    pos: u64,
) -> Result<Option<Header>, String> {
    w.go(pos)?;
    let Some(first) = w.byte()? else {
        return Ok(None);
    };
    let extra = first.leading_zeros();
    if extra > 3 {
        return Err(format!(
            "byte {pos} (0x{first:02X}) does not start an element ID"
        ));
    }
    let mut id = u32::from(first);
    for _ in 0..extra {
        let Some(b) = w.byte()? else {
            return Ok(None);
        };
        id = id << 8 | u32::from(b);
    }
    let size = match read_vint(w, w.pos)? {
        Vint::End => return Ok(None),
        Vint::Unknown | Vint::Value(0, _) => None,
        Vint::Value(v, _) => Some(v),
    };
    Ok(Some(Header {
        id,
        data: w.pos,
        size,
    }))
}

/// An unsigned integer element's value, if it has at most 8 bytes (symphonia refuses
/// longer ones).
fn read_uint<R: Read + Seek + ?Sized>(w: &mut Walk<R>, h: &Header) -> Result<Option<u64>, String> {
    let len = h.size.unwrap_or(0);
    if len > 8 {
        return Ok(None);
    }
    w.go(h.data)?;
    let mut v = 0u64;
    for _ in 0..len {
        let Some(b) = w.byte()? else {
            return Ok(None);
        };
        v = v << 8 | u64::from(b);
    }
    Ok(Some(v))
}

/// Checks that the frames of the (simple) block at `h` fit in it: the lacing header's
/// frame sizes are what symphonia allocates for each frame.
fn check_block<R: Read + Seek + ?Sized>(
    w: &mut Walk<R>,
    h: &Header,
    pos: u64,
) -> Result<(), String> {
    let len = h.size.unwrap_or(0);
    let end = h.data + len;
    w.go(h.data)?;
    let refuse = |what: &str| Err(format!("the block at byte {pos} ({len} bytes): {what}"));
    // Track number (a variable-size integer), 16-bit time code, flags.
    match read_vint(w, w.pos)? {
        Vint::End => return Ok(()),
        Vint::Unknown | Vint::Value(..) => {}
    }
    let mut fixed = [0u8; 3];
    for b in &mut fixed {
        match w.byte()? {
            Some(v) => *b = v,
            None => return Ok(()),
        }
    }
    if w.pos > end {
        return refuse("its header runs past its end");
    }
    let lacing = (fixed[2] >> 1) & 3;
    if lacing == 0 || lacing == 2 {
        // No lacing, or equal frames: symphonia splits what the block holds.
        return Ok(());
    }
    let Some(stored) = w.byte()? else {
        return Ok(());
    };
    let mut total: u128 = 0;
    let mut last: i128 = 0;
    for i in 0..stored {
        let size: i128 = if lacing == 1 {
            // Xiph lacing: a run of 255s and a final byte below 255, added up.
            let mut s = 0i128;
            loop {
                if w.pos >= end {
                    return refuse("its lacing header runs past its end");
                }
                let Some(b) = w.byte()? else {
                    return Ok(());
                };
                s += i128::from(b);
                if b != 255 {
                    break;
                }
            }
            s
        } else {
            // EBML lacing: the first size, then signed differences.
            let (v, width) = match read_vint(w, w.pos)? {
                Vint::End => return Ok(()),
                Vint::Unknown => (u64::MAX, 1),
                Vint::Value(v, width) => (v, width),
            };
            if i == 0 {
                i128::from(v)
            } else {
                let half = (1i128 << (7 * width - 1)) - 1;
                last + i128::from(v) - half
            }
        };
        if w.pos > end {
            return refuse("its lacing header runs past its end");
        }
        if !(0..=i128::from(i64::MAX)).contains(&size) {
            return refuse(&format!("frame {i} declares {size} bytes"));
        }
        last = size;
        total += size as u128;
        if total > u128::from(end - w.pos) {
            return refuse(&format!(
                "its frames declare {total} bytes, more than the {} bytes it has left",
                end - w.pos
            ));
        }
    }
    Ok(())
}

/// Walks the Matroska file whose EBML header starts at byte `start` of a `len`-byte input
/// (see the module docs). The error names the element and its byte offset.
pub fn check_structure<R: Read + Seek + ?Sized>(
    r: &mut R,
    start: u64,
    len: u64,
) -> Result<(), String> {
    let mut w = Walk {
        r: BufReader::with_capacity(64 << 10, r),
        pos: 0,
    };
    w.r.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    w.pos = start;

    // Ends of the master elements of known size that enclose the position.
    let mut open: Vec<u64> = Vec::new();
    // Header positions visited, in increasing order.
    let mut visited: Vec<u64> = Vec::new();
    let mut segment_data: Option<u64> = None;
    // The SeekHead entry being read (its SeekID, its SeekPosition), and every position
    // symphonia may jump to.
    let mut seek: Option<(Option<u64>, Option<u64>)> = None;
    let mut targets: Vec<(u64, &str)> = Vec::new();
    let flush = |seek: &mut Option<(Option<u64>, Option<u64>)>, targets: &mut Vec<(u64, &str)>| {
        if let Some((id, Some(at))) = seek.take() {
            if id.is_none_or(|id| SEEK_TARGETS.contains(&id)) {
                targets.push((at, "SeekHead entry"));
            }
        }
    };

    let mut pos = start;
    while pos < len {
        while open.last() == Some(&pos) {
            open.pop();
        }
        if visited.len() >= MAX_ELEMENTS {
            return Err(format!("more than {MAX_ELEMENTS} elements"));
        }
        let Some(h) = read_header(&mut w, pos)? else {
            break;
        };
        visited.push(pos);
        let parent_end = open.last().copied();
        let name = format!("the element 0x{:X} at byte {pos}", h.id);
        if let Some(pe) = parent_end {
            if h.data > pe {
                return Err(format!("{name}: its header runs past its parent's end"));
            }
        }
        let end = match h.size {
            Some(size) => match h.data.checked_add(size) {
                Some(e) => Some(e),
                None => return Err(format!("{name} declares {size} bytes")),
            },
            None => None,
        };
        if let (Some(e), Some(pe)) = (end, parent_end) {
            if e > pe {
                return Err(format!(
                    "{name} declares {} bytes, past the end of its parent at byte {pe}",
                    h.size.unwrap_or(0)
                ));
            }
        }
        if segment_data.is_none() {
            if visited.len() == 1 && (h.id != 0x1A45_DFA3 || end.is_none()) {
                return Err(format!("{name}: not an EBML header of known size"));
            }
            if visited.len() > 1 && open.is_empty() {
                if h.id != SEGMENT {
                    return Err(format!("{name}: a Segment must follow the EBML header"));
                }
                segment_data = Some(h.data);
            }
        }
        if h.id == SEEK {
            flush(&mut seek, &mut targets);
            seek = Some((None, None));
        } else if h.id == SEEK_ID || h.id == SEEK_POSITION {
            let v = read_uint(&mut w, &h)?;
            if let Some(entry) = seek.as_mut() {
                if h.id == SEEK_ID {
                    entry.0 = v;
                } else {
                    entry.1 = v;
                }
            }
        } else {
            flush(&mut seek, &mut targets);
        }
        if MASTERS.contains(&h.id) {
            if let Some(e) = end {
                open.push(e);
            }
            pos = h.data;
            continue;
        }
        let size = h.size.unwrap_or(0);
        if h.data + size > len && size > MAX_TRUNCATED_ELEMENT {
            return Err(format!(
                "{name} declares {size} bytes, past the end of the {len}-byte file"
            ));
        }
        if h.id == CUE_CLUSTER_POSITION {
            if let Some(at) = read_uint(&mut w, &h)? {
                targets.push((at, "cue point"));
            }
        }
        if h.id == SIMPLE_BLOCK || h.id == BLOCK {
            check_block(&mut w, &h, pos)?;
        }
        pos = h.data + size;
    }
    flush(&mut seek, &mut targets);

    if let Some(base) = segment_data {
        for (rel, what) in targets {
            let Some(at) = base.checked_add(rel) else {
                return Err(format!("a {what} names byte offset {rel}, past any file"));
            };
            if at < len && visited.binary_search(&at).is_err() {
                return Err(format!(
                    "a {what} names byte {at}, which does not start an element"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn check(b: &[u8]) -> Result<(), String> {
        check_structure(&mut Cursor::new(b), 0, b.len() as u64)
    }

    /// An element: ID bytes, a one-byte size, the body.
    fn el(id: &[u8], body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 127);
        let mut v = id.to_vec();
        v.push(0x80 | body.len() as u8);
        v.extend_from_slice(body);
        v
    }

    fn file(cluster_body: &[u8]) -> Vec<u8> {
        let mut f = el(&[0x1A, 0x45, 0xDF, 0xA3], &el(&[0x42, 0x82], b"webm"));
        let cluster = el(&[0x1F, 0x43, 0xB6, 0x75], cluster_body);
        f.extend(el(&[0x18, 0x53, 0x80, 0x67], &cluster));
        f
    }

    #[test]
    fn laced_frames_must_fit_their_block() {
        // Track 1, time 0, EBML lacing, 1 stored size: 3 bytes, then 3 + 2 bytes of frames.
        let good = el(&[0xA3], &[0x81, 0, 0, 0x06, 1, 0x83, 1, 2, 3, 4, 5]);
        assert_eq!(check(&file(&good)), Ok(()));
        // The first size says 0x3FFF bytes in an 11-byte block.
        let bad = el(&[0xA3], &[0x81, 0, 0, 0x06, 1, 0x7F, 0xFF, 1, 2, 3, 4]);
        let e = check(&file(&bad)).unwrap_err();
        assert!(e.contains("frames declare 16383 bytes"), "{e}");
        // Xiph lacing: 255 + 255 + 3.
        let bad = el(&[0xA3], &[0x81, 0, 0, 0x02, 1, 255, 255, 3, 1, 2]);
        assert!(check(&file(&bad)).unwrap_err().contains("513 bytes"));
        // A difference that makes the second size negative.
        let bad = el(&[0xA3], &[0x81, 0, 0, 0x06, 2, 0x82, 0x80, 1, 2, 3, 4]);
        assert!(check(&file(&bad))
            .unwrap_err()
            .contains("frame 1 declares -61"));
    }

    #[test]
    fn elements_must_fit_their_parent_and_ids_be_well_formed() {
        let mut f = file(&el(&[0xE7], &[0]));
        assert_eq!(check(&f), Ok(()));
        // The cluster's timestamp claims 2 bytes where 1 is left.
        let at = f.len() - 2;
        f[at] = 0x82;
        assert!(check(&f)
            .unwrap_err()
            .contains("past the end of its parent"));
        // A byte that cannot start an ID where one is expected.
        let f = file(&[0x05, 0x81, 0]);
        assert!(check(&f)
            .unwrap_err()
            .contains("does not start an element ID"));
        // A binary element of 2^40 bytes past the end of the file (open-ended parents).
        let mut f = el(&[0x1A, 0x45, 0xDF, 0xA3], &el(&[0x42, 0x82], b"webm"));
        f.extend([0x18, 0x53, 0x80, 0x67, 0xFF, 0x63, 0xA2]);
        f.extend([0x01, 0, 0, 0x01, 0, 0, 0, 0]);
        assert!(check(&f).unwrap_err().contains("past the end of the"));
    }
}
