//! Stream lifecycle over real gRPC: SetStreamMetadata / GetStreamMetadata (with history),
//! DeleteStream, TombstoneStream; reads and subscriptions honour the rules at once; the error
//! mappings (code, `ErrorInfo` reason and fields).

mod common;

use std::time::Duration;

use common::server::{TestServer, assert_status, expect_err};
use statestore::server::ServerConfig;
use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::proto::expected_revision::Kind;
use statestore::server::proto::subscribe_request::Target;
use statestore::server::proto::subscribe_response::Kind as SubKind;
use statestore::server::proto::{
    self, AppendRequest, DeleteStreamRequest, EventData, ExpectedRevision,
    GetStreamMetadataRequest, ReadAllRequest, ReadStreamRequest, SetStreamMetadataRequest,
    StreamMetadata, SubscribeAll, SubscribeRequest, SubscribeStream, TombstoneStreamRequest,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

type Client = EventStoreClient<Channel>;

struct Fixture {
    client: Client,
    _server: TestServer,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), common::config(), ServerConfig::default()).await;
    let client = server.client().await;
    Fixture {
        client,
        _server: server,
        _dir: dir,
    }
}

fn any() -> Option<ExpectedRevision> {
    Some(ExpectedRevision {
        kind: Some(Kind::Any(proto::Empty {})),
    })
}

fn exact(r: u64) -> Option<ExpectedRevision> {
    Some(ExpectedRevision {
        kind: Some(Kind::Exact(r)),
    })
}

fn no_stream() -> Option<ExpectedRevision> {
    Some(ExpectedRevision {
        kind: Some(Kind::NoStream(proto::Empty {})),
    })
}

fn event(i: u64) -> EventData {
    EventData {
        id: Default::default(),
        event_type: "Happened".into(),
        content_type: proto::ContentType::Json as i32,
        data: format!("{{\"i\":{i}}}").into_bytes().into(),
        metadata: Default::default(),
    }
}

async fn append(c: &mut Client, stream: &str, n: u64) -> proto::AppendResponse {
    c.append(AppendRequest {
        stream: stream.into(),
        expected: any(),
        events: (0..n).map(event).collect(),
        tracking: None,
    })
    .await
    .expect("append")
    .into_inner()
}

