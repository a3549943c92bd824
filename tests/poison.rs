//! After a failed write the writer is poisoned: that append and every later one fail with
//! `Poisoned`, reads keep serving what was acknowledged, and a reopened store has exactly the
//! acknowledged events.

mod common;

use common::{Expected, assert_events, ev, small_config};
use statestore::{
    Config, Direction, Error, EventData, ExpectedRevision, Filter, Position, RecordedEvent,
    Revision, Store, StreamAppend,
};

#[track_caller]
fn assert_poisoned<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::Poisoned { .. })),
        "expected Poisoned, got {r:?}"
    );
}

fn all(store: &Store) -> Vec<RecordedEvent> {
    let s = store
        .read_all(
            Position::START,
            Direction::Forwards,
            10_000,
            &Filter::default(),
        )
        .unwrap();
    assert!(s.end_of_log);
    s.events
}

/// Appends `count` single-event appends to streams "s-0".."s-2", returning the model.
fn fill(store: &Store, count: u64, big: bool) -> Vec<Expected> {
    let mut model = Vec::new();
    for n in 0..count {
        let stream = format!("s-{}", n % 3);
        let data = if big {
            ev(n, "T").with_metadata(vec![b'm'; 300])
        } else {
            ev(n, "T")
        };
        let r = store
            .append(&stream, ExpectedRevision::Any, vec![data.clone()])
            .unwrap();
        assert_eq!(r.first_position, Position(n + 1));
        model.push(Expected {
            stream,
            revision: n / 3,
            position: n + 1,
            data,
        });
    }
    model
}

/// Fills a store with `n` acknowledged events (n a multiple of 3), makes the next write fail,
/// and checks the store before and after a reopen.
fn check_poison_and_reopen(config: Config, n: u64, big: bool) {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), config.clone()).unwrap();
    let model = fill(&store, n, big);
    let refs: Vec<&Expected> = model.iter().collect();
    let segments = store.stats().segments;

    store.inject_write_failure();
    let failed: Vec<EventData> = (100..103)
        .map(|n| {
            let e = ev(n, "Failed");
            if big {
                e.with_metadata(vec![b'x'; 500])
            } else {
                e
            }
        })
        .collect();
    assert_poisoned(store.append("s-0", ExpectedRevision::Any, failed.clone()));

    // Every later append fails the same way, whatever it is.
    assert_poisoned(store.append("s-1", ExpectedRevision::Any, vec![ev(200, "T")]));
    assert_poisoned(store.append("new", ExpectedRevision::NoStream, vec![ev(201, "T")]));
    assert_poisoned(store.append_multi(vec![
        StreamAppend::new("a", ExpectedRevision::Any, vec![ev(202, "T")]),
        StreamAppend::new("b", ExpectedRevision::Any, vec![ev(203, "T")]),
    ]));
    // A retry of an acknowledged append is refused too: nothing is certain any more.
    assert_poisoned(store.append("s-0", ExpectedRevision::Any, vec![model[0].data.clone()]));

    // Reads still serve everything acknowledged, and nothing of the failed append.
    assert_eq!(store.last_position(), Position(n));
    assert_events(&all(&store), &refs);
    assert_eq!(
        store.stream_revision("s-0").unwrap(),
        Some(Revision(n / 3 - 1))
    );
    assert_eq!(store.stream_revision("new").unwrap(), None);
    assert!(store.read_event(Position(n + 1)).unwrap().is_none());
    assert!(
        store
            .read_by_type("Failed", Position::START, Direction::Forwards, 10)
            .unwrap()
            .is_empty()
    );
    let s0 = store
        .read_stream("s-0", Revision::END, Direction::Backwards, 100)
        .unwrap();
    assert_eq!(s0.len() as u64, n / 3);
    assert_eq!(s0[0].position, Position(n - 2));
    assert!(matches!(
        store.read_stream("new", Revision(0), Direction::Forwards, 1),
        Err(Error::StreamNotFound { .. })
    ));
    assert!(store.stats().segments >= segments);
    drop(store);

    // Reopened: all acknowledged events, none of the failed append, and appends work.
    let store = Store::open(dir.path(), config).unwrap();
    assert_eq!(store.last_position(), Position(n));
    assert_events(&all(&store), &refs);
    assert!(
        store
            .read_by_type("Failed", Position::START, Direction::Forwards, 10)
            .unwrap()
            .is_empty()
    );
    // The failed append (same ids) is a fresh append now; with big events it does not fit in
    // the last segment, so it is the one that rolls.
    let segments_before = store.stats().segments;
    let r = store.append("s-1", ExpectedRevision::Any, failed).unwrap();
    assert_eq!(
        (r.first_position, r.last_position),
        (Position(n + 1), Position(n + 3))
    );
    if big {
        assert_eq!(store.stats().segments, segments_before + 1);
    }
    let r = store
        .append(
            "s-0",
            ExpectedRevision::Exact(Revision(n / 3 - 1)),
            vec![ev(300, "T")],
        )
        .unwrap();
    assert_eq!(r.first_position, Position(n + 4));
    assert_eq!(r.revision, Revision(n / 3));
    let e = store.read_event(Position(n + 4)).unwrap().unwrap();
    assert_eq!(e.id, common::id(300));
}

#[test]
fn a_failed_write_poisons_the_writer_and_reopen_recovers() {
    check_poison_and_reopen(common::config(), 12, false);
}

#[test]
fn a_failed_write_that_needed_a_new_segment_poisons_the_writer_and_reopen_recovers() {
    // With 4 KiB segments, 18 events of ~390 bytes leave under 1 KiB in the second segment,
    // less than the failing append's ~1.8 KiB.
    check_poison_and_reopen(small_config(), 18, true);
}

#[test]
fn poisoning_is_not_triggered_by_validation_errors() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    store
        .append("s", ExpectedRevision::NoStream, vec![ev(1, "T")])
        .unwrap();
    // A rejected append does not use up the injected failure...
    store.inject_write_failure();
    assert!(matches!(
        store.append("s", ExpectedRevision::NoStream, vec![ev(2, "T")]),
        Err(Error::WrongExpectedRevision { .. })
    ));
    // ...the next write does.
    assert_poisoned(store.append("s", ExpectedRevision::Any, vec![ev(3, "T")]));
    assert_poisoned(store.append("s", ExpectedRevision::Any, vec![ev(4, "T")]));
    assert_eq!(store.last_position(), Position(1));
}

/// Under an interval policy, a poisoned writer keeps refusing appends after the interval has
/// passed (the writer does not go back to syncing), and the store still closes and reopens with
/// exactly the acknowledged events.
#[test]
fn interval_policy_stays_poisoned_and_closes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        fsync: statestore::FsyncPolicy::IntervalMs(5),
        ..small_config()
    };
    let store = Store::open(dir.path(), config.clone()).unwrap();
    let kept = store
        .append(
            "s",
            ExpectedRevision::NoStream,
            vec![EventData::json("T", "{}")],
        )
        .unwrap();
    store.inject_write_failure();
    assert_poisoned(store.append("s", ExpectedRevision::Any, vec![EventData::json("T", "{}")]));
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_poisoned(store.append("s", ExpectedRevision::Any, vec![EventData::json("T", "{}")]));
    store.close().unwrap();
    let store = Store::open(dir.path(), config).unwrap();
    assert_eq!(store.last_position(), kept.last_position);
}
