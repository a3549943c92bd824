//! Optimistic concurrency: every `ExpectedRevision` case succeeds when it should and otherwise
//! fails with `WrongExpectedRevision` carrying the stream, the expectation and the actual
//! revision, writing nothing. Multi-stream appends are all-or-nothing.

mod common;

use common::{ev, small_config};
use statestore::{
    ActualRevision, AppendResult, Direction, Error, ExpectedRevision, Filter, Position, Revision,
    Store, StreamAppend,
};

fn open() -> (tempfile::TempDir, Store) {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    (dir, store)
}

/// A store where stream "s" has revisions 0..=2 (positions 1..=3).
fn with_stream() -> (tempfile::TempDir, Store) {
    let (dir, store) = open();
    store
        .append(
            "s",
            ExpectedRevision::NoStream,
            vec![ev(0, "T"), ev(1, "T"), ev(2, "T")],
        )
        .unwrap();
    (dir, store)
}

fn result(first: u64, last: u64, revision: u64) -> AppendResult {
    AppendResult {
        first_position: Position(first),
        last_position: Position(last),
        revision: Revision(revision),
    }
}

#[track_caller]
fn assert_wrong(
    r: Result<impl std::fmt::Debug, Error>,
    stream: &str,
    expected: ExpectedRevision,
    actual: ActualRevision,
) {
    match r {
        Err(Error::WrongExpectedRevision {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(s, stream, "stream");
            assert_eq!(e, expected, "expected");
            assert_eq!(a, actual, "actual");
        }
        other => panic!("expected WrongExpectedRevision, got {other:?}"),
    }
}

/// Nothing was written: the last position and the log are as before.
#[track_caller]
fn assert_log_is(store: &Store, last: u64) {
    assert_eq!(store.last_position(), Position(last));
    let all = store
        .read_all(
            Position::START,
            Direction::Forwards,
            1000,
            &Filter::default(),
        )
        .unwrap();
    assert_eq!(all.events.len() as u64, last);
    assert_eq!(all.scanned_to, Position(last));
}

#[test]
fn any_appends_to_a_new_and_to_an_existing_stream() {
    let (_dir, store) = open();
    let r = store
        .append("s", ExpectedRevision::Any, vec![ev(0, "T")])
        .unwrap();
    assert_eq!(r, result(1, 1, 0));
    let r = store
        .append("s", ExpectedRevision::Any, vec![ev(1, "T"), ev(2, "T")])
        .unwrap();
    assert_eq!(r, result(2, 3, 2));
    assert_eq!(store.stream_revision("s").unwrap(), Some(Revision(2)));
}

#[test]
fn no_stream_succeeds_on_a_new_stream() {
    let (_dir, store) = open();
    let r = store
        .append(
            "s",
            ExpectedRevision::NoStream,
            vec![ev(0, "T"), ev(1, "T")],
        )
        .unwrap();
    assert_eq!(r, result(1, 2, 1));
}

#[test]
fn no_stream_fails_on_an_existing_stream() {
    let (_dir, store) = with_stream();
    let r = store.append("s", ExpectedRevision::NoStream, vec![ev(10, "T")]);
    assert_wrong(
        r,
        "s",
        ExpectedRevision::NoStream,
        ActualRevision::Revision(Revision(2)),
    );
    assert_log_is(&store, 3);
    assert_eq!(store.stream_revision("s").unwrap(), Some(Revision(2)));
}

#[test]
fn stream_exists_succeeds_on_an_existing_stream() {
    let (_dir, store) = with_stream();
    let r = store
        .append("s", ExpectedRevision::StreamExists, vec![ev(10, "T")])
        .unwrap();
    assert_eq!(r, result(4, 4, 3));
}

#[test]
fn stream_exists_fails_on_a_missing_stream() {
    let (_dir, store) = with_stream();
    let r = store.append("other", ExpectedRevision::StreamExists, vec![ev(10, "T")]);
    assert_wrong(
        r,
        "other",
        ExpectedRevision::StreamExists,
        ActualRevision::NoStream,
    );
    assert_log_is(&store, 3);
    assert_eq!(store.stream_revision("other").unwrap(), None);
}

#[test]
fn exact_succeeds_at_the_current_revision() {
    let (_dir, store) = with_stream();
    let r = store
        .append(
            "s",
            ExpectedRevision::Exact(Revision(2)),
            vec![ev(10, "T"), ev(11, "T")],
        )
        .unwrap();
    assert_eq!(r, result(4, 5, 4));
    let r = store
        .append("s", ExpectedRevision::Exact(Revision(4)), vec![ev(12, "T")])
        .unwrap();
    assert_eq!(r, result(6, 6, 5));
}

#[test]
fn exact_fails_below_and_above_the_current_revision() {
    let (_dir, store) = with_stream();
    for wrong in [0, 1, 3, 4, 100, u64::MAX] {
        let expected = ExpectedRevision::Exact(Revision(wrong));
        let r = store.append("s", expected, vec![ev(10 + wrong.min(1000), "T")]);
        assert_wrong(r, "s", expected, ActualRevision::Revision(Revision(2)));
    }
    assert_log_is(&store, 3);
}

#[test]
fn exact_fails_on_a_missing_stream() {
    let (_dir, store) = with_stream();
    for wrong in [0, 1, u64::MAX] {
        let expected = ExpectedRevision::Exact(Revision(wrong));
        let r = store.append("new", expected, vec![ev(20 + wrong.min(1000), "T")]);
        assert_wrong(r, "new", expected, ActualRevision::NoStream);
    }
    assert_log_is(&store, 3);
    assert!(matches!(
        store.read_stream("new", Revision(0), Direction::Forwards, 10),
        Err(Error::StreamNotFound { .. })
    ));
}

#[test]
fn the_check_holds_after_reopen() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), small_config()).unwrap();
    for n in 0..20 {
        store
            .append(
                "s",
                if n == 0 {
                    ExpectedRevision::NoStream
                } else {
                    ExpectedRevision::Exact(Revision(n - 1))
                },
                vec![ev(n, "T")],
            )
            .unwrap();
    }
    store.close().unwrap();
    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_wrong(
        store.append(
            "s",
            ExpectedRevision::Exact(Revision(18)),
            vec![ev(100, "T")],
        ),
        "s",
        ExpectedRevision::Exact(Revision(18)),
        ActualRevision::Revision(Revision(19)),
    );
    assert_wrong(
        store.append("s", ExpectedRevision::NoStream, vec![ev(101, "T")]),
        "s",
        ExpectedRevision::NoStream,
        ActualRevision::Revision(Revision(19)),
    );
    let r = store
        .append(
            "s",
            ExpectedRevision::Exact(Revision(19)),
            vec![ev(102, "T")],
        )
        .unwrap();
    assert_eq!(r, result(21, 21, 20));
}

