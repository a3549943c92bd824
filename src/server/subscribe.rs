//! Catch-up subscriptions. Each subscription is one task that
//! 1. takes a cursor on the live ring (before reading anything, so nothing committed from now on
//!    can be missed),
//! 2. reads history from disk page by page until it reaches the end of the log,
//! 3. sends `CaughtUp`, then
//! 4. delivers live batches from the ring, skipping what it already delivered from disk.
//!
//! A batch that starts past the subscription's cursor (it fell more than the ring's capacity
//! behind, and `Lagged` told it so) sends it back to step 1 with a fresh cursor: `FellBehind`,
//! disk, `CaughtUp` again. Positions are dense, so "no gap, no duplicate" is checked on every
//! batch rather than assumed. The task ends when the client goes away (its channel closes), or
//! with UNAVAILABLE when the server shuts down.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::live::LiveBatch;
use super::proto::{self, subscribe_response::Kind};
use super::{Shared, convert, status};
use crate::error::Error;
use crate::types::{Direction, Filter, Position, Revision};

pub type Reply = Result<proto::SubscribeResponse, Status>;

/// What a subscription delivers.
pub enum Target {
    /// The whole log after a position, filtered.
    All {
        filter: Filter,
        checkpoint_interval: u64,
    },
    /// One stream.
    Stream { name: String },
}

/// Where a subscription stands.
struct Cursor {
    /// Every position up to here has been delivered or skipped by the filter.
    position: u64,
    /// Stream subscriptions: the next revision to deliver.
    next_revision: u64,
    /// Filtered subscriptions: positions scanned since the last checkpoint.
    since_checkpoint: u64,
}

/// The client went away or the server is stopping: the subscription ends.
struct Ended;

/// One page of history read from disk.
struct Page {
    events: Vec<crate::types::RecordedEvent>,
    /// Whole log: scanned up to here. Stream: the position of the last event read (or the
    /// cursor's, when none).
    scanned_to: u64,
    /// Stream: the next revision to read.
    next_revision: u64,
    /// The end of the log (or stream) was reached.
    done: bool,
}

pub struct Subscription {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Reply>,
    target: Target,
    cursor: Cursor,
}

impl Subscription {
    /// A subscription after `after_position` (whole log) or from revision `next_revision`
    /// (stream).
    pub fn new(
        shared: Arc<Shared>,
        tx: mpsc::Sender<Reply>,
        target: Target,
        after_position: u64,
        next_revision: u64,
    ) -> Subscription {
        Subscription {
            shared,
            tx,
            target,
            cursor: Cursor {
                position: after_position,
                next_revision,
                since_checkpoint: 0,
            },
        }
    }

