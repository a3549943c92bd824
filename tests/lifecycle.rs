//! Stream lifecycle through the engine API: metadata (max count, max age, truncate-before,
//! custom JSON) and its history, soft delete and revival, tombstone; every read path honours
//! the rules at once, and the state survives a reopen (with index checkpoints and without).

mod common;

use std::path::Path;
use std::time::Duration;

use statestore::{
    ActualRevision, Config, Direction, Error, EventData, ExpectedRevision, Filter, Position,
    RecordedEvent, Revision, Store, StreamMetadata,
};

fn open(dir: &Path) -> Store {
    Store::open(dir, common::config()).expect("open")
}

fn append_n(store: &Store, stream: &str, n: u64, tag: u64) -> Vec<Position> {
    (0..n)
        .map(|k| {
            store
                .append(
                    stream,
                    ExpectedRevision::Any,
                    vec![common::ev(tag + k, "Ev")],
                )
                .expect("append")
                .last_position
        })
        .collect()
}

fn revisions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision.0).collect()
}

fn stream_revs(store: &Store, stream: &str, direction: Direction) -> Result<Vec<u64>, Error> {
    let from = match direction {
        Direction::Forwards => Revision(0),
        Direction::Backwards => Revision::END,
    };
    store
        .read_stream(stream, from, direction, 1000)
        .map(|e| revisions(&e))
}

/// (stream, revision) of every event a whole-log read returns, both ways, checked equal.
fn all_events(store: &Store) -> Vec<(String, u64)> {
    let fwd = store
        .read_all(Position(0), Direction::Forwards, 10_000, &Filter::default())
        .expect("read all");
    let mut bwd = store
        .read_all(
            Position::END,
            Direction::Backwards,
            10_000,
            &Filter::default(),
        )
        .expect("read all backwards");
    bwd.events.reverse();
    let f: Vec<_> = fwd
        .events
        .iter()
        .map(|e| (e.stream().to_string(), e.revision.0))
        .collect();
    let b: Vec<_> = bwd
        .events
        .iter()
        .map(|e| (e.stream().to_string(), e.revision.0))
        .collect();
    assert_eq!(f, b, "forwards and backwards whole-log reads disagree");
    f
}

fn of_stream(all: &[(String, u64)], stream: &str) -> Vec<u64> {
    all.iter()
        .filter(|(s, _)| s == stream)
        .map(|(_, r)| *r)
        .collect()
}

fn by_type_revs(store: &Store, stream: &str) -> Vec<u64> {
    let fwd = store
        .read_by_type("Ev", Position(0), Direction::Forwards, 10_000)
        .expect("by type");
    fwd.iter()
        .filter(|e| e.stream() == stream)
        .map(|e| e.revision.0)
        .collect()
}

fn meta(f: impl FnOnce(&mut StreamMetadata)) -> StreamMetadata {
    let mut m = StreamMetadata::default();
    f(&mut m);
    m
}

#[test]
fn max_count_hides_the_oldest_events_in_every_read_path() {
    let dir = common::tempdir();
    let store = open(dir.path());
    let positions = append_n(&store, "order-1", 10, 0);
    append_n(&store, "order-2", 3, 100);
    let r = store
        .set_stream_metadata(
            "order-1",
            ExpectedRevision::NoStream,
            meta(|m| m.max_count = Some(3)),
        )
        .expect("set metadata");
    assert_eq!(r.revision, Revision(0), "first metadata version");

    assert_eq!(
        stream_revs(&store, "order-1", Direction::Forwards).unwrap(),
        [7, 8, 9]
    );
    assert_eq!(
        stream_revs(&store, "order-1", Direction::Backwards).unwrap(),
        [9, 8, 7]
    );
    let page = store
        .read_stream("order-1", Revision(8), Direction::Backwards, 10)
        .unwrap();
    assert_eq!(revisions(&page), [8, 7]);
    assert_eq!(of_stream(&all_events(&store), "order-1"), [7, 8, 9]);
    assert_eq!(of_stream(&all_events(&store), "order-2"), [0, 1, 2]);
    assert_eq!(by_type_revs(&store, "order-1"), [7, 8, 9]);
    assert_eq!(store.read_event(positions[0]).unwrap(), None);
    assert_eq!(
        store.read_event(positions[9]).unwrap().map(|e| e.revision),
        Some(Revision(9))
    );
    // The revision is not changed by what is hidden.
    assert_eq!(store.stream_revision("order-1").unwrap(), Some(Revision(9)));

    // The window slides with new events.
    append_n(&store, "order-1", 2, 50);
    assert_eq!(
        stream_revs(&store, "order-1", Direction::Forwards).unwrap(),
        [9, 10, 11]
    );
    assert_eq!(of_stream(&all_events(&store), "order-1"), [9, 10, 11]);

    // A by-type page of 2 still fills although hidden events sit between the matches.
    let page = store
        .read_by_type("Ev", Position(0), Direction::Forwards, 2)
        .unwrap();
    assert_eq!(page.len(), 2);
    assert!(
        page.iter()
            .all(|e| e.stream() != "order-1" || e.revision.0 >= 9)
    );
}

