//! Logs with gaps in positions: a store's log rewritten without some of its events (whole
//! streams, prefixes of streams, parts of multi-stream commits, the newest events), as the
//! offline `compact` does, opens and answers every read like a model of the events kept, with
//! index checkpoints on and off, and appends continue after the last position ever used. Gaps
//! the log does not mark are corruption, named with the file and offset.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::XorShift;
use statestore::rewrite::{EventBody, EventHeader, GAP_BEFORE, LogRewriter, SEGMENT_GAP_BEFORE};
use statestore::{
    Config, ContentType, Direction, Error, EventData, ExpectedRevision, Filter, Position,
    RecordedEvent, Revision, Store, StreamAppend, StreamFilter,
};

const STREAMS: &[&str] = &[
    "order-1", "order-2", "order-3", "acct-1", "acct-2", "cart-9", "x", "y-1",
];
const TYPES: &[&str] = &["Placed", "Paid", "Shipped", "Note"];
const SEGMENT_BYTES: u64 = 4096;

fn config(checkpoint_events: u64) -> Config {
    Config {
        checkpoint_events,
        checkpoint_interval: Duration::ZERO,
        ..common::small_config()
    }
}

/// A store's events and commits (each commit: its positions, in order).
struct Source {
    events: Vec<RecordedEvent>,
    commits: Vec<Vec<u64>>,
    next_position: u64,
}

fn append(store: &Store, parts: Vec<StreamAppend>, commits: &mut Vec<Vec<u64>>) {
    let results = store.append_multi(parts).expect("append");
    let first = results.iter().map(|r| r.first_position.0).min().unwrap();
    let last = results.iter().map(|r| r.last_position.0).max().unwrap();
    commits.push((first..=last).collect());
}

fn events(rng: &mut XorShift, n: u64, next_id: &mut u64) -> Vec<EventData> {
    (0..n)
        .map(|_| {
            *next_id += 1;
            let t = TYPES[rng.below(TYPES.len() as u64) as usize];
            let data = format!("{{\"n\":{next_id}}}");
            let e = if rng.below(5) == 0 {
                EventData::binary(t, data.into_bytes())
            } else {
                EventData::json(t, data)
            };
            let e = e.with_id(common::id(*next_id));
            if rng.below(3) == 0 {
                e.with_metadata(format!("m{next_id}").into_bytes())
            } else {
                e
            }
        })
        .collect()
}

/// A store with `commits` random commits (one to three streams, one to four events each),
/// after three commits to `early-1` and followed by three to `late-1`.
fn build_source(dir: &Path, seed: u64, commits: usize) -> Source {
    let mut rng = XorShift::new(seed);
    let mut next_id = seed << 32;
    let store = Store::open(dir, config(0)).unwrap();
    let mut log = Vec::new();
    for _ in 0..3 {
        let k = 1 + rng.below(3);
        let e = events(&mut rng, k, &mut next_id);
        append(
            &store,
            vec![StreamAppend::new("early-1", ExpectedRevision::Any, e)],
            &mut log,
        );
    }
    for _ in 0..commits {
        let mut streams: Vec<&str> = Vec::new();
        let parts_n = if rng.below(3) == 0 {
            2 + rng.below(2)
        } else {
            1
        };
        while (streams.len() as u64) < parts_n {
            let s = STREAMS[rng.below(STREAMS.len() as u64) as usize];
            if !streams.contains(&s) {
                streams.push(s);
            }
        }
        let parts = streams
            .into_iter()
            .map(|s| {
                let k = 1 + rng.below(4);
                let e = events(&mut rng, k, &mut next_id);
                StreamAppend::new(s, ExpectedRevision::Any, e)
            })
            .collect();
        append(&store, parts, &mut log);
    }
    for _ in 0..3 {
        let k = 1 + rng.below(3);
        let e = events(&mut rng, k, &mut next_id);
        append(
            &store,
            vec![StreamAppend::new("late-1", ExpectedRevision::Any, e)],
            &mut log,
        );
    }
    let all = read_all_events(&store);
    let next_position = store.last_position().0 + 1;
    store.close().unwrap();
    Source {
        events: all,
        commits: log,
        next_position,
    }
}

fn read_all_events(store: &Store) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let slice = store
            .read_all(
                Position(from),
                Direction::Forwards,
                1000,
                &Filter::default(),
            )
            .unwrap();
        out.extend(slice.events);
        if slice.end_of_log {
            return out;
        }
        from = slice.scanned_to.0 + 1;
    }
}

