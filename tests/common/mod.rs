//! Helpers shared by the integration tests. Each test file uses only some of them.
#![allow(dead_code)]

pub mod external;
pub mod server;

use std::path::{Path, PathBuf};

use statestore::{Config, ContentType, EventData, FsyncPolicy, RecordedEvent, Revision};
use uuid::Uuid;

/// A temporary directory, on tmpfs when there is one (these tests open stores thousands of
/// times and every open fsyncs a pre-allocated segment).
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("statestore-test-")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("statestore-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// The default configuration with 1 MiB segments: opening a store with the default 64 MiB
/// segments writes 128 MiB of zeros (the segment and the next one, pre-allocated).
pub fn config() -> Config {
    Config {
        segment_bytes: 1 << 20,
        append_bytes_max: 256 << 10,
        ..Config::default()
    }
}

/// Small segments, so that a few dozen events span several segment files.
pub fn small_config() -> Config {
    Config {
        segment_bytes: 4096,
        append_bytes_max: 2048,
        ..Config::default()
    }
}

/// Like [`small_config`], without fsync (for tests that copy files after `close`).
pub fn small_config_nosync() -> Config {
    Config {
        fsync: FsyncPolicy::Never,
        ..small_config()
    }
}

/// A deterministic id: the same `n` always gives the same id.
pub fn id(n: u64) -> Uuid {
    Uuid::from_u64_pair(0x5157_a7e5_7e57_0000, n)
}

/// A JSON event with a deterministic id.
pub fn ev(n: u64, event_type: &str) -> EventData {
    EventData::json(event_type, format!("{{\"n\":{n}}}")).with_id(id(n))
}

/// An event as the tests expect to read it back.
#[derive(Debug, Clone)]
pub struct Expected {
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    pub data: EventData,
}

/// Asserts that a recorded event is exactly the expected one (data, metadata, type, content
/// type, stream, revision, position, and id when the expected event gives one).
#[track_caller]
pub fn assert_event(actual: &RecordedEvent, expected: &Expected) {
    let ctx = format!("position {}", expected.position);
    assert_eq!(actual.position.0, expected.position, "{ctx}: position");
    assert_eq!(actual.stream(), expected.stream, "{ctx}: stream");
    assert_eq!(
        actual.revision,
        Revision(expected.revision),
        "{ctx}: revision"
    );
    assert_eq!(actual.event_type(), expected.data.event_type, "{ctx}: type");
    assert_eq!(actual.data(), &expected.data.data[..], "{ctx}: data");
    assert_eq!(actual.data_bytes(), expected.data.data, "{ctx}: data bytes");
    assert_eq!(
        actual.metadata(),
        &expected.data.metadata[..],
        "{ctx}: metadata"
    );
    assert_eq!(
        actual.metadata_bytes(),
        expected.data.metadata,
        "{ctx}: metadata bytes"
    );
    assert_eq!(
        actual.content_type, expected.data.content_type,
        "{ctx}: content type"
    );
    match expected.data.id {
        Some(id) => assert_eq!(actual.id, id, "{ctx}: id"),
        None => assert!(!actual.id.is_nil(), "{ctx}: store-assigned id is nil"),
    }
}

#[track_caller]
pub fn assert_events(actual: &[RecordedEvent], expected: &[&Expected]) {
    assert_eq!(
        actual.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        expected.iter().map(|e| e.position).collect::<Vec<_>>(),
        "positions of the events read"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert_event(a, e);
    }
}

/// A simple deterministic PRNG (xorshift64*), so that failures reproduce without extra crates.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Bytes that never end in a zero byte (so a frame's last byte is never 0).
pub fn payload(rng: &mut XorShift, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    if let Some(last) = v.last_mut()
        && *last == 0
    {
        *last = 0xA5;
    }
    v
}

/// The segment files of a store directory, sorted (log order).
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the store directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24 && n.ends_with(".seg"))
        })
        .collect();
    v.sort();
    v
}

/// Builds an `EventData` with every field chosen.
pub fn full_event(
    id: Option<Uuid>,
    event_type: &str,
    data: Vec<u8>,
    metadata: Vec<u8>,
    content_type: ContentType,
) -> EventData {
    EventData {
        id,
        event_type: event_type.to_string(),
        data: data.into(),
        metadata: metadata.into(),
        content_type,
    }
}
