//! Aggregate snapshots over real gRPC: SaveSnapshot, LoadSnapshot (round trip, the at-or-below
//! rule, an absent snapshot), ReadStream with `from_snapshot`, and the error mappings (code,
//! `ErrorInfo` reason, domain and metadata).

mod common;

use common::server::{TestServer, assert_status, expect_err};
use statestore::server::ServerConfig;
use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::proto::{
    self, AppendRequest, EventData, LoadSnapshotRequest, ReadStreamRequest, ReadStreamResponse,
    SaveSnapshotRequest, Snapshot,
};
use statestore::service::ServiceConfig;
use statestore::{Config, Revision};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A served store with a connected client. Fields drop in order: client, server, directory.
struct Fixture {
    client: EventStoreClient<Channel>,
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn start_with(config: Config, server_config: ServerConfig) -> Fixture {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), config, server_config).await;
    let client = server.client().await;
    Fixture {
        client,
        server,
        _dir: dir,
    }
}

async fn start() -> Fixture {
    start_with(common::config(), ServerConfig::default()).await
}

/// Appends `n` JSON events to `stream`.
async fn append(c: &mut EventStoreClient<Channel>, stream: &str, n: u64) {
    let events = (0..n)
        .map(|i| EventData {
            id: Default::default(),
            event_type: "Happened".into(),
            content_type: proto::ContentType::Json as i32,
            data: format!("{{\"i\":{i}}}").into_bytes().into(),
            metadata: Default::default(),
        })
        .collect();
    c.append(AppendRequest {
        stream: stream.into(),
        expected: None,
        events,
        tracking: None,
    })
    .await
    .expect("append");
}

fn state(stream: &str, revision: u64) -> Vec<u8> {
    let mut v = format!("{stream}@{revision}").into_bytes();
    v.extend_from_slice(&[0, 0xFF, 1, 2, 3]);
    v
}

fn save_req(stream: &str, revision: u64, schema: &str, data: Vec<u8>) -> SaveSnapshotRequest {
    SaveSnapshotRequest {
        stream: stream.into(),
        revision,
        schema: schema.into(),
        data: data.into(),
    }
}

async fn save(c: &mut EventStoreClient<Channel>, stream: &str, revision: u64) {
    c.save_snapshot(save_req(stream, revision, "v1", state(stream, revision)))
        .await
        .unwrap_or_else(|s| panic!("save {stream}@{revision}: {s:?}"));
}

async fn load(
    c: &mut EventStoreClient<Channel>,
    stream: &str,
    at_or_below: Option<u64>,
) -> Result<Option<Snapshot>, Status> {
    Ok(c.load_snapshot(LoadSnapshotRequest {
        stream: stream.into(),
        at_or_below,
    })
    .await?
    .into_inner()
    .snapshot)
}

async fn loaded_revision(
    c: &mut EventStoreClient<Channel>,
    stream: &str,
    at_or_below: Option<u64>,
) -> Option<u64> {
    load(c, stream, at_or_below)
        .await
        .expect("load")
        .map(|s| s.revision)
}

fn from_snapshot(stream: &str, max_count: u64) -> ReadStreamRequest {
    ReadStreamRequest {
        stream: stream.into(),
        from_revision: None,
        direction: proto::Direction::Forwards as i32,
        max_count,
        from_snapshot: true,
    }
}

