//! One persistent-subscription group: a task that reads its source, hands events to its
//! consumers, tracks what each has acknowledged, retries, parks, and checkpoints.
//!
//! The task owns all of the group's state; consumers and the manager talk to it through one
//! bounded command channel. Engine calls (reads, checkpoint and parking commits) run as child
//! tasks whose results come back through a `JoinSet`, so the loop never blocks.
//!
//! Invariants:
//! - the checkpoint is always below the oldest unresolved event: every event at or before it
//!   is acknowledged, skipped, parked (durably) or filtered out;
//! - one read cursor serves history and live alike, so the switch between them has no gap and
//!   no duplicate;
//! - the events held (delivered or waiting) never exceed the history (or live) buffer size,
//!   plus the parked events being replayed, which are read a page at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::settings::{Effective, StartFrom, Strategy};
use super::{
    CompiledFilter, ConsumerStats, GroupInfo, GroupKey, GroupSource, NackAction, PARKED_EVENT_TYPE,
    ParkedEntry, is_bookkeeping,
};
use crate::error::{Error, Result};
use crate::service::{Principal, Service, blocking, wire_bytes};
use crate::types::{
    Direction, EventData, ExpectedRevision, Position, RecordedEvent, Revision, StreamAppend,
};
use crate::{StreamMetadata, Tracking};

/// Lane of an event in the group's buffer: replayed parked events go before everything.
const REPLAY: u8 = 0;
const NORMAL: u8 = 1;

/// A buffer key: (lane, sequence), the sequence being the revision (stream groups) or the
/// position (`$all` groups). Replayed parked events use the parked entry's revision.
type Key = (u8, u64);

/// What a consumer receives.
#[derive(Debug)]
pub enum Delivery {
    Event {
        event: RecordedEvent,
        retry_count: u32,
    },
    /// The group dropped the consumer (update, delete, restart, shutdown).
    Dropped(Error),
}

/// Most bytes of events a group holds (waiting and in flight) from its source, whatever its
/// buffer sizes: 64 MiB, or one event when a single one is larger.
pub const HELD_BYTES_MAX: usize = 64 << 20;

/// Parked entries written in one commit, and their bytes.
const PARK_BATCH_MAX: usize = 256;
const PARK_BATCH_BYTES_MAX: usize = 256 << 10;

/// Bytes of the parked events one replay page brings back (a replay holds at most two pages).
const REPLAY_PAGE_BYTES_MAX: usize = 16 << 20;

