//! Checks of an append's input against the configured limits, done on the caller's thread
//! before the append reaches the writer.

use std::collections::HashSet;

use uuid::Uuid;

use super::lifecycle::{METADATA_EVENT_TYPE, METADATA_STREAM_PREFIX, TOMBSTONE_EVENT_TYPE};
use super::tracking::{self, Tracking};
use crate::config::Config;
use crate::error::{Error, Limit, Result};
use crate::log::frame::{self, EventBody};
use crate::types::{EventData, StreamAppend};

/// Checks every limit and gives each event without an id a fresh one. Returns the encoded size
/// of the whole commit.
pub fn prepare_append(config: &Config, parts: &mut [StreamAppend]) -> Result<u64> {
    prepare_commit(config, parts, None)
}

/// [`prepare_append`] for a commit that may carry a tracking entry; a tracked commit may have
/// no parts.
pub fn prepare_commit(
    config: &Config,
    parts: &mut [StreamAppend],
    tracking: Option<&Tracking>,
) -> Result<u64> {
    if let Some(t) = tracking {
        tracking::check_source(&t.source)?;
        if parts.is_empty() {
            return Ok(256 + t.source.len() as u64);
        }
    }
    if parts.is_empty() {
        return Err(Error::InvalidArgument(
            "an append needs at least one stream".into(),
        ));
    }
    limit(
        Limit::AppendStreams,
        config.append_streams_max,
        parts.len() as u64,
    )?;
    let mut seen = HashSet::with_capacity(parts.len());
    let mut events_total = 0u64;
    let mut bytes_total = 0u64;
    for part in parts.iter_mut() {
        check_writable_stream(config, &part.stream)?;
        check_principal(&part.principal)?;
        if !seen.insert(part.stream.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "stream '{}' appears twice in one append",
                part.stream
            )));
        }
        if part.events.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the append to stream '{}' has no events",
                part.stream
            )));
        }
        events_total += part.events.len() as u64;
        limit(Limit::AppendEvents, config.append_events_max, events_total)?;
        // One event needs no duplicate check, and is the common case.
        let many = part.events.len() > 1;
        let mut ids = HashSet::with_capacity(if many { part.events.len() } else { 0 });
        for event in &mut part.events {
            check_event(config, event)?;
            if let Some(id) = event.id
                && many
                && !ids.insert(id)
            {
                return Err(Error::InvalidArgument(format!(
                    "event id {id} appears twice in the append to stream '{}'",
                    part.stream
                )));
            }
            if event.id.is_none() {
                event.id = Some(new_event_id());
            }
            bytes_total += frame::serialized_len(&EventBody {
                stream: &part.stream,
                event_type: &event.event_type,
                data: &event.data,
                metadata: &event.metadata,
                principal: &part.principal,
            }) as u64;
        }
    }
    limit(Limit::AppendBytes, config.append_bytes_max, bytes_total)?;
    Ok(bytes_total)
}

pub(crate) fn check_principal(principal: &str) -> Result<()> {
    limit(
        Limit::PrincipalBytes,
        frame::PRINCIPAL_BYTES_MAX as u64,
        principal.len() as u64,
    )
}

fn check_event(config: &Config, event: &EventData) -> Result<()> {
    check_name(
        Limit::EventTypeBytes,
        &event.event_type,
        config.event_type_bytes_max,
    )?;
    if [
        METADATA_EVENT_TYPE,
        TOMBSTONE_EVENT_TYPE,
        tracking::TRACKING_EVENT_TYPE,
        tracking::TRACKING_SOURCE_EVENT_TYPE,
    ]
    .contains(&event.event_type.as_str())
    {
        return Err(Error::InvalidArgument(format!(
            "the event type '{}' is reserved for the store's own records",
            event.event_type
        )));
    }
    limit(
        Limit::EventBytes,
        config.event_bytes_max,
        event.data.len() as u64 + event.metadata.len() as u64,
    )
}

/// A stream name a client may append to: a valid name, not a `$$` metadata stream (those are
/// written only through the stream metadata calls).
pub(crate) fn check_stream_name(config: &Config, stream: &str) -> Result<()> {
    check_name(Limit::StreamNameBytes, stream, config.stream_name_bytes_max)?;
    if stream.starts_with(METADATA_STREAM_PREFIX) {
        return Err(Error::InvalidArgument(format!(
            "stream '{stream}' is a metadata stream (its name starts with '{METADATA_STREAM_PREFIX}'); \
             set stream metadata instead of appending to it"
        )));
    }
    Ok(())
}

/// A stream a client may append to or change the metadata of: a valid name, and not one of the
/// tracking streams (written only as an append's tracking entry).
pub(crate) fn check_writable_stream(config: &Config, stream: &str) -> Result<()> {
    check_stream_name(config, stream)?;
    if stream == tracking::TRACKING_REGISTRY_STREAM
        || stream.starts_with(tracking::TRACKING_STREAM_PREFIX)
    {
        return Err(Error::InvalidArgument(format!(
            "stream '{stream}' holds tracking entries; commit them with an append's tracking entry"
        )));
    }
    Ok(())
}

/// Names are non-empty, at most `max` bytes, and free of control characters.
pub(super) fn check_name(what: Limit, name: &str, max: u64) -> Result<()> {
    let noun = what.describe().trim_end_matches(" bytes");
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("{noun} is empty")));
    }
    limit(what, max, name.len() as u64)?;
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "{noun} '{}' contains the control character {:?}",
            name.escape_debug(),
            c
        )));
    }
    Ok(())
}

fn limit(what: Limit, limit: u64, actual: u64) -> Result<()> {
    if actual > limit {
        return Err(Error::LimitExceeded {
            what,
            limit,
            actual,
        });
    }
    Ok(())
}

/// A random (version 4) id for an event that came without one.
///
/// One OS random call per id costs a system call, which shows in batch appends; instead each
/// thread seeds a SplitMix64 generator from the OS once. Ids must be unique, not secret.
pub(crate) fn new_event_id() -> Uuid {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(Uuid::new_v4().as_u64_pair().0);
    }
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next().to_le_bytes());
    bytes[8..].copy_from_slice(&next().to_le_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
