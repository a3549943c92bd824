//! Single bit flips anywhere in a multi-segment log: opening gives `Corruption` naming the
//! damaged segment, or (only for the tail of the last segment) a store holding a prefix of the
//! original events, each exactly as written. Never a panic, never a wrong event.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::{XorShift, full_event, payload};
use statestore::{
    Config, ContentType, Direction, Error, ExpectedRevision, Filter, FsyncPolicy, Position,
    RecordedEvent, Revision, Store,
};

const STREAMS: &[&str] = &["acct-1", "acct-2", "acct-3", "x"];

fn config() -> Config {
    Config {
        segment_bytes: 4096,
        append_bytes_max: 2048,
        // Every append is its own durable commit, so frames carry real `durable_through`
        // values, which is what tells damage from a torn write in the last segment.
        fsync: FsyncPolicy::Always,
        ..Config::default()
    }
}

/// One frame of a segment file, parsed by the test itself from the documented format.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: usize,
    len: usize,
    position: u64,
    commit_index: u32,
}

struct Segment {
    name: String,
    bytes: Vec<u8>,
    frames: Vec<Frame>,
    data_end: usize,
}

struct Original {
    segments: Vec<Segment>,
    events: Vec<RecordedEvent>,
    _dir: tempfile::TempDir,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn parse_frames(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 32;
    while at + 4 <= bytes.len() {
        let len = u32_at(bytes, at) as usize;
        if len == 0 {
            break;
        }
        frames.push(Frame {
            start: at,
            len: 8 + len,
            position: u64_at(bytes, at + 8),
            commit_index: u32_at(bytes, at + 8 + 48),
        });
        at += 8 + len;
    }
    assert!(
        bytes[at..].iter().all(|&b| b == 0),
        "non-zero bytes after the frames"
    );
    (frames, at)
}

fn build() -> Original {
    let dir = common::tempdir();
    let store = Store::open(dir.path(), config()).unwrap();
    let mut rng = XorShift::new(0xB17_F11B);
    let mut n = 0;
    for _ in 0..45 {
        let stream = STREAMS[rng.below(STREAMS.len() as u64) as usize];
        let count = 1 + rng.below(3);
        let events = (0..count)
            .map(|_| {
                n += 1;
                let data = rng.below(300) as usize;
                let meta = rng.below(30) as usize;
                let ct = if n % 2 == 0 {
                    ContentType::Json
                } else {
                    ContentType::Binary
                };
                let t = ["Opened", "Credited", "Debited"][rng.below(3) as usize];
                full_event(
                    Some(common::id(n)),
                    t,
                    payload(&mut rng, data),
                    payload(&mut rng, meta),
                    ct,
                )
            })
            .collect();
        store.append(stream, ExpectedRevision::Any, events).unwrap();
    }
    let events = store
        .read_all(
            Position::START,
            Direction::Forwards,
            1000,
            &Filter::default(),
        )
        .unwrap()
        .events;
    store.close().unwrap();
    let segments: Vec<Segment> = common::segment_files(dir.path())
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let (frames, data_end) = parse_frames(&bytes);
            Segment {
                name: path.file_name().unwrap().to_str().unwrap().to_string(),
                bytes,
                frames,
                data_end,
            }
        })
        .collect();
    assert!(segments.len() >= 4, "only {} segments", segments.len());
    let frames: usize = segments.iter().map(|s| s.frames.len()).sum();
    assert_eq!(frames, events.len());
    Original {
        segments,
        events,
        _dir: dir,
    }
}

/// Writes the original segments into `dir`, with bit `bit` of byte `offset` of segment
/// `segment` flipped. Returns the path of the flipped file.
fn write_flipped(
    original: &Original,
    dir: &Path,
    segment: usize,
    offset: usize,
    bit: u8,
) -> PathBuf {
    std::fs::create_dir(dir).unwrap();
    let mut flipped = PathBuf::new();
    for (i, s) in original.segments.iter().enumerate() {
        let path = dir.join(&s.name);
        if i == segment {
            let mut bytes = s.bytes.clone();
            bytes[offset] ^= 1 << bit;
            std::fs::write(&path, bytes).unwrap();
            flipped = path;
        } else {
            std::fs::write(&path, &s.bytes).unwrap();
        }
    }
    flipped
}

