//! The store: opens the log, builds the index, runs the writer thread, serves reads.
//!
//! Architecture invariant: the engine is synchronous and knows nothing of the network. Appends
//! go through one writer thread; reads run on the caller's thread, take the index lock only to
//! copy out locations, and decode frames from the memory-mapped segments without any lock.

pub(crate) mod checkpoint;
pub(crate) mod compaction;
pub(crate) mod lifecycle;
mod raw;
mod read;
mod snapshots;
pub(crate) mod tracking;
mod validate;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::{Index, IndexEntry};
use crate::lock::DirLock;
use crate::log::{self, SegmentView};
use crate::types::{AppendResult, EventData, ExpectedRevision, Position, StreamAppend};

pub use lifecycle::{
    DELETED_TRUNCATE_BEFORE, METADATA_EVENT_TYPE, METADATA_STREAM_PREFIX, StreamMetadata,
    StreamMetadataRecord, TOMBSTONE_EVENT_TYPE, metadata_stream_of,
};
pub(crate) use raw::Walk;
pub use tracking::{
    TRACKING_EVENT_TYPE, TRACKING_REGISTRY_STREAM, TRACKING_SOURCE_BYTES_MAX,
    TRACKING_SOURCE_EVENT_TYPE, TRACKING_STREAM_PREFIX, Tracking, TrackingEntry, TrackingExpected,
};
pub(crate) use validate::check_stream_name;

type Listener = Box<dyn Fn(Position) + Send + Sync>;

/// State shared by the store handle, the writer thread and readers.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: Config,
    pub(crate) index: RwLock<Index>,
    pub(crate) segments: RwLock<Vec<Arc<SegmentView>>>,
    pub(crate) snapshots: crate::snapshot::SnapshotStore,
    /// Metadata, deletes and tombstones of the streams that have any.
    pub(crate) lifecycle: lifecycle::Lifecycle,
    /// The highest position readers may see: durable under `FsyncPolicy::Always`.
    visible: AtomicU64,
    commit_mutex: Mutex<()>,
    commit_cv: Condvar,
    listeners: Mutex<Vec<Listener>>,
    poisoned: Mutex<Option<String>>,
    closed: AtomicBool,
    /// The last position handed to a checkpoint (frozen or written).
    checkpointed_through: AtomicU64,
    checkpoint: checkpoint::Control,
    inject_failure: AtomicBool,
}

impl Shared {
    pub(crate) fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Makes everything up to `position` visible and wakes whoever waits for new commits.
    pub(crate) fn publish(&self, position: Position) {
        self.visible.store(position.0, Ordering::Release);
        {
            let _guard = self.commit_mutex.lock();
            self.commit_cv.notify_all();
        }
        for listener in self.listeners.lock().iter() {
            listener(position);
        }
        let every = self.config.checkpoint_events;
        if every > 0 && position.0 - self.checkpointed_through.load(Ordering::Acquire) >= every {
            self.checkpoint.nudge();
        }
    }

    /// Blocks until an event after `after` is visible, the store closes, or `timeout` passes;
    /// returns the newest visible position.
    pub(crate) fn wait_for_commit(&self, after: Position, timeout: Duration) -> Position {
        let deadline = Instant::now() + timeout;
        let mut guard = self.commit_mutex.lock();
        loop {
            let visible = self.visible();
            if visible > after.0 || self.closed.load(Ordering::Acquire) {
                return Position(visible);
            }
            if self.commit_cv.wait_until(&mut guard, deadline).timed_out() {
                return Position(self.visible());
            }
        }
    }

    pub(crate) fn poison_cause(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    pub(crate) fn set_poisoned(&self, cause: String) {
        self.poisoned.lock().get_or_insert(cause);
    }

    pub(crate) fn segment(&self, index: u32) -> Option<Arc<SegmentView>> {
        self.segments.read().get(index as usize).cloned()
    }
}

/// Summary figures of an open store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    pub last_position: Position,
    pub streams: usize,
    pub event_types: usize,
    pub segments: usize,
    /// The last position the index checkpoints (runs on disk) cover.
    pub checkpoint_position: Position,
    /// Index run files in use.
    pub index_runs: usize,
    /// Events indexed in memory only, not yet in a checkpoint.
    pub memtable_events: u64,
}

/// An open event store. Cheap to share between threads by reference (`&Store` or `Arc<Store>`):
/// every method takes `&self`.
pub struct Store {
    shared: Arc<Shared>,
    tx: Option<mpsc::SyncSender<writer::Request>>,
    writer: Option<JoinHandle<Result<()>>>,
    checkpointer: Option<JoinHandle<()>>,
    /// Held until the store is dropped (or handed over by `close_keeping_lock`).
    lock: Option<DirLock>,
}

