//! Unit tests for the in-memory index.

use super::*;

/// The reason an insert was refused.
fn rejected(r: Result<()>) -> std::result::Result<(), String> {
    r.map_err(|e| match e {
        Error::InvalidArgument(m) => m,
        other => panic!("unexpected error {other}"),
    })
}

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
        assert_eq!(ix.location(p).unwrap(), Some(loc(p)), "position {p}");
    }
    assert_eq!(ix.location(0).unwrap(), None);
    assert_eq!(ix.location(9).unwrap(), None);
    assert_eq!(ix.location(u64::MAX).unwrap(), None);
    assert_eq!(ix.counts(), (3, 3));
}

#[test]
fn empty_index() {
    let ix = Index::default();
    assert_eq!(ix.location(0).unwrap(), None);
    assert_eq!(ix.location(1).unwrap(), None);
    assert_eq!(ix.stream_revision("a", ALL).unwrap(), None);
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 10, ALL).unwrap(),
        None
    );
    assert_eq!(
        ix.stream_positions("a", ALL, Backwards, 10, ALL).unwrap(),
        None
    );
    assert!(
        ix.type_positions("X", 0, Forwards, 10, ALL)
            .unwrap()
            .is_empty()
    );
    assert_eq!(ix.revision_in_stream("a", 1).unwrap(), None);
    assert_eq!(ix.position_of_revision("a", 0).unwrap(), None);
    assert_eq!(ix.position_of_id(0).unwrap(), None);
    assert_eq!(ix.counts(), (0, 0));
}

#[test]
fn insert_rejects_position_gaps_and_repeats() {
    let mut ix = Index::default();
    assert_eq!(
        rejected(ix.insert(entry(0, "a", "X", 0, 1))),
        Err("position 0 does not follow 0".to_owned())
    );
    assert_eq!(
        rejected(ix.insert(entry(2, "a", "X", 0, 1))),
        Err("position 2 does not follow 0".to_owned())
    );
    ix.insert(entry(1, "a", "X", 0, 1)).unwrap();
    assert_eq!(
        rejected(ix.insert(entry(1, "a", "X", 1, 2))),
        Err("position 1 does not follow 1".to_owned())
    );
    assert_eq!(
        rejected(ix.insert(entry(3, "a", "X", 1, 2))),
        Err("position 3 does not follow 1".to_owned())
    );
    // Nothing was changed by the failed inserts.
    assert_eq!(ix.location(2).unwrap(), None);
    assert_eq!(ix.stream_revision("a", ALL).unwrap(), Some(0));
    assert_eq!(
        ix.type_positions("X", 0, Forwards, 10, ALL).unwrap(),
        vec![1]
    );
    assert_eq!(ix.position_of_id(2).unwrap(), None);
    ix.insert(entry(2, "a", "X", 1, 2)).unwrap();
    assert_eq!(ix.stream_revision("a", ALL).unwrap(), Some(1));
}

#[test]
fn insert_rejects_revisions_that_do_not_continue_the_stream() {
    let mut ix = Index::default();
    // (A stream new to the index may begin at any revision: see
    // `streams_new_to_the_index_may_begin_above_revision_0`.)
    ix.insert(entry(1, "a", "X", 0, 1)).unwrap();
    ix.insert(entry(2, "b", "X", 0, 2)).unwrap();
    for bad in [0, 2, u64::MAX] {
        assert_eq!(
            rejected(ix.insert(entry(3, "a", "Y", bad, 3))),
            Err(format!("stream 'a' revision {bad} does not follow 0"))
        );
    }
    assert_eq!(ix.location(3).unwrap(), None);
    assert_eq!(ix.counts(), (2, 1));
    assert_eq!(ix.position_of_id(3).unwrap(), None);
    ix.insert(entry(3, "a", "Y", 1, 3)).unwrap();
    assert_eq!(ix.counts(), (2, 2));
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 10, ALL).unwrap(),
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
    assert_eq!(ix.stream_revision("order", ALL).unwrap(), Some(0));
    assert_eq!(ix.stream_revision("", ALL).unwrap(), Some(0));
    assert_eq!(ix.stream_revision("orde", ALL).unwrap(), None);
    assert_eq!(
        ix.type_positions("", 0, Forwards, 10, ALL).unwrap(),
        vec![4]
    );
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
            ix.stream_revision("a", visible as u64).unwrap(),
            want,
            "visible {visible}"
        );
    }
    assert_eq!(ix.stream_revision("a", ALL).unwrap(), Some(3));
    // Stream c starts at position 4.
    assert_eq!(ix.stream_revision("c", 3).unwrap(), None);
    assert_eq!(ix.stream_revision("c", 4).unwrap(), Some(0));
    assert_eq!(ix.stream_revision("nope", ALL).unwrap(), None);
}

