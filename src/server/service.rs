//! The `statestore.v1.EventStore` service: each call converts its request, calls the service
//! layer with the caller's principal, and converts the answer. Reads and subscriptions arrive
//! as pages of engine events from the service layer; each page becomes one message as the
//! connection takes it, so a reader that does not read holds no converted events.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::proto::{self, event_store_server::EventStore};
use super::{caller, convert, status};
use crate::service::{AllRead, Principal, Service, StreamRead, SubscriptionMessage, Target};
use crate::types::{Direction, Position, Revision};

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct EventStoreService {
    service: Arc<Service>,
    message_bytes_max: usize,
}

impl EventStoreService {
    pub(crate) fn new(service: Arc<Service>, message_bytes_max: usize) -> EventStoreService {
        EventStoreService {
            service,
            message_bytes_max,
        }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        caller(&self.service, request)
            .await
            .map_err(|e| status::to_status(&e))
    }

    /// A snapshot as a message, or RESOURCE_EXHAUSTED when it is too large to send (possible
    /// only when the server's message limit is below the store's snapshot size limit).
    fn snapshot_reply(&self, snapshot: crate::Snapshot) -> Result<proto::Snapshot, Status> {
        let limit = self.message_bytes_max;
        let size = convert::snapshot_bytes(&snapshot);
        if size > limit {
            return Err(status::to_status(&crate::Error::LimitExceeded {
                what: crate::Limit::ResponseBytes,
                limit: limit as u64,
                actual: size as u64,
            }));
        }
        Ok(convert::snapshot(snapshot))
    }
}

fn engine(e: crate::Error) -> Status {
    status::to_status(&e)
}

