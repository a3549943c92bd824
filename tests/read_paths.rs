//! Every read path returns exactly what was written: read_stream, read_all (with and without
//! filters, paging by `scanned_to`), read_by_type, read_event and stream_revision, on a single
//! segment and across segment boundaries, before and after reopening the store.

mod common;

use std::collections::HashMap;

use common::{
    Expected, XorShift, assert_event, assert_events, ev, full_event, payload, small_config,
};
use statestore::{
    AllSlice, Config, ContentType, Direction, Error, EventData, ExpectedRevision, Filter, Position,
    RecordedEvent, Revision, Store, StreamAppend, StreamFilter,
};

const STREAMS: &[&str] = &[
    "order",
    "order-1",
    "order-2",
    "orders-1",
    "customer-1",
    "customer-2",
    "x",
];
const TYPES: &[&str] = &["Created", "Updated", "Shipped", "Deleted"];

/// Appends a varied workload (single- and multi-event appends, multi-stream appends, both
/// content types, empty and non-empty data and metadata, given and store-assigned ids) and
/// returns the model: `model[p - 1]` is the event at position `p`.
fn populate(store: &Store, seed: u64, appends: usize) -> Vec<Expected> {
    let mut rng = XorShift::new(seed);
    let mut model: Vec<Expected> = Vec::new();
    let mut revisions: HashMap<String, u64> = HashMap::new();
    let mut n = 0u64;
    let mut make_event = |rng: &mut XorShift| {
        n += 1;
        let id = (!n.is_multiple_of(7)).then(|| common::id(seed * 1_000_000 + n));
        let event_type = TYPES[rng.below(TYPES.len() as u64) as usize];
        let data_len = match rng.below(4) {
            0 => 0,
            1 => rng.below(20) as usize,
            _ => rng.below(400) as usize,
        };
        let meta_len = if rng.below(2) == 0 {
            0
        } else {
            rng.below(40) as usize
        };
        let content_type = if rng.below(2) == 0 {
            ContentType::Json
        } else {
            ContentType::Binary
        };
        full_event(
            id,
            event_type,
            payload(rng, data_len),
            payload(rng, meta_len),
            content_type,
        )
    };
    for _ in 0..appends {
        let stream_count = if rng.below(4) == 0 {
            2 + rng.below(2)
        } else {
            1
        };
        let mut streams: Vec<&str> = Vec::new();
        while streams.len() < stream_count as usize {
            let s = STREAMS[rng.below(STREAMS.len() as u64) as usize];
            if !streams.contains(&s) {
                streams.push(s);
            }
        }
        let parts: Vec<StreamAppend> = streams
            .iter()
            .map(|s| {
                let count = 1 + rng.below(3);
                let events: Vec<EventData> = (0..count).map(|_| make_event(&mut rng)).collect();
                let expected = match revisions.get(*s) {
                    Some(r) => ExpectedRevision::Exact(Revision(*r)),
                    None => ExpectedRevision::NoStream,
                };
                StreamAppend::new(*s, expected, events)
            })
            .collect();
        let results = if parts.len() == 1 {
            let p = parts[0].clone();
            vec![
                store
                    .append(p.stream, p.expected, p.events)
                    .expect("append"),
            ]
        } else {
            store.append_multi(parts.clone()).expect("append_multi")
        };
        assert_eq!(results.len(), parts.len());
        for (part, result) in parts.iter().zip(&results) {
            let first_revision = revisions.get(&part.stream).map_or(0, |r| r + 1);
            assert_eq!(result.first_position.0, model.len() as u64 + 1);
            for (k, e) in part.events.iter().enumerate() {
                model.push(Expected {
                    stream: part.stream.clone(),
                    revision: first_revision + k as u64,
                    position: model.len() as u64 + 1,
                    data: e.clone(),
                });
            }
            let last_revision = first_revision + part.events.len() as u64 - 1;
            assert_eq!(result.last_position.0, model.len() as u64);
            assert_eq!(result.revision, Revision(last_revision));
            revisions.insert(part.stream.clone(), last_revision);
        }
    }
    model
}

