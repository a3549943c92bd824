//! `event_store.client.streams.Streams`: reads and catch-up subscriptions, appends (unary and
//! batched), delete and tombstone, each a translation onto the engine's own call.
//!
//! Position and revision rules of the protocol, as applied here:
//! - reading `$all` forwards from P includes P; backwards from P excludes it;
//! - reading a stream from revision R includes R, both ways;
//! - a subscription from P or R starts after it; `start` is the beginning, `end` only new
//!   events.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, EventView};
use super::errors;
use super::proto::event_store::client::Empty;
use super::proto::event_store::client::streams::{
    self as wire, append_req, append_resp, batch_append_req, batch_append_resp, read_req,
    read_resp, streams_server::Streams,
};
use crate::METADATA_STREAM_PREFIX;
use crate::error::{ActualRevision, Error, Limit};
use crate::server::caller;
use crate::service::{AllRead, Principal, Service, StreamRead, SubscriptionMessage, Target};
use crate::types::{
    AppendResult, Direction, EventData, ExpectedRevision, Position, Revision, StreamAppend,
};

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Batch append replies buffered for one connection.
const BATCH_REPLY_BUFFER: usize = 64;
/// Batches of one BatchAppend call being received at once (not yet final). One more ends the
/// call with RESOURCE_EXHAUSTED: a client that never finishes its batches cannot make the
/// server hold them without bound.
pub const PENDING_BATCHES_MAX: usize = 64;
/// Bytes an event's type and metadata map add beyond their text (field tags and lengths).
const PROPOSED_OVERHEAD_BYTES: u64 = 16;

pub struct StreamsService {
    service: Arc<Service>,
}

impl StreamsService {
    pub fn new(service: Arc<Service>) -> StreamsService {
        StreamsService { service }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        caller(&self.service, request)
            .await
            .map_err(|e| errors::from_engine(&e))
    }
}

/// The bytes a proposed event adds to an append: everything the client sent for it, its type
/// and metadata map included, counted as the messages arrive (before any conversion).
fn proposed_bytes(
    data: &[u8],
    custom_metadata: &[u8],
    metadata: &std::collections::BTreeMap<String, String>,
) -> u64 {
    let map: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    (data.len() + custom_metadata.len() + map) as u64 + PROPOSED_OVERHEAD_BYTES
}

/// Appends `events` to `stream`, or, for a `$$S` metadata stream, sets S's metadata from the
/// one event's JSON (the engine keeps metadata as its own records in `$$S`).
async fn write(
    service: &Service,
    who: &Principal,
    stream: String,
    expected: ExpectedRevision,
    mut events: Vec<EventData>,
) -> Result<AppendResult, Error> {
    if let Some(target) = stream.strip_prefix(METADATA_STREAM_PREFIX) {
        if events.len() != 1 {
            return Err(Error::InvalidArgument(format!(
                "an append to the metadata stream '{stream}' must hold exactly one event \
                 (the stream's metadata as JSON), not {}",
                events.len()
            )));
        }
        let event = events.pop().unwrap_or_else(|| EventData::json("", ""));
        return service
            .set_stream_metadata_json(who, target.to_string(), expected, &event.data)
            .await;
    }
    let mut results = service
        .append(who, vec![StreamAppend::new(stream, expected, events)])
        .await?;
    results
        .pop()
        .ok_or_else(|| Error::Internal("append returned no result".into()))
}

/// The stream's current revision as a wrong-expected-version reply states it; a tombstoned or
/// unreadable stream counts as none.
fn current_revision(service: &Service, who: &Principal, stream: &str) -> Option<u64> {
    service
        .stream_revision(who, stream)
        .ok()
        .flatten()
        .map(|r| r.0)
}

/// The current revision a wrong-version error reports, or `None` when the error is another.
fn wrong_version_current(
    service: &Service,
    who: &Principal,
    stream: &str,
    error: &Error,
) -> Option<Option<u64>> {
    match error {
        Error::WrongExpectedRevision { actual, .. } => Some(match actual {
            ActualRevision::Revision(r) => Some(r.0),
            ActualRevision::NoStream => None,
        }),
        // A retry whose ids do not match what is stored: KurrentDB's "corrupted idempotency",
        // reported as a wrong expected version.
        Error::IdempotencyConflict { .. } => Some(current_revision(service, who, stream)),
        _ => None,
    }
}

