//! Persistent subscriptions through the native gRPC API (`statestore.v1.PersistentSubscriptions`)
//! over a real connection with the generated client: group management with settings echoed
//! as sent, consumers that ack, nack, time out and share a group, parked events and their
//! replay, and the documented error statuses. Also tracking entries through the native API.

mod common;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::{TestServer, assert_status, expect_err};
use statestore::server::ServerConfig;
use statestore::server::proto::event_store_client::EventStoreClient;
use statestore::server::proto::persistent_subscriptions_client::PersistentSubscriptionsClient;
use statestore::server::proto::{
    self, AppendRequest, ConsumeRequest, ConsumeResponse, CreateGroupRequest, EventData,
    GroupEvent, GroupInfo, GroupKey, GroupSettings, GroupSource, NackAction, RecordedEvent,
    consume_request, consume_response, group_settings, group_source,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

// ---------------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------------

/// A served store with connected clients. Fields drop in order: clients, server, directory.
struct Fixture {
    events: EventStoreClient<Channel>,
    groups: PersistentSubscriptionsClient<Channel>,
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), common::config(), ServerConfig::default()).await;
    let events = server.client().await;
    let groups = PersistentSubscriptionsClient::connect(server.url())
        .await
        .expect("connect to the test server");
    Fixture {
        events,
        groups,
        server,
        _dir: dir,
    }
}

fn stream_key(stream: &str, group: &str) -> GroupKey {
    GroupKey {
        source: Some(GroupSource {
            kind: Some(group_source::Kind::Stream(stream.into())),
        }),
        group: group.into(),
    }
}

fn all_key(group: &str) -> GroupKey {
    GroupKey {
        source: Some(GroupSource {
            kind: Some(group_source::Kind::All(proto::Empty {})),
        }),
        group: group.into(),
    }
}

/// From the start, with quick checkpoints.
fn from_start() -> GroupSettings {
    GroupSettings {
        start_from: Some(group_settings::StartFrom::Start(proto::Empty {})),
        checkpoint_after_ms: Some(50),
        min_checkpoint_count: Some(1),
        ..GroupSettings::default()
    }
}

fn json(stream: &str, n: u64) -> EventData {
    EventData {
        id: common::id(n).as_bytes().to_vec().into(),
        event_type: "E".into(),
        content_type: proto::ContentType::Json as i32,
        data: format!("{{\"stream\":\"{stream}\",\"n\":{n}}}")
            .into_bytes()
            .into(),
        metadata: b"{\"m\":1}".to_vec().into(),
    }
}

/// Appends events `from..to` to `stream`, `per` events a request.
async fn append(f: &mut Fixture, stream: &str, from: u64, to: u64, per: u64) {
    let mut n = from;
    while n < to {
        let end = (n + per).min(to);
        f.events
            .append(AppendRequest {
                stream: stream.into(),
                expected: None,
                events: (n..end).map(|k| json(stream, k)).collect(),
                tracking: None,
            })
            .await
            .expect("append");
        n = end;
    }
}

async fn read_stream(f: &mut Fixture, stream: &str) -> Vec<RecordedEvent> {
    let mut reply = f
        .events
        .read_stream(proto::ReadStreamRequest {
            stream: stream.into(),
            from_revision: None,
            direction: proto::Direction::Forwards as i32,
            max_count: 0,
            from_snapshot: false,
        })
        .await
        .expect("read stream")
        .into_inner();
    let mut events = Vec::new();
    while let Some(page) = reply.message().await.expect("read page") {
        events.extend(page.events);
    }
    events
}

async fn create(f: &mut Fixture, key: GroupKey, settings: GroupSettings) {
    f.groups
        .create_group(CreateGroupRequest {
            key: Some(key),
            settings: Some(settings),
            filter: None,
        })
        .await
        .expect("create group");
}

async fn get(f: &mut Fixture, key: &GroupKey) -> Result<GroupInfo, Status> {
    f.groups
        .get_group(proto::GetGroupRequest {
            key: Some(key.clone()),
        })
        .await
        .map(|r| r.into_inner().group.expect("group info"))
}

