//! [`Events`]: a run of engine events that shares its storage. Pages of a read, live batches
//! and the messages cut from them are ranges of one reference-counted array, so cutting a page
//! into messages, or handing one live batch to thousands of subscribers, copies no events.

use std::ops::{Deref, Range};
use std::sync::Arc;

use crate::types::RecordedEvent;

/// Consecutive events of one shared array.
#[derive(Clone)]
pub struct Events {
    all: Arc<[RecordedEvent]>,
    range: Range<usize>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len()).finish()
    }
}

impl Events {
    pub fn new(events: Vec<RecordedEvent>) -> Events {
        let len = events.len();
        Events {
            all: events.into(),
            range: 0..len,
        }
    }

    /// `all[range]`, sharing `all`.
    pub fn shared(all: &Arc<[RecordedEvent]>, range: Range<usize>) -> Events {
        debug_assert!(range.end <= all.len() && range.start <= range.end);
        Events {
            all: Arc::clone(all),
            range,
        }
    }

    pub fn empty() -> Events {
        Events::new(Vec::new())
    }

    /// The first `at` events and the rest.
    pub fn split_at(self, at: usize) -> (Events, Events) {
        let mid = (self.range.start + at).min(self.range.end);
        (
            Events {
                all: Arc::clone(&self.all),
                range: self.range.start..mid,
            },
            Events {
                all: self.all,
                range: mid..self.range.end,
            },
        )
    }
}

impl Deref for Events {
    type Target = [RecordedEvent];

    fn deref(&self) -> &[RecordedEvent] {
        self.all.get(self.range.clone()).unwrap_or_default()
    }
}
