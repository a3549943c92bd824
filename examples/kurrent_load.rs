//! Load generator for the KurrentDB client-protocol adapter, through the official Rust client
//! (`kurrentdb`). It mirrors `statestore bench` (src/bench/mod.rs) so the two can be compared in
//! one run against one server: the same flags, the same events (32-byte self-describing header,
//! filler derived from it, id derived from it), the same stream names and choice of stream per
//! request, one connection per client unless `--connections` says otherwise, the same
//! percentiles, and the same summary and JSON line.
//!
//! ```text
//! cargo run --release --example kurrent_load -- --mode append --clients 8 --batch 100 --duration-s 5
//! cargo run --release --example kurrent_load -- --mode read --clients 8 --batch 100 --streams 1000
//! ```
//!
//! Modes:
//! - `append`: each client appends `--batch` events per request to one of `--streams` streams
//!   (`append_to_stream`, the `Streams.Append` call; `--api batch` uses `Streams.BatchAppend`
//!   instead); latency per request. A sample of acknowledged appends is read back from `$all`
//!   and compared byte for byte.
//! - `read`: writes `--batch` events to each of `--streams` streams, then each client reads
//!   whole streams (`read_stream`, one request each) and checks every event; latency per read.
//! - `catchup`: subscribes to `$all` from the start and reads history until caught up; checks
//!   positions arrive in order; latency is the gap between events.
//!
//! The KurrentDB protocol sends one message per event where the native API sends a page of
//! events per message, so the same workload is more messages here; that is part of what is
//! measured.
//!
//! The client as shipped turns Nagle's algorithm on (hyper's `HttpConnector` sets
//! `TCP_NODELAY=0`; `kurrentdb` 1.2 has no setting for it). A request is a HEADERS write then a
//! DATA write, and the second waits for the server to acknowledge the first, which Linux delays
//! by up to 40 ms: every call takes ~40-48 ms on loopback whatever it carries.
//! `scripts/bench-kurrent.sh` also runs this tool with an `LD_PRELOAD` shim that keeps
//! `TCP_NODELAY` on, to separate the adapter's own cost from that stall.
//!
//! The JSON line adds `api` and the measured window (`window_start_us`, `window_end_us`, µs
//! since the epoch) to the fields of `statestore bench`, so a script can attribute the
//! server's CPU time to the window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use kurrentdb::{
    AppendToStreamOptions, BatchAppendClient, BatchAppendOptions, Client, ClientSettings,
    EventData, Position, ReadAllOptions, ReadStreamOptions, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscriptionEvent,
};
use uuid::Uuid;

#[derive(Parser, Debug, Clone)]
#[command(about = "Drives the KurrentDB adapter like `statestore bench` drives the native API")]
struct Args {
    /// Connection string of the server (the adapter shares the native API's port).
    #[arg(long, default_value = "kurrentdb://127.0.0.1:2113?tls=false")]
    target: String,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Connections the clients share (one `kurrentdb::Client` each); 0 gives each client its
    /// own.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Events per append request (append), or events per stream (read).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Size of each event's data in bytes (at least 32).
    #[arg(long, default_value_t = 100)]
    event_bytes: usize,
    /// Number of streams written (`bench-<run>-<k>`).
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// How long to drive load, in seconds (catchup: the most to wait).
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    #[arg(long, value_enum, default_value = "append")]
    mode: Mode,
    /// Which append call: `append` (`append_to_stream`: Streams.Append, one message per event)
    /// or `batch` (`batch_append`: Streams.BatchAppend, one message per request).
    #[arg(long, value_enum, default_value = "append")]
    api: Api,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Append `--batch` events per request; latency per request.
    Append,
    /// Write `--batch` events to each stream, then read whole streams; latency per read.
    Read,
    /// Subscribe to `$all` from the start until caught up; events/s of history.
    Catchup,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Append,
    Batch,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn fail<T>(message: String) -> Result<T, Error> {
    Err(message.into())
}

/// Setup appends of the read mode in flight at once.
const SETUP_IN_FLIGHT: usize = 32;

/// run id, client, sequence, send time (µs since the epoch): as the native load tool.
const HEADER_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    run: u64,
    client: u32,
    seq: u64,
    sent_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The same bytes `statestore bench` writes for this stamp.
fn event_data(stamp: Stamp, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.extend_from_slice(&stamp.run.to_le_bytes());
    b.extend_from_slice(&u64::from(stamp.client).to_le_bytes());
    b.extend_from_slice(&stamp.seq.to_le_bytes());
    b.extend_from_slice(&stamp.sent_us.to_le_bytes());
    let seed = stamp.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(stamp.client);
    let mut i = 0u64;
    while b.len() < size {
        let word = seed
            .wrapping_add(i.wrapping_mul(0x2545_F491_4F6C_DD1D))
            .to_le_bytes();
        let n = (size - b.len()).min(8);
        b.extend_from_slice(&word[..n]);
        i += 1;
    }
    b.freeze()
}

/// The same id `statestore bench` gives this stamp.
fn event_id(stamp: Stamp) -> Uuid {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&stamp.run.to_be_bytes());
    id[8..12].copy_from_slice(&stamp.client.to_be_bytes());
    id[12..].copy_from_slice(&(stamp.seq as u32).to_be_bytes());
    uuid::Builder::from_random_bytes(id).into_uuid()
}