macro_rules! expected_revision {
    ($option:expr, $path:path) => {{
        use $path as E;
        match $option {
            Some(E::Revision(r)) => ExpectedRevision::Exact(Revision(r)),
            Some(E::NoStream(_)) => ExpectedRevision::NoStream,
            Some(E::StreamExists(_)) => ExpectedRevision::StreamExists,
            Some(E::Any(_)) | None => ExpectedRevision::Any,
        }
    }};
}

fn append_success(result: &AppendResult) -> wire::AppendResp {
    use append_resp::success::{CurrentRevisionOption, PositionOption};
    let position = result.last_position.0;
    wire::AppendResp {
        result: Some(append_resp::Result::Success(append_resp::Success {
            current_revision_option: Some(CurrentRevisionOption::CurrentRevision(
                result.revision.0,
            )),
            position_option: Some(PositionOption::Position(append_resp::Position {
                commit_position: position,
                prepare_position: position,
            })),
        })),
    }
}

fn append_wrong_version(expected: ExpectedRevision, current: Option<u64>) -> wire::AppendResp {
    use append_resp::wrong_expected_version::{
        CurrentRevisionOption as Current, CurrentRevisionOption2060 as Current20,
        ExpectedRevisionOption as Want, ExpectedRevisionOption2060 as Want20,
    };
    let (current, current_20) = match current {
        Some(r) => (
            Current::CurrentRevision(r),
            Current20::CurrentRevision2060(r),
        ),
        None => (
            Current::CurrentNoStream(Empty {}),
            Current20::NoStream2060(Empty {}),
        ),
    };
    let (want, want_20) = match expected {
        ExpectedRevision::Exact(r) => (
            Want::ExpectedRevision(r.0),
            Some(Want20::ExpectedRevision2060(r.0)),
        ),
        ExpectedRevision::Any => (Want::ExpectedAny(Empty {}), Some(Want20::Any2060(Empty {}))),
        ExpectedRevision::StreamExists => (
            Want::ExpectedStreamExists(Empty {}),
            Some(Want20::StreamExists2060(Empty {})),
        ),
        // The older fields have no "no stream"; they carry it as revision −1 would not fit.
        ExpectedRevision::NoStream => (Want::ExpectedNoStream(Empty {}), None),
    };
    wire::AppendResp {
        result: Some(append_resp::Result::WrongExpectedVersion(
            append_resp::WrongExpectedVersion {
                current_revision_option_20_6_0: Some(current_20),
                expected_revision_option_20_6_0: want_20,
                current_revision_option: Some(current),
                expected_revision_option: Some(want),
            },
        )),
    }
}

/// An append with no events (unary or batched) writes nothing, as in KurrentDB: the stream's
/// current revision, `Ok` when the expected revision holds and `Err` when it does not.
fn empty_write(
    service: &Service,
    who: &Principal,
    stream: &str,
    expected: ExpectedRevision,
) -> Result<Result<Option<u64>, Option<u64>>, Error> {
    let current = service.stream_revision(who, stream)?.map(|r| r.0);
    let holds = match expected {
        ExpectedRevision::Any => true,
        ExpectedRevision::NoStream => current.is_none(),
        ExpectedRevision::StreamExists => current.is_some(),
        ExpectedRevision::Exact(r) => current == Some(r.0),
    };
    Ok(if holds { Ok(current) } else { Err(current) })
}

/// A unary append with no events: the reply says where the stream is, if the expected
/// revision holds.
fn empty_append(
    service: &Service,
    who: &Principal,
    stream: &str,
    expected: ExpectedRevision,
) -> Result<wire::AppendResp, Status> {
    use append_resp::success::{CurrentRevisionOption, PositionOption};
    let current = match empty_write(service, who, stream, expected) {
        Ok(Ok(current)) => current,
        Ok(Err(current)) => return Ok(append_wrong_version(expected, current)),
        Err(e) => return Err(errors::from_engine(&e)),
    };
    Ok(wire::AppendResp {
        result: Some(append_resp::Result::Success(append_resp::Success {
            current_revision_option: Some(match current {
                Some(r) => CurrentRevisionOption::CurrentRevision(r),
                None => CurrentRevisionOption::NoStream(Empty {}),
            }),
            position_option: Some(PositionOption::NoPosition(Empty {})),
        })),
    })
}