#[test]
fn truncate_before_and_custom_metadata_with_history() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "cart-1", 8, 0);
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), serde_json::json!("billing"));
    custom.insert("$acl".into(), serde_json::json!({"$r": "ops"}));
    let first = meta(|m| {
        m.truncate_before = Some(Revision(5));
        m.custom = custom.clone();
    });
    store
        .set_stream_metadata("cart-1", ExpectedRevision::Any, first.clone())
        .unwrap();
    assert_eq!(
        stream_revs(&store, "cart-1", Direction::Forwards).unwrap(),
        [5, 6, 7]
    );
    assert_eq!(
        store
            .read_stream("cart-1", Revision(6), Direction::Forwards, 10)
            .map(|e| revisions(&e))
            .unwrap(),
        [6, 7]
    );
    assert_eq!(
        store.stream_metadata("cart-1").unwrap(),
        Some((Revision(0), first.clone()))
    );

    // Optimistic concurrency on the metadata's own revision.
    let second = meta(|m| m.max_count = Some(1));
    match store.set_stream_metadata("cart-1", ExpectedRevision::NoStream, second.clone()) {
        Err(Error::WrongExpectedRevision {
            stream,
            expected: ExpectedRevision::NoStream,
            actual: ActualRevision::Revision(Revision(0)),
        }) => assert_eq!(stream, "$$cart-1"),
        other => panic!("expected a wrong expected revision, got {other:?}"),
    }
    store
        .set_stream_metadata(
            "cart-1",
            ExpectedRevision::Exact(Revision(0)),
            second.clone(),
        )
        .unwrap();
    // The new version replaces the old one entirely: the truncation is gone, max count holds.
    assert_eq!(
        stream_revs(&store, "cart-1", Direction::Forwards).unwrap(),
        [7]
    );

    let history = store.stream_metadata_history("cart-1").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].metadata, first);
    assert_eq!(history[1].metadata, second);
    assert_eq!(history[1].revision, Revision(1));
    assert!(history[0].position < history[1].position);
    assert!(store.stream_metadata_history("nobody").unwrap().is_empty());
    assert_eq!(store.stream_metadata("nobody").unwrap(), None);

    // Metadata on a stream with no events: allowed, and StreamExists then holds.
    store
        .set_stream_metadata("later-1", ExpectedRevision::NoStream, second)
        .unwrap();
    store
        .append(
            "later-1",
            ExpectedRevision::StreamExists,
            vec![common::ev(900, "Ev")],
        )
        .expect("a stream with metadata exists");
}

#[test]
fn max_age_hides_events_older_than_it() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "sensor-1", 4, 0);
    std::thread::sleep(Duration::from_millis(1100));
    append_n(&store, "sensor-1", 2, 10);
    store
        .set_stream_metadata(
            "sensor-1",
            ExpectedRevision::Any,
            meta(|m| m.max_age = Some(Duration::from_secs(1))),
        )
        .unwrap();
    assert_eq!(
        stream_revs(&store, "sensor-1", Direction::Forwards).unwrap(),
        [4, 5]
    );
    assert_eq!(
        stream_revs(&store, "sensor-1", Direction::Backwards).unwrap(),
        [5, 4]
    );
    // A forwards page that starts among expired events still fills from the visible ones.
    let page = store
        .read_stream("sensor-1", Revision(0), Direction::Forwards, 1)
        .unwrap();
    assert_eq!(revisions(&page), [4]);
    assert_eq!(of_stream(&all_events(&store), "sensor-1"), [4, 5]);
    assert_eq!(by_type_revs(&store, "sensor-1"), [4, 5]);
}