/// Checks an event's data and id against the stamp its header claims.
fn check_event(e: &kurrentdb::RecordedEvent, size: usize) -> Result<Stamp, Error> {
    let d = &e.data;
    let word = |i: usize| {
        d.get(i * 8..i * 8 + 8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    let (Some(run), Some(client), Some(seq), Some(sent_us)) = (word(0), word(1), word(2), word(3))
    else {
        return fail(format!(
            "event at {} has {} bytes of data, not a load tool event",
            e.position.commit,
            d.len()
        ));
    };
    let stamp = Stamp {
        run,
        client: client as u32,
        seq,
        sent_us,
    };
    if *d != event_data(stamp, size) || e.id != event_id(stamp) {
        return fail(format!(
            "event at position {} does not match what was written (data or id differs)",
            e.position.commit
        ));
    }
    Ok(stamp)
}

/// One request's events, as sent (kept to check what is read back).
#[derive(Clone)]
struct Sent {
    stream: String,
    events: Vec<(Uuid, Bytes)>,
}

impl Sent {
    fn to_events(&self) -> Vec<EventData> {
        self.events
            .iter()
            .map(|(id, data)| EventData::binary("BenchEvent", data.clone()).id(*id))
            .collect()
    }
}

struct Bench {
    args: Args,
    run_id: u64,
    settings: ClientSettings,
}

/// A connected client; clients made from one `kurrentdb::Client` share its connection.
async fn connect(settings: &ClientSettings) -> Result<Client, Error> {
    let client = Client::new(settings.clone()).map_err(|e| format!("client: {e}"))?;
    // Establish the connection (server features) before any clock starts.
    client.server_info().await?;
    Ok(client)
}

/// What the client tasks of a run measured.
#[derive(Default)]
struct Outcome {
    events: u64,
    requests: u64,
    latencies_us: Vec<u64>,
    sample: Vec<(Sent, Position)>,
    elapsed: Duration,
    /// When the measured window started and ended (µs since the epoch).
    window_us: (u64, u64),
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.events += other.events;
        self.requests += other.requests;
        self.latencies_us.extend(other.latencies_us);
        self.sample.extend(other.sample);
    }
}

/// Lets the client tasks run for `duration`, stops them, and merges what they measured.
async fn run_for(
    duration: Duration,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Result<Outcome, Error>>>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let started_us = now_us();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome::default();
    for t in tasks {
        total.merge(t.await.map_err(|e| format!("client task failed: {e}"))??);
    }
    total.elapsed = started.elapsed();
    total.window_us = (started_us, now_us());
    Ok(total)
}

struct Report {
    mode: Mode,
    events: u64,
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    verified: u64,
    window_us: (u64, u64),
}

impl Report {
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_us(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1]
    }

    fn json(&self, api: &str) -> String {
        format!(
            "{{\"mode\":\"{:?}\",\"api\":\"{api}\",\"events\":{},\"requests\":{},\"elapsed_s\":{:.3},\"events_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"verified\":{},\"window_start_us\":{},\"window_end_us\":{}}}",
            self.mode,
            self.events,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.events_per_s(),
            self.percentile_us(50.0),
            self.percentile_us(99.0),
            self.percentile_us(99.9),
            self.latencies_us.last().copied().unwrap_or(0),
            self.verified,
            self.window_us.0,
            self.window_us.1,
        )
        .to_lowercase()
    }
}

