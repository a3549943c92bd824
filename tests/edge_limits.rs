//! A hostile client against the network edge: values at the ends of their ranges, oversized
//! and malformed requests, pathological filters and connections that never speak. Each case
//! was reproduced against the server before the edge was bounded; each gets a clear error (or
//! a bounded wait) and changes nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::{TestServer, assert_status, expect_err};
use statestore::server::ServerConfig;
use statestore::server::kurrent::proto::event_store::client::streams as wire;
use statestore::server::kurrent::proto::event_store::client::{
    Empty, StreamIdentifier, Uuid as WireUuid, uuid,
};
use statestore::server::proto::{self, expected_revision};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const STEP: Duration = Duration::from_secs(10);

async fn start(config: ServerConfig) -> (TestServer, tempfile::TempDir) {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), common::config(), config).await;
    (server, dir)
}

fn event(n: u64) -> proto::EventData {
    proto::EventData {
        id: common::id(n).as_bytes().to_vec().into(),
        event_type: "Happened".into(),
        content_type: proto::ContentType::Json as i32,
        data: b"{}".to_vec().into(),
        metadata: Default::default(),
    }
}

fn append(stream: &str, n: u64) -> proto::AppendRequest {
    proto::AppendRequest {
        stream: stream.into(),
        expected: Some(proto::ExpectedRevision {
            kind: Some(expected_revision::Kind::Any(proto::Empty {})),
        }),
        events: vec![event(n)],
        tracking: None,
    }
}

/// Messages a subscription sends within `window`.
async fn messages_within(
    stream: &mut tonic::Streaming<proto::SubscribeResponse>,
    window: Duration,
) -> Vec<proto::SubscribeResponse> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, stream.next()).await {
        got.push(m.expect("message"));
        if got.len() > 1000 {
            break;
        }
    }
    got
}

