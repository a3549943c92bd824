//! The crash-safe switch from a log to its compacted copy.
//!
//! `compact` writes the new segments into `DIR/compact.tmp/`, then commits by writing the list
//! of new segment names to `DIR/compact.tmp/COMMIT` (temp file, fsync, rename, fsync). Before
//! that file exists the old store is whole and the copy is thrown away at the next open; once it
//! exists the copy is the store, and [`install`] (re-run by every open until it finishes) puts
//! it in place:
//!
//! 1. remove `DIR/index/` (its runs name offsets of the old segments);
//! 2. move every listed segment from `compact.tmp/` into `DIR/` (renames replace old files of
//!    the same name);
//! 3. remove every other segment of `DIR/` and the pre-allocated next segment;
//! 4. fsync `DIR`, remove `COMMIT`, then the rest of `compact.tmp/`.
//!
//! Every step is idempotent, so a crash at any point leaves either the old store (no `COMMIT`)
//! or a switch that the next open completes. The caller holds the directory lock throughout.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::log::sync_dir;

/// Where `compact` writes the new log.
pub const COMPACT_DIR: &str = "compact.tmp";
/// The commit record: the new segment names, one per line.
pub const COMMIT_FILE: &str = "COMMIT";
const SEGMENT_SUFFIX: &str = ".seg";
const PREALLOC_FILE: &str = "next.seg.prealloc";

/// What [`recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    Nothing,
    /// An unfinished compaction without a commit record was discarded: the old store stays.
    RolledBack,
    /// A committed compaction was put in place.
    Installed,
}

/// Finishes or discards an interrupted compaction. Called with the directory lock held, before
/// anything reads the segments.
pub fn recover(dir: &Path) -> Result<Recovered> {
    let work = dir.join(COMPACT_DIR);
    if !work.exists() {
        return Ok(Recovered::Nothing);
    }
    if work.join(COMMIT_FILE).exists() {
        tracing::warn!(dir = %dir.display(), "finishing a committed compaction that was interrupted");
        install(dir)?;
        Ok(Recovered::Installed)
    } else {
        tracing::warn!(dir = %dir.display(), "discarding an unfinished compaction; the store is unchanged");
        fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        sync_dir(dir)?;
        Ok(Recovered::RolledBack)
    }
}

/// Commits the new log in `compact.tmp/`: after this returns, the store is the new one (even
/// if the process dies before [`install`] finishes).
pub fn commit(dir: &Path, segment_names: &[String]) -> Result<()> {
    let work = dir.join(COMPACT_DIR);
    let tmp = work.join(format!("{COMMIT_FILE}.tmp"));
    let mut text = segment_names.join("\n");
    text.push('\n');
    fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    crash_point("commit-written");
    let path = work.join(COMMIT_FILE);
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(&work)?;
    crash_point("committed");
    Ok(())
}

/// Puts a committed compaction in place (the steps in the module docs).
pub fn install(dir: &Path) -> Result<()> {
    let work = dir.join(COMPACT_DIR);
    let commit = work.join(COMMIT_FILE);
    let text = fs::read_to_string(&commit).map_err(|e| Error::io(&commit, e))?;
    let names: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if names.is_empty()
        || names
            .iter()
            .any(|n| !n.ends_with(SEGMENT_SUFFIX) || n.contains('/') || n.starts_with('.'))
    {
        return Err(Error::corruption(
            &commit,
            0,
            "the compaction commit record does not list segment files",
        ));
    }
    let index = dir.join(super::checkpoint::INDEX_DIR);
    if index.exists() {
        fs::remove_dir_all(&index).map_err(|e| Error::io(&index, e))?;
        sync_dir(dir)?;
    }
    crash_point("index-removed");
    for (k, name) in names.iter().enumerate() {
        let from = work.join(name);
        if from.exists() {
            let to = dir.join(name);
            fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
            if k == 0 {
                crash_point("first-segment-moved");
            }
        }
    }
    sync_dir(dir)?;
    crash_point("segments-moved");
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_segment = name.ends_with(SEGMENT_SUFFIX) && !names.contains(&name.as_str());
        if stale_segment || name == PREALLOC_FILE {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir)?;
    crash_point("old-segments-removed");
    fs::remove_file(&commit).map_err(|e| Error::io(&commit, e))?;
    sync_dir(&work)?;
    fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    sync_dir(dir)?;
    Ok(())
}

/// For crash tests only: `STATESTORE_CRASH_TEST_COMPACT_ABORT_AT=<step>` aborts the process
/// (as a kill would) when compaction reaches that step.
pub fn crash_point(step: &str) {
    if std::env::var("STATESTORE_CRASH_TEST_COMPACT_ABORT_AT").is_ok_and(|s| s == step) {
        eprintln!("crash test: aborting at compaction step {step}");
        std::process::abort();
    }
}