impl Bench {
    /// One client per `--clients`, spread over `--connections` connections.
    async fn clients(&self) -> Result<Vec<Client>, Error> {
        let n = self.args.clients;
        let conns = match self.args.connections {
            0 => n,
            c => c.min(n),
        };
        let mut pool = Vec::with_capacity(conns);
        for _ in 0..conns {
            pool.push(connect(&self.settings).await?);
        }
        Ok((0..n).map(|i| pool[i % conns].clone()).collect())
    }

    fn stream(&self, k: usize) -> String {
        format!("bench-{}-{k}", self.run_id)
    }

    fn request(&self, client: u32, seq: &mut u64, stream: String) -> Sent {
        let sent_us = now_us();
        let events = (0..self.args.batch)
            .map(|_| {
                *seq += 1;
                let stamp = Stamp {
                    run: self.run_id,
                    client,
                    seq: *seq,
                    sent_us,
                };
                (event_id(stamp), event_data(stamp, self.args.event_bytes))
            })
            .collect();
        Sent { stream, events }
    }

    async fn append(self) -> Result<Report, Error> {
        let bench = Arc::new(self);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (c, client) in bench.clients().await?.into_iter().enumerate() {
            let batcher = match bench.args.api {
                Api::Batch => Some(client.batch_append(&BatchAppendOptions::default()).await?),
                Api::Append => None,
            };
            let bench = Arc::clone(&bench);
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                bench.appender(c, client, batcher, &stop).await
            }));
        }
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let mut out = run_for(duration, &stop, tasks).await?;
        // Read a sample of acknowledged appends back from $all by position.
        let client = connect(&bench.settings).await?;
        let mut verified = 0;
        for (sent, last) in &out.sample {
            let n = sent.events.len() as u64;
            let first = last.commit + 1 - n;
            let options = ReadAllOptions::default()
                .position(StreamPosition::Position(Position {
                    commit: first,
                    prepare: first,
                }))
                .max_count(sent.events.len());
            let mut read = client.read_all(&options).await?;
            let mut got = 0;
            while let Some(e) = read.next().await? {
                let e = e.get_original_event();
                let Some((id, data)) = sent.events.get(got) else {
                    return fail(format!("read more than {n} events at {first}"));
                };
                check_event(e, bench.args.event_bytes)?;
                if e.stream_id() != sent.stream || e.data != *data || e.id != *id {
                    return fail(format!(
                        "position {} holds a different event than acknowledged",
                        e.position.commit
                    ));
                }
                got += 1;
                verified += 1;
            }
            if got != sent.events.len() {
                return fail(format!("read {got} events at {first}, appended {n}"));
            }
        }
        out.latencies_us.sort_unstable();
        Ok(Report {
            mode: Mode::Append,
            events: out.events,
            requests: out.requests,
            elapsed: out.elapsed,
            latencies_us: out.latencies_us,
            verified,
            window_us: out.window_us,
        })
    }

    async fn appender(
        &self,
        c: usize,
        client: Client,
        batcher: Option<BatchAppendClient>,
        stop: &AtomicBool,
    ) -> Result<Outcome, Error> {
        let mut out = Outcome::default();
        let mut seq = 0u64;
        let options = AppendToStreamOptions::default();
        while !stop.load(Ordering::Relaxed) {
            let k = (c + out.requests as usize * self.args.clients) % self.args.streams;
            let sent = self.request(c as u32, &mut seq, self.stream(k));
            let n_events = sent.events.len() as u64;
            let events = sent.to_events();
            // Keep a sample of acknowledged requests to read back.
            let keep = out.sample.len() < 16 || (out.requests + 1) % 1024 == 0;
            let started = Instant::now();
            let (revision, position) = match &batcher {
                None => {
                    let r = client
                        .append_to_stream(sent.stream.as_str(), &options, events)
                        .await?;
                    (Some(r.next_expected_version), Some(r.position))
                }
                Some(b) => {
                    let r = b
                        .append_to_stream(sent.stream.as_str(), StreamState::Any, events)
                        .await?;
                    (r.current_revision(), r.current_position())
                }
            };
            out.latencies_us.push(started.elapsed().as_micros() as u64);
            out.requests += 1;
            let (Some(revision), Some(position)) = (revision, position) else {
                return fail(format!(
                    "append of {n_events} events acknowledged without a revision or position"
                ));
            };
            if position.commit < n_events || revision + 1 < n_events {
                return fail(format!(
                    "append of {n_events} events acknowledged position {} revision {revision}",
                    position.commit
                ));
            }
            out.events += n_events;
            if keep {
                out.sample.push((sent, position));
            }
        }
        Ok(out)
    }

    async fn read(self) -> Result<Report, Error> {
        let bench = Arc::new(self);
        // Write `batch` events to every stream, one request each (not measured). Up to
        // SETUP_IN_FLIGHT at a time: the client's requests can each stall ~40 ms on
        // Nagle's algorithm (see the top of the file), which one at a time would take minutes.
        let writer = connect(&bench.settings).await?;
        let mut written = std::collections::HashMap::new();
        let mut seq = 0;
        let mut setup = tokio::task::JoinSet::new();
        for k in 0..bench.args.streams {
            let sent = bench.request(u32::MAX, &mut seq, bench.stream(k));
            let (writer, events) = (writer.clone(), sent.to_events());
            let stream = sent.stream.clone();
            setup.spawn(async move {
                writer
                    .append_to_stream(stream, &AppendToStreamOptions::default(), events)
                    .await
            });
            written.insert(sent.stream.clone(), sent);
            if setup.len() >= SETUP_IN_FLIGHT
                && let Some(done) = setup.join_next().await
            {
                done??;
            }
        }
        while let Some(done) = setup.join_next().await {
            done??;
        }
        let written = Arc::new(written);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (c, client) in bench.clients().await?.into_iter().enumerate() {
            let bench = Arc::clone(&bench);
            let stop = Arc::clone(&stop);
            let written = Arc::clone(&written);
            tasks.push(tokio::spawn(async move {
                let mut out = Outcome::default();
                let mut i = c;
                let options = ReadStreamOptions::default();
                while !stop.load(Ordering::Relaxed) {
                    let stream = bench.stream(i % bench.args.streams);
                    i += bench.args.clients;
                    let started = Instant::now();
                    let mut reply = client.read_stream(stream.as_str(), &options).await?;
                    let mut events = Vec::new();
                    while let Some(e) = reply.next().await? {
                        events.push(e);
                    }
                    out.latencies_us.push(started.elapsed().as_micros() as u64);
                    out.requests += 1;
                    let expected = &written[&stream];
                    if events.len() != expected.events.len() {
                        return fail(format!(
                            "stream {stream} read {} events, wrote {}",
                            events.len(),
                            expected.events.len()
                        ));
                    }
                    for (r, (got, (id, data))) in events.iter().zip(&expected.events).enumerate() {
                        let got = got.get_original_event();
                        if got.revision != r as u64
                            || got.stream_id() != stream
                            || got.data != *data
                            || got.id != *id
                        {
                            return fail(format!(
                                "stream {stream} revision {r} differs from what was written"
                            ));
                        }
                    }
                    out.events += events.len() as u64;
                }
                Ok::<_, Error>(out)
            }));
        }
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let mut total = run_for(duration, &stop, tasks).await?;
        total.latencies_us.sort_unstable();
        Ok(Report {
            mode: Mode::Read,
            events: total.events,
            requests: total.requests,
            elapsed: total.elapsed,
            latencies_us: total.latencies_us,
            verified: total.events,
            window_us: total.window_us,
        })
    }

    async fn catchup(self) -> Result<Report, Error> {
        let client = connect(&self.settings).await?;
        // The last position of the log now: the newest event of $all.
        let mut last = client
            .read_all(
                &ReadAllOptions::default()
                    .position(StreamPosition::End)
                    .backwards()
                    .max_count(1),
            )
            .await?;
        let log_end = match last.next().await? {
            Some(e) => e.get_original_event().position.commit,
            None => 0,
        };
        let started = Instant::now();
        let started_us = now_us();
        let mut sub = client
            .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start))
            .await;
        let deadline = started + Duration::from_secs_f64(self.args.duration_s);
        let mut latencies = Vec::new();
        let mut messages = 0u64;
        let mut events = 0u64;
        let mut previous = 0u64;
        let mut at = Instant::now();
        loop {
            let event = tokio::time::timeout_at(deadline.into(), sub.next_subscription_event())
                .await
                .map_err(|_| "not caught up within --duration-s")??;
            let now = Instant::now();
            latencies.push(now.duration_since(at).as_micros() as u64);
            at = now;
            messages += 1;
            match event {
                SubscriptionEvent::EventAppeared(e) => {
                    let p = e.get_original_event().position.commit;
                    if p <= previous {
                        return fail(format!("position {p} delivered after {previous}"));
                    }
                    previous = p;
                    events += 1;
                }
                SubscriptionEvent::CaughtUp(_) => break,
                _ => {}
            }
        }
        let elapsed = started.elapsed();
        if previous < log_end {
            return fail(format!(
                "caught up at position {previous}, the log ended at {log_end}"
            ));
        }
        latencies.sort_unstable();
        Ok(Report {
            mode: Mode::Catchup,
            events,
            requests: messages,
            elapsed,
            latencies_us: latencies,
            verified: events,
            window_us: (started_us, now_us()),
        })
    }
}