/// Which events a rewrite keeps: none of some streams, none below a revision of others.
struct Keep {
    dropped: BTreeSet<String>,
    cut: BTreeMap<String, u64>,
}

impl Keep {
    fn random(rng: &mut XorShift, drop_late: bool) -> Keep {
        let mut dropped: BTreeSet<String> = ["early-1".to_string()].into();
        if drop_late {
            dropped.insert("late-1".into());
        }
        let mut cut = BTreeMap::new();
        for s in STREAMS {
            match rng.below(5) {
                0 => {
                    dropped.insert(s.to_string());
                }
                1 | 2 => {
                    cut.insert(s.to_string(), rng.below(12));
                }
                _ => {}
            }
        }
        Keep { dropped, cut }
    }

    fn keeps(&self, e: &RecordedEvent) -> bool {
        !self.dropped.contains(e.stream())
            && self.cut.get(e.stream()).is_none_or(|&c| e.revision.0 >= c)
    }
}

fn header_of(e: &RecordedEvent) -> EventHeader {
    EventHeader {
        position: e.position.0,
        revision: e.revision.0,
        durable_through: e.position.0 - 1,
        timestamp_us: e.timestamp_us,
        id: *e.id.as_bytes(),
        commit_index: 0,
        commit_count: 1,
        content_type: match e.content_type {
            ContentType::Binary => 0,
            ContentType::Json => 1,
        },
        flags: 0,
    }
}

fn body_of(e: &RecordedEvent) -> EventBody<'_> {
    EventBody {
        stream: e.stream(),
        event_type: e.event_type(),
        data: e.data(),
        metadata: e.metadata(),
        principal: "",
    }
}

/// Writes the events of `source` that `keep` keeps into a new log in `dir`, commit by commit,
/// continuing at the source's next position. Returns the events kept.
fn rewrite(source: &Source, keep: &Keep, dir: &Path) -> Vec<RecordedEvent> {
    let by_position: BTreeMap<u64, &RecordedEvent> =
        source.events.iter().map(|e| (e.position.0, e)).collect();
    let mut w = LogRewriter::create(dir, SEGMENT_BYTES).unwrap();
    let mut kept = Vec::new();
    for commit in &source.commits {
        let events: Vec<&RecordedEvent> = commit
            .iter()
            .map(|p| by_position[p])
            .filter(|e| keep.keeps(e))
            .collect();
        if events.is_empty() {
            continue;
        }
        let pushed: Vec<(EventHeader, EventBody<'_>)> =
            events.iter().map(|e| (header_of(e), body_of(e))).collect();
        w.push_commit(&pushed).unwrap();
        kept.extend(events.into_iter().cloned());
    }
    let summary = w.finish(source.next_position).unwrap();
    assert_eq!(summary.events, kept.len() as u64);
    assert_eq!(summary.next_position, source.next_position);
    kept
}

/// The events a store should hold, and the position its next append gets.
struct Model {
    events: Vec<RecordedEvent>,
    next_position: u64,
}

impl Model {
    fn streams(&self) -> BTreeSet<String> {
        self.events.iter().map(|e| e.stream().to_string()).collect()
    }

    fn of_stream(&self, stream: &str) -> Vec<&RecordedEvent> {
        self.events
            .iter()
            .filter(|e| e.stream() == stream)
            .collect()
    }
}

fn positions(events: &[impl std::borrow::Borrow<RecordedEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.borrow().position.0).collect()
}

#[track_caller]
fn same(got: &[RecordedEvent], want: &[&RecordedEvent], what: &str) {
    assert_eq!(positions(got), positions(want), "{what}: positions");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, *w, "{what}: event {}", w.position.0);
    }
}