// ---- stream_positions ---------------------------------------------------------------------

#[test]
fn stream_positions_forwards() {
    let ix = sample();
    let a = |from, count, visible| {
        ix.stream_positions("a", from, Forwards, count, visible)
            .unwrap()
    };
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
    assert_eq!(ix.stream_positions("c", 0, Forwards, 10, 3).unwrap(), None);
    assert_eq!(
        ix.stream_positions("nope", 0, Forwards, 10, ALL).unwrap(),
        None
    );
}

#[test]
fn stream_positions_backwards() {
    let ix = sample();
    let a = |from, count, visible| {
        ix.stream_positions("a", from, Backwards, count, visible)
            .unwrap()
    };
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
        ix.stream_positions("nope", u64::MAX, Backwards, 10, ALL)
            .unwrap(),
        None
    );
}

#[test]
fn stream_positions_agree_with_revision_lookups() {
    let ix = sample();
    for stream in ["a", "b", "c"] {
        for visible in 0..=9 {
            let fwd = ix
                .stream_positions(stream, 0, Forwards, usize::MAX, visible)
                .unwrap();
            let bwd = ix
                .stream_positions(stream, u64::MAX, Backwards, usize::MAX, visible)
                .unwrap();
            match ix.stream_revision(stream, visible).unwrap() {
                None => assert!(fwd.is_none() && bwd.is_none()),
                Some(top) => {
                    let fwd = fwd.unwrap();
                    let mut bwd = bwd.unwrap();
                    bwd.reverse();
                    assert_eq!(fwd, bwd);
                    assert_eq!(fwd.len() as u64, top + 1);
                    for (r, p) in fwd {
                        assert!(p <= visible);
                        assert_eq!(ix.position_of_revision(stream, r).unwrap(), Some(p));
                        assert_eq!(ix.revision_in_stream(stream, p).unwrap(), Some(r));
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
    let x = |from, count, visible| {
        ix.type_positions("X", from, Forwards, count, visible)
            .unwrap()
    };
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
    assert_eq!(
        ix.type_positions("Z", 0, Forwards, 10, ALL).unwrap(),
        vec![7]
    );
    assert_eq!(
        ix.type_positions("Z", 0, Forwards, 10, 6).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(
        ix.type_positions("nope", 0, Forwards, 10, ALL).unwrap(),
        Vec::<u64>::new()
    );
}

#[test]
fn type_positions_backwards() {
    let ix = sample();
    let x = |from, count, visible| {
        ix.type_positions("X", from, Backwards, count, visible)
            .unwrap()
    };
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
        ix.type_positions("Y", u64::MAX, Backwards, 10, ALL)
            .unwrap(),
        vec![5, 2]
    );
    assert_eq!(
        ix.type_positions("nope", u64::MAX, Backwards, 10, ALL)
            .unwrap(),
        Vec::<u64>::new()
    );
}

// ---- lookups ------------------------------------------------------------------------------

#[test]
fn revision_in_stream() {
    let ix = sample();
    assert_eq!(ix.revision_in_stream("a", 1).unwrap(), Some(0));
    assert_eq!(ix.revision_in_stream("a", 3).unwrap(), Some(1));
    assert_eq!(ix.revision_in_stream("a", 7).unwrap(), Some(3));
    assert_eq!(ix.revision_in_stream("b", 6).unwrap(), Some(1));
    assert_eq!(ix.revision_in_stream("c", 8).unwrap(), Some(1));
    // Positions of other streams, and positions that do not exist.
    assert_eq!(ix.revision_in_stream("a", 2).unwrap(), None);
    assert_eq!(ix.revision_in_stream("a", 8).unwrap(), None);
    assert_eq!(ix.revision_in_stream("a", 0).unwrap(), None);
    assert_eq!(ix.revision_in_stream("a", 9).unwrap(), None);
    assert_eq!(ix.revision_in_stream("nope", 1).unwrap(), None);
}

#[test]
fn position_of_revision() {
    let ix = sample();
    assert_eq!(ix.position_of_revision("a", 0).unwrap(), Some(1));
    assert_eq!(ix.position_of_revision("a", 3).unwrap(), Some(7));
    assert_eq!(ix.position_of_revision("a", 4).unwrap(), None);
    assert_eq!(ix.position_of_revision("a", u64::MAX).unwrap(), None);
    assert_eq!(ix.position_of_revision("b", 1).unwrap(), Some(6));
    assert_eq!(ix.position_of_revision("nope", 0).unwrap(), None);
}

#[test]
fn position_of_id_newest_wins() {
    let ix = sample();
    assert_eq!(ix.position_of_id(100).unwrap(), Some(6));
    assert_eq!(ix.position_of_id(101).unwrap(), Some(2));
    assert_eq!(ix.position_of_id(107).unwrap(), Some(8));
    assert_eq!(ix.position_of_id(105).unwrap(), None);
    assert_eq!(ix.position_of_id(0).unwrap(), None);
    assert_eq!(ix.position_of_id(u128::MAX).unwrap(), None);

    let mut ix = Index::default();
    ix.insert(entry(1, "s", "T", 0, u128::MAX)).unwrap();
    assert_eq!(ix.position_of_id(u128::MAX).unwrap(), Some(1));
    // A rejected insert does not move the id.
    assert!(ix.insert(entry(2, "s", "T", 5, u128::MAX)).is_err());
    assert_eq!(ix.position_of_id(u128::MAX).unwrap(), Some(1));
    ix.insert(entry(2, "s", "T", 1, u128::MAX)).unwrap();
    assert_eq!(ix.position_of_id(u128::MAX).unwrap(), Some(2));
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
        assert_eq!(
            ix.stream_revision("t", visible).unwrap(),
            want,
            "visible {visible}"
        );
        let evens = ix
            .type_positions("E", 0, Forwards, usize::MAX, visible)
            .unwrap();
        assert_eq!(evens.len() as u64, visible.min(n) / 2);
        assert!(evens.iter().all(|&p| p <= visible && p % 2 == 0));
        let back = ix
            .type_positions("O", u64::MAX, Backwards, 3, visible)
            .unwrap();
        let top_odd = if visible.min(n) % 2 == 1 {
            visible.min(n)
        } else {
            visible.min(n).saturating_sub(1)
        };
        let want: Vec<u64> = (1..=top_odd).rev().step_by(2).take(3).collect();
        assert_eq!(back, want, "visible {visible}");
    }
}

// ---- layers: runs, frozen and active memtables answer as one memtable --------------------

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn write_and_open(dir: &std::path::Path, contents: RunContents<'_>) -> Arc<Run> {
    let path = dir.join(format!(
        "{}-{}.idx",
        contents.first_position, contents.last_position
    ));
    run::write_run(&path, contents).unwrap();
    Arc::new(Run::open(&path).unwrap())
}

/// Every query of `got` equals the same query of `want`, for visibility cuts from `min_visible`.
fn assert_same_answers(want: &Index, got: &Index, n: u64, min_visible: u64, names: &[String]) {
    let types = ["A", "B", "C"];
    assert_eq!(got.counts(), want.counts());
    for p in 0..=n + 1 {
        assert_eq!(
            got.location(p).unwrap(),
            want.location(p).unwrap(),
            "location {p}"
        );
        assert_eq!(
            got.prev_event(p).unwrap(),
            want.prev_event(p).unwrap(),
            "prev_event {p}"
        );
        for to in [p, p + 3, n, ALL] {
            assert_eq!(
                got.next_event(p, to).unwrap(),
                want.next_event(p, to).unwrap(),
                "next_event {p}..={to}"
            );
        }
    }
    let all: Vec<u64> = (0..=n + 1).collect();
    assert_eq!(got.locate(&all).unwrap(), want.locate(&all).unwrap());
    let cuts = [min_visible, min_visible + 1, (min_visible + n) / 2, n, ALL];
    for &visible in cuts.iter().filter(|&&v| v >= min_visible) {
        for s in names {
            let s = s.as_str();
            assert_eq!(
                got.stream_revision(s, visible).unwrap(),
                want.stream_revision(s, visible).unwrap(),
                "{s} at {visible}"
            );
            for from in [0, 1, 2, 5, 17, ALL] {
                for dir in [Forwards, Backwards] {
                    for count in [1, 3, 1000] {
                        assert_eq!(
                            got.stream_positions(s, from, dir, count, visible).unwrap(),
                            want.stream_positions(s, from, dir, count, visible).unwrap(),
                            "{s} from {from} {dir:?} x{count} at {visible}"
                        );
                    }
                }
            }
        }
        for t in types {
            for from in [0, 1, n / 3, n / 2, n, ALL] {
                for dir in [Forwards, Backwards] {
                    for count in [1, 7, 1000] {
                        assert_eq!(
                            got.type_positions(t, from, dir, count, visible).unwrap(),
                            want.type_positions(t, from, dir, count, visible).unwrap(),
                            "{t} from {from} {dir:?} x{count} at {visible}"
                        );
                    }
                }
            }
        }
    }
    for s in names {
        let s = s.as_str();
        for p in 0..=n + 1 {
            assert_eq!(
                got.revision_in_stream(s, p).unwrap(),
                want.revision_in_stream(s, p).unwrap()
            );
        }
        for r in 0..40 {
            assert_eq!(
                got.position_of_revision(s, r).unwrap(),
                want.position_of_revision(s, r).unwrap()
            );
        }
        for id in 0..40u128 {
            assert_eq!(
                got.revision_of_id(s, id).unwrap(),
                want.revision_of_id(s, id).unwrap(),
                "id {id} in {s}"
            );
        }
    }
    for id in 0..40u128 {
        assert_eq!(
            got.position_of_id(id).unwrap(),
            want.position_of_id(id).unwrap()
        );
    }
}

#[test]
fn layered_index_answers_like_one_memtable() {
    layered_like_one_memtable(false);
}

/// The same, over logs with gaps: holes between events, inside commits, at the start of a
/// memtable, and streams that begin above revision 0.
#[test]
fn layered_index_with_holes_answers_like_one_memtable() {
    layered_like_one_memtable(true);
}

fn layered_like_one_memtable(gaps: bool) {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..40u64 {
        let mut rng = Rng(seed);
        let n = 1 + rng.below(300);
        let names: Vec<String> = (0..1 + rng.below(12)).map(|k| format!("s-{k}")).collect();
        let mut want = Index::default();
        let mut got = Index::default();
        // The next revision of each stream; a stream not yet seen may begin above 0.
        let mut revisions: Vec<u64> = names
            .iter()
            .map(|_| if gaps { rng.below(3) * rng.below(5) } else { 0 })
            .collect();
        let mut frozen_left = false;
        let mut p = 1;
        // Position -> (stream, type) of the events inserted, to replay them below.
        let mut events: std::collections::BTreeMap<u64, (usize, &str)> = Default::default();
        while p <= n {
            // A commit of 1..4 events; checkpoints happen only between commits.
            let k = 1 + rng.below(4);
            for _ in 0..k {
                if gaps && rng.below(4) == 0 {
                    // 1..20 positions removed before this one.
                    p += 1 + rng.below(20);
                    if p > n {
                        break;
                    }
                    want.skip_to(p).unwrap();
                    got.skip_to(p).unwrap();
                }
                if p > n {
                    break;
                }
                let s = rng.below(names.len() as u64) as usize;
                let t = ["A", "B", "C"][rng.below(3) as usize];
                let e = IndexEntry {
                    position: p,
                    location: loc(p),
                    stream: &names[s],
                    event_type: t,
                    revision: revisions[s],
                    // Ids repeat across streams, never within one.
                    id: u128::from(revisions[s]),
                };
                revisions[s] += 1;
                want.insert(IndexEntry { ..e }).unwrap();
                got.insert(e).unwrap();
                events.insert(p, (s, t));
                p += 1;
            }
            if !frozen_left && rng.below(5) == 0 && !got.active.is_empty() {
                let frozen = got.freeze().unwrap();
                let fp = Fingerprint {
                    location: loc(frozen.memtable.last_position()),
                    frame_crc: 0,
                };
                let run = write_and_open(dir.path(), frozen.contents(fp));
                assert_eq!(run.trailer().events, frozen.memtable.len());
                if rng.below(4) == 0 {
                    // Leave this one frozen: answered from memory while "being written".
                    frozen_left = true;
                    continue;
                }
                got.install_run(run).unwrap();
                if got.runs().len() >= 2 && rng.below(2) == 0 {
                    let k = got.runs().len();
                    let merged =
                        write_and_open(dir.path(), merge_runs(&got.runs()[k - 2..]).unwrap());
                    got.install_merge(2, merged).unwrap();
                }
            }
        }
        let n = want.last_position();
        assert_same_answers(&want, &got, n, got.runs_end(), &names);
        // The runs alone, reopened as a new index plus the rest replayed, answer the same.
        let mut reopened = Index::from_runs(got.runs().to_vec(), 1).unwrap();
        for (&q, &(s, t)) in events.range(reopened.runs_end() + 1..) {
            let l = want.location(q).unwrap().unwrap();
            let r = want.revision_in_stream(&names[s], q).unwrap().unwrap();
            if q > reopened.next_position() {
                reopened.skip_to(q).unwrap();
            }
            reopened
                .insert(IndexEntry {
                    position: q,
                    location: l,
                    stream: &names[s],
                    event_type: t,
                    revision: r,
                    id: u128::from(r),
                })
                .unwrap();
        }
        assert_same_answers(&want, &reopened, n, reopened.runs_end(), &names);
    }
}

// ---- holes --------------------------------------------------------------------------------

#[test]
fn skip_to_leaves_holes_that_answer_nothing() {
    let mut ix = Index::default();
    ix.insert(entry(1, "a", "X", 0, 1)).unwrap();
    assert_eq!(ix.next_position(), 2);
    ix.skip_to(2).unwrap(); // no gap: nothing changes
    ix.skip_to(5).unwrap();
    ix.skip_to(6).unwrap(); // a later skip replaces an earlier one
    assert_eq!(ix.next_position(), 6);
    // Nothing is stored until the next event: the index still ends at 1.
    assert_eq!(ix.last_position(), 1);
    assert_eq!(ix.memtable_events(), 1);
    assert_eq!(
        rejected(ix.skip_to(5)),
        Err("cannot skip back to position 5: the index continues at 6".to_owned())
    );
    for p in [2, 5, 7] {
        assert_eq!(
            rejected(ix.insert(entry(p, "a", "X", 1, 2))),
            Err(format!("position {p} does not follow 5"))
        );
    }
    ix.insert(entry(6, "a", "X", 1, 2)).unwrap();
    assert_eq!(ix.last_position(), 6);
    assert_eq!(ix.memtable_events(), 2);
    for p in 2..=5 {
        assert_eq!(ix.location(p).unwrap(), None, "hole {p}");
    }
    assert_eq!(ix.location(6).unwrap(), Some(loc(6)));
    assert_eq!(
        ix.locate(&[6, 5, 4, 3, 2, 1, 0]).unwrap(),
        vec![(6, loc(6)), (1, loc(1))]
    );
    assert_eq!(ix.next_event(2, 10).unwrap(), Some((6, loc(6))));
    assert_eq!(ix.next_event(2, 5).unwrap(), None);
    assert_eq!(ix.next_event(0, 10).unwrap(), Some((1, loc(1))));
    assert_eq!(ix.next_event(7, ALL).unwrap(), None);
    assert_eq!(ix.prev_event(5).unwrap(), Some((1, loc(1))));
    assert_eq!(ix.prev_event(ALL).unwrap(), Some((6, loc(6))));
    assert_eq!(ix.prev_event(0).unwrap(), None);
    // The stream's revisions continue over the gap.
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 10, ALL).unwrap(),
        Some(vec![(0, 1), (1, 6)])
    );
    // After the gap, positions follow one another again.
    assert_eq!(
        rejected(ix.insert(entry(8, "a", "X", 2, 3))),
        Err("position 8 does not follow 6".to_owned())
    );
    ix.insert(entry(7, "a", "X", 2, 3)).unwrap();
    // A hole is never a frame location.
    ix.skip_to(9).unwrap();
    let mut e = entry(9, "b", "X", 0, 4);
    e.location = HOLE;
    assert_eq!(
        rejected(ix.insert(e)),
        Err("position 9 has no frame location".to_owned())
    );
}

#[test]
fn streams_new_to_the_index_may_begin_above_revision_0() {
    let mut ix = Index::default();
    ix.insert(entry(1, "a", "X", 5, 1)).unwrap();
    ix.insert(entry(2, "b", "X", 0, 2)).unwrap();
    // A stream the index knows continues exactly.
    for r in [0, 5, 7] {
        assert_eq!(
            rejected(ix.insert(entry(3, "a", "X", r, 3))),
            Err(format!("stream 'a' revision {r} does not follow 5"))
        );
    }
    ix.insert(entry(3, "a", "X", 6, 3)).unwrap();
    assert_eq!(ix.stream_revision("a", ALL).unwrap(), Some(6));
    // Reads from revision 0 begin at the first one held.
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 10, ALL).unwrap(),
        Some(vec![(5, 1), (6, 3)])
    );
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 1, ALL).unwrap(),
        Some(vec![(5, 1)])
    );
    assert_eq!(
        ix.stream_positions("a", 6, Forwards, 10, ALL).unwrap(),
        Some(vec![(6, 3)])
    );
    assert_eq!(
        ix.stream_positions("a", ALL, Backwards, 10, ALL).unwrap(),
        Some(vec![(6, 3), (5, 1)])
    );
    assert_eq!(
        ix.stream_positions("a", 4, Backwards, 10, ALL).unwrap(),
        Some(vec![])
    );
    assert_eq!(ix.position_of_revision("a", 4).unwrap(), None);
    assert_eq!(ix.position_of_revision("a", 5).unwrap(), Some(1));
    assert_eq!(ix.revision_in_stream("a", 3).unwrap(), Some(6));
    assert_eq!(ix.counts(), (2, 1));
    // The same through a run and a new memtable.
    let dir = tempfile::tempdir().unwrap();
    let frozen = ix.freeze().unwrap();
    let fp = Fingerprint {
        location: loc(3),
        frame_crc: 0,
    };
    let run = write_and_open(dir.path(), frozen.contents(fp));
    ix.install_run(run).unwrap();
    ix.insert(entry(4, "c", "X", 3, 4)).unwrap();
    assert_eq!(
        rejected(ix.insert(entry(5, "a", "X", 0, 5))),
        Err("stream 'a' revision 0 does not follow 6".to_owned())
    );
    ix.insert(entry(5, "a", "X", 7, 5)).unwrap();
    assert_eq!(
        ix.stream_positions("a", 0, Forwards, 10, ALL).unwrap(),
        Some(vec![(5, 1), (6, 3), (7, 5)])
    );
    assert_eq!(
        ix.stream_positions("c", 1, Forwards, 10, ALL).unwrap(),
        Some(vec![(3, 4)])
    );
    assert_eq!(ix.counts(), (3, 1));
}

