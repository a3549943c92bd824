//! Exactly-once tracking: a source's position committed atomically with the events it
//! produced, checked for increase and expectation, retried idempotently, kept across reopen.

mod common;

use common::{config, ev, tempdir};
use statestore::{
    Error, ExpectedRevision, Position, Revision, Store, StreamAppend, Tracking, TrackingExpected,
};

fn tracked(source: &str, position: u64, expected: Option<TrackingExpected>) -> Option<Tracking> {
    Some(Tracking {
        source: source.into(),
        position,
        expected,
    })
}

fn part(stream: &str, n: u64) -> StreamAppend {
    StreamAppend::new(stream, ExpectedRevision::Any, vec![ev(n, "Derived")])
}

#[test]
fn tracking_commits_with_events_and_only_increases() {
    let dir = tempdir();
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.tracking("proj").unwrap(), None);

    let results = store
        .commit(
            vec![part("out-1", 1)],
            tracked("proj", 10, Some(TrackingExpected::None)),
            "",
        )
        .unwrap();
    assert_eq!(
        results.len(),
        2,
        "the part's result, then the tracking record's"
    );
    assert_eq!(results[0].first_position, Position(1));
    let entry = store.tracking("proj").unwrap().expect("stored");
    assert_eq!(entry.position, 10);
    assert_eq!(entry.commit_position, results[1].last_position);
    // The derived event is there, in the same commit.
    let read = store
        .read_stream("out-1", Revision(0), statestore::Direction::Forwards, 10)
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].data(), ev(1, "Derived").data.as_ref());

    // Not increasing: refused with the fields, and nothing written.
    let last = store.last_position();
    match store.commit(vec![part("out-1", 2)], tracked("proj", 10, None), "") {
        Err(Error::TrackingNotIncreasing {
            source_name,
            position,
            stored,
        }) => {
            assert_eq!((source_name.as_str(), position, stored), ("proj", 10, 10));
        }
        other => panic!("expected TrackingNotIncreasing, got {other:?}"),
    }
    // A lower position with other streams is refused too (it is not a retry).
    assert!(matches!(
        store.commit(vec![part("out-2", 3)], tracked("proj", 5, None), ""),
        Err(Error::TrackingNotIncreasing { .. })
    ));
    assert_eq!(
        store.last_position(),
        last,
        "a refused commit writes nothing"
    );

    // Wrong expectation: TRACKING_CONFLICT with what is stored.
    match store.commit(
        vec![part("out-1", 4)],
        tracked("proj", 11, Some(TrackingExpected::Position(9))),
        "",
    ) {
        Err(Error::TrackingConflict {
            expected, stored, ..
        }) => {
            assert_eq!(expected, TrackingExpected::Position(9));
            assert_eq!(stored, Some(10));
        }
        other => panic!("expected TrackingConflict, got {other:?}"),
    }
    assert!(matches!(
        store.commit(
            vec![part("out-1", 4)],
            tracked("proj", 11, Some(TrackingExpected::None)),
            ""
        ),
        Err(Error::TrackingConflict {
            stored: Some(10),
            ..
        })
    ));
    assert_eq!(store.last_position(), last);

    // A tracking-only commit moves the position.
    let only = store
        .commit(
            Vec::new(),
            tracked("proj", 12, Some(TrackingExpected::Position(10))),
            "",
        )
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(store.tracking("proj").unwrap().unwrap().position, 12);
}

#[test]
fn a_retried_tracked_commit_gets_its_original_answer() {
    let dir = tempdir();
    let store = Store::open(dir.path(), config()).unwrap();
    let first = store
        .commit(
            vec![part("out-a", 1), part("out-b", 2)],
            tracked("p", 7, None),
            "",
        )
        .unwrap();
    let last = store.last_position();
    let again = store
        .commit(
            vec![part("out-a", 1), part("out-b", 2)],
            tracked("p", 7, None),
            "",
        )
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(store.last_position(), last, "the retry wrote nothing");
    // Same position, other streams: not a retry.
    assert!(matches!(
        store.commit(vec![part("out-c", 3)], tracked("p", 7, None), ""),
        Err(Error::TrackingNotIncreasing { .. })
    ));
}

#[test]
fn tracking_survives_reopen_and_lists_by_prefix() {
    let dir = tempdir();
    {
        let store = Store::open(dir.path(), config()).unwrap();
        for (k, source) in ["proj-a", "proj-b", "other"].iter().enumerate() {
            store
                .commit(
                    vec![part("out", k as u64 + 1)],
                    tracked(source, 100 + k as u64, None),
                    "",
                )
                .unwrap();
        }
        store
            .commit(Vec::new(), tracked("proj-a", 200, None), "")
            .unwrap();
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.tracking("proj-a").unwrap().unwrap().position, 200);
    // The writer, too, knows the stored position after the reopen.
    assert!(matches!(
        store.commit(Vec::new(), tracked("proj-a", 150, None), ""),
        Err(Error::TrackingNotIncreasing { stored: 200, .. })
    ));
    let (listed, more) = store.list_tracking("proj-", 0, 100).unwrap();
    assert_eq!(more, None);
    let got: Vec<(String, u64)> = listed.into_iter().map(|e| (e.source, e.position)).collect();
    assert_eq!(
        got,
        vec![("proj-a".to_string(), 200), ("proj-b".to_string(), 101)]
    );
    let (page, more) = store.list_tracking("", 0, 2).unwrap();
    assert_eq!(page.len(), 2);
    let (rest, _) = store
        .list_tracking("", more.expect("a next page"), 2)
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].source, "other");
}

#[test]
fn tracking_streams_are_not_writable_and_sources_are_checked() {
    let dir = tempdir();
    let store = Store::open(dir.path(), config()).unwrap();
    for stream in ["$tracking", "$tracking-x"] {
        assert!(matches!(
            store.append(stream, ExpectedRevision::Any, vec![ev(1, "E")]),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        store.commit(Vec::new(), tracked("", 1, None), ""),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.commit(Vec::new(), tracked(&"x".repeat(256), 1, None), ""),
        Err(Error::InvalidArgument(_))
    ));
    // An empty commit without tracking is still refused.
    assert!(matches!(
        store.commit(Vec::new(), None, ""),
        Err(Error::InvalidArgument(_))
    ));
}
