//! The settings of a persistent-subscription group: KurrentDB's names, units and defaults,
//! kept exactly as the client sent them (absent stays absent) and resolved to effective
//! values when the group runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a group without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The first event of the source.
    Start,
    /// Only events committed after the group was created.
    End,
    /// This revision (stream groups) or position (`$all` groups), inclusive.
    At(u64),
}

/// How a group hands events to its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Each event to the next consumer with room, in turn.
    RoundRobin,
    /// Every event to the first consumer (in order of joining) with room; the others take
    /// over when it is full or gone.
    DispatchToSingle,
    /// A stream's events to one consumer, chosen by a hash of the stream name over the
    /// connected consumers (the assignment changes as consumers join and leave).
    Pinned,
    /// As `Pinned`, by the `$correlationId` of the event's JSON metadata (its stream when it
    /// has none).
    PinnedByCorrelation,
    /// At most one event in flight per stream, in stream order; a stream passes to another
    /// consumer only once its owner has finished with its in-flight event.
    KeyOrdered,
}

impl Strategy {
    /// The KurrentDB name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "RoundRobin",
            Strategy::DispatchToSingle => "DispatchToSingle",
            Strategy::Pinned => "Pinned",
            Strategy::PinnedByCorrelation => "PinnedByCorrelation",
            Strategy::KeyOrdered => "KeyOrdered",
        }
    }

    pub fn parse(name: &str) -> Result<Strategy> {
        Ok(match name {
            "RoundRobin" => Strategy::RoundRobin,
            "DispatchToSingle" => Strategy::DispatchToSingle,
            "Pinned" => Strategy::Pinned,
            "PinnedByCorrelation" => Strategy::PinnedByCorrelation,
            "KeyOrdered" => Strategy::KeyOrdered,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown consumer strategy '{other}' (RoundRobin, DispatchToSingle, Pinned, \
                     PinnedByCorrelation, KeyOrdered)"
                )));
            }
        })
    }
}

/// A group's settings as sent: `None` is "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupSettings {
    pub start_from: Option<StartFrom>,
    pub resolve_links: Option<bool>,
    pub extra_statistics: Option<bool>,
    /// Milliseconds a delivered event may stay un-acknowledged. Default 30,000.
    pub message_timeout_ms: Option<u64>,
    /// Retries before an event is parked. Default 10.
    pub max_retry_count: Option<u32>,
    /// Events buffered while live. Default 500.
    pub live_buffer_size: Option<u32>,
    /// Events per read. Default 20.
    pub read_batch_size: Option<u32>,
    /// Events buffered while catching up. Default 500.
    pub history_buffer_size: Option<u32>,
    /// Milliseconds between checkpoints. Default 2,000.
    pub checkpoint_after_ms: Option<u64>,
    /// Events acknowledged before a checkpoint is written. Default 10.
    pub min_checkpoint_count: Option<u32>,
    /// Events acknowledged after which a checkpoint is written at once. Default 1,000.
    pub max_checkpoint_count: Option<u32>,
    /// Consumers at once; 0 is unlimited. Default 0.
    pub max_subscriber_count: Option<u32>,
    /// Default `RoundRobin`.
    pub consumer_strategy: Option<String>,
    /// Events in flight across the group's consumers; 0 is only the per-consumer limits.
    /// Default 0. (A statestore setting.)
    pub max_in_flight: Option<u32>,
}

/// The settings a group runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub start_from: StartFrom,
    pub resolve_links: bool,
    pub extra_statistics: bool,
    pub message_timeout: Duration,
    pub max_retry_count: u32,
    pub live_buffer_size: usize,
    pub read_batch_size: usize,
    pub history_buffer_size: usize,
    pub checkpoint_after: Duration,
    pub min_checkpoint_count: u64,
    pub max_checkpoint_count: u64,
    pub max_subscriber_count: u32,
    pub strategy: Strategy,
    pub max_in_flight: usize,
}

/// The largest buffer a group may ask for: bounds the events it holds.
pub const BUFFER_MAX: u32 = 100_000;

impl GroupSettings {
    /// Checks the settings as KurrentDB does and resolves them.
    pub fn effective(&self) -> Result<Effective> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        let e = Effective {
            start_from: self.start_from.unwrap_or(StartFrom::End),
            resolve_links: self.resolve_links.unwrap_or(false),
            extra_statistics: self.extra_statistics.unwrap_or(false),
            message_timeout: Duration::from_millis(self.message_timeout_ms.unwrap_or(30_000)),
            max_retry_count: self.max_retry_count.unwrap_or(10),
            live_buffer_size: self.live_buffer_size.unwrap_or(500) as usize,
            read_batch_size: self.read_batch_size.unwrap_or(20) as usize,
            history_buffer_size: self.history_buffer_size.unwrap_or(500) as usize,
            checkpoint_after: Duration::from_millis(self.checkpoint_after_ms.unwrap_or(2_000)),
            min_checkpoint_count: u64::from(self.min_checkpoint_count.unwrap_or(10)),
            max_checkpoint_count: u64::from(self.max_checkpoint_count.unwrap_or(1_000)),
            max_subscriber_count: self.max_subscriber_count.unwrap_or(0),
            strategy: Strategy::parse(self.consumer_strategy.as_deref().unwrap_or("RoundRobin"))?,
            max_in_flight: self.max_in_flight.unwrap_or(0) as usize,
        };
        for (name, value) in [
            ("live_buffer_size", e.live_buffer_size),
            ("read_batch_size", e.read_batch_size),
            ("history_buffer_size", e.history_buffer_size),
        ] {
            if value == 0 || value > BUFFER_MAX as usize {
                return bad(format!("{name} must be between 1 and {BUFFER_MAX}"));
            }
        }
        if e.read_batch_size >= e.history_buffer_size {
            return bad(format!(
                "read_batch_size ({}) must be less than history_buffer_size ({})",
                e.read_batch_size, e.history_buffer_size
            ));
        }
        if e.message_timeout.is_zero() {
            return bad("message_timeout must be positive".into());
        }
        if e.min_checkpoint_count > e.max_checkpoint_count {
            return bad(format!(
                "min_checkpoint_count ({}) must not exceed max_checkpoint_count ({})",
                e.min_checkpoint_count, e.max_checkpoint_count
            ));
        }
        Ok(e)
    }
}
