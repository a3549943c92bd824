//! `statestore verify`, through the library function and the binary, on stores written by the
//! engine: a sound store verifies with the figures that were written; damage in any file (a
//! covered sealed segment an open would not re-read, a segment header, an index run, the
//! snapshot log) is reported with its file and byte offset and exit code 1; an index run with
//! valid checksums but wrong contents is damage; a torn tail is a warning; a held lock is exit 2;
//! tracking entries are checked (parse, source, increasing positions).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::XorShift;
use statestore::tools::{NoProgress, Progress, VerifyReport};
use statestore::{
    Config, Error, EventData, ExpectedRevision, Revision, Store, StreamAppend, Tracking,
};

const BIN: &str = env!("CARGO_BIN_EXE_statestore");
const STREAMS: &[&str] = &["order-1", "order-2", "cart-7", "acct-3", "acct-4", "x"];
const TYPES: &[&str] = &["Placed", "Paid", "Shipped", "Noted"];
const SEGMENT_HEADER_BYTES: usize = 32;
const TRAILER_BYTES: usize = 168;

fn config() -> Config {
    Config {
        segment_bytes: 64 << 10,
        append_bytes_max: 16 << 10,
        checkpoint_events: 100,
        checkpoint_interval: Duration::ZERO,
        ..Config::default()
    }
}

/// What a store was given.
struct Written {
    events: u64,
    streams: usize,
    types: usize,
    snapshots: u64,
}

/// Writes 705 events (appends of 1..4 events) of about 300 bytes, so the log spans several
/// 64 KiB segments and the index several runs, and saves snapshots.
fn build(dir: &Path) -> Written {
    let store = Store::open(dir, config()).expect("open");
    let mut rng = XorShift::new(7);
    let mut events = 0u64;
    let mut streams = BTreeSet::new();
    let mut types = BTreeSet::new();
    while events < 700 {
        let s = STREAMS[rng.below(STREAMS.len() as u64) as usize];
        let n = 1 + rng.below(4);
        let batch: Vec<EventData> = (0..n)
            .map(|_| {
                events += 1;
                let t = TYPES[rng.below(TYPES.len() as u64) as usize];
                types.insert(t);
                EventData::binary(t, common::payload(&mut rng, 300)).with_id(common::id(events))
            })
            .collect();
        streams.insert(s);
        store
            .append(s, ExpectedRevision::Any, batch)
            .expect("append");
    }
    store.close().expect("close");
    // A second session: its index checkpoint at close is a run of its own (no merge at close),
    // so the index always has several runs.
    let store = open(dir);
    for _ in 0..5 {
        events += 1;
        store
            .append(
                "x",
                ExpectedRevision::Any,
                vec![EventData::json("Noted", "{}").with_id(common::id(events))],
            )
            .expect("append");
    }
    streams.insert("x");
    types.insert("Noted");
    let mut snapshots = 0;
    for s in ["order-1", "cart-7", "x"] {
        let current = store.stream_revision(s).expect("revision").expect("stream");
        for r in [0, current.0 / 2, current.0] {
            store
                .save_snapshot(s, Revision(r), "state.v1", Bytes::from(format!("{s}@{r}")))
                .expect("save snapshot");
        }
        snapshots += 3;
    }
    store.close().expect("close");
    Written {
        events,
        streams: streams.len(),
        types: types.len(),
        snapshots,
    }
}

fn store_dir() -> (tempfile::TempDir, Written) {
    let dir = common::tempdir();
    let written = build(dir.path());
    (dir, written)
}

/// Calls `f` again while it fails because the directory is locked, for up to 10 s. Tests run
/// on several threads of this process and some start processes: a child holds copies of this
/// process's file descriptors between its fork and its exec, so a lock released by closing a
/// store here can stay held for that moment.
fn unlocked<T>(mut f: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => return r,
        }
    }
}

