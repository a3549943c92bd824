//! Stream lifecycle: metadata (max count, max age, truncate-before, the application's own
//! JSON), soft delete and tombstone.
//!
//! Everything here is written as ordinary events in the log, so it is durable, ordered with the
//! events it governs, replayed by `replay`, and its history is kept:
//! - the metadata of stream `S` is the newest event (type `$metadata`, a JSON object) of the
//!   metadata stream `$$S`; the earlier events of `$$S` are its history;
//! - a soft delete writes `{"$tb": 2^63-1}` to `$$S` (and any metadata with that `$tb` is a
//!   soft delete): no event of `S` is visible and `S` reads as not found. The next append to `S` writes, in the same commit and before its events,
//!   `$$S` ← the previous metadata with `$tb` = the old last revision + 1, so `S` comes back
//!   with only the new events and its revisions continue;
//! - a tombstone writes a `$streamDeleted` event into `S` itself (the stream's last event, for
//!   good): every later append, delete or read of `S` is `StreamDeleted` (new metadata is still
//!   recorded in `$$S`, its own stream, and changes nothing).
//!
//! Reads apply the rules at once; `compact` removes the hidden events from disk later. The
//! store holds the current state of every stream that has metadata or a tombstone in memory
//! ([`Lifecycle`]), rebuilt at open from the type index (the `$metadata` and `$streamDeleted`
//! events), and updated by the writer after each commit is durable and before it is visible.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde_json::{Map, Value};

use super::validate::check_principal;
use super::{Shared, Store, writer};
use crate::error::{Error, Limit, Result};
use crate::types::{
    AppendResult, Direction, ExpectedRevision, Position, RecordedEvent, Revision, StreamAppend,
};

/// The event type of a metadata record in a `$$` stream.
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The event type of a tombstone, the last event of a stream deleted for good.
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";
/// The truncate-before revision that marks a soft-deleted stream (2^63 - 1, as KurrentDB).
pub const DELETED_TRUNCATE_BEFORE: u64 = i64::MAX as u64;
/// The prefix of metadata streams: the metadata of `S` lives in `$$S`.
pub const METADATA_STREAM_PREFIX: &str = "$$";

/// The event metadata of a `$metadata` record that brings a soft-deleted stream back: its
/// truncate-before becomes the stream's floor.
pub const REVIVAL_MARK: &[u8] = br#"{"$revival":true}"#;

const KEY_MAX_COUNT: &str = "$maxCount";
const KEY_MAX_AGE: &str = "$maxAge";
const KEY_TRUNCATE_BEFORE: &str = "$tb";

/// The name of the stream that holds the metadata of `stream`.
pub fn metadata_stream_of(stream: &str) -> String {
    format!("{METADATA_STREAM_PREFIX}{stream}")
}

/// The rules a stream's reads follow, and the application's own metadata.
///
/// Stored as one JSON object: `$maxCount`, `$maxAge` (whole seconds) and `$tb` (truncate
/// before), then the application's keys (`custom`). The same layout as KurrentDB, so its
/// clients' metadata maps onto this one to one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMetadata {
    /// Only the newest `max_count` events are visible (at least 1).
    pub max_count: Option<u64>,
    /// Events older than this (by commit time) are not visible. Whole seconds, at least 1.
    pub max_age: Option<Duration>,
    /// Events below this revision are not visible.
    pub truncate_before: Option<Revision>,
    /// The application's own keys. A key may not be one of the reserved `$maxCount`,
    /// `$maxAge` and `$tb`.
    pub custom: Map<String, Value>,
}

impl StreamMetadata {
    /// True for the metadata a soft delete writes.
    pub fn is_deleted(&self) -> bool {
        self.truncate_before == Some(Revision(DELETED_TRUNCATE_BEFORE))
    }

