//! Model-based property test: random sequences of appends, retries, reads, reopens and simulated
//! crashes (torn writes at the end of the newest segment) run against the store and against a
//! plain in-memory model, which predicts every result exactly: append results, errors with their
//! fields, idempotent retries, every read, and even where the bytes land on disk (segment rolls
//! and the end of the written data of the newest segment).
//!
//! The model's idempotency rules are the engine's (`check_part` in `src/store/writer.rs`): a
//! retry is recognised when the first id is stored in the same stream at the expected place and
//! every id matches consecutive revisions; a partial match is an `IdempotencyConflict`; an id
//! already stored in the stream is a conflict; "stored in the stream" goes through an id index
//! that keeps the newest position of each id. Where that departs from the documented contract,
//! the ignored `BUG:` tests at the end say so.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64); `PROPTEST_RNG_SEED` fixes the seed.
//! With `--nocapture` the property test prints how often each operation and outcome came up.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use statestore::{
    ActualRevision, AppendResult, Config, ContentType, Direction, Error, EventData,
    ExpectedRevision, Filter, FsyncPolicy, Position, RecordedEvent, Revision, Store, StreamAppend,
    StreamFilter,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Configuration of the store under test.

const SEGMENT_BYTES: u64 = 3072;
const APPEND_BYTES_MAX: u64 = 1536;
const READ_COUNT_MAX: u64 = 50;
const READ_SCAN_MAX: u64 = 24;
const SEGMENT_HEADER_BYTES: u64 = 32;
const FRAME_BYTES_MIN: u64 = 80;
const PREALLOC_FILE_NAME: &str = "next.seg.prealloc";

const STREAMS: [&str; 5] = ["acct-1", "acct-2", "order-1", "order-ü2", "order"];
/// A stream that is never written to.
const MISSING_STREAM: &str = "acct-9";
const TYPES: [&str; 5] = ["Deposited", "Withdrawn", "Placed", "Shipped", "Notéd✓"];
const UNKNOWN_TYPE: &str = "Unknown";
const PREFIXES: [&str; 5] = ["acct", "order-", "o", "acct-2", "zzz"];
const CATEGORIES: [&str; 4] = ["acct", "order", "order-1", "nope"];

fn store_config() -> Config {
    Config {
        segment_bytes: SEGMENT_BYTES,
        append_bytes_max: APPEND_BYTES_MAX,
        read_count_max: READ_COUNT_MAX,
        read_scan_max: READ_SCAN_MAX,
        fsync: FsyncPolicy::Never,
        ..Config::default()
    }
}

/// A temporary directory, on tmpfs when there is one (every open and every segment roll syncs).
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("statestore-model-")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("statestore-model-")
        .tempdir()
        .expect("create a temporary directory")
}

// ---------------------------------------------------------------------------------------------
// Abstract operations, resolved against the model when they run (so that "the right expected
// revision" or "the ids of an earlier append" mean something whatever came before).

#[derive(Debug, Clone)]
enum ExpSpec {
    Any,
    NoStream,
    StreamExists,
    /// Exact(current revision), or NoStream when the stream does not exist.
    ExactRight,
    /// Exact(current + delta), clamped at 0.
    ExactOff(i8),
    ExactRaw(u8),
}

#[derive(Debug, Clone)]
struct EvSpec {
    /// Let the store assign the id.
    no_id: bool,
    ty: u8,
    data_len: u8,
    meta_len: u8,
    json: bool,
    seed: u8,
}

#[derive(Debug, Clone)]
struct PartSpec {
    stream: u8,
    expected: ExpSpec,
    events: Vec<EvSpec>,
}

#[derive(Debug, Clone)]
enum RetryMode {
    /// The very same request again.
    Same,
    /// The same events, with another expected revision on the first part.
    NewExpected(ExpSpec),
    /// The first part without its last event.
    Prefix,
    /// The first part without its first event.
    Suffix,
    /// The first part with one more, fresh, event at the end.
    ExtraFresh,
    /// The first part with a fresh event in front.
    FreshFirst,
    /// The first part's events in reverse order.
    Reversed,
    /// The first part sent to another stream (same ids).
    OtherStream(u8),
    /// A multi-stream request without its last part.
    DropLastPart,
    /// A multi-stream request whose last part has fresh ids.
    FreshLastPart,
    /// The first part with its first event twice (the same id twice in one append).
    Doubled,
    /// The first part followed by the first part of another earlier request (ids of two
    /// separate appends in one request).
    Merge(u16),
}

#[derive(Debug, Clone)]
enum RevSpec {
    Start,
    End,
    Raw(u8),
}

#[derive(Debug, Clone)]
enum PosSpec {
    Start,
    End,
    Raw(u16),
}

#[derive(Debug, Clone)]
struct FilterSpec {
    /// (prefix?, index into PREFIXES or CATEGORIES)
    stream: Option<(bool, u8)>,
    types: Vec<u8>,
}

#[derive(Debug, Clone)]
enum CrashSpec {
    /// Nothing but the drop.
    Clean,
    /// Arbitrary bytes after the written data.
    RandomBytes(Vec<u8>),
    /// The first `cut` bytes of a single-event commit's frame.
    TornFrame { stream: u8, ev: EvSpec, cut: u16 },
    /// The first frame of a two-event commit, and `cut` bytes (maybe none) of the second.
    HalfCommit {
        stream: u8,
        evs: (EvSpec, EvSpec),
        cut: Option<u16>,
    },
    /// A whole single-event commit with one byte flipped.
    BadCrc { stream: u8, ev: EvSpec, flip: u16 },
    /// A whole, valid commit that was written but never acknowledged: it must be recovered.
    WholeCommit { stream: u8, evs: Vec<EvSpec> },
    /// A crash right after a roll installed a new (empty) segment.
    EmptyNewSegment,
    /// A leftover pre-allocation file full of junk.
    PreallocJunk(Vec<u8>),
    /// The newest segment cut short right after its data (then zero-extended at open), with
    /// some garbage after the data.
    Truncated(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Op {
    Append(PartSpec),
    AppendMulti(Vec<PartSpec>),
    Retry {
        which: u16,
        mode: RetryMode,
    },
    ReadStream {
        stream: u8,
        from: RevSpec,
        forwards: bool,
        count: u64,
    },
    ReadAll {
        from: PosSpec,
        forwards: bool,
        count: u64,
        filter: Option<FilterSpec>,
    },
    ReadByType {
        ty: u8,
        from: PosSpec,
        forwards: bool,
        count: u64,
    },
    ReadEvent(PosSpec),
    Reopen,
    CrashReopen(CrashSpec),
}

fn exp_spec() -> impl Strategy<Value = ExpSpec> {
    prop_oneof![
        3 => Just(ExpSpec::Any),
        1 => Just(ExpSpec::NoStream),
        1 => Just(ExpSpec::StreamExists),
        8 => Just(ExpSpec::ExactRight),
        1 => (-3i8..=3).prop_map(ExpSpec::ExactOff),
        1 => (0u8..40).prop_map(ExpSpec::ExactRaw),
    ]
}

fn ev_spec() -> impl Strategy<Value = EvSpec> {
    (
        prop::bool::weighted(0.08),
        0u8..TYPES.len() as u8,
        prop_oneof![3 => 0u8..60, 1 => 60u8..=250],
        prop_oneof![3 => Just(0u8), 1 => 1u8..24],
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(no_id, ty, data_len, meta_len, json, seed)| EvSpec {
            no_id,
            ty,
            data_len,
            meta_len,
            json,
            seed,
        })
}

fn part_spec(stream: u8, max_events: usize) -> impl Strategy<Value = PartSpec> {
    (exp_spec(), prop::collection::vec(ev_spec(), 1..=max_events)).prop_map(
        move |(expected, events)| PartSpec {
            stream,
            expected,
            events,
        },
    )
}

fn retry_mode() -> impl Strategy<Value = RetryMode> {
    prop_oneof![
        6 => Just(RetryMode::Same),
        2 => exp_spec().prop_map(RetryMode::NewExpected),
        1 => Just(RetryMode::Prefix),
        1 => Just(RetryMode::Suffix),
        1 => Just(RetryMode::ExtraFresh),
        1 => Just(RetryMode::FreshFirst),
        1 => Just(RetryMode::Reversed),
        1 => (0u8..STREAMS.len() as u8).prop_map(RetryMode::OtherStream),
        1 => Just(RetryMode::DropLastPart),
        1 => Just(RetryMode::FreshLastPart),
        1 => Just(RetryMode::Doubled),
        2 => any::<u16>().prop_map(RetryMode::Merge),
    ]
}

fn rev_spec() -> impl Strategy<Value = RevSpec> {
    prop_oneof![
        2 => Just(RevSpec::Start),
        1 => Just(RevSpec::End),
        3 => any::<u8>().prop_map(RevSpec::Raw),
    ]
}

fn pos_spec() -> impl Strategy<Value = PosSpec> {
    prop_oneof![
        2 => Just(PosSpec::Start),
        1 => Just(PosSpec::End),
        3 => any::<u16>().prop_map(PosSpec::Raw),
    ]
}

fn count_spec() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => 0u64..=12,
        1 => Just(READ_COUNT_MAX),
        1 => Just(READ_COUNT_MAX + 1),
    ]
}

