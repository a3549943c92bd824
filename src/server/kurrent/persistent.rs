//! `event_store.client.persistent_subscriptions.PersistentSubscriptions`: KurrentDB's
//! competing-consumer groups, translated onto the service layer's groups
//! ([`crate::service::persistent`]). Nothing here decides delivery, retries or checkpoints;
//! this file maps the protocol's requests, settings, statistics and errors.
//!
//! The protocol's conventions kept exactly:
//! - the subscription id is `{stream}::{group}` (`$all::{group}` for the whole log);
//! - positions in statistics are strings: a revision (`"41"`) for stream groups,
//!   `C:{commit}/P:{prepare}` for `$all` groups; `start_from` is `"0"`/`"-1"` (or
//!   `C:0/P:0` / `C:-1/P:-1`) for start/end;
//! - errors carry the `exception` trailer the clients match (`persistent-subscription-exists`,
//!   `persistent-subscription-does-not-exist`, `maximum-subscribers-reached`,
//!   `persistent-subscription-dropped`) with `stream-name` and `group-name`, and the message
//!   texts they parse;
//! - `Read` never ends with OK: a consumer the server drops gets an error status.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::{self, Converter, EventView};
use super::errors;
use super::proto::event_store::client::persistent_subscriptions as ps;
use super::proto::event_store::client::streams::read_resp;
use super::proto::event_store::client::{self as shared};
use crate::error::Error;
use crate::server::caller;
use crate::service::Principal;
use crate::service::Service;
use crate::service::name_filter::Subject;
use crate::service::persistent::{
    Delivery, GroupFilter, GroupInfo, GroupKey, GroupSettings, GroupSource, NackAction, StartFrom,
};

/// .NET ticks per millisecond.
const TICKS_PER_MS: i64 = 10_000;
/// Responses a consumer's call holds before the connection takes them; the group's own
/// in-flight limit (the buffer size) is what bounds the events held.
const READ_QUEUE: usize = 16;

pub struct PersistentService {
    service: Arc<Service>,
    /// Turns true when the server begins shutting down: consumers' calls end then, rather
    /// than holding the shutdown for its drain period.
    shutdown: watch::Receiver<bool>,
}

impl PersistentService {
    pub fn new(service: Arc<Service>, shutdown: watch::Receiver<bool>) -> PersistentService {
        PersistentService { service, shutdown }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        caller(&self.service, request)
            .await
            .map_err(|e| errors::from_engine(&e))
    }
}

