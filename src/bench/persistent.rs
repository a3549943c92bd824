//! `--mode persistent`: a persistent-subscription group draining a backlog.
//!
//! First `--clients` writers append `--backlog` events across `--streams` streams of this run,
//! `--backlog-batch` events a request. Then a group on `$all`, filtered to this run's stream
//! prefix and starting at the backlog's first position, is created, and `--clients` consumers
//! (each on its own connection, in-flight limit `--buffer-size`) drain it, each acking every
//! event it receives: the ids of a message in groups of [`ACK_EVERY`], the rest when the
//! message is exhausted. The run ends when every event has been delivered and the group has
//! counted as many acks; events/s is the backlog over the time from the group's creation.
//!
//! Every delivery is checked against what was written (data and id derived from its stamp, a
//! stamp of this run's writers); each event must arrive at least once, and events that arrive
//! more than once are counted as duplicates (redeliveries after a message timeout would be
//! these). Latencies are the gaps between messages at each consumer.
//!
//! `--mode persistent-live`: the group is created at the end of the log, the consumers
//! connect, and the clients append at `--rate` for `--duration-s`; every acknowledged event
//! must be delivered and acked, and latency is from append to delivery, per event.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::{Bench, BenchError, Mode, Report, channel, check_event};
use crate::server::proto::{
    self, consume_request, consume_response,
    persistent_subscriptions_client::PersistentSubscriptionsClient,
};

/// A consumer acks after this many events, or at the end of a message if sooner.
pub const ACK_EVERY: usize = 50;
/// A consumer that receives nothing for this long while events are missing fails the run.
const STALL: Duration = Duration::from_secs(20);

type GroupsClient = PersistentSubscriptionsClient<Channel>;

/// Which events have been delivered: one bit per event written, by writer and sequence.
struct Seen {
    bits: Vec<AtomicU64>,
    per_writer: u64,
    writers: u64,
    unique: AtomicU64,
    duplicates: AtomicU64,
}