async fn read_revisions(
    c: &mut Client,
    stream: &str,
    backwards: bool,
) -> Result<Vec<u64>, tonic::Status> {
    let direction = if backwards {
        proto::Direction::Backwards
    } else {
        proto::Direction::Forwards
    } as i32;
    let mut s = c
        .read_stream(ReadStreamRequest {
            stream: stream.into(),
            from_revision: None,
            direction,
            max_count: 0,
            from_snapshot: false,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = s.next().await {
        out.extend(page?.events.iter().map(|e| e.revision));
    }
    Ok(out)
}

async fn whole_log(c: &mut Client) -> Vec<(String, u64, String)> {
    let mut s = c
        .read_all(ReadAllRequest {
            from_position: None,
            direction: proto::Direction::Forwards as i32,
            max_count: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = s.next().await {
        for e in page.unwrap().events {
            out.push((e.stream, e.revision, e.event_type));
        }
    }
    out
}

fn revs_of(log: &[(String, u64, String)], stream: &str) -> Vec<u64> {
    log.iter()
        .filter(|(s, _, _)| s == stream)
        .map(|(_, r, _)| *r)
        .collect()
}

fn set_req(
    stream: &str,
    expected: Option<ExpectedRevision>,
    m: StreamMetadata,
) -> SetStreamMetadataRequest {
    SetStreamMetadataRequest {
        stream: stream.into(),
        expected,
        metadata: Some(m),
    }
}

#[tokio::test]
async fn metadata_round_trip_with_history_and_reads_honouring_it() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "order-1", 6).await;
    let none = c
        .get_stream_metadata(GetStreamMetadataRequest {
            stream: "order-1".into(),
            include_history: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.current.is_none() && none.history.is_empty());

    let first = StreamMetadata {
        max_count: Some(4),
        truncate_before: Some(1),
        custom_json: br#"{"owner":"billing"}"#.to_vec().into(),
        ..Default::default()
    };
    let r = c
        .set_stream_metadata(set_req("order-1", no_stream(), first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.metadata_revision, 0);
    assert_eq!(
        read_revisions(c, "order-1", false).await.unwrap(),
        [2, 3, 4, 5]
    );
    assert_eq!(
        read_revisions(c, "order-1", true).await.unwrap(),
        [5, 4, 3, 2]
    );
    assert_eq!(revs_of(&whole_log(c).await, "order-1"), [2, 3, 4, 5]);

    let second = StreamMetadata {
        truncate_before: Some(5),
        max_age_seconds: Some(3600),
        ..Default::default()
    };
    // Wrong expected revision names the metadata stream.
    let status = expect_err(
        c.set_stream_metadata(set_req("order-1", no_stream(), second.clone()))
            .await,
    );
    assert_status(
        &status,
        Code::FailedPrecondition,
        "WRONG_EXPECTED_REVISION",
        &[
            ("stream", "$$order-1"),
            ("expected", "no_stream"),
            ("actual", "0"),
        ],
    );
    c.set_stream_metadata(set_req("order-1", exact(0), second.clone()))
        .await
        .unwrap();
    assert_eq!(read_revisions(c, "order-1", false).await.unwrap(), [5]);

    let got = c
        .get_stream_metadata(GetStreamMetadataRequest {
            stream: "order-1".into(),
            include_history: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let current = got.current.expect("current");
    assert_eq!(current.metadata_revision, 1);
    assert_eq!(current.metadata, Some(second));
    assert_eq!(got.history.len(), 2);
    assert_eq!(got.history[0].metadata, Some(first));
    assert!(got.history[0].position < got.history[1].position);

    // Bad metadata is INVALID_ARGUMENT and writes nothing.
    for bad in [
        StreamMetadata {
            max_count: Some(0),
            ..Default::default()
        },
        StreamMetadata {
            custom_json: b"[1]".to_vec().into(),
            ..Default::default()
        },
        StreamMetadata {
            custom_json: b"{not json".to_vec().into(),
            ..Default::default()
        },
        StreamMetadata {
            custom_json: br#"{"$maxCount":1}"#.to_vec().into(),
            ..Default::default()
        },
    ] {
        let status = expect_err(c.set_stream_metadata(set_req("order-1", any(), bad)).await);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let status = expect_err(
        c.set_stream_metadata(set_req("$$order-1", any(), StreamMetadata::default()))
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn delete_and_tombstone_with_their_errors() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "cart-1", 3).await;
    let status = expect_err(
        c.delete_stream(DeleteStreamRequest {
            stream: "ghost".into(),
            expected: any(),
        })
        .await,
    );
    assert_status(
        &status,
        Code::NotFound,
        "STREAM_NOT_FOUND",
        &[("stream", "ghost")],
    );
    let status = expect_err(
        c.delete_stream(DeleteStreamRequest {
            stream: "cart-1".into(),
            expected: exact(7),
        })
        .await,
    );
    assert_status(
        &status,
        Code::FailedPrecondition,
        "WRONG_EXPECTED_REVISION",
        &[("stream", "cart-1"), ("expected", "7"), ("actual", "2")],
    );
    c.delete_stream(DeleteStreamRequest {
        stream: "cart-1".into(),
        expected: exact(2),
    })
    .await
    .unwrap();
    let status = expect_err(read_revisions(c, "cart-1", false).await);
    assert_status(
        &status,
        Code::NotFound,
        "STREAM_NOT_FOUND",
        &[("stream", "cart-1")],
    );
    assert!(revs_of(&whole_log(c).await, "cart-1").is_empty());
    let got = c
        .get_stream_metadata(GetStreamMetadataRequest {
            stream: "cart-1".into(),
            include_history: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.current.unwrap().metadata.unwrap().deleted);

    // An append brings it back; revisions continue.
    let r = c
        .append(AppendRequest {
            stream: "cart-1".into(),
            expected: no_stream(),
            events: vec![event(9)],
            tracking: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revision, 3);
    assert_eq!(read_revisions(c, "cart-1", false).await.unwrap(), [3]);

    // Tombstone.
    let t = c
        .tombstone_stream(TombstoneStreamRequest {
            stream: "cart-1".into(),
            expected: exact(3),
        })
        .await
        .unwrap()
        .into_inner();
    let deleted = |status: &tonic::Status| {
        assert_status(
            status,
            Code::FailedPrecondition,
            "STREAM_DELETED",
            &[("stream", "cart-1")],
        )
    };
    deleted(&expect_err(read_revisions(c, "cart-1", false).await));
    deleted(&expect_err(
        c.append(AppendRequest {
            stream: "cart-1".into(),
            expected: any(),
            events: vec![event(10)],
            tracking: None,
        })
        .await,
    ));
    // Metadata after a tombstone is recorded (the metadata stream has revisions of its own)
    // and changes nothing: reading it is still STREAM_DELETED.
    c.set_stream_metadata(set_req("cart-1", any(), StreamMetadata::default()))
        .await
        .expect("metadata after a tombstone");
    deleted(&expect_err(
        c.delete_stream(DeleteStreamRequest {
            stream: "cart-1".into(),
            expected: any(),
        })
        .await,
    ));
    deleted(&expect_err(
        c.tombstone_stream(TombstoneStreamRequest {
            stream: "cart-1".into(),
            expected: any(),
        })
        .await,
    ));
    let log = whole_log(c).await;
    let of_cart: Vec<_> = log.iter().filter(|(s, _, _)| s == "cart-1").collect();
    assert_eq!(
        of_cart.len(),
        1,
        "only the tombstone is visible: {of_cart:?}"
    );
    assert_eq!(of_cart[0].2, statestore::TOMBSTONE_EVENT_TYPE);
    assert!(t.position > 0);
}

async fn next_kind(
    s: &mut tonic::Streaming<proto::SubscribeResponse>,
) -> Result<SubKind, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
        Ok(Some(Ok(r))) => Ok(r.kind.expect("a kind")),
        Ok(Some(Err(status))) => Err(status),
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no message within 10 s"),
    }
}

#[tokio::test]
async fn subscriptions_honour_metadata_and_a_stream_subscription_ends_at_its_tombstone() {
    let mut f = start().await;
    let c = &mut f.client;
    append(c, "s-1", 5).await;
    append(c, "s-2", 2).await;
    c.set_stream_metadata(set_req(
        "s-1",
        any(),
        StreamMetadata {
            max_count: Some(2),
            ..Default::default()
        },
    ))
    .await
    .unwrap();

    // Catch-up of a whole-log subscription skips what metadata hides.
    let mut all = c
        .subscribe(SubscribeRequest {
            target: Some(Target::All(SubscribeAll {
                after_position: 0,
                filter: None,
                checkpoint_interval: 0,
            })),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    loop {
        match next_kind(&mut all).await.unwrap() {
            SubKind::Events(b) => seen.extend(b.events.into_iter().map(|e| (e.stream, e.revision))),
            SubKind::CaughtUp(_) => break,
            _ => {}
        }
    }
    let s1: Vec<u64> = seen
        .iter()
        .filter(|(s, _)| s == "s-1")
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(s1, [3, 4]);

    // A stream subscription starts at the first visible revision.
    let mut sub = c
        .subscribe(SubscribeRequest {
            target: Some(Target::Stream(SubscribeStream {
                stream: "s-1".into(),
                after_revision: None,
            })),
        })
        .await
        .unwrap()
        .into_inner();
    let mut revs = Vec::new();
    loop {
        match next_kind(&mut sub).await.unwrap() {
            SubKind::Events(b) => revs.extend(b.events.iter().map(|e| e.revision)),
            SubKind::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert_eq!(revs, [3, 4]);

    // Live: a new event, then the tombstone, then the subscription ends with STREAM_DELETED.
    append(c, "s-1", 1).await;
    c.tombstone_stream(TombstoneStreamRequest {
        stream: "s-1".into(),
        expected: any(),
    })
    .await
    .unwrap();
    let mut live = Vec::new();
    let status = loop {
        match next_kind(&mut sub).await {
            Ok(SubKind::Events(b)) => {
                live.extend(b.events.into_iter().map(|e| (e.revision, e.event_type)))
            }
            Ok(_) => {}
            Err(status) => break status,
        }
    };
    assert_eq!(
        live,
        [
            (5, "Happened".to_string()),
            (6, statestore::TOMBSTONE_EVENT_TYPE.to_string())
        ]
    );
    assert_status(
        &status,
        Code::FailedPrecondition,
        "STREAM_DELETED",
        &[("stream", "s-1")],
    );

    // A new subscription to the tombstoned stream fails at once.
    let mut again = c
        .subscribe(SubscribeRequest {
            target: Some(Target::Stream(SubscribeStream {
                stream: "s-1".into(),
                after_revision: None,
            })),
        })
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match next_kind(&mut again).await {
            Ok(_) => {}
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::FailedPrecondition);
}