#[test]
fn multi_stream_append_succeeds_with_results_in_part_order() {
    let (_dir, store) = with_stream();
    let results = store
        .append_multi(vec![
            StreamAppend::new("b", ExpectedRevision::NoStream, vec![ev(10, "T")]),
            StreamAppend::new(
                "s",
                ExpectedRevision::Exact(Revision(2)),
                vec![ev(11, "T"), ev(12, "T")],
            ),
            StreamAppend::new("a", ExpectedRevision::Any, vec![ev(13, "T")]),
            StreamAppend::new("s2", ExpectedRevision::Any, vec![ev(14, "T")]),
        ])
        .unwrap();
    assert_eq!(
        results,
        [
            result(4, 4, 0),
            result(5, 6, 4),
            result(7, 7, 0),
            result(8, 8, 0)
        ]
    );
    let s = store
        .read_stream("s", Revision(3), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        s.iter().map(|e| (e.position.0, e.id)).collect::<Vec<_>>(),
        [(5, common::id(11)), (6, common::id(12))]
    );
}

#[test]
fn multi_stream_append_is_all_or_nothing() {
    let (_dir, store) = with_stream();
    store
        .append("t", ExpectedRevision::NoStream, vec![ev(3, "T")])
        .unwrap();
    // Each case has one failing part, in every place of the append.
    let good_new = || StreamAppend::new("fresh", ExpectedRevision::NoStream, vec![ev(10, "T")]);
    let good_s = || StreamAppend::new("s", ExpectedRevision::Exact(Revision(2)), vec![ev(11, "T")]);
    let good_t = || StreamAppend::new("t", ExpectedRevision::StreamExists, vec![ev(12, "T")]);
    let cases: Vec<(Vec<StreamAppend>, &str, ExpectedRevision, ActualRevision)> = vec![
        (
            vec![
                StreamAppend::new("s", ExpectedRevision::NoStream, vec![ev(20, "T")]),
                good_new(),
                good_t(),
            ],
            "s",
            ExpectedRevision::NoStream,
            ActualRevision::Revision(Revision(2)),
        ),
        (
            vec![
                good_new(),
                StreamAppend::new("t", ExpectedRevision::Exact(Revision(5)), vec![ev(21, "T")]),
                good_s(),
            ],
            "t",
            ExpectedRevision::Exact(Revision(5)),
            ActualRevision::Revision(Revision(0)),
        ),
        (
            vec![
                good_s(),
                good_t(),
                StreamAppend::new("gone", ExpectedRevision::StreamExists, vec![ev(22, "T")]),
            ],
            "gone",
            ExpectedRevision::StreamExists,
            ActualRevision::NoStream,
        ),
    ];
    for (parts, stream, expected, actual) in cases {
        assert_wrong(store.append_multi(parts), stream, expected, actual);
        assert_log_is(&store, 4);
        assert_eq!(store.stream_revision("s").unwrap(), Some(Revision(2)));
        assert_eq!(store.stream_revision("t").unwrap(), Some(Revision(0)));
        assert_eq!(store.stream_revision("fresh").unwrap(), None);
        assert_eq!(store.stream_revision("gone").unwrap(), None);
    }
    // The same parts without the failing one go through, at the next positions.
    let results = store
        .append_multi(vec![good_new(), good_s(), good_t()])
        .unwrap();
    assert_eq!(results, [result(5, 5, 0), result(6, 6, 3), result(7, 7, 1)]);
}

