//! Store configuration: one plain struct, checked once by [`Config::validate`] at open.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::frame;
use crate::log::segment::SEGMENT_HEADER_BYTES;

/// When appends reach stable storage, and so what a crash can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is acknowledged only after `fdatasync` of its bytes has returned.
    /// Concurrent appends share one `fdatasync` (group commit). A crash loses nothing that was
    /// acknowledged. This is the default.
    Always,
    /// Appends are acknowledged once written to the operating system's page cache; the log is
    /// `fdatasync`ed at most this many milliseconds after a write. **Risk:** a power loss or
    /// kernel crash loses up to that interval of acknowledged appends (a process crash loses
    /// nothing, the page cache survives it). Readers may see such events before they are on disk.
    IntervalMs(u64),
    /// Appends are acknowledged once in the page cache and never explicitly synced except when a
    /// segment is sealed or the store is closed. **Risk:** a power loss or kernel crash can lose
    /// any amount of acknowledged appends. For tests and throwaway data only.
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::IntervalMs(ms) => write!(f, "interval:{ms}"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Parses `always`, `never` or `interval:MS` (MS > 0), the form `Display` writes.
impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<FsyncPolicy, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse().ok())
                .filter(|&ms| ms > 0)
                .map(FsyncPolicy::IntervalMs)
                .ok_or_else(|| format!("'{s}' is not always, never or interval:MS with MS > 0")),
        }
    }
}

/// Configuration of a store. `Config::default()` is what production should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size of a segment file. A segment is sealed when the next commit does not fit, and a
    /// pre-allocated, zero-filled file becomes the next one. Must hold the segment header plus
    /// one largest append. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Durability policy. Default: [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Largest `data` + `metadata` of one event. Default: 1 MiB.
    pub event_bytes_max: u64,
    /// Most events in one append (all streams of a multi-stream append together). Default: 10,000.
    pub append_events_max: u64,
    /// Most encoded bytes of one append (all frames of the commit). Default: 16 MiB.
    pub append_bytes_max: u64,
    /// Longest stream name, in bytes. Names must also be non-empty and free of control
    /// characters. Default: 512.
    pub stream_name_bytes_max: u64,
    /// Longest event type name, in bytes; same rules as stream names. Default: 256.
    pub event_type_bytes_max: u64,
    /// Most streams in one multi-stream append. Default: 1,000.
    pub append_streams_max: u64,
    /// Most events returned by one read call. Default: 10,000.
    pub read_count_max: u64,
    /// Most events one whole-log read looks at (filtered reads may match few of them); the
    /// result says where the scan stopped so the caller resumes there. Default: 100,000.
    pub read_scan_max: u64,
    /// Most appends waiting for the writer; further appenders wait for room. Default: 4,096.
    pub writer_queue_max: usize,
    /// Most bytes the writer gathers into one group commit (one write, one fdatasync).
    /// A single append larger than this is still written, alone. Default: 8 MiB.
    pub group_commit_bytes_max: u64,
    /// Write an index checkpoint once this many events are past the last one (and on close).
    /// Opening a store then reads the checkpoint and replays only the log after it. `0` turns
    /// checkpoints off: every open rebuilds the indexes from the whole log and holds them in
    /// memory. Default: 500,000.
    pub checkpoint_events: u64,
    /// Also write an index checkpoint when this much time has passed since the last one and
    /// events have been appended since. `Duration::ZERO` disables the time trigger. Default: 5
    /// minutes.
    pub checkpoint_interval: Duration,
    /// How many aggregate snapshots to keep per stream; saving one more prunes the oldest.
    /// Default: 3.
    pub snapshot_keep: usize,
    /// Largest snapshot state, in bytes. Default: 16 MiB.
    pub snapshot_bytes_max: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
            event_bytes_max: 1 << 20,
            append_events_max: 10_000,
            append_bytes_max: 16 << 20,
            stream_name_bytes_max: 512,
            event_type_bytes_max: 256,
            append_streams_max: 1_000,
            read_count_max: 10_000,
            read_scan_max: 100_000,
            writer_queue_max: 4_096,
            group_commit_bytes_max: 8 << 20,
            checkpoint_events: 500_000,
            checkpoint_interval: Duration::from_secs(300),
            snapshot_keep: 3,
            snapshot_bytes_max: 16 << 20,
        }
    }
}

/// Segments are addressed with 32-bit offsets in the index.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

impl Config {
    /// Checks the configuration once, at open. Every relation the engine relies on is here.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.segment_bytes > SEGMENT_BYTES_MAX {
            return bad(format!(
                "segment_bytes {} is over the maximum {SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.append_bytes_max > frame::PAYLOAD_BYTES_MAX as u64 {
            return bad(format!(
                "append_bytes_max {} is over the maximum {}",
                self.append_bytes_max,
                frame::PAYLOAD_BYTES_MAX
            ));
        }
        if self.segment_bytes < SEGMENT_HEADER_BYTES as u64 + self.append_bytes_max {
            return bad(format!(
                "segment_bytes {} cannot hold the {SEGMENT_HEADER_BYTES}-byte header plus one largest \
                 append (append_bytes_max {})",
                self.segment_bytes, self.append_bytes_max
            ));
        }
        if self.stream_name_bytes_max == 0 || self.stream_name_bytes_max > u16::MAX as u64 {
            return bad(format!("stream_name_bytes_max must be in 1..={}", u16::MAX));
        }
        if self.event_type_bytes_max == 0 || self.event_type_bytes_max > u16::MAX as u64 {
            return bad(format!("event_type_bytes_max must be in 1..={}", u16::MAX));
        }
        if self.event_bytes_max > u32::MAX as u64 {
            return bad("event_bytes_max must fit in 32 bits".into());
        }
        if self.append_events_max == 0 || self.append_events_max > u32::MAX as u64 {
            return bad("append_events_max must be in 1..=u32::MAX".into());
        }
        if self.append_streams_max == 0 {
            return bad("append_streams_max must be at least 1".into());
        }
        if self.read_count_max == 0 {
            return bad("read_count_max must be at least 1".into());
        }
        if self.writer_queue_max == 0 {
            return bad("writer_queue_max must be at least 1".into());
        }
        if self.snapshot_keep == 0 {
            return bad("snapshot_keep must be at least 1".into());
        }
        if self.snapshot_bytes_max == 0 || self.snapshot_bytes_max > frame::PAYLOAD_BYTES_MAX as u64
        {
            return bad(format!(
                "snapshot_bytes_max must be in 1..={}",
                frame::PAYLOAD_BYTES_MAX
            ));
        }
        if let FsyncPolicy::IntervalMs(0) = self.fsync {
            return bad("fsync interval must be at least 1 ms; use FsyncPolicy::Always".into());
        }
        Ok(())
    }

    pub(crate) fn fsync_interval(&self) -> Option<Duration> {
        match self.fsync {
            FsyncPolicy::IntervalMs(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        }
    }
}
