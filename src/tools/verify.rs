//! `statestore verify`: an offline check of a closed data directory.
//!
//! It takes the directory lock, then checks, without changing a byte:
//!
//! - **every segment**, with the rules an open applies to the part of the log it scans
//!   ([`scan_segment`]): header, continuity, every frame's CRC and consistency, commit grouping,
//!   sealed segments made of whole commits then zeros. An open skips the sealed segments an
//!   index checkpoint covers; verify reads them all. A torn tail of the active segment is a
//!   warning (the next open truncates it). After damage in one segment, the next ones are still
//!   checked, so one run reports every damaged segment. The stream revisions are checked as
//!   the index checks them when it is built from the log.
//! - **every index run** in `index/`: trailer, layout, block table, every block's checksum (not
//!   only those a lookup reads), the fingerprint against the log, and the contents against the
//!   log: each event's location, its place in its stream's and its type's postings, its id;
//!   the counts per stream and type, the order of the id table and the trailer's totals. The
//!   runs an open would use (see `checkpoint::load`) are counted; the others, and leftover
//!   files, are reported as notes or warnings, since an open deletes them.
//! - **the snapshot log**, with the rules of its open: every record's CRC and fields, a torn
//!   tail as a warning.
//! - **the tracking entries** ([`tracking`]): each `$tracking-{source}` record parses, names
//!   its stream's source, and its position increases on the source's previous one.
//!
//! Damage is a [`Finding`] naming the file and, where known, the byte offset. The contents of
//! runs are compared while the log is scanned, one event at a time, so memory holds one entry
//! per distinct stream and event type, not one per event.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::VecDeque;

/// foldhash: the per-event name lookups are a large part of a verify, and SipHash is slow on
/// these short keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use serde::Serialize;

use super::progress::{Progress, human_bytes};
use crate::error::{Error, Result};
use crate::index::run::{BLOCK_BYTES, Run, TRAILER_BYTES, Table};
use crate::lock::DirLock;
use crate::log::segment::{ScannedFrame, SegmentRole, parse_segment_file_name, scan_segment};
use crate::log::{Location, SegmentView};
use crate::snapshot::{self, COMPACT_FILE_NAME, CREATE_FILE_NAME};
use crate::store::checkpoint::{self, INDEX_DIR, TEMP_SUFFIX};
use tracking::TrackingChecks;

/// Suffix of a run set aside after a damaged block (deleted at open).
const DAMAGED_SUFFIX: &str = ".damaged";
/// Offsets in a run's trailer (docs/FORMAT.md): `first_position`, and `fp_segment`, where the
/// fingerprint starts.
const TRAILER_FIRST_POSITION: u64 = 16;
const TRAILER_FINGERPRINT: u64 = 144;
/// Mismatches reported per run before the rest are only counted.
const MISMATCHES_PER_RUN: usize = 10;
/// Progress is reported every this many bytes within a file.
const PROGRESS_STEP: u64 = 8 << 20;

/// Something verify found, in a file and, when known, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub offset: Option<u64>,
    pub reason: String,
}

impl Finding {
    fn new(file: &Path, offset: Option<u64>, reason: impl Into<String>) -> Finding {
        Finding {
            file: file.display().to_string(),
            offset,
            reason: reason.into(),
        }
    }

    fn from_error(e: &Error) -> Finding {
        match e {
            Error::Corruption {
                file,
                offset,
                reason,
            } => Finding::new(file, Some(*offset), reason.clone()),
            Error::Io { path, source } => Finding::new(path, None, source.to_string()),
            other => Finding {
                file: String::new(),
                offset: None,
                reason: other.to_string(),
            },
        }
    }
}

/// `FILE:OFFSET: reason`, or `FILE: reason` when the offset is not known.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{}:{offset}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// What verify found: the figures of the data directory, and every damage, warning and note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub data_dir: String,
    /// No damage was found (warnings and notes do not count).
    pub sound: bool,
    /// Segment files, and their bytes on disk.
    pub segments: u64,
    pub segment_file_bytes: u64,
    /// Events in whole commits, and the bytes of their frames.
    pub events: u64,
    pub event_bytes: u64,
    pub first_position: Option<u64>,
    pub last_position: Option<u64>,
    /// Distinct streams and event types among the events.
    pub streams: u64,
    pub event_types: u64,
    /// Index run files checked, and their bytes.
    pub index_runs: u64,
    pub index_bytes: u64,
    /// The runs an open would use, and the last position they cover (0: none).
    pub index_runs_used: u64,
    pub index_position: u64,
    /// Tracking sources, and their entries (records) in the log.
    pub tracking_sources: u64,
    pub tracking_entries: u64,
    /// Live snapshots in the snapshot log, their streams, and the bytes of the log.
    pub snapshots: u64,
    pub snapshot_streams: u64,
    pub snapshot_bytes: u64,
    pub damage: Vec<Finding>,
    pub warnings: Vec<Finding>,
    pub notes: Vec<Finding>,
}

