//! Unit tests for the log rewriter: what it writes scans as the log it was given.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests index fixed, known-length buffers and unwrap to fail loudly"
)]

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::log::frame::{Decoded, decode_from};
use crate::log::map_log;
use crate::log::segment::decode_header;

const SEGMENT: u64 = 4096;

fn header(position: u64) -> EventHeader {
    EventHeader {
        position,
        revision: position * 10,
        durable_through: position + 5,
        timestamp_us: 1_700_000_000_000_000 + position,
        id: (u128::from(position) << 64 | 7).to_be_bytes(),
        // Whatever the input says is replaced.
        commit_index: 9,
        commit_count: 10,
        content_type: u8::from(position.is_multiple_of(2)),
        flags: GAP_BEFORE,
    }
}

fn data(position: u64) -> Vec<u8> {
    format!("{{\"p\":{position},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()
}

/// Pushes commits of the given positions, stream `s-{position % 3}`.
fn push(w: &mut LogRewriter, commits: &[&[u64]]) {
    for commit in commits {
        let bodies: Vec<(Vec<u8>, String)> = commit
            .iter()
            .map(|&p| (data(p), format!("s-{}", p % 3)))
            .collect();
        let events: Vec<(EventHeader, EventBody<'_>)> = commit
            .iter()
            .zip(&bodies)
            .map(|(&p, (d, s))| {
                (
                    header(p),
                    EventBody {
                        stream: s,
                        event_type: "T",
                        data: d,
                        metadata: b"m",
                        principal: "",
                    },
                )
            })
            .collect();
        w.push_commit(&events).unwrap();
    }
}

/// An event as the store's scan finds it: segment index, position, header, data.
type Scanned = (u32, u64, EventHeader, Vec<u8>);

/// Every event the store's scan finds, and the next position.
fn scan_dir(dir: &Path) -> (Vec<Scanned>, u64) {
    let mapped = map_log(dir, SEGMENT).unwrap();
    let mut seen = Vec::new();
    let opened = mapped
        .scan(None, &mut |_, location, f| {
            let body = f.frame.body(f.payload);
            seen.push((
                location.segment,
                f.frame.header.position,
                f.frame.header,
                body.data.to_vec(),
            ));
            Ok(())
        })
        .unwrap();
    (seen, opened.next_position)
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

#[test]
fn gaps_are_marked_and_the_log_scans_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let mut w = LogRewriter::create(&dir, SEGMENT).unwrap();
    // Starts at 3; a gap inside a commit (10, 12); a gap between commits (12 -> 20); commits
    // big enough to fill several segments.
    let commits: Vec<Vec<u64>> = vec![
        vec![3, 4],
        vec![5],
        vec![10, 12, 13],
        vec![20, 21, 22, 23, 24, 25],
        vec![26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37],
        vec![50],
        vec![51, 60],
    ];
    let refs: Vec<&[u64]> = commits.iter().map(Vec::as_slice).collect();
    push(&mut w, &refs);
    let summary = w.finish(61).unwrap();
    assert_eq!(summary.files, names(&dir));
    assert!(summary.files.len() >= 3, "{:?}", summary.files);
    assert_eq!(summary.bytes, summary.files.len() as u64 * SEGMENT);
    assert_eq!(summary.events, 27);
    assert_eq!(summary.commits, 7);
    assert_eq!(summary.next_position, 61);
    for name in &summary.files {
        assert_eq!(
            fs::metadata(dir.join(name)).unwrap().len(),
            SEGMENT,
            "{name}"
        );
    }

    let (seen, next) = scan_dir(&dir);
    assert_eq!(next, 61);
    let positions: Vec<u64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(positions, commits.concat());
    let mut previous: Option<(u32, u64)> = None;
    for (segment, position, h, d) in &seen {
        let want = header(*position);
        assert_eq!(h.revision, want.revision);
        assert_eq!(h.timestamp_us, want.timestamp_us);
        assert_eq!(h.id, want.id);
        assert_eq!(h.content_type, want.content_type);
        assert_eq!(d, &data(*position));
        let commit = commits.iter().find(|c| c.contains(position)).unwrap();
        let k = commit.iter().position(|p| p == position).unwrap();
        assert_eq!(
            (h.commit_index, h.commit_count),
            (k as u32, commit.len() as u32)
        );
        assert!(h.durable_through < commit[0], "{h:?}");
        // Flagged exactly where the position jumps within a segment.
        let jumps_in_segment = previous.is_some_and(|(s, p)| s == *segment && p + 1 != *position);
        assert_eq!(h.gap_before(), jumps_in_segment, "position {position}");
        previous = Some((*segment, *position));
    }
    // Segment headers: flagged where the segment starts after a gap (the first one: 3 > 1).
    let mut last_of_previous = 0;
    for (i, name) in summary.files.iter().enumerate() {
        let bytes = fs::read(dir.join(name)).unwrap();
        let h = decode_header(&bytes).unwrap();
        assert_eq!(segment_file_name(h.first_position), *name);
        assert_eq!(
            h.gap_before(),
            h.first_position != last_of_previous + 1,
            "{name}"
        );
        if let Some(last) = seen
            .iter()
            .filter(|s| s.0 == i as u32)
            .map(|s| s.1)
            .next_back()
        {
            last_of_previous = last;
        }
    }
    // A commit never spans two segments.
    for c in &commits {
        let segs: Vec<u32> = seen
            .iter()
            .filter(|s| c.contains(&s.1))
            .map(|s| s.0)
            .collect();
        assert!(segs.windows(2).all(|w| w[0] == w[1]), "{c:?}: {segs:?}");
    }
}

#[test]
fn a_later_next_position_ends_with_an_empty_flagged_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let mut w = LogRewriter::create(&dir, SEGMENT).unwrap();
    push(&mut w, &[&[1, 2], &[3]]);
    let summary = w.finish(1000).unwrap();
    assert_eq!(
        summary.files,
        vec![segment_file_name(1), segment_file_name(1000)]
    );
    assert_eq!(names(&dir), summary.files);
    let bytes = fs::read(dir.join(segment_file_name(1000))).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT);
    let h = decode_header(&bytes).unwrap();
    assert_eq!((h.first_position, h.gap_before()), (1000, true));
    assert!(bytes[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0));
    let (seen, next) = scan_dir(&dir);
    assert_eq!(seen.len(), 3);
    assert_eq!(next, 1000);
}