/// Fills in the store-assigned ids, so that later checks (after a reopen) compare them too.
fn learn_assigned_ids(store: &Store, model: &mut [Expected]) {
    for e in model.iter_mut().filter(|e| e.data.id.is_none()) {
        let read = store
            .read_event(Position(e.position))
            .expect("read_event")
            .expect("event exists");
        assert!(!read.id.is_nil());
        e.data.id = Some(read.id);
    }
}

fn model_read_stream<'a>(
    model: &'a [Expected],
    stream: &str,
    from: u64,
    direction: Direction,
    count: u64,
) -> Vec<&'a Expected> {
    let events: Vec<&Expected> = model.iter().filter(|e| e.stream == stream).collect();
    let n = events.len() as u64;
    match direction {
        Direction::Forwards => events
            .into_iter()
            .filter(|e| e.revision >= from)
            .take(count as usize)
            .collect(),
        Direction::Backwards => {
            // From past the end (Revision::END or any larger revision) starts at the newest.
            let top = from.min(n.saturating_sub(1));
            events
                .into_iter()
                .rev()
                .filter(|e| e.revision <= top)
                .take(count as usize)
                .collect()
        }
    }
}

/// The model of read_all with an unlimited scan: the events, `scanned_to`, `end_of_log`.
fn model_read_all<'a>(
    model: &'a [Expected],
    from: u64,
    direction: Direction,
    count: u64,
    filter: &Filter,
) -> (Vec<&'a Expected>, u64, bool) {
    let last = model.len() as u64;
    let mut out = Vec::new();
    match direction {
        Direction::Forwards => {
            let mut p = from.max(1);
            while p <= last && (out.len() as u64) < count {
                let e = &model[p as usize - 1];
                if filter.matches(&e.stream, &e.data.event_type) {
                    out.push(e);
                }
                p += 1;
            }
            (out, (p - 1).min(last), p > last)
        }
        Direction::Backwards => {
            let mut p = from.min(last);
            while p >= 1 && (out.len() as u64) < count {
                let e = &model[p as usize - 1];
                if filter.matches(&e.stream, &e.data.event_type) {
                    out.push(e);
                }
                p -= 1;
            }
            (out, p + 1, p == 0)
        }
    }
}

fn model_read_by_type<'a>(
    model: &'a [Expected],
    event_type: &str,
    from: u64,
    direction: Direction,
    count: u64,
) -> Vec<&'a Expected> {
    let of_type = model.iter().filter(|e| e.data.event_type == event_type);
    match direction {
        Direction::Forwards => of_type
            .filter(|e| e.position >= from)
            .take(count as usize)
            .collect(),
        Direction::Backwards => of_type
            .rev()
            .filter(|e| e.position <= from)
            .take(count as usize)
            .collect(),
    }
}

fn filters() -> Vec<Filter> {
    let stream = |f: StreamFilter| Filter {
        stream: Some(f),
        event_types: Vec::new(),
    };
    vec![
        Filter::default(),
        stream(StreamFilter::Prefix("order".into())),
        stream(StreamFilter::Prefix("orders".into())),
        stream(StreamFilter::Prefix("nothing".into())),
        stream(StreamFilter::Category("order".into())),
        stream(StreamFilter::Category("customer".into())),
        Filter {
            stream: None,
            event_types: vec!["Created".into(), "Deleted".into()],
        },
        Filter {
            stream: Some(StreamFilter::Category("order".into())),
            event_types: vec!["Updated".into()],
        },
    ]
}

/// Positions to start reads from: the edges, some in the middle, and past the end.
fn sample_positions(last: u64) -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        2,
        last / 3,
        last / 2,
        last.saturating_sub(1),
        last,
        last + 1,
        last + 50,
    ];
    v.push(Position::END.0);
    v.sort_unstable();
    v.dedup();
    v
}

