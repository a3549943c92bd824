//! Aggregate snapshots through the engine API: round trips, the at-or-below rule, pruning,
//! replacement, durability across reopen, deletion, reading a stream from its latest snapshot,
//! argument errors, and the recovery rules of the snapshot log (torn tail, damage, compaction).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use statestore::{
    Config, Direction, Error, EventData, ExpectedRevision, RecordedEvent, Revision, Snapshot, Store,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Bytes of the snapshot log's file header: the first record starts here.
const FILE_HEADER_BYTES: u64 = 16;

fn config() -> Config {
    common::config()
}

fn keep(n: usize) -> Config {
    Config {
        snapshot_keep: n,
        ..config()
    }
}

fn open(dir: &Path, config: Config) -> Store {
    Store::open(dir, config).expect("open the store")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("snapshots").join("snapshots.log")
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(log_path(dir))
        .expect("snapshot log exists")
        .len()
}

/// Appends `n` events to `stream` (which gets revisions up to its current + n).
fn append(store: &Store, stream: &str, n: u64) {
    let events = (0..n)
        .map(|i| EventData::json("Happened", format!("{{\"i\":{i}}}")))
        .collect();
    store
        .append(stream, ExpectedRevision::Any, events)
        .expect("append");
}

/// The state a test saves for `stream` at `revision`: recognisable, and with zero bytes and
/// non-UTF-8 bytes in it.
fn state(stream: &str, revision: u64, len: usize) -> Bytes {
    let mut v = format!("{stream}@{revision}:").into_bytes();
    v.extend_from_slice(&[0, 0xFF, 0xFE, 0]);
    let mut k = 0u8;
    while v.len() < len {
        v.push(k);
        k = k.wrapping_add(7);
    }
    v.truncate(len.max(1));
    Bytes::from(v)
}

fn save(store: &Store, stream: &str, revision: u64) {
    store
        .save_snapshot(
            stream,
            Revision(revision),
            "test.v1",
            state(stream, revision, 100),
        )
        .unwrap_or_else(|e| panic!("save {stream}@{revision}: {e}"));
}

/// The revision of the snapshot `load_snapshot` gives at or below `at`.
fn loaded(store: &Store, stream: &str, at: u64) -> Option<u64> {
    store
        .load_snapshot(stream, Revision(at))
        .expect("load")
        .map(|s| {
            assert_eq!(s.stream, stream);
            assert_eq!(
                s.data,
                state(stream, s.revision.0, s.data.len()),
                "data of {stream}@{}",
                s.revision
            );
            s.revision.0
        })
}

