//! Aggregate snapshots through the store: save, load, read a stream from its latest snapshot.
//!
//! The snapshot log itself is `crate::snapshot`; here are the checks against the stream (it
//! must exist, and a snapshot may not be ahead of it) and the combined read.

use bytes::Bytes;

use super::Store;
use super::validate::check_name;
use crate::error::{Error, Limit, Result};
use crate::snapshot::Snapshot;
use crate::snapshot::record::SCHEMA_BYTES_MAX;
use crate::types::{Direction, RecordedEvent, Revision};

impl Store {
    /// Saves `data`, the state of `stream` after its event at `revision`, tagged with `schema`
    /// (the client's name for the encoding of `data`, such as `order.v2`). Returns once the
    /// snapshot is durable (synced, unless the store runs with `FsyncPolicy::Never`).
    ///
    /// A snapshot at a revision that already has one replaces it. Each stream keeps the
    /// [`crate::Config::snapshot_keep`] snapshots with the highest revisions; older ones are
    /// pruned (so saving below all of them, when the stream already has that many, keeps
    /// nothing).
    ///
    /// Errors: `InvalidArgument` for a bad schema tag (empty, control characters) or a
    /// revision past the stream's current one; `LimitExceeded` for a schema tag over 256 bytes
    /// or data over [`crate::Config::snapshot_bytes_max`]; `StreamNotFound`; `Poisoned` after
    /// an earlier write to the snapshot log failed.
    pub fn save_snapshot(
        &self,
        stream: &str,
        revision: Revision,
        schema: &str,
        data: Bytes,
    ) -> Result<()> {
        let config = &self.shared.config;
        check_name(Limit::StreamNameBytes, stream, config.stream_name_bytes_max)?;
        check_name(Limit::SnapshotSchemaBytes, schema, SCHEMA_BYTES_MAX as u64)?;
        if data.len() as u64 > config.snapshot_bytes_max {
            return Err(Error::LimitExceeded {
                what: Limit::SnapshotBytes,
                limit: config.snapshot_bytes_max,
                actual: data.len() as u64,
            });
        }
        let current = self.current_revision(stream)?;
        if revision > current {
            return Err(Error::InvalidArgument(format!(
                "cannot save a snapshot of stream '{stream}' at revision {revision}: the \
                 stream's current revision is {current}"
            )));
        }
        self.shared
            .snapshots
            .save(stream, revision.0, schema, &data)
    }

    /// The newest snapshot of `stream` at or below `at_or_below` ([`Revision::END`] for the
    /// newest), or `None` when there is none. Snapshots past the stream's current revision are
    /// never returned (they can exist only after a power loss under a weaker fsync policy took
    /// events the snapshot was built from). `StreamNotFound` when the stream does not exist.
    pub fn load_snapshot(&self, stream: &str, at_or_below: Revision) -> Result<Option<Snapshot>> {
        let current = self.current_revision(stream)?;
        self.shared
            .snapshots
            .load(stream, at_or_below.min(current).0)
    }

    /// Reads `stream` from its latest snapshot: the newest snapshot (at or below the current
    /// revision), then up to `max_count` events after its revision, forwards. Without a
    /// snapshot, the events from revision 0. The events are exactly those a whole read returns
    /// after the snapshot's revision. `StreamNotFound` when the stream does not exist;
    /// `LimitExceeded` when `max_count` is over [`crate::Config::read_count_max`].
    pub fn read_stream_from_snapshot(
        &self,
        stream: &str,
        max_count: u64,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        let current = self.current_revision(stream)?;
        let snapshot = self.shared.snapshots.load(stream, current.0)?;
        let from = snapshot.as_ref().map_or(0, |s| s.revision.0 + 1);
        // Past the current revision (a snapshot at the newest event) the read is empty.
        let events = self.read_stream(stream, Revision(from), Direction::Forwards, max_count)?;
        Ok((snapshot, events))
    }

    /// Durably removes every snapshot of `stream`; returns how many there were. The stream need
    /// not exist, and its events are not touched.
    ///
    /// This is the hook for removing snapshots with their stream: the stream delete and
    /// tombstone of the stream lifecycle (a later issue) call it, so that a deleted stream
    /// written again never loads a snapshot of its earlier life.
    pub fn delete_snapshots(&self, stream: &str) -> Result<usize> {
        self.shared.snapshots.delete_stream(stream)
    }

    /// The stream's current (visible) revision, or `StreamNotFound`.
    fn current_revision(&self, stream: &str) -> Result<Revision> {
        self.stream_revision(stream)?
            .ok_or_else(|| Error::StreamNotFound {
                stream: stream.to_string(),
            })
    }
}
