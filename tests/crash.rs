//! Process crash test: a child process (this test binary, running the ignored `child_appender`
//! test) appends from several threads with the default durability (`FsyncPolicy::Always`) and
//! prints a line for every acknowledged append; the parent kills it with SIGKILL at a random
//! moment, reopens the store, and checks that every acknowledged event is there at its
//! acknowledged place, that positions and revisions have no gaps, that no commit is partial, and
//! that nothing seen after an earlier crash has disappeared. Many cycles on the same directory.
//!
//! `STATESTORE_CRASH_CYCLES` sets the number of cycles (default 30); `STATESTORE_CRASH_SEED`
//! fixes the seed of the parent's kill delays.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use statestore::{
    Config, Direction, EventData, ExpectedRevision, Filter, Position, RecordedEvent, Revision,
    Store, StreamAppend,
};
use uuid::Uuid;

const DIR_ENV: &str = "STATESTORE_CRASH_DIR";
const CYCLE_ENV: &str = "STATESTORE_CRASH_CYCLE";
const CYCLES_ENV: &str = "STATESTORE_CRASH_CYCLES";
const SEED_ENV: &str = "STATESTORE_CRASH_SEED";
const DEFAULT_CYCLES: u32 = 30;
const THREADS: u64 = 4;
const STREAMS: u64 = 20;
const ACK_MARK: &str = "@@ACK ";
/// High 16 bits of every id the child generates.
const ID_MAGIC: u64 = 0xc4a5;

fn config() -> Config {
    Config {
        segment_bytes: 64 << 10,
        append_bytes_max: 16 << 10,
        ..Config::default()
    }
}

/// xorshift64*: enough randomness for choosing sizes and delays, with no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// What an event id says about its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CommitKey {
    cycle: u16,
    commit: u32,
}

#[derive(Debug, Clone, Copy)]
struct IdInfo {
    key: CommitKey,
    index: u16,
    count: u16,
}

fn make_id(key: CommitKey, index: u16, count: u16, random: u32) -> Uuid {
    let hi = (ID_MAGIC << 48) | (u64::from(key.cycle) << 32) | u64::from(key.commit);
    let lo = (u64::from(index) << 48) | (u64::from(count) << 32) | u64::from(random);
    Uuid::from_u64_pair(hi, lo)
}

fn parse_id(id: Uuid) -> Option<IdInfo> {
    let (hi, lo) = id.as_u64_pair();
    if hi >> 48 != ID_MAGIC {
        return None;
    }
    Some(IdInfo {
        key: CommitKey {
            cycle: (hi >> 32) as u16,
            commit: hi as u32,
        },
        index: (lo >> 48) as u16,
        count: (lo >> 32) as u16,
    })
}

fn data_prefix(info: &IdInfo) -> String {
    format!(
        "{{\"cycle\":{},\"commit\":{},\"index\":{},\"of\":{}",
        info.key.cycle, info.key.commit, info.index, info.count
    )
}

// ---------------------------------------------------------------------------------------------
// The child.