#[test]
fn the_last_segment_is_written_out_in_full() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let mut w = LogRewriter::create(&dir, 1 << 20).unwrap();
    let d = vec![7u8; 1000];
    let body = EventBody {
        stream: "s",
        event_type: "T",
        data: &d,
        metadata: &[],
        principal: "",
    };
    w.push_commit(&[(header(1), body)]).unwrap();
    let summary = w.finish(2).unwrap();
    assert_eq!(summary.files, vec![segment_file_name(1)]);
    let meta = fs::metadata(dir.join(segment_file_name(1))).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    // Every block allocated: not sparse (the store's fdatasyncs into it never allocate).
    assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
    let (seen, next) = scan_dir(&dir);
    assert_eq!((seen.len(), next), (1, 2));
}

#[test]
fn empty_logs() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing pushed, next position 1: an empty log like a new store's.
    let dir = tmp.path().join("one");
    let summary = LogRewriter::create(&dir, SEGMENT)
        .unwrap()
        .finish(1)
        .unwrap();
    assert_eq!(summary.files, vec![segment_file_name(1)]);
    let h = decode_header(&fs::read(dir.join(segment_file_name(1))).unwrap()).unwrap();
    assert!(!h.gap_before());
    assert_eq!(scan_dir(&dir).1, 1);
    // Nothing pushed, next position 1000.
    let dir = tmp.path().join("thousand");
    LogRewriter::create(&dir, SEGMENT)
        .unwrap()
        .finish(1000)
        .unwrap();
    let (seen, next) = scan_dir(&dir);
    assert!(seen.is_empty());
    assert_eq!(next, 1000);
    // An existing empty directory is fine.
    let dir = tmp.path().join("existing");
    fs::create_dir(&dir).unwrap();
    LogRewriter::create(&dir, SEGMENT)
        .unwrap()
        .finish(5)
        .unwrap();
    assert_eq!(scan_dir(&dir).1, 5);
}

