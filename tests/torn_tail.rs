//! Exhaustive torn tail: the segment file cut at every byte (the rest zero, as in a torn write
//! into the pre-allocated file, or the file simply shorter) opens to exactly the whole commits
//! before the cut (all events of a commit or none), never a panic, and appending continues.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::{XorShift, full_event, payload};
use statestore::{
    Config, ContentType, Direction, Error, EventData, ExpectedRevision, Filter, FsyncPolicy,
    Position, RecordedEvent, Revision, Store, StreamAppend,
};

const SEGMENT_BYTES: u64 = 4096;

fn config(fsync: FsyncPolicy) -> Config {
    Config {
        segment_bytes: SEGMENT_BYTES,
        append_bytes_max: 2048,
        fsync,
        ..Config::default()
    }
}

/// Encoded size of a frame.
fn frame_bytes(stream: &str, e: &EventData) -> u64 {
    (80 + stream.len() + e.event_type.len() + e.data.len() + e.metadata.len()) as u64
}

/// The original log: the segment file's bytes, the events, and each commit's end offset and
/// number of events.
struct Original {
    file_name: String,
    bytes: Vec<u8>,
    data_end: usize,
    events: Vec<RecordedEvent>,
    commits: Vec<(usize, usize)>,
    _dir: tempfile::TempDir,
}

fn build() -> Original {
    let dir = common::tempdir();
    // fsync Always, so that frames carry real `durable_through` values and the recovery's
    // "is this damage or a torn write" check is exercised.
    let store = Store::open(dir.path(), config(FsyncPolicy::Always)).unwrap();
    let mut rng = XorShift::new(7);
    let mut n = 0u64;
    let mut event = |rng: &mut XorShift, t: &str, data: usize, meta: usize, ct| {
        n += 1;
        full_event(
            Some(common::id(n)),
            t,
            payload(rng, data),
            payload(rng, meta),
            ct,
        )
    };
    let mut commits: Vec<Vec<StreamAppend>> = vec![
        vec![StreamAppend::new(
            "a",
            ExpectedRevision::NoStream,
            vec![event(&mut rng, "One", 10, 0, ContentType::Json)],
        )],
        vec![StreamAppend::new(
            "b-1",
            ExpectedRevision::NoStream,
            vec![
                event(&mut rng, "Multi", 30, 5, ContentType::Binary),
                event(&mut rng, "Multi", 0, 0, ContentType::Json),
                event(&mut rng, "Multi", 50, 20, ContentType::Binary),
            ],
        )],
        // A multi-stream commit.
        vec![
            StreamAppend::new(
                "a",
                ExpectedRevision::Exact(Revision(0)),
                vec![
                    event(&mut rng, "Cross", 40, 0, ContentType::Json),
                    event(&mut rng, "Cross", 7, 3, ContentType::Json),
                ],
            ),
            StreamAppend::new(
                "c",
                ExpectedRevision::NoStream,
                vec![event(&mut rng, "Cross", 60, 8, ContentType::Binary)],
            ),
            StreamAppend::new(
                "b-1",
                ExpectedRevision::Exact(Revision(2)),
                vec![event(&mut rng, "Cross", 1, 1, ContentType::Binary)],
            ),
        ],
    ];
    // A commit whose last bytes are zeros: a cut inside them leaves the same file.
    let mut zero_tail = event(&mut rng, "ZeroTail", 20, 0, ContentType::Binary);
    zero_tail.data = [&zero_tail.data[..12], &[0u8; 8]].concat().into();
    commits.push(vec![StreamAppend::new(
        "c",
        ExpectedRevision::Any,
        vec![zero_tail],
    )]);
    for k in 0..8 {
        let count = 1 + (k % 3);
        let events = (0..count)
            .map(|_| {
                let data = rng.below(120) as usize;
                event(&mut rng, "Tail", data, (k % 2) * 9, ContentType::Json)
            })
            .collect();
        commits.push(vec![StreamAppend::new(
            format!("d-{}", k % 2),
            ExpectedRevision::Any,
            events,
        )]);
    }
    let mut ends = Vec::new();
    let mut offset = 32u64;
    for parts in commits {
        let bytes: u64 = parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| frame_bytes(&p.stream, e)))
            .sum();
        let count: usize = parts.iter().map(|p| p.events.len()).sum();
        offset += bytes;
        ends.push((offset as usize, count));
        store.append_multi(parts).unwrap();
    }
    let events = store
        .read_all(
            Position::START,
            Direction::Forwards,
            1000,
            &Filter::default(),
        )
        .unwrap()
        .events;
    assert_eq!(
        store.stats().segments,
        1,
        "the test log must fit one segment"
    );
    store.close().unwrap();

    let files = common::segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT_BYTES);
    let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert_eq!(
        ends.last().unwrap().0,
        data_end,
        "the commits' frame sizes do not add up to the written part of the segment"
    );
    let commit_events: usize = ends.iter().map(|(_, c)| c).sum();
    assert_eq!(commit_events, events.len());
    Original {
        file_name: files[0].file_name().unwrap().to_str().unwrap().to_string(),
        bytes,
        data_end,
        events,
        commits: ends,
        _dir: dir,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The first `cut` bytes, then zeros up to the original size.
    ZeroFilled,
    /// Only the first `cut` bytes.
    Truncated,
}

