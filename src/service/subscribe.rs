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

use tokio::sync::{OwnedSemaphorePermit, broadcast};

use super::live::LiveBatch;
use super::outbox::{self, Outbox};
use super::{Events, Inbox, Service};
use crate::error::Error;
use crate::types::{Direction, Filter, Position, Revision};

/// What a subscription sends. Front-ends turn each into their wire's messages.
#[derive(Debug)]
pub enum SubscriptionMessage {
    /// Events in position order, at most about the service's subscriber message bytes (or
    /// one event).
    Events(Events),
    /// Every position up to `position` has been delivered or filtered out.
    Checkpoint { position: u64 },
    /// History is delivered; live events follow. `revision`: the last delivered revision of a
    /// stream subscription.
    CaughtUp {
        position: u64,
        revision: Option<u64>,
    },
    /// The subscriber fell behind the live ring and goes back to reading from disk.
    FellBehind { position: u64 },
}

/// A filter the engine's [`Filter`] cannot express (the KurrentDB adapter's regular
/// expressions and prefix lists), applied to what the engine's filter passes. An `Err` (a
/// budget spent) ends the call with that error.
pub trait Matcher: Send + Sync + 'static {
    fn matches(&self, stream: &str, event_type: &str) -> Result<bool, Error>;
}

/// The smallest page a catch-up reads from disk.
const PAGE_EVENTS_MIN: u64 = 16;

/// How long shutdown waits for room in a subscriber's buffer to tell it UNAVAILABLE.
const SHUTDOWN_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a subscription delivers.
pub enum Target {
    /// The whole log after a position, filtered by `filter` and then by `matcher`.
    All {
        filter: Filter,
        matcher: Option<Arc<dyn Matcher>>,
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
    /// Stream subscriptions: the last revision delivered, if any.
    last_revision: Option<u64>,
    /// Filtered subscriptions: the position of the last checkpoint sent (or the start).
    last_checkpoint: u64,
    /// The position of the last checkpoint actually sent.
    sent_checkpoint: Option<u64>,
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

impl Target {
    fn is_filtered(&self) -> bool {
        matches!(self, Target::All { filter, matcher, .. } if !filter.is_empty() || matcher.is_some())
    }
}

struct Subscription {
    service: Arc<Service>,
    tx: Outbox<Result<SubscriptionMessage, Error>>,
    target: Target,
    cursor: Cursor,
    /// The subscription's place under the server's cap, given back when it ends.
    _slot: OwnedSemaphorePermit,
}

impl Service {
    /// Starts a catch-up subscription after `after_position` (whole log) or from revision
    /// `next_revision` (stream). Checks the caller's rights and the server's cap on
    /// subscriptions; the subscription then runs until the receiver is dropped or the server
    /// shuts down (a last `Err(Closed)`).
    pub fn subscribe(
        self: &Arc<Self>,
        who: &super::Principal,
        target: Target,
        after_position: u64,
        next_revision: u64,
    ) -> Result<Inbox<Result<SubscriptionMessage, Error>>, Error> {
        match &target {
            Target::All { .. } => self.authorize_all(who)?,
            Target::Stream { name } => {
                self.check_read_name(name)?;
                self.authorize_read(who, name)?;
            }
        }
        let slot = Arc::clone(&self.subscriptions)
            .try_acquire_owned()
            .map_err(|_| Error::LimitExceeded {
                what: crate::Limit::Subscriptions,
                limit: self.config.subscriptions_max as u64,
                actual: self.config.subscriptions_max as u64 + 1,
            })?;
        let (tx, rx) = outbox::outbox(self.config.subscriber_buffer_bytes, &self.buffered);
        let subscription = Subscription {
            service: Arc::clone(self),
            tx,
            target,
            // No position is past the largest: "after the largest" waits for nothing, and
            // every `+ 1` on the cursor stays in range.
            cursor: Cursor {
                position: after_position.min(u64::MAX - 1),
                next_revision,
                last_revision: None,
                last_checkpoint: after_position.min(u64::MAX - 1),
                sent_checkpoint: None,
            },
            _slot: slot,
        };
        tokio::spawn(subscription.run());
        Ok(rx)
    }
}

impl Subscription {
    async fn run(mut self) {
        let mut shutdown = self.service.shutdown.clone();
        let stopping = tokio::select! {
            _ = self.run_inner() => false,
            stop = shutdown.wait_for(|stop| *stop) => stop.is_ok(),
        };
        if stopping {
            // Wait (briefly) for room: a full buffer must not turn the end into a clean one.
            let _ =
                tokio::time::timeout(SHUTDOWN_SEND_TIMEOUT, self.tx.send(Err(Error::Closed), 1))
                    .await;
        }
    }

    async fn run_inner(&mut self) -> Result<(), Ended> {
        let mut ring = self.service.live.subscribe();
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
                        let position = self.cursor.position;
                        self.send(SubscriptionMessage::FellBehind { position })
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
                Ok(Err(e)) => return self.fail(e).await,
                Err(e) => return self.fail(Error::Internal(format!("read task: {e}"))).await,
            };
            if !page.done {
                next = Some(self.read_page(page.scanned_to.saturating_add(1), page.next_revision));
            }
            let events = Events::new(page.events);
            if let Some(last) = events.last()
                && matches!(self.target, Target::Stream { .. })
            {
                self.cursor.last_revision = Some(last.revision.0);
            }
            self.deliver_scanned(events, page.scanned_to).await?;
            self.cursor.next_revision = page.next_revision;
        }
        Ok(())
    }

