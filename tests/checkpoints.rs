//! Index checkpoints: a store opened from its checkpoints plus a replayed tail answers every read
//! exactly like the same log indexed from scratch, and checkpoint files that are damaged,
//! truncated, stale or foreign are ignored and rebuilt from the log, never trusted.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::XorShift;
use statestore::{
    Config, Direction, EventData, ExpectedRevision, Filter, Position, RecordedEvent, Revision,
    Store, StreamAppend, StreamFilter,
};

const STREAMS: &[&str] = &[
    "order-1", "order-2", "order-3", "order-44", "acct-1", "acct-2", "cart-9", "x", "y-1", "y-2",
];
const TYPES: &[&str] = &["Placed", "Paid", "Shipped", "Note", "Closed"];

fn config(checkpoint_events: u64) -> Config {
    Config {
        checkpoint_events,
        checkpoint_interval: Duration::ZERO,
        ..common::config()
    }
}

/// Appends `commits` random commits: one or several streams, 1..6 events each, ids from a
/// counter (some events without an id), expected revisions exact, any or no-stream.
fn workload(store: &Store, rng: &mut XorShift, commits: usize, next_id: &mut u64) {
    workload_with(store, rng, commits, next_id, false)
}

/// Like [`workload`]; with `all_ids` every event has a client id, so that two stores given the
/// same workload hold the same events.
fn workload_with(
    store: &Store,
    rng: &mut XorShift,
    commits: usize,
    next_id: &mut u64,
    all_ids: bool,
) {
    for _ in 0..commits {
        let parts_n = if rng.below(4) == 0 {
            2 + rng.below(3)
        } else {
            1
        };
        let mut streams: Vec<&str> = Vec::new();
        while (streams.len() as u64) < parts_n {
            let s = STREAMS[rng.below(STREAMS.len() as u64) as usize];
            if !streams.contains(&s) {
                streams.push(s);
            }
        }
        let parts = streams
            .into_iter()
            .map(|s| {
                let expected = match (store.stream_revision(s).unwrap(), rng.below(3)) {
                    (Some(r), 0) => ExpectedRevision::Exact(r),
                    (None, 0) => ExpectedRevision::NoStream,
                    _ => ExpectedRevision::Any,
                };
                let events = (0..1 + rng.below(6))
                    .map(|_| {
                        *next_id += 1;
                        let t = TYPES[rng.below(TYPES.len() as u64) as usize];
                        let e = EventData::json(t, format!("{{\"n\":{next_id}}}"));
                        if rng.below(8) == 0 && !all_ids {
                            e
                        } else {
                            e.with_id(common::id(*next_id))
                        }
                    })
                    .collect();
                StreamAppend::new(s, expected, events)
            })
            .collect();
        store.append_multi(parts).expect("append");
    }
}

/// An event as text: every stored field but the commit timestamp.
fn show(e: &RecordedEvent) -> String {
    format!(
        "{}:{}@{} {} {:?} {:?} {:?}",
        e.position.0,
        e.stream(),
        e.revision.0,
        e.event_type(),
        e.id_bytes(),
        e.data(),
        e.metadata()
    )
}

fn show_events(r: statestore::Result<Vec<RecordedEvent>>) -> String {
    match r {
        Ok(events) => events.iter().map(show).collect::<Vec<_>>().join("\n"),
        Err(e) => format!("Err({e:?})"),
    }
}

