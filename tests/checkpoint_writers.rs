//! Writers and readers never wait for an index checkpoint: while a checkpoint is held in the
//! middle of its write, appends are acknowledged and reads answered, and the checkpoint, once
//! installed, changes no answer.
//!
//! The only test of this binary: it sets the process-wide crash-test pause before any store
//! opens.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use statestore::{Config, Direction, ExpectedRevision, Position, Revision, Store};

fn temp_run_exists(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("index")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn appends_and_reads_go_on_while_a_checkpoint_is_written() {
    // SAFETY: set before any store (or other thread) of this test binary exists.
    unsafe { std::env::set_var("STATESTORE_CRASH_TEST_CHECKPOINT_PAUSE_MS", "5000") };
    let root = common::tempdir();
    let dir = root.path().join("s");
    let config = Config {
        checkpoint_events: 100,
        checkpoint_interval: Duration::ZERO,
        ..common::config()
    };
    let store = Store::open(&dir, config).unwrap();
    for n in 0..100 {
        store
            .append("a", ExpectedRevision::Any, vec![common::ev(n, "T")])
            .unwrap();
    }
    // The checkpoint of those 100 events is now written and held in its temporary file.
    wait_until("the checkpoint is being written", || temp_run_exists(&dir));
    let before = store.stats();
    assert_eq!(before.index_runs, 0);

    // Meanwhile: appends are acknowledged, and reads see them, including the frozen events.
    for n in 100..300 {
        let expected = match n {
            100 => ExpectedRevision::NoStream,
            _ => ExpectedRevision::Exact(Revision(n - 101)),
        };
        let r = store
            .append("b", expected, vec![common::ev(n, "U")])
            .unwrap();
        assert_eq!(r.first_position, Position(n + 1));
    }
    let a = store
        .read_stream("a", Revision(0), Direction::Forwards, 1000)
        .unwrap();
    let b = store
        .read_stream("b", Revision(0), Direction::Forwards, 1000)
        .unwrap();
    assert_eq!((a.len(), b.len()), (100, 200));
    assert!(
        temp_run_exists(&dir) && store.stats().index_runs == 0,
        "the checkpoint finished before the appends: this run shows nothing"
    );

    // The checkpoint completes and the answers stay the same.
    wait_until("the checkpoint is installed", || {
        store.stats().index_runs >= 1
    });
    assert_eq!(store.stats().checkpoint_position, Position(100));
    let read = |s: &str| {
        store
            .read_stream(s, Revision(0), Direction::Forwards, 1000)
            .unwrap()
    };
    assert_eq!(read("a"), a);
    assert_eq!(read("b"), b);
    assert_eq!(
        store
            .read_by_type("T", Position(0), Direction::Forwards, 1000)
            .unwrap(),
        a
    );
}