pub(crate) enum Cmd {
    Connect {
        name: String,
        user: String,
        buffer_size: usize,
        tx: mpsc::Sender<Delivery>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Ack {
        consumer: u64,
        ids: Vec<Uuid>,
    },
    Nack {
        consumer: u64,
        ids: Vec<Uuid>,
        action: NackAction,
        reason: String,
    },
    Disconnect {
        consumer: u64,
    },
    Info {
        reply: oneshot::Sender<GroupInfo>,
    },
    ReplayParked {
        stop_at: Option<u64>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Ends the task after a last checkpoint; consumers get `Dropped(reason)`.
    Stop {
        reason: Error,
        reply: oneshot::Sender<()>,
    },
}

/// Results of the child tasks.
enum Done {
    Read(Result<ReadPage>),
    Checkpoint(Result<u64>),
    Parked { keys: Vec<Key>, result: Result<()> },
    ReplayPage(Result<ReplayPage>),
    Truncated(Result<()>),
}

struct ReadPage {
    events: Vec<RecordedEvent>,
    /// The next sequence to read.
    next: u64,
    /// Every sequence before `next` was read (stream) or scanned (`$all`).
    end: bool,
    /// The log's last position when the read began: every commit up to it is covered.
    covers: u64,
}

struct ReplayPage {
    /// (parked revision, original event) of each parked entry whose event still exists.
    events: Vec<(u64, RecordedEvent, u32)>,
    /// The parked stream's next revision to read.
    next: u64,
    /// The parked stream's revisions end here (exclusive) for this replay.
    end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    InFlight { consumer: u64, deadline: Instant },
    Delayed { until: Instant },
    Parking,
}

struct Slot {
    event: RecordedEvent,
    retries: u32,
    state: State,
    /// When first delivered in its current attempt (oldest in-flight age).
    sent_at: Option<Instant>,
}

impl Consumer {
    /// Below its in-flight limit, and with room in its queue (which may still hold
    /// deliveries whose timeout already took them back).
    fn has_room(&self) -> bool {
        self.in_flight < self.capacity && self.tx.capacity() > 0
    }
}

struct Consumer {
    id: u64,
    name: String,
    user: String,
    tx: mpsc::Sender<Delivery>,
    capacity: usize,
    in_flight: usize,
    delivered: u64,
    acked: u64,
    nacked: u64,
    connected_at: std::time::SystemTime,
}

/// How a group stands, for its start.
pub(crate) struct Start {
    pub key: GroupKey,
    pub id: String,
    pub settings: Effective,
    pub filter: CompiledFilter,
    /// Creation resolved `End` to this sequence.
    pub resolved_start: u64,
}

pub(crate) struct Group {
    service: Arc<Service>,
    key: GroupKey,
    id: String,
    s: Effective,
    filter: CompiledFilter,
    rx: mpsc::Receiver<Cmd>,
    commits: watch::Receiver<u64>,
    tasks: JoinSet<Done>,

    consumers: Vec<Consumer>,
    next_consumer: u64,
    round_robin: usize,

    slots: BTreeMap<Key, Slot>,
    /// Ready slots: (priority, lane, sequence); retries and replays (priority 0) first.
    ready: BTreeSet<(u8, u8, u64)>,
    by_id: HashMap<Uuid, Vec<Key>>,
    /// KeyOrdered: streams with an event in flight or waiting for a delayed retry.
    busy: HashMap<String, u32>,
    in_flight: usize,
    delayed: usize,
    normal_held: usize,
    /// Bytes of the events counted by `normal_held`.
    normal_bytes: usize,

    next_read: u64,
    reading: bool,
    caught_up: bool,
    /// Reached the end of the source once.
    live: bool,
    /// Every normal sequence below this has been read or scanned.
    read_through: Option<u64>,

    checkpoint: Option<u64>,
    checkpointing: bool,
    /// Events waiting to be parked, in the order they were parked, and whether a parking
    /// commit is in flight: one at a time, so the parked stream keeps park order.
    park_queue: Vec<(Key, EventData)>,
    parking: bool,
    resolved_since_checkpoint: u64,
    checkpoint_at: Instant,

    replay: Option<Replay>,
    parked_total: u64,

    delivered_total: u64,
    acked_total: u64,
    nacked_total: u64,
    parked_now: u64,
    stopping: Option<(Error, Vec<oneshot::Sender<()>>)>,
}

struct Replay {
    next: u64,
    /// Exclusive end (the parked stream's length when the replay began, or `stop_at`).
    end: u64,
    loading: bool,
    exhausted: bool,
}

/// The sequence of an event in its group's source.
fn seq_of(source: &GroupSource, e: &RecordedEvent) -> u64 {
    match source {
        GroupSource::Stream(_) => e.revision.0,
        GroupSource::All => e.position.0,
    }
}

impl Group {
    pub(crate) fn spawn(
        service: Arc<Service>,
        start: Start,
        checkpoint: Option<u64>,
        commits: watch::Receiver<u64>,
    ) -> mpsc::Sender<Cmd> {
        let (tx, rx) = mpsc::channel(1024);
        let next_read = match checkpoint {
            Some(c) => c + 1,
            None => match start.settings.start_from {
                StartFrom::Start => match start.key.source {
                    GroupSource::Stream(_) => 0,
                    GroupSource::All => 1,
                },
                StartFrom::End => start.resolved_start,
                StartFrom::At(p) => p,
            },
        };
        let group = Group {
            service,
            key: start.key,
            id: start.id,
            s: start.settings,
            filter: start.filter,
            rx,
            commits,
            tasks: JoinSet::new(),
            consumers: Vec::new(),
            next_consumer: 1,
            round_robin: 0,
            slots: BTreeMap::new(),
            ready: BTreeSet::new(),
            by_id: HashMap::new(),
            busy: HashMap::new(),
            in_flight: 0,
            delayed: 0,
            normal_held: 0,
            normal_bytes: 0,
            next_read,
            reading: false,
            caught_up: false,
            live: false,
            read_through: next_read.checked_sub(1),
            checkpoint,
            checkpointing: false,
            park_queue: Vec::new(),
            parking: false,
            resolved_since_checkpoint: 0,
            checkpoint_at: Instant::now(),
            replay: None,
            parked_total: 0,
            delivered_total: 0,
            acked_total: 0,
            nacked_total: 0,
            parked_now: 0,
            stopping: None,
        };
        tokio::spawn(group.run());
        tx
    }

    fn parked_stream(&self) -> String {
        super::parked_stream_of(&self.id)
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.parked_now = self.load_parked_count().await;
        loop {
            self.maybe_read();
            self.dispatch();
            if self.finish_stop() {
                return;
            }
            let waiting_for_commit = self.caught_up && !self.reading;
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    // Every handle is gone: the manager dropped the group.
                    None => {
                        self.begin_stop(Error::Closed, None);
                    }
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(done) => self.completed(done),
                    Err(e) => tracing::error!(group = %self.key, error = %e, "a persistent subscription task failed"),
                },
                changed = self.commits.changed(), if waiting_for_commit => {
                    if changed.is_err() {
                        self.begin_stop(Error::Closed, None);
                    } else {
                        self.caught_up = false;
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connect {
                name,
                user,
                buffer_size,
                tx,
                reply,
            } => {
                let max = self.s.max_subscriber_count;
                if self.stopping.is_some() {
                    let _ = reply.send(Err(Error::Closed));
                } else if max > 0 && self.consumers.len() >= max as usize {
                    let _ = reply.send(Err(Error::GroupFull {
                        source_name: self.key.source.name().to_string(),
                        group: self.key.group.clone(),
                        max,
                    }));
                } else {
                    let id = self.next_consumer;
                    self.next_consumer += 1;
                    self.consumers.push(Consumer {
                        id,
                        name,
                        user,
                        tx,
                        capacity: buffer_size.max(1),
                        in_flight: 0,
                        delivered: 0,
                        acked: 0,
                        nacked: 0,
                        connected_at: std::time::SystemTime::now(),
                    });
                    let _ = reply.send(Ok(id));
                }
            }
            Cmd::Ack { consumer, ids } => {
                for id in ids {
                    if let Some(key) = self.find(consumer, id) {
                        self.note_consumer(consumer, |c| c.acked += 1);
                        self.acked_total += 1;
                        self.resolve(key);
                    }
                }
                self.maybe_checkpoint(false);
            }
            Cmd::Nack {
                consumer,
                ids,
                action,
                reason,
            } => {
                for id in ids {
                    let Some(key) = self.find(consumer, id) else {
                        continue;
                    };
                    self.note_consumer(consumer, |c| c.nacked += 1);
                    self.nacked_total += 1;
                    match action {
                        NackAction::Park => self.park(key, &reason),
                        NackAction::Skip => self.resolve(key),
                        NackAction::Retry | NackAction::Unknown => self.retry(key, None, &reason),
                        NackAction::RetryAfter(delay) => self.retry(key, Some(delay), &reason),
                        NackAction::Extend => self.extend(key),
                        NackAction::Stop => {
                            // The consumer gives up: its events go to the others.
                            self.retry(key, None, &reason);
                        }
                    }
                }
                if action == NackAction::Stop {
                    self.disconnect(consumer);
                }
                self.maybe_checkpoint(false);
            }
            Cmd::Disconnect { consumer } => self.disconnect(consumer),
            Cmd::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Cmd::ReplayParked { stop_at, reply } => {
                if self.replay.is_some() {
                    let _ = reply.send(Err(Error::InvalidArgument(
                        "parked events of this group are being replayed already".into(),
                    )));
                } else {
                    self.start_replay(stop_at, reply);
                }
            }
            Cmd::Stop { reason, reply } => self.begin_stop(reason, Some(reply)),
        }
    }

    /// The in-flight event `id` of `consumer` (or, as KurrentDB accepts, of any consumer).
    fn find(&self, consumer: u64, id: Uuid) -> Option<Key> {
        let keys = self.by_id.get(&id)?;
        let mine = keys.iter().find(|k| {
            matches!(self.slots.get(k).map(|s| s.state), Some(State::InFlight { consumer: c, .. }) if c == consumer)
        });
        mine.or_else(|| {
            keys.iter().find(|k| {
                matches!(
                    self.slots.get(k).map(|s| s.state),
                    Some(State::InFlight { .. })
                )
            })
        })
        .copied()
    }

    fn note_consumer(&mut self, id: u64, f: impl FnOnce(&mut Consumer)) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == id) {
            f(c);
        }
    }

    /// Takes a slot out of flight (or delay), giving back its consumer's room.
    fn leave_state(&mut self, key: Key) {
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        let state = slot.state;
        let stream = slot.event.stream().to_string();
        match state {
            State::InFlight { consumer, .. } => {
                self.in_flight -= 1;
                self.note_consumer(consumer, |c| c.in_flight = c.in_flight.saturating_sub(1));
                self.unbusy(&stream);
            }
            State::Delayed { .. } => {
                self.delayed -= 1;
                self.unbusy(&stream);
            }
            State::Ready => {
                let prio = u8::from(slot.retries == 0 && key.0 == NORMAL);
                self.ready.remove(&(prio, key.0, key.1));
            }
            State::Parking => {}
        }
    }

    fn unbusy(&mut self, stream: &str) {
        if self.s.strategy != Strategy::KeyOrdered {
            return;
        }
        if let Some(n) = self.busy.get_mut(stream) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(stream);
            }
        }
    }

    fn make_ready(&mut self, key: Key) {
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.state = State::Ready;
            slot.sent_at = None;
            let prio = u8::from(slot.retries == 0 && key.0 == NORMAL);
            self.ready.insert((prio, key.0, key.1));
        }
    }

    /// Acknowledged, skipped or parked: the event leaves the buffer.
    fn resolve(&mut self, key: Key) {
        self.leave_state(key);
        let Some(slot) = self.slots.remove(&key) else {
            return;
        };
        if let Some(keys) = self.by_id.get_mut(&slot.event.id) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_id.remove(&slot.event.id);
            }
        }
        if key.0 == NORMAL {
            self.normal_held -= 1;
            self.normal_bytes -= wire_bytes(&slot.event);
            self.resolved_since_checkpoint += 1;
        }
        self.maybe_finish_replay();
    }

    fn retry(&mut self, key: Key, delay: Option<Duration>, reason: &str) {
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        if slot.retries >= self.s.max_retry_count {
            let reason = if reason.is_empty() {
                "maximum retry count reached"
            } else {
                reason
            };
            self.park(key, reason);
            return;
        }
        self.leave_state(key);
        let stream = match self.slots.get_mut(&key) {
            Some(slot) => {
                slot.retries += 1;
                slot.event.stream().to_string()
            }
            None => return,
        };
        match delay {
            Some(d) if !d.is_zero() => {
                if let Some(slot) = self.slots.get_mut(&key) {
                    slot.state = State::Delayed {
                        until: Instant::now() + d,
                    };
                }
                self.delayed += 1;
                if self.s.strategy == Strategy::KeyOrdered {
                    *self.busy.entry(stream).or_default() += 1;
                }
            }
            _ => self.make_ready(key),
        }
    }

    fn extend(&mut self, key: Key) {
        let timeout = self.s.message_timeout;
        if let Some(slot) = self.slots.get_mut(&key)
            && let State::InFlight { consumer, .. } = slot.state
        {
            slot.state = State::InFlight {
                consumer,
                deadline: Instant::now() + timeout,
            };
        }
    }

    /// Writes a parked entry; the event counts as resolved once it is durable.
    fn park(&mut self, key: Key, reason: &str) {
        self.leave_state(key);
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.state = State::Parking;
        let e = &slot.event;
        let entry = ParkedEntry {
            stream: e.stream().to_string(),
            revision: e.revision.0,
            position: e.position.0,
            event_id: e.id,
            reason: reason.to_string(),
            retry_count: slot.retries,
            parked_at_us: super::now_us(),
        };
        let data = serde_json::to_vec(&entry).unwrap_or_default();
        self.park_queue
            .push((key, EventData::json(PARKED_EVENT_TYPE, data)));
        self.flush_parks();
    }

    /// Writes the queued parked entries, in order, as one commit (at most [`PARK_BATCH_MAX`]
    /// of them and [`PARK_BATCH_BYTES_MAX`]); the next batch waits for it.
    fn flush_parks(&mut self) {
        if self.parking || self.park_queue.is_empty() {
            return;
        }
        let mut take = 0;
        let mut bytes = 0usize;
        for (_, e) in self.park_queue.iter().take(PARK_BATCH_MAX) {
            bytes += e.data.len();
            if take > 0 && bytes > PARK_BATCH_BYTES_MAX {
                break;
            }
            take += 1;
        }
        let (keys, events): (Vec<Key>, Vec<EventData>) = self.park_queue.drain(..take).unzip();
        let part = StreamAppend::new(self.parked_stream(), ExpectedRevision::Any, events);
        let service = Arc::clone(&self.service);
        self.parking = true;
        self.tasks.spawn(async move {
            let result = service
                .commit_as(&Principal::System, vec![part], None)
                .await
                .map(|_| ());
            Done::Parked { keys, result }
        });
    }

    fn disconnect(&mut self, consumer: u64) {
        let Some(at) = self.consumers.iter().position(|c| c.id == consumer) else {
            return;
        };
        self.consumers.remove(at);
        // Its in-flight events go back to the others, before new events.
        let mine: Vec<Key> = self
            .slots
            .iter()
            .filter(
                |(_, s)| matches!(s.state, State::InFlight { consumer: c, .. } if c == consumer),
            )
            .map(|(k, _)| *k)
            .collect();
        for key in mine {
            // As a retry: a poison event that kills every consumer is parked at the maximum.
            self.retry(
                key,
                None,
                "the consumer disconnected with the event in flight",
            );
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.in_flight > 0 || self.delayed > 0 {
            let mut expired = Vec::new();
            let mut due = Vec::new();
            for (key, slot) in &self.slots {
                match slot.state {
                    State::InFlight { deadline, .. } if deadline <= now => expired.push(*key),
                    State::Delayed { until } if until <= now => due.push(*key),
                    _ => {}
                }
            }
            for key in expired {
                self.retry(key, None, "message timeout");
            }
            for key in due {
                self.leave_state(key);
                self.make_ready(key);
            }
        }
        self.maybe_checkpoint(false);
    }

    /// The checkpoint the buffer allows: just below the oldest unresolved event.
    fn checkpoint_candidate(&self) -> Option<u64> {
        match self.slots.range((NORMAL, 0)..).next() {
            Some(((_, seq), _)) => seq.checked_sub(1),
            None => self.read_through,
        }
    }

    fn maybe_checkpoint(&mut self, force: bool) {
        if self.checkpointing {
            return;
        }
        let Some(candidate) = self.checkpoint_candidate() else {
            return;
        };
        if self.checkpoint.is_some_and(|c| candidate <= c) {
            return;
        }
        let elapsed = self.checkpoint_at.elapsed() >= self.s.checkpoint_after;
        let count = self.resolved_since_checkpoint;
        let idle = self.in_flight == 0 && self.caught_up;
        let due = force
            || count >= self.s.max_checkpoint_count
            || (elapsed && (count >= self.s.min_checkpoint_count || idle));
        if !due {
            return;
        }
        self.checkpointing = true;
        self.resolved_since_checkpoint = 0;
        let service = Arc::clone(&self.service);
        let tracking = Tracking {
            source: super::checkpoint_source_of(&self.id),
            position: candidate,
            expected: None,
        };
        self.tasks.spawn(async move {
            let result = service
                .commit_as(&Principal::System, Vec::new(), Some(tracking))
                .await
                .map(|_| candidate);
            Done::Checkpoint(result)
        });
    }

    fn maybe_read(&mut self) {
        if self.reading || self.caught_up || self.stopping.is_some() {
            return;
        }
        // Catching up, the history buffer bounds what is held; once live, the live buffer.
        let cap = if self.live {
            self.s.live_buffer_size.max(self.s.read_batch_size)
        } else {
            self.s.history_buffer_size
        };
        // And bytes: a group holds at most HELD_BYTES_MAX of events (or one event, however
        // large), whatever its buffer sizes say.
        if self.normal_held >= cap || (self.normal_held > 0 && self.normal_bytes >= HELD_BYTES_MAX)
        {
            return;
        }
        let want = self.s.read_batch_size.min(cap - self.normal_held).max(1) as u64;
        let room = HELD_BYTES_MAX.saturating_sub(self.normal_bytes);
        self.reading = true;
        let from = self.next_read;
        let source = self.key.source.clone();
        let filter = self.filter.clone();
        let store = Arc::clone(&self.service.store);
        let parked = self.parked_stream();
        self.tasks.spawn(async move {
            let page = blocking(move || match &source {
                GroupSource::Stream(name) => {
                    let covers = store.last_position().0;
                    let mut events =
                        match store.read_stream(name, Revision(from), Direction::Forwards, want) {
                            Ok(events) => events,
                            Err(Error::StreamNotFound { .. } | Error::StreamDeleted { .. }) => {
                                Vec::new()
                            }
                            Err(e) => return Err(e),
                        };
                    let mut end = (events.len() as u64) < want;
                    if cut_to_bytes(&mut events, room) {
                        end = false;
                    }
                    let next = events.last().map_or(from, |e| e.revision.0 + 1);
                    Ok(ReadPage {
                        events,
                        next,
                        end,
                        covers,
                    })
                }
                GroupSource::All => {
                    let covers = store.last_position().0;
                    let engine_filter = filter.engine_filter();
                    let slice = store.read_all(
                        Position(from),
                        Direction::Forwards,
                        want,
                        &engine_filter,
                    )?;
                    let mut next = if slice.events.is_empty() && slice.scanned_to.0 < from {
                        from
                    } else {
                        slice.scanned_to.0 + 1
                    };
                    let mut end = slice.end_of_log;
                    let mut events = slice
                        .events
                        .into_iter()
                        .filter(|e| !is_bookkeeping(e.stream()) && e.stream() != parked)
                        .filter_map(|e| match filter.matches(e.stream(), e.event_type()) {
                            Ok(true) => Some(Ok(e)),
                            Ok(false) => None,
                            Err(err) => Some(Err(err)),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    if cut_to_bytes(&mut events, room) {
                        // Scanned only up to the last event kept.
                        next = events.last().map_or(from, |e| e.position.0 + 1);
                        end = false;
                    }
                    Ok(ReadPage {
                        events,
                        next,
                        end,
                        covers,
                    })
                }
            })
            .await;
            Done::Read(page)
        });
    }

    fn completed(&mut self, done: Done) {
        match done {
            Done::Read(page) => {
                self.reading = false;
                match page {
                    Ok(page) => self.take_page(page),
                    Err(e) => {
                        tracing::warn!(group = %self.key, error = %e, "persistent subscription read failed; retrying");
                        // Waits for the next commit or tick rather than spinning.
                        self.caught_up = true;
                    }
                }
            }
            Done::Checkpoint(result) => {
                self.checkpointing = false;
                match result {
                    Ok(position) => {
                        self.checkpoint = Some(position);
                        self.checkpoint_at = Instant::now();
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.key, error = %e, "checkpoint write failed");
                    }
                }
            }
            Done::Parked { keys, result } => {
                self.parking = false;
                match result {
                    Ok(()) => {
                        for key in keys {
                            self.parked_now += 1;
                            self.parked_total += 1;
                            if let Some(slot) = self.slots.get_mut(&key) {
                                slot.state = State::Ready;
                            }
                            // Not in the ready set (state was Parking): resolve without
                            // leaving it.
                            self.resolve_parked(key);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.key, error = %e, "parking events failed; they are retried");
                        for key in keys {
                            self.make_ready(key);
                        }
                    }
                }
                self.flush_parks();
            }
            Done::ReplayPage(page) => self.take_replay_page(page),
            Done::Truncated(result) => {
                if let Err(e) = result {
                    tracing::warn!(group = %self.key, error = %e, "truncating replayed parked events failed; they may be replayed again");
                }
                self.replay = None;
                self.spawn_parked_count();
            }
        }
    }

    fn resolve_parked(&mut self, key: Key) {
        let Some(slot) = self.slots.remove(&key) else {
            return;
        };
        if let Some(keys) = self.by_id.get_mut(&slot.event.id) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_id.remove(&slot.event.id);
            }
        }
        if key.0 == NORMAL {
            self.normal_held -= 1;
            self.normal_bytes -= wire_bytes(&slot.event);
            self.resolved_since_checkpoint += 1;
        }
        self.maybe_finish_replay();
        self.maybe_checkpoint(false);
    }

    fn take_page(&mut self, page: ReadPage) {
        let source = self.key.source.clone();
        for e in page.events {
            let seq = seq_of(&source, &e);
            if seq < self.next_read {
                continue;
            }
            self.insert(NORMAL, seq, e, 0);
        }
        if page.next > self.next_read {
            self.next_read = page.next;
            self.read_through = page.next.checked_sub(1);
        }
        if page.end {
            self.caught_up = true;
            self.live = true;
            // A commit may have landed between the read and now: look again once.
            self.commits.mark_unchanged();
            if *self.commits.borrow() > page.covers {
                self.caught_up = false;
            }
        }
    }

    fn insert(&mut self, lane: u8, seq: u64, event: RecordedEvent, retries: u32) {
        let key = (lane, seq);
        if self.slots.contains_key(&key) {
            return;
        }
        self.by_id.entry(event.id).or_default().push(key);
        let bytes = wire_bytes(&event);
        self.slots.insert(
            key,
            Slot {
                event,
                retries,
                state: State::Ready,
                sent_at: None,
            },
        );
        if lane == NORMAL {
            self.normal_held += 1;
            self.normal_bytes += bytes;
        }
        let prio = u8::from(retries == 0 && lane == NORMAL);
        self.ready.insert((prio, lane, seq));
    }

    /// Hands ready events to consumers with room, by the group's strategy.
    fn dispatch(&mut self) {
        if self.consumers.is_empty() || self.ready.is_empty() || self.stopping.is_some() {
            return;
        }
        let group_limit = self.s.max_in_flight;
        let mut after: Option<(u8, u8, u64)> = None;
        let mut blocked = 0;
        loop {
            if group_limit > 0 && self.in_flight >= group_limit {
                return;
            }
            if !self.consumers.iter().any(Consumer::has_room) {
                return;
            }
            let next = match after {
                None => self.ready.iter().next().copied(),
                Some(a) => self
                    .ready
                    .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .next()
                    .copied(),
            };
            let Some(item) = next else {
                return;
            };
            let key = (item.1, item.2);
            match self.choose(key) {
                Some(consumer) => self.send(key, consumer),
                None => {
                    after = Some(item);
                    blocked += 1;
                    // Pinned and key-ordered groups look past events whose consumer or stream
                    // is busy, a bounded number of them.
                    if blocked > 256
                        || matches!(
                            self.s.strategy,
                            Strategy::RoundRobin | Strategy::DispatchToSingle
                        )
                    {
                        return;
                    }
                }
            }
        }
    }

    fn choose(&mut self, key: Key) -> Option<usize> {
        let slot = self.slots.get(&key)?;
        let n = self.consumers.len();
        let free = Consumer::has_room;
        match self.s.strategy {
            Strategy::DispatchToSingle => self.consumers.iter().position(free),
            Strategy::RoundRobin => self.next_round_robin(),
            Strategy::KeyOrdered => {
                if self.busy.contains_key(slot.event.stream()) {
                    return None;
                }
                // Stream order: an earlier event of the stream still waiting goes first.
                self.next_round_robin()
            }
            Strategy::Pinned | Strategy::PinnedByCorrelation => {
                let subject = if self.s.strategy == Strategy::PinnedByCorrelation {
                    correlation_of(&slot.event).unwrap_or_else(|| slot.event.stream().to_string())
                } else {
                    slot.event.stream().to_string()
                };
                let mut h = std::collections::hash_map::DefaultHasher::new();
                subject.hash(&mut h);
                let at = (h.finish() % n as u64) as usize;
                free(&self.consumers[at]).then_some(at)
            }
        }
    }

    fn next_round_robin(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        for k in 0..n {
            let at = (self.round_robin + k) % n;
            if self.consumers[at].has_room() {
                self.round_robin = (at + 1) % n;
                return Some(at);
            }
        }
        None
    }

    fn send(&mut self, key: Key, at: usize) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let prio = u8::from(slot.retries == 0 && key.0 == NORMAL);
        self.ready.remove(&(prio, key.0, key.1));
        let consumer = &mut self.consumers[at];
        let delivery = Delivery::Event {
            event: slot.event.clone(),
            retry_count: slot.retries,
        };
        match consumer.tx.try_send(delivery) {
            Ok(()) => {}
            // Its queue still holds deliveries it has not taken (some timed out): the event
            // waits for room.
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.ready.insert((prio, key.0, key.1));
                return;
            }
            // Gone: it leaves, and the event waits.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                let id = consumer.id;
                self.ready.insert((prio, key.0, key.1));
                self.disconnect(id);
                return;
            }
        }
        consumer.in_flight += 1;
        consumer.delivered += 1;
        let id = consumer.id;
        slot.state = State::InFlight {
            consumer: id,
            deadline: Instant::now() + self.s.message_timeout,
        };
        slot.sent_at.get_or_insert_with(Instant::now);
        self.in_flight += 1;
        self.delivered_total += 1;
        if self.s.strategy == Strategy::KeyOrdered {
            *self
                .busy
                .entry(slot.event.stream().to_string())
                .or_default() += 1;
        }
    }

    fn start_replay(&mut self, stop_at: Option<u64>, reply: oneshot::Sender<Result<()>>) {
        let store = Arc::clone(&self.service.store);
        let stream = self.parked_stream();
        // The replay covers the entries parked so far (or the first `stop_at` of them).
        let bounds = (|| -> Result<(u64, u64)> {
            let Some(last) = store.stream_revision(&stream)? else {
                return Ok((0, 0));
            };
            let floor = store
                .stream_metadata(&stream)?
                .and_then(|(_, m)| m.truncate_before)
                .map_or(0, |r| r.0);
            let end = last.0 + 1;
            let end = match stop_at {
                Some(n) => end.min(floor.saturating_add(n)),
                None => end,
            };
            Ok((floor, end))
        })();
        match bounds {
            Ok((floor, end)) => {
                if floor < end {
                    self.replay = Some(Replay {
                        next: floor,
                        end,
                        loading: false,
                        exhausted: false,
                    });
                    self.load_replay_page();
                }
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn load_replay_page(&mut self) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        if replay.loading || replay.exhausted {
            return;
        }
        replay.loading = true;
        let (from, end) = (replay.next, replay.end);
        let want = (self.s.read_batch_size as u64).min(end - from).max(1);
        let store = Arc::clone(&self.service.store);
        let stream = self.parked_stream();
        self.tasks.spawn(async move {
            let page = blocking(move || {
                let entries =
                    match store.read_stream(&stream, Revision(from), Direction::Forwards, want) {
                        Ok(entries) => entries,
                        Err(Error::StreamNotFound { .. }) => Vec::new(),
                        Err(e) => return Err(e),
                    };
                let mut events = Vec::new();
                let mut next = from;
                let mut bytes = 0usize;
                // The page's bytes ran out before its entries did.
                let mut full = false;
                for entry in &entries {
                    if entry.revision.0 >= end {
                        break;
                    }
                    next = entry.revision.0 + 1;
                    let Ok(parked) = serde_json::from_slice::<ParkedEntry>(entry.data()) else {
                        continue;
                    };
                    // Gone (compacted away, or its stream deleted): nothing to replay.
                    if let Some(e) = store.read_event(Position(parked.position))? {
                        bytes = bytes.saturating_add(wire_bytes(&e));
                        events.push((entry.revision.0, e, parked.retry_count));
                        if bytes >= REPLAY_PAGE_BYTES_MAX {
                            full = true;
                            break;
                        }
                    }
                }
                let end_reached = next >= end || (entries.len() < want as usize && !full);
                Ok(ReplayPage {
                    events,
                    next,
                    end: end_reached,
                })
            })
            .await;
            Done::ReplayPage(page)
        });
    }

    fn take_replay_page(&mut self, page: Result<ReplayPage>) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        replay.loading = false;
        match page {
            Ok(page) => {
                replay.next = page.next;
                replay.exhausted = page.end;
                for (revision, event, _retries) in page.events {
                    // A replayed event starts its retries afresh.
                    self.insert(REPLAY, revision, event, 0);
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.key, error = %e, "reading parked events failed");
                replay.exhausted = true;
            }
        }
        self.maybe_finish_replay();
    }

    /// Loads the next page of parked events when the last is nearly done, and truncates the
    /// parked stream once every replayed event is resolved.
    fn maybe_finish_replay(&mut self) {
        let Some(replay) = self.replay.as_ref() else {
            return;
        };
        let replaying = self.slots.range((REPLAY, 0)..(NORMAL, 0)).count();
        if replay.loading {
            return;
        }
        if !replay.exhausted {
            if replaying < self.s.read_batch_size {
                self.load_replay_page();
            }
            return;
        }
        if replaying > 0 {
            return;
        }
        let upto = replay.next;
        // Done: hide the replayed entries (those parked again are after them).
        let service = Arc::clone(&self.service);
        let stream = self.parked_stream();
        self.replay = Some(Replay {
            next: upto,
            end: upto,
            loading: true,
            exhausted: true,
        });
        self.tasks.spawn(async move {
            let result = truncate_parked(&service, &stream, upto).await;
            Done::Truncated(result)
        });
    }

    async fn load_parked_count(&self) -> u64 {
        let store = Arc::clone(&self.service.store);
        let stream = self.parked_stream();
        blocking(move || parked_count(&store, &stream))
            .await
            .unwrap_or(0)
    }

    fn spawn_parked_count(&mut self) {
        // Cheap (a stream revision and its metadata, both in memory): done inline.
        let store = Arc::clone(&self.service.store);
        let stream = self.parked_stream();
        if let Ok(n) = parked_count(&store, &stream) {
            self.parked_now = n;
        }
    }

    fn begin_stop(&mut self, reason: Error, reply: Option<oneshot::Sender<()>>) {
        match &mut self.stopping {
            Some((_, replies)) => replies.extend(reply),
            None => {
                self.stopping = Some((reason, reply.into_iter().collect()));
                self.maybe_checkpoint(true);
            }
        }
    }

    /// Once stopping and the last checkpoint and parking writes are done: drops the consumers
    /// and answers. True when the task should end.
    fn finish_stop(&mut self) -> bool {
        if self.stopping.is_none() {
            return false;
        }
        let parking = self.slots.values().any(|s| s.state == State::Parking);
        if self.checkpointing || parking {
            return false;
        }
        // A checkpoint in flight when the stop began may be older than what is resolved now.
        self.maybe_checkpoint(true);
        if self.checkpointing {
            return false;
        }
        let Some((reason, replies)) = self.stopping.take() else {
            return false;
        };
        for c in self.consumers.drain(..) {
            let _ = c.tx.try_send(Delivery::Dropped(clone_error(&reason)));
        }
        for r in replies {
            let _ = r.send(());
        }
        true
    }

    fn info(&self) -> GroupInfo {
        let now = Instant::now();
        let oldest_in_flight = self
            .slots
            .values()
            .filter(|s| matches!(s.state, State::InFlight { .. }))
            .filter_map(|s| s.sent_at)
            .min()
            .map(|t| now.duration_since(t));
        let head = match &self.key.source {
            GroupSource::All => Some(self.service.store.last_position().0),
            GroupSource::Stream(name) => self
                .service
                .store
                .stream_revision(name)
                .ok()
                .flatten()
                .map(|r| r.0),
        };
        let status = if self.replay.is_some() {
            "ReplayingParkedMessages"
        } else if self.caught_up {
            "Live"
        } else {
            "Behind"
        };
        GroupInfo {
            key: self.key.clone(),
            status,
            checkpoint: self.checkpoint,
            last_known: head,
            read_through: self.read_through,
            in_flight: self.in_flight as u64,
            ready: self.ready.len() as u64,
            delayed: self.delayed as u64,
            buffered: self.slots.len() as u64,
            parked: self.parked_now,
            oldest_in_flight,
            delivered: self.delivered_total,
            acked: self.acked_total,
            nacked: self.nacked_total,
            lag: head.map(|h| h.saturating_sub(self.checkpoint.unwrap_or(0))),
            consumers: self
                .consumers
                .iter()
                .map(|c| ConsumerStats {
                    id: c.id,
                    name: c.name.clone(),
                    user: c.user.clone(),
                    in_flight: c.in_flight as u64,
                    buffer_size: c.capacity as u64,
                    delivered: c.delivered,
                    acked: c.acked,
                    nacked: c.nacked,
                    connected_at: c.connected_at,
                })
                .collect(),
            settings: None,
            parked_oldest_us: None,
        }
    }
}