/// Every message of a ReadStream call.
async fn read_messages(
    c: &mut EventStoreClient<Channel>,
    request: ReadStreamRequest,
) -> Result<Vec<ReadStreamResponse>, Status> {
    let mut stream = c.read_stream(request).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.next().await {
        messages.push(m?);
    }
    Ok(messages)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_load_round_trip() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "order-42", 5).await;
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    c.save_snapshot(save_req("order-42", 3, "order.v2", data.clone()))
        .await
        .expect("save");
    let s = load(c, "order-42", None)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(s.stream, "order-42");
    assert_eq!(s.revision, 3);
    assert_eq!(s.schema, "order.v2");
    assert_eq!(&s.data[..], &data[..]);
    assert!(s.timestamp_us > 0);
    // The same snapshot through the engine.
    let engine = f
        .server
        .store
        .load_snapshot("order-42", Revision::END)
        .expect("engine load")
        .expect("a snapshot");
    assert_eq!(engine.timestamp_us, s.timestamp_us);
    assert_eq!(&engine.data[..], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_gives_the_newest_at_or_below_and_unset_when_none() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "s", 31).await;
    // A stream without snapshots: unset, not an error.
    assert_eq!(load(c, "s", None).await.expect("load"), None);
    for r in [10, 20, 30] {
        save(c, "s", r).await;
    }
    assert_eq!(loaded_revision(c, "s", Some(25)).await, Some(20));
    assert_eq!(loaded_revision(c, "s", Some(9)).await, None);
    assert_eq!(loaded_revision(c, "s", Some(20)).await, Some(20));
    assert_eq!(loaded_revision(c, "s", None).await, Some(30));
    assert_eq!(loaded_revision(c, "s", Some(u64::MAX)).await, Some(30));
    let s = load(c, "s", Some(25)).await.expect("load").expect("one");
    assert_eq!(&s.data[..], &state("s", 20)[..]);
    // Saving again at a revision replaces the snapshot there.
    c.save_snapshot(save_req("s", 20, "v2", b"replaced".to_vec()))
        .await
        .expect("save");
    let s = load(c, "s", Some(25)).await.expect("load").expect("one");
    assert_eq!((s.schema.as_str(), &s.data[..]), ("v2", &b"replaced"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_from_snapshot_sends_the_snapshot_then_the_events_after_it() {
    // Small pages, so the events after the snapshot come in several messages.
    let mut f = start_with(
        common::config(),
        ServerConfig {
            service: ServiceConfig {
                read_page_events: 4,
                ..ServiceConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    let c = &mut f.client;
    append(c, "s", 20).await;
    append(c, "other", 3).await;
    append(c, "s", 10).await;

    // No snapshot: a first message without one, then every event.
    let messages = read_messages(c, from_snapshot("s", 0)).await.expect("read");
    let first = messages.first().expect("a first message");
    assert!(first.snapshot.is_none() && first.events.is_empty());
    let revisions: Vec<u64> = messages[1..]
        .iter()
        .flat_map(|m| m.events.iter().map(|e| e.revision))
        .collect();
    assert_eq!(revisions, (0..30).collect::<Vec<_>>());

    save(c, "s", 12).await;
    save(c, "s", 17).await;
    let messages = read_messages(c, from_snapshot("s", 0)).await.expect("read");
    let snapshot = messages[0].snapshot.clone().expect("the snapshot first");
    assert!(messages[0].events.is_empty());
    assert_eq!(snapshot.revision, 17);
    assert_eq!(&snapshot.data[..], &state("s", 17)[..]);
    assert!(
        messages.len() > 3,
        "events in pages: {} messages",
        messages.len()
    );
    assert!(messages[1..].iter().all(|m| m.snapshot.is_none()));
    let events: Vec<_> = messages[1..]
        .iter()
        .flat_map(|m| m.events.clone())
        .collect();
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (18..30).collect::<Vec<_>>()
    );
    // The same events as a plain read from revision 18.
    let plain = read_messages(
        c,
        ReadStreamRequest {
            stream: "s".into(),
            from_revision: Some(18),
            direction: proto::Direction::Forwards as i32,
            max_count: 0,
            from_snapshot: false,
        },
    )
    .await
    .expect("plain read");
    let plain: Vec<_> = plain.into_iter().flat_map(|m| m.events).collect();
    assert_eq!(events, plain);

    // max_count counts the events after the snapshot.
    let messages = read_messages(c, from_snapshot("s", 6)).await.expect("read");
    assert_eq!(messages[0].snapshot.as_ref().map(|s| s.revision), Some(17));
    let revisions: Vec<u64> = messages[1..]
        .iter()
        .flat_map(|m| m.events.iter().map(|e| e.revision))
        .collect();
    assert_eq!(revisions, (18..24).collect::<Vec<_>>());

    // A snapshot at the newest event: nothing follows it.
    save(c, "s", 29).await;
    let messages = read_messages(c, from_snapshot("s", 0)).await.expect("read");
    assert_eq!(messages[0].snapshot.as_ref().map(|s| s.revision), Some(29));
    assert!(messages.iter().all(|m| m.events.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_not_found() {
    let mut f = start().await;
    let c = &mut f.client;
    let stream_missing = [("stream", "missing")];
    let s = expect_err(c.save_snapshot(save_req("missing", 0, "v1", vec![1])).await);
    assert_status(&s, Code::NotFound, "STREAM_NOT_FOUND", &stream_missing);
    let s = expect_err(load(c, "missing", None).await);
    assert_status(&s, Code::NotFound, "STREAM_NOT_FOUND", &stream_missing);
    let s = expect_err(read_messages(c, from_snapshot("missing", 0)).await);
    assert_status(&s, Code::NotFound, "STREAM_NOT_FOUND", &stream_missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_saves_are_invalid_argument_or_resource_exhausted() {
    let mut f = start_with(
        Config {
            snapshot_bytes_max: 1000,
            ..common::config()
        },
        ServerConfig::default(),
    )
    .await;
    let c = &mut f.client;
    append(c, "s", 10).await;

    // A revision past the stream's current one.
    let s = expect_err(c.save_snapshot(save_req("s", 10, "v1", vec![1])).await);
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    assert!(s.message().contains("current revision is 9"), "{s:?}");
    // Schema tags: empty, a control character, too long.
    let s = expect_err(c.save_snapshot(save_req("s", 5, "", vec![1])).await);
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    let s = expect_err(c.save_snapshot(save_req("s", 5, "v\u{7}", vec![1])).await);
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    let long = "x".repeat(257);
    let s = expect_err(c.save_snapshot(save_req("s", 5, &long, vec![1])).await);
    assert_status(
        &s,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[
            ("what", "snapshot_schema_bytes"),
            ("limit", "256"),
            ("actual", "257"),
        ],
    );
    // Data over snapshot_bytes_max.
    let s = expect_err(c.save_snapshot(save_req("s", 5, "v1", vec![7; 1001])).await);
    assert_status(
        &s,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
        &[
            ("what", "snapshot_bytes"),
            ("limit", "1000"),
            ("actual", "1001"),
        ],
    );
    // Nothing of that was stored.
    assert_eq!(load(c, "s", None).await.expect("load"), None);

    // from_snapshot contradicts a start revision and a backwards read.
    let mut request = from_snapshot("s", 0);
    request.from_revision = Some(3);
    let s = expect_err(read_messages(c, request).await);
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    let mut request = from_snapshot("s", 0);
    request.direction = proto::Direction::Backwards as i32;
    let s = expect_err(read_messages(c, request).await);
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_too_large_to_send_is_resource_exhausted() {
    // The store accepts larger snapshots than the server can send back: a library user saved
    // one, or the server was restarted with a smaller message limit.
    let mut f = start_with(
        common::config(),
        ServerConfig {
            message_bytes_max: 64 << 10,
            ..ServerConfig::default()
        },
    )
    .await;
    append(&mut f.client, "big", 1).await;
    f.server
        .store
        .save_snapshot("big", Revision(0), "v1", vec![1u8; 100_000].into())
        .expect("save through the engine");
    let metadata = [
        ("what", "response_bytes"),
        ("limit", "65536"),
        ("actual", "100069"),
    ];
    let s = expect_err(load(&mut f.client, "big", None).await);
    assert_status(&s, Code::ResourceExhausted, "LIMIT_EXCEEDED", &metadata);
    let s = expect_err(read_messages(&mut f.client, from_snapshot("big", 0)).await);
    assert_status(&s, Code::ResourceExhausted, "LIMIT_EXCEEDED", &metadata);
}
