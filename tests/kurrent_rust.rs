//! The KurrentDB (EventStoreDB) client-protocol adapter, driven by the official Rust client
//! (the `kurrentdb` crate) against a real server on 127.0.0.1:0: appends with every expected
//! revision, idempotent retries, stream and `$all` reads both ways, filters, catch-up
//! subscriptions with checkpoints, stream metadata, soft delete and tombstone, the round trip
//! with the native API, batch append, server features, gossip and persistent-subscription
//! listing. The behaviour asserted is the one of /work/shared/reference/kurrentdb-protocol.md.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::server::TestServer;
use kurrentdb::{
    Acl, AppendToStreamOptions, Client, ClientSettings, CurrentRevision, DeleteStreamOptions,
    Error, EventData, Position, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamAclBuilder,
    StreamMetadata, StreamMetadataResult, StreamPosition, StreamState, SubscribeToAllOptions,
    SubscribeToStreamOptions, Subscription, SubscriptionEvent, SubscriptionFilter,
    TombstoneStreamOptions, WriteResult,
};
use serde_json::json;
use statestore::Store;
use statestore::server::proto as native;
use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::{self, ServerConfig};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------------

/// How long any single await may take before the test fails (a hang fails fast).
const STEP: Duration = Duration::from_secs(10);

/// The tombstone's revision as clients see it.
const TOMBSTONE_REVISION: u64 = i64::MAX as u64;

/// A served store with a connected KurrentDB client. Fields drop in order: client, server,
/// directory.
struct Fixture {
    client: Client,
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    start_with_scheme("esdb").await
}

async fn start_with_scheme(scheme: &str) -> Fixture {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), common::config(), ServerConfig::default()).await;
    let client = kurrent_client(&format!("{scheme}://{}?tls=false", server.addr));
    Fixture {
        client,
        server,
        _dir: dir,
    }
}

fn kurrent_client(connection_string: &str) -> Client {
    let settings: ClientSettings = connection_string
        .parse()
        .unwrap_or_else(|e| panic!("parse {connection_string}: {e:?}"));
    Client::new(settings).expect("create the KurrentDB client")
}

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

fn id(n: u64) -> Uuid {
    common::id(n)
}

/// An event to append, and what reading it back must give.
#[derive(Clone, Debug)]
struct Proposed {
    id: Uuid,
    event_type: String,
    data: Vec<u8>,
    custom_metadata: Vec<u8>,
    json: bool,
}

impl Proposed {
    /// A JSON event `{"n":n}` with the deterministic id `n` and no custom metadata.
    fn json(n: u64, event_type: &str) -> Proposed {
        Proposed {
            id: id(n),
            event_type: event_type.to_string(),
            data: serde_json::to_vec(&json!({ "n": n })).expect("json"),
            custom_metadata: Vec::new(),
            json: true,
        }
    }

    fn with_metadata(mut self, custom: &[u8]) -> Proposed {
        self.custom_metadata = custom.to_vec();
        self
    }

    fn binary(n: u64, event_type: &str, data: &[u8], custom: &[u8]) -> Proposed {
        Proposed {
            id: id(n),
            event_type: event_type.to_string(),
            data: data.to_vec(),
            custom_metadata: custom.to_vec(),
            json: false,
        }
    }

    fn event_data(&self) -> EventData {
        let e = if self.json {
            let value: serde_json::Value =
                serde_json::from_slice(&self.data).expect("JSON test data");
            EventData::json(&self.event_type, &value).expect("serialise")
        } else {
            EventData::binary(&self.event_type, Bytes::from(self.data.clone()))
        };
        let e = e.id(self.id);
        if self.custom_metadata.is_empty() {
            e
        } else {
            e.metadata(Bytes::from(self.custom_metadata.clone()))
        }
    }

    fn at(&self, stream: &str, revision: u64, position: u64) -> Want {
        Want {
            stream: stream.to_string(),
            revision,
            position,
            proposed: self.clone(),
        }
    }
}

/// An event as a read must return it.
#[derive(Clone, Debug)]
struct Want {
    stream: String,
    revision: u64,
    position: u64,
    proposed: Proposed,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Asserts every field a client sees: id, stream, type, data, custom metadata, content type
/// (both `is_json` and the `content-type` entry), revision, position (commit = prepare) and a
/// creation time of about now.
#[track_caller]
fn assert_event(actual: &RecordedEvent, want: &Want) {
    let ctx = format!(
        "{}@{} (position {})",
        want.stream, want.revision, want.position
    );
    assert_eq!(actual.stream_id(), want.stream, "{ctx}: stream");
    assert_eq!(actual.revision, want.revision, "{ctx}: revision");
    assert_eq!(
        actual.position,
        Position {
            commit: want.position,
            prepare: want.position
        },
        "{ctx}: position"
    );
    assert_eq!(actual.id, want.proposed.id, "{ctx}: id");
    assert_eq!(actual.event_type, want.proposed.event_type, "{ctx}: type");
    assert_eq!(&actual.data[..], &want.proposed.data[..], "{ctx}: data");
    assert_eq!(
        &actual.custom_metadata[..],
        &want.proposed.custom_metadata[..],
        "{ctx}: custom metadata"
    );
    assert_eq!(actual.is_json, want.proposed.json, "{ctx}: is_json");
    let content_type = if want.proposed.json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    assert_eq!(
        actual.metadata.get("content-type").map(String::as_str),
        Some(content_type),
        "{ctx}: content-type in {:?}",
        actual.metadata
    );
    let created = actual.created.timestamp();
    assert!(
        (created - now_secs()).abs() <= 120,
        "{ctx}: created {} is not about now ({:?})",
        actual.created,
        actual.metadata.get("created")
    );
}

#[track_caller]
fn assert_events(actual: &[RecordedEvent], want: &[&Want]) {
    let got: Vec<(String, u64, u64)> = actual
        .iter()
        .map(|e| (e.stream_id().to_string(), e.revision, e.position.commit))
        .collect();
    let expected: Vec<(String, u64, u64)> = want
        .iter()
        .map(|w| (w.stream.clone(), w.revision, w.position))
        .collect();
    assert_eq!(
        got, expected,
        "(stream, revision, position) of the events read"
    );
    for (a, w) in actual.iter().zip(want) {
        assert_event(a, w);
    }
}

fn reversed<'a>(v: &[&'a Want]) -> Vec<&'a Want> {
    v.iter().rev().copied().collect()
}

fn options(state: StreamState) -> AppendToStreamOptions {
    AppendToStreamOptions::default().stream_state(state)
}

async fn append(
    client: &Client,
    stream: &str,
    state: StreamState,
    events: &[&Proposed],
) -> kurrentdb::Result<WriteResult> {
    let data: Vec<EventData> = events.iter().map(|p| p.event_data()).collect();
    within(
        &format!("append to {stream}"),
        client.append_to_stream(stream, &options(state), data),
    )
    .await
}

/// Appends one event with `Any` and returns it as a read must show it.
async fn put(client: &Client, stream: &str, proposed: Proposed) -> Want {
    let r = append(client, stream, StreamState::Any, &[&proposed])
        .await
        .unwrap_or_else(|e| panic!("append to {stream}: {e:?}"));
    assert_eq!(
        r.position.commit, r.position.prepare,
        "commit = prepare in {r:?}"
    );
    proposed.at(stream, r.next_expected_version, r.position.commit)
}

#[track_caller]
fn assert_wrong_version(
    result: kurrentdb::Result<WriteResult>,
    expected: StreamState,
    current: CurrentRevision,
) {
    match result {
        Err(Error::WrongExpectedVersion {
            expected: e,
            current: c,
        }) => {
            assert_eq!(e, expected, "expected field of the wrong-version error");
            assert_eq!(c, current, "current field of the wrong-version error");
        }
        other => panic!(
            "expected WrongExpectedVersion {{ expected: {expected:?}, current: {current:?} }}, \
             got {other:?}"
        ),
    }
}