/// Checks every read path of `store` against the model.
fn verify(store: &Store, model: &[Expected]) {
    let last = model.len() as u64;
    assert_eq!(store.last_position(), Position(last));

    // read_event: 0 and past the end are None; everything in between is the event.
    assert!(store.read_event(Position(0)).unwrap().is_none());
    assert!(store.read_event(Position(last + 1)).unwrap().is_none());
    assert!(store.read_event(Position::END).unwrap().is_none());
    for e in model {
        let read = store.read_event(Position(e.position)).unwrap().unwrap();
        assert_event(&read, e);
    }

    // stream_revision.
    for s in STREAMS {
        let expected = model
            .iter()
            .filter(|e| e.stream == *s)
            .map(|e| e.revision)
            .max();
        assert_eq!(
            store.stream_revision(s).unwrap(),
            expected.map(Revision),
            "stream {s}"
        );
    }
    assert_eq!(store.stream_revision("no-such-stream").unwrap(), None);

    // read_stream in both directions, from every revision and past the end.
    for s in STREAMS {
        let n = model.iter().filter(|e| e.stream == *s).count() as u64;
        if n == 0 {
            continue;
        }
        let mut froms: Vec<u64> = (0..=n + 1).collect();
        froms.extend([n + 100, Revision::END.0]);
        for from in froms {
            for direction in [Direction::Forwards, Direction::Backwards] {
                for count in [0, 1, 2, 3, n, n + 10] {
                    let got = store
                        .read_stream(s, Revision(from), direction, count)
                        .unwrap_or_else(|e| panic!("read_stream {s} {from} {direction:?}: {e}"));
                    let want = model_read_stream(model, s, from, direction, count);
                    assert_events(&got, &want);
                }
            }
        }
    }

    // read_all, with and without filters.
    for filter in filters() {
        for from in sample_positions(last) {
            for direction in [Direction::Forwards, Direction::Backwards] {
                for count in [0, 1, 3, 7, last, last + 5] {
                    let AllSlice {
                        events,
                        scanned_to,
                        end_of_log,
                    } = store
                        .read_all(Position(from), direction, count, &filter)
                        .unwrap();
                    let (want, want_scanned, want_end) =
                        model_read_all(model, from, direction, count, &filter);
                    let ctx =
                        format!("read_all from {from} {direction:?} count {count} {filter:?}");
                    assert_events(&events, &want);
                    assert_eq!(scanned_to, Position(want_scanned), "{ctx}: scanned_to");
                    assert_eq!(end_of_log, want_end, "{ctx}: end_of_log");
                }
            }
        }
    }

    // read_by_type, both directions.
    for t in TYPES.iter().copied().chain(["NoSuchType"]) {
        for from in sample_positions(last) {
            for direction in [Direction::Forwards, Direction::Backwards] {
                for count in [0, 1, 4, last + 1] {
                    let got = store
                        .read_by_type(t, Position(from), direction, count)
                        .unwrap();
                    let want = model_read_by_type(model, t, from, direction, count);
                    assert_events(&got, &want);
                }
            }
        }
    }
}

fn read_everything(store: &Store) -> Vec<RecordedEvent> {
    let slice = store
        .read_all(
            Position::START,
            Direction::Forwards,
            10_000,
            &Filter::default(),
        )
        .unwrap();
    assert!(slice.end_of_log);
    slice.events
}

#[test]
fn every_read_path_round_trips_in_one_segment() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let mut model = populate(&store, 1, 25);
    assert_eq!(store.stats().segments, 1);
    learn_assigned_ids(&store, &mut model);
    verify(&store, &model);
    let before = read_everything(&store);
    store.close().unwrap();

    let store = Store::open(dir.path(), Config::default()).unwrap();
    verify(&store, &model);
    assert_eq!(
        read_everything(&store),
        before,
        "same events, timestamps included"
    );
}

