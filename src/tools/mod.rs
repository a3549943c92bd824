//! Offline tools for a closed data directory. Each takes the directory lock first, so that no
//! server runs meanwhile, then reads the files directly. They share the progress reporting of
//! [`progress`].

pub mod progress;
pub mod verify;

pub use progress::{NoProgress, Progress, StderrProgress};
pub use verify::{Finding, VerifyReport, verify};
