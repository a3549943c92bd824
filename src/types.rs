//! The engine's vocabulary: positions, revisions, expected revisions, events in and out.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use uuid::Uuid;

/// A global position in the log. The first event has position 1; 0 means "before everything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event: a checkpoint that has seen nothing.
    pub const START: Position = Position(0);
    /// After the last event: reading backwards from here starts at the newest event.
    pub const END: Position = Position(u64::MAX);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The revision of an event within its stream: 0, 1, 2, ... without gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// After the last revision: reading a stream backwards from here starts at its newest event.
    pub const END: Revision = Revision(u64::MAX);
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The optimistic-concurrency guard on an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist, at any revision.
    StreamExists,
    /// The stream's current (last) revision must be exactly this.
    Exact(Revision),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no stream"),
            ExpectedRevision::StreamExists => f.write_str("stream exists"),
            ExpectedRevision::Exact(r) => write!(f, "{r}"),
        }
    }
}

/// How `data` and `metadata` are encoded. Stored as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    Binary,
    Json,
}

impl ContentType {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ContentType::Binary => 0,
            ContentType::Json => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<ContentType> {
        match b {
            0 => Some(ContentType::Binary),
            1 => Some(ContentType::Json),
            _ => None,
        }
    }
}

/// An event proposed for appending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// The event's id. `None` lets the store assign a random (v4) one. A client that retries an
    /// append must give ids, or the retry cannot be recognised.
    pub id: Option<Uuid>,
    pub event_type: String,
    pub data: Bytes,
    pub metadata: Bytes,
    pub content_type: ContentType,
}

impl EventData {
    /// A JSON event with no metadata and a store-assigned id.
    pub fn json(event_type: impl Into<String>, data: impl Into<Bytes>) -> EventData {
        EventData {
            id: None,
            event_type: event_type.into(),
            data: data.into(),
            metadata: Bytes::new(),
            content_type: ContentType::Json,
        }
    }

    /// A binary event with no metadata and a store-assigned id.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Bytes>) -> EventData {
        EventData {
            content_type: ContentType::Binary,
            ..EventData::json(event_type, data)
        }
    }

    pub fn with_id(mut self, id: Uuid) -> EventData {
        self.id = Some(id);
        self
    }

    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> EventData {
        self.metadata = metadata.into();
        self
    }
}

/// One stream's part of an append: the events, and the revision the stream is expected to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedRevision,
    pub events: Vec<EventData>,
    /// Who asks for the append, recorded in each of its events (see
    /// [`RecordedEvent::principal`]); empty for none. At most 1024 bytes.
    pub principal: String,
}

impl StreamAppend {
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedRevision,
        events: Vec<EventData>,
    ) -> StreamAppend {
        StreamAppend {
            stream: stream.into(),
            expected,
            events,
            principal: String::new(),
        }
    }

    /// The same append, recorded as made by `principal`.
    pub fn by(mut self, principal: impl Into<String>) -> StreamAppend {
        self.principal = principal.into();
        self
    }
}

/// Where an append's events landed in one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The position of the first event of this stream's part. Its events have consecutive
    /// positions `first_position ..= last_position`.
    pub first_position: Position,
    pub last_position: Position,
    /// The stream's revision after the append (the revision of its last event).
    pub revision: Revision,
}

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forwards,
    Backwards,
}

/// Which streams a whole-log read or scan returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFilter {
    /// Streams whose name starts with the prefix.
    Prefix(String),
    /// Streams in the category: the name up to the first `-` equals it (`order-42` is in
    /// `order`; so is the stream `order` itself).
    Category(String),
}

impl StreamFilter {
    pub fn matches(&self, stream: &str) -> bool {
        match self {
            StreamFilter::Prefix(p) => stream.starts_with(p.as_str()),
            StreamFilter::Category(c) => category_of(stream) == c,
        }
    }
}

/// The category of a stream: its name up to the first `-`.
pub fn category_of(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(c, _)| c)
}

/// A filter for whole-log reads. The default matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub stream: Option<StreamFilter>,
    /// When not empty, only events whose type is one of these.
    pub event_types: Vec<String>,
}

impl Filter {
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        if let Some(f) = &self.stream
            && !f.matches(stream)
        {
            return false;
        }
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }

    pub fn is_empty(&self) -> bool {
        self.stream.is_none() && self.event_types.is_empty()
    }
}