#[test]
fn every_read_path_round_trips_across_segments_and_reopen() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), small_config()).unwrap();
    let mut model = populate(&store, 2, 40);
    let segments = store.stats().segments;
    assert!(
        segments >= 4,
        "only {segments} segments: reads do not cross boundaries"
    );
    learn_assigned_ids(&store, &mut model);
    verify(&store, &model);
    let before = read_everything(&store);
    store.close().unwrap();

    let store = Store::open(dir.path(), small_config()).unwrap();
    assert_eq!(store.stats().segments, segments);
    verify(&store, &model);
    assert_eq!(
        read_everything(&store),
        before,
        "same events, timestamps included"
    );

    // Appending after the reopen continues the log, and everything still reads back.
    let next = model.len() as u64 + 1;
    let r = store
        .append(
            "order-1",
            ExpectedRevision::Any,
            vec![ev(999_999, "Created")],
        )
        .unwrap();
    assert_eq!(r.first_position, Position(next));
    let revision = model.iter().filter(|e| e.stream == "order-1").count() as u64;
    model.push(Expected {
        stream: "order-1".into(),
        revision,
        position: next,
        data: ev(999_999, "Created"),
    });
    verify(&store, &model);
}

fn five_event_store() -> (tempfile::TempDir, Store) {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    store
        .append(
            "s",
            ExpectedRevision::NoStream,
            (0..5).map(|n| ev(n, "T")).collect(),
        )
        .unwrap();
    (dir, store)
}

fn revisions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision.0).collect()
}

#[test]
fn read_stream_edges() {
    let (_dir, store) = five_event_store();
    let read = |from: u64, direction, count| {
        revisions(
            &store
                .read_stream("s", Revision(from), direction, count)
                .unwrap(),
        )
    };
    use Direction::{Backwards, Forwards};
    assert_eq!(
        read(0, Forwards, 100),
        [0, 1, 2, 3, 4],
        "count bigger than the stream"
    );
    assert_eq!(read(2, Forwards, 2), [2, 3], "from the middle");
    assert_eq!(read(2, Forwards, 100), [2, 3, 4]);
    assert_eq!(read(4, Forwards, 1), [4]);
    assert_eq!(
        read(5, Forwards, 10),
        Vec::<u64>::new(),
        "just past the end"
    );
    assert_eq!(
        read(1000, Forwards, 10),
        Vec::<u64>::new(),
        "far past the end"
    );
    assert_eq!(
        read(Revision::END.0, Backwards, 2),
        [4, 3],
        "backwards from END"
    );
    assert_eq!(read(Revision::END.0, Backwards, 100), [4, 3, 2, 1, 0]);
    assert_eq!(
        read(2, Backwards, 100),
        [2, 1, 0],
        "backwards from the middle"
    );
    assert_eq!(read(0, Backwards, 100), [0]);
    assert_eq!(
        read(1000, Backwards, 2),
        [4, 3],
        "backwards from past the end"
    );
    assert_eq!(read(0, Forwards, 0), Vec::<u64>::new(), "count 0");
    let events = store.read_stream("s", Revision(0), Forwards, 10).unwrap();
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e.position, Position(k as u64 + 1));
        assert_eq!(e.id, common::id(k as u64));
        assert_eq!(e.data(), format!("{{\"n\":{k}}}").as_bytes());
        assert_eq!(e.content_type, ContentType::Json);
        assert_eq!(e.stream(), "s");
        assert_eq!(e.event_type(), "T");
        assert!(e.metadata().is_empty());
    }
}

#[test]
fn read_stream_of_unknown_stream_is_stream_not_found_with_its_name() {
    let (_dir, store) = five_event_store();
    for direction in [Direction::Forwards, Direction::Backwards] {
        match store.read_stream("missing-7", Revision(0), direction, 10) {
            Err(Error::StreamNotFound { stream }) => assert_eq!(stream, "missing-7"),
            other => panic!("expected StreamNotFound, got {other:?}"),
        }
    }
    assert_eq!(store.stream_revision("missing-7").unwrap(), None);
    assert_eq!(store.stream_revision("s").unwrap(), Some(Revision(4)));
}