    /// The stored form: one JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        let mut object = Map::new();
        if let Some(n) = self.max_count {
            object.insert(KEY_MAX_COUNT.into(), n.into());
        }
        if let Some(age) = self.max_age {
            object.insert(KEY_MAX_AGE.into(), age.as_secs().into());
        }
        if let Some(tb) = self.truncate_before {
            object.insert(KEY_TRUNCATE_BEFORE.into(), tb.0.into());
        }
        for (k, v) in &self.custom {
            object.insert(k.clone(), v.clone());
        }
        serde_json::to_vec(&Value::Object(object)).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Parses the stored form. `InvalidArgument` when it is not a JSON object or a reserved key
    /// does not hold a non-negative integer.
    pub fn from_json(bytes: &[u8]) -> Result<StreamMetadata> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            Error::InvalidArgument(format!("stream metadata is not valid JSON: {e}"))
        })?;
        let Value::Object(object) = value else {
            return Err(Error::InvalidArgument(
                "stream metadata must be a JSON object".into(),
            ));
        };
        let mut metadata = StreamMetadata::default();
        for (key, value) in object {
            let number = || {
                value.as_u64().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "stream metadata key '{key}' must be a non-negative integer, not {value}"
                    ))
                })
            };
            match key.as_str() {
                KEY_MAX_COUNT => metadata.max_count = Some(number()?),
                KEY_MAX_AGE => metadata.max_age = Some(Duration::from_secs(number()?)),
                KEY_TRUNCATE_BEFORE => metadata.truncate_before = Some(Revision(number()?)),
                _ => {
                    metadata.custom.insert(key, value);
                }
            }
        }
        Ok(metadata)
    }

    /// Checks metadata given by a client.
    pub(crate) fn check(&self) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidArgument(why));
        if self.max_count == Some(0) {
            return invalid("max count must be at least 1".into());
        }
        if let Some(age) = self.max_age
            && (age.subsec_nanos() != 0 || age.as_secs() == 0 || age.as_secs() > i64::MAX as u64)
        {
            return invalid(format!(
                "max age must be a whole number of seconds, at least 1, not {age:?}"
            ));
        }
        // 2^63-1 itself is a soft delete (see `Store::set_stream_metadata`); KurrentDB's
        // `$tb` is a signed 64-bit number, so nothing above it means anything.
        if let Some(tb) = self.truncate_before
            && tb.0 > DELETED_TRUNCATE_BEFORE
        {
            return invalid(format!(
                "truncate-before {tb} is over 2^63-1 (which soft-deletes the stream)"
            ));
        }
        if let Some(key) = self
            .custom
            .keys()
            .find(|k| [KEY_MAX_COUNT, KEY_MAX_AGE, KEY_TRUNCATE_BEFORE].contains(&k.as_str()))
        {
            return invalid(format!(
                "custom metadata may not use the reserved key '{key}'"
            ));
        }
        Ok(())
    }
}

/// One version of a stream's metadata, from its history.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMetadataRecord {
    /// The revision of the record in the metadata stream (0 for the first version).
    pub revision: Revision,
    pub position: Position,
    /// Commit time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub metadata: StreamMetadata,
}

/// A change of lifecycle, carried to the writer, which checks and writes it in commit order.
#[derive(Debug, Clone)]
pub(crate) enum LifecycleOp {
    SetMetadata {
        stream: String,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    },
    Delete {
        stream: String,
        expected: ExpectedRevision,
    },
    Tombstone {
        stream: String,
        expected: ExpectedRevision,
    },
}

/// The lifecycle state of one stream that has metadata or a tombstone.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamLife {
    /// The revision of the newest record of `$$S`.
    pub meta_revision: Option<u64>,
    pub metadata: StreamMetadata,
    pub tombstoned: bool,
    /// The stream's own last revision (for max count), kept up to date by the writer.
    pub last_revision: Option<u64>,
    /// Revisions below this stay hidden whatever later metadata says: the events before the
    /// stream's last soft delete. (A client that sets metadata without `$tb` must not bring
    /// deleted events back.) Recorded by the revival records, which carry [`REVIVAL_MARK`].
    pub floor: u64,
}

impl StreamLife {
    pub fn is_deleted(&self) -> bool {
        !self.tombstoned && self.metadata.is_deleted()
    }

