//! The native gRPC API over a real connection: every unary and read RPC, and every error
//! mapping of the documented contract (code, `ErrorInfo` reason, domain and metadata).
//! Subscriptions are tested elsewhere.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::server::{TestServer, assert_status, expect_err};
use prost::Message;
use statestore::server::ServerConfig;
use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::proto::{
    self, AppendMultiRequest, AppendRequest, AppendResponse, EventData, ExpectedRevision,
    GetStreamRequest, ReadAllRequest, ReadAllResponse, ReadStreamRequest, RecordedEvent,
    ServerInfoRequest, ServerInfoResponse,
};
use statestore::service::ServiceConfig;
use statestore::{Config, FsyncPolicy};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------------

/// A served store with a connected client. Fields drop in order: client, server, directory.
struct Fixture {
    client: EventStoreClient<Channel>,
    server: TestServer,
    dir: tempfile::TempDir,
}

async fn start_with(config: Config, server_config: ServerConfig) -> Fixture {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), config, server_config).await;
    let client = server.client().await;
    Fixture {
        client,
        server,
        dir,
    }
}

async fn start() -> Fixture {
    start_with(common::config(), ServerConfig::default()).await
}

/// A server whose reads come in pages of `n` events.
fn paged(n: u64) -> ServerConfig {
    ServerConfig {
        service: ServiceConfig {
            read_page_events: n,
            ..ServiceConfig::default()
        },
        ..ServerConfig::default()
    }
}

fn id_bytes(n: u64) -> Vec<u8> {
    common::id(n).as_bytes().to_vec()
}

/// A JSON event with the deterministic id `n`.
fn json(n: u64, event_type: &str) -> EventData {
    EventData {
        id: id_bytes(n).into(),
        event_type: event_type.to_string(),
        content_type: proto::ContentType::Json as i32,
        data: format!("{{\"n\":{n}}}").into_bytes().into(),
        metadata: Default::default(),
    }
}

fn full(
    id: Vec<u8>,
    event_type: &str,
    content_type: proto::ContentType,
    data: &[u8],
    metadata: &[u8],
) -> EventData {
    EventData {
        id: id.into(),
        event_type: event_type.to_string(),
        content_type: content_type as i32,
        data: data.to_vec().into(),
        metadata: metadata.to_vec().into(),
    }
}

fn any() -> Option<ExpectedRevision> {
    use proto::expected_revision::Kind;
    Some(ExpectedRevision {
        kind: Some(Kind::Any(proto::Empty {})),
    })
}

fn no_stream() -> Option<ExpectedRevision> {
    use proto::expected_revision::Kind;
    Some(ExpectedRevision {
        kind: Some(Kind::NoStream(proto::Empty {})),
    })
}

fn stream_exists() -> Option<ExpectedRevision> {
    use proto::expected_revision::Kind;
    Some(ExpectedRevision {
        kind: Some(Kind::StreamExists(proto::Empty {})),
    })
}

fn exact(r: u64) -> Option<ExpectedRevision> {
    use proto::expected_revision::Kind;
    Some(ExpectedRevision {
        kind: Some(Kind::Exact(r)),
    })
}

fn part(stream: &str, expected: Option<ExpectedRevision>, events: Vec<EventData>) -> AppendRequest {
    AppendRequest {
        stream: stream.to_string(),
        expected,
        events,
        tracking: None,
    }
}

fn response(first: u64, last: u64, revision: u64) -> AppendResponse {
    AppendResponse {
        first_position: first,
        last_position: last,
        revision,
    }
}

async fn append(
    client: &mut EventStoreClient<Channel>,
    stream: &str,
    expected: Option<ExpectedRevision>,
    events: Vec<EventData>,
) -> Result<AppendResponse, Status> {
    client
        .append(part(stream, expected, events))
        .await
        .map(tonic::Response::into_inner)
}

async fn append_multi(
    client: &mut EventStoreClient<Channel>,
    parts: Vec<AppendRequest>,
) -> Result<Vec<AppendResponse>, Status> {
    client
        .append_multi(AppendMultiRequest {
            streams: parts,
            tracking: None,
        })
        .await
        .map(|r| r.into_inner().results)
}

fn stream_req(
    stream: &str,
    from_revision: Option<u64>,
    direction: proto::Direction,
    max_count: u64,
) -> ReadStreamRequest {
    ReadStreamRequest {
        stream: stream.to_string(),
        from_revision,
        direction: direction as i32,
        max_count,
        from_snapshot: false,
    }
}

/// Every page of a ReadStream call.
async fn read_stream_pages(
    client: &mut EventStoreClient<Channel>,
    request: ReadStreamRequest,
) -> Result<Vec<Vec<RecordedEvent>>, Status> {
    let mut stream = client.read_stream(request).await?.into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        pages.push(page?.events);
    }
    Ok(pages)
}

