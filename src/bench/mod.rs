//! `statestore bench`: the load tool. Drives a running server over gRPC with N concurrent
//! clients and reports throughput and latency. It is a client of the public API only.
//!
//! Every event it writes is self-describing: its data starts with a fixed header (run id,
//! client, sequence number, send time) followed by filler derived from those, and its id is
//! derived from them too. Whatever comes back (acknowledgements, reads, subscription deliveries)
//! is checked against what was written, so a fast wrong server cannot score.
//!
//! Modes:
//! - `append`: each client appends `--batch` events per request to one of `--streams` streams;
//!   latency per request. Afterwards a sample of acknowledged appends is read back and compared.
//! - `read`: first writes `--batch` events to each of `--streams` streams, then each client
//!   reads whole streams (one request each) and checks every event; latency per request.
//! - `subscribe`: one live subscription (filtered to this run's streams) while the clients append
//!   at `--rate` events/s in total; latency from append to delivery, per event. Checks every
//!   acknowledged event is delivered once, in order.
//! - `catchup`: subscribes from the start of the log and reads history until caught up; checks
//!   positions arrive dense and in order; latency is the gap between messages.
//! - `persistent`: writes a backlog of `--backlog` events, then `--clients` consumers of one
//!   persistent-subscription group drain it, acking every event; events/s delivered and acked,
//!   every event checked and counted (at least once; duplicates reported). See [`persistent`].
//! - `persistent-live`: the same consumers while the clients append at `--rate`;
//!   append-to-delivery latency, per event.
//! - `get`: GetStream calls, which carry no event data: the cost of a bare unary call through
//!   the whole stack, as a reference for the others.

mod persistent;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::server::proto::{self, event_store_client::EventStoreClient, subscribe_response::Kind};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:2113")]
    pub target: String,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Connections the clients share (HTTP/2 multiplexes their requests); 0 gives each client
    /// its own.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// Events per append request (append, subscribe), or events per stream (read).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Size of each event's data in bytes (at least 32).
    #[arg(long, default_value_t = 100)]
    pub event_bytes: usize,
    /// Number of streams written (`bench-<run>-<k>`).
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// How long to drive load, in seconds (catchup: the most to wait).
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    #[arg(long, value_enum, default_value = "append")]
    pub mode: Mode,
    /// Also hold this many subscriptions open during the run: whole-log subscriptions filtered
    /// to a stream prefix nothing is written to, so they are live and idle. Shows what idle
    /// subscribers cost the server.
    #[arg(long, default_value_t = 0)]
    pub idle_subscribers: usize,
    /// subscribe, persistent-live: total append rate in events per second, shared by the
    /// clients.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// persistent: events written before the group is created (a multiple of --clients).
    #[arg(long, default_value_t = 100_000)]
    pub backlog: u64,
    /// persistent: events per append request while writing the backlog.
    #[arg(long, default_value_t = 1000)]
    pub backlog_batch: usize,
    /// persistent: each consumer's in-flight limit (events delivered and not yet acked).
    #[arg(long, default_value_t = 500)]
    pub buffer_size: usize,
    /// persistent: the group's read_batch_size (events per read of the log; KurrentDB's
    /// default is 20). The group holds 4 x clients x buffer-size events (2,000 to 100,000).
    #[arg(long, default_value_t = 500)]
    pub group_read_batch: u32,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Append `--batch` events per request; latency per request.
    Append,
    /// Write `--batch` events to each stream, then read whole streams; latency per read.
    Read,
    /// One live subscription while the clients append at `--rate`; append-to-delivery latency.
    Subscribe,
    /// Subscribe from the start of the log until caught up; events/s of history.
    Catchup,
    /// GetStream calls (no event data): the cost of a unary call through the whole stack.
    Get,
    /// A persistent-subscription group on `$all` drained by `--clients` acking consumers, over
    /// a backlog of `--backlog` events; events/s delivered and acked.
    Persistent,
    /// The same group and consumers while the clients append at `--rate`; append-to-delivery
    /// latency.
    PersistentLive,
}