#[test]
fn soft_delete_hides_the_stream_and_an_append_brings_it_back_with_revisions_continuing() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "order-7", 3, 0);
    store
        .save_snapshot("order-7", Revision(2), "order.v1", "state".into())
        .unwrap();

    // Wrong expected revision, and deleting what does not exist.
    assert!(matches!(
        store.delete_stream("order-7", ExpectedRevision::Exact(Revision(1))),
        Err(Error::WrongExpectedRevision {
            actual: ActualRevision::Revision(Revision(2)),
            ..
        })
    ));
    assert!(matches!(
        store.delete_stream("ghost", ExpectedRevision::Any),
        Err(Error::StreamNotFound { stream }) if stream == "ghost"
    ));

    store
        .delete_stream("order-7", ExpectedRevision::Exact(Revision(2)))
        .expect("delete");
    assert!(matches!(
        store.read_stream("order-7", Revision(0), Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
    assert_eq!(store.stream_revision("order-7").unwrap(), None);
    assert!(of_stream(&all_events(&store), "order-7").is_empty());
    assert!(by_type_revs(&store, "order-7").is_empty());
    assert!(matches!(
        store.load_snapshot("order-7", Revision::END),
        Err(Error::StreamNotFound { .. })
    ));
    // A repeated delete with the same expected revision succeeds (the revision is unchanged).
    store
        .delete_stream("order-7", ExpectedRevision::Exact(Revision(2)))
        .expect("delete again");
    // StreamExists on a soft-deleted stream is StreamDeleted.
    assert!(matches!(
        store.append("order-7", ExpectedRevision::StreamExists, vec![common::ev(50, "Ev")]),
        Err(Error::StreamDeleted { stream }) if stream == "order-7"
    ));

    // NoStream brings it back; revisions continue.
    let r = store
        .append(
            "order-7",
            ExpectedRevision::NoStream,
            vec![common::ev(60, "Ev")],
        )
        .expect("append to a soft-deleted stream");
    assert_eq!(r.revision, Revision(3));
    assert_eq!(
        stream_revs(&store, "order-7", Direction::Forwards).unwrap(),
        [3]
    );
    assert_eq!(of_stream(&all_events(&store), "order-7"), [3]);
    assert_eq!(store.stream_revision("order-7").unwrap(), Some(Revision(3)));
    // The old snapshot is gone: a revived stream never loads a snapshot of its earlier life.
    assert_eq!(store.load_snapshot("order-7", Revision::END).unwrap(), None);
    let (rev, m) = store.stream_metadata("order-7").unwrap().expect("metadata");
    assert_eq!(m.truncate_before, Some(Revision(3)));
    assert_eq!(
        rev,
        Revision(2),
        "set by the delete twice, then by the revival"
    );

    // Delete again, then revive through a multi-stream append with an exact revision.
    store
        .delete_stream("order-7", ExpectedRevision::Any)
        .unwrap();
    let results = store
        .append_multi(vec![
            statestore::StreamAppend::new(
                "order-7",
                ExpectedRevision::Exact(Revision(3)),
                vec![common::ev(70, "Ev"), common::ev(71, "Ev")],
            ),
            statestore::StreamAppend::new(
                "other",
                ExpectedRevision::Any,
                vec![common::ev(72, "Ev")],
            ),
        ])
        .unwrap();
    assert_eq!(
        results.len(),
        2,
        "the metadata record is not one of the results"
    );
    assert_eq!(results[0].revision, Revision(5));
    assert_eq!(results[0].last_position.0, results[0].first_position.0 + 1);
    assert_eq!(
        stream_revs(&store, "order-7", Direction::Forwards).unwrap(),
        [4, 5]
    );
    store.close().unwrap();

    // Everything holds after a reopen (index rebuilt from the log, or from checkpoints).
    for config in [
        common::config(),
        Config {
            checkpoint_events: 0,
            ..common::config()
        },
    ] {
        let store = Store::open(dir.path(), config).unwrap();
        assert_eq!(
            stream_revs(&store, "order-7", Direction::Forwards).unwrap(),
            [4, 5]
        );
        assert_eq!(of_stream(&all_events(&store), "order-7"), [4, 5]);
        let history = store.stream_metadata_history("order-7").unwrap();
        let tbs: Vec<_> = history
            .iter()
            .map(|h| h.metadata.truncate_before.map(|r| r.0))
            .collect();
        let d = Some(statestore::DELETED_TRUNCATE_BEFORE);
        assert_eq!(tbs, [d, d, Some(3), d, Some(4)]);
        store.close().unwrap();
    }
}

#[test]
fn setting_metadata_on_a_soft_deleted_stream_brings_it_back_without_its_old_events() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "acct-1", 4, 0);
    store
        .delete_stream("acct-1", ExpectedRevision::Any)
        .unwrap();
    store
        .set_stream_metadata(
            "acct-1",
            ExpectedRevision::Any,
            meta(|m| m.max_count = Some(10)),
        )
        .unwrap();
    let (_, m) = store.stream_metadata("acct-1").unwrap().unwrap();
    assert_eq!(m.truncate_before, Some(Revision(4)));
    assert_eq!(m.max_count, Some(10));
    assert_eq!(
        stream_revs(&store, "acct-1", Direction::Forwards).unwrap(),
        Vec::<u64>::new()
    );
    append_n(&store, "acct-1", 1, 10);
    assert_eq!(
        stream_revs(&store, "acct-1", Direction::Forwards).unwrap(),
        [4]
    );
}