async fn drive(args: Args) -> Result<Report, Error> {
    if args.clients == 0 || args.batch == 0 || args.streams == 0 {
        return fail("--clients, --batch and --streams must be at least 1".into());
    }
    if args.event_bytes < HEADER_BYTES {
        return fail(format!("--event-bytes must be at least {HEADER_BYTES}"));
    }
    if !(args.duration_s > 0.0 && args.duration_s.is_finite()) {
        return fail("--duration-s must be positive".into());
    }
    let settings: ClientSettings = args
        .target
        .parse()
        .map_err(|e| format!("bad --target: {e}"))?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let bench = Bench {
        args,
        run_id,
        settings,
    };
    match bench.args.mode {
        Mode::Append => bench.append().await,
        Mode::Read => bench.read().await,
        Mode::Catchup => bench.catchup().await,
    }
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let api = match (args.mode, args.api) {
        (Mode::Append, Api::Batch) => "kurrent-batch-append",
        (Mode::Append, Api::Append) => "kurrent-append",
        _ => "kurrent",
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(drive(args))?;
    println!(
        "mode {:?}: {} events in {} requests over {:.2} s",
        report.mode,
        report.events,
        report.requests,
        report.elapsed.as_secs_f64()
    );
    println!(
        "throughput {:.0} events/s; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        report.events_per_s(),
        report.percentile_us(50.0),
        report.percentile_us(99.0),
        report.percentile_us(99.9),
        report.latencies_us.last().copied().unwrap_or(0)
    );
    println!(
        "verified {} events against what was written",
        report.verified
    );
    println!("{}", report.json(api));
    Ok(())
}
