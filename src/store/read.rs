//! Reads. Each takes the index lock only to copy out positions and locations, then decodes
//! frames from the mapped segments, checking every frame's CRC on the way.

use std::sync::Arc;

use super::{Shared, Store, lifecycle};
use crate::error::{Error, Limit, Result};
use crate::log::frame::{self, Decoded, DecodedFrame, FRAME_PREFIX_BYTES};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES};
use crate::log::{Location, SegmentView};
use crate::types::{AllSlice, ContentType, Direction, Filter, Position, RecordedEvent, Revision};

impl Store {
    /// Reads up to `max_count` events of `stream` starting at revision `from` (inclusive).
    /// Backwards from [`Revision::END`] starts at the newest event.
    ///
    /// Only visible events are returned: those the stream's metadata (truncate-before, max
    /// count, max age) keeps. `StreamNotFound` when the stream has no events or is
    /// soft-deleted; `StreamDeleted` when it is tombstoned.
    pub fn read_stream(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        max_count: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let count = self.check_count(max_count)?;
        let Some(life) = self.shared.lifecycle.get(stream) else {
            return self.read_stream_stored(stream, from, direction, count);
        };
        if life.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        if life.is_deleted() {
            return Err(Error::StreamNotFound {
                stream: stream.to_string(),
            });
        }
        // The last revision as of the visible position: the writer publishes a stream's new
        // state a moment before the position that makes its new events visible.
        let visible = self.shared.visible();
        let last = self.shared.index.read().stream_revision(stream, visible)?;
        let life = lifecycle::StreamLife {
            last_revision: last,
            ..lifecycle::StreamLife::clone(&life)
        };
        let lo = life.first_visible();
        let now = lifecycle::now_us();
        match direction {
            Direction::Forwards => {
                // Expired events are the oldest: skip past them page by page.
                let mut out = Vec::new();
                let mut next = from.0.max(lo);
                while out.len() < count {
                    let want = count - out.len();
                    let page = self.read_stream_stored(stream, Revision(next), direction, want)?;
                    let full = page.len() == want;
                    let Some(last) = page.last().map(|e| e.revision.0) else {
                        break;
                    };
                    out.extend(
                        page.into_iter()
                            .filter(|e| !life.expired(e.timestamp_us, now)),
                    );
                    if !full {
                        break;
                    }
                    next = last + 1;
                }
                Ok(out)
            }
            Direction::Backwards => {
                // Everything below the first hidden event is older still, so hidden too.
                let page = self.read_stream_stored(stream, from, direction, count)?;
                Ok(page
                    .into_iter()
                    .take_while(|e| !life.hides(e.revision.0, e.timestamp_us, now))
                    .collect())
            }
        }
    }

    /// A stream read of the stored events, metadata aside.
    fn read_stream_stored(
        &self,
        stream: &str,
        from: Revision,
        direction: Direction,
        count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let visible = self.shared.visible();
        let located: Vec<(u64, Location)> = {
            let index = self.shared.index.read();
            let Some(entries) =
                index.stream_positions(stream, from.0, direction, count, visible)?
            else {
                return Err(Error::StreamNotFound {
                    stream: stream.to_string(),
                });
            };
            let positions: Vec<u64> = entries.into_iter().map(|(_, p)| p).collect();
            index.locate(&positions)?
        };
        self.shared.decode_located(&located)
    }

    /// The stream's current revision, or `None` when it does not exist or is soft-deleted.
    /// `StreamDeleted` when it is tombstoned.
    pub fn stream_revision(&self, stream: &str) -> Result<Option<Revision>> {
        if let Some(life) = self.shared.lifecycle.get(stream) {
            if life.tombstoned {
                return Err(Error::StreamDeleted {
                    stream: stream.to_string(),
                });
            }
            if life.is_deleted() {
                return Ok(None);
            }
        }
        let visible = self.shared.visible();
        Ok(self
            .shared
            .index
            .read()
            .stream_revision(stream, visible)?
            .map(Revision))
    }

    /// Reads up to `max_count` events of one type from position `from` (inclusive), through
    /// the per-type index. Events hidden by their stream's metadata are skipped.
    pub fn read_by_type(
        &self,
        event_type: &str,
        from: Position,
        direction: Direction,
        max_count: u64,
    ) -> Result<Vec<RecordedEvent>> {
        let count = self.check_count(max_count)?;
        let visible = self.shared.visible();
        let view = self.shared.lifecycle.view();
        let mut out = Vec::new();
        let mut from = from.0;
        while out.len() < count {
            let want = count - out.len();
            let located: Vec<(u64, Location)> = {
                let index = self.shared.index.read();
                let positions = index.type_positions(event_type, from, direction, want, visible)?;
                index.locate(&positions)?
            };
            let full = located.len() == want;
            let page = self.shared.decode_located(&located)?;
            let Some(last) = page.last().map(|e| e.position.0) else {
                break;
            };
            out.extend(page.into_iter().filter(|e| !view.hides_event(e)));
            if !full {
                break;
            }
            from = match direction {
                Direction::Forwards => last + 1,
                Direction::Backwards if last > 1 => last - 1,
                Direction::Backwards => break,
            };
        }
        Ok(out)
    }