#[test]
fn tombstone_is_permanent() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "user-9", 3, 0);
    store
        .save_snapshot("user-9", Revision(1), "user.v1", "s".into())
        .unwrap();
    assert!(matches!(
        store.tombstone_stream("user-9", ExpectedRevision::NoStream),
        Err(Error::WrongExpectedRevision { .. })
    ));
    let position = store
        .tombstone_stream("user-9", ExpectedRevision::Exact(Revision(2)))
        .unwrap();
    let deleted = |r: Result<_, Error>| matches!(r, Err(Error::StreamDeleted { ref stream }) if stream == "user-9");
    for (what, refused) in [
        (
            "read",
            deleted(
                store
                    .read_stream("user-9", Revision(0), Direction::Forwards, 9)
                    .map(|_| ()),
            ),
        ),
        (
            "append any",
            deleted(
                store
                    .append("user-9", ExpectedRevision::Any, vec![common::ev(9, "Ev")])
                    .map(|_| ()),
            ),
        ),
        (
            "append no stream",
            deleted(
                store
                    .append(
                        "user-9",
                        ExpectedRevision::NoStream,
                        vec![common::ev(9, "Ev")],
                    )
                    .map(|_| ()),
            ),
        ),
        (
            "get metadata",
            deleted(store.stream_metadata("user-9").map(|_| ())),
        ),
        (
            "delete",
            deleted(
                store
                    .delete_stream("user-9", ExpectedRevision::Any)
                    .map(|_| ()),
            ),
        ),
        (
            "tombstone",
            deleted(
                store
                    .tombstone_stream("user-9", ExpectedRevision::Any)
                    .map(|_| ()),
            ),
        ),
        (
            "revision",
            deleted(store.stream_revision("user-9").map(|_| ())),
        ),
        (
            "snapshot",
            deleted(store.load_snapshot("user-9", Revision::END).map(|_| ())),
        ),
    ] {
        assert!(
            refused,
            "{what} on a tombstoned stream must be StreamDeleted"
        );
    }
    // The metadata stream is a stream of its own: it still takes new versions (checked
    // against its own revision), and they change nothing.
    let meta_before = store
        .stream_metadata_history("user-9")
        .unwrap_or_default()
        .len();
    let max_one = StreamMetadata {
        max_count: Some(1),
        ..StreamMetadata::default()
    };
    let set = store
        .set_stream_metadata("user-9", ExpectedRevision::Any, max_one.clone())
        .expect("metadata after a tombstone is recorded");
    assert!(matches!(
        store.set_stream_metadata("user-9", ExpectedRevision::Exact(Revision(99)), max_one),
        Err(Error::WrongExpectedRevision { .. })
    ));
    assert!(deleted(store.stream_metadata("user-9").map(|_| ())));
    assert!(deleted(
        store
            .read_stream("user-9", Revision(0), Direction::Forwards, 9)
            .map(|_| ())
    ));
    let meta_events = store
        .read_stream("$$user-9", Revision(0), Direction::Forwards, 100)
        .unwrap();
    assert_eq!(meta_events.len(), meta_before + 1);
    assert_eq!(meta_events.last().unwrap().position, set.last_position);

    // Whole-log reads show the tombstone and nothing else of the stream.
    let all = store
        .read_all(Position(0), Direction::Forwards, 100, &Filter::default())
        .unwrap();
    let of_user: Vec<_> = all
        .events
        .iter()
        .filter(|e| e.stream() == "user-9")
        .collect();
    assert_eq!(of_user.len(), 1);
    assert_eq!(of_user[0].event_type(), statestore::TOMBSTONE_EVENT_TYPE);
    assert_eq!(of_user[0].revision, Revision(3));
    assert_eq!(of_user[0].position, position);

    // Any on a stream that never existed reserves the name.
    store
        .tombstone_stream("never", ExpectedRevision::Any)
        .expect("tombstone a new name");
    assert!(deleted_named(
        store.append(
            "never",
            ExpectedRevision::NoStream,
            vec![common::ev(1, "Ev")]
        ),
        "never"
    ));
    store.close().unwrap();
    let store = open(dir.path());
    assert!(deleted_named(
        store.append("user-9", ExpectedRevision::Any, vec![common::ev(99, "Ev")]),
        "user-9"
    ));
    assert!(deleted_named(
        store.append("never", ExpectedRevision::Any, vec![common::ev(98, "Ev")]),
        "never"
    ));
}

