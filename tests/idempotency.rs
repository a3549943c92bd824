//! Retrying an append with the same event ids returns the original result and writes nothing;
//! a retry that only partly matches what is stored is an `IdempotencyConflict`.

mod common;

use common::{ev, id};
use statestore::{
    AppendResult, Direction, Error, EventData, ExpectedRevision, Filter, Position, Revision, Store,
    StreamAppend,
};

fn open() -> (tempfile::TempDir, Store) {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    (dir, store)
}

fn events(ids: &[u64]) -> Vec<EventData> {
    ids.iter().map(|&n| ev(n, "T")).collect()
}

fn result(first: u64, last: u64, revision: u64) -> AppendResult {
    AppendResult {
        first_position: Position(first),
        last_position: Position(last),
        revision: Revision(revision),
    }
}

/// The whole log, as (stream, revision, id number) triples.
fn log(store: &Store) -> Vec<(String, u64, u128)> {
    store
        .read_all(
            Position::START,
            Direction::Forwards,
            1000,
            &Filter::default(),
        )
        .unwrap()
        .events
        .iter()
        .map(|e| {
            (
                e.stream().to_string(),
                e.revision.0,
                e.id.as_u64_pair().1 as u128,
            )
        })
        .collect()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(
    r: Result<T, Error>,
    stream: &str,
    event_id: u64,
    revision: u64,
) {
    match r {
        Err(Error::IdempotencyConflict {
            stream: s,
            event_id: e,
            revision: rev,
        }) => {
            assert_eq!(s, stream, "stream");
            assert_eq!(e, id(event_id), "event id");
            assert_eq!(rev, Revision(revision), "revision");
        }
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
}

/// A store with "a" at revisions 0..=1 (ids 1, 2; positions 1, 2).
fn with_stream() -> (tempfile::TempDir, Store) {
    let (dir, store) = open();
    store
        .append("a", ExpectedRevision::NoStream, events(&[1, 2]))
        .unwrap();
    (dir, store)
}

#[test]
fn retry_with_exact_returns_the_original_and_writes_nothing() {
    let (_dir, store) = with_stream();
    let original = store
        .append(
            "a",
            ExpectedRevision::Exact(Revision(1)),
            events(&[3, 4, 5]),
        )
        .unwrap();
    assert_eq!(original, result(3, 5, 4));
    let before = log(&store);
    for _ in 0..3 {
        let retry = store
            .append(
                "a",
                ExpectedRevision::Exact(Revision(1)),
                events(&[3, 4, 5]),
            )
            .unwrap();
        assert_eq!(retry, original);
        assert_eq!(store.last_position(), Position(5));
        assert_eq!(log(&store), before);
    }
}

#[test]
fn retry_with_no_stream_returns_the_original_and_writes_nothing() {
    let (_dir, store) = open();
    let original = store
        .append("n", ExpectedRevision::NoStream, events(&[1, 2]))
        .unwrap();
    let retry = store
        .append("n", ExpectedRevision::NoStream, events(&[1, 2]))
        .unwrap();
    assert_eq!(retry, original);
    assert_eq!(retry, result(1, 2, 1));
    assert_eq!(store.last_position(), Position(2));
}

#[test]
fn retry_with_any_returns_the_original_and_writes_nothing() {
    let (_dir, store) = with_stream();
    let original = store
        .append("a", ExpectedRevision::Any, events(&[3]))
        .unwrap();
    let retry = store
        .append("a", ExpectedRevision::Any, events(&[3]))
        .unwrap();
    assert_eq!(retry, original);
    assert_eq!(store.last_position(), Position(3));
    let original = store
        .append("b", ExpectedRevision::Any, events(&[7, 8]))
        .unwrap();
    let retry = store
        .append("b", ExpectedRevision::Any, events(&[7, 8]))
        .unwrap();
    assert_eq!(retry, original);
    assert_eq!(retry, result(4, 5, 1));
    assert_eq!(store.last_position(), Position(5));
}

#[test]
fn retry_with_stream_exists_returns_the_original_and_writes_nothing() {
    let (_dir, store) = with_stream();
    let original = store
        .append("a", ExpectedRevision::StreamExists, events(&[3, 4]))
        .unwrap();
    let retry = store
        .append("a", ExpectedRevision::StreamExists, events(&[3, 4]))
        .unwrap();
    assert_eq!(retry, original);
    assert_eq!(store.last_position(), Position(4));
}

#[test]
fn retry_after_later_appends_still_returns_the_original() {
    let (_dir, store) = open();
    let first = store
        .append("s", ExpectedRevision::NoStream, events(&[1, 2]))
        .unwrap();
    let second = store
        .append("s", ExpectedRevision::Exact(Revision(1)), events(&[3]))
        .unwrap();
    let third = store
        .append("s", ExpectedRevision::Any, events(&[4, 5]))
        .unwrap();
    store
        .append("s", ExpectedRevision::Exact(Revision(4)), events(&[6]))
        .unwrap();
    store
        .append("other", ExpectedRevision::Any, events(&[7]))
        .unwrap();
    let before = log(&store);

    let retry = store
        .append("s", ExpectedRevision::NoStream, events(&[1, 2]))
        .unwrap();
    assert_eq!(retry, first);
    let retry = store
        .append("s", ExpectedRevision::Exact(Revision(1)), events(&[3]))
        .unwrap();
    assert_eq!(retry, second);
    let retry = store
        .append("s", ExpectedRevision::Any, events(&[4, 5]))
        .unwrap();
    assert_eq!(retry, third);
    assert_eq!(store.last_position(), Position(7));
    assert_eq!(log(&store), before);
}

#[test]
fn retry_after_reopen_returns_the_original() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::small_config()).unwrap();
    let mut originals = Vec::new();
    for n in 0..30u64 {
        let expected = if n == 0 {
            ExpectedRevision::NoStream
        } else {
            ExpectedRevision::Exact(Revision(2 * n - 1))
        };
        originals.push((
            expected,
            n,
            store
                .append("s", expected, events(&[100 + 2 * n, 101 + 2 * n]))
                .unwrap(),
        ));
    }
    assert!(store.stats().segments > 1);
    store.close().unwrap();
    let store = Store::open(dir.path(), common::small_config()).unwrap();
    for (expected, n, original) in originals {
        let retry = store
            .append("s", expected, events(&[100 + 2 * n, 101 + 2 * n]))
            .unwrap();
        assert_eq!(retry, original);
    }
    assert_eq!(store.last_position(), Position(60));
}

