//! Index checkpoints: writing runs in the background, merging them, and choosing the runs to
//! trust when a store opens.
//!
//! A checkpoint freezes the active memtable (an O(1) swap under the index lock), waits until
//! every event in it is visible, writes it as a run file (temp file, fsync, rename, fsync of
//! the directory), and swaps the run in for the frozen memtable. Runs are merged pairwise in
//! the background, newest first, while the older of the last two is less than twice the size
//! of the newer: a binary counter, so a store holds O(log n) runs and each event is rewritten
//! O(log n) times.
//!
//! Architecture invariant: a run is never trusted over the log. At open, the chain of runs
//! covering positions `first..=n` (`first` is the log's first position) is accepted only if
//! each run's checksums hold and the log has, at the location the run names, an intact frame
//! of its last position with the same checksum; otherwise the run is ignored, logged, and its
//! events are replayed from the log.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Shared;
use crate::config::FsyncPolicy;
use crate::error::{Error, Result};
use crate::index::run::{self, Fingerprint, Run};
use crate::index::{self, Frozen};
use crate::log::frame::{self, Decoded, FRAME_PREFIX_BYTES};
use crate::log::{Location, Resume, SegmentView, sync_dir};
use crate::types::Position;

/// Subdirectory of the data directory that holds the runs.
pub const INDEX_DIR: &str = "index";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// File name of the run covering `first..=last`. Lexical order is position order.
pub fn run_file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.idx")
}

pub(crate) fn parse_run_file_name(name: &str) -> Option<(u64, u64)> {
    let (a, b) = name.strip_suffix(".idx")?.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Wakes the checkpoint thread and tells it to stop.
#[derive(Default)]
pub(crate) struct Control {
    state: Mutex<ControlState>,
    wake: Condvar,
}

#[derive(Default)]
struct ControlState {
    stop: bool,
    nudged: bool,
}

impl Control {
    pub(crate) fn nudge(&self) {
        self.state.lock().nudged = true;
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    fn stopping(&self) -> bool {
        self.state.lock().stop
    }
}

/// The runs to trust at open, and where the log scan resumes after them.
pub(crate) struct Loaded {
    pub runs: Vec<Arc<Run>>,
    pub resume: Option<Resume>,
}

/// Chooses the chain of runs covering `first_position..=n` with the largest `n` that checks out
/// against the log (`first_position` is the log's first position). Unused, damaged and
/// temporary files are removed; nothing here fails the open, since the log alone can always
/// rebuild the index.
pub(crate) fn load(dir: &Path, segments: &[Arc<SegmentView>], first_position: u64) -> Loaded {
    let index_dir = dir.join(INDEX_DIR);
    let mut candidates: Vec<(u64, u64, PathBuf)> = Vec::new();
    let mut unused: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = fs::read_dir(&index_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_name().to_str().and_then(parse_run_file_name) {
                Some((first, last)) if first >= 1 && last >= first => {
                    candidates.push((first, last, path))
                }
                _ => unused.push(path),
            }
        }
    }
    // For each start, the longest run first.
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut runs: Vec<Arc<Run>> = Vec::new();
    let mut resume = None;
    let mut next = first_position;
    let mut used = std::collections::HashSet::new();
    loop {
        let mut chosen = None;
        for (first, last, path) in candidates.iter().filter(|c| c.0 == next) {
            match open_checked(path, *first, *last, segments) {
                Ok((run, r)) => {
                    chosen = Some((run, r, path.clone()));
                    break;
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), %reason, "index checkpoint ignored: its events are replayed from the log");
                }
            }
        }
        let Some((run, r, path)) = chosen else { break };
        next = run.last_position() + 1;
        resume = Some(r);
        runs.push(Arc::new(run));
        used.insert(path);
    }
    unused.extend(
        candidates
            .into_iter()
            .map(|(_, _, p)| p)
            .filter(|p| !used.contains(p)),
    );
    for path in &unused {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove an unused index file");
        }
    }
    if !unused.is_empty() {
        let _ = sync_dir(&index_dir);
    }
    Loaded { runs, resume }
}

/// Opens a run and checks it against the log; returns it with the point after its last event.
fn open_checked(
    path: &Path,
    first: u64,
    last: u64,
    segments: &[Arc<SegmentView>],
) -> std::result::Result<(Run, Resume), String> {
    let run = Run::open(path).map_err(|e| e.to_string())?;
    if run.first_position() != first || run.last_position() != last {
        return Err(format!(
            "file name says {first}..={last}, contents say {}..={}",
            run.first_position(),
            run.last_position()
        ));
    }
    let fp = run.trailer().fingerprint;
    let resume = check_fingerprint(segments, last, fp)?;
    Ok((run, resume))
}

