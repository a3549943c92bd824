//! The writer thread: group commit.
//!
//! Appenders send requests over a bounded channel. The writer takes every request waiting,
//! checks each against the index (expected revision, idempotency), encodes the accepted ones
//! into one buffer, writes it with one `pwrite`, makes it durable with one `fdatasync`, then
//! publishes the new visible position and answers every appender in commit order.
//!
//! Architecture invariant: an appender is answered `Ok` only after its bytes are durable (under
//! [`FsyncPolicy::Always`]), and after the visible position covers them, so a reader that starts
//! after an acknowledgement sees the append.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};

use parking_lot::{Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use super::Shared;
use super::lifecycle::{self, LifecycleOp, StreamLife, StreamMetadata};
use super::tracking::{self, Tracking, TrackingExpected};
use crate::config::FsyncPolicy;
use crate::error::{ActualRevision, Error, Limit, Result};
use crate::index::{Index, IndexEntry};
use crate::log::LogWriter;
use crate::log::frame::{self, EventBody, EventHeader};
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::types::{AppendResult, EventData, ExpectedRevision, Position, Revision, StreamAppend};

pub struct Request {
    pub parts: Vec<StreamAppend>,
    /// A metadata change, delete or tombstone instead of an append (`parts` is then empty).
    pub op: Option<LifecycleOp>,
    /// Who asks for the lifecycle change `op`, recorded with its record (appends carry theirs
    /// in their parts).
    pub principal: String,
    /// The tracking entry committed with the parts (they may then be empty).
    pub tracking: Option<Tracking>,
    pub encoded_bytes: u64,
    pub reply: Replier,
}

type Answer = Result<Vec<AppendResult>>;

/// Where the writer leaves one appender's answer. Lighter than a channel per append: one
/// mutex, one condition variable, and no wake-up at all when the answer is there before the
/// appender waits.
#[derive(Default)]
pub struct ReplySlot {
    answer: Mutex<Option<Answer>>,
    ready: Condvar,
}

impl ReplySlot {
    /// Blocks until the writer answers.
    pub fn wait(&self) -> Answer {
        let mut answer = self.answer.lock();
        loop {
            if let Some(a) = answer.take() {
                return a;
            }
            self.ready.wait(&mut answer);
        }
    }
}

/// The writer's end of an append: a [`ReplySlot`] an appender thread waits on, or a callback
/// (for callers that must not block, such as an async server). Dropping it unanswered (the
/// writer stopped) answers `Error::Closed`, so no appender waits forever.
pub struct Replier(Option<Reply>);

enum Reply {
    Slot(Arc<ReplySlot>),
    Callback(Box<dyn FnOnce(Answer) + Send>),
}

impl Replier {
    pub fn new(slot: Arc<ReplySlot>) -> Replier {
        Replier(Some(Reply::Slot(slot)))
    }

    pub fn callback(done: Box<dyn FnOnce(Answer) + Send>) -> Replier {
        Replier(Some(Reply::Callback(done)))
    }

    pub fn send(mut self, answer: Answer) {
        if let Some(reply) = self.0.take() {
            deliver(reply, answer);
        }
    }
}

fn deliver(reply: Reply, answer: Answer) {
    match reply {
        Reply::Slot(slot) => {
            *slot.answer.lock() = Some(answer);
            slot.ready.notify_one();
        }
        Reply::Callback(done) => done(answer),
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        if let Some(reply) = self.0.take() {
            deliver(reply, Err(Error::Closed));
        }
    }
}

pub struct Writer {
    shared: Arc<Shared>,
    log: LogWriter,
    rx: Receiver<Request>,
    /// Position the next event gets.
    next_position: u64,
    /// Highest position whose bytes an fdatasync has covered.
    synced_through: u64,
    last_sync: Instant,
    buf: Vec<u8>,
    /// Hands answered groups to the acknowledging thread.
    acks: Option<std::sync::mpsc::Sender<Vec<(Replier, Answer)>>>,
    /// Groups handed to the acknowledging thread and not yet fully answered.
    acks_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// The lifecycle state including the commits staged and not yet published; what the checks
    /// of later requests in the same group must see.
    life: HashMap<String, StreamLife>,
    /// Streams whose lifecycle state changed in the group being committed.
    life_changed: Vec<String>,
    /// The tracking entries written or looked at since the open, including staged ones.
    tracking: HashMap<String, tracking::Stored>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        log: LogWriter,
        rx: Receiver<Request>,
        next_position: u64,
        life: HashMap<String, StreamLife>,
    ) -> Writer {
        Writer {
            life,
            life_changed: Vec::new(),
            tracking: HashMap::new(),
            shared,
            log,
            rx,
            next_position,
            synced_through: next_position - 1,
            last_sync: Instant::now(),
            buf: Vec::new(),
            acks: None,
            acks_pending: Arc::default(),
        }
    }

    /// Runs until every sender is gone, then makes everything written durable.
    pub fn run(mut self) -> Result<()> {
        // Waking dozens of appenders takes a system call each, and each woken appender may
        // preempt the thread that woke it. A separate thread does the waking, in commit order,
        // so the writer goes straight on to the next group.
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<Vec<(Replier, Answer)>>();
        let pending = self.acks_pending.clone();
        let acker = std::thread::Builder::new()
            .name("statestore-acker".into())
            .spawn(move || {
                for group in ack_rx {
                    for (reply, answer) in group {
                        reply.send(answer);
                    }
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
            })
            .ok();
        if acker.is_some() {
            self.acks = Some(ack_tx);
        }
        let result = self.run_groups();
        drop(self.acks.take());
        if let Some(acker) = acker {
            let _ = acker.join();
        }
        result
    }

    fn run_groups(&mut self) -> Result<()> {
        let group_max = self.shared.config.group_commit_bytes_max;
        let mut batch = Vec::new();
        loop {
            let first = match self.next_request() {
                Some(r) => r,
                None => break,
            };
            let mut bytes = first.encoded_bytes;
            batch.push(first);
            while bytes < group_max {
                match self.rx.try_recv() {
                    Ok(r) => {
                        bytes += r.encoded_bytes;
                        batch.push(r);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
        let written_through = self.next_position - 1;
        let result =
            if self.shared.poison_cause().is_none() && self.synced_through < written_through {
                self.log.sync()
            } else {
                Ok(())
            };
        self.log.finish();
        result
    }

    /// Waits for the next request; under an interval policy, syncs when the interval is up.
    fn next_request(&mut self) -> Option<Request> {
        let Some(interval) = self.shared.config.fsync_interval() else {
            return self.rx.recv().ok();
        };
        loop {
            // After a failure nothing is synced again: an fsync is never retried.
            let dirty = self.synced_through < self.next_position - 1;
            if !dirty || self.shared.poison_cause().is_some() {
                return self.rx.recv().ok();
            }
            let wait = interval.saturating_sub(self.last_sync.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(r) => return Some(r),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.sync() {
                        self.poison(&e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        if let Some(cause) = self.shared.poison_cause() {
            let answers = batch
                .drain(..)
                .map(|r| {
                    let answer = Err(Error::Poisoned {
                        cause: cause.clone(),
                    });
                    (r.reply, answer)
                })
                .collect();
            self.answer(answers);
            return;
        }
        self.buf.clear();
        let durable_through = self.synced_through;
        let mut replies = Vec::with_capacity(batch.len());
        let mut io_error = None;
        for r in batch.drain(..) {
            let result = if io_error.is_some() {
                Err(Error::Closed)
            } else {
                match self.stage(r.parts, r.op, r.principal, r.tracking, durable_through) {
                    Err(e @ Error::Io { .. }) => {
                        io_error = Some(e);
                        Err(Error::Closed)
                    }
                    other => other,
                }
            };
            replies.push((r.reply, result));
        }
        if io_error.is_none()
            && let Err(e) = self.flush_and_sync()
        {
            io_error = Some(e);
        }
        if let Some(e) = io_error {
            self.poison(&e);
            let cause = e.to_string();
            let answers = replies
                .into_iter()
                .map(|(reply, result)| {
                    let answer = match result {
                        Ok(_) | Err(Error::Closed) => Err(Error::Poisoned {
                            cause: cause.clone(),
                        }),
                        Err(other) => Err(other),
                    };
                    (reply, answer)
                })
                .collect();
            self.answer(answers);
            return;
        }
        if !self.life_changed.is_empty() {
            // Durable now: readers apply the new rules from the moment the commit is visible.
            let mut changed = std::mem::take(&mut self.life_changed);
            changed.sort_unstable();
            changed.dedup();
            let life = &self.life;
            self.shared.lifecycle.publish(
                changed
                    .into_iter()
                    .filter_map(|s| life.get(&s).cloned().map(|l| (s, l))),
            );
        }
        if self.next_position - 1 > self.shared.visible() {
            self.shared.publish(Position(self.next_position - 1));
        }
        self.answer(replies);
    }

    /// Answers a group's appenders, in order, through the acknowledging thread if it runs.
    ///
    /// A lone appender is answered here, saving a thread hop, when every earlier group has been
    /// answered already (so commit order holds).
    fn answer(&mut self, replies: Vec<(Replier, Answer)>) {
        let alone = replies.len() == 1 && self.acks_pending.load(Ordering::Acquire) == 0;
        let replies = match &self.acks {
            Some(tx) if !alone => {
                self.acks_pending.fetch_add(1, Ordering::AcqRel);
                match tx.send(replies) {
                    Ok(()) => return,
                    Err(returned) => {
                        self.acks_pending.fetch_sub(1, Ordering::AcqRel);
                        returned.0
                    }
                }
            }
            _ => replies,
        };
        for (reply, answer) in replies {
            reply.send(answer);
        }
    }

    fn flush_and_sync(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.flush()?;
        match self.shared.config.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::IntervalMs(ms)
                if self.last_sync.elapsed().as_millis() >= u128::from(ms) =>
            {
                self.sync()
            }
            FsyncPolicy::IntervalMs(_) | FsyncPolicy::Never => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.shared.take_injected_failure() {
            return Err(Error::io(
                "injected",
                std::io::Error::other("injected write failure"),
            ));
        }
        let result = self.log.write(&self.buf);
        self.buf.clear();
        result
    }

    fn sync(&mut self) -> Result<()> {
        self.log.sync()?;
        self.synced_through = self.next_position - 1;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn poison(&mut self, e: &Error) {
        tracing::error!(error = %e, "write or fsync failed: the writer stops accepting appends until the store is reopened");
        self.shared.set_poisoned(e.to_string());
    }

    /// Checks one append (or lifecycle change) and, if accepted, encodes it into the buffer and
    /// the index.
    fn stage(
        &mut self,
        parts: Vec<StreamAppend>,
        op: Option<LifecycleOp>,
        principal: String,
        tracking: Option<Tracking>,
        durable_through: u64,
    ) -> Result<Vec<AppendResult>> {
        if let Some(op) = op {
            return self.stage_lifecycle(op, principal, durable_through);
        }
        let tracked = match tracking {
            None => None,
            Some(t) => match self.check_tracking(&t, &parts)? {
                TrackingCheck::Retry(results) => return Ok(results),
                TrackingCheck::Fresh { is_new } => Some((t, is_new)),
            },
        };
        let mut currents = Vec::with_capacity(parts.len());
        let mut duplicates = Vec::new();
        {
            let index = self.shared.index.read();
            for part in &parts {
                let life = self.life.get(&part.stream);
                if life.is_some_and(|l| l.tombstoned) {
                    return Err(Error::StreamDeleted {
                        stream: part.stream.clone(),
                    });
                }
                match check_part(&index, part, life)? {
                    Outcome::Fresh(current) => currents.push(current),
                    Outcome::Duplicate(result) => duplicates.push((part.stream.as_str(), result)),
                }
            }
        }
        if !duplicates.is_empty() {
            // A tracked commit's retry is recognised by its tracking position (above); stored
            // events under a new position are not this commit's.
            if duplicates.len() == parts.len() && tracked.is_none() {
                return Ok(duplicates.into_iter().map(|(_, r)| r).collect());
            }
            // Some streams of a multi-stream append are already there and some are not: that
            // is not a retry of one atomic commit.
            let (stream, result) = duplicates.swap_remove(0);
            let part = parts.iter().find(|p| p.stream == stream);
            return Err(Error::IdempotencyConflict {
                stream: stream.to_string(),
                event_id: part
                    .and_then(|p| p.events.first())
                    .and_then(|e| e.id)
                    .unwrap_or_default(),
                revision: Revision(
                    result.revision.0 + 1 - part.map_or(1, |p| p.events.len() as u64),
                ),
            });
        }
        if self.life.is_empty() && tracked.is_none() {
            return self.write_parts(&parts, currents, durable_through);
        }
        // A soft-deleted stream comes back: in the same commit, before its events, its metadata
        // again with truncate-before at its old last revision + 1.
        let mut revived = Vec::new();
        for (part, current) in parts.iter().zip(&currents) {
            if let Some(life) = self.life.get(&part.stream)
                && life.is_deleted()
            {
                let metadata = StreamMetadata {
                    truncate_before: Some(Revision(current.map_or(0, |r| r + 1))),
                    ..life.metadata.clone()
                };
                revived.push((part.stream.clone(), life.meta_revision, metadata));
            }
        }
        let extra = revived.len();
        let mut all_parts = Vec::with_capacity(extra + parts.len());
        let mut all_currents = Vec::with_capacity(extra + parts.len());
        for (stream, meta_revision, metadata) in &revived {
            // The revival is the append's doing: recorded as made by its principal.
            let by = parts
                .iter()
                .find(|p| &p.stream == stream)
                .map(|p| p.principal.clone())
                .unwrap_or_default();
            all_parts.push(lifecycle::metadata_part(stream, metadata, true).by(by));
            all_currents.push(*meta_revision);
        }
        let user_parts = parts.len();
        all_parts.extend(parts);
        all_currents.extend(currents);
        if let Some((t, is_new)) = &tracked {
            let by = all_parts
                .last()
                .map_or_else(|| principal.clone(), |p| p.principal.clone());
            let predicted = self.predict(&all_parts, &all_currents);
            let record = tracking::Record {
                source: t.source.clone(),
                position: t.position,
                results: predicted[extra..]
                    .iter()
                    .map(|r| [r.first_position.0, r.last_position.0, r.revision.0])
                    .collect(),
            };
            let (registry, stream) = {
                let index = self.shared.index.read();
                (
                    index.stream_revision(tracking::TRACKING_REGISTRY_STREAM, u64::MAX)?,
                    index.stream_revision(&tracking::stream_of(&t.source), u64::MAX)?,
                )
            };
            if *is_new {
                let event = EventData::binary(
                    tracking::TRACKING_SOURCE_EVENT_TYPE,
                    t.source.clone().into_bytes(),
                )
                .with_id(super::validate::new_event_id());
                all_parts.push(
                    StreamAppend::new(
                        tracking::TRACKING_REGISTRY_STREAM,
                        ExpectedRevision::Any,
                        vec![event],
                    )
                    .by(by.clone()),
                );
                all_currents.push(registry);
            }
            let data = serde_json::to_vec(&record).unwrap_or_default();
            let event = EventData::json(tracking::TRACKING_EVENT_TYPE, data)
                .with_id(super::validate::new_event_id());
            all_parts.push(
                StreamAppend::new(
                    tracking::stream_of(&t.source),
                    ExpectedRevision::Any,
                    vec![event],
                )
                .by(by),
            );
            all_currents.push(stream);
        }
        let mut results = self.write_parts(&all_parts, all_currents, durable_through)?;
        if let Some((t, _)) = tracked {
            let record = results.last().copied().unwrap_or(AppendResult {
                first_position: Position(0),
                last_position: Position(0),
                revision: Revision(0),
            });
            let stored = tracking::Stored {
                position: t.position,
                record,
                results: results[extra..extra + user_parts].to_vec(),
            };
            self.tracking.insert(t.source, stored);
            // The answer: the parts' results, then the tracking record's.
            results.truncate(extra + user_parts);
            results.push(record);
        }
        for ((stream, _, metadata), result) in revived.into_iter().zip(&results) {
            let life = self.life.entry(stream.clone()).or_default();
            life.meta_revision = Some(result.revision.0);
            life.floor = metadata.truncate_before.map_or(0, |r| r.0);
            life.metadata = metadata;
        }
        for (part, result) in all_parts.iter().zip(&results).skip(extra) {
            if let Some(life) = self.life.get_mut(&part.stream) {
                life.last_revision = Some(result.revision.0);
                self.life_changed.push(part.stream.clone());
            }
        }
        results.drain(..extra);
        Ok(results)
    }

    /// Checks and writes a metadata change, delete or tombstone: one record, alone in its
    /// commit. Returns the record's result.
    fn stage_lifecycle(
        &mut self,
        op: LifecycleOp,
        principal: String,
        durable_through: u64,
    ) -> Result<Vec<AppendResult>> {
        let stream = match &op {
            LifecycleOp::SetMetadata { stream, .. }
            | LifecycleOp::Delete { stream, .. }
            | LifecycleOp::Tombstone { stream, .. } => stream.clone(),
        };
        let life = self.life.get(&stream).cloned().unwrap_or_default();
        // A tombstoned stream cannot be deleted again. Its metadata stream is its own stream
        // and still takes new versions; they change nothing, as the stream stays deleted.
        if life.tombstoned && !matches!(op, LifecycleOp::SetMetadata { .. }) {
            return Err(Error::StreamDeleted { stream });
        }
        let meta_stream = lifecycle::metadata_stream_of(&stream);
        let (current, meta_current) = {
            let index = self.shared.index.read();
            (
                index.stream_revision(&stream, u64::MAX)?,
                index.stream_revision(&meta_stream, u64::MAX)?,
            )
        };
        let wrong = |stream: &str, expected, actual: Option<u64>| Error::WrongExpectedRevision {
            stream: stream.to_string(),
            expected,
            actual: actual.map_or(ActualRevision::NoStream, |r| {
                ActualRevision::Revision(Revision(r))
            }),
        };
        let (part, part_current, new_life) = match op {
            LifecycleOp::SetMetadata {
                expected,
                mut metadata,
                ..
            } => {
                if !lifecycle::expected_holds(&meta_stream, expected, meta_current, None)? {
                    return Err(wrong(&meta_stream, expected, meta_current));
                }
                // Metadata with `$tb` = 2^63-1 is itself a soft delete (as in KurrentDB): the
                // stream reads as deleted and the next append brings it back. Any other new
                // metadata brings a soft-deleted stream back without its old events, and never
                // lowers truncate-before below the stream's last delete.
                let revival = life.is_deleted() && !metadata.is_deleted();
                let floor = if revival {
                    current.map_or(0, |r| r + 1)
                } else {
                    life.floor
                };
                if floor > 0 {
                    let tb = metadata.truncate_before.map_or(0, |r| r.0).max(floor);
                    metadata.truncate_before = Some(Revision(tb));
                }
                let part = lifecycle::metadata_part(&stream, &metadata, revival);
                let new_life = StreamLife {
                    metadata,
                    last_revision: current,
                    floor,
                    ..life
                };
                (part, meta_current, new_life)
            }
            LifecycleOp::Delete { expected, .. } => {
                // A stream with neither events nor metadata has nothing to delete. One with
                // only metadata exists (as in KurrentDB) and is deleted like any other.
                if current.is_none() && life.meta_revision.is_none() {
                    return Err(Error::StreamNotFound { stream });
                }
                if !lifecycle::expected_holds(&stream, expected, current, Some(&life))? {
                    return Err(wrong(&stream, expected, current));
                }
                let metadata = StreamMetadata {
                    truncate_before: Some(Revision(lifecycle::DELETED_TRUNCATE_BEFORE)),
                    ..StreamMetadata::default()
                };
                let part = lifecycle::metadata_part(&stream, &metadata, false);
                let new_life = StreamLife {
                    metadata,
                    last_revision: current,
                    ..life
                };
                (part, meta_current, new_life)
            }
            LifecycleOp::Tombstone { expected, .. } => {
                if !lifecycle::expected_holds(&stream, expected, current, Some(&life))? {
                    return Err(wrong(&stream, expected, current));
                }
                let new_life = StreamLife {
                    tombstoned: true,
                    last_revision: Some(current.map_or(0, |r| r + 1)),
                    ..life
                };
                (lifecycle::tombstone_part(&stream), current, new_life)
            }
        };
        let part = part.by(principal);
        let is_metadata = part.stream == meta_stream;
        let results = self.write_parts(&[part], vec![part_current], durable_through)?;
        let mut new_life = new_life;
        if is_metadata && let Some(r) = results.first() {
            new_life.meta_revision = Some(r.revision.0);
        }
        self.life.insert(stream.clone(), new_life);
        self.life_changed.push(stream);
        Ok(results)
    }

    /// Checks a commit's tracking entry against the stored one: a retry of the commit that
    /// stored it gets that commit's results; otherwise the position must increase and the
    /// expectation hold.
    fn check_tracking(&mut self, t: &Tracking, parts: &[StreamAppend]) -> Result<TrackingCheck> {
        tracking::check_source(&t.source)?;
        if !self.tracking.contains_key(&t.source)
            && let Some(stored) = tracking::load(&self.shared, &t.source, u64::MAX)?
        {
            self.tracking.insert(t.source.clone(), stored);
        }
        let stored = self.tracking.get(&t.source);
        let stored_position = stored.map(|s| s.position);
        let not_increasing = || Error::TrackingNotIncreasing {
            source_name: t.source.clone(),
            position: t.position,
            stored: stored_position.unwrap_or_default(),
        };
        if let Some(s) = stored
            && s.position == t.position
        {
            // The same streams, each holding the stored result's last revision there.
            let index = self.shared.index.read();
            // The same streams, each holding this request's event ids at the stored result's
            // revisions.
            let same = s.results.len() == parts.len()
                && parts.iter().zip(&s.results).all(|(p, r)| {
                    let n = p.events.len() as u64;
                    let first = (r.revision.0 + 1).checked_sub(n);
                    first.is_some_and(|first| {
                        p.events.iter().enumerate().all(|(k, e)| {
                            e.id.and_then(|id| {
                                index
                                    .revision_of_id_from(&p.stream, id.as_u128(), 0)
                                    .ok()
                                    .flatten()
                            }) == Some(first + k as u64)
                        })
                    })
                });
            if !same {
                return Err(not_increasing());
            }
            let mut results = s.results.clone();
            results.push(s.record);
            return Ok(TrackingCheck::Retry(results));
        }
        let holds = match t.expected {
            None => true,
            Some(TrackingExpected::None) => stored.is_none(),
            Some(TrackingExpected::Position(p)) => stored_position == Some(p),
        };
        if !holds {
            return Err(Error::TrackingConflict {
                source_name: t.source.clone(),
                expected: t.expected.unwrap_or(TrackingExpected::None),
                stored: stored_position,
            });
        }
        if stored_position.is_some_and(|s| t.position <= s) {
            return Err(not_increasing());
        }
        Ok(TrackingCheck::Fresh {
            is_new: stored.is_none(),
        })
    }

    /// The results `write_parts` will give these parts.
    fn predict(&self, parts: &[StreamAppend], currents: &[Option<u64>]) -> Vec<AppendResult> {
        let mut next = self.next_position;
        parts
            .iter()
            .zip(currents)
            .map(|(p, current)| {
                let n = p.events.len() as u64;
                let first = next;
                next += n;
                AppendResult {
                    first_position: Position(first),
                    last_position: Position(next - 1),
                    revision: Revision(current.map_or(0, |r| r + 1) + n - 1),
                }
            })
            .collect()
    }

    /// Encodes checked parts (each stream at revision `currents[k]` before it) as one commit
    /// into the buffer and the index.
    fn write_parts(
        &mut self,
        parts: &[StreamAppend],
        currents: Vec<Option<u64>>,
        durable_through: u64,
    ) -> Result<Vec<AppendResult>> {
        let commit_bytes: u64 = parts
            .iter()
            .flat_map(|p| {
                p.events
                    .iter()
                    .map(move |e| frame::serialized_len(&body(p, e)) as u64)
            })
            .sum();
        let room = self.shared.config.segment_bytes - SEGMENT_HEADER_BYTES as u64;
        if commit_bytes > room {
            // Only possible for an append at the size limit that also brings a deleted stream
            // back (its metadata record is added to the commit).
            return Err(Error::LimitExceeded {
                what: Limit::CommitBytes,
                limit: room,
                actual: commit_bytes,
            });
        }
        if self.buf.len() as u64 + commit_bytes > self.log.remaining() {
            self.flush()?;
            let view = self.log.roll(self.next_position)?;
            self.synced_through = self.next_position - 1;
            self.shared.segments.write().push(Arc::new(view));
        }

        let commit_count: u32 = parts.iter().map(|p| p.events.len() as u32).sum();
        let timestamp_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut results = Vec::with_capacity(parts.len());
        let commit_start = self.buf.len();
        let mut index = self.shared.index.write();
        let mut commit_index = 0u32;
        for (part, current) in parts.iter().zip(currents) {
            let first_revision = current.map_or(0, |r| r + 1);
            let first_position = self.next_position;
            for (k, event) in part.events.iter().enumerate() {
                let mut location = self.log.next_location();
                location.offset += self.buf.len() as u32;
                let id = event.id.unwrap_or_default();
                let header = EventHeader {
                    position: self.next_position,
                    revision: first_revision + k as u64,
                    durable_through,
                    timestamp_us,
                    id: *id.as_bytes(),
                    commit_index,
                    commit_count,
                    content_type: event.content_type.to_byte(),
                    flags: 0,
                };
                frame::encode_into(&mut self.buf, &header, &body(part, event));
                // The first insert after an open that found a gap at the end of the log (see
                // `Index::skip_to` in `Store::open`) also adds the holes before it.
                let inserted = index.insert(IndexEntry {
                    position: header.position,
                    location,
                    stream: &part.stream,
                    event_type: &event.event_type,
                    revision: header.revision,
                    id: id.as_u128(),
                });
                if let Err(reason) = inserted {
                    // The checks above make this unreachable; if it ever happens the index and
                    // the buffer disagree, so stop the writer rather than write a partial commit.
                    self.buf.truncate(commit_start);
                    return Err(Error::io(
                        "index",
                        std::io::Error::other(format!("index rejected a checked append: {reason}")),
                    ));
                }
                self.next_position += 1;
                commit_index += 1;
            }
            results.push(AppendResult {
                first_position: Position(first_position),
                last_position: Position(self.next_position - 1),
                revision: Revision(first_revision + part.events.len() as u64 - 1),
            });
        }
        Ok(results)
    }
}

fn body<'a>(part: &'a StreamAppend, event: &'a crate::types::EventData) -> EventBody<'a> {
    EventBody {
        stream: &part.stream,
        event_type: &event.event_type,
        data: &event.data,
        metadata: &event.metadata,
        principal: &part.principal,
    }
}

enum TrackingCheck {
    /// The commit is stored already: its results.
    Retry(Vec<AppendResult>),
    /// A new entry; `is_new` when the source had none.
    Fresh { is_new: bool },
}

enum Outcome {
    /// Not stored yet; the stream's current revision (including unpublished commits).
    Fresh(Option<u64>),
    /// A retry of an append that is already stored: its original result.
    Duplicate(AppendResult),
}

/// Idempotency first (a retry must get its original answer even though the stream has moved
/// on), then the expected-revision check, then the uniqueness of the ids within the stream.
fn check_part(index: &Index, part: &StreamAppend, life: Option<&StreamLife>) -> Result<Outcome> {
    let stream = part.stream.as_str();
    let current = index.stream_revision(stream, u64::MAX)?;
    // Events below the stream's truncate-before (all of them, for a soft-deleted stream) are
    // gone as far as retries are concerned: their ids are not looked at, and a `NoStream`
    // append to a stream brought back after a delete is at its place where the revival put it.
    let floor = life
        .and_then(|l| l.metadata.truncate_before)
        .map_or(0, |r| r.0);
    let at_expected_place = |first_revision: u64| match part.expected {
        ExpectedRevision::Exact(Revision(e)) => e.checked_add(1) == Some(first_revision),
        ExpectedRevision::NoStream => first_revision == 0 || first_revision == floor,
        ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
    };
    let ids: Vec<Option<uuid::Uuid>> = part.events.iter().map(|e| e.id).collect();
    // Where each id is already stored in this stream: one index lookup per event.
    let mut stored: Vec<Option<u64>> = Vec::with_capacity(ids.len());
    for id in &ids {
        stored.push(match id {
            Some(id) => index.revision_of_id_from(stream, id.as_u128(), floor)?,
            None => None,
        });
    }
    let first_id = ids.first().copied().flatten();
    if let Some(r) = stored.first().copied().flatten()
        && at_expected_place(r)
    {
        let conflict = || Error::IdempotencyConflict {
            stream: stream.to_string(),
            event_id: first_id.unwrap_or_default(),
            revision: Revision(r),
        };
        let position = |rev| -> Result<u64> {
            Ok(index.position_of_revision(stream, rev)?.unwrap_or_default())
        };
        // The stored events must be this append's: same ids, consecutive revisions, and
        // consecutive positions (one commit), or it is not a retry of one append.
        let first = position(r)?;
        for (k, stored) in stored.iter().enumerate() {
            let revision = r + k as u64;
            if *stored != Some(revision) || position(revision)? != first + k as u64 {
                return Err(conflict());
            }
        }
        let last = r + ids.len() as u64 - 1;
        return Ok(Outcome::Duplicate(AppendResult {
            first_position: Position(first),
            last_position: Position(position(last)?),
            revision: Revision(last),
        }));
    }
    // A partial retry: a later event is stored exactly where this append would have put it.
    for (k, (id, stored)) in ids.iter().zip(&stored).enumerate().skip(1) {
        if let Some(r) = *stored
            && r >= k as u64
            && at_expected_place(r - k as u64)
        {
            return Err(Error::IdempotencyConflict {
                stream: stream.to_string(),
                event_id: id.unwrap_or_default(),
                revision: Revision(r),
            });
        }
    }
    if !lifecycle::expected_holds(stream, part.expected, current, life)? {
        return Err(Error::WrongExpectedRevision {
            stream: stream.to_string(),
            expected: part.expected,
            actual: current.map_or(ActualRevision::NoStream, |r| {
                ActualRevision::Revision(Revision(r))
            }),
        });
    }
    // Not a retry. Event ids are unique within a stream: an id already stored in it (anywhere
    // but where a retry would have put this append) is a conflict, not a second copy.
    for (id, stored) in ids.iter().zip(&stored) {
        if let Some(r) = *stored {
            return Err(Error::IdempotencyConflict {
                stream: stream.to_string(),
                event_id: id.unwrap_or_default(),
                revision: Revision(r),
            });
        }
    }
    Ok(Outcome::Fresh(current))
}

impl Shared {
    pub(crate) fn take_injected_failure(&self) -> bool {
        self.inject_failure.swap(false, Ordering::AcqRel)
    }
}
