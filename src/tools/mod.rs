//! Offline tools for a closed data directory: verify, dump, replay, compact. Each takes the
//! directory lock first (so that no server runs meanwhile) and reports its progress through
//! [`progress`].

pub mod compact;
pub mod dump;
pub mod event_json;
pub mod progress;
pub mod replay;
pub mod verify;

pub use progress::{NoProgress, Progress, StderrProgress};
pub use verify::{Finding, VerifyReport, verify};