/// The log must hold, at `fp.location`, an intact frame of position `last` that ends a commit
/// and has checksum `fp.frame_crc`.
pub(crate) fn check_fingerprint(
    segments: &[Arc<SegmentView>],
    last: u64,
    fp: Fingerprint,
) -> std::result::Result<Resume, String> {
    let Location { segment, offset } = fp.location;
    let view = segments
        .get(segment as usize)
        .ok_or_else(|| format!("names segment {segment}, the log has {}", segments.len()))?;
    let bytes = view.bytes.get(offset as usize..).unwrap_or_default();
    let f = match frame::decode_from(bytes) {
        Ok(Decoded::Frame(f)) => f,
        _ => {
            return Err(format!(
                "no intact frame at {} offset {offset}",
                view.path.display()
            ));
        }
    };
    let crc = bytes
        .get(4..FRAME_PREFIX_BYTES)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or_default();
    let h = &f.header;
    if h.position != last || crc != fp.frame_crc || h.commit_index + 1 != h.commit_count {
        return Err(format!(
            "does not match the log: the frame at {} offset {offset} is position {} (event {} \
             of {}) with checksum {crc:#010x}, the checkpoint expects position {last} ending a \
             commit with checksum {:#010x}",
            view.path.display(),
            h.position,
            h.commit_index,
            h.commit_count,
            fp.frame_crc
        ));
    }
    Ok(Resume {
        segment,
        offset: u64::from(offset) + f.frame_len as u64,
        next_position: last + 1,
    })
}

/// Runs checkpoints and merges until stopped, then writes a last checkpoint of whatever the
/// memtable holds (the writer has stopped by then).
pub(crate) fn run_thread(shared: Arc<Shared>) {
    let every = shared.config.checkpoint_events;
    let interval = shared.config.checkpoint_interval;
    let mut last_checkpoint = Instant::now();
    let mut backoff: Option<Instant> = None;
    // No merge at start: runs left unmerged by a close are merged after the next checkpoint,
    // so a restart does not begin with a burst of index writing.
    loop {
        {
            let mut state = shared.checkpoint.state.lock();
            state.nudged = false;
            if state.stop {
                break;
            }
            let due = |shared: &Shared| {
                // Events indexed and visible past the last run. Not simply the visible
                // position: a log rewritten without its newest events continues after a gap,
                // which is visible but holds nothing to checkpoint.
                let pending = {
                    let index = shared.index.read();
                    shared
                        .visible()
                        .min(index.last_position())
                        .saturating_sub(index.runs_end())
                };
                let by_count = pending >= every;
                let by_time =
                    !interval.is_zero() && pending > 0 && last_checkpoint.elapsed() >= interval;
                (by_count || by_time)
                    && backoff.is_none_or(|b| b.elapsed() >= Duration::from_secs(5))
            };
            if !due(&shared) {
                let wait = if interval.is_zero() {
                    Duration::from_secs(60)
                } else {
                    interval
                        .saturating_sub(last_checkpoint.elapsed())
                        .max(Duration::from_millis(100))
                };
                shared.checkpoint.wake.wait_for(&mut state, wait);
                if state.stop {
                    break;
                }
                drop(state);
                if !due(&shared) {
                    continue;
                }
            }
        }
        match checkpoint(&shared).and_then(|_| merge(&shared)) {
            Ok(()) => {
                last_checkpoint = Instant::now();
                backoff = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "index checkpoint failed; the index stays in memory and the checkpoint is retried");
                backoff = Some(Instant::now());
            }
        }
    }
    if shared.poison_cause().is_none()
        && let Err(e) = checkpoint(&shared)
    {
        tracing::error!(error = %e, "index checkpoint at close failed; the next open replays more of the log");
    }
}