#[tonic::async_trait]
impl EventStore for EventStoreService {
    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        let who = self.caller(&request).await?;
        let mut r = request.into_inner();
        let tracking = convert::tracking(r.tracking.take());
        let part = convert::stream_append(r)?;
        let result = self
            .service
            .commit(&who, vec![part], tracking)
            .await
            .map_err(engine)?;
        let first = result
            .first()
            .ok_or_else(|| status::internal("append returned no result"))?;
        Ok(Response::new(convert::append_response(first)))
    }

    async fn append_multi(
        &self,
        request: Request<proto::AppendMultiRequest>,
    ) -> Result<Response<proto::AppendMultiResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        if r.streams.iter().any(|p| p.tracking.is_some()) {
            return Err(status::invalid_argument(
                "in AppendMulti the tracking entry goes on the request, not on a part",
            ));
        }
        let tracking = convert::tracking(r.tracking);
        let tracked = tracking.is_some();
        let parts = r
            .streams
            .into_iter()
            .map(convert::stream_append)
            .collect::<Result<Vec<_>, _>>()?;
        let mut results = self
            .service
            .commit(&who, parts, tracking)
            .await
            .map_err(engine)?;
        let tracking_position = if tracked {
            results.pop().map(|r| r.last_position.0)
        } else {
            None
        };
        Ok(Response::new(proto::AppendMultiResponse {
            results: results.iter().map(convert::append_response).collect(),
            tracking_position,
        }))
    }

    async fn get_tracking(
        &self,
        request: Request<proto::GetTrackingRequest>,
    ) -> Result<Response<proto::GetTrackingResponse>, Status> {
        let who = self.caller(&request).await?;
        let source = request.into_inner().source;
        let entry = self.service.tracking(&who, source).await.map_err(engine)?;
        Ok(Response::new(proto::GetTrackingResponse {
            found: entry.is_some(),
            entry: entry.map(convert::tracking_entry),
        }))
    }

    async fn list_tracking(
        &self,
        request: Request<proto::ListTrackingRequest>,
    ) -> Result<Response<proto::ListTrackingResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let (entries, next) = self
            .service
            .list_tracking(&who, r.prefix, r.after, limit)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::ListTrackingResponse {
            entries: entries.into_iter().map(convert::tracking_entry).collect(),
            next,
        }))
    }

    type ReadStreamStream = ReplyStream<proto::ReadStreamResponse>;

    async fn read_stream(
        &self,
        request: Request<proto::ReadStreamRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let direction = convert::direction(r.direction)?;
        let count = convert::max_count(r.max_count);
        let event_page = |page: crate::Result<crate::service::Events>| match page {
            Ok(events) => Ok(proto::ReadStreamResponse {
                events: events.iter().map(convert::recorded).collect(),
                snapshot: None,
            }),
            Err(e) => Err(engine(e)),
        };
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
            let (snapshot, pages) = self
                .service
                .read_stream_from_snapshot(&who, r.stream, count)
                .await
                .map_err(engine)?;
            let snapshot = snapshot.map(|s| self.snapshot_reply(s)).transpose()?;
            let head = proto::ReadStreamResponse {
                events: Vec::new(),
                snapshot,
            };
            let stream = tokio_stream::once(Ok(head)).chain(pages.map(event_page));
            return Ok(Response::new(Box::pin(stream)));
        }
        let from = Revision(r.from_revision.unwrap_or(match direction {
            Direction::Forwards => 0,
            Direction::Backwards => u64::MAX,
        }));
        let read = StreamRead {
            stream: r.stream,
            from,
            direction,
            count,
        };
        let pages = self.service.read_stream(&who, read).await.map_err(engine)?;
        Ok(Response::new(Box::pin(pages.map(event_page))))
    }

    type ReadAllStream = ReplyStream<proto::ReadAllResponse>;

    async fn read_all(
        &self,
        request: Request<proto::ReadAllRequest>,
    ) -> Result<Response<Self::ReadAllStream>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let direction = convert::direction(r.direction)?;
        let read = AllRead {
            from: Position(r.from_position.unwrap_or(match direction {
                Direction::Forwards => 1,
                Direction::Backwards => u64::MAX,
            })),
            direction,
            count: convert::max_count(r.max_count),
            filter: convert::filter(r.filter)?,
            matcher: None,
        };
        let pages = self.service.read_all(&who, read).map_err(engine)?;
        let stream = pages.map(|page| match page {
            Ok(page) => Ok(proto::ReadAllResponse {
                events: page.events.iter().map(convert::recorded).collect(),
                scanned_to: page.scanned_to.0,
                end_of_log: page.end_of_log,
            }),
            Err(e) => Err(engine(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type SubscribeStream = ReplyStream<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use proto::subscribe_request::Target as Wire;
        let who = self.caller(&request).await?;
        let (target, after_position, next_revision) = match request.into_inner().target {
            Some(Wire::All(all)) => {
                let checkpoint_interval = match all.checkpoint_interval {
                    0 => self.service.config().checkpoint_interval,
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
        let messages = self
            .service
            .subscribe(&who, target, after_position, next_revision)
            .map_err(engine)?;
        let stream = messages.map(|m| m.map(native).map_err(|e| subscription_error(&e)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_stream(
        &self,
        request: Request<proto::GetStreamRequest>,
    ) -> Result<Response<proto::GetStreamResponse>, Status> {
        let who = self.caller(&request).await?;
        let stream = request.into_inner().stream;
        match self.service.stream_revision(&who, &stream) {
            Ok(Some(revision)) => Ok(Response::new(proto::GetStreamResponse {
                stream,
                revision: revision.0,
            })),
            Ok(None) => Err(engine(crate::Error::StreamNotFound { stream })),
            Err(e) => Err(engine(e)),
        }
    }

    async fn save_snapshot(
        &self,
        request: Request<proto::SaveSnapshotRequest>,
    ) -> Result<Response<proto::SaveSnapshotResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        self.service
            .save_snapshot(&who, r.stream, Revision(r.revision), r.schema, r.data)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::SaveSnapshotResponse {}))
    }

    async fn load_snapshot(
        &self,
        request: Request<proto::LoadSnapshotRequest>,
    ) -> Result<Response<proto::LoadSnapshotResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let at_or_below = Revision(r.at_or_below.unwrap_or(u64::MAX));
        let snapshot = self
            .service
            .load_snapshot(&who, r.stream, at_or_below)
            .await
            .map_err(engine)?;
        let snapshot = snapshot.map(|s| self.snapshot_reply(s)).transpose()?;
        Ok(Response::new(proto::LoadSnapshotResponse { snapshot }))
    }

    async fn set_stream_metadata(
        &self,
        request: Request<proto::SetStreamMetadataRequest>,
    ) -> Result<Response<proto::SetStreamMetadataResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let expected = convert::expected(r.expected);
        let limit = self.service.store_config().event_bytes_max;
        let metadata = convert::stream_metadata(r.metadata, limit)?;
        let result = self
            .service
            .set_stream_metadata(&who, r.stream, expected, metadata)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::SetStreamMetadataResponse {
            metadata_revision: result.revision.0,
            position: result.last_position.0,
        }))
    }

    async fn get_stream_metadata(
        &self,
        request: Request<proto::GetStreamMetadataRequest>,
    ) -> Result<Response<proto::GetStreamMetadataResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let current = self
            .service
            .stream_metadata(&who, &r.stream)
            .map_err(engine)?;
        let history = match (&current, r.include_history) {
            (Some(_), true) => {
                let count = match r.history_max_count {
                    0 => self.service.config().read_page_events,
                    n => u64::from(n),
                };
                self.service
                    .stream_metadata_history(&who, r.stream, Revision(r.history_from), count)
                    .await
                    .map_err(engine)?
            }
            _ => Vec::new(),
        };
        let history: Vec<_> = history.iter().map(convert::metadata_version).collect();
        let current = current.map(|(revision, metadata)| {
            history
                .iter()
                .find(|h| h.metadata_revision == revision.0)
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
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let expected = convert::expected(r.expected);
        let position = self
            .service
            .delete_stream(&who, r.stream, expected)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::DeleteStreamResponse {
            position: position.0,
        }))
    }

    async fn tombstone_stream(
        &self,
        request: Request<proto::TombstoneStreamRequest>,
    ) -> Result<Response<proto::TombstoneStreamResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let expected = convert::expected(r.expected);
        let position = self
            .service
            .tombstone_stream(&who, r.stream, expected)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::TombstoneStreamResponse {
            position: position.0,
        }))
    }

    async fn server_info(
        &self,
        request: Request<proto::ServerInfoRequest>,
    ) -> Result<Response<proto::ServerInfoResponse>, Status> {
        let who = self.caller(&request).await?;
        let info = self.service.info(&who).await.map_err(engine)?;
        Ok(Response::new(proto::ServerInfoResponse {
            version: info.version.to_string(),
            last_position: info.last_position.0,
            data_dir: info
                .data_dir
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            streams: info.streams,
            event_types: info.event_types,
            segments: info.segments,
            segment_bytes: info.segment_bytes,
            fsync: info.fsync,
            subscriptions: info.subscriptions,
            checkpoint_position: info.checkpoint_position.0,
            index_runs: info.index_runs,
            memtable_events: info.memtable_events,
            authentication: info.authentication,
        }))
    }
}

/// A subscription message in the native API's form.
fn native(message: SubscriptionMessage) -> proto::SubscribeResponse {
    use proto::subscribe_response::Kind;
    let kind = match message {
        SubscriptionMessage::Events(events) => Kind::Events(proto::EventBatch {
            events: events.iter().map(convert::recorded).collect(),
        }),
        SubscriptionMessage::Checkpoint { position } => {
            Kind::Checkpoint(proto::Checkpoint { position })
        }
        SubscriptionMessage::CaughtUp { position, revision } => {
            Kind::CaughtUp(proto::CaughtUp { position, revision })
        }
        SubscriptionMessage::FellBehind { position } => {
            Kind::FellBehind(proto::FellBehind { position })
        }
    };
    proto::SubscribeResponse { kind: Some(kind) }
}

/// The status that ends a subscription: `Closed` there means the server is shutting down.
fn subscription_error(e: &crate::Error) -> Status {
    match e {
        crate::Error::Closed => status::shutting_down(),
        e => status::to_status(e),
    }
}
