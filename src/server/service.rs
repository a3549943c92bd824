//! The `statestore.v1.EventStore` service. Engine calls block (an append waits for its fsync),
//! so each runs on tokio's blocking pool; reads stream page by page through a bounded channel,
//! so a large read never builds one giant message and a slow reader holds one page.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::proto::{self, event_store_server::EventStore};
use super::subscribe::{NativeFeed, Subscription, Target, blocking};
use super::{Shared, convert, status};
use crate::types::{AppendResult, Direction, Filter, Position, Revision, StreamAppend};

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Pages a reader may have in flight between its task and its connection.
const READ_BUFFER_PAGES: usize = 4;

pub struct EventStoreService {
    shared: Arc<Shared>,
}

impl EventStoreService {
    pub(crate) fn new(shared: Arc<Shared>) -> EventStoreService {
        EventStoreService { shared }
    }

    /// Queues an append on the engine's writer and waits, without holding a thread, for the
    /// acknowledging thread to answer.
    async fn append(&self, parts: Vec<StreamAppend>) -> Result<Vec<AppendResult>, Status> {
        let (tx, rx) = oneshot::channel();
        self.shared.store.append_multi_with(parts, move |result| {
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(result) => result.map_err(|e| status::to_status(&e)),
            Err(_) => Err(status::to_status(&crate::Error::Closed)),
        }
    }

    fn page_budget(&self) -> usize {
        self.shared.config.message_bytes_max / 2
    }

    /// A snapshot as a message, or RESOURCE_EXHAUSTED when it is too large to send (possible
    /// only when the server's message limit is below the store's snapshot size limit).
    fn snapshot_reply(&self, snapshot: crate::Snapshot) -> Result<proto::Snapshot, Status> {
        let limit = self.shared.config.message_bytes_max;
        let size = convert::snapshot_bytes(&snapshot);
        if size > limit {
            return Err(status::to_status(&crate::Error::LimitExceeded {
                what: "response message bytes",
                limit: limit as u64,
                actual: size as u64,
            }));
        }
        Ok(convert::snapshot(snapshot))
    }
}

#[tonic::async_trait]
impl EventStore for EventStoreService {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let part = convert::stream_append(request.into_inner())?;
        let result = self.append(vec![part]).await?;
        let first = result
            .first()
            .ok_or_else(|| status::internal("append returned no result"))?;
        Ok(Response::new(convert::append_response(first)))
    }

    async fn append_multi(
        &self,
        request: Request<proto::AppendMultiRequest>,
    ) -> Result<Response<proto::AppendMultiResponse>, Status> {
        let parts = request
            .into_inner()
            .streams
            .into_iter()
            .map(convert::stream_append)
            .collect::<Result<Vec<_>, _>>()?;
        let results = self.append(parts).await?;
        Ok(Response::new(proto::AppendMultiResponse {
            results: results.iter().map(convert::append_response).collect(),
        }))
    }

    type ReadStreamStream = ReplyStream<proto::ReadStreamResponse>;