/// Every read of `store` answers like `model`.
fn check(store: &Store, model: &Model, all_streams: &[&str]) {
    let last = model.next_position - 1;
    assert_eq!(store.last_position(), Position(last));
    let end = last + 3;
    // Whole-log reads, forwards and backwards, from every position, in small pages (so that
    // pages start and end in holes).
    for from in 0..=end {
        let want: Vec<&RecordedEvent> = model
            .events
            .iter()
            .filter(|e| e.position.0 >= from)
            .take(3)
            .collect();
        let s = store
            .read_all(Position(from), Direction::Forwards, 3, &Filter::default())
            .unwrap();
        same(&s.events, &want, &format!("read_all forwards from {from}"));
        if let Some(e) = s.events.last() {
            assert!(s.scanned_to.0 >= e.position.0);
        }
        assert!(s.scanned_to.0 <= last, "scanned_to {:?}", s.scanned_to);
        if s.events.len() < 3 {
            assert!(
                s.end_of_log,
                "forwards from {from}: short page, not the end"
            );
        }
        let want: Vec<&RecordedEvent> = model
            .events
            .iter()
            .rev()
            .filter(|e| e.position.0 <= from)
            .take(3)
            .collect();
        let s = store
            .read_all(Position(from), Direction::Backwards, 3, &Filter::default())
            .unwrap();
        same(&s.events, &want, &format!("read_all backwards from {from}"));
        if s.events.len() < 3 {
            assert!(
                s.end_of_log,
                "backwards from {from}: short page, not the start"
            );
        }
        let at = store.read_event(Position(from)).unwrap();
        let want = model.events.iter().find(|e| e.position.0 == from);
        assert_eq!(at.as_ref(), want, "read_event {from}");
    }
    // Paging through the whole log both ways, filtered and not.
    let filters = [
        Filter::default(),
        Filter {
            stream: Some(StreamFilter::Category("order".into())),
            event_types: Vec::new(),
        },
        Filter {
            stream: None,
            event_types: vec!["Paid".into(), "Note".into()],
        },
    ];
    for filter in &filters {
        let want: Vec<&RecordedEvent> = model
            .events
            .iter()
            .filter(|e| filter.matches(e.stream(), e.event_type()))
            .collect();
        for count in [1, 4, 1000] {
            let mut got = Vec::new();
            let mut from = 1;
            loop {
                let s = store
                    .read_all(Position(from), Direction::Forwards, count, filter)
                    .unwrap();
                got.extend(s.events);
                if s.end_of_log {
                    break;
                }
                from = s.scanned_to.0 + 1;
            }
            same(
                &got,
                &want,
                &format!("paging forwards by {count}, {filter:?}"),
            );
            let mut got = Vec::new();
            let mut from = u64::MAX;
            loop {
                let s = store
                    .read_all(Position(from), Direction::Backwards, count, filter)
                    .unwrap();
                got.extend(s.events);
                if s.end_of_log {
                    break;
                }
                from = s.scanned_to.0 - 1;
            }
            got.reverse();
            same(
                &got,
                &want,
                &format!("paging backwards by {count}, {filter:?}"),
            );
        }
    }
    // Streams, which may begin above revision 0.
    let kept = model.streams();
    for &stream in all_streams {
        let events = model.of_stream(stream);
        if !kept.contains(stream) {
            assert_eq!(store.stream_revision(stream).unwrap(), None, "{stream}");
            assert!(
                matches!(
                    store.read_stream(stream, Revision(0), Direction::Forwards, 10),
                    Err(Error::StreamNotFound { .. })
                ),
                "{stream}"
            );
            continue;
        }
        let (lowest, highest) = (events[0].revision.0, events.last().unwrap().revision.0);
        assert_eq!(
            store.stream_revision(stream).unwrap(),
            Some(Revision(highest)),
            "{stream}"
        );
        for from in [
            0,
            1,
            lowest.saturating_sub(1),
            lowest,
            lowest + 1,
            highest,
            highest + 1,
            u64::MAX,
        ] {
            let want: Vec<&RecordedEvent> = events
                .iter()
                .copied()
                .filter(|e| e.revision.0 >= from)
                .take(3)
                .collect();
            let got = store
                .read_stream(stream, Revision(from), Direction::Forwards, 3)
                .unwrap();
            same(&got, &want, &format!("{stream} forwards from {from}"));
            let want: Vec<&RecordedEvent> = events
                .iter()
                .rev()
                .copied()
                .filter(|e| e.revision.0 <= from)
                .take(3)
                .collect();
            let got = store
                .read_stream(stream, Revision(from), Direction::Backwards, 3)
                .unwrap();
            same(&got, &want, &format!("{stream} backwards from {from}"));
        }
    }
    // Event types, through the per-type index.
    for t in TYPES {
        let of_type: Vec<&RecordedEvent> = model
            .events
            .iter()
            .filter(|e| e.event_type() == *t)
            .collect();
        for from in (0..=end).step_by(7).chain([u64::MAX]) {
            let want: Vec<&RecordedEvent> = of_type
                .iter()
                .copied()
                .filter(|e| e.position.0 >= from)
                .take(5)
                .collect();
            let got = store
                .read_by_type(t, Position(from), Direction::Forwards, 5)
                .unwrap();
            same(&got, &want, &format!("type {t} forwards from {from}"));
            let want: Vec<&RecordedEvent> = of_type
                .iter()
                .rev()
                .copied()
                .filter(|e| e.position.0 <= from)
                .take(5)
                .collect();
            let got = store
                .read_by_type(t, Position(from), Direction::Backwards, 5)
                .unwrap();
            same(&got, &want, &format!("type {t} backwards from {from}"));
        }
    }
}

