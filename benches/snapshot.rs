//! Reading an aggregate from its latest snapshot against reading it whole.
//!
//! One stream of 10,000 events of 100 bytes (data), with a 1 KiB snapshot at revision 9,990:
//! - `aggregate_read/whole`: `read_stream` from revision 0, forwards, all 10,000 events (one
//!   call: the default `read_count_max` is 10,000);
//! - `aggregate_read/from_snapshot`: `read_stream_from_snapshot`, which loads the snapshot
//!   (one `pread` and a CRC check) and reads the 9 events after it.
//!
//! Run with `cargo bench --bench snapshot`; the medians are in the report and in
//! `target/criterion/aggregate_read/*/new/estimates.json`. The store is built with
//! `FsyncPolicy::Never` (the reads do not sync) in a `tempfile` directory under `$TMPDIR`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use statestore::{Config, Direction, EventData, ExpectedRevision, FsyncPolicy, Revision, Store};

const EVENTS: u64 = 10_000;
const EVENT_BYTES: usize = 100;
const SNAPSHOT_REVISION: u64 = 9_990;
const SNAPSHOT_BYTES: usize = 1024;
const STREAM: &str = "order-1";

fn build(dir: &std::path::Path) -> Store {
    let store = Store::open(
        dir,
        Config {
            fsync: FsyncPolicy::Never,
            ..Config::default()
        },
    )
    .expect("open the store");
    let data = Bytes::from(vec![b'x'; EVENT_BYTES]);
    for batch in 0..EVENTS / 1000 {
        let events = (0..1000)
            .map(|_| EventData::binary("LineAdded", data.clone()))
            .collect();
        let expected = match batch {
            0 => ExpectedRevision::NoStream,
            b => ExpectedRevision::Exact(Revision(b * 1000 - 1)),
        };
        store.append(STREAM, expected, events).expect("append");
    }
    store
        .save_snapshot(
            STREAM,
            Revision(SNAPSHOT_REVISION),
            "order.v1",
            Bytes::from(vec![b's'; SNAPSHOT_BYTES]),
        )
        .expect("save the snapshot");
    store
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = build(dir.path());
    let read_max = store.config().read_count_max;

    // Both reads give the same aggregate: check once before timing.
    let whole = store
        .read_stream(STREAM, Revision(0), Direction::Forwards, EVENTS)
        .expect("whole read");
    assert_eq!(whole.len() as u64, EVENTS);
    let (snapshot, tail) = store
        .read_stream_from_snapshot(STREAM, read_max)
        .expect("read from snapshot");
    assert_eq!(
        snapshot.map(|s| s.revision),
        Some(Revision(SNAPSHOT_REVISION))
    );
    assert_eq!(tail.len() as u64, EVENTS - SNAPSHOT_REVISION - 1);

    let mut g = c.benchmark_group("aggregate_read");
    g.throughput(Throughput::Elements(1));
    g.bench_function("whole", |b| {
        b.iter(|| {
            // In pages of read_count_max, should that be below the stream's length.
            let mut from = 0;
            let mut n = 0;
            while from < EVENTS {
                let page = store
                    .read_stream(STREAM, Revision(from), Direction::Forwards, read_max)
                    .expect("read");
                if page.is_empty() {
                    break;
                }
                n += page.len() as u64;
                from += page.len() as u64;
                black_box(&page);
            }
            assert_eq!(n, EVENTS);
        });
    });
    g.bench_function("from_snapshot", |b| {
        b.iter(|| {
            let (snapshot, events) = store
                .read_stream_from_snapshot(STREAM, read_max)
                .expect("read");
            black_box((&snapshot, &events));
        });
    });
    g.finish();
    drop(store);
    c.final_summary();
}