/// Every read the store offers, each answer rendered as text (errors included).
fn answers(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let s = store.stats();
    out.push(format!(
        "stats {:?} {} {}",
        s.last_position, s.streams, s.event_types
    ));
    let last = s.last_position.0;
    for &stream in STREAMS.iter().chain(&["missing", "order"]) {
        out.push(format!(
            "revision {stream} {:?}",
            store.stream_revision(stream)
        ));
        for (from, direction, count) in [
            (Revision(0), Direction::Forwards, 10_000),
            (Revision::END, Direction::Backwards, 10_000),
            (Revision(3), Direction::Forwards, 5),
            (Revision(7), Direction::Backwards, 4),
            (Revision(1_000_000), Direction::Forwards, 3),
        ] {
            out.push(format!(
                "stream {stream} {from:?} {direction:?} {count} {}",
                show_events(store.read_stream(stream, from, direction, count))
            ));
        }
    }
    for &t in TYPES.iter().chain(&["Nothing"]) {
        for (from, direction, count) in [
            (Position(0), Direction::Forwards, 10_000),
            (Position(last / 2), Direction::Forwards, 7),
            (Position::END, Direction::Backwards, 10_000),
            (Position(last / 3), Direction::Backwards, 5),
        ] {
            out.push(format!(
                "type {t} {from:?} {direction:?} {count} {}",
                show_events(store.read_by_type(t, from, direction, count))
            ));
        }
    }
    let filters = [
        Filter::default(),
        Filter {
            stream: Some(StreamFilter::Prefix("order-".into())),
            event_types: Vec::new(),
        },
        Filter {
            stream: None,
            event_types: vec!["Paid".into(), "Closed".into()],
        },
    ];
    for filter in &filters {
        for (from, direction) in [
            (Position(1), Direction::Forwards),
            (Position::END, Direction::Backwards),
        ] {
            let all = store
                .read_all(from, direction, 10_000, filter)
                .map(|slice| {
                    format!("{:?} {}", slice.scanned_to, slice.end_of_log)
                        + &show_events(Ok(slice.events))
                });
            out.push(format!("all {filter:?} {direction:?} {all:?}"));
        }
    }
    for p in [0, 1, last / 2, last, last + 1] {
        let e = store.read_event(Position(p)).map(|e| e.as_ref().map(show));
        out.push(format!("event {p} {e:?}"));
    }
    out
}

fn assert_same(got: &[String], want: &[String], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{what}");
    }
}

/// Copies a store directory (open or closed: under `FsyncPolicy::Always` a copy of a live
/// store is a crash image). Without `index`, the checkpoint files are left out.
fn copy_store(from: &Path, to: &Path, index: bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if path.is_file() && name != "LOCK" {
            std::fs::copy(&path, to.join(name)).unwrap();
        } else if path.is_dir() && name == "index" && index {
            copy_store(&path, &to.join(name), false);
        }
    }
}

fn run_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("index"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "idx"));
    v.sort();
    v
}

