//! Reads as streams of pages. A read task reads the engine page by page on the blocking pool
//! and hands each page, cut to the service's page bytes, to the front-end through an outbox
//! bounded in bytes: a reader that does not read holds at most its buffer, and the next page
//! is read only when there is room for it.

use std::sync::Arc;

use super::events::Events;
use super::outbox::{self, Outbox};
use super::{Inbox, Matcher, Principal, Service, blocking, wire_bytes};
use crate::Snapshot;
use crate::error::{Error, Result};
use crate::types::{Direction, Filter, Position, RecordedEvent, Revision};

/// A read of one stream.
#[derive(Debug, Clone)]
pub struct StreamRead {
    pub stream: String,
    /// The first revision read (inclusive, both ways).
    pub from: Revision,
    pub direction: Direction,
    /// Most events returned.
    pub count: u64,
}

/// A read of the whole log.
#[derive(Clone)]
pub struct AllRead {
    /// The first position read (inclusive, both ways).
    pub from: Position,
    pub direction: Direction,
    /// Most events returned (after filtering).
    pub count: u64,
    pub filter: Filter,
    pub matcher: Option<Arc<dyn Matcher>>,
}

/// One page of a read of the whole log.
#[derive(Debug)]
pub struct AllPage {
    pub events: Events,
    /// The log was scanned up to here (forwards: the last position looked at; backwards: the
    /// lowest).
    pub scanned_to: Position,
    /// The read reached the end (or start) of the log; set on the last page only.
    pub end_of_log: bool,
}

/// Pages of a read, in order; an `Err` ends it.
pub type Pages<T> = Inbox<Result<T>>;

impl Service {
    /// Reads a stream. The first page is read before this returns, so a missing stream is an
    /// `Err(StreamNotFound)` here rather than in the middle of the pages.
    pub async fn read_stream(
        self: &Arc<Self>,
        who: &Principal,
        read: StreamRead,
    ) -> Result<Pages<Events>> {
        self.check_read_name(&read.stream)?;
        self.authorize_read(who, &read.stream)?;
        let page = self.config.read_page_events;
        let first_count = read.count.min(page);
        let first = {
            let store = Arc::clone(&self.store);
            let read = read.clone();
            blocking(move || {
                store.read_stream(&read.stream, read.from, read.direction, first_count)
            })
            .await?
        };
        Ok(self.stream_pages(read, first, first_count))
    }

    /// The newest snapshot of a stream, then the events after it (forwards).
    pub async fn read_stream_from_snapshot(
        self: &Arc<Self>,
        who: &Principal,
        stream: String,
        count: u64,
    ) -> Result<(Option<Snapshot>, Pages<Events>)> {
        self.check_stream_name(&stream)?;
        self.authorize(who, super::Access::Read, &stream)?;
        let first_count = count.min(self.config.read_page_events);
        let (snapshot, first) = {
            let store = Arc::clone(&self.store);
            let stream = stream.clone();
            blocking(move || store.read_stream_from_snapshot(&stream, first_count)).await?
        };
        let from = Revision(
            snapshot
                .as_ref()
                .map_or(0, |s| s.revision.0.saturating_add(1)),
        );
        let read = StreamRead {
            stream,
            from,
            direction: Direction::Forwards,
            count,
        };
        Ok((snapshot, self.stream_pages(read, first, first_count)))
    }