fn open(dir: &Path) -> Store {
    unlocked(|| Store::open(dir, config())).expect("open")
}

fn lib_verify(dir: &Path) -> VerifyReport {
    unlocked(|| statestore::tools::verify(dir, &mut NoProgress)).expect("verification runs")
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The binary's verify, run again while it finds the directory locked (see [`unlocked`]).
fn bin_verify(dir: &Path, json: bool) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = bin_verify_once(dir, json);
        if out.code != 2 || !out.stderr.contains("locked") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn bin_verify_once(dir: &Path, json: bool) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("verify").arg("--data-dir").arg(dir);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run statestore verify");
    Output {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json_verify(dir: &Path) -> (i32, serde_json::Value) {
    let out = bin_verify(dir, true);
    let v = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("--json output is JSON ({e}): {}", out.stdout));
    (out.code, v)
}

fn index_runs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("index"))
        .expect("index directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    v.sort();
    v
}

/// (offset, bytes) of every frame of a segment, walking the lengths.
fn frames(segment: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(segment).expect("read segment");
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((at, 8 + len));
        at += 8 + len;
    }
    out
}

fn flip_bit(path: &Path, offset: usize, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[track_caller]
fn assert_damage_at(report: &VerifyReport, file: &Path, offset: Option<u64>, reason: &str) {
    let file = file.display().to_string();
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.file == file && d.offset == offset && d.reason.contains(reason)),
        "expected damage {file}:{offset:?} ({reason}) in:\n{report}"
    );
}

#[test]
fn a_sound_store_verifies_with_the_figures_written() {
    let (dir, written) = store_dir();
    let segments = common::segment_files(dir.path());
    let runs = index_runs(dir.path());
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    assert!(!runs.is_empty(), "index runs were written");

    let report = lib_verify(dir.path());
    assert!(report.sound && report.is_sound(), "{report}");
    assert!(
        report.damage.is_empty() && report.warnings.is_empty(),
        "{report}"
    );
    assert_eq!(report.events, written.events);
    assert_eq!(report.first_position, Some(1));
    assert_eq!(report.last_position, Some(written.events));
    assert_eq!(report.segments, segments.len() as u64);
    assert_eq!(report.streams, written.streams as u64);
    assert_eq!(report.event_types, written.types as u64);
    assert_eq!(report.index_runs, runs.len() as u64);
    assert_eq!(report.index_runs_used, runs.len() as u64);
    assert_eq!(report.index_position, written.events);
    assert_eq!(report.snapshots, written.snapshots);
    assert_eq!(report.snapshot_streams, 3);
    let file_bytes: u64 = segments
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .sum();
    assert_eq!(report.segment_file_bytes, file_bytes);
    let frame_bytes: usize = segments.iter().flat_map(|s| frames(s)).map(|f| f.1).sum();
    assert_eq!(report.event_bytes, frame_bytes as u64);

    let out = bin_verify(dir.path(), false);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("result: sound"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("positions 1..={}", written.events)),
        "{}",
        out.stdout
    );

    let (code, v) = json_verify(dir.path());
    assert_eq!(code, 0);
    assert_eq!(v["sound"], true);
    assert_eq!(v["events"], written.events);
    assert_eq!(v["first_position"], 1);
    assert_eq!(v["last_position"], written.events);
    assert_eq!(v["segments"], segments.len());
    assert_eq!(v["index_runs"], runs.len());
    assert_eq!(v["snapshots"], written.snapshots);
    assert_eq!(v["damage"].as_array().map(Vec::len), Some(0));
    // The same report through both doors.
    assert_eq!(v, serde_json::to_value(&report).unwrap());
}