impl Seen {
    fn new(writers: u64, per_writer: u64) -> Seen {
        let n = writers * per_writer;
        Seen {
            bits: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            per_writer,
            writers,
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    fn total(&self) -> u64 {
        self.writers * self.per_writer
    }

    /// Marks the event of `writer`'s sequence `seq` (from 1) delivered.
    fn mark(&self, writer: u32, seq: u64) -> Result<(), BenchError> {
        if u64::from(writer) >= self.writers || seq == 0 || seq > self.per_writer {
            return Err(BenchError::Verify(format!(
                "delivered event {seq} of writer {writer}, which was never written"
            )));
        }
        let at = u64::from(writer) * self.per_writer + seq - 1;
        let bit = 1u64 << (at % 64);
        let before = self.bits[(at / 64) as usize].fetch_or(bit, Ordering::Relaxed);
        if before & bit == 0 {
            self.unique.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.unique.load(Ordering::Relaxed) >= self.total()
    }
}

/// Which events have been delivered when their number is not known in advance (live mode).
#[derive(Default)]
struct LiveSeen {
    seen: Mutex<HashSet<(u32, u64)>>,
    unique: AtomicU64,
    duplicates: AtomicU64,
}

impl LiveSeen {
    fn mark(&self, writer: u32, seq: u64) {
        if self.seen.lock().insert((writer, seq)) {
            self.unique.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the consumers record of each delivery.
enum Tracker {
    /// Backlog: a bit per event written; latencies are the gaps between messages.
    Backlog(Seen),
    /// Live: the events seen; latencies are from append to delivery.
    Live(LiveSeen),
}

impl Tracker {
    fn mark(&self, writer: u32, seq: u64) -> Result<(), BenchError> {
        match self {
            Tracker::Backlog(seen) => seen.mark(writer, seq),
            Tracker::Live(seen) => {
                seen.mark(writer, seq);
                Ok(())
            }
        }
    }

    fn unique(&self) -> u64 {
        match self {
            Tracker::Backlog(seen) => seen.unique.load(Ordering::Relaxed),
            Tracker::Live(seen) => seen.unique.load(Ordering::Relaxed),
        }
    }

    fn duplicates(&self) -> u64 {
        match self {
            Tracker::Backlog(seen) => seen.duplicates.load(Ordering::Relaxed),
            Tracker::Live(seen) => seen.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Every event expected has arrived (live: always, until the appenders are done).
    fn complete(&self) -> bool {
        match self {
            Tracker::Backlog(seen) => seen.complete(),
            Tracker::Live(_) => true,
        }
    }
}

/// What one consumer measured.
#[derive(Default)]
struct ConsumerOutcome {
    messages: u64,
    latencies_us: Vec<u64>,
}

impl Bench {
    pub(super) async fn persistent(self) -> Result<Report, BenchError> {
        let backlog = self.args.backlog;
        let writers = self.args.clients as u64;
        if backlog == 0 || !backlog.is_multiple_of(writers) {
            return Err(BenchError::Args(
                "--backlog must be a positive multiple of --clients".into(),
            ));
        }
        if self.args.buffer_size == 0 || self.args.backlog_batch == 0 {
            return Err(BenchError::Args(
                "--buffer-size and --backlog-batch must be at least 1".into(),
            ));
        }
        let bench = Arc::new(self);
        let per_writer = backlog / writers;
        let first_position = bench.write_backlog(per_writer).await?;
        let mut groups = PersistentSubscriptionsClient::new(channel(&bench.args.target).await?);
        let create = bench.group(proto::group_settings::StartFrom::At(first_position));
        let key = create.key.clone().unwrap_or_default();
        let started = Instant::now();
        groups.create_group(create).await?;
        let seen = Arc::new(Tracker::Backlog(Seen::new(writers, per_writer)));
        let done = Arc::new(AtomicBool::new(false));
        let tasks = bench.consumers(&key, &seen, &done).await?;
        // Delivered and acked once the group has counted an ack for every event; the
        // consumers run (and ack) until then.
        let acked = loop {
            if tasks.iter().any(tokio::task::JoinHandle::is_finished) {
                break None;
            }
            let info = groups
                .get_group(proto::GetGroupRequest {
                    key: Some(key.clone()),
                })
                .await?
                .into_inner()
                .group
                .unwrap_or_default();
            if info.acked >= backlog && seen.complete() {
                break Some(info.acked);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let elapsed = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let mut out = ConsumerOutcome::default();
        for t in tasks {
            let o = t
                .await
                .map_err(|e| BenchError::Verify(format!("consumer task failed: {e}")))??;
            out.messages += o.messages;
            out.latencies_us.extend(o.latencies_us);
        }
        let Some(acked) = acked else {
            return Err(BenchError::Verify(format!(
                "a consumer ended with {} of {backlog} events delivered",
                seen.unique()
            )));
        };
        groups
            .delete_group(proto::DeleteGroupRequest { key: Some(key) })
            .await?;
        let duplicates = seen.duplicates();
        println!(
            "persistent: {backlog} events delivered to {} consumers and acked ({acked} acks) in \
             {:.2} s, {duplicates} duplicates",
            bench.args.clients,
            elapsed.as_secs_f64()
        );
        out.latencies_us.sort_unstable();
        Ok(Report {
            mode: Mode::Persistent,
            events: backlog,
            requests: out.messages,
            elapsed,
            latencies_us: out.latencies_us,
            verified: seen.unique() + duplicates,
            duplicates,
        })
    }

    /// Appends the backlog: `per_writer` events from each of `--clients` writers, and returns
    /// the first position written.
    async fn write_backlog(self: &Arc<Self>, per_writer: u64) -> Result<u64, BenchError> {
        let batch = self.args.backlog_batch as u64;
        let mut tasks = Vec::new();
        for (w, mut client) in self.clients().await?.into_iter().enumerate() {
            let bench = Arc::clone(self);
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                let mut first = u64::MAX;
                let mut i = 0usize;
                while seq < per_writer {
                    let n = batch.min(per_writer - seq) as usize;
                    let k = (w + i * bench.args.clients) % bench.args.streams;
                    i += 1;
                    let request = bench.append_request_of(w as u32, &mut seq, bench.stream(k), n);
                    let ack = client.append(request).await?.into_inner();
                    if ack.last_position + 1 != ack.first_position + n as u64 {
                        return Err(BenchError::Verify(format!(
                            "append of {n} events acknowledged positions {}..={}",
                            ack.first_position, ack.last_position
                        )));
                    }
                    first = first.min(ack.first_position);
                }
                Ok::<_, BenchError>(first)
            }));
        }
        let mut first = u64::MAX;
        for t in tasks {
            let f = t
                .await
                .map_err(|e| BenchError::Verify(format!("writer task failed: {e}")))??;
            first = first.min(f);
        }
        Ok(first)
    }

    /// One consumer: receives, checks and acks until every event has been delivered.
    async fn consumer(
        &self,
        mut client: GroupsClient,
        key: proto::GroupKey,
        c: usize,
        seen: &Tracker,
        done: &AtomicBool,
    ) -> Result<ConsumerOutcome, BenchError> {
        let (requests, rx) = mpsc::channel(64);
        let open = proto::ConsumeRequest {
            kind: Some(consume_request::Kind::Open(proto::ConsumeOpen {
                key: Some(key),
                consumer_name: format!("bench-{c}"),
                buffer_size: self.args.buffer_size as u32,
            })),
        };
        let _ = requests.send(open).await;
        let mut replies = client
            .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut out = ConsumerOutcome::default();
        let mut acks = Vec::with_capacity(ACK_EVERY);
        let mut last = Instant::now();
        while !done.load(Ordering::Relaxed) {
            // Poll now and then, so a consumer that gets nothing more notices the end.
            let message =
                match tokio::time::timeout(Duration::from_millis(50), replies.message()).await {
                    Ok(m) => m?,
                    Err(_) if last.elapsed() < STALL || seen.complete() => continue,
                    Err(_) => {
                        return Err(BenchError::Verify(format!(
                            "consumer {c} received nothing for {} s with {} of {} events delivered",
                            STALL.as_secs(),
                            seen.unique(),
                            match seen {
                                Tracker::Backlog(s) => s.total(),
                                Tracker::Live(_) => 0,
                            }
                        )));
                    }
                };
            let now = Instant::now();
            if matches!(seen, Tracker::Backlog(_)) {
                out.latencies_us
                    .push(now.duration_since(last).as_micros() as u64);
            }
            last = now;
            let batch = match message.and_then(|m| m.kind) {
                Some(consume_response::Kind::Events(batch)) => batch,
                Some(consume_response::Kind::Confirmed(_)) => continue,
                None => return Err(BenchError::Verify(format!("consumer {c}'s call ended"))),
            };
            out.messages += 1;
            for ge in batch.events {
                let Some(e) = ge.event else {
                    return Err(BenchError::Verify("a delivery without an event".into()));
                };
                let stamp = check_event(&e, self.args.event_bytes)?;
                if stamp.run != self.run_id || !e.stream.starts_with(&self.stream_prefix()) {
                    return Err(BenchError::Verify(format!(
                        "event at {} in {} is not of this run",
                        e.position, e.stream
                    )));
                }
                seen.mark(stamp.client, stamp.seq)?;
                if matches!(seen, Tracker::Live(_)) {
                    out.latencies_us
                        .push(super::now_us().saturating_sub(stamp.sent_us));
                }
                acks.push(e.id);
                if acks.len() >= ACK_EVERY {
                    send_ack(&requests, &mut acks).await?;
                }
            }
            send_ack(&requests, &mut acks).await?;
        }
        Ok(out)
    }

    /// Connects `--clients` consumers to the group, each on its own connection, running until
    /// `done`.
    async fn consumers(
        self: &Arc<Self>,
        key: &proto::GroupKey,
        seen: &Arc<Tracker>,
        done: &Arc<AtomicBool>,
    ) -> Result<Vec<tokio::task::JoinHandle<Result<ConsumerOutcome, BenchError>>>, BenchError> {
        let mut tasks = Vec::new();
        for c in 0..self.args.clients {
            let client = PersistentSubscriptionsClient::new(channel(&self.args.target).await?)
                .max_decoding_message_size(64 << 20);
            let bench = Arc::clone(self);
            let seen = Arc::clone(seen);
            let done = Arc::clone(done);
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                bench.consumer(client, key, c, &seen, &done).await
            }));
        }
        Ok(tasks)
    }

    /// The group this run uses: on `$all`, this run's streams only.
    fn group(&self, start_from: proto::group_settings::StartFrom) -> proto::CreateGroupRequest {
        let key = proto::GroupKey {
            source: Some(proto::GroupSource {
                kind: Some(proto::group_source::Kind::All(proto::Empty {})),
            }),
            group: format!("bench-{}", self.run_id),
        };
        let held = (4 * self.args.clients * self.args.buffer_size).clamp(2_000, 100_000) as u32;
        let settings = proto::GroupSettings {
            start_from: Some(start_from),
            read_batch_size: Some(self.args.group_read_batch.clamp(1, held - 1)),
            history_buffer_size: Some(held),
            live_buffer_size: Some(held),
            checkpoint_after_ms: Some(1_000),
            max_checkpoint_count: Some(10_000),
            ..proto::GroupSettings::default()
        };
        proto::CreateGroupRequest {
            key: Some(key),
            settings: Some(settings),
            filter: Some(proto::GroupFilter {
                stream_prefixes: vec![self.stream_prefix()],
                ..proto::GroupFilter::default()
            }),
        }
    }

    /// `--mode persistent-live`: consumers connected to a group created at the end of the
    /// log while the clients append at `--rate`; latency from append to delivery.
    pub(super) async fn persistent_live(self) -> Result<Report, BenchError> {
        if self.args.buffer_size == 0 {
            return Err(BenchError::Args("--buffer-size must be at least 1".into()));
        }
        let bench = Arc::new(self);
        let mut groups = PersistentSubscriptionsClient::new(channel(&bench.args.target).await?);
        let create = bench.group(proto::group_settings::StartFrom::End(proto::Empty {}));
        let key = create.key.clone().unwrap_or_default();
        groups.create_group(create).await?;
        let seen = Arc::new(Tracker::Live(LiveSeen::default()));
        let done = Arc::new(AtomicBool::new(false));
        let tasks = bench.consumers(&key, &seen, &done).await?;
        let duration = Duration::from_secs_f64(bench.args.duration_s);
        let appended = bench.appenders(duration, Some(bench.args.rate)).await?;
        // Every acknowledged append must be delivered and acked.
        let wait_until = Instant::now() + Duration::from_secs(10);
        let mut acked = 0;
        while Instant::now() < wait_until && !tasks.iter().any(|t| t.is_finished()) {
            acked = groups
                .get_group(proto::GetGroupRequest {
                    key: Some(key.clone()),
                })
                .await?
                .into_inner()
                .group
                .unwrap_or_default()
                .acked;
            if seen.unique() >= appended.events && acked >= appended.events {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for t in tasks {
            let o = t
                .await
                .map_err(|e| BenchError::Verify(format!("consumer task failed: {e}")))??;
            latencies.extend(o.latencies_us);
        }
        groups
            .delete_group(proto::DeleteGroupRequest { key: Some(key) })
            .await?;
        let delivered = seen.unique();
        if delivered != appended.events || acked < appended.events {
            return Err(BenchError::Verify(format!(
                "appended {} events, the group delivered {delivered} and counted {acked} acks",
                appended.events
            )));
        }
        latencies.sort_unstable();
        let duplicates = seen.duplicates();
        Ok(Report {
            mode: Mode::PersistentLive,
            events: delivered,
            requests: appended.requests,
            elapsed: appended.elapsed,
            latencies_us: latencies,
            verified: delivered + duplicates,
            duplicates,
        })
    }

    fn stream_prefix(&self) -> String {
        format!("bench-{}-", self.run_id)
    }
}

async fn send_ack(
    requests: &mpsc::Sender<proto::ConsumeRequest>,
    acks: &mut Vec<bytes::Bytes>,
) -> Result<(), BenchError> {
    if acks.is_empty() {
        return Ok(());
    }
    let ids = std::mem::replace(acks, Vec::with_capacity(ACK_EVERY));
    requests
        .send(proto::ConsumeRequest {
            kind: Some(consume_request::Kind::Ack(proto::ConsumeAck { ids })),
        })
        .await
        .map_err(|_| BenchError::Verify("the consume call closed its requests".into()))
}
