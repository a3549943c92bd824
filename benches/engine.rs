//! Engine benchmarks: durable appends (one thread, 64 threads, batches of 100), whole-log reads,
//! stream reads and by-type reads, with 100-byte and 1 KiB events. Behind `--features
//! sqlite-bench` the same workloads run against SQLite in the same criterion groups, so the
//! ratios come out of one run. See BENCHMARKS.md for how to run them and for the results.
//!
//! Bench ids are `<workload>/<engine>/<size>`, e.g. `append_1x1/statestore/100B`. Filters are
//! regular expressions matched anywhere in the id, so select `append_1x1` alone with
//! `-- 'append_1x1/'` (plain `append_1x1` also matches `append_1x100`).
//!
//! Data directories are `tempfile` directories under `$TMPDIR` (default `/tmp`). The read
//! datasets are built lazily, once per (engine, dataset), on first use, and shared between the
//! read workloads; everything is removed when the run ends.
//!
//! Environment knobs (all optional):
//! - `BENCH_STREAM_COUNT_100B` / `BENCH_STREAM_COUNT_1K`: streams of the stream/type read
//!   dataset (100 events each). Defaults: 100,000 at 100 B (10 M events), 20,000 at 1 KiB
//!   (2 M events, ~2.3 GB; 100,000 streams would be ~11 GB per engine).
//! - `BENCH_DIAG=1`: also run the append workloads against a statestore with
//!   `FsyncPolicy::Never` (`statestore_nofsync`), to separate the engine's own cost from the
//!   disk's. Not a durable configuration; not part of the comparison.
//! - `BENCH_SQLITE_PER_THREAD=1`: also run `append_64x1` against SQLite with a connection per
//!   thread (the default SQLite 64-thread case shares one mutex-guarded connection).

use std::any::Any;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use statestore::{
    Config, Direction, EventData, ExpectedRevision, Filter, FsyncPolicy, Position, Revision, Store,
    StreamAppend,
};
use tempfile::TempDir;

#[cfg(feature = "sqlite-bench")]
mod sqlite;

// ---------------------------------------------------------------------------------------------
// What the workloads need from an engine.

/// An event to append: its type and its data (metadata is empty, the id is assigned by the
/// engine / a fresh v4 UUID).
#[derive(Clone)]
pub struct Ev {
    pub ty: String,
    pub data: Bytes,
}

/// The operations the workloads run. Every method panics on an error: a failing benchmark is
/// a bug, not a data point.
pub trait Engine: Send + Sync + 'static {
    /// Appends `events` to `stream` in one durable commit if the stream's current revision is
    /// `expected` (`None`: the stream must not exist). Returns the new current revision.
    fn append(&self, stream: &str, expected: Option<u64>, events: &[Ev]) -> u64;
    /// Reads up to `max` events of the whole log after position `after`. Returns (events read,
    /// position to continue after, end of log reached).
    fn read_all_page(&self, after: u64, max: usize) -> (usize, u64, bool);
    /// Reads up to `max` events of `stream` from revision 0. Returns the number read.
    fn read_stream(&self, stream: &str, max: usize) -> usize;
    /// Reads up to `max` events of type `ty` from position `from`. Returns the number read.
    fn read_by_type(&self, ty: &str, from: u64, max: usize) -> usize;
}

/// A read dataset: `events` events, event `k` (0-based, in log order) in stream
/// `k % streams` (so the events of one stream are spread over the whole log, as when many
/// streams are written concurrently) and of a pseudo-random type among `types`.
#[derive(Clone, Copy, Debug)]
pub struct Dataset {
    pub events: u64,
    pub streams: u64,
    pub types: u64,
    pub size: usize,
}

impl Dataset {
    pub fn stream_name(s: u64) -> String {
        format!("stream-{s}")
    }

    pub fn type_name(t: u64) -> String {
        format!("Type{t}")
    }

    /// (stream index, type index) of event `k`.
    pub fn event(&self, k: u64) -> (u64, u64) {
        (k % self.streams, splitmix(k) % self.types)
    }
}

/// A JSON document of exactly `size` bytes.
pub fn payload(size: usize) -> Bytes {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(br#"{"p":""#);
    v.resize(size.saturating_sub(2), b'x');
    v.extend_from_slice(br#""}"#);
    v.truncate(size);
    Bytes::from(v)
}

pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic random source for picking streams and positions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0) % n
    }
}