#[test]
fn runs_carry_holes_through_write_merge_and_load() {
    let dir = tempfile::tempdir().unwrap();
    // Two runs, each starting with holes: 1..=10 (events at 4, 10) and 11..=30 (25, 30).
    let mut ix = Index::default();
    for (p, r) in [(4, 0), (10, 1)] {
        ix.skip_to(p).unwrap();
        ix.insert(entry(p, "s", "T", r, u128::from(p))).unwrap();
    }
    let fp = |p| Fingerprint {
        location: loc(p),
        frame_crc: 0,
    };
    let frozen = ix.freeze().unwrap();
    let first = write_and_open(dir.path(), frozen.contents(fp(10)));
    assert_eq!(
        (first.trailer().positions(), first.trailer().events),
        (10, 2)
    );
    ix.install_run(first.clone()).unwrap();
    for (p, r) in [(25, 2), (30, 3)] {
        ix.skip_to(p).unwrap();
        ix.insert(entry(p, "s", "T", r, u128::from(p))).unwrap();
    }
    let frozen = ix.freeze().unwrap();
    let second = write_and_open(dir.path(), frozen.contents(fp(30)));
    ix.install_run(second).unwrap();
    let merged = write_and_open(dir.path(), merge_runs(ix.runs()).unwrap());
    assert_eq!(
        (merged.trailer().positions(), merged.trailer().events),
        (30, 4)
    );
    let all: Vec<u64> = (0..=31).collect();
    let want = vec![(4, loc(4)), (10, loc(10)), (25, loc(25)), (30, loc(30))];
    for index in [
        Index::from_runs(vec![merged.clone()], 1).unwrap(),
        Index::from_runs(ix.runs().to_vec(), 1).unwrap(),
    ] {
        assert_eq!(index.locate(&all).unwrap(), want);
        for p in all.iter().copied() {
            let expected = want.iter().find(|w| w.0 == p).map(|w| w.1);
            assert_eq!(index.location(p).unwrap(), expected, "{p}");
        }
        assert_eq!(index.next_event(11, 29).unwrap(), Some((25, loc(25))));
        assert_eq!(index.next_event(26, 29).unwrap(), None);
        assert_eq!(index.prev_event(24).unwrap(), Some((10, loc(10))));
        assert_eq!(index.prev_event(3).unwrap(), None);
        assert_eq!(
            index.stream_positions("s", 0, Forwards, 10, ALL).unwrap(),
            Some(vec![(0, 4), (1, 10), (2, 25), (3, 30)])
        );
        assert_eq!(
            index.type_positions("T", 5, Forwards, 10, ALL).unwrap(),
            vec![10, 25, 30]
        );
        assert_eq!(index.position_of_id(25).unwrap(), Some(25));
        assert_eq!(index.next_position(), 31);
        assert_eq!(index.runs_end(), 30);
    }
    // A run never ends in a hole.
    let bad = RunContents {
        first_position: 1,
        last_position: 2,
        streams_total: 1,
        types_total: 1,
        fingerprint: fp(1),
        locations: Box::new([run::pack_location(loc(1)), 0].into_iter().map(Ok)),
        streams: Box::new(std::iter::empty()),
        types: Box::new(std::iter::empty()),
        ids: Box::new(std::iter::empty()),
    };
    assert!(matches!(
        run::write_run(&dir.path().join("bad.idx"), bad),
        Err(Error::InvalidArgument(m)) if m.contains("last position is a hole")
    ));
}