fn newest(store: &Store, stream: &str) -> Option<u64> {
    loaded(store, stream, u64::MAX)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn ids(events: &[RecordedEvent]) -> Vec<(u64, u64, uuid::Uuid)> {
    events
        .iter()
        .map(|e| (e.revision.0, e.position.0, e.id))
        .collect()
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

// ---------------------------------------------------------------------------------------------
// Round trips and the at-or-below rule

#[test]
fn a_saved_snapshot_loads_back_exactly() {
    let dir = common::tempdir();
    let store = open(dir.path(), config());
    append(&store, "order-42", 5);
    let data = state("order-42", 3, 5000);
    let before = now_us();
    store
        .save_snapshot("order-42", Revision(3), "order.v2", data.clone())
        .expect("save");
    let after = now_us();
    let s = store
        .load_snapshot("order-42", Revision::END)
        .expect("load")
        .expect("a snapshot");
    assert_eq!(s.stream, "order-42");
    assert_eq!(s.revision, Revision(3));
    assert_eq!(s.schema, "order.v2");
    assert_eq!(s.data, data);
    assert!(
        (before..=after).contains(&s.timestamp_us),
        "timestamp {} not in {before}..={after}",
        s.timestamp_us
    );
    // Empty state is a state too.
    store
        .save_snapshot("order-42", Revision(4), "order.v2", Bytes::new())
        .expect("save empty");
    let s = store
        .load_snapshot("order-42", Revision::END)
        .expect("load")
        .expect("a snapshot");
    assert_eq!((s.revision, s.data.len()), (Revision(4), 0));
}

#[test]
fn load_gives_the_newest_snapshot_at_or_below_the_revision() {
    let dir = common::tempdir();
    let store = open(dir.path(), config());
    append(&store, "s", 31);
    for r in [10, 20, 30] {
        save(&store, "s", r);
    }
    assert_eq!(loaded(&store, "s", 25), Some(20));
    assert_eq!(loaded(&store, "s", 9), None);
    assert_eq!(loaded(&store, "s", 0), None);
    assert_eq!(loaded(&store, "s", 10), Some(10));
    assert_eq!(loaded(&store, "s", 19), Some(10));
    assert_eq!(loaded(&store, "s", 20), Some(20));
    assert_eq!(loaded(&store, "s", 29), Some(20));
    assert_eq!(loaded(&store, "s", 30), Some(30));
    assert_eq!(
        store
            .load_snapshot("s", Revision::END)
            .expect("load")
            .map(|s| s.revision),
        Some(Revision(30))
    );
    // A stream with events but no snapshot.
    append(&store, "t", 3);
    assert_eq!(newest(&store, "t"), None);
}

#[test]
fn streams_have_separate_snapshots() {
    let dir = common::tempdir();
    let store = open(dir.path(), keep(2));
    for s in ["a", "b", "c"] {
        append(&store, s, 10);
    }
    for r in 0..10 {
        save(&store, "a", r);
    }
    save(&store, "b", 4);
    assert_eq!(newest(&store, "a"), Some(9));
    assert_eq!(loaded(&store, "a", 7), None, "a keeps 8 and 9 only");
    assert_eq!(newest(&store, "b"), Some(4));
    assert_eq!(newest(&store, "c"), None);
}

// ---------------------------------------------------------------------------------------------
// Pruning and replacement

#[test]
fn pruning_keeps_the_newest_keep_snapshots_across_reopen() {
    let dir = common::tempdir();
    {
        let store = open(dir.path(), keep(2));
        append(&store, "s", 31);
        for r in [10, 20, 30] {
            save(&store, "s", r);
        }
        assert_eq!(loaded(&store, "s", 15), None, "10 was pruned");
        assert_eq!(loaded(&store, "s", 25), Some(20));
        assert_eq!(newest(&store, "s"), Some(30));
        // Below both kept snapshots of a full stream: pruned at once.
        save(&store, "s", 5);
        assert_eq!(loaded(&store, "s", 15), None);
        store.close().expect("close");
    }
    {
        let store = open(dir.path(), keep(2));
        assert_eq!(loaded(&store, "s", 15), None);
        assert_eq!(loaded(&store, "s", 25), Some(20));
        assert_eq!(newest(&store, "s"), Some(30));
        store.close().expect("close");
    }
    {
        // A larger keep does not bring pruned snapshots back.
        let store = open(dir.path(), keep(5));
        assert_eq!(loaded(&store, "s", 15), None);
        assert_eq!(loaded(&store, "s", 25), Some(20));
        save(&store, "s", 15);
        save(&store, "s", 5);
        assert_eq!(loaded(&store, "s", 17), Some(15));
        assert_eq!(loaded(&store, "s", 9), Some(5));
        store.close().expect("close");
    }
    {
        // A smaller keep prunes at open.
        let store = open(dir.path(), keep(1));
        assert_eq!(newest(&store, "s"), Some(30));
        assert_eq!(loaded(&store, "s", 29), None);
        store.close().expect("close");
    }
    let store = open(dir.path(), keep(5));
    assert_eq!(newest(&store, "s"), Some(30));
    assert_eq!(
        loaded(&store, "s", 29),
        None,
        "what the keep-1 open pruned stays pruned"
    );
}

#[test]
fn saving_at_a_revision_that_has_a_snapshot_replaces_it() {
    let dir = common::tempdir();
    {
        let store = open(dir.path(), keep(2));
        append(&store, "s", 21);
        save(&store, "s", 10);
        store
            .save_snapshot("s", Revision(20), "v1", Bytes::from_static(b"first"))
            .expect("save");
        store
            .save_snapshot("s", Revision(20), "v2", Bytes::from_static(b"second"))
            .expect("save again");
        store
            .save_snapshot("s", Revision(20), "v3", Bytes::from_static(b"third"))
            .expect("save a third time");
        let s = store
            .load_snapshot("s", Revision(20))
            .expect("load")
            .expect("a snapshot");
        assert_eq!((s.schema.as_str(), &s.data[..]), ("v3", &b"third"[..]));
        // Replacing did not use up the keep count: 10 is still there.
        assert_eq!(loaded(&store, "s", 15), Some(10));
        store.close().expect("close");
    }
    let store = open(dir.path(), keep(2));
    let s = store
        .load_snapshot("s", Revision::END)
        .expect("load")
        .expect("a snapshot");
    assert_eq!((s.revision.0, s.schema.as_str()), (20, "v3"));
    assert_eq!(&s.data[..], b"third");
    assert_eq!(loaded(&store, "s", 15), Some(10));
}

// ---------------------------------------------------------------------------------------------
// Durability and deletion

#[test]
fn snapshots_survive_reopen() {
    let dir = common::tempdir();
    let mut expected: Vec<Snapshot> = Vec::new();
    {
        let store = open(dir.path(), config());
        for (i, s) in ["order-1", "order-2", "user-1"].into_iter().enumerate() {
            append(&store, s, 10);
            for r in [2, 5, 9] {
                let data = state(s, r, 10 + 1000 * i);
                store
                    .save_snapshot(s, Revision(r), &format!("{s}.v{r}"), data)
                    .expect("save");
                expected.push(
                    store
                        .load_snapshot(s, Revision(r))
                        .expect("load")
                        .expect("saved"),
                );
            }
        }
        store.close().expect("close");
    }
    let store = open(dir.path(), config());
    for want in &expected {
        let got = store
            .load_snapshot(&want.stream, want.revision)
            .expect("load")
            .expect("survived");
        assert_eq!(&got, want);
    }
}

#[test]
fn deleted_snapshots_stay_deleted_after_reopen() {
    let dir = common::tempdir();
    {
        let store = open(dir.path(), config());
        append(&store, "gone", 10);
        append(&store, "kept", 10);
        for r in [3, 6, 9] {
            save(&store, "gone", r);
            save(&store, "kept", r);
        }
        assert_eq!(store.delete_snapshots("gone").expect("delete"), 3);
        assert_eq!(newest(&store, "gone"), None);
        assert_eq!(loaded(&store, "gone", 3), None);
        assert_eq!(newest(&store, "kept"), Some(9));
        assert_eq!(store.delete_snapshots("gone").expect("delete again"), 0);
        assert_eq!(store.delete_snapshots("no-such-stream").expect("delete"), 0);
        // The events are untouched.
        assert_eq!(
            store.stream_revision("gone").expect("revision"),
            Some(Revision(9))
        );
        store.close().expect("close");
    }
    {
        let store = open(dir.path(), config());
        assert_eq!(newest(&store, "gone"), None);
        assert_eq!(loaded(&store, "kept", 7), Some(6));
        // The stream may have snapshots again; only the new ones exist.
        save(&store, "gone", 8);
        assert_eq!(newest(&store, "gone"), Some(8));
        assert_eq!(loaded(&store, "gone", 7), None);
        store.close().expect("close");
    }
    let store = open(dir.path(), config());
    assert_eq!(newest(&store, "gone"), Some(8));
    assert_eq!(loaded(&store, "gone", 7), None);
}

// ---------------------------------------------------------------------------------------------
// Reading a stream from its latest snapshot

#[test]
fn read_from_snapshot_gives_the_snapshot_and_exactly_the_events_after_it() {
    let dir = common::tempdir();
    let store = open(dir.path(), config());
    append(&store, "s", 50);
    append(&store, "other", 5); // interleaved positions
    append(&store, "s", 10);
    let whole = store
        .read_stream("s", Revision(0), Direction::Forwards, 1000)
        .expect("whole read");
    assert_eq!(whole.len(), 60);

    // No snapshot: every event from revision 0.
    let (snapshot, events) = store.read_stream_from_snapshot("s", 1000).expect("read");
    assert!(snapshot.is_none());
    assert_eq!(ids(&events), ids(&whole));

    save(&store, "s", 20);
    save(&store, "s", 44);
    let (snapshot, events) = store.read_stream_from_snapshot("s", 1000).expect("read");
    let snapshot = snapshot.expect("a snapshot");
    assert_eq!(snapshot.revision, Revision(44));
    assert_eq!(snapshot.data, state("s", 44, 100));
    assert_eq!(ids(&events), ids(&whole[45..]));
    for (got, want) in events.iter().zip(&whole[45..]) {
        assert_eq!(got.data(), want.data());
        assert_eq!(got.event_type(), want.event_type());
        assert_eq!(got.stream(), "s");
    }

    // max_count limits the events, not the snapshot.
    let (snapshot, events) = store.read_stream_from_snapshot("s", 5).expect("read");
    assert_eq!(snapshot.map(|s| s.revision), Some(Revision(44)));
    assert_eq!(ids(&events), ids(&whole[45..50]));
    let (snapshot, events) = store.read_stream_from_snapshot("s", 0).expect("read");
    assert!(snapshot.is_some());
    assert!(events.is_empty());

    // A snapshot at the newest event: nothing after it, until more is appended.
    save(&store, "s", 59);
    let (snapshot, events) = store.read_stream_from_snapshot("s", 1000).expect("read");
    assert_eq!(snapshot.map(|s| s.revision), Some(Revision(59)));
    assert!(events.is_empty());
    append(&store, "s", 3);
    let (_, events) = store.read_stream_from_snapshot("s", 1000).expect("read");
    assert_eq!(
        events.iter().map(|e| e.revision.0).collect::<Vec<_>>(),
        [60, 61, 62]
    );

    match store.read_stream_from_snapshot("missing", 10) {
        Err(Error::StreamNotFound { stream }) => assert_eq!(stream, "missing"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    let limit = store.config().read_count_max;
    match store.read_stream_from_snapshot("s", limit + 1) {
        Err(Error::LimitExceeded {
            limit: l, actual, ..
        }) => {
            assert_eq!((l, actual), (limit, limit + 1));
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn bad_saves_are_refused_and_change_nothing() {
    let dir = common::tempdir();
    let store = open(
        dir.path(),
        Config {
            snapshot_bytes_max: 1000,
            ..config()
        },
    );
    append(&store, "s", 10); // current revision 9
    let ok_data = state("s", 5, 1000);

    match store.save_snapshot("missing", Revision(0), "v1", ok_data.clone()) {
        Err(Error::StreamNotFound { stream }) => assert_eq!(stream, "missing"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    match store.save_snapshot("s", Revision(10), "v1", ok_data.clone()) {
        Err(Error::InvalidArgument(message)) => {
            for part in ["'s'", "revision 10", "current revision is 9"] {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(matches!(
        store.save_snapshot("s", Revision::END, "v1", ok_data.clone()),
        Err(Error::InvalidArgument(_))
    ));
    match store.save_snapshot("s", Revision(5), "v1", state("s", 5, 1001)) {
        Err(Error::LimitExceeded {
            what,
            limit,
            actual,
        }) => {
            assert_eq!(
                (what, limit, actual),
                (statestore::Limit::SnapshotBytes, 1000, 1001)
            );
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert!(matches!(
        store.save_snapshot("s", Revision(5), "", ok_data.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.save_snapshot("s", Revision(5), "v1\n", ok_data.clone()),
        Err(Error::InvalidArgument(_))
    ));
    match store.save_snapshot("s", Revision(5), &"x".repeat(257), ok_data.clone()) {
        Err(Error::LimitExceeded { limit, actual, .. }) => assert_eq!((limit, actual), (256, 257)),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert!(matches!(
        store.save_snapshot("", Revision(0), "v1", ok_data.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(newest(&store, "s"), None, "a refused save stores nothing");
    assert_eq!(log_len(dir.path()), FILE_HEADER_BYTES, "and writes nothing");

    // The limits themselves are allowed: 1000 bytes, a 256-byte tag, the current revision.
    store
        .save_snapshot("s", Revision(9), &"x".repeat(256), ok_data.clone())
        .expect("save at the limits");
    assert_eq!(
        store
            .load_snapshot("s", Revision::END)
            .expect("load")
            .map(|s| s.data),
        Some(ok_data)
    );

    match store.load_snapshot("missing", Revision::END) {
        Err(Error::StreamNotFound { stream }) => assert_eq!(stream, "missing"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery of the snapshot log

/// A store with snapshots of "s" at 10, 20 and 30, closed. Returns the log's length before the
/// save at 30 (where its record starts) and after.
fn three_snapshots(dir: &Path) -> (u64, u64) {
    let store = open(dir, config());
    append(&store, "s", 31);
    save(&store, "s", 10);
    save(&store, "s", 20);
    let before = log_len(dir);
    save(&store, "s", 30);
    let after = log_len(dir);
    store.close().expect("close");
    (before, after)
}

#[test]
fn a_torn_tail_is_truncated_and_the_earlier_snapshots_kept() {
    let probe = common::tempdir();
    let (start, end) = three_snapshots(probe.path());
    let record = end - start;
    let mut cuts = vec![1, 3, 7, 8, 9, 40, record / 2, record - 1];
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let dir = common::tempdir();
        three_snapshots(dir.path());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(log_path(dir.path()))
            .expect("open the log");
        file.set_len(end - cut).expect("truncate");
        drop(file);

        let store = open(dir.path(), config());
        assert_eq!(newest(&store, "s"), Some(20), "cut {cut}");
        assert_eq!(loaded(&store, "s", 15), Some(10), "cut {cut}");
        assert_eq!(
            log_len(dir.path()),
            start,
            "cut {cut}: the torn record is gone"
        );
        // Writing goes on after the last whole record.
        save(&store, "s", 25);
        store.close().expect("close");
        let store = open(dir.path(), config());
        assert_eq!(newest(&store, "s"), Some(25), "cut {cut}");
        assert_eq!(loaded(&store, "s", 24), Some(20), "cut {cut}");
    }
}

#[test]
fn a_tail_of_zeros_is_a_torn_tail() {
    let dir = common::tempdir();
    let (_, end) = three_snapshots(dir.path());
    // A crash after the file grew but before the record's bytes reached the disk.
    let mut bytes = std::fs::read(log_path(dir.path())).expect("read");
    bytes.extend_from_slice(&[0u8; 300]);
    std::fs::write(log_path(dir.path()), bytes).expect("write");
    let store = open(dir.path(), config());
    assert_eq!(newest(&store, "s"), Some(30));
    assert_eq!(log_len(dir.path()), end);
}

#[test]
fn damage_before_a_whole_record_is_corruption_naming_the_file() {
    for (what, offset, bit) in [
        ("data of the first record", FILE_HEADER_BYTES + 70, 3),
        ("length of the first record", FILE_HEADER_BYTES, 4),
        ("crc of the first record", FILE_HEADER_BYTES + 5, 0),
        ("header of the file", 2, 1),
    ] {
        let dir = common::tempdir();
        three_snapshots(dir.path());
        flip_bit(&log_path(dir.path()), offset, bit);
        match Store::open(dir.path(), config()) {
            Err(Error::Corruption {
                file, offset: at, ..
            }) => {
                assert_eq!(file, log_path(dir.path()), "{what}");
                let first_record_or_header = if offset < FILE_HEADER_BYTES {
                    0
                } else {
                    FILE_HEADER_BYTES
                };
                assert_eq!(at, first_record_or_header, "{what}");
            }
            Err(e) => panic!("{what}: expected Corruption, got {e}"),
            Ok(_) => panic!("{what}: opened a damaged snapshot log"),
        }
    }
}

#[test]
fn damage_to_the_last_record_is_taken_for_a_torn_write() {
    // Only the last record can be torn, and a torn record and a damaged last record look the
    // same: the last snapshot is dropped (snapshots are derived data; the events are intact).
    let dir = common::tempdir();
    let (start, end) = three_snapshots(dir.path());
    flip_bit(&log_path(dir.path()), end - 2, 5);
    let store = open(dir.path(), config());
    assert_eq!(newest(&store, "s"), Some(20));
    assert_eq!(log_len(dir.path()), start);
}

#[test]
fn compaction_keeps_exactly_the_newest_keep_snapshots_per_stream() {
    const STREAMS: u64 = 5;
    const SAVES: u64 = 150;
    const SIZE: usize = 4096;
    let dir = common::tempdir();
    let name = |s: u64| format!("agg-{s}");
    let mut written = 0u64;
    {
        let store = open(dir.path(), keep(2));
        for s in 0..STREAMS {
            append(&store, &name(s), SAVES);
        }
        for r in 0..SAVES {
            for s in 0..STREAMS {
                let data = state(&name(s), r, SIZE);
                written += data.len() as u64;
                store
                    .save_snapshot(&name(s), Revision(r), "v1", data)
                    .expect("save");
            }
            // Deleting and re-saving makes dead bytes of another kind.
            if r == SAVES / 2 {
                assert_eq!(store.delete_snapshots(&name(0)).expect("delete"), 2);
            }
        }
        let len = log_len(dir.path());
        let live = STREAMS * 2 * (SIZE as u64 + 100);
        assert!(
            written > 3_000_000,
            "the test writes well past the threshold"
        );
        assert!(
            len <= FILE_HEADER_BYTES + (1 << 20) + 2 * live,
            "the log was compacted: {len} bytes after writing {written}"
        );
        for s in 0..STREAMS {
            assert_eq!(newest(&store, &name(s)), Some(SAVES - 1));
            assert_eq!(loaded(&store, &name(s), SAVES - 2), Some(SAVES - 2));
            assert_eq!(loaded(&store, &name(s), SAVES - 3), None);
        }
        store.close().expect("close");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .expect("snapshot directory")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["snapshots.log"]);
    let store = open(dir.path(), keep(2));
    for s in 0..STREAMS {
        assert_eq!(newest(&store, &name(s)), Some(SAVES - 1));
        assert_eq!(loaded(&store, &name(s), SAVES - 2), Some(SAVES - 2));
        assert_eq!(loaded(&store, &name(s), SAVES - 3), None);
    }
}

#[test]
fn loads_during_saves_and_compactions_return_whole_snapshots() {
    let dir = common::tempdir();
    let store = open(dir.path(), keep(1));
    append(&store, "hot", 400);
    save(&store, "hot", 0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for r in 1..400 {
                let data = state("hot", r, 8192);
                store
                    .save_snapshot("hot", Revision(r), "v1", data)
                    .expect("save");
            }
            done.store(true, Ordering::Release);
        });
        for _ in 0..3 {
            scope.spawn(|| {
                let mut last = 0;
                while !done.load(Ordering::Acquire) {
                    let r = newest(&store, "hot").expect("always one snapshot");
                    assert!(r >= last, "snapshots go forwards: {r} after {last}");
                    last = r;
                }
            });
        }
    });
    assert_eq!(newest(&store, "hot"), Some(399));
}
