//! Unit tests of verify that rewrite index runs with the crate's own run writer: runs whose
//! checksums all hold but whose contents disagree with the log are damage, and runs an open
//! would not use are notes.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use super::*;
use crate::index::run::{self, Fingerprint, Posting, RunContents};
use crate::tools::NoProgress;
use crate::{Config, EventData, ExpectedRevision, Store};

fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("statestore-verify-")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// 400 events in 5 streams of 3 types and 64 KiB segments, written in two sessions that each
/// end with an index checkpoint (at close): two runs, 1..=200 and 201..=400.
fn build() -> tempfile::TempDir {
    let dir = tempdir();
    let config = Config {
        segment_bytes: 64 << 10,
        append_bytes_max: 16 << 10,
        checkpoint_events: 1_000_000,
        checkpoint_interval: Duration::ZERO,
        ..Config::default()
    };
    for session in 0..2u64 {
        let store = Store::open(dir.path(), config.clone()).unwrap();
        for i in session * 100..(session + 1) * 100 {
            let stream = format!("s-{}", i % 5);
            let events = (0..2)
                .map(|k| {
                    let t = ["A", "B", "C"][((i + k) % 3) as usize];
                    EventData::binary(t, vec![(i % 251) as u8 + 1; 200])
                })
                .collect();
            store.append(stream, ExpectedRevision::Any, events).unwrap();
        }
        store.close().unwrap();
    }
    let runs = runs(dir.path());
    assert_eq!(runs.len(), 2, "{runs:?}");
    dir
}

fn runs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(INDEX_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    v.sort();
    v
}

/// A run's contents, in memory, to change and write back.
struct Contents {
    first: u64,
    last: u64,
    streams_total: u64,
    types_total: u64,
    fingerprint: Fingerprint,
    locations: Vec<u64>,
    streams: Vec<Posting>,
    types: Vec<Posting>,
    ids: Vec<(u128, u64)>,
}

fn read(path: &Path) -> Contents {
    let r = Run::open(path).unwrap();
    let t = *r.trailer();
    Contents {
        first: t.first_position,
        last: t.last_position,
        streams_total: t.streams_total,
        types_total: t.types_total,
        fingerprint: t.fingerprint,
        locations: r.iter_locations().collect::<Result<_>>().unwrap(),
        streams: r
            .iter_postings(Table::Streams)
            .collect::<Result<_>>()
            .unwrap(),
        types: r
            .iter_postings(Table::Types)
            .collect::<Result<_>>()
            .unwrap(),
        ids: r.iter_ids().collect::<Result<_>>().unwrap(),
    }
}

/// Writes `c` over the run at `path` with the crate's run writer (so every checksum holds).
fn write(path: &Path, c: Contents) {
    let tmp = path.with_extension("rewrite");
    run::write_run(
        &tmp,
        RunContents {
            first_position: c.first,
            last_position: c.last,
            streams_total: c.streams_total,
            types_total: c.types_total,
            fingerprint: c.fingerprint,
            locations: Box::new(c.locations.into_iter().map(Ok)),
            streams: Box::new(c.streams.into_iter().map(Ok)),
            types: Box::new(c.types.into_iter().map(Ok)),
            ids: Box::new(c.ids.into_iter().map(Ok)),
        },
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn rewrite(path: &Path, change: impl FnOnce(&mut Contents)) {
    let mut c = read(path);
    change(&mut c);
    write(path, c);
}

fn check(dir: &Path) -> VerifyReport {
    verify(dir, &mut NoProgress).unwrap()
}

#[track_caller]
fn assert_run_damage(report: &VerifyReport, run: &Path, offset: Option<u64>, reason: &str) {
    let file = run.display().to_string();
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.file == file && d.offset == offset && d.reason.contains(reason)),
        "expected {file}:{offset:?} ({reason}) in:\n{report}"
    );
}

#[test]
fn tools_sound_store_and_rewritten_identical_run_verify() {
    let dir = build();
    let report = check(dir.path());
    assert!(report.is_sound(), "{report}");
    assert_eq!(report.events, 400);
    assert_eq!((report.streams, report.event_types), (5, 3));
    assert_eq!((report.index_runs, report.index_runs_used), (2, 2));
    assert_eq!(report.index_position, 400);
    // Written back unchanged by the run writer: still sound.
    let run = runs(dir.path())[0].clone();
    rewrite(&run, |_| {});
    assert!(check(dir.path()).is_sound());
}

#[test]
fn tools_a_wrong_location_is_damage_at_its_entry() {
    let dir = build();
    let path = runs(dir.path())[0].clone();
    let mut target = 0;
    rewrite(&path, |c| {
        // Two neighbours swap locations.
        c.locations.swap(4, 5);
        target = c.first + 4;
    });
    let report = check(dir.path());
    let run = Run::open(&path).unwrap();
    assert_run_damage(
        &report,
        &path,
        Some(run.location_offset(target)),
        &format!("position {target}: the run locates it"),
    );
    assert_run_damage(
        &report,
        &path,
        Some(run.location_offset(target + 1)),
        "the run locates it",
    );
    assert_eq!(report.damage.len(), 2, "{report}");
}