#[test]
fn verify_reads_but_changes_nothing() {
    let (dir, _) = store_dir();
    let snapshot = |dir: &Path| -> HashMap<PathBuf, Vec<u8>> {
        let mut files = HashMap::new();
        for sub in [dir.to_path_buf(), dir.join("index"), dir.join("snapshots")] {
            for e in std::fs::read_dir(&sub).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() && p.file_name().unwrap() != "LOCK" {
                    files.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        files
    };
    // Damage in an index run: a lookup would set the file aside, verify must not.
    let run = index_runs(dir.path())[0].clone();
    flip_bit(&run, 10, 3);
    let before = snapshot(dir.path());
    assert!(!lib_verify(dir.path()).is_sound());
    assert_eq!(bin_verify(dir.path(), false).code, 1);
    assert_eq!(snapshot(dir.path()), before, "verify changed the directory");
}

#[test]
fn a_bit_flip_in_a_covered_sealed_segment_is_damage_with_file_and_offset() {
    let (dir, written) = store_dir();
    let segment = common::segment_files(dir.path())[0].clone();
    let (offset, len) = frames(&segment)[3];
    flip_bit(&segment, offset + len - 5, 2);

    // The index checkpoints cover that segment, so an open does not re-read it.
    // An open does not notice.
    let store = open(dir.path());
    assert_eq!(store.last_position().0, written.events);
    store.close().unwrap();

    let report = lib_verify(dir.path());
    assert_damage_at(&report, &segment, Some(offset as u64), "checksum");
    assert_eq!(
        report.damage.len(),
        1,
        "one damaged spot, one finding:\n{report}"
    );
    // The events before the damaged frame and every later segment were still read.
    assert!(report.events < written.events, "{report}");
    assert_eq!(report.first_position, Some(1));
    assert_eq!(report.last_position, Some(written.events));

    let out = bin_verify(dir.path(), false);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let line = format!("{}:{offset}: ", segment.display());
    assert!(out.stdout.contains(&line), "{line} in:\n{}", out.stdout);
    assert!(out.stdout.contains("result: DAMAGED"), "{}", out.stdout);

    let (code, v) = json_verify(dir.path());
    assert_eq!(code, 1);
    assert_eq!(v["sound"], false);
    assert_eq!(v["damage"][0]["file"], segment.display().to_string());
    assert_eq!(v["damage"][0]["offset"], offset);
    assert_eq!(v["events"], report.events);
}

#[test]
fn damage_in_several_segments_is_all_reported() {
    let (dir, _) = store_dir();
    let segments = common::segment_files(dir.path());
    let mut expected = Vec::new();
    for segment in &segments[..segments.len() - 1] {
        let (offset, _) = frames(segment)[1];
        flip_bit(segment, offset + 8 + 20, 0);
        expected.push((segment.clone(), offset));
    }
    let report = lib_verify(dir.path());
    for (segment, offset) in &expected {
        assert_damage_at(&report, segment, Some(*offset as u64), "checksum");
    }
    assert_eq!(report.damage.len(), expected.len(), "{report}");
}

#[test]
fn a_flipped_segment_header_byte_is_damage() {
    let (dir, _) = store_dir();
    let segment = common::segment_files(dir.path())[1].clone();
    flip_bit(&segment, 17, 1);
    let report = lib_verify(dir.path());
    assert_damage_at(&report, &segment, Some(0), "header checksum");
    assert_eq!(bin_verify(dir.path(), false).code, 1);
}

#[test]
fn a_flipped_byte_in_an_index_run_is_damage_naming_the_run() {
    let (dir, _) = store_dir();
    let run = index_runs(dir.path())[0].clone();
    flip_bit(&run, 4096 + 17, 6);
    let report = lib_verify(dir.path());
    assert_damage_at(&report, &run, Some(4096), "block checksum");
    let (code, v) = json_verify(dir.path());
    assert_eq!(code, 1);
    assert!(
        v["damage"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["file"] == run.display().to_string() && d["offset"] == 4096),
        "{v}"
    );
}

#[test]
fn a_flipped_byte_in_an_index_trailer_is_damage() {
    let (dir, _) = store_dir();
    let run = index_runs(dir.path())[0].clone();
    let len = std::fs::metadata(&run).unwrap().len() as usize;
    flip_bit(&run, len - TRAILER_BYTES + 20, 0);
    let report = lib_verify(dir.path());
    assert_damage_at(
        &report,
        &run,
        Some((len - TRAILER_BYTES) as u64),
        "trailer checksum",
    );
}

#[test]
fn a_flipped_byte_in_the_snapshot_log_is_damage() {
    let (dir, _) = store_dir();
    let log = dir.path().join("snapshots").join("snapshots.log");
    // Inside the first record (after the 16-byte header): a whole record follows, so it is
    // damage, not a torn tail.
    flip_bit(&log, 16 + 8 + 40 + 1, 4);
    let report = lib_verify(dir.path());
    assert_damage_at(&report, &log, Some(16), "checksum");
    let out = bin_verify(dir.path(), false);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains(&format!("{}:16: ", log.display())),
        "{}",
        out.stdout
    );
}

#[test]
fn a_torn_snapshot_record_at_the_end_is_a_warning() {
    let (dir, _) = store_dir();
    let log = dir.path().join("snapshots").join("snapshots.log");
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 3).unwrap();
    let report = lib_verify(dir.path());
    assert!(report.is_sound(), "{report}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.file == log.display().to_string() && w.reason.contains("torn tail")),
        "{report}"
    );
}

