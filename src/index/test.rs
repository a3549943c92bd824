//! Unit tests for the in-memory index.

use super::*;

fn loc(position: u64) -> Location {
    Location {
        segment: u32::try_from(position / 100).unwrap_or(u32::MAX),
        offset: u32::try_from(position * 10).unwrap_or(u32::MAX),
    }
}

fn entry<'a>(
    position: u64,
    stream: &'a str,
    event_type: &'a str,
    revision: u64,
    id: u128,
) -> IndexEntry<'a> {
    IndexEntry {
        position,
        location: loc(position),
        stream,
        event_type,
        revision,
        id,
    }
}

/// Positions 1..=8:
///
/// | position | stream | revision | type | id  |
/// |---------:|--------|---------:|------|----:|
/// |        1 | a      |        0 | X    | 100 |
/// |        2 | b      |        0 | Y    | 101 |
/// |        3 | a      |        1 | X    | 102 |
/// |        4 | c      |        0 | X    | 103 |
/// |        5 | a      |        2 | Y    | 104 |
/// |        6 | b      |        1 | X    | 100 | (id reused: newest wins)
/// |        7 | a      |        3 | Z    | 106 |
/// |        8 | c      |        1 | X    | 107 |
fn sample() -> Index {
    let mut ix = Index::default();
    let rows = [
        ("a", 0, "X", 100),
        ("b", 0, "Y", 101),
        ("a", 1, "X", 102),
        ("c", 0, "X", 103),
        ("a", 2, "Y", 104),
        ("b", 1, "X", 100),
        ("a", 3, "Z", 106),
        ("c", 1, "X", 107),
    ];
    for (i, (stream, revision, event_type, id)) in rows.into_iter().enumerate() {
        ix.insert(entry(i as u64 + 1, stream, event_type, revision, id))
            .unwrap();
    }
    ix
}

const ALL: u64 = u64::MAX;
use Direction::{Backwards, Forwards};

// ---- insert -------------------------------------------------------------------------------

#[test]
fn insert_in_order() {
    let ix = sample();
    for p in 1..=8 {
        assert_eq!(ix.location(p), Some(loc(p)), "position {p}");
    }
    assert_eq!(ix.location(0), None);
    assert_eq!(ix.location(9), None);
    assert_eq!(ix.location(u64::MAX), None);
    assert_eq!(ix.counts(), (3, 3));
}

#[test]
fn empty_index() {
    let ix = Index::default();
    assert_eq!(ix.location(0), None);
    assert_eq!(ix.location(1), None);
    assert_eq!(ix.stream_revision("a", ALL), None);
    assert_eq!(ix.stream_positions("a", 0, Forwards, 10, ALL), None);
    assert_eq!(ix.stream_positions("a", ALL, Backwards, 10, ALL), None);
    assert!(ix.type_positions("X", 0, Forwards, 10, ALL).is_empty());
    assert_eq!(ix.revision_in_stream("a", 1), None);
    assert_eq!(ix.position_of_revision("a", 0), None);
    assert_eq!(ix.position_of_id(0), None);
    assert_eq!(ix.counts(), (0, 0));
}

#[test]
fn insert_rejects_position_gaps_and_repeats() {
    let mut ix = Index::default();
    assert_eq!(
        ix.insert(entry(0, "a", "X", 0, 1)),
        Err("position 0 does not follow 0".to_owned())
    );
    assert_eq!(
        ix.insert(entry(2, "a", "X", 0, 1)),
        Err("position 2 does not follow 0".to_owned())
    );
    ix.insert(entry(1, "a", "X", 0, 1)).unwrap();
    assert_eq!(
        ix.insert(entry(1, "a", "X", 1, 2)),
        Err("position 1 does not follow 1".to_owned())
    );
    assert_eq!(
        ix.insert(entry(3, "a", "X", 1, 2)),
        Err("position 3 does not follow 1".to_owned())
    );
    // Nothing was changed by the failed inserts.
    assert_eq!(ix.location(2), None);
    assert_eq!(ix.stream_revision("a", ALL), Some(0));
    assert_eq!(ix.type_positions("X", 0, Forwards, 10, ALL), vec![1]);
    assert_eq!(ix.position_of_id(2), None);
    ix.insert(entry(2, "a", "X", 1, 2)).unwrap();
    assert_eq!(ix.stream_revision("a", ALL), Some(1));
}