fn correlation_of(e: &RecordedEvent) -> Option<String> {
    let meta: serde_json::Value = serde_json::from_slice(e.metadata()).ok()?;
    meta.get("$correlationId")?.as_str().map(str::to_string)
}

/// The events parked and not yet replayed or truncated.
pub(crate) fn parked_count(store: &crate::Store, stream: &str) -> Result<u64> {
    let Some(last) = store.stream_revision(stream)? else {
        return Ok(0);
    };
    let floor = match store.stream_metadata(stream) {
        Ok(m) => m.and_then(|(_, m)| m.truncate_before).map_or(0, |r| r.0),
        Err(Error::StreamDeleted { .. } | Error::StreamNotFound { .. }) => return Ok(0),
        Err(e) => return Err(e),
    };
    Ok((last.0 + 1).saturating_sub(floor))
}

/// Hides the parked entries below `upto`.
pub(crate) async fn truncate_parked(service: &Arc<Service>, stream: &str, upto: u64) -> Result<()> {
    let store = Arc::clone(&service.store);
    let s = stream.to_string();
    blocking(move || {
        let current = match store.stream_metadata(&s) {
            Ok(m) => m,
            Err(Error::StreamNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let (expected, mut metadata) = match current {
            Some((rev, m)) => (ExpectedRevision::Exact(rev), m),
            None => (ExpectedRevision::NoStream, StreamMetadata::default()),
        };
        if metadata.truncate_before.is_some_and(|tb| tb.0 >= upto) {
            return Ok(());
        }
        metadata.truncate_before = Some(Revision(upto));
        store
            .set_stream_metadata_by(&s, expected, metadata, "$system")
            .map(|_| ())
    })
    .await
}

/// Keeps the events that fit in `room` bytes (always the first, so a group makes progress
/// whatever one event's size). True when some were dropped.
fn cut_to_bytes(events: &mut Vec<RecordedEvent>, room: usize) -> bool {
    let mut used = 0usize;
    let mut keep = events.len();
    for (i, e) in events.iter().enumerate() {
        used = used.saturating_add(wire_bytes(e));
        if used > room && i > 0 {
            keep = i;
            break;
        }
    }
    let cut = keep < events.len();
    events.truncate(keep);
    cut
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::GroupNotFound { source_name, group } => Error::GroupNotFound {
            source_name: source_name.clone(),
            group: group.clone(),
        },
        Error::GroupDropped {
            source_name,
            group,
            reason,
        } => Error::GroupDropped {
            source_name: source_name.clone(),
            group: group.clone(),
            reason: reason.clone(),
        },
        Error::Closed => Error::Closed,
        other => Error::InvalidArgument(other.to_string()),
    }
}