/// What opening a copy with one flipped bit gave.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Corruption,
    /// Opened with this many events (a prefix of the original).
    Prefix(usize),
}

/// Opens the copy and checks the outcome against the rules; the flipped byte is at `offset`
/// of `flipped`.
fn open_and_check(original: &Original, dir: &Path, flipped: &Path, offset: usize) -> Outcome {
    match Store::open(dir, config()) {
        Err(Error::Corruption {
            file,
            offset: at,
            reason,
        }) => {
            assert_eq!(
                file, flipped,
                "corruption reported in the wrong file: {reason}"
            );
            assert!(
                at as usize <= offset,
                "corruption reported at {at}, after the flipped byte {offset}: {reason}"
            );
            Outcome::Corruption
        }
        Err(e) => panic!("expected Corruption or a store, got {e}"),
        Ok(store) => {
            let all = store
                .read_all(
                    Position::START,
                    Direction::Forwards,
                    1000,
                    &Filter::default(),
                )
                .unwrap();
            let count = all.events.len();
            assert!(count <= original.events.len());
            assert_eq!(
                all.events[..],
                original.events[..count],
                "events differ from the original"
            );
            assert_eq!(store.last_position(), Position(count as u64));
            let back = store
                .read_all(
                    Position::END,
                    Direction::Backwards,
                    1000,
                    &Filter::default(),
                )
                .unwrap();
            assert!(back.events.iter().rev().eq(all.events.iter()));
            for stream in STREAMS {
                let want: Vec<&RecordedEvent> = all
                    .events
                    .iter()
                    .filter(|e| e.stream() == *stream)
                    .collect();
                match store.read_stream(stream, Revision(0), Direction::Forwards, 1000) {
                    Ok(got) => assert!(got.iter().eq(want.iter().copied()), "stream {stream}"),
                    Err(Error::StreamNotFound { .. }) => assert!(want.is_empty()),
                    Err(e) => panic!("read_stream {stream}: {e}"),
                }
            }
            // The recovered store takes appends at the next position.
            let r = store
                .append(
                    "after",
                    ExpectedRevision::NoStream,
                    vec![common::ev(99_999, "T")],
                )
                .unwrap();
            assert_eq!(r.first_position, Position(count as u64 + 1));
            Outcome::Prefix(count)
        }
    }
}

/// Flips one bit and checks; panics with the flip's coordinates if anything is wrong.
fn flip(original: &Original, root: &Path, segment: usize, offset: usize, bit: u8) -> Outcome {
    let dir = root.join(format!("flip-{segment}-{offset}-{bit}"));
    let flipped = write_flipped(original, &dir, segment, offset, bit);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        open_and_check(original, &dir, &flipped, offset)
    }))
    .unwrap_or_else(|_| {
        panic!("flip of bit {bit} of byte {offset} of segment {segment} failed: see above")
    });
    std::fs::remove_dir_all(&dir).unwrap();
    outcome
}

#[test]
fn random_bit_flips_give_corruption_or_a_prefix() {
    let original = build();
    let root = common::tempdir();
    let mut rng = XorShift::new(42);
    let last = original.segments.len() - 1;
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..600 {
        let segment = rng.below(original.segments.len() as u64) as usize;
        let s = &original.segments[segment];
        let offset = match rng.below(10) {
            // The segment header.
            0 => rng.below(32) as usize,
            // A frame's length or checksum field.
            1 | 2 => {
                let f = s.frames[rng.below(s.frames.len() as u64) as usize];
                f.start + rng.below(8) as usize
            }
            // The zero padding after the data.
            3 => s.data_end + rng.below((s.bytes.len() - s.data_end) as u64) as usize,
            // Anywhere in the frames.
            _ => 32 + rng.below((s.data_end - 32) as u64) as usize,
        };
        let bit = rng.below(8) as u8;
        let outcome = flip(&original, root.path(), segment, offset, bit);
        if segment != last {
            assert_eq!(
                outcome,
                Outcome::Corruption,
                "a flip in sealed segment {segment} at {offset} was not detected"
            );
        }
        *outcomes.entry((segment == last, outcome)).or_insert(0) += 1;
    }
    // Both outcomes happened in the last segment (the test exercises both paths).
    assert!(
        outcomes
            .keys()
            .any(|(l, o)| *l && *o == Outcome::Corruption)
    );
    assert!(
        outcomes
            .keys()
            .any(|(l, o)| *l && matches!(o, Outcome::Prefix(_)))
    );
}

