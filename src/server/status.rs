//! Engine errors to gRPC statuses, in one place. Every status carries a `google.rpc.ErrorInfo`
//! detail (domain `statestore`) whose reason names the error and whose metadata holds its fields,
//! so clients branch on data rather than on message text.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{ActualRevision, Error, Limit};
use crate::types::ExpectedRevision;

/// The `ErrorInfo` domain of every statestore error.
pub const DOMAIN: &str = "statestore";

/// The status for an engine error.
pub fn to_status(error: &Error) -> Status {
    let message = error.to_string();
    let mut meta = HashMap::new();
    let (code, reason) = match error {
        Error::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => {
            meta.insert("stream".into(), stream.clone());
            meta.insert("expected".into(), expected_text(expected));
            meta.insert("actual".into(), actual_text(actual));
            (Code::FailedPrecondition, "WRONG_EXPECTED_REVISION")
        }
        Error::IdempotencyConflict {
            stream,
            event_id,
            revision,
        } => {
            meta.insert("stream".into(), stream.clone());
            meta.insert("event_id".into(), event_id.to_string());
            meta.insert("revision".into(), revision.0.to_string());
            (Code::AlreadyExists, "IDEMPOTENCY_CONFLICT")
        }
        Error::TrackingNotIncreasing {
            source_name,
            position,
            stored,
        } => {
            meta.insert("source".into(), source_name.clone());
            meta.insert("position".into(), position.to_string());
            meta.insert("stored".into(), stored.to_string());
            (Code::FailedPrecondition, "TRACKING_NOT_INCREASING")
        }
        Error::TrackingConflict {
            source_name,
            expected,
            stored,
        } => {
            meta.insert("source".into(), source_name.clone());
            meta.insert("expected".into(), expected.to_string());
            meta.insert(
                "stored".into(),
                stored.map_or_else(|| "none".to_string(), |p| p.to_string()),
            );
            (Code::FailedPrecondition, "TRACKING_CONFLICT")
        }
        Error::GroupNotFound { source_name, group } => {
            meta.insert("source".into(), source_name.clone());
            meta.insert("group".into(), group.clone());
            (Code::NotFound, "GROUP_NOT_FOUND")
        }
        Error::GroupExists { source_name, group } => {
            meta.insert("source".into(), source_name.clone());
            meta.insert("group".into(), group.clone());
            (Code::AlreadyExists, "GROUP_EXISTS")
        }
        Error::GroupFull {
            source_name,
            group,
            max,
        } => {
            meta.insert("source".into(), source_name.clone());
            meta.insert("group".into(), group.clone());
            meta.insert("max".into(), max.to_string());
            (Code::FailedPrecondition, "GROUP_FULL")
        }
        Error::GroupDropped {
            source_name, group, ..
        } => {
            meta.insert("source".into(), source_name.clone());
            meta.insert("group".into(), group.clone());
            (Code::Aborted, "GROUP_DROPPED")
        }
        Error::StreamNotFound { stream } => {
            meta.insert("stream".into(), stream.clone());
            (Code::NotFound, "STREAM_NOT_FOUND")
        }
        Error::StreamDeleted { stream } => {
            meta.insert("stream".into(), stream.clone());
            (Code::FailedPrecondition, "STREAM_DELETED")
        }
        Error::InvalidArgument(_) | Error::InvalidConfig(_) => {
            (Code::InvalidArgument, "INVALID_ARGUMENT")
        }
        Error::LimitExceeded {
            what,
            limit,
            actual,
        } => {
            meta.insert("what".into(), what.name().to_string());
            meta.insert("limit".into(), limit.to_string());
            meta.insert("actual".into(), actual.to_string());
            // Sizes and server resources are exhausted; counts and names are a malformed
            // request.
            let code = if what.is_size() {
                Code::ResourceExhausted
            } else {
                Code::InvalidArgument
            };
            (code, "LIMIT_EXCEEDED")
        }
        Error::Corruption { file, offset, .. } => {
            meta.insert("file".into(), file.display().to_string());
            meta.insert("offset".into(), offset.to_string());
            (Code::DataLoss, "CORRUPTION")
        }
        Error::Poisoned { .. } => (Code::Unavailable, "POISONED"),
        Error::Closed => (Code::Unavailable, "CLOSED"),
        Error::Locked { .. } => (Code::Unavailable, "LOCKED"),
        Error::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
        Error::PermissionDenied {
            principal,
            access,
            stream,
        } => {
            meta.insert("principal".into(), principal.clone());
            meta.insert("access".into(), (*access).to_string());
            meta.insert("stream".into(), stream.clone());
            (Code::PermissionDenied, "PERMISSION_DENIED")
        }
        Error::Internal(_) => (Code::Internal, "INTERNAL"),
        Error::Io { path, .. } => {
            meta.insert("path".into(), path.display().to_string());
            (Code::Internal, "IO")
        }
    };
    with_info(code, message, reason, meta)
}