    /// The event at `position`, or `None` when there is no visible event there (a position
    /// removed from the log, a hole in the index, is none).
    pub fn read_event(&self, position: Position) -> Result<Option<RecordedEvent>> {
        if position.0 == 0 || position.0 > self.shared.visible() {
            return Ok(None);
        }
        let Some(location) = self.shared.index.read().location(position.0)? else {
            return Ok(None);
        };
        let event = self.shared.decode_at(location, position.0)?;
        Ok((!self.shared.lifecycle.view().hides_event(&event)).then_some(event))
    }

    /// Reads the whole log from `from` (inclusive) in `direction`, returning up to `max_count`
    /// events that pass `filter`. At most [`crate::Config::read_scan_max`] events are looked at
    /// per call; `scanned_to` says where to resume.
    pub fn read_all(
        &self,
        from: Position,
        direction: Direction,
        max_count: u64,
        filter: &Filter,
    ) -> Result<AllSlice> {
        let count = self.check_count(max_count)?;
        let scan_max = self.shared.config.read_scan_max.max(max_count);
        match direction {
            Direction::Forwards => {
                self.shared
                    .read_all_forwards(from.0.max(1), count, scan_max, filter)
            }
            Direction::Backwards => self
                .shared
                .read_all_backwards(from.0, count, scan_max, filter),
        }
    }

    fn check_count(&self, max_count: u64) -> Result<usize> {
        let limit = self.shared.config.read_count_max;
        if max_count > limit {
            return Err(Error::LimitExceeded {
                what: Limit::ReadCount,
                limit,
                actual: max_count,
            });
        }
        Ok(usize::try_from(max_count).unwrap_or(usize::MAX))
    }
}

impl Shared {
    fn read_all_forwards(
        &self,
        start: u64,
        count: usize,
        scan_max: u64,
        filter: &Filter,
    ) -> Result<AllSlice> {
        let visible = self.visible();
        let mut events = Vec::with_capacity(count.min(1024));
        if start > visible || count == 0 {
            return Ok(AllSlice {
                events,
                scanned_to: Position(start.saturating_sub(1).min(visible)),
                end_of_log: start > visible,
            });
        }
        // The first event at or after `start`: a start removed from the log (a hole) begins at
        // the next event.
        let first = {
            let index = self.index.read();
            match index.location(start)? {
                Some(location) => Some((start, location)),
                None => index.next_event(start, visible)?,
            }
        };
        let Some((mut position, mut location)) = first else {
            // Nothing but holes up to the visible end.
            return Ok(AllSlice {
                events,
                scanned_to: Position(visible),
                end_of_log: true,
            });
        };
        let mut segment = self.segment_or_err(location.segment)?;
        let mut scanned = 0u64;
        let view = self.lifecycle.view();
        while position <= visible && events.len() < count && scanned < scan_max {
            let rest = segment
                .bytes
                .get(location.offset as usize..)
                .unwrap_or_default();
            let decoded = frame::decode_from(rest).map_err(|e| {
                Error::corruption(&segment.path, u64::from(location.offset), e.to_string())
            })?;
            let f = match decoded {
                Decoded::Frame(f) => f,
                Decoded::End | Decoded::Incomplete => {
                    // The rest of this segment is padding: go on in the next one.
                    location = Location {
                        segment: location.segment + 1,
                        offset: SEGMENT_HEADER_BYTES as u32,
                    };
                    segment = self.segment_or_err(location.segment)?;
                    // A segment flagged as starting after a gap starts at its own first
                    // position (an empty last one says where the next append goes).
                    let header = segment::decode_header(&segment.bytes)
                        .map_err(|reason| Error::corruption(&segment.path, 0, reason))?;
                    if header.gap_before() {
                        position = position.max(header.first_position);
                    }
                    continue;
                }
            };
            if f.header.position != position {
                if !(f.header.gap_before() && f.header.position > position) {
                    return Err(Error::corruption(
                        &segment.path,
                        u64::from(location.offset),
                        format!("expected position {position}, found {}", f.header.position),
                    ));
                }
                // The positions before this frame were removed from the log.
                position = f.header.position;
                if position > visible {
                    break;
                }
            }
            let len = f.frame_len as u32;
            let keep = (filter.is_empty() && !view.is_active()) || {
                let payload_start = location.offset as usize + FRAME_PREFIX_BYTES;
                let payload = segment
                    .bytes
                    .get(payload_start..location.offset as usize + f.frame_len)
                    .unwrap_or_default();
                let body = f.body(payload);
                filter.matches(body.stream, body.event_type)
                    && !view.hides(body.stream, f.header.revision, f.header.timestamp_us)
            };
            if keep {
                events.push(build_event(&segment, location.offset, &f));
            }
            location.offset += len;
            position += 1;
            scanned += 1;
        }
        Ok(AllSlice {
            events,
            scanned_to: Position((position - 1).min(visible)),
            end_of_log: position > visible,
        })
    }