fn deleted_named<T: std::fmt::Debug>(r: Result<T, Error>, name: &str) -> bool {
    matches!(r, Err(Error::StreamDeleted { ref stream }) if stream == name)
}

#[test]
fn metadata_streams_and_reserved_types_are_not_open_to_appends() {
    let dir = common::tempdir();
    let store = open(dir.path());
    assert!(matches!(
        store.append(
            "$$order-1",
            ExpectedRevision::Any,
            vec![common::ev(1, "Ev")]
        ),
        Err(Error::InvalidArgument(_))
    ));
    for reserved in [
        statestore::METADATA_EVENT_TYPE,
        statestore::TOMBSTONE_EVENT_TYPE,
    ] {
        assert!(matches!(
            store.append(
                "order-1",
                ExpectedRevision::Any,
                vec![EventData::json(reserved, "{}")]
            ),
            Err(Error::InvalidArgument(_))
        ));
    }
    for bad in [
        meta(|m| m.max_count = Some(0)),
        meta(|m| m.max_age = Some(Duration::from_millis(1500))),
        meta(|m| m.max_age = Some(Duration::ZERO)),
        // 2^63-1 is a soft delete (below); nothing is above it.
        meta(|m| m.truncate_before = Some(Revision(statestore::DELETED_TRUNCATE_BEFORE + 1))),
        meta(|m| m.truncate_before = Some(Revision(u64::MAX))),
        meta(|m| {
            m.custom.insert("$tb".into(), serde_json::json!(3));
        }),
    ] {
        assert!(
            matches!(
                store.set_stream_metadata("order-1", ExpectedRevision::Any, bad.clone()),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?} must be refused"
        );
    }
    assert!(matches!(
        store.set_stream_metadata(
            "$$order-1",
            ExpectedRevision::Any,
            StreamMetadata::default()
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.last_position(), Position(0), "nothing was written");
    assert!(matches!(
        StreamMetadata::from_json(b"[1,2]"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        StreamMetadata::from_json(br#"{"$maxCount": -1}"#),
        Err(Error::InvalidArgument(_))
    ));
    let parsed =
        StreamMetadata::from_json(br#"{"$maxCount": 5, "$maxAge": 60, "$tb": 2, "k": [1]}"#)
            .unwrap();
    assert_eq!(parsed.max_count, Some(5));
    assert_eq!(parsed.max_age, Some(Duration::from_secs(60)));
    assert_eq!(parsed.truncate_before, Some(Revision(2)));
    assert_eq!(parsed.custom["k"], serde_json::json!([1]));
    assert_eq!(
        StreamMetadata::from_json(&parsed.to_json()).unwrap(),
        parsed
    );
}

#[test]
fn metadata_survives_reopen_with_and_without_checkpoints() {
    let dir = common::tempdir();
    let config = Config {
        checkpoint_events: 16,
        ..common::config()
    };
    let store = Store::open(dir.path(), config.clone()).unwrap();
    for s in 0..20u64 {
        append_n(&store, &format!("s-{s}"), 5, s * 10);
        if s % 2 == 0 {
            store
                .set_stream_metadata(
                    &format!("s-{s}"),
                    ExpectedRevision::Any,
                    meta(|m| m.max_count = Some(2)),
                )
                .unwrap();
        }
        if s % 5 == 0 {
            store
                .tombstone_stream(&format!("s-{s}"), ExpectedRevision::Any)
                .unwrap();
        }
    }
    let before = all_events(&store);
    store.close().unwrap();
    for config in [
        config.clone(),
        Config {
            checkpoint_events: 0,
            ..config
        },
    ] {
        let store = Store::open(dir.path(), config).unwrap();
        assert_eq!(all_events(&store), before);
        assert_eq!(
            stream_revs(&store, "s-2", Direction::Forwards).unwrap(),
            [3, 4]
        );
        assert!(deleted_named(
            stream_revs(&store, "s-5", Direction::Forwards),
            "s-5"
        ));
        store.close().unwrap();
    }
}

#[test]
fn retries_and_reused_ids_around_a_delete() {
    let dir = common::tempdir();
    let store = open(dir.path());
    let first = vec![common::ev(1, "Ev"), common::ev(2, "Ev")];
    store
        .append("inv-1", ExpectedRevision::NoStream, first.clone())
        .unwrap();
    store.delete_stream("inv-1", ExpectedRevision::Any).unwrap();
    // The same ids again (a client recreating the stream deterministically) are a new append,
    // not a retry of the deleted events.
    let revived = store
        .append("inv-1", ExpectedRevision::NoStream, first.clone())
        .expect("recreate with the same ids");
    assert_eq!(revived.revision, Revision(3));
    assert_eq!(
        stream_revs(&store, "inv-1", Direction::Forwards).unwrap(),
        [2, 3]
    );
    // A retry of that append is recognised: the original result, nothing written.
    let last = store.last_position();
    let retried = store
        .append("inv-1", ExpectedRevision::NoStream, first)
        .expect("retry of the revival");
    assert_eq!(retried, revived);
    assert_eq!(store.last_position(), last);
}

#[test]
fn snapshots_left_by_a_crash_after_a_delete_are_removed_at_open() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "doc-1", 3, 0);
    store
        .save_snapshot("doc-1", Revision(2), "doc.v1", "old life".into())
        .unwrap();
    store.close().unwrap();
    // The snapshot log as it was before the delete: as if the process died after the delete
    // committed and before the snapshots were removed.
    let snapshots = dir.path().join("snapshots");
    let saved = common::tempdir();
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), saved.path().join(entry.file_name())).unwrap();
    }
    let store = open(dir.path());
    store.delete_stream("doc-1", ExpectedRevision::Any).unwrap();
    store.close().unwrap();
    for entry in std::fs::read_dir(saved.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshots.join(entry.file_name())).unwrap();
    }
    let store = open(dir.path());
    append_n(&store, "doc-1", 1, 10);
    assert_eq!(
        store.load_snapshot("doc-1", Revision::END).unwrap(),
        None,
        "a snapshot of the stream's earlier life"
    );
}

