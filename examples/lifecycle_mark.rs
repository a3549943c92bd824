//! Gives a store built by `fill` some stream lifecycle for the compaction benchmark
//! (BENCHMARKS.md): every 10th stream gets max count 1, every 100th (+1) is soft-deleted and
//! every 100th (+2) is tombstoned. With `fill`'s 100 events per stream that hides about 12% of
//! the events.
//!
//! ```text
//! cargo run --release --example lifecycle_mark -- DIR STREAMS
//! ```

use statestore::{Config, ExpectedRevision, FsyncPolicy, Store, StreamMetadata};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, streams] = args.as_slice() else {
        return Err("usage: lifecycle_mark DIR STREAMS".into());
    };
    let streams: u64 = streams.parse()?;
    let config = Config {
        fsync: FsyncPolicy::Never,
        ..Config::default()
    };
    let store = Store::open(dir, config)?;
    for s in (0..streams).step_by(10) {
        let metadata = StreamMetadata {
            max_count: Some(1),
            ..StreamMetadata::default()
        };
        store.set_stream_metadata(&format!("stream-{s}"), ExpectedRevision::Any, metadata)?;
    }
    for s in (0..streams).step_by(100) {
        store.delete_stream(&format!("stream-{}", s + 1), ExpectedRevision::Any)?;
        store.tombstone_stream(&format!("stream-{}", s + 2), ExpectedRevision::Any)?;
    }
    store.close()?;
    Ok(())
}
