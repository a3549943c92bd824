//! The protocol's error contract: the statuses, message texts and trailers the official clients
//! parse (the `exception` trailer names the error; some clients match message text, so those
//! texts are exact).

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use super::convert;
use super::proto::event_store::client::{self as shared};
use super::proto::google::rpc;
use crate::error::{ActualRevision, Error, Limit};
use crate::types::ExpectedRevision;

fn with_trailers(
    code: Code,
    message: impl Into<String>,
    trailers: &[(&'static str, &str)],
) -> Status {
    let mut map = MetadataMap::new();
    for (key, value) in trailers {
        // A value that cannot be a header (a stream name with non-ASCII characters) is left
        // out; the message still names it.
        if let Ok(v) = MetadataValue::try_from(*value) {
            map.insert(*key, v);
        }
    }
    Status::with_metadata(code, message, map)
}

pub fn invalid_argument(message: impl Into<String>) -> Status {
    with_trailers(
        Code::InvalidArgument,
        message,
        &[("exception", "invalid-argument")],
    )
}

/// An appended event without `type` or `content-type` in its metadata.
pub fn missing_metadata() -> Status {
    with_trailers(
        Code::InvalidArgument,
        "Required metadata properties are missing: type, content-type",
        &[
            ("exception", "missing-required-metadata-property"),
            ("required-metadata-properties", "type,content-type"),
        ],
    )
}

/// FAILED_PRECONDITION `Event stream 'S' is deleted.`: a tombstoned stream (or, for appends
/// expecting it to exist, a soft-deleted one).
pub fn stream_deleted(stream: &str) -> Status {
    with_trailers(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        &[("exception", "stream-deleted"), ("stream-name", stream)],
    )
}

/// A delete or tombstone whose expected version does not hold. The text is exact: clients
/// parse it, and read `Actual version: -1` as "not found".
pub fn delete_wrong_version(stream: &str, expected: ExpectedRevision, actual: i64) -> Status {
    let expected = convert::expected_version_number(expected).to_string();
    let actual = actual.to_string();
    with_trailers(
        Code::FailedPrecondition,
        format!(
            "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: \
             {expected}, Actual version: {actual}"
        ),
        &[
            ("exception", "wrong-expected-version"),
            ("stream-name", stream),
            ("expected-version", &expected),
            ("actual-version", &actual),
        ],
    )
}

pub fn maximum_append_size(limit: u64) -> Status {
    let limit = limit.to_string();
    with_trailers(
        Code::InvalidArgument,
        format!("Maximum Append Size of {limit} Exceeded."),
        &[
            ("exception", "maximum-append-size-exceeded"),
            ("maximum-append-size", &limit),
        ],
    )
}

/// The limit of an append that was too large, the one rule for every append call: the whole
/// append, one of its events, its commit or a `$$S` metadata event over its limit is what
/// KurrentDB (and its clients) call "maximum append size exceeded".
fn append_size_limit(error: &Error) -> Option<u64> {
    match error {
        Error::LimitExceeded {
            what: Limit::AppendBytes | Limit::EventBytes | Limit::CommitBytes | Limit::MetadataBytes,
            limit,
            ..
        } => Some(*limit),
        _ => None,
    }
}

/// Any engine error outside the cases each call handles itself.
pub fn from_engine(error: &Error) -> Status {
    if let Some(limit) = append_size_limit(error) {
        return maximum_append_size(limit);
    }
    match error {
        Error::StreamDeleted { stream } => stream_deleted(stream),
        Error::InvalidArgument(_) | Error::InvalidConfig(_) => invalid_argument(error.to_string()),
        Error::LimitExceeded { what, .. } if !what.is_size() => invalid_argument(error.to_string()),
        Error::Closed | Error::Poisoned { .. } | Error::Locked { .. } => {
            Status::unavailable(format!("Server Is Not Ready: {error}"))
        }
        Error::Corruption { .. } => Status::data_loss(error.to_string()),
        Error::PermissionDenied { .. } => with_trailers(
            Code::PermissionDenied,
            "Access Denied",
            &[("exception", "access-denied")],
        ),
        Error::Unauthenticated(_) => with_trailers(
            Code::Unauthenticated,
            error.to_string(),
            &[("exception", "not-authenticated")],
        ),
        Error::LimitExceeded { what, .. } if what.is_size() => {
            Status::resource_exhausted(error.to_string())
        }
        _ => Status::internal(error.to_string()),
    }
}

/// The revision KurrentDB reports for an actual version: −1 for a stream with no events.
pub fn actual_number(actual: &ActualRevision) -> i64 {
    match actual {
        ActualRevision::Revision(r) => r.0 as i64,
        _ => -1,
    }
}

fn any<M: Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/event_store.client.{name}"),
        value: message.encode_to_vec(),
    }
}