#[test]
fn an_index_may_start_after_position_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut ix = Index::from_runs(Vec::new(), 1000).unwrap();
    assert_eq!((ix.next_position(), ix.runs_end()), (1000, 999));
    assert_eq!(
        rejected(ix.insert(entry(1, "a", "X", 0, 1))),
        Err("position 1 does not follow 999".to_owned())
    );
    ix.insert(entry(1000, "a", "X", 0, 1)).unwrap();
    ix.insert(entry(1001, "a", "X", 1, 2)).unwrap();
    assert_eq!(ix.location(999).unwrap(), None);
    assert_eq!(ix.next_event(1, 2000).unwrap(), Some((1000, loc(1000))));
    assert_eq!(ix.prev_event(999).unwrap(), None);
    let frozen = ix.freeze().unwrap();
    let fp = Fingerprint {
        location: loc(1001),
        frame_crc: 0,
    };
    let run = write_and_open(dir.path(), frozen.contents(fp));
    assert_eq!(
        (
            run.first_position(),
            run.trailer().positions(),
            run.trailer().events
        ),
        (1000, 2, 2)
    );
    // The chain of runs must start where the log does.
    assert!(Index::from_runs(vec![run.clone()], 1).is_err());
    assert!(Index::from_runs(Vec::new(), 0).is_err());
    let ix = Index::from_runs(vec![run], 1000).unwrap();
    assert_eq!((ix.next_position(), ix.runs_end()), (1002, 1001));
    assert_eq!(ix.location(1000).unwrap(), Some(loc(1000)));
}

