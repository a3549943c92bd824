//! The indexes: position -> location, stream -> revisions -> positions, event type -> positions,
//! event id -> position. Derived from the log and rebuilt from it at open.
//!
//! Architecture invariant: the index may hold entries past the visible position (the writer
//! inserts a commit before its fdatasync returns); every read method takes the visible position
//! and never returns anything past it.
//!
//! This is the in-memory form. Its methods are the interface the store uses, so persisted,
//! memory-mapped index checkpoints can replace the storage without touching the callers.

use std::collections::hash_map::Entry;

/// Keys come from clients (stream names, types, ids), so the hasher is seeded per process;
/// foldhash is several times faster than the standard SipHash on these short keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
use std::sync::Arc;

use crate::log::Location;
use crate::types::Direction;

#[derive(Default)]
pub struct Index {
    /// The location of position `p` is at `locations[p - 1]`: positions have no gaps.
    locations: Vec<Location>,
    streams: HashMap<Arc<str>, StreamEntry>,
    types: HashMap<Arc<str>, Vec<u64>>,
    /// Event id -> position of the first event with that id.
    ids: HashMap<u128, u64>,
    /// Event id -> positions of later events with the same id. Ids are unique within a stream,
    /// so this holds only ids reused across streams: rare, and kept apart so that the common
    /// case costs one map entry per event.
    id_repeats: HashMap<u128, Vec<u64>>,
}

#[derive(Default)]
struct StreamEntry {
    /// `positions[r]` is the position of revision `r`; increasing.
    positions: Vec<u64>,
}

/// One event's entry, as passed to [`Index::insert`].
pub struct IndexEntry<'a> {
    pub position: u64,
    pub location: Location,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub revision: u64,
    pub id: u128,
}

impl Index {
    /// Adds one event. Positions must come in order with no gap and revisions must continue
    /// their stream; otherwise nothing is changed and the reason is returned.
    pub fn insert(&mut self, e: IndexEntry<'_>) -> Result<(), String> {
        let expected_position = self.locations.len() as u64 + 1;
        if e.position != expected_position {
            return Err(format!(
                "position {} does not follow {}",
                e.position,
                expected_position - 1
            ));
        }
        let revision_follows = |next_revision: u64| {
            if e.revision == next_revision {
                return Ok(());
            }
            Err(format!(
                "stream '{}' revision {} does not follow {}",
                e.stream,
                e.revision,
                i128::from(next_revision) - 1
            ))
        };
        // One lookup of the stream: this runs for every event appended and every event
        // replayed at open.
        match self.streams.get_mut(e.stream) {
            Some(s) => {
                revision_follows(s.positions.len() as u64)?;
                s.positions.push(e.position);
            }
            None => {
                revision_follows(0)?;
                self.streams.insert(
                    Arc::from(e.stream),
                    StreamEntry {
                        positions: vec![e.position],
                    },
                );
            }
        }
        self.locations.push(e.location);
        match self.types.get_mut(e.event_type) {
            Some(t) => t.push(e.position),
            None => {
                self.types.insert(Arc::from(e.event_type), vec![e.position]);
            }
        }
        match self.ids.entry(e.id) {
            Entry::Vacant(v) => {
                v.insert(e.position);
            }
            Entry::Occupied(_) => {
                self.id_repeats.entry(e.id).or_default().push(e.position);
            }
        }
        Ok(())
    }

    pub fn location(&self, position: u64) -> Option<Location> {
        let i = usize::try_from(position.checked_sub(1)?).ok()?;
        self.locations.get(i).copied()
    }

    /// The stream's current revision counting only positions up to `visible`, or `None` when
    /// it has no such event.
    pub fn stream_revision(&self, stream: &str, visible: u64) -> Option<u64> {
        let s = self.streams.get(stream)?;
        let n = visible_len(&s.positions, visible);
        (n as u64).checked_sub(1)
    }

    /// Up to `count` (revision, position) pairs of `stream` starting at revision `from`, in
    /// `direction`. `None` when the stream has no visible event.
    pub fn stream_positions(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        count: usize,
        visible: u64,
    ) -> Option<Vec<(u64, u64)>> {
        let s = self.streams.get(stream)?;
        let n = visible_len(&s.positions, visible);
        if n == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(count.min(n));
        match direction {
            Direction::Forwards => {
                let start = usize::try_from(from).unwrap_or(usize::MAX).min(n);
                let end = start.saturating_add(count).min(n);
                for (r, p) in s
                    .positions
                    .get(start..end)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    out.push(((start + r) as u64, *p));
                }
            }
            Direction::Backwards => {
                let top = usize::try_from(from).unwrap_or(usize::MAX).min(n - 1);
                for r in (0..=top).rev().take(count) {
                    if let Some(p) = s.positions.get(r) {
                        out.push((r as u64, *p));
                    }
                }
            }
        }
        Some(out)
    }

    /// The revision of `position` within `stream`, if the event at that position is in it.
    pub fn revision_in_stream(&self, stream: &str, position: u64) -> Option<u64> {
        let s = self.streams.get(stream)?;
        s.positions.binary_search(&position).ok().map(|r| r as u64)
    }

    /// The position of revision `revision` of `stream` (visible or not).
    pub fn position_of_revision(&self, stream: &str, revision: u64) -> Option<u64> {
        let s = self.streams.get(stream)?;
        s.positions.get(usize::try_from(revision).ok()?).copied()
    }

    /// Up to `count` positions of events of `event_type`, from position `from` (inclusive) in
    /// `direction`, none past `visible`.
    pub fn type_positions(
        &self,
        event_type: &str,
        from: u64,
        direction: Direction,
        count: usize,
        visible: u64,
    ) -> Vec<u64> {
        let Some(t) = self.types.get(event_type) else {
            return Vec::new();
        };
        let n = visible_len(t, visible);
        let t = t.get(..n).unwrap_or_default();
        match direction {
            Direction::Forwards => {
                let start = t.partition_point(|&p| p < from);
                t.get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take(count)
                    .copied()
                    .collect()
            }
            Direction::Backwards => {
                let end = t.partition_point(|&p| p <= from);
                t.get(..end)
                    .unwrap_or_default()
                    .iter()
                    .rev()
                    .take(count)
                    .copied()
                    .collect()
            }
        }
    }

    /// Position of the newest event with this id, visible or not.
    #[cfg(test)]
    pub fn position_of_id(&self, id: u128) -> Option<u64> {
        self.id_repeats
            .get(&id)
            .and_then(|r| r.last().copied())
            .or_else(|| self.ids.get(&id).copied())
    }

    /// The revision of the event with this id in `stream`, visible or not.
    pub fn revision_of_id(&self, stream: &str, id: u128) -> Option<u64> {
        let first = self.ids.get(&id)?;
        let repeats = self
            .id_repeats
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        std::iter::once(first)
            .chain(repeats)
            .find_map(|&p| self.revision_in_stream(stream, p))
    }

    /// Number of streams and of event types.
    pub fn counts(&self) -> (usize, usize) {
        (self.streams.len(), self.types.len())
    }
}

/// How many of the increasing `positions` are at or below `visible`.
fn visible_len(positions: &[u64], visible: u64) -> usize {
    match positions.last() {
        Some(&last) if last <= visible => positions.len(),
        _ => positions.partition_point(|&p| p <= visible),
    }
}

#[cfg(test)]
mod test;