async fn read_stream(
    client: &Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> kurrentdb::Result<Vec<RecordedEvent>> {
    within(&format!("read {stream}"), async {
        let mut s = client.read_stream(stream, options).await?;
        let mut out = Vec::new();
        while let Some(e) = s.next().await? {
            out.push(e.event.expect("a read event carries its event"));
        }
        Ok(out)
    })
    .await
}

/// The revisions of a whole forwards read of `stream`.
async fn revisions(client: &Client, stream: &str) -> Vec<u64> {
    read_stream(client, stream, &ReadStreamOptions::default())
        .await
        .unwrap_or_else(|e| panic!("read {stream}: {e:?}"))
        .iter()
        .map(|e| e.revision)
        .collect()
}

async fn read_all(
    client: &Client,
    options: &ReadAllOptions,
) -> kurrentdb::Result<Vec<RecordedEvent>> {
    within("read $all", async {
        let mut s = client.read_all(options).await?;
        let mut out = Vec::new();
        while let Some(e) = s.next().await? {
            out.push(e.event.expect("a read event carries its event"));
        }
        Ok(out)
    })
    .await
}

fn pos(p: u64) -> StreamPosition<Position> {
    StreamPosition::Position(Position {
        commit: p,
        prepare: p,
    })
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: kurrentdb::Result<T>, what: &str) {
    match r {
        Err(Error::ResourceNotFound) => {}
        other => panic!("{what}: expected ResourceNotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_deleted<T: std::fmt::Debug>(r: kurrentdb::Result<T>, what: &str) {
    match r {
        Err(Error::ResourceDeleted) => {}
        other => panic!("{what}: expected ResourceDeleted, got {other:?}"),
    }
}

/// The delete/tombstone wrong-version error as the Rust client shows it: a generic gRPC error
/// carrying KurrentDB's exact text (other clients parse it).
#[track_caller]
fn assert_delete_wrong_version<T: std::fmt::Debug>(
    r: kurrentdb::Result<T>,
    stream: &str,
    expected: i64,
    actual: i64,
) {
    let text = format!(
        "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: \
         {expected}, Actual version: {actual}"
    );
    match r {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(
                code as i32,
                tonic::Code::FailedPrecondition as i32,
                "code ({message})"
            );
            assert_eq!(message, text);
        }
        other => panic!("expected FAILED_PRECONDITION '{text}', got {other:?}"),
    }
}

async fn sub_next(sub: &mut Subscription, what: &str) -> kurrentdb::Result<SubscriptionEvent> {
    within(what, sub.next_subscription_event()).await
}

async fn expect_confirmed(sub: &mut Subscription) {
    match sub_next(sub, "the subscription confirmation").await {
        Ok(SubscriptionEvent::Confirmed(id)) => {
            assert!(!id.is_empty(), "empty subscription id")
        }
        other => panic!("the first message must be the confirmation, got {other:?}"),
    }
}

/// What a subscription delivered up to some point.
#[derive(Default, Debug)]
struct Received {
    events: Vec<RecordedEvent>,
    checkpoints: Vec<Position>,
    caught_up: Option<Option<kurrentdb::CaughtUp>>,
}

/// Reads messages until caught-up: the events and checkpoints of the catch-up phase.
async fn until_caught_up(sub: &mut Subscription) -> Received {
    let mut r = Received::default();
    loop {
        match sub_next(sub, "catch-up messages").await {
            Ok(SubscriptionEvent::EventAppeared(e)) => r.events.push(e.event.expect("event")),
            Ok(SubscriptionEvent::Checkpoint(p)) => r.checkpoints.push(p),
            Ok(SubscriptionEvent::CaughtUp(c)) => {
                r.caught_up = Some(c);
                return r;
            }
            Ok(SubscriptionEvent::Confirmed(_)) => panic!("a second confirmation"),
            Ok(SubscriptionEvent::FellBehind(f)) => {
                panic!("fell_behind must not be sent to clients: {f:?}")
            }
            Ok(other) => panic!("unexpected subscription message {other:?}"),
            Err(e) => panic!("subscription failed during catch-up: {e:?}"),
        }
    }
}

/// Reads messages until `n` events have arrived (recording checkpoints on the way, in `into`).
async fn next_events(sub: &mut Subscription, n: usize, into: &mut Received) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match sub_next(sub, "live messages").await {
            Ok(SubscriptionEvent::EventAppeared(e)) => out.push(e.event.expect("event")),
            Ok(SubscriptionEvent::Checkpoint(p)) => into.checkpoints.push(p),
            Ok(SubscriptionEvent::CaughtUp(_)) => {}
            Ok(SubscriptionEvent::FellBehind(f)) => {
                panic!("fell_behind must not be sent to clients: {f:?}")
            }
            Ok(other) => panic!("unexpected subscription message {other:?}"),
            Err(e) => panic!("subscription failed while live: {e:?}"),
        }
    }
    out
}

#[track_caller]
fn assert_revisions(events: &[RecordedEvent], want: &[u64]) {
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        want,
        "revisions"
    );
}

fn metadata_of(r: StreamMetadataResult) -> (u64, StreamMetadata) {
    match r {
        StreamMetadataResult::Success(v) => (v.version(), v.metadata().clone()),
        other => panic!("expected stream metadata, got {other:?}"),
    }
}

async fn get_metadata(client: &Client, stream: &str) -> kurrentdb::Result<StreamMetadataResult> {
    within(
        &format!("get metadata of {stream}"),
        client.get_stream_metadata(stream, &ReadStreamOptions::default()),
    )
    .await
}

async fn set_metadata(
    client: &Client,
    stream: &str,
    state: StreamState,
    metadata: &StreamMetadata,
) -> kurrentdb::Result<WriteResult> {
    within(
        &format!("set metadata of {stream}"),
        client.set_stream_metadata(stream, &options(state), metadata),
    )
    .await
}

async fn delete(client: &Client, stream: &str, state: StreamState) -> kurrentdb::Result<()> {
    let p = within(
        &format!("delete {stream}"),
        client.delete_stream(stream, &DeleteStreamOptions::default().stream_state(state)),
    )
    .await?;
    assert!(p.is_some_and(|p| p.commit > 0), "delete position {p:?}");
    Ok(())
}