#[test]
fn damaged_run_blocks_are_errors_not_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut ix = Index::default();
    for p in 1..=2000u64 {
        ix.insert(IndexEntry {
            position: p,
            location: loc(p),
            stream: "s",
            event_type: "T",
            revision: p - 1,
            id: u128::from(p),
        })
        .unwrap();
    }
    let frozen = ix.freeze().unwrap();
    let fp = Fingerprint {
        location: loc(2000),
        frame_crc: 7,
    };
    let run = write_and_open(dir.path(), frozen.contents(fp));
    let path = run.path().to_path_buf();
    drop(run);
    let mut bytes = std::fs::read(&path).unwrap();
    // Every byte of the first block; a flip anywhere in it is caught.
    for at in [0usize, 9, 4095] {
        bytes[at] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let run = Run::open(&path).unwrap();
        let e = run.location(1).unwrap_err();
        assert!(
            matches!(&e, Error::Corruption { file, offset: 0, .. } if *file == path),
            "{e}"
        );
        // Other blocks still answer.
        assert_eq!(run.location(1000).unwrap(), Some(loc(1000)));
        bytes[at] ^= 0x10;
    }
    // A damaged trailer or block table, a truncated file, a foreign version: refused at open.
    let len = bytes.len();
    for (what, at) in [
        ("trailer", len - 10),
        ("block table", len - run::TRAILER_BYTES - 2),
    ] {
        let mut b = bytes.clone();
        b[at] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(
            matches!(Run::open(&path), Err(Error::Corruption { .. })),
            "{what}"
        );
    }
    for cut in [1, 100, run::TRAILER_BYTES, len - 1] {
        std::fs::write(&path, &bytes[..len - cut]).unwrap();
        assert!(
            matches!(Run::open(&path), Err(Error::Corruption { .. })),
            "cut {cut}"
        );
    }
    let mut b = bytes.clone();
    b[len - run::TRAILER_BYTES + 8] = 9;
    std::fs::write(&path, &b).unwrap();
    let e = Run::open(&path).unwrap_err().to_string();
    assert!(e.contains("checksum") || e.contains("version"), "{e}");
}