#[test]
fn read_event_edges() {
    let (_dir, store) = five_event_store();
    assert!(store.read_event(Position(0)).unwrap().is_none());
    let e = store.read_event(Position(3)).unwrap().unwrap();
    assert_eq!(
        (e.position, e.revision, e.id),
        (Position(3), Revision(2), common::id(2))
    );
    assert!(store.read_event(Position(5)).unwrap().is_some());
    assert!(store.read_event(Position(6)).unwrap().is_none());
    assert!(store.read_event(Position::END).unwrap().is_none());
}

#[test]
fn category_and_prefix_filters() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    for (n, s) in [
        "order",
        "order-1",
        "orders-1",
        "order-2-x",
        "customer-1",
        "ord",
    ]
    .iter()
    .enumerate()
    {
        store
            .append(*s, ExpectedRevision::NoStream, vec![ev(n as u64, "T")])
            .unwrap();
    }
    let streams = |filter: StreamFilter, direction| -> Vec<String> {
        let filter = Filter {
            stream: Some(filter),
            event_types: Vec::new(),
        };
        let from = match direction {
            Direction::Forwards => Position::START,
            Direction::Backwards => Position::END,
        };
        store
            .read_all(from, direction, 100, &filter)
            .unwrap()
            .events
            .iter()
            .map(|e| e.stream().to_string())
            .collect()
    };
    let category = |c: &str| StreamFilter::Category(c.into());
    let prefix = |c: &str| StreamFilter::Prefix(c.into());
    assert_eq!(
        streams(category("order"), Direction::Forwards),
        ["order", "order-1", "order-2-x"],
        "stream 'order' is in category 'order'; 'orders-1' is not"
    );
    assert_eq!(
        streams(category("order"), Direction::Backwards),
        ["order-2-x", "order-1", "order"]
    );
    assert_eq!(
        streams(category("orders"), Direction::Forwards),
        ["orders-1"]
    );
    assert_eq!(streams(category("ord"), Direction::Forwards), ["ord"]);
    assert_eq!(
        streams(prefix("order"), Direction::Forwards),
        ["order", "order-1", "orders-1", "order-2-x"]
    );
    assert_eq!(
        streams(prefix("ord"), Direction::Backwards),
        ["ord", "order-2-x", "orders-1", "order-1", "order"]
    );
    assert!(streams(prefix("zzz"), Direction::Forwards).is_empty());
}

#[test]
fn read_all_scanned_to_and_end_of_log() {
    let (_dir, store) = five_event_store();
    let all = Filter::default();
    let read = |from: u64, direction, count| {
        let s = store
            .read_all(Position(from), direction, count, &all)
            .unwrap();
        (
            s.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
            s.scanned_to.0,
            s.end_of_log,
        )
    };
    use Direction::{Backwards, Forwards};
    assert_eq!(read(0, Forwards, 2), (vec![1, 2], 2, false));
    assert_eq!(read(1, Forwards, 10), (vec![1, 2, 3, 4, 5], 5, true));
    assert_eq!(read(3, Forwards, 3), (vec![3, 4, 5], 5, true));
    assert_eq!(read(6, Forwards, 3), (vec![], 5, true), "from past the end");
    assert_eq!(read(Position::END.0, Backwards, 2), (vec![5, 4], 4, false));
    assert_eq!(read(3, Backwards, 10), (vec![3, 2, 1], 1, true));
    assert_eq!(read(100, Backwards, 1), (vec![5], 5, false));
    assert_eq!(read(2, Backwards, 2), (vec![2, 1], 1, true));

    // A filter that matches nothing still scans, and says how far.
    let none = Filter {
        stream: None,
        event_types: vec!["Nope".into()],
    };
    let s = store.read_all(Position(2), Forwards, 10, &none).unwrap();
    assert!(s.events.is_empty());
    assert_eq!((s.scanned_to, s.end_of_log), (Position(5), true));
    let s = store.read_all(Position(4), Backwards, 10, &none).unwrap();
    assert!(s.events.is_empty());
    assert_eq!((s.scanned_to, s.end_of_log), (Position(1), true));
}