#[test]
fn insert_rejects_revisions_that_do_not_continue_the_stream() {
    let mut ix = Index::default();
    // A new stream starts at revision 0.
    assert_eq!(
        ix.insert(entry(1, "a", "X", 1, 1)),
        Err("stream 'a' revision 1 does not follow -1".to_owned())
    );
    // Nothing was added: not the location, the stream, the type or the id.
    assert_eq!(ix.location(1), None);
    assert_eq!(ix.stream_revision("a", ALL), None);
    assert_eq!(ix.counts(), (0, 0));
    assert_eq!(ix.position_of_id(1), None);

    ix.insert(entry(1, "a", "X", 0, 1)).unwrap();
    ix.insert(entry(2, "b", "X", 0, 2)).unwrap();
    for bad in [0, 2, u64::MAX] {
        assert_eq!(
            ix.insert(entry(3, "a", "Y", bad, 3)),
            Err(format!("stream 'a' revision {bad} does not follow 0"))
        );
    }
    assert_eq!(ix.location(3), None);
    assert_eq!(ix.counts(), (2, 1));
    assert_eq!(ix.position_of_id(3), None);
    ix.insert(entry(3, "a", "Y", 1, 3)).unwrap();
    assert_eq!(ix.counts(), (2, 2));
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 10, ALL),
        Some(vec![(0, 1), (1, 3)])
    );
}

#[test]
fn stream_names_are_exact() {
    let mut ix = Index::default();
    ix.insert(entry(1, "order", "X", 0, 1)).unwrap();
    ix.insert(entry(2, "order-1", "X", 0, 2)).unwrap();
    ix.insert(entry(3, "Order", "X", 0, 3)).unwrap();
    ix.insert(entry(4, "", "", 0, 4)).unwrap();
    assert_eq!(ix.counts(), (4, 2));
    assert_eq!(ix.stream_revision("order", ALL), Some(0));
    assert_eq!(ix.stream_revision("", ALL), Some(0));
    assert_eq!(ix.stream_revision("orde", ALL), None);
    assert_eq!(ix.type_positions("", 0, Forwards, 10, ALL), vec![4]);
}

// ---- stream_revision ----------------------------------------------------------------------

#[test]
fn stream_revision_counts_only_visible_events() {
    let ix = sample();
    // Stream a is at positions 1, 3, 5, 7.
    let expected = [
        None,
        Some(0),
        Some(0),
        Some(1),
        Some(1),
        Some(2),
        Some(2),
        Some(3),
        Some(3),
    ];
    for (visible, want) in expected.into_iter().enumerate() {
        assert_eq!(
            ix.stream_revision("a", visible as u64),
            want,
            "visible {visible}"
        );
    }
    assert_eq!(ix.stream_revision("a", ALL), Some(3));
    // Stream c starts at position 4.
    assert_eq!(ix.stream_revision("c", 3), None);
    assert_eq!(ix.stream_revision("c", 4), Some(0));
    assert_eq!(ix.stream_revision("nope", ALL), None);
}

// ---- stream_positions ---------------------------------------------------------------------

#[test]
fn stream_positions_forwards() {
    let ix = sample();
    let a = |from, count, visible| ix.stream_positions("a", from, Forwards, count, visible);
    assert_eq!(a(0, 10, ALL), Some(vec![(0, 1), (1, 3), (2, 5), (3, 7)]));
    assert_eq!(a(0, 2, ALL), Some(vec![(0, 1), (1, 3)]));
    assert_eq!(a(1, 2, ALL), Some(vec![(1, 3), (2, 5)]));
    assert_eq!(a(3, 10, ALL), Some(vec![(3, 7)]));
    assert_eq!(a(4, 10, ALL), Some(vec![]));
    assert_eq!(a(u64::MAX, 10, ALL), Some(vec![]));
    assert_eq!(a(0, 0, ALL), Some(vec![]));
    assert_eq!(a(2, usize::MAX, ALL), Some(vec![(2, 5), (3, 7)]));
    // Visibility cuts the stream short.
    assert_eq!(a(0, 10, 5), Some(vec![(0, 1), (1, 3), (2, 5)]));
    assert_eq!(a(0, 10, 4), Some(vec![(0, 1), (1, 3)]));
    assert_eq!(a(2, 10, 4), Some(vec![]));
    assert_eq!(a(0, 10, 1), Some(vec![(0, 1)]));
    // No visible event: no stream.
    assert_eq!(a(0, 10, 0), None);
    assert_eq!(ix.stream_positions("c", 0, Forwards, 10, 3), None);
    assert_eq!(ix.stream_positions("nope", 0, Forwards, 10, ALL), None);
}