#[test]
fn later_metadata_never_brings_deleted_events_back() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "pii-1", 5, 0);
    store.delete_stream("pii-1", ExpectedRevision::Any).unwrap();
    append_n(&store, "pii-1", 1, 10);
    assert_eq!(
        stream_revs(&store, "pii-1", Direction::Forwards).unwrap(),
        [5]
    );
    // Metadata without a truncate-before: the events before the delete stay hidden.
    store
        .set_stream_metadata(
            "pii-1",
            ExpectedRevision::Any,
            meta(|m| m.max_count = Some(100)),
        )
        .unwrap();
    assert_eq!(
        stream_revs(&store, "pii-1", Direction::Forwards).unwrap(),
        [5]
    );
    let (_, m) = store.stream_metadata("pii-1").unwrap().unwrap();
    assert_eq!(
        m.truncate_before,
        Some(Revision(5)),
        "raised to the delete's floor"
    );
    assert_eq!(of_stream(&all_events(&store), "pii-1"), [5]);
    store.close().unwrap();
    let store = open(dir.path());
    store
        .set_stream_metadata(
            "pii-1",
            ExpectedRevision::Any,
            meta(|m| m.truncate_before = Some(Revision(1))),
        )
        .unwrap();
    assert_eq!(
        stream_revs(&store, "pii-1", Direction::Forwards).unwrap(),
        [5]
    );
}