    /// The lowest visible revision.
    pub fn first_visible(&self) -> u64 {
        if self.tombstoned {
            // Only the tombstone itself, the last event, stays in view (in whole-log reads).
            return self.last_revision.unwrap_or(0);
        }
        let mut lo = self
            .metadata
            .truncate_before
            .map_or(0, |r| r.0)
            .max(self.floor);
        if let (Some(n), Some(last)) = (self.metadata.max_count, self.last_revision) {
            lo = lo.max((last + 1).saturating_sub(n));
        }
        lo
    }

    /// True when an event of this age is past the stream's max age.
    pub fn expired(&self, timestamp_us: u64, now_us: u64) -> bool {
        match self.metadata.max_age {
            Some(age) if !self.tombstoned => {
                timestamp_us.saturating_add(age.as_micros().min(u128::from(u64::MAX)) as u64)
                    < now_us
            }
            _ => false,
        }
    }

    pub fn hides(&self, revision: u64, timestamp_us: u64, now_us: u64) -> bool {
        revision < self.first_visible() || self.expired(timestamp_us, now_us)
    }
}

/// The lifecycle state of every stream that has any, as readers see it.
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// foldhash: whole-log reads look up every event's stream here while any stream has
    /// metadata, and SipHash is slow on short keys.
    streams: RwLock<foldhash::HashMap<String, Arc<StreamLife>>>,
    /// Streams in the map: reads skip every lookup while it is 0 (no stream has metadata).
    len: AtomicUsize,
}

impl Lifecycle {
    pub fn get(&self, stream: &str) -> Option<Arc<StreamLife>> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.streams.read().get(stream).cloned()
    }

    /// A copy of the whole state, for the offline tools.
    pub fn to_map(&self) -> HashMap<String, StreamLife> {
        self.streams
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), StreamLife::clone(v)))
            .collect()
    }

    pub fn publish(&self, changed: impl IntoIterator<Item = (String, StreamLife)>) {
        let mut streams = self.streams.write();
        for (stream, life) in changed {
            streams.insert(stream, Arc::new(life));
        }
        self.len.store(streams.len(), Ordering::Release);
    }

    /// What one read call checks its events against: the state now, and the time now.
    pub fn view(&self) -> Visibility<'_> {
        Visibility {
            lifecycle: self,
            active: self.len.load(Ordering::Acquire) > 0,
            now_us: now_us(),
        }
    }
}

pub(crate) struct Visibility<'a> {
    lifecycle: &'a Lifecycle,
    active: bool,
    now_us: u64,
}

