//! The record frame: one event, length-prefixed and CRC32-checked.
//!
//! ```text
//! frame   = len:u32 | crc:u32 | payload[len]
//! crc     = crc32(len bytes ++ payload)            (crc32fast, IEEE)
//! payload = event header (72 bytes) | stream | event_type | data | metadata | principal
//! ```
//!
//! | offset | size | field            | meaning                                                  |
//! |-------:|-----:|------------------|----------------------------------------------------------|
//! |      0 |    8 | position         | global position of this event                            |
//! |      8 |    8 | revision         | revision within its stream                               |
//! |     16 |    8 | durable_through  | highest position known durable when this was written     |
//! |     24 |    8 | timestamp_us     | commit time, microseconds since the Unix epoch           |
//! |     32 |   16 | id               | event id (UUID bytes, big-endian as in RFC 9562)         |
//! |     48 |    4 | commit_index     | index of this event within its commit                    |
//! |     52 |    4 | commit_count     | number of events in its commit (>= 1)                    |
//! |     56 |    1 | content_type     | 0 binary, 1 json                                         |
//! |     57 |    1 | flags            | bit 0 [`GAP_BEFORE`]; the other bits are 0               |
//! |     58 |    2 | stream_len       | bytes of the stream name                                 |
//! |     60 |    2 | type_len         | bytes of the event type                                  |
//! |     62 |    2 | principal_len    | bytes of the principal that appended it (0: none)        |
//! |     64 |    4 | data_len         | bytes of data                                            |
//! |     68 |    4 | metadata_len     | bytes of metadata                                        |
//!
//! All integers are little-endian. `len` equals 72 + the five lengths exactly. A `len` of zero
//! marks the end of the written part of a segment (segments are zero-filled ahead of time).
//!
//! [`GAP_BEFORE`] marks a frame whose position may be above the one after the previous frame
//! of the log: the positions in between were removed by a rewrite (compaction) or never copied
//! (a replay from a position). Frames the store's writer appends never carry it.
//!
//! The decoder is total: any byte string gives a frame, `End`, `Incomplete`, or a
//! [`FrameError`], never a panic.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::ops::Range;

/// Bytes of `len` + `crc` before the payload.
pub const FRAME_PREFIX_BYTES: usize = 8;
/// Bytes of the fixed event header at the start of a payload.
pub const EVENT_HEADER_BYTES: usize = 72;
/// Smallest whole frame.
pub const FRAME_BYTES_MIN: usize = FRAME_PREFIX_BYTES + EVENT_HEADER_BYTES;
/// Largest payload a decoder accepts; larger lengths are damage.
pub const PAYLOAD_BYTES_MAX: usize = 1 << 30;
/// Longest principal a frame may carry, in bytes.
pub const PRINCIPAL_BYTES_MAX: usize = 1024;

const OFF_POSITION: usize = 0;
const OFF_REVISION: usize = OFF_POSITION + 8;
const OFF_DURABLE_THROUGH: usize = OFF_REVISION + 8;
const OFF_TIMESTAMP: usize = OFF_DURABLE_THROUGH + 8;
pub(crate) const OFF_ID: usize = OFF_TIMESTAMP + 8;
const OFF_COMMIT_INDEX: usize = OFF_ID + 16;
const OFF_COMMIT_COUNT: usize = OFF_COMMIT_INDEX + 4;
const OFF_CONTENT_TYPE: usize = OFF_COMMIT_COUNT + 4;
const OFF_FLAGS: usize = OFF_CONTENT_TYPE + 1;
const OFF_STREAM_LEN: usize = OFF_FLAGS + 1;
const OFF_TYPE_LEN: usize = OFF_STREAM_LEN + 2;
const OFF_PRINCIPAL_LEN: usize = OFF_TYPE_LEN + 2;
const OFF_DATA_LEN: usize = OFF_PRINCIPAL_LEN + 2;
const OFF_METADATA_LEN: usize = OFF_DATA_LEN + 4;
const _: () = assert!(OFF_METADATA_LEN + 4 == EVENT_HEADER_BYTES);
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize);

/// Frame flag: the positions between the previous frame of the log and this one were removed
/// (or never copied), so this frame's position may be above the previous one + 1.
pub const GAP_BEFORE: u8 = 1;
/// Every flag this build knows; any other bit set is an inconsistent frame.
pub const KNOWN_FLAGS: u8 = GAP_BEFORE;

/// The fixed fields of an event record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    pub position: u64,
    pub revision: u64,
    pub durable_through: u64,
    pub timestamp_us: u64,
    pub id: [u8; 16],
    pub commit_index: u32,
    pub commit_count: u32,
    pub content_type: u8,
    /// Bits of [`KNOWN_FLAGS`]: [`GAP_BEFORE`] or 0.
    pub flags: u8,
}

