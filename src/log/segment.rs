//! Segment files: a 32-byte header, then frames, then zeros up to the segment size.
//!
//! | offset | size | field          | meaning                                       |
//! |-------:|-----:|----------------|-----------------------------------------------|
//! |      0 |    8 | magic          | `b"STSTSEG\0"`                                |
//! |      8 |    4 | format_version | [`FORMAT_VERSION`]                            |
//! |     12 |    4 | header_bytes   | 32                                            |
//! |     16 |    8 | first_position | position of the segment's first event         |
//! |     24 |    4 | flags          | bit 0 [`SEGMENT_GAP_BEFORE`]; other bits 0     |
//! |     28 |    4 | header_crc     | crc32 of bytes 0..28                          |
//!
//! A segment file is named `{first_position:020}.seg`, so lexical order is log order.
//!
//! A segment starts at the position after the previous segment's last event (1 for the first
//! segment) unless its header carries [`SEGMENT_GAP_BEFORE`]: then it may start above it, the
//! positions in between having been removed by a rewrite or never copied. A frame inside a
//! segment may likewise jump ahead only when it carries [`frame::GAP_BEFORE`].
//! Scanning a segment checks every frame and groups frames into commits; the recovery rules
//! (what is a torn tail, what is damage) are in `docs/FORMAT.md` and implemented by
//! [`scan_segment`].

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::path::Path;

use super::frame::{self, Decoded, DecodedFrame, FRAME_BYTES_MIN, FRAME_PREFIX_BYTES, FrameError};
use crate::error::{Error, Result};

pub const SEGMENT_MAGIC: [u8; 8] = *b"STSTSEG\0";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
const OFF_VERSION: usize = 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 4;
pub(crate) const OFF_FIRST_POSITION: usize = OFF_HEADER_BYTES + 4;
const OFF_FLAGS: usize = OFF_FIRST_POSITION + 8;
const OFF_CRC: usize = OFF_FLAGS + 4;
const _: () = assert!(OFF_CRC + 4 == SEGMENT_HEADER_BYTES);

/// Segment header flag: this segment may start above the position after the previous
/// segment's last event (above 1 for the first segment).
pub const SEGMENT_GAP_BEFORE: u32 = 1;
/// Every segment header flag this build knows; any other bit set is damage.
pub const SEGMENT_KNOWN_FLAGS: u32 = SEGMENT_GAP_BEFORE;

/// The decoded fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_position: u64,
    /// Bits of [`SEGMENT_KNOWN_FLAGS`].
    pub flags: u32,
}

impl SegmentHeader {
    /// Whether the segment may start after a gap ([`SEGMENT_GAP_BEFORE`]).
    pub fn gap_before(&self) -> bool {
        self.flags & SEGMENT_GAP_BEFORE != 0
    }
}