pub fn temp_dir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("statestore-bench-{what}-"))
        .tempdir()
        .expect("create a temporary directory")
}

// ---------------------------------------------------------------------------------------------
// statestore.

struct StateStore {
    store: Store,
    _dir: TempDir,
}

impl StateStore {
    /// A fresh store with the production configuration (`FsyncPolicy::Always`).
    fn durable() -> StateStore {
        let dir = temp_dir("statestore");
        let store = Store::open(dir.path(), bench_config()).expect("open store");
        settle(&store);
        StateStore { store, _dir: dir }
    }

    /// A fresh store that never calls fdatasync (diagnostics only: shows what a commit costs
    /// apart from the disk). Not a durable configuration.
    fn no_fsync() -> StateStore {
        let dir = temp_dir("statestore-nofsync");
        let config = Config {
            fsync: FsyncPolicy::Never,
            ..bench_config()
        };
        let store = Store::open(dir.path(), config).expect("open store");
        settle(&store);
        StateStore { store, _dir: dir }
    }

    /// A store filled with `d`. Built without fsync (how it was written does not matter to
    /// readers), 1,000 events to 1,000 different streams per commit.
    fn build(d: Dataset) -> StateStore {
        let dir = temp_dir("statestore-read");
        let config = Config {
            fsync: FsyncPolicy::Never,
            ..bench_config()
        };
        let started = Instant::now();
        let store = Store::open(dir.path(), config.clone()).expect("open store");
        let data = payload(d.size);
        let types: Vec<String> = (0..d.types).map(Dataset::type_name).collect();
        const BATCH: u64 = 1_000;
        let mut k = 0;
        while k < d.events {
            let end = (k + BATCH).min(d.events);
            let parts: Vec<StreamAppend> = (k..end)
                .map(|k| {
                    let (s, t) = d.event(k);
                    let id = uuid::Uuid::from_u128(u128::from(splitmix(k)) << 64 | u128::from(k));
                    StreamAppend::new(
                        Dataset::stream_name(s),
                        ExpectedRevision::Any,
                        vec![EventData::json(types[t as usize].clone(), data.clone()).with_id(id)],
                    )
                })
                .collect();
            store.append_multi(parts).expect("append while building");
            k = end;
        }
        // Closed and reopened: the index checkpoints the bulk load set off are finished, so
        // the reads measure the store as it runs after a restart, not beside that writing.
        store.close().expect("close after building");
        let store = Store::open(dir.path(), config).expect("reopen after building");
        eprintln!(
            "built statestore dataset {d:?} in {:.1} s ({:?})",
            started.elapsed().as_secs_f64(),
            store.stats()
        );
        StateStore { store, _dir: dir }
    }
}