impl VerifyReport {
    /// Whether no damage was found.
    pub fn is_sound(&self) -> bool {
        self.damage.is_empty()
    }
}

/// The report for people.
impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "statestore verify: {}", self.data_dir)?;
        writeln!(
            f,
            "  segments     {} ({})",
            self.segments,
            human_bytes(self.segment_file_bytes)
        )?;
        let range = match (self.first_position, self.last_position) {
            (Some(a), Some(b)) => format!("positions {a}..={b}"),
            _ => "no positions".into(),
        };
        writeln!(
            f,
            "  events       {} ({range}; {})",
            self.events,
            human_bytes(self.event_bytes)
        )?;
        writeln!(f, "  streams      {}", self.streams)?;
        writeln!(f, "  event types  {}", self.event_types)?;
        writeln!(
            f,
            "  tracking     {} sources ({} entries)",
            self.tracking_sources, self.tracking_entries
        )?;
        if self.index_runs_used > 0 {
            writeln!(
                f,
                "  index runs   {} checked ({}); {} used at open, covering positions 1..={}",
                self.index_runs,
                human_bytes(self.index_bytes),
                self.index_runs_used,
                self.index_position
            )?;
        } else {
            writeln!(
                f,
                "  index runs   {} checked ({}); none used at open",
                self.index_runs,
                human_bytes(self.index_bytes)
            )?;
        }
        writeln!(
            f,
            "  snapshots    {} in {} streams ({} of snapshot log)",
            self.snapshots,
            self.snapshot_streams,
            human_bytes(self.snapshot_bytes)
        )?;
        for (title, list) in [
            ("notes", &self.notes),
            ("warnings", &self.warnings),
            ("damage", &self.damage),
        ] {
            if !list.is_empty() {
                writeln!(f, "{title}:")?;
                for finding in list {
                    writeln!(f, "  {finding}")?;
                }
            }
        }
        let warnings = match self.warnings.len() {
            0 => String::new(),
            1 => ", 1 warning".into(),
            n => format!(", {n} warnings"),
        };
        if self.is_sound() {
            write!(f, "result: sound{warnings}")
        } else {
            write!(
                f,
                "result: DAMAGED ({} findings{warnings})",
                self.damage.len()
            )
        }
    }
}

/// Verifies the closed data directory `dir`. Takes the directory lock first and fails with
/// `Error::Locked` (naming the holder's pid) while a server has the store open. Reads every
/// file and changes none; reports progress in bytes to `progress`.
///
/// `Err` means verification could not be done (the directory is missing or not a data
/// directory, it is locked, a file cannot be read); damage is in the report, never an `Err`.
pub fn verify(dir: &Path, progress: &mut dyn Progress) -> Result<VerifyReport> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // Before the lock, whose file the lock would create: is this a data directory at all?
    if list_segments(dir)?.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no segment files: not a statestore data directory",
            dir.display()
        )));
    }
    let _lock = DirLock::acquire(dir)?;
    // An interrupted compaction is finished or discarded first, exactly as the next open
    // would: what is verified is the store that open would see.
    let recovered = crate::store::compaction::recover(dir)?;
    let mut v = Verifier {
        dir: dir.to_path_buf(),
        progress: &mut *progress,
        done: 0,
        total: 0,
        report: VerifyReport {
            data_dir: dir.display().to_string(),
            ..VerifyReport::default()
        },
    };
    if recovered != crate::store::compaction::Recovered::Nothing {
        v.report.notes.push(Finding {
            file: dir
                .join(crate::store::compaction::COMPACT_DIR)
                .display()
                .to_string(),
            offset: None,
            reason: match recovered {
                crate::store::compaction::Recovered::Installed => {
                    "an interrupted compaction had committed: its new segments were put in place"
                }
                _ => "an unfinished compaction was discarded: the store is the one before it",
            }
            .into(),
        });
    }
    let result = v.check_all();
    let mut report = v.report;
    progress.finish();
    result?;
    report.sound = report.is_sound();
    Ok(report)
}

/// The segment files of `dir` in log order: (first position from the name, path, bytes).
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            let path = entry.path();
            let len = entry.metadata().map_err(|e| Error::io(&path, e))?.len();
            out.push((first, path, len));
        }
    }
    out.sort();
    Ok(out)
}