async fn tombstone(client: &Client, stream: &str, state: StreamState) -> kurrentdb::Result<()> {
    let p = within(
        &format!("tombstone {stream}"),
        client.tombstone_stream(
            stream,
            &TombstoneStreamOptions::default().stream_state(state),
        ),
    )
    .await?;
    assert!(p.is_some_and(|p| p.commit > 0), "tombstone position {p:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Appends with every expected revision
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_with_every_expected_revision() {
    let fx = start().await;
    let c = &fx.client;
    let p: Vec<Proposed> = (0..12).map(|n| Proposed::json(n, "Deposited")).collect();

    // NoStream on a new stream: two events, revisions 0 and 1.
    let r = append(c, "acct-1", StreamState::NoStream, &[&p[0], &p[1]])
        .await
        .expect("no stream on a new stream");
    assert_eq!(r.next_expected_version, 1);
    assert_eq!(r.position.commit, r.position.prepare);
    assert!(r.position.commit > 0, "first position is > 0: {r:?}");
    let mut last = r.position.commit;
    let mut written = vec![
        p[0].at("acct-1", 0, r.position.commit - 1),
        p[1].at("acct-1", 1, r.position.commit),
    ];

    // NoStream again: the stream exists.
    assert_wrong_version(
        append(c, "acct-1", StreamState::NoStream, &[&p[2]]).await,
        StreamState::NoStream,
        CurrentRevision::Current(1),
    );

    // Exact, right.
    let r = append(c, "acct-1", StreamState::StreamRevision(1), &[&p[3]])
        .await
        .expect("exact 1");
    assert_eq!(r.next_expected_version, 2);
    assert!(r.position.commit > last, "positions increase: {r:?}");
    last = r.position.commit;
    written.push(p[3].at("acct-1", 2, last));

    // Exact, stale and ahead.
    assert_wrong_version(
        append(c, "acct-1", StreamState::StreamRevision(0), &[&p[4]]).await,
        StreamState::StreamRevision(0),
        CurrentRevision::Current(2),
    );
    assert_wrong_version(
        append(c, "acct-1", StreamState::StreamRevision(5), &[&p[4]]).await,
        StreamState::StreamRevision(5),
        CurrentRevision::Current(2),
    );

    // StreamExists on an existing stream, then on a missing one.
    let r = append(c, "acct-1", StreamState::StreamExists, &[&p[5]])
        .await
        .expect("stream exists");
    assert_eq!(r.next_expected_version, 3);
    assert!(r.position.commit > last);
    last = r.position.commit;
    written.push(p[5].at("acct-1", 3, last));
    assert_wrong_version(
        append(c, "acct-none", StreamState::StreamExists, &[&p[6]]).await,
        StreamState::StreamExists,
        CurrentRevision::NoStream,
    );
    assert_wrong_version(
        append(c, "acct-none", StreamState::StreamRevision(0), &[&p[6]]).await,
        StreamState::StreamRevision(0),
        CurrentRevision::NoStream,
    );

    // Any, existing and new.
    let r = append(c, "acct-1", StreamState::Any, &[&p[7], &p[8]])
        .await
        .expect("any on an existing stream");
    assert_eq!(r.next_expected_version, 5);
    assert!(r.position.commit > last);
    last = r.position.commit;
    written.push(p[7].at("acct-1", 4, last - 1));
    written.push(p[8].at("acct-1", 5, last));
    let r = append(c, "acct-2", StreamState::Any, &[&p[9]])
        .await
        .expect("any on a new stream");
    assert_eq!(r.next_expected_version, 0);
    assert!(r.position.commit > last);
    let acct2 = p[9].at("acct-2", 0, r.position.commit);

    // The failures wrote nothing; every success reads back as written, its last event at the
    // position the append returned.
    let events = read_stream(c, "acct-1", &ReadStreamOptions::default())
        .await
        .expect("read acct-1");
    assert_events(&events, &written.iter().collect::<Vec<_>>());
    assert_not_found(
        read_stream(c, "acct-none", &ReadStreamOptions::default()).await,
        "read acct-none",
    );
    let events = read_stream(c, "acct-2", &ReadStreamOptions::default())
        .await
        .expect("read acct-2");
    assert_events(&events, &[&acct2]);
}

// ---------------------------------------------------------------------------------------------
// 2. Idempotent retries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_return_the_original_result() {
    let fx = start().await;
    let c = &fx.client;
    let p: Vec<Proposed> = (0..10).map(|n| Proposed::json(n, "ItemAdded")).collect();
    let same = |a: &WriteResult, b: &WriteResult| {
        assert_eq!(
            (a.next_expected_version, a.position),
            (b.next_expected_version, b.position),
            "a retry returns the original revision and position"
        );
    };

    // NoStream, retried.
    let first = append(c, "cart-1", StreamState::NoStream, &[&p[0], &p[1], &p[2]])
        .await
        .expect("first append");
    assert_eq!(first.next_expected_version, 2);
    let retry = append(c, "cart-1", StreamState::NoStream, &[&p[0], &p[1], &p[2]])
        .await
        .expect("retry with no stream");
    same(&first, &retry);
    assert_eq!(revisions(c, "cart-1").await, [0, 1, 2]);

    // Exact, retried.
    let second = append(c, "cart-1", StreamState::StreamRevision(2), &[&p[3], &p[4]])
        .await
        .expect("second append");
    assert_eq!(second.next_expected_version, 4);
    let retry = append(c, "cart-1", StreamState::StreamRevision(2), &[&p[3], &p[4]])
        .await
        .expect("retry with exact 2");
    same(&second, &retry);
    // The first append, retried after the second: still its own result.
    let retry = append(c, "cart-1", StreamState::NoStream, &[&p[0], &p[1], &p[2]])
        .await
        .expect("late retry with no stream");
    same(&first, &retry);
    assert_eq!(revisions(c, "cart-1").await, [0, 1, 2, 3, 4]);

    // A partial match (the ids continue past what is stored) is a wrong expected version.
    assert_wrong_version(
        append(c, "cart-1", StreamState::StreamRevision(2), &[&p[3], &p[9]]).await,
        StreamState::StreamRevision(2),
        CurrentRevision::Current(4),
    );
    assert_eq!(revisions(c, "cart-1").await, [0, 1, 2, 3, 4]);

    // Any, retried.
    let third = append(c, "cart-1", StreamState::Any, &[&p[5], &p[6]])
        .await
        .expect("third append");
    assert_eq!(third.next_expected_version, 6);
    let retry = append(c, "cart-1", StreamState::Any, &[&p[5], &p[6]])
        .await
        .expect("retry with any");
    same(&third, &retry);

    // StreamExists, retried.
    let fourth = append(c, "cart-1", StreamState::StreamExists, &[&p[7]])
        .await
        .expect("fourth append");
    assert_eq!(fourth.next_expected_version, 7);
    let retry = append(c, "cart-1", StreamState::StreamExists, &[&p[7]])
        .await
        .expect("retry with stream exists");
    same(&fourth, &retry);

    // Nothing was written twice.
    let events = read_stream(c, "cart-1", &ReadStreamOptions::default())
        .await
        .expect("read cart-1");
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        (0..8).map(id).collect::<Vec<_>>()
    );
    assert_eq!(events.last().map(|e| e.position), Some(fourth.position));

    // Ids are not globally unique: the same ids in another stream are new events there.
    let other = append(c, "cart-2", StreamState::NoStream, &[&p[0], &p[1], &p[2]])
        .await
        .expect("the same ids in another stream");
    assert_eq!(other.next_expected_version, 2);
    assert!(other.position > fourth.position);
    let events = read_stream(c, "cart-2", &ReadStreamOptions::default())
        .await
        .expect("read cart-2");
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        (0..3).map(id).collect::<Vec<_>>()
    );
    assert_eq!(revisions(c, "cart-1").await, (0..8).collect::<Vec<_>>());
    // And the whole log holds each event once.
    let all = read_all(c, &ReadAllOptions::default()).await.expect("$all");
    assert_eq!(all.len(), 8 + 3, "{all:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Reads
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_both_ways_with_every_field() {
    // The `kurrentdb://` scheme as well as `esdb://`.
    let fx = start_with_scheme("kurrentdb").await;
    let c = &fx.client;
    let events = [
        Proposed::json(1, "OrderPlaced").with_metadata(br#"{"user":"ann"}"#),
        Proposed::binary(2, "PhotoAttached", &[0, 1, 2, 0xff, 0xfe], &[9, 8, 7]),
        Proposed::json(3, "OrderPaid"),
        Proposed::binary(4, "Blob", b"", b""),
        Proposed::json(5, "OrderShipped").with_metadata(b"not json at all"),
    ];
    let mut want = Vec::new();
    for (i, e) in events.iter().enumerate() {
        want.push(put(c, "order-1", e.clone()).await);
        // Another stream in between, so positions are not the stream's.
        put(c, "other-1", Proposed::json(100 + i as u64, "Noise")).await;
    }
    assert_eq!(
        want.iter().map(|w| w.revision).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let w: Vec<&Want> = want.iter().collect();

    let fw = ReadStreamOptions::default();
    let got = read_stream(c, "order-1", &fw).await.expect("forwards");
    assert_events(&got, &w);

    let got = read_stream(
        c,
        "order-1",
        &fw.clone()
            .position(StreamPosition::Position(2))
            .max_count(2),
    )
    .await
    .expect("forwards from 2, max 2");
    assert_events(&got, &[w[2], w[3]]);

    let got = read_stream(c, "order-1", &fw.clone().max_count(1))
        .await
        .expect("forwards max 1");
    assert_events(&got, &[w[0]]);

    let got = read_stream(c, "order-1", &fw.clone().position(StreamPosition::End))
        .await
        .expect("backwards from the end");
    assert_events(&got, &[w[4], w[3], w[2], w[1], w[0]]);

    let got = read_stream(
        c,
        "order-1",
        &fw.clone().position(StreamPosition::Position(2)).backwards(),
    )
    .await
    .expect("backwards from 2");
    assert_events(&got, &[w[2], w[1], w[0]]);

    let got = read_stream(
        c,
        "order-1",
        &fw.clone().position(StreamPosition::End).max_count(2),
    )
    .await
    .expect("backwards from the end, max 2");
    assert_events(&got, &[w[4], w[3]]);

    // Beyond the end: no events, not "not found".
    let got = read_stream(
        c,
        "order-1",
        &fw.clone().position(StreamPosition::Position(10)),
    )
    .await
    .expect("forwards beyond the end");
    assert!(got.is_empty(), "{got:?}");

    // A stream that does not exist, both ways.
    assert_not_found(read_stream(c, "order-404", &fw).await, "forwards");
    assert_not_found(
        read_stream(c, "order-404", &fw.clone().position(StreamPosition::End)).await,
        "backwards",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_both_ways() {
    let fx = start().await;
    let c = &fx.client;
    let mut want = Vec::new();
    for i in 0..9u64 {
        let stream = format!("s-{}", i % 3);
        let e = if i % 4 == 3 {
            Proposed::binary(i, "Bin", &[i as u8, 0, 255], b"meta")
        } else {
            Proposed::json(i, "Json").with_metadata(format!("{{\"i\":{i}}}").as_bytes())
        };
        want.push(put(c, &stream, e).await);
    }
    let w: Vec<&Want> = want.iter().collect();

    let fw = ReadAllOptions::default();
    let got = read_all(c, &fw).await.expect("forwards from the start");
    assert_events(&got, &w);

    let got = read_all(c, &fw.clone().max_count(3))
        .await
        .expect("forwards, max 3");
    assert_events(&got, &w[..3]);

    // Forwards from P includes P.
    let got = read_all(c, &fw.clone().position(pos(w[3].position)))
        .await
        .expect("forwards from P");
    assert_events(&got, &w[3..]);
    let got = read_all(c, &fw.clone().position(pos(w[3].position)).max_count(2))
        .await
        .expect("forwards from P, max 2");
    assert_events(&got, &w[3..5]);

    // Backwards from P excludes P.
    let got = read_all(c, &fw.clone().position(pos(w[3].position)).backwards())
        .await
        .expect("backwards from P");
    assert_events(&got, &reversed(&w[..3]));

    let got = read_all(c, &fw.clone().position(StreamPosition::End))
        .await
        .expect("backwards from the end");
    assert_events(&got, &reversed(&w));
    let got = read_all(c, &fw.clone().position(StreamPosition::End).max_count(2))
        .await
        .expect("backwards from the end, max 2");
    assert_events(&got, &reversed(&w[7..]));

    // Forwards from the end and backwards from the start: nothing.
    let got = read_all(c, &fw.clone().position(StreamPosition::End).forwards())
        .await
        .expect("forwards from the end");
    assert!(got.is_empty(), "{got:?}");
    let got = read_all(c, &fw.clone().position(pos(0)).backwards())
        .await
        .expect("backwards from 0");
    assert!(got.is_empty(), "{got:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Filtered $all reads
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_with_filters() {
    let fx = start().await;
    let c = &fx.client;
    let e1 = put(c, "order-1", Proposed::json(1, "OrderPlaced")).await;
    let e2 = put(c, "invoice-1", Proposed::json(2, "InvoiceIssued")).await;
    let e3 = put(c, "order-2", Proposed::json(3, "OrderPlaced")).await;
    let e4 = put(c, "$stats-1", Proposed::json(4, "$statsCollected")).await;
    let e5 = put(c, "order-1", Proposed::json(5, "OrderShipped")).await;
    let e6 = put(c, "customer-1", Proposed::json(6, "CustomerRegistered")).await;
    // A system event: the `$metadata` event of `$$order-2`.
    let m = set_metadata(
        c,
        "order-2",
        StreamState::Any,
        &StreamMetadata::builder().max_count(10).build(),
    )
    .await
    .expect("set metadata");
    let e8 = put(c, "invoice-2", Proposed::json(8, "InvoicePaid")).await;
    let meta_position = m.position.commit;

    // The unfiltered log has every event, the metadata event included.
    let all = read_all(c, &ReadAllOptions::default())
        .await
        .expect("unfiltered");
    assert_eq!(
        all.iter()
            .map(|e| (
                e.stream_id().to_string(),
                e.event_type.clone(),
                e.position.commit
            ))
            .collect::<Vec<_>>(),
        [
            ("order-1", "OrderPlaced", e1.position),
            ("invoice-1", "InvoiceIssued", e2.position),
            ("order-2", "OrderPlaced", e3.position),
            ("$stats-1", "$statsCollected", e4.position),
            ("order-1", "OrderShipped", e5.position),
            ("customer-1", "CustomerRegistered", e6.position),
            ("$$order-2", "$metadata", meta_position),
            ("invoice-2", "InvoicePaid", e8.position),
        ]
        .map(|(s, t, p)| (s.to_string(), t.to_string(), p))
    );

    let filtered = |f: SubscriptionFilter| ReadAllOptions::default().filter(f);
    let check = async |what: &str, options: ReadAllOptions, want: &[&Want]| {
        let got = read_all(c, &options)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let got_positions: Vec<u64> = got.iter().map(|e| e.position.commit).collect();
        let want_positions: Vec<u64> = want.iter().map(|w| w.position).collect();
        assert_eq!(got_positions, want_positions, "{what}");
        assert_events(&got, want);
    };

    check(
        "stream prefix order-",
        filtered(SubscriptionFilter::on_stream_name().add_prefix("order-")),
        &[&e1, &e3, &e5],
    )
    .await;
    check(
        "stream prefixes order- and invoice-",
        filtered(
            SubscriptionFilter::on_stream_name()
                .add_prefix("order-")
                .add_prefix("invoice-"),
        ),
        &[&e1, &e2, &e3, &e5, &e8],
    )
    .await;
    check(
        "event type prefix Order",
        filtered(SubscriptionFilter::on_event_type().add_prefix("Order")),
        &[&e1, &e3, &e5],
    )
    .await;
    check(
        "event type prefixes Invoice and Customer",
        filtered(
            SubscriptionFilter::on_event_type()
                .add_prefix("Invoice")
                .add_prefix("Customer"),
        ),
        &[&e2, &e6, &e8],
    )
    .await;
    // .NET Regex.Match: a match anywhere in the name.
    check(
        "stream regex -1$ (search semantics)",
        filtered(SubscriptionFilter::on_stream_name().regex("-1$")),
        &[&e1, &e2, &e4, &e5, &e6],
    )
    .await;
    check(
        "event type regex ^Order|Paid$ (unparenthesised alternation)",
        filtered(SubscriptionFilter::on_event_type().regex("^Order|Paid$")),
        &[&e1, &e3, &e5, &e8],
    )
    .await;
    // Lookahead.
    check(
        "stream regex ^(?!\\$)",
        filtered(SubscriptionFilter::on_stream_name().regex(r"^(?!\$)")),
        &[&e1, &e2, &e3, &e5, &e6, &e8],
    )
    .await;
    check(
        "event type regex ^(?!(\\$.+$|Order))",
        filtered(SubscriptionFilter::on_event_type().regex(r"^(?!(\$.+$|Order))")),
        &[&e2, &e6, &e8],
    )
    .await;
    check(
        "exclude system events",
        filtered(SubscriptionFilter::on_event_type().exclude_system_events()),
        &[&e1, &e2, &e3, &e5, &e6, &e8],
    )
    .await;

    // Backwards, with a position, and with a count: the count is of matching events.
    let order = || SubscriptionFilter::on_stream_name().add_prefix("order-");
    check(
        "order- backwards from the end",
        filtered(order()).position(StreamPosition::End),
        &[&e5, &e3, &e1],
    )
    .await;
    check(
        "order- backwards from P (exclusive)",
        filtered(order()).position(pos(e5.position)).backwards(),
        &[&e3, &e1],
    )
    .await;
    check(
        "order- forwards from P (inclusive)",
        filtered(order()).position(pos(e3.position)),
        &[&e3, &e5],
    )
    .await;
    check(
        "order- forwards, max 2",
        filtered(order()).max_count(2),
        &[&e1, &e3],
    )
    .await;
    check(
        "system events excluded, backwards, max 3",
        filtered(SubscriptionFilter::on_event_type().exclude_system_events())
            .position(StreamPosition::End)
            .max_count(3),
        &[&e8, &e6, &e5],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Catch-up subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_catches_up_then_goes_live() {
    let fx = start().await;
    let c = &fx.client;
    let mut want = Vec::new();
    for n in 0..3 {
        want.push(put(c, "sub-1", Proposed::json(n, "Tick")).await);
        put(c, "sub-other", Proposed::json(100 + n, "Tock")).await;
    }

    // From the start: history, caught-up, then live events.
    let mut sub = c
        .subscribe_to_stream(
            "sub-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    expect_confirmed(&mut sub).await;
    let mut got = until_caught_up(&mut sub).await;
    assert_events(&got.events, &want.iter().collect::<Vec<_>>());
    match &got.caught_up {
        Some(Some(c)) => assert_eq!(c.stream_revision, Some(2), "caught-up revision {c:?}"),
        other => panic!("caught-up without its 24.x details: {other:?}"),
    }

    // From revision 1: exclusive.
    let mut from_1 = c
        .subscribe_to_stream(
            "sub-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(1)),
        )
        .await;
    expect_confirmed(&mut from_1).await;
    let got_1 = until_caught_up(&mut from_1).await;
    assert_events(&got_1.events, &[&want[2]]);

    // From the end: only new events.
    let mut from_end = c
        .subscribe_to_stream(
            "sub-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::End),
        )
        .await;
    expect_confirmed(&mut from_end).await;

    // A stream that does not exist yet: confirmed at once, then waits.
    let mut later = c
        .subscribe_to_stream(
            "sub-later",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    expect_confirmed(&mut later).await;

    // Live.
    for n in 3..6 {
        want.push(put(c, "sub-1", Proposed::json(n, "Tick")).await);
        put(c, "sub-other", Proposed::json(100 + n, "Tock")).await;
    }
    let live = next_events(&mut sub, 3, &mut got).await;
    assert_events(&live, &[&want[3], &want[4], &want[5]]);
    let live_1 = next_events(&mut from_1, 3, &mut Received::default()).await;
    assert_events(&live_1, &[&want[3], &want[4], &want[5]]);
    let live_end = next_events(&mut from_end, 3, &mut Received::default()).await;
    assert_events(&live_end, &[&want[3], &want[4], &want[5]]);

    let first = put(c, "sub-later", Proposed::json(50, "Born")).await;
    let got_later = next_events(&mut later, 1, &mut Received::default()).await;
    assert_events(&got_later, &[&first]);

    // No duplicate, nothing missing: the next event of each is the next one written.
    let sentinel = put(c, "sub-1", Proposed::json(6, "Tick")).await;
    for s in [&mut sub, &mut from_1, &mut from_end] {
        let next = next_events(s, 1, &mut Received::default()).await;
        assert_events(&next, &[&sentinel]);
    }
    assert!(
        got.checkpoints.is_empty(),
        "a stream subscription has no checkpoints: {:?}",
        got.checkpoints
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_all_subscription_checkpoints_and_goes_live() {
    let fx = start().await;
    let c = &fx.client;
    // 60 filtered-out events in appends of 10, three order events among them.
    let noise = async |chunk: u64, n: u64| {
        let batch: Vec<Proposed> = (0..n)
            .map(|k| Proposed::json(1000 + chunk * 10 + k, "Noise"))
            .collect();
        append(
            c,
            &format!("noise-{}", chunk % 3),
            StreamState::Any,
            &batch.iter().collect::<Vec<_>>(),
        )
        .await
        .expect("noise")
        .position
        .commit
    };
    let mut orders = Vec::new();
    let mut last = 0;
    for chunk in 0..6u64 {
        last = noise(chunk, 10).await;
        if [1, 2, 4].contains(&chunk) {
            let order = Proposed::json(chunk, "OrderPlaced");
            orders.push(put(c, &format!("order-{chunk}"), order).await);
        }
    }
    let end_of_history = last;
    // Window 10, multiplier 1: a checkpoint every 10 considered events.
    let filter = || {
        SubscriptionFilter::on_stream_name()
            .add_prefix("order-")
            .max(10)
    };
    let mut sub = c
        .subscribe_to_all(&SubscribeToAllOptions::default().filter(filter()))
        .await;
    expect_confirmed(&mut sub).await;
    let mut got = until_caught_up(&mut sub).await;
    assert_events(&got.events, &orders.iter().collect::<Vec<_>>());
    match &got.caught_up {
        Some(Some(c)) => assert_eq!(
            c.position.map(|p| p.commit),
            Some(end_of_history),
            "caught-up position {c:?}"
        ),
        other => panic!("caught-up without its 24.x details: {other:?}"),
    }
    let catch_up_checkpoints = got.checkpoints.len();
    assert!(
        catch_up_checkpoints >= 5,
        "63 considered events with an interval of 10 make at least 5 checkpoints during \
         catch-up, got {:?}",
        got.checkpoints
    );

    // Live: 25 filtered-out events (in appends of 5), then a matching one.
    for chunk in 10..15u64 {
        last = noise(chunk, 5).await;
    }
    let live = put(c, "order-live", Proposed::json(3000, "OrderPlaced")).await;
    let got_live = next_events(&mut sub, 1, &mut got).await;
    assert_events(&got_live, &[&live]);

    // Checkpoints: commit = prepare, strictly increasing, never beyond the end of the log;
    // one exactly at the end of the history (sent when the catch-up reaches the end); some
    // during the live phase.
    for p in &got.checkpoints {
        assert_eq!(p.commit, p.prepare, "checkpoint {p:?}");
        assert!(
            p.commit > 0 && p.commit <= last,
            "checkpoint {p:?} beyond the log end {last}"
        );
    }
    assert!(
        got.checkpoints
            .windows(2)
            .all(|w| w[0].commit < w[1].commit),
        "checkpoints increase: {:?}",
        got.checkpoints
    );
    assert!(
        got.checkpoints.iter().any(|p| p.commit == end_of_history),
        "a checkpoint at the end of the history ({end_of_history}): {:?}",
        got.checkpoints
    );
    let live_checkpoints = got
        .checkpoints
        .iter()
        .filter(|p| p.commit > end_of_history)
        .count();
    assert!(
        live_checkpoints >= 2,
        "25 live filtered-out events with an interval of 10 make at least 2 checkpoints, got \
         {:?} (history ended at {end_of_history})",
        got.checkpoints
    );

    // Nothing duplicated: the next event is the next matching one written.
    noise(20, 1).await;
    let sentinel = put(c, "order-sentinel", Proposed::json(4001, "OrderPlaced")).await;
    let next = next_events(&mut sub, 1, &mut got).await;
    assert_events(&next, &[&sentinel]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_subscription_from_a_position_or_the_end() {
    let fx = start().await;
    let c = &fx.client;
    let mut want = Vec::new();
    for i in 0..6u64 {
        want.push(put(c, &format!("a-{}", i % 2), Proposed::json(i, "Thing")).await);
    }
    let w: Vec<&Want> = want.iter().collect();

    // From the start, unfiltered.
    let mut from_start = c
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start))
        .await;
    expect_confirmed(&mut from_start).await;
    let got = until_caught_up(&mut from_start).await;
    assert_events(&got.events, &w);

    // From position P: exclusive.
    let mut from_p = c
        .subscribe_to_all(&SubscribeToAllOptions::default().position(pos(w[2].position)))
        .await;
    expect_confirmed(&mut from_p).await;
    let got = until_caught_up(&mut from_p).await;
    assert_events(&got.events, &w[3..]);

    // From the end: only what comes next.
    let mut from_end = c
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::End))
        .await;
    expect_confirmed(&mut from_end).await;

    // Filtered from a position: exclusive too.
    let mut filtered_from = c
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(pos(w[1].position))
                .filter(SubscriptionFilter::on_stream_name().add_prefix("a-1")),
        )
        .await;
    expect_confirmed(&mut filtered_from).await;
    let got = until_caught_up(&mut filtered_from).await;
    assert_events(&got.events, &[w[3], w[5]]);

    let n1 = put(c, "a-1", Proposed::json(10, "Thing")).await;
    let n2 = put(c, "a-0", Proposed::json(11, "Thing")).await;
    let n3 = put(c, "a-1", Proposed::json(12, "Thing")).await;
    for (what, sub) in [
        ("from the start", &mut from_start),
        ("from P", &mut from_p),
        ("from the end", &mut from_end),
    ] {
        let live = next_events(sub, 3, &mut Received::default()).await;
        assert_eq!(
            live.iter().map(|e| e.position.commit).collect::<Vec<_>>(),
            [n1.position, n2.position, n3.position],
            "{what}"
        );
        assert_events(&live, &[&n1, &n2, &n3]);
    }
    let live = next_events(&mut filtered_from, 2, &mut Received::default()).await;
    assert_events(&live, &[&n1, &n3]);
}

/// Events of a subscription until the one with id `last` (inclusive), whatever else comes.
async fn events_until(sub: &mut Subscription, last: Uuid) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        match sub_next(sub, "events up to the last one written").await {
            Ok(SubscriptionEvent::EventAppeared(e)) => {
                let e = e.event.expect("event");
                let done = e.id == last;
                out.push(e);
                if done {
                    return out;
                }
            }
            Ok(SubscriptionEvent::FellBehind(f)) => {
                panic!("fell_behind must not be sent to clients: {f:?}")
            }
            Ok(SubscriptionEvent::Confirmed(_)) => panic!("a second confirmation"),
            Ok(_) => {}
            Err(e) => panic!("subscription failed: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_go_live_without_gap_or_duplicate_under_writes() {
    let fx = start().await;
    let c = &fx.client;
    let stream_of = |i: u64| format!("race-{}", i % 4);
    // History: 30 events in each of race-0..3 (ids 0..120).
    for s in 0..4u64 {
        let batch: Vec<Proposed> = (s * 30..s * 30 + 30)
            .map(|i| Proposed::json(i, "Before"))
            .collect();
        append(
            c,
            &format!("race-{s}"),
            StreamState::NoStream,
            &batch.iter().collect::<Vec<_>>(),
        )
        .await
        .expect("history");
    }
    // Appends keep coming (one event each, ids 120..170) while the subscriptions catch up and
    // switch to live.
    let writer = tokio::spawn({
        let c = c.clone();
        async move {
            for i in 120..170 {
                put(&c, &stream_of(i), Proposed::json(i, "During")).await;
            }
        }
    });
    let mut all = c.subscribe_to_all(&SubscribeToAllOptions::default()).await;
    let mut one = c
        .subscribe_to_stream(
            "race-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    expect_confirmed(&mut all).await;
    expect_confirmed(&mut one).await;
    // The last event written is 169, in race-1.
    let got_all = events_until(&mut all, id(169)).await;
    let got_one = events_until(&mut one, id(169)).await;
    within("the writer", writer).await.expect("writer task");

    let log = read_all(c, &ReadAllOptions::default()).await.expect("$all");
    assert_eq!(log.len(), 170);
    let key = |e: &RecordedEvent| {
        (
            e.stream_id().to_string(),
            e.revision,
            e.position.commit,
            e.id,
        )
    };
    assert_eq!(
        got_all.iter().map(key).collect::<Vec<_>>(),
        log.iter().map(key).collect::<Vec<_>>(),
        "the $all subscription delivers the log exactly once, in order"
    );
    let race_1: Vec<_> = log
        .iter()
        .filter(|e| e.stream_id() == "race-1")
        .map(key)
        .collect();
    assert_eq!(
        got_one.iter().map(key).collect::<Vec<_>>(),
        race_1,
        "the stream subscription delivers the stream exactly once, in order"
    );
    assert_revisions(&got_one, &(0..43).collect::<Vec<_>>());

    // Nothing more is pending: the next event of each is the next one written.
    let sentinel = put(c, "race-1", Proposed::json(1000, "After")).await;
    for sub in [&mut all, &mut one] {
        let next = next_events(sub, 1, &mut Received::default()).await;
        assert_events(&next, &[&sentinel]);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Stream metadata
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metadata_round_trips_and_rules_reads() {
    let fx = start().await;
    let c = &fx.client;
    for n in 0..5 {
        put(c, "meta-1", Proposed::json(n, "Step")).await;
    }
    match get_metadata(c, "meta-1").await {
        Ok(StreamMetadataResult::NotFound) => {}
        other => panic!("no metadata yet: expected NotFound, got {other:?}"),
    }

    let acl = StreamAclBuilder::new()
        .add_read_roles("$admins")
        .add_read_roles("ops")
        .add_write_roles("writer")
        .build();
    let first = StreamMetadata::builder()
        .max_count(3)
        .insert_custom_property("owner", "team-a")
        .insert_custom_property("limits", json!({"daily": 42, "tags": ["x", "y"]}))
        .acl(Acl::Stream(acl))
        .build();
    let r = set_metadata(c, "meta-1", StreamState::NoStream, &first)
        .await
        .expect("set the first metadata");
    assert_eq!(r.next_expected_version, 0, "the first version of $$meta-1");
    let (version, read) = metadata_of(get_metadata(c, "meta-1").await.expect("get"));
    assert_eq!(version, 0);
    assert_eq!(read, first);

    // max count 3: only the newest three events, both ways.
    assert_eq!(revisions(c, "meta-1").await, [2, 3, 4]);
    let back = read_stream(
        c,
        "meta-1",
        &ReadStreamOptions::default().position(StreamPosition::End),
    )
    .await
    .expect("backwards");
    assert_revisions(&back, &[4, 3, 2]);
    put(c, "meta-1", Proposed::json(5, "Step")).await;
    assert_eq!(revisions(c, "meta-1").await, [3, 4, 5]);

    // The expected revision of a metadata write is that of the metadata stream.
    assert_wrong_version(
        set_metadata(c, "meta-1", StreamState::NoStream, &first).await,
        StreamState::NoStream,
        CurrentRevision::Current(0),
    );
    let second = StreamMetadata::builder()
        .max_age(Duration::from_secs(3600))
        .truncate_before(5)
        .cache_control(Duration::from_secs(10))
        .insert_custom_property("owner", "team-b")
        .acl(Acl::UserStream)
        .build();
    let r = set_metadata(c, "meta-1", StreamState::StreamRevision(0), &second)
        .await
        .expect("set the second metadata");
    assert_eq!(r.next_expected_version, 1);
    // A metadata stream keeps only its newest event in view (KurrentDB's metastream
    // `$maxCount` of 1), whichever way it is read.
    let meta = read_stream(c, "$$meta-1", &ReadStreamOptions::default())
        .await
        .expect("read $$meta-1 forwards");
    assert_eq!(
        meta.iter()
            .map(|e| (e.revision, e.event_type.as_str()))
            .collect::<Vec<_>>(),
        [(1, "$metadata")],
        "$$meta-1 read forwards from the start"
    );
    let meta = read_stream(
        c,
        "$$meta-1",
        &ReadStreamOptions::default().position(StreamPosition::End),
    )
    .await
    .expect("read $$meta-1 backwards");
    assert_revisions(&meta, &[1]);
    // The metadata is the newest version, as `get_stream_metadata` reads it (forwards from
    // the start, taking the first event).
    let (version, read) = metadata_of(get_metadata(c, "meta-1").await.expect("get"));
    assert_eq!(version, 1, "the newest version of the metadata");
    assert_eq!(read, second);
    // truncate-before 5, max count gone: revision 5 only; max age 1 h keeps it.
    assert_eq!(revisions(c, "meta-1").await, [5]);

    let third = StreamMetadata::builder().max_count(2).build();
    let r = set_metadata(c, "meta-1", StreamState::Any, &third)
        .await
        .expect("set with any");
    assert_eq!(r.next_expected_version, 2);
    assert_eq!(
        metadata_of(get_metadata(c, "meta-1").await.expect("get")),
        (2, third)
    );
    assert_eq!(revisions(c, "meta-1").await, [4, 5]);

    // Metadata of a stream without events: fine, and the stream still reads as not found.
    let r = set_metadata(
        c,
        "meta-empty",
        StreamState::Any,
        &StreamMetadata::builder().max_count(1).build(),
    )
    .await
    .expect("metadata of a stream with no events");
    assert_eq!(r.next_expected_version, 0);
    assert_not_found(
        read_stream(c, "meta-empty", &ReadStreamOptions::default()).await,
        "a stream with only metadata",
    );
    put(c, "meta-empty", Proposed::json(10, "A")).await;
    put(c, "meta-empty", Proposed::json(11, "B")).await;
    assert_eq!(revisions(c, "meta-empty").await, [1]);
}

// ---------------------------------------------------------------------------------------------
// 7. Delete and tombstone
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_then_revive() {
    let fx = start().await;
    let c = &fx.client;
    for n in 0..3 {
        put(c, "del-1", Proposed::json(n, "Old")).await;
    }
    set_metadata(
        c,
        "del-1",
        StreamState::Any,
        &StreamMetadata::builder()
            .insert_custom_property("keep", true)
            .build(),
    )
    .await
    .expect("metadata before the delete");

    delete(c, "del-1", StreamState::StreamRevision(2))
        .await
        .expect("delete");
    assert_not_found(
        read_stream(c, "del-1", &ReadStreamOptions::default()).await,
        "read after delete",
    );
    assert_not_found(
        read_stream(
            c,
            "del-1",
            &ReadStreamOptions::default().position(StreamPosition::End),
        )
        .await,
        "read backwards after delete",
    );
    // The delete writes `{"$tb": i64::MAX}`, replacing the previous metadata.
    let (_, md) = metadata_of(get_metadata(c, "del-1").await.expect("get after delete"));
    assert_eq!(
        md,
        StreamMetadata {
            truncate_before: Some(TOMBSTONE_REVISION),
            ..StreamMetadata::default()
        }
    );
    // The stream's last revision is unchanged: the same delete again succeeds.
    delete(c, "del-1", StreamState::StreamRevision(2))
        .await
        .expect("the same delete again");
    // Its events are gone from $all.
    let all = read_all(c, &ReadAllOptions::default()).await.expect("$all");
    assert!(
        all.iter().all(|e| e.stream_id() != "del-1"),
        "deleted events in $all: {all:?}"
    );
    // A subscription to the deleted stream from the start has nothing to deliver.
    let mut sub = c
        .subscribe_to_stream(
            "del-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    expect_confirmed(&mut sub).await;
    let got = until_caught_up(&mut sub).await;
    assert!(got.events.is_empty(), "{:?}", got.events);

    // NoStream holds on a soft-deleted stream; revisions continue.
    let new = Proposed::json(10, "New");
    let r = append(c, "del-1", StreamState::NoStream, &[&new])
        .await
        .expect("append after delete");
    assert_eq!(r.next_expected_version, 3, "revisions continue");
    let revived = new.at("del-1", 3, r.position.commit);
    let events = read_stream(c, "del-1", &ReadStreamOptions::default())
        .await
        .expect("read after revival");
    assert_events(&events, &[&revived]);
    let live = next_events(&mut sub, 1, &mut Received::default()).await;
    assert_events(&live, &[&revived]);
    // The metadata is the previous one (the delete's) with `$tb` = old last + 1.
    let (_, md) = metadata_of(get_metadata(c, "del-1").await.expect("get after revival"));
    assert_eq!(
        md,
        StreamMetadata {
            truncate_before: Some(3),
            ..StreamMetadata::default()
        }
    );
    let all = read_all(c, &ReadAllOptions::default()).await.expect("$all");
    assert_eq!(
        all.iter()
            .filter(|e| e.stream_id() == "del-1")
            .map(|e| e.revision)
            .collect::<Vec<_>>(),
        [3]
    );

    // StreamExists on a soft-deleted stream: stream deleted.
    put(c, "del-2", Proposed::json(20, "Old")).await;
    delete(c, "del-2", StreamState::Any).await.expect("delete");
    assert_deleted(
        append(
            c,
            "del-2",
            StreamState::StreamExists,
            &[&Proposed::json(21, "New")],
        )
        .await,
        "stream exists on a soft-deleted stream",
    );
    // Any revives it too.
    let r = append(c, "del-2", StreamState::Any, &[&Proposed::json(22, "New")])
        .await
        .expect("any on a soft-deleted stream");
    assert_eq!(r.next_expected_version, 1);
    assert_eq!(revisions(c, "del-2").await, [1]);

    // Setting metadata on a soft-deleted stream undeletes it, with `$tb` = last + 1.
    put(c, "del-3", Proposed::json(30, "Old")).await;
    put(c, "del-3", Proposed::json(31, "Old")).await;
    delete(c, "del-3", StreamState::Any).await.expect("delete");
    set_metadata(
        c,
        "del-3",
        StreamState::Any,
        &StreamMetadata::builder()
            .insert_custom_property("back", 1)
            .build(),
    )
    .await
    .expect("metadata on a soft-deleted stream");
    let (_, md) = metadata_of(get_metadata(c, "del-3").await.expect("get"));
    assert!(
        [Some(2), Some(TOMBSTONE_REVISION)].contains(&md.truncate_before),
        "{md:?}"
    );
    put(c, "del-3", Proposed::json(32, "New")).await;
    assert_eq!(revisions(c, "del-3").await, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstone_is_for_good() {
    let fx = start().await;
    let c = &fx.client;
    put(c, "tomb-1", Proposed::json(0, "Old")).await;
    put(c, "tomb-1", Proposed::json(1, "Old")).await;
    let m = set_metadata(
        c,
        "tomb-1",
        StreamState::NoStream,
        &StreamMetadata::builder().max_count(5).build(),
    )
    .await
    .expect("metadata before the tombstone");
    assert_eq!(m.next_expected_version, 0);

    // A live subscription sees the tombstone, then ends with stream-deleted.
    let mut sub = c
        .subscribe_to_stream(
            "tomb-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    expect_confirmed(&mut sub).await;
    let got = until_caught_up(&mut sub).await;
    assert_revisions(&got.events, &[0, 1]);

    tombstone(c, "tomb-1", StreamState::StreamRevision(1))
        .await
        .expect("tombstone");
    match sub_next(&mut sub, "the tombstone event").await {
        Ok(SubscriptionEvent::EventAppeared(e)) => {
            let e = e.event.expect("event");
            assert_eq!(e.event_type, "$streamDeleted");
            assert_eq!(e.revision, TOMBSTONE_REVISION);
            assert_eq!(e.stream_id(), "tomb-1");
        }
        other => panic!("expected the $streamDeleted event, got {other:?}"),
    }
    assert_deleted(
        sub_next(&mut sub, "the end of the subscription").await,
        "subscription after the tombstone",
    );

    // Every read and append: stream deleted.
    assert_deleted(
        read_stream(c, "tomb-1", &ReadStreamOptions::default()).await,
        "read forwards",
    );
    assert_deleted(
        read_stream(
            c,
            "tomb-1",
            &ReadStreamOptions::default().position(StreamPosition::End),
        )
        .await,
        "read backwards",
    );
    for state in [
        StreamState::Any,
        StreamState::NoStream,
        StreamState::StreamExists,
        StreamState::StreamRevision(1),
    ] {
        assert_deleted(
            append(c, "tomb-1", state, &[&Proposed::json(9, "New")]).await,
            &format!("append with {state:?}"),
        );
    }
    assert_deleted(delete(c, "tomb-1", StreamState::Any).await, "delete");
    assert_deleted(tombstone(c, "tomb-1", StreamState::Any).await, "tombstone");
    // Its metadata stream reads as deleted too (the client shows that as `Deleted` when the
    // error follows the response headers, as the error itself when it comes at once).
    match get_metadata(c, "tomb-1").await {
        Ok(StreamMetadataResult::Deleted) | Err(Error::ResourceDeleted) => {}
        other => panic!("metadata of a tombstoned stream: expected Deleted, got {other:?}"),
    }
    assert_deleted(
        read_stream(c, "$$tomb-1", &ReadStreamOptions::default()).await,
        "read $$tomb-1",
    );
    // Setting metadata is still allowed, with the metadata stream's exact revision and with
    // any.
    let r = set_metadata(
        c,
        "tomb-1",
        StreamState::StreamRevision(0),
        &StreamMetadata::builder().max_count(7).build(),
    )
    .await
    .expect("metadata after a tombstone, exact revision");
    assert_eq!(r.next_expected_version, 1);
    let r = set_metadata(
        c,
        "tomb-1",
        StreamState::Any,
        &StreamMetadata::builder().max_count(8).build(),
    )
    .await
    .expect("metadata after a tombstone, any");
    assert_eq!(r.next_expected_version, 2);
    assert_deleted(
        read_stream(c, "tomb-1", &ReadStreamOptions::default()).await,
        "read after metadata",
    );

    // A new subscription: confirmed, then stream deleted (at most the tombstone before it).
    let mut sub = c
        .subscribe_to_stream(
            "tomb-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    expect_confirmed(&mut sub).await;
    let mut next = sub_next(&mut sub, "a subscription to a tombstoned stream").await;
    if let Ok(SubscriptionEvent::EventAppeared(e)) = &next {
        let e = e.event.as_ref().expect("event");
        assert_eq!(
            (e.event_type.as_str(), e.revision),
            ("$streamDeleted", TOMBSTONE_REVISION)
        );
        next = sub_next(&mut sub, "a subscription to a tombstoned stream").await;
    }
    assert_deleted(next, "subscription to a tombstoned stream");

    // The tombstone is in $all, at revision i64::MAX; the stream's events are not.
    let all = read_all(c, &ReadAllOptions::default()).await.expect("$all");
    let of_stream: Vec<(&str, u64)> = all
        .iter()
        .filter(|e| e.stream_id() == "tomb-1")
        .map(|e| (e.event_type.as_str(), e.revision))
        .collect();
    assert_eq!(of_stream, [("$streamDeleted", TOMBSTONE_REVISION)]);

    // Tombstone with Any on a stream that never existed: done, and deleted for good.
    tombstone(c, "tomb-never", StreamState::Any)
        .await
        .expect("tombstone a never-existing stream with any");
    assert_deleted(
        read_stream(c, "tomb-never", &ReadStreamOptions::default()).await,
        "read",
    );
    assert_deleted(
        append(
            c,
            "tomb-never",
            StreamState::Any,
            &[&Proposed::json(1, "A")],
        )
        .await,
        "append",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_tombstone_errors() {
    let fx = start().await;
    let c = &fx.client;

    // Never-existing streams: wrong expected version with actual -1.
    assert_delete_wrong_version(delete(c, "ghost", StreamState::Any).await, "ghost", -2, -1);
    assert_delete_wrong_version(
        delete(c, "ghost", StreamState::StreamRevision(0)).await,
        "ghost",
        0,
        -1,
    );
    assert_delete_wrong_version(
        delete(c, "ghost", StreamState::StreamExists).await,
        "ghost",
        -4,
        -1,
    );
    assert_delete_wrong_version(
        tombstone(c, "ghost", StreamState::StreamRevision(0)).await,
        "ghost",
        0,
        -1,
    );
    assert_delete_wrong_version(
        tombstone(c, "ghost", StreamState::StreamExists).await,
        "ghost",
        -4,
        -1,
    );
    // None of that created anything.
    assert_not_found(
        read_stream(c, "ghost", &ReadStreamOptions::default()).await,
        "ghost",
    );

    // Existing streams, wrong expected revision.
    for n in 0..3 {
        put(c, "real-1", Proposed::json(n, "E")).await;
    }
    assert_delete_wrong_version(
        delete(c, "real-1", StreamState::StreamRevision(5)).await,
        "real-1",
        5,
        2,
    );
    assert_delete_wrong_version(
        delete(c, "real-1", StreamState::NoStream).await,
        "real-1",
        -1,
        2,
    );
    assert_delete_wrong_version(
        tombstone(c, "real-1", StreamState::StreamRevision(1)).await,
        "real-1",
        1,
        2,
    );
    assert_eq!(revisions(c, "real-1").await, [0, 1, 2]);

    // StreamExists holds on a stream with events.
    delete(c, "real-1", StreamState::StreamExists)
        .await
        .expect("delete with stream exists");
    assert_not_found(
        read_stream(c, "real-1", &ReadStreamOptions::default()).await,
        "real-1",
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Native API <-> adapter
// ---------------------------------------------------------------------------------------------

fn native_any() -> Option<native::ExpectedRevision> {
    Some(native::ExpectedRevision {
        kind: Some(native::expected_revision::Kind::Any(native::Empty {})),
    })
}

async fn native_read_stream(
    client: &mut EventStoreClient<Channel>,
    stream: &str,
) -> Vec<native::RecordedEvent> {
    within("native read", async {
        let mut s = client
            .read_stream(native::ReadStreamRequest {
                stream: stream.to_string(),
                from_revision: None,
                direction: native::Direction::Forwards as i32,
                max_count: 0,
                from_snapshot: false,
            })
            .await
            .expect("native read")
            .into_inner();
        let mut out = Vec::new();
        while let Some(page) = s.next().await {
            out.extend(page.expect("native read page").events);
        }
        out
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_events_read_back_identically_through_the_adapter() {
    let fx = start().await;
    let c = &fx.client;
    let mut n = fx.server.client().await;
    let events = vec![
        native::EventData {
            id: id(1).as_bytes().to_vec().into(),
            event_type: "OrderPlaced".into(),
            content_type: native::ContentType::Json as i32,
            data: br#"{"total":42}"#.to_vec().into(),
            metadata: br#"{"correlation":"c-1"}"#.to_vec().into(),
        },
        native::EventData {
            id: id(2).as_bytes().to_vec().into(),
            event_type: "Photo".into(),
            content_type: native::ContentType::Binary as i32,
            data: vec![0u8, 1, 2, 254, 255].into(),
            metadata: vec![7u8, 0, 7].into(),
        },
        native::EventData {
            id: id(3).as_bytes().to_vec().into(),
            event_type: "Empty".into(),
            content_type: native::ContentType::Binary as i32,
            data: Vec::new().into(),
            metadata: Vec::new().into(),
        },
    ];
    within(
        "native append",
        n.append(native::AppendRequest {
            stream: "native-1".into(),
            expected: native_any(),
            events,
            tracking: None,
        }),
    )
    .await
    .expect("native append");
    let stored = native_read_stream(&mut n, "native-1").await;
    assert_eq!(stored.len(), 3);

    let through_adapter = read_stream(c, "native-1", &ReadStreamOptions::default())
        .await
        .expect("read through the adapter");
    let through_all = read_all(c, &ReadAllOptions::default())
        .await
        .expect("read $all through the adapter");
    assert_eq!(through_adapter.len(), 3);
    assert_eq!(through_all.len(), 3);
    for (k, e) in stored.iter().enumerate() {
        for a in [&through_adapter[k], &through_all[k]] {
            assert_eq!(a.id.as_bytes().as_slice(), e.id.as_ref(), "id");
            assert_eq!(a.stream_id(), e.stream, "stream");
            assert_eq!(a.event_type, e.event_type, "type");
            assert_eq!(&a.data[..], e.data.as_ref() as &[u8], "data");
            assert_eq!(
                &a.custom_metadata[..],
                e.metadata.as_ref() as &[u8],
                "metadata"
            );
            assert_eq!(a.revision, e.revision, "revision");
            assert_eq!(
                a.position,
                Position {
                    commit: e.position,
                    prepare: e.position
                },
                "position"
            );
            let json = e.content_type == native::ContentType::Json as i32;
            assert_eq!(a.is_json, json, "content type");
            assert_eq!(
                a.metadata.get("content-type").map(String::as_str),
                Some(if json {
                    "application/json"
                } else {
                    "application/octet-stream"
                })
            );
            // `created` is 100 ns ticks since the Unix epoch: the commit time.
            assert_eq!(
                a.metadata.get("created").map(String::as_str),
                Some((e.timestamp_us * 10).to_string().as_str()),
                "created ticks"
            );
            assert_eq!(a.created.timestamp() as u64, e.timestamp_us / 1_000_000);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_events_read_back_identically_through_the_native_api() {
    let fx = start().await;
    let c = &fx.client;
    let mut n = fx.server.client().await;
    let proposed = [
        Proposed::json(1, "OrderPlaced").with_metadata(br#"{"user":"bob"}"#),
        Proposed::binary(2, "Photo", &[0, 9, 0, 9, 255], &[1, 2, 3]),
        Proposed::json(3, "OrderPaid"),
    ];
    let r = append(
        c,
        "adapter-1",
        StreamState::NoStream,
        &proposed.iter().collect::<Vec<_>>(),
    )
    .await
    .expect("append through the adapter");
    assert_eq!(r.next_expected_version, 2);

    let stored = native_read_stream(&mut n, "adapter-1").await;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].position, r.position.commit, "append position");
    let through_adapter = read_stream(c, "adapter-1", &ReadStreamOptions::default())
        .await
        .expect("read through the adapter");
    for (k, (e, p)) in stored.iter().zip(&proposed).enumerate() {
        assert_eq!(e.id.as_ref() as &[u8], p.id.as_bytes().as_slice(), "id");
        assert_eq!(e.stream, "adapter-1");
        assert_eq!(e.event_type, p.event_type);
        assert_eq!(e.data.as_ref() as &[u8], &p.data[..], "data");
        assert_eq!(
            e.metadata.as_ref() as &[u8],
            &p.custom_metadata[..],
            "metadata"
        );
        assert_eq!(e.revision, k as u64);
        assert_eq!(
            e.content_type,
            if p.json {
                native::ContentType::Json as i32
            } else {
                native::ContentType::Binary as i32
            },
            "content type"
        );
        assert_event(
            &through_adapter[k],
            &p.at("adapter-1", k as u64, e.position),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Batch append, server features, gossip, persistent subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_append() {
    let fx = start().await;
    let c = &fx.client;
    let batch = within("open a batch append", c.batch_append(&Default::default()))
        .await
        .expect("the server offers batch append");
    let p: Vec<Proposed> = (0..8).map(|n| Proposed::json(n, "Batched")).collect();
    let data = |v: &[usize]| v.iter().map(|&i| p[i].event_data()).collect::<Vec<_>>();

    let first = within(
        "batch 1",
        batch.append_to_stream("batch-1", StreamState::NoStream, data(&[0, 1, 2])),
    )
    .await
    .expect("batch 1");
    assert_eq!(first.stream_name(), "batch-1");
    assert_eq!(first.current_revision(), Some(2));
    assert_eq!(first.stream_state(), Some(StreamState::NoStream));
    let first_position = first.current_position().expect("a position");
    assert_eq!(first_position.commit, first_position.prepare);

    let second = within(
        "batch 2",
        batch.append_to_stream("batch-1", StreamState::StreamRevision(2), data(&[3])),
    )
    .await
    .expect("batch 2");
    assert_eq!(second.current_revision(), Some(3));
    assert!(second.current_position() > Some(first_position));

    // A retry of the first: its original result, nothing written.
    let retry = within(
        "batch 1 again",
        batch.append_to_stream("batch-1", StreamState::NoStream, data(&[0, 1, 2])),
    )
    .await
    .expect("retry of batch 1");
    assert_eq!(retry.current_revision(), Some(2));
    assert_eq!(retry.current_position(), Some(first_position));

    // Two batches in flight at once, on other streams.
    let (a, b) = within("two concurrent batches", async {
        tokio::join!(
            batch.append_to_stream("batch-2", StreamState::Any, data(&[4])),
            batch.append_to_stream("batch-3", StreamState::Any, data(&[5, 6])),
        )
    })
    .await;
    assert_eq!(a.expect("batch-2").current_revision(), Some(0));
    assert_eq!(b.expect("batch-3").current_revision(), Some(1));

    let events = read_stream(c, "batch-1", &ReadStreamOptions::default())
        .await
        .expect("read batch-1");
    let want: Vec<Want> = [0usize, 1, 2, 3]
        .iter()
        .enumerate()
        .map(|(rev, &i)| {
            let position = if rev == 2 {
                first_position.commit
            } else if rev == 3 {
                second.current_position().expect("position").commit
            } else {
                events[rev].position.commit
            };
            p[i].at("batch-1", rev as u64, position)
        })
        .collect();
    assert_events(&events, &want.iter().collect::<Vec<_>>());
    assert!(
        events.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase: {events:?}"
    );

    // A wrong expected version: the batch's error status (the client closes the session
    // after it).
    match within(
        "a wrong batch",
        batch.append_to_stream("batch-1", StreamState::StreamRevision(0), data(&[7])),
    )
    .await
    {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(code as i32, tonic::Code::AlreadyExists as i32, "{message}");
            assert_eq!(message, "WrongExpectedVersion");
        }
        other => panic!("expected the WrongExpectedVersion status, got {other:?}"),
    }
    assert_eq!(revisions(c, "batch-1").await, [0, 1, 2, 3]);

    // A tombstoned stream: the batch's StreamDeleted status (on a new session: the client
    // closed the first after its error).
    tombstone(c, "batch-dead", StreamState::Any)
        .await
        .expect("tombstone");
    let batch = within("open a batch append", c.batch_append(&Default::default()))
        .await
        .expect("a second batch session");
    match within(
        "a batch to a tombstoned stream",
        batch.append_to_stream("batch-dead", StreamState::Any, data(&[7])),
    )
    .await
    {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(code as i32, tonic::Code::NotFound as i32, "{message}");
            assert_eq!(message, "StreamDeleted");
        }
        other => panic!("expected the StreamDeleted status, got {other:?}"),
    }
}

/// A batch append session, opened fresh (the client ends a session after a batch's error).
async fn batch_session(c: &Client) -> kurrentdb::BatchAppendClient {
    within("open a batch append", c.batch_append(&Default::default()))
        .await
        .expect("the server offers batch append")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_the_size_limits_and_empty_batches() {
    let dir = common::tempdir();
    // One event's limit below one append's (256 KiB), so that the engine's event check is
    // what refuses.
    let config = statestore::Config {
        event_bytes_max: 64 << 10,
        ..common::config()
    };
    let server = TestServer::start(dir.path(), config, ServerConfig::default()).await;
    let c = &kurrent_client(&format!("esdb://{}?tls=false", server.addr));
    let big = Proposed::binary(1, "Big", &vec![7u8; (64 << 10) + 1], b"");
    let huge = Proposed::binary(2, "Huge", &vec![7u8; (256 << 10) + 1], b"");
    let refused = |r: kurrentdb::Result<_>, what: &str, text: &str| match r {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(
                code as i32,
                tonic::Code::InvalidArgument as i32,
                "{what}: {message}"
            );
            assert_eq!(message, text, "{what}");
        }
        other => panic!("{what}: expected INVALID_ARGUMENT '{text}', got {other:?}"),
    };
    // Unary: the exception trailer `maximum-append-size-exceeded`, with the limit passed.
    refused(
        append(c, "big-1", StreamState::Any, &[&big])
            .await
            .map(|_| ()),
        "unary, one event over the event limit",
        "Maximum Append Size of 65536 Exceeded.",
    );
    refused(
        append(c, "big-1", StreamState::Any, &[&huge])
            .await
            .map(|_| ()),
        "unary, over the append limit",
        "Maximum Append Size of 262144 Exceeded.",
    );
    // Batched: the MaximumAppendSizeExceeded status (its detail is checked through the Python
    // client, which unpacks it).
    for (what, p) in [("event limit", &big), ("append limit", &huge)] {
        let batch = batch_session(c).await;
        refused(
            within(
                what,
                batch.append_to_stream("big-1", StreamState::Any, vec![p.event_data()]),
            )
            .await
            .map(|_| ()),
            &format!("batch over the {what}"),
            "MaximumAppendSizeExceeded",
        );
    }
    assert_eq!(server.store.last_position().0, 0, "nothing was written");

    // An empty batch: a successful append of nothing when the expectation holds.
    let batch = batch_session(c).await;
    for state in [StreamState::NoStream, StreamState::Any] {
        let r = within(
            "empty batch",
            batch.append_to_stream("empty-1", state, vec![]),
        )
        .await
        .unwrap_or_else(|e| panic!("empty batch with {state:?}: {e:?}"));
        assert_eq!(r.current_revision(), None, "{state:?}");
        assert_eq!(r.current_position(), None, "{state:?}");
        assert_eq!(r.stream_state(), Some(state));
    }
    assert_eq!(
        server.store.last_position().0,
        0,
        "an empty batch writes nothing"
    );
    assert_not_found(
        read_stream(c, "empty-1", &ReadStreamOptions::default()).await,
        "empty-1",
    );
    let e = put(c, "empty-2", Proposed::json(3, "E")).await;
    for state in [
        StreamState::StreamRevision(0),
        StreamState::StreamExists,
        StreamState::Any,
    ] {
        let r = within(
            "empty batch",
            batch.append_to_stream("empty-2", state, vec![]),
        )
        .await
        .unwrap_or_else(|e| panic!("empty batch with {state:?}: {e:?}"));
        assert_eq!(r.current_revision(), Some(0), "{state:?}");
        assert_eq!(r.current_position(), None, "{state:?}");
    }
    match within(
        "empty batch, wrong",
        batch.append_to_stream("empty-2", StreamState::NoStream, vec![]),
    )
    .await
    {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(code as i32, tonic::Code::AlreadyExists as i32, "{message}");
            assert_eq!(message, "WrongExpectedVersion");
        }
        other => panic!("expected the WrongExpectedVersion status, got {other:?}"),
    }
    assert_eq!(
        server.store.last_position().0,
        e.position,
        "nothing more was written"
    );
}

/// (stream, revision, type, position) of each event.
fn summary(events: &[RecordedEvent]) -> Vec<(String, u64, String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e.stream_id().to_string(),
                e.revision,
                e.event_type.clone(),
                e.position.commit,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfiltered_all_subscriptions_and_reads_deliver_metadata_events() {
    let fx = start().await;
    let c = &fx.client;
    let e0 = put(c, "doc-1", Proposed::json(0, "Drafted")).await;
    let m0 = set_metadata(
        c,
        "doc-1",
        StreamState::NoStream,
        &StreamMetadata::builder().max_count(5).build(),
    )
    .await
    .expect("set metadata")
    .position
    .commit;

    // Catch-up from the start, unfiltered: the `$metadata` event of `$$doc-1` too.
    let mut sub = c
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start))
        .await;
    expect_confirmed(&mut sub).await;
    let history = until_caught_up(&mut sub).await.events;
    let s = |v: &[(&str, u64, &str, u64)]| {
        v.iter()
            .map(|(a, r, t, p)| (a.to_string(), *r, t.to_string(), *p))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(&history),
        s(&[
            ("doc-1", 0, "Drafted", e0.position),
            ("$$doc-1", 0, "$metadata", m0),
        ])
    );

    // Live: the delete's record, the revival record an append writes before its event, and
    // the first metadata of a stream with no events.
    delete(c, "doc-1", StreamState::Any).await.expect("delete");
    let e1 = put(c, "doc-1", Proposed::json(1, "Redrafted")).await;
    let m2 = set_metadata(
        c,
        "doc-2",
        StreamState::NoStream,
        &StreamMetadata::builder()
            .insert_custom_property("owner", "ops")
            .build(),
    )
    .await
    .expect("set metadata of doc-2")
    .position
    .commit;
    let live = next_events(&mut sub, 4, &mut Received::default()).await;
    let deleted_at = live[0].position.commit;
    assert_eq!(
        summary(&live),
        s(&[
            ("$$doc-1", 1, "$metadata", deleted_at),
            ("$$doc-1", 2, "$metadata", e1.position - 1),
            ("doc-1", 1, "Redrafted", e1.position),
            ("$$doc-2", 0, "$metadata", m2),
        ])
    );
    assert!(m0 < deleted_at && deleted_at < e1.position - 1, "{live:?}");
    let data = |e: &RecordedEvent| -> serde_json::Value {
        serde_json::from_slice(&e.data).expect("metadata is JSON")
    };
    assert_eq!(data(&history[1]), json!({ "$maxCount": 5 }));
    assert_eq!(data(&live[0]), json!({ "$tb": i64::MAX }));
    assert_eq!(data(&live[1]), json!({ "$tb": 1 }));
    assert_eq!(data(&live[3]), json!({ "owner": "ops" }));
    assert!(live.iter().all(|e| e.is_json), "{live:?}");

    // A read of $all now gives the same but doc-1@0, which the delete hides in every read
    // (KurrentDB would show it until a scavenge); so does a new catch-up.
    let everything = [summary(&history[1..]), summary(&live)].concat();
    let all = read_all(c, &ReadAllOptions::default())
        .await
        .expect("read $all");
    assert_eq!(summary(&all), everything);
    let mut again = c
        .subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start))
        .await;
    expect_confirmed(&mut again).await;
    assert_eq!(
        summary(&until_caught_up(&mut again).await.events),
        everything
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_features_report_the_version_and_batch_append() {
    let fx = start().await;
    let info = within("server info", fx.client.server_info())
        .await
        .expect("server info");
    let v = info.version();
    assert_eq!((v.major(), v.minor(), v.patch()), (24, 10, 0));
    assert!(
        info.contains_features(kurrentdb::operations::Features::BATCH_APPEND),
        "{info:?}"
    );
}

/// A server whose gossip advertises `localhost:PORT` (while clients are given `127.0.0.1`).
async fn start_advertising_localhost(
    dir: &std::path::Path,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(Store::open(dir, common::config()).expect("open store"));
    let listener = server::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let config = ServerConfig {
        advertise: Some(format!("localhost:{}", addr.port())),
        ..ServerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::serve(
            store,
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(2),
        )
        .await
        .expect("server runs");
    });
    (addr, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_discovery_finds_the_leader() {
    let dir = common::tempdir();
    let (addr, stop, task) = start_advertising_localhost(dir.path()).await;
    let settings: ClientSettings = format!(
        "esdb+discover://127.0.0.1:{}?tls=false&maxDiscoverAttempts=2&discoveryInterval=100",
        addr.port()
    )
    .parse()
    .expect("settings");

    // The node chosen is the one gossip advertises (the seed was 127.0.0.1).
    let ops = kurrentdb::operations::Client::new(settings.clone()).expect("operations client");
    let node = within("discovery", ops.current_selected_node())
        .await
        .expect("discover the leader through gossip");
    assert_eq!(
        (node.host.as_str(), node.port),
        ("localhost", u32::from(addr.port()))
    );

    // And it works.
    let c = Client::new(settings).expect("client");
    let e = put(&c, "gossip-1", Proposed::json(1, "Found")).await;
    let got = read_stream(&c, "gossip-1", &ReadStreamOptions::default())
        .await
        .expect("read");
    assert_events(&got, &[&e]);

    drop(c);
    drop(ops);
    let _ = stop.send(());
    within("server stop", task).await.expect("server task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_persistent_subscriptions_finds_none() {
    let fx = start().await;
    let listed = within(
        "list persistent subscriptions",
        fx.client
            .list_all_persistent_subscriptions(&Default::default()),
    )
    .await;
    match listed {
        Ok(v) if v.is_empty() => {}
        // NOT_FOUND, as the Rust client shows it.
        Err(Error::ResourceNotFound) => {}
        other => panic!("expected no persistent subscriptions, got {other:?}"),
    }
}