/// Waits for the background pre-allocation that `Store::open` starts (the next segment, written
/// with zeros and synced) to reach the disk, so that the append benchmarks measure the steady
/// state rather than commits competing with that 64 MiB write. Segment rolls during a run
/// still start a pre-allocation each, and that cost is measured. Relies on the name of the
/// pre-allocated file (`next.seg.prealloc`); gives up after 30 s.
fn settle(store: &Store) {
    let path = store.dir().join("next.seg.prealloc");
    let want = store.config().segment_bytes;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.len() >= want
        {
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = f.sync_all();
            }
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Engine for StateStore {
    fn append(&self, stream: &str, expected: Option<u64>, events: &[Ev]) -> u64 {
        let expected = expected.map_or(ExpectedRevision::NoStream, |r| {
            ExpectedRevision::Exact(Revision(r))
        });
        let events = events
            .iter()
            .map(|e| EventData::json(e.ty.clone(), e.data.clone()))
            .collect();
        self.store
            .append(stream, expected, events)
            .expect("append")
            .revision
            .0
    }

    fn read_all_page(&self, after: u64, max: usize) -> (usize, u64, bool) {
        let slice = self
            .store
            .read_all(
                Position(after + 1),
                Direction::Forwards,
                max as u64,
                &Filter::default(),
            )
            .expect("read_all");
        let bytes: usize = slice.events.iter().map(|e| e.data().len()).sum();
        black_box(bytes);
        (slice.events.len(), slice.scanned_to.0, slice.end_of_log)
    }

    fn read_stream(&self, stream: &str, max: usize) -> usize {
        let events = self
            .store
            .read_stream(stream, Revision(0), Direction::Forwards, max as u64)
            .expect("read_stream");
        black_box(events.iter().map(|e| e.data().len()).sum::<usize>());
        events.len()
    }

    fn read_by_type(&self, ty: &str, from: u64, max: usize) -> usize {
        let events = self
            .store
            .read_by_type(ty, Position(from), Direction::Forwards, max as u64)
            .expect("read_by_type");
        black_box(events.iter().map(|e| e.data().len()).sum::<usize>());
        events.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared read datasets, built on first use and dropped (directories removed) at the end.

type Registry = Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>;

static PREPARED: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();

fn prepared<E: Engine>(key: String, build: impl FnOnce() -> E) -> Arc<E> {
    let registry = PREPARED.get_or_init(Default::default);
    let mut map = registry.lock().unwrap();
    let any = map
        .entry(key)
        .or_insert_with(|| Arc::new(build()) as Arc<dyn Any + Send + Sync>)
        .clone();
    any.downcast::<E>()
        .expect("dataset of the right engine type")
}

fn drop_prepared() {
    if let Some(registry) = PREPARED.get() {
        registry.lock().unwrap().clear();
    }
}

/// The production configuration; `BENCH_CHECKPOINT_EVENTS` overrides the index checkpoint
/// interval (0 turns checkpoints off, for the with/without comparison in BENCHMARKS.md).
fn bench_config() -> Config {
    Config {
        checkpoint_events: env_u64(
            "BENCH_CHECKPOINT_EVENTS",
            Config::default().checkpoint_events,
        ),
        ..Config::default()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The whole-log dataset: 1 M events of 100 B, 200 k of 1 KiB; 10 k streams, 50 types.
fn read_all_dataset(size: usize) -> Dataset {
    Dataset {
        events: if size <= 100 { 1_000_000 } else { 200_000 },
        streams: 10_000,
        types: 50,
        size,
    }
}

/// The stream / by-type dataset: streams of 100 events each, 50 types.
fn stream_dataset(size: usize) -> Dataset {
    let streams = if size <= 100 {
        env_u64("BENCH_STREAM_COUNT_100B", 100_000)
    } else {
        env_u64("BENCH_STREAM_COUNT_1K", 20_000)
    };
    Dataset {
        events: streams * 100,
        streams,
        types: 50,
        size,
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads. Each takes a way to get the engine, so a bench only builds what it runs.

const SIZES: [(usize, &str); 2] = [(100, "100B"), (1024, "1KiB")];

fn ev(size: usize) -> Ev {
    Ev {
        ty: "BenchEvent".into(),
        data: payload(size),
    }
}

/// One thread, one event per durable commit, to one stream with an exact expected revision.
fn bench_append_1x1<E: Engine>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    engine: &str,
    size: (usize, &str),
    open: impl Fn() -> E,
) {
    let mut state: Option<(E, Option<u64>)> = None;
    let events = [ev(size.0)];
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new(engine, size.1), |b| {
        let (e, rev) = state.get_or_insert_with(|| (open(), None));
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                *rev = Some(e.append("one-writer", *rev, &events));
            }
            start.elapsed()
        });
    });
}

/// One thread, batches of 100 events per durable commit.
fn bench_append_1x100<E: Engine>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    engine: &str,
    size: (usize, &str),
    open: impl Fn() -> E,
) {
    let mut state: Option<(E, Option<u64>)> = None;
    let events: Vec<Ev> = (0..100).map(|_| ev(size.0)).collect();
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new(engine, size.1), |b| {
        let (e, rev) = state.get_or_insert_with(|| (open(), None));
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                *rev = Some(e.append("batch-writer", *rev, &events));
            }
            start.elapsed()
        });
    });
}

const THREADS: usize = 64;