/// The result of a whole-log read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllSlice {
    pub events: Vec<RecordedEvent>,
    /// The position up to which the log was scanned (forwards: the last position looked at;
    /// backwards: the lowest). A filtered reader resumes after (before) it without rescanning.
    pub scanned_to: Position,
    /// True when the read stopped at the end (forwards) or start (backwards) of the log.
    pub end_of_log: bool,
}

/// An event as stored. Holds one reference-counted slice of the log; accessors borrow from it.
#[derive(Clone)]
pub struct RecordedEvent {
    pub(crate) payload: Bytes,
    /// Where the parts end within `payload`: the stream name starts right after the fixed
    /// header, each part starts where the one before ends, and metadata runs to the end.
    /// Kept as three `u32`s rather than four ranges so a page of events stays small.
    pub(crate) stream_end: u32,
    pub(crate) type_end: u32,
    pub(crate) data_end: u32,
    /// Bytes of the principal at the end of `payload`, after the metadata.
    pub(crate) principal_len: u16,
    pub position: Position,
    pub revision: Revision,
    pub id: Uuid,
    pub content_type: ContentType,
    /// Commit time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

impl RecordedEvent {
    pub fn stream(&self) -> &str {
        str_of(&self.payload, self.stream_range())
    }

    pub fn event_type(&self) -> &str {
        str_of(
            &self.payload,
            self.stream_end as usize..self.type_end as usize,
        )
    }

    pub fn data(&self) -> &[u8] {
        self.payload.get(self.data_range()).unwrap_or_default()
    }

    pub fn metadata(&self) -> &[u8] {
        self.payload.get(self.metadata_range()).unwrap_or_default()
    }

    /// Who appended the event (the authenticated user or token subject), recorded by the
    /// store with the event. `None` when it was appended without authentication.
    pub fn principal(&self) -> Option<&str> {
        match str_of(&self.payload, self.principal_range()) {
            "" => None,
            p => Some(p),
        }
    }

    /// The data as a shared slice of the log, without copying.
    pub fn data_bytes(&self) -> Bytes {
        self.payload.slice(self.data_range())
    }

    pub fn metadata_bytes(&self) -> Bytes {
        self.payload.slice(self.metadata_range())
    }

    /// The id's 16 bytes (big-endian UUID) as a shared slice of the log, without copying.
    pub fn id_bytes(&self) -> Bytes {
        let at = crate::log::frame::OFF_ID;
        self.payload.slice(at..at + 16)
    }

    /// The size of the stored event: header, names, data and metadata.
    pub fn stored_bytes(&self) -> usize {
        self.payload.len()
    }

    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.timestamp_us)
    }

    fn stream_range(&self) -> std::ops::Range<usize> {
        crate::log::frame::EVENT_HEADER_BYTES..self.stream_end as usize
    }

    fn data_range(&self) -> std::ops::Range<usize> {
        self.type_end as usize..self.data_end as usize
    }

    fn metadata_range(&self) -> std::ops::Range<usize> {
        let end = self
            .payload
            .len()
            .saturating_sub(self.principal_len as usize);
        (self.data_end as usize).min(end)..end
    }

    fn principal_range(&self) -> std::ops::Range<usize> {
        self.payload
            .len()
            .saturating_sub(self.principal_len as usize)..self.payload.len()
    }
}

/// The name at `range` of an event's payload.
fn str_of(payload: &Bytes, range: std::ops::Range<usize>) -> &str {
    let bytes = payload.get(range).unwrap_or_default();
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: a `RecordedEvent` is built only by `store::read::build_event`, from a frame that
    // `frame::decode_from` accepted, and that decoder rejects names that are not UTF-8. The
    // payload is immutable and the ranges are fixed with it. (Checked once per decode rather
    // than on every access: it was 7% of a catch-up subscription's CPU.)
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

impl PartialEq for RecordedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.revision == other.revision
            && self.id == other.id
            && self.content_type == other.content_type
            && self.timestamp_us == other.timestamp_us
            && self.stream() == other.stream()
            && self.event_type() == other.event_type()
            && self.data() == other.data()
            && self.metadata() == other.metadata()
    }
}

impl Eq for RecordedEvent {}

impl fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("position", &self.position)
            .field("stream", &self.stream())
            .field("revision", &self.revision)
            .field("event_type", &self.event_type())
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .field("data_len", &self.data().len())
            .field("metadata_len", &self.metadata().len())
            .field("timestamp_us", &self.timestamp_us)
            .finish()
    }
}
