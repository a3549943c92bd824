//! Live waiting for commits: `wait_for_commit` wakes when another thread appends and returns
//! the newest visible position (also on timeout); `on_commit` listeners see increasing positions.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ev;
use statestore::{Direction, ExpectedRevision, Filter, Position, Store};

const GENEROUS: Duration = Duration::from_secs(10);

#[test]
fn wait_returns_when_another_thread_appends() {
    let dir = common::tempdir();
    let store = Arc::new(Store::open(dir.path(), common::config()).unwrap());
    store
        .append("s", ExpectedRevision::Any, vec![ev(1, "T")])
        .unwrap();
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            store
                .append("s", ExpectedRevision::Any, vec![ev(2, "T"), ev(3, "T")])
                .unwrap()
        })
    };
    let seen = store.wait_for_commit(Position(1), GENEROUS);
    let appended = appender.join().unwrap();
    assert_eq!(
        seen,
        Position(3),
        "the wait returned before the append was visible"
    );
    assert_eq!(appended.last_position, Position(3));
    // What the waiter was told about is readable.
    let events = store
        .read_all(Position(2), Direction::Forwards, 10, &Filter::default())
        .unwrap()
        .events;
    assert_eq!(events.len(), 2);
}

#[test]
fn wait_returns_at_once_when_there_is_already_something_newer() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    for n in 0..3 {
        store
            .append("s", ExpectedRevision::Any, vec![ev(n, "T")])
            .unwrap();
    }
    // A generous timeout: if this did not return at once the test would take 10 s per call.
    assert_eq!(store.wait_for_commit(Position(0), GENEROUS), Position(3));
    assert_eq!(store.wait_for_commit(Position(2), GENEROUS), Position(3));
}

#[test]
fn wait_returns_the_current_position_on_timeout() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    assert_eq!(
        store.wait_for_commit(Position(0), Duration::from_millis(20)),
        Position(0)
    );
    store
        .append("s", ExpectedRevision::Any, vec![ev(1, "T"), ev(2, "T")])
        .unwrap();
    assert_eq!(
        store.wait_for_commit(Position(2), Duration::from_millis(20)),
        Position(2)
    );
    // Waiting "after" a position past the end times out too, with the real position.
    assert_eq!(
        store.wait_for_commit(Position(100), Duration::from_millis(20)),
        Position(2)
    );
    assert_eq!(
        store.wait_for_commit(Position(2), Duration::ZERO),
        Position(2)
    );
}

#[test]
fn a_subscriber_following_commits_sees_every_event_of_concurrent_appenders() {
    let dir = common::tempdir();
    let store = Arc::new(Store::open(dir.path(), common::config()).unwrap());
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 25;
    let total = THREADS * PER_THREAD;
    let follower = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut checkpoint = Position(0);
            while checkpoint.0 < total {
                let newest = store.wait_for_commit(checkpoint, GENEROUS);
                assert!(newest > checkpoint, "timed out waiting after {checkpoint}");
                let slice = store
                    .read_all(
                        Position(checkpoint.0 + 1),
                        Direction::Forwards,
                        1000,
                        &Filter::default(),
                    )
                    .unwrap();
                assert!(slice.scanned_to >= newest);
                seen.extend(slice.events.iter().map(|e| (e.position.0, e.id)));
                checkpoint = slice.scanned_to;
            }
            seen
        })
    };
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let store = &store;
            scope.spawn(move || {
                for k in 0..PER_THREAD {
                    store
                        .append(
                            format!("s-{t}"),
                            ExpectedRevision::Any,
                            vec![ev(t * 1000 + k, "T")],
                        )
                        .unwrap();
                }
            });
        }
    });
    let seen = follower.join().unwrap();
    assert_eq!(seen.len() as u64, total);
    for (k, (position, _)) in seen.iter().enumerate() {
        assert_eq!(*position, k as u64 + 1);
    }
    let mut ids: Vec<_> = seen.iter().map(|(_, id)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, total);
}

#[test]
fn on_commit_listeners_receive_increasing_positions() {
    let dir = common::tempdir();
    let store = Arc::new(Store::open(dir.path(), common::config()).unwrap());
    let first: Arc<Mutex<Vec<Position>>> = Arc::default();
    let second: Arc<Mutex<Vec<Position>>> = Arc::default();
    {
        let first = first.clone();
        store.on_commit(move |p| first.lock().unwrap().push(p));
        let second = second.clone();
        store.on_commit(move |p| second.lock().unwrap().push(p));
    }
    store
        .append("s", ExpectedRevision::Any, vec![ev(1, "T")])
        .unwrap();
    store
        .append("s", ExpectedRevision::Any, vec![ev(2, "T"), ev(3, "T")])
        .unwrap();
    assert_eq!(*first.lock().unwrap(), [Position(1), Position(3)]);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let store = &store;
            scope.spawn(move || {
                for k in 0..20u64 {
                    store
                        .append("c", ExpectedRevision::Any, vec![ev(100 + t * 100 + k, "T")])
                        .unwrap();
                }
            });
        }
    });
    let last = store.last_position();
    assert_eq!(last, Position(83));
    for positions in [
        first.lock().unwrap().clone(),
        second.lock().unwrap().clone(),
    ] {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "not strictly increasing: {positions:?}"
        );
        assert_eq!(positions.last(), Some(&last));
        assert!(positions.len() >= 3);
    }
    assert_eq!(*first.lock().unwrap(), *second.lock().unwrap());
}

#[test]

fn on_commit_is_not_called_for_appends_that_commit_nothing() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    let calls: Arc<Mutex<Vec<Position>>> = Arc::default();
    {
        let calls = calls.clone();
        store.on_commit(move |p| calls.lock().unwrap().push(p));
    }
    store
        .append("s", ExpectedRevision::NoStream, vec![ev(1, "T")])
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), [Position(1)]);
    // Rejected by the expected-revision check: nothing is committed.
    assert!(
        store
            .append("s", ExpectedRevision::NoStream, vec![ev(2, "T")])
            .is_err()
    );
    // A retry of the first append: answered from the log, nothing is committed.
    store
        .append("s", ExpectedRevision::NoStream, vec![ev(1, "T")])
        .unwrap();
    assert_eq!(store.last_position(), Position(1));
    assert_eq!(
        *calls.lock().unwrap(),
        [Position(1)],
        "listeners were called for appends that committed nothing"
    );
}