/// The status of a failed delete or tombstone.
fn delete_error(stream: &str, expected: ExpectedRevision, error: &Error) -> Status {
    match error {
        Error::WrongExpectedRevision { actual, .. } => {
            errors::delete_wrong_version(stream, expected, errors::actual_number(actual))
        }
        // The engine refuses to delete a stream with neither events nor metadata; the protocol
        // calls that a wrong expected version with actual −1, which clients show as "not
        // found". (One with only metadata is deleted, as in KurrentDB.)
        Error::StreamNotFound { .. } => errors::delete_wrong_version(stream, expected, -1),
        other => errors::from_engine(other),
    }
}

/// A read's pages, sent to the client one message per event (the protocol's shape). Each page
/// is converted when the connection asks for its first message.
struct Pages {
    pages: Pin<Box<dyn Stream<Item = Result<Vec<wire::ReadResp>, Status>> + Send>>,
    current: std::vec::IntoIter<wire::ReadResp>,
}

impl Pages {
    fn new(
        pages: impl Stream<Item = Result<Vec<wire::ReadResp>, Status>> + Send + 'static,
    ) -> Pages {
        Pages {
            pages: Box::pin(pages),
            current: Vec::new().into_iter(),
        }
    }
}

impl Stream for Pages {
    type Item = Result<wire::ReadResp, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(message) = self.current.next() {
                return Poll::Ready(Some(Ok(message)));
            }
            match std::task::ready!(self.pages.as_mut().poll_next(cx)) {
                Some(Ok(page)) => self.current = page.into_iter(),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Engine events as the protocol's read messages.
fn read_resps(events: &[crate::RecordedEvent], structured: bool) -> Vec<wire::ReadResp> {
    let mut convert = convert::Converter::new(structured);
    events
        .iter()
        .map(|e| convert.read_resp(EventView::of_engine(e)))
        .collect()
}

/// Where a read starts.
enum From {
    Start,
    End,
    At(u64),
}

/// A subscription's messages in the protocol's shape.
struct KurrentFeed {
    structured_ids: bool,
    /// A stream subscription (caught-up carries a revision) rather than `$all` (a position).
    stream: bool,
}

fn now_timestamp() -> prost_types::Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
}

impl KurrentFeed {
    fn messages(&self, message: SubscriptionMessage) -> Vec<wire::ReadResp> {
        match message {
            SubscriptionMessage::Events(events) => read_resps(&events, self.structured_ids),
            SubscriptionMessage::Checkpoint { position } => vec![wire::ReadResp {
                content: Some(read_resp::Content::Checkpoint(read_resp::Checkpoint {
                    commit_position: position,
                    prepare_position: position,
                    timestamp: Some(now_timestamp()),
                })),
            }],
            SubscriptionMessage::CaughtUp { position, revision } => {
                vec![self.caught_up(position, revision)]
            }
            // KurrentDB does not tell clients it fell behind: the fallback to disk is silent.
            SubscriptionMessage::FellBehind { .. } => Vec::new(),
        }
    }

    fn caught_up(&self, position: u64, revision: Option<u64>) -> wire::ReadResp {
        let (stream_revision, position) = if self.stream {
            (revision.map(|r| r as i64), None)
        } else {
            let at = (position > 0).then_some(read_resp::Position {
                commit_position: position,
                prepare_position: position,
            });
            (None, at)
        };
        wire::ReadResp {
            content: Some(read_resp::Content::CaughtUp(read_resp::CaughtUp {
                timestamp: Some(now_timestamp()),
                stream_revision,
                position,
            })),
        }
    }
}

fn stream_not_found(stream: &str) -> wire::ReadResp {
    wire::ReadResp {
        content: Some(read_resp::Content::StreamNotFound(
            read_resp::StreamNotFound {
                stream_identifier: Some(convert::stream_identifier(stream)),
            },
        )),
    }
}

/// A soft delete or a tombstone.
enum Removal {
    Delete,
    Tombstone,
}

impl StreamsService {
    /// Deletes or tombstones a stream; the position of the record written.
    async fn remove(
        &self,
        who: &Principal,
        stream: Option<super::proto::event_store::client::StreamIdentifier>,
        expected: ExpectedRevision,
        removal: Removal,
    ) -> Result<u64, Status> {
        let stream = convert::stream_name(stream)?;
        let name = stream.clone();
        match removal {
            Removal::Delete => self.service.delete_stream(who, name, expected).await,
            Removal::Tombstone => self.service.tombstone_stream(who, name, expected).await,
        }
        .map(|p| p.0)
        .map_err(|e| delete_error(&stream, expected, &e))
    }

