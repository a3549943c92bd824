//! `statestore dump`: the stored events as JSON lines (see [`super::event_json`]).
//!
//! The log as stored: events that stream metadata, deletes or tombstones hide are shown until
//! `compact` removes them, and the `$$` metadata records and `$streamDeleted` tombstones are
//! events like any other.

use std::io::Write;

use super::event_json::EventLine;
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::store::{Store, Walk};

/// Which events `dump` writes.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// First position (inclusive); 0 or 1 for the start.
    pub from: u64,
    /// Last position (inclusive); `None` for the end.
    pub until: Option<u64>,
    /// Only this stream (exact name).
    pub stream: Option<String>,
    /// Only this event type (exact).
    pub event_type: Option<String>,
}

/// Writes the matching events to `out`, one JSON line each; returns how many. A closed pipe
/// (`dump | head`) ends the dump without an error.
pub fn dump(
    store: &Store,
    options: &DumpOptions,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let mut written = 0u64;
    let mut closed = false;
    let until = options.until.unwrap_or(u64::MAX);
    let result = store.walk_stored(options.from.max(1), until, &mut |e, _, at| {
        progress.update("dump", at.bytes_done, at.bytes_total);
        if options.stream.as_deref().is_some_and(|s| s != e.stream())
            || options
                .event_type
                .as_deref()
                .is_some_and(|t| t != e.event_type())
        {
            return Ok(Walk::Continue);
        }
        match EventLine::of(e).write(out) {
            Ok(()) => {
                written += 1;
                Ok(Walk::Continue)
            }
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                closed = true;
                Ok(Walk::Stop)
            }
            Err(err) => Err(Error::io("standard output", err)),
        }
    });
    progress.finish();
    result?;
    if !closed {
        match out.flush() {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(Error::io("standard output", err));
            }
            _ => {}
        }
    }
    Ok(written)
}