    fn read_all_backwards(
        &self,
        from: u64,
        count: usize,
        scan_max: u64,
        filter: &Filter,
    ) -> Result<AllSlice> {
        let visible = self.visible();
        let top = from.min(visible);
        let mut events = Vec::with_capacity(count.min(1024));
        let mut position = top;
        let mut scanned = 0u64;
        let view = self.lifecycle.view();
        const CHUNK: u64 = 1024;
        while position >= 1 && events.len() < count && scanned < scan_max {
            let (low, located) = {
                let index = self.index.read();
                // Step over holes (positions removed from the log) to the next event down.
                let Some((newest, _)) = index.prev_event(position)? else {
                    position = 0;
                    break;
                };
                position = newest;
                let low = position.saturating_sub(CHUNK - 1).max(1);
                let positions: Vec<u64> = (low..=position).rev().collect();
                (low, index.locate(&positions)?)
            };
            let mut stopped = false;
            for (p, location) in located {
                let event = self.decode_at(location, p)?;
                position = p - 1;
                scanned += 1;
                if (filter.is_empty() || filter.matches(event.stream(), event.event_type()))
                    && !view.hides_event(&event)
                {
                    events.push(event);
                    if events.len() == count {
                        stopped = true;
                        break;
                    }
                }
                if scanned >= scan_max {
                    stopped = true;
                    break;
                }
            }
            if !stopped {
                // The whole chunk was looked at: what is left of it is holes.
                position = low - 1;
            }
        }
        Ok(AllSlice {
            events,
            scanned_to: Position(position + 1),
            end_of_log: position == 0,
        })
    }

    pub(super) fn decode_located(&self, located: &[(u64, Location)]) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::with_capacity(located.len());
        let mut current: Option<Arc<SegmentView>> = None;
        let mut current_index = u32::MAX;
        for &(position, location) in located {
            if current_index != location.segment || current.is_none() {
                current = Some(self.segment_or_err(location.segment)?);
                current_index = location.segment;
            }
            if let Some(segment) = &current {
                out.push(decode_in(segment, location.offset, position)?);
            }
        }
        Ok(out)
    }

    pub(crate) fn decode_at(&self, location: Location, position: u64) -> Result<RecordedEvent> {
        let segment = self.segment_or_err(location.segment)?;
        decode_in(&segment, location.offset, position)
    }

    fn segment_or_err(&self, index: u32) -> Result<Arc<SegmentView>> {
        self.segment(index).ok_or_else(|| {
            Error::corruption(&self.dir, 0, format!("segment number {index} is not open"))
        })
    }
}

/// Decodes the frame at `offset`, which must hold `position`.
fn decode_in(segment: &Arc<SegmentView>, offset: u32, position: u64) -> Result<RecordedEvent> {
    let rest = segment.bytes.get(offset as usize..).unwrap_or_default();
    match frame::decode_from(rest) {
        Ok(Decoded::Frame(f)) if f.header.position == position => {
            Ok(build_event(segment, offset, &f))
        }
        Ok(Decoded::Frame(f)) => Err(Error::corruption(
            &segment.path,
            u64::from(offset),
            format!("expected position {position}, found {}", f.header.position),
        )),
        Ok(_) => Err(Error::corruption(
            &segment.path,
            u64::from(offset),
            format!("expected the frame of position {position}, found none"),
        )),
        Err(e) => Err(Error::corruption(
            &segment.path,
            u64::from(offset),
            e.to_string(),
        )),
    }
}

pub(super) fn build_event(segment: &SegmentView, offset: u32, f: &DecodedFrame) -> RecordedEvent {
    let start = offset as usize + FRAME_PREFIX_BYTES;
    let end = offset as usize + f.frame_len;
    let h = &f.header;
    RecordedEvent {
        payload: segment.bytes.slice(start..end),
        // Part ends are below the payload length, which is at most `PAYLOAD_BYTES_MAX` (2^30).
        stream_end: f.stream.end as u32,
        type_end: f.event_type.end as u32,
        data_end: f.data.end as u32,
        // At most `PRINCIPAL_BYTES_MAX`, checked by the decoder's u16 field.
        principal_len: f.principal.len() as u16,
        position: Position(h.position),
        revision: Revision(h.revision),
        id: uuid::Uuid::from_bytes(h.id),
        content_type: ContentType::from_byte(h.content_type).unwrap_or(ContentType::Binary),
        timestamp_us: h.timestamp_us,
    }
}
