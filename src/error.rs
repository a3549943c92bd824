//! The engine's one error type. Every variant carries the fields a caller needs to act on it;
//! the server maps it to a status in exactly one place.

use std::path::PathBuf;

use crate::types::{ExpectedRevision, Revision};

/// Errors returned by the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's current revision does not match the append's expected revision.
    #[error("wrong expected revision on stream '{stream}': expected {expected}, actual {actual}")]
    WrongExpectedRevision {
        stream: String,
        expected: ExpectedRevision,
        /// The stream's current revision, or `None` when the stream does not exist.
        actual: ActualRevision,
    },

    /// A retried append matched some, but not all, of the events already stored at its place.
    #[error(
        "idempotency conflict on stream '{stream}': event {event_id} is stored at revision {revision}, \
         but the rest of the append does not match what is stored"
    )]
    IdempotencyConflict {
        stream: String,
        event_id: uuid::Uuid,
        revision: Revision,
    },

    /// A tracked commit's position is not greater than its source's stored one.
    #[error(
        "tracking position {position} of source '{source_name}' is not greater than the stored {stored}"
    )]
    TrackingNotIncreasing {
        /// The tracking source (named so because `source` means the cause to `thiserror`).
        source_name: String,
        position: u64,
        stored: u64,
    },

    /// A tracked commit expected another stored position for its source.
    #[error("tracking conflict on source '{source_name}': expected {expected}, stored {}", stored.map_or_else(|| "none".to_string(), |p| p.to_string()))]
    TrackingConflict {
        source_name: String,
        expected: crate::store::TrackingExpected,
        stored: Option<u64>,
    },

    /// No persistent-subscription group of that name on that source.
    #[error("persistent subscription group '{group}' on '{source_name}' does not exist")]
    GroupNotFound { source_name: String, group: String },

    /// A persistent-subscription group of that name already exists on that source.
    #[error("persistent subscription group '{group}' on '{source_name}' already exists")]
    GroupExists { source_name: String, group: String },

    /// The group has its maximum number of consumers.
    #[error(
        "persistent subscription group '{group}' on '{source_name}' has its maximum of {max} consumers"
    )]
    GroupFull {
        source_name: String,
        group: String,
        max: u32,
    },

    /// The server dropped a consumer because its group was updated or the subsystem
    /// restarted: reconnect.
    #[error(
        "persistent subscription group '{group}' on '{source_name}' dropped its consumers: {reason}; reconnect"
    )]
    GroupDropped {
        source_name: String,
        group: String,
        reason: String,
    },

    /// The stream does not exist.
    #[error("stream '{stream}' not found")]
    StreamNotFound { stream: String },

    /// The stream is tombstoned (deleted for good): it cannot be read, appended to, or given
    /// metadata, and its name cannot be reused. A soft-deleted stream reads as
    /// [`Error::StreamNotFound`] instead, and appending with an expected revision that requires
    /// the stream to exist gives this error.
    #[error("stream '{stream}' is deleted")]
    StreamDeleted { stream: String },

    /// A stream name, event type or other argument is not acceptable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A request exceeds a configured limit. `what` names the limit; callers match on it.
    #[error("{} is {actual}, over the limit of {limit}", what.describe())]
    LimitExceeded {
        what: Limit,
        limit: u64,
        actual: u64,
    },

    /// The caller gave no credentials where they are needed, or bad ones.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),

    /// The caller may not do this to this stream.
    #[error("access denied: '{principal}' may not {access} stream '{stream}'")]
    PermissionDenied {
        principal: String,
        /// The ACL verb: `read`, `write`, `delete`, `metadata read`, `metadata write`, or
        /// `administer`.
        access: &'static str,
        stream: String,
    },

    /// A task of the server failed (it panicked); the request may or may not have taken
    /// effect only if it was an append whose answer was lost, which the caller learns by
    /// retrying with the same event ids.
    #[error("internal error: {0}")]
    Internal(String),

    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Another process holds the data directory.
    #[error("data directory {dir} is locked by another process (pid {pid})")]
    Locked { dir: PathBuf, pid: String },

    /// Data on disk is damaged. The store refuses to open rather than serve or skip it.
    #[error("corruption in {file} at byte offset {offset}: {reason}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// An earlier write or fsync failed. No further appends are accepted until the store is
    /// reopened, because the state of the file after a failed fsync is unknown.
    #[error("the writer is stopped after an I/O failure ({cause}); reopen the store")]
    Poisoned { cause: String },

    /// The store has been closed.
    #[error("the store is closed")]
    Closed,

    /// An I/O error, with the path it concerns.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The limits a request can exceed. Front-ends choose their status by variant