fn invalid<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn bad_input_is_invalid_argument_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory that is not empty.
    fs::write(tmp.path().join("x"), b"x").unwrap();
    assert!(invalid(LogRewriter::create(tmp.path(), SEGMENT)).contains("not empty"));
    // Segment sizes the store cannot use.
    for size in [0, 100, SEGMENT_BYTES_MAX + 1] {
        invalid(LogRewriter::create(&tmp.path().join("s"), size));
    }

    let dir = tmp.path().join("new");
    let mut w = LogRewriter::create(&dir, SEGMENT).unwrap();
    push(&mut w, &[&[5, 6]]);
    let body = EventBody {
        stream: "s",
        event_type: "T",
        data: b"",
        metadata: b"",
        principal: "",
    };
    assert!(invalid(w.push_commit(&[])).contains("at least one event"));
    for commit in [vec![6], vec![2], vec![7, 7], vec![9, 8]] {
        let events: Vec<_> = commit.iter().map(|&p| (header(p), body)).collect();
        let m = invalid(w.push_commit(&events));
        assert!(m.contains("does not come after"), "{commit:?}: {m}");
    }
    let big = vec![0u8; SEGMENT as usize];
    let m = invalid(w.push_commit(&[(header(7), EventBody { data: &big, ..body })]));
    assert!(m.contains("does not fit in a segment"), "{m}");
    // Two events that fit alone but not together.
    let half = vec![0u8; SEGMENT as usize / 2];
    let half_body = EventBody {
        data: &half,
        ..body
    };
    let m = invalid(w.push_commit(&[(header(7), half_body), (header(8), half_body)]));
    assert!(m.contains("does not fit in a segment"), "{m}");
    let long = "s".repeat(usize::from(u16::MAX) + 1);
    let m = invalid(w.push_commit(&[(
        header(7),
        EventBody {
            stream: &long,
            ..body
        },
    )]));
    assert!(m.contains("stream name"), "{m}");
    let m = invalid(w.push_commit(&[(
        EventHeader {
            content_type: 2,
            ..header(7)
        },
        body,
    )]));
    assert!(m.contains("content type"), "{m}");
    // None of that was written: the log holds 5 and 6, and goes on at 7.
    push(&mut w, &[&[7]]);
    let m = invalid(w.finish(7));
    assert!(m.contains("not past the last event"), "{m}");

    let dir = tmp.path().join("again");
    let mut w = LogRewriter::create(&dir, SEGMENT).unwrap();
    push(&mut w, &[&[5, 6], &[7]]);
    w.finish(8).unwrap();
    let (seen, next) = scan_dir(&dir);
    assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), vec![5, 6, 7]);
    assert_eq!(next, 8);
}

#[test]
fn frames_round_trip_their_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let mut w = LogRewriter::create(&dir, SEGMENT).unwrap();
    let h = EventHeader {
        durable_through: 3,
        ..header(100)
    };
    let body = EventBody {
        stream: "order-1",
        event_type: "Placed",
        data: b"{}",
        metadata: b"meta",
        principal: "",
    };
    w.push_commit(&[(h, body)]).unwrap();
    w.finish(101).unwrap();
    let bytes = fs::read(dir.join(segment_file_name(100))).unwrap();
    let Ok(Decoded::Frame(f)) = decode_from(&bytes[SEGMENT_HEADER_BYTES..]) else {
        panic!("no frame");
    };
    let payload = &bytes
        [SEGMENT_HEADER_BYTES + frame::FRAME_PREFIX_BYTES..SEGMENT_HEADER_BYTES + f.frame_len];
    let b = f.body(payload);
    assert_eq!(
        (b.stream, b.event_type, b.data, b.metadata),
        ("order-1", "Placed", &b"{}"[..], &b"meta"[..])
    );
    assert_eq!(
        f.header,
        EventHeader {
            commit_index: 0,
            commit_count: 1,
            flags: 0,
            ..h
        }
    );
}