#[test]
fn first_ids_matching_but_not_all_is_a_conflict() {
    let (_dir, store) = with_stream();
    store
        .append("a", ExpectedRevision::Exact(Revision(1)), events(&[3, 4]))
        .unwrap();
    let before = log(&store);
    for expected in [ExpectedRevision::Exact(Revision(1)), ExpectedRevision::Any] {
        // The second id differs.
        assert_conflict(store.append("a", expected, events(&[3, 9])), "a", 3, 2);
        // One more event than the original.
        assert_conflict(store.append("a", expected, events(&[3, 4, 9])), "a", 3, 2);
    }
    // Same ids, different order: with Any, the first id is where a retry would have put it.
    assert_conflict(
        store.append("a", ExpectedRevision::Any, events(&[4, 3])),
        "a",
        4,
        3,
    );
    // NoStream: the stream's first append was ids 1, 2.
    assert_conflict(
        store.append("a", ExpectedRevision::NoStream, events(&[1, 9])),
        "a",
        1,
        0,
    );
    assert_conflict(
        store.append("a", ExpectedRevision::NoStream, events(&[1, 2, 3, 4, 9])),
        "a",
        1,
        0,
    );
    assert_eq!(store.last_position(), Position(4));
    assert_eq!(log(&store), before);
}

#[test]
fn a_later_id_already_stored_at_its_place_is_a_conflict() {
    let (_dir, store) = with_stream();
    store
        .append("a", ExpectedRevision::Exact(Revision(1)), events(&[3, 4]))
        .unwrap();
    let before = log(&store);
    // The first id is new, but the second is stored where a retry would have put it.
    assert_conflict(
        store.append("a", ExpectedRevision::Exact(Revision(1)), events(&[9, 4])),
        "a",
        4,
        3,
    );
    assert_conflict(
        store.append("a", ExpectedRevision::NoStream, events(&[9, 2])),
        "a",
        2,
        1,
    );
    assert_conflict(
        store.append("a", ExpectedRevision::Any, events(&[9, 10, 4])),
        "a",
        4,
        3,
    );
    assert_eq!(store.last_position(), Position(4));
    assert_eq!(log(&store), before);
}

#[test]
fn multi_stream_retry_returns_the_originals() {
    let (_dir, store) = with_stream();
    let parts = || {
        vec![
            StreamAppend::new("x", ExpectedRevision::NoStream, events(&[10, 11])),
            StreamAppend::new("a", ExpectedRevision::Exact(Revision(1)), events(&[12])),
            StreamAppend::new("y", ExpectedRevision::Any, events(&[13])),
        ]
    };
    let original = store.append_multi(parts()).unwrap();
    assert_eq!(
        original,
        [result(3, 4, 1), result(5, 5, 2), result(6, 6, 0)]
    );
    store
        .append("a", ExpectedRevision::Any, events(&[14]))
        .unwrap();
    store
        .append("x", ExpectedRevision::Any, events(&[15]))
        .unwrap();
    let before = log(&store);
    for _ in 0..2 {
        assert_eq!(store.append_multi(parts()).unwrap(), original);
        assert_eq!(store.last_position(), Position(8));
        assert_eq!(log(&store), before);
    }
}

#[test]
fn multi_stream_retry_that_only_partly_matches_is_a_conflict() {
    let (_dir, store) = with_stream();
    store
        .append_multi(vec![
            StreamAppend::new("x", ExpectedRevision::NoStream, events(&[10])),
            StreamAppend::new("a", ExpectedRevision::Exact(Revision(1)), events(&[11])),
        ])
        .unwrap();
    let before = log(&store);
    // The part for "x" is a retry, the part for "new" is not: not one atomic commit retried.
    let r = store.append_multi(vec![
        StreamAppend::new("x", ExpectedRevision::NoStream, events(&[10])),
        StreamAppend::new("new", ExpectedRevision::NoStream, events(&[20])),
    ]);
    assert!(
        matches!(r, Err(Error::IdempotencyConflict { .. })),
        "expected IdempotencyConflict, got {r:?}"
    );
    assert_eq!(store.last_position(), Position(4));
    assert_eq!(log(&store), before);
    assert_eq!(store.stream_revision("new").unwrap(), None);
}

#[test]

fn an_id_already_stored_elsewhere_in_the_stream_is_a_conflict() {
    let (_dir, store) = open();
    let original = store
        .append("s", ExpectedRevision::NoStream, events(&[1]))
        .unwrap();
    // Id 1 is already stored (revision 0). The engine writes it again at revision 2.
    let r = store.append("s", ExpectedRevision::Exact(Revision(0)), events(&[2, 1]));
    assert_conflict(r, "s", 1, 0);
    // And, as a consequence when it is accepted, the retry of the first append fails with
    // WrongExpectedRevision instead of returning the original result.
    let retry = store
        .append("s", ExpectedRevision::NoStream, events(&[1]))
        .unwrap();
    assert_eq!(retry, original);
}