    async fn read_stream(
        &self,
        request: Request<proto::ReadStreamRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        let r = request.into_inner();
        let direction = convert::direction(r.direction)?;
        if r.from_snapshot {
            // The read starts after the snapshot and goes forwards; anything else contradicts it.
            if r.from_revision.is_some() {
                return Err(status::invalid_argument(
                    "from_snapshot reads from the stream's latest snapshot: from_revision must \
                     be absent",
                ));
            }
            if direction != Direction::Forwards {
                return Err(status::invalid_argument(
                    "from_snapshot reads forwards from the snapshot: direction must be forwards",
                ));
            }
        }
        let from = Revision(r.from_revision.unwrap_or(match direction {
            Direction::Forwards => 0,
            Direction::Backwards => u64::MAX,
        }));
        let mut remaining = convert::max_count(r.max_count);
        let page = self.shared.config.read_page_events;
        let budget = self.page_budget();
        let store = Arc::clone(&self.shared.store);
        let stream = r.stream;
        let read_page = {
            let stream = stream.clone();
            move |from: Revision, count: u64| {
                let store = Arc::clone(&store);
                let stream = stream.clone();
                blocking(move || store.read_stream(&stream, from, direction, count))
            }
        };
        // The first page is read before answering, so a missing stream is a NOT_FOUND status
        // rather than an error in the middle of a stream.
        let count = remaining.min(page);
        let (snapshot_reply, first) = if r.from_snapshot {
            let store = Arc::clone(&self.shared.store);
            let (snapshot, events) =
                blocking(move || store.read_stream_from_snapshot(&stream, count)).await?;
            let snapshot = snapshot.map(|s| self.snapshot_reply(s)).transpose()?;
            let reply = proto::ReadStreamResponse {
                events: Vec::new(),
                snapshot,
            };
            (Some(reply), events)
        } else {
            (None, read_page(from, count).await?)
        };
        let (tx, rx) = mpsc::channel(READ_BUFFER_PAGES);
        tokio::spawn(async move {
            if let Some(reply) = snapshot_reply
                && tx.send(Ok(reply)).await.is_err()
            {
                return;
            }
            let mut events = first;
            let mut asked = count;
            loop {
                remaining -= events.len() as u64;
                let next = match (direction, events.last()) {
                    (_, None) => None,
                    (Direction::Forwards, Some(e)) => e.revision.0.checked_add(1),
                    (Direction::Backwards, Some(e)) => e.revision.0.checked_sub(1),
                };
                let full = events.len() as u64 == asked;
                let converted = events.iter().map(convert::recorded).collect();
                for events in convert::pages(converted, budget) {
                    if tx
                        .send(Ok(proto::ReadStreamResponse {
                            events,
                            snapshot: None,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let Some(next) = next.filter(|_| full && remaining > 0) else {
                    return;
                };
                asked = remaining.min(page);
                events = match read_page(Revision(next), asked).await {
                    Ok(events) => events,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ReadAllStream = ReplyStream<proto::ReadAllResponse>;

    async fn read_all(
        &self,
        request: Request<proto::ReadAllRequest>,
    ) -> Result<Response<Self::ReadAllStream>, Status> {
        let r = request.into_inner();
        let direction = convert::direction(r.direction)?;
        let filter = Arc::new(convert::filter(r.filter)?);
        let mut from = r.from_position.unwrap_or(match direction {
            Direction::Forwards => 1,
            Direction::Backwards => u64::MAX,
        });
        let mut remaining = convert::max_count(r.max_count);
        let page = self.shared.config.read_page_events;
        let budget = self.page_budget();
        let store = Arc::clone(&self.shared.store);
        let read_page = move |from: u64, count: u64, filter: Arc<Filter>| {
            let store = Arc::clone(&store);
            blocking(move || store.read_all(Position(from), direction, count, &filter))
        };
        let (tx, rx) = mpsc::channel(READ_BUFFER_PAGES);
        tokio::spawn(async move {
            loop {
                let slice = match read_page(from, remaining.min(page), Arc::clone(&filter)).await {
                    Ok(slice) => slice,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                remaining -= slice.events.len() as u64;
                let next = match direction {
                    Direction::Forwards => slice.scanned_to.0.checked_add(1),
                    Direction::Backwards => slice.scanned_to.0.checked_sub(1).filter(|&p| p > 0),
                };
                let done = slice.end_of_log || remaining == 0 || next.is_none();
                let converted = slice.events.iter().map(convert::recorded).collect();
                let mut pages = convert::pages(converted, budget).into_iter().peekable();
                while let Some(events) = pages.next() {
                    let last = pages.peek().is_none();
                    let reply = proto::ReadAllResponse {
                        events,
                        scanned_to: slice.scanned_to.0,
                        end_of_log: last && slice.end_of_log,
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(next) if !done => from = next,
                    _ => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = ReplyStream<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use proto::subscribe_request::Target as Wire;
        let (target, after_position, next_revision) = match request.into_inner().target {
            Some(Wire::All(all)) => {
                let checkpoint_interval = match all.checkpoint_interval {
                    0 => self.shared.config.checkpoint_interval,
                    n => u64::from(n),
                };
                let target = Target::All {
                    filter: convert::filter(all.filter)?,
                    matcher: None,
                    checkpoint_interval,
                };
                (target, all.after_position, 0)
            }
            Some(Wire::Stream(s)) => {
                if s.stream.is_empty() {
                    return Err(status::invalid_argument("stream name is empty"));
                }
                let next = match s.after_revision {
                    None => 0,
                    Some(r) => r.checked_add(1).ok_or_else(|| {
                        status::invalid_argument("after_revision is the largest revision")
                    })?,
                };
                (Target::Stream { name: s.stream }, 0, next)
            }
            None => return Err(status::invalid_argument("subscribe needs a target")),
        };
        let (tx, rx) = mpsc::channel(self.shared.config.subscriber_buffer);
        let subscription = Subscription::new(
            Arc::clone(&self.shared),
            tx,
            NativeFeed,
            target,
            after_position,
            next_revision,
        );
        tokio::spawn(subscription.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_stream(
        &self,
        request: Request<proto::GetStreamRequest>,
    ) -> Result<Response<proto::GetStreamResponse>, Status> {
        let stream = request.into_inner().stream;
        match self.shared.store.stream_revision(&stream) {
            Ok(Some(revision)) => Ok(Response::new(proto::GetStreamResponse {
                stream,
                revision: revision.0,
            })),
            Ok(None) => Err(status::to_status(&crate::Error::StreamNotFound { stream })),
            Err(e) => Err(status::to_status(&e)),
        }
    }

    async fn save_snapshot(
        &self,
        request: Request<proto::SaveSnapshotRequest>,
    ) -> Result<Response<proto::SaveSnapshotResponse>, Status> {
        let r = request.into_inner();
        let store = Arc::clone(&self.shared.store);
        // The save syncs the snapshot log: the blocking pool, not a runtime worker.
        blocking(move || store.save_snapshot(&r.stream, Revision(r.revision), &r.schema, r.data))
            .await?;
        Ok(Response::new(proto::SaveSnapshotResponse {}))
    }

    async fn load_snapshot(
        &self,
        request: Request<proto::LoadSnapshotRequest>,
    ) -> Result<Response<proto::LoadSnapshotResponse>, Status> {
        let r = request.into_inner();
        let at_or_below = Revision(r.at_or_below.unwrap_or(u64::MAX));
        let store = Arc::clone(&self.shared.store);
        let snapshot = blocking(move || store.load_snapshot(&r.stream, at_or_below)).await?;
        let snapshot = snapshot.map(|s| self.snapshot_reply(s)).transpose()?;
        Ok(Response::new(proto::LoadSnapshotResponse { snapshot }))
    }

    async fn set_stream_metadata(
        &self,
        request: Request<proto::SetStreamMetadataRequest>,
    ) -> Result<Response<proto::SetStreamMetadataResponse>, Status> {
        let r = request.into_inner();
        let expected = convert::expected(r.expected);
        let metadata = convert::stream_metadata(r.metadata)?;
        let store = Arc::clone(&self.shared.store);
        let result =
            blocking(move || store.set_stream_metadata(&r.stream, expected, metadata)).await?;
        Ok(Response::new(proto::SetStreamMetadataResponse {
            metadata_revision: result.revision.0,
            position: result.last_position.0,
        }))
    }

    async fn get_stream_metadata(
        &self,
        request: Request<proto::GetStreamMetadataRequest>,
    ) -> Result<Response<proto::GetStreamMetadataResponse>, Status> {
        let r = request.into_inner();
        let store = Arc::clone(&self.shared.store);
        let (current, history) = blocking(move || {
            let current = store.stream_metadata(&r.stream)?;
            let history = if r.include_history && current.is_some() {
                store.stream_metadata_history(&r.stream)?
            } else {
                Vec::new()
            };
            Ok((current, history))
        })
        .await?;
        let history: Vec<_> = history.iter().map(convert::metadata_version).collect();
        let current = current.map(|(revision, metadata)| {
            history
                .last()
                .filter(|h| h.metadata_revision == revision.0)
                .cloned()
                .unwrap_or_else(|| proto::StreamMetadataVersion {
                    metadata_revision: revision.0,
                    metadata: Some(convert::stream_metadata_reply(&metadata)),
                    ..Default::default()
                })
        });
        Ok(Response::new(proto::GetStreamMetadataResponse {
            current,
            history,
        }))
    }

    async fn delete_stream(
        &self,
        request: Request<proto::DeleteStreamRequest>,
    ) -> Result<Response<proto::DeleteStreamResponse>, Status> {
        let r = request.into_inner();
        let expected = convert::expected(r.expected);
        let store = Arc::clone(&self.shared.store);
        let position = blocking(move || store.delete_stream(&r.stream, expected)).await?;
        Ok(Response::new(proto::DeleteStreamResponse {
            position: position.0,
        }))
    }

    async fn tombstone_stream(
        &self,
        request: Request<proto::TombstoneStreamRequest>,
    ) -> Result<Response<proto::TombstoneStreamResponse>, Status> {
        let r = request.into_inner();
        let expected = convert::expected(r.expected);
        let store = Arc::clone(&self.shared.store);
        let position = blocking(move || store.tombstone_stream(&r.stream, expected)).await?;
        Ok(Response::new(proto::TombstoneStreamResponse {
            position: position.0,
        }))
    }

    async fn server_info(
        &self,
        _request: Request<proto::ServerInfoRequest>,
    ) -> Result<Response<proto::ServerInfoResponse>, Status> {
        let store = &self.shared.store;
        let stats = store.stats();
        let dir = store.dir().to_path_buf();
        let segment_bytes = tokio::task::spawn_blocking(move || segment_bytes(&dir))
            .await
            .unwrap_or(0);
        Ok(Response::new(proto::ServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            last_position: stats.last_position.0,
            data_dir: store.dir().display().to_string(),
            streams: stats.streams as u64,
            event_types: stats.event_types as u64,
            segments: stats.segments as u64,
            segment_bytes,
            fsync: store.config().fsync.to_string(),
            subscriptions: self.shared.live.subscribers() as u64,
            checkpoint_position: stats.checkpoint_position.0,
            index_runs: stats.index_runs as u64,
            memtable_events: stats.memtable_events,
        }))
    }
}

/// Total size of the segment files in `dir`.
fn segment_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