    /// Starts reading the page at `from` (whole log) or `revision` (stream).
    fn read_page(&self, from: u64, revision: u64) -> tokio::task::JoinHandle<Result<Page, Error>> {
        let store = Arc::clone(&self.service.store);
        // A page as large as the outbox has room for: a subscriber whose client stopped
        // reading holds a few events in hand, not a full page.
        let room_events = (self.tx.room() / super::EVENT_OVERHEAD_BYTES / 2) as u64;
        let page_max = self.service.config.read_page_events.max(1);
        let count = room_events.clamp(PAGE_EVENTS_MIN.min(page_max), page_max);
        match &self.target {
            Target::All {
                filter, matcher, ..
            } => {
                let filter = filter.clone();
                let matcher = matcher.clone();
                tokio::task::spawn_blocking(move || {
                    let mut slice =
                        store.read_all(Position(from), Direction::Forwards, count, &filter)?;
                    if let Some(m) = &matcher {
                        let mut kept = Vec::with_capacity(slice.events.len());
                        for e in slice.events.drain(..) {
                            if m.matches(e.stream(), e.event_type())? {
                                kept.push(e);
                            }
                        }
                        slice.events = kept;
                    }
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
                        other => other?,
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
            Target::All {
                filter, matcher, ..
            } => {
                if batch.last <= self.cursor.position {
                    return Ok(true);
                }
                if batch.first > self.cursor.position + 1 {
                    return Ok(false);
                }
                let after = self.cursor.position;
                let unfiltered = filter.is_empty() && matcher.is_none();
                let mut events = Vec::new();
                if unfiltered {
                    // Every event past the cursor, shared with every other subscriber.
                    let start = batch.events.partition_point(|e| e.position.0 <= after);
                    let all = Events::shared(&batch.events, start..batch.events.len());
                    self.deliver_scanned(all, batch.last).await?;
                    return Ok(true);
                }
                if batch.may_match(filter) {
                    for e in batch.events.iter() {
                        if e.position.0 <= after
                            || !(filter.is_empty() || filter.matches(e.stream(), e.event_type()))
                        {
                            continue;
                        }
                        let matched = match matcher
                            .as_ref()
                            .map(|m| m.matches(e.stream(), e.event_type()))
                        {
                            None | Some(Ok(true)) => true,
                            Some(Ok(false)) => false,
                            Some(Err(error)) => return self.fail(error).await,
                        };
                        if matched {
                            events.push(e.clone());
                        }
                    }
                }
                self.deliver_scanned(Events::new(events), batch.last)
                    .await?;
                Ok(true)
            }
            Target::Stream { name } => {
                if !batch.has_stream(name) {
                    return Ok(true);
                }
                let mut events = Vec::new();
                for e in batch.events.iter().filter(|e| e.stream() == name.as_str()) {
                    if e.revision.0 < self.cursor.next_revision {
                        continue;
                    }
                    if e.revision.0 > self.cursor.next_revision {
                        break;
                    }
                    self.cursor.next_revision += 1;
                    events.push(e.clone());
                }
                let gap = batch.events.iter().any(|e| {
                    e.stream() == name.as_str() && e.revision.0 >= self.cursor.next_revision
                });
                if let Some(last) = events.last() {
                    self.cursor.position = last.position.0;
                    self.cursor.last_revision = Some(last.revision.0);
                }
                let tombstoned = events
                    .last()
                    .is_some_and(|e| e.event_type() == crate::TOMBSTONE_EVENT_TYPE)
                    .then(|| name.clone());
                self.send_events(Events::new(events)).await?;
                if let Some(stream) = tombstoned {
                    // The stream is deleted for good: nothing can follow.
                    return self.fail(Error::StreamDeleted { stream }).await;
                }
                Ok(!gap)
            }
        }
    }

    /// Delivers `events` (in position order, all past the cursor) as the matches of every
    /// position up to `scanned_to`, and moves the cursor there. A filtered whole-log
    /// subscription also gets a `Checkpoint` every `checkpoint_interval` positions of that range,
    /// each sent after the events at or before it, however sparse the matches.
    async fn deliver_scanned(&mut self, mut events: Events, scanned_to: u64) -> Result<(), Ended> {
        let interval = match &self.target {
            Target::All {
                checkpoint_interval,
                ..
            } if self.target.is_filtered() => *checkpoint_interval,
            _ => {
                self.send_events(events).await?;
                self.cursor.position = self.cursor.position.max(scanned_to);
                return Ok(());
            }
        };
        let mut due = self.cursor.last_checkpoint.saturating_add(interval);
        while due <= scanned_to {
            let split = events.partition_point(|e| e.position.0 <= due);
            let (now, rest) = events.split_at(split);
            self.send_events(now).await?;
            events = rest;
            self.cursor.position = self.cursor.position.max(due);
            self.send_checkpoint().await?;
            due = self.cursor.last_checkpoint.saturating_add(interval);
        }
        self.send_events(events).await?;
        self.cursor.position = self.cursor.position.max(scanned_to);
        Ok(())
    }

    async fn send_checkpoint(&mut self) -> Result<(), Ended> {
        self.cursor.last_checkpoint = self.cursor.position;
        self.cursor.sent_checkpoint = Some(self.cursor.position);
        let position = self.cursor.position;
        self.send(SubscriptionMessage::Checkpoint { position })
            .await
    }

    async fn send_caught_up(&mut self) -> Result<(), Ended> {
        // A filtered subscription always gets a checkpoint on reaching the end, unless it
        // would repeat the one just sent.
        if self.target.is_filtered() && self.cursor.sent_checkpoint != Some(self.cursor.position) {
            self.send_checkpoint().await?;
        }
        let message = SubscriptionMessage::CaughtUp {
            position: self.cursor.position,
            revision: self.cursor.last_revision,
        };
        self.send(message).await
    }

    async fn send_events(&mut self, events: Events) -> Result<(), Ended> {
        if events.is_empty() {
            return Ok(());
        }
        let budget = self.service.config.subscriber_message_bytes;
        for (page, bytes) in super::reads::split_pages(events, budget) {
            self.send_sized(SubscriptionMessage::Events(page), bytes)
                .await?;
        }
        Ok(())
    }

    async fn send(&mut self, message: SubscriptionMessage) -> Result<(), Ended> {
        self.send_sized(message, 1).await
    }

    async fn send_sized(
        &mut self,
        message: SubscriptionMessage,
        bytes: usize,
    ) -> Result<(), Ended> {
        self.service
            .put(&self.tx, message, bytes)
            .await
            .map_err(|_| Ended)
    }

    async fn fail<T>(&mut self, error: Error) -> Result<T, Ended> {
        let _ = self.tx.send_last(Err(error));
        Err(Ended)
    }
}
