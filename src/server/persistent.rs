//! The `statestore.v1.PersistentSubscriptions` service: groups of competing consumers, over the
//! service layer's persistent-subscription methods. Each unary call converts its request,
//! calls the service with the caller's principal, and converts the answer.
//!
//! `Consume` runs one task per call that pumps both ways: acks and nacks from the client to the
//! group, and deliveries from the group to the client, several events to a message (whatever
//! the consumer's channel holds, up to [`CONSUME_BATCH_EVENTS_MAX`] events and a byte bound).
//! The task holds at most one converted message while the connection is busy, so a client that
//! does not read holds no more than that plus its in-flight limit; acks keep flowing meanwhile.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use super::proto::{self, persistent_subscriptions_server::PersistentSubscriptions};
use super::{caller, convert, status};
use crate::Error;
use crate::service::persistent::{
    Delivery, GroupConsumer, GroupFilter, GroupInfo, GroupKey, GroupSettings, GroupSource,
    NackAction, StartFrom,
};
use crate::service::{Principal, Service, wire_bytes};

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Most events in one `Consume` response message.
pub const CONSUME_BATCH_EVENTS_MAX: usize = 500;
/// Most bytes of events in one `Consume` response message (a single larger event goes alone);
/// cut further to half the server's message limit.
pub const CONSUME_BATCH_BYTES_MAX: usize = 1 << 20;
/// Response messages queued between a `Consume` task and its connection.
const CONSUME_QUEUE_MESSAGES: usize = 2;

pub struct PersistentService {
    service: Arc<Service>,
    batch_bytes_max: usize,
    shutdown: watch::Receiver<bool>,
}

impl PersistentService {
    pub(crate) fn new(
        service: Arc<Service>,
        message_bytes_max: usize,
        shutdown: watch::Receiver<bool>,
    ) -> PersistentService {
        PersistentService {
            service,
            batch_bytes_max: CONSUME_BATCH_BYTES_MAX.min(message_bytes_max / 2),
            shutdown,
        }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        caller(&self.service, request)
            .await
            .map_err(|e| status::to_status(&e))
    }
}