/// What a store opened from the cut file must hold: `None` for a damaged header, otherwise
/// the number of events of the whole commits that survive.
fn expected_events(original: &Original, cut: usize, variant: Variant) -> Option<usize> {
    let zero_after_cut = |end: usize| original.bytes[cut.min(end)..end].iter().all(|&b| b == 0);
    let header_ok = match variant {
        // Zero-filled: the header survives if the missing part of it was zeros anyway.
        Variant::ZeroFilled => zero_after_cut(32),
        // A file shorter than the header cannot be opened.
        Variant::Truncated => cut >= 32,
    };
    if !header_ok {
        return None;
    }
    // A commit survives when every byte of it is there (bytes after the cut read as zeros).
    let mut events = 0;
    for &(end, count) in &original.commits {
        if !zero_after_cut(end) {
            break;
        }
        events += count;
    }
    Some(events)
}

fn check_cut(original: &Original, root: &Path, cut: usize, variant: Variant, reopen: bool) {
    let mut bytes = original.bytes[..cut].to_vec();
    if variant == Variant::ZeroFilled {
        bytes.resize(original.bytes.len(), 0);
    }
    let label = format!("cut-{cut}-{variant:?}");
    check_bytes(
        original,
        root,
        &label,
        &bytes,
        expected_events(original, cut, variant),
        reopen,
    );
}