#[test]
#[ignore = "helper process for the crash test"]
fn child_appender() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let cycle: u16 = std::env::var(CYCLE_ENV)
        .ok()
        .and_then(|c| c.parse().ok())
        .expect("the cycle number");
    let store = match Store::open(&dir, config()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("child: open failed: {e}");
            std::process::exit(3);
        }
    };
    let commits = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let commits = commits.clone();
            std::thread::spawn(move || append_forever(&store, cycle, &commits, t))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn append_forever(store: &Store, cycle: u16, commits: &AtomicU32, thread: u64) {
    let mut rng = Rng::new(clock_seed() ^ (thread + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    loop {
        let key = CommitKey {
            cycle,
            commit: commits.fetch_add(1, Ordering::Relaxed),
        };
        // How many events in each stream: one event, several in one stream, or several streams.
        let shape: Vec<u64> = match rng.below(10) {
            0..=4 => vec![1],
            5..=7 => vec![2 + rng.below(5)],
            _ => (0..2 + rng.below(2)).map(|_| 1 + rng.below(3)).collect(),
        };
        let count = shape.iter().sum::<u64>() as u16;
        let mut streams: Vec<u64> = Vec::new();
        while streams.len() < shape.len() {
            let s = rng.below(STREAMS);
            if !streams.contains(&s) {
                streams.push(s);
            }
        }
        let mut index = 0u16;
        let mut parts = Vec::new();
        for (&s, &n) in streams.iter().zip(&shape) {
            let mut events = Vec::new();
            for _ in 0..n {
                let info = IdInfo { key, index, count };
                let id = make_id(key, index, count, rng.next() as u32);
                let pad = "x".repeat(rng.below(400) as usize);
                let data = format!("{},\"pad\":\"{pad}\"}}", data_prefix(&info));
                events.push(EventData::json(format!("Type{}", index % 3), data).with_id(id));
                index += 1;
            }
            parts.push(StreamAppend::new(
                format!("crash-{s}"),
                ExpectedRevision::Any,
                events,
            ));
        }
        let ids: Vec<Vec<Uuid>> = parts
            .iter()
            .map(|p| p.events.iter().map(|e| e.id.expect("id")).collect())
            .collect();
        let names: Vec<String> = parts.iter().map(|p| p.stream.clone()).collect();
        let result = if parts.len() == 1 {
            let p = parts.pop().expect("one part");
            store
                .append(p.stream, p.expected, p.events)
                .map(|r| vec![r])
        } else {
            store.append_multi(parts)
        };
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("child: append failed: {e}");
                std::process::exit(4);
            }
        };
        let mut line = format!("{ACK_MARK}{} {} {}", key.cycle, key.commit, results.len());
        for ((name, ids), r) in names.iter().zip(&ids).zip(&results) {
            let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            line.push_str(&format!(
                " {name} {} {} {} {}",
                r.first_position.0,
                r.last_position.0,
                r.revision.0,
                ids.join(",")
            ));
        }
        line.push('\n');
        let mut out = std::io::stdout().lock();
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            std::process::exit(5);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

#[derive(Debug, Clone)]
struct AckPart {
    stream: String,
    first: u64,
    last: u64,
    revision: u64,
    ids: Vec<Uuid>,
}

#[derive(Debug, Clone)]
struct Ack {
    key: CommitKey,
    parts: Vec<AckPart>,
}

fn parse_ack(line: &str) -> Ack {
    let bad = || -> ! { panic!("unparsable acknowledgement line: {line:?}") };
    let mut words = line.split_whitespace();
    let mut word = || words.next().unwrap_or_else(|| bad());
    let key = CommitKey {
        cycle: word().parse().unwrap_or_else(|_| bad()),
        commit: word().parse().unwrap_or_else(|_| bad()),
    };
    let n: usize = word().parse().unwrap_or_else(|_| bad());
    let mut parts = Vec::new();
    for _ in 0..n {
        let stream = word().to_string();
        let first = word().parse().unwrap_or_else(|_| bad());
        let last = word().parse().unwrap_or_else(|_| bad());
        let revision = word().parse().unwrap_or_else(|_| bad());
        let ids = word()
            .split(',')
            .map(|s| s.parse().unwrap_or_else(|_| bad()))
            .collect();
        parts.push(AckPart {
            stream,
            first,
            last,
            revision,
            ids,
        });
    }
    if words.next().is_some() {
        bad();
    }
    Ack { key, parts }
}

/// The complete lines of the child's output that acknowledge an append. A trailing line cut
/// off by the kill is ignored.
fn acks_in(output: &[u8]) -> Vec<Ack> {
    let text = String::from_utf8_lossy(output);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| l.find(ACK_MARK).map(|i| &l[i + ACK_MARK.len()..]))
        .map(parse_ack)
        .collect()
}

fn read_everything(store: &Store) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut from = Position::START;
    loop {
        let slice = store
            .read_all(from, Direction::Forwards, 10_000, &Filter::default())
            .expect("read_all");
        events.extend(slice.events);
        if slice.end_of_log {
            return events;
        }
        from = Position(slice.scanned_to.0 + 1);
    }
}

struct Summary {
    events: usize,
    segments: usize,
    streams: usize,
    /// Commits in the log that were never acknowledged (written, then the child died).
    unacknowledged: usize,
}