#[test]
fn stream_positions_backwards() {
    let ix = sample();
    let a = |from, count, visible| ix.stream_positions("a", from, Backwards, count, visible);
    assert_eq!(
        a(u64::MAX, 10, ALL),
        Some(vec![(3, 7), (2, 5), (1, 3), (0, 1)])
    );
    assert_eq!(a(3, 10, ALL), Some(vec![(3, 7), (2, 5), (1, 3), (0, 1)]));
    assert_eq!(a(4, 10, ALL), Some(vec![(3, 7), (2, 5), (1, 3), (0, 1)]));
    assert_eq!(a(u64::MAX, 2, ALL), Some(vec![(3, 7), (2, 5)]));
    assert_eq!(a(1, 10, ALL), Some(vec![(1, 3), (0, 1)]));
    assert_eq!(a(0, 10, ALL), Some(vec![(0, 1)]));
    assert_eq!(a(2, 1, ALL), Some(vec![(2, 5)]));
    assert_eq!(a(u64::MAX, 0, ALL), Some(vec![]));
    assert_eq!(
        a(u64::MAX, usize::MAX, ALL),
        Some(vec![(3, 7), (2, 5), (1, 3), (0, 1)])
    );
    // Visibility: the top is the last visible revision, never past it.
    assert_eq!(a(u64::MAX, 10, 6), Some(vec![(2, 5), (1, 3), (0, 1)]));
    assert_eq!(a(3, 10, 6), Some(vec![(2, 5), (1, 3), (0, 1)]));
    assert_eq!(a(u64::MAX, 10, 2), Some(vec![(0, 1)]));
    assert_eq!(a(1, 10, 4), Some(vec![(1, 3), (0, 1)]));
    assert_eq!(a(u64::MAX, 10, 0), None);
    assert_eq!(
        ix.stream_positions("nope", u64::MAX, Backwards, 10, ALL),
        None
    );
}

#[test]
fn stream_positions_agree_with_revision_lookups() {
    let ix = sample();
    for stream in ["a", "b", "c"] {
        for visible in 0..=9 {
            let fwd = ix.stream_positions(stream, 0, Forwards, usize::MAX, visible);
            let bwd = ix.stream_positions(stream, u64::MAX, Backwards, usize::MAX, visible);
            match ix.stream_revision(stream, visible) {
                None => assert!(fwd.is_none() && bwd.is_none()),
                Some(top) => {
                    let fwd = fwd.unwrap();
                    let mut bwd = bwd.unwrap();
                    bwd.reverse();
                    assert_eq!(fwd, bwd);
                    assert_eq!(fwd.len() as u64, top + 1);
                    for (r, p) in fwd {
                        assert!(p <= visible);
                        assert_eq!(ix.position_of_revision(stream, r), Some(p));
                        assert_eq!(ix.revision_in_stream(stream, p), Some(r));
                    }
                }
            }
        }
    }
}

// ---- type_positions -----------------------------------------------------------------------

#[test]
fn type_positions_forwards() {
    let ix = sample();
    // Type X is at positions 1, 3, 4, 6, 8.
    let x = |from, count, visible| ix.type_positions("X", from, Forwards, count, visible);
    assert_eq!(x(0, 10, ALL), vec![1, 3, 4, 6, 8]);
    assert_eq!(x(1, 10, ALL), vec![1, 3, 4, 6, 8]);
    assert_eq!(x(2, 10, ALL), vec![3, 4, 6, 8]);
    assert_eq!(x(4, 10, ALL), vec![4, 6, 8]);
    assert_eq!(x(4, 2, ALL), vec![4, 6]);
    assert_eq!(x(8, 10, ALL), vec![8]);
    assert_eq!(x(9, 10, ALL), Vec::<u64>::new());
    assert_eq!(x(0, 0, ALL), Vec::<u64>::new());
    assert_eq!(x(0, usize::MAX, ALL), vec![1, 3, 4, 6, 8]);
    // None past visible.
    assert_eq!(x(0, 10, 6), vec![1, 3, 4, 6]);
    assert_eq!(x(0, 10, 5), vec![1, 3, 4]);
    assert_eq!(x(5, 10, 5), Vec::<u64>::new());
    assert_eq!(x(0, 10, 0), Vec::<u64>::new());
    assert_eq!(ix.type_positions("Z", 0, Forwards, 10, ALL), vec![7]);
    assert_eq!(
        ix.type_positions("Z", 0, Forwards, 10, 6),
        Vec::<u64>::new()
    );
    assert_eq!(
        ix.type_positions("nope", 0, Forwards, 10, ALL),
        Vec::<u64>::new()
    );
}

