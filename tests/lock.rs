//! One open store per data directory: a second open fails with `Locked`, naming the holder's
//! pid, until the first store is closed or dropped.

mod common;

use statestore::{Direction, Error, ExpectedRevision, Position, Revision, Store};

#[track_caller]
fn assert_locked(r: Result<Store, Error>, dir: &std::path::Path) {
    match r {
        Err(Error::Locked { dir: d, pid }) => {
            assert_eq!(d, dir);
            assert_eq!(pid, std::process::id().to_string());
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, but the second open succeeded"),
    }
}

#[test]
fn second_open_is_locked_with_our_pid() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    store
        .append("s", ExpectedRevision::NoStream, vec![common::ev(1, "T")])
        .unwrap();
    assert_locked(Store::open(dir.path(), common::config()), dir.path());
    // Again, from another thread.
    let path = dir.path().to_path_buf();
    let r = std::thread::spawn(move || Store::open(&path, common::config()))
        .join()
        .unwrap();
    assert_locked(r, dir.path());
    // The failed opens did not disturb the open store.
    store
        .append(
            "s",
            ExpectedRevision::Exact(Revision(0)),
            vec![common::ev(2, "T")],
        )
        .unwrap();
    assert_eq!(store.last_position(), Position(2));
}

#[test]
fn open_works_after_close() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    store
        .append("s", ExpectedRevision::NoStream, vec![common::ev(1, "T")])
        .unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), common::config()).unwrap();
    assert_eq!(
        store
            .read_stream("s", Revision(0), Direction::Forwards, 10)
            .unwrap()
            .len(),
        1
    );
    assert_locked(Store::open(dir.path(), common::config()), dir.path());
}

#[test]
fn open_works_after_drop() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    assert_locked(Store::open(dir.path(), common::config()), dir.path());
    drop(store);
    let store = Store::open(dir.path(), common::config()).unwrap();
    assert_eq!(store.last_position(), Position(0));
}