#[test]
fn read_all_pages_by_scanned_to_when_the_scan_limit_is_hit() {
    let dir = common::tempdir();
    let config = Config {
        read_scan_max: 5,
        ..small_config()
    };
    let store = Store::open(dir.path(), config).unwrap();
    let mut model = populate(&store, 3, 30);
    learn_assigned_ids(&store, &mut model);
    let last = model.len() as u64;
    for filter in filters() {
        for count in [1, 2, 5] {
            // Forwards: resume after scanned_to until the end of the log.
            let mut got: Vec<RecordedEvent> = Vec::new();
            let mut from = 0;
            let mut calls = 0;
            loop {
                let s = store
                    .read_all(Position(from), Direction::Forwards, count, &filter)
                    .unwrap();
                assert!(s.events.len() as u64 <= count);
                assert!(s.scanned_to.0 >= from.max(1) - 1);
                assert!(
                    s.scanned_to.0 - from.max(1) < 5.max(count),
                    "scanned past the limit"
                );
                if let Some(e) = s.events.last() {
                    assert!(e.position <= s.scanned_to);
                }
                got.extend(s.events);
                calls += 1;
                assert!(calls <= 2 * last + 2, "paging does not progress");
                if s.end_of_log {
                    assert_eq!(s.scanned_to, Position(last));
                    break;
                }
                from = s.scanned_to.0 + 1;
            }
            let (want, _, _) = model_read_all(&model, 0, Direction::Forwards, u64::MAX, &filter);
            assert_events(&got, &want);

            // Backwards: resume before scanned_to until the start of the log.
            let mut got: Vec<RecordedEvent> = Vec::new();
            let mut from = Position::END.0;
            loop {
                let s = store
                    .read_all(Position(from), Direction::Backwards, count, &filter)
                    .unwrap();
                assert!(s.events.len() as u64 <= count);
                if let Some(e) = s.events.last() {
                    assert!(e.position >= s.scanned_to);
                }
                got.extend(s.events);
                if s.end_of_log {
                    assert_eq!(s.scanned_to, Position(1));
                    break;
                }
                assert!(s.scanned_to.0 >= 2);
                from = s.scanned_to.0 - 1;
            }
            let (want, _, _) =
                model_read_all(&model, u64::MAX, Direction::Backwards, u64::MAX, &filter);
            assert_events(&got, &want);
        }
    }
}

#[test]
fn read_by_type_both_directions() {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), common::config()).unwrap();
    let types = ["A", "B", "A", "C", "A", "B"];
    for (n, t) in types.iter().enumerate() {
        store
            .append(
                format!("s-{}", n % 2),
                ExpectedRevision::Any,
                vec![ev(n as u64, t)],
            )
            .unwrap();
    }
    let positions = |t: &str, from: u64, direction, count| -> Vec<u64> {
        store
            .read_by_type(t, Position(from), direction, count)
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e.event_type(), t);
                assert_eq!(e.id, common::id(e.position.0 - 1));
                e.position.0
            })
            .collect()
    };
    use Direction::{Backwards, Forwards};
    assert_eq!(positions("A", 0, Forwards, 10), [1, 3, 5]);
    assert_eq!(positions("A", 2, Forwards, 10), [3, 5]);
    assert_eq!(positions("A", 3, Forwards, 1), [3]);
    assert_eq!(positions("A", 6, Forwards, 10), Vec::<u64>::new());
    assert_eq!(positions("A", Position::END.0, Backwards, 10), [5, 3, 1]);
    assert_eq!(positions("A", 4, Backwards, 10), [3, 1]);
    assert_eq!(positions("A", 3, Backwards, 1), [3]);
    assert_eq!(positions("A", 0, Backwards, 10), Vec::<u64>::new());
    assert_eq!(positions("B", 0, Forwards, 10), [2, 6]);
    assert_eq!(positions("C", Position::END.0, Backwards, 10), [4]);
    assert_eq!(positions("D", 0, Forwards, 10), Vec::<u64>::new());
}
