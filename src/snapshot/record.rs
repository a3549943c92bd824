//! The snapshot log's file header and record codec.
//!
//! ```text
//! file    = header (16 bytes) | record*
//! record  = len:u32 | crc:u32 | payload[len]
//! crc     = crc32(len bytes ++ payload)            (crc32fast, IEEE)
//! payload = record header (40 bytes) | stream | schema | data
//! ```
//!
//! | offset | size | field        | meaning                                                  |
//! |-------:|-----:|--------------|----------------------------------------------------------|
//! |      0 |    1 | kind         | 1 save, 2 delete stream                                  |
//! |      1 |    1 | flags        | reserved, 0                                              |
//! |      2 |    2 | stream_len   | bytes of the stream name (>= 1)                          |
//! |      4 |    2 | schema_len   | bytes of the schema tag (save: 1..=256; delete: 0)       |
//! |      6 |    2 | reserved     | 0                                                        |
//! |      8 |    8 | revision     | the stream revision the state is at (delete: 0)          |
//! |     16 |    8 | prune_below  | save: the stream keeps no snapshot below this revision   |
//! |        |      |              | after this save (its lowest kept one); delete: 0         |
//! |     24 |    8 | timestamp_us | when the record was written, µs since the Unix epoch     |
//! |     32 |    4 | data_len     | bytes of the snapshot state (delete: 0)                  |
//! |     36 |    4 | reserved     | 0                                                        |
//!
//! All integers are little-endian. `len` equals 40 + the three lengths exactly. The file is
//! not pre-allocated: it ends right after its last record. `prune_below` makes pruning part of
//! the log: replaying it gives the same snapshots whatever `snapshot_keep` is at the next open
//! (a larger one does not bring pruned snapshots back).
//!
//! The decoder is total: any byte string gives a record, `End`, `Incomplete`, or a
//! [`RecordError`], never a panic.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::log::frame::{checksum, seal};
use std::ops::Range;

/// Magic bytes at the start of the snapshot log.
pub const FILE_MAGIC: [u8; 8] = *b"STSTSNP\0";
/// Version of the snapshot log format this build reads and writes.
pub const FILE_FORMAT_VERSION: u32 = 1;
/// Bytes of the file header: magic, version, crc32 of the first 12 bytes.
pub const FILE_HEADER_BYTES: usize = 16;
/// Bytes of `len` + `crc` before a record's payload.
pub const RECORD_PREFIX_BYTES: usize = 8;
/// Bytes of the fixed header at the start of a record's payload.
pub const RECORD_HEADER_BYTES: usize = 40;
/// Longest schema tag.
pub const SCHEMA_BYTES_MAX: usize = 256;
/// Largest snapshot state the format holds (`Config::snapshot_bytes_max` is at most this).
pub const DATA_BYTES_MAX: usize = 1 << 30;
/// Largest payload a decoder accepts; larger lengths are damage.
pub const PAYLOAD_BYTES_MAX: usize =
    RECORD_HEADER_BYTES + u16::MAX as usize + SCHEMA_BYTES_MAX + DATA_BYTES_MAX;
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize - RECORD_PREFIX_BYTES);
// The CRC helpers are shared with event frames: the same `len | crc | payload` prefix.
const _: () = assert!(RECORD_PREFIX_BYTES == crate::log::frame::FRAME_PREFIX_BYTES);

pub const KIND_SAVE: u8 = 1;
pub const KIND_DELETE_STREAM: u8 = 2;

const OFF_KIND: usize = 0;
const OFF_FLAGS: usize = 1;
const OFF_STREAM_LEN: usize = 2;
const OFF_SCHEMA_LEN: usize = 4;
const OFF_RESERVED_A: usize = 6;
const OFF_REVISION: usize = 8;
const OFF_PRUNE_BELOW: usize = 16;
const OFF_TIMESTAMP: usize = 24;
const OFF_DATA_LEN: usize = 32;
const OFF_RESERVED_B: usize = 36;
const _: () = assert!(OFF_RESERVED_B + 4 == RECORD_HEADER_BYTES);

/// A decoded record. Names borrow from the decoded bytes; `data` is a range of the record's
/// bytes (prefix included), so a caller holding them in a `Bytes` can slice without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Save {
        stream: &'a str,
        revision: u64,
        prune_below: u64,
        schema: &'a str,
        timestamp_us: u64,
        data: Range<usize>,
    },
    DeleteStream {
        stream: &'a str,
        timestamp_us: u64,
    },
}