    pub async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            _ = self.run_inner() => {}
            _ = shutdown.wait_for(|stop| *stop) => {
                let _ = self.tx.try_send(Err(status::shutting_down()));
            }
        }
    }

    async fn run_inner(&mut self) -> Result<(), Ended> {
        let mut ring = self.shared.live.subscribe();
        loop {
            self.catch_up().await?;
            self.send_caught_up().await?;
            // Live until the ring says we fell behind.
            loop {
                let batch = tokio::select! {
                    r = ring.recv() => r,
                    _ = self.tx.closed() => return Err(Ended),
                };
                match batch {
                    Ok(batch) => {
                        if !self.deliver_live(&batch).await? {
                            // A gap: read it from disk quietly; nothing was lost or repeated.
                            ring = ring.resubscribe();
                            self.catch_up().await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        ring = ring.resubscribe();
                        self.send(Kind::FellBehind(proto::FellBehind {
                            position: self.cursor.position,
                        }))
                        .await?;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Ended),
                }
            }
        }
    }

    /// Reads from disk until the end of the log, delivering as it goes. The next page is read
    /// (on the blocking pool) while the current one is converted and sent.
    async fn catch_up(&mut self) -> Result<(), Ended> {
        let mut next = Some(self.read_page(self.cursor.position + 1, self.cursor.next_revision));
        while let Some(read) = next.take() {
            let page = match read.await {
                Ok(Ok(page)) => page,
                Ok(Err(status)) => return self.fail(status).await,
                Err(e) => return self.fail(status::internal(format!("read task: {e}"))).await,
            };
            if !page.done {
                next = Some(self.read_page(page.scanned_to + 1, page.next_revision));
            }
            let scanned = page.scanned_to.saturating_sub(self.cursor.position);
            let events: Vec<_> = page.events.iter().map(convert::recorded).collect();
            self.send_events(events).await?;
            self.cursor.position = self.cursor.position.max(page.scanned_to);
            self.cursor.next_revision = page.next_revision;
            self.count_scanned(scanned).await?;
        }
        Ok(())
    }

    /// Starts reading the page at `from` (whole log) or `revision` (stream).
    fn read_page(&self, from: u64, revision: u64) -> tokio::task::JoinHandle<Result<Page, Status>> {
        let store = Arc::clone(&self.shared.store);
        let count = self.shared.config.read_page_events;
        match &self.target {
            Target::All { filter, .. } => {
                let filter = filter.clone();
                tokio::task::spawn_blocking(move || {
                    let slice = store
                        .read_all(Position(from), Direction::Forwards, count, &filter)
                        .map_err(|e| status::to_status(&e))?;
                    Ok(Page {
                        scanned_to: slice.scanned_to.0.max(from - 1),
                        next_revision: revision,
                        done: slice.end_of_log,
                        events: slice.events,
                    })
                })
            }
            Target::Stream { name } => {
                let name = name.clone();
                // `from` is one past the last position delivered; a stream read does not move it
                // unless it returns events.
                let position = from - 1;
                tokio::task::spawn_blocking(move || {
                    let events = match store.read_stream(
                        &name,
                        Revision(revision),
                        Direction::Forwards,
                        count,
                    ) {
                        Err(Error::StreamNotFound { .. }) => Vec::new(),
                        other => other.map_err(|e| status::to_status(&e))?,
                    };
                    Ok(Page {
                        scanned_to: events.last().map_or(position, |e| e.position.0),
                        next_revision: events.last().map_or(revision, |e| e.revision.0 + 1),
                        done: (events.len() as u64) < count,
                        events,
                    })
                })
            }
        }
    }

    /// Delivers the part of a live batch not yet delivered. Returns false when the batch starts
    /// past the cursor (a gap) and nothing was delivered.
    async fn deliver_live(&mut self, batch: &LiveBatch) -> Result<bool, Ended> {
        match &self.target {
            Target::All { filter, .. } => {
                if batch.last <= self.cursor.position {
                    return Ok(true);
                }
                if batch.first > self.cursor.position + 1 {
                    return Ok(false);
                }
                let after = self.cursor.position;
                let events: Vec<_> = batch
                    .events
                    .iter()
                    .filter(|e| {
                        e.position > after
                            && (filter.is_empty() || filter.matches(&e.stream, &e.event_type))
                    })
                    .cloned()
                    .collect();
                self.send_events(events).await?;
                self.cursor.position = batch.last;
                self.count_scanned(batch.last - after).await?;
                Ok(true)
            }
            Target::Stream { name } => {
                let mut events = Vec::new();
                for e in batch.events.iter().filter(|e| e.stream == *name) {
                    if e.revision < self.cursor.next_revision {
                        continue;
                    }
                    if e.revision > self.cursor.next_revision {
                        break;
                    }
                    self.cursor.next_revision += 1;
                    events.push(e.clone());
                }
                let gap = batch
                    .events
                    .iter()
                    .any(|e| e.stream == *name && e.revision >= self.cursor.next_revision);
                if let Some(last) = events.last() {
                    self.cursor.position = last.position;
                }
                self.send_events(events).await?;
                Ok(!gap)
            }
        }
    }

    /// Filtered whole-log subscriptions send a checkpoint every `checkpoint_interval` scanned
    /// positions.
    async fn count_scanned(&mut self, scanned: u64) -> Result<(), Ended> {
        let Target::All {
            filter,
            checkpoint_interval,
        } = &self.target
        else {
            return Ok(());
        };
        if filter.is_empty() {
            return Ok(());
        }
        self.cursor.since_checkpoint += scanned;
        if self.cursor.since_checkpoint >= *checkpoint_interval {
            self.cursor.since_checkpoint = 0;
            self.send(Kind::Checkpoint(proto::Checkpoint {
                position: self.cursor.position,
            }))
            .await?;
        }
        Ok(())
    }

    async fn send_caught_up(&mut self) -> Result<(), Ended> {
        let filtered = matches!(&self.target, Target::All { filter, .. } if !filter.is_empty());
        if filtered {
            self.cursor.since_checkpoint = 0;
            self.send(Kind::Checkpoint(proto::Checkpoint {
                position: self.cursor.position,
            }))
            .await?;
        }
        let revision = match &self.target {
            Target::Stream { .. } => self.cursor.next_revision.checked_sub(1),
            Target::All { .. } => None,
        };
        self.send(Kind::CaughtUp(proto::CaughtUp {
            position: self.cursor.position,
            revision,
        }))
        .await
    }

    async fn send_events(&mut self, events: Vec<proto::RecordedEvent>) -> Result<(), Ended> {
        if events.is_empty() {
            return Ok(());
        }
        let budget = self.shared.config.message_bytes_max / 2;
        for page in convert::pages(events, budget) {
            self.send(Kind::Events(proto::EventBatch { events: page }))
                .await?;
        }
        Ok(())
    }

    async fn send(&mut self, kind: Kind) -> Result<(), Ended> {
        self.tx
            .send(Ok(proto::SubscribeResponse { kind: Some(kind) }))
            .await
            .map_err(|_| Ended)
    }

    async fn fail<T>(&mut self, status: Status) -> Result<T, Ended> {
        let _ = self.tx.send(Err(status)).await;
        Err(Ended)
    }
}

/// Runs an engine call on the blocking pool, mapping its error to a status.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(status::to_status(&e)),
        Err(e) => Err(status::internal(format!("engine task failed: {e}"))),
    }
}