/// Trailers with any field changed (and checksums made valid again, as a buggy or hostile
/// writer could) never make opening or reading a run panic: the layout checks refuse them, or
/// lookups answer from inside the file.
#[test]
fn runs_with_rewritten_trailer_fields_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut ix = Index::default();
    for p in 1..=3000u64 {
        let s = format!("s-{}", p % 17);
        let revision = ix.stream_revision(&s, ALL).unwrap().map_or(0, |r| r + 1);
        ix.insert(IndexEntry {
            position: p,
            location: loc(p),
            stream: &s,
            event_type: ["A", "B"][(p % 2) as usize],
            revision,
            id: u128::from(p) << 64 | u128::from(p % 7),
        })
        .unwrap();
    }
    let frozen = ix.freeze().unwrap();
    let fp = Fingerprint {
        location: loc(3000),
        frame_crc: 1,
    };
    let path = dir.path().join("r.idx");
    run::write_run(&path, frozen.contents(fp)).unwrap();
    let good = std::fs::read(&path).unwrap();
    let t = good.len() - run::TRAILER_BYTES;
    let mut rng = Rng(17);
    let mut opened = 0;
    for _ in 0..600 {
        let mut b = good.clone();
        // A field of the trailer (16..144: positions, counts, totals, offsets) gets a new value:
        // small, near a real one, or anything.
        let field = 16 + 8 * rng.below(16) as usize;
        let old = u64::from_le_bytes(b[t + field..t + field + 8].try_into().unwrap());
        let new = match rng.below(3) {
            0 => rng.below(64),
            1 => old.wrapping_add(rng.below(17)).wrapping_sub(8),
            _ => rng.below(u64::MAX),
        };
        b[t + field..t + field + 8].copy_from_slice(&new.to_le_bytes());
        let crc = crc32fast::hash(&b[t..b.len() - 4]);
        let n = b.len();
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let Ok(r) = Run::open(&path) else { continue };
        opened += 1;
        for p in [0, 1, 2, 1500, 2999, 3000, 3001, u64::MAX] {
            let _ = r.location(p);
        }
        for name in ["s-0", "s-16", "A", "B", "zz", ""] {
            for table in [Table::Streams, Table::Types] {
                if let Ok(Some((_, start, end))) = r.find(table, name) {
                    let _ = r.postings(table, start, end);
                    let _ = r.posting_partition(table, start, end, 1500);
                }
            }
        }
        for id in [0u128, 1 << 64, (5u128 << 64) | 5, u128::MAX] {
            let _ = r.positions_of_id(id);
        }
        let _ = r.iter_postings(Table::Streams).take(40).count();
        let _ = r.iter_ids().take(40).count();
    }
    // Some mutations (a total, a revision) leave a valid layout; they were read without panic.
    assert!(opened > 0);
}