// Found by subscribing after position u64::MAX: the `+ 1` wrapped to 0 and the server replayed
// the log forever (with a filter: checkpoints forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_after_the_largest_position_waits_and_replays_nothing() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    for n in 0..20 {
        c.append(append("order-1", n)).await.expect("append");
    }
    for filter in [
        None,
        Some(proto::EventFilter {
            event_types: vec!["Happened".into()],
            ..Default::default()
        }),
    ] {
        let mut sub = c
            .subscribe(proto::SubscribeRequest {
                target: Some(proto::subscribe_request::Target::All(proto::SubscribeAll {
                    after_position: u64::MAX,
                    filter: filter.clone(),
                    checkpoint_interval: 1,
                })),
            })
            .await
            .expect("subscribe")
            .into_inner();
        c.append(append("order-1", 100)).await.expect("append");
        let got = messages_within(&mut sub, Duration::from_millis(800)).await;
        let events: usize = got
            .iter()
            .filter_map(|m| match &m.kind {
                Some(proto::subscribe_response::Kind::Events(b)) => Some(b.events.len()),
                _ => None,
            })
            .sum();
        assert_eq!(
            events, 0,
            "filter {filter:?}: nothing lies after the largest position"
        );
        assert!(
            got.len() <= 3,
            "filter {filter:?}: a few messages, not a flood: {}",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_paths_check_stream_names_as_appends_do() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    // Larger than any header, and over the 512-byte name limit.
    let long = "x".repeat(1 << 20);
    let limit = [
        ("what", "stream_name_bytes"),
        ("limit", "512"),
        ("actual", "1048576"),
    ];
    let s = expect_err(
        c.get_stream(proto::GetStreamRequest {
            stream: long.clone(),
        })
        .await,
    );
    assert_status(&s, Code::InvalidArgument, "LIMIT_EXCEEDED", &limit);
    assert!(s.message().len() < 200, "the name is not echoed back");
    let s = expect_err(
        c.read_stream(proto::ReadStreamRequest {
            stream: long.clone(),
            max_count: 1,
            ..Default::default()
        })
        .await,
    );
    assert_status(&s, Code::InvalidArgument, "LIMIT_EXCEEDED", &limit);
    let s = expect_err(
        c.load_snapshot(proto::LoadSnapshotRequest {
            stream: long.clone(),
            at_or_below: None,
        })
        .await,
    );
    assert_status(&s, Code::InvalidArgument, "LIMIT_EXCEEDED", &limit);
    let s = expect_err(
        c.get_stream(proto::GetStreamRequest {
            stream: "bad\u{7}name".into(),
        })
        .await,
    );
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_log_cannot_be_used_as_a_stream() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let s = expect_err(c.append(append("$all", 1)).await);
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    let s = expect_err(
        c.tombstone_stream(proto::TombstoneStreamRequest {
            stream: "$all".into(),
            expected: None,
        })
        .await,
    );
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    assert_eq!(server.store.last_position().0, 0, "nothing was written");
}

/// A message whose field 1 (the stream name, a string) is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct NotUtf8 {
    #[prost(bytes = "vec", tag = "1")]
    stream: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_is_invalid_argument() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/statestore.v1.EventStore/Append");
    let s = grpc
        .unary::<NotUtf8, proto::AppendResponse, _>(
            tonic::Request::new(NotUtf8 {
                stream: vec![0xff, 0xfe],
            }),
            path,
            ProstCodec::default(),
        )
        .await
        .expect_err("refused");
    assert_status(&s, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_refused_by_size_before_it_is_parsed_and_its_history_is_paged() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    c.append(append("order-1", 1)).await.expect("append");
    // Not even JSON: the size is what refuses it.
    let big = vec![b'['; (1 << 20) + 1];
    let s = expect_err(
        c.set_stream_metadata(proto::SetStreamMetadataRequest {
            stream: "order-1".into(),
            expected: None,
            metadata: Some(proto::StreamMetadata {
                custom_json: big.into(),
                ..Default::default()
            }),
        })
        .await,
    );
    assert_status(
        &s,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
        &[
            ("what", "metadata_bytes"),
            ("limit", "1048576"),
            ("actual", "1048577"),
        ],
    );

    for n in 0..30u64 {
        c.set_stream_metadata(proto::SetStreamMetadataRequest {
            stream: "order-1".into(),
            expected: None,
            metadata: Some(proto::StreamMetadata {
                max_count: Some(n + 1),
                ..Default::default()
            }),
        })
        .await
        .expect("set");
    }
    let page = |from: u64, count: u32| proto::GetStreamMetadataRequest {
        stream: "order-1".into(),
        include_history: true,
        history_from: from,
        history_max_count: count,
    };
    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let r = c
            .get_stream_metadata(page(from, 8))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(r.current.as_ref().map(|v| v.metadata_revision), Some(29));
        if r.history.is_empty() {
            break;
        }
        assert!(r.history.len() <= 8);
        seen.extend(r.history.iter().map(|v| v.metadata_revision));
        from = seen.last().copied().unwrap_or_default() + 1;
    }
    assert_eq!(
        seen,
        (0..30).collect::<Vec<_>>(),
        "every version once, in order"
    );
    let s = expect_err(c.get_stream_metadata(page(0, 5000)).await);
    assert_status(
        &s,
        Code::InvalidArgument,
        "LIMIT_EXCEEDED",
        &[
            ("what", "metadata_history"),
            ("limit", "1000"),
            ("actual", "5000"),
        ],
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = ServerConfig {
        connections_max: 3,
        ..ServerConfig::default()
    };
    let (server, _dir) = runtime.block_on(start(config));
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(server.addr).expect("the kernel accepts");
    extra.set_read_timeout(Some(STEP)).expect("timeout");
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closed the connection over its cap");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not at a timeout"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    // Room again: a real client connects and is served.
    runtime.block_on(async {
        let mut c = server.client().await;
        c.append(append("order-1", 1))
            .await
            .expect("served after the others left");
    });
}

#[test]
fn a_connection_that_never_finishes_its_preface_is_closed_after_the_handshake_timeout() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (server, _dir) = runtime.block_on(start(config));
    let mut half = TcpStream::connect(server.addr).expect("connect");
    half.write_all(b"PRI * HTTP/2.0\r\n")
        .expect("half a preface");
    half.set_read_timeout(Some(STEP)).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // The server may answer with its SETTINGS first; then it must close.
    loop {
        match half.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "closed after the timeout, not held: {waited:?}"
    );
}