    /// A `$$S` stream of a tombstoned S reads as deleted.
    fn check_metadata_stream(&self, who: &Principal, stream: &str) -> Result<(), Status> {
        if let Some(target) = stream.strip_prefix(METADATA_STREAM_PREFIX)
            && let Err(Error::StreamDeleted { .. }) = self.service.stream_revision(who, target)
        {
            return Err(errors::stream_deleted(stream));
        }
        Ok(())
    }

    async fn read_stream(
        &self,
        who: &Principal,
        stream: String,
        from: From,
        direction: Direction,
        count: u64,
        structured: bool,
    ) -> Result<Pages, Status> {
        self.check_metadata_stream(who, &stream)?;
        let mut next = match from {
            From::Start => 0,
            From::End => u64::MAX,
            From::At(r) => r,
        };
        let mut count = count;
        // A metadata stream has a max count of 1 in KurrentDB: reads see only the current
        // version (clients read `$$S` forwards from the start and take the first event). The
        // engine keeps every version, as history.
        if stream.starts_with(METADATA_STREAM_PREFIX)
            && let Ok(Some(Revision(last))) = self.service.stream_revision(who, &stream)
        {
            match direction {
                Direction::Forwards => next = next.max(last),
                Direction::Backwards if next >= last => {
                    next = last;
                    count = count.min(1);
                }
                Direction::Backwards => count = 0,
            }
        }
        if count == 0 {
            return Ok(Pages::new(tokio_stream::empty()));
        }
        let read = StreamRead {
            stream: stream.clone(),
            from: Revision(next),
            direction,
            count,
        };
        match self.service.read_stream(who, read).await {
            Ok(pages) => Ok(Pages::new(pages.map(move |page| match page {
                Ok(events) => Ok(read_resps(&events, structured)),
                Err(e) => Err(errors::from_engine(&e)),
            }))),
            Err(Error::StreamNotFound { .. }) => {
                Ok(Pages::new(tokio_stream::once(Ok(vec![stream_not_found(
                    &stream,
                )]))))
            }
            Err(e) => Err(errors::from_engine(&e)),
        }
    }

    fn read_all(
        &self,
        who: &Principal,
        from: From,
        direction: Direction,
        count: u64,
        filter: convert::WireFilter,
        structured: bool,
    ) -> Result<Pages, Status> {
        // Forwards from P includes P; backwards from P excludes it.
        let start = match (from, direction) {
            (From::Start, Direction::Forwards) => Some(1),
            (From::Start, Direction::Backwards) => None,
            (From::End, Direction::Forwards) => None,
            (From::End, Direction::Backwards) => Some(Position::END.0),
            (From::At(p), Direction::Forwards) => (p != u64::MAX).then_some(p.max(1)),
            (From::At(p), Direction::Backwards) => {
                if p == u64::MAX {
                    Some(Position::END.0)
                } else {
                    p.checked_sub(1).filter(|p| *p > 0)
                }
            }
        };
        let Some(start) = start.filter(|_| count > 0) else {
            // Nothing to read, but the caller's right to read the log is still checked.
            self.service
                .authorize_all(who)
                .map_err(|e| errors::from_engine(&e))?;
            return Ok(Pages::new(tokio_stream::empty()));
        };
        let read = AllRead {
            from: Position(start),
            direction,
            count,
            filter: filter.filter,
            matcher: filter.matcher,
        };
        let pages = self
            .service
            .read_all(who, read)
            .map_err(|e| errors::from_engine(&e))?;
        Ok(Pages::new(pages.map(move |page| match page {
            Ok(page) => Ok(read_resps(&page.events, structured)),
            Err(e) => Err(errors::from_engine(&e)),
        })))
    }

