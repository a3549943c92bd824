//! Live fan-out. The engine calls a listener after every commit; the listener only bumps a
//! `watch` value. One publisher task then reads the new events once and sends them as shared
//! batches on a bounded `broadcast` ring. Every live subscriber reads the same `Arc`ed batches
//! (engine events: slices of the mapped log, so a batch holds no copy of event bytes), and an
//! idle subscriber costs one ring cursor. When no one subscribes the publisher reads nothing.
//!
//! The ring is the per-subscriber bound: a subscriber more than `capacity` batches behind gets
//! `Lagged` and goes back to reading from disk (see `subscribe`). Batches hold consecutive
//! positions `first..=last` and every event in them, unfiltered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::Store;
use crate::types::{Direction, Filter, Position, RecordedEvent};

/// Consecutive committed events, read once for every subscriber.
pub struct LiveBatch {
    pub first: u64,
    pub last: u64,
    pub events: Arc<[RecordedEvent]>,
    /// The distinct stream names and event types in `events`. A subscriber whose filter matches
    /// none of them skips the batch without looking at its events: with hundreds of filtered
    /// subscribers, per-event filtering was most of the server's CPU.
    pub streams: Vec<String>,
    pub event_types: Vec<String>,
}

impl LiveBatch {
    fn new(first: u64, last: u64, events: Vec<RecordedEvent>) -> LiveBatch {
        let mut streams = foldhash::HashSet::default();
        let mut types = foldhash::HashSet::default();
        for e in &events {
            streams.insert(e.stream());
            types.insert(e.event_type());
        }
        let streams = streams.into_iter().map(str::to_owned).collect();
        let event_types = types.into_iter().map(str::to_owned).collect();
        LiveBatch {
            first,
            last,
            events: events.into(),
            streams,
            event_types,
        }
    }

    /// False when no event of the batch can pass `filter`.
    pub fn may_match(&self, filter: &Filter) -> bool {
        if let Some(f) = &filter.stream
            && !self.streams.iter().any(|s| f.matches(s))
        {
            return false;
        }
        filter.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|t| filter.event_types.contains(t))
    }

    /// False when the batch holds no event of `stream`.
    pub fn has_stream(&self, stream: &str) -> bool {
        self.streams.iter().any(|s| s == stream)
    }
}

pub struct Live {
    tx: broadcast::Sender<Arc<LiveBatch>>,
}

impl Live {
    /// Registers the commit listener and starts the publisher on the current runtime. The
    /// publisher ends when `stop` turns true.
    pub fn start(
        store: Arc<Store>,
        capacity: usize,
        batch_events: u64,
        mut stop: watch::Receiver<bool>,
    ) -> Live {
        let (tx, _) = broadcast::channel(capacity);
        let (commit_tx, mut commit_rx) = watch::channel(store.last_position().0);
        store.on_commit(move |p: Position| {
            commit_tx.send_replace(p.0);
        });
        let publisher = tx.clone();
        tokio::spawn(async move {
            let mut published = *commit_rx.borrow_and_update();
            loop {
                tokio::select! {
                    changed = commit_rx.changed() => if changed.is_err() { return },
                    _ = stop.changed() => return,
                }
                let target = *commit_rx.borrow_and_update();
                if publisher.receiver_count() == 0 {
                    // A subscriber that arrives now reads these from disk: it subscribes before
                    // it reads, and the disk holds everything up to `target`.
                    published = published.max(target);
                    continue;
                }
                while published < target {
                    let from = published + 1;
                    // Read on this task, not the blocking pool: these events were written
                    // moments ago and are in the page cache, so the read does not wait on the
                    // disk, and a hop to another thread would cost more than the read.
                    let slice = match store.read_all(
                        Position(from),
                        Direction::Forwards,
                        batch_events,
                        &Filter::default(),
                    ) {
                        Ok(slice) => slice,
                        Err(e) => {
                            tracing::error!(error = %e, from, "live publisher cannot read new events; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    if slice.scanned_to.0 < from {
                        break;
                    }
                    let batch = LiveBatch::new(from, slice.scanned_to.0, slice.events);
                    published = batch.last;
                    // An error means no subscriber is left; they will read from disk.
                    let _ = publisher.send(Arc::new(batch));
                }
            }
        });
        Live { tx }
    }

    /// A cursor on the ring that sees every batch sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveBatch>> {
        self.tx.subscribe()
    }

    /// Subscribers currently holding a cursor on the ring.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}