/// Name lookups in a run with many entries (several fences): every name is found with its
/// postings, and names before, between and after them are not.
#[test]
fn run_lookups_across_many_fences() {
    let dir = tempfile::tempdir().unwrap();
    let mut ix = Index::default();
    let names: Vec<String> = (0..1000).map(|k| format!("s-{:04}", k * 3)).collect();
    for (k, name) in names.iter().enumerate() {
        for r in 0..2u64 {
            let p = 2 * k as u64 + r + 1;
            ix.insert(IndexEntry {
                position: p,
                location: loc(p),
                stream: name,
                event_type: &name[..4],
                revision: r,
                id: u128::from(p),
            })
            .unwrap();
        }
    }
    let frozen = ix.freeze().unwrap();
    let fp = Fingerprint {
        location: loc(2000),
        frame_crc: 0,
    };
    let run = write_and_open(dir.path(), frozen.contents(fp));
    for (k, name) in names.iter().enumerate() {
        let (first_revision, start, end) = run.find(Table::Streams, name).unwrap().unwrap();
        assert_eq!(first_revision, 0);
        let p = 2 * k as u64 + 1;
        assert_eq!(
            run.postings(Table::Streams, start, end).unwrap(),
            vec![p, p + 1]
        );
        for missing in [
            format!("s-{:04}", k * 3 + 1),
            format!("{name}0"),
            format!("{name}-"),
        ] {
            assert_eq!(
                run.find(Table::Streams, &missing).unwrap(),
                None,
                "{missing}"
            );
        }
    }
    for missing in ["", "a", "s-", "s-0000-", "t", "\u{10ffff}"] {
        assert_eq!(
            run.find(Table::Streams, missing).unwrap(),
            None,
            "{missing:?}"
        );
    }
}

#[test]
fn a_gap_too_large_for_memory_is_an_error() {
    let mut ix = Index::default();
    ix.insert(entry(1, "a", "X", 0, 1)).unwrap();
    ix.skip_to(u64::MAX - 1).unwrap();
    let e = rejected(ix.insert(entry(u64::MAX - 1, "a", "X", 1, 2))).unwrap_err();
    assert!(e.contains("does not fit in memory"), "{e}");
    // Nothing changed.
    assert_eq!(ix.last_position(), 1);
    assert_eq!(ix.stream_revision("a", ALL).unwrap(), Some(0));
}