    fn subscribe(
        &self,
        who: &Principal,
        stream: Option<String>,
        from: From,
        filter: convert::WireFilter,
        structured: bool,
    ) -> Result<Pages, Status> {
        if let Some(s) = &stream {
            self.check_metadata_stream(who, s)?;
        }
        let confirmation = wire::ReadResp {
            content: Some(read_resp::Content::Confirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: uuid::Uuid::new_v4().to_string(),
                },
            )),
        };
        let feed = KurrentFeed {
            structured_ids: structured,
            stream: stream.is_some(),
        };
        // A subscription starts after its position or revision (exclusive).
        let (target, after_position, next_revision) = match stream {
            Some(name) => {
                let next = match from {
                    From::Start => 0,
                    From::At(r) => r.saturating_add(1),
                    // A tombstoned stream fails in the subscription, after the confirmation.
                    From::End => match self.service.stream_revision(who, &name) {
                        Ok(Some(r)) => r.0.saturating_add(1),
                        _ => 0,
                    },
                };
                (Target::Stream { name }, 0, next)
            }
            None => {
                let after = match from {
                    From::Start => 0,
                    From::End => self.service.last_position().0,
                    From::At(p) => p,
                };
                let target = Target::All {
                    filter: filter.filter,
                    matcher: filter.matcher,
                    checkpoint_interval: filter.checkpoint_interval,
                };
                (target, after, 0)
            }
        };
        let messages = self
            .service
            .subscribe(who, target, after_position, next_revision)
            .map_err(|e| errors::from_engine(&e))?;
        let messages = messages.map(move |m| match m {
            Ok(m) => Ok(feed.messages(m)),
            Err(Error::Closed) => Err(Status::unavailable("Server Is Shutting Down")),
            Err(e) => Err(errors::from_engine(&e)),
        });
        Ok(Pages::new(
            tokio_stream::once(Ok(vec![confirmation])).chain(messages),
        ))
    }
}

fn combination(options: &read_req::Options) -> String {
    let target = match options.stream_option {
        Some(read_req::options::StreamOption::Stream(_)) => "stream",
        Some(read_req::options::StreamOption::All(_)) => "all",
        None => "no stream option",
    };
    let count = match options.count_option {
        Some(read_req::options::CountOption::Count(_)) => "count",
        Some(read_req::options::CountOption::Subscription(_)) => "subscription",
        None => "no count option",
    };
    let direction = if options.read_direction == read_req::options::ReadDirection::Backwards as i32
    {
        "backwards"
    } else {
        "forwards"
    };
    let filter = match options.filter_option {
        Some(read_req::options::FilterOption::Filter(_)) => "filter",
        _ => "no filter",
    };
    format!("The combination of {target}, {count}, {direction} and {filter} is invalid.")
}

/// The deadline of a batch: `None` when there is none (or it is too far to represent).
/// `Err` when it has already passed.
fn batch_deadline(options: &batch_append_req::Options) -> Result<Option<Instant>, ()> {
    use batch_append_req::options::DeadlineOption;
    let left = match &options.deadline_option {
        None => return Ok(None),
        Some(DeadlineOption::Deadline(d)) => {
            if d.seconds < 0 || (d.seconds == 0 && d.nanos <= 0) {
                return Err(());
            }
            Duration::new(d.seconds as u64, d.nanos.max(0) as u32)
        }
        Some(DeadlineOption::Deadline21100(ts)) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let at = Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32);
            if ts.seconds < 0 || at <= now {
                return Err(());
            }
            at - now
        }
    };
    // Clients send ten thousand years for "no deadline": saturate rather than overflow.
    Ok(Instant::now().checked_add(left))
}