/// 64 threads, each appending one event per durable commit to its own stream. One iteration is
/// one append by each thread (64 events); the clock runs from the moment all threads are ready
/// until the last one is done.
fn bench_append_64x1<E: Engine>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    engine: &str,
    size: (usize, &str),
    open: impl Fn() -> E,
) {
    let mut state: Option<(E, Vec<Option<u64>>)> = None;
    let event = ev(size.0);
    g.throughput(Throughput::Elements(THREADS as u64));
    g.bench_function(BenchmarkId::new(engine, size.1), |b| {
        let (e, revs) = state.get_or_insert_with(|| (open(), vec![None; THREADS]));
        let e = &*e;
        b.iter_custom(|iters| {
            let barrier = Barrier::new(THREADS + 1);
            std::thread::scope(|scope| {
                for (t, rev) in revs.iter_mut().enumerate() {
                    let barrier = &barrier;
                    let events = std::slice::from_ref(&event);
                    scope.spawn(move || {
                        let stream = format!("writer-{t}");
                        barrier.wait();
                        for _ in 0..iters {
                            *rev = Some(e.append(&stream, *rev, events));
                        }
                    });
                }
                barrier.wait();
                let start = Instant::now();
                // Leaving the scope joins every thread.
                start
            })
            .elapsed()
        });
    });
}

/// Reads the whole log forwards in pages of 10,000. One iteration is the whole log.
fn bench_read_all<E: Engine>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    engine: &str,
    d: Dataset,
    size_label: &str,
    get: impl Fn() -> Arc<E>,
) {
    g.throughput(Throughput::Elements(d.events));
    g.bench_function(BenchmarkId::new(engine, size_label), |b| {
        let e = get();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut after = 0;
                let mut total = 0;
                loop {
                    let (n, last, end) = e.read_all_page(after, 10_000);
                    total += n;
                    after = last;
                    if end || n == 0 {
                        break;
                    }
                }
                assert_eq!(total as u64, d.events, "read the whole log");
            }
            start.elapsed()
        });
    });
}

/// Per-operation latencies gathered beside criterion's per-iteration means, printed as
/// percentiles after the bench.
/// Operations of the warm-up (the first second after the first call) are not recorded.
#[derive(Default)]
struct Latencies {
    samples: Vec<u32>,
    first_call: Option<Instant>,
}

impl Latencies {
    /// Whether the operations of this call of the bench routine are to be recorded.
    fn recording(&mut self) -> bool {
        let first = *self.first_call.get_or_insert_with(Instant::now);
        first.elapsed() > Duration::from_millis(1_100)
    }

    fn report(&mut self, what: &str) {
        let s = &mut self.samples;
        if s.is_empty() {
            return;
        }
        s.sort_unstable();
        let q = |p: f64| {
            let i = ((s.len() - 1) as f64 * p).round() as usize;
            f64::from(s[i]) / 1000.0
        };
        eprintln!(
            "{what}: per-operation latency over {} operations after warm-up: p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs",
            s.len(),
            q(0.5),
            q(0.9),
            q(0.99)
        );
        *self = Latencies::default();
    }
}

/// Reads the 100 events of a random stream.
fn bench_read_stream<E: Engine>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    engine: &str,
    d: Dataset,
    size_label: &str,
    get: impl Fn() -> Arc<E>,
) {
    let names: Vec<String> = (0..d.streams).map(Dataset::stream_name).collect();
    let mut rng = Rng(7);
    let mut lat = Latencies::default();
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new(engine, size_label), |b| {
        let e = get();
        let record = lat.recording();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let stream = &names[rng.below(d.streams) as usize];
                let start = Instant::now();
                let n = e.read_stream(stream, 100);
                let took = start.elapsed();
                total += took;
                if record {
                    lat.samples
                        .push(took.as_nanos().min(u128::from(u32::MAX)) as u32);
                }
                assert_eq!(n, 100);
            }
            total
        });
    });
    lat.report(&format!("read_stream_100/{engine}/{size_label}"));
}

/// Reads a page of 1,000 events of a random type (one of 50) from a random position.
fn bench_read_by_type<E: Engine>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    engine: &str,
    d: Dataset,
    size_label: &str,
    get: impl Fn() -> Arc<E>,
) {
    let names: Vec<String> = (0..d.types).map(Dataset::type_name).collect();
    let mut rng = Rng(11);
    // Start early enough that a full page of 1,000 remains (each type has ~events/50).
    let span = d.events - 1_000 * d.types * 2;
    let mut lat = Latencies::default();
    g.throughput(Throughput::Elements(1_000));
    g.bench_function(BenchmarkId::new(engine, size_label), |b| {
        let e = get();
        let record = lat.recording();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ty = &names[rng.below(d.types) as usize];
                let from = 1 + rng.below(span);
                let start = Instant::now();
                let n = e.read_by_type(ty, from, 1_000);
                let took = start.elapsed();
                total += took;
                if record {
                    lat.samples
                        .push(took.as_nanos().min(u128::from(u32::MAX)) as u32);
                }
                assert_eq!(n, 1_000);
            }
            total
        });
    });
    lat.report(&format!("read_by_type/{engine}/{size_label}"));
}