/// ([`Limit::is_size`]), and the wire names ([`Limit::name`]) are stable: clients may match
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Bytes of a stream name.
    StreamNameBytes,
    /// Bytes of a stream's metadata stream name (`$$` + the name).
    MetadataStreamNameBytes,
    /// Bytes of an event type.
    EventTypeBytes,
    /// Bytes of a snapshot's schema tag.
    SnapshotSchemaBytes,
    /// Bytes of one event's data and metadata.
    EventBytes,
    /// Encoded bytes of one append (every event of every stream).
    AppendBytes,
    /// Events in one append.
    AppendEvents,
    /// Streams in one multi-stream append.
    AppendStreams,
    /// Encoded bytes of one commit, with a record the store adds to it.
    CommitBytes,
    /// Bytes of one aggregate snapshot.
    SnapshotBytes,
    /// Events asked for by one read.
    ReadCount,
    /// Bytes of a stream's metadata (as JSON).
    MetadataBytes,
    /// Bytes of one response message.
    ResponseBytes,
    /// Bytes of one request message.
    RequestBytes,
    /// Bytes of a filter's regular expression.
    FilterRegexBytes,
    /// Steps a regular expression filter may take in one call.
    FilterRegexSteps,
    /// Connections the server holds at once.
    Connections,
    /// Subscriptions the server holds at once.
    Subscriptions,
    /// Batch appends being received (not yet final) on one call.
    PendingBatches,
    /// Versions of stream metadata returned by one history read.
    MetadataHistory,
    /// Bytes buffered for slow clients across the server: a client that stops reading while
    /// it is short has its call ended.
    BufferedBytes,
    /// Bytes of the principal recorded with an append.
    PrincipalBytes,
    /// Persistent-subscription groups on the server.
    PersistentGroups,
}

impl Limit {
    /// The limit's stable wire name (`append_bytes`), used in error details.
    pub fn name(self) -> &'static str {
        match self {
            Limit::StreamNameBytes => "stream_name_bytes",
            Limit::MetadataStreamNameBytes => "metadata_stream_name_bytes",
            Limit::EventTypeBytes => "event_type_bytes",
            Limit::SnapshotSchemaBytes => "snapshot_schema_bytes",
            Limit::EventBytes => "event_bytes",
            Limit::AppendBytes => "append_bytes",
            Limit::AppendEvents => "append_events",
            Limit::AppendStreams => "append_streams",
            Limit::CommitBytes => "commit_bytes",
            Limit::SnapshotBytes => "snapshot_bytes",
            Limit::ReadCount => "read_count",
            Limit::MetadataBytes => "metadata_bytes",
            Limit::ResponseBytes => "response_bytes",
            Limit::RequestBytes => "request_bytes",
            Limit::FilterRegexBytes => "filter_regex_bytes",
            Limit::FilterRegexSteps => "filter_regex_steps",
            Limit::Connections => "connections",
            Limit::Subscriptions => "subscriptions",
            Limit::PendingBatches => "pending_batches",
            Limit::MetadataHistory => "metadata_history",
            Limit::BufferedBytes => "buffered_bytes",
            Limit::PrincipalBytes => "principal_bytes",
            Limit::PersistentGroups => "persistent_groups",
        }
    }

    /// What the limit bounds, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Limit::StreamNameBytes => "stream name bytes",
            Limit::MetadataStreamNameBytes => "stream name bytes (of its metadata stream)",
            Limit::EventTypeBytes => "event type bytes",
            Limit::SnapshotSchemaBytes => "snapshot schema bytes",
            Limit::EventBytes => "event bytes (data + metadata)",
            Limit::AppendBytes => "bytes in one append",
            Limit::AppendEvents => "events in one append",
            Limit::AppendStreams => "streams in one append",
            Limit::CommitBytes => {
                "bytes in one commit (with the record that brings the stream back)"
            }
            Limit::SnapshotBytes => "snapshot bytes",
            Limit::ReadCount => "events per read",
            Limit::MetadataBytes => "stream metadata bytes",
            Limit::ResponseBytes => "response message bytes",
            Limit::RequestBytes => "request message bytes",
            Limit::FilterRegexBytes => "filter regular expression bytes",
            Limit::FilterRegexSteps => "filter regular expression steps",
            Limit::Connections => "open connections",
            Limit::Subscriptions => "open subscriptions",
            Limit::PendingBatches => "batch appends pending on one call",
            Limit::MetadataHistory => "metadata versions per read",
            Limit::BufferedBytes => "bytes buffered for slow clients (this one stopped reading)",
            Limit::PrincipalBytes => "bytes of the principal recorded with an append",
            Limit::PersistentGroups => "persistent subscription groups",
        }
    }

    /// True for limits on sizes and server resources (a client may retry smaller or later);
    /// false for limits on counts and names, which make the request malformed.
    pub fn is_size(self) -> bool {
        !matches!(
            self,
            Limit::StreamNameBytes
                | Limit::MetadataStreamNameBytes
                | Limit::EventTypeBytes
                | Limit::SnapshotSchemaBytes
                | Limit::AppendEvents
                | Limit::AppendStreams
                | Limit::ReadCount
                | Limit::FilterRegexBytes
                | Limit::MetadataHistory
        )
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The revision a stream actually had when an expected-revision check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActualRevision {
    NoStream,
    Revision(Revision),
}

impl std::fmt::Display for ActualRevision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActualRevision::NoStream => f.write_str("no stream"),
            ActualRevision::Revision(r) => write!(f, "{r}"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