fn filter_spec() -> impl Strategy<Value = FilterSpec> {
    (
        prop::option::of((any::<bool>(), any::<u8>())),
        prop::collection::vec(0u8..=TYPES.len() as u8, 0..=2),
    )
        .prop_map(|(stream, types)| FilterSpec { stream, types })
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..=96)
}

fn crash_spec() -> impl Strategy<Value = CrashSpec> {
    let stream = 0u8..STREAMS.len() as u8;
    prop_oneof![
        1 => Just(CrashSpec::Clean),
        2 => garbage().prop_map(CrashSpec::RandomBytes),
        2 => (stream.clone(), ev_spec(), any::<u16>())
            .prop_map(|(stream, ev, cut)| CrashSpec::TornFrame { stream, ev, cut }),
        2 => (stream.clone(), ev_spec(), ev_spec(), prop::option::of(any::<u16>()))
            .prop_map(|(stream, a, b, cut)| CrashSpec::HalfCommit { stream, evs: (a, b), cut }),
        1 => (stream.clone(), ev_spec(), any::<u16>())
            .prop_map(|(stream, ev, flip)| CrashSpec::BadCrc { stream, ev, flip }),
        1 => (stream, prop::collection::vec(ev_spec(), 1..=2))
            .prop_map(|(stream, evs)| CrashSpec::WholeCommit { stream, evs }),
        1 => Just(CrashSpec::EmptyNewSegment),
        1 => garbage().prop_map(CrashSpec::PreallocJunk),
        1 => prop::collection::vec(any::<u8>(), 0..=40).prop_map(CrashSpec::Truncated),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0u8..STREAMS.len() as u8;
    let multi = proptest::sample::subsequence((0..STREAMS.len() as u8).collect::<Vec<_>>(), 2..=3)
        .prop_shuffle()
        .prop_flat_map(|streams| {
            streams
                .into_iter()
                .map(|s| part_spec(s, 3))
                .collect::<Vec<_>>()
        })
        .prop_map(Op::AppendMulti);
    prop_oneof![
        30 => stream.clone().prop_flat_map(|s| part_spec(s, 4)).prop_map(Op::Append),
        10 => multi,
        15 => (any::<u16>(), retry_mode()).prop_map(|(which, mode)| Op::Retry { which, mode }),
        10 => (0u8..=STREAMS.len() as u8, rev_spec(), any::<bool>(), count_spec()).prop_map(
            |(stream, from, forwards, count)| Op::ReadStream { stream, from, forwards, count }
        ),
        10 => (pos_spec(), any::<bool>(), count_spec(), prop::option::of(filter_spec())).prop_map(
            |(from, forwards, count, filter)| Op::ReadAll { from, forwards, count, filter }
        ),
        5 => (0u8..=TYPES.len() as u8, pos_spec(), any::<bool>(), count_spec()).prop_map(
            |(ty, from, forwards, count)| Op::ReadByType { ty, from, forwards, count }
        ),
        3 => pos_spec().prop_map(Op::ReadEvent),
        3 => Just(Op::Reopen),
        6 => crash_spec().prop_map(Op::CrashReopen),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
struct MEvent {
    position: u64,
    stream: String,
    revision: u64,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    content_type: ContentType,
    /// `None` when the store assigned the id and the test has not read it back yet.
    id: Option<Uuid>,
    /// Unknown until first read (or set when the test wrote the frame itself).
    timestamp_us: Option<u64>,
}

/// The errors the model predicts, with every field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MErr {
    Wrong {
        stream: String,
        expected: ExpectedRevision,
        actual: ActualRevision,
    },
    Conflict {
        stream: String,
        event_id: Uuid,
        revision: Revision,
    },
    NotFound {
        stream: String,
    },
    Limit {
        what: String,
        limit: u64,
        actual: u64,
    },
    Invalid(String),
}

/// Outcome counts, for judging the generator.
static TALLY: std::sync::Mutex<BTreeMap<String, usize>> = std::sync::Mutex::new(BTreeMap::new());

fn tally(what: impl Into<String>) {
    if let Ok(mut t) = TALLY.lock() {
        *t.entry(what.into()).or_default() += 1;
    }
}

fn outcome_name(r: &Result<Vec<AppendResult>, MErr>, stored: bool) -> &'static str {
    match r {
        Ok(_) if stored => "append: stored",
        Ok(_) => "append: recognised retry",
        Err(MErr::Wrong { .. }) => "append: wrong expected revision",
        Err(MErr::Conflict { .. }) => "append: idempotency conflict",
        Err(MErr::Limit { .. }) => "append: limit exceeded",
        Err(MErr::NotFound { .. }) => "append: not found",
        Err(MErr::Invalid(_)) => "append: invalid",
    }
}

fn to_merr(e: Error) -> MErr {
    match e {
        Error::WrongExpectedRevision {
            stream,
            expected,
            actual,
        } => MErr::Wrong {
            stream,
            expected,
            actual,
        },
        Error::IdempotencyConflict {
            stream,
            event_id,
            revision,
        } => MErr::Conflict {
            stream,
            event_id,
            revision,
        },
        Error::StreamNotFound { stream } => MErr::NotFound { stream },
        Error::LimitExceeded {
            what,
            limit,
            actual,
        } => MErr::Limit {
            what: what.to_string(),
            limit,
            actual,
        },
        Error::InvalidArgument(message) => MErr::Invalid(message),
        other => panic!("unexpected error from the store: {other:?} ({other})"),
    }
}

enum Outcome {
    /// Not stored yet.
    Fresh,
    /// Already stored: the first revision and the original result.
    Duplicate(u64, AppendResult),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MSlice {
    positions: Vec<u64>,
    scanned_to: u64,
    end_of_log: bool,
}

struct Model {
    events: Vec<MEvent>,
    /// Stream -> positions by revision.
    streams: BTreeMap<String, Vec<u64>>,
    /// Event type -> positions.
    types: BTreeMap<String, Vec<u64>>,
    /// Event id -> position of the newest event with that id.
    ids: HashMap<Uuid, u64>,
    /// Number of segment files.
    segments: usize,
    /// First position (file name) of the newest segment.
    newest_first: u64,
    /// Where the next frame goes in the newest segment.
    write_offset: u64,
}

fn frame_len(stream: &str, e: &EventData) -> u64 {
    FRAME_BYTES_MIN
        + stream.len() as u64
        + e.event_type.len() as u64
        + e.data.len() as u64
        + e.metadata.len() as u64
}

impl Model {
    fn new() -> Model {
        Model {
            events: Vec::new(),
            streams: BTreeMap::new(),
            types: BTreeMap::new(),
            ids: HashMap::new(),
            segments: 1,
            newest_first: 1,
            write_offset: SEGMENT_HEADER_BYTES,
        }
    }

    fn last(&self) -> u64 {
        self.events.len() as u64
    }

    fn current(&self, stream: &str) -> Option<u64> {
        self.streams.get(stream).map(|p| p.len() as u64 - 1)
    }

    fn resolve_expected(&self, spec: &ExpSpec, stream: &str) -> ExpectedRevision {
        let current = self.current(stream);
        match spec {
            ExpSpec::Any => ExpectedRevision::Any,
            ExpSpec::NoStream => ExpectedRevision::NoStream,
            ExpSpec::StreamExists => ExpectedRevision::StreamExists,
            ExpSpec::ExactRight => current.map_or(ExpectedRevision::NoStream, |c| {
                ExpectedRevision::Exact(Revision(c))
            }),
            ExpSpec::ExactOff(d) => {
                let base = current.map_or(0, |c| c as i64);
                ExpectedRevision::Exact(Revision((base + i64::from(*d)).max(0) as u64))
            }
            ExpSpec::ExactRaw(n) => ExpectedRevision::Exact(Revision(u64::from(*n))),
        }
    }

    /// The revision of the event with this id within `stream`, if it is in it.
    fn revision_of(&self, stream: &str, id: Option<Uuid>) -> Option<u64> {
        // An event without an id gets a fresh random one: never stored before.
        let id = id?;
        let positions = self.streams.get(stream)?;
        positions
            .iter()
            .position(|p| self.events[(*p - 1) as usize].id == Some(id))
            .map(|r| r as u64)
    }

    fn check_part(&self, part: &StreamAppend) -> Result<Outcome, MErr> {
        let stream = part.stream.as_str();
        let current = self.current(stream);
        let at_expected_place = |first_revision: u64| match part.expected {
            ExpectedRevision::Exact(Revision(e)) => e.checked_add(1) == Some(first_revision),
            ExpectedRevision::NoStream => first_revision == 0,
            ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
        };
        let ids: Vec<Option<Uuid>> = part.events.iter().map(|e| e.id).collect();
        // A retry: the first id is stored in this stream at the expected place.
        if let Some(r) = self.revision_of(stream, ids[0])
            && at_expected_place(r)
        {
            let positions = self
                .streams
                .get(stream)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let position = |rev: u64| positions.get(rev as usize).copied();
            // Same ids at consecutive revisions and consecutive positions (one commit).
            let all_match = ids.iter().enumerate().all(|(k, id)| {
                let rev = r + k as u64;
                self.revision_of(stream, *id) == Some(rev)
                    && position(rev) == position(r).map(|p| p + k as u64)
            });
            if !all_match {
                return Err(MErr::Conflict {
                    stream: stream.to_string(),
                    event_id: ids[0].expect("a stored id"),
                    revision: Revision(r),
                });
            }
            let positions = &self.streams[stream];
            let last = r + ids.len() as u64 - 1;
            return Ok(Outcome::Duplicate(
                r,
                AppendResult {
                    first_position: Position(positions[r as usize]),
                    last_position: Position(positions[last as usize]),
                    revision: Revision(last),
                },
            ));
        }
        // A later id stored where it would be if the append had been stored: a partial retry.
        for (k, id) in ids.iter().enumerate().skip(1) {
            if let Some(r) = self.revision_of(stream, *id)
                && r >= k as u64
                && at_expected_place(r - k as u64)
            {
                return Err(MErr::Conflict {
                    stream: stream.to_string(),
                    event_id: id.expect("a stored id"),
                    revision: Revision(r),
                });
            }
        }
        let ok = match part.expected {
            ExpectedRevision::Any => true,
            ExpectedRevision::NoStream => current.is_none(),
            ExpectedRevision::StreamExists => current.is_some(),
            ExpectedRevision::Exact(Revision(e)) => current == Some(e),
        };
        if !ok {
            return Err(MErr::Wrong {
                stream: stream.to_string(),
                expected: part.expected,
                actual: current.map_or(ActualRevision::NoStream, |r| {
                    ActualRevision::Revision(Revision(r))
                }),
            });
        }
        // Not a retry: ids are unique within a stream, so an id already stored in it is a
        // conflict rather than a second copy.
        for id in &ids {
            if let Some(r) = self.revision_of(stream, *id) {
                return Err(MErr::Conflict {
                    stream: stream.to_string(),
                    event_id: id.expect("a stored id"),
                    revision: Revision(r),
                });
            }
        }
        Ok(Outcome::Fresh)
    }

    fn append(&mut self, parts: &[StreamAppend]) -> Result<Vec<AppendResult>, MErr> {
        for part in parts {
            let mut seen = std::collections::HashSet::new();
            for id in part.events.iter().filter_map(|e| e.id) {
                if !seen.insert(id) {
                    return Err(MErr::Invalid(format!(
                        "event id {id} appears twice in the append to stream '{}'",
                        part.stream
                    )));
                }
            }
        }
        let bytes: u64 = parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| frame_len(&p.stream, e)))
            .sum();
        if bytes > APPEND_BYTES_MAX {
            return Err(MErr::Limit {
                what: "append_bytes".into(),
                limit: APPEND_BYTES_MAX,
                actual: bytes,
            });
        }
        let mut duplicates = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if let Outcome::Duplicate(r, result) = self.check_part(part)? {
                duplicates.push((i, r, result));
            }
        }
        if duplicates.len() == parts.len() {
            return Ok(duplicates.into_iter().map(|(_, _, r)| r).collect());
        }
        if let Some(&(i, r, _)) = duplicates.first() {
            // Some parts of a multi-stream append are stored and some not: not a retry.
            return Err(MErr::Conflict {
                stream: parts[i].stream.clone(),
                event_id: parts[i].events[0].id.expect("a stored id"),
                revision: Revision(r),
            });
        }
        self.place_commit(bytes);
        let mut results = Vec::new();
        for part in parts {
            let first_position = self.last() + 1;
            for e in &part.events {
                self.insert(MEvent {
                    position: 0,
                    stream: part.stream.clone(),
                    revision: 0,
                    event_type: e.event_type.clone(),
                    data: e.data.to_vec(),
                    metadata: e.metadata.to_vec(),
                    content_type: e.content_type,
                    id: e.id,
                    timestamp_us: None,
                });
            }
            results.push(AppendResult {
                first_position: Position(first_position),
                last_position: Position(self.last()),
                revision: Revision(self.current(&part.stream).expect("just appended")),
            });
        }
        Ok(results)
    }

    /// A commit of `bytes` goes to the newest segment, or to a new one if it does not fit.
    fn place_commit(&mut self, bytes: u64) {
        if self.write_offset + bytes > SEGMENT_BYTES {
            self.segments += 1;
            self.newest_first = self.last() + 1;
            self.write_offset = SEGMENT_HEADER_BYTES;
        }
        self.write_offset += bytes;
    }

    /// Adds one event at the next position and the next revision of its stream.
    fn insert(&mut self, mut e: MEvent) {
        e.position = self.last() + 1;
        e.revision = self.current(&e.stream).map_or(0, |r| r + 1);
        self.streams
            .entry(e.stream.clone())
            .or_default()
            .push(e.position);
        self.types
            .entry(e.event_type.clone())
            .or_default()
            .push(e.position);
        if let Some(id) = e.id {
            self.ids.insert(id, e.position);
        }
        self.events.push(e);
    }

    fn check_count(count: u64) -> Result<(), MErr> {
        if count > READ_COUNT_MAX {
            return Err(MErr::Limit {
                what: "read_count".into(),
                limit: READ_COUNT_MAX,
                actual: count,
            });
        }
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        count: u64,
    ) -> Result<Vec<u64>, MErr> {
        Model::check_count(count)?;
        let Some(positions) = self.streams.get(stream) else {
            return Err(MErr::NotFound {
                stream: stream.to_string(),
            });
        };
        let n = positions.len() as u64;
        let revisions: Vec<u64> = match direction {
            Direction::Forwards => (from.min(n)..n).take(count as usize).collect(),
            Direction::Backwards => (0..=from.min(n - 1)).rev().take(count as usize).collect(),
        };
        Ok(revisions
            .into_iter()
            .map(|r| positions[r as usize])
            .collect())
    }

    fn matches(&self, filter: &Filter, position: u64) -> bool {
        let e = &self.events[(position - 1) as usize];
        let stream_ok = match &filter.stream {
            None => true,
            Some(StreamFilter::Prefix(p)) => e.stream.starts_with(p.as_str()),
            Some(StreamFilter::Category(c)) => {
                let category = e.stream.split('-').next().unwrap_or_default();
                category == c
            }
        };
        stream_ok && (filter.event_types.is_empty() || filter.event_types.contains(&e.event_type))
    }

    fn read_all(
        &self,
        from: u64,
        direction: Direction,
        count: u64,
        filter: &Filter,
    ) -> Result<MSlice, MErr> {
        Model::check_count(count)?;
        let last = self.last();
        let scan_max = READ_SCAN_MAX.max(count);
        let mut positions = Vec::new();
        let mut scanned = 0;
        match direction {
            Direction::Forwards => {
                let start = from.max(1);
                if start > last || count == 0 {
                    return Ok(MSlice {
                        positions,
                        scanned_to: (start - 1).min(last),
                        end_of_log: start > last,
                    });
                }
                let mut p = start;
                while p <= last && (positions.len() as u64) < count && scanned < scan_max {
                    if self.matches(filter, p) {
                        positions.push(p);
                    }
                    p += 1;
                    scanned += 1;
                }
                Ok(MSlice {
                    positions,
                    scanned_to: p - 1,
                    end_of_log: p > last,
                })
            }
            Direction::Backwards => {
                let mut p = from.min(last);
                while p >= 1 && (positions.len() as u64) < count && scanned < scan_max {
                    if self.matches(filter, p) {
                        positions.push(p);
                    }
                    p -= 1;
                    scanned += 1;
                }
                Ok(MSlice {
                    positions,
                    scanned_to: p + 1,
                    end_of_log: p == 0,
                })
            }
        }
    }

    fn read_by_type(
        &self,
        ty: &str,
        from: u64,
        direction: Direction,
        count: u64,
    ) -> Result<Vec<u64>, MErr> {
        Model::check_count(count)?;
        let positions = self.types.get(ty).cloned().unwrap_or_default();
        Ok(match direction {
            Direction::Forwards => positions
                .into_iter()
                .filter(|&p| p >= from)
                .take(count as usize)
                .collect(),
            Direction::Backwards => positions
                .into_iter()
                .rev()
                .filter(|&p| p <= from)
                .take(count as usize)
                .collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Frames and segment headers, encoded by hand from docs/FORMAT.md, for the simulated crashes.

struct RawEvent<'a> {
    position: u64,
    revision: u64,
    durable_through: u64,
    timestamp_us: u64,
    id: Uuid,
    commit_index: u32,
    commit_count: u32,
    stream: &'a str,
    event: &'a EventData,
}

fn encode_frame(r: &RawEvent<'_>) -> Vec<u8> {
    let e = r.event;
    let mut payload = Vec::new();
    payload.extend_from_slice(&r.position.to_le_bytes());
    payload.extend_from_slice(&r.revision.to_le_bytes());
    payload.extend_from_slice(&r.durable_through.to_le_bytes());
    payload.extend_from_slice(&r.timestamp_us.to_le_bytes());
    payload.extend_from_slice(r.id.as_bytes());
    payload.extend_from_slice(&r.commit_index.to_le_bytes());
    payload.extend_from_slice(&r.commit_count.to_le_bytes());
    payload.push(match e.content_type {
        ContentType::Binary => 0,
        ContentType::Json => 1,
    });
    payload.push(0);
    payload.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
    payload.extend_from_slice(&(e.event_type.len() as u16).to_le_bytes());
    payload.extend_from_slice(&[0, 0]);
    payload.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
    payload.extend_from_slice(&(e.metadata.len() as u32).to_le_bytes());
    payload.extend_from_slice(r.stream.as_bytes());
    payload.extend_from_slice(e.event_type.as_bytes());
    payload.extend_from_slice(&e.data);
    payload.extend_from_slice(&e.metadata);
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&payload);
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&len);
    frame.extend_from_slice(&crc.finalize().to_le_bytes());
    frame.extend_from_slice(&payload);
    assert_eq!(frame.len() as u64, frame_len(r.stream, e));
    frame
}