// ---------------------------------------------------------------------------------------------
// Groups.

fn append_groups(c: &mut Criterion) {
    let diag = std::env::var("BENCH_DIAG").is_ok_and(|v| v == "1");
    {
        let mut g = c.benchmark_group("append_1x1");
        g.sampling_mode(SamplingMode::Flat);
        for size in SIZES {
            bench_append_1x1(&mut g, "statestore", size, StateStore::durable);
            if diag {
                bench_append_1x1(&mut g, "statestore_nofsync", size, StateStore::no_fsync);
            }
            #[cfg(feature = "sqlite-bench")]
            bench_append_1x1(&mut g, "sqlite", size, sqlite::Sqlite::durable);
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("append_64x1");
        g.sampling_mode(SamplingMode::Flat);
        for size in SIZES {
            bench_append_64x1(&mut g, "statestore", size, StateStore::durable);
            if diag {
                bench_append_64x1(&mut g, "statestore_nofsync", size, StateStore::no_fsync);
            }
            #[cfg(feature = "sqlite-bench")]
            {
                bench_append_64x1(&mut g, "sqlite", size, sqlite::Sqlite::durable);
                if std::env::var("BENCH_SQLITE_PER_THREAD").is_ok_and(|v| v == "1") {
                    bench_append_64x1(
                        &mut g,
                        "sqlite_conn_per_thread",
                        size,
                        sqlite::SqlitePerThread::durable,
                    );
                }
            }
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("append_1x100");
        g.sampling_mode(SamplingMode::Flat);
        for size in SIZES {
            bench_append_1x100(&mut g, "statestore", size, StateStore::durable);
            if diag {
                bench_append_1x100(&mut g, "statestore_nofsync", size, StateStore::no_fsync);
            }
            #[cfg(feature = "sqlite-bench")]
            bench_append_1x100(&mut g, "sqlite", size, sqlite::Sqlite::durable);
        }
        g.finish();
    }
}

fn read_groups(c: &mut Criterion) {
    {
        let mut g = c.benchmark_group("read_all_forwards");
        g.sampling_mode(SamplingMode::Flat);
        for (size, label) in SIZES {
            let d = read_all_dataset(size);
            bench_read_all(&mut g, "statestore", d, label, || {
                prepared(format!("statestore/all/{size}"), || StateStore::build(d))
            });
            #[cfg(feature = "sqlite-bench")]
            bench_read_all(&mut g, "sqlite", d, label, || {
                prepared(format!("sqlite/all/{size}"), || sqlite::Sqlite::build(d))
            });
        }
        g.finish();
    }
    // The stream and by-type reads share one dataset per size and engine.
    {
        let mut g = c.benchmark_group("read_stream_100");
        g.sample_size(20);
        for (size, label) in SIZES {
            let d = stream_dataset(size);
            bench_read_stream(&mut g, "statestore", d, label, || {
                prepared(format!("statestore/streams/{size}"), || {
                    StateStore::build(d)
                })
            });
            #[cfg(feature = "sqlite-bench")]
            bench_read_stream(&mut g, "sqlite", d, label, || {
                prepared(format!("sqlite/streams/{size}"), || {
                    sqlite::Sqlite::build(d)
                })
            });
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("read_by_type");
        g.sample_size(20);
        for (size, label) in SIZES {
            let d = stream_dataset(size);
            bench_read_by_type(&mut g, "statestore", d, label, || {
                prepared(format!("statestore/streams/{size}"), || {
                    StateStore::build(d)
                })
            });
            #[cfg(feature = "sqlite-bench")]
            bench_read_by_type(&mut g, "sqlite", d, label, || {
                prepared(format!("sqlite/streams/{size}"), || {
                    sqlite::Sqlite::build(d)
                })
            });
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    append_groups(&mut c);
    read_groups(&mut c);
    drop_prepared();
    c.final_summary();
}