/// Writes the active memtable (or a frozen one left by a failed attempt) as a run. Returns
/// whether a run was written.
pub(crate) fn checkpoint(shared: &Shared) -> Result<bool> {
    let frozen = {
        let mut index = shared.index.write();
        match index.frozen() {
            Some(f) => Some(f),
            None => index.freeze(),
        }
    };
    let Some(frozen) = frozen else {
        return Ok(false);
    };
    let (first, last) = (
        frozen.memtable.first_position(),
        frozen.memtable.last_position(),
    );
    shared.checkpointed_through.store(last, Ordering::Release);
    // The frozen events were inserted before their commit's fdatasync; a run holds only
    // visible events.
    while shared.visible() < last {
        if shared.poison_cause().is_some() {
            return Err(Error::Poisoned {
                cause: "the writer stopped before the checkpoint's events became durable".into(),
            });
        }
        shared.wait_for_commit(Position(shared.visible()), Duration::from_millis(100));
    }
    let started = Instant::now();
    let fingerprint = fingerprint_of(shared, &frozen, last)?;
    let path = write_durably(shared, first, last, |tmp| {
        run::write_run(tmp, frozen.contents(fingerprint))
    })?;
    let run = Arc::new(Run::open(&path)?);
    shared.index.write().install_run(run)?;
    tracing::info!(
        first,
        last,
        events = last - first + 1,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index checkpoint written"
    );
    Ok(true)
}

fn fingerprint_of(shared: &Shared, frozen: &Frozen, last: u64) -> Result<Fingerprint> {
    let location = frozen
        .memtable
        .location(last)
        .ok_or_else(|| Error::InvalidArgument(format!("memtable has no location for {last}")))?;
    let view = shared.segment(location.segment).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "no segment {} for position {last}",
            location.segment
        ))
    })?;
    let at = location.offset as usize;
    let frame_crc = view
        .bytes
        .get(at + 4..at + FRAME_PREFIX_BYTES)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| {
            Error::corruption(&view.path, location.offset.into(), "frame out of range")
        })?;
    // Under a weaker fsync policy visible events may not be on disk yet; a run must never
    // cover events the log could lose, so the segment is synced first.
    if shared.config.fsync != FsyncPolicy::Always {
        fs::File::open(&view.path)
            .and_then(|f| f.sync_data())
            .map_err(|e| Error::io(&view.path, e))?;
    }
    Ok(Fingerprint {
        location,
        frame_crc,
    })
}

/// Writes a run through `write` into a temp file, renames it into place and syncs the
/// directory. Returns the final path.
fn write_durably(
    shared: &Shared,
    first: u64,
    last: u64,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let index_dir = shared.dir.join(INDEX_DIR);
    fs::create_dir_all(&index_dir).map_err(|e| Error::io(&index_dir, e))?;
    let name = run_file_name(first, last);
    let path = index_dir.join(&name);
    let tmp = index_dir.join(format!("{name}{TEMP_SUFFIX}"));
    if let Err(e) = write(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(pause) = crash_test_pause() {
        std::thread::sleep(pause);
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(&index_dir)?;
    Ok(path)
}

/// For crash tests only: `STATESTORE_CRASH_TEST_CHECKPOINT_PAUSE_MS` holds each written run in
/// its temporary file this long before the rename, so that a SIGKILL lands inside a checkpoint.
fn crash_test_pause() -> Option<Duration> {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("STATESTORE_CRASH_TEST_CHECKPOINT_PAUSE_MS")
            .ok()?
            .parse()
            .ok()
            .map(Duration::from_millis)
    })
}

/// Merges the last two runs while the older is less than twice the size of the newer. Stops
/// early when the store is closing: merges can wait for the next open, a close should not.
fn merge(shared: &Shared) -> Result<()> {
    loop {
        if shared.checkpoint.stopping() {
            return Ok(());
        }
        let runs = shared.index.read().runs().to_vec();
        let [.., older, newer] = runs.as_slice() else {
            return Ok(());
        };
        if older.trailer().positions() >= 2 * newer.trailer().positions() {
            return Ok(());
        }
        let started = Instant::now();
        let pair = [older.clone(), newer.clone()];
        let (first, last) = (older.first_position(), newer.last_position());
        let path = write_durably(shared, first, last, |tmp| {
            let contents = index::merge_runs(&pair)
                .ok_or_else(|| Error::InvalidArgument("nothing to merge".into()))?;
            run::write_run(tmp, contents)
        })?;
        let merged = Arc::new(Run::open(&path)?);
        shared.index.write().install_merge(2, merged)?;
        for r in &pair {
            if let Err(e) = fs::remove_file(r.path()) {
                tracing::warn!(file = %r.path().display(), error = %e, "could not remove a merged index run");
            }
        }
        sync_dir(&shared.dir.join(INDEX_DIR))?;
        tracing::info!(
            first,
            last,
            events = last - first + 1,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index runs merged"
        );
    }
}
