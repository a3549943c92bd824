//! Every configured limit: an append or read at the limit is accepted, one past it is rejected
//! with `LimitExceeded { what, limit, actual }` (or `InvalidArgument` for malformed input) and
//! writes nothing. Unusable configurations are refused by `Store::open` with `InvalidConfig`.

mod common;

use common::id;
use statestore::{
    Config, ContentType, Direction, Error, EventData, ExpectedRevision, Filter, FsyncPolicy, Limit,
    Position, Revision, Store, StreamAppend,
};

fn open(config: Config) -> (tempfile::TempDir, Store) {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), config).unwrap();
    (dir, store)
}

fn base() -> Config {
    Config {
        segment_bytes: 1 << 16,
        append_bytes_max: 1 << 15,
        ..Config::default()
    }
}

fn event(n: u64, event_type: &str, data_len: usize, metadata_len: usize) -> EventData {
    EventData {
        id: Some(id(n)),
        event_type: event_type.to_string(),
        data: vec![b'd'; data_len].into(),
        metadata: vec![b'm'; metadata_len].into(),
        content_type: ContentType::Binary,
    }
}

fn small(n: u64) -> EventData {
    event(n, "T", 1, 0)
}

#[track_caller]
fn assert_limit<T: std::fmt::Debug>(r: Result<T, Error>, what: Limit, limit: u64, actual: u64) {
    match r {
        Err(Error::LimitExceeded {
            what: w,
            limit: l,
            actual: a,
        }) => {
            assert_eq!(w, what, "what");
            assert_eq!(l, limit, "limit");
            assert_eq!(a, actual, "actual");
        }
        other => panic!("expected LimitExceeded {{ {what}, {limit}, {actual} }}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::InvalidArgument(_))),
        "expected InvalidArgument, got {r:?}"
    );
}

/// Nothing was written since the log had `last` events.
#[track_caller]
fn assert_unchanged(store: &Store, last: u64) {
    assert_eq!(store.last_position(), Position(last));
    let all = store
        .read_all(
            Position::START,
            Direction::Forwards,
            1000,
            &Filter::default(),
        )
        .unwrap();
    assert_eq!(all.events.len() as u64, last);
}

#[test]
fn event_bytes_max_counts_data_plus_metadata() {
    let (_dir, store) = open(Config {
        event_bytes_max: 100,
        ..base()
    });
    let what = Limit::EventBytes;
    store
        .append("s", ExpectedRevision::Any, vec![event(1, "T", 60, 40)])
        .unwrap();
    store
        .append("s", ExpectedRevision::Any, vec![event(2, "T", 100, 0)])
        .unwrap();
    store
        .append("s", ExpectedRevision::Any, vec![event(3, "T", 0, 100)])
        .unwrap();
    let over = |data, meta| {
        store.append(
            "s",
            ExpectedRevision::Any,
            vec![small(10), event(11, "T", data, meta)],
        )
    };
    assert_limit(over(61, 40), what, 100, 101);
    assert_limit(over(101, 0), what, 100, 101);
    assert_limit(over(0, 101), what, 100, 101);
    assert_limit(over(1000, 1000), what, 100, 2000);
    assert_unchanged(&store, 3);
    let read = store
        .read_stream("s", Revision(0), Direction::Forwards, 10)
        .unwrap();
    assert_eq!(
        read.iter()
            .map(|e| (e.data().len(), e.metadata().len()))
            .collect::<Vec<_>>(),
        [(60, 40), (100, 0), (0, 100)]
    );
}

#[test]
fn append_events_max_counts_all_streams_of_an_append() {
    let (_dir, store) = open(Config {
        append_events_max: 3,
        ..base()
    });
    let what = Limit::AppendEvents;
    store
        .append("s", ExpectedRevision::Any, (0..3).map(small).collect())
        .unwrap();
    store
        .append_multi(vec![
            StreamAppend::new("a", ExpectedRevision::Any, vec![small(3)]),
            StreamAppend::new("b", ExpectedRevision::Any, vec![small(4), small(5)]),
        ])
        .unwrap();
    assert_limit(
        store.append("s", ExpectedRevision::Any, (10..14).map(small).collect()),
        what,
        3,
        4,
    );
    assert_limit(
        store.append_multi(vec![
            StreamAppend::new("a", ExpectedRevision::Any, vec![small(20), small(21)]),
            StreamAppend::new("b", ExpectedRevision::Any, vec![small(22), small(23)]),
        ]),
        what,
        3,
        4,
    );
    assert_unchanged(&store, 6);
}

/// Encoded size of one frame: 8-byte prefix, 72-byte event header, names, data, metadata.
fn frame_bytes(stream: &str, e: &EventData) -> u64 {
    (80 + stream.len() + e.event_type.len() + e.data.len() + e.metadata.len()) as u64
}

#[test]
fn append_bytes_max_counts_encoded_frames_and_an_append_at_the_limit_fills_a_segment() {
    // A segment holds its header plus exactly one largest append.
    let config = Config {
        segment_bytes: 32 + 1000,
        append_bytes_max: 1000,
        ..base()
    };
    let dir = common::tempdir();
    let store = Store::open(dir.path(), config.clone()).unwrap();
    let what = Limit::AppendBytes;
    let exact = || vec![event(1, "T", 400, 10), event(2, "T", 400, 26)];
    let total: u64 = exact().iter().map(|e| frame_bytes("s", e)).sum();
    assert_eq!(total, 1000);
    store
        .append("s", ExpectedRevision::NoStream, exact())
        .unwrap();
    assert_limit(
        store.append(
            "s",
            ExpectedRevision::Any,
            vec![event(3, "T", 400, 10), event(4, "T", 400, 27)],
        ),
        what,
        1000,
        1001,
    );
    // Across streams, the bytes of every part count.
    let a = event(5, "T", 400, 10);
    let b = event(6, "T", 400, 26);
    assert_eq!(frame_bytes("a", &a) + frame_bytes("b", &b), 1000);
    store
        .append_multi(vec![
            StreamAppend::new("a", ExpectedRevision::Any, vec![a]),
            StreamAppend::new("b", ExpectedRevision::Any, vec![b]),
        ])
        .unwrap();
    assert_limit(
        store.append_multi(vec![
            StreamAppend::new("a", ExpectedRevision::Any, vec![event(7, "T", 400, 10)]),
            StreamAppend::new("bb", ExpectedRevision::Any, vec![event(8, "T", 400, 26)]),
        ]),
        what,
        1000,
        1001,
    );
    assert_unchanged(&store, 4);
    // A third full append, after two that each filled a segment.
    store
        .append(
            "s",
            ExpectedRevision::Exact(Revision(1)),
            vec![event(9, "T", 400, 10), event(10, "T", 400, 26)],
        )
        .unwrap();
    assert_eq!(store.stats().segments, 3);
    let before = store
        .read_all(
            Position::START,
            Direction::Forwards,
            100,
            &Filter::default(),
        )
        .unwrap();
    assert_eq!(before.events.len(), 6);
    store.close().unwrap();
    let store = Store::open(dir.path(), config).unwrap();
    let after = store
        .read_all(
            Position::START,
            Direction::Forwards,
            100,
            &Filter::default(),
        )
        .unwrap();
    assert_eq!(after, before);
}

#[test]
fn stream_name_bytes_max_counts_bytes_not_characters() {
    let (_dir, store) = open(Config {
        stream_name_bytes_max: 10,
        ..base()
    });
    let what = Limit::StreamNameBytes;
    store
        .append("0123456789", ExpectedRevision::Any, vec![small(1)])
        .unwrap();
    // Five two-byte characters: 10 bytes.
    store
        .append("ééééé", ExpectedRevision::Any, vec![small(2)])
        .unwrap();
    assert_limit(
        store.append("0123456789a", ExpectedRevision::Any, vec![small(3)]),
        what,
        10,
        11,
    );
    assert_limit(
        store.append("éééééa", ExpectedRevision::Any, vec![small(4)]),
        what,
        10,
        11,
    );
    assert_limit(
        store.append_multi(vec![
            StreamAppend::new("ok", ExpectedRevision::Any, vec![small(5)]),
            StreamAppend::new("x".repeat(30), ExpectedRevision::Any, vec![small(6)]),
        ]),
        what,
        10,
        30,
    );
    assert_unchanged(&store, 2);
    assert_eq!(store.stream_revision("ééééé").unwrap(), Some(Revision(0)));
}

#[test]
fn event_type_bytes_max() {
    let (_dir, store) = open(Config {
        event_type_bytes_max: 8,
        ..base()
    });
    let what = Limit::EventTypeBytes;
    store
        .append("s", ExpectedRevision::Any, vec![event(1, "12345678", 1, 0)])
        .unwrap();
    store
        .append("s", ExpectedRevision::Any, vec![event(2, "€€", 1, 0)])
        .unwrap();
    assert_limit(
        store.append(
            "s",
            ExpectedRevision::Any,
            vec![small(3), event(4, "123456789", 1, 0)],
        ),
        what,
        8,
        9,
    );
    assert_limit(
        store.append("s", ExpectedRevision::Any, vec![event(5, "€€€", 1, 0)]),
        what,
        8,
        9,
    );
    assert_unchanged(&store, 2);
    let types: Vec<String> = store
        .read_stream("s", Revision(0), Direction::Forwards, 10)
        .unwrap()
        .iter()
        .map(|e| e.event_type().to_string())
        .collect();
    assert_eq!(types, ["12345678", "€€"]);
}

#[test]
fn append_streams_max() {
    let (_dir, store) = open(Config {
        append_streams_max: 2,
        ..base()
    });
    let part = |s: &str, n| StreamAppend::new(s, ExpectedRevision::Any, vec![small(n)]);
    store
        .append_multi(vec![part("a", 1), part("b", 2)])
        .unwrap();
    assert_limit(
        store.append_multi(vec![part("a", 3), part("b", 4), part("c", 5)]),
        Limit::AppendStreams,
        2,
        3,
    );
    assert_unchanged(&store, 2);
    assert_eq!(store.stream_revision("c").unwrap(), None);
}

#[test]
fn read_count_max_applies_to_every_read() {
    let (_dir, store) = open(Config {
        read_count_max: 5,
        ..base()
    });
    store
        .append("s", ExpectedRevision::Any, (0..8).map(small).collect())
        .unwrap();
    let what = Limit::ReadCount;
    let all = Filter::default();
    for direction in [Direction::Forwards, Direction::Backwards] {
        let from_rev = match direction {
            Direction::Forwards => Revision(0),
            Direction::Backwards => Revision::END,
        };
        let from_pos = match direction {
            Direction::Forwards => Position::START,
            Direction::Backwards => Position::END,
        };
        assert_eq!(
            store
                .read_stream("s", from_rev, direction, 5)
                .unwrap()
                .len(),
            5
        );
        assert_eq!(
            store
                .read_all(from_pos, direction, 5, &all)
                .unwrap()
                .events
                .len(),
            5
        );
        assert_eq!(
            store
                .read_by_type("T", from_pos, direction, 5)
                .unwrap()
                .len(),
            5
        );
        assert_limit(store.read_stream("s", from_rev, direction, 6), what, 5, 6);
        assert_limit(store.read_all(from_pos, direction, 6, &all), what, 5, 6);
        assert_limit(store.read_by_type("T", from_pos, direction, 6), what, 5, 6);
        assert_limit(
            store.read_all(from_pos, direction, u64::MAX, &all),
            what,
            5,
            u64::MAX,
        );
    }
}

#[test]
fn empty_names_are_invalid() {
    let (_dir, store) = open(base());
    assert_invalid(store.append("", ExpectedRevision::Any, vec![small(1)]));
    assert_invalid(store.append("s", ExpectedRevision::Any, vec![event(2, "", 1, 0)]));
    assert_invalid(store.append_multi(vec![
        StreamAppend::new("ok", ExpectedRevision::Any, vec![small(3)]),
        StreamAppend::new("", ExpectedRevision::Any, vec![small(4)]),
    ]));
    assert_unchanged(&store, 0);
}

#[test]
fn control_characters_in_names_are_invalid() {
    let (_dir, store) = open(base());
    for bad in [
        "a\nb",
        "\0",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}",
        "\r",
        "end\u{1b}",
    ] {
        assert_invalid(store.append(bad, ExpectedRevision::Any, vec![small(1)]));
        assert_invalid(store.append("s", ExpectedRevision::Any, vec![event(2, bad, 1, 0)]));
    }
    // Spaces, punctuation and non-ASCII letters are fine.
    store
        .append(
            "a b/c:d-é✓",
            ExpectedRevision::Any,
            vec![event(3, "Type é ✓", 1, 0)],
        )
        .unwrap();
    assert_unchanged(&store, 1);
    let e = store.read_event(Position(1)).unwrap().unwrap();
    assert_eq!((e.stream(), e.event_type()), ("a b/c:d-é✓", "Type é ✓"));
}