impl Visibility<'_> {
    /// False when no stream has metadata or a tombstone: nothing is hidden.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// True when the event is hidden by its stream's metadata, delete or tombstone.
    pub fn hides(&self, stream: &str, revision: u64, timestamp_us: u64) -> bool {
        self.active
            && self
                .lifecycle
                .streams
                .read()
                .get(stream)
                .is_some_and(|l| l.hides(revision, timestamp_us, self.now_us))
    }

    pub fn hides_event(&self, e: &RecordedEvent) -> bool {
        self.hides(e.stream(), e.revision.0, e.timestamp_us)
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Rebuilds the lifecycle state from the log through the type index: the newest `$metadata`
/// record of each `$$` stream, every tombstone, and the last revision of each stream found.
pub(crate) fn load(shared: &Shared) -> Result<HashMap<String, StreamLife>> {
    let mut map: HashMap<String, StreamLife> = HashMap::new();
    for_each_of_type(shared, METADATA_EVENT_TYPE, &mut |e| {
        let Some(target) = e.stream().strip_prefix(METADATA_STREAM_PREFIX) else {
            return;
        };
        let metadata = StreamMetadata::from_json(e.data()).unwrap_or_else(|err| {
            tracing::warn!(stream = e.stream(), position = e.position.0, error = %err,
                "a stream metadata record does not parse; it counts as empty metadata");
            StreamMetadata::default()
        });
        let life = map.entry(target.to_string()).or_default();
        life.meta_revision = Some(e.revision.0);
        if e.metadata() == REVIVAL_MARK {
            life.floor = life.floor.max(metadata.truncate_before.map_or(0, |r| r.0));
        }
        life.metadata = metadata;
    })?;
    for_each_of_type(shared, TOMBSTONE_EVENT_TYPE, &mut |e| {
        map.entry(e.stream().to_string()).or_default().tombstoned = true;
    })?;
    let visible = shared.visible();
    let index = shared.index.read();
    for (stream, life) in &mut map {
        life.last_revision = index.stream_revision(stream, visible)?;
    }
    Ok(map)
}

fn for_each_of_type(
    shared: &Shared,
    event_type: &str,
    f: &mut dyn FnMut(&RecordedEvent),
) -> Result<()> {
    const PAGE: usize = 4096;
    let visible = shared.visible();
    let mut from = 1;
    loop {
        let located = {
            let index = shared.index.read();
            let positions =
                index.type_positions(event_type, from, Direction::Forwards, PAGE, visible)?;
            index.locate(&positions)?
        };
        let events = shared.decode_located(&located)?;
        for e in &events {
            f(e);
        }
        match events.last() {
            Some(last) if events.len() == PAGE => from = last.position.0 + 1,
            _ => return Ok(()),
        }
    }
}

impl Store {
    /// Sets the metadata of `stream`, replacing the previous version (which stays in the
    /// history). `expected` is checked against the metadata's own revision (the number of
    /// versions before this one, minus one): `NoStream` for the first. Reads honour the new
    /// rules as soon as this returns. The stream need not have events yet.
    ///
    /// Setting metadata on a soft-deleted stream brings it back with only the events appended
    /// after the delete (its truncate-before is raised to the old last revision + 1).
    ///
    /// Metadata with truncate-before 2^63-1 (`$tb` = 9223372036854775807, what a delete writes)
    /// is a soft delete, as in KurrentDB: the stream reads as not found, its snapshots are
    /// removed, and the next append brings it back as after [`Store::delete_stream`]. Unlike
    /// that call it is checked against the metadata's revision, works on a stream with no
    /// events, and keeps the other keys given with it.
    ///
    /// On a tombstoned stream the new version is recorded (the metadata stream is a stream of
    /// its own, with its own revisions) and changes nothing: the stream stays deleted, and
    /// [`Store::stream_metadata`] still answers `StreamDeleted`.
    ///
    /// Errors: `InvalidArgument` for a `$$` stream name or bad metadata;
    /// `WrongExpectedRevision` naming the metadata stream.
    pub fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult> {
        self.set_stream_metadata_by(stream, expected, metadata, "")
    }

    /// [`Store::set_stream_metadata`], recorded as made by `principal` (see
    /// [`crate::RecordedEvent::principal`]).
    pub fn set_stream_metadata_by(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
        principal: &str,
    ) -> Result<AppendResult> {
        self.check_lifecycle_name(stream)?;
        check_principal(principal)?;
        metadata.check()?;
        let bytes = metadata.to_json().len() as u64;
        let limit = self.shared.config.event_bytes_max;
        if bytes > limit {
            return Err(Error::LimitExceeded {
                what: Limit::MetadataBytes,
                limit,
                actual: bytes,
            });
        }
        let deletes = metadata.is_deleted();
        let result = self.submit_lifecycle(
            LifecycleOp::SetMetadata {
                stream: stream.to_string(),
                expected,
                metadata,
            },
            principal,
            bytes,
        )?;
        if deletes {
            // A soft delete by metadata removes the snapshots as `delete_stream` does.
            self.delete_snapshots(stream)?;
        }
        Ok(result)
    }

    /// The current metadata of `stream` and its revision, or `None` when none was ever set.
    /// A soft-deleted stream has the metadata of its delete (`is_deleted()`). `StreamDeleted`
    /// for a tombstoned stream.
    pub fn stream_metadata(&self, stream: &str) -> Result<Option<(Revision, StreamMetadata)>> {
        let Some(life) = self.shared.lifecycle.get(stream) else {
            return Ok(None);
        };
        if life.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        Ok(life
            .meta_revision
            .map(|r| (Revision(r), life.metadata.clone())))
    }

    /// Every version of `stream`'s metadata, oldest first (including those written by deletes
    /// and by the appends that brought a deleted stream back). Empty when none was ever set.
    pub fn stream_metadata_history(&self, stream: &str) -> Result<Vec<StreamMetadataRecord>> {
        let meta_stream = metadata_stream_of(stream);
        let mut out = Vec::new();
        let page = self.shared.config.read_count_max.clamp(1, 4096);
        let mut from = 0;
        loop {
            let events =
                match self.read_stream(&meta_stream, Revision(from), Direction::Forwards, page) {
                    Ok(events) => events,
                    Err(Error::StreamNotFound { .. }) => return Ok(out),
                    Err(e) => return Err(e),
                };
            for e in &events {
                out.push(StreamMetadataRecord {
                    revision: e.revision,
                    position: e.position,
                    timestamp_us: e.timestamp_us,
                    metadata: StreamMetadata::from_json(e.data())?,
                });
            }
            match events.last() {
                Some(last) if events.len() as u64 == page => from = last.revision.0 + 1,
                _ => return Ok(out),
            }
        }
    }

    /// At most `count` versions of `stream`'s metadata from metadata revision `from`, oldest
    /// first. Empty when none was ever set (or none is at or after `from`).
    pub fn stream_metadata_history_page(
        &self,
        stream: &str,
        from: Revision,
        count: u64,
    ) -> Result<Vec<StreamMetadataRecord>> {
        let meta_stream = metadata_stream_of(stream);
        let events = match self.read_stream(&meta_stream, from, Direction::Forwards, count) {
            Ok(events) => events,
            Err(Error::StreamNotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        events
            .iter()
            .map(|e| {
                Ok(StreamMetadataRecord {
                    revision: e.revision,
                    position: e.position,
                    timestamp_us: e.timestamp_us,
                    metadata: StreamMetadata::from_json(e.data())?,
                })
            })
            .collect()
    }

    /// Soft-deletes `stream`: it reads as not found and its events are no longer visible
    /// anywhere; its snapshots are removed. A later append brings it back, its revisions
    /// continuing from where they were (`NoStream` and `Any` are accepted as expected
    /// revisions then, and `StreamExists` is `StreamDeleted`). Returns the position of the
    /// delete record. The events leave the disk at the next `compact`.
    ///
    /// A stream with metadata but no events exists (as in KurrentDB) and can be deleted
    /// (`NoStream`, `Any` or `StreamExists`); a later append to it starts at revision 0.
    ///
    /// Errors: `StreamNotFound` when the stream has neither events nor metadata;
    /// `StreamDeleted` when it is tombstoned; `WrongExpectedRevision`.
    pub fn delete_stream(&self, stream: &str, expected: ExpectedRevision) -> Result<Position> {
        self.delete_stream_by(stream, expected, "")
    }

    /// [`Store::delete_stream`], recorded as made by `principal`.
    pub fn delete_stream_by(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        principal: &str,
    ) -> Result<Position> {
        self.remove_stream(
            LifecycleOp::Delete {
                stream: stream.to_string(),
                expected,
            },
            principal,
        )
    }

    /// Tombstones `stream`: deleted for good. Every later read, append or delete of it is
    /// `StreamDeleted` (new metadata is recorded and changes nothing), and the name cannot be
    /// used again. Writes a
    /// `$streamDeleted` event as the stream's last event (the only one of the stream whole-log
    /// reads still show) and removes the stream's snapshots. Returns its position. `Any` works
    /// on a stream that never existed, reserving the name.
    ///
    /// Errors: `StreamDeleted` when already tombstoned; `WrongExpectedRevision`.
    pub fn tombstone_stream(&self, stream: &str, expected: ExpectedRevision) -> Result<Position> {
        self.tombstone_stream_by(stream, expected, "")
    }

    /// [`Store::tombstone_stream`], recorded as made by `principal`.
    pub fn tombstone_stream_by(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        principal: &str,
    ) -> Result<Position> {
        self.remove_stream(
            LifecycleOp::Tombstone {
                stream: stream.to_string(),
                expected,
            },
            principal,
        )
    }

    /// A delete or tombstone: the record, then the stream's snapshots.
    fn remove_stream(&self, op: LifecycleOp, principal: &str) -> Result<Position> {
        check_principal(principal)?;
        let (LifecycleOp::Delete { stream, .. } | LifecycleOp::Tombstone { stream, .. }) = &op
        else {
            return Err(Error::InvalidArgument("not a delete".into()));
        };
        let stream = stream.clone();
        self.check_lifecycle_name(&stream)?;
        let result = self.submit_lifecycle(op, principal, 64)?;
        self.delete_snapshots(&stream)?;
        Ok(result.last_position)
    }

    /// The lifecycle state of every stream that has any, as reads apply it now.
    pub(crate) fn lifecycle_state(&self) -> HashMap<String, StreamLife> {
        self.shared.lifecycle.to_map()
    }

    fn check_lifecycle_name(&self, stream: &str) -> Result<()> {
        let config = &self.shared.config;
        super::validate::check_writable_stream(config, stream)?;
        // The metadata stream's name is two bytes longer, and must fit too.
        let meta_len = (stream.len() + METADATA_STREAM_PREFIX.len()) as u64;
        if meta_len > config.stream_name_bytes_max {
            return Err(Error::LimitExceeded {
                what: Limit::MetadataStreamNameBytes,
                limit: config.stream_name_bytes_max,
                actual: meta_len,
            });
        }
        Ok(())
    }

    fn submit_lifecycle(
        &self,
        op: LifecycleOp,
        principal: &str,
        encoded_bytes: u64,
    ) -> Result<AppendResult> {
        let slot = Arc::new(writer::ReplySlot::default());
        self.submit_request(
            Vec::new(),
            Some(op),
            principal.to_string(),
            encoded_bytes + 256 + principal.len() as u64,
            writer::Replier::new(slot.clone()),
        )
        .map_err(|(e, _)| e)?;
        slot.wait()?
            .pop()
            .ok_or_else(|| Error::InvalidArgument("lifecycle change produced no result".into()))
    }
}

/// The one-event append that records `metadata` in `$$stream`.
/// `revival`: the record brings a soft-deleted stream back (marked with [`REVIVAL_MARK`]).
pub(crate) fn metadata_part(
    stream: &str,
    metadata: &StreamMetadata,
    revival: bool,
) -> StreamAppend {
    let mut event = crate::types::EventData::json(METADATA_EVENT_TYPE, metadata.to_json())
        .with_id(super::validate::new_event_id());
    if revival {
        event = event.with_metadata(REVIVAL_MARK);
    }
    StreamAppend::new(
        metadata_stream_of(stream),
        ExpectedRevision::Any,
        vec![event],
    )
}

/// The one-event append that tombstones `stream`.
pub(crate) fn tombstone_part(stream: &str) -> StreamAppend {
    StreamAppend::new(
        stream,
        ExpectedRevision::Any,
        vec![
            crate::types::EventData::json(TOMBSTONE_EVENT_TYPE, "{}")
                .with_id(super::validate::new_event_id()),
        ],
    )
}

/// Whether a stream at `current` with lifecycle `life` meets `expected`. A soft-deleted stream
/// counts as not existing for `NoStream`, and `StreamExists` on it is `StreamDeleted`; a
/// stream with metadata but no events exists for `StreamExists`.
pub(crate) fn expected_holds(
    stream: &str,
    expected: ExpectedRevision,
    current: Option<u64>,
    life: Option<&StreamLife>,
) -> Result<bool> {
    let deleted = life.is_some_and(StreamLife::is_deleted);
    Ok(match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => current.is_none() || deleted,
        ExpectedRevision::StreamExists => {
            if deleted {
                return Err(Error::StreamDeleted {
                    stream: stream.to_string(),
                });
            }
            current.is_some() || life.is_some_and(|l| l.meta_revision.is_some())
        }
        ExpectedRevision::Exact(Revision(e)) => current == Some(e),
    })
}