/// Appends to a stream kept with a prefix removed (if any), to a stream removed entirely and
/// to a new one, in one commit; checks positions and revisions and adds the events to the
/// model.
fn append_after(store: &Store, model: &mut Model, keep: &Keep, n: &mut u64) {
    let mut parts = Vec::new();
    let streams = model.streams();
    if let Some(s) = streams
        .iter()
        .find(|s| keep.cut.get(*s).is_some_and(|&c| c > 0))
        .or_else(|| streams.iter().next())
    {
        let current = model.of_stream(s).last().unwrap().revision;
        parts.push((
            StreamAppend::new(
                s.clone(),
                ExpectedRevision::Exact(current),
                vec![common::ev(*n, "Paid"), common::ev(*n + 1, "Note")],
            ),
            current.0 + 1,
        ));
    }
    if let Some(s) = keep.dropped.iter().find(|s| !streams.contains(*s)) {
        parts.push((
            StreamAppend::new(
                s.clone(),
                ExpectedRevision::NoStream,
                vec![common::ev(*n + 2, "Placed")],
            ),
            0,
        ));
    }
    parts.push((
        StreamAppend::new(
            format!("fresh-{n}"),
            ExpectedRevision::NoStream,
            vec![common::ev(*n + 3, "Shipped")],
        ),
        0,
    ));
    *n += 10;
    let expected: Vec<(String, u64, EventData)> = parts
        .iter()
        .flat_map(|(part, first_revision)| {
            part.events
                .iter()
                .zip(*first_revision..)
                .map(|(e, r)| (part.stream.clone(), r, e.clone()))
        })
        .collect();
    let results = store
        .append_multi(parts.into_iter().map(|(p, _)| p).collect())
        .unwrap();
    // The first new event gets the next position, past everything the log ever held.
    assert_eq!(results[0].first_position, Position(model.next_position));
    for (p, (stream, revision, data)) in (model.next_position..).zip(expected) {
        let e = store
            .read_event(Position(p))
            .unwrap()
            .expect("the new event");
        assert_eq!(
            (e.stream(), e.revision),
            (stream.as_str(), Revision(revision))
        );
        assert_eq!(
            (e.event_type(), e.data()),
            (data.event_type.as_str(), &data.data[..])
        );
        model.events.push(e);
        model.next_position = p + 1;
    }
    assert_eq!(
        results.last().unwrap().last_position,
        Position(model.next_position - 1)
    );
}

fn all_streams() -> Vec<&'static str> {
    let mut v: Vec<&str> = STREAMS.to_vec();
    v.extend(["early-1", "late-1"]);
    v
}

fn rewritten_store_reads_like_the_model(seed: u64, drop_late: bool) {
    let tmp = common::tempdir();
    let source_dir = tmp.path().join("source");
    let source = build_source(&source_dir, seed, 120);
    let mut rng = XorShift::new(seed ^ 0x5eed);
    let keep = Keep::random(&mut rng, drop_late);
    let dir = tmp.path().join("rewritten");
    let kept = rewrite(&source, &keep, &dir);
    assert!(
        kept.first().unwrap().position.0 > 1,
        "the log starts after a gap"
    );
    let last_kept = kept.last().unwrap().position.0;
    if drop_late {
        assert!(
            source.next_position > last_kept + 1,
            "the newest events are gone"
        );
    } else {
        assert_eq!(source.next_position, last_kept + 1);
    }
    let mut model = Model {
        events: kept,
        next_position: source.next_position,
    };
    let streams = {
        let mut s = all_streams();
        s.push("fresh-900000");
        s.push("fresh-900010");
        s
    };
    let mut n = 900_000;
    // Checkpoints off, then on (runs written with holes, at close and every 7 events), then
    // reopened from those runs, then off again: the same answers each time.
    for (round, checkpoint_events) in [0, 7, 7, 0].into_iter().enumerate() {
        let store = Store::open(&dir, config(checkpoint_events)).unwrap();
        let stats = store.stats();
        assert!(stats.segments >= 4, "{stats:?}");
        if round == 2 {
            // The runs written with holes at the last close are used.
            assert!(stats.index_runs > 0, "{stats:?}");
            assert_eq!(stats.checkpoint_position, Position(model.next_position - 1));
        }
        check(&store, &model, &streams);
        if round < 2 {
            append_after(&store, &mut model, &keep, &mut n);
            check(&store, &model, &streams);
        }
        store.close().unwrap();
    }
}