/// A raw channel for the KurrentDB adapter's streaming calls.
async fn kurrent_channel(server: &TestServer) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc
}

fn correlation(n: u64) -> WireUuid {
    WireUuid {
        value: Some(uuid::Value::String(common::id(n).to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_appends_that_never_finish_are_bounded() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut grpc = kurrent_channel(&server).await;
    let max = statestore::server::kurrent::PENDING_BATCHES_MAX as u64;
    let requests: Vec<wire::BatchAppendReq> = (0..=max)
        .map(|n| wire::BatchAppendReq {
            correlation_id: Some(correlation(n)),
            options: None,
            proposed_messages: Vec::new(),
            is_final: false,
        })
        .collect();
    let path =
        http::uri::PathAndQuery::from_static("/event_store.client.streams.Streams/BatchAppend");
    let mut replies = grpc
        .streaming::<_, wire::BatchAppendReq, wire::BatchAppendResp, _>(
            tonic::Request::new(tokio_stream::iter(requests).chain(tokio_stream::pending())),
            path,
            ProstCodec::default(),
        )
        .await
        .expect("call starts")
        .into_inner();
    let end = tokio::time::timeout(STEP, replies.next())
        .await
        .expect("ended in time");
    let s = match end {
        Some(Err(s)) => s,
        other => panic!("expected the call to end with an error, got {other:?}"),
    };
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kurrent_append_counts_types_and_metadata_maps_against_its_size_limit() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut grpc = kurrent_channel(&server).await;
    let options = wire::AppendReq {
        content: Some(wire::append_req::Content::Options(
            wire::append_req::Options {
                stream_identifier: Some(StreamIdentifier {
                    stream_name: b"order-1".to_vec().into(),
                }),
                expected_stream_revision: Some(
                    wire::append_req::options::ExpectedStreamRevision::Any(Empty {}),
                ),
            },
        )),
    };
    // Tiny data, but a metadata map over the store's 256 KiB append limit.
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("type".to_string(), "Happened".to_string());
    metadata.insert("content-type".to_string(), "application/json".to_string());
    metadata.insert("padding".to_string(), "p".repeat(300 << 10));
    let proposed = wire::AppendReq {
        content: Some(wire::append_req::Content::ProposedMessage(
            wire::append_req::ProposedMessage {
                id: Some(correlation(1)),
                metadata,
                custom_metadata: Default::default(),
                data: b"{}".to_vec().into(),
            },
        )),
    };
    let path = http::uri::PathAndQuery::from_static("/event_store.client.streams.Streams/Append");
    let s = grpc
        .client_streaming::<_, wire::AppendReq, wire::AppendResp, _>(
            tonic::Request::new(tokio_stream::iter(vec![options, proposed])),
            path,
            ProstCodec::default(),
        )
        .await
        .expect_err("over the limit");
    assert_eq!(
        s.metadata().get("exception").and_then(|v| v.to_str().ok()),
        Some("maximum-append-size-exceeded"),
        "{s:?}"
    );
    assert_eq!(server.store.last_position().0, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_filters_are_bounded_in_size_and_in_time() {
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    // Names on which a backtracking pattern explodes.
    for n in 0..50 {
        c.append(append(&format!("{}-{n}", "a".repeat(40)), n))
            .await
            .expect("append");
    }
    let mut grpc = kurrent_channel(&server).await;
    let read = |regex: String| {
        use wire::read_req::options::{self as o, filter_options as fo};
        wire::ReadReq {
            options: Some(wire::read_req::Options {
                stream_option: Some(o::StreamOption::All(o::AllOptions {
                    all_option: Some(o::all_options::AllOption::Start(Empty {})),
                })),
                read_direction: o::ReadDirection::Forwards as i32,
                resolve_links: false,
                count_option: Some(o::CountOption::Count(1000)),
                filter_option: Some(o::FilterOption::Filter(o::FilterOptions {
                    filter: Some(fo::Filter::StreamIdentifier(fo::Expression {
                        regex,
                        prefix: Vec::new(),
                    })),
                    window: Some(fo::Window::Count(Empty {})),
                    checkpoint_interval_multiplier: 1,
                })),
                uuid_option: Some(o::UuidOption {
                    content: Some(o::uuid_option::Content::String(Empty {})),
                }),
                control_option: None,
            }),
        }
    };
    let path = || http::uri::PathAndQuery::from_static("/event_store.client.streams.Streams/Read");
    // Too long: refused before it is compiled.
    let s = grpc
        .server_streaming::<wire::ReadReq, wire::ReadResp, _>(
            tonic::Request::new(read("a".repeat(1 << 20))),
            path(),
            ProstCodec::default(),
        )
        .await
        .expect_err("a 1 MiB regex is refused");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // Catastrophic backtracking: the call fails with a clear status, in bounded time.
    grpc.ready().await.expect("ready");
    let started = Instant::now();
    let result = grpc
        .server_streaming::<wire::ReadReq, wire::ReadResp, _>(
            tonic::Request::new(read(r"^(a|a)*\1b$".into())),
            path(),
            ProstCodec::default(),
        )
        .await;
    let status = match result {
        Err(s) => s,
        Ok(response) => {
            let mut messages = response.into_inner();
            loop {
                match tokio::time::timeout(STEP, messages.next())
                    .await
                    .expect("in time")
                {
                    Some(Ok(_)) => continue,
                    Some(Err(s)) => break s,
                    None => panic!("the backtracking filter completed instead of failing"),
                }
            }
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        started.elapsed() < STEP,
        "refused in {:?}",
        started.elapsed()
    );
    // Other clients were served meanwhile and after.
    c.append(append("order-1", 1000)).await.expect("served");
}

// The KurrentDB adapter's `$all` subscription from the largest position: the same wrap once
// replayed the log forever through this front-end too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kurrent_subscription_from_the_largest_position_replays_nothing() {
    use wire::read_req::options::{self as o, filter_options as fo};
    let (server, _dir) = start(ServerConfig::default()).await;
    let mut c = server.client().await;
    for n in 0..20 {
        c.append(append("order-1", n)).await.expect("append");
    }
    let subscribe = |filter: Option<o::FilterOption>| wire::ReadReq {
        options: Some(wire::read_req::Options {
            stream_option: Some(o::StreamOption::All(o::AllOptions {
                all_option: Some(o::all_options::AllOption::Position(o::Position {
                    commit_position: u64::MAX,
                    prepare_position: u64::MAX,
                })),
            })),
            read_direction: o::ReadDirection::Forwards as i32,
            resolve_links: false,
            count_option: Some(o::CountOption::Subscription(o::SubscriptionOptions {})),
            filter_option: Some(filter.unwrap_or(o::FilterOption::NoFilter(Empty {}))),
            uuid_option: Some(o::UuidOption {
                content: Some(o::uuid_option::Content::String(Empty {})),
            }),
            control_option: None,
        }),
    };
    let filtered = o::FilterOption::Filter(o::FilterOptions {
        filter: Some(fo::Filter::EventType(fo::Expression {
            regex: String::new(),
            prefix: vec!["Happ".into()],
        })),
        window: Some(fo::Window::Max(1)),
        checkpoint_interval_multiplier: 1,
    });
    for filter in [None, Some(filtered)] {
        let mut grpc = kurrent_channel(&server).await;
        let mut sub = grpc
            .server_streaming::<wire::ReadReq, wire::ReadResp, _>(
                tonic::Request::new(subscribe(filter.clone())),
                http::uri::PathAndQuery::from_static("/event_store.client.streams.Streams/Read"),
                ProstCodec::default(),
            )
            .await
            .expect("subscribe")
            .into_inner();
        c.append(append("order-1", 100)).await.expect("append");
        let mut events = 0;
        let mut messages = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
            let m = m.expect("message");
            messages += 1;
            if matches!(m.content, Some(wire::read_resp::Content::Event(_))) {
                events += 1;
            }
            if messages > 1000 {
                break;
            }
        }
        assert_eq!(events, 0, "filter {filter:?}: nothing lies after it");
        assert!(messages <= 3, "filter {filter:?}: not a flood: {messages}");
    }
}