impl EventHeader {
    /// Whether the frame says the positions before it were removed ([`GAP_BEFORE`]).
    pub fn gap_before(&self) -> bool {
        self.flags & GAP_BEFORE != 0
    }
}

/// The variable parts of an event record, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct EventBody<'a> {
    pub stream: &'a str,
    pub event_type: &'a str,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
    /// Who appended the event (a user name or token subject), empty when the server had no
    /// authentication. At most [`PRINCIPAL_BYTES_MAX`] bytes.
    pub principal: &'a str,
}

/// A decoded frame: the header, and where each part lies within the frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    pub header: EventHeader,
    /// Bytes of the whole frame, prefix included.
    pub frame_len: usize,
    /// Offsets within `bytes[FRAME_PREFIX_BYTES..frame_len]` (the payload).
    pub stream: Range<usize>,
    pub event_type: Range<usize>,
    pub data: Range<usize>,
    pub metadata: Range<usize>,
    pub principal: Range<usize>,
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Frame(DecodedFrame),
    /// A zero length: the end of the written part.
    End,
    /// The bytes end before the frame does (a torn tail, or damage if nothing may be missing).
    Incomplete,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is out of range")]
    BadLength(u64),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("frame is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Bytes of the frame that [`encode_into`] writes for these parts.
pub fn serialized_len(body: &EventBody<'_>) -> usize {
    FRAME_BYTES_MIN
        + body.stream.len()
        + body.event_type.len()
        + body.data.len()
        + body.metadata.len()
        + body.principal.len()
}

/// Appends one frame to `buf`. The caller has checked the limits: names fit in `u16`, data and
/// metadata in `u32`, the payload in [`PAYLOAD_BYTES_MAX`], and only [`KNOWN_FLAGS`] are set.
pub fn encode_into(buf: &mut Vec<u8>, header: &EventHeader, body: &EventBody<'_>) {
    let total = serialized_len(body);
    let payload_len = total - FRAME_PREFIX_BYTES;
    debug_assert!(payload_len <= PAYLOAD_BYTES_MAX);
    debug_assert!(header.commit_index < header.commit_count);
    debug_assert_eq!(header.flags & !KNOWN_FLAGS, 0);
    let start = buf.len();
    buf.reserve(total);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "checked against PAYLOAD_BYTES_MAX"
    )]
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // crc, filled below
    buf.extend_from_slice(&header.position.to_le_bytes());
    buf.extend_from_slice(&header.revision.to_le_bytes());
    buf.extend_from_slice(&header.durable_through.to_le_bytes());
    buf.extend_from_slice(&header.timestamp_us.to_le_bytes());
    buf.extend_from_slice(&header.id);
    buf.extend_from_slice(&header.commit_index.to_le_bytes());
    buf.extend_from_slice(&header.commit_count.to_le_bytes());
    buf.push(header.content_type);
    buf.push(header.flags);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "name limits are at most u16::MAX"
    )]
    {
        buf.extend_from_slice(&(body.stream.len() as u16).to_le_bytes());
        buf.extend_from_slice(&(body.event_type.len() as u16).to_le_bytes());
        buf.extend_from_slice(&(body.principal.len() as u16).to_le_bytes());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "event_bytes_max fits in u32"
    )]
    {
        buf.extend_from_slice(&(body.data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(body.metadata.len() as u32).to_le_bytes());
    }
    buf.extend_from_slice(body.stream.as_bytes());
    buf.extend_from_slice(body.event_type.as_bytes());
    buf.extend_from_slice(body.data);
    buf.extend_from_slice(body.metadata);
    buf.extend_from_slice(body.principal.as_bytes());
    let frame = buf.get_mut(start..).unwrap_or_default();
    debug_assert_eq!(frame.len(), total);
    seal(frame);
}