#[test]
fn rewritten_log_reads_like_the_events_kept() {
    for seed in [1, 2, 3] {
        rewritten_store_reads_like_the_model(seed, false);
    }
}

#[test]
fn rewritten_log_without_its_newest_events_continues_after_them() {
    for seed in [4, 5, 6] {
        rewritten_store_reads_like_the_model(seed, true);
    }
}

/// A log written starting at position 1000, as `replay --from 1000 --into` does.
#[test]
fn log_starting_at_position_1000_opens_and_reads() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("replayed");
    let source_dir = tmp.path().join("source");
    let store = Store::open(&source_dir, config(0)).unwrap();
    for k in 0..40u64 {
        let s = format!("s-{}", k % 3);
        store
            .append(&s, ExpectedRevision::Any, vec![common::ev(k, "T")])
            .unwrap();
    }
    let events = read_all_events(&store);
    store.close().unwrap();
    // Positions 1000.., revisions as in the source (a replay from the middle of streams).
    let mut w = LogRewriter::create(&dir, SEGMENT_BYTES).unwrap();
    let mut model = Vec::new();
    for e in &events {
        let mut h = header_of(e);
        h.position += 999;
        w.push_commit(&[(h, body_of(e))]).unwrap();
        model.push(h.position);
    }
    w.finish(1040).unwrap();
    let first = common::segment_files(&dir)[0].clone();
    assert!(first.ends_with("00000000000000001000.seg"), "{first:?}");

    for checkpoint_events in [0, 5, 5] {
        let store = Store::open(&dir, config(checkpoint_events)).unwrap();
        assert_eq!(store.last_position(), Position(1039));
        let all = read_all_events(&store);
        assert_eq!(positions(&all), model);
        for (got, e) in all.iter().zip(&events) {
            assert_eq!(got.data(), e.data());
            assert_eq!((got.stream(), got.revision), (e.stream(), e.revision));
        }
        for from in [0, 1, 999, 1000] {
            let s = store
                .read_all(Position(from), Direction::Forwards, 2, &Filter::default())
                .unwrap();
            assert_eq!(positions(&s.events), vec![1000, 1001], "from {from}");
        }
        let s = store
            .read_all(Position(999), Direction::Backwards, 10, &Filter::default())
            .unwrap();
        assert!(s.events.is_empty() && s.end_of_log);
        let s = store
            .read_all(Position(1001), Direction::Backwards, 10, &Filter::default())
            .unwrap();
        assert_eq!(positions(&s.events), vec![1001, 1000]);
        assert!(s.end_of_log);
        assert_eq!(store.read_event(Position(999)).unwrap(), None);
        assert_eq!(store.read_event(Position(1)).unwrap(), None);
        let got = store
            .read_stream("s-1", Revision(0), Direction::Forwards, 100)
            .unwrap();
        assert_eq!(got.len(), 13);
        store.close().unwrap();
    }
    let store = Store::open(&dir, config(5)).unwrap();
    let r = store
        .append(
            "s-0",
            ExpectedRevision::Exact(Revision(13)),
            vec![common::ev(77, "T")],
        )
        .unwrap();
    assert_eq!(
        (r.first_position, r.revision),
        (Position(1040), Revision(14))
    );
    store.close().unwrap();
}