/// A batch append's error: `google.rpc.Status` with the detail message clients unpack.
pub fn batch_status(
    error: &Error,
    expected: ExpectedRevision,
    current: Option<u64>,
) -> rpc::Status {
    if let Some(limit) = append_size_limit(error) {
        return rpc::Status {
            code: Code::InvalidArgument as i32,
            message: "MaximumAppendSizeExceeded".into(),
            details: Some(any(
                "MaximumAppendSizeExceeded",
                &shared::MaximumAppendSizeExceeded {
                    max_append_size: u32::try_from(limit).unwrap_or(u32::MAX),
                },
            )),
        };
    }
    match error {
        Error::WrongExpectedRevision { .. } | Error::IdempotencyConflict { .. } => {
            use shared::wrong_expected_version::{
                CurrentStreamRevisionOption as Current, ExpectedStreamPositionOption as Want,
            };
            let detail = shared::WrongExpectedVersion {
                current_stream_revision_option: Some(match current {
                    Some(r) => Current::CurrentStreamRevision(r),
                    None => Current::CurrentNoStream(()),
                }),
                expected_stream_position_option: Some(match expected {
                    ExpectedRevision::Exact(r) => Want::ExpectedStreamPosition(r.0),
                    ExpectedRevision::Any => Want::ExpectedAny(()),
                    ExpectedRevision::StreamExists => Want::ExpectedStreamExists(()),
                    ExpectedRevision::NoStream => Want::ExpectedNoStream(()),
                }),
            };
            rpc::Status {
                code: Code::AlreadyExists as i32,
                message: "WrongExpectedVersion".into(),
                details: Some(any("WrongExpectedVersion", &detail)),
            }
        }
        Error::StreamDeleted { stream } => rpc::Status {
            code: Code::NotFound as i32,
            message: "StreamDeleted".into(),
            details: Some(any(
                "StreamDeleted",
                &shared::StreamDeleted {
                    stream_identifier: Some(convert::stream_identifier(stream)),
                },
            )),
        },
        Error::PermissionDenied { .. } => rpc::Status {
            code: Code::PermissionDenied as i32,
            message: "Access Denied".into(),
            details: Some(any("AccessDenied", &shared::AccessDenied {})),
        },
        Error::InvalidArgument(_) | Error::LimitExceeded { .. } => bad_request(error.to_string()),
        _ => rpc::Status {
            code: from_engine(error).code() as i32,
            message: error.to_string(),
            details: Some(any("Unknown", &shared::Unknown {})),
        },
    }
}

pub fn bad_request(message: String) -> rpc::Status {
    rpc::Status {
        code: Code::InvalidArgument as i32,
        message: message.clone(),
        details: Some(any("BadRequest", &shared::BadRequest { message })),
    }
}

/// A batch whose deadline passed before it could be written.
pub fn batch_timeout() -> rpc::Status {
    rpc::Status {
        code: Code::DeadlineExceeded as i32,
        message: "Timeout".into(),
        details: Some(any("Timeout", &shared::Timeout {})),
    }
}
