//! Protobuf messages to engine types and back. Malformed fields become INVALID_ARGUMENT here,
//! before the engine is called.

use tonic::Status;

use super::proto;
use super::status::invalid_argument;
use crate::types::{
    AppendResult, ContentType, Direction, EventData, ExpectedRevision, Filter, RecordedEvent,
    Revision, StreamAppend, StreamFilter,
};

use crate::service::EVENT_OVERHEAD_BYTES;

pub fn expected(e: Option<proto::ExpectedRevision>) -> ExpectedRevision {
    use proto::expected_revision::Kind;
    match e.and_then(|e| e.kind) {
        None | Some(Kind::Any(_)) => ExpectedRevision::Any,
        Some(Kind::NoStream(_)) => ExpectedRevision::NoStream,
        Some(Kind::StreamExists(_)) => ExpectedRevision::StreamExists,
        Some(Kind::Exact(r)) => ExpectedRevision::Exact(Revision(r)),
    }
}

pub fn event_data(e: proto::EventData) -> Result<EventData, Status> {
    let content_type = match proto::ContentType::try_from(e.content_type) {
        Ok(proto::ContentType::Json) => ContentType::Json,
        Ok(proto::ContentType::Binary) => ContentType::Binary,
        Err(_) => {
            return Err(invalid_argument(format!(
                "unknown content_type {}",
                e.content_type
            )));
        }
    };
    let id = match e.id.len() {
        0 => None,
        16 => {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&e.id);
            Some(uuid::Uuid::from_bytes(raw))
        }
        n => {
            return Err(invalid_argument(format!(
                "event id must be 16 bytes (a UUID) or empty, got {n} bytes"
            )));
        }
    };
    Ok(EventData {
        id,
        event_type: e.event_type,
        content_type,
        data: e.data,
        metadata: e.metadata,
    })
}

pub fn stream_append(r: proto::AppendRequest) -> Result<StreamAppend, Status> {
    let events = r
        .events
        .into_iter()
        .map(event_data)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StreamAppend::new(r.stream, expected(r.expected), events))
}

/// A request's tracking entry.
pub fn tracking(t: Option<proto::Tracking>) -> Option<crate::Tracking> {
    let t = t?;
    let expected = t.expected.map(|e| match e {
        proto::tracking::Expected::NoEntry(_) => crate::TrackingExpected::None,
        proto::tracking::Expected::ExpectedPosition(p) => crate::TrackingExpected::Position(p),
    });
    Some(crate::Tracking {
        source: t.source,
        position: t.position,
        expected,
    })
}

pub fn tracking_entry(e: crate::TrackingEntry) -> proto::TrackingEntry {
    proto::TrackingEntry {
        source: e.source,
        position: e.position,
        commit_position: e.commit_position.0,
        timestamp_us: e.timestamp_us,
    }
}

pub fn append_response(r: &AppendResult) -> proto::AppendResponse {
    proto::AppendResponse {
        first_position: r.first_position.0,
        last_position: r.last_position.0,
        revision: r.revision.0,
    }
}

/// A request's `max_count`: 0 means no limit.
pub fn max_count(n: u64) -> u64 {
    if n == 0 { u64::MAX } else { n }
}

pub fn direction(d: i32) -> Result<Direction, Status> {
    match proto::Direction::try_from(d) {
        Ok(proto::Direction::Forwards) => Ok(Direction::Forwards),
        Ok(proto::Direction::Backwards) => Ok(Direction::Backwards),
        Err(_) => Err(invalid_argument(format!("unknown direction {d}"))),
    }
}

pub fn filter(f: Option<proto::EventFilter>) -> Result<Filter, Status> {
    use proto::event_filter::Stream;
    let Some(f) = f else {
        return Ok(Filter::default());
    };
    let stream = match f.stream {
        None => None,
        Some(Stream::StreamPrefix(p)) if p.is_empty() => None,
        Some(Stream::StreamPrefix(p)) => Some(StreamFilter::Prefix(p)),
        Some(Stream::Category(c)) if c.is_empty() => {
            return Err(invalid_argument("filter category is empty"));
        }
        Some(Stream::Category(c)) => Some(StreamFilter::Category(c)),
    };
    if f.event_types.iter().any(String::is_empty) {
        return Err(invalid_argument("filter event type is empty"));
    }
    Ok(Filter {
        stream,
        event_types: f.event_types,
    })
}

pub fn recorded(e: &RecordedEvent) -> proto::RecordedEvent {
    proto::RecordedEvent {
        position: e.position.0,
        stream: e.stream().to_owned(),
        revision: e.revision.0,
        id: e.id_bytes(),
        event_type: e.event_type().to_owned(),
        content_type: match e.content_type {
            ContentType::Binary => proto::ContentType::Binary as i32,
            ContentType::Json => proto::ContentType::Json as i32,
        },
        data: e.data_bytes(),
        metadata: e.metadata_bytes(),
        timestamp_us: e.timestamp_us,
        principal: e.principal().unwrap_or_default().to_owned(),
    }
}

/// A snapshot as a message; its data is shared, not copied.
pub fn snapshot(s: crate::Snapshot) -> proto::Snapshot {
    proto::Snapshot {
        stream: s.stream,
        revision: s.revision.0,
        schema: s.schema,
        data: s.data,
        timestamp_us: s.timestamp_us,
    }
}

/// The approximate encoded size of a response carrying this snapshot.
pub fn snapshot_bytes(s: &crate::Snapshot) -> usize {
    s.stream.len() + s.schema.len() + s.data.len() + EVENT_OVERHEAD_BYTES
}

/// Metadata from a request. The custom JSON must be an object of at most `limit` bytes, which
/// is checked before it is parsed.
pub fn stream_metadata(
    m: Option<proto::StreamMetadata>,
    limit: u64,
) -> Result<crate::StreamMetadata, Status> {
    let m = m.unwrap_or_default();
    if m.custom_json.len() as u64 > limit {
        return Err(super::status::to_status(&crate::Error::LimitExceeded {
            what: crate::Limit::MetadataBytes,
            limit,
            actual: m.custom_json.len() as u64,
        }));
    }
    let custom = if m.custom_json.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&m.custom_json) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => {
                return Err(invalid_argument("custom_json must be a JSON object"));
            }
            Err(e) => {
                return Err(invalid_argument(format!(
                    "custom_json is not valid JSON: {e}"
                )));
            }
        }
    };
    Ok(crate::StreamMetadata {
        max_count: m.max_count,
        max_age: m.max_age_seconds.map(std::time::Duration::from_secs),
        truncate_before: m.truncate_before.map(Revision),
        custom,
    })
}

pub fn stream_metadata_reply(m: &crate::StreamMetadata) -> proto::StreamMetadata {
    proto::StreamMetadata {
        max_count: m.max_count,
        max_age_seconds: m.max_age.map(|a| a.as_secs()),
        truncate_before: m.truncate_before.map(|r| r.0),
        custom_json: if m.custom.is_empty() {
            bytes::Bytes::new()
        } else {
            serde_json::to_vec(&m.custom).unwrap_or_default().into()
        },
        deleted: m.is_deleted(),
    }
}

pub fn metadata_version(r: &crate::StreamMetadataRecord) -> proto::StreamMetadataVersion {
    proto::StreamMetadataVersion {
        metadata_revision: r.revision.0,
        position: r.position.0,
        timestamp_us: r.timestamp_us,
        metadata: Some(stream_metadata_reply(&r.metadata)),
    }
}