/// Rewrites the location of the run's first position (one byte further into its segment) and
/// seals every checksum again, as docs/FORMAT.md describes them.
fn reseal_with_wrong_location(run: &Path) -> u64 {
    let mut b = std::fs::read(run).unwrap();
    let t = b.len() - TRAILER_BYTES;
    let first = le_u64(&b, t + 16);
    let crcs = le_u64(&b, t + 64 + 8 * 9) as usize;
    assert_eq!(le_u64(&b, t + 64), 0, "locations start the file");
    let location = le_u64(&b, 0) + 1;
    b[..8].copy_from_slice(&location.to_le_bytes());
    let block0 = crc32fast::hash(&b[..4096]);
    b[crcs..crcs + 4].copy_from_slice(&block0.to_le_bytes());
    let table = crc32fast::hash(&b[crcs..t]);
    b[t + 156..t + 160].copy_from_slice(&table.to_le_bytes());
    let trailer = crc32fast::hash(&b[t..t + 164]);
    b[t + 164..t + 168].copy_from_slice(&trailer.to_le_bytes());
    std::fs::write(run, b).unwrap();
    first
}

#[test]
fn an_index_run_with_valid_checksums_but_wrong_contents_is_damage() {
    let (dir, _) = store_dir();
    let run = index_runs(dir.path())[0].clone();
    let first = reseal_with_wrong_location(&run);
    // An open accepts the run: its checksums hold and its last event matches the log.
    open(dir.path()).close().unwrap();
    assert!(run.exists(), "the open kept the run");

    let report = lib_verify(dir.path());
    assert_damage_at(
        &report,
        &run,
        Some(0),
        &format!("position {first}: the run locates it"),
    );
    assert_eq!(report.damage.len(), 1, "{report}");
    assert_eq!(bin_verify(dir.path(), false).code, 1);
}

#[test]
fn swapped_run_names_are_damage() {
    let (dir, _) = store_dir();
    let runs = index_runs(dir.path());
    let (a, b) = (&runs[0], &runs[1]);
    let tmp = a.with_extension("swap");
    std::fs::rename(a, &tmp).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&tmp, b).unwrap();
    let report = lib_verify(dir.path());
    for run in [a, b] {
        assert!(
            report
                .damage
                .iter()
                .any(|d| d.file == run.display().to_string() && d.reason.contains("file name")),
            "{report}"
        );
    }
    assert_eq!(report.index_runs_used, 0, "{report}");
    assert_eq!(bin_verify(dir.path(), false).code, 1);
}