struct Verifier<'p> {
    dir: PathBuf,
    progress: &'p mut dyn Progress,
    done: u64,
    total: u64,
    report: VerifyReport,
}

/// An index run file found in `index/`, with what checking it alone found.
struct RunFile {
    path: PathBuf,
    /// The range its name gives.
    first: u64,
    last: u64,
    len: u64,
    /// Opened with a sound trailer, layout and block table.
    run: Option<Run>,
    /// The name matches the trailer and the fingerprint matches the log: an open accepts it.
    accepted: bool,
    /// Every block's checksum holds, so its contents can be compared with the log.
    blocks_sound: bool,
}

impl Verifier<'_> {
    fn check_all(&mut self) -> Result<()> {
        let segments = list_segments(&self.dir)?;
        let mut runs = self.list_index()?;
        let snapshot_log = self.list_snapshots();
        self.total = segments.iter().map(|s| s.2).sum::<u64>()
            + runs.iter().map(|r| r.len).sum::<u64>()
            + snapshot_log.as_ref().map_or(0, |s| s.1);
        let views = map_segments(&segments)?;
        self.report.segments = segments.len() as u64;
        self.report.segment_file_bytes = segments.iter().map(|s| s.2).sum();

        for r in &mut runs {
            self.check_run_file(r, &views)?;
        }
        self.choose_chain(&runs);

        let mut checks = RunChecks::new(runs);
        self.scan_log(&segments, &views, &mut checks);
        let outcome = checks.finish();
        self.report.damage.extend(outcome.damage);
        self.report.notes.extend(outcome.notes);

        if let Some((path, len)) = snapshot_log {
            self.check_snapshot_log(&path, len)?;
        }
        Ok(())
    }

    fn note(&mut self, file: &Path, reason: impl Into<String>) {
        self.report.notes.push(Finding::new(file, None, reason));
    }

    fn advance(&mut self, stage: &str, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        self.progress.update(stage, self.done, self.total);
    }

    /// The run files of `index/`; leftovers are noted.
    fn list_index(&mut self) -> Result<Vec<RunFile>> {
        let index_dir = self.dir.join(INDEX_DIR);
        let mut runs = Vec::new();
        let entries = match std::fs::read_dir(&index_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(runs),
            Err(e) => return Err(Error::io(&index_dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&index_dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            match checkpoint::parse_run_file_name(&name) {
                Some((first, last)) if first >= 1 && last >= first && is_file => {
                    let len = entry.metadata().map_err(|e| Error::io(&path, e))?.len();
                    runs.push(RunFile {
                        path,
                        first,
                        last,
                        len,
                        run: None,
                        accepted: false,
                        blocks_sound: false,
                    });
                }
                _ if name.ends_with(DAMAGED_SUFFIX) => {
                    self.report.warnings.push(Finding::new(
                        &path,
                        None,
                        "an index run set aside after a block failed its checksum: deleted at \
                         the next open, which indexes its positions from the log",
                    ));
                }
                _ if name.ends_with(TEMP_SUFFIX) => self.note(
                    &path,
                    "an index run whose writing was cut short: deleted at the next open",
                ),
                _ => self.note(&path, "not an index run: deleted at the next open"),
            }
        }
        runs.sort_by(|a, b| (a.first, b.last, &a.path).cmp(&(b.first, a.last, &b.path)));
        Ok(runs)
    }

    /// The snapshot log to check, with its length; leftovers are noted.
    fn list_snapshots(&mut self) -> Option<(PathBuf, u64)> {
        let snap_dir = self.dir.join(snapshot::SNAPSHOT_DIR_NAME);
        if !snap_dir.is_dir() {
            self.note(
                &snap_dir,
                "no snapshot directory: an empty snapshot log is created at the next open",
            );
            return None;
        }
        for (name, what) in [
            (
                COMPACT_FILE_NAME,
                "a snapshot log compaction cut short: deleted at the next open",
            ),
            (
                CREATE_FILE_NAME,
                "left over from creating the snapshot log: not used",
            ),
        ] {
            let path = snap_dir.join(name);
            if path.exists() {
                self.note(&path, what);
            }
        }
        let path = snap_dir.join(snapshot::SNAPSHOT_FILE_NAME);
        match std::fs::metadata(&path) {
            Ok(m) => Some((path, m.len())),
            Err(_) => {
                self.note(
                    &path,
                    "no snapshot log: an empty one is created at the next open",
                );
                None
            }
        }
    }

    /// Checks one run file on its own: trailer, layout, block table, every block, its name,
    /// and its fingerprint against the log.
    fn check_run_file(&mut self, r: &mut RunFile, views: &[Arc<SegmentView>]) -> Result<()> {
        self.report.index_runs += 1;
        self.report.index_bytes += r.len;
        let run = match Run::open(&r.path) {
            Ok(run) => run,
            Err(e @ Error::Corruption { .. }) => {
                self.report.damage.push(Finding::from_error(&e));
                self.advance("index runs", r.len);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let trailer_at = r.len.saturating_sub(TRAILER_BYTES as u64);
        let name_matches = run.first_position() == r.first && run.last_position() == r.last;
        if !name_matches {
            self.report.damage.push(Finding::new(
                &r.path,
                Some(trailer_at + TRAILER_FIRST_POSITION),
                format!(
                    "the file name says positions {}..={}, the trailer says {}..={}",
                    r.first,
                    r.last,
                    run.first_position(),
                    run.last_position()
                ),
            ));
        }
        let blocks = run.block_count();
        let mut bad_blocks = 0u64;
        let mut reported = 0;
        for block in 0..blocks {
            if let Err(reason) = run.check_block(block) {
                bad_blocks += 1;
                if bad_blocks <= MISMATCHES_PER_RUN as u64 {
                    let offset = block * BLOCK_BYTES;
                    self.report
                        .damage
                        .push(Finding::new(&r.path, Some(offset), reason));
                }
            }
            let at = (block + 1) * BLOCK_BYTES;
            if at - reported >= PROGRESS_STEP {
                self.advance("index runs", at - reported);
                reported = at;
            }
        }
        if bad_blocks > MISMATCHES_PER_RUN as u64 {
            self.report.damage.push(Finding::new(
                &r.path,
                None,
                format!(
                    "{} more blocks fail their checksums",
                    bad_blocks - MISMATCHES_PER_RUN as u64
                ),
            ));
        }
        self.advance("index runs", r.len.saturating_sub(reported));
        if bad_blocks > 0 {
            self.note(
                &r.path,
                "contents not compared with the log: blocks fail their checksums",
            );
        }
        let fingerprint =
            checkpoint::check_fingerprint(views, run.last_position(), run.trailer().fingerprint);
        if let Err(reason) = &fingerprint {
            self.report.damage.push(Finding::new(
                &r.path,
                Some(trailer_at + TRAILER_FINGERPRINT),
                format!("fingerprint: {reason}"),
            ));
        }
        r.accepted = name_matches && fingerprint.is_ok();
        r.blocks_sound = bad_blocks == 0;
        r.run = Some(run);
        Ok(())
    }

    /// Marks the chain of runs an open would use (as `checkpoint::load` chooses it: from
    /// position 1, the longest accepted run starting at the next position) and notes the
    /// others, which an open deletes.
    fn choose_chain(&mut self, runs: &[RunFile]) {
        let mut used = vec![false; runs.len()];
        let mut next = 1u64;
        // `runs` is sorted by first position, then longest first.
        while let Some(i) = runs.iter().position(|r| r.first == next && r.accepted) {
            match used.get_mut(i) {
                Some(u) if !*u => *u = true,
                // Only a run ending at position 2^64 - 1 could come back.
                _ => break,
            }
            self.report.index_runs_used += 1;
            self.report.index_position = runs.get(i).map_or(0, |r| r.last);
            next = self.report.index_position.saturating_add(1);
        }
        let chain = match self.report.index_position {
            0 => "no run is used".to_string(),
            last => format!("the runs used cover positions 1..={last}"),
        };
        for (r, used) in runs.iter().zip(used) {
            if !used {
                let why = if r.accepted {
                    "other runs cover its positions"
                } else {
                    "it does not check out"
                };
                self.note(
                    &r.path,
                    format!("not used at open ({why}; {chain}): deleted at the next open"),
                );
            }
        }
    }

    /// Scans every segment fully, feeding each event of a whole commit to the run checks.
    fn scan_log(
        &mut self,
        segments: &[(u64, PathBuf, u64)],
        views: &[Arc<SegmentView>],
        checks: &mut RunChecks,
    ) {
        let mut log = LogState::new();
        let mut tracking = TrackingChecks::default();
        let mut expected_first: Option<u64> = None;
        let count = segments.len();
        for (i, ((named_first, path, len), view)) in segments.iter().zip(views).enumerate() {
            let role = if i + 1 == count {
                SegmentRole::Last
            } else {
                SegmentRole::Sealed
            };
            let Ok(segment_index) = u32::try_from(i) else {
                self.report.damage.push(Finding::new(
                    path,
                    None,
                    "more than 2^32 segments: not checked",
                ));
                break;
            };
            let mut last_emitted = None;
            let mut reported = 0u64;
            let (done, total) = (self.done, self.total);
            let progress = &mut *self.progress;
            let damage = &mut self.report.damage;
            let scanned = scan_segment(
                path,
                &view.bytes,
                role,
                expected_first,
                None,
                None,
                &mut |f: ScannedFrame<'_>| {
                    let h = &f.frame.header;
                    last_emitted = Some(h.position);
                    let body = f.frame.body(f.payload);
                    if let Some(reason) = log.event(
                        h.position,
                        f.frame.frame_len,
                        body.stream,
                        body.event_type,
                        h.revision,
                    ) {
                        damage.push(Finding::new(path, Some(f.offset), reason));
                    }
                    if let Some(reason) =
                        tracking.event(h.position, body.stream, body.event_type, body.data)
                    {
                        damage.push(Finding::new(path, Some(f.offset), reason));
                    }
                    match u32::try_from(f.offset) {
                        Ok(offset) => checks.feed(&LogEvent {
                            position: h.position,
                            location: Location {
                                segment: segment_index,
                                offset,
                            },
                            stream: body.stream,
                            event_type: body.event_type,
                            revision: h.revision,
                            id: u128::from_be_bytes(h.id),
                            streams_so_far: log.streams.len() as u64,
                            types_so_far: log.types.len() as u64,
                        }),
                        Err(_) => damage.push(Finding::new(
                            path,
                            Some(f.offset),
                            "frame offset past 4 GiB",
                        )),
                    }
                    if f.offset - reported >= PROGRESS_STEP {
                        reported = f.offset;
                        progress.update("segments", done + reported, total);
                    }
                    Ok(())
                },
            );
            match scanned {
                Ok(scan) => {
                    if scan.first_position != *named_first {
                        self.report.damage.push(Finding::new(
                            path,
                            Some(0),
                            format!(
                                "file name says position {named_first}, header says {}",
                                scan.first_position
                            ),
                        ));
                    }
                    if let Some(torn) = scan.torn {
                        self.report.warnings.push(Finding::new(
                            path,
                            Some(torn.found_at),
                            format!(
                                "a torn tail ({}): the incomplete commit from byte offset {} on \
                                 ({} bytes) is truncated at the next open",
                                torn.reason,
                                scan.data_end,
                                torn.garbage_end.saturating_sub(scan.data_end)
                            ),
                        ));
                    }
                    expected_first = Some(scan.next_position);
                }
                Err(e) => {
                    self.report.damage.push(Finding::from_error(&e));
                    // The positions between the last whole commit read and the next segment
                    // are unknown: runs covering them cannot be compared.
                    let from = last_emitted
                        .map(|p: u64| p.saturating_add(1))
                        .or(expected_first)
                        .unwrap_or(*named_first);
                    let to = segments
                        .get(i + 1)
                        .map_or(u64::MAX, |next| next.0.saturating_sub(1));
                    if from <= to {
                        checks.lost.push((from, to));
                        log.revisions_known = false;
                    }
                    expected_first = None;
                }
            }
            self.advance("segments", *len);
        }
        self.report.events = log.events;
        self.report.event_bytes = log.event_bytes;
        self.report.first_position = log.first;
        self.report.last_position = log.last;
        self.report.streams = log.streams.len() as u64;
        self.report.event_types = log.types.len() as u64;
        self.report.tracking_sources = tracking.sources();
        self.report.tracking_entries = tracking.entries;
    }

    fn check_snapshot_log(&mut self, path: &Path, len: u64) -> Result<()> {
        self.report.snapshot_bytes = len;
        match snapshot::check_log(path) {
            Ok(c) => {
                self.report.snapshots = c.snapshots;
                self.report.snapshot_streams = c.streams;
                if let Some((at, reason)) = c.torn {
                    self.report.warnings.push(Finding::new(
                        path,
                        Some(at),
                        format!(
                            "a torn tail ({reason}): the last {} bytes are truncated at the next \
                             open",
                            c.file_len.saturating_sub(at)
                        ),
                    ));
                }
            }
            Err(e @ Error::Corruption { .. }) => self.report.damage.push(Finding::from_error(&e)),
            Err(e) => return Err(e),
        }
        self.advance("snapshots", len);
        Ok(())
    }
}

/// Maps every segment read-only, as the store's readers see them (runs name segments by their
/// index in this list).
fn map_segments(segments: &[(u64, PathBuf, u64)]) -> Result<Vec<Arc<SegmentView>>> {
    segments
        .iter()
        .map(|(_, path, _)| {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the directory lock keeps every writer of the store away, and verify
            // writes nothing; a file changed by anything else fails its checksums, and the
            // decoders are total, so odd bytes give findings, not undefined reads.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Ok(Arc::new(SegmentView {
                path: path.clone(),
                bytes: Bytes::from_owner(map),
            }))
        })
        .collect()
}