    fn stream_pages(
        self: &Arc<Self>,
        read: StreamRead,
        first: Vec<RecordedEvent>,
        first_count: u64,
    ) -> Pages<Events> {
        let (tx, rx) = outbox::outbox(self.config.read_buffer_bytes, &self.buffered);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let page = service.config.read_page_events;
            let mut remaining = read.count;
            let mut events = first;
            let mut asked = first_count;
            loop {
                remaining -= events.len() as u64;
                let next = match (read.direction, events.last()) {
                    (_, None) => None,
                    (Direction::Forwards, Some(e)) => e.revision.0.checked_add(1),
                    (Direction::Backwards, Some(e)) => e.revision.0.checked_sub(1),
                };
                let full = events.len() as u64 == asked;
                if send_pages(&service, &tx, events).await.is_err() {
                    return;
                }
                let Some(next) = next.filter(|_| full && remaining > 0) else {
                    return;
                };
                asked = remaining.min(page);
                let store = Arc::clone(&service.store);
                let stream = read.stream.clone();
                let direction = read.direction;
                events = match blocking(move || {
                    store.read_stream(&stream, Revision(next), direction, asked)
                })
                .await
                {
                    Ok(events) => events,
                    // Deleted since the first page: the read ends where it is.
                    Err(Error::StreamNotFound { .. }) => return,
                    Err(e) => {
                        let _ = tx.send_last(Err(e));
                        return;
                    }
                };
            }
        });
        rx
    }

    /// Reads the whole log. Needs the right to read `$all`.
    pub fn read_all(self: &Arc<Self>, who: &Principal, read: AllRead) -> Result<Pages<AllPage>> {
        self.authorize_all(who)?;
        let (tx, rx) = outbox::outbox(self.config.read_buffer_bytes, &self.buffered);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let page = service.config.read_page_events;
            let filter = Arc::new(read.filter);
            let mut from = read.from.0;
            let mut remaining = read.count;
            while remaining > 0 {
                let store = Arc::clone(&service.store);
                let (f, m) = (Arc::clone(&filter), read.matcher.clone());
                let want = remaining.min(page);
                let direction = read.direction;
                let slice = blocking(move || {
                    let mut slice = store.read_all(Position(from), direction, want, &f)?;
                    if let Some(m) = &m {
                        let mut kept = Vec::with_capacity(slice.events.len());
                        for e in slice.events.drain(..) {
                            if m.matches(e.stream(), e.event_type())? {
                                kept.push(e);
                            }
                        }
                        slice.events = kept;
                    }
                    Ok(slice)
                })
                .await;
                let mut slice = match slice {
                    Ok(slice) => slice,
                    Err(e) => {
                        let _ = tx.send_last(Err(e));
                        return;
                    }
                };
                // Only the events returned count towards `count`; what a filter drops was
                // scanned and is not read again.
                slice
                    .events
                    .truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
                remaining -= slice.events.len() as u64;
                let next = match direction {
                    Direction::Forwards => slice.scanned_to.0.checked_add(1),
                    Direction::Backwards => slice.scanned_to.0.checked_sub(1).filter(|&p| p > 0),
                };
                let done = slice.end_of_log || remaining == 0 || next.is_none();
                let events = Events::new(slice.events);
                let mut pages = split_pages(events, service.config.page_bytes).peekable();
                while let Some((events, bytes)) = pages.next() {
                    let last = pages.peek().is_none();
                    let reply = AllPage {
                        events,
                        scanned_to: slice.scanned_to,
                        end_of_log: last && slice.end_of_log,
                    };
                    if service.put(&tx, reply, bytes).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(next) if !done => from = next,
                    _ => return,
                }
            }
        });
        Ok(rx)
    }
}

async fn send_pages(
    service: &Service,
    tx: &Outbox<Result<Events>>,
    events: Vec<RecordedEvent>,
) -> std::result::Result<(), outbox::Closed> {
    if events.is_empty() {
        return Ok(());
    }
    for (page, bytes) in split_pages(Events::new(events), service.config.page_bytes) {
        service.put(tx, page, bytes).await?;
    }
    Ok(())
}

/// Cuts events into pages of at most `budget` wire bytes (a page holds at least one event),
/// each with its size; the pages share the events' storage. An empty input gives one empty
/// page.
pub fn split_pages(events: Events, budget: usize) -> impl Iterator<Item = (Events, usize)> {
    let mut cuts = Vec::new();
    let mut start = 0usize;
    let mut size = 0usize;
    for (i, e) in events.iter().enumerate() {
        let n = wire_bytes(e);
        if i > start && size + n > budget {
            cuts.push((start..i, size));
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < events.len() || cuts.is_empty() {
        cuts.push((start..events.len(), size));
    }
    cuts.into_iter().map(move |(range, size)| {
        let (_, rest) = events.clone().split_at(range.start);
        let (page, _) = rest.split_at(range.len());
        (page, size)
    })
}
