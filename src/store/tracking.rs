//! Exactly-once tracking: a consumer's input position committed in the same atomic commit as
//! the events it produced.
//!
//! A tracking entry `{source, position}` is an ordinary record in the log: the newest event of
//! the stream `$tracking-{source}` (type `$tracking`, JSON data, see docs/FORMAT.md), written by
//! the writer as the last record of the commit it tracks. So it is as durable as the events,
//! survives crashes, replay and compaction (a stream's last event always stays) with no code of
//! its own, and `dump` and `verify` see it. The first entry of a source also writes one
//! `$trackingSource` record to the `$tracking` stream, the registry `list_tracking` pages.
//!
//! The writer holds the entries it has seen (loaded lazily from the log the first time a source
//! is written after an open, then kept current by its own commits), so the checks of a group's
//! later requests see the earlier ones.

use serde::{Deserialize, Serialize};

use super::{Shared, Store};
use crate::error::{Error, Result};
use crate::types::{AppendResult, Direction, Position, RecordedEvent, Revision};

/// Prefix of the stream holding one source's tracking entries.
pub const TRACKING_STREAM_PREFIX: &str = "$tracking-";
/// The registry stream: one `$trackingSource` record per source, in order of first use.
pub const TRACKING_REGISTRY_STREAM: &str = "$tracking";
/// Event type of a tracking entry.
pub const TRACKING_EVENT_TYPE: &str = "$tracking";
/// Event type of a registry record.
pub const TRACKING_SOURCE_EVENT_TYPE: &str = "$trackingSource";
/// Longest source name, in bytes.
pub const TRACKING_SOURCE_BYTES_MAX: usize = 255;

/// What a commit says about its source's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The consumer (a projection, a persistent-subscription group): 1 to 255 bytes, no
    /// control characters. Sources starting with `$` are the server's own.
    pub source: String,
    /// The input position this commit covers; must be greater than the stored one.
    pub position: u64,
    /// The stored position this commit expects, if it checks one.
    pub expected: Option<TrackingExpected>,
}

/// The stored tracking position a commit expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingExpected {
    /// No entry yet for the source.
    None,
    /// The stored entry is at this position.
    Position(u64),
}

impl std::fmt::Display for TrackingExpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackingExpected::None => f.write_str("none"),
            TrackingExpected::Position(p) => write!(f, "{p}"),
        }
    }
}

/// A stored tracking entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingEntry {
    pub source: String,
    pub position: u64,
    /// Where the entry's record is in the log (the last position of its commit).
    pub commit_position: Position,
    /// When it was committed, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// The JSON data of a `$tracking` record. `results` are the commit's other parts, as
/// `[first_position, last_position, revision]`, so a retry gets its original answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub source: String,
    pub position: u64,
    #[serde(default)]
    pub results: Vec<[u64; 3]>,
}

/// What the writer knows of one source.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub position: u64,
    /// The result of the record itself.
    pub record: AppendResult,
    /// The results of the commit's other parts.
    pub results: Vec<AppendResult>,
}

pub(crate) fn stream_of(source: &str) -> String {
    format!("{TRACKING_STREAM_PREFIX}{source}")
}

/// Checks a source name: 1 to 255 bytes, no control characters.
pub(crate) fn check_source(source: &str) -> Result<()> {
    if source.is_empty() {
        return Err(Error::InvalidArgument(
            "the tracking source is empty".into(),
        ));
    }
    if source.len() > TRACKING_SOURCE_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "the tracking source is {} bytes, over the limit of {TRACKING_SOURCE_BYTES_MAX}",
            source.len()
        )));
    }
    if let Some(c) = source.chars().find(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "the tracking source '{}' contains the control character {c:?}",
            source.escape_debug()
        )));
    }
    Ok(())
}

pub(crate) fn parse(e: &RecordedEvent) -> Result<Record> {
    serde_json::from_slice(e.data()).map_err(|err| {
        Error::InvalidArgument(format!(
            "the tracking record at position {} does not parse: {err}",
            e.position.0
        ))
    })
}

fn to_results(results: &[[u64; 3]]) -> Vec<AppendResult> {
    results
        .iter()
        .map(|[first, last, revision]| AppendResult {
            first_position: Position(*first),
            last_position: Position(*last),
            revision: Revision(*revision),
        })
        .collect()
}

/// The stored entry of `source`, read from the index and the log (everything up to
/// `through`, which for the writer is every position it has written).
pub(crate) fn load(shared: &Shared, source: &str, through: u64) -> Result<Option<Stored>> {
    let stream = stream_of(source);
    let located = {
        let index = shared.index.read();
        let Some(revision) = index.stream_revision(&stream, through)? else {
            return Ok(None);
        };
        let Some(position) = index.position_of_revision(&stream, revision)? else {
            return Ok(None);
        };
        index
            .locate(&[position])?
            .into_iter()
            .map(|l| (revision, l))
            .collect::<Vec<_>>()
    };
    let Some((revision, at)) = located.into_iter().next() else {
        return Ok(None);
    };
    let event = shared.decode_located(&[at])?.pop();
    let Some(event) = event else {
        return Ok(None);
    };
    let record = parse(&event)?;
    Ok(Some(Stored {
        position: record.position,
        record: AppendResult {
            first_position: event.position,
            last_position: event.position,
            revision: Revision(revision),
        },
        results: to_results(&record.results),
    }))
}

impl Store {
    /// The stored tracking entry of `source`, or `None` when it has none.
    pub fn tracking(&self, source: &str) -> Result<Option<TrackingEntry>> {
        check_source(source)?;
        let stream = stream_of(source);
        let events = match self.read_stream(&stream, Revision::END, Direction::Backwards, 1) {
            Ok(events) => events,
            Err(Error::StreamNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(event) = events.into_iter().next() else {
            return Ok(None);
        };
        let record = parse(&event)?;
        Ok(Some(TrackingEntry {
            source: record.source,
            position: record.position,
            commit_position: event.position,
            timestamp_us: event.timestamp_us,
        }))
    }

    /// The tracking entries whose source starts with `prefix`, in order of each source's first
    /// commit, starting after the `after`-th source of the registry (0 for the first page).
    /// Returns the entries and the registry index to continue from, if there are more.
    pub fn list_tracking(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<TrackingEntry>, Option<u64>)> {
        let limit = limit.clamp(1, 1000);
        let mut out = Vec::new();
        let mut next = after;
        loop {
            let page = match self.read_stream(
                TRACKING_REGISTRY_STREAM,
                Revision(next),
                Direction::Forwards,
                256,
            ) {
                Ok(page) => page,
                Err(Error::StreamNotFound { .. }) => return Ok((out, None)),
                Err(e) => return Err(e),
            };
            let full = page.len() == 256;
            for e in &page {
                next = e.revision.0 + 1;
                let Ok(source) = std::str::from_utf8(e.data()) else {
                    continue;
                };
                if !source.starts_with(prefix) {
                    continue;
                }
                if let Some(entry) = self.tracking(source)? {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok((out, Some(next)));
                    }
                }
            }
            if !full {
                return Ok((out, None));
            }
        }
    }
}