/// Figures of the log, and the stream revisions, checked as the index checks them when it
/// is built from the log (`Index::insert`): a stream's first event has revision 0 and each
/// next one the revision after.
struct LogState {
    events: u64,
    event_bytes: u64,
    first: Option<u64>,
    last: Option<u64>,
    /// Stream -> the revision its next event must have.
    streams: HashMap<Box<str>, u64>,
    types: HashSet<Box<str>>,
    /// Cleared once damage has hidden events: revisions may then jump.
    revisions_known: bool,
}

impl LogState {
    fn new() -> LogState {
        LogState {
            events: 0,
            event_bytes: 0,
            first: None,
            last: None,
            streams: HashMap::default(),
            types: HashSet::default(),
            revisions_known: true,
        }
    }

    /// Takes one event into account; returns why its revision is wrong, if it is.
    fn event(
        &mut self,
        position: u64,
        frame_len: usize,
        stream: &str,
        event_type: &str,
        revision: u64,
    ) -> Option<String> {
        self.events += 1;
        self.event_bytes += frame_len as u64;
        self.first.get_or_insert(position);
        self.last = Some(position);
        if !self.types.contains(event_type) {
            self.types.insert(event_type.into());
        }
        let expected = match self.streams.get_mut(stream) {
            Some(next) => {
                let expected = *next;
                *next = revision.saturating_add(1);
                expected
            }
            None => {
                // A stream may begin above revision 0 in a compacted log (its oldest events
                // were removed); from there on its revisions are consecutive.
                self.streams
                    .insert(stream.into(), revision.saturating_add(1));
                revision
            }
        };
        (self.revisions_known && revision != expected).then(|| {
            format!(
                "stream '{stream}' revision {revision} does not follow {} (position {position})",
                i128::from(expected) - 1
            )
        })
    }
}