#[test]
fn a_frame_with_a_valid_checksum_but_a_wrong_revision_is_damage() {
    let (dir, _) = store_dir();
    let segment = common::segment_files(dir.path())[1].clone();
    let (offset, len) = frames(&segment)[2];
    let mut b = std::fs::read(&segment).unwrap();
    let revision = le_u64(&b, offset + 8 + 8) + 5;
    b[offset + 16..offset + 24].copy_from_slice(&revision.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&b[offset..offset + 4]);
    h.update(&b[offset + 8..offset + len]);
    let crc = h.finalize();
    b[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segment, b).unwrap();
    let report = lib_verify(dir.path());
    assert_damage_at(
        &report,
        &segment,
        Some(offset as u64),
        &format!("revision {revision} does not follow"),
    );
}

#[test]
fn a_torn_tail_in_the_active_segment_is_a_warning() {
    let (dir, written) = store_dir();
    let active = common::segment_files(dir.path()).pop().unwrap();
    let end = frames(&active)
        .last()
        .map_or(SEGMENT_HEADER_BYTES, |&(o, l)| o + l);
    // What a crash leaves of a group write: a frame's length and some of its bytes.
    let mut b = std::fs::read(&active).unwrap();
    b[end..end + 4].copy_from_slice(&200u32.to_le_bytes());
    for (i, x) in b[end + 4..end + 60].iter_mut().enumerate() {
        *x = 0x5A ^ i as u8;
    }
    std::fs::write(&active, b).unwrap();

    let report = lib_verify(dir.path());
    assert!(report.is_sound(), "{report}");
    assert_eq!(report.events, written.events);
    let warning = report
        .warnings
        .iter()
        .find(|w| w.file == active.display().to_string())
        .unwrap_or_else(|| panic!("a torn-tail warning:\n{report}"));
    assert_eq!(warning.offset, Some(end as u64));
    assert!(
        warning.reason.contains("truncated at the next open"),
        "{warning}"
    );
    let out = bin_verify(dir.path(), false);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("warnings:"), "{}", out.stdout);

    // The next open truncates it; then there is nothing to warn about.
    open(dir.path()).close().unwrap();
    assert!(lib_verify(dir.path()).warnings.is_empty());
}

#[test]
fn leftover_files_are_notes_and_warnings_not_damage() {
    let (dir, _) = store_dir();
    let index = dir.path().join("index");
    let run = index_runs(dir.path())[0].clone();
    let name = run.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::write(index.join(format!("{name}.tmp")), b"half written").unwrap();
    std::fs::copy(
        &run,
        index.join("00000000000000000001-00000000000000000002.idx.damaged"),
    )
    .unwrap();
    std::fs::write(index.join("README"), b"?").unwrap();
    std::fs::write(dir.path().join("next.seg.prealloc"), vec![0u8; 4096]).unwrap();
    std::fs::write(
        dir.path().join("snapshots").join("snapshots.log.compact"),
        b"cut short",
    )
    .unwrap();
    let report = lib_verify(dir.path());
    assert!(report.is_sound(), "{report}");
    assert_eq!(report.warnings.len(), 1, "the .damaged run:\n{report}");
    // The .tmp run, the stray file, the compaction leftover; the pre-allocated segment is a
    // normal part of a closed store.
    assert_eq!(report.notes.len(), 3, "{report}");
    assert_eq!(bin_verify(dir.path(), false).code, 0);
}

