//! The log as stored, for the offline tools: every event in position order with its frame
//! header, whatever the stream metadata hides (deleted, truncated and expired events are on
//! disk until `compact` removes them).

use super::Store;
use super::read::build_event;
use crate::error::{Error, Result};
use crate::log::frame::{self, Decoded, EventHeader};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES};
use crate::types::RecordedEvent;

/// Where a walk over the stored log is.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkProgress {
    /// Bytes of segment data walked past so far (headers and frames).
    pub bytes_done: u64,
    /// Bytes of all segments' written data, an upper bound of `bytes_done`.
    pub bytes_total: u64,
}

/// What the callback of [`Store::walk_stored`] wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Continue,
    Stop,
}

impl Store {
    /// The number of segment files and their total length.
    pub(crate) fn segment_files(&self) -> (u64, u64) {
        let segments = self.shared.segments.read();
        let bytes = segments.iter().map(|s| s.bytes.len() as u64).sum();
        (segments.len() as u64, bytes)
    }

    /// Calls `f` with every stored event whose position is in `from..=until`, in log order,
    /// with its frame header (commit grouping, `durable_through`), including events that
    /// stream metadata, deletes and tombstones hide. Every frame's checksum is checked.
    pub fn walk_stored(
        &self,
        from: u64,
        until: u64,
        f: &mut dyn FnMut(&RecordedEvent, &EventHeader, WalkProgress) -> Result<Walk>,
    ) -> Result<()> {
        let visible = self.shared.visible();
        let until = until.min(visible);
        let segments = self.shared.segments.read().clone();
        let mut firsts = Vec::with_capacity(segments.len());
        for s in &segments {
            let first = segment::decode_header(&s.bytes)
                .map_err(|reason| Error::corruption(&s.path, 0, reason))?;
            firsts.push(first.first_position);
        }
        // The last segment starting at or before `from` holds it (or the first one after it).
        let start = firsts.iter().rposition(|&p| p <= from).unwrap_or(0);
        let bytes_total: u64 = segments.iter().map(|s| s.bytes.len() as u64).sum();
        let mut progress = WalkProgress {
            bytes_done: segments
                .iter()
                .take(start)
                .map(|s| s.bytes.len() as u64)
                .sum(),
            bytes_total,
        };
        for s in segments.iter().skip(start) {
            let mut offset = SEGMENT_HEADER_BYTES;
            loop {
                let rest = s.bytes.get(offset..).unwrap_or_default();
                let f_ = match frame::decode_from(rest) {
                    Ok(Decoded::Frame(f_)) => f_,
                    Ok(Decoded::End | Decoded::Incomplete) => break,
                    Err(e) => {
                        return Err(Error::corruption(&s.path, offset as u64, e.to_string()));
                    }
                };
                let position = f_.header.position;
                if position > until {
                    return Ok(());
                }
                let len = f_.frame_len;
                if position >= from {
                    #[expect(clippy::cast_possible_truncation, reason = "segments are < 4 GiB")]
                    let event = build_event(s, offset as u32, &f_);
                    let at = WalkProgress {
                        bytes_done: progress.bytes_done + offset as u64,
                        ..progress
                    };
                    if f(&event, &f_.header, at)? == Walk::Stop {
                        return Ok(());
                    }
                }
                offset += len;
            }
            progress.bytes_done += s.bytes.len() as u64;
        }
        Ok(())
    }
}