/// One event of a whole commit, as the run checks see it.
struct LogEvent<'a> {
    position: u64,
    location: Location,
    stream: &'a str,
    event_type: &'a str,
    revision: u64,
    id: u128,
    /// Distinct streams and types in positions `1..=position`.
    streams_so_far: u64,
    types_so_far: u64,
}

/// The comparison of every run whose blocks are sound with the events of the log, done as the
/// log is scanned in position order.
struct RunChecks {
    /// Not yet reached by the scan, by first position.
    pending: VecDeque<RunCheck>,
    /// Covering the position being scanned.
    active: Vec<RunCheck>,
    /// Position ranges (inclusive) the scan could not read because of damage.
    lost: Vec<(u64, u64)>,
    damage: Vec<Finding>,
    notes: Vec<Finding>,
}

/// What the run checks found.
struct Outcome {
    damage: Vec<Finding>,
    notes: Vec<Finding>,
}

impl RunChecks {
    fn new(runs: Vec<RunFile>) -> RunChecks {
        let mut pending: Vec<RunCheck> = runs
            .into_iter()
            .filter(|r| r.blocks_sound)
            .filter_map(|r| r.run.map(|run| RunCheck::new(r.path, run)))
            .collect();
        pending.sort_by_key(|c| c.first);
        RunChecks {
            pending: pending.into(),
            active: Vec::new(),
            lost: Vec::new(),
            damage: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn feed(&mut self, e: &LogEvent<'_>) {
        while self.pending.front().is_some_and(|c| c.first <= e.position) {
            if let Some(c) = self.pending.pop_front() {
                self.active.push(c);
            }
        }
        if self.active.iter().any(|c| c.last < e.position) {
            let (ended, active): (Vec<RunCheck>, Vec<RunCheck>) = std::mem::take(&mut self.active)
                .into_iter()
                .partition(|c| c.last < e.position);
            self.active = active;
            for c in ended {
                self.end(c);
            }
        }
        for c in &mut self.active {
            c.feed(e);
        }
    }

    /// Ends the checks of runs past the last event read.
    fn finish(mut self) -> Outcome {
        let rest: Vec<RunCheck> = std::mem::take(&mut self.active)
            .into_iter()
            .chain(std::mem::take(&mut self.pending))
            .collect();
        for c in rest {
            self.end(c);
        }
        Outcome {
            damage: self.damage,
            notes: self.notes,
        }
    }

    fn end(&mut self, mut c: RunCheck) {
        let lost = self
            .lost
            .iter()
            .find(|&&(from, to)| from <= c.last && to >= c.first);
        match lost {
            Some(&(from, to)) => {
                let range = if to == u64::MAX {
                    format!("from position {from} on")
                } else {
                    format!("in positions {from}..={to}")
                };
                self.notes.push(Finding::new(
                    &c.path,
                    None,
                    format!(
                        "compared with the log event by event only (not the counts): damage \
                         hides the log {range}, which this run covers"
                    ),
                ));
            }
            None => {
                let totals_known = !self.lost.iter().any(|&(from, _)| from <= c.last);
                if let Err(e) = c.end_checks(totals_known) {
                    c.fail(&e);
                }
            }
        }
        self.damage.extend(c.into_findings());
    }
}

/// A stream or event type of a run, as the log has shown it so far.
struct NameCheck {
    /// The run's entry: (first revision, first posting, end posting); `None` if it has none.
    entry: Option<(u64, u64, u64)>,
    /// Events of this name in the run's range seen in the log.
    seen: u64,
    /// A difference has been reported for this name.
    mismatched: bool,
}

/// The comparison of one run with the log.
struct RunCheck {
    path: PathBuf,
    run: Run,
    first: u64,
    last: u64,
    streams: HashMap<Box<str>, NameCheck>,
    types: HashMap<Box<str>, NameCheck>,
    /// Events of the run's range seen in the log.
    events: u64,
    /// Order-independent hash of the (id, position) pairs of those events, compared at the end
    /// with the run's id table read in one sequential pass (a lookup per event was most of
    /// verify's time: a binary search over the whole mapped table each).
    ids_hash: u64,
    /// Distinct streams and types in `1..=last`, once the log has reached `last`.
    totals_at_last: Option<(u64, u64)>,
    findings: Vec<Finding>,
    /// Mismatches past [`MISMATCHES_PER_RUN`], only counted.
    more: u64,
    /// Set when the run could not be read further (an entry out of range): checks stop.
    failed: bool,
}

impl RunCheck {
    fn new(path: PathBuf, run: Run) -> RunCheck {
        RunCheck {
            first: run.first_position(),
            last: run.last_position(),
            path,
            run,
            streams: HashMap::default(),
            types: HashMap::default(),
            events: 0,
            ids_hash: 0,
            totals_at_last: None,
            findings: Vec::new(),
            more: 0,
            failed: false,
        }
    }

    fn mismatch(&mut self, offset: Option<u64>, reason: String) {
        if self.findings.len() < MISMATCHES_PER_RUN {
            self.findings.push(Finding::new(&self.path, offset, reason));
        } else {
            self.more += 1;
        }
    }

    fn fail(&mut self, e: &Error) {
        self.failed = true;
        let mut f = Finding::from_error(e);
        if f.file.is_empty() {
            f.file = self.path.display().to_string();
        }
        self.findings.push(f);
    }

    fn into_findings(mut self) -> Vec<Finding> {
        if self.more > 0 {
            self.findings.push(Finding::new(
                &self.path,
                None,
                format!("{} more mismatches with the log", self.more),
            ));
        }
        self.findings
    }

    fn feed(&mut self, e: &LogEvent<'_>) {
        if self.failed {
            return;
        }
        if let Err(err) = self.compare(e) {
            self.fail(&err);
        }
    }

    /// Compares the run's entries for one event of its range with the event.
    fn compare(&mut self, e: &LogEvent<'_>) -> Result<()> {
        let p = e.position;
        self.events += 1;
        if p == self.last {
            self.totals_at_last = Some((e.streams_so_far, e.types_so_far));
        }
        match self.run.location(p)? {
            Some(l) if l == e.location => {}
            got => {
                let said = got.map_or("nothing".into(), |l| {
                    format!("segment {} offset {}", l.segment, l.offset)
                });
                self.mismatch(
                    Some(self.run.location_offset(p)),
                    format!(
                        "position {p}: the run locates it at {said}, the log has it at segment \
                         {} offset {}",
                        e.location.segment, e.location.offset
                    ),
                );
            }
        }
        for table in [Table::Streams, Table::Types] {
            let (name, kind) = match table {
                Table::Streams => (e.stream, "stream"),
                Table::Types => (e.event_type, "event type"),
            };
            let names = match table {
                Table::Streams => &mut self.streams,
                Table::Types => &mut self.types,
            };
            let check = match names.get_mut(name) {
                Some(c) => c,
                None => {
                    let entry = self.run.find(table, name)?;
                    names.entry(name.into()).or_insert(NameCheck {
                        entry,
                        seen: 0,
                        mismatched: false,
                    })
                }
            };
            let seen = check.seen;
            check.seen += 1;
            let Some((first_revision, start, end)) = check.entry else {
                if seen == 0 {
                    self.mismatch(
                        None,
                        format!("{kind} '{name}' (position {p}) is not in the run"),
                    );
                }
                continue;
            };
            // Where the event must be listed: a stream's postings are by revision; a type's
            // are in position order, so it is looked up. Neither depends on the events seen
            // before, so a stretch of the log hidden by damage does not shift the comparison.
            let (k, problem) = match table {
                Table::Streams => {
                    let k = e
                        .revision
                        .checked_sub(first_revision)
                        .and_then(|i| start.checked_add(i))
                        .filter(|&k| k < end);
                    let problem = match k {
                        None => Some(format!(
                            "stream '{name}': revision {} (position {p}) is not among the run's \
                             postings, which hold revisions {first_revision}..={}",
                            e.revision,
                            first_revision.saturating_add(end - start - 1)
                        )),
                        Some(k) => {
                            let listed = self.run.posting(table, k)?;
                            (listed != p).then(|| {
                                format!(
                                    "stream '{name}': revision {} is listed at position \
                                     {listed}, the log has it at position {p}",
                                    e.revision
                                )
                            })
                        }
                    };
                    (k, problem)
                }
                Table::Types => {
                    let k = self.run.posting_partition(table, start, end, p)?;
                    let listed = if k < end {
                        Some(self.run.posting(table, k)?)
                    } else {
                        None
                    };
                    let problem = (listed != Some(p)).then(|| {
                        format!("event type '{name}': position {p} is not among its postings")
                    });
                    (Some(k.min(end.saturating_sub(1))), problem)
                }
            };
            let Some(problem) = problem else { continue };
            // One report per name: after a first difference the rest of its list often
            // differs too.
            if std::mem::replace(&mut check.mismatched, true) {
                self.more += 1;
                continue;
            }
            self.mismatch(k.map(|k| self.run.posting_offset(table, k)), problem);
        }
        self.ids_hash = self.ids_hash.wrapping_add(id_hash(e.id, p));
        Ok(())
    }

    /// The checks once the log is past the run's range: counts per name, the id table's
    /// order, and the totals in the trailer.
    fn end_checks(&mut self, totals_known: bool) -> Result<()> {
        if self.failed {
            return Ok(());
        }
        // Holes (positions compaction removed) are not events.
        let n = self.run.trailer().events;
        if self.events != n {
            self.mismatch(
                None,
                format!(
                    "the run over positions {}..={} holds {n} events, the log holds {} events \
                     there",
                    self.first, self.last, self.events
                ),
            );
        }
        let mut reasons = Vec::new();
        for table in [Table::Streams, Table::Types] {
            let (kind, names) = match table {
                Table::Streams => ("stream", &self.streams),
                Table::Types => ("event type", &self.types),
            };
            for posting in self.run.iter_postings(table) {
                let posting = posting?;
                let listed = posting.positions.len() as u64;
                let seen = names.get(&*posting.name).map_or(0, |c| c.seen);
                if listed != seen && reasons.len() < MISMATCHES_PER_RUN {
                    reasons.push(format!(
                        "{kind} '{}' has {listed} events in the run, {seen} in the log",
                        posting.name
                    ));
                } else if listed != seen {
                    self.more += 1;
                }
            }
        }
        let mut previous: Option<(u128, u64)> = None;
        let mut table_hash = 0u64;
        let mut entries = 0u64;
        for (k, item) in self.run.iter_ids().enumerate() {
            let (id, position) = item?;
            table_hash = table_hash.wrapping_add(id_hash(id, position));
            entries += 1;
            let ordered = previous.is_none_or(|p| p < (id, position));
            if !ordered || position < self.first || position > self.last {
                reasons.push(format!(
                    "id table entry {k} (position {position}) is out of order or outside the \
                     run's range"
                ));
                break;
            }
            previous = Some((id, position));
        }
        if reasons.is_empty() && (entries != self.events || table_hash != self.ids_hash) {
            reasons.push(format!(
                "the id table ({entries} entries) does not hold exactly the ids of the {} events \
                 of the log in positions {}..={}",
                self.events, self.first, self.last
            ));
        }
        for reason in reasons {
            self.mismatch(None, reason);
        }
        if let (true, Some((streams, types))) = (totals_known, self.totals_at_last) {
            let t = *self.run.trailer();
            if (t.streams_total, t.types_total) != (streams, types) {
                let reason = format!(
                    "the trailer counts {} streams and {} event types in positions 1..={}, the \
                     log has {streams} and {types}",
                    t.streams_total, t.types_total, self.last
                );
                self.mismatch(None, reason);
            }
        }
        Ok(())
    }
}

/// A well-mixed 64-bit hash of one (id, position) pair; summed, it hashes a multiset.
fn id_hash(id: u128, position: u64) -> u64 {
    let mut z = (id as u64)
        ^ ((id >> 64) as u64).rotate_left(29)
        ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod test;
mod tracking;
