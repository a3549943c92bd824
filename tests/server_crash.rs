//! Server-level crash and shutdown tests against the real binary (`statestore serve`, fsync
//! always): several gRPC clients append concurrently and record every acknowledged append with
//! what they sent; the server is killed with SIGKILL at a random moment and restarted on the
//! same directory, and every acknowledged event must be readable at its acknowledged position,
//! positions and revisions dense, commits whole, and appends must work again. A second test
//! stops the server with SIGTERM and checks that it exits 0, releases the directory, and kept
//! every acknowledged event.
//!
//! `STATESTORE_SERVER_CRASH_SEED` fixes the seed of the kill delays and event shapes.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::XorShift;
use statestore::server::proto::{self, event_store_client::EventStoreClient};
use statestore::{Direction, Filter, Position, Store};
use tonic::transport::Channel;

type Client = EventStoreClient<Channel>;

const CYCLES: u16 = 8;
const APPENDERS: u16 = 4;
const STREAMS: u64 = 8;
/// High 16 bits of every id this test generates.
const ID_MAGIC: u128 = 0xc5a5;

// ---------------------------------------------------------------------------------------------
// The server process.

/// A running `statestore serve`. Killed (SIGKILL) when dropped, so a failing test leaves no
/// process behind.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    /// Starts the binary on `dir` with a free port and waits until it answers.
    async fn start(dir: &Path, log: &Path) -> Server {
        for attempt in 0..10 {
            // A port that was free a moment ago; if someone takes it first the server exits
            // and we try another.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let stderr = File::options()
                .create(true)
                .append(true)
                .open(log)
                .expect("open the server log");
            let child = Command::new(env!("CARGO_BIN_EXE_statestore"))
                .arg("serve")
                .arg("--data-dir")
                .arg(dir)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--fsync", "always"])
                // Small segments (the default pre-allocates 128 MiB at every open).
                .args(["--segment-bytes", "1048576", "--append-bytes-max", "262144"])
                .args(["--drain-ms", "2000"])
                // Index checkpoints every few hundred events, each held 100 ms in its temporary
                // file, so that kills land inside checkpoint writes too.
                .args(["--index-checkpoint-events", "200"])
                .env("STATESTORE_CRASH_TEST_CHECKPOINT_PAUSE_MS", "100")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn the statestore binary");
            let mut server = Server {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log: log.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = server.child.try_wait().expect("try_wait") {
                    eprintln!("attempt {attempt}: the server exited at start ({status}); retrying");
                    break;
                }
                if let Ok(mut client) = Client::connect(server.url.clone()).await
                    && let Ok(info) = client.server_info(proto::ServerInfoRequest {}).await
                {
                    assert_eq!(
                        info.into_inner().data_dir,
                        dir.display().to_string(),
                        "another server answers on {}",
                        server.url
                    );
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server did not start within 30 s; log:\n{}",
                    server.log_text()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("the server could not start; log:\n{}", read_log(log));
    }

    async fn client(&self) -> Client {
        Client::connect(self.url.clone())
            .await
            .expect("connect to the server")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// SIGKILL, and waits for the process.
    fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("wait for the server")
    }

    /// Waits for the process to exit by itself, for at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn seed() -> u64 {
    std::env::var("STATESTORE_SERVER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

// ---------------------------------------------------------------------------------------------
// Appending and recording acknowledgements.

/// Identifies a commit: which cycle, which client, which of its appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CommitKey {
    cycle: u16,
    task: u16,
    seq: u32,
}

fn make_id(key: CommitKey, index: u16, count: u16) -> Bytes {
    let id = (ID_MAGIC << 112)
        | (u128::from(key.cycle) << 96)
        | (u128::from(key.task) << 80)
        | (u128::from(key.seq) << 32)
        | (u128::from(index) << 16)
        | u128::from(count);
    Bytes::copy_from_slice(&id.to_be_bytes())
}

/// The commit, index and count an id of ours encodes.
fn parse_id(id: &[u8]) -> Option<(CommitKey, u16, u16)> {
    let id = u128::from_be_bytes(id.try_into().ok()?);
    if id >> 112 != ID_MAGIC {
        return None;
    }
    let key = CommitKey {
        cycle: (id >> 96) as u16,
        task: (id >> 80) as u16,
        seq: (id >> 32) as u32,
    };
    Some((key, (id >> 16) as u16, id as u16))
}

fn data_for(key: CommitKey, index: u16, count: u16, pad: usize) -> Bytes {
    format!(
        "{{\"cycle\":{},\"task\":{},\"seq\":{},\"index\":{index},\"of\":{count},\"pad\":\"{}\"}}",
        key.cycle,
        key.task,
        key.seq,
        "x".repeat(pad)
    )
    .into()
}

/// One stream's part of an acknowledged append: what was sent and where it landed.
#[derive(Debug, Clone)]
struct AckPart {
    stream: String,
    ack: proto::AppendResponse,
    events: Vec<proto::EventData>,
}

type Acks = Arc<Mutex<Vec<Vec<AckPart>>>>;

/// A random commit: one stream (most often) or two, 1..=3 events each.
fn random_commit(rng: &mut XorShift, key: CommitKey) -> Vec<proto::AppendRequest> {
    let shape: Vec<u64> = if rng.below(10) < 7 {
        vec![1 + rng.below(3)]
    } else {
        vec![1 + rng.below(3), 1 + rng.below(3)]
    };
    let count = shape.iter().sum::<u64>() as u16;
    let first = rng.below(STREAMS);
    let mut index = 0u16;
    shape
        .iter()
        .enumerate()
        .map(|(part, &n)| {
            let events = (0..n)
                .map(|_| {
                    let e = proto::EventData {
                        id: make_id(key, index, count),
                        event_type: format!("Type{}", index % 3),
                        content_type: proto::ContentType::Json as i32,
                        data: data_for(key, index, count, rng.below(300) as usize),
                        metadata: format!("{{\"task\":{}}}", key.task).into(),
                    };
                    index += 1;
                    e
                })
                .collect();
            proto::AppendRequest {
                stream: format!("crash-{}", (first + part as u64) % STREAMS),
                expected: None,
                events,
                tracking: None,
            }
        })
        .collect()
}

/// Appends random commits until the server goes away; records every acknowledged one. An
/// error before `stopping` is set fails the test.
async fn append_until_gone(
    mut client: Client,
    cycle: u16,
    task: u16,
    seed: u64,
    acks: Acks,
    stopping: Arc<AtomicBool>,
) {
    let mut rng = XorShift::new(seed);
    for seq in 0.. {
        let key = CommitKey { cycle, task, seq };
        let parts = random_commit(&mut rng, key);
        let result = if parts.len() == 1 {
            client
                .append(parts[0].clone())
                .await
                .map(|r| vec![r.into_inner()])
        } else {
            client
                .append_multi(proto::AppendMultiRequest {
                    streams: parts.clone(),
                    tracking: None,
                })
                .await
                .map(|r| r.into_inner().results)
        };
        match result {
            Ok(results) => {
                assert_eq!(results.len(), parts.len(), "one result per part");
                let ack = parts
                    .into_iter()
                    .zip(results)
                    .map(|(p, ack)| AckPart {
                        stream: p.stream,
                        ack,
                        events: p.events,
                    })
                    .collect();
                acks.lock().expect("acks").push(ack);
            }
            Err(status) => {
                assert!(
                    stopping.load(Ordering::SeqCst),
                    "cycle {cycle} task {task}: append failed while the server was up: {status:?}"
                );
                return;
            }
        }
    }
}

/// Starts `APPENDERS` appending clients; returns their tasks.
async fn start_appenders(
    server: &Server,
    cycle: u16,
    seed: u64,
    acks: &Acks,
    stopping: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for task in 0..APPENDERS {
        let client = server.client().await;
        tasks.push(tokio::spawn(append_until_gone(
            client,
            cycle,
            task,
            seed ^ (u64::from(task) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            Arc::clone(acks),
            Arc::clone(stopping),
        )));
    }
    tasks
}

/// Waits until at least `n` commits are acknowledged.
async fn wait_for_acks(acks: &Acks, n: usize, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.lock().expect("acks").len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} appends not acknowledged within 30 s; server log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn join_appenders(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("an appender stops once the server is gone")
            .expect("appender task");
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the log.

/// An event as read back, in the fields the checks need.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    position: u64,
    stream: String,
    revision: u64,
    id: Bytes,
    event_type: String,
    data: Bytes,
    metadata: Bytes,
}

impl From<proto::RecordedEvent> for Read {
    fn from(e: proto::RecordedEvent) -> Read {
        Read {
            position: e.position,
            stream: e.stream,
            revision: e.revision,
            id: e.id,
            event_type: e.event_type,
            data: e.data,
            metadata: e.metadata,
        }
    }
}

async fn read_all(client: &mut Client) -> Vec<Read> {
    let mut reply = client
        .read_all(proto::ReadAllRequest {
            from_position: Some(1),
            direction: proto::Direction::Forwards as i32,
            max_count: 0,
            filter: None,
        })
        .await
        .expect("read all")
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = reply.message().await.expect("read all page") {
        events.extend(page.events.into_iter().map(Read::from));
    }
    events
}

fn read_store(store: &Store) -> Vec<Read> {
    let mut events = Vec::new();
    let mut from = Position(1);
    loop {
        let slice = store
            .read_all(from, Direction::Forwards, 10_000, &Filter::default())
            .expect("read_all");
        events.extend(slice.events.iter().map(|e| Read {
            position: e.position.0,
            stream: e.stream().to_string(),
            revision: e.revision.0,
            id: e.id_bytes(),
            event_type: e.event_type().to_string(),
            data: e.data_bytes(),
            metadata: e.metadata_bytes(),
        }));
        if slice.end_of_log {
            return events;
        }
        from = Position(slice.scanned_to.0 + 1);
    }
}

/// Checks the whole log (`events`, positions from 1, with `last` the server's last position)
/// against every acknowledged commit and against the ids seen by the previous check, which it
/// then replaces.
fn check_log(events: &[Read], last: u64, acks: &[Vec<AckPart>], seen: &mut Vec<Bytes>, ctx: &str) {
    // Dense positions 1..=last.
    assert_eq!(
        events.len() as u64,
        last,
        "{ctx}: events read vs last position"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "{ctx}: position gap");
    }
    // Nothing seen before has gone or changed.
    assert!(
        events.len() >= seen.len(),
        "{ctx}: the log shrank from {} to {} events",
        seen.len(),
        events.len()
    );
    for (i, id) in seen.iter().enumerate() {
        assert_eq!(
            &events[i].id,
            id,
            "{ctx}: event at {} changed since the last check",
            i + 1
        );
    }
    *seen = events.iter().map(|e| e.id.clone()).collect();

    // Dense revisions in every stream.
    let mut revisions: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        let next = revisions.entry(&e.stream).or_insert(0);
        assert_eq!(
            e.revision, *next,
            "{ctx}: revision gap in {} at position {}",
            e.stream, e.position
        );
        *next += 1;
    }

    // Every event is ours and stored once; every commit in the log is whole and contiguous,
    // acknowledged or not.
    let mut ids = HashSet::new();
    let mut commits: BTreeMap<CommitKey, Vec<(u64, u16, u16)>> = BTreeMap::new();
    for e in events {
        assert!(
            ids.insert(e.id.clone()),
            "{ctx}: an id is stored twice ({})",
            e.position
        );
        let (key, index, count) =
            parse_id(&e.id).unwrap_or_else(|| panic!("{ctx}: a foreign id at {}", e.position));
        let data = &e.data[..];
        let prefix = format!(
            "{{\"cycle\":{},\"task\":{},\"seq\":{},\"index\":{index},\"of\":{count},",
            key.cycle, key.task, key.seq
        );
        assert!(
            data.starts_with(prefix.as_bytes()),
            "{ctx}: the data at {} does not match its id",
            e.position
        );
        commits
            .entry(key)
            .or_default()
            .push((e.position, index, count));
    }
    for (key, frames) in &commits {
        let count = frames[0].2;
        let whole = frames.len() == usize::from(count)
            && frames
                .iter()
                .enumerate()
                .all(|(k, f)| usize::from(f.1) == k && f.2 == count)
            && frames.windows(2).all(|w| w[1].0 == w[0].0 + 1);
        assert!(
            whole,
            "{ctx}: commit {key:?} is partial or scattered: {frames:?}"
        );
    }

    // Every acknowledged event is where it was acknowledged, as sent.
    for commit in acks {
        for part in commit {
            let n = part.events.len() as u64;
            assert_eq!(
                part.ack.last_position + 1 - part.ack.first_position,
                n,
                "{ctx}: acknowledged positions of {part:?}"
            );
            for (k, sent) in part.events.iter().enumerate() {
                let position = part.ack.first_position + k as u64;
                let revision = part.ack.revision + 1 + k as u64 - n;
                let e = events.get(position as usize - 1).unwrap_or_else(|| {
                    panic!("{ctx}: acknowledged position {position} is lost (log ends at {last})")
                });
                let what = format!("{ctx}: acknowledged event at position {position}");
                assert_eq!(e.stream, part.stream, "{what}: stream");
                assert_eq!(e.revision, revision, "{what}: revision");
                assert_eq!(e.id, sent.id, "{what}: id");
                assert_eq!(e.event_type, sent.event_type, "{what}: type");
                assert_eq!(e.data, sent.data, "{what}: data");
                assert_eq!(e.metadata, sent.metadata, "{what}: metadata");
            }
        }
    }
}

/// Appends one event after a restart: it lands right after the log's last position. Returns
/// the acknowledged commit.
async fn append_after_restart(client: &mut Client, cycle: u16, last: u64) -> Vec<AckPart> {
    let key = CommitKey {
        cycle,
        task: u16::MAX,
        seq: 0,
    };
    let request = proto::AppendRequest {
        stream: "crash-after-restart".into(),
        expected: None,
        events: vec![proto::EventData {
            id: make_id(key, 0, 1),
            event_type: "Restarted".into(),
            content_type: proto::ContentType::Json as i32,
            data: data_for(key, 0, 1, 0),
            metadata: Bytes::new(),
        }],
        tracking: None,
    };
    let ack = client
        .append(request.clone())
        .await
        .unwrap_or_else(|s| panic!("cycle {cycle}: append after the restart failed: {s:?}"))
        .into_inner();
    assert_eq!(
        (ack.first_position, ack.last_position),
        (last + 1, last + 1),
        "cycle {cycle}: the first append after the restart"
    );
    vec![AckPart {
        stream: request.stream,
        ack,
        events: request.events,
    }]
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_of_the_server() {
    let seed = seed();
    eprintln!("seed {seed} (STATESTORE_SERVER_CRASH_SEED)");
    let mut rng = XorShift::new(seed);
    let dir = common::tempdir();
    let logs = tempfile::tempdir().expect("a directory for the server log");
    let log = logs.path().join("server.log");
    let started = Instant::now();

    let acks: Acks = Arc::default();
    let mut seen = Vec::new();
    let mut kills_inside_checkpoints = 0;
    let mut server = Server::start(dir.path(), &log).await;
    for cycle in 0..CYCLES {
        let stopping = Arc::new(AtomicBool::new(false));
        let before = acks.lock().expect("acks").len();
        let tasks = start_appenders(&server, cycle, rng.next_u64(), &acks, &stopping).await;
        // Let some appends through, then kill at a random moment.
        wait_for_acks(&acks, before + 20, &server).await;
        tokio::time::sleep(Duration::from_millis(20 + rng.below(300))).await;
        stopping.store(true, Ordering::SeqCst);
        let status = server.kill();
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: killed by SIGKILL: {status}"
        );
        join_appenders(tasks).await;
        drop(server);
        if has_temp_run(dir.path()) {
            kills_inside_checkpoints += 1;
        }

        server = Server::start(dir.path(), &log).await;
        let mut client = server.client().await;
        let last = client
            .server_info(proto::ServerInfoRequest {})
            .await
            .expect("server info")
            .into_inner()
            .last_position;
        let events = read_all(&mut client).await;
        let acked = acks.lock().expect("acks").clone();
        check_log(&events, last, &acked, &mut seen, &format!("cycle {cycle}"));
        let commit = append_after_restart(&mut client, cycle, last).await;
        acks.lock().expect("acks").push(commit);
        eprintln!(
            "cycle {cycle}: {} commits acknowledged before the kill, log of {last} events",
            acked.len() - before
        );
    }
    // The last restart's appends are there too.
    let mut client = server.client().await;
    let events = read_all(&mut client).await;
    let last = events.len() as u64;
    let acked = acks.lock().expect("acks").clone();
    check_log(&events, last, &acked, &mut seen, "final");
    drop(client);
    let status = server.kill();
    assert_eq!(status.signal(), Some(9));
    let checkpoints = server
        .log_text()
        .matches("index checkpoint written")
        .count();
    eprintln!(
        "{CYCLES} cycles, {} commits acknowledged, {last} events, {checkpoints} checkpoints, \
         {kills_inside_checkpoints} kills inside a checkpoint write, {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(checkpoints > 0, "no index checkpoint was written");
    assert!(
        kills_inside_checkpoints > 0,
        "no kill landed inside a checkpoint write (no temporary run file was left)"
    );
    drop(server);
    // The store as the checkpoints left it reads exactly like the same log indexed from
    // scratch.
    let rebuilt = tempfile::tempdir().expect("a directory for the rebuilt copy");
    for entry in std::fs::read_dir(dir.path()).expect("read the data directory") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, rebuilt.path().join(path.file_name().expect("name")))
                .expect("copy a segment");
        }
    }
    let engine_config = |checkpoint_events| statestore::Config {
        segment_bytes: 1 << 20,
        append_bytes_max: 256 << 10,
        checkpoint_events,
        ..statestore::Config::default()
    };
    let with_checkpoints = Store::open(dir.path(), engine_config(200)).expect("open");
    assert!(
        with_checkpoints.stats().index_runs > 0,
        "the checkpoints were not used"
    );
    let from_scratch = Store::open(rebuilt.path(), engine_config(0)).expect("open the copy");
    assert_eq!(from_scratch.stats().index_runs, 0);
    let all = read_store(&with_checkpoints);
    assert_eq!(all, read_store(&from_scratch));
    assert_eq!(all.len() as u64, last);
    let streams: std::collections::BTreeSet<&str> = all.iter().map(|e| e.stream.as_str()).collect();
    let types: std::collections::BTreeSet<&str> =
        all.iter().map(|e| e.event_type.as_str()).collect();
    for s in streams {
        for direction in [Direction::Forwards, Direction::Backwards] {
            let from = match direction {
                Direction::Forwards => statestore::Revision(0),
                Direction::Backwards => statestore::Revision::END,
            };
            let read = |store: &Store| store.read_stream(s, from, direction, 10_000).expect("read");
            assert_eq!(read(&with_checkpoints), read(&from_scratch), "stream {s}");
        }
    }
    for t in types {
        let read = |store: &Store| {
            store
                .read_by_type(t, Position(0), Direction::Forwards, 10_000)
                .expect("read by type")
        };
        assert_eq!(read(&with_checkpoints), read(&from_scratch), "type {t}");
    }
}