#[test]
fn type_positions_backwards() {
    let ix = sample();
    let x = |from, count, visible| ix.type_positions("X", from, Backwards, count, visible);
    assert_eq!(x(u64::MAX, 10, ALL), vec![8, 6, 4, 3, 1]);
    assert_eq!(x(8, 10, ALL), vec![8, 6, 4, 3, 1]);
    assert_eq!(x(7, 10, ALL), vec![6, 4, 3, 1]);
    assert_eq!(x(4, 10, ALL), vec![4, 3, 1]);
    assert_eq!(x(4, 2, ALL), vec![4, 3]);
    assert_eq!(x(1, 10, ALL), vec![1]);
    assert_eq!(x(0, 10, ALL), Vec::<u64>::new());
    assert_eq!(x(u64::MAX, 0, ALL), Vec::<u64>::new());
    // None past visible, even when `from` is past it.
    assert_eq!(x(u64::MAX, 10, 5), vec![4, 3, 1]);
    assert_eq!(x(8, 10, 7), vec![6, 4, 3, 1]);
    assert_eq!(x(3, 10, 5), vec![3, 1]);
    assert_eq!(x(u64::MAX, 10, 0), Vec::<u64>::new());
    assert_eq!(
        ix.type_positions("Y", u64::MAX, Backwards, 10, ALL),
        vec![5, 2]
    );
    assert_eq!(
        ix.type_positions("nope", u64::MAX, Backwards, 10, ALL),
        Vec::<u64>::new()
    );
}

// ---- lookups ------------------------------------------------------------------------------

#[test]
fn revision_in_stream() {
    let ix = sample();
    assert_eq!(ix.revision_in_stream("a", 1), Some(0));
    assert_eq!(ix.revision_in_stream("a", 3), Some(1));
    assert_eq!(ix.revision_in_stream("a", 7), Some(3));
    assert_eq!(ix.revision_in_stream("b", 6), Some(1));
    assert_eq!(ix.revision_in_stream("c", 8), Some(1));
    // Positions of other streams, and positions that do not exist.
    assert_eq!(ix.revision_in_stream("a", 2), None);
    assert_eq!(ix.revision_in_stream("a", 8), None);
    assert_eq!(ix.revision_in_stream("a", 0), None);
    assert_eq!(ix.revision_in_stream("a", 9), None);
    assert_eq!(ix.revision_in_stream("nope", 1), None);
}

#[test]
fn position_of_revision() {
    let ix = sample();
    assert_eq!(ix.position_of_revision("a", 0), Some(1));
    assert_eq!(ix.position_of_revision("a", 3), Some(7));
    assert_eq!(ix.position_of_revision("a", 4), None);
    assert_eq!(ix.position_of_revision("a", u64::MAX), None);
    assert_eq!(ix.position_of_revision("b", 1), Some(6));
    assert_eq!(ix.position_of_revision("nope", 0), None);
}

#[test]
fn position_of_id_newest_wins() {
    let ix = sample();
    assert_eq!(ix.position_of_id(100), Some(6));
    assert_eq!(ix.position_of_id(101), Some(2));
    assert_eq!(ix.position_of_id(107), Some(8));
    assert_eq!(ix.position_of_id(105), None);
    assert_eq!(ix.position_of_id(0), None);
    assert_eq!(ix.position_of_id(u128::MAX), None);

    let mut ix = Index::default();
    ix.insert(entry(1, "s", "T", 0, u128::MAX)).unwrap();
    assert_eq!(ix.position_of_id(u128::MAX), Some(1));
    // A rejected insert does not move the id.
    assert!(ix.insert(entry(2, "s", "T", 5, u128::MAX)).is_err());
    assert_eq!(ix.position_of_id(u128::MAX), Some(1));
    ix.insert(entry(2, "s", "T", 1, u128::MAX)).unwrap();
    assert_eq!(ix.position_of_id(u128::MAX), Some(2));
}

#[test]
fn large_stream_visibility() {
    // Interleave two streams over many positions and check visibility at every cut.
    let mut ix = Index::default();
    let n = 500u64;
    for p in 1..=n {
        let (stream, revision) = if p % 3 == 0 {
            ("t", p / 3 - 1)
        } else {
            ("s", p - 1 - p / 3)
        };
        ix.insert(entry(
            p,
            stream,
            if p % 2 == 0 { "E" } else { "O" },
            revision,
            u128::from(p),
        ))
        .unwrap();
    }
    for visible in 0..=n + 1 {
        let t_count = visible.min(n) / 3;
        let want = t_count.checked_sub(1);
        assert_eq!(ix.stream_revision("t", visible), want, "visible {visible}");
        let evens = ix.type_positions("E", 0, Forwards, usize::MAX, visible);
        assert_eq!(evens.len() as u64, visible.min(n) / 2);
        assert!(evens.iter().all(|&p| p <= visible && p % 2 == 0));
        let back = ix.type_positions("O", u64::MAX, Backwards, 3, visible);
        let top_odd = if visible.min(n) % 2 == 1 {
            visible.min(n)
        } else {
            visible.min(n).saturating_sub(1)
        };
        let want: Vec<u64> = (1..=top_odd).rev().step_by(2).take(3).collect();
        assert_eq!(back, want, "visible {visible}");
    }
}
