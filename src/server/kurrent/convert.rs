//! Translation between the protocol's messages and the engine's types: ids, stream names,
//! expected revisions, recorded events and filters.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tonic::Status;
use uuid::Uuid;

use super::errors;
use super::proto::event_store::client::streams::read_req::options::filter_options;
use super::proto::event_store::client::streams::{self as wire, read_resp};
use super::proto::event_store::client::{self as shared};
use crate::service::Matcher;
use crate::service::name_filter::{self, NameFilter, Subject};
use crate::types::{ContentType, EventData, ExpectedRevision, Filter, Revision, StreamFilter};

pub const JSON: &str = "application/json";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The revision clients see for a tombstone: the largest `i64`.
pub const TOMBSTONE_REVISION: u64 = i64::MAX as u64;

pub fn uuid_to_wire(id: Uuid, structured: bool) -> shared::Uuid {
    let value = if structured {
        let (msb, lsb) = id.as_u64_pair();
        shared::uuid::Value::Structured(shared::uuid::Structured {
            most_significant_bits: msb as i64,
            least_significant_bits: lsb as i64,
        })
    } else {
        shared::uuid::Value::String(id.hyphenated().to_string())
    };
    shared::Uuid { value: Some(value) }
}

pub fn uuid_from_wire(id: Option<shared::Uuid>) -> Result<Uuid, Status> {
    match id.and_then(|u| u.value) {
        Some(shared::uuid::Value::Structured(s)) => Ok(Uuid::from_u64_pair(
            s.most_significant_bits as u64,
            s.least_significant_bits as u64,
        )),
        Some(shared::uuid::Value::String(s)) => Uuid::parse_str(&s)
            .map_err(|e| errors::invalid_argument(format!("event id '{s}' is not a UUID: {e}"))),
        None => Err(errors::invalid_argument("an event has no id")),
    }
}

pub fn stream_name(id: Option<shared::StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| errors::invalid_argument("stream_identifier is required"))?;
    String::from_utf8(id.stream_name.to_vec())
        .map_err(|_| errors::invalid_argument("the stream name is not UTF-8"))
}

pub fn stream_identifier(name: &str) -> shared::StreamIdentifier {
    shared::StreamIdentifier {
        stream_name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// The number KurrentDB uses for an expected version in messages: N, or −2 any, −1 no stream,
/// −4 stream exists.
pub fn expected_version_number(expected: ExpectedRevision) -> i64 {
    match expected {
        ExpectedRevision::Exact(Revision(n)) => n as i64,
        ExpectedRevision::Any => -2,
        ExpectedRevision::NoStream => -1,
        ExpectedRevision::StreamExists => -4,
    }
}

/// A proposed event, from its metadata map (`type` and `content-type` are required), custom
/// metadata and data.
pub fn proposed(
    id: Option<shared::Uuid>,
    mut metadata: BTreeMap<String, String>,
    custom_metadata: Bytes,
    data: Bytes,
) -> Result<EventData, Status> {
    let (Some(event_type), Some(content_type)) =
        (metadata.remove("type"), metadata.remove("content-type"))
    else {
        return Err(errors::missing_metadata());
    };
    if event_type.is_empty() {
        return Err(errors::invalid_argument("an event's type is empty"));
    }
    Ok(EventData {
        id: Some(uuid_from_wire(id)?),
        event_type,
        data,
        metadata: custom_metadata,
        content_type: if content_type == JSON {
            ContentType::Json
        } else {
            ContentType::Binary
        },
    })
}

/// The parts of a stored event the protocol shows.
/// The key of the system metadata map that carries who appended an event.
pub const PRINCIPAL_KEY: &str = "$principal";

pub struct EventView<'a> {
    pub stream: &'a str,
    pub event_type: &'a str,
    pub revision: u64,
    pub position: u64,
    pub id: Uuid,
    pub content_type: ContentType,
    pub timestamp_us: u64,
    pub data: Bytes,
    pub metadata: Bytes,
    pub principal: Option<&'a str>,
}

impl<'a> EventView<'a> {
    pub fn of_engine(e: &'a crate::RecordedEvent) -> EventView<'a> {
        EventView {
            stream: e.stream(),
            event_type: e.event_type(),
            revision: e.revision.0,
            position: e.position.0,
            id: e.id,
            content_type: e.content_type,
            timestamp_us: e.timestamp_us,
            data: e.data_bytes(),
            metadata: e.metadata_bytes(),
            principal: e.principal(),
        }
    }
}

/// Builds `ReadResp`s for one reader: ids in the form it asked for, and one shared copy of the
/// stream name for consecutive events of the same stream (every event of a stream read).
pub struct Converter {
    structured_ids: bool,
    last_stream: Bytes,
}

impl Converter {
    pub fn new(structured_ids: bool) -> Converter {
        Converter {
            structured_ids,
            last_stream: Bytes::new(),
        }
    }

    fn stream_name(&mut self, stream: &str) -> Bytes {
        if self.last_stream.as_ref() != stream.as_bytes() {
            self.last_stream = Bytes::copy_from_slice(stream.as_bytes());
        }
        self.last_stream.clone()
    }

    fn id(&self, id: Uuid) -> shared::Uuid {
        if self.structured_ids {
            return uuid_to_wire(id, true);
        }
        let mut buf = Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buf);
        shared::Uuid {
            value: Some(shared::uuid::Value::String(text.to_owned())),
        }
    }

    /// The `ReadResp` carrying one event.
    pub fn read_resp(&mut self, e: EventView<'_>) -> wire::ReadResp {
        let revision = if e.event_type == crate::TOMBSTONE_EVENT_TYPE {
            TOMBSTONE_REVISION
        } else {
            e.revision
        };
        let content_type = match e.content_type {
            ContentType::Json => JSON,
            ContentType::Binary => OCTET_STREAM,
        };
        let mut metadata = BTreeMap::from([
            ("type".to_string(), e.event_type.to_string()),
            // 100 ns ticks since the Unix epoch.
            (
                "created".to_string(),
                e.timestamp_us.saturating_mul(10).to_string(),
            ),
            ("content-type".to_string(), content_type.to_string()),
        ]);
        // Who appended it: an extra system-metadata key, which the clients pass through.
        if let Some(principal) = e.principal {
            metadata.insert(PRINCIPAL_KEY.to_string(), principal.to_string());
        }
        let event = read_resp::read_event::RecordedEvent {
            id: Some(self.id(e.id)),
            stream_identifier: Some(shared::StreamIdentifier {
                stream_name: self.stream_name(e.stream),
            }),
            stream_revision: revision,
            prepare_position: e.position,
            commit_position: e.position,
            metadata,
            custom_metadata: e.metadata,
            data: e.data,
        };
        wire::ReadResp {
            content: Some(read_resp::Content::Event(read_resp::ReadEvent {
                event: Some(event),
                link: None,
                position: Some(read_resp::read_event::Position::CommitPosition(e.position)),
            })),
        }
    }
}

/// A KurrentDB filter: the part the engine's [`Filter`] can do (one stream prefix), and a
/// [`Matcher`] for the rest.
pub struct WireFilter {
    pub filter: Filter,
    pub matcher: Option<Arc<dyn Matcher>>,
    /// Checkpoint interval of a subscription: window × multiplier, in considered events.
    pub checkpoint_interval: u64,
}

/// The default window of a filter that does not give one.
const DEFAULT_WINDOW: u64 = 32;

/// A filter from a request. Its regular expression is compiled on the blocking pool (with its
/// size bounded first), never on a runtime worker.
pub async fn filter(
    options: Option<wire::read_req::options::FilterOption>,
) -> Result<WireFilter, Status> {
    let regex = match &options {
        Some(wire::read_req::options::FilterOption::Filter(f)) => match &f.filter {
            Some(
                filter_options::Filter::StreamIdentifier(e) | filter_options::Filter::EventType(e),
            ) => e.regex.as_str(),
            None => "",
        },
        _ => "",
    };
    name_filter::check_regex_size(regex).map_err(|e| errors::from_engine(&e))?;
    if regex.is_empty() {
        return filter_now(options);
    }
    tokio::task::spawn_blocking(move || filter_now(options))
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("filter compilation failed: {e}"))))
}