#[test]
fn a_flip_in_any_frame_of_a_sealed_segment_is_corruption_in_that_file() {
    let original = build();
    let root = common::tempdir();
    let mut rng = XorShift::new(7);
    for (segment, s) in original.segments.iter().enumerate() {
        if segment + 1 == original.segments.len() {
            break;
        }
        for f in &s.frames {
            for _ in 0..3 {
                let offset = f.start + rng.below(f.len as u64) as usize;
                let dir = root.path().join(format!("sealed-{segment}-{offset}"));
                let flipped = write_flipped(&original, &dir, segment, offset, rng.below(8) as u8);
                match Store::open(&dir, config()) {
                    Err(Error::Corruption {
                        file, offset: at, ..
                    }) => {
                        assert_eq!(file, flipped);
                        assert!(
                            at as usize <= f.start,
                            "reported at {at}, after the damaged frame at {}",
                            f.start
                        );
                    }
                    Err(e) => {
                        panic!("segment {segment} byte {offset}: expected Corruption, got {e}")
                    }
                    Ok(_) => {
                        panic!("segment {segment} byte {offset}: a damaged sealed segment opened")
                    }
                }
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
}

#[test]
fn a_flip_before_the_last_commit_of_the_last_segment_is_corruption_not_a_torn_tail() {
    // Those events were acknowledged and later commits prove it: dropping them would lose data.
    let original = build();
    let root = common::tempdir();
    let last = original.segments.len() - 1;
    let s = &original.segments[last];
    let last_commit = s.frames.iter().rposition(|f| f.commit_index == 0).unwrap();
    assert!(
        last_commit >= 2,
        "the last segment needs earlier commits for this test"
    );
    let mut rng = XorShift::new(11);
    for f in &s.frames[..last_commit] {
        for _ in 0..3 {
            let offset = f.start + rng.below(f.len as u64) as usize;
            let outcome = flip(&original, root.path(), last, offset, rng.below(8) as u8);
            assert_eq!(
                outcome,
                Outcome::Corruption,
                "damage at byte {offset} (frame of position {}) was truncated away",
                f.position
            );
        }
    }
}

#[test]
fn a_flip_in_the_last_commit_truncates_it_and_a_flip_in_the_padding_loses_nothing() {
    let original = build();
    let root = common::tempdir();
    let last = original.segments.len() - 1;
    let s = &original.segments[last];
    let last_commit = s.frames.iter().rposition(|f| f.commit_index == 0).unwrap();
    let kept = s.frames[last_commit].position as usize - 1;
    let mut rng = XorShift::new(13);
    for f in &s.frames[last_commit..] {
        for _ in 0..3 {
            let offset = f.start + rng.below(f.len as u64) as usize;
            let outcome = flip(&original, root.path(), last, offset, rng.below(8) as u8);
            // A lost tail commit is what a torn write looks like; reporting it as damage would
            // be acceptable too, but never a different prefix.
            assert!(
                outcome == Outcome::Prefix(kept) || outcome == Outcome::Corruption,
                "flip at {offset}: {outcome:?}"
            );
        }
    }
    for offset in [s.data_end, s.data_end + 1, s.bytes.len() - 1] {
        let outcome = flip(&original, root.path(), last, offset, 0);
        assert_eq!(
            outcome,
            Outcome::Prefix(original.events.len()),
            "flip at {offset}"
        );
    }
}

#[test]
fn a_flip_in_a_segment_header_is_corruption() {
    let original = build();
    let root = common::tempdir();
    for segment in [0, original.segments.len() - 1] {
        for offset in 0..32 {
            let outcome = flip(&original, root.path(), segment, offset, (offset % 8) as u8);
            assert_eq!(
                outcome,
                Outcome::Corruption,
                "segment {segment} header byte {offset}"
            );
        }
    }
}
