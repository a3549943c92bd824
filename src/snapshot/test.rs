//! Unit tests for the snapshot directory rules: replacement, pruning, and telling a torn tail
//! from damage.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests index known buffers and unwrap to fail loudly"
)]

use super::*;

fn entry(revision: u64, len: u64) -> Entry {
    Entry {
        revision,
        offset: revision * 1000,
        len,
    }
}

fn revisions(list: &[Entry]) -> Vec<u64> {
    list.iter().map(|e| e.revision).collect()
}

#[test]
fn apply_save_keeps_revisions_sorted_and_prunes_the_oldest_beyond_keep() {
    let mut list = Vec::new();
    for r in [20, 10, 30] {
        let applied = apply_save(&mut list, entry(r, 5), 0, 3);
        assert_eq!(applied.freed, 0);
        assert!(!applied.pruned_by_keep);
    }
    assert_eq!(revisions(&list), [10, 20, 30]);
    // A fourth prunes the oldest; the record says so (prune_below = 20).
    let applied = apply_save(&mut list, entry(40, 5), 20, 3);
    assert_eq!(revisions(&list), [20, 30, 40]);
    assert_eq!((applied.freed, applied.pruned_by_keep), (5, false));
    // Replaying the same record with a larger keep prunes the same.
    let mut replay = vec![entry(10, 5), entry(20, 5), entry(30, 5)];
    let applied = apply_save(&mut replay, entry(40, 5), 20, 10);
    assert_eq!(revisions(&replay), [20, 30, 40]);
    assert_eq!((applied.freed, applied.pruned_by_keep), (5, false));
    // With a smaller keep, the keep prunes more, and says so.
    let mut replay = vec![entry(10, 5), entry(20, 5), entry(30, 5)];
    let applied = apply_save(&mut replay, entry(40, 5), 20, 1);
    assert_eq!(revisions(&replay), [40]);
    assert_eq!((applied.freed, applied.pruned_by_keep), (15, true));
}

#[test]
fn apply_save_replaces_a_snapshot_at_the_same_revision() {
    let mut list = vec![entry(10, 5), entry(20, 7)];
    let replacement = Entry {
        revision: 20,
        offset: 99_999,
        len: 9,
    };
    let applied = apply_save(&mut list, replacement, 10, 2);
    assert_eq!(list, [entry(10, 5), replacement]);
    assert_eq!(applied.freed, 7);
}

#[test]
fn whole_record_after_finds_only_whole_records() {
    let mut bytes = vec![0xAB; 37];
    let at = bytes.len();
    record::encode_save(&mut bytes, "s", 3, 3, "v1", 1, b"state");
    assert_eq!(whole_record_after(&bytes, 0), Some(at));
    assert_eq!(whole_record_after(&bytes, at), None);
    // A cut record is not whole.
    bytes.pop();
    assert_eq!(whole_record_after(&bytes, 0), None);
    assert_eq!(whole_record_after(&[0; 200], 0), None);
}