/// Polls GetGroup until `ok` holds (at most 5 s).
async fn wait_for(f: &mut Fixture, key: &GroupKey, ok: impl Fn(&GroupInfo) -> bool) -> GroupInfo {
    let mut last = None;
    for _ in 0..250 {
        let info = get(f, key).await.expect("get group");
        if ok(&info) {
            return info;
        }
        last = Some(info);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the group never reached the state; last: {last:?}");
}

/// A connected consumer: the request sender and the response stream.
struct Consumer {
    requests: mpsc::Sender<ConsumeRequest>,
    replies: Streaming<ConsumeResponse>,
    confirmed: proto::Confirmed,
    waiting: VecDeque<GroupEvent>,
    messages: usize,
}

async fn consume(
    f: &Fixture,
    key: &GroupKey,
    name: &str,
    buffer_size: u32,
) -> Result<Consumer, Status> {
    let (requests, rx) = mpsc::channel(16);
    requests
        .send(ConsumeRequest {
            kind: Some(consume_request::Kind::Open(proto::ConsumeOpen {
                key: Some(key.clone()),
                consumer_name: name.into(),
                buffer_size,
            })),
        })
        .await
        .expect("queue the open request");
    let mut client = f.groups.clone();
    let mut replies = client
        .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = replies.message().await?.expect("a first response");
    let Some(consume_response::Kind::Confirmed(confirmed)) = first.kind else {
        panic!("the first response is not Confirmed: {first:?}");
    };
    Ok(Consumer {
        requests,
        replies,
        confirmed,
        waiting: VecDeque::new(),
        messages: 0,
    })
}

impl Consumer {
    /// The next event, or `None` when none comes within `wait`.
    async fn try_next(&mut self, wait: Duration) -> Option<GroupEvent> {
        loop {
            if let Some(e) = self.waiting.pop_front() {
                return Some(e);
            }
            let message = tokio::time::timeout(wait, self.replies.message())
                .await
                .ok()?;
            match message.expect("consume stream").map(|m| m.kind) {
                Some(Some(consume_response::Kind::Events(batch))) => {
                    assert!(!batch.events.is_empty(), "an empty event batch");
                    self.messages += 1;
                    self.waiting.extend(batch.events);
                }
                other => panic!("expected events, got {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> GroupEvent {
        self.try_next(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }

    /// Asserts that nothing is delivered within `wait`.
    async fn quiet(&mut self, wait: Duration) {
        if let Some(e) = self.try_next(wait).await {
            panic!("expected nothing, got {e:?}");
        }
    }

    async fn send(&self, kind: consume_request::Kind) {
        self.requests
            .send(ConsumeRequest { kind: Some(kind) })
            .await
            .expect("send a consume request");
    }

    async fn ack(&self, events: &[&GroupEvent]) {
        let ids = events.iter().map(|e| id_of(e).into()).collect();
        self.send(consume_request::Kind::Ack(proto::ConsumeAck { ids }))
            .await;
    }

    async fn nack(&self, events: &[&GroupEvent], action: NackAction, reason: &str) {
        let ids = events.iter().map(|e| id_of(e).into()).collect();
        self.send(consume_request::Kind::Nack(proto::ConsumeNack {
            ids,
            action: action as i32,
            delay_ms: 0,
            reason: reason.into(),
        }))
        .await;
    }

    /// The status that ends the call (within 10 s).
    async fn ended(&mut self) -> Status {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.replies.message())
                .await
                .expect("the call ends within 10 s");
            match message {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the call ended without an error status"),
                Err(s) => return s,
            }
        }
    }
}

fn id_of(e: &GroupEvent) -> Vec<u8> {
    e.event.as_ref().expect("event").id.to_vec()
}

fn revision_of(e: &GroupEvent) -> u64 {
    e.event.as_ref().expect("event").revision
}

// ---------------------------------------------------------------------------------------------
// Group management
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_update_delete_echo_settings_as_sent() {
    let mut f = start().await;
    append(&mut f, "orders-1", 0, 3, 3).await;
    let k = stream_key("orders-1", "g1");
    let sent = GroupSettings {
        start_from: Some(group_settings::StartFrom::At(1)),
        message_timeout_ms: Some(5_000),
        max_retry_count: Some(3),
        consumer_strategy: Some("DispatchToSingle".into()),
        ..GroupSettings::default()
    };
    create(&mut f, k.clone(), sent.clone()).await;
    let info = wait_for(&mut f, &k, |i| i.status == "Live").await;
    assert_eq!(info.key.as_ref(), Some(&k));
    // Exactly as sent: absent fields stay absent.
    assert_eq!(info.settings.as_ref(), Some(&sent));
    assert_eq!(info.last_known, Some(2));
    assert_eq!(info.read_through, Some(2));
    // Started at revision 1: revisions 1 and 2 are waiting, nothing is acknowledged.
    assert_eq!((info.ready, info.buffered, info.in_flight), (2, 2, 0));
    assert_eq!(info.checkpoint, None);
    assert!(info.consumers.is_empty());

    // A $all group with a filter and every setting absent.
    let a = all_key("g2");
    f.groups
        .create_group(CreateGroupRequest {
            key: Some(a.clone()),
            settings: None,
            filter: Some(proto::GroupFilter {
                category: Some("orders".into()),
                ..proto::GroupFilter::default()
            }),
        })
        .await
        .unwrap();
    let info = get(&mut f, &a).await.unwrap();
    assert_eq!(info.settings, Some(GroupSettings::default()));

    let all = f
        .groups
        .list_groups(proto::ListGroupsRequest { source: None })
        .await
        .unwrap()
        .into_inner()
        .groups;
    let mut keys: Vec<_> = all.iter().map(|g| g.key.clone().unwrap()).collect();
    keys.sort_by(|x, y| x.group.cmp(&y.group));
    assert_eq!(keys, vec![k.clone(), a.clone()]);
    let on_stream = f
        .groups
        .list_groups(proto::ListGroupsRequest {
            source: k.source.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(on_stream.len(), 1);
    assert_eq!(on_stream[0].key.as_ref(), Some(&k));
    assert_eq!(on_stream[0].settings.as_ref(), Some(&sent));

    // Update replaces the settings entirely.
    let updated = GroupSettings {
        max_subscriber_count: Some(2),
        read_batch_size: Some(5),
        ..GroupSettings::default()
    };
    f.groups
        .update_group(proto::UpdateGroupRequest {
            key: Some(k.clone()),
            settings: Some(updated.clone()),
            filter: None,
        })
        .await
        .unwrap();
    assert_eq!(get(&mut f, &k).await.unwrap().settings, Some(updated));

    // Bad settings are INVALID_ARGUMENT and change nothing.
    let status = expect_err(
        f.groups
            .update_group(proto::UpdateGroupRequest {
                key: Some(k.clone()),
                settings: Some(GroupSettings {
                    consumer_strategy: Some("Random".into()),
                    ..GroupSettings::default()
                }),
                filter: None,
            })
            .await,
    );
    assert_status(&status, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);

    f.groups
        .delete_group(proto::DeleteGroupRequest {
            key: Some(k.clone()),
        })
        .await
        .unwrap();
    let status = expect_err(get(&mut f, &k).await);
    assert_status(
        &status,
        Code::NotFound,
        "GROUP_NOT_FOUND",
        &[("source", "orders-1"), ("group", "g1")],
    );
    let left = f
        .groups
        .list_groups(proto::ListGroupsRequest { source: None })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key.as_ref(), Some(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_errors_have_their_codes_and_reasons() {
    let mut f = start().await;
    let k = stream_key("s", "g");
    let settings = GroupSettings {
        max_subscriber_count: Some(1),
        ..from_start()
    };
    create(&mut f, k.clone(), settings.clone()).await;
    let status = expect_err(
        f.groups
            .create_group(CreateGroupRequest {
                key: Some(k.clone()),
                settings: Some(settings),
                filter: None,
            })
            .await,
    );
    assert_status(
        &status,
        Code::AlreadyExists,
        "GROUP_EXISTS",
        &[("source", "s"), ("group", "g")],
    );

    let missing = stream_key("s", "nope");
    for status in [
        expect_err(get(&mut f, &missing).await),
        expect_err(
            f.groups
                .delete_group(proto::DeleteGroupRequest {
                    key: Some(missing.clone()),
                })
                .await,
        ),
        expect_err(
            f.groups
                .replay_parked(proto::ReplayParkedRequest {
                    key: Some(missing.clone()),
                    stop_at: None,
                })
                .await,
        ),
        expect_err(consume(&f, &missing, "c", 10).await.map(|_| ())),
    ] {
        assert_status(
            &status,
            Code::NotFound,
            "GROUP_NOT_FOUND",
            &[("source", "s"), ("group", "nope")],
        );
    }

    let _first = consume(&f, &k, "first", 10).await.unwrap();
    let status = expect_err(consume(&f, &k, "second", 10).await.map(|_| ()));
    assert_status(
        &status,
        Code::FailedPrecondition,
        "GROUP_FULL",
        &[("source", "s"), ("group", "g"), ("max", "1")],
    );

    // A key without a source, and a Consume that does not open first.
    let status = expect_err(
        f.groups
            .get_group(proto::GetGroupRequest {
                key: Some(GroupKey {
                    source: None,
                    group: "g".into(),
                }),
            })
            .await,
    );
    assert_status(&status, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
    let (tx, rx) = mpsc::channel(1);
    tx.send(ConsumeRequest {
        kind: Some(consume_request::Kind::Ack(proto::ConsumeAck {
            ids: vec![],
        })),
    })
    .await
    .unwrap();
    let mut client = f.groups.clone();
    let status = expect_err(
        client
            .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|_| ()),
    );
    assert_status(&status, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
}

// ---------------------------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_ack_delivers_the_events_written_in_order() {
    let mut f = start().await;
    append(&mut f, "orders-7", 0, 120, 7).await;
    let written = read_stream(&mut f, "orders-7").await;
    assert_eq!(written.len(), 120);
    let k = stream_key("orders-7", "g");
    create(&mut f, k.clone(), from_start()).await;
    let mut c = consume(&f, &k, "only", 200).await.unwrap();
    assert_eq!(c.confirmed.subscription_id, "orders-7::g");
    assert!(c.confirmed.consumer_id > 0);
    let mut got = Vec::new();
    while got.len() < written.len() {
        let e = c.next().await;
        assert_eq!(e.retry_count, 0);
        got.push(e);
        if got.len() % 25 == 0 {
            let batch: Vec<_> = got[got.len() - 25..].iter().collect();
            c.ack(&batch).await;
        }
    }
    let rest: Vec<_> = got[got.len() / 25 * 25..].iter().collect();
    c.ack(&rest).await;
    // Exactly the events written, in order, each once.
    let events: Vec<RecordedEvent> = got.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(events, written);
    // Delivery is batched: several events share a message.
    assert!(
        c.messages < got.len(),
        "{} messages for {} events",
        c.messages,
        got.len()
    );
    c.quiet(Duration::from_millis(100)).await;
    let info = wait_for(&mut f, &k, |i| i.checkpoint == Some(119)).await;
    assert_eq!((info.delivered, info.acked, info.nacked), (120, 120, 0));
    assert_eq!((info.in_flight, info.buffered, info.lag), (0, 0, Some(0)));
    assert_eq!(info.consumers.len(), 1);
    let me = &info.consumers[0];
    assert_eq!(me.id, c.confirmed.consumer_id);
    assert_eq!(me.name, "only");
    assert_eq!((me.buffer_size, me.delivered, me.acked), (200, 120, 120));
    assert!(me.connected_at_us > 0);

    // Live: a new event arrives without a new call.
    append(&mut f, "orders-7", 120, 121, 1).await;
    let e = c.next().await;
    assert_eq!(revision_of(&e), 120);
    assert_eq!(e.event.as_ref().unwrap().data, json("orders-7", 120).data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_retry_increments_the_retry_count_and_malformed_ids_are_refused() {
    let mut f = start().await;
    append(&mut f, "s", 0, 1, 1).await;
    let k = stream_key("s", "g");
    create(&mut f, k.clone(), from_start()).await;
    let mut c = consume(&f, &k, "c", 10).await.unwrap();
    let first = c.next().await;
    assert_eq!((revision_of(&first), first.retry_count), (0, 0));
    c.nack(&[&first], NackAction::Retry, "again").await;
    let second = c.next().await;
    assert_eq!((revision_of(&second), second.retry_count), (0, 1));
    c.nack(&[&second], NackAction::Unknown, "again").await;
    let third = c.next().await;
    assert_eq!((revision_of(&third), third.retry_count), (0, 2));
    assert_eq!(third.event, first.event);
    c.ack(&[&third]).await;
    let info = wait_for(&mut f, &k, |i| i.checkpoint == Some(0)).await;
    assert_eq!((info.delivered, info.acked, info.nacked), (3, 1, 2));

    // An id that is not 16 bytes ends the call with INVALID_ARGUMENT.
    c.send(consume_request::Kind::Ack(proto::ConsumeAck {
        ids: vec![vec![1, 2, 3].into()],
    }))
    .await;
    let status = c.ended().await;
    assert_status(&status, Code::InvalidArgument, "INVALID_ARGUMENT", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_skip_retry_after_extend_and_stop() {
    let mut f = start().await;
    append(&mut f, "s", 0, 4, 4).await;
    let k = stream_key("s", "g");
    let settings = GroupSettings {
        message_timeout_ms: Some(400),
        ..from_start()
    };
    create(&mut f, k.clone(), settings).await;
    let mut a = consume(&f, &k, "a", 10).await.unwrap();
    let e: Vec<GroupEvent> = vec![
        a.next().await,
        a.next().await,
        a.next().await,
        a.next().await,
    ];
    assert_eq!(e.iter().map(revision_of).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let sent = std::time::Instant::now();
    // Skip: handled, never again. Retry after 250 ms: not sooner.
    a.nack(&[&e[0]], NackAction::Skip, "not mine").await;
    a.send(consume_request::Kind::Nack(proto::ConsumeNack {
        ids: vec![id_of(&e[1]).into()],
        action: NackAction::RetryAfter as i32,
        delay_ms: 250,
        reason: "later".into(),
    }))
    .await;
    a.ack(&[&e[3]]).await;
    let later = a.next().await;
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!((revision_of(&later), later.retry_count), (1, 1));
    a.ack(&[&later]).await;
    // Extend: revision 2 stays in flight past its first deadline (400 ms after delivery).
    a.nack(&[&e[2]], NackAction::Extend, "working").await;
    let extended = std::time::Instant::now();
    let until = sent + Duration::from_millis(550);
    if let Some(wait) = until.checked_duration_since(std::time::Instant::now()) {
        a.quiet(wait).await;
    }
    assert!(
        extended.elapsed() < Duration::from_millis(400),
        "the test ran too slowly"
    );
    // Stop: revision 2 goes to another consumer, and a's call ends without an error.
    a.nack(&[&e[2]], NackAction::Stop, "bye").await;
    let mut b = consume(&f, &k, "b", 10).await.unwrap();
    let moved = b.next().await;
    assert_eq!(revision_of(&moved), 2);
    assert!(moved.retry_count >= 1);
    let end = tokio::time::timeout(Duration::from_secs(10), a.replies.message())
        .await
        .expect("a's call ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    b.ack(&[&moved]).await;
    let info = wait_for(&mut f, &k, |i| i.checkpoint == Some(3)).await;
    assert_eq!(info.consumers.len(), 1);
    assert_eq!(info.consumers[0].name, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_are_replayed_and_truncated() {
    let mut f = start().await;
    append(&mut f, "s", 0, 3, 3).await;
    let k = stream_key("s", "g");
    create(&mut f, k.clone(), from_start()).await;
    let mut c = consume(&f, &k, "c", 10).await.unwrap();
    let e0 = c.next().await;
    let e1 = c.next().await;
    let e2 = c.next().await;
    assert_eq!(
        [&e0, &e1, &e2].map(revision_of),
        [0, 1, 2],
        "stream order for one consumer"
    );
    c.nack(&[&e0, &e1], NackAction::Park, "poison").await;
    c.ack(&[&e2]).await;
    let info = wait_for(&mut f, &k, |i| i.parked == 2 && i.checkpoint == Some(2)).await;
    assert!(info.parked_oldest_us.is_some());
    c.quiet(Duration::from_millis(100)).await;

    // Replayed: the same events again, before anything new.
    f.groups
        .replay_parked(proto::ReplayParkedRequest {
            key: Some(k.clone()),
            stop_at: None,
        })
        .await
        .unwrap();
    let r0 = c.next().await;
    let r1 = c.next().await;
    let mut replayed = vec![r0.event.clone().unwrap(), r1.event.clone().unwrap()];
    replayed.sort_by_key(|e| e.revision);
    assert_eq!(replayed, vec![e0.event.unwrap(), e1.event.unwrap()]);

    // Parked again, then truncated: the count of those dropped, and a replay finds nothing.
    c.nack(&[&r0, &r1], NackAction::Park, "still poison").await;
    wait_for(&mut f, &k, |i| i.parked == 2 && i.status == "Live").await;
    let count = f
        .groups
        .truncate_parked(proto::TruncateParkedRequest {
            key: Some(k.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 2);
    f.groups
        .replay_parked(proto::ReplayParkedRequest {
            key: Some(k.clone()),
            stop_at: None,
        })
        .await
        .unwrap();
    c.quiet(Duration::from_millis(300)).await;
    // Found by this test: GetGroup kept counting the truncated events as parked.
    let info = wait_for(&mut f, &k, |i| i.status == "Live").await;
    assert_eq!((info.in_flight, info.parked), (0, 0));
    assert_eq!(info.parked_oldest_us, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_timeout_redelivers_with_buffer_size_one() {
    let mut f = start().await;
    append(&mut f, "s", 0, 2, 2).await;
    let k = stream_key("s", "g");
    let settings = GroupSettings {
        message_timeout_ms: Some(200),
        ..from_start()
    };
    create(&mut f, k.clone(), settings).await;
    let mut c = consume(&f, &k, "slow", 1).await.unwrap();
    let first = c.next().await;
    assert_eq!((revision_of(&first), first.retry_count), (0, 0));
    // One in flight: nothing more until an ack or the timeout.
    c.quiet(Duration::from_millis(100)).await;
    let again = c.next().await;
    assert_eq!((revision_of(&again), again.retry_count), (0, 1));
    assert_eq!(again.event, first.event);
    c.ack(&[&again]).await;
    let next = c.next().await;
    assert_eq!((revision_of(&next), next.retry_count), (1, 0));
    c.ack(&[&next]).await;
    wait_for(&mut f, &k, |i| i.checkpoint == Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_a_group_and_lose_nothing() {
    let mut f = start().await;
    append(&mut f, "shared", 0, 300, 30).await;
    let written: HashSet<Vec<u8>> = read_stream(&mut f, "shared")
        .await
        .iter()
        .map(|e| e.id.to_vec())
        .collect();
    let k = stream_key("shared", "g");
    create(&mut f, k.clone(), from_start()).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for name in ["a", "b"] {
        let mut c = consume(&f, &k, name, 8).await.unwrap();
        let seen = Arc::clone(&seen);
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            while let Some(e) = c.try_next(Duration::from_millis(500)).await {
                seen.lock().unwrap().insert(id_of(&e));
                c.ack(&[&e]).await;
                mine += 1;
            }
            mine
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    assert_eq!(*seen.lock().unwrap(), written, "every event delivered");
    assert!(
        counts.iter().all(|&n| n > 0),
        "round robin uses both consumers: {counts:?}"
    );
    let info = wait_for(&mut f, &k, |i| i.checkpoint == Some(299)).await;
    assert_eq!((info.delivered, info.acked), (300, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_ends_its_consumers_with_not_found() {
    let mut f = start().await;
    append(&mut f, "s", 0, 1, 1).await;
    let k = stream_key("s", "g");
    create(&mut f, k.clone(), from_start()).await;
    let mut c = consume(&f, &k, "c", 10).await.unwrap();
    c.next().await;
    f.groups
        .delete_group(proto::DeleteGroupRequest {
            key: Some(k.clone()),
        })
        .await
        .unwrap();
    let status = c.ended().await;
    assert_status(
        &status,
        Code::NotFound,
        "GROUP_NOT_FOUND",
        &[("source", "s"), ("group", "g")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_group_delivers_only_its_filter_and_restart_keeps_the_checkpoint() {
    let mut f = start().await;
    let a = all_key("g");
    f.groups
        .create_group(CreateGroupRequest {
            key: Some(a.clone()),
            settings: Some(from_start()),
            filter: Some(proto::GroupFilter {
                stream_prefixes: vec!["keep-".into()],
                ..proto::GroupFilter::default()
            }),
        })
        .await
        .unwrap();
    append(&mut f, "keep-1", 0, 3, 1).await;
    append(&mut f, "skip-1", 10, 13, 3).await;
    append(&mut f, "keep-2", 20, 22, 2).await;
    let mut c = consume(&f, &a, "c", 50).await.unwrap();
    assert_eq!(c.confirmed.subscription_id, "$all::g");
    let mut got = Vec::new();
    for _ in 0..5 {
        let e = c.next().await;
        c.ack(&[&e]).await;
        got.push(e.event.unwrap());
    }
    assert!(got.iter().all(|e| e.stream.starts_with("keep-")), "{got:?}");
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    c.quiet(Duration::from_millis(100)).await;
    let last = got.last().unwrap().position;
    wait_for(&mut f, &a, |i| i.checkpoint >= Some(last)).await;

    // A restart drops the consumer; the group resumes after its checkpoint.
    f.groups
        .restart_groups(proto::RestartGroupsRequest {})
        .await
        .unwrap();
    let status = c.ended().await;
    assert_status(
        &status,
        Code::Aborted,
        "GROUP_DROPPED",
        &[("source", "$all"), ("group", "g")],
    );
    append(&mut f, "keep-3", 30, 31, 1).await;
    let mut c = consume(&f, &a, "c", 50).await.unwrap();
    let e = c.next().await;
    assert_eq!(e.event.as_ref().unwrap().stream, "keep-3");
    assert_eq!(e.retry_count, 0);
}

// ---------------------------------------------------------------------------------------------
// Tracking through the native API
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_with_tracking_then_get_tracking_and_not_increasing() {
    let mut f = start().await;
    let tracked =
        |position: u64, n: u64, expected: Option<proto::tracking::Expected>| AppendRequest {
            stream: "view-1".into(),
            expected: None,
            events: vec![json("view-1", n)],
            tracking: Some(proto::Tracking {
                source: "projector".into(),
                position,
                expected,
            }),
        };
    let first = f
        .events
        .append(tracked(
            5,
            1,
            Some(proto::tracking::Expected::NoEntry(proto::Empty {})),
        ))
        .await
        .unwrap()
        .into_inner();
    let got = f
        .events
        .get_tracking(proto::GetTrackingRequest {
            source: "projector".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    let entry = got.entry.unwrap();
    assert_eq!((entry.source.as_str(), entry.position), ("projector", 5));
    assert!(entry.commit_position > first.last_position);

    // Not past the stored position: refused, and nothing is written.
    let status = expect_err(f.events.append(tracked(5, 2, None)).await);
    assert_status(
        &status,
        Code::FailedPrecondition,
        "TRACKING_NOT_INCREASING",
        &[("source", "projector"), ("position", "5"), ("stored", "5")],
    );
    let status = expect_err(
        f.events
            .append(tracked(
                9,
                3,
                Some(proto::tracking::Expected::ExpectedPosition(4)),
            ))
            .await,
    );
    assert_status(
        &status,
        Code::FailedPrecondition,
        "TRACKING_CONFLICT",
        &[("source", "projector"), ("expected", "4"), ("stored", "5")],
    );
    assert_eq!(read_stream(&mut f, "view-1").await.len(), 1);
    // Moving forwards works.
    f.events.append(tracked(6, 4, None)).await.unwrap();
    let got = f
        .events
        .get_tracking(proto::GetTrackingRequest {
            source: "projector".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.entry.unwrap().position, 6);
    // An unknown source is not found, not an error.
    let none = f
        .events
        .get_tracking(proto::GetTrackingRequest {
            source: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!none.found && none.entry.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_consume_calls_with_unavailable_without_waiting_for_the_drain() {
    let mut f = start().await;
    append(&mut f, "s", 0, 1, 1).await;
    let k = stream_key("s", "g");
    create(&mut f, k.clone(), from_start()).await;
    let mut c = consume(&f, &k, "c", 10).await.unwrap();
    c.next().await;
    let stopping = std::time::Instant::now();
    let server = f.server;
    let stopped = tokio::spawn(server.stop());
    let status = c.ended().await;
    assert_status(&status, Code::Unavailable, "CLOSED", &[]);
    stopped.await.unwrap();
    // The drain period is 2 s; an open Consume call must not hold the shutdown that long.
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "{:?}",
        stopping.elapsed()
    );
}
