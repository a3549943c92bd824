//! The projection example (`examples/projection.rs`) against the real server binary: inputs are
//! appended before and while the projection runs; the projection is killed with SIGKILL at
//! random moments and restarted, and the server is killed with SIGKILL and restarted on the
//! same directory; at times two instances run at once; then the projection runs with `--once`
//! to the end. Every stored input must have exactly one output (none lost, none repeated, the
//! right data and running totals), and the tracking position must be the last input's position.
//!
//! A projection that committed its outputs and its position in separate commits fails this
//! (tried: 8 runs of 8): a kill between the two makes the next start repeat outputs, which the
//! server refuses as an idempotency conflict (the same ids at later revisions), and the
//! projection exits; without derived ids, the duplicates would fail the output checks.
//!
//! `STATESTORE_PROJECTION_SEED` fixes the seed of the kill delays and inputs.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::XorShift;
use statestore::server::proto::{self, event_store_client::EventStoreClient};
use tonic::transport::Channel;

type Client = EventStoreClient<Channel>;

const SOURCE: &str = "projection-order-totals";
const INITIAL_INPUTS: u64 = 2_000;
const ORDER_STREAMS: u64 = 40;
const CUSTOMERS: u64 = 7;
const KILLS: u32 = 16;
/// Inputs appended before each start of the projection.
const BACKLOG: u64 = 300;
/// The cycle in which the server is killed too.
const SERVER_KILL_CYCLE: u32 = 5;
/// The example's `ID_MASK`: an output's id is its input's id XOR this.
const ID_MASK: u128 = 0x7072_6f6a_6563_0000_0000_0074_6f74_616c;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_projection_outputs_every_input_exactly_once() {
    let seed = seed();
    eprintln!("STATESTORE_PROJECTION_SEED={seed}");
    let mut rng = XorShift::new(seed);
    let projection = projection_binary();
    let dir = common::tempdir();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let proj_log = dir.path().join("projection.log");
    let mut server = Server::start(&data, &log, None).await;
    let next_input = Arc::new(AtomicU64::new(1));

    append_inputs(
        &mut server.client().await,
        &next_input,
        INITIAL_INPUTS,
        seed,
    )
    .await
    .expect("the initial inputs");

    for cycle in 0..KILLS {
        // A backlog, so that the kill is likely to find the projection at work.
        let mut client = server.client().await;
        append_inputs(&mut client, &next_input, BACKLOG, seed ^ u64::from(cycle))
            .await
            .expect("the backlog");
        let mut children = vec![spawn_projection(&projection, &server.url, &proj_log, false)];
        if cycle % 4 == 2 {
            // A second instance of the same projection: the two race, and the loser of each
            // commit gets TRACKING_CONFLICT (or WRONG_EXPECTED_REVISION) and re-reads.
            children.push(spawn_projection(&projection, &server.url, &proj_log, false));
        }
        // More inputs while the projection runs, until the cycle ends.
        let stop = Arc::new(AtomicBool::new(false));
        let appender = tokio::spawn({
            let (next, stop) = (next_input.clone(), stop.clone());
            let seed = seed ^ u64::from(cycle + 1);
            async move {
                while !stop.load(Ordering::SeqCst) {
                    if append_inputs(&mut client, &next, 10, seed).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(5 + rng.below(150))).await;
        if cycle == SERVER_KILL_CYCLE {
            // The projection sees the server go away mid-stream, retries, and finds it again
            // (on the same port when it is still free).
            let port = server.port;
            server.kill();
            server = Server::start(&data, &log, Some(port)).await;
            tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
        }
        for child in &mut children {
            if let Err(status) = child.kill() {
                panic!(
                    "cycle {cycle}: the projection exited by itself ({status}); its log:\n{}",
                    std::fs::read_to_string(&proj_log).unwrap_or_default()
                );
            }
        }
        let mut client = server.client().await;
        eprintln!(
            "cycle {cycle}: projection killed at tracking position {:?}, log at {}",
            tracking_position(&mut client).await,
            last_position(&mut client).await
        );
        stop.store(true, Ordering::SeqCst);
        appender.await.expect("the appender task");
    }

    // The last run follows to the end of the log and stops.
    append_inputs(&mut server.client().await, &next_input, 50, seed)
        .await
        .expect("the last inputs");
    let mut child = spawn_projection(&projection, &server.url, &proj_log, true);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the projection did not finish within 20 s; its log:\n{}",
            std::fs::read_to_string(&proj_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        status.success(),
        "the last projection run: {status}; its log:\n{}",
        std::fs::read_to_string(&proj_log).unwrap_or_default()
    );
    eprintln!(
        "projection log:\n{}",
        std::fs::read_to_string(&proj_log).unwrap_or_default()
    );

    let mut client = server.client().await;
    check_outputs(&mut client).await;
}

/// Compares the outputs with the stored inputs, and the tracking entry with the last input.
async fn check_outputs(client: &mut Client) {
    let inputs = read_category(client, "order").await;
    let outputs = read_category(client, "totals").await;
    assert!(
        inputs.len() as u64 > INITIAL_INPUTS,
        "{} inputs stored",
        inputs.len()
    );
    let by_position: HashMap<u64, &proto::RecordedEvent> =
        inputs.iter().map(|e| (e.position, e)).collect();

    // Exactly one output per input, each carrying its input's id, stream, position and amount.
    let mut seen = HashSet::new();
    let mut per_stream: BTreeMap<String, Vec<(u64, serde_json::Value)>> = BTreeMap::new();
    for out in &outputs {
        let data: serde_json::Value = serde_json::from_slice(&out.data).expect("output JSON");
        let at = data["order_position"].as_u64().expect("order_position");
        let input = by_position
            .get(&at)
            .unwrap_or_else(|| panic!("output {data} names no input"));
        assert!(
            seen.insert(at),
            "input at position {at} has two outputs: {data}"
        );
        let input_data: serde_json::Value = serde_json::from_slice(&input.data).unwrap();
        assert_eq!(data["order"], input.stream.as_str(), "{data}");
        assert_eq!(data["amount"], input_data["amount"], "{data}");
        assert_eq!(
            out.stream,
            format!("totals-{}", input_data["customer"].as_str().unwrap())
        );
        assert_eq!(out.event_type, "OrderTotalUpdated");
        let id = u128::from_be_bytes(input.id[..].try_into().unwrap()) ^ ID_MASK;
        assert_eq!(out.id[..], id.to_be_bytes(), "output id of input {at}");
        per_stream
            .entry(out.stream.clone())
            .or_default()
            .push((out.revision, data));
    }
    let missing: Vec<u64> = inputs
        .iter()
        .map(|e| e.position)
        .filter(|p| !seen.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} inputs have no output, the first at {:?}",
        missing.len(),
        missing.first()
    );

    // Each customer's outputs follow its inputs in log order with dense revisions, and the
    // running total is the sum of the amounts so far.
    for (stream, outs) in &per_stream {
        let mut total = 0;
        let mut previous = 0;
        for (i, (revision, data)) in outs.iter().enumerate() {
            assert_eq!(*revision, i as u64, "{stream}: revisions");
            let at = data["order_position"].as_u64().unwrap();
            assert!(at > previous, "{stream}: outputs out of input order");
            previous = at;
            total += data["amount"].as_u64().unwrap();
            assert_eq!(data["total"], total, "{stream} revision {revision}");
        }
    }

    let last_input = inputs.last().map(|e| e.position);
    assert_eq!(tracking_position(client).await, last_input);
}

async fn tracking_position(client: &mut Client) -> Option<u64> {
    let response = client
        .get_tracking(proto::GetTrackingRequest {
            source: SOURCE.into(),
        })
        .await
        .expect("GetTracking")
        .into_inner();
    response
        .entry
        .filter(|_| response.found)
        .map(|e| e.position)
}

async fn last_position(client: &mut Client) -> u64 {
    let info = client.server_info(proto::ServerInfoRequest {}).await;
    info.expect("ServerInfo").into_inner().last_position
}

/// Every event of a category, in log order.
async fn read_category(client: &mut Client, category: &str) -> Vec<proto::RecordedEvent> {
    let request = proto::ReadAllRequest {
        from_position: None,
        direction: proto::Direction::Forwards.into(),
        max_count: 0,
        filter: Some(proto::EventFilter {
            stream: Some(proto::event_filter::Stream::Category(category.into())),
            event_types: Vec::new(),
        }),
    };
    let mut pages = client
        .read_all(request)
        .await
        .expect("ReadAll")
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = pages.message().await.expect("a ReadAll page") {
        out.extend(page.events);
    }
    out
}

/// Appends `count` inputs, a few at a time to random order streams; ids and amounts follow
/// from the input's number.
async fn append_inputs(
    client: &mut Client,
    next: &AtomicU64,
    count: u64,
    seed: u64,
) -> Result<(), tonic::Status> {
    let mut rng = XorShift::new(seed ^ next.load(Ordering::SeqCst));
    let mut left = count;
    while left > 0 {
        let n = left.min(1 + rng.below(10));
        left -= n;
        let events = (0..n)
            .map(|_| {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let data = format!(
                    "{{\"customer\":\"c{}\",\"amount\":{}}}",
                    rng.below(CUSTOMERS),
                    1 + k % 97
                );
                proto::EventData {
                    id: common::id(k).as_bytes().to_vec().into(),
                    event_type: "OrderPlaced".into(),
                    content_type: proto::ContentType::Json.into(),
                    data: data.into(),
                    metadata: Default::default(),
                }
            })
            .collect();
        client
            .append(proto::AppendRequest {
                stream: format!("order-{}", rng.below(ORDER_STREAMS)),
                expected: None,
                events,
                tracking: None,
            })
            .await?;
    }
    Ok(())
}

/// A child process, killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Killed(Child);

impl Killed {
    /// SIGKILL, and waits; `Err` with its exit status if it had exited by itself.
    fn kill(&mut self) -> Result<(), std::process::ExitStatus> {
        if let Some(status) = self.0.try_wait().expect("try_wait") {
            return Err(status);
        }
        self.0.kill().expect("SIGKILL the projection");
        self.0.wait().expect("wait for the projection");
        Ok(())
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_projection(binary: &Path, url: &str, log: &Path, once: bool) -> Killed {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the projection log");
    let mut command = Command::new(binary);
    command.args(["--target", url, "--batch", "5"]);
    if once {
        command.arg("--once");
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn the projection");
    Killed(child)
}

/// The example's binary, next to the server's: `target/{profile}/examples/projection`. Cargo
/// builds examples for a plain `cargo test`, but not for `cargo test --test projection`, so it
/// is built here (a no-op when it is up to date) with the profile of this test.
fn projection_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_statestore"));
    let profile_dir = bin.parent().expect("the binary's directory");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--example", "projection"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    // The variables cargo sets for this test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR, ...)
    // are read by build scripts of dependencies: passed on, they would make this build redo
    // them, and the next ordinary build redo them again.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if (key_text.starts_with("CARGO_") && key_text != "CARGO_HOME") || key_text == "OUT_DIR" {
            build.env_remove(&key);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        build.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = build
        .status()
        .expect("run cargo build --example projection");
    assert!(
        status.success(),
        "cargo build --example projection: {status}"
    );
    let path = profile_dir.join("examples").join("projection");
    assert!(path.exists(), "{} exists", path.display());
    path
}

fn seed() -> u64 {
    std::env::var("STATESTORE_PROJECTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A running `statestore serve`, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    port: u16,
    url: String,
}

impl Server {
    /// Starts the binary on `dir` (on `port` if given and free, else a free one) and waits
    /// until it answers.
    async fn start(dir: &Path, log: &Path, port: Option<u16>) -> Server {
        for attempt in 0..10 {
            let port = match port {
                Some(p) if attempt < 5 => p,
                _ => std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a free port")
                    .port(),
            };
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
                .args(["--segment-bytes", "1048576", "--append-bytes-max", "262144"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn the statestore binary");
            let mut server = Server {
                child,
                port,
                url: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = server.child.try_wait().expect("try_wait") {
                    eprintln!("attempt {attempt}: the server exited at start ({status})");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                if let Ok(mut client) = Client::connect(server.url.clone()).await
                    && let Ok(info) = client.server_info(proto::ServerInfoRequest {}).await
                {
                    assert_eq!(info.into_inner().data_dir, dir.display().to_string());
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server did not start in 30 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "the server could not start; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    async fn client(&self) -> Client {
        Client::connect(self.url.clone())
            .await
            .expect("connect to the server")
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("wait for the server");
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