// A store is shared by reference between appender and reader threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
};

impl Store {
    /// Opens the store in `dir`, creating the directory and an empty log if needed. Checks every
    /// segment, truncates a torn tail, rebuilds the indexes, and starts the writer.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        compaction::recover(&dir)?;
        let started = Instant::now();
        let mapped = log::map_log(&dir, config.segment_bytes)?;
        // 1 unless the log was written starting after a gap (a replay from a position, or a
        // compaction that removed the oldest events): the index covers the log from there.
        let first_position = mapped.first_position()?;
        let loaded = if config.checkpoint_events > 0 {
            checkpoint::load(&dir, mapped.segments(), first_position)
        } else {
            checkpoint::Loaded {
                runs: Vec::new(),
                resume: None,
            }
        };
        let mut index = Index::from_runs(loaded.runs, first_position)?;
        let checkpoint_end = index.runs_end();
        let opened = mapped.scan(loaded.resume, &mut |path, location, f| {
            let body = f.frame.body(f.payload);
            let h = &f.frame.header;
            let as_corruption = |e| match e {
                Error::InvalidArgument(reason) => Error::corruption(path, f.offset, reason),
                other => other,
            };
            // The scan lets positions skip only where the log marks a gap; the positions
            // skipped become holes in the index.
            if h.position > index.next_position() {
                index.skip_to(h.position).map_err(as_corruption)?;
            }
            index
                .insert(IndexEntry {
                    position: h.position,
                    location,
                    stream: body.stream,
                    event_type: body.event_type,
                    revision: h.revision,
                    id: u128::from_be_bytes(h.id),
                })
                .map_err(as_corruption)
        })?;
        // A log whose newest events were removed continues after a gap (its last segment is
        // empty and starts there): the writer's first append lands past the index's end, and
        // its insert adds the holes before it.
        if opened.next_position > index.next_position() {
            index.skip_to(opened.next_position)?;
        }
        let (streams, types) = index.counts();
        tracing::info!(
            dir = %dir.display(),
            last_position = opened.next_position - 1,
            checkpoint_through = checkpoint_end,
            replayed = opened.next_position - 1 - checkpoint_end,
            index_runs = index.runs().len(),
            streams,
            event_types = types,
            segments = opened.segments.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened store: checkpoint loaded, log after it checked and indexed"
        );
        let snapshots = crate::snapshot::SnapshotStore::open(&dir, &config)?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            snapshots,
            visible: AtomicU64::new(opened.next_position - 1),
            index: RwLock::new(index),
            segments: RwLock::new(opened.segments),
            commit_mutex: Mutex::new(()),
            commit_cv: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            poisoned: Mutex::new(None),
            closed: AtomicBool::new(false),
            inject_failure: AtomicBool::new(false),
            checkpointed_through: AtomicU64::new(checkpoint_end),
            checkpoint: checkpoint::Control::default(),
            lifecycle: lifecycle::Lifecycle::default(),
            config,
        });
        let life = lifecycle::load(&shared)?;
        // Snapshots of a deleted stream are removed just after its delete commits; a crash in
        // between leaves them, and they must not outlive it (a revived stream would load one).
        for (stream, l) in &life {
            if l.tombstoned || l.is_deleted() {
                shared.snapshots.delete_stream(stream)?;
            }
        }
        shared.lifecycle.publish(life.clone());
        let (tx, rx) = mpsc::sync_channel(shared.config.writer_queue_max);
        let w = writer::Writer::new(
            shared.clone(),
            opened.writer,
            rx,
            opened.next_position,
            life,
        );
        let writer = std::thread::Builder::new()
            .name("statestore-writer".into())
            .spawn(move || w.run())
            .map_err(|e| Error::io(&dir, e))?;
        let checkpointer = if shared.config.checkpoint_events > 0 {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("statestore-checkpoint".into())
                    .spawn(move || checkpoint::run_thread(s))
                    .map_err(|e| Error::io(&dir, e))?,
            )
        } else {
            None
        };
        Ok(Store {
            shared,
            tx: Some(tx),
            writer: Some(writer),
            checkpointer,
            lock: Some(lock),
        })
    }

    /// Appends `events` to one stream, atomically, if the stream is at `expected`.
    pub fn append(
        &self,
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        let mut results = self.append_multi(vec![StreamAppend::new(stream, expected, events)])?;
        results
            .pop()
            .ok_or_else(|| Error::InvalidArgument("append produced no result".into()))
    }

    /// Appends to several streams in one all-or-nothing commit, each part with its own
    /// expected revision. Results come in the order of `parts`.
    pub fn append_multi(&self, parts: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let slot = Arc::new(writer::ReplySlot::default());
        self.submit(parts, writer::Replier::new(slot.clone()))?;
        slot.wait()
    }

    /// Like [`Store::append_multi`], but returns at once and calls `done` with the result when
    /// the commit is durable (or has failed). `done` runs on the store's acknowledging thread
    /// (or on the caller's, for an append refused before it is queued) and must be quick: wake
    /// a task, send on a channel. For callers that must not block, such as an async server;
    /// this call itself blocks only while the writer's queue is full.
    pub fn append_multi_with(
        &self,
        parts: Vec<StreamAppend>,
        done: impl FnOnce(Result<Vec<AppendResult>>) + Send + 'static,
    ) {
        let reply = writer::Replier::callback(Box::new(done));
        if let Err((e, reply)) = self.submit_or_return(parts, reply) {
            reply.send(Err(e));
        }
    }

    /// Like [`Store::append_multi_with`], but never blocks: when the writer's queue is full the
    /// checked append comes back as [`QueueFull`], for the caller to hand over with
    /// [`QueueFull::wait`] where blocking is allowed. An async caller tries this on its worker
    /// and moves to a blocking thread only when the queue is full.
    pub fn try_append_multi_with(
        &self,
        parts: Vec<StreamAppend>,
        done: impl FnOnce(Result<Vec<AppendResult>>) + Send + 'static,
    ) -> std::result::Result<(), Box<QueueFull>> {
        self.try_commit_with(parts, None, String::new(), done)
    }

    /// Appends `parts` and, in the same atomic commit, the tracking entry `tracking` (see
    /// [`Tracking`]); blocks until the commit is durable. The parts may be empty when there
    /// is a tracking entry. Results come in the order of `parts`, then, for a tracked commit,
    /// the result of the tracking record. A retry of a tracked commit (the same source and
    /// position, the same streams) gets the original results.
    ///
    /// Errors besides those of appends: `TrackingNotIncreasing` when the position is not
    /// greater than the stored one, `TrackingConflict` when `expected` does not hold.
    /// `principal` is recorded with a tracking-only commit.
    pub fn commit(
        &self,
        parts: Vec<StreamAppend>,
        tracking: Option<Tracking>,
        principal: &str,
    ) -> Result<Vec<AppendResult>> {
        let slot = Arc::new(writer::ReplySlot::default());
        let done = {
            let slot = slot.clone();
            move |answer| writer::Replier::new(slot).send(answer)
        };
        if let Err(full) = self.try_commit_with(parts, tracking, principal.to_string(), done) {
            full.wait();
        }
        slot.wait()
    }

    /// [`Store::try_append_multi_with`] with an optional tracking entry: the non-blocking
    /// form of [`Store::commit`].
    pub fn try_commit_with(
        &self,
        mut parts: Vec<StreamAppend>,
        tracking: Option<Tracking>,
        principal: String,
        done: impl FnOnce(Result<Vec<AppendResult>>) + Send + 'static,
    ) -> std::result::Result<(), Box<QueueFull>> {
        let reply = writer::Replier::callback(Box::new(done));
        let prepared = validate::prepare_commit(&self.shared.config, &mut parts, tracking.as_ref());
        if let Err(e) = validate::check_principal(&principal) {
            reply.send(Err(e));
            return Ok(());
        }
        let encoded_bytes = match prepared {
            Ok(n) => n,
            Err(e) => {
                reply.send(Err(e));
                return Ok(());
            }
        };
        if let Some(cause) = self.shared.poison_cause() {
            reply.send(Err(Error::Poisoned { cause }));
            return Ok(());
        }
        let Some(tx) = self.tx.as_ref() else {
            reply.send(Err(Error::Closed));
            return Ok(());
        };
        let request = writer::Request {
            parts,
            op: None,
            principal,
            tracking,
            encoded_bytes,
            reply,
        };
        match tx.try_send(request) {
            // Boxed: the rare path carries the request so the common one stays small.
            Err(mpsc::TrySendError::Full(request)) => Err(Box::new(QueueFull {
                tx: tx.clone(),
                request,
            })),
            // Disconnected: the writer has stopped; dropping the request answers `Closed`.
            Ok(()) | Err(mpsc::TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    fn submit(&self, parts: Vec<StreamAppend>, reply: writer::Replier) -> Result<()> {
        // The error is returned; dropping the replier fills a slot nobody waits on.
        self.submit_or_return(parts, reply).map_err(|(e, _reply)| e)
    }

    fn submit_or_return(
        &self,
        mut parts: Vec<StreamAppend>,
        reply: writer::Replier,
    ) -> std::result::Result<(), (Error, writer::Replier)> {
        let encoded_bytes = match validate::prepare_append(&self.shared.config, &mut parts) {
            Ok(n) => n,
            Err(e) => return Err((e, reply)),
        };
        self.submit_request(parts, None, String::new(), encoded_bytes, reply)
    }

    /// Queues a checked append or lifecycle change for the writer.
    fn submit_request(
        &self,
        parts: Vec<StreamAppend>,
        op: Option<lifecycle::LifecycleOp>,
        principal: String,
        encoded_bytes: u64,
        reply: writer::Replier,
    ) -> std::result::Result<(), (Error, writer::Replier)> {
        if let Some(cause) = self.shared.poison_cause() {
            return Err((Error::Poisoned { cause }, reply));
        }
        let Some(tx) = self.tx.as_ref() else {
            return Err((Error::Closed, reply));
        };
        // A send fails only when the writer has stopped; the request (and its replier) is
        // dropped with the error, which answers `Closed`.
        let _ = tx.send(writer::Request {
            parts,
            op,
            principal,
            tracking: None,
            encoded_bytes,
            reply,
        });
        Ok(())
    }

    /// The position of the newest event readers can see (0 when the log is empty).
    pub fn last_position(&self) -> Position {
        Position(self.shared.visible())
    }

    /// Blocks until an event after `after` is visible or `timeout` passes; returns the newest
    /// visible position either way. This is how a live subscriber waits without polling.
    pub fn wait_for_commit(&self, after: Position, timeout: Duration) -> Position {
        self.shared.wait_for_commit(after, timeout)
    }

    /// Registers a function called on the writer thread after every commit becomes visible, with
    /// the newest visible position. It must be quick and must not block (wake a task, send on a
    /// non-blocking channel): the writer waits for it.
    pub fn on_commit(&self, listener: impl Fn(Position) + Send + Sync + 'static) {
        self.shared.listeners.lock().push(Box::new(listener));
    }

    pub fn stats(&self) -> StoreStats {
        let index = self.shared.index.read();
        let (streams, event_types) = index.counts();
        StoreStats {
            last_position: self.last_position(),
            streams,
            event_types,
            segments: self.shared.segments.read().len(),
            checkpoint_position: Position(index.runs_end()),
            index_runs: index.runs().len(),
            memtable_events: index.memtable_events(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stops the writer after the appends already queued, makes everything durable, and
    /// releases the directory lock. Dropping the store does the same but cannot report errors.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Like [`Store::close`], but keeps the directory locked: for an offline tool that goes on
    /// working on the files (compaction swaps the segments).
    pub(crate) fn close_keeping_lock(mut self) -> Result<DirLock> {
        self.shutdown()?;
        self.lock
            .take()
            .ok_or_else(|| Error::InvalidArgument("the store's lock was already released".into()))
    }

    fn shutdown(&mut self) -> Result<()> {
        drop(self.tx.take());
        let result = match self.writer.take() {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::Poisoned {
                    cause: "writer thread panicked".into(),
                })
            }),
            None => Ok(()),
        };
        // The checkpoint thread writes a last checkpoint of the memtable once the writer has
        // stopped, so the next open replays nothing.
        self.shared.checkpoint.stop();
        if let Some(handle) = self.checkpointer.take() {
            let _ = handle.join();
        }
        self.shared.closed.store(true, Ordering::Release);
        {
            let _guard = self.shared.commit_mutex.lock();
            self.shared.commit_cv.notify_all();
        }
        result
    }

    /// Makes the next write of the writer fail as a disk would, poisoning it. For tests of the
    /// failure path; not part of the supported API.
    #[doc(hidden)]
    pub fn inject_write_failure(&self) {
        self.shared.inject_failure.store(true, Ordering::Release);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

/// A checked append that did not fit in the writer's full queue (see
/// [`Store::try_append_multi_with`]).
pub struct QueueFull {
    tx: mpsc::SyncSender<writer::Request>,
    request: writer::Request,
}

impl QueueFull {
    /// Queues the append, blocking until the writer has room. Its callback answers as usual.
    pub fn wait(self) {
        // A send fails only when the writer has stopped; dropping the request answers `Closed`.
        let _ = self.tx.send(self.request);
    }
}