/// Every event of a ReadStream call.
async fn read_stream(
    client: &mut EventStoreClient<Channel>,
    request: ReadStreamRequest,
) -> Result<Vec<RecordedEvent>, Status> {
    Ok(read_stream_pages(client, request)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// The revisions of a whole forwards read of `stream`.
async fn revisions(client: &mut EventStoreClient<Channel>, stream: &str) -> Vec<u64> {
    read_stream(
        client,
        stream_req(stream, None, proto::Direction::Forwards, 0),
    )
    .await
    .unwrap_or_else(|s| panic!("read {stream}: {s:?}"))
    .iter()
    .map(|e| e.revision)
    .collect()
}

fn all_req(
    from_position: Option<u64>,
    direction: proto::Direction,
    max_count: u64,
    filter: Option<proto::EventFilter>,
) -> ReadAllRequest {
    ReadAllRequest {
        from_position,
        direction: direction as i32,
        max_count,
        filter,
    }
}

/// Every page of a ReadAll call.
async fn read_all_pages(
    client: &mut EventStoreClient<Channel>,
    request: ReadAllRequest,
) -> Result<Vec<ReadAllResponse>, Status> {
    let mut stream = client.read_all(request).await?.into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        pages.push(page?);
    }
    Ok(pages)
}

/// The whole log, forwards, unfiltered.
async fn whole_log(client: &mut EventStoreClient<Channel>) -> Vec<RecordedEvent> {
    read_all_pages(client, all_req(None, proto::Direction::Forwards, 0, None))
        .await
        .expect("read the whole log")
        .into_iter()
        .flat_map(|p| p.events)
        .collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

async fn info(client: &mut EventStoreClient<Channel>) -> ServerInfoResponse {
    client
        .server_info(ServerInfoRequest {})
        .await
        .expect("server info")
        .into_inner()
}

async fn last_position(client: &mut EventStoreClient<Channel>) -> u64 {
    info(client).await.last_position
}

fn prefix(p: &str) -> Option<proto::EventFilter> {
    Some(proto::EventFilter {
        stream: Some(proto::event_filter::Stream::StreamPrefix(p.to_string())),
        event_types: vec![],
    })
}

fn category(c: &str) -> Option<proto::EventFilter> {
    Some(proto::EventFilter {
        stream: Some(proto::event_filter::Stream::Category(c.to_string())),
        event_types: vec![],
    })
}

fn types(t: &[&str]) -> Option<proto::EventFilter> {
    Some(proto::EventFilter {
        stream: None,
        event_types: t.iter().map(|s| s.to_string()).collect(),
    })
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Status>) {
    assert_status(
        &expect_err(r),
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        &[],
    );
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Asserts that `actual` is the event `sent`, stored at this place.
#[track_caller]
fn assert_recorded(
    actual: &RecordedEvent,
    sent: &EventData,
    stream: &str,
    revision: u64,
    position: u64,
) {
    let ctx = format!("{stream}@{revision}");
    assert_eq!(actual.stream, stream, "{ctx}: stream");
    assert_eq!(actual.revision, revision, "{ctx}: revision");
    assert_eq!(actual.position, position, "{ctx}: position");
    assert_eq!(actual.event_type, sent.event_type, "{ctx}: event type");
    assert_eq!(
        actual.content_type, sent.content_type,
        "{ctx}: content type"
    );
    assert_eq!(actual.data, sent.data, "{ctx}: data");
    assert_eq!(actual.metadata, sent.metadata, "{ctx}: metadata");
    assert_eq!(actual.id.len(), 16, "{ctx}: id length");
    if sent.id.is_empty() {
        assert!(
            actual.id.iter().any(|&b| b != 0),
            "{ctx}: server-assigned id is nil"
        );
    } else {
        assert_eq!(actual.id, sent.id, "{ctx}: id");
    }
    assert!(actual.timestamp_us > 0, "{ctx}: timestamp is zero");
    let now = now_us();
    assert!(
        actual.timestamp_us <= now && now - actual.timestamp_us < 600_000_000,
        "{ctx}: timestamp {} is not within ten minutes before now ({now})",
        actual.timestamp_us
    );
}

// ---------------------------------------------------------------------------------------------
// Append and ReadStream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_then_read_stream_both_ways() {
    let mut f = start().await;
    let c = &mut f.client;
    let first = vec![
        full(
            id_bytes(1),
            "Created",
            proto::ContentType::Json,
            br#"{"a":1}"#,
            br#"{"corr":"x"}"#,
        ),
        full(
            id_bytes(2),
            "Updated",
            proto::ContentType::Binary,
            &[0, 1, 2, 255, 0],
            &[],
        ),
        // Empty data and metadata; the server assigns the id.
        full(vec![], "Touched", proto::ContentType::Binary, &[], &[]),
        full(
            id_bytes(4),
            "Updated",
            proto::ContentType::Json,
            b"{}",
            &[9; 100],
        ),
        json(5, "Closed"),
    ];
    let r = append(c, "order-1", no_stream(), first.clone())
        .await
        .unwrap();
    assert_eq!(r, response(1, 5, 4));
    let other = append(c, "other", any(), vec![json(6, "X")]).await.unwrap();
    assert_eq!(other, response(6, 6, 0));
    let second = vec![json(7, "Reopened"), json(8, "Closed")];
    let r = append(c, "order-1", exact(4), second.clone())
        .await
        .unwrap();
    assert_eq!(r, response(7, 8, 6));

    // (sent event, revision, position) of every event of order-1.
    let model: Vec<(&EventData, u64, u64)> = first
        .iter()
        .chain(&second)
        .zip([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 7), (6, 8)])
        .map(|(e, (rev, pos))| (e, rev, pos))
        .collect();

    let check = |events: &[RecordedEvent], expected: &[&(&EventData, u64, u64)]| {
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            expected.iter().map(|m| m.1).collect::<Vec<_>>(),
            "revisions read"
        );
        for (actual, (sent, rev, pos)) in events.iter().zip(expected) {
            assert_recorded(actual, sent, "order-1", *rev, *pos);
        }
    };
    let fw = proto::Direction::Forwards;
    let bw = proto::Direction::Backwards;

    // Forwards, everything (max_count 0 and a max_count above the length).
    for max in [0, 7, 100] {
        let events = read_stream(c, stream_req("order-1", None, fw, max))
            .await
            .unwrap();
        check(&events, &model.iter().collect::<Vec<_>>());
    }
    // Timestamps never go back along the log.
    let events = read_stream(c, stream_req("order-1", None, fw, 0))
        .await
        .unwrap();
    assert!(
        events
            .windows(2)
            .all(|w| w[0].timestamp_us <= w[1].timestamp_us)
    );
    // The same assigned id on every read.
    let again = read_stream(c, stream_req("order-1", Some(2), fw, 1))
        .await
        .unwrap();
    assert_eq!(again[0].id, events[2].id);

    // Backwards, everything.
    let events = read_stream(c, stream_req("order-1", None, bw, 0))
        .await
        .unwrap();
    check(&events, &model.iter().rev().collect::<Vec<_>>());

    // Forwards from a revision, limited.
    let events = read_stream(c, stream_req("order-1", Some(2), fw, 3))
        .await
        .unwrap();
    check(&events, &model[2..5].iter().collect::<Vec<_>>());
    // Forwards from a revision, unlimited.
    let events = read_stream(c, stream_req("order-1", Some(5), fw, 0))
        .await
        .unwrap();
    check(&events, &model[5..].iter().collect::<Vec<_>>());
    // Backwards from a revision, limited.
    let events = read_stream(c, stream_req("order-1", Some(4), bw, 2))
        .await
        .unwrap();
    check(&events, &[&model[4], &model[3]]);
    // Backwards from revision 0.
    let events = read_stream(c, stream_req("order-1", Some(0), bw, 0))
        .await
        .unwrap();
    check(&events, &[&model[0]]);
    // Backwards from past the end starts at the newest.
    let events = read_stream(c, stream_req("order-1", Some(1000), bw, 3))
        .await
        .unwrap();
    check(&events, &[&model[6], &model[5], &model[4]]);
    // Forwards from past the end: nothing, not an error.
    let events = read_stream(c, stream_req("order-1", Some(7), fw, 0))
        .await
        .unwrap();
    assert!(events.is_empty(), "{events:?}");
    // Limit 1 both ways.
    let events = read_stream(c, stream_req("order-1", None, fw, 1))
        .await
        .unwrap();
    check(&events, &[&model[0]]);
    let events = read_stream(c, stream_req("order-1", None, bw, 1))
        .await
        .unwrap();
    check(&events, &[&model[6]]);

    // The other stream holds only its event.
    let events = read_stream(c, stream_req("other", None, fw, 0))
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_recorded(&events[0], &json(6, "X"), "other", 0, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_expected_revision_means_any() {
    let mut f = start().await;
    let c = &mut f.client;
    assert_eq!(
        append(c, "s", None, vec![json(1, "T")]).await.unwrap(),
        response(1, 1, 0)
    );
    assert_eq!(
        append(c, "s", None, vec![json(2, "T")]).await.unwrap(),
        response(2, 2, 1)
    );
    // An ExpectedRevision message with no kind set is also `any`.
    assert_eq!(
        append(
            c,
            "s",
            Some(ExpectedRevision { kind: None }),
            vec![json(3, "T")]
        )
        .await
        .unwrap(),
        response(3, 3, 2)
    );
    assert_eq!(
        append(c, "s", any(), vec![json(4, "T")]).await.unwrap(),
        response(4, 4, 3)
    );
    assert_eq!(revisions(c, "s").await, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_larger_than_a_page_return_every_event_once_in_order() {
    let mut f = start_with(common::config(), paged(3)).await;
    let c = &mut f.client;
    // 10 events in "s" (two appends), interleaved with another stream.
    let sent: Vec<EventData> = (0..10).map(|n| json(n, "T")).collect();
    append(c, "s", no_stream(), sent[..6].to_vec())
        .await
        .unwrap();
    append(c, "noise", any(), vec![json(100, "N")])
        .await
        .unwrap();
    append(c, "s", exact(5), sent[6..].to_vec()).await.unwrap();
    // Positions: s@0..=5 -> 1..=6, noise -> 7, s@6..=9 -> 8..=11.
    let pos = |rev: u64| if rev < 6 { rev + 1 } else { rev + 2 };

    let fw = proto::Direction::Forwards;
    let bw = proto::Direction::Backwards;
    for (request, expected_revs) in [
        (stream_req("s", None, fw, 0), (0..10).collect::<Vec<u64>>()),
        (stream_req("s", None, bw, 0), (0..10).rev().collect()),
        (stream_req("s", Some(2), fw, 7), (2..9).collect()),
        (stream_req("s", Some(8), bw, 7), (2..9).rev().collect()),
        (stream_req("s", Some(1), fw, 0), (1..10).collect()),
        (stream_req("s", None, bw, 4), (6..10).rev().collect()),
    ] {
        let ctx = format!("{request:?}");
        let pages = read_stream_pages(c, request).await.unwrap();
        assert!(
            pages.iter().all(|p| p.len() <= 3),
            "{ctx}: a page holds more than read_page_events: {:?}",
            pages.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let non_empty = pages.iter().filter(|p| !p.is_empty()).count();
        assert_eq!(
            non_empty,
            expected_revs.len().div_ceil(3),
            "{ctx}: non-empty pages"
        );
        let events: Vec<RecordedEvent> = pages.into_iter().flatten().collect();
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            expected_revs,
            "{ctx}"
        );
        for e in &events {
            assert_recorded(
                e,
                &sent[e.revision as usize],
                "s",
                e.revision,
                pos(e.revision),
            );
        }
    }

    // ReadAll pages the same way, and each page says how far the log was scanned.
    let pages = read_all_pages(c, all_req(None, fw, 0, None)).await.unwrap();
    let shape: Vec<(usize, u64, bool)> = pages
        .iter()
        .map(|p| (p.events.len(), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(
        shape,
        vec![(3, 3, false), (3, 6, false), (3, 9, false), (2, 11, true)]
    );
    let log: Vec<RecordedEvent> = pages.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(positions(&log), (1..=11).collect::<Vec<_>>());

    let pages = read_all_pages(c, all_req(None, bw, 0, None)).await.unwrap();
    let shape: Vec<(usize, u64, bool)> = pages
        .iter()
        .map(|p| (p.events.len(), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(
        shape,
        vec![(3, 9, false), (3, 6, false), (3, 3, false), (2, 1, true)]
    );
    let log: Vec<RecordedEvent> = pages.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(positions(&log), (1..=11).rev().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_pages_stay_under_the_message_size_limit() {
    // Pages are cut to half the message limit (32 KiB here); 12 KB events make three of them
    // too big for one page. The server refuses to encode a message over the limit, so a page
    // that is not cut fails the read.
    let server_config = ServerConfig {
        message_bytes_max: 64 << 10,
        ..ServerConfig::default()
    };
    let mut f = start_with(common::config(), server_config).await;
    let c = &mut f.client;
    let sent: Vec<EventData> = (0..10)
        .map(|n| {
            full(
                id_bytes(n),
                "Big",
                proto::ContentType::Binary,
                &vec![n as u8 + 1; 12_000],
                &[],
            )
        })
        .collect();
    for (n, e) in sent.iter().enumerate() {
        append(c, "big", exact_or_new(n as u64), vec![e.clone()])
            .await
            .unwrap();
    }
    let fw = proto::Direction::Forwards;
    let bw = proto::Direction::Backwards;
    let pages = read_stream_pages(c, stream_req("big", None, fw, 0))
        .await
        .unwrap();
    assert!(pages.len() >= 4, "{} pages", pages.len());
    for p in &pages {
        let bytes = proto::ReadStreamResponse {
            events: p.clone(),
            snapshot: None,
        }
        .encoded_len();
        assert!(bytes <= 64 << 10, "a page of {bytes} bytes");
    }
    let events: Vec<RecordedEvent> = pages.into_iter().flatten().collect();
    assert_eq!(positions(&events), (1..=10).collect::<Vec<_>>());
    for e in &events {
        assert_recorded(
            e,
            &sent[e.revision as usize],
            "big",
            e.revision,
            e.revision + 1,
        );
    }

    for direction in [fw, bw] {
        let pages = read_all_pages(c, all_req(None, direction, 0, None))
            .await
            .unwrap();
        assert!(pages.len() >= 4, "{} pages", pages.len());
        for p in &pages {
            assert!(p.encoded_len() <= 64 << 10, "a page of {}", p.encoded_len());
        }
        assert!(pages.last().unwrap().end_of_log);
        assert!(pages[..pages.len() - 1].iter().all(|p| !p.end_of_log));
        let mut got: Vec<u64> = pages
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.position))
            .collect();
        if direction == bw {
            got.reverse();
        }
        assert_eq!(got, (1..=10).collect::<Vec<_>>(), "{direction:?}");
    }
}

fn exact_or_new(revision_count: u64) -> Option<ExpectedRevision> {
    match revision_count {
        0 => no_stream(),
        n => exact(n - 1),
    }
}

// ---------------------------------------------------------------------------------------------
// AppendMulti
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_multi_is_atomic_across_streams() {
    let mut f = start().await;
    let c = &mut f.client;
    let results = append_multi(
        c,
        vec![
            part("a", no_stream(), vec![json(1, "T"), json(2, "T")]),
            part("b", any(), vec![json(3, "T")]),
            part(
                "c",
                no_stream(),
                vec![json(4, "T"), json(5, "T"), json(6, "T")],
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        results,
        vec![response(1, 2, 1), response(3, 3, 0), response(4, 6, 2)]
    );
    let log = whole_log(c).await;
    let placed: Vec<(String, u64, u64, Vec<u8>)> = log
        .iter()
        .map(|e| (e.stream.clone(), e.revision, e.position, e.id.to_vec()))
        .collect();
    assert_eq!(
        placed,
        vec![
            ("a".into(), 0, 1, id_bytes(1)),
            ("a".into(), 1, 2, id_bytes(2)),
            ("b".into(), 0, 3, id_bytes(3)),
            ("c".into(), 0, 4, id_bytes(4)),
            ("c".into(), 1, 5, id_bytes(5)),
            ("c".into(), 2, 6, id_bytes(6)),
        ]
    );
    // Every event of one commit has the same timestamp.
    assert!(log.iter().all(|e| e.timestamp_us == log[0].timestamp_us));

    // One part with a wrong expected revision: nothing is written to any part.
    let before = whole_log(c).await;
    let status = expect_err(
        append_multi(
            c,
            vec![
                part("a", exact(1), vec![json(10, "T")]),
                part("b", exact(5), vec![json(11, "T")]),
                part("d", no_stream(), vec![json(12, "T")]),
            ],
        )
        .await,
    );
    assert_status(
        &status,
        Code::FailedPrecondition,
        "WRONG_EXPECTED_REVISION",
        &[("stream", "b"), ("expected", "5"), ("actual", "0")],
    );
    // The failing part first, and a later part that would fail too.
    let status = expect_err(
        append_multi(
            c,
            vec![
                part("d", stream_exists(), vec![json(12, "T")]),
                part("a", exact(1), vec![json(10, "T")]),
            ],
        )
        .await,
    );
    assert_status(
        &status,
        Code::FailedPrecondition,
        "WRONG_EXPECTED_REVISION",
        &[
            ("stream", "d"),
            ("expected", "stream_exists"),
            ("actual", "no_stream"),
        ],
    );
    assert_eq!(whole_log(c).await, before);
    assert_eq!(revisions(c, "a").await, vec![0, 1]);
    assert_eq!(revisions(c, "b").await, vec![0]);
    assert_eq!(revisions(c, "c").await, vec![0, 1, 2]);
    let status =
        expect_err(read_stream(c, stream_req("d", None, proto::Direction::Forwards, 0)).await);
    assert_status(
        &status,
        Code::NotFound,
        "STREAM_NOT_FOUND",
        &[("stream", "d")],
    );
    let i = info(c).await;
    assert_eq!((i.last_position, i.streams), (6, 3));

    // A malformed event in one part: nothing written either.
    assert_invalid(
        append_multi(
            c,
            vec![
                part("a", exact(1), vec![json(10, "T")]),
                part(
                    "d",
                    no_stream(),
                    vec![full(vec![1; 3], "T", proto::ContentType::Json, b"{}", b"")],
                ),
            ],
        )
        .await,
    );
    // A part without events, a stream named twice, and no parts at all.
    assert_invalid(
        append_multi(
            c,
            vec![
                part("a", exact(1), vec![json(10, "T")]),
                part("d", no_stream(), vec![]),
            ],
        )
        .await,
    );
    assert_invalid(
        append_multi(
            c,
            vec![
                part("d", any(), vec![json(10, "T")]),
                part("d", any(), vec![json(11, "T")]),
            ],
        )
        .await,
    );
    assert_invalid(append_multi(c, vec![]).await);
    assert_eq!(whole_log(c).await, before);

    // Now the corrected request commits, all parts together.
    let results = append_multi(
        c,
        vec![
            part("a", exact(1), vec![json(10, "T")]),
            part("b", exact(0), vec![json(11, "T")]),
            part("d", no_stream(), vec![json(12, "T")]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        results,
        vec![response(7, 7, 2), response(8, 8, 1), response(9, 9, 0)]
    );
    assert_eq!(revisions(c, "d").await, vec![0]);
}

// ---------------------------------------------------------------------------------------------
// ReadAll
// ---------------------------------------------------------------------------------------------

/// The log of the filter tests: (stream, type) at positions 1, 2, ...
const LOG: &[(&str, &str)] = &[
    ("order-1", "Placed"),
    ("order-2", "Placed"),
    ("orders-1", "Placed"),
    ("user-1", "Created"),
    ("order-1", "Shipped"),
    ("order", "Placed"),
    ("user-2", "Created"),
    ("order-2", "Shipped"),
    ("orders-1", "Shipped"),
    ("user-1", "Renamed"),
    ("order-1", "Closed"),
    ("order", "Shipped"),
    ("x", "Shipped"),
];

async fn write_log(c: &mut EventStoreClient<Channel>) {
    for (n, (stream, event_type)) in LOG.iter().enumerate() {
        let r = append(c, stream, any(), vec![json(n as u64 + 1, event_type)])
            .await
            .unwrap();
        assert_eq!(r.first_position, n as u64 + 1);
    }
}

/// The positions of LOG that pass `keep`.
fn matching(keep: impl Fn(&str, &str) -> bool) -> Vec<u64> {
    LOG.iter()
        .enumerate()
        .filter(|(_, (s, t))| keep(s, t))
        .map(|(i, _)| i as u64 + 1)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_with_filters_both_ways() {
    let mut f = start_with(common::config(), paged(3)).await;
    let c = &mut f.client;
    write_log(c).await;
    let last = LOG.len() as u64;
    let fw = proto::Direction::Forwards;
    let bw = proto::Direction::Backwards;

    let cases: Vec<(Option<proto::EventFilter>, Vec<u64>)> = vec![
        (None, matching(|_, _| true)),
        // An empty prefix matches everything.
        (prefix(""), matching(|_, _| true)),
        (prefix("order"), matching(|s, _| s.starts_with("order"))),
        (prefix("order-"), matching(|s, _| s.starts_with("order-"))),
        (prefix("nothing"), vec![]),
        (
            category("order"),
            matching(|s, _| s == "order" || s.starts_with("order-")),
        ),
        (category("orders"), matching(|s, _| s == "orders-1")),
        (category("user"), matching(|s, _| s.starts_with("user-"))),
        (category("x"), vec![13]),
        (types(&["Shipped"]), matching(|_, t| t == "Shipped")),
        (
            types(&["Created", "Renamed"]),
            matching(|_, t| t == "Created" || t == "Renamed"),
        ),
        (types(&["Missing"]), vec![]),
        (
            Some(proto::EventFilter {
                stream: Some(proto::event_filter::Stream::Category("order".into())),
                event_types: vec!["Shipped".into(), "Closed".into()],
            }),
            matching(|s, t| {
                (s == "order" || s.starts_with("order-")) && (t == "Shipped" || t == "Closed")
            }),
        ),
        (
            Some(proto::EventFilter {
                stream: Some(proto::event_filter::Stream::StreamPrefix("user-1".into())),
                event_types: vec!["Renamed".into()],
            }),
            vec![10],
        ),
    ];
    for (filter, expected) in cases {
        for direction in [fw, bw] {
            let ctx = format!("{filter:?} {direction:?}");
            let pages = read_all_pages(c, all_req(None, direction, 0, filter.clone()))
                .await
                .unwrap();
            assert!(!pages.is_empty(), "{ctx}: no page");
            // Only the last page says end of log, and it covers the whole log.
            let (tail, init) = pages.split_last().unwrap();
            assert!(tail.end_of_log, "{ctx}: last page not end_of_log");
            assert!(
                init.iter().all(|p| !p.end_of_log),
                "{ctx}: early end_of_log"
            );
            let scanned: Vec<u64> = pages.iter().map(|p| p.scanned_to).collect();
            match direction {
                proto::Direction::Forwards => {
                    assert_eq!(tail.scanned_to, last, "{ctx}");
                    assert!(scanned.is_sorted(), "{ctx}: scanned_to {scanned:?}");
                }
                proto::Direction::Backwards => {
                    assert_eq!(tail.scanned_to, 1, "{ctx}");
                    assert!(scanned.is_sorted_by(|a, b| a >= b), "{ctx}: {scanned:?}");
                }
            }
            for p in &pages {
                assert!(p.events.len() <= 3, "{ctx}: page of {}", p.events.len());
                // A page's events lie within what it says was scanned.
                for e in &p.events {
                    match direction {
                        proto::Direction::Forwards => assert!(e.position <= p.scanned_to),
                        proto::Direction::Backwards => assert!(e.position >= p.scanned_to),
                    }
                }
            }
            let events: Vec<RecordedEvent> = pages.into_iter().flat_map(|p| p.events).collect();
            let mut want = expected.clone();
            if direction == bw {
                want.reverse();
            }
            assert_eq!(positions(&events), want, "{ctx}");
            for e in &events {
                let (stream, event_type) = LOG[e.position as usize - 1];
                assert_eq!(
                    (e.stream.as_str(), e.event_type.as_str()),
                    (stream, event_type)
                );
                assert_eq!(e.id, id_bytes(e.position), "{ctx}: id");
                assert_eq!(e.data, format!("{{\"n\":{}}}", e.position).into_bytes());
                assert_eq!(e.content_type, proto::ContentType::Json as i32);
                assert!(e.timestamp_us > 0);
            }
        }
    }

    // from_position, both ways.
    let events: Vec<u64> = read_all_pages(c, all_req(Some(5), fw, 0, None))
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.position))
        .collect();
    assert_eq!(events, (5..=last).collect::<Vec<_>>());
    let events: Vec<u64> = read_all_pages(c, all_req(Some(5), bw, 0, None))
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.position))
        .collect();
    assert_eq!(events, vec![5, 4, 3, 2, 1]);
    let events: Vec<u64> = read_all_pages(c, all_req(Some(5), fw, 0, category("order")))
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.position))
        .collect();
    assert_eq!(events, vec![5, 6, 8, 11, 12]);
    // From 0 forwards is from the start.
    let events: Vec<u64> = read_all_pages(c, all_req(Some(0), fw, 2, None))
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.position))
        .collect();
    assert_eq!(events, vec![1, 2]);
    // Past the end forwards: nothing, end of log, scanned to the last position.
    let pages = read_all_pages(c, all_req(Some(last + 5), fw, 0, None))
        .await
        .unwrap();
    assert_eq!(pages.len(), 1);
    assert!(pages[0].events.is_empty());
    assert!(pages[0].end_of_log);
    assert_eq!(pages[0].scanned_to, last);
    // Backwards from past the end starts at the newest.
    let events: Vec<u64> = read_all_pages(c, all_req(Some(1000), bw, 2, None))
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.position))
        .collect();
    assert_eq!(events, vec![last, last - 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_max_count_stops_before_the_end() {
    let mut f = start_with(common::config(), paged(3)).await;
    let c = &mut f.client;
    write_log(c).await;
    let fw = proto::Direction::Forwards;
    let bw = proto::Direction::Backwards;

    // Unfiltered, over two pages: stops at 4 events, not at the end of the log.
    let pages = read_all_pages(c, all_req(None, fw, 4, None)).await.unwrap();
    let shape: Vec<(Vec<u64>, u64, bool)> = pages
        .iter()
        .map(|p| (positions(&p.events), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(shape, vec![(vec![1, 2, 3], 3, false), (vec![4], 4, false)]);
    let pages = read_all_pages(c, all_req(None, bw, 4, None)).await.unwrap();
    let shape: Vec<(Vec<u64>, u64, bool)> = pages
        .iter()
        .map(|p| (positions(&p.events), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(
        shape,
        vec![(vec![13, 12, 11], 11, false), (vec![10], 10, false)]
    );

    // Filtered: the count is of matching events; scanned_to is the last one returned.
    let pages = read_all_pages(c, all_req(None, fw, 2, types(&["Shipped"])))
        .await
        .unwrap();
    let shape: Vec<(Vec<u64>, u64, bool)> = pages
        .iter()
        .map(|p| (positions(&p.events), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(shape, vec![(vec![5, 8], 8, false)]);
    // Resuming from scanned_to + 1 goes on where the first read stopped.
    let pages = read_all_pages(c, all_req(Some(9), fw, 2, types(&["Shipped"])))
        .await
        .unwrap();
    let got: Vec<u64> = pages.iter().flat_map(|p| positions(&p.events)).collect();
    assert_eq!(got, vec![9, 12]);

    let pages = read_all_pages(c, all_req(None, bw, 2, category("user")))
        .await
        .unwrap();
    let shape: Vec<(Vec<u64>, u64, bool)> = pages
        .iter()
        .map(|p| (positions(&p.events), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(shape, vec![(vec![10, 7], 7, false)]);

    // A max_count reaching exactly the last match still ends at the end of the log when the
    // match is the last event.
    let pages = read_all_pages(c, all_req(None, fw, 1, category("x")))
        .await
        .unwrap();
    let shape: Vec<(Vec<u64>, u64, bool)> = pages
        .iter()
        .map(|p| (positions(&p.events), p.scanned_to, p.end_of_log))
        .collect();
    assert_eq!(shape, vec![(vec![13], 13, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_read_all_reports_scan_progress_on_empty_pages() {
    // Each engine read looks at no more than 4 events, so a sparse filter yields empty pages
    // whose scanned_to still advances.
    let config = Config {
        read_scan_max: 4,
        ..common::config()
    };
    let mut f = start_with(config, paged(3)).await;
    let c = &mut f.client;
    for n in 1..=12 {
        append(c, &format!("noise-{n}"), any(), vec![json(n, "N")])
            .await
            .unwrap();
    }
    append(c, "wanted-1", any(), vec![json(13, "W")])
        .await
        .unwrap();

    let shape = |pages: &[ReadAllResponse]| -> Vec<(Vec<u64>, u64, bool)> {
        pages
            .iter()
            .map(|p| (positions(&p.events), p.scanned_to, p.end_of_log))
            .collect()
    };
    let pages = read_all_pages(
        c,
        all_req(None, proto::Direction::Forwards, 0, category("wanted")),
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&pages),
        vec![
            (vec![], 4, false),
            (vec![], 8, false),
            (vec![], 12, false),
            (vec![13], 13, true)
        ]
    );
    let pages = read_all_pages(
        c,
        all_req(None, proto::Direction::Backwards, 0, category("wanted")),
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&pages),
        vec![
            (vec![13], 10, false),
            (vec![], 6, false),
            (vec![], 2, false),
            (vec![], 1, true)
        ]
    );
    let pages = read_all_pages(
        c,
        all_req(None, proto::Direction::Forwards, 0, category("none")),
    )
    .await
    .unwrap();
    assert_eq!(
        shape(&pages),
        vec![
            (vec![], 4, false),
            (vec![], 8, false),
            (vec![], 12, false),
            (vec![], 13, true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_on_an_empty_log() {
    let mut f = start().await;
    let c = &mut f.client;
    for direction in [proto::Direction::Forwards, proto::Direction::Backwards] {
        let pages = read_all_pages(c, all_req(None, direction, 0, None))
            .await
            .unwrap();
        assert_eq!(pages.len(), 1, "{direction:?}");
        assert!(pages[0].events.is_empty(), "{direction:?}");
        assert!(pages[0].end_of_log, "{direction:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_rejects_malformed_filters_and_directions() {
    let mut f = start().await;
    let c = &mut f.client;
    write_log(c).await;
    let fw = proto::Direction::Forwards;
    assert_invalid(read_all_pages(c, all_req(None, fw, 0, category(""))).await);
    assert_invalid(read_all_pages(c, all_req(None, fw, 0, types(&["Placed", ""]))).await);
    for direction in [2, -1, 99] {
        let request = ReadAllRequest {
            from_position: None,
            direction,
            max_count: 0,
            filter: None,
        };
        assert_invalid(read_all_pages(c, request).await);
        let request = ReadStreamRequest {
            stream: "order-1".into(),
            from_revision: None,
            direction,
            max_count: 0,
            from_snapshot: false,
        };
        assert_invalid(read_stream_pages(c, request).await);
        // The direction is checked before the stream is looked up.
        let request = ReadStreamRequest {
            stream: "missing".into(),
            from_revision: None,
            direction,
            max_count: 0,
            from_snapshot: false,
        };
        assert_invalid(read_stream_pages(c, request).await);
    }
}

// ---------------------------------------------------------------------------------------------
// GetStream and ServerInfo
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_stream_and_server_info() {
    let mut f = start().await;
    let dir = f.dir.path().display().to_string();
    let c = &mut f.client;

    let i = info(c).await;
    assert_eq!(i.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(i.last_position, 0);
    assert_eq!(i.streams, 0);
    assert_eq!(i.event_types, 0);
    assert_eq!(i.fsync, "always");
    assert_eq!(i.data_dir, dir);
    assert!(i.segments >= 1, "{i:?}");
    assert!(i.segment_bytes >= 1 << 20, "{i:?}");
    assert_eq!(i.subscriptions, 0);
    assert_eq!(
        (i.checkpoint_position, i.index_runs, i.memtable_events),
        (0, 0, 0)
    );

    let status = expect_err(
        c.get_stream(GetStreamRequest {
            stream: "s-1".into(),
        })
        .await,
    );
    assert_status(
        &status,
        Code::NotFound,
        "STREAM_NOT_FOUND",
        &[("stream", "s-1")],
    );

    append(c, "s-1", no_stream(), vec![json(1, "A"), json(2, "B")])
        .await
        .unwrap();
    append(c, "s-2", no_stream(), vec![json(3, "A")])
        .await
        .unwrap();
    append(c, "s-1", exact(1), vec![json(4, "C")])
        .await
        .unwrap();

    let got = c
        .get_stream(GetStreamRequest {
            stream: "s-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got,
        proto::GetStreamResponse {
            stream: "s-1".into(),
            revision: 2
        }
    );
    let got = c
        .get_stream(GetStreamRequest {
            stream: "s-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, 0);
    let status = expect_err(
        c.get_stream(GetStreamRequest {
            stream: "s-3".into(),
        })
        .await,
    );
    assert_status(
        &status,
        Code::NotFound,
        "STREAM_NOT_FOUND",
        &[("stream", "s-3")],
    );

    let i = info(c).await;
    assert_eq!(i.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(i.last_position, 4);
    assert_eq!(i.streams, 2);
    assert_eq!(i.event_types, 3);
    assert_eq!(i.fsync, "always");
    assert_eq!(i.data_dir, dir);
    // Far below the checkpoint interval: all four events are indexed in memory only.
    assert_eq!(
        (i.checkpoint_position, i.index_runs, i.memtable_events),
        (0, 0, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_info_names_the_fsync_policy() {
    for (policy, text) in [
        (FsyncPolicy::IntervalMs(25), "interval:25"),
        (FsyncPolicy::Never, "never"),
    ] {
        let config = Config {
            fsync: policy,
            ..common::config()
        };
        let mut f = start_with(config, ServerConfig::default()).await;
        assert_eq!(info(&mut f.client).await.fsync, text);
    }
}

// ---------------------------------------------------------------------------------------------
// Error mappings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expected_revision_is_failed_precondition() {
    let mut f = start().await;
    let c = &mut f.client;

    // On a stream that does not exist.
    for (expected, text) in [
        (exact(0), "0"),
        (exact(3), "3"),
        (stream_exists(), "stream_exists"),
    ] {
        let status = expect_err(append(c, "acct-1", expected, vec![json(1, "T")]).await);
        assert_status(
            &status,
            Code::FailedPrecondition,
            "WRONG_EXPECTED_REVISION",
            &[
                ("stream", "acct-1"),
                ("expected", text),
                ("actual", "no_stream"),
            ],
        );
    }
    assert_eq!(last_position(c).await, 0);

    append(c, "acct-1", no_stream(), vec![json(1, "T"), json(2, "T")])
        .await
        .unwrap();
    // On a stream at revision 1.
    for (expected, text) in [
        (no_stream(), "no_stream".to_string()),
        (exact(0), "0".to_string()),
        (exact(2), "2".to_string()),
        (exact(u64::MAX), u64::MAX.to_string()),
    ] {
        let status = expect_err(append(c, "acct-1", expected, vec![json(10, "T")]).await);
        assert_status(
            &status,
            Code::FailedPrecondition,
            "WRONG_EXPECTED_REVISION",
            &[("stream", "acct-1"), ("expected", &text), ("actual", "1")],
        );
    }
    assert_eq!(last_position(c).await, 2);
    assert_eq!(revisions(c, "acct-1").await, vec![0, 1]);

    // The matching checks pass.
    assert_eq!(
        append(c, "acct-1", exact(1), vec![json(10, "T")])
            .await
            .unwrap(),
        response(3, 3, 2)
    );
    assert_eq!(
        append(c, "acct-1", stream_exists(), vec![json(11, "T")])
            .await
            .unwrap(),
        response(4, 4, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_and_idempotency_conflict() {
    let mut f = start().await;
    let c = &mut f.client;
    let original = append(c, "a", no_stream(), vec![json(1, "T"), json(2, "T")])
        .await
        .unwrap();
    assert_eq!(original, response(1, 2, 1));
    let later = append(c, "a", exact(1), vec![json(3, "T"), json(4, "T")])
        .await
        .unwrap();
    assert_eq!(later, response(3, 4, 3));
    let log = whole_log(c).await;

    // Retries return the first result and write nothing.
    for _ in 0..2 {
        let retry = append(c, "a", no_stream(), vec![json(1, "T"), json(2, "T")])
            .await
            .unwrap();
        assert_eq!(retry, original);
        let retry = append(c, "a", exact(1), vec![json(3, "T"), json(4, "T")])
            .await
            .unwrap();
        assert_eq!(retry, later);
        assert_eq!(whole_log(c).await, log);
        assert_eq!(last_position(c).await, 4);
    }

    // Some ids match what is stored, the rest does not.
    let status = expect_err(append(c, "a", no_stream(), vec![json(1, "T"), json(9, "T")]).await);
    let id1 = common::id(1).to_string();
    assert_status(
        &status,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
        &[("stream", "a"), ("event_id", &id1), ("revision", "0")],
    );
    let status = expect_err(append(c, "a", exact(1), vec![json(9, "T"), json(4, "T")]).await);
    let id4 = common::id(4).to_string();
    assert_status(
        &status,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
        &[("stream", "a"), ("event_id", &id4), ("revision", "3")],
    );
    let status = expect_err(
        append(
            c,
            "a",
            exact(1),
            vec![json(3, "T"), json(4, "T"), json(5, "T")],
        )
        .await,
    );
    let id3 = common::id(3).to_string();
    assert_status(
        &status,
        Code::AlreadyExists,
        "IDEMPOTENCY_CONFLICT",
        &[("stream", "a"), ("event_id", &id3), ("revision", "2")],
    );
    assert_eq!(whole_log(c).await, log);

    // AppendMulti retries return every part's first result.
    let parts = || {
        vec![
            part("x", no_stream(), vec![json(10, "T"), json(11, "T")]),
            part("a", exact(3), vec![json(12, "T")]),
        ]
    };
    let first = append_multi(c, parts()).await.unwrap();
    assert_eq!(first, vec![response(5, 6, 1), response(7, 7, 4)]);
    let log = whole_log(c).await;
    assert_eq!(append_multi(c, parts()).await.unwrap(), first);
    assert_eq!(whole_log(c).await, log);
    assert_eq!(last_position(c).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_of_a_missing_stream_is_not_found() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "present", any(), vec![json(1, "T")])
        .await
        .unwrap();
    for direction in [proto::Direction::Forwards, proto::Direction::Backwards] {
        for from in [None, Some(0), Some(5)] {
            // The status comes back from the call itself, not in the middle of the stream.
            let status = expect_err(
                c.read_stream(stream_req("absent-1", from, direction, 0))
                    .await
                    .map(|_| ()),
            );
            assert_status(
                &status,
                Code::NotFound,
                "STREAM_NOT_FOUND",
                &[("stream", "absent-1")],
            );
        }
    }
    // A prefix of an existing stream is not that stream.
    let status =
        expect_err(read_stream(c, stream_req("pres", None, proto::Direction::Forwards, 0)).await);
    assert_status(
        &status,
        Code::NotFound,
        "STREAM_NOT_FOUND",
        &[("stream", "pres")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_invalid_argument() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "ok", any(), vec![json(1, "T")]).await.unwrap();
    for stream in [
        "",
        "a\nb",
        "tab\there",
        "nul\0",
        "del\u{7f}",
        "c1\u{85}x",
        "\u{1b}[31m",
    ] {
        assert_invalid(append(c, stream, any(), vec![json(2, "T")]).await);
        assert_invalid(append_multi(c, vec![part(stream, any(), vec![json(2, "T")])]).await);
    }
    for event_type in ["", "Bad\nType", "\u{0}", "x\u{9f}"] {
        assert_invalid(append(c, "ok", any(), vec![json(2, event_type)]).await);
    }

    // Names at the length limits are accepted; one byte more is LIMIT_EXCEEDED.
    let stream = "s".repeat(512);
    append(c, &stream, no_stream(), vec![json(3, "T")])
        .await
        .unwrap();
    let status = expect_err(append(c, &"s".repeat(513), any(), vec![json(4, "T")]).await);
    assert_status(
        &status,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[
            ("what", "stream_name_bytes"),
            ("limit", "512"),
            ("actual", "513"),
        ],
    );
    // Multi-byte UTF-8 counts in bytes: 171 three-byte characters are 513 bytes.
    let status = expect_err(append(c, &"€".repeat(171), any(), vec![json(4, "T")]).await);
    assert_status(
        &status,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[
            ("what", "stream_name_bytes"),
            ("limit", "512"),
            ("actual", "513"),
        ],
    );
    append(c, "ok", any(), vec![json(5, &"T".repeat(256))])
        .await
        .unwrap();
    let status = expect_err(append(c, "ok", any(), vec![json(6, &"T".repeat(257))]).await);
    assert_status(
        &status,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[
            ("what", "event_type_bytes"),
            ("limit", "256"),
            ("actual", "257"),
        ],
    );

    let i = info(c).await;
    assert_eq!((i.last_position, i.streams), (3, 2));
    assert_eq!(revisions(c, "ok").await, vec![0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_must_be_16_bytes_or_empty() {
    let mut f = start().await;
    let c = &mut f.client;
    for len in [1usize, 8, 15, 17, 32] {
        let e = full(vec![7; len], "T", proto::ContentType::Json, b"{}", b"");
        let status = expect_err(append(c, "s", any(), vec![json(1, "T"), e.clone()]).await);
        assert_status(&status, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
        assert!(
            status.message().contains(&format!("{len} bytes")),
            "{status:?}"
        );
        assert_invalid(append_multi(c, vec![part("s", any(), vec![e])]).await);
    }
    assert_eq!(last_position(c).await, 0);

    // 16 bytes are kept exactly; empty gets a fresh id each time.
    let given = vec![0xAB; 16];
    let e = full(given.clone(), "T", proto::ContentType::Json, b"{}", b"");
    append(c, "s", no_stream(), vec![e]).await.unwrap();
    let e = full(vec![], "T", proto::ContentType::Json, b"{}", b"");
    append(c, "s", exact(0), vec![e.clone(), e]).await.unwrap();
    let events = read_stream(c, stream_req("s", None, proto::Direction::Forwards, 0))
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].id, given);
    assert_eq!(events[1].id.len(), 16);
    assert_eq!(events[2].id.len(), 16);
    assert_ne!(events[1].id, events[2].id);
    assert_ne!(events[1].id, given);

    // The same id twice in one append.
    assert_invalid(append(c, "s", any(), vec![json(9, "T"), json(9, "T")]).await);
    assert_eq!(last_position(c).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_content_type_is_invalid_argument() {
    let mut f = start().await;
    let c = &mut f.client;
    for content_type in [2, -1, 1000] {
        let mut e = json(1, "T");
        e.content_type = content_type;
        let status = expect_err(append(c, "s", any(), vec![e.clone()]).await);
        assert_status(&status, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
        assert!(
            status.message().contains(&content_type.to_string()),
            "{status:?}"
        );
        assert_invalid(append_multi(c, vec![part("s", any(), vec![e])]).await);
    }
    assert_eq!(last_position(c).await, 0);
    // Both known values are stored as given.
    let mut binary = json(1, "T");
    binary.content_type = proto::ContentType::Binary as i32;
    append(c, "s", any(), vec![binary, json(2, "T")])
        .await
        .unwrap();
    let events = read_stream(c, stream_req("s", None, proto::Direction::Forwards, 0))
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.content_type).collect::<Vec<_>>(),
        vec![
            proto::ContentType::Binary as i32,
            proto::ContentType::Json as i32
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_per_append_limit() {
    let config = Config {
        append_events_max: 5,
        append_streams_max: 2,
        ..common::config()
    };
    let mut f = start_with(config, ServerConfig::default()).await;
    let c = &mut f.client;
    let events = |from: u64, n: u64| (from..from + n).map(|i| json(i, "T")).collect::<Vec<_>>();

    // At the limit: accepted.
    assert_eq!(
        append(c, "s", no_stream(), events(1, 5)).await.unwrap(),
        response(1, 5, 4)
    );
    // One past it: refused, nothing written.
    let status = expect_err(append(c, "s", any(), events(10, 6)).await);
    assert_status(
        &status,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[("what", "append_events"), ("limit", "5"), ("actual", "6")],
    );
    // The limit counts every part of a multi-stream append together.
    let status = expect_err(
        append_multi(
            c,
            vec![
                part("t", any(), events(20, 3)),
                part("u", any(), events(30, 3)),
            ],
        )
        .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[("what", "append_events"), ("limit", "5"), ("actual", "6")],
    );
    // Streams per append.
    let status = expect_err(
        append_multi(
            c,
            vec![
                part("t", any(), events(20, 1)),
                part("u", any(), events(30, 1)),
                part("v", any(), events(40, 1)),
            ],
        )
        .await,
    );
    assert_status(
        &status,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[("what", "append_streams"), ("limit", "2"), ("actual", "3")],
    );
    let i = info(c).await;
    assert_eq!((i.last_position, i.streams), (5, 1));
    // At both limits together: accepted.
    let results = append_multi(
        c,
        vec![
            part("t", any(), events(20, 2)),
            part("u", any(), events(30, 3)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(results, vec![response(6, 7, 1), response(8, 10, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_bytes_limit_is_resource_exhausted() {
    let config = Config {
        event_bytes_max: 1000,
        ..common::config()
    };
    let mut f = start_with(config, ServerConfig::default()).await;
    let c = &mut f.client;
    let event = |n: u64, data: usize, metadata: usize| {
        full(
            id_bytes(n),
            "T",
            proto::ContentType::Binary,
            &vec![b'd'; data],
            &vec![b'm'; metadata],
        )
    };
    // data + metadata at the limit: accepted, and read back whole.
    append(c, "s", no_stream(), vec![event(1, 600, 400)])
        .await
        .unwrap();
    append(c, "s", exact(0), vec![event(2, 1000, 0)])
        .await
        .unwrap();
    append(c, "s", exact(1), vec![event(3, 0, 1000)])
        .await
        .unwrap();
    let events = read_stream(c, stream_req("s", None, proto::Direction::Forwards, 0))
        .await
        .unwrap();
    assert_recorded(&events[0], &event(1, 600, 400), "s", 0, 1);
    assert_recorded(&events[1], &event(2, 1000, 0), "s", 1, 2);
    assert_recorded(&events[2], &event(3, 0, 1000), "s", 2, 3);

    for (data, metadata) in [(601, 400), (1001, 0), (0, 1001), (5000, 5000)] {
        let actual = (data + metadata).to_string();
        // Alone, or after a valid event of the same append.
        for events in [
            vec![event(10, data, metadata)],
            vec![event(11, 10, 10), event(10, data, metadata)],
        ] {
            let status = expect_err(append(c, "s", any(), events).await);
            assert_status(
                &status,
                Code::ResourceExhausted,
                "LIMIT_EXCEEDED",
                &[
                    ("what", "event_bytes"),
                    ("limit", "1000"),
                    ("actual", &actual),
                ],
            );
        }
    }
    assert_eq!(last_position(c).await, 3);
    assert_eq!(revisions(c, "s").await, vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_bytes_limit_is_resource_exhausted() {
    let config = Config {
        append_bytes_max: 4096,
        ..common::config()
    };
    let mut f = start_with(config, ServerConfig::default()).await;
    let c = &mut f.client;
    let event = |n: u64| {
        full(
            id_bytes(n),
            "T",
            proto::ContentType::Binary,
            &[b'd'; 900],
            &[],
        )
    };
    // Four events of ~1 KB fit in 4096 bytes; five do not.
    append(c, "s", no_stream(), (1..=4).map(event).collect())
        .await
        .unwrap();
    let status = expect_err(append(c, "s", any(), (5..=9).map(event).collect()).await);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "LIMIT_EXCEEDED");
    assert_eq!(info.domain, "statestore");
    assert_eq!(info.metadata["what"], "append_bytes");
    assert_eq!(info.metadata["limit"], "4096");
    let actual: u64 = info.metadata["actual"].parse().expect("actual is a number");
    assert!((4500..6000).contains(&actual), "actual {actual}");
    assert_eq!(info.metadata.len(), 3);
    assert_eq!(last_position(c).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_size_limit_are_refused_before_the_engine() {
    let server_config = ServerConfig {
        message_bytes_max: 64 << 10,
        ..ServerConfig::default()
    };
    let mut f = start_with(common::config(), server_config).await;
    let c = &mut f.client;
    let event = |n: u64, size: usize| {
        full(
            id_bytes(n),
            "T",
            proto::ContentType::Binary,
            &vec![b'd'; size],
            &[],
        )
    };
    // Under the message limit (and every engine limit): accepted.
    append(c, "s", no_stream(), vec![event(1, 60 << 10)])
        .await
        .unwrap();
    // Over the message limit, though within the engine's limits (1 MiB per event, 256 KiB per
    // append): refused before decoding, as RESOURCE_EXHAUSTED.
    for (n, size) in [(2, 65 << 10), (3, 200 << 10)] {
        let status = expect_err(append(c, "s", any(), vec![event(n, size)]).await);
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("message length too large"),
            "{status:?}"
        );
        let status =
            expect_err(append_multi(c, vec![part("m", any(), vec![event(n, size)])]).await);
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    // Several events, each small, together over the limit.
    let status = expect_err(
        append(
            c,
            "s",
            any(),
            (10..14).map(|n| event(n, 20 << 10)).collect(),
        )
        .await,
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let i = info(c).await;
    assert_eq!((i.last_position, i.streams), (1, 1));
    assert_eq!(revisions(c, "s").await, vec![0]);
    // The connection is still usable.
    append(c, "s", exact(0), vec![event(20, 10)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_size_limit_are_resource_exhausted_as_documented() {
    let server_config = ServerConfig {
        message_bytes_max: 64 << 10,
        ..ServerConfig::default()
    };
    let mut f = start_with(common::config(), server_config).await;
    let c = &mut f.client;
    let e = full(
        id_bytes(1),
        "T",
        proto::ContentType::Binary,
        &vec![b'd'; 100 << 10],
        &[],
    );
    let status = expect_err(append(c, "s", any(), vec![e]).await);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.domain, "statestore");
    assert_eq!(info.reason, "LIMIT_EXCEEDED");
    assert_eq!(info.metadata["limit"], (64 << 10).to_string());
    let actual: u64 = info.metadata["actual"].parse().expect("actual is a number");
    assert!(actual > 100 << 10, "actual {actual}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_writer_is_unavailable() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "s", no_stream(), vec![json(1, "T"), json(2, "T")])
        .await
        .unwrap();
    let before = whole_log(c).await;

    f.server.store.inject_write_failure();
    let status = expect_err(append(c, "s", exact(1), vec![json(3, "T")]).await);
    assert_status(&status, Code::Unavailable, "POISONED", &[]);
    // Every later append fails the same way, whatever it is.
    let status = expect_err(append(c, "s", exact(1), vec![json(3, "T")]).await);
    assert_status(&status, Code::Unavailable, "POISONED", &[]);
    let status = expect_err(append(c, "other", any(), vec![json(4, "T")]).await);
    assert_status(&status, Code::Unavailable, "POISONED", &[]);
    let status = expect_err(
        append_multi(
            c,
            vec![
                part("x", any(), vec![json(5, "T")]),
                part("y", any(), vec![json(6, "T")]),
            ],
        )
        .await,
    );
    assert_status(&status, Code::Unavailable, "POISONED", &[]);
    // A malformed request is still reported as malformed.
    assert_invalid(append(c, "", any(), vec![json(7, "T")]).await);

    // Reads keep serving what was acknowledged.
    assert_eq!(whole_log(c).await, before);
    assert_eq!(revisions(c, "s").await, vec![0, 1]);
    assert_eq!(last_position(c).await, 2);
    let got = c
        .get_stream(GetStreamRequest { stream: "s".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_change_nothing() {
    let config = Config {
        append_events_max: 10,
        event_bytes_max: 500,
        append_bytes_max: 4096,
        append_streams_max: 3,
        ..common::config()
    };
    let server_config = ServerConfig {
        message_bytes_max: 64 << 10,
        ..ServerConfig::default()
    };
    let mut f = start_with(config, server_config).await;
    let c = &mut f.client;
    append(c, "a-1", no_stream(), vec![json(1, "A"), json(2, "B")])
        .await
        .unwrap();
    append(c, "b-1", no_stream(), vec![json(3, "A")])
        .await
        .unwrap();
    let log = whole_log(c).await;
    let before = info(c).await;
    assert_eq!(before.last_position, 3);

    let bin = |n: u64, size: usize| {
        full(
            id_bytes(n),
            "New",
            proto::ContentType::Binary,
            &vec![1; size],
            &[],
        )
    };
    let mut codes = Vec::new();
    let requests: Vec<Vec<AppendRequest>> = vec![
        // Too many events.
        vec![part(
            "c-1",
            any(),
            (10..21).map(|n| json(n, "New")).collect(),
        )],
        // An event too big.
        vec![part("c-1", any(), vec![bin(10, 501)])],
        // The append too big.
        vec![
            part("c-1", any(), (10..15).map(|n| bin(n, 450)).collect()),
            part("a-1", any(), (20..24).map(|n| bin(n, 450)).collect()),
        ],
        // Too many streams.
        vec![
            part("c-1", any(), vec![json(10, "New")]),
            part("c-2", any(), vec![json(11, "New")]),
            part("c-3", any(), vec![json(12, "New")]),
            part("c-4", any(), vec![json(13, "New")]),
        ],
        // Name too long.
        vec![part(&"c".repeat(600), any(), vec![json(10, "New")])],
        // Event type too long.
        vec![part("c-1", any(), vec![json(10, &"N".repeat(300))])],
        // The message too big for the server.
        vec![part("c-1", any(), vec![bin(10, 70 << 10)])],
        // Wrong expected revision on the last part.
        vec![
            part("c-1", no_stream(), vec![json(10, "New")]),
            part("b-1", exact(7), vec![json(11, "New")]),
        ],
        // Idempotency conflict.
        vec![part(
            "a-1",
            no_stream(),
            vec![json(1, "A"), json(99, "New")],
        )],
        // Bad id, bad content type, bad names.
        vec![part(
            "c-1",
            any(),
            vec![full(vec![1; 4], "New", proto::ContentType::Json, b"", b"")],
        )],
        vec![part(
            "c-1",
            any(),
            vec![EventData {
                content_type: 7,
                ..json(10, "New")
            }],
        )],
        vec![part("c\n1", any(), vec![json(10, "New")])],
        vec![part("c-1", any(), vec![json(10, "")])],
        // No events.
        vec![part("c-1", any(), vec![])],
    ];
    for parts in requests {
        let ctx = format!("{} parts", parts.len());
        let status = if parts.len() == 1 {
            let p = parts.into_iter().next().unwrap();
            expect_err(append(c, &p.stream, p.expected, p.events).await)
        } else {
            expect_err(append_multi(c, parts).await)
        };
        codes.push(status.code());
        assert_eq!(whole_log(c).await, log, "{ctx}: {status:?}");
        let after = info(c).await;
        assert_eq!(after.last_position, before.last_position, "{status:?}");
        assert_eq!(after.streams, before.streams, "{status:?}");
        assert_eq!(after.event_types, before.event_types, "{status:?}");
    }
    assert_eq!(
        codes,
        vec![
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::ResourceExhausted,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
        ]
    );
    for stream in ["c-1", "c-2", "c-3", "c-4"] {
        let status = expect_err(
            c.get_stream(GetStreamRequest {
                stream: stream.into(),
            })
            .await,
        );
        assert_eq!(status.code(), Code::NotFound);
    }
    // The store still takes appends, at the next position.
    assert_eq!(
        append(c, "c-1", no_stream(), vec![json(10, "New")])
            .await
            .unwrap(),
        response(4, 4, 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Health and reflection
// ---------------------------------------------------------------------------------------------

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.url())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let f = start().await;
    let mut health = HealthClient::new(channel(&f.server).await);
    for service in [
        "statestore.v1.EventStore",
        "statestore.v1.PersistentSubscriptions",
        "",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("check {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let status = expect_err(
        health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await,
    );
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let f = start().await;
    let mut reflection = ServerReflectionClient::new(channel(&f.server).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "statestore.v1.EventStore".into(),
            )),
        },
    ];
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection call")
        .into_inner();

    let first = replies.next().await.expect("a reply").expect("ok reply");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list, got {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "statestore.v1.EventStore",
        "statestore.v1.PersistentSubscriptions",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} not in {names:?}"
        );
    }

    let second = replies.next().await.expect("a reply").expect("ok reply");
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        panic!("expected a file descriptor, got {second:?}");
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types_name(b))
        .collect::<Vec<_>>();
    assert!(
        file.iter().any(|n| n == "statestore/v1/statestore.proto"),
        "{file:?}"
    );
}

/// The `name` field (1) of an encoded `FileDescriptorProto`, decoded by hand so the test needs
/// no descriptor crate.
fn prost_types_name(encoded: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct NameOnly {
        #[prost(string, tag = "1")]
        name: String,
    }
    NameOnly::decode(encoded)
        .expect("a FileDescriptorProto")
        .name
}