fn wait_for_checkpoint(store: &Store, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().checkpoint_position.0 < at_least {
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached {at_least}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn restart_after_checkpoints_with_a_tail_answers_like_a_rebuild() {
    for seed in [1u64, 2, 3] {
        let mut rng = XorShift::new(seed);
        let root = common::tempdir();
        let live = root.path().join("live");
        let mut next_id = 0;
        let store = Store::open(&live, config(64)).unwrap();
        workload(&store, &mut rng, 250, &mut next_id);
        wait_for_checkpoint(&store, store.last_position().0 - 64);
        store.close().unwrap();
        // Reopened with checkpoints too far apart to trigger: a tail they do not cover.
        let store = Store::open(&live, config(1 << 40)).unwrap();
        workload(&store, &mut rng, 10, &mut next_id);
        let from_live = answers(&store);

        let image = root.path().join("image");
        let scratch = root.path().join("scratch");
        copy_store(&live, &image, true);
        copy_store(&live, &scratch, false);
        drop(store);

        let loaded = Store::open(&image, config(1 << 40)).unwrap();
        let stats = loaded.stats();
        assert!(stats.index_runs >= 1, "seed {seed}: no checkpoint loaded");
        assert!(
            stats.memtable_events > 0 && stats.checkpoint_position.0 < stats.last_position.0,
            "seed {seed}: no tail replayed: {stats:?}"
        );
        let rebuilt = Store::open(&scratch, config(0)).unwrap();
        assert_eq!(rebuilt.stats().index_runs, 0);
        let want = answers(&rebuilt);
        assert_same(&want, &from_live, "rebuilt vs the live store");
        assert_same(&answers(&loaded), &want, "checkpoint + tail vs rebuilt");

        // Writing on, the two stay the same, including retries of appends made before the
        // checkpoint (idempotency looks ids up in the checkpoint files).
        let mut a_rng = XorShift::new(seed + 100);
        let mut b_rng = XorShift::new(seed + 100);
        let (mut a_id, mut b_id) = (next_id, next_id);
        workload_with(&loaded, &mut a_rng, 120, &mut a_id, true);
        workload_with(&rebuilt, &mut b_rng, 120, &mut b_id, true);
        for n in [1, 2, 5, 30, 77] {
            let e = rebuilt.read_event(Position(n)).unwrap().unwrap();
            let retry = |store: &Store| {
                let expected = match e.revision.0 {
                    0 => ExpectedRevision::NoStream,
                    r => ExpectedRevision::Exact(Revision(r - 1)),
                };
                store.append(
                    e.stream(),
                    expected,
                    vec![
                        EventData::json(e.event_type(), e.data_bytes())
                            .with_id(uuid::Uuid::from_slice(&e.id_bytes()).unwrap()),
                    ],
                )
            };
            assert_eq!(
                format!("{:?}", retry(&loaded)),
                format!("{:?}", retry(&rebuilt)),
                "retry of position {n}"
            );
        }
        assert_same(&answers(&loaded), &answers(&rebuilt), "after more appends");
        loaded.close().unwrap();
        rebuilt.close().unwrap();

        // Closed cleanly, the checkpoint covers everything: nothing to replay.
        let reopened = Store::open(&image, config(64)).unwrap();
        assert_eq!(reopened.stats().memtable_events, 0);
        let rebuilt = Store::open(&scratch, config(0)).unwrap();
        assert_same(&answers(&reopened), &answers(&rebuilt), "after reopening");
    }
}

/// A closed store with several checkpoint runs, and the answers of the same log indexed from
/// scratch.
fn checkpointed_store(root: &Path, seed: u64) -> (PathBuf, Vec<String>) {
    let dir = root.join(format!("base-{seed}"));
    let mut rng = XorShift::new(seed);
    let mut next_id = seed * 1_000_000;
    let store = Store::open(&dir, config(40)).unwrap();
    workload(&store, &mut rng, 150, &mut next_id);
    store.close().unwrap();
    assert!(!run_files(&dir).is_empty());
    let scratch = root.join(format!("scratch-{seed}"));
    copy_store(&dir, &scratch, false);
    let rebuilt = Store::open(&scratch, config(0)).unwrap();
    let want = answers(&rebuilt);
    (dir, want)
}

/// Opens a damaged copy, which must answer exactly like the rebuilt store.
fn open_and_compare(dir: &Path, want: &[String], what: &str) -> Store {
    let store = Store::open(dir, config(40)).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_same(&answers(&store), want, what);
    store
}

#[test]
fn damaged_truncated_stale_and_foreign_checkpoints_are_rebuilt_from_the_log() {
    let root = common::tempdir();
    let (base, want) = checkpointed_store(root.path(), 7);
    let runs = run_files(&base);
    let mut case = 0;
    let mut fresh = |name: &str| {
        case += 1;
        let d = root.path().join(format!("{case}-{name}"));
        copy_store(&base, &d, true);
        d
    };

    // The trailer, the block table, or a byte the open does not read: each is caught.
    for (name, from_end) in [("trailer", 5usize), ("block table", 170)] {
        for k in 0..runs.len() {
            let d = fresh(name);
            let f = run_files(&d)[k].clone();
            let mut b = std::fs::read(&f).unwrap();
            let at = b.len() - from_end;
            b[at] ^= 0x40;
            std::fs::write(&f, &b).unwrap();
            open_and_compare(&d, &want, &format!("{name} of run {k}"))
                .close()
                .unwrap();
            // Removed, or replaced by a new checkpoint of the same range.
            assert!(
                std::fs::read(&f).map_or(true, |now| now != b),
                "a damaged run was kept"
            );
        }
    }
    // Truncated at several lengths, empty, or garbage under a run's name.
    for cut in [1u64, 100, 4096] {
        let d = fresh("truncated");
        let f = run_files(&d)[0].clone();
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len.saturating_sub(cut))
            .unwrap();
        open_and_compare(&d, &want, &format!("truncated by {cut}"));
    }
    let d = fresh("garbage");
    let f = run_files(&d)[0].clone();
    std::fs::write(&f, vec![0xAB; 10_000]).unwrap();
    open_and_compare(&d, &want, "garbage");
    let d = fresh("empty");
    std::fs::write(&run_files(&d)[0], b"").unwrap();
    open_and_compare(&d, &want, "empty");

    // Another format version, with a valid trailer checksum.
    let d = fresh("version");
    let f = run_files(&d)[0].clone();
    let mut b = std::fs::read(&f).unwrap();
    let t = b.len() - 168;
    b[t + 8..t + 12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&b[t..b.len() - 4]);
    let n = b.len();
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&f, &b).unwrap();
    open_and_compare(&d, &want, "format version 2");

    // Foreign: the checkpoints of another store of the same shape.
    let (other, _) = checkpointed_store(root.path(), 8);
    let d = fresh("foreign");
    std::fs::remove_dir_all(d.join("index")).unwrap();
    copy_store(&other.join("index"), &d.join("index"), false);
    open_and_compare(&d, &want, "foreign checkpoints");

    // Stale: checkpoints written later than the log they are put beside (a restore of the
    // segments from an older backup).
    let d = fresh("stale");
    let later = root.path().join("later");
    copy_store(&base, &later, true);
    let store = Store::open(&later, config(40)).unwrap();
    let mut rng = XorShift::new(99);
    let mut next_id = 9_000_000;
    workload(&store, &mut rng, 100, &mut next_id);
    store.close().unwrap();
    std::fs::remove_dir_all(d.join("index")).unwrap();
    copy_store(&later.join("index"), &d.join("index"), false);
    open_and_compare(&d, &want, "checkpoints newer than the log");

    // A flipped byte inside a data block is not read at open: the reads that need the block
    // fail with Corruption naming the file (never a wrong answer), the file is set aside, and
    // the next open rebuilds.
    let d = fresh("block");
    let f = run_files(&d)[0].clone();
    let mut b = std::fs::read(&f).unwrap();
    b[12] ^= 0x01;
    std::fs::write(&f, &b).unwrap();
    {
        let store = Store::open(&d, config(40)).unwrap();
        let got = answers(&store);
        let mut errors = 0;
        for (g, w) in got.iter().zip(&want) {
            if g != w {
                assert!(
                    g.contains("Corruption") && g.contains(".idx"),
                    "a damaged block gave a wrong answer: {g}"
                );
                errors += 1;
            }
        }
        assert!(errors > 0, "no read touched the damaged block");
        store.close().unwrap();
    }
    open_and_compare(&d, &want, "reopened after a damaged block");
}

