//! Translation between the protocol's messages and the engine's types: ids, stream names,
//! expected revisions, recorded events and filters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Status;
use uuid::Uuid;

use super::errors;
use super::proto::event_store::client::streams::read_req::options::filter_options;
use super::proto::event_store::client::streams::{self as wire, read_resp};
use super::proto::event_store::client::{self as shared};
use crate::service::Matcher;
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

/// Longest regular expression a filter may hold, in bytes.
pub const FILTER_REGEX_BYTES_MAX: usize = 4096;
/// Steps one match of a filter's regular expression may take (backtracking), so that a
/// pathological pattern costs a bounded time per name.
pub const FILTER_REGEX_STEPS_MAX: usize = 100_000;
/// Memory the compiled regular expression may use.
const FILTER_REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;
/// Matching time a call may spend at once, and how fast that budget refills: a filter may use
/// a tenth of a core on average, in bursts of up to a second. A call that spends it fails.
const MATCH_BUDGET: Duration = Duration::from_secs(1);
const MATCH_REFILL_PER_S: Duration = Duration::from_millis(100);

/// A filter from a request. Its regular expression is compiled on the blocking pool (with its
/// size bounded first), never on a runtime worker.
pub async fn filter(
    options: Option<wire::read_req::options::FilterOption>,
) -> Result<WireFilter, Status> {
    let regex_bytes = match &options {
        Some(wire::read_req::options::FilterOption::Filter(f)) => match &f.filter {
            Some(
                filter_options::Filter::StreamIdentifier(e) | filter_options::Filter::EventType(e),
            ) => e.regex.len(),
            None => 0,
        },
        _ => 0,
    };
    if regex_bytes > FILTER_REGEX_BYTES_MAX {
        return Err(errors::from_engine(&crate::Error::LimitExceeded {
            what: crate::Limit::FilterRegexBytes,
            limit: FILTER_REGEX_BYTES_MAX as u64,
            actual: regex_bytes as u64,
        }));
    }
    if regex_bytes == 0 {
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
    let (on_stream, expression) = match f.filter {
        Some(filter_options::Filter::StreamIdentifier(e)) => (true, e),
        Some(filter_options::Filter::EventType(e)) => (false, e),
        None => {
            return Ok(WireFilter {
                checkpoint_interval,
                ..none
            });
        }
    };
    let rule = if !expression.regex.is_empty() {
        let regex = fancy_regex::RegexBuilder::new(&expression.regex)
            .backtrack_limit(FILTER_REGEX_STEPS_MAX)
            .delegate_size_limit(FILTER_REGEX_COMPILED_BYTES_MAX)
            .delegate_dfa_size_limit(FILTER_REGEX_COMPILED_BYTES_MAX)
            .build()
            .map_err(|e| {
                errors::invalid_argument(format!("filter regex '{}': {e}", expression.regex))
            })?;
        Rule::Regex(regex)
    } else if !expression.prefix.is_empty() {
        // One stream prefix is the engine's own filter; anything else is matched here.
        if on_stream && expression.prefix.len() == 1 {
            return Ok(WireFilter {
                filter: Filter {
                    stream: Some(StreamFilter::Prefix(expression.prefix[0].clone())),
                    event_types: Vec::new(),
                },
                matcher: None,
                checkpoint_interval,
            });
        }
        Rule::Prefixes(expression.prefix)
    } else {
        return Err(errors::invalid_argument(
            "a filter needs a regex or at least one prefix",
        ));
    };
    Ok(WireFilter {
        filter: Filter::default(),
        matcher: Some(Arc::new(FilterMatcher {
            on_stream,
            rule,
            budget: parking_lot::Mutex::new(Budget {
                left: MATCH_BUDGET,
                at: Instant::now(),
            }),
        })),
        checkpoint_interval,
    })
}

enum Rule {
    /// .NET `Regex.IsMatch`: a match anywhere in the name (search, not full match).
    Regex(fancy_regex::Regex),
    Prefixes(Vec<String>),
}

struct FilterMatcher {
    on_stream: bool,
    rule: Rule,
    budget: parking_lot::Mutex<Budget>,
}

/// Matching time left to a call, refilled with time.
struct Budget {
    left: Duration,
    at: Instant,
}

impl Matcher for FilterMatcher {
    fn matches(&self, stream: &str, event_type: &str) -> Result<bool, crate::Error> {
        let subject = if self.on_stream { stream } else { event_type };
        match &self.rule {
            Rule::Prefixes(p) => Ok(p.iter().any(|p| subject.starts_with(p.as_str()))),
            Rule::Regex(r) => {
                let started = Instant::now();
                let matched = r.is_match(subject);
                let spent = started.elapsed();
                let mut budget = self.budget.lock();
                let refill = MATCH_REFILL_PER_S.mul_f64(budget.at.elapsed().as_secs_f64());
                budget.at = Instant::now();
                budget.left = (budget.left + refill).min(MATCH_BUDGET);
                let over = crate::Error::LimitExceeded {
                    what: crate::Limit::FilterRegexSteps,
                    limit: FILTER_REGEX_STEPS_MAX as u64,
                    actual: FILTER_REGEX_STEPS_MAX as u64 + 1,
                };
                match budget.left.checked_sub(spent) {
                    Some(left) => budget.left = left,
                    None => return Err(over),
                }
                // A name on which the pattern runs past its step limit fails the call rather
                // than silently not matching.
                matched.map_err(|_| over)
            }
        }
    }
}