/// Why a run failed: the server was unreachable, answered with an error, or answered wrongly.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: tonic::transport::Error,
    },
    #[error("server error: {0}")]
    Status(#[from] tonic::Status),
    #[error("wrong answer from the server: {0}")]
    Verify(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub events: u64,
    pub requests: u64,
    pub elapsed: Duration,
    /// Sorted latencies in microseconds.
    pub latencies_us: Vec<u64>,
    pub verified: u64,
    /// Events delivered more than once (persistent mode; 0 elsewhere).
    pub duplicates: u64,
}

impl Report {
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1]
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"mode\":\"{:?}\",\"events\":{},\"requests\":{},\"elapsed_s\":{:.3},\"events_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"verified\":{},\"duplicates\":{}}}",
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
            self.duplicates,
        )
        .to_lowercase()
    }
}

/// Runs the load tool and prints its report (the JSON object last).
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let report = runtime.block_on(drive(args.clone()))?;
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
    println!("{}", report.json());
    Ok(())
}

/// Runs the load described by `args` against a server.
pub async fn drive(args: BenchArgs) -> Result<Report, BenchError> {
    if args.clients == 0 || args.batch == 0 || args.streams == 0 {
        return Err(BenchError::Args(
            "--clients, --batch and --streams must be at least 1".into(),
        ));
    }
    if args.event_bytes < HEADER_BYTES {
        return Err(BenchError::Args(format!(
            "--event-bytes must be at least {HEADER_BYTES}"
        )));
    }
    if !(args.duration_s > 0.0 && args.duration_s.is_finite()) {
        return Err(BenchError::Args("--duration-s must be positive".into()));
    }
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let idle = idle_subscribers(&args.target, args.idle_subscribers).await?;
    let bench = Bench { args, run_id };
    let report = match bench.args.mode {
        Mode::Append => bench.append().await,
        Mode::Read => bench.read().await,
        Mode::Subscribe => bench.subscribe().await,
        Mode::Catchup => bench.catchup().await,
        Mode::Get => bench.get().await,
        Mode::Persistent => bench.persistent().await,
        Mode::PersistentLive => bench.persistent_live().await,
    };
    for task in idle {
        task.abort();
    }
    report
}

/// Opens `n` live, idle subscriptions (on a few shared connections) and keeps reading them in
/// the background until the returned tasks are aborted.
async fn idle_subscribers(
    target: &str,
    n: usize,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BenchError> {
    let mut tasks = Vec::with_capacity(n);
    if n == 0 {
        return Ok(tasks);
    }
    let mut pool = Vec::new();
    for _ in 0..n.div_ceil(100).min(8) {
        pool.push(connect(target).await?);
    }
    let last = pool[0]
        .server_info(proto::ServerInfoRequest {})
        .await?
        .into_inner()
        .last_position;
    for i in 0..n {
        let mut client = pool[i % pool.len()].clone();
        let mut replies = client
            .subscribe(proto::SubscribeRequest {
                target: Some(proto::subscribe_request::Target::All(proto::SubscribeAll {
                    after_position: last,
                    filter: Some(proto::EventFilter {
                        stream: Some(proto::event_filter::Stream::StreamPrefix(
                            "bench-idle-nothing-".into(),
                        )),
                        event_types: Vec::new(),
                    }),
                    checkpoint_interval: u32::MAX,
                })),
            })
            .await?
            .into_inner();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(_)) = replies.message().await {}
        }));
    }
    Ok(tasks)
}

/// run id, client, sequence, send time (µs since the epoch).
const HEADER_BYTES: usize = 32;

struct Bench {
    args: BenchArgs,
    run_id: u64,
}

/// What one event carries, recoverable from its data.
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

fn event_data(stamp: Stamp, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.extend_from_slice(&stamp.run.to_le_bytes());
    b.extend_from_slice(&u64::from(stamp.client).to_le_bytes());
    b.extend_from_slice(&stamp.seq.to_le_bytes());
    b.extend_from_slice(&stamp.sent_us.to_le_bytes());
    // Filler: a word sequence derived from the stamp, so a byte out of place is caught.
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

fn event_id(stamp: Stamp) -> Bytes {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&stamp.run.to_be_bytes());
    id[8..12].copy_from_slice(&stamp.client.to_be_bytes());
    id[12..].copy_from_slice(&(stamp.seq as u32).to_be_bytes());
    Bytes::copy_from_slice(
        &uuid::Builder::from_random_bytes(id)
            .into_uuid()
            .into_bytes(),
    )
}