fn engine(e: Error) -> Status {
    status::to_status(&e)
}

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create_group(
        &self,
        request: Request<proto::CreateGroupRequest>,
    ) -> Result<Response<proto::CreateGroupResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let key = group_key(r.key)?;
        let filter = r.filter.map(group_filter).unwrap_or_default();
        self.service
            .create_group(&who, key, group_settings(r.settings), filter)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::CreateGroupResponse {}))
    }

    async fn update_group(
        &self,
        request: Request<proto::UpdateGroupRequest>,
    ) -> Result<Response<proto::UpdateGroupResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let key = group_key(r.key)?;
        let filter = r.filter.map(group_filter);
        self.service
            .update_group(&who, key, group_settings(r.settings), filter)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::UpdateGroupResponse {}))
    }

    async fn delete_group(
        &self,
        request: Request<proto::DeleteGroupRequest>,
    ) -> Result<Response<proto::DeleteGroupResponse>, Status> {
        let who = self.caller(&request).await?;
        let key = group_key(request.into_inner().key)?;
        self.service.delete_group(&who, key).await.map_err(engine)?;
        Ok(Response::new(proto::DeleteGroupResponse {}))
    }

    async fn get_group(
        &self,
        request: Request<proto::GetGroupRequest>,
    ) -> Result<Response<proto::GetGroupResponse>, Status> {
        let who = self.caller(&request).await?;
        let key = group_key(request.into_inner().key)?;
        let info = self.service.group_info(&who, key).await.map_err(engine)?;
        Ok(Response::new(proto::GetGroupResponse {
            group: Some(group_info(info)),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let who = self.caller(&request).await?;
        let source = request.into_inner().source.map(group_source).transpose()?;
        let groups = self
            .service
            .list_groups(&who, source)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::ListGroupsResponse {
            groups: groups.into_iter().map(group_info).collect(),
        }))
    }

    type ConsumeStream = ReplyStream<proto::ConsumeResponse>;

    async fn consume(
        &self,
        request: Request<Streaming<proto::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        use proto::consume_request::Kind;
        let who = self.caller(&request).await?;
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(proto::ConsumeRequest {
                kind: Some(Kind::Open(open)),
            }) => open,
            Some(_) => {
                return Err(status::invalid_argument(
                    "the first Consume request must be `open`",
                ));
            }
            None => {
                return Err(status::invalid_argument(
                    "the Consume call ended before its `open` request",
                ));
            }
        };
        let key = group_key(open.key)?;
        let subscription_id = key.to_string();
        let buffer_size = open.buffer_size.max(1) as usize;
        let consumer = self
            .service
            .consume(&who, key, open.consumer_name, buffer_size)
            .await
            .map_err(engine)?;
        let (tx, rx) = mpsc::channel(CONSUME_QUEUE_MESSAGES);
        let confirmed = proto::ConsumeResponse {
            kind: Some(proto::consume_response::Kind::Confirmed(proto::Confirmed {
                subscription_id,
                consumer_id: consumer.id,
            })),
        };
        // The queue is empty: the first message always fits.
        let _ = tx.try_send(Ok(confirmed));
        let pump = Pump {
            consumer,
            out: tx,
            batch_bytes_max: self.batch_bytes_max,
        };
        tokio::spawn(pump.run(inbound, self.shutdown.clone()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn replay_parked(
        &self,
        request: Request<proto::ReplayParkedRequest>,
    ) -> Result<Response<proto::ReplayParkedResponse>, Status> {
        let who = self.caller(&request).await?;
        let r = request.into_inner();
        let key = group_key(r.key)?;
        self.service
            .replay_parked(&who, key, r.stop_at)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::ReplayParkedResponse {}))
    }

    async fn truncate_parked(
        &self,
        request: Request<proto::TruncateParkedRequest>,
    ) -> Result<Response<proto::TruncateParkedResponse>, Status> {
        let who = self.caller(&request).await?;
        let key = group_key(request.into_inner().key)?;
        let count = self
            .service
            .truncate_parked(&who, key)
            .await
            .map_err(engine)?;
        Ok(Response::new(proto::TruncateParkedResponse { count }))
    }

    async fn restart_groups(
        &self,
        request: Request<proto::RestartGroupsRequest>,
    ) -> Result<Response<proto::RestartGroupsResponse>, Status> {
        let who = self.caller(&request).await?;
        self.service.restart_groups(&who).await.map_err(engine)?;
        Ok(Response::new(proto::RestartGroupsResponse {}))
    }
}

/// One `Consume` call's task.
struct Pump {
    consumer: GroupConsumer,
    out: mpsc::Sender<Result<proto::ConsumeResponse, Status>>,
    batch_bytes_max: usize,
}