fn filter_now(
    options: Option<wire::read_req::options::FilterOption>,
) -> Result<WireFilter, Status> {
    use wire::read_req::options::FilterOption;
    let none = WireFilter {
        filter: Filter::default(),
        matcher: None,
        checkpoint_interval: DEFAULT_WINDOW,
    };
    let f = match options {
        None | Some(FilterOption::NoFilter(_)) => return Ok(none),
        Some(FilterOption::Filter(f)) => f,
    };
    let window = match f.window {
        Some(filter_options::Window::Max(m)) if m > 0 => u64::from(m),
        _ => DEFAULT_WINDOW,
    };
    let checkpoint_interval =
        window.saturating_mul(u64::from(f.checkpoint_interval_multiplier.max(1)));
    let (subject, expression) = match f.filter {
        Some(filter_options::Filter::StreamIdentifier(e)) => (Subject::StreamName, e),
        Some(filter_options::Filter::EventType(e)) => (Subject::EventType, e),
        None => {
            return Ok(WireFilter {
                checkpoint_interval,
                ..none
            });
        }
    };
    // One stream prefix is the engine's own filter; anything else is a name filter.
    if expression.regex.is_empty() && subject == Subject::StreamName && expression.prefix.len() == 1
    {
        return Ok(WireFilter {
            filter: Filter {
                stream: Some(StreamFilter::Prefix(expression.prefix[0].clone())),
                event_types: Vec::new(),
            },
            matcher: None,
            checkpoint_interval,
        });
    }
    let matcher = name_filter_of(subject, expression.regex, expression.prefix)
        .map_err(|e| errors::from_engine(&e))?;
    Ok(WireFilter {
        filter: Filter::default(),
        matcher: Some(matcher.into_matcher()),
        checkpoint_interval,
    })
}

/// A regex (when not empty) or a prefix list, as the protocol's filter expressions hold them.
pub fn name_filter_of(
    subject: Subject,
    regex: String,
    prefixes: Vec<String>,
) -> Result<NameFilter, crate::Error> {
    if !regex.is_empty() {
        NameFilter::regex(subject, &regex)
    } else if !prefixes.is_empty() {
        Ok(NameFilter::prefixes(subject, prefixes))
    } else {
        Err(crate::Error::InvalidArgument(
            "a filter needs a regex or at least one prefix".into(),
        ))
    }
}