/// An INVALID_ARGUMENT for a malformed request field (checked before the engine is called).
pub fn invalid_argument(message: impl Into<String>) -> Status {
    with_info(
        Code::InvalidArgument,
        message.into(),
        "INVALID_ARGUMENT",
        HashMap::new(),
    )
}

/// INTERNAL for a failure of the server itself (a task that panicked).
pub fn internal(message: impl Into<String>) -> Status {
    with_info(Code::Internal, message.into(), "INTERNAL", HashMap::new())
}

/// tonic answers two request errors itself, before any service sees the request: a request
/// larger than the decoding limit (a bare OUT_OF_RANGE) and a request that is not valid
/// protobuf (a bare INTERNAL). This rewrites them into the documented answers:
/// RESOURCE_EXHAUSTED `LIMIT_EXCEEDED` with the limit and the size found, and
/// INVALID_ARGUMENT. Every other response passes through untouched.
pub fn rewrite_request_errors<B: Default>(
    limit: usize,
    response: http::Response<B>,
) -> http::Response<B> {
    let headers = response.headers();
    if headers.get("grpc-status").is_some_and(|v| v == "13")
        && let Some(message) = Status::from_header_map(headers)
            .map(|s| s.message().to_string())
            .filter(|m| m.contains("failed to decode"))
    {
        return invalid_argument(format!("malformed request message: {message}")).into_http();
    }
    if headers.get("grpc-status").is_none_or(|v| v != "11") {
        return response;
    }
    let Some(message) = Status::from_header_map(headers)
        .map(|s| s.message().to_string())
        .filter(|m| m.contains("message length too large"))
    else {
        return response;
    };
    let mut meta = HashMap::new();
    meta.insert("what".into(), Limit::RequestBytes.name().into());
    meta.insert("limit".into(), limit.to_string());
    // tonic says "found N bytes, the limit is: L bytes".
    if let Some(found) = message
        .split("found ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .filter(|n| n.parse::<u64>().is_ok())
    {
        meta.insert("actual".into(), found.to_string());
    }
    with_info(
        Code::ResourceExhausted,
        format!("request message is over the limit of {limit} bytes ({message})"),
        "LIMIT_EXCEEDED",
        meta,
    )
    .into_http()
}

/// UNAVAILABLE for calls cut short by shutdown.
pub fn shutting_down() -> Status {
    with_info(
        Code::Unavailable,
        "the server is shutting down".into(),
        "CLOSED",
        HashMap::new(),
    )
}

fn with_info(code: Code, message: String, reason: &str, meta: HashMap<String, String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, meta),
    )
}

/// `any`, `no_stream`, `stream_exists` or the revision number.
fn expected_text(expected: &ExpectedRevision) -> String {
    match expected {
        ExpectedRevision::Any => "any".into(),
        ExpectedRevision::NoStream => "no_stream".into(),
        ExpectedRevision::StreamExists => "stream_exists".into(),
        ExpectedRevision::Exact(r) => r.to_string(),
    }
}

/// `no_stream` or the revision number.
fn actual_text(actual: &ActualRevision) -> String {
    match actual {
        ActualRevision::NoStream => "no_stream".into(),
        ActualRevision::Revision(r) => r.0.to_string(),
    }
}