impl Pump {
    /// Runs until the client goes, the group drops the consumer, or the server shuts down.
    /// Dropping the consumer at the end hands its in-flight events to the others.
    async fn run(
        mut self,
        mut inbound: Streaming<proto::ConsumeRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The next message for the connection, and the status that ends the call after it.
        let mut pending: Option<proto::ConsumeResponse> = None;
        let mut ending: Option<Status> = None;
        let mut inbound_open = true;
        let mut received = None;
        // The group let the consumer go (it sent NACK_ACTION_STOP): the call ends without an
        // error once what it was sent is delivered.
        let mut released = false;
        loop {
            if pending.is_none() {
                if let Some(end) = ending.take() {
                    let _ = self.out.send(Err(end)).await;
                    return;
                }
                if released {
                    return;
                }
            }
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => {
                    pending = None;
                    ending = Some(status::shutting_down());
                }
                () = self.out.closed() => return,
                request = inbound.message(), if inbound_open => match request {
                    Ok(Some(r)) => {
                        if let Err(s) = self.handle(r).await {
                            pending = None;
                            ending = Some(s);
                        }
                    }
                    // The client sends no more acks; deliveries go on until it cancels.
                    Ok(None) => inbound_open = false,
                    // The client went away.
                    Err(_) => return,
                },
                permit = self.out.reserve(), if pending.is_some() => {
                    let Ok(permit) = permit else { return };
                    if let Some(message) = pending.take() {
                        permit.send(Ok(message));
                    }
                }
                delivery = self.consumer.rx.recv(), if pending.is_none() && ending.is_none() => {
                    match delivery {
                        Some(first) => received = Some(first),
                        // Dropped without a word: the group disconnected this consumer.
                        None => released = true,
                    }
                }
            }
            if let Some(first) = received.take() {
                (pending, ending) = self.batch(first);
            }
        }
    }

    /// A message of the first delivery and whatever else the consumer's channel holds now,
    /// within the batch bounds; and the status that ends the call, when a `Dropped` came.
    fn batch(&mut self, first: Delivery) -> (Option<proto::ConsumeResponse>, Option<Status>) {
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        let mut end = None;
        while let Some(delivery) = next.take() {
            match delivery {
                Delivery::Event { event, retry_count } => {
                    bytes += wire_bytes(&event);
                    events.push(proto::GroupEvent {
                        event: Some(convert::recorded(&event)),
                        retry_count,
                    });
                }
                Delivery::Dropped(e) => {
                    end = Some(dropped(e));
                    break;
                }
            }
            if events.len() < CONSUME_BATCH_EVENTS_MAX && bytes < self.batch_bytes_max {
                next = self.consumer.rx.try_recv().ok();
            }
        }
        let message = (!events.is_empty()).then(|| proto::ConsumeResponse {
            kind: Some(proto::consume_response::Kind::Events(proto::GroupEvents {
                events,
            })),
        });
        (message, end)
    }

    async fn handle(&self, request: proto::ConsumeRequest) -> Result<(), Status> {
        use proto::consume_request::Kind;
        match request.kind {
            Some(Kind::Ack(ack)) => self
                .consumer
                .ack(event_ids(ack.ids)?)
                .await
                .map_err(dropped),
            Some(Kind::Nack(nack)) => {
                let action = nack_action(nack.action, nack.delay_ms)?;
                self.consumer
                    .nack(event_ids(nack.ids)?, action, nack.reason)
                    .await
                    .map_err(dropped)
            }
            Some(Kind::Open(_)) => Err(status::invalid_argument(
                "`open` comes only once, first, in a Consume call",
            )),
            None => Err(status::invalid_argument("a Consume request needs a kind")),
        }
    }
}