#[test]
fn tools_swapped_postings_between_streams_are_damage() {
    let dir = build();
    let path = runs(dir.path())[0].clone();
    rewrite(&path, |c| {
        let a = c.streams[0].positions[0];
        let b = c.streams[1].positions[0];
        c.streams[0].positions[0] = b;
        c.streams[1].positions[0] = a;
        c.streams[0].positions.sort_unstable();
        c.streams[1].positions.sort_unstable();
    });
    let report = check(dir.path());
    assert!(
        report.damage.iter().any(|d| d.reason.contains("stream 's-")
            && d.reason.contains("revision 0 is listed at position")
            && d.offset.is_some()),
        "{report}"
    );
}

#[test]
fn tools_a_type_posting_moved_to_another_type_is_damage() {
    let dir = build();
    let path = runs(dir.path())[0].clone();
    rewrite(&path, |c| {
        let p = c.types[0].positions.remove(0);
        c.types[1].positions.push(p);
        c.types[1].positions.sort_unstable();
    });
    let report = check(dir.path());
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.reason.contains("event type 'A'") && d.reason.contains("events in the run")),
        "{report}"
    );
}

#[test]
fn tools_a_wrong_first_revision_is_damage() {
    let dir = build();
    let path = runs(dir.path()).last().unwrap().clone();
    rewrite(&path, |c| c.streams[2].first_revision += 1);
    let report = check(dir.path());
    assert_run_damage(&report, &path, None, "is not among the run's postings");
}

#[test]
fn tools_a_changed_id_is_damage() {
    let dir = build();
    let path = runs(dir.path())[0].clone();
    rewrite(&path, |c| {
        let (id, p) = c.ids[7];
        c.ids[7] = (id ^ 1, p);
        c.ids.sort_unstable();
    });
    let report = check(dir.path());
    assert_run_damage(&report, &path, None, "does not hold exactly the ids of the");
}

#[test]
fn tools_wrong_totals_are_damage() {
    let dir = build();
    let path = runs(dir.path())[0].clone();
    rewrite(&path, |c| c.streams_total += 1);
    let report = check(dir.path());
    assert_run_damage(&report, &path, None, "the trailer counts");
}

#[test]
fn tools_a_run_past_the_log_is_damage() {
    let dir = build();
    let path = runs(dir.path()).last().unwrap().clone();
    // The same run, claiming ten more positions than the log has (and named for them).
    let mut c = read(&path);
    let extra = 10;
    c.last += extra;
    for k in 0..extra {
        let p = c.last - k;
        c.locations.push(*c.locations.last().unwrap());
        c.streams[0].positions.push(p);
        c.types[0].positions.push(p);
        c.ids.push((u128::MAX - u128::from(k), p));
    }
    c.streams[0].positions.sort_unstable();
    c.types[0].positions.sort_unstable();
    c.ids.sort_unstable();
    let (first, last) = (c.first, c.last);
    std::fs::remove_file(&path).unwrap();
    let path = path.with_file_name(checkpoint::run_file_name(first, last));
    write(&path, c);
    let report = check(dir.path());
    assert_run_damage(&report, &path, None, "the log holds");
    let trailer = std::fs::metadata(&path).unwrap().len() - TRAILER_BYTES as u64;
    assert_run_damage(
        &report,
        &path,
        Some(trailer + TRAILER_FINGERPRINT),
        "fingerprint",
    );
}

#[test]
fn tools_a_superseded_run_is_a_note() {
    let dir = build();
    let paths = runs(dir.path());
    // What a crash between a merge's rename and the removal of its inputs leaves.
    let opened: Vec<Arc<Run>> = paths
        .iter()
        .map(|p| Arc::new(Run::open(p).unwrap()))
        .collect();
    let merged = crate::index::merge_runs(&opened).unwrap();
    let name = checkpoint::run_file_name(merged.first_position, merged.last_position);
    let merged_path = dir.path().join(INDEX_DIR).join(name);
    run::write_run(&merged_path, merged).unwrap();
    drop(opened);
    let report = check(dir.path());
    assert!(report.is_sound(), "{report}");
    assert_eq!(report.index_runs, paths.len() as u64 + 1);
    assert_eq!(
        report.index_runs_used, 1,
        "the merged run replaces the others"
    );
    assert_eq!(report.index_position, 400);
    for p in &paths {
        let file = p.display().to_string();
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.file == file && n.reason.contains("other runs cover")),
            "{report}"
        );
    }
}

#[test]
fn tools_a_damaged_block_is_reported_without_setting_the_run_aside() {
    let dir = build();
    let path = runs(dir.path())[0].clone();
    let mut b = std::fs::read(&path).unwrap();
    b[9] ^= 0x10;
    std::fs::write(&path, b).unwrap();
    let report = check(dir.path());
    assert_run_damage(&report, &path, Some(0), "block checksum");
    assert!(path.exists(), "verify renamed the run");
    let mut damaged = path.clone().into_os_string();
    damaged.push(DAMAGED_SUFFIX);
    assert!(!Path::new(&damaged).exists());
}
