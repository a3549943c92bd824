//! Events as JSON lines: the output of `dump` and of `replay --into -`.
//!
//! One object per line, fields in this order:
//!
//! ```text
//! {"position":7,"stream":"order-42","revision":0,"id":"…uuid…","type":"OrderPlaced",
//!  "content_type":"json","timestamp":"2026-11-23T04:55:13.123456Z","timestamp_us":…,
//!  "data":{…},"metadata":{…},"principal":"ada"}
//! ```
//!
//! `data` and `metadata` are the stored bytes verbatim when they are JSON (and hold no line
//! break, so that a line stays a line); otherwise they are `data_base64` / `metadata_base64`
//! (standard alphabet, padded). Empty metadata is left out, and so is the principal of an event appended without
//! authentication. Parsing a line back gives the
//! exact stored bytes either way.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::types::{ContentType, RecordedEvent};

/// One event as a JSON line, borrowed from the event for writing and owned when parsed.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventLine {
    pub position: u64,
    pub stream: String,
    pub revision: u64,
    pub id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub content_type: String,
    /// The commit time, RFC 3339 in UTC with microseconds.
    pub timestamp: String,
    pub timestamp_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_base64: Option<String>,
    /// Who appended the event; left out when it was appended without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

impl EventLine {
    pub fn of(e: &RecordedEvent) -> EventLine {
        let (data, data_base64) = json_or_base64(e.data());
        let (metadata, metadata_base64) = if e.metadata().is_empty() {
            (None, None)
        } else {
            json_or_base64(e.metadata())
        };
        EventLine {
            position: e.position.0,
            stream: e.stream().to_string(),
            revision: e.revision.0,
            id: e.id,
            event_type: e.event_type().to_string(),
            content_type: match e.content_type {
                ContentType::Json => "json",
                ContentType::Binary => "binary",
            }
            .to_string(),
            timestamp: rfc3339_us(e.timestamp_us),
            timestamp_us: e.timestamp_us,
            data,
            data_base64,
            metadata,
            metadata_base64,
            principal: e.principal().map(str::to_string),
        }
    }

    /// Writes the line, newline included.
    pub fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Result<EventLine> {
        serde_json::from_str(line)
            .map_err(|e| Error::InvalidArgument(format!("not an event line: {e}")))
    }

    /// The stored data bytes.
    pub fn data_bytes(&self) -> Result<Vec<u8>> {
        bytes_of(&self.data, &self.data_base64)
    }

    /// The stored metadata bytes.
    pub fn metadata_bytes(&self) -> Result<Vec<u8>> {
        bytes_of(&self.metadata, &self.metadata_base64)
    }
}

fn json_or_base64(bytes: &[u8]) -> (Option<Box<RawValue>>, Option<String>) {
    let raw = (!bytes.contains(&b'\n') && !bytes.contains(&b'\r'))
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
        .and_then(|text| serde_json::from_str::<Box<RawValue>>(text).ok())
        // RawValue trims surrounding whitespace: verbatim only when nothing was trimmed.
        .filter(|raw| raw.get().len() == bytes.len());
    match raw {
        Some(raw) => (Some(raw), None),
        None => (None, Some(BASE64.encode(bytes))),
    }
}

fn bytes_of(raw: &Option<Box<RawValue>>, b64: &Option<String>) -> Result<Vec<u8>> {
    match (raw, b64) {
        (Some(raw), _) => Ok(raw.get().as_bytes().to_vec()),
        (None, Some(b64)) => BASE64
            .decode(b64)
            .map_err(|e| Error::InvalidArgument(format!("bad base64: {e}"))),
        (None, None) => Ok(Vec::new()),
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-23T04:55:13.123456Z`.
pub fn rfc3339_us(timestamp_us: u64) -> String {
    let nanos = i128::from(timestamp_us) * 1000;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return timestamp_us.to_string();
    };
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&format)
        .unwrap_or_else(|_| timestamp_us.to_string())
}

/// Parses an RFC 3339 time (any offset) into microseconds since the Unix epoch.
pub fn parse_rfc3339_us(text: &str) -> Result<u64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "'{text}' is not an RFC 3339 time such as 2026-11-23T10:00:00Z: {e}"
            ))
        })?;
    u64::try_from(t.unix_timestamp_nanos() / 1000)
        .map_err(|_| Error::InvalidArgument(format!("'{text}' is before 1970")))
}