#[test]
fn a_stream_with_only_metadata_can_be_deleted_and_written_again() {
    let dir = common::tempdir();
    let store = open(dir.path());
    let custom = meta(|m| {
        m.custom.insert("owner".into(), serde_json::json!("ops"));
    });
    store
        .set_stream_metadata("draft-1", ExpectedRevision::NoStream, custom.clone())
        .unwrap();
    // It has no events: an exact revision does not hold.
    assert!(matches!(
        store.delete_stream("draft-1", ExpectedRevision::Exact(Revision(0))),
        Err(Error::WrongExpectedRevision {
            actual: ActualRevision::NoStream,
            ..
        })
    ));
    let at = store
        .delete_stream("draft-1", ExpectedRevision::NoStream)
        .expect("delete of a stream with only metadata");
    assert_eq!(
        at,
        store.last_position(),
        "the delete record is the last write"
    );
    let (revision, m) = store.stream_metadata("draft-1").unwrap().unwrap();
    assert_eq!(revision, Revision(1));
    assert!(m.is_deleted(), "{m:?}");
    assert!(m.custom.is_empty(), "a delete replaces the metadata: {m:?}");
    assert!(matches!(
        store.read_stream("draft-1", Revision(0), Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
    assert_eq!(store.stream_revision("draft-1").unwrap(), None);
    // Repeated, with Any; StreamExists on the deleted stream is StreamDeleted.
    store
        .delete_stream("draft-1", ExpectedRevision::Any)
        .expect("repeated delete");
    assert!(matches!(
        store.delete_stream("draft-1", ExpectedRevision::StreamExists),
        Err(Error::StreamDeleted { .. })
    ));
    // Any and StreamExists delete other streams with only metadata.
    for (stream, expected) in [
        ("draft-2", ExpectedRevision::Any),
        ("draft-3", ExpectedRevision::StreamExists),
    ] {
        store
            .set_stream_metadata(stream, ExpectedRevision::Any, custom.clone())
            .unwrap();
        store
            .delete_stream(stream, expected)
            .unwrap_or_else(|e| panic!("delete {stream} with {expected:?}: {e:?}"));
        assert!(
            store
                .stream_metadata(stream)
                .unwrap()
                .unwrap()
                .1
                .is_deleted()
        );
    }
    // A stream with neither events nor metadata is still not found, whatever is expected.
    for expected in [
        ExpectedRevision::NoStream,
        ExpectedRevision::Any,
        ExpectedRevision::StreamExists,
    ] {
        assert!(
            matches!(
                store.delete_stream("ghost", expected),
                Err(Error::StreamNotFound { stream }) if stream == "ghost"
            ),
            "{expected:?}"
        );
    }
    assert_eq!(store.stream_metadata("ghost").unwrap(), None);

    // An append brings the deleted stream back from revision 0.
    let r = store
        .append(
            "draft-1",
            ExpectedRevision::NoStream,
            vec![common::ev(1, "Ev")],
        )
        .unwrap();
    assert_eq!(r.revision, Revision(0));
    assert_eq!(
        stream_revs(&store, "draft-1", Direction::Forwards).unwrap(),
        [0]
    );
    assert_eq!(of_stream(&all_events(&store), "draft-1"), [0]);
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(
        stream_revs(&store, "draft-1", Direction::Forwards).unwrap(),
        [0]
    );
    append_n(&store, "draft-2", 1, 10);
    assert_eq!(
        stream_revs(&store, "draft-2", Direction::Forwards).unwrap(),
        [0]
    );
}

#[test]
fn metadata_with_the_deleted_truncate_before_is_a_soft_delete() {
    let dir = common::tempdir();
    let store = open(dir.path());
    append_n(&store, "cart-1", 3, 0);
    store
        .save_snapshot("cart-1", Revision(2), "cart.v1", "state".into())
        .unwrap();
    let deleted = meta(|m| {
        m.truncate_before = Some(Revision(statestore::DELETED_TRUNCATE_BEFORE));
        m.custom.insert("reason".into(), serde_json::json!("gdpr"));
    });
    // Checked against the metadata's own revision, as any metadata.
    assert!(matches!(
        store.set_stream_metadata(
            "cart-1",
            ExpectedRevision::Exact(Revision(0)),
            deleted.clone()
        ),
        Err(Error::WrongExpectedRevision { .. })
    ));
    store
        .set_stream_metadata("cart-1", ExpectedRevision::NoStream, deleted.clone())
        .expect("metadata that soft-deletes");
    assert!(matches!(
        store.read_stream("cart-1", Revision(0), Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
    assert!(matches!(
        store.read_stream("cart-1", Revision::END, Direction::Backwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
    assert_eq!(store.stream_revision("cart-1").unwrap(), None);
    assert!(of_stream(&all_events(&store), "cart-1").is_empty());
    assert!(by_type_revs(&store, "cart-1").is_empty());
    let (_, m) = store.stream_metadata("cart-1").unwrap().unwrap();
    assert_eq!(m, deleted, "stored as given, other keys kept");
    assert!(matches!(
        store.append(
            "cart-1",
            ExpectedRevision::StreamExists,
            vec![common::ev(9, "Ev")]
        ),
        Err(Error::StreamDeleted { .. })
    ));
    // Again on the deleted stream: it stays deleted (not a revival).
    store
        .set_stream_metadata("cart-1", ExpectedRevision::Any, deleted.clone())
        .unwrap();
    assert!(matches!(
        store.read_stream("cart-1", Revision(0), Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));

    // An append brings it back as after a delete: revisions continue, the old events and
    // the snapshot stay gone, the other keys stay.
    let r = store
        .append(
            "cart-1",
            ExpectedRevision::NoStream,
            vec![common::ev(10, "Ev")],
        )
        .unwrap();
    assert_eq!(r.revision, Revision(3));
    assert_eq!(
        stream_revs(&store, "cart-1", Direction::Forwards).unwrap(),
        [3]
    );
    assert!(
        store
            .load_snapshot("cart-1", Revision::END)
            .unwrap()
            .is_none(),
        "the snapshot went with the delete"
    );
    let (_, m) = store.stream_metadata("cart-1").unwrap().unwrap();
    assert_eq!(m.truncate_before, Some(Revision(3)));
    assert_eq!(m.custom.get("reason"), Some(&serde_json::json!("gdpr")));

    // On a stream with no events at all.
    store
        .set_stream_metadata("cart-2", ExpectedRevision::NoStream, deleted)
        .unwrap();
    assert!(
        store
            .stream_metadata("cart-2")
            .unwrap()
            .unwrap()
            .1
            .is_deleted()
    );
    store.close().unwrap();

    // The same after a reopen, and the revived stream goes on.
    let store = open(dir.path());
    assert_eq!(
        stream_revs(&store, "cart-1", Direction::Forwards).unwrap(),
        [3]
    );
    append_n(&store, "cart-1", 1, 20);
    assert_eq!(
        stream_revs(&store, "cart-1", Direction::Forwards).unwrap(),
        [3, 4]
    );
    append_n(&store, "cart-2", 1, 30);
    assert_eq!(
        stream_revs(&store, "cart-2", Direction::Forwards).unwrap(),
        [0]
    );
}