#[test]
fn a_stream_twice_in_one_append_is_invalid() {
    let (_dir, store) = with_stream();
    let r = store.append_multi(vec![
        StreamAppend::new("x", ExpectedRevision::Any, vec![ev(10, "T")]),
        StreamAppend::new("s", ExpectedRevision::Any, vec![ev(11, "T")]),
        StreamAppend::new("x", ExpectedRevision::Any, vec![ev(12, "T")]),
    ]);
    assert!(
        matches!(r, Err(Error::InvalidArgument(_))),
        "expected InvalidArgument, got {r:?}"
    );
    assert_log_is(&store, 3);
    assert_eq!(store.stream_revision("x").unwrap(), None);
}

#[test]
fn concurrent_exact_appends_let_exactly_one_win_per_revision() {
    let (_dir, store) = open();
    store
        .append("c", ExpectedRevision::NoStream, vec![ev(0, "T")])
        .unwrap();
    let store = &store;
    let wins: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                scope.spawn(move || {
                    let mut wins = 0;
                    for k in 0..25u64 {
                        let current = store.stream_revision("c").unwrap().unwrap();
                        match store.append(
                            "c",
                            ExpectedRevision::Exact(current),
                            vec![ev(1000 + t * 100 + k, "T")],
                        ) {
                            Ok(r) => {
                                assert_eq!(r.revision, Revision(current.0 + 1));
                                wins += 1;
                            }
                            Err(Error::WrongExpectedRevision { actual, .. }) => {
                                assert_ne!(actual, ActualRevision::Revision(current));
                            }
                            Err(e) => panic!("unexpected error {e}"),
                        }
                    }
                    wins
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = wins.iter().sum();
    assert_eq!(
        store.stream_revision("c").unwrap(),
        Some(Revision(total as u64))
    );
    let events = store
        .read_stream("c", Revision(0), Direction::Forwards, 1000)
        .unwrap();
    assert_eq!(events.len(), total + 1);
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e.revision, Revision(k as u64));
    }
}

#[test]

fn exact_u64_max_is_not_mistaken_for_no_stream() {
    let (_dir, store) = open();
    store
        .append("s", ExpectedRevision::NoStream, vec![ev(1, "T")])
        .unwrap();
    // The stream is at revision 0, so Exact(u64::MAX) must fail, even with the same event id.
    let expected = ExpectedRevision::Exact(Revision(u64::MAX));
    assert_wrong(
        store.append("s", expected, vec![ev(1, "T")]),
        "s",
        expected,
        ActualRevision::Revision(Revision(0)),
    );
}
