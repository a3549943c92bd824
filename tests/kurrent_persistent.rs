//! KurrentDB persistent subscriptions through the official Rust client (the `kurrentdb`
//! crate) against a real server: create, read with ack and every kind of nack, message
//! timeouts with buffer sizes 1 and 10, max retry count then parking, replay parked, update
//! (drops consumers, keeps the checkpoint), delete, info and list with their statistics,
//! maximum subscribers, already exists, not found, strategies, `$all` groups with filters,
//! and the server features that make the client use gRPC for all of it.

mod common;

use std::future::Future;
use std::time::Duration;

use common::server::TestServer;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, DeletePersistentSubscriptionOptions, Error,
    EventData, NakAction, PersistentSubscription, PersistentSubscriptionEvent,
    PersistentSubscriptionOptions, PersistentSubscriptionToAllOptions, ReplayParkedMessagesOptions,
    StreamPosition, SubscribeToPersistentSubscriptionOptions, SubscriptionFilter,
    SystemConsumerStrategy,
};
use serde_json::json;
use statestore::server::ServerConfig;
use uuid::Uuid;

/// How long any single await may take before the test fails (a hang fails fast).
const STEP: Duration = Duration::from_secs(10);

struct Fixture {
    client: Client,
    _server: TestServer,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), common::config(), ServerConfig::default()).await;
    let settings: ClientSettings = format!("esdb://{}?tls=false", server.addr)
        .parse()
        .expect("connection string");
    Fixture {
        client: Client::new(settings).expect("client"),
        _server: server,
        _dir: dir,
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// Appends events `{"n": n}` for `ns`, ids `common::id(n)`.
async fn append(client: &Client, stream: &str, ns: std::ops::Range<u64>) {
    let events: Vec<EventData> = ns
        .map(|n| {
            EventData::json("Thing", &json!({ "n": n }))
                .expect("json")
                .id(common::id(n))
        })
        .collect();
    within(
        "append",
        client.append_to_stream(stream, &AppendToStreamOptions::default(), events),
    )
    .await
    .expect("append");
}

fn from_start() -> PersistentSubscriptionOptions {
    PersistentSubscriptionOptions::default().start_from(StreamPosition::Start)
}

async fn subscribe(
    client: &Client,
    stream: &str,
    group: &str,
    buffer: usize,
) -> PersistentSubscription {
    within(
        "subscribe",
        client.subscribe_to_persistent_subscription(
            stream,
            group,
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(buffer),
        ),
    )
    .await
    .expect("subscribe")
}

/// The next event: (n of its data, its id, its revision, its retry count).
async fn next(sub: &mut PersistentSubscription) -> (u64, Uuid, u64, usize) {
    loop {
        match within("next event", sub.next_subscription_event())
            .await
            .expect("subscription event")
        {
            PersistentSubscriptionEvent::EventAppeared { retry_count, event } => {
                let e = event.get_original_event();
                let data: serde_json::Value = serde_json::from_slice(&e.data).expect("json data");
                let n = data["n"].as_u64().expect("n");
                return (n, e.id, e.revision, retry_count);
            }
            PersistentSubscriptionEvent::Confirmed(_) => {}
        }
    }
}

/// Waits for the confirmation and returns the subscription id.
async fn confirmed(sub: &mut PersistentSubscription) -> String {
    match within("confirmation", sub.next_subscription_event())
        .await
        .expect("confirmation")
    {
        PersistentSubscriptionEvent::Confirmed(id) => id,
        other => panic!("expected the confirmation first, got {other:?}"),
    }
}

/// Nothing arrives for `quiet`.
async fn nothing_for(sub: &mut PersistentSubscription, quiet: Duration) {
    if let Ok(got) = tokio::time::timeout(quiet, sub.next_subscription_event()).await {
        panic!("expected nothing, got {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_ack_and_statistics() {
    let fx = start().await;
    let c = &fx.client;
    append(c, "orders-1", 0..10).await;
    let options = from_start()
        .max_retry_count(7)
        .read_batch_size(5)
        .history_buffer_size(50)
        .live_buffer_size(60)
        .checkpoint_lower_bound(1)
        .checkpoint_upper_bound(3)
        .checkpoint_after(Duration::from_millis(100))
        .message_timeout(Duration::from_secs(20));
    within(
        "create",
        c.create_persistent_subscription("orders-1", "g", &options),
    )
    .await
    .expect("create");
    // Creating it again is "already exists".
    let again = within(
        "create again",
        c.create_persistent_subscription("orders-1", "g", &options),
    )
    .await;
    assert!(
        matches!(again, Err(Error::ResourceAlreadyExists)),
        "{again:?}"
    );

    let mut sub = subscribe(c, "orders-1", "g", 10).await;
    assert_eq!(confirmed(&mut sub).await, "orders-1::g");
    for want in 0..10 {
        let (n, id, revision, retries) = next(&mut sub).await;
        assert_eq!(
            (n, id, revision, retries),
            (want, common::id(want), want, 0)
        );
        sub.ack_ids(vec![id]).await.expect("ack");
    }
    append(c, "orders-1", 10..12).await;
    for want in 10..12 {
        let (n, id, _, _) = next(&mut sub).await;
        assert_eq!(n, want, "live events follow history without a gap");
        sub.ack_ids(vec![id]).await.expect("ack");
    }

    // The checkpoint reaches the last acknowledged revision.
    let deadline = tokio::time::Instant::now() + STEP;
    let info = loop {
        let info = within(
            "info",
            c.get_persistent_subscription_info("orders-1", "g", &Default::default()),
        )
        .await
        .expect("info");
        if info.stats.last_checkpointed_event_revision == Some(11) {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "checkpoint never reached 11: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(info.event_source, "orders-1");
    assert_eq!(info.group_name, "g");
    assert_eq!(info.status, "Live");
    assert_eq!(info.stats.last_known_event_revision, Some(11));
    assert_eq!(info.stats.parked_message_count, 0);
    assert_eq!(info.connections.len(), 1);
    let s = info.settings.expect("settings");
    assert_eq!(s.start_from, StreamPosition::Start);
    assert_eq!(s.max_retry_count, 7);
    assert_eq!(s.read_batch_size, 5);
    assert_eq!(s.history_buffer_size, 50);
    assert_eq!(s.live_buffer_size, 60);
    assert_eq!(s.checkpoint_lower_bound, 1);
    assert_eq!(s.checkpoint_upper_bound, 3);
    assert_eq!(s.checkpoint_after, Duration::from_millis(100));
    assert_eq!(s.message_timeout, Duration::from_secs(20));
    assert_eq!(s.consumer_strategy_name, SystemConsumerStrategy::RoundRobin);

    let listed = within(
        "list",
        c.list_persistent_subscriptions_for_stream("orders-1", &Default::default()),
    )
    .await
    .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_name, "g");
    let all = within(
        "list all",
        c.list_all_persistent_subscriptions(&Default::default()),
    )
    .await
    .expect("list all");
    assert_eq!(
        all.iter()
            .map(|i| i.group_name.as_str())
            .collect::<Vec<_>>(),
        ["g"]
    );

    // Delete: the connected consumer is dropped, and the group is gone.
    within(
        "delete",
        c.delete_persistent_subscription(
            "orders-1",
            "g",
            &DeletePersistentSubscriptionOptions::default(),
        ),
    )
    .await
    .expect("delete");
    let ended = within("dropped", sub.next_subscription_event()).await;
    assert!(
        ended.is_err(),
        "a consumer of a deleted group ends: {ended:?}"
    );
    let gone = within(
        "info after delete",
        c.get_persistent_subscription_info("orders-1", "g", &Default::default()),
    )
    .await;
    assert!(matches!(gone, Err(Error::ResourceNotFound)), "{gone:?}");
    let gone = within(
        "delete again",
        c.delete_persistent_subscription("orders-1", "g", &Default::default()),
    )
    .await;
    assert!(matches!(gone, Err(Error::ResourceNotFound)), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_maximum_subscribers() {
    let fx = start().await;
    let c = &fx.client;
    let missing = within(
        "subscribe to a missing group",
        c.subscribe_to_persistent_subscription("nowhere", "g", &Default::default()),
    )
    .await;
    let missing = match missing {
        Ok(mut sub) => sub.next_subscription_event().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(missing, Err(Error::ResourceNotFound)),
        "{missing:?}"
    );
    let info = within(
        "info of a missing group",
        c.get_persistent_subscription_info("nowhere", "g", &Default::default()),
    )
    .await;
    assert!(matches!(info, Err(Error::ResourceNotFound)), "{info:?}");

    within(
        "create",
        c.create_persistent_subscription("one-only", "g", &from_start().max_subscriber_count(1)),
    )
    .await
    .expect("create");
    let mut first = subscribe(c, "one-only", "g", 10).await;
    confirmed(&mut first).await;
    let second = within(
        "second subscriber",
        c.subscribe_to_persistent_subscription("one-only", "g", &Default::default()),
    )
    .await;
    let second = match second {
        Ok(mut sub) => sub.next_subscription_event().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match second {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(format!("{code:?}"), "FailedPrecondition");
            assert!(
                message.starts_with("Maximum subscriptions reached"),
                "{message}"
            );
        }
        other => panic!("expected maximum subscribers reached, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_retry_skip_park_and_replay_parked() {
    let fx = start().await;
    let c = &fx.client;
    append(c, "jobs-1", 0..3).await;
    within(
        "create",
        c.create_persistent_subscription("jobs-1", "g", &from_start()),
    )
    .await
    .expect("create");
    let mut sub = subscribe(c, "jobs-1", "g", 10).await;
    let mut first: Vec<(u64, Uuid)> = Vec::new();
    for _ in 0..3 {
        let (n, id, _, retries) = next(&mut sub).await;
        assert_eq!(retries, 0);
        first.push((n, id));
    }
    assert_eq!(first.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1, 2]);
    // 0: retry (comes back with retry count 1); 1: skip (never again); 2: park.
    sub.nack_ids(vec![first[0].1], NakAction::Retry, "again")
        .await
        .expect("nack retry");
    sub.nack_ids(vec![first[1].1], NakAction::Skip, "skip it")
        .await
        .expect("nack skip");
    sub.nack_ids(vec![first[2].1], NakAction::Park, "poison")
        .await
        .expect("nack park");
    let (n, id, _, retries) = next(&mut sub).await;
    assert_eq!(
        (n, retries),
        (0, 1),
        "a retried event carries its retry count"
    );
    // Unknown is a retry too.
    sub.nack_ids(vec![id], NakAction::Unknown, "unsure")
        .await
        .expect("nack unknown");
    let (n, id, _, retries) = next(&mut sub).await;
    assert_eq!((n, retries), (0, 2));
    sub.ack_ids(vec![id]).await.expect("ack");
    nothing_for(&mut sub, Duration::from_millis(300)).await;

    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let info = c
            .get_persistent_subscription_info("jobs-1", "g", &Default::default())
            .await
            .expect("info");
        if info.stats.parked_message_count == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "parked count never 1: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    within(
        "replay parked",
        c.replay_parked_messages("jobs-1", "g", &ReplayParkedMessagesOptions::default()),
    )
    .await
    .expect("replay parked");
    let (n, id, _, _) = next(&mut sub).await;
    assert_eq!(n, 2, "the parked event is delivered again");
    sub.ack_ids(vec![id]).await.expect("ack");
    nothing_for(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_timeout_retries_then_parks_at_max_retry_count() {
    let fx = start().await;
    let c = &fx.client;
    append(c, "slow-1", 0..2).await;
    let options = from_start()
        .message_timeout(Duration::from_millis(300))
        .max_retry_count(3);
    within(
        "create",
        c.create_persistent_subscription("slow-1", "g", &options),
    )
    .await
    .expect("create");

    // Buffer size 1: event 0 is redelivered on each timeout (retry counts 1, 2, 3) and event 1
    // waits behind it; after the third retry it is parked and event 1 arrives.
    let mut sub = subscribe(c, "slow-1", "g", 1).await;
    for want in 0..=3 {
        let (n, _, _, retries) = next(&mut sub).await;
        assert_eq!((n, retries), (0, want), "event 0, try {want}");
    }
    let (n, id, _, retries) = next(&mut sub).await;
    assert_eq!((n, retries), (1, 0), "after parking event 0, event 1");
    sub.ack_ids(vec![id]).await.expect("ack");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let info = c
            .get_persistent_subscription_info("slow-1", "g", &Default::default())
            .await
            .expect("info");
        if info.stats.parked_message_count == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(sub);

    // Buffer size 10: all ten arrive at once, and every unacked one comes back after the
    // timeout.
    append(c, "slow-2", 0..10).await;
    within(
        "create",
        c.create_persistent_subscription("slow-2", "g", &options),
    )
    .await
    .expect("create");
    let mut sub = subscribe(c, "slow-2", "g", 10).await;
    let mut got = Vec::new();
    for _ in 0..10 {
        let (n, id, _, retries) = next(&mut sub).await;
        assert_eq!(retries, 0);
        got.push((n, id));
    }
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // Ack the even ones; the odd ones time out and return with retry count 1.
    sub.ack_ids(got.iter().filter(|g| g.0 % 2 == 0).map(|g| g.1))
        .await
        .expect("ack");
    let mut again = Vec::new();
    for _ in 0..5 {
        let (n, id, _, retries) = next(&mut sub).await;
        assert_eq!(retries, 1, "event {n}");
        again.push(n);
        sub.ack_ids(vec![id]).await.expect("ack");
    }
    again.sort_unstable();
    assert_eq!(again, [1, 3, 5, 7, 9]);
    nothing_for(&mut sub, Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_drops_consumers_and_keeps_the_checkpoint() {
    let fx = start().await;
    let c = &fx.client;
    append(c, "upd-1", 0..5).await;
    let options = from_start()
        .checkpoint_lower_bound(1)
        .checkpoint_upper_bound(1)
        .checkpoint_after(Duration::from_millis(50));
    within(
        "create",
        c.create_persistent_subscription("upd-1", "g", &options),
    )
    .await
    .expect("create");
    let mut sub = subscribe(c, "upd-1", "g", 10).await;
    for want in 0..5 {
        let (n, id, _, _) = next(&mut sub).await;
        assert_eq!(n, want);
        if n < 3 {
            sub.ack_ids(vec![id]).await.expect("ack");
        }
    }
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let info = c
            .get_persistent_subscription_info("upd-1", "g", &Default::default())
            .await
            .expect("info");
        if info.stats.last_checkpointed_event_revision == Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    within(
        "update",
        c.update_persistent_subscription("upd-1", "g", &options.clone().max_retry_count(4)),
    )
    .await
    .expect("update");
    let dropped = within("dropped by update", sub.next_subscription_event()).await;
    assert!(
        matches!(dropped, Err(Error::IllegalStateError(_))),
        "{dropped:?}"
    );

    // Reconnected: resumes after the checkpoint (3 and 4 were never acked), not from 0.
    let mut sub = subscribe(c, "upd-1", "g", 10).await;
    let (n, id3, _, _) = next(&mut sub).await;
    assert_eq!(n, 3);
    let (n, id4, _, _) = next(&mut sub).await;
    assert_eq!(n, 4);
    sub.ack_ids(vec![id3, id4]).await.expect("ack");
    let info = c
        .get_persistent_subscription_info("upd-1", "g", &Default::default())
        .await
        .expect("info");
    assert_eq!(info.settings.expect("settings").max_retry_count, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_group_with_a_filter_and_two_round_robin_consumers() {
    let fx = start().await;
    let c = &fx.client;
    append(c, "skip-1", 100..103).await;
    append(c, "shop-1", 0..4).await;
    append(c, "shop-2", 4..8).await;
    let options = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix("shop-"));
    within(
        "create to all",
        c.create_persistent_subscription_to_all("g", &options),
    )
    .await
    .expect("create to all");
    let again = within(
        "again",
        c.create_persistent_subscription_to_all("g", &options),
    )
    .await;
    assert!(
        matches!(again, Err(Error::ResourceAlreadyExists)),
        "{again:?}"
    );

    let mut a = within(
        "subscribe a",
        c.subscribe_to_persistent_subscription_to_all(
            "g",
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(2),
        ),
    )
    .await
    .expect("subscribe a");
    assert_eq!(confirmed(&mut a).await, "$all::g");
    let mut b = within(
        "subscribe b",
        c.subscribe_to_persistent_subscription_to_all(
            "g",
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(2),
        ),
    )
    .await
    .expect("subscribe b");
    confirmed(&mut b).await;
    // Each consumer holds at most 2 unacked events; acking lets the rest through. Between
    // them, every matching event arrives exactly once (nothing is retried here).
    let mut seen = Vec::new();
    while seen.len() < 8 {
        for sub in [&mut a, &mut b] {
            if let Ok(Ok(PersistentSubscriptionEvent::EventAppeared { event, retry_count })) =
                tokio::time::timeout(Duration::from_millis(200), sub.next_subscription_event())
                    .await
            {
                assert_eq!(retry_count, 0);
                let e = event.get_original_event();
                assert!(
                    e.stream_id().starts_with("shop-"),
                    "filtered: {}",
                    e.stream_id()
                );
                let data: serde_json::Value = serde_json::from_slice(&e.data).expect("json");
                seen.push(data["n"].as_u64().expect("n"));
                sub.ack(&event).await.expect("ack");
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    let info = within(
        "info to all",
        c.get_persistent_subscription_info_to_all("g", &Default::default()),
    )
    .await
    .expect("info to all");
    assert_eq!(info.event_source, "$all");
    assert_eq!(info.connections.len(), 2);
    let listed = within(
        "list to all",
        c.list_persistent_subscriptions_to_all(&Default::default()),
    )
    .await
    .expect("list to all");
    assert_eq!(listed.len(), 1);
    within(
        "replay parked to all",
        c.replay_parked_messages_to_all("g", &Default::default()),
    )
    .await
    .expect("replay parked on $all");
    within(
        "delete to all",
        c.delete_persistent_subscription_to_all("g", &Default::default()),
    )
    .await
    .expect("delete to all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_are_stored_and_features_are_advertised() {
    let fx = start().await;
    let c = &fx.client;
    let info = within("server info", c.server_info())
        .await
        .expect("server info");
    use kurrentdb::operations::Features;
    assert!(
        info.contains_features(Features::PERSISTENT_SUBSCRIPITON_TO_ALL),
        "{info:?}"
    );
    assert!(
        info.contains_features(Features::PERSISTENT_SUBSCRIPTION_MANAGEMENT),
        "{info:?}"
    );

    for (group, strategy) in [
        ("single", SystemConsumerStrategy::DispatchToSingle),
        ("pinned", SystemConsumerStrategy::Pinned),
        ("rr", SystemConsumerStrategy::RoundRobin),
    ] {
        within(
            "create",
            c.create_persistent_subscription(
                "strat-1",
                group,
                &from_start().consumer_strategy_name(strategy.clone()),
            ),
        )
        .await
        .expect("create");
        let info = c
            .get_persistent_subscription_info("strat-1", group, &Default::default())
            .await
            .expect("info");
        assert_eq!(
            info.settings.expect("settings").consumer_strategy_name,
            strategy
        );
    }
    // (The Rust client itself refuses PinnedByCorrelation and custom names before sending;
    // the Python client's test sends them.)
    // Read batch must be smaller than the history buffer.
    let bad = within(
        "bad sizes",
        c.create_persistent_subscription(
            "strat-1",
            "sizes",
            &from_start().read_batch_size(50).history_buffer_size(50),
        ),
    )
    .await;
    assert!(bad.is_err(), "{bad:?}");
    within(
        "restart subsystem",
        c.restart_persistent_subscription_subsystem(&Default::default()),
    )
    .await
    .expect("restart subsystem");
    let listed = c
        .list_persistent_subscriptions_for_stream("strat-1", &Default::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 3, "groups survive a subsystem restart");
}

/// The raw protocol with structured UUIDs (two i64 halves), which clients other than the Rust
/// and Python ones ask for: event ids come back structured, and acks and nacks by structured
/// id resolve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_uuids_in_deliveries_acks_and_nacks() {
    use statestore::server::kurrent::proto::event_store::client::persistent_subscriptions as ps;
    use statestore::server::kurrent::proto::event_store::client::{
        StreamIdentifier, Uuid as WireUuid, uuid,
    };
    let fx = start().await;
    append(&fx.client, "raw-1", 0..2).await;
    within(
        "create",
        fx.client
            .create_persistent_subscription("raw-1", "g", &from_start()),
    )
    .await
    .expect("create");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", fx._server.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(ps::ReadReq {
        content: Some(ps::read_req::Content::Options(ps::read_req::Options {
            stream_option: Some(ps::read_req::options::StreamOption::StreamIdentifier(
                StreamIdentifier {
                    stream_name: "raw-1".into(),
                },
            )),
            group_name: "g".into(),
            buffer_size: 10,
            uuid_option: Some(ps::read_req::options::UuidOption {
                content: Some(ps::read_req::options::uuid_option::Content::Structured(
                    Default::default(),
                )),
            }),
        })),
    })
    .await
    .expect("send options");
    let path = http::uri::PathAndQuery::from_static(
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/Read",
    );
    let mut replies = within(
        "read",
        grpc.streaming::<_, ps::ReadReq, ps::ReadResp, _>(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            path,
            tonic_prost::ProstCodec::default(),
        ),
    )
    .await
    .expect("read")
    .into_inner();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let reply = within("reply", replies.message())
            .await
            .expect("reply")
            .expect("a reply");
        match reply.content {
            Some(ps::read_resp::Content::SubscriptionConfirmation(c)) => {
                assert_eq!(c.subscription_id, "raw-1::g");
            }
            Some(ps::read_resp::Content::Event(e)) => {
                let id = e.event.expect("event").id.expect("id");
                let Some(uuid::Value::Structured(s)) = &id.value else {
                    panic!("asked for structured ids, got {id:?}");
                };
                let n = ids.len() as u64;
                assert_eq!(
                    Uuid::from_u64_pair(
                        s.most_significant_bits as u64,
                        s.least_significant_bits as u64
                    ),
                    common::id(n)
                );
                ids.push(id);
            }
            None => panic!("an empty reply"),
        }
    }
    let first: WireUuid = ids[0].clone();
    tx.send(ps::ReadReq {
        content: Some(ps::read_req::Content::Ack(ps::read_req::Ack {
            id: Default::default(),
            ids: vec![first],
        })),
    })
    .await
    .expect("ack");
    tx.send(ps::ReadReq {
        content: Some(ps::read_req::Content::Nack(ps::read_req::Nack {
            id: Default::default(),
            ids: vec![ids[1].clone()],
            action: ps::read_req::nack::Action::Park as i32,
            reason: "structured park".into(),
        })),
    })
    .await
    .expect("nack");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let info = fx
            .client
            .get_persistent_subscription_info("raw-1", "g", &Default::default())
            .await
            .expect("info");
        if info.stats.parked_message_count == 1 && info.stats.total_in_flight_messages == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
