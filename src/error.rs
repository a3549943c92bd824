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

    /// A request exceeds a configured limit.
    #[error("{what} is {actual}, over the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        limit: u64,
        actual: u64,
    },

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