fn encode_segment_header(first_position: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(b"STSTSEG\0");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&32u32.to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32fast::hash(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Walks the frames of a segment by their length prefixes; returns the end of the written data.
fn data_end(bytes: &[u8]) -> u64 {
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        at += 8 + len;
    }
    at as u64
}

/// Length of `bytes` without its trailing zeros. A frame cut anywhere before that is torn; cut
/// after it, the zero-filled segment completes it.
fn non_zero_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

fn segment_path(dir: &Path, first_position: u64) -> PathBuf {
    dir.join(format!("{first_position:020}.seg"))
}

// ---------------------------------------------------------------------------------------------
// The runner: applies operations to the store and the model, compares.

struct Runner {
    dir: tempfile::TempDir,
    store: Option<Store>,
    model: Model,
    /// Every append request sent, for retries.
    history: Vec<Vec<StreamAppend>>,
    next_id: u64,
    started_us: u64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn direction(forwards: bool) -> Direction {
    if forwards {
        Direction::Forwards
    } else {
        Direction::Backwards
    }
}

impl Runner {
    fn new() -> Runner {
        let dir = tempdir();
        let store = Store::open(dir.path(), store_config()).expect("open a new store");
        Runner {
            dir,
            store: Some(store),
            model: Model::new(),
            history: Vec::new(),
            next_id: 0,
            started_us: now_us(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    fn fresh_id(&mut self) -> Uuid {
        self.next_id += 1;
        // Unique within a case (each case has its own directory); v4-shaped.
        uuid::Builder::from_random_bytes(
            ((u128::from(self.next_id) << 64) | 0x5eed_5eed_u128).to_be_bytes(),
        )
        .into_uuid()
    }

    fn event(&mut self, spec: &EvSpec) -> EventData {
        let data: Vec<u8> = (0..spec.data_len)
            .map(|i| {
                if (i.wrapping_add(spec.seed)) % 5 == 0 {
                    0
                } else {
                    spec.seed ^ i
                }
            })
            .collect();
        let metadata: Vec<u8> = (0..spec.meta_len).map(|i| b'a' + (i % 26)).collect();
        let ty = TYPES[spec.ty as usize % TYPES.len()];
        let e = if spec.json {
            EventData::json(ty, data)
        } else {
            EventData::binary(ty, data)
        };
        let e = e.with_metadata(metadata);
        if spec.no_id {
            e
        } else {
            e.with_id(self.fresh_id())
        }
    }

    fn part(&mut self, spec: &PartSpec) -> StreamAppend {
        let stream = STREAMS[spec.stream as usize % STREAMS.len()];
        let expected = self.model.resolve_expected(&spec.expected, stream);
        let events = spec.events.iter().map(|e| self.event(e)).collect();
        StreamAppend::new(stream, expected, events)
    }

    fn refresh_id(&mut self, mut e: EventData) -> EventData {
        e.id = Some(self.fresh_id());
        e
    }

    fn retry_request(&mut self, which: u16, mode: &RetryMode) -> Option<Vec<StreamAppend>> {
        if self.history.is_empty() {
            return None;
        }
        let mut parts = self.history[which as usize % self.history.len()].clone();
        let p0 = &mut parts[0];
        match mode {
            RetryMode::Same => {}
            RetryMode::NewExpected(spec) => {
                p0.expected = self.model.resolve_expected(spec, &p0.stream);
            }
            RetryMode::Prefix => {
                if p0.events.len() > 1 {
                    p0.events.pop();
                }
            }
            RetryMode::Suffix => {
                if p0.events.len() > 1 {
                    p0.events.remove(0);
                }
            }
            RetryMode::ExtraFresh => {
                let extra = p0.events.last().cloned().expect("parts have events");
                let extra = self.refresh_id(extra);
                parts[0].events.push(extra);
            }
            RetryMode::FreshFirst => {
                let extra = p0.events[0].clone();
                let extra = self.refresh_id(extra);
                parts[0].events.insert(0, extra);
            }
            RetryMode::Reversed => p0.events.reverse(),
            RetryMode::Merge(other) => {
                let other = &self.history[*other as usize % self.history.len()][0];
                p0.events.extend(other.events.iter().cloned());
            }
            RetryMode::Doubled => {
                let first = p0.events[0].clone();
                p0.events.insert(1, first);
            }
            RetryMode::OtherStream(s) => {
                let stream = STREAMS[*s as usize % STREAMS.len()];
                if parts.iter().all(|p| p.stream != stream) {
                    parts[0].stream = stream.to_string();
                }
            }
            RetryMode::DropLastPart => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            RetryMode::FreshLastPart => {
                if parts.len() > 1 {
                    let last = parts.pop().expect("more than one part");
                    let events = last
                        .events
                        .into_iter()
                        .map(|e| self.refresh_id(e))
                        .collect();
                    parts.push(StreamAppend::new(last.stream, last.expected, events));
                }
            }
        }
        Some(parts)
    }

    fn do_append(&mut self, parts: Vec<StreamAppend>) {
        let before = self.model.last();
        let expected = self.model.append(&parts);
        tally(outcome_name(&expected, self.model.last() > before));
        let actual = if parts.len() == 1 {
            let p = parts[0].clone();
            self.store()
                .append(p.stream, p.expected, p.events)
                .map(|r| vec![r])
        } else {
            self.store().append_multi(parts.clone())
        }
        .map_err(to_merr);
        assert_eq!(actual, expected, "append {parts:#?}");
        self.history.push(parts);
        // Learn the ids the store assigned.
        for p in before + 1..=self.model.last() {
            if self.model.events[(p - 1) as usize].id.is_none() {
                self.read_event(p);
            }
        }
    }

    /// Compares a recorded event with the model's event at the same position.
    fn check_event(&mut self, got: &RecordedEvent, position: u64, what: &str) {
        assert_eq!(got.position, Position(position), "{what}: position");
        let m = &mut self.model.events[(position - 1) as usize];
        assert_eq!(got.stream(), m.stream, "{what}: stream at {position}");
        assert_eq!(
            got.revision,
            Revision(m.revision),
            "{what}: revision at {position}"
        );
        match m.id {
            Some(id) => assert_eq!(got.id, id, "{what}: id at {position}"),
            None => {
                // Assigned by the store: a fresh v4 id.
                assert_eq!(
                    got.id.get_version_num(),
                    4,
                    "{what}: assigned id {}",
                    got.id
                );
                assert!(
                    !self.model.ids.contains_key(&got.id),
                    "{what}: assigned id {} is not fresh",
                    got.id
                );
                m.id = Some(got.id);
                self.model.ids.insert(got.id, position);
            }
        }
        assert_eq!(got.event_type(), m.event_type, "{what}: type at {position}");
        assert_eq!(got.data(), &m.data[..], "{what}: data at {position}");
        assert_eq!(
            got.metadata(),
            &m.metadata[..],
            "{what}: metadata at {position}"
        );
        assert_eq!(
            got.data_bytes(),
            &m.data[..],
            "{what}: data_bytes at {position}"
        );
        assert_eq!(
            got.content_type, m.content_type,
            "{what}: content type at {position}"
        );
        match m.timestamp_us {
            Some(ts) => assert_eq!(got.timestamp_us, ts, "{what}: timestamp at {position}"),
            None => {
                assert!(
                    got.timestamp_us + 5_000_000 >= self.started_us
                        && got.timestamp_us <= now_us() + 5_000_000,
                    "{what}: implausible timestamp {} at {position}",
                    got.timestamp_us
                );
                m.timestamp_us = Some(got.timestamp_us);
            }
        }
    }

    fn check_events(&mut self, got: &[RecordedEvent], expected: &[u64], what: &str) {
        let got_positions: Vec<u64> = got.iter().map(|e| e.position.0).collect();
        assert_eq!(got_positions, expected, "{what}: positions");
        for (e, &p) in got.iter().zip(expected) {
            self.check_event(e, p, what);
        }
    }

    fn rev_from(&self, spec: &RevSpec, stream: &str) -> u64 {
        let n = self.model.streams.get(stream).map_or(0, |p| p.len() as u64);
        match spec {
            RevSpec::Start => 0,
            RevSpec::End => u64::MAX,
            RevSpec::Raw(r) => u64::from(*r) % (n + 3),
        }
    }

    fn pos_from(&self, spec: &PosSpec) -> u64 {
        match spec {
            PosSpec::Start => 0,
            PosSpec::End => u64::MAX,
            PosSpec::Raw(p) => u64::from(*p) % (self.model.last() + 3),
        }
    }

    fn read_stream(&mut self, stream: &str, from: u64, dir: Direction, count: u64) {
        let what = format!("read_stream({stream}, {from}, {dir:?}, {count})");
        let expected = self.model.read_stream(stream, from, dir, count);
        match (
            self.store().read_stream(stream, Revision(from), dir, count),
            expected,
        ) {
            (Ok(got), Ok(expected)) => self.check_events(&got, &expected, &what),
            (got, expected) => assert_eq!(
                got.map(|v| v.len()).map_err(to_merr),
                expected.map(|v| v.len()),
                "{what}"
            ),
        }
    }

    fn read_all(&mut self, from: u64, dir: Direction, count: u64, filter: &Filter) -> bool {
        let what = format!("read_all({from}, {dir:?}, {count}, {filter:?})");
        let expected = self.model.read_all(from, dir, count, filter);
        match (
            self.store().read_all(Position(from), dir, count, filter),
            expected,
        ) {
            (Ok(got), Ok(expected)) => {
                self.check_events(&got.events, &expected.positions, &what);
                assert_eq!(
                    got.scanned_to,
                    Position(expected.scanned_to),
                    "{what}: scanned_to"
                );
                assert_eq!(got.end_of_log, expected.end_of_log, "{what}: end_of_log");
                got.end_of_log
            }
            (got, expected) => {
                assert_eq!(
                    got.map(|s| s.events.len()).map_err(to_merr),
                    expected.map(|s| s.positions.len()),
                    "{what}"
                );
                true
            }
        }
    }

    fn read_by_type(&mut self, ty: &str, from: u64, dir: Direction, count: u64) {
        let what = format!("read_by_type({ty}, {from}, {dir:?}, {count})");
        let expected = self.model.read_by_type(ty, from, dir, count);
        match (
            self.store().read_by_type(ty, Position(from), dir, count),
            expected,
        ) {
            (Ok(got), Ok(expected)) => self.check_events(&got, &expected, &what),
            (got, expected) => assert_eq!(
                got.map(|v| v.len()).map_err(to_merr),
                expected.map(|v| v.len()),
                "{what}"
            ),
        }
    }

    fn read_event(&mut self, position: u64) {
        let got = self
            .store()
            .read_event(Position(position))
            .expect("read_event");
        if position == 0 || position > self.model.last() {
            assert!(
                got.is_none(),
                "read_event({position}) past the end: {got:?}"
            );
        } else {
            let got = got.unwrap_or_else(|| panic!("read_event({position}) found nothing"));
            self.check_event(&got, position, "read_event");
        }
    }

    /// Cheap checks after every operation.
    fn check_summary(&self) {
        let store = self.store();
        let m = &self.model;
        assert_eq!(store.last_position(), Position(m.last()), "last_position");
        let stats = store.stats();
        assert_eq!(
            stats.last_position,
            Position(m.last()),
            "stats.last_position"
        );
        assert_eq!(stats.streams, m.streams.len(), "stats.streams");
        assert_eq!(stats.event_types, m.types.len(), "stats.event_types");
        assert_eq!(stats.segments, m.segments, "stats.segments");
        for s in STREAMS.iter().chain([&MISSING_STREAM]) {
            assert_eq!(
                store.stream_revision(s).unwrap(),
                m.current(s).map(Revision),
                "stream_revision({s})"
            );
        }
    }

    /// Reads everything back, every way.
    fn check_everything(&mut self) {
        let mut from = 0;
        loop {
            let page = self
                .store()
                .read_all(
                    Position(from),
                    Direction::Forwards,
                    READ_COUNT_MAX,
                    &Filter::default(),
                )
                .expect("read_all");
            let expected = self
                .model
                .read_all(
                    from,
                    Direction::Forwards,
                    READ_COUNT_MAX,
                    &Filter::default(),
                )
                .expect("model read_all");
            self.check_events(&page.events, &expected.positions, "full read_all");
            assert_eq!(page.scanned_to, Position(expected.scanned_to));
            if page.end_of_log {
                assert_eq!(page.scanned_to, Position(self.model.last()));
                break;
            }
            from = page.scanned_to.0 + 1;
        }
        let mut from = u64::MAX;
        loop {
            let end = self.read_all(
                from,
                Direction::Backwards,
                READ_COUNT_MAX,
                &Filter::default(),
            );
            if end {
                break;
            }
            from = self
                .model
                .read_all(
                    from,
                    Direction::Backwards,
                    READ_COUNT_MAX,
                    &Filter::default(),
                )
                .expect("model read_all")
                .scanned_to
                - 1;
        }
        for s in STREAMS.iter().chain([&MISSING_STREAM]) {
            let n = self.model.streams.get(*s).map_or(0, |p| p.len() as u64);
            let mut from = 0;
            while from < n.max(1) {
                self.read_stream(s, from, Direction::Forwards, READ_COUNT_MAX);
                from += READ_COUNT_MAX;
            }
        }
        for t in TYPES.iter().chain([&UNKNOWN_TYPE]) {
            self.read_by_type(t, 0, Direction::Forwards, READ_COUNT_MAX);
            self.read_by_type(t, u64::MAX, Direction::Backwards, READ_COUNT_MAX);
        }
        self.check_summary();
    }

    fn newest_segment(&self) -> PathBuf {
        segment_path(self.dir.path(), self.model.newest_first)
    }

    /// With the store closed: the segment files are where the model says, and the newest one
    /// holds frames exactly up to the model's write offset, then zeros.
    fn check_files(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read the directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        names.sort();
        assert_eq!(names.len(), self.model.segments, "segment files: {names:?}");
        let newest = self.newest_segment();
        assert_eq!(
            names.last().map(String::as_str),
            newest.file_name().and_then(|n| n.to_str()),
            "newest segment"
        );
        let bytes = std::fs::read(&newest).expect("read the newest segment");
        assert_eq!(
            bytes.len() as u64,
            SEGMENT_BYTES,
            "size of {}",
            newest.display()
        );
        assert_eq!(
            data_end(&bytes),
            self.model.write_offset,
            "end of the written data"
        );
        assert!(
            bytes[self.model.write_offset as usize..]
                .iter()
                .all(|&b| b == 0),
            "non-zero bytes after the written data of {}",
            newest.display()
        );
    }

    fn open(&mut self) {
        assert!(self.store.is_none());
        self.store = Some(Store::open(self.dir.path(), store_config()).expect("reopen"));
    }

    fn reopen(&mut self) {
        self.store.take().expect("open").close().expect("close");
        self.check_files();
        self.open();
        self.check_everything();
    }

    fn write_at_end(&self, bytes: &[u8]) {
        let room = (SEGMENT_BYTES - self.model.write_offset) as usize;
        let bytes = &bytes[..bytes.len().min(room)];
        let file = OpenOptions::new()
            .write(true)
            .open(self.newest_segment())
            .expect("open the newest segment");
        file.write_all_at(bytes, self.model.write_offset)
            .expect("write garbage");
    }

    /// A commit of `specs` to `stream` that would come next, encoded.
    fn next_commit(&mut self, stream: u8, specs: &[&EvSpec]) -> (Vec<MEvent>, Vec<Vec<u8>>) {
        let stream = STREAMS[stream as usize % STREAMS.len()];
        let next_position = self.model.last() + 1;
        let next_revision = self.model.current(stream).map_or(0, |r| r + 1);
        let timestamp_us = now_us();
        let mut events = Vec::new();
        let mut frames = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            let e = self.event(spec);
            let id = e.id.unwrap_or_else(|| self.fresh_id());
            frames.push(encode_frame(&RawEvent {
                position: next_position + k as u64,
                revision: next_revision + k as u64,
                durable_through: next_position - 1,
                timestamp_us,
                id,
                commit_index: k as u32,
                commit_count: specs.len() as u32,
                stream,
                event: &e,
            }));
            events.push(MEvent {
                position: next_position + k as u64,
                stream: stream.to_string(),
                revision: next_revision + k as u64,
                event_type: e.event_type.clone(),
                data: e.data.to_vec(),
                metadata: e.metadata.to_vec(),
                content_type: e.content_type,
                id: Some(id),
                timestamp_us: Some(timestamp_us),
            });
        }
        (events, frames)
    }

    fn crash_reopen(&mut self, spec: &CrashSpec) {
        // Drop, not close: what a crash leaves (drop still writes out everything acknowledged).
        drop(self.store.take());
        self.check_files();
        match spec {
            CrashSpec::Clean => {}
            CrashSpec::RandomBytes(junk) => self.write_at_end(junk),
            CrashSpec::TornFrame { stream, ev, cut } => {
                let (_, frames) = self.next_commit(*stream, &[ev]);
                let f = &frames[0];
                let cut = 1 + *cut as usize % (non_zero_len(f) - 1);
                self.write_at_end(&f[..cut]);
            }
            CrashSpec::HalfCommit { stream, evs, cut } => {
                let (_, frames) = self.next_commit(*stream, &[&evs.0, &evs.1]);
                let mut bytes = frames[0].clone();
                if let Some(cut) = cut {
                    let cut = *cut as usize % non_zero_len(&frames[1]);
                    bytes.extend_from_slice(&frames[1][..cut]);
                }
                self.write_at_end(&bytes);
            }
            CrashSpec::BadCrc { stream, ev, flip } => {
                let (_, frames) = self.next_commit(*stream, &[ev]);
                let mut f = frames[0].clone();
                let at = *flip as usize % f.len();
                f[at] ^= 0xff;
                self.write_at_end(&f);
            }
            CrashSpec::WholeCommit { stream, evs } => {
                let specs: Vec<&EvSpec> = evs.iter().collect();
                let (events, frames) = self.next_commit(*stream, &specs);
                let bytes = frames.concat();
                if self.model.write_offset + bytes.len() as u64 <= SEGMENT_BYTES {
                    self.write_at_end(&bytes);
                    self.model.write_offset += bytes.len() as u64;
                    for e in events {
                        self.model.insert(e);
                    }
                }
            }
            CrashSpec::EmptyNewSegment => {
                let next = self.model.last() + 1;
                if next != self.model.newest_first {
                    let mut bytes = vec![0u8; SEGMENT_BYTES as usize];
                    bytes[..32].copy_from_slice(&encode_segment_header(next));
                    std::fs::write(segment_path(self.dir.path(), next), bytes)
                        .expect("write an empty segment");
                    self.model.segments += 1;
                    self.model.newest_first = next;
                    self.model.write_offset = SEGMENT_HEADER_BYTES;
                }
            }
            CrashSpec::PreallocJunk(junk) => {
                std::fs::write(self.dir.path().join(PREALLOC_FILE_NAME), junk)
                    .expect("write a pre-allocation file");
            }
            CrashSpec::Truncated(junk) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(self.newest_segment())
                    .expect("open the newest segment");
                file.set_len(self.model.write_offset).expect("truncate");
                let room = (SEGMENT_BYTES - self.model.write_offset) as usize;
                file.write_all_at(&junk[..junk.len().min(room)], self.model.write_offset)
                    .expect("write garbage");
            }
        }
        self.open();
        self.check_everything();
        // The torn tail is zeroed on disk and appends continue right after the data.
        let bytes = std::fs::read(self.newest_segment()).expect("read the newest segment");
        assert_eq!(
            bytes.len() as u64,
            SEGMENT_BYTES,
            "newest segment zero-extended"
        );
        assert_eq!(
            data_end(&bytes),
            self.model.write_offset,
            "end of data after recovery"
        );
        assert!(
            bytes[self.model.write_offset as usize..]
                .iter()
                .all(|&b| b == 0),
            "torn tail not zeroed after {spec:?}"
        );
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(spec) => {
                let part = self.part(spec);
                self.do_append(vec![part]);
            }
            Op::AppendMulti(specs) => {
                let parts = specs.iter().map(|s| self.part(s)).collect();
                self.do_append(parts);
            }
            Op::Retry { which, mode } => {
                if let Some(parts) = self.retry_request(*which, mode) {
                    self.do_append(parts);
                }
            }
            Op::ReadStream {
                stream,
                from,
                forwards,
                count,
            } => {
                let stream = STREAMS
                    .get(*stream as usize)
                    .copied()
                    .unwrap_or(MISSING_STREAM);
                let from = self.rev_from(from, stream);
                self.read_stream(stream, from, direction(*forwards), *count);
            }
            Op::ReadAll {
                from,
                forwards,
                count,
                filter,
            } => {
                let filter = filter.as_ref().map_or_else(Filter::default, |f| Filter {
                    stream: f.stream.map(|(prefix, i)| {
                        if prefix {
                            StreamFilter::Prefix(PREFIXES[i as usize % PREFIXES.len()].into())
                        } else {
                            StreamFilter::Category(CATEGORIES[i as usize % CATEGORIES.len()].into())
                        }
                    }),
                    event_types: f
                        .types
                        .iter()
                        .map(|&t| {
                            TYPES
                                .get(t as usize)
                                .copied()
                                .unwrap_or(UNKNOWN_TYPE)
                                .into()
                        })
                        .collect(),
                });
                let from = self.pos_from(from);
                self.read_all(from, direction(*forwards), *count, &filter);
            }
            Op::ReadByType {
                ty,
                from,
                forwards,
                count,
            } => {
                let ty = TYPES.get(*ty as usize).copied().unwrap_or(UNKNOWN_TYPE);
                let from = self.pos_from(from);
                self.read_by_type(ty, from, direction(*forwards), *count);
            }
            Op::ReadEvent(spec) => {
                let position = self.pos_from(spec);
                self.read_event(position);
            }
            Op::Reopen => self.reopen(),
            Op::CrashReopen(spec) => self.crash_reopen(spec),
        }
        self.check_summary();
    }
}

fn op_name(op: &Op) -> String {
    match op {
        Op::Retry { mode, .. } => format!("op: retry {mode:?}").chars().take(30).collect(),
        Op::CrashReopen(c) => format!("op: crash {c:?}").chars().take(24).collect(),
        other => format!("op: {other:?}")
            .split([' ', '('])
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn run(ops: &[Op]) {
    let mut runner = Runner::new();
    runner.check_summary();
    for op in ops {
        tally(op_name(op));
        runner.apply(op);
    }
    tally(format!(
        "segments at the end: {}",
        runner.model.segments.min(6)
    ));
    runner.check_everything();
    runner.reopen();
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn store_matches_model() {
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config());
    let result = runner.run(&prop::collection::vec(op(), 1..=60), |ops| {
        run(&ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Shown with --nocapture: how often each outcome came up.
    let tally = TALLY.lock().expect("tally");
    eprintln!("outcomes over all cases: {tally:#?}");
}

// ---------------------------------------------------------------------------------------------
// A fixed scenario through the same runner, so every kind of operation runs at least once
// whatever the random cases do.

fn ev(ty: u8, data_len: u8) -> EvSpec {
    EvSpec {
        no_id: false,
        ty,
        data_len,
        meta_len: 3,
        json: true,
        seed: data_len,
    }
}

fn part(stream: u8, expected: ExpSpec, n: u8) -> PartSpec {
    PartSpec {
        stream,
        expected,
        events: (0..n).map(|i| ev(i, 10 + i)).collect(),
    }
}

#[test]
fn fixed_scenario_covers_every_operation() {
    use CrashSpec as C;
    use ExpSpec as E;
    use RetryMode as R;
    let mut ops = vec![
        Op::Append(part(0, E::NoStream, 2)),
        Op::Retry {
            which: 0,
            mode: R::Same,
        },
        Op::Append(part(0, E::ExactRight, 3)),
        Op::Append(part(0, E::ExactOff(-1), 1)),
        Op::Append(part(1, E::StreamExists, 1)),
        Op::AppendMulti(vec![part(1, E::NoStream, 2), part(2, E::Any, 2)]),
        Op::Retry {
            which: 1,
            mode: R::Prefix,
        },
        Op::Retry {
            which: 1,
            mode: R::ExtraFresh,
        },
        Op::Retry {
            which: 1,
            mode: R::FreshFirst,
        },
        Op::Retry {
            which: 1,
            mode: R::Reversed,
        },
        Op::Retry {
            which: 1,
            mode: R::Suffix,
        },
        Op::Retry {
            which: 5,
            mode: R::Same,
        },
        Op::Retry {
            which: 5,
            mode: R::DropLastPart,
        },
        Op::Retry {
            which: 5,
            mode: R::FreshLastPart,
        },
        Op::Retry {
            which: 0,
            mode: R::OtherStream(3),
        },
        Op::Retry {
            which: 0,
            mode: R::NewExpected(E::Any),
        },
        Op::Reopen,
        Op::CrashReopen(C::TornFrame {
            stream: 4,
            ev: ev(1, 30),
            cut: 50,
        }),
        Op::CrashReopen(C::HalfCommit {
            stream: 4,
            evs: (ev(1, 30), ev(2, 0)),
            cut: Some(7),
        }),
        Op::CrashReopen(C::BadCrc {
            stream: 4,
            ev: ev(1, 30),
            flip: 100,
        }),
        Op::CrashReopen(C::RandomBytes(vec![0xde, 0xad, 0xbe, 0xef])),
        Op::CrashReopen(C::WholeCommit {
            stream: 3,
            evs: vec![ev(0, 1), ev(4, 2)],
        }),
        Op::CrashReopen(C::PreallocJunk(vec![1, 2, 3])),
        Op::CrashReopen(C::Truncated(vec![9; 20])),
    ];
    for i in 0..40u8 {
        ops.push(Op::Append(part(i % 5, E::Any, 1 + i % 4)));
    }
    ops.extend([
        Op::CrashReopen(C::EmptyNewSegment),
        Op::Append(part(2, E::Any, 1)),
        Op::ReadStream {
            stream: 0,
            from: RevSpec::End,
            forwards: false,
            count: 5,
        },
        Op::ReadAll {
            from: PosSpec::Raw(10),
            forwards: true,
            count: 5,
            filter: Some(FilterSpec {
                stream: Some((false, 1)),
                types: vec![1, 2],
            }),
        },
        Op::ReadAll {
            from: PosSpec::End,
            forwards: false,
            count: 51,
            filter: None,
        },
        Op::ReadByType {
            ty: 2,
            from: PosSpec::Raw(7),
            forwards: false,
            count: 3,
        },
        Op::ReadEvent(PosSpec::Raw(3)),
        Op::CrashReopen(C::Clean),
    ]);
    let mut runner = Runner::new();
    for op in &ops {
        runner.apply(op);
    }
    assert!(runner.model.segments >= 3, "segments rolled");
    runner.check_everything();
    runner.reopen();
}

// ---------------------------------------------------------------------------------------------
// Engine bugs found with the model (which follows the engine's rules, so these are written as
// plain tests of the documented contract). Ignored until fixed.
//
// Root cause of the first three: the id index keeps only the newest position of an id
// (`Index::ids`), and `check_part` asks "is the id in this stream?" through it. An id that is
// also stored in another stream, later, is invisible in the first stream; and the ids of one
// append are not checked against each other.

fn event_with(id: Uuid) -> EventData {
    EventData::json("Transfer", "{}").with_id(id)
}

/// The ids of `stream`, in revision order.
fn stream_ids(store: &Store, stream: &str) -> Vec<Uuid> {
    store
        .read_stream(stream, Revision(0), Direction::Forwards, READ_COUNT_MAX)
        .expect("read_stream")
        .iter()
        .map(|e| e.id)
        .collect()
}

/// `check_part`: "Event ids are unique within a stream: an id already stored in it ... is a
/// conflict, not a second copy." And README: "Retrying an append with the same event ids
/// returns the original result and writes nothing."
#[test]
fn an_id_also_stored_in_another_stream_stays_unique_in_its_stream() {
    let dir = tempdir();
    let store = Store::open(dir.path(), store_config()).expect("open");
    let id = Uuid::new_v4();
    let first = store
        .append("acct-1", ExpectedRevision::NoStream, vec![event_with(id)])
        .expect("append to acct-1");
    store
        .append("acct-2", ExpectedRevision::NoStream, vec![event_with(id)])
        .expect("the same id in another stream");
    let again = store.append(
        "acct-1",
        ExpectedRevision::Exact(Revision(0)),
        vec![event_with(id)],
    );
    let ids = stream_ids(&store, "acct-1");
    assert_eq!(
        ids,
        vec![id],
        "the id must not be stored twice in acct-1 (second append answered {again:?})"
    );
    let retry = store.append("acct-1", ExpectedRevision::NoStream, vec![event_with(id)]);
    assert_eq!(
        retry.as_ref().ok(),
        Some(&first),
        "the retry must return the original result"
    );
}

/// Same cause: a multi-stream append whose parts share an event id (one event recorded in two
/// streams) succeeds, and its exact retry is refused.
#[test]
fn retry_of_multi_stream_append_with_a_shared_id_is_idempotent() {
    let dir = tempdir();
    let store = Store::open(dir.path(), store_config()).expect("open");
    let mut failures = Vec::new();
    for (expected, a, b) in [
        (ExpectedRevision::NoStream, "acct-1", "acct-2"),
        (ExpectedRevision::Any, "order-1", "order-2"),
    ] {
        let id = Uuid::new_v4();
        let request = vec![
            StreamAppend::new(a, expected, vec![event_with(id)]),
            StreamAppend::new(b, expected, vec![event_with(id)]),
        ];
        let first = store
            .append_multi(request.clone())
            .expect("the first append");
        let retry = store.append_multi(request);
        if retry.as_ref().ok() != Some(&first) {
            failures.push(format!("expected {expected}: {first:?} then {retry:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the retries must return the original results: {failures:#?}"
    );
}

/// One append carrying the same id twice is accepted: the id is then twice in the stream, and
/// the exact retry of that append fails with `IdempotencyConflict`. It should be refused, or be
/// idempotent.
#[test]
fn an_append_carrying_one_id_twice_is_refused_or_idempotent() {
    let dir = tempdir();
    let store = Store::open(dir.path(), store_config()).expect("open");
    let id = Uuid::new_v4();
    let events = vec![event_with(id), event_with(id)];
    let first = store.append("acct-1", ExpectedRevision::NoStream, events.clone());
    let retry = store.append("acct-1", ExpectedRevision::NoStream, events);
    match first {
        Ok(first) => {
            let ids = stream_ids(&store, "acct-1");
            let unique: std::collections::HashSet<_> = ids.iter().collect();
            assert_eq!(
                unique.len(),
                ids.len(),
                "ids stored twice in acct-1: {ids:?}"
            );
            assert_eq!(
                retry.ok(),
                Some(first),
                "the retry must return the original result"
            );
        }
        Err(_) => assert!(
            retry.is_err(),
            "refused once, accepted when retried: {retry:?}"
        ),
    }
}

/// `AppendResult`: "Its events have consecutive positions `first_position ..= last_position`."
/// An append made of the ids of two separate appends, with another stream's event between them,
/// is taken for a retry and answered with a range that also covers the foreign event.
#[test]
fn recognised_retry_result_covers_exactly_its_events() {
    let dir = tempdir();
    let store = Store::open(dir.path(), store_config()).expect("open");
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    store
        .append("acct-1", ExpectedRevision::NoStream, vec![event_with(a)])
        .expect("append a");
    store
        .append("acct-2", ExpectedRevision::NoStream, vec![event_with(c)])
        .expect("append c");
    store
        .append(
            "acct-1",
            ExpectedRevision::Exact(Revision(0)),
            vec![event_with(b)],
        )
        .expect("append b");
    // Never appended as one request.
    let result = store.append(
        "acct-1",
        ExpectedRevision::NoStream,
        vec![event_with(a), event_with(b)],
    );
    if let Ok(r) = result {
        assert_eq!(
            r.last_position.0 - r.first_position.0 + 1,
            2,
            "a result for 2 events must span 2 consecutive positions: {r:?}"
        );
    }
}