/// Opens a store whose only segment holds `bytes`. `expected` is `None` when opening must
/// fail with `Corruption` naming the segment, or the number of original events it must hold;
/// then an append must continue the log (and survive a reopen when `reopen`).
fn check_bytes(
    original: &Original,
    root: &Path,
    label: &str,
    bytes: &[u8],
    expected: Option<usize>,
    reopen: bool,
) {
    let dir = root.join(label);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join(&original.file_name);
    std::fs::write(&path, bytes).unwrap();

    let config = config(FsyncPolicy::Never);
    let opened = Store::open(&dir, config.clone());
    match expected {
        None => match opened {
            Err(Error::Corruption { file, .. }) => assert_eq!(file, path),
            Err(e) => panic!("{label}: expected Corruption, got {e}"),
            Ok(s) => panic!(
                "{label}: expected Corruption, but the store opened with {} events",
                s.last_position()
            ),
        },
        Some(count) => {
            let store = opened.unwrap_or_else(|e| panic!("{label}: open failed: {e}"));
            let want = &original.events[..count];
            check_store(&store, want);
            // Appending continues at the next position.
            let extra = EventData::binary("After", vec![1, 2, 3]).with_id(common::id(10_000));
            let r = store
                .append("after", ExpectedRevision::NoStream, vec![extra.clone()])
                .unwrap();
            assert_eq!(r.first_position, Position(count as u64 + 1));
            let read = store.read_event(r.first_position).unwrap().unwrap();
            assert_eq!(
                (read.id, read.data()),
                (common::id(10_000), &[1u8, 2, 3][..])
            );
            if reopen {
                store.close().unwrap();
                let store = Store::open(&dir, config).unwrap();
                let all = check_store_prefix(&store, want, count + 1);
                let last = &all[count];
                assert_eq!((last.stream(), last.id), ("after", common::id(10_000)));
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn check_store(store: &Store, want: &[RecordedEvent]) {
    check_store_prefix(store, want, want.len());
}

/// The store holds `total` events, the first of which are `want`; returns them all.
fn check_store_prefix(store: &Store, want: &[RecordedEvent], total: usize) -> Vec<RecordedEvent> {
    assert_eq!(store.last_position(), Position(total as u64));
    let all = store
        .read_all(
            Position::START,
            Direction::Forwards,
            1000,
            &Filter::default(),
        )
        .unwrap();
    assert!(all.end_of_log);
    assert_eq!(all.events.len(), total);
    assert_eq!(
        &all.events[..want.len()],
        want,
        "events differ from the original"
    );
    // The stream index agrees with the log.
    for stream in ["a", "b-1", "c", "d-0", "d-1"] {
        let in_log: Vec<&RecordedEvent> = want.iter().filter(|e| e.stream() == stream).collect();
        let revision = in_log.last().map(|e| e.revision);
        assert_eq!(
            store.stream_revision(stream).unwrap(),
            revision,
            "stream {stream}"
        );
        if !in_log.is_empty() {
            let read = store
                .read_stream(stream, Revision(0), Direction::Forwards, 1000)
                .unwrap();
            assert_eq!(read.len(), in_log.len());
            assert!(read.iter().zip(&in_log).all(|(a, b)| a == *b));
        }
    }
    all.events
}

/// Checks the cuts that `select` picks out of `0..=data_end` (given the commit boundaries).
fn run(variant: Variant, select: impl Fn(usize, &[usize]) -> bool) {
    let original = build();
    let root = common::tempdir();
    let boundaries: Vec<usize> = original.commits.iter().map(|(e, _)| *e).collect();
    for cut in (0..=original.data_end).filter(|&cut| select(cut, &boundaries)) {
        // Reopen after the append near commit boundaries and at some other cuts.
        let reopen = cut % 97 == 0 || boundaries.iter().any(|b| b.abs_diff(cut) <= 1);
        let result = catch_unwind(AssertUnwindSafe(|| {
            check_cut(&original, root.path(), cut, variant, reopen)
        }));
        if result.is_err() {
            panic!(
                "cut at byte {cut} of {} ({variant:?}) failed: see the panic above",
                original.data_end
            );
        }
    }
    // Also past the written part (a torn write of zeros changes nothing).
    check_cut(
        &original,
        root.path(),
        original.data_end + 100,
        variant,
        true,
    );
}

#[test]
fn every_cut_of_a_zero_filled_segment_keeps_exactly_the_whole_commits() {
    run(Variant::ZeroFilled, |_, _| true);
}

#[test]
fn cuts_of_a_truncated_segment_keep_exactly_the_whole_commits() {
    // Every cut through the header and the first frames, around every commit boundary, and
    // every fifth byte elsewhere (the file is zero-filled back to size at open, so this is
    // mostly the zero-filled case again).
    run(Variant::Truncated, |cut, boundaries| {
        cut < 160 || cut % 5 == 0 || boundaries.iter().any(|b| b.abs_diff(cut) <= 9)
    });
}

#[test]
fn the_commit_boundaries_match_the_recovery() {
    // Cutting exactly at a commit's end keeps it; one byte less drops it.
    let original = build();
    let root = common::tempdir();
    let mut events = 0;
    for &(end, count) in &original.commits {
        assert_eq!(
            expected_events(&original, end, Variant::ZeroFilled),
            Some(events + count)
        );
        check_cut(&original, root.path(), end, Variant::ZeroFilled, true);
        if original.bytes[end - 1] != 0 {
            assert_eq!(
                expected_events(&original, end - 1, Variant::ZeroFilled),
                Some(events)
            );
        }
        check_cut(&original, root.path(), end - 1, Variant::Truncated, true);
        events += count;
    }
}

/// A torn write need not be a clean cut: pages of the last write can reach the disk out of
/// order, leaving a hole of zeros inside the last commit with its later bytes present. That
/// commit was never acknowledged and is dropped; everything before it is kept.
#[test]
fn a_hole_in_the_last_commit_drops_exactly_that_commit() {
    let original = build();
    let root = common::tempdir();
    let (start, kept) = match original.commits.as_slice() {
        [.., (start, _), (_, last_count)] => (*start, original.events.len() - last_count),
        _ => unreachable!(),
    };
    let end = original.data_end;
    for hole_start in start..end {
        for hole_len in [1, 8, end - hole_start] {
            let hole_end = (hole_start + hole_len).min(end);
            let mut bytes = original.bytes.clone();
            bytes[hole_start..hole_end].fill(0);
            let unchanged = bytes == original.bytes;
            let expected = if unchanged {
                original.events.len()
            } else {
                kept
            };
            let label = format!("hole-{hole_start}-{hole_end}");
            let reopen = hole_start % 17 == 0;
            let result = catch_unwind(AssertUnwindSafe(|| {
                check_bytes(
                    &original,
                    root.path(),
                    &label,
                    &bytes,
                    Some(expected),
                    reopen,
                )
            }));
            if result.is_err() {
                panic!("{label} failed: see the panic above");
            }
        }
    }
}

/// Holes before the last commit cannot come from a torn write: the later commits were
/// written after those bytes were durable. That is damage, reported, never truncated away.
#[test]
fn a_hole_before_the_last_commit_is_corruption() {
    let original = build();
    let root = common::tempdir();
    let last_start = original.commits[original.commits.len() - 2].0;
    let mut rng = XorShift::new(99);
    for _ in 0..200 {
        let hole_start = 32 + rng.below((last_start - 32) as u64) as usize;
        let hole_len = 1 + rng.below(40) as usize;
        let hole_end = (hole_start + hole_len).min(last_start);
        let mut bytes = original.bytes.clone();
        bytes[hole_start..hole_end].fill(0);
        if bytes == original.bytes {
            continue;
        }
        let label = format!("hole-{hole_start}-{hole_end}");
        let result = catch_unwind(AssertUnwindSafe(|| {
            check_bytes(&original, root.path(), &label, &bytes, None, false)
        }));
        if result.is_err() {
            panic!("{label} failed: see the panic above");
        }
    }
}
