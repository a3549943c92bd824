//! `statestore replay`: point-in-time restore. Copies the stored events from a position on, up
//! to a position or a commit time, into a fresh store that keeps their positions, revisions,
//! ids and timestamps (or as JSON lines to standard output).
//!
//! Everything in the log up to the cut is copied as stored, including the `$$` metadata
//! records, deletes and tombstones, so the restored store applies the stream metadata that
//! held at the cut. Aggregate snapshots are not copied.

use std::io::Write;
use std::path::Path;

use super::compact::push;
use super::event_json::EventLine;
use super::progress::Progress;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::frame::EventHeader;
use crate::log::rewrite::LogRewriter;
use crate::store::{Store, Walk};
use crate::types::RecordedEvent;

/// Which events `replay` copies.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// First position (inclusive); 0 or 1 for the start.
    pub from: u64,
    /// Last position (inclusive).
    pub until: Option<u64>,
    /// Last commit time (inclusive), microseconds since the Unix epoch.
    pub until_time_us: Option<u64>,
}

/// What a replay copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    pub events: u64,
    pub first_position: Option<u64>,
    pub last_position: Option<u64>,
    /// Bytes of the new store's segment files (0 for JSON lines).
    pub bytes: u64,
    /// When the cut fell inside a commit: that commit's first and last position. The restored
    /// store holds only the part up to the cut.
    pub split_commit: Option<(u64, u64)>,
    /// With `until_time_us`: the position of the first event left out for being later.
    pub stopped_before: Option<u64>,
}

/// Copies into a new store at `into`, which must not exist or be empty. The copy is written
/// beside it (`.NAME.replay-tmp`), opened once with `config` (which checks it and writes its
/// index checkpoints), and only then renamed to `into`: a replay that dies leaves no directory
/// that looks like a finished restore.
pub fn replay_into_dir(
    store: &Store,
    into: &Path,
    options: &ReplayOptions,
    config: &Config,
    progress: &mut dyn Progress,
) -> Result<ReplaySummary> {
    if into.exists() {
        let mut entries = std::fs::read_dir(into).map_err(|e| Error::io(into, e))?;
        if entries.next().is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} is not empty: replay writes a fresh store",
                into.display()
            )));
        }
    }
    let name = into
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no directory", into.display())))?;
    let parent = into
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = parent.join(format!(".{}.replay-tmp", name.to_string_lossy()));
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    }
    let mut rewriter = LogRewriter::create(&work, config.segment_bytes)?;
    let mut pending: Vec<(EventHeader, RecordedEvent, bool)> = Vec::new();
    let mut summary = walk(store, options, progress, &mut |e, h| {
        pending.push((*h, e.clone(), false));
        if h.commit_index + 1 >= h.commit_count {
            push(&mut rewriter, &mut pending)?;
        }
        Ok(())
    })?;
    if let Some((first, _, _)) = pending.first() {
        // The cut is inside a commit: keep the part up to it.
        let commit_first = first.position - u64::from(first.commit_index);
        let commit_last = commit_first + u64::from(first.commit_count) - 1;
        summary.split_commit = Some((commit_first, commit_last));
    }
    push(&mut rewriter, &mut pending)?;
    // The next append goes after the cut (positions up to it that compaction had removed in
    // the source are not handed out again).
    let source_last = store.last_position().0;
    let cut = match (options.until, summary.stopped_before) {
        (_, Some(p)) => p - 1,
        (Some(until), None) => until.min(source_last),
        (None, None) => source_last,
    };
    let last_copied = summary.last_position.unwrap_or(0);
    let next = cut.max(last_copied).max(options.from.max(1) - 1) + 1;
    let written = rewriter.finish(next)?;
    summary.bytes = written.bytes;
    // Open once: checks what was written and leaves index checkpoints for the first start.
    Store::open(&work, config.clone())?.close()?;
    if into.exists() {
        std::fs::remove_dir(into).map_err(|e| Error::io(into, e))?;
    }
    std::fs::rename(&work, into).map_err(|e| Error::io(into, e))?;
    crate::log::sync_dir(parent)?;
    Ok(summary)
}

/// Writes the events as JSON lines (the format of `dump`).
pub fn replay_to_lines(
    store: &Store,
    out: &mut dyn Write,
    options: &ReplayOptions,
    progress: &mut dyn Progress,
) -> Result<ReplaySummary> {
    let summary = walk(store, options, progress, &mut |e, _| {
        EventLine::of(e)
            .write(out)
            .map_err(|err| Error::io("standard output", err))
    })?;
    out.flush()
        .map_err(|err| Error::io("standard output", err))?;
    Ok(summary)
}

fn walk(
    store: &Store,
    options: &ReplayOptions,
    progress: &mut dyn Progress,
    f: &mut dyn FnMut(&RecordedEvent, &EventHeader) -> Result<()>,
) -> Result<ReplaySummary> {
    if let Some(until) = options.until
        && until < options.from
    {
        return Err(Error::InvalidArgument(format!(
            "--until {until} is before --from {}",
            options.from
        )));
    }
    let mut summary = ReplaySummary::default();
    let result = store.walk_stored(
        options.from.max(1),
        options.until.unwrap_or(u64::MAX),
        &mut |e, h, at| {
            progress.update("replay", at.bytes_done, at.bytes_total);
            if options.until_time_us.is_some_and(|t| e.timestamp_us > t) {
                summary.stopped_before = Some(e.position.0);
                return Ok(Walk::Stop);
            }
            f(e, h)?;
            summary.events += 1;
            summary.first_position.get_or_insert(e.position.0);
            summary.last_position = Some(e.position.0);
            Ok(Walk::Continue)
        },
    );
    progress.finish();
    result?;
    Ok(summary)
}