/// Whether a checkpoint's temporary file is in the index directory: a kill interrupted it.
fn has_temp_run(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("index")).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let seed = seed();
    eprintln!("seed {seed} (STATESTORE_SERVER_CRASH_SEED)");
    let dir = common::tempdir();
    let logs = tempfile::tempdir().expect("a directory for the server log");
    let log = logs.path().join("server.log");
    let mut server = Server::start(dir.path(), &log).await;

    // A live subscription, read as it goes, and appenders.
    let mut sub = server
        .client()
        .await
        .subscribe(proto::SubscribeRequest {
            target: Some(proto::subscribe_request::Target::All(proto::SubscribeAll {
                after_position: 0,
                filter: None,
                checkpoint_interval: 0,
            })),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let subscriber = tokio::spawn(async move {
        let mut events = 0u64;
        loop {
            match sub.message().await {
                Ok(Some(m)) => {
                    if let Some(proto::subscribe_response::Kind::Events(b)) = m.kind {
                        events += b.events.len() as u64;
                    }
                }
                Ok(None) => return (events, Ok(())),
                Err(status) => return (events, Err(status)),
            }
        }
    });
    let acks: Acks = Arc::default();
    let stopping = Arc::new(AtomicBool::new(false));
    let tasks = start_appenders(&server, 0, seed, &acks, &stopping).await;
    wait_for_acks(&acks, 50, &server).await;

    stopping.store(true, Ordering::SeqCst);
    let term = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(term.success(), "kill -TERM failed: {term}");
    let signalled = Instant::now();
    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the server did not exit within 15 s of SIGTERM; log:\n{}",
                server.log_text()
            )
        });
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        server.log_text()
    );
    join_appenders(tasks).await;
    let (delivered, ended) = tokio::time::timeout(Duration::from_secs(10), subscriber)
        .await
        .expect("the subscription ends with the server")
        .expect("subscriber task");
    let text = server.log_text();
    drop(server);

    // The directory is released and holds every acknowledged event.
    let store = Store::open(dir.path(), common::config())
        .unwrap_or_else(|e| panic!("reopen after SIGTERM: {e}; log:\n{text}"));
    let events = read_store(&store);
    let last = store.last_position().0;
    let acked = acks.lock().expect("acks").clone();
    check_log(&events, last, &acked, &mut Vec::new(), "after SIGTERM");
    store.close().expect("close");
    eprintln!(
        "exited {status} {took:?} after SIGTERM; {} commits acknowledged, {last} events; the \
         subscription got {delivered} events and ended with {ended:?}",
        acked.len()
    );
    assert!(
        text.contains("stopped: log synced, data directory released"),
        "the server reports a clean stop; log:\n{text}"
    );
}