/// Writes the CRC of a `len | crc | payload` record into its CRC field.
pub(crate) fn seal(record: &mut [u8]) {
    let crc = checksum(record);
    if let Some(slot) = record.get_mut(4..8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// CRC of a `len | crc | payload` record (an event frame, a snapshot record): over the length
/// field and the payload, skipping the CRC field itself.
pub(crate) fn checksum(frame: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(frame.get(0..4).unwrap_or_default());
    h.update(frame.get(FRAME_PREFIX_BYTES..).unwrap_or_default());
    h.finalize()
}

/// Decodes the frame at the start of `bytes`.
pub fn decode_from(bytes: &[u8]) -> Result<Decoded, FrameError> {
    let Some(len) = read_u32(bytes, 0) else {
        // Fewer than four bytes left: all zero is a clean end, anything else a torn length.
        return Ok(if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Incomplete
        });
    };
    if len == 0 {
        return Ok(Decoded::End);
    }
    let len = len as usize;
    if !(EVENT_HEADER_BYTES..=PAYLOAD_BYTES_MAX).contains(&len) {
        return Err(FrameError::BadLength(len as u64));
    }
    let frame_len = FRAME_PREFIX_BYTES + len;
    let Some(frame) = bytes.get(..frame_len) else {
        return Ok(Decoded::Incomplete);
    };
    let stored = read_u32(frame, 4).unwrap_or_default();
    let computed = checksum(frame);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    let payload = frame.get(FRAME_PREFIX_BYTES..).unwrap_or_default();
    parse_payload(payload, frame_len)
}

fn parse_payload(p: &[u8], frame_len: usize) -> Result<Decoded, FrameError> {
    let missing = FrameError::Inconsistent("header truncated");
    let u64_at = |off| read_u64(p, off).ok_or(missing.clone());
    let u32_at = |off| read_u32(p, off).ok_or(missing.clone());
    let u16_at = |off| read_u16(p, off).ok_or(missing.clone());
    let mut id = [0u8; 16];
    id.copy_from_slice(p.get(OFF_ID..OFF_ID + 16).ok_or(missing.clone())?);
    let header = EventHeader {
        position: u64_at(OFF_POSITION)?,
        revision: u64_at(OFF_REVISION)?,
        durable_through: u64_at(OFF_DURABLE_THROUGH)?,
        timestamp_us: u64_at(OFF_TIMESTAMP)?,
        id,
        commit_index: u32_at(OFF_COMMIT_INDEX)?,
        commit_count: u32_at(OFF_COMMIT_COUNT)?,
        content_type: *p.get(OFF_CONTENT_TYPE).ok_or(missing.clone())?,
        flags: *p.get(OFF_FLAGS).ok_or(missing.clone())?,
    };
    if header.position == 0 {
        return Err(FrameError::Inconsistent("position 0"));
    }
    if header.commit_count == 0 || header.commit_index >= header.commit_count {
        return Err(FrameError::Inconsistent("commit index out of range"));
    }
    if header.content_type > 1 {
        return Err(FrameError::Inconsistent("unknown content type"));
    }
    if header.flags & !KNOWN_FLAGS != 0 {
        return Err(FrameError::Inconsistent("unknown frame flags"));
    }
    let stream_len = u16_at(OFF_STREAM_LEN)? as usize;
    let type_len = u16_at(OFF_TYPE_LEN)? as usize;
    let data_len = u32_at(OFF_DATA_LEN)? as usize;
    let metadata_len = u32_at(OFF_METADATA_LEN)? as usize;
    let stream = EVENT_HEADER_BYTES..EVENT_HEADER_BYTES + stream_len;
    let event_type = stream.end..stream.end + type_len;
    let data = event_type.end..event_type.end + data_len;
    let metadata = data.end..data.end + metadata_len;
    let principal = metadata.end..metadata.end + u16_at(OFF_PRINCIPAL_LEN)? as usize;
    if principal.end != p.len() {
        return Err(FrameError::Inconsistent(
            "part lengths do not add up to the frame length",
        ));
    }
    for range in [&stream, &event_type, &principal] {
        let name = p.get(range.clone()).unwrap_or_default();
        if std::str::from_utf8(name).is_err() {
            return Err(FrameError::Inconsistent("name is not UTF-8"));
        }
    }
    Ok(Decoded::Frame(DecodedFrame {
        header,
        frame_len,
        stream,
        event_type,
        data,
        metadata,
        principal,
    }))
}

impl DecodedFrame {
    /// The frame's parts, borrowed from the payload it was decoded from.
    pub fn body<'a>(&self, payload: &'a [u8]) -> EventBody<'a> {
        let s = |r: &Range<usize>| -> &'a [u8] { payload.get(r.clone()).unwrap_or_default() };
        EventBody {
            stream: std::str::from_utf8(s(&self.stream)).unwrap_or_default(),
            event_type: std::str::from_utf8(s(&self.event_type)).unwrap_or_default(),
            data: s(&self.data),
            metadata: s(&self.metadata),
            principal: std::str::from_utf8(s(&self.principal)).unwrap_or_default(),
        }
    }
}

/// Reads the position field of a frame that starts at `bytes`, without checking anything.
/// Used to pick candidates when looking for whole frames past a damaged spot.
pub(crate) fn peek_len_and_position(bytes: &[u8]) -> Option<(u32, u64)> {
    Some((
        read_u32(bytes, 0)?,
        read_u64(bytes, FRAME_PREFIX_BYTES + OFF_POSITION)?,
    ))
}

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod test;