#[test]
fn a_held_lock_is_exit_2_naming_the_holder() {
    let (dir, _) = store_dir();
    let store = open(dir.path());
    match statestore::tools::verify(dir.path(), &mut NoProgress) {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
        other => panic!("expected Locked, got {other:?}"),
    }
    let out = bin_verify_once(dir.path(), false);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("locked"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&std::process::id().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    store.close().unwrap();
    assert_eq!(bin_verify(dir.path(), false).code, 0);
}

#[test]
fn a_missing_or_foreign_directory_is_exit_2() {
    let dir = common::tempdir();
    let missing = dir.path().join("nope");
    let out = bin_verify(&missing, false);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    let out = bin_verify(dir.path(), true);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no segment files"), "{}", out.stderr);
    assert!(
        !dir.path().join("LOCK").exists(),
        "no lock file left behind"
    );
}

/// Records progress calls.
#[derive(Default)]
struct Recorder {
    updates: Vec<(String, u64, u64)>,
    finished: u32,
}

impl Progress for Recorder {
    fn update(&mut self, stage: &str, done: u64, total: u64) {
        self.updates.push((stage.to_string(), done, total));
    }

    fn finish(&mut self) {
        self.finished += 1;
    }
}

#[test]
fn progress_counts_up_to_every_byte_read() {
    let (dir, _) = store_dir();
    let mut total = 0;
    for sub in [dir.path().to_path_buf(), dir.path().join("index")] {
        for e in std::fs::read_dir(sub).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap();
            if name.ends_with(".seg") || name.ends_with(".idx") {
                total += std::fs::metadata(&p).unwrap().len();
            }
        }
    }
    total += std::fs::metadata(dir.path().join("snapshots/snapshots.log"))
        .unwrap()
        .len();
    let mut rec = Recorder::default();
    unlocked(|| statestore::tools::verify(dir.path(), &mut rec)).unwrap();
    assert_eq!(rec.finished, 1);
    assert!(rec.updates.len() >= 3, "{:?}", rec.updates);
    assert!(
        rec.updates.windows(2).all(|w| w[0].1 <= w[1].1),
        "done never goes back"
    );
    assert!(rec.updates.iter().all(|u| u.2 == total && u.1 <= total));
    assert_eq!(rec.updates.last().unwrap().1, total);
    let stages: BTreeSet<&str> = rec.updates.iter().map(|u| u.0.as_str()).collect();
    assert_eq!(
        stages,
        BTreeSet::from(["index runs", "segments", "snapshots"])
    );
}

/// Random damage to every kind of file never makes verify panic: it returns a report (or an
/// error for a file it cannot read), and the report is sound exactly when it lists no damage.
#[test]
fn random_damage_never_panics() {
    let template = common::tempdir();
    build(template.path());
    let mut files: Vec<PathBuf> = common::segment_files(template.path());
    files.extend(index_runs(template.path()));
    files.push(template.path().join("snapshots/snapshots.log"));
    let mut rng = XorShift::new(0x5eed);
    let rounds = 100;
    let mut found = 0;
    for round in 0..rounds {
        let dir = common::tempdir();
        for sub in ["", "index", "snapshots"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for f in &files {
            let rel = f.strip_prefix(template.path()).unwrap();
            std::fs::copy(f, dir.path().join(rel)).unwrap();
        }
        let victim = &files[rng.below(files.len() as u64) as usize];
        let path = dir
            .path()
            .join(victim.strip_prefix(template.path()).unwrap());
        let mut b = std::fs::read(&path).unwrap();
        match round % 4 {
            // Scattered bit flips.
            0 | 1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] ^= 1 << rng.below(8);
                }
            }
            // Cut short.
            2 => b.truncate(rng.below(b.len() as u64) as usize),
            // A stretch of garbage.
            _ => {
                let at = rng.below(b.len() as u64) as usize;
                let n = (1 + rng.below(4096) as usize).min(b.len() - at);
                for x in &mut b[at..at + n] {
                    *x = rng.next_u64() as u8;
                }
            }
        }
        std::fs::write(&path, b).unwrap();
        match statestore::tools::verify(dir.path(), &mut NoProgress) {
            Ok(report) => {
                assert_eq!(report.sound, report.damage.is_empty(), "{report}");
                found += usize::from(!report.sound || !report.warnings.is_empty());
            }
            Err(e) => panic!("round {round}: verification failed: {e}"),
        }
    }
    // Nearly every change is seen (a flip in the zeros after an active segment's last frame
    // may look like a torn write; a cut inside them changes nothing).
    assert!(
        found >= rounds * 3 / 4,
        "{found} of {rounds} damaged copies noticed"
    );
}

