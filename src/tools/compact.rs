//! `statestore compact`: rewrites the log without the events that stream metadata, deletes and
//! tombstones hide, keeping the positions of the events that stay.
//!
//! What goes (as reads see it at the moment of the compaction):
//! - events below a stream's truncate-before, beyond its max count, or older than its max age
//!   (for max age, the oldest run of expired events, so that a stream's remaining revisions
//!   stay consecutive);
//! - every event of a soft-deleted stream, and every event of a tombstoned stream but the
//!   tombstone.
//!
//! What stays: everything else, every `$$` metadata record (the metadata history), and the
//! last event of each stream, so that its revisions continue after the compaction. When that
//! last event is hidden (a soft-deleted stream, or all of a stream expired), it stays as a
//! husk: stream, revision, position, id, type and timestamp, with empty data and metadata.
//!
//! The new segments are written beside the old ones and switched in by the crash-safe protocol
//! of `crate::store::compaction`; the index is then rebuilt and checkpointed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use super::progress::Progress;
use crate::config::Config;
use crate::error::Result;
use crate::log::frame::{EventBody, EventHeader};
use crate::log::rewrite::LogRewriter;
use crate::store::compaction::{self, COMPACT_DIR};
use crate::store::lifecycle::{self, METADATA_STREAM_PREFIX, StreamLife, TOMBSTONE_EVENT_TYPE};
use crate::store::{Store, Walk};
use crate::types::RecordedEvent;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CompactReport {
    pub events_before: u64,
    pub events_after: u64,
    /// Events removed.
    pub removed: u64,
    /// Hidden last events kept without their data and metadata.
    pub emptied: u64,
    pub segments_before: u64,
    pub segments_after: u64,
    /// Segment files' total length before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of headers and frames (the rest of the files is zeros) before and after.
    pub data_bytes_before: u64,
    pub data_bytes_after: u64,
    pub seconds: f64,
}

/// What happens to one stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Kept without data and metadata.
    Empty,
    Remove,
}

/// The rules, fixed at the start of the compaction.
struct Plan {
    life: HashMap<String, StreamLife>,
    now_us: u64,
    /// Streams past their hidden prefix: everything after is kept.
    past_prefix: HashSet<String>,
}

impl Plan {
    fn fate(&mut self, e: &RecordedEvent) -> Fate {
        let stream = e.stream();
        if stream.starts_with(METADATA_STREAM_PREFIX) {
            return Fate::Keep;
        }
        let Some(life) = self.life.get(stream) else {
            return Fate::Keep;
        };
        if self.past_prefix.contains(stream) {
            return Fate::Keep;
        }
        if life.tombstoned && e.event_type() == TOMBSTONE_EVENT_TYPE {
            return Fate::Keep;
        }
        let revision = e.revision.0;
        if !life.hides(revision, e.timestamp_us, self.now_us) {
            self.past_prefix.insert(stream.to_string());
            return Fate::Keep;
        }
        if life.last_revision == Some(revision) {
            Fate::Empty
        } else {
            Fate::Remove
        }
    }
}

/// Compacts the store in `dir` (which must not be open elsewhere). `config` must be the one the
/// store is served with (its segment size is that of the new segments).
pub fn compact(dir: &Path, config: &Config, progress: &mut dyn Progress) -> Result<CompactReport> {
    let started = Instant::now();
    let store = Store::open(dir, config.clone())?;
    let mut plan = Plan {
        life: store.lifecycle_state(),
        now_us: lifecycle::now_us(),
        past_prefix: HashSet::new(),
    };
    let mut report = CompactReport::default();
    let (segments_before, bytes_before) = store.segment_files();
    report.segments_before = segments_before;
    report.bytes_before = bytes_before;
    report.data_bytes_before = segments_before * crate::log::segment::SEGMENT_HEADER_BYTES as u64;

    let work = dir.join(COMPACT_DIR);
    let mut rewriter = LogRewriter::create(&work, config.segment_bytes)?;
    // The kept events of the commit being read, and whether each is emptied.
    let mut pending: Vec<(EventHeader, RecordedEvent, bool)> = Vec::new();
    let walked = store.walk_stored(1, u64::MAX, &mut |e, h, at| {
        progress.update("compact", at.bytes_done, at.bytes_total);
        report.events_before += 1;
        report.data_bytes_before += e.stored_bytes() as u64 + 8;
        match plan.fate(e) {
            Fate::Keep => pending.push((*h, e.clone(), false)),
            Fate::Empty => {
                report.emptied += 1;
                pending.push((*h, e.clone(), true));
            }
            Fate::Remove => report.removed += 1,
        }
        if h.commit_index + 1 >= h.commit_count {
            push(&mut rewriter, &mut pending)?;
        }
        Ok(Walk::Continue)
    });
    progress.finish();
    walked?;
    push(&mut rewriter, &mut pending)?;
    let next_position = store.last_position().0 + 1;
    let written = rewriter.finish(next_position)?;
    compaction::crash_point("rewritten");
    report.events_after = written.events;
    report.segments_after = written.files.len() as u64;
    report.bytes_after = written.bytes;
    report.data_bytes_after = written.data_bytes;

    // The switch, under the lock the store held all along.
    let lock = store.close_keeping_lock()?;
    compaction::commit(dir, &written.files)?;
    compaction::install(dir)?;
    drop(lock);
    // Rebuild the index from the new log and leave checkpoints for the next start.
    Store::open(dir, config.clone())?.close()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Writes the events gathered for one commit (each with whether to empty it) and clears them.
pub(super) fn push(
    rewriter: &mut LogRewriter,
    pending: &mut Vec<(EventHeader, RecordedEvent, bool)>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let commit: Vec<(EventHeader, EventBody<'_>)> = pending
        .iter()
        .map(|(h, e, emptied)| {
            let (data, metadata) = if *emptied {
                (&[][..], &[][..])
            } else {
                (e.data(), e.metadata())
            };
            (
                *h,
                EventBody {
                    stream: e.stream(),
                    event_type: e.event_type(),
                    data,
                    metadata,
                    principal: e.principal().unwrap_or_default(),
                },
            )
        })
        .collect();
    let result = rewriter.push_commit(&commit);
    pending.clear();
    result
}