/// One batch being received.
struct PendingBatch {
    /// The correlation id as the client sent it (structured or string), echoed in the reply.
    correlation: super::proto::event_store::client::Uuid,
    options: Option<batch_append_req::Options>,
    events: Vec<EventData>,
    bytes: u64,
    deadline: Option<Instant>,
    /// Set once the batch has failed (a bad event, too large, past its deadline); the rest of
    /// its messages are dropped and this is the reply.
    failed: Option<super::proto::google::rpc::Status>,
}

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = ReplyStream<wire::ReadResp>;

    async fn read(
        &self,
        request: Request<wire::ReadReq>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        use read_req::options::{CountOption, StreamOption};
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("read options are required"))?;
        let structured = match options
            .uuid_option
            .as_ref()
            .and_then(|u| u.content.as_ref())
        {
            Some(read_req::options::uuid_option::Content::Structured(_)) => true,
            Some(read_req::options::uuid_option::Content::String(_)) => false,
            None => return Err(errors::invalid_argument("uuid_option is required")),
        };
        let direction =
            if options.read_direction == read_req::options::ReadDirection::Backwards as i32 {
                Direction::Backwards
            } else {
                Direction::Forwards
            };
        let filtered = matches!(
            options.filter_option,
            Some(read_req::options::FilterOption::Filter(_))
        );
        let invalid = combination(&options);
        let filter = convert::filter(options.filter_option).await?;
        let stream_from = |s: &read_req::options::StreamOptions| {
            use read_req::options::stream_options::RevisionOption;
            match s.revision_option {
                Some(RevisionOption::Revision(r)) => From::At(r),
                Some(RevisionOption::End(_)) => From::End,
                Some(RevisionOption::Start(_)) | None => From::Start,
            }
        };
        let all_from = |a: &read_req::options::AllOptions| {
            use read_req::options::all_options::AllOption;
            match &a.all_option {
                Some(AllOption::Position(p)) => From::At(p.commit_position),
                Some(AllOption::End(_)) => From::End,
                Some(AllOption::Start(_)) | None => From::Start,
            }
        };
        let reply: ReplyStream<wire::ReadResp> = match (options.stream_option, options.count_option)
        {
            (Some(StreamOption::Stream(s)), Some(CountOption::Count(n))) if !filtered => {
                let name = convert::stream_name(s.stream_identifier.clone())?;
                let pages = self
                    .read_stream(&who, name, stream_from(&s), direction, n, structured)
                    .await?;
                Box::pin(pages)
            }
            (Some(StreamOption::All(a)), Some(CountOption::Count(n))) => {
                Box::pin(self.read_all(&who, all_from(&a), direction, n, filter, structured)?)
            }
            (Some(StreamOption::Stream(s)), Some(CountOption::Subscription(_)))
                if !filtered && direction == Direction::Forwards =>
            {
                let name = convert::stream_name(s.stream_identifier.clone())?;
                Box::pin(self.subscribe(&who, Some(name), stream_from(&s), filter, structured)?)
            }
            (Some(StreamOption::All(a)), Some(CountOption::Subscription(_)))
                if direction == Direction::Forwards =>
            {
                Box::pin(self.subscribe(&who, None, all_from(&a), filter, structured)?)
            }
            _ => return Err(errors::invalid_argument(invalid)),
        };
        Ok(Response::new(reply))
    }

    async fn append(
        &self,
        request: Request<Streaming<wire::AppendReq>>,
    ) -> Result<Response<wire::AppendResp>, Status> {
        let who = self.caller(&request).await?;
        let mut input = request.into_inner();
        let options = match input.message().await.map_err(malformed)? {
            Some(wire::AppendReq {
                content: Some(append_req::Content::Options(o)),
            }) => o,
            _ => {
                return Err(errors::invalid_argument(
                    "the first message of an append must be its options",
                ));
            }
        };
        let stream = convert::stream_name(options.stream_identifier)?;
        let expected = expected_revision!(
            options.expected_stream_revision,
            append_req::options::ExpectedStreamRevision
        );
        let limits = self.service.store_config();
        let limit = limits.append_bytes_max;
        let events_max = limits.append_events_max;
        let mut events = Vec::new();
        let mut bytes = 0u64;
        while let Some(message) = input.message().await.map_err(malformed)? {
            let Some(append_req::Content::ProposedMessage(m)) = message.content else {
                return Err(errors::invalid_argument(
                    "an append's options come once, before its events",
                ));
            };
            // Counted as the messages arrive, so an oversized append is refused before it is
            // all held.
            bytes += proposed_bytes(&m.data, &m.custom_metadata, &m.metadata);
            if bytes > limit {
                return Err(errors::maximum_append_size(limit));
            }
            if events.len() as u64 >= events_max {
                return Err(errors::from_engine(&Error::LimitExceeded {
                    what: Limit::AppendEvents,
                    limit: events_max,
                    actual: events.len() as u64 + 1,
                }));
            }
            events.push(convert::proposed(
                m.id,
                m.metadata,
                m.custom_metadata,
                m.data,
            )?);
        }
        if events.is_empty() {
            return empty_append(&self.service, &who, &stream, expected).map(Response::new);
        }
        match write(&self.service, &who, stream.clone(), expected, events).await {
            Ok(result) => Ok(Response::new(append_success(&result))),
            Err(e) => match wrong_version_current(&self.service, &who, &stream, &e) {
                Some(current) => Ok(Response::new(append_wrong_version(expected, current))),
                None => Err(errors::from_engine(&e)),
            },
        }
    }

    async fn delete(
        &self,
        request: Request<wire::DeleteReq>,
    ) -> Result<Response<wire::DeleteResp>, Status> {
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("delete options are required"))?;
        let expected = expected_revision!(
            options.expected_stream_revision,
            wire::delete_req::options::ExpectedStreamRevision
        );
        let p = self
            .remove(&who, options.stream_identifier, expected, Removal::Delete)
            .await?;
        Ok(Response::new(wire::DeleteResp {
            position_option: Some(wire::delete_resp::PositionOption::Position(
                wire::delete_resp::Position {
                    commit_position: p,
                    prepare_position: p,
                },
            )),
        }))
    }

    async fn tombstone(
        &self,
        request: Request<wire::TombstoneReq>,
    ) -> Result<Response<wire::TombstoneResp>, Status> {
        let who = self.caller(&request).await?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| errors::invalid_argument("tombstone options are required"))?;
        let expected = expected_revision!(
            options.expected_stream_revision,
            wire::tombstone_req::options::ExpectedStreamRevision
        );
        let p = self
            .remove(
                &who,
                options.stream_identifier,
                expected,
                Removal::Tombstone,
            )
            .await?;
        Ok(Response::new(wire::TombstoneResp {
            position_option: Some(wire::tombstone_resp::PositionOption::Position(
                wire::tombstone_resp::Position {
                    commit_position: p,
                    prepare_position: p,
                },
            )),
        }))
    }

    type BatchAppendStream = ReplyStream<wire::BatchAppendResp>;

    async fn batch_append(
        &self,
        request: Request<Streaming<wire::BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let who = Arc::new(self.caller(&request).await?);
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel(BATCH_REPLY_BUFFER);
        let service = Arc::clone(&self.service);
        tokio::spawn(async move {
            let limit = service.store_config().append_bytes_max;
            let events_max = service.store_config().append_events_max;
            // Every pending batch is at most `limit` bytes, and there are at most
            // PENDING_BATCHES_MAX of them: the call holds at most their product.
            let mut pending: HashMap<uuid::Uuid, PendingBatch> = HashMap::new();
            loop {
                let message = match input.message().await {
                    Ok(Some(m)) => m,
                    // The client closed its side: batches not yet final are dropped unwritten.
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(malformed(status))).await;
                        return;
                    }
                };
                let wire_id = message.correlation_id.clone().unwrap_or_default();
                let correlation = match convert::uuid_from_wire(message.correlation_id) {
                    Ok(id) => id,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if !pending.contains_key(&correlation) && pending.len() >= PENDING_BATCHES_MAX {
                    let error = Error::LimitExceeded {
                        what: Limit::PendingBatches,
                        limit: PENDING_BATCHES_MAX as u64,
                        actual: PENDING_BATCHES_MAX as u64 + 1,
                    };
                    let _ = tx.send(Err(errors::from_engine(&error))).await;
                    return;
                }
                let batch = pending.entry(correlation).or_insert_with(|| PendingBatch {
                    correlation: wire_id,
                    options: None,
                    events: Vec::new(),
                    bytes: 0,
                    deadline: None,
                    failed: None,
                });
                if let Some(options) = message.options
                    && batch.options.is_none()
                {
                    match batch_deadline(&options) {
                        Ok(deadline) => batch.deadline = deadline,
                        Err(()) => batch.failed = Some(errors::batch_timeout()),
                    }
                    batch.options = Some(options);
                }
                if batch.failed.is_none() {
                    for m in message.proposed_messages {
                        batch.bytes += proposed_bytes(&m.data, &m.custom_metadata, &m.metadata);
                        let over = if batch.bytes > limit {
                            Some(Error::LimitExceeded {
                                what: Limit::AppendBytes,
                                limit,
                                actual: batch.bytes,
                            })
                        } else if batch.events.len() as u64 >= events_max {
                            Some(Error::LimitExceeded {
                                what: Limit::AppendEvents,
                                limit: events_max,
                                actual: batch.events.len() as u64 + 1,
                            })
                        } else {
                            None
                        };
                        if let Some(error) = over {
                            batch.failed =
                                Some(errors::batch_status(&error, ExpectedRevision::Any, None));
                            batch.events = Vec::new();
                            break;
                        }
                        match convert::proposed(m.id, m.metadata, m.custom_metadata, m.data) {
                            Ok(e) => batch.events.push(e),
                            Err(status) => {
                                batch.failed =
                                    Some(errors::bad_request(status.message().to_string()));
                                batch.events = Vec::new();
                                break;
                            }
                        }
                    }
                }
                if !message.is_final {
                    continue;
                }
                let Some(batch) = pending.remove(&correlation) else {
                    continue;
                };
                let service = Arc::clone(&service);
                let who = Arc::clone(&who);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let reply = finish_batch(&service, &who, batch).await;
                    let _ = tx.send(Ok(reply)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A request message that did not decode is the client's error: INVALID_ARGUMENT, not the
/// INTERNAL tonic gives it.
fn malformed(status: Status) -> Status {
    if status.code() == tonic::Code::Internal {
        errors::invalid_argument(format!("malformed request message: {}", status.message()))
    } else {
        status
    }
}

/// Writes a complete batch (unless it failed or its deadline passed) and builds its reply.
async fn finish_batch(
    service: &Service,
    who: &Principal,
    batch: PendingBatch,
) -> wire::BatchAppendResp {
    use batch_append_req::options::ExpectedStreamPosition as Want;
    use batch_append_resp::ExpectedStreamPosition as Echo;
    let options = batch.options.unwrap_or_default();
    let stream = convert::stream_name(options.stream_identifier.clone());
    let (expected, echo) = match options.expected_stream_position {
        Some(Want::StreamPosition(r)) => (
            ExpectedRevision::Exact(Revision(r)),
            Echo::StreamPosition(r),
        ),
        Some(Want::NoStream(())) => (ExpectedRevision::NoStream, Echo::NoStream(())),
        Some(Want::StreamExists(())) => (ExpectedRevision::StreamExists, Echo::StreamExists(())),
        Some(Want::Any(())) | None => (ExpectedRevision::Any, Echo::Any(())),
    };
    let result = match (&stream, batch.failed) {
        (_, Some(failed)) => batch_append_resp::Result::Error(failed),
        (Err(status), None) => {
            batch_append_resp::Result::Error(errors::bad_request(status.message().to_string()))
        }
        (Ok(_), None) if batch.deadline.is_some_and(|d| Instant::now() >= d) => {
            batch_append_resp::Result::Error(errors::batch_timeout())
        }
        // An empty batch is a successful append of nothing when the expectation holds (as
        // in KurrentDB): the stream's revision, no position.
        (Ok(name), None) if batch.events.is_empty() => {
            use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
            match empty_write(service, who, name, expected) {
                Ok(Ok(current)) => batch_append_resp::Result::Success(batch_append_resp::Success {
                    current_revision_option: Some(match current {
                        Some(r) => CurrentRevisionOption::CurrentRevision(r),
                        None => CurrentRevisionOption::NoStream(()),
                    }),
                    position_option: Some(PositionOption::NoPosition(())),
                }),
                Ok(Err(current)) => batch_append_resp::Result::Error(errors::batch_status(
                    &Error::WrongExpectedRevision {
                        stream: name.clone(),
                        expected,
                        actual: current.map_or(ActualRevision::NoStream, |r| {
                            ActualRevision::Revision(Revision(r))
                        }),
                    },
                    expected,
                    current,
                )),
                Err(e) => {
                    batch_append_resp::Result::Error(errors::batch_status(&e, expected, None))
                }
            }
        }
        (Ok(name), None) => match write(service, who, name.clone(), expected, batch.events).await {
            Ok(r) => {
                use batch_append_resp::success::{CurrentRevisionOption, PositionOption};
                batch_append_resp::Result::Success(batch_append_resp::Success {
                    current_revision_option: Some(CurrentRevisionOption::CurrentRevision(
                        r.revision.0,
                    )),
                    position_option: Some(PositionOption::Position(
                        super::proto::event_store::client::AllStreamPosition {
                            commit_position: r.last_position.0,
                            prepare_position: r.last_position.0,
                        },
                    )),
                })
            }
            Err(e) => {
                let current = wrong_version_current(service, who, name, &e).flatten();
                batch_append_resp::Result::Error(errors::batch_status(&e, expected, current))
            }
        },
    };
    wire::BatchAppendResp {
        correlation_id: Some(batch.correlation),
        result: Some(result),
        stream_identifier: options.stream_identifier,
        expected_stream_position: Some(echo),
    }
}