/// Nothing kept: the log is one empty segment, flagged, and the next append gets its first
/// position.
#[test]
fn empty_rewritten_log_continues_at_its_next_position() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("empty");
    LogRewriter::create(&dir, SEGMENT_BYTES)
        .unwrap()
        .finish(42)
        .unwrap();
    for checkpoint_events in [0, 3] {
        let store = Store::open(&dir, config(checkpoint_events)).unwrap();
        assert_eq!(store.last_position(), Position(41));
        let s = store
            .read_all(Position(0), Direction::Forwards, 10, &Filter::default())
            .unwrap();
        assert!(s.events.is_empty() && s.end_of_log);
        assert_eq!(s.scanned_to, Position(41));
        let s = store
            .read_all(Position(100), Direction::Backwards, 10, &Filter::default())
            .unwrap();
        assert!(s.events.is_empty() && s.end_of_log);
        store.close().unwrap();
    }
    let store = Store::open(&dir, config(3)).unwrap();
    for k in 0..5 {
        let r = store
            .append("a", ExpectedRevision::Any, vec![common::ev(k, "T")])
            .unwrap();
        assert_eq!(r.first_position, Position(42 + k));
    }
    store.close().unwrap();
    let store = Store::open(&dir, config(3)).unwrap();
    let all = read_all_events(&store);
    assert_eq!(positions(&all), vec![42, 43, 44, 45, 46]);
    assert_eq!(store.stats().last_position, Position(46));
    store.close().unwrap();
}

// ---- unmarked gaps are corruption ---------------------------------------------------------

/// A log of events 1..=5 and 20..=40 (a gap inside the first segment), written by the
/// rewriter with 300-byte data so that segments hold ten events each.
fn gapped_log(dir: &Path) {
    let mut w = LogRewriter::create(dir, SEGMENT_BYTES).unwrap();
    let data = vec![b'x'; 300];
    let id = |p: u64| *common::id(p).as_bytes();
    for p in (1..=5).chain(20..=40) {
        let h = EventHeader {
            position: p,
            revision: if p <= 5 { p - 1 } else { p - 15 },
            durable_through: 0,
            timestamp_us: p,
            id: id(p),
            commit_index: 0,
            commit_count: 1,
            content_type: 0,
            flags: 0,
        };
        let body = EventBody {
            stream: "s",
            event_type: "T",
            data: &data,
            metadata: b"",
            principal: "",
        };
        w.push_commit(&[(h, body)]).unwrap();
    }
    w.finish(41).unwrap();
}

/// Byte offsets of the frames of a segment file, with their positions and flags.
fn frames(bytes: &[u8]) -> Vec<(usize, u64, u8)> {
    let mut out = Vec::new();
    let mut at = 32;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let position = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        out.push((at, position, bytes[at + 8 + 57]));
        at += 8 + len;
    }
    out
}

fn reseal_frame(bytes: &mut [u8], at: usize) {
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[at..at + 4]);
    h.update(&bytes[at + 8..at + 8 + len]);
    let crc = h.finalize();
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fn reseal_header(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
}