/// A store with tracked commits: source `proj-a` at 100, 200, 300 (with an output each),
/// source `proj-b` at 1, 2, 3 (tracking only), then one ordinary event so that no tracking
/// record is the last of the log (an index run's fingerprint reads the last event).
fn build_tracked(dir: &Path) {
    let store = Store::open(dir, config()).expect("open");
    let tracked = |source: &str, position: u64| {
        Some(Tracking {
            source: source.into(),
            position,
            expected: None,
        })
    };
    for (n, position) in [100u64, 200, 300].into_iter().enumerate() {
        let part = StreamAppend::new(
            "out-1",
            ExpectedRevision::Any,
            vec![EventData::json("Derived", "{}").with_id(common::id(n as u64 + 1))],
        );
        store
            .commit(vec![part], tracked("proj-a", position), "")
            .expect("tracked commit");
    }
    for position in 1..=3 {
        store
            .commit(Vec::new(), tracked("proj-b", position), "")
            .expect("tracking-only commit");
    }
    store
        .append(
            "x",
            ExpectedRevision::Any,
            vec![EventData::json("Noted", "{}").with_id(common::id(99))],
        )
        .expect("append");
    store.close().expect("close");
}

/// Replaces `from` by `to` (same length) inside the one frame of `segment` that holds `from`,
/// and gives the frame a valid CRC again; returns the frame's offset.
fn rewrite_frame(segment: &Path, from: &str, to: &str) -> u64 {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(segment).unwrap();
    let (offset, len) = frames(segment)
        .into_iter()
        .find(|&(o, l)| {
            b[o..o + l]
                .windows(from.len())
                .any(|w| w == from.as_bytes())
        })
        .unwrap_or_else(|| panic!("no frame holds {from}"));
    let at = offset
        + b[offset..offset + len]
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&b[offset..offset + 4]);
    h.update(&b[offset + 8..offset + len]);
    let crc = h.finalize();
    b[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(segment, b).unwrap();
    offset as u64
}

#[test]
fn tracking_entries_verify_and_broken_ones_are_damage() {
    let dir = common::tempdir();
    build_tracked(dir.path());
    let report = lib_verify(dir.path());
    assert!(report.is_sound(), "{report}");
    assert_eq!(report.tracking_sources, 2, "{report}");
    assert_eq!(report.tracking_entries, 6, "{report}");
    assert!(
        bin_verify(dir.path(), false)
            .stdout
            .contains("tracking     2 sources (6 entries)")
    );

    // Records changed after they were written, each with a valid frame CRC: a position that
    // goes back, a record naming another source, a record that no longer parses.
    let segment = common::segment_files(dir.path())[0].clone();
    let back = rewrite_frame(
        &segment,
        r#""source":"proj-a","position":300"#,
        r#""source":"proj-a","position":150"#,
    );
    let renamed = rewrite_frame(
        &segment,
        r#""source":"proj-b","position":2"#,
        r#""source":"proj-x","position":2"#,
    );
    let unparsable = rewrite_frame(
        &segment,
        r#""source":"proj-b","position":3"#,
        r#""source":"proj-b","pozition":3"#,
    );
    let report = lib_verify(dir.path());
    assert_damage_at(
        &report,
        &segment,
        Some(back),
        "tracking source 'proj-a': position 150",
    );
    assert_damage_at(
        &report,
        &segment,
        Some(renamed),
        "names the source 'proj-x'",
    );
    assert_damage_at(&report, &segment, Some(unparsable), "does not parse");
    assert_eq!(report.damage.len(), 3, "{report}");
    assert_eq!(bin_verify(dir.path(), false).code, 1);
}
