//! statestore: an append-only event store engine.
//!
//! A segmented log of CRC-framed records, per-stream and per-type indexes, durable group-commit
//! appends with optimistic concurrency, and crash recovery. The engine is synchronous and knows
//! nothing of the network. See `ARCHITECTURE.md` for the code map and `docs/FORMAT.md` for the
//! bytes on disk.
//!
//! ```no_run
//! use statestore::{Config, Direction, EventData, ExpectedRevision, Revision, Store};
//!
//! let store = Store::open("./data", Config::default())?;
//! let appended = store.append(
//!     "order-42",
//!     ExpectedRevision::NoStream,
//!     vec![EventData::json("OrderPlaced", r#"{"total":42}"#)],
//! )?;
//! let events = store.read_stream("order-42", Revision(0), Direction::Forwards, 100)?;
//! assert_eq!(events[0].position, appended.first_position);
//! store.close()?;
//! # Ok::<(), statestore::Error>(())
//! ```

pub mod bench;
pub mod config;
pub mod error;
mod index;
mod lock;
mod log;
pub mod server;
pub mod service;
mod snapshot;
mod store;
pub mod tools;
pub mod types;
pub mod users;

/// Writing a log offline, for the offline tools (`compact`, `replay --into`): a new log with
/// the events kept at their positions and the gaps between them marked. See
/// [`rewrite::LogRewriter`] and `docs/FORMAT.md`.
pub mod rewrite {
    pub use crate::log::frame::{EventBody, EventHeader, GAP_BEFORE};
    pub use crate::log::rewrite::{LogRewriter, RewriteSummary};
    pub use crate::log::segment::SEGMENT_GAP_BEFORE;
}

pub use config::{Config, FsyncPolicy};
pub use error::{ActualRevision, Error, Limit, Result};
pub use snapshot::Snapshot;
pub use store::{
    DELETED_TRUNCATE_BEFORE, METADATA_EVENT_TYPE, METADATA_STREAM_PREFIX, QueueFull, Store,
    StoreStats, StreamMetadata, StreamMetadataRecord, TOMBSTONE_EVENT_TYPE, TRACKING_EVENT_TYPE,
    TRACKING_REGISTRY_STREAM, TRACKING_SOURCE_BYTES_MAX, TRACKING_SOURCE_EVENT_TYPE,
    TRACKING_STREAM_PREFIX, Tracking, TrackingEntry, TrackingExpected, metadata_stream_of,
};
pub use types::{
    AllSlice, AppendResult, ContentType, Direction, EventData, ExpectedRevision, Filter, Position,
    RecordedEvent, Revision, StreamAppend, StreamFilter, category_of,
};

/// Codec and layout internals, for the fuzz targets and benchmarks only. Not a stable API.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::log::frame::{
        Decoded, EventBody, EventHeader, FrameError, GAP_BEFORE, decode_from, encode_into,
    };
    pub use crate::log::segment::{
        SEGMENT_GAP_BEFORE, SegmentHeader, SegmentRole, SegmentScan, decode_header, encode_header,
        scan_segment,
    };
}