#[test]
fn an_append_without_events_is_invalid() {
    let (_dir, store) = open(base());
    assert_invalid(store.append("s", ExpectedRevision::Any, vec![]));
    assert_invalid(store.append("s", ExpectedRevision::NoStream, vec![]));
    assert_invalid(store.append_multi(vec![]));
    assert_invalid(store.append_multi(vec![
        StreamAppend::new("a", ExpectedRevision::Any, vec![small(1)]),
        StreamAppend::new("b", ExpectedRevision::Any, vec![]),
    ]));
    assert_unchanged(&store, 0);
    assert_eq!(store.stream_revision("a").unwrap(), None);
}

#[test]
fn unusable_configurations_are_refused_at_open() {
    let bad: Vec<(&str, Config)> = vec![
        (
            "segment smaller than header + largest append",
            Config {
                segment_bytes: 32 + 1000 - 1,
                append_bytes_max: 1000,
                ..base()
            },
        ),
        (
            "default append_bytes_max with tiny segments",
            Config {
                segment_bytes: 4096,
                ..Config::default()
            },
        ),
        (
            "segment over 4 GiB",
            Config {
                segment_bytes: u32::MAX as u64 + 1,
                ..base()
            },
        ),
        (
            "append_bytes_max over the frame maximum",
            Config {
                segment_bytes: u32::MAX as u64,
                append_bytes_max: (1 << 30) + 1,
                ..base()
            },
        ),
        (
            "stream_name_bytes_max 0",
            Config {
                stream_name_bytes_max: 0,
                ..base()
            },
        ),
        (
            "stream_name_bytes_max over u16",
            Config {
                stream_name_bytes_max: 65_536,
                ..base()
            },
        ),
        (
            "event_type_bytes_max 0",
            Config {
                event_type_bytes_max: 0,
                ..base()
            },
        ),
        (
            "event_type_bytes_max over u16",
            Config {
                event_type_bytes_max: 65_536,
                ..base()
            },
        ),
        (
            "event_bytes_max over u32",
            Config {
                event_bytes_max: u32::MAX as u64 + 1,
                ..base()
            },
        ),
        (
            "append_events_max 0",
            Config {
                append_events_max: 0,
                ..base()
            },
        ),
        (
            "append_events_max over u32",
            Config {
                append_events_max: u32::MAX as u64 + 1,
                ..base()
            },
        ),
        (
            "append_streams_max 0",
            Config {
                append_streams_max: 0,
                ..base()
            },
        ),
        (
            "read_count_max 0",
            Config {
                read_count_max: 0,
                ..base()
            },
        ),
        (
            "writer_queue_max 0",
            Config {
                writer_queue_max: 0,
                ..base()
            },
        ),
        (
            "fsync interval 0",
            Config {
                fsync: FsyncPolicy::IntervalMs(0),
                ..base()
            },
        ),
    ];
    let parent = common::tempdir();
    for (name, config) in bad {
        assert!(
            matches!(config.validate(), Err(Error::InvalidConfig(_))),
            "{name}: validate"
        );
        let dir = parent.path().join("store");
        match Store::open(&dir, config) {
            Err(Error::InvalidConfig(_)) => {}
            Err(e) => panic!("{name}: expected InvalidConfig, got {e}"),
            Ok(_) => panic!("{name}: opened"),
        }
        assert!(
            common::segment_files(parent.path()).is_empty() && !dir.join("LOCK").exists(),
            "{name}: a refused open must not create a store"
        );
    }
}

#[test]
fn configurations_at_the_limits_are_accepted() {
    let good: Vec<Config> = vec![
        Config {
            segment_bytes: 32 + 1000,
            append_bytes_max: 1000,
            ..base()
        },
        Config {
            stream_name_bytes_max: 65_535,
            event_type_bytes_max: 65_535,
            append_events_max: 1,
            append_streams_max: 1,
            read_count_max: 1,
            writer_queue_max: 1,
            event_bytes_max: 0,
            fsync: FsyncPolicy::IntervalMs(1),
            ..base()
        },
        Config {
            event_bytes_max: u32::MAX as u64,
            append_events_max: u32::MAX as u64,
            ..base()
        },
    ];
    for config in good {
        config.validate().unwrap();
        let (_dir, store) = open(config.clone());
        let r = store
            .append("s", ExpectedRevision::Any, vec![event(1, "T", 0, 0)])
            .unwrap();
        assert_eq!(r.first_position, Position(1));
        assert_eq!(
            store
                .read_stream("s", Revision(0), Direction::Forwards, 1)
                .unwrap()
                .len(),
            1
        );
        store.close().unwrap();
    }
}