/// File name of the segment whose first event has `first_position`.
pub fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// The first position encoded in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a segment starting at `first_position`; `flags` is 0 or
/// [`SEGMENT_GAP_BEFORE`] (unknown bits are dropped).
pub fn encode_header(first_position: u64, flags: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    let mut put = |off: usize, bytes: &[u8]| {
        if let Some(slot) = h.get_mut(off..off + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
    };
    put(0, &SEGMENT_MAGIC);
    put(OFF_VERSION, &FORMAT_VERSION.to_le_bytes());
    #[expect(clippy::cast_possible_truncation, reason = "32 fits in u32")]
    put(
        OFF_HEADER_BYTES,
        &(SEGMENT_HEADER_BYTES as u32).to_le_bytes(),
    );
    put(OFF_FIRST_POSITION, &first_position.to_le_bytes());
    put(OFF_FLAGS, &(flags & SEGMENT_KNOWN_FLAGS).to_le_bytes());
    let crc = crc32fast::hash(h.get(..OFF_CRC).unwrap_or_default());
    if let Some(slot) = h.get_mut(OFF_CRC..) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    h
}

/// Decodes a segment header. The error says what is wrong.
pub fn decode_header(bytes: &[u8]) -> std::result::Result<SegmentHeader, String> {
    let h = bytes.get(..SEGMENT_HEADER_BYTES).ok_or_else(|| {
        format!(
            "file is {} bytes, shorter than the segment header",
            bytes.len()
        )
    })?;
    let u32_at = |off: usize| {
        h.get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or_default()
    };
    if h.get(..8) != Some(&SEGMENT_MAGIC[..]) {
        return Err("bad segment magic".into());
    }
    let stored = u32_at(OFF_CRC);
    let computed = crc32fast::hash(h.get(..OFF_CRC).unwrap_or_default());
    if stored != computed {
        return Err(format!(
            "segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let version = u32_at(OFF_VERSION);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported segment format version {version} (this build reads {FORMAT_VERSION})"
        ));
    }
    let header_bytes = u32_at(OFF_HEADER_BYTES);
    if header_bytes as usize != SEGMENT_HEADER_BYTES {
        return Err(format!("unexpected segment header size {header_bytes}"));
    }
    let flags = u32_at(OFF_FLAGS);
    if flags & !SEGMENT_KNOWN_FLAGS != 0 {
        return Err(format!("unknown segment header flags {flags:#010x}"));
    }
    let first = h
        .get(OFF_FIRST_POSITION..OFF_FIRST_POSITION + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or_default();
    if first == 0 {
        return Err("segment first position is 0".into());
    }
    Ok(SegmentHeader {
        first_position: first,
        flags,
    })
}

/// Whether a segment is the newest one (which may end in a torn write) or a sealed one (which
/// must be whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentRole {
    Sealed,
    Last,
}

/// The outcome of scanning one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub first_position: u64,
    /// The position the next event after this segment's last whole commit gets.
    pub next_position: u64,
    /// File offset just past the last whole commit: where the next frame is written.
    pub data_end: u64,
    /// Set when the last segment ends in a torn write: the bytes `data_end..garbage_end` are not
    /// whole commits and must be zeroed before writing resumes.
    pub torn: Option<TornTail>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Where the first unreadable byte was found.
    pub found_at: u64,
    /// One past the last non-zero byte of the segment.
    pub garbage_end: u64,
    pub reason: &'static str,
}

/// A whole frame found while scanning, with its file offset and payload.
pub struct ScannedFrame<'a> {
    pub offset: u64,
    pub frame: &'a DecodedFrame,
    pub payload: &'a [u8],
}