fn with_trailers(code: Code, message: String, trailers: &[(&'static str, &str)]) -> Status {
    let mut map = MetadataMap::new();
    for (key, value) in trailers {
        if let Ok(v) = MetadataValue::try_from(*value) {
            map.insert(*key, v);
        }
    }
    Status::with_metadata(code, message, map)
}

fn exists(key: &GroupKey) -> Status {
    let (stream, group) = (key.source.name(), key.group.as_str());
    with_trailers(
        Code::AlreadyExists,
        format!("Subscription group {group} on stream {stream} exists."),
        &[
            ("exception", "persistent-subscription-exists"),
            ("stream-name", stream),
            ("group-name", group),
        ],
    )
}

fn does_not_exist(key: &GroupKey) -> Status {
    let (stream, group) = (key.source.name(), key.group.as_str());
    with_trailers(
        Code::NotFound,
        format!("Subscription group '{group}' on stream '{stream}' does not exist."),
        &[
            ("exception", "persistent-subscription-does-not-exist"),
            ("stream-name", stream),
            ("group-name", group),
        ],
    )
}

fn maximum_subscribers(key: &GroupKey) -> Status {
    let (stream, group) = (key.source.name(), key.group.as_str());
    with_trailers(
        Code::FailedPrecondition,
        format!(
            "Maximum subscriptions reached for subscription group '{group}' on stream '{stream}.'"
        ),
        &[
            ("exception", "maximum-subscribers-reached"),
            ("stream-name", stream),
            ("group-name", group),
        ],
    )
}

fn dropped(key: &GroupKey) -> Status {
    let (stream, group) = (key.source.name(), key.group.as_str());
    with_trailers(
        Code::Cancelled,
        format!("Subscription group '{group}' on stream '{stream}' was dropped."),
        &[
            ("exception", "persistent-subscription-dropped"),
            ("stream-name", stream),
            ("group-name", group),
        ],
    )
}

/// Resolves once the server begins shutting down (or is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// An ack's or nack's error: the request's own fault, or the group is gone.
fn ack_error(key: &GroupKey, e: &Error) -> Status {
    match e {
        Error::InvalidArgument(_) => errors::from_engine(e),
        _ => dropped(key),
    }
}

/// A group call's error.
fn group_error(key: &GroupKey, e: &Error) -> Status {
    match e {
        Error::GroupNotFound { .. } => does_not_exist(key),
        Error::GroupExists { .. } => exists(key),
        Error::GroupFull { .. } => maximum_subscribers(key),
        e => errors::from_engine(e),
    }
}

fn source_of(stream: Option<shared::StreamIdentifier>, all: bool) -> Result<GroupSource, Status> {
    if all {
        return Ok(GroupSource::All);
    }
    let name = convert::stream_name(stream)?;
    if name == crate::service::ALL_STREAM {
        return Ok(GroupSource::All);
    }
    Ok(GroupSource::Stream(name))
}

fn key(source: GroupSource, group: String) -> Result<GroupKey, Status> {
    if group.is_empty() {
        return Err(errors::invalid_argument("group_name is required"));
    }
    Ok(GroupKey { source, group })
}

fn count(name: &str, value: i32) -> Result<u32, Status> {
    u32::try_from(value)
        .map_err(|_| errors::invalid_argument(format!("{name} must not be negative (got {value})")))
}

fn millis(name: &str, ticks: Option<i64>, ms: Option<i32>) -> Result<Option<u64>, Status> {
    let value = match (ticks, ms) {
        (Some(t), _) => t / TICKS_PER_MS,
        (None, Some(m)) => i64::from(m),
        (None, None) => return Ok(None),
    };
    u64::try_from(value)
        .map(Some)
        .map_err(|_| errors::invalid_argument(format!("{name} must not be negative")))
}

/// The named strategies of the protocol's enum (clients that send no strategy name).
fn named_strategy(n: i32) -> &'static str {
    match n {
        0 => "DispatchToSingle",
        2 => "Pinned",
        _ => "RoundRobin",
    }
}

/// The fields both `Create` and `Update` settings have.
struct WireSettings {
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout: (Option<i64>, Option<i32>),
    checkpoint_after: (Option<i64>, Option<i32>),
    strategy: String,
}

impl WireSettings {
    fn into_settings(self, start_from: Option<StartFrom>) -> Result<GroupSettings, Status> {
        Ok(GroupSettings {
            start_from,
            resolve_links: Some(self.resolve_links),
            extra_statistics: Some(self.extra_statistics),
            message_timeout_ms: millis(
                "message_timeout",
                self.message_timeout.0,
                self.message_timeout.1,
            )?,
            max_retry_count: Some(count("max_retry_count", self.max_retry_count)?),
            live_buffer_size: Some(count("live_buffer_size", self.live_buffer_size)?),
            read_batch_size: Some(count("read_batch_size", self.read_batch_size)?),
            history_buffer_size: Some(count("history_buffer_size", self.history_buffer_size)?),
            checkpoint_after_ms: millis(
                "checkpoint_after",
                self.checkpoint_after.0,
                self.checkpoint_after.1,
            )?,
            min_checkpoint_count: Some(count("min_checkpoint_count", self.min_checkpoint_count)?),
            max_checkpoint_count: Some(count("max_checkpoint_count", self.max_checkpoint_count)?),
            max_subscriber_count: Some(count("max_subscriber_count", self.max_subscriber_count)?),
            consumer_strategy: Some(self.strategy),
            max_in_flight: None,
        })
    }
}

#[allow(deprecated)]
fn create_settings(s: ps::create_req::Settings) -> WireSettings {
    use ps::create_req::settings::{CheckpointAfter, MessageTimeout};
    let strategy = if s.consumer_strategy.is_empty() {
        named_strategy(s.named_consumer_strategy).to_string()
    } else {
        s.consumer_strategy
    };
    WireSettings {
        resolve_links: s.resolve_links,
        extra_statistics: s.extra_statistics,
        max_retry_count: s.max_retry_count,
        min_checkpoint_count: s.min_checkpoint_count,
        max_checkpoint_count: s.max_checkpoint_count,
        max_subscriber_count: s.max_subscriber_count,
        live_buffer_size: s.live_buffer_size,
        read_batch_size: s.read_batch_size,
        history_buffer_size: s.history_buffer_size,
        message_timeout: match s.message_timeout {
            Some(MessageTimeout::MessageTimeoutTicks(t)) => (Some(t), None),
            Some(MessageTimeout::MessageTimeoutMs(m)) => (None, Some(m)),
            None => (None, None),
        },
        checkpoint_after: match s.checkpoint_after {
            Some(CheckpointAfter::CheckpointAfterTicks(t)) => (Some(t), None),
            Some(CheckpointAfter::CheckpointAfterMs(m)) => (None, Some(m)),
            None => (None, None),
        },
        strategy,
    }
}

#[allow(deprecated)]
fn update_settings(s: ps::update_req::Settings) -> WireSettings {
    use ps::update_req::settings::{CheckpointAfter, MessageTimeout};
    WireSettings {
        resolve_links: s.resolve_links,
        extra_statistics: s.extra_statistics,
        max_retry_count: s.max_retry_count,
        min_checkpoint_count: s.min_checkpoint_count,
        max_checkpoint_count: s.max_checkpoint_count,
        max_subscriber_count: s.max_subscriber_count,
        live_buffer_size: s.live_buffer_size,
        read_batch_size: s.read_batch_size,
        history_buffer_size: s.history_buffer_size,
        message_timeout: match s.message_timeout {
            Some(MessageTimeout::MessageTimeoutTicks(t)) => (Some(t), None),
            Some(MessageTimeout::MessageTimeoutMs(m)) => (None, Some(m)),
            None => (None, None),
        },
        checkpoint_after: match s.checkpoint_after {
            Some(CheckpointAfter::CheckpointAfterTicks(t)) => (Some(t), None),
            Some(CheckpointAfter::CheckpointAfterMs(m)) => (None, Some(m)),
            None => (None, None),
        },
        strategy: named_strategy(s.named_consumer_strategy).to_string(),
    }
}

/// A stream group's start: a revision, the start or the end.
fn stream_start(revision: u64) -> StartFrom {
    match revision {
        0 => StartFrom::Start,
        u64::MAX => StartFrom::End,
        r => StartFrom::At(r),
    }
}

/// A `$all` group's start position. Positions here are the engine's (commit = prepare).
fn all_start(position: u64) -> StartFrom {
    match position {
        0 => StartFrom::Start,
        u64::MAX => StartFrom::End,
        p => StartFrom::At(p),
    }
}

/// A `$all` group's filter from the protocol's filter options.
fn group_filter(
    filter: Option<ps::create_req::all_options::FilterOption>,
) -> Result<GroupFilter, Status> {
    use ps::create_req::all_options::FilterOption;
    use ps::create_req::all_options::filter_options::Filter as Which;
    let Some(FilterOption::Filter(f)) = filter else {
        return Ok(GroupFilter::default());
    };
    let (subject, expression) = match f.filter {
        Some(Which::StreamIdentifier(e)) => (Subject::StreamName, e),
        Some(Which::EventType(e)) => (Subject::EventType, e),
        None => return Ok(GroupFilter::default()),
    };
    let mut out = GroupFilter::default();
    match (subject, expression.regex.is_empty()) {
        (Subject::StreamName, false) => out.stream_regex = Some(expression.regex),
        (Subject::EventType, false) => out.event_type_regex = Some(expression.regex),
        (Subject::StreamName, true) => out.stream_prefixes = expression.prefix,
        (Subject::EventType, true) => out.event_type_prefixes = expression.prefix,
    }
    if out.is_empty() {
        return Err(errors::invalid_argument(
            "a filter needs a regex or at least one prefix",
        ));
    }
    Ok(out)
}

/// A revision or position as the statistics show it.
fn position_text(source: &GroupSource, at: u64) -> String {
    match source {
        GroupSource::Stream(_) => at.to_string(),
        GroupSource::All => format!("C:{at}/P:{at}"),
    }
}

fn start_text(source: &GroupSource, start: Option<StartFrom>) -> String {
    let all = matches!(source, GroupSource::All);
    match (start.unwrap_or(StartFrom::End), all) {
        (StartFrom::Start, false) => "0".into(),
        (StartFrom::Start, true) => "C:0/P:0".into(),
        (StartFrom::End, false) => "-1".into(),
        (StartFrom::End, true) => "C:-1/P:-1".into(),
        (StartFrom::At(p), _) => position_text(source, p),
    }
}

fn clamp_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn subscription_info(info: GroupInfo) -> ps::SubscriptionInfo {
    let settings = info.settings.clone().unwrap_or_default();
    let effective = settings.effective().ok();
    let source = &info.key.source;
    let e = |f: fn(&crate::service::persistent::settings::Effective) -> u64| {
        effective.as_ref().map_or(0, f)
    };
    let connections = info
        .consumers
        .iter()
        .map(|c| ps::subscription_info::ConnectionInfo {
            from: c.name.clone(),
            username: c.user.clone(),
            average_items_per_second: 0,
            total_items: c.delivered as i64,
            count_since_last_measurement: 0,
            observed_measurements: Vec::new(),
            available_slots: clamp_i32(c.buffer_size.saturating_sub(c.in_flight)),
            in_flight_messages: clamp_i32(c.in_flight),
            connection_name: c.name.clone(),
        })
        .collect();
    ps::SubscriptionInfo {
        event_source: source.name().to_string(),
        group_name: info.key.group.clone(),
        status: info.status.to_string(),
        connections,
        average_per_second: 0,
        total_items: info.delivered as i64,
        count_since_last_measurement: 0,
        last_checkpointed_event_position: info
            .checkpoint
            .map(|c| position_text(source, c))
            .unwrap_or_default(),
        last_known_event_position: info
            .last_known
            .map(|c| position_text(source, c))
            .unwrap_or_default(),
        resolve_link_tos: settings.resolve_links.unwrap_or(false),
        start_from: start_text(source, settings.start_from),
        message_timeout_milliseconds: clamp_i32(e(|s| s.message_timeout.as_millis() as u64)),
        extra_statistics: settings.extra_statistics.unwrap_or(false),
        max_retry_count: clamp_i32(e(|s| u64::from(s.max_retry_count))),
        live_buffer_size: clamp_i32(e(|s| s.live_buffer_size as u64)),
        buffer_size: clamp_i32(e(|s| s.history_buffer_size as u64)),
        read_batch_size: clamp_i32(e(|s| s.read_batch_size as u64)),
        check_point_after_milliseconds: clamp_i32(e(|s| s.checkpoint_after.as_millis() as u64)),
        min_check_point_count: clamp_i32(e(|s| s.min_checkpoint_count)),
        max_check_point_count: clamp_i32(e(|s| s.max_checkpoint_count)),
        read_buffer_count: clamp_i32(info.ready),
        live_buffer_count: info.buffered as i64,
        retry_buffer_count: clamp_i32(info.delayed),
        total_in_flight_messages: clamp_i32(info.in_flight),
        outstanding_messages_count: clamp_i32(info.in_flight),
        named_consumer_strategy: effective
            .as_ref()
            .map_or("RoundRobin", |s| s.strategy.name())
            .to_string(),
        max_subscriber_count: clamp_i32(e(|s| u64::from(s.max_subscriber_count))),
        parked_message_count: info.parked as i64,
    }
}

/// One event for a consumer, ids in the form it asked for.
fn read_event(converter: &mut Converter, event: &crate::RecordedEvent, retry: u32) -> ps::ReadResp {
    use ps::read_resp::read_event as re;
    let resp = converter.read_resp(EventView::of_engine(event));
    let Some(read_resp::Content::Event(read_resp::ReadEvent { event: Some(e), .. })) = resp.content
    else {
        unreachable!("read_resp always carries its event")
    };
    let recorded = re::RecordedEvent {
        id: e.id,
        stream_identifier: e.stream_identifier,
        stream_revision: e.stream_revision,
        prepare_position: e.prepare_position,
        commit_position: e.commit_position,
        metadata: e.metadata,
        custom_metadata: e.custom_metadata,
        data: e.data,
    };
    ps::ReadResp {
        content: Some(ps::read_resp::Content::Event(ps::read_resp::ReadEvent {
            event: Some(recorded),
            link: None,
            position: Some(re::Position::CommitPosition(event.position.0)),
            count: Some(re::Count::RetryCount(clamp_i32(u64::from(retry)))),
        })),
    }
}

fn ids(ids: Vec<shared::Uuid>) -> Result<Vec<uuid::Uuid>, Status> {
    ids.into_iter()
        .map(|id| convert::uuid_from_wire(Some(id)))
        .collect()
}

fn nack_action(action: i32) -> NackAction {
    use ps::read_req::nack::Action;
    match Action::try_from(action).unwrap_or(Action::Unknown) {
        Action::Unknown => NackAction::Unknown,
        Action::Park => NackAction::Park,
        Action::Retry => NackAction::Retry,
        Action::Skip => NackAction::Skip,
        Action::Stop => NackAction::Stop,
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ps::ReadResp, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ps::persistent_subscriptions_server::PersistentSubscriptions for PersistentService {
    async fn create(
        &self,
        request: Request<ps::CreateReq>,
    ) -> Result<Response<ps::CreateResp>, Status> {
        use ps::create_req::all_options::AllOption;
        use ps::create_req::options::StreamOption;
        use ps::create_req::stream_options::RevisionOption;
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("options are required"))?;
        let wire = options
            .settings
            .ok_or_else(|| errors::invalid_argument("settings are required"))?;
        #[allow(deprecated)]
        let deprecated_revision = wire.revision;
        let settings = create_settings(wire);
        let (source, start, filter) = match options.stream_option {
            Some(StreamOption::Stream(s)) => {
                let start = match s.revision_option {
                    Some(RevisionOption::Revision(r)) => stream_start(r),
                    Some(RevisionOption::Start(_)) => StartFrom::Start,
                    Some(RevisionOption::End(_)) | None => StartFrom::End,
                };
                (
                    source_of(s.stream_identifier, false)?,
                    start,
                    GroupFilter::default(),
                )
            }
            Some(StreamOption::All(a)) => {
                let start = match a.all_option {
                    Some(AllOption::Position(p)) => all_start(p.commit_position),
                    Some(AllOption::Start(_)) => StartFrom::Start,
                    Some(AllOption::End(_)) | None => StartFrom::End,
                };
                (GroupSource::All, start, group_filter(a.filter_option)?)
            }
            // Clients before 21.10 name the stream at the top and the start in the settings.
            #[allow(deprecated)]
            None => (
                source_of(options.stream_identifier, false)?,
                stream_start(deprecated_revision),
                GroupFilter::default(),
            ),
        };
        let key = key(source, options.group_name)?;
        let settings = settings.into_settings(Some(start))?;
        self.service
            .create_group(&who, key.clone(), settings, filter)
            .await
            .map_err(|e| group_error(&key, &e))?;
        Ok(Response::new(ps::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<ps::UpdateReq>,
    ) -> Result<Response<ps::UpdateResp>, Status> {
        use ps::update_req::all_options::AllOption;
        use ps::update_req::options::StreamOption;
        use ps::update_req::stream_options::RevisionOption;
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("options are required"))?;
        let wire = options
            .settings
            .ok_or_else(|| errors::invalid_argument("settings are required"))?;
        #[allow(deprecated)]
        let deprecated_revision = wire.revision;
        let settings = update_settings(wire);
        let (source, start) = match options.stream_option {
            Some(StreamOption::Stream(s)) => {
                let start = match s.revision_option {
                    Some(RevisionOption::Revision(r)) => stream_start(r),
                    Some(RevisionOption::Start(_)) => StartFrom::Start,
                    Some(RevisionOption::End(_)) | None => StartFrom::End,
                };
                (source_of(s.stream_identifier, false)?, start)
            }
            Some(StreamOption::All(a)) => {
                let start = match a.all_option {
                    Some(AllOption::Position(p)) => all_start(p.commit_position),
                    Some(AllOption::Start(_)) => StartFrom::Start,
                    Some(AllOption::End(_)) | None => StartFrom::End,
                };
                (GroupSource::All, start)
            }
            #[allow(deprecated)]
            None => (
                source_of(options.stream_identifier, false)?,
                stream_start(deprecated_revision),
            ),
        };
        let key = key(source, options.group_name)?;
        let settings = settings.into_settings(Some(start))?;
        // The protocol's update carries no filter: a `$all` group keeps its own.
        self.service
            .update_group(&who, key.clone(), settings, None)
            .await
            .map_err(|e| group_error(&key, &e))?;
        Ok(Response::new(ps::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<ps::DeleteReq>,
    ) -> Result<Response<ps::DeleteResp>, Status> {
        use ps::delete_req::options::StreamOption;
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("options are required"))?;
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(StreamOption::All(_)) => GroupSource::All,
            None => return Err(errors::invalid_argument("stream_option is required")),
        };
        let key = key(source, options.group_name)?;
        self.service
            .delete_group(&who, key.clone())
            .await
            .map_err(|e| group_error(&key, &e))?;
        Ok(Response::new(ps::DeleteResp {}))
    }

    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<Streaming<ps::ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use ps::read_req::Content;
        use ps::read_req::options::StreamOption;
        use ps::read_req::options::uuid_option::Content as IdForm;
        let who = self.caller(&request).await?;
        let name = request
            .metadata()
            .get("connection-name")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.remote_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let options = match inbound.message().await? {
            Some(ps::ReadReq {
                content: Some(Content::Options(o)),
            }) => o,
            _ => {
                return Err(errors::invalid_argument(
                    "the first message of Read must carry its options",
                ));
            }
        };
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(StreamOption::All(_)) => GroupSource::All,
            None => return Err(errors::invalid_argument("stream_option is required")),
        };
        let key = key(source, options.group_name)?;
        let structured = !matches!(
            options.uuid_option.and_then(|u| u.content),
            Some(IdForm::String(_))
        );
        let buffer = usize::try_from(options.buffer_size.max(1)).unwrap_or(1);
        let mut consumer = self
            .service
            .consume(&who, key.clone(), name, buffer)
            .await
            .map_err(|e| group_error(&key, &e))?;
        let (tx, rx) = mpsc::channel(READ_QUEUE);
        let confirmation = ps::ReadResp {
            content: Some(ps::read_resp::Content::SubscriptionConfirmation(
                ps::read_resp::SubscriptionConfirmation {
                    subscription_id: key.to_string(),
                },
            )),
        };
        tx.try_send(Ok(confirmation))
            .map_err(|_| Status::internal("the new call's queue is full"))?;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let (_, closed) = mpsc::channel(1);
            let mut deliveries = std::mem::replace(&mut consumer.rx, closed);
            let mut converter = Converter::new(structured);
            let mut inbound_open = true;
            // The next message for the connection; an error ends the call once sent. Acks
            // keep being read while it waits for the connection.
            let mut pending: Option<Result<ps::ReadResp, Status>> = None;
            loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => {
                        let _ = tx.try_send(Err(Status::unavailable("Server Is Not Ready")));
                        break;
                    }
                    () = tx.closed() => break,
                    message = inbound.message(), if inbound_open => {
                        let done = match message {
                            Ok(Some(ps::ReadReq { content: Some(Content::Ack(a)) })) => {
                                match ids(a.ids) {
                                    Ok(ids) => consumer.ack(ids).await.map_err(|e| ack_error(&key, &e)),
                                    Err(status) => Err(status),
                                }
                            }
                            Ok(Some(ps::ReadReq { content: Some(Content::Nack(n)) })) => {
                                let action = nack_action(n.action);
                                match ids(n.ids) {
                                    Ok(ids) => consumer
                                        .nack(ids, action, n.reason)
                                        .await
                                        .map_err(|e| ack_error(&key, &e)),
                                    Err(status) => Err(status),
                                }
                            }
                            Ok(Some(_)) => Err(errors::invalid_argument(
                                "after its options, Read takes only Ack and Nack",
                            )),
                            // The client has finished sending; it may still read.
                            Ok(None) => {
                                inbound_open = false;
                                Ok(())
                            }
                            // The client went away.
                            Err(_) => break,
                        };
                        if let Err(status) = done {
                            pending = Some(Err(status));
                        }
                    }
                    permit = tx.reserve(), if pending.is_some() => {
                        let Ok(permit) = permit else { break };
                        let Some(reply) = pending.take() else { continue };
                        let last = reply.is_err();
                        permit.send(reply);
                        if last {
                            break;
                        }
                    }
                    delivery = deliveries.recv(), if pending.is_none() => {
                        pending = Some(match delivery {
                            Some(Delivery::Event { event, retry_count }) => {
                                Ok(read_event(&mut converter, &event, retry_count))
                            }
                            Some(Delivery::Dropped(Error::Closed)) => {
                                Err(Status::unavailable("Server Is Not Ready"))
                            }
                            Some(Delivery::Dropped(Error::GroupFull { .. })) => {
                                Err(maximum_subscribers(&key))
                            }
                            Some(Delivery::Dropped(_)) | None => Err(dropped(&key)),
                        });
                    }
                }
            }
            // Dropping the consumer hands its in-flight events to the others.
            drop(consumer);
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_info(
        &self,
        request: Request<ps::GetInfoReq>,
    ) -> Result<Response<ps::GetInfoResp>, Status> {
        use ps::get_info_req::options::StreamOption;
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("options are required"))?;
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(StreamOption::All(_)) => GroupSource::All,
            None => return Err(errors::invalid_argument("stream_option is required")),
        };
        let key = key(source, options.group_name)?;
        let info = self
            .service
            .group_info(&who, key.clone())
            .await
            .map_err(|e| group_error(&key, &e))?;
        Ok(Response::new(ps::GetInfoResp {
            subscription_info: Some(subscription_info(info)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ps::ReplayParkedReq>,
    ) -> Result<Response<ps::ReplayParkedResp>, Status> {
        use ps::replay_parked_req::options::{StopAtOption, StreamOption};
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("options are required"))?;
        let source = match options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(StreamOption::All(_)) => GroupSource::All,
            None => return Err(errors::invalid_argument("stream_option is required")),
        };
        let key = key(source, options.group_name)?;
        // A negative count, like no count, replays everything.
        let stop_at = match options.stop_at_option {
            Some(StopAtOption::StopAt(n)) => u64::try_from(n).ok(),
            Some(StopAtOption::NoLimit(_)) | None => None,
        };
        self.service
            .replay_parked(&who, key.clone(), stop_at)
            .await
            .map_err(|e| group_error(&key, &e))?;
        Ok(Response::new(ps::ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ps::ListReq>) -> Result<Response<ps::ListResp>, Status> {
        use ps::list_req::options::ListOption;
        use ps::list_req::stream_option::StreamOption;
        let who = self.caller(&request).await?;
        let option = request.into_inner().options.and_then(|o| o.list_option);
        let source = match option {
            None | Some(ListOption::ListAllSubscriptions(_)) => None,
            Some(ListOption::ListForStream(s)) => Some(match s.stream_option {
                Some(StreamOption::Stream(s)) => source_of(Some(s), false)?,
                Some(StreamOption::All(_)) => GroupSource::All,
                None => return Err(errors::invalid_argument("stream_option is required")),
            }),
        };
        let infos = self
            .service
            .list_groups(&who, source.clone())
            .await
            .map_err(|e| errors::from_engine(&e))?;
        if infos.is_empty() {
            // KurrentDB answers "none" as not found; clients read it as an empty list.
            let stream = source.as_ref().map_or("", GroupSource::name);
            return Err(with_trailers(
                Code::NotFound,
                format!("Subscription group '' on stream '{stream}' does not exist."),
                &[
                    ("exception", "persistent-subscription-does-not-exist"),
                    ("stream-name", stream),
                    ("group-name", ""),
                ],
            ));
        }
        Ok(Response::new(ps::ListResp {
            subscriptions: infos.into_iter().map(subscription_info).collect(),
        }))
    }

    async fn restart_subsystem(
        &self,
        request: Request<shared::Empty>,
    ) -> Result<Response<shared::Empty>, Status> {
        let who = self.caller(&request).await?;
        self.service
            .restart_groups(&who)
            .await
            .map_err(|e| errors::from_engine(&e))?;
        Ok(Response::new(shared::Empty {}))
    }
}