/// Resolves once the server begins shutting down (or is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The status that ends a call whose consumer the group dropped.
fn dropped(e: Error) -> Status {
    match e {
        Error::Closed => status::shutting_down(),
        e => status::to_status(&e),
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

fn group_source(s: proto::GroupSource) -> Result<GroupSource, Status> {
    use proto::group_source::Kind;
    match s.kind {
        Some(Kind::Stream(name)) => Ok(GroupSource::Stream(name)),
        Some(Kind::All(_)) => Ok(GroupSource::All),
        None => Err(status::invalid_argument(
            "a group source needs a stream or `all`",
        )),
    }
}

fn group_key(k: Option<proto::GroupKey>) -> Result<GroupKey, Status> {
    let k = k.ok_or_else(|| status::invalid_argument("the request needs a group key"))?;
    let source = k
        .source
        .ok_or_else(|| status::invalid_argument("the group key needs a source"))?;
    Ok(GroupKey {
        source: group_source(source)?,
        group: k.group,
    })
}

fn group_key_reply(k: GroupKey) -> proto::GroupKey {
    use proto::group_source::Kind;
    let kind = match k.source {
        GroupSource::Stream(name) => Kind::Stream(name),
        GroupSource::All => Kind::All(proto::Empty {}),
    };
    proto::GroupKey {
        source: Some(proto::GroupSource { kind: Some(kind) }),
        group: k.group,
    }
}

fn group_filter(f: proto::GroupFilter) -> GroupFilter {
    GroupFilter {
        stream_prefixes: f.stream_prefixes,
        event_type_prefixes: f.event_type_prefixes,
        event_types: f.event_types,
        category: f.category,
        stream_regex: f.stream_regex,
        event_type_regex: f.event_type_regex,
    }
}

/// Settings as sent: absent fields stay absent.
fn group_settings(s: Option<proto::GroupSettings>) -> GroupSettings {
    use proto::group_settings::StartFrom as Wire;
    let Some(s) = s else {
        return GroupSettings::default();
    };
    GroupSettings {
        start_from: s.start_from.map(|w| match w {
            Wire::Start(_) => StartFrom::Start,
            Wire::End(_) => StartFrom::End,
            Wire::At(at) => StartFrom::At(at),
        }),
        resolve_links: s.resolve_links,
        extra_statistics: s.extra_statistics,
        message_timeout_ms: s.message_timeout_ms,
        max_retry_count: s.max_retry_count,
        live_buffer_size: s.live_buffer_size,
        read_batch_size: s.read_batch_size,
        history_buffer_size: s.history_buffer_size,
        checkpoint_after_ms: s.checkpoint_after_ms,
        min_checkpoint_count: s.min_checkpoint_count,
        max_checkpoint_count: s.max_checkpoint_count,
        max_subscriber_count: s.max_subscriber_count,
        consumer_strategy: s.consumer_strategy,
        max_in_flight: s.max_in_flight,
    }
}

fn group_settings_reply(s: GroupSettings) -> proto::GroupSettings {
    use proto::group_settings::StartFrom as Wire;
    proto::GroupSettings {
        start_from: s.start_from.map(|f| match f {
            StartFrom::Start => Wire::Start(proto::Empty {}),
            StartFrom::End => Wire::End(proto::Empty {}),
            StartFrom::At(at) => Wire::At(at),
        }),
        resolve_links: s.resolve_links,
        extra_statistics: s.extra_statistics,
        message_timeout_ms: s.message_timeout_ms,
        max_retry_count: s.max_retry_count,
        live_buffer_size: s.live_buffer_size,
        read_batch_size: s.read_batch_size,
        history_buffer_size: s.history_buffer_size,
        checkpoint_after_ms: s.checkpoint_after_ms,
        min_checkpoint_count: s.min_checkpoint_count,
        max_checkpoint_count: s.max_checkpoint_count,
        max_subscriber_count: s.max_subscriber_count,
        consumer_strategy: s.consumer_strategy,
        max_in_flight: s.max_in_flight,
    }
}

fn group_info(info: GroupInfo) -> proto::GroupInfo {
    let micros = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    };
    proto::GroupInfo {
        key: Some(group_key_reply(info.key)),
        status: info.status.to_string(),
        checkpoint: info.checkpoint,
        last_known: info.last_known,
        read_through: info.read_through,
        lag: info.lag,
        in_flight: info.in_flight,
        ready: info.ready,
        delayed: info.delayed,
        buffered: info.buffered,
        parked: info.parked,
        parked_oldest_us: info.parked_oldest_us,
        oldest_in_flight_ms: info.oldest_in_flight.map(|d| d.as_millis() as u64),
        delivered: info.delivered,
        acked: info.acked,
        nacked: info.nacked,
        consumers: info
            .consumers
            .into_iter()
            .map(|c| proto::ConsumerInfo {
                id: c.id,
                name: c.name,
                in_flight: c.in_flight,
                buffer_size: c.buffer_size,
                delivered: c.delivered,
                acked: c.acked,
                nacked: c.nacked,
                connected_at_us: micros(c.connected_at),
            })
            .collect(),
        settings: info.settings.map(group_settings_reply),
    }
}

/// Event ids of an ack or nack: 16 bytes each, a big-endian UUID.
fn event_ids(ids: Vec<bytes::Bytes>) -> Result<Vec<Uuid>, Status> {
    ids.iter()
        .map(|id| {
            Uuid::from_slice(id).map_err(|_| {
                status::invalid_argument(format!(
                    "an event id must be 16 bytes (a UUID), got {} bytes",
                    id.len()
                ))
            })
        })
        .collect()
}

fn nack_action(action: i32, delay_ms: u64) -> Result<NackAction, Status> {
    use proto::NackAction as Wire;
    Ok(match Wire::try_from(action) {
        Ok(Wire::Unknown) => NackAction::Unknown,
        Ok(Wire::Park) => NackAction::Park,
        Ok(Wire::Retry) => NackAction::Retry,
        Ok(Wire::Skip) => NackAction::Skip,
        Ok(Wire::Stop) => NackAction::Stop,
        Ok(Wire::RetryAfter) => NackAction::RetryAfter(Duration::from_millis(delay_ms)),
        Ok(Wire::Extend) => NackAction::Extend,
        Err(_) => {
            return Err(status::invalid_argument(format!(
                "unknown nack action {action}"
            )));
        }
    })
}
