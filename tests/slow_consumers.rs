//! Clients that never read: thousands of subscribers and hundreds of readers that open their
//! call and stop. The server (a separate process, so its memory is measured alone) must stay
//! within a stated bound and keep serving, and every acknowledged event must stay readable.
//!
//! Found by 5,000 never-reading subscribers plus 7 appends of 1,000 small events, which took
//! the server from 74 MB to 7.3 GB, and 200 never-reading ReadStream calls over 1 MiB events
//! (2.1 GB): buffers counted messages, not bytes, and nothing capped the total.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::proto::{self, expected_revision};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// The bound the server's resident memory must stay under.
const RSS_BOUND_BYTES: u64 = 512 << 20;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_statestore"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--segment-bytes", "33554432"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the statestore binary");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while EventStoreClient::connect(server.url.clone()).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn events(first: u64, n: u64, data_bytes: usize) -> Vec<proto::EventData> {
    (first..first + n)
        .map(|i| proto::EventData {
            id: uuid::Uuid::from_u128(u128::from(i) + 1)
                .as_bytes()
                .to_vec()
                .into(),
            event_type: "Happened".into(),
            content_type: proto::ContentType::Binary as i32,
            data: vec![(i % 251) as u8; data_bytes].into(),
            metadata: Default::default(),
        })
        .collect()
}

fn append(stream: &str, events: Vec<proto::EventData>) -> proto::AppendRequest {
    proto::AppendRequest {
        stream: stream.into(),
        expected: Some(proto::ExpectedRevision {
            kind: Some(expected_revision::Kind::Any(proto::Empty {})),
        }),
        events,
        tracking: None,
    }
}

/// Every event of the log, read back and counted by id.
async fn count_all(client: &mut EventStoreClient<Channel>) -> u64 {
    let mut pages = client
        .read_all(proto::ReadAllRequest {
            max_count: u64::MAX,
            ..Default::default()
        })
        .await
        .expect("read all")
        .into_inner();
    let mut n = 0;
    while let Some(page) = pages.next().await {
        n += page.expect("page").events.len() as u64;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_subscribers_that_never_read_stay_within_the_memory_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let before = rss_bytes(server.child.id());
    // 5,000 subscriptions over 50 connections, none ever read.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut c = EventStoreClient::new(channel(&server.url).await);
        for _ in 0..100 {
            let sub = c
                .subscribe(proto::SubscribeRequest {
                    target: Some(proto::subscribe_request::Target::All(
                        proto::SubscribeAll::default(),
                    )),
                })
                .await
                .expect("subscribe")
                .into_inner();
            held.push(sub);
        }
    }
    let subscribed = rss_bytes(server.child.id());
    let mut writer = EventStoreClient::new(channel(&server.url).await);
    for batch in 0..7u64 {
        writer
            .append(append("order-1", events(batch * 1000, 1000, 100)))
            .await
            .expect("append");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_bytes(server.child.id());
    eprintln!(
        "5000 never-reading subscribers: server RSS {} MiB before, {} MiB subscribed, {} MiB \
         after 7,000 events",
        before >> 20,
        subscribed >> 20,
        after >> 20
    );
    assert!(after < RSS_BOUND_BYTES, "server RSS {} MiB", after >> 20);
    // Still serving, and nothing acknowledged is lost. A reader that reads is not kept
    // waiting behind the subscribers that do not: they are ended once they have taken nothing
    // for the stall timeout (10 s). The bound below is for liveness, not speed.
    let read = tokio::time::timeout(Duration::from_secs(120), count_all(&mut writer)).await;
    assert_eq!(read.expect("a healthy reader is served"), 7000);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_readers_that_never_read_stay_within_the_memory_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let mut writer = EventStoreClient::new(channel(&server.url).await);
    // Twenty events of ~1 MiB (the largest an event may be).
    for i in 0..20u64 {
        writer
            .append(append("big-1", events(i, 1, (1 << 20) - 64)))
            .await
            .expect("append");
    }
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c =
            EventStoreClient::new(channel(&server.url).await).max_decoding_message_size(64 << 20);
        for _ in 0..10 {
            let read = c
                .read_stream(proto::ReadStreamRequest {
                    stream: "big-1".into(),
                    max_count: 1000,
                    ..Default::default()
                })
                .await
                .expect("read")
                .into_inner();
            held.push(read);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_bytes(server.child.id());
    eprintln!(
        "200 never-reading readers of 1 MiB events: server RSS {} MiB",
        after >> 20
    );
    assert!(after < RSS_BOUND_BYTES, "server RSS {} MiB", after >> 20);
    writer
        .append(append("order-1", events(100, 1, 10)))
        .await
        .expect("still serving");
    drop(held);
}
