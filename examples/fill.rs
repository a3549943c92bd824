//! Builds a store for the open-time and memory benchmarks (BENCHMARKS.md): N events of B bytes
//! over S streams and 10 event types, appended through the engine in commits of 1,000 events
//! (one per stream), with `FsyncPolicy::Never` and default index checkpoints.
//!
//! ```text
//! cargo run --release --example fill -- DIR EVENTS STREAMS BYTES
//! ```

use statestore::{Config, EventData, ExpectedRevision, FsyncPolicy, Store, StreamAppend};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, events, streams, bytes] = args.as_slice() else {
        return Err("usage: fill DIR EVENTS STREAMS BYTES".into());
    };
    let (events, streams, bytes): (u64, u64, usize) =
        (events.parse()?, streams.parse()?, bytes.parse()?);
    let config = Config {
        fsync: FsyncPolicy::Never,
        ..Config::default()
    };
    let store = Store::open(dir, config)?;
    let start = store.last_position().0;
    let started = Instant::now();
    let data = vec![b'x'; bytes];
    let per_commit = 1_000u64.min(streams);
    let mut n = start;
    while n < events {
        let k = per_commit.min(events - n);
        let parts = (0..k)
            .map(|i| {
                let e = n + i;
                StreamAppend::new(
                    format!("stream-{}", e % streams),
                    ExpectedRevision::Any,
                    vec![EventData::binary(format!("Type{}", e % 10), data.clone())],
                )
            })
            .collect();
        store.append_multi(parts)?;
        n += k;
        if n % 1_000_000 < k {
            eprintln!("{n} events, {:.0?}", started.elapsed());
        }
    }
    store.close()?;
    eprintln!("{} events appended in {:.1?}", n - start, started.elapsed());
    Ok(())
}