/// Checks an event's data and id against the stamp its header claims and returns the stamp.
fn check_event(e: &proto::RecordedEvent, size: usize) -> Result<Stamp, BenchError> {
    let d = &e.data;
    let word = |i: usize| {
        d.get(i * 8..i * 8 + 8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    let (Some(run), Some(client), Some(seq), Some(sent_us)) = (word(0), word(1), word(2), word(3))
    else {
        return Err(BenchError::Verify(format!(
            "event at {} has {} bytes of data, not a load tool event",
            e.position,
            d.len()
        )));
    };
    let stamp = Stamp {
        run,
        client: client as u32,
        seq,
        sent_us,
    };
    if *d != event_data(stamp, size) || e.id != event_id(stamp) {
        return Err(BenchError::Verify(format!(
            "event at position {} does not match what was written (data or id differs)",
            e.position
        )));
    }
    Ok(stamp)
}

async fn connect(target: &str) -> Result<EventStoreClient<Channel>, BenchError> {
    Ok(EventStoreClient::new(channel(target).await?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// A new connection to the server.
async fn channel(target: &str) -> Result<Channel, BenchError> {
    let endpoint = Endpoint::from_shared(target.to_string())
        .map_err(|e| BenchError::Args(format!("bad --target: {e}")))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20));
    endpoint
        .connect()
        .await
        .map_err(|source| BenchError::Connect {
            target: target.to_string(),
            source,
        })
}

impl Bench {
    /// One client per `--clients`, spread over `--connections` connections.
    async fn clients(&self) -> Result<Vec<EventStoreClient<Channel>>, BenchError> {
        let n = self.args.clients;
        let conns = match self.args.connections {
            0 => n,
            c => c.min(n),
        };
        let mut pool = Vec::with_capacity(conns);
        for _ in 0..conns {
            pool.push(connect(&self.args.target).await?);
        }
        Ok((0..n).map(|i| pool[i % conns].clone()).collect())
    }

    fn stream(&self, k: usize) -> String {
        format!("bench-{}-{k}", self.run_id)
    }

    fn append_request(&self, client: u32, seq: &mut u64, stream: String) -> proto::AppendRequest {
        self.append_request_of(client, seq, stream, self.args.batch)
    }

    /// An append of `n` events with the next sequence numbers of `client`.
    fn append_request_of(
        &self,
        client: u32,
        seq: &mut u64,
        stream: String,
        n: usize,
    ) -> proto::AppendRequest {
        let sent_us = now_us();
        let events = (0..n)
            .map(|_| {
                *seq += 1;
                let stamp = Stamp {
                    run: self.run_id,
                    client,
                    seq: *seq,
                    sent_us,
                };
                proto::EventData {
                    id: event_id(stamp),
                    event_type: "BenchEvent".into(),
                    content_type: proto::ContentType::Binary as i32,
                    data: event_data(stamp, self.args.event_bytes),
                    metadata: Bytes::new(),
                }
            })
            .collect();
        proto::AppendRequest {
            stream,
            expected: None,
            events,
            tracking: None,
        }
    }

    /// Runs `clients` appenders until `deadline`, pacing to `rate` events/s in total when set.
    /// Returns per-request latencies, and the requests with their acknowledgements.
    async fn appenders(
        self: &Arc<Self>,
        duration: Duration,
        rate: Option<u64>,
    ) -> Result<ClientOutcome, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (c, mut client) in self.clients().await?.into_iter().enumerate() {
            let bench = Arc::clone(self);
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut out = ClientOutcome::default();
                let mut seq = 0u64;
                let interval = rate.map(|r| {
                    let per_client = (r as f64 / bench.args.clients as f64).max(1e-3);
                    Duration::from_secs_f64(bench.args.batch as f64 / per_client)
                });
                let start = Instant::now();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = interval {
                        let due = start + interval * n;
                        tokio::time::sleep_until(due.into()).await;
                        n += 1;
                    }
                    let k = (c + out.requests as usize * bench.args.clients) % bench.args.streams;
                    let request = bench.append_request(c as u32, &mut seq, bench.stream(k));
                    let n_events = request.events.len() as u64;
                    // Keep a sample of acknowledged requests to read back; clone only those.
                    let keep = out.sample.len() < 16 || (out.requests + 1) % 1024 == 0;
                    let kept = keep.then(|| request.clone());
                    let sent = Instant::now();
                    let ack = client.append(request).await?.into_inner();
                    out.latencies_us.push(sent.elapsed().as_micros() as u64);
                    out.requests += 1;
                    if ack.last_position + 1 != ack.first_position + n_events {
                        return Err(BenchError::Verify(format!(
                            "append of {n_events} events acknowledged positions {}..={}",
                            ack.first_position, ack.last_position
                        )));
                    }
                    out.events += n_events;
                    if let Some(request) = kept {
                        out.sample.push((request, ack));
                    }
                }
                Ok::<_, BenchError>(out)
            }));
        }
        run_for(duration, &stop, tasks).await
    }

    async fn append(self) -> Result<Report, BenchError> {
        let bench = Arc::new(self);
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let mut out = bench.appenders(duration, None).await?;
        // Read a sample of acknowledged appends back by position.
        let mut client = connect(&bench.args.target).await?;
        let mut verified = 0;
        for (request, ack) in &out.sample {
            let read = read_all_from(&mut client, ack.first_position, request.events.len()).await?;
            for (sent, got) in request.events.iter().zip(&read) {
                check_event(got, bench.args.event_bytes)?;
                if got.stream != request.stream || got.data != sent.data || got.id != sent.id {
                    return Err(BenchError::Verify(format!(
                        "position {} holds a different event than acknowledged",
                        got.position
                    )));
                }
                verified += 1;
            }
            if read.len() != request.events.len() {
                return Err(BenchError::Verify(format!(
                    "read {} events at {}, appended {}",
                    read.len(),
                    ack.first_position,
                    request.events.len()
                )));
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
            duplicates: 0,
        })
    }

    async fn read(self) -> Result<Report, BenchError> {
        let bench = Arc::new(self);
        // Write `batch` events to every stream, one request each.
        let mut writer = connect(&bench.args.target).await?;
        let mut written: HashMap<String, proto::AppendRequest> = HashMap::new();
        let mut seq = 0;
        for k in 0..bench.args.streams {
            let request = bench.append_request(u32::MAX, &mut seq, bench.stream(k));
            writer.append(request.clone()).await?;
            written.insert(request.stream.clone(), request);
        }
        let written = Arc::new(written);
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (c, mut client) in bench.clients().await?.into_iter().enumerate() {
            let bench = Arc::clone(&bench);
            let stop = Arc::clone(&stop);
            let written = Arc::clone(&written);
            tasks.push(tokio::spawn(async move {
                let mut out = ClientOutcome::default();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let stream = bench.stream(i % bench.args.streams);
                    i += bench.args.clients;
                    let sent = Instant::now();
                    let mut reply = client
                        .read_stream(proto::ReadStreamRequest {
                            stream: stream.clone(),
                            from_revision: None,
                            direction: proto::Direction::Forwards as i32,
                            max_count: 0,
                            from_snapshot: false,
                        })
                        .await?
                        .into_inner();
                    let mut events = Vec::new();
                    while let Some(page) = reply.message().await? {
                        events.extend(page.events);
                    }
                    out.latencies_us.push(sent.elapsed().as_micros() as u64);
                    out.requests += 1;
                    let expected = &written[&stream];
                    if events.len() != expected.events.len() {
                        return Err(BenchError::Verify(format!(
                            "stream {stream} read {} events, wrote {}",
                            events.len(),
                            expected.events.len()
                        )));
                    }
                    for (r, (got, sent)) in events.iter().zip(&expected.events).enumerate() {
                        if got.revision != r as u64
                            || got.stream != stream
                            || got.data != sent.data
                            || got.id != sent.id
                        {
                            return Err(BenchError::Verify(format!(
                                "stream {stream} revision {r} differs from what was written"
                            )));
                        }
                    }
                    out.events += events.len() as u64;
                }
                Ok::<_, BenchError>(out)
            }));
        }
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let mut total = run_for(duration, &stop, tasks).await?;
        let elapsed = total.elapsed;
        total.latencies_us.sort_unstable();
        Ok(Report {
            mode: Mode::Read,
            events: total.events,
            requests: total.requests,
            elapsed,
            latencies_us: total.latencies_us,
            verified: total.events,
            duplicates: 0,
        })
    }

    async fn get(self) -> Result<Report, BenchError> {
        let bench = Arc::new(self);
        let mut writer = connect(&bench.args.target).await?;
        let mut seq = 0;
        let stream = bench.stream(0);
        let ack = writer
            .append(bench.append_request(u32::MAX, &mut seq, stream.clone()))
            .await?
            .into_inner();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for mut client in bench.clients().await? {
            let stop = Arc::clone(&stop);
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = ClientOutcome::default();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let got = client
                        .get_stream(proto::GetStreamRequest {
                            stream: stream.clone(),
                        })
                        .await?
                        .into_inner();
                    out.latencies_us.push(sent.elapsed().as_micros() as u64);
                    out.requests += 1;
                    if got.revision != ack.revision || got.stream != stream {
                        return Err(BenchError::Verify(format!(
                            "GetStream({stream}) answered revision {}, expected {}",
                            got.revision, ack.revision
                        )));
                    }
                }
                Ok::<_, BenchError>(out)
            }));
        }
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let mut total = run_for(duration, &stop, tasks).await?;
        let elapsed = total.elapsed;
        total.latencies_us.sort_unstable();
        Ok(Report {
            mode: Mode::Get,
            events: total.requests,
            requests: total.requests,
            elapsed,
            latencies_us: total.latencies_us,
            verified: total.requests,
            duplicates: 0,
        })
    }

    async fn subscribe(self) -> Result<Report, BenchError> {
        let bench = Arc::new(self);
        let mut sub_client = connect(&bench.args.target).await?;
        let info = sub_client
            .server_info(proto::ServerInfoRequest {})
            .await?
            .into_inner();
        let mut replies = sub_client
            .subscribe(proto::SubscribeRequest {
                target: Some(proto::subscribe_request::Target::All(proto::SubscribeAll {
                    after_position: info.last_position,
                    filter: Some(proto::EventFilter {
                        stream: Some(proto::event_filter::Stream::StreamPrefix(format!(
                            "bench-{}-",
                            bench.run_id
                        ))),
                        event_types: Vec::new(),
                    }),
                    checkpoint_interval: 0,
                })),
            })
            .await?
            .into_inner();
        // Wait until live before appending, so latency is append-to-delivery.
        loop {
            match replies.message().await? {
                Some(proto::SubscribeResponse {
                    kind: Some(Kind::CaughtUp(_)),
                }) => break,
                Some(_) => {}
                None => return Err(BenchError::Verify("subscription ended early".into())),
            }
        }
        let delivered = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let failure = Arc::new(Mutex::new(None::<BenchError>));
        let consumer = {
            let delivered = Arc::clone(&delivered);
            let latencies = Arc::clone(&latencies);
            let failure = Arc::clone(&failure);
            let size = bench.args.event_bytes;
            tokio::spawn(async move {
                let mut next_seq: HashMap<u32, u64> = HashMap::new();
                let mut last_position = 0;
                loop {
                    let msg = match replies.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => return,
                        Err(e) => {
                            *failure.lock() = Some(e.into());
                            return;
                        }
                    };
                    let Some(Kind::Events(batch)) = msg.kind else {
                        continue;
                    };
                    let now = now_us();
                    let mut lat = latencies.lock();
                    for e in &batch.events {
                        let stamp = match check_event(e, size) {
                            Ok(s) => s,
                            Err(err) => {
                                *failure.lock() = Some(err);
                                return;
                            }
                        };
                        let expect = next_seq.entry(stamp.client).or_insert(1);
                        if stamp.seq != *expect || e.position <= last_position {
                            *failure.lock() = Some(BenchError::Verify(format!(
                                "client {} event {} delivered when {} was due (position {})",
                                stamp.client, stamp.seq, expect, e.position
                            )));
                            return;
                        }
                        *expect += 1;
                        last_position = e.position;
                        lat.push(now.saturating_sub(stamp.sent_us));
                    }
                    delivered.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                }
            })
        };
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let out = bench.appenders(duration, Some(bench.args.rate)).await?;
        // Every acknowledged event must arrive.
        let wait_until = Instant::now() + Duration::from_secs(10);
        while delivered.load(Ordering::Relaxed) < out.events && Instant::now() < wait_until {
            if failure.lock().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        consumer.abort();
        if let Some(e) = failure.lock().take() {
            return Err(e);
        }
        let got = delivered.load(Ordering::Relaxed);
        if got != out.events {
            return Err(BenchError::Verify(format!(
                "appended {} events, the subscription delivered {got}",
                out.events
            )));
        }
        let mut lat = std::mem::take(&mut *latencies.lock());
        lat.sort_unstable();
        Ok(Report {
            mode: Mode::Subscribe,
            events: got,
            requests: out.requests,
            elapsed: out.elapsed,
            latencies_us: lat,
            verified: got,
            duplicates: 0,
        })
    }

    async fn catchup(self) -> Result<Report, BenchError> {
        let mut client = connect(&self.args.target).await?;
        let info = client
            .server_info(proto::ServerInfoRequest {})
            .await?
            .into_inner();
        let started = Instant::now();
        let mut replies = client
            .subscribe(proto::SubscribeRequest {
                target: Some(proto::subscribe_request::Target::All(proto::SubscribeAll {
                    after_position: 0,
                    filter: None,
                    checkpoint_interval: 0,
                })),
            })
            .await?
            .into_inner();
        let deadline = started + Duration::from_secs_f64(self.args.duration_s);
        let mut next = 1u64;
        let mut latencies = Vec::new();
        let mut messages = 0u64;
        let mut last = Instant::now();
        loop {
            let msg = tokio::time::timeout_at(deadline.into(), replies.message())
                .await
                .map_err(|_| BenchError::Verify("not caught up within --duration-s".into()))??;
            let now = Instant::now();
            latencies.push(now.duration_since(last).as_micros() as u64);
            last = now;
            messages += 1;
            match msg.and_then(|m| m.kind) {
                Some(Kind::Events(batch)) => {
                    for e in &batch.events {
                        if e.position != next {
                            return Err(BenchError::Verify(format!(
                                "position {} delivered when {next} was due",
                                e.position
                            )));
                        }
                        next += 1;
                    }
                }
                Some(Kind::CaughtUp(_)) => break,
                Some(_) => {}
                None => return Err(BenchError::Verify("subscription ended early".into())),
            }
        }
        let elapsed = started.elapsed();
        let events = next - 1;
        if events < info.last_position {
            return Err(BenchError::Verify(format!(
                "caught up after {events} events, the log held {}",
                info.last_position
            )));
        }
        latencies.sort_unstable();
        Ok(Report {
            mode: Mode::Catchup,
            events,
            requests: messages,
            elapsed,
            latencies_us: latencies,
            verified: events,
            duplicates: 0,
        })
    }
}

/// What the client tasks of a run measured.
#[derive(Default)]
struct ClientOutcome {
    events: u64,
    requests: u64,
    latencies_us: Vec<u64>,
    sample: Vec<(proto::AppendRequest, proto::AppendResponse)>,
    elapsed: Duration,
}

impl ClientOutcome {
    fn merge(&mut self, other: ClientOutcome) {
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
    tasks: Vec<tokio::task::JoinHandle<Result<ClientOutcome, BenchError>>>,
) -> Result<ClientOutcome, BenchError> {
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = ClientOutcome::default();
    for t in tasks {
        let out = t
            .await
            .map_err(|e| BenchError::Verify(format!("client task failed: {e}")))??;
        total.merge(out);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn read_all_from(
    client: &mut EventStoreClient<Channel>,
    from: u64,
    count: usize,
) -> Result<Vec<proto::RecordedEvent>, BenchError> {
    let mut reply = client
        .read_all(proto::ReadAllRequest {
            from_position: Some(from),
            direction: proto::Direction::Forwards as i32,
            max_count: count as u64,
            filter: None,
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = reply.message().await? {
        events.extend(page.events);
    }
    Ok(events)
}