#[track_caller]
fn corruption_at(dir: &Path, file: &Path, offset: u64) -> String {
    for checkpoint_events in [0, 5] {
        match Store::open(dir, config(checkpoint_events)) {
            Err(Error::Corruption {
                file: f,
                offset: o,
                reason,
            }) => {
                assert_eq!((f.as_path(), o), (file, offset), "{reason}");
                if checkpoint_events == 5 {
                    return reason;
                }
            }
            Err(e) => panic!("expected Corruption in {}, got {e}", file.display()),
            Ok(_) => panic!(
                "expected Corruption in {}, the store opened",
                file.display()
            ),
        }
    }
    unreachable!()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn unmarked_jumps_in_positions_are_corruption() {
    let tmp = common::tempdir();
    let good = tmp.path().join("good");
    gapped_log(&good);
    // The log as written opens.
    let store = Store::open(&good, config(0)).unwrap();
    assert_eq!(read_all_events(&store).len(), 26);
    store.close().unwrap();
    std::fs::remove_file(good.join("LOCK")).ok();
    let files: Vec<PathBuf> = common::segment_files(&good);

    // The flagged frame inside a segment, with its flag cleared.
    let (file_index, at) = files
        .iter()
        .enumerate()
        .find_map(|(i, f)| {
            let bytes = std::fs::read(f).unwrap();
            frames(&bytes)
                .into_iter()
                .find(|&(_, _, flags)| flags & GAP_BEFORE != 0)
                .map(|(at, ..)| (i, at))
        })
        .expect("a frame flagged GAP_BEFORE");
    let dir = tmp.path().join("frame");
    copy_dir(&good, &dir);
    let path = dir.join(files[file_index].file_name().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at + 8 + 57] = 0;
    reseal_frame(&mut bytes, at);
    std::fs::write(&path, &bytes).unwrap();
    let reason = corruption_at(&dir, &path, at as u64);
    assert_eq!(reason, "frame has position 20, expected 6");

    // The first segment of a log starting at 5, and its empty last segment starting at 200,
    // with their headers' flags cleared; with and without index runs (which make the open
    // check only the header of the first segment).
    let start5 = tmp.path().join("start5");
    let mut w = LogRewriter::create(&start5, SEGMENT_BYTES).unwrap();
    for p in 5..=30 {
        let h = EventHeader {
            position: p,
            revision: p - 5,
            durable_through: 0,
            timestamp_us: p,
            id: *common::id(p).as_bytes(),
            commit_index: 0,
            commit_count: 1,
            content_type: 0,
            flags: 0,
        };
        let body = EventBody {
            stream: "s",
            event_type: "T",
            data: &[b'y'; 300],
            metadata: b"",
            principal: "",
        };
        w.push_commit(&[(h, body)]).unwrap();
    }
    w.finish(200).unwrap();
    let files = common::segment_files(&start5);
    assert!(files.len() >= 3, "{files:?}");
    let store = Store::open(&start5, config(5)).unwrap();
    assert_eq!(read_all_events(&store).len(), 26);
    assert_eq!(store.last_position(), Position(199));
    store.close().unwrap();
    assert!(start5.join("index").is_dir());
    for (k, runs) in [
        (0, true),
        (0, false),
        (files.len() - 1, true),
        (files.len() - 1, false),
    ] {
        let name = files[k].file_name().unwrap();
        let dir = tmp.path().join(format!("header-{k}-{runs}"));
        copy_dir(&start5, &dir);
        if !runs {
            std::fs::remove_dir_all(dir.join("index")).unwrap();
        }
        let path = dir.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
            SEGMENT_GAP_BEFORE,
            "{name:?}"
        );
        bytes[24] = 0;
        reseal_header(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let reason = corruption_at(&dir, &path, 16);
        let want = if k == 0 {
            "segment starts at position 5, but the log continues at 1"
        } else {
            "segment starts at position 200, but the log continues at 31"
        };
        assert_eq!(reason, want);
    }
}

/// The first append after a gap at the end, torn by a crash, is dropped, and the log still
/// continues where the gap ends.
#[test]
fn torn_first_append_after_a_gap_continues_at_the_same_position() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("log");
    let mut w = LogRewriter::create(&dir, SEGMENT_BYTES).unwrap();
    for p in 1..=5 {
        let h = EventHeader {
            position: p,
            revision: p - 1,
            durable_through: 0,
            timestamp_us: p,
            id: *common::id(p).as_bytes(),
            commit_index: 0,
            commit_count: 1,
            content_type: 1,
            flags: 0,
        };
        let body = EventBody {
            stream: "s",
            event_type: "T",
            data: b"{}",
            metadata: b"",
            principal: "",
        };
        w.push_commit(&[(h, body)]).unwrap();
    }
    w.finish(100).unwrap();
    let store = Store::open(&dir, config(0)).unwrap();
    let r = store
        .append(
            "s",
            ExpectedRevision::Exact(Revision(4)),
            vec![common::ev(100, "T")],
        )
        .unwrap();
    assert_eq!((r.first_position, r.revision), (Position(100), Revision(5)));
    store.close().unwrap();
    // Cut the end of the frame of position 100, as a crash in the middle of its write would.
    let path = dir.join("00000000000000000100.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, position, _) = frames(&bytes)[0];
    assert_eq!(position, 100);
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    bytes[at + 8 + len - 4..at + 8 + len].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(&dir, config(0)).unwrap();
    assert_eq!(store.last_position(), Position(99));
    assert_eq!(store.read_event(Position(100)).unwrap(), None);
    let r = store
        .append(
            "s",
            ExpectedRevision::Exact(Revision(4)),
            vec![common::ev(101, "T")],
        )
        .unwrap();
    assert_eq!((r.first_position, r.revision), (Position(100), Revision(5)));
    let all = read_all_events(&store);
    assert_eq!(positions(&all), vec![1, 2, 3, 4, 5, 100]);
    store.close().unwrap();
}