#[cfg(test)]
impl Record<'_> {
    pub fn stream(&self) -> &str {
        match self {
            Record::Save { stream, .. } | Record::DeleteStream { stream, .. } => stream,
        }
    }
}

/// What lies at an offset of the snapshot log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record of `len` bytes (prefix included).
    Record { record: Record<'a>, len: usize },
    /// No bytes left: the clean end of the file.
    End,
    /// The bytes end before the record does.
    Incomplete,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record length {0} is out of range")]
    BadLength(u64),
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Bytes of a record with these part lengths, prefix included.
pub fn record_len(stream_len: usize, schema_len: usize, data_len: usize) -> usize {
    RECORD_PREFIX_BYTES + RECORD_HEADER_BYTES + stream_len + schema_len + data_len
}

/// The file header.
pub fn encode_file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    let mut put = |off: usize, bytes: &[u8]| {
        if let Some(slot) = h.get_mut(off..off + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
    };
    put(0, &FILE_MAGIC);
    put(8, &FILE_FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(h.get(..12).unwrap_or_default());
    if let Some(slot) = h.get_mut(12..16) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    h
}

/// Checks the file header at the start of `bytes`. The error says what is wrong.
pub fn check_file_header(bytes: &[u8]) -> Result<(), String> {
    let h = bytes.get(..FILE_HEADER_BYTES).ok_or_else(|| {
        format!(
            "file is {} bytes, shorter than the snapshot log header",
            bytes.len()
        )
    })?;
    if h.get(..8) != Some(&FILE_MAGIC[..]) {
        return Err("bad snapshot log magic".into());
    }
    let stored = read_u32(h, 12).unwrap_or_default();
    let computed = crc32fast::hash(h.get(..12).unwrap_or_default());
    if stored != computed {
        return Err(format!(
            "snapshot log header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let version = read_u32(h, 8).unwrap_or_default();
    if version != FILE_FORMAT_VERSION {
        return Err(format!(
            "unsupported snapshot log format version {version} (this build reads {FILE_FORMAT_VERSION})"
        ));
    }
    Ok(())
}

/// Appends a save record to `buf`. The caller has checked the limits: the stream name fits in
/// `u16`, the schema in [`SCHEMA_BYTES_MAX`], the data in [`DATA_BYTES_MAX`].
pub fn encode_save(
    buf: &mut Vec<u8>,
    stream: &str,
    revision: u64,
    prune_below: u64,
    schema: &str,
    timestamp_us: u64,
    data: &[u8],
) {
    let numbers = [revision, prune_below, timestamp_us];
    encode(buf, KIND_SAVE, stream, numbers, schema, data);
}

/// Appends a delete-stream record to `buf`.
pub fn encode_delete(buf: &mut Vec<u8>, stream: &str, timestamp_us: u64) {
    encode(
        buf,
        KIND_DELETE_STREAM,
        stream,
        [0, 0, timestamp_us],
        "",
        &[],
    );
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the caller has checked every length against the format's limits"
)]
fn encode(
    buf: &mut Vec<u8>,
    kind: u8,
    stream: &str,
    [revision, prune_below, timestamp_us]: [u64; 3],
    schema: &str,
    data: &[u8],
) {
    let total = record_len(stream.len(), schema.len(), data.len());
    debug_assert!(total - RECORD_PREFIX_BYTES <= PAYLOAD_BYTES_MAX);
    debug_assert!(stream.len() <= u16::MAX as usize && schema.len() <= SCHEMA_BYTES_MAX);
    let start = buf.len();
    buf.reserve(total);
    buf.extend_from_slice(&((total - RECORD_PREFIX_BYTES) as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // crc, filled below
    buf.push(kind);
    buf.push(0);
    buf.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    buf.extend_from_slice(&(schema.len() as u16).to_le_bytes());
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&revision.to_le_bytes());
    buf.extend_from_slice(&prune_below.to_le_bytes());
    buf.extend_from_slice(&timestamp_us.to_le_bytes());
    buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(stream.as_bytes());
    buf.extend_from_slice(schema.as_bytes());
    buf.extend_from_slice(data);
    let record = buf.get_mut(start..).unwrap_or_default();
    debug_assert_eq!(record.len(), total);
    seal(record);
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, RecordError> {
    if bytes.is_empty() {
        return Ok(Decoded::End);
    }
    let Some(len) = read_u32(bytes, 0) else {
        return Ok(Decoded::Incomplete);
    };
    let len = len as usize;
    if !(RECORD_HEADER_BYTES..=PAYLOAD_BYTES_MAX).contains(&len) {
        return Err(RecordError::BadLength(len as u64));
    }
    let total = RECORD_PREFIX_BYTES + len;
    let Some(record) = bytes.get(..total) else {
        return Ok(Decoded::Incomplete);
    };
    let stored = read_u32(record, 4).unwrap_or_default();
    let computed = checksum(record);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let record = parse(record)?;
    Ok(Decoded::Record { record, len: total })
}

/// Parses a record whose length and checksum have been checked.
fn parse(r: &[u8]) -> Result<Record<'_>, RecordError> {
    let missing = RecordError::Inconsistent("header truncated");
    let p = r.get(RECORD_PREFIX_BYTES..).ok_or(missing.clone())?;
    let kind = *p.get(OFF_KIND).ok_or(missing.clone())?;
    let u16_at = |off| read_u16(p, off).ok_or(missing.clone());
    let u32_at = |off| read_u32(p, off).ok_or(missing.clone());
    let u64_at = |off| read_u64(p, off).ok_or(missing.clone());
    if p.get(OFF_FLAGS) != Some(&0) || u16_at(OFF_RESERVED_A)? != 0 || u32_at(OFF_RESERVED_B)? != 0
    {
        return Err(RecordError::Inconsistent("reserved bytes are not zero"));
    }
    let stream_len = u16_at(OFF_STREAM_LEN)? as usize;
    let schema_len = u16_at(OFF_SCHEMA_LEN)? as usize;
    let data_len = u32_at(OFF_DATA_LEN)? as usize;
    let revision = u64_at(OFF_REVISION)?;
    let prune_below = u64_at(OFF_PRUNE_BELOW)?;
    let timestamp_us = u64_at(OFF_TIMESTAMP)?;
    let stream = RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + stream_len;
    let schema = stream.end..stream.end + schema_len;
    let data = schema.end..schema.end + data_len;
    if data.end != p.len() {
        return Err(RecordError::Inconsistent(
            "part lengths do not add up to the record length",
        ));
    }
    if stream_len == 0 {
        return Err(RecordError::Inconsistent("empty stream name"));
    }
    let text = |range: &Range<usize>| {
        std::str::from_utf8(p.get(range.clone()).unwrap_or_default())
            .map_err(|_| RecordError::Inconsistent("name is not UTF-8"))
    };
    let stream_name = text(&stream)?;
    match kind {
        KIND_SAVE => {
            if schema_len == 0 || schema_len > SCHEMA_BYTES_MAX {
                return Err(RecordError::Inconsistent("schema length out of range"));
            }
            if prune_below > revision {
                return Err(RecordError::Inconsistent(
                    "save prunes its own revision (prune_below above revision)",
                ));
            }
            Ok(Record::Save {
                stream: stream_name,
                revision,
                prune_below,
                schema: text(&schema)?,
                timestamp_us,
                data: data.start + RECORD_PREFIX_BYTES..data.end + RECORD_PREFIX_BYTES,
            })
        }
        KIND_DELETE_STREAM => {
            if schema_len != 0 || data_len != 0 || revision != 0 || prune_below != 0 {
                return Err(RecordError::Inconsistent(
                    "delete record with a schema, data or revision",
                ));
            }
            Ok(Record::DeleteStream {
                stream: stream_name,
                timestamp_us,
            })
        }
        _ => Err(RecordError::Inconsistent("unknown record kind")),
    }
}

/// Cheap checks on what might be a record at the start of `bytes`: a length in range that
/// fits, a known kind, zero flags. Used to pick candidates when looking for whole records past
/// a damaged spot, before the full decode (with its checksum) of each.
pub fn plausible_start(bytes: &[u8]) -> bool {
    let Some(len) = read_u32(bytes, 0) else {
        return false;
    };
    let len = len as usize;
    (RECORD_HEADER_BYTES..=PAYLOAD_BYTES_MAX).contains(&len)
        && RECORD_PREFIX_BYTES + len <= bytes.len()
        && matches!(
            bytes.get(RECORD_PREFIX_BYTES + OFF_KIND),
            Some(&KIND_SAVE | &KIND_DELETE_STREAM)
        )
        && bytes.get(RECORD_PREFIX_BYTES + OFF_FLAGS) == Some(&0)
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