/// Whether the newest segment ends in something other than whole commits and zeros: what a kill
/// in the middle of a write leaves, and what the next open must cut off. Diagnostic only: it
/// says whether the recovery path was exercised.
fn torn_tail_on_disk(dir: &Path) -> bool {
    let Some(newest) = std::fs::read_dir(dir)
        .expect("read the directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
    else {
        return false;
    };
    let bytes = std::fs::read(&newest).expect("read the newest segment");
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let mut at = 32;
    let mut pending = 0;
    loop {
        match u32_at(at) {
            None | Some(0) => {
                return pending != 0 || bytes.get(at..).is_some_and(|r| r.iter().any(|&b| b != 0));
            }
            Some(len) => {
                let (Some(index), Some(count)) = (u32_at(at + 8 + 48), u32_at(at + 8 + 52)) else {
                    return true;
                };
                if at + 8 + len as usize > bytes.len() || index != pending {
                    return true;
                }
                pending = if index + 1 == count { 0 } else { index + 1 };
                at += 8 + len as usize;
            }
        }
    }
}

/// Opens the store after a crash and checks it against everything acknowledged so far and
/// against what the previous check saw (`seen`, the ids by position, is extended).
fn check_store(dir: &Path, acks: &[Ack], seen: &mut Vec<Uuid>, cycle: u32) -> Summary {
    let store = Store::open(dir, config())
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopening after the kill failed: {e}"));
    let last = store.last_position().0;
    let events = read_everything(&store);

    // Positions 1..=last, no gaps.
    assert_eq!(
        events.len() as u64,
        last,
        "cycle {cycle}: read_all returned {} events, last position is {last}",
        events.len()
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.position,
            Position(i as u64 + 1),
            "cycle {cycle}: position gap"
        );
    }

    // Nothing seen after an earlier crash has gone or changed.
    assert!(
        events.len() >= seen.len(),
        "cycle {cycle}: the log shrank from {} to {} events",
        seen.len(),
        events.len()
    );
    for (i, id) in seen.iter().enumerate() {
        assert_eq!(
            events[i].id,
            *id,
            "cycle {cycle}: event at position {} changed since the last check",
            i + 1
        );
    }
    seen.clear();
    seen.extend(events.iter().map(|e| e.id));

    // Revisions 0..n in every stream, and the stream index agrees with the log.
    let mut streams: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        let positions = streams.entry(e.stream().to_string()).or_default();
        assert_eq!(
            e.revision,
            Revision(positions.len() as u64),
            "cycle {cycle}: revision gap in {} at position {}",
            e.stream(),
            e.position
        );
        positions.push(e.position.0);
    }
    for (stream, positions) in &streams {
        assert_eq!(
            store.stream_revision(stream).unwrap(),
            Some(Revision(positions.len() as u64 - 1)),
            "cycle {cycle}: stream_revision({stream})"
        );
        let mut got = Vec::new();
        let mut from = 0;
        loop {
            let page = store
                .read_stream(stream, Revision(from), Direction::Forwards, 10_000)
                .expect("read_stream");
            if page.is_empty() {
                break;
            }
            from += page.len() as u64;
            got.extend(page.iter().map(|e| e.position.0));
        }
        assert_eq!(&got, positions, "cycle {cycle}: read_stream({stream})");
    }

    // Every event is one of ours, once, and every commit in the log is whole and contiguous.
    let mut ids = HashSet::with_capacity(events.len());
    let mut commits: HashMap<CommitKey, Vec<(u64, IdInfo)>> = HashMap::new();
    for e in &events {
        assert!(ids.insert(e.id), "cycle {cycle}: id {} stored twice", e.id);
        let info = parse_id(e.id)
            .unwrap_or_else(|| panic!("cycle {cycle}: foreign id {} at {}", e.id, e.position));
        assert!(
            e.data().starts_with(data_prefix(&info).as_bytes()),
            "cycle {cycle}: data of {} does not match its id",
            e.position
        );
        commits
            .entry(info.key)
            .or_default()
            .push((e.position.0, info));
    }
    for (key, frames) in &commits {
        let count = frames[0].1.count as usize;
        let indexes: Vec<u16> = frames.iter().map(|(_, i)| i.index).collect();
        let positions: Vec<u64> = frames.iter().map(|(p, _)| *p).collect();
        assert!(
            frames.len() == count
                && indexes.iter().enumerate().all(|(k, &i)| i as usize == k)
                && frames.iter().all(|(_, i)| i.count as usize == count)
                && positions.windows(2).all(|w| w[1] == w[0] + 1),
            "cycle {cycle}: commit {key:?} of {count} events is partial or scattered: \
             indexes {indexes:?} at positions {positions:?}"
        );
    }

    // Every acknowledged event is where it was acknowledged.
    for ack in acks {
        for part in &ack.parts {
            let n = part.ids.len() as u64;
            assert_eq!(part.last + 1 - part.first, n, "ack {ack:?}");
            for (k, id) in part.ids.iter().enumerate() {
                let position = part.first + k as u64;
                let revision = part.revision + 1 + k as u64 - n;
                let e = events.get(position as usize - 1).unwrap_or_else(|| {
                    panic!("cycle {cycle}: acknowledged position {position} is lost ({ack:?})")
                });
                assert!(
                    e.stream() == part.stream && e.id == *id && e.revision == Revision(revision),
                    "cycle {cycle}: acknowledged event {id} of {} (revision {revision}) at \
                     position {position}, found {e:?}",
                    part.stream
                );
            }
        }
        assert!(
            commits.contains_key(&ack.key),
            "cycle {cycle}: acknowledged commit {:?} missing",
            ack.key
        );
    }

    let stats = store.stats();
    assert_eq!(stats.last_position, Position(last));
    assert_eq!(stats.streams, streams.len());
    let acknowledged: HashSet<CommitKey> = acks.iter().map(|a| a.key).collect();
    let summary = Summary {
        events: events.len(),
        segments: stats.segments,
        streams: streams.len(),
        unacknowledged: commits.keys().filter(|k| !acknowledged.contains(k)).count(),
    };
    drop(events);
    store.close().expect("close after the check");
    summary
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let cycles: u32 = std::env::var(CYCLES_ENV)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(clock_seed);
    eprintln!("crash test: {cycles} cycles, {SEED_ENV}={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::Builder::new()
        .prefix("statestore-crash-")
        .tempdir()
        .expect("create a temporary directory");
    let exe = std::env::current_exe().expect("the test binary");
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut seen: Vec<Uuid> = Vec::new();
    let mut empty_cycles = 0;
    let mut torn_tails = 0;
    let mut unacknowledged = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(CYCLE_ENV, cycle.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let delay = Duration::from_millis(30 + rng.below(271));
        std::thread::sleep(delay);
        child.kill().expect("kill the child");
        let status = child.wait().expect("wait for the child");
        let out = out.join().expect("stdout reader");
        let err = err.join().expect("stderr reader");
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: the child was not killed but ended by itself ({status}); stderr:\n{}",
            String::from_utf8_lossy(&err)
        );
        let new_acks = acks_in(&out);
        if new_acks.is_empty() {
            empty_cycles += 1;
        }
        for a in &new_acks {
            assert_eq!(
                u32::from(a.key.cycle),
                cycle,
                "ack from another cycle: {a:?}"
            );
        }
        let acked_now = new_acks.len();
        acks.extend(new_acks);
        let torn = torn_tail_on_disk(dir.path());
        torn_tails += usize::from(torn);
        let summary = check_store(dir.path(), &acks, &mut seen, cycle);
        unacknowledged = summary.unacknowledged;
        eprintln!(
            "cycle {cycle:2}: killed after {:3} ms, {acked_now:4} appends acknowledged{}; log: {} \
             events, {} streams, {} segments, {} commits never acknowledged",
            delay.as_millis(),
            if torn { ", torn tail" } else { "" },
            summary.events,
            summary.streams,
            summary.segments,
            summary.unacknowledged,
        );
    }
    eprintln!(
        "crash test: {cycles} cycles, {} acknowledged appends, {} events in the log, {unacknowledged} \
         commits in it never acknowledged, {torn_tails} torn tails, {empty_cycles} cycles without \
         an acknowledgement, {:.1} s",
        acks.len(),
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        cycles < 5 || !acks.is_empty(),
        "no append was ever acknowledged: the child does not work"
    );
}