/// Scans a segment's bytes, calling `on_event` for every event of every whole commit, in order.
///
/// `expected_first`, when given, is the position the segment must start at (the previous
/// segment's next position, or 1 for the first segment); a header flagged
/// [`SEGMENT_GAP_BEFORE`] may start above it. Within the segment each frame must carry the
/// position after the previous one, or, flagged [`frame::GAP_BEFORE`], any higher one.
///
/// `zeros_from`, when given, answers whether every byte from an offset to the end of the
/// segment is zero (the store reads the file for this rather than the mapping, so that the
/// unwritten part of the last segment never becomes resident); by default the bytes are looked
/// at. `start`, when given, is where scanning begins: the byte offset of a commit's first frame
/// and its position (the frames before it are trusted, not checked).
///
/// Damage gives `Err(Corruption)` naming `path` and the byte offset; a torn tail of the last
/// segment is reported in [`SegmentScan::torn`] and its events are not passed to `on_event`.
/// The position the log continues at after a torn commit is the one that commit was expected
/// to start at.
pub fn scan_segment(
    path: &Path,
    bytes: &[u8],
    role: SegmentRole,
    expected_first: Option<u64>,
    start: Option<(u64, u64)>,
    zeros_from: Option<&dyn Fn(usize) -> bool>,
    on_event: &mut dyn FnMut(ScannedFrame<'_>) -> Result<()>,
) -> Result<SegmentScan> {
    let header = decode_header(bytes).map_err(|r| Error::corruption(path, 0, r))?;
    let first_position = header.first_position;
    if let Some(expected) = expected_first
        && !(first_position == expected || (header.gap_before() && first_position > expected))
    {
        return Err(Error::corruption(
            path,
            OFF_FIRST_POSITION as u64,
            format!(
                "segment starts at position {first_position}, but the log continues at {expected}"
            ),
        ));
    }
    let (mut offset, mut next_position) = match start {
        Some((offset, position)) => (
            usize::try_from(offset)
                .ok()
                .filter(|&o| o >= SEGMENT_HEADER_BYTES && o <= bytes.len())
                .ok_or_else(|| {
                    Error::corruption(path, offset, "resume offset outside the segment")
                })?,
            position,
        ),
        None => (SEGMENT_HEADER_BYTES, first_position),
    };
    let mut commit_start = offset;
    // The position the commit starting at `commit_start` was expected to have: what the log
    // continues at if that commit is cut off.
    let mut commit_start_position = next_position;
    let mut pending: Vec<(usize, DecodedFrame)> = Vec::new();
    let anomaly: &'static str = loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        let decoded = match frame::decode_from(rest) {
            Ok(d) => d,
            Err(FrameError::BadLength(_)) => break "frame length out of range",
            Err(FrameError::Checksum { .. }) => break "frame checksum mismatch",
            Err(FrameError::Inconsistent(what)) => {
                return Err(Error::corruption(path, offset as u64, what));
            }
        };
        let f = match decoded {
            Decoded::Frame(f) => f,
            Decoded::End if pending.is_empty() => {
                let clean = match zeros_from {
                    Some(check) => check(offset),
                    None => rest.iter().all(|&b| b == 0),
                };
                if clean {
                    return Ok(SegmentScan {
                        first_position,
                        next_position,
                        data_end: offset as u64,
                        torn: None,
                    });
                }
                break "zero length followed by non-zero bytes";
            }
            Decoded::End => break "commit ends before all its events",
            Decoded::Incomplete => break "frame runs past the end of the segment",
        };
        let h = &f.header;
        if !(h.position == next_position || (h.gap_before() && h.position > next_position)) {
            let or_above = if h.gap_before() { " or above" } else { "" };
            return Err(Error::corruption(
                path,
                offset as u64,
                format!(
                    "frame has position {}, expected {next_position}{or_above}",
                    h.position
                ),
            ));
        }
        let expected_index = pending.len() as u64;
        let count_matches = pending
            .first()
            .is_none_or(|(_, first)| first.header.commit_count == h.commit_count);
        if u64::from(h.commit_index) != expected_index || !count_matches {
            return Err(Error::corruption(
                path,
                offset as u64,
                format!(
                    "frame is event {} of a {}-event commit, expected event {expected_index}",
                    h.commit_index, h.commit_count
                ),
            ));
        }
        let frame_len = f.frame_len;
        let commit_count = h.commit_count;
        let position = h.position;
        pending.push((offset, f));
        next_position = position
            .checked_add(1)
            .ok_or_else(|| Error::corruption(path, offset as u64, "position overflows 64 bits"))?;
        offset += frame_len;
        if pending.len() as u64 == u64::from(commit_count) {
            for (off, f) in pending.drain(..) {
                let payload = bytes
                    .get(off + FRAME_PREFIX_BYTES..off + f.frame_len)
                    .unwrap_or_default();
                on_event(ScannedFrame {
                    offset: off as u64,
                    frame: &f,
                    payload,
                })?;
            }
            commit_start = offset;
            commit_start_position = next_position;
        }
    };

    // Something other than a clean end lies at `offset`; the commit in progress starts at
    // `commit_start`, where the log continued at `lost_position`.
    let lost_position = commit_start_position;
    if role == SegmentRole::Sealed {
        return Err(Error::corruption(path, offset as u64, anomaly));
    }
    if let Some(at) = durable_frame_after(bytes, commit_start, lost_position) {
        return Err(Error::corruption(
            path,
            offset as u64,
            format!(
                "{anomaly}, but a later frame at byte offset {at} shows the log was durable past \
                 position {lost_position}"
            ),
        ));
    }
    let garbage_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(commit_start, |i| i + 1)
        .max(commit_start);
    Ok(SegmentScan {
        first_position,
        next_position: lost_position,
        data_end: commit_start as u64,
        torn: Some(TornTail {
            found_at: offset as u64,
            garbage_end: garbage_end as u64,
            reason: anomaly,
        }),
    })
}

/// Looks past a damaged spot for a whole frame written after `lost_position` had been made
/// durable. Such a frame proves the damaged bytes were once acknowledged, so they are damage,
/// not a torn write: a torn write can only hold bytes of the last, unsynced group commit, whose
/// frames all carry a `durable_through` below the commit that was being written.
fn durable_frame_after(bytes: &[u8], from: usize, lost_position: u64) -> Option<usize> {
    let end = bytes.len().checked_sub(FRAME_BYTES_MIN)?;
    let mut at = from + 1;
    while at <= end {
        let rest = bytes.get(at..).unwrap_or_default();
        if let Some((len, position)) = frame::peek_len_and_position(rest)
            && len as usize >= frame::EVENT_HEADER_BYTES
            && position >= lost_position
            && FRAME_PREFIX_BYTES + len as usize <= rest.len()
            && let Ok(Decoded::Frame(f)) = frame::decode_from(rest)
            && f.header.durable_through >= lost_position
        {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod test;
