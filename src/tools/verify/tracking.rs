//! The tracking entries as verify checks them (docs/FORMAT.md, "Tracking entries"): every
//! record of a `$tracking-{source}` stream is a `$tracking` event whose JSON data parses, names
//! the source of its stream, and holds a position greater than the source's previous entry;
//! the registry stream `$tracking` holds only `$trackingSource` events naming a source in UTF-8;
//! and neither event type appears anywhere else. The writer never writes anything else (and
//! clients cannot write to these streams nor use these types), so a violation is damage.

use crate::store::tracking::{
    Record, TRACKING_EVENT_TYPE, TRACKING_REGISTRY_STREAM, TRACKING_SOURCE_EVENT_TYPE,
    TRACKING_STREAM_PREFIX,
};

/// foldhash, like the other per-event lookups of verify.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

/// What the log has shown of the tracking sources so far.
#[derive(Default)]
pub(super) struct TrackingChecks {
    /// Source -> the position of its newest entry.
    sources: HashMap<Box<str>, u64>,
    /// Tracking records seen.
    pub entries: u64,
}

impl TrackingChecks {
    /// Takes one event of the log into account; returns why it breaks the rules of tracking
    /// entries, if it does.
    pub fn event(
        &mut self,
        position: u64,
        stream: &str,
        event_type: &str,
        data: &[u8],
    ) -> Option<String> {
        if stream == TRACKING_REGISTRY_STREAM {
            return registry_event(position, event_type, data);
        }
        let Some(source) = stream.strip_prefix(TRACKING_STREAM_PREFIX) else {
            return [TRACKING_EVENT_TYPE, TRACKING_SOURCE_EVENT_TYPE]
                .contains(&event_type)
                .then(|| {
                    format!(
                        "an event of type {event_type} outside the tracking streams: in                          '{stream}' (position {position})"
                    )
                });
        };
        if event_type != TRACKING_EVENT_TYPE {
            return Some(format!(
                "tracking stream '{stream}' holds an event of type '{event_type}' (position \
                 {position}), not {TRACKING_EVENT_TYPE}"
            ));
        }
        self.entries += 1;
        let record: Record = match serde_json::from_slice(data) {
            Ok(record) => record,
            Err(e) => {
                return Some(format!(
                    "tracking record of '{stream}' (position {position}) does not parse: {e}"
                ));
            }
        };
        if record.source != source {
            return Some(format!(
                "tracking record of '{stream}' (position {position}) names the source '{}'",
                record.source
            ));
        }
        let previous = self.sources.insert(source.into(), record.position);
        match previous {
            Some(p) if record.position <= p => Some(format!(
                "tracking source '{source}': position {} (record at position {position}) does \
                 not increase on the previous entry's {p}",
                record.position
            )),
            _ => None,
        }
    }

    /// Distinct sources seen.
    pub fn sources(&self) -> u64 {
        self.sources.len() as u64
    }
}

/// Why a record of the registry stream is wrong, if it is.
fn registry_event(position: u64, event_type: &str, data: &[u8]) -> Option<String> {
    if event_type != TRACKING_SOURCE_EVENT_TYPE {
        return Some(format!(
            "the tracking registry '{TRACKING_REGISTRY_STREAM}' holds an event of type \
             '{event_type}' (position {position}), not {TRACKING_SOURCE_EVENT_TYPE}"
        ));
    }
    match std::str::from_utf8(data) {
        Ok(source) if !source.is_empty() => None,
        _ => Some(format!(
            "the tracking registry record at position {position} does not name a source"
        )),
    }
}