#[test]
fn checkpoints_are_merged_and_old_runs_removed() {
    let root = common::tempdir();
    let dir = root.path().join("s");
    let store = Store::open(&dir, config(20)).unwrap();
    let mut rng = XorShift::new(5);
    let mut next_id = 0;
    for _ in 0..30 {
        workload(&store, &mut rng, 10, &mut next_id);
    }
    let last = store.last_position().0;
    store.close().unwrap();
    let runs = run_files(&dir);
    // Runs cover 1..=last without gap; a binary counter keeps O(log n) of them.
    let mut next = 1u64;
    for r in &runs {
        let name = r.file_stem().unwrap().to_str().unwrap();
        let (a, b) = name.split_once('-').unwrap();
        assert_eq!(a.parse::<u64>().unwrap(), next, "{runs:?}");
        next = b.parse::<u64>().unwrap() + 1;
    }
    assert_eq!(next, last + 1);
    let bound = 2 * (64 - (last / 20).leading_zeros()) as usize + 1;
    assert!(runs.len() <= bound, "{} runs for {last} events", runs.len());
    assert!(
        std::fs::read_dir(dir.join("index"))
            .unwrap()
            .flatten()
            .all(|e| e.path().extension().is_some_and(|x| x == "idx")),
        "temporary or merged-away files left behind"
    );
}

#[test]
fn checkpoints_off_keeps_no_files_and_still_reopens() {
    let root = common::tempdir();
    let dir = root.path().join("s");
    let store = Store::open(&dir, config(0)).unwrap();
    let mut rng = XorShift::new(11);
    let mut next_id = 0;
    workload(&store, &mut rng, 50, &mut next_id);
    let want = answers(&store);
    store.close().unwrap();
    assert!(run_files(&dir).is_empty());
    let store = Store::open(&dir, config(0)).unwrap();
    assert_same(&answers(&store), &want, "reopened without checkpoints");
}
