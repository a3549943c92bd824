//! Catch-up subscriptions over gRPC, against an in-process server: the switch from history to
//! live under concurrent appends, stream subscriptions, slow subscribers that fall behind the
//! live ring, checkpoints of filtered subscriptions, resuming after a restart, cleanup of
//! subscriptions whose client went away, and fan-out to hundreds of subscribers.
//!
//! No test asserts on speed: every wait is for a condition, bounded by a generous timeout that
//! only a broken server reaches.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::server::TestServer;
use common::{config, tempdir};
use statestore::Config;
use statestore::server::ServerConfig;
use statestore::server::proto::{
    self, event_filter, event_store_client::EventStoreClient, expected_revision, subscribe_request,
    subscribe_response::Kind,
};
use statestore::service::ServiceConfig;
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::Channel;

type Client = EventStoreClient<Channel>;
type Sub = Streaming<proto::SubscribeResponse>;

/// The bound on every wait. Only a broken server reaches it.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Every event of every test gets a different id.
fn next_id() -> Bytes {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Bytes::copy_from_slice(&((0x5ab5_u128 << 112) | u128::from(n)).to_be_bytes())
}

fn event(event_type: &str, data: String) -> proto::EventData {
    let id = next_id();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    proto::EventData {
        metadata: format!("meta-{hex}").into(),
        id,
        event_type: event_type.to_string(),
        content_type: proto::ContentType::Json as i32,
        data: data.into(),
    }
}

/// An event as acknowledged: what was sent, where it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    position: u64,
    stream: String,
    revision: u64,
    event_type: String,
    id: Bytes,
    data: Bytes,
    metadata: Bytes,
}

fn sent_from(
    ack: &proto::AppendResponse,
    stream: &str,
    events: Vec<proto::EventData>,
) -> Vec<Sent> {
    let n = events.len() as u64;
    assert_eq!(
        ack.last_position + 1 - ack.first_position,
        n,
        "an append's events have consecutive positions: {ack:?}"
    );
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let i = i as u64;
            Sent {
                position: ack.first_position + i,
                stream: stream.to_string(),
                revision: ack.revision + 1 + i - n,
                event_type: e.event_type,
                id: e.id,
                data: e.data,
                metadata: e.metadata,
            }
        })
        .collect()
}

fn request(
    stream: &str,
    expected: Option<expected_revision::Kind>,
    events: Vec<proto::EventData>,
) -> proto::AppendRequest {
    proto::AppendRequest {
        stream: stream.to_string(),
        expected: expected.map(|k| proto::ExpectedRevision { kind: Some(k) }),
        events,
        tracking: None,
    }
}

/// Appends to one stream at any revision and returns the events as acknowledged.
async fn append(client: &mut Client, stream: &str, events: Vec<proto::EventData>) -> Vec<Sent> {
    append_expecting(client, stream, None, events).await
}

async fn append_expecting(
    client: &mut Client,
    stream: &str,
    expected: Option<expected_revision::Kind>,
    events: Vec<proto::EventData>,
) -> Vec<Sent> {
    let ack = client
        .append(request(stream, expected, events.clone()))
        .await
        .unwrap_or_else(|s| panic!("append to {stream}: {s:?}"))
        .into_inner();
    sent_from(&ack, stream, events)
}

#[track_caller]
fn assert_sent(actual: &proto::RecordedEvent, expected: &Sent) {
    let ctx = format!("event at position {}", expected.position);
    assert_eq!(actual.position, expected.position, "{ctx}: position");
    assert_eq!(actual.stream, expected.stream, "{ctx}: stream");
    assert_eq!(actual.revision, expected.revision, "{ctx}: revision");
    assert_eq!(actual.event_type, expected.event_type, "{ctx}: type");
    assert_eq!(actual.id, expected.id, "{ctx}: id");
    assert_eq!(actual.data, expected.data, "{ctx}: data");
    assert_eq!(actual.metadata, expected.metadata, "{ctx}: metadata");
    assert_eq!(
        actual.content_type,
        proto::ContentType::Json as i32,
        "{ctx}: content type"
    );
    assert!(actual.timestamp_us > 0, "{ctx}: timestamp");
}

fn by_position(sent: &[Sent]) -> BTreeMap<u64, Sent> {
    let map: BTreeMap<u64, Sent> = sent.iter().map(|s| (s.position, s.clone())).collect();
    assert_eq!(map.len(), sent.len(), "acknowledged positions are unique");
    map
}

async fn subscribe(client: &mut Client, target: subscribe_request::Target) -> Sub {
    client
        .subscribe(proto::SubscribeRequest {
            target: Some(target),
        })
        .await
        .expect("subscribe")
        .into_inner()
}

async fn subscribe_all(
    client: &mut Client,
    after_position: u64,
    filter: Option<proto::EventFilter>,
    checkpoint_interval: u32,
) -> Sub {
    let target = subscribe_request::Target::All(proto::SubscribeAll {
        after_position,
        filter,
        checkpoint_interval,
    });
    subscribe(client, target).await
}

async fn subscribe_stream(client: &mut Client, stream: &str, after_revision: Option<u64>) -> Sub {
    let target = subscribe_request::Target::Stream(proto::SubscribeStream {
        stream: stream.to_string(),
        after_revision,
    });
    subscribe(client, target).await
}

/// A subscription message, with event batches flattened into single events.
#[derive(Debug, Clone)]
enum Msg {
    Event(proto::RecordedEvent),
    CaughtUp {
        position: u64,
        revision: Option<u64>,
    },
    Checkpoint(u64),
    FellBehind(u64),
}

fn push_message(m: proto::SubscribeResponse, out: &mut Vec<Msg>) {
    match m.kind.expect("a subscription message has a kind") {
        Kind::Events(batch) => {
            assert!(!batch.events.is_empty(), "an empty event batch was sent");
            out.extend(batch.events.into_iter().map(Msg::Event));
        }
        Kind::CaughtUp(c) => out.push(Msg::CaughtUp {
            position: c.position,
            revision: c.revision,
        }),
        Kind::Checkpoint(c) => out.push(Msg::Checkpoint(c.position)),
        Kind::FellBehind(f) => out.push(Msg::FellBehind(f.position)),
    }
}

/// Receives one message (a batch counts as one) and appends it to `out`.
async fn receive(sub: &mut Sub, out: &mut Vec<Msg>) {
    let m = tokio::time::timeout(PATIENCE, sub.message())
        .await
        .expect("timed out waiting for a subscription message")
        .expect("the subscription failed")
        .expect("the subscription ended");
    push_message(m, out);
}

/// Receives until `done` holds for everything received so far.
async fn receive_until(sub: &mut Sub, out: &mut Vec<Msg>, done: impl Fn(&[Msg]) -> bool) {
    while !done(out) {
        receive(sub, out).await;
    }
}

fn caught_up(msgs: &[Msg]) -> bool {
    msgs.iter().any(|m| matches!(m, Msg::CaughtUp { .. }))
}

fn events_in(msgs: &[Msg]) -> Vec<&proto::RecordedEvent> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn has_event(msgs: &[Msg], id: &[u8]) -> bool {
    msgs.iter()
        .any(|m| matches!(m, Msg::Event(e) if e.id == id))
}

/// Receives, also when nothing arrives for a while, until the last event delivered reaches
/// `target` (which the caller sets once it knows how far the log goes) and the subscription is
/// live (its last CaughtUp came after its last FellBehind). While `slow` is set it sleeps 5 ms
/// after each message.
async fn collect_until_target(
    mut sub: Sub,
    mut out: Vec<Msg>,
    mut target: watch::Receiver<u64>,
    slow: Option<Arc<AtomicBool>>,
) -> (Sub, Vec<Msg>) {
    let mut last = events_in(&out).last().map_or(0, |e| e.position);
    let is_live = |msgs: &[Msg]| {
        matches!(
            msgs.iter()
                .rfind(|m| matches!(m, Msg::CaughtUp { .. } | Msg::FellBehind(_))),
            Some(Msg::CaughtUp { .. })
        )
    };
    loop {
        if last >= *target.borrow_and_update() && is_live(&out) {
            return (sub, out);
        }
        tokio::select! {
            m = sub.message() => {
                let m = m.expect("the subscription failed").expect("the subscription ended");
                push_message(m, &mut out);
                if let Some(Msg::Event(e)) = out.last() {
                    last = e.position;
                }
            }
            changed = target.changed() => changed.expect("the target is set"),
        }
        if slow.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What an unfiltered whole-log subscription delivered.
struct Unfiltered {
    caught_up: usize,
    fell_behind: usize,
    /// The position of the first CaughtUp.
    first_caught_up: Option<u64>,
}

/// Checks an unfiltered whole-log subscription after `after`: every event after it exactly
/// once, in order, as appended; CaughtUp and FellBehind alternate (CaughtUp first) and carry the
/// position of the last event delivered; no Checkpoint.
#[track_caller]
fn check_unfiltered(msgs: &[Msg], after: u64, expected: &BTreeMap<u64, Sent>) -> Unfiltered {
    let mut last = after;
    let mut live = false;
    let mut report = Unfiltered {
        caught_up: 0,
        fell_behind: 0,
        first_caught_up: None,
    };
    for (i, m) in msgs.iter().enumerate() {
        match m {
            Msg::Event(e) => {
                assert_eq!(
                    e.position,
                    last + 1,
                    "message {i}: events must be dense, in order, each once"
                );
                let want = expected
                    .get(&e.position)
                    .unwrap_or_else(|| panic!("message {i}: unexpected position {}", e.position));
                assert_sent(e, want);
                last = e.position;
            }
            Msg::CaughtUp { position, revision } => {
                assert!(
                    !live,
                    "message {i}: CaughtUp while live, without a FellBehind"
                );
                assert_eq!(*position, last, "message {i}: CaughtUp.position");
                assert_eq!(
                    *revision, None,
                    "message {i}: CaughtUp.revision of a whole-log subscription"
                );
                live = true;
                report.caught_up += 1;
                report.first_caught_up.get_or_insert(*position);
            }
            Msg::FellBehind(position) => {
                assert!(live, "message {i}: FellBehind while not live");
                assert_eq!(*position, last, "message {i}: FellBehind.position");
                live = false;
                report.fell_behind += 1;
            }
            Msg::Checkpoint(p) => {
                panic!("message {i}: Checkpoint({p}) on an unfiltered subscription")
            }
        }
    }
    report
}

/// What a filtered whole-log subscription delivered.
#[derive(Debug, Default)]
struct Filtered {
    checkpoints: Vec<u64>,
    /// Largest distance between consecutive checkpoints (from `after`) before the first
    /// CaughtUp, and after it.
    max_gap_catch_up: u64,
    max_gap_live: u64,
    caught_up: Vec<u64>,
    fell_behind: usize,
    delivered: usize,
    /// Furthest progress (event, checkpoint or CaughtUp position) seen.
    progress: u64,
}

/// Checks a filtered whole-log subscription after `after`: exactly the `matches` (every
/// acknowledged event the filter selects, in position order) after `after` are delivered, each
/// once and in order, until the messages end; checkpoints never pass an undelivered match and
/// never go back; every CaughtUp follows a Checkpoint at the same position.
#[track_caller]
fn check_filtered(msgs: &[Msg], after: u64, matches: &[&Sent]) -> Filtered {
    let mut next = matches.partition_point(|s| s.position <= after);
    let mut r = Filtered {
        progress: after,
        ..Filtered::default()
    };
    let mut last_checkpoint = after;
    let mut live = false;
    for (i, m) in msgs.iter().enumerate() {
        match m {
            Msg::Event(e) => {
                let want = matches.get(next).unwrap_or_else(|| {
                    panic!(
                        "message {i}: event at {} after every expected match",
                        e.position
                    )
                });
                assert_eq!(
                    e.position, want.position,
                    "message {i}: the next matching event (a match was skipped, repeated, or a \
                     non-matching event was delivered)"
                );
                assert_sent(e, want);
                assert!(
                    e.position > r.progress,
                    "message {i}: event behind a checkpoint"
                );
                next += 1;
                r.delivered += 1;
                r.progress = e.position;
            }
            Msg::Checkpoint(p) => {
                assert!(
                    *p >= r.progress,
                    "message {i}: checkpoint {p} goes back from {}",
                    r.progress
                );
                if let Some(skipped) = matches.get(next).filter(|s| s.position <= *p) {
                    panic!(
                        "message {i}: checkpoint {p} passes the undelivered match at {}",
                        skipped.position
                    );
                }
                let gap = p - last_checkpoint;
                if live {
                    r.max_gap_live = r.max_gap_live.max(gap);
                } else if r.caught_up.is_empty() {
                    r.max_gap_catch_up = r.max_gap_catch_up.max(gap);
                } else {
                    // Back on disk after a FellBehind: still live as far as the test goes.
                    r.max_gap_live = r.max_gap_live.max(gap);
                }
                last_checkpoint = *p;
                r.progress = *p;
                r.checkpoints.push(*p);
            }
            Msg::CaughtUp { position, revision } => {
                assert!(
                    !live,
                    "message {i}: CaughtUp while live, without a FellBehind"
                );
                assert_eq!(*revision, None, "message {i}: CaughtUp.revision");
                assert!(
                    matches!(msgs.get(i.wrapping_sub(1)), Some(Msg::Checkpoint(p)) if p == position),
                    "message {i}: CaughtUp({position}) of a filtered subscription must follow a \
                     Checkpoint at the same position; got {:?}",
                    msgs.get(i.wrapping_sub(1))
                );
                r.caught_up.push(*position);
                live = true;
            }
            Msg::FellBehind(p) => {
                assert!(live, "message {i}: FellBehind while not live");
                assert!(*p >= r.progress, "message {i}: FellBehind({p}) goes back");
                r.progress = *p;
                r.fell_behind += 1;
                live = false;
            }
        }
    }
    r
}

/// Stops the server, waits until nothing else holds its store, and closes the store.
async fn stop_and_close(server: TestServer) {
    let store = server.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&store) > 1 {
        assert!(
            Instant::now() < deadline,
            "the store is still referenced {} times 10 s after the server stopped",
            Arc::strong_count(&store) - 1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().expect("close the store"),
        Err(_) => panic!("the store is still shared"),
    }
}

async fn server_info(client: &mut Client) -> proto::ServerInfoResponse {
    client
        .server_info(proto::ServerInfoRequest {})
        .await
        .expect("server info")
        .into_inner()
}

/// Polls ServerInfo until `done` holds, for at most `within`.
async fn wait_for_info(
    client: &mut Client,
    within: Duration,
    what: &str,
    done: impl Fn(&proto::ServerInfoResponse) -> bool,
) -> proto::ServerInfoResponse {
    let deadline = Instant::now() + within;
    loop {
        let info = server_info(client).await;
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {within:?}; last ServerInfo {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends `appends` commits of 1..=3 events to a few streams of its own, as fast as the
/// server acknowledges them, and returns every event as acknowledged.
async fn appender(
    mut client: Client,
    task: u64,
    appends: u64,
    prefix: &'static str,
    pad: usize,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    for seq in 0..appends {
        let n = 1 + (seq * 7 + task) % 3;
        let events = (0..n)
            .map(|i| {
                event(
                    &format!("Conc{}", (seq + i) % 4),
                    format!(
                        "{{\"task\":{task},\"seq\":{seq},\"i\":{i},\"pad\":\"{}\"}}",
                        "p".repeat(pad)
                    ),
                )
            })
            .collect();
        let stream = format!("{prefix}{task}-{}", seq % 5);
        sent.extend(append(&mut client, &stream, events).await);
    }
    sent
}

// ---------------------------------------------------------------------------------------------
// Whole-log subscriptions: the switch from history to live.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_switches_to_live_under_concurrent_appends() {
    const PRE: u64 = 1000;
    const TASKS: u64 = 4;
    const APPENDS: u64 = 500;
    let dir = tempdir();
    let server = TestServer::start(
        dir.path(),
        config(),
        ServerConfig {
            // Catch-up takes many pages, interleaved with the concurrent commits.
            service: ServiceConfig {
                read_page_events: 100,
                ..ServiceConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = server.client().await;
    let mut sent = Vec::new();
    for i in 0..PRE / 20 {
        let events = (0..20)
            .map(|k| event("Pre", format!("{{\"i\":{i},\"k\":{k}}}")))
            .collect();
        sent.extend(append(&mut client, &format!("pre-{}", i % 5), events).await);
    }

    let appenders: Vec<_> = (0..TASKS)
        .map(|t| {
            let c = client.clone();
            tokio::spawn(appender(c, t, APPENDS, "conc-", 0))
        })
        .collect();
    // Subscribe once the concurrent appends are under way, so history is still growing while
    // the subscription reads it.
    let started = wait_for_info(&mut client, PATIENCE, "concurrent appends start", |i| {
        i.last_position >= PRE + 50
    })
    .await
    .last_position;
    let sub = subscribe_all(&mut client, 0, None, 0).await;
    let (target_tx, target_rx) = watch::channel(u64::MAX);
    let collector = tokio::spawn(tokio::time::timeout(
        PATIENCE,
        collect_until_target(sub, Vec::new(), target_rx, None),
    ));

    for a in appenders {
        sent.extend(a.await.expect("appender task"));
    }
    let expected = by_position(&sent);
    let n = PRE
        + (0..TASKS)
            .flat_map(|t| (0..APPENDS).map(move |seq| 1 + (seq * 7 + t) % 3))
            .sum::<u64>();
    assert_eq!(expected.len() as u64, n, "every append acknowledged");
    assert_eq!(
        expected.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "acknowledged positions are dense"
    );
    target_tx.send(n).expect("collector is running");
    let (sub, msgs) = collector
        .await
        .expect("collector task")
        .expect("every acknowledged event delivered in time");
    drop(sub);

    let report = check_unfiltered(&msgs, 0, &expected);
    assert_eq!(
        events_in(&msgs).len() as u64,
        n,
        "every event delivered once"
    );
    let first = report.first_caught_up.expect("a CaughtUp");
    assert!(
        first >= started,
        "CaughtUp at {first} before the history at subscription time ({started}) was delivered"
    );
    assert_eq!(
        report.caught_up,
        1 + report.fell_behind,
        "one CaughtUp, plus one after each FellBehind"
    );
    eprintln!(
        "caught up at {first} of {n} (history at subscribe: {started}); {} FellBehind",
        report.fell_behind
    );
    drop(client);
    stop_and_close(server).await;
}

// ---------------------------------------------------------------------------------------------
// Stream subscriptions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscriptions_deliver_only_their_stream() {
    use expected_revision::Kind as Exp;
    let dir = tempdir();
    let server = TestServer::start(dir.path(), config(), ServerConfig::default()).await;
    let mut client = server.client().await;
    let mut sent = Vec::new();
    // acct-10 shares acct-1's prefix; acct-2 its category.
    for i in 0..5 {
        sent.extend(
            append(
                &mut client,
                "acct-1",
                vec![event("Deposited", format!("{{\"i\":{i}}}"))],
            )
            .await,
        );
        sent.extend(
            append(
                &mut client,
                "acct-10",
                vec![event("Deposited", format!("{{\"j\":{i}}}"))],
            )
            .await,
        );
        let two = vec![
            event("Opened", "{}".into()),
            event("Deposited", "{}".into()),
        ];
        sent.extend(append(&mut client, &format!("acct-2{i}"), two).await);
    }
    let of = |sent: &[Sent], stream: &str| -> Vec<Sent> {
        sent.iter()
            .filter(|s| s.stream == stream)
            .cloned()
            .collect()
    };
    let history = of(&sent, "acct-1");
    assert_eq!(history.len(), 5);

    let mut from_start = subscribe_stream(&mut client, "acct-1", None).await;
    let mut after_two = subscribe_stream(&mut client, "acct-1", Some(2)).await;
    let mut not_yet = subscribe_stream(&mut client, "acct-9", None).await;
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    receive_until(&mut from_start, &mut a, caught_up).await;
    receive_until(&mut after_two, &mut b, caught_up).await;
    receive_until(&mut not_yet, &mut c, caught_up).await;

    let check_history = |msgs: &[Msg], expected: &[Sent]| {
        let events = events_in(msgs);
        assert_eq!(events.len(), expected.len(), "history events: {msgs:?}");
        for (e, s) in events.iter().zip(expected) {
            assert_sent(e, s);
        }
        let last = expected.last();
        match msgs.last() {
            Some(Msg::CaughtUp { position, revision }) => {
                assert_eq!(
                    *position,
                    last.map_or(0, |s| s.position),
                    "CaughtUp.position"
                );
                assert_eq!(*revision, last.map(|s| s.revision), "CaughtUp.revision");
            }
            other => panic!("history ends with CaughtUp, got {other:?}"),
        }
    };
    check_history(&a, &history);
    check_history(&b, &history[3..]);
    check_history(&c, &[]);

    // Live: only acct-1 (or acct-9) events, with consecutive revisions, whatever else commits
    // around them, including in the same multi-stream commit.
    let mut live = Vec::new();
    live.extend(
        append(
            &mut client,
            "acct-20",
            vec![event("Deposited", "{}".into())],
        )
        .await,
    );
    live.extend(
        append(
            &mut client,
            "acct-1",
            vec![
                event("Withdrawn", "{\"a\":1}".into()),
                event("Withdrawn", "{\"a\":2}".into()),
            ],
        )
        .await,
    );
    live.extend(
        append(
            &mut client,
            "acct-10",
            vec![event("Deposited", "{}".into())],
        )
        .await,
    );
    live.extend(
        append_expecting(
            &mut client,
            "acct-9",
            Some(Exp::NoStream(proto::Empty {})),
            vec![
                event("Opened", "{\"c\":0}".into()),
                event("Deposited", "{\"c\":1}".into()),
            ],
        )
        .await,
    );
    let multi_parts = vec![
        request(
            "acct-9",
            Some(Exp::Exact(1)),
            vec![event("Deposited", "{\"c\":2}".into())],
        ),
        request("acct-10", None, vec![event("Deposited", "{}".into())]),
        request(
            "acct-1",
            Some(Exp::Exact(6)),
            vec![event("Closed", "{\"a\":3}".into())],
        ),
    ];
    let acks = client
        .append_multi(proto::AppendMultiRequest {
            streams: multi_parts.clone(),
            tracking: None,
        })
        .await
        .expect("append multi")
        .into_inner()
        .results;
    for (part, ack) in multi_parts.into_iter().zip(&acks) {
        live.extend(sent_from(ack, &part.stream, part.events));
    }
    let live_1 = of(&live, "acct-1");
    let live_9 = of(&live, "acct-9");
    assert_eq!(
        live_1.iter().map(|s| s.revision).collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert_eq!(
        live_9.iter().map(|s| s.revision).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    // A sentinel on each stream: the next event after the expected ones must be it, so no other
    // event slipped in between.
    let sentinel_1 = append(&mut client, "acct-1", vec![event("Sentinel", "{}".into())]).await;
    let sentinel_9 = append(&mut client, "acct-9", vec![event("Sentinel", "{}".into())]).await;
    let expect_1: Vec<Sent> = live_1.iter().chain(&sentinel_1).cloned().collect();
    let expect_9: Vec<Sent> = live_9.iter().chain(&sentinel_9).cloned().collect();
    for (sub, msgs, expected) in [
        (&mut from_start, &mut a, &expect_1),
        (&mut after_two, &mut b, &expect_1),
        (&mut not_yet, &mut c, &expect_9),
    ] {
        let before = msgs.len();
        let last_id = expected.last().expect("sentinel").id.clone();
        receive_until(sub, msgs, |m| has_event(m, &last_id)).await;
        let got = &msgs[before..];
        assert!(
            got.iter().all(|m| matches!(m, Msg::Event(_))),
            "only events once live: {got:?}"
        );
        let events = events_in(got);
        assert_eq!(events.len(), expected.len(), "live events: {got:?}");
        for (e, s) in events.iter().zip(expected) {
            assert_sent(e, s);
        }
        let revisions: Vec<u64> = events_in(msgs).iter().map(|e| e.revision).collect();
        let first = revisions[0];
        assert_eq!(
            revisions,
            (first..first + revisions.len() as u64).collect::<Vec<_>>(),
            "consecutive revisions"
        );
    }
    drop((from_start, after_two, not_yet, client));
    stop_and_close(server).await;
}

/// CaughtUp of a stream subscription that resumes after the stream's newest revision (so
/// delivers nothing): its `revision` and `position` must describe the same event, or both say
/// "none".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_caught_up_after_revision_with_nothing_newer_is_consistent() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), config(), ServerConfig::default()).await;
    let mut client = server.client().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.extend(
            append(
                &mut client,
                "acct-1",
                vec![event("Deposited", format!("{{\"i\":{i}}}"))],
            )
            .await,
        );
        sent.extend(append(&mut client, "other-1", vec![event("Noise", "{}".into())]).await);
    }
    let mut sub = subscribe_stream(&mut client, "acct-1", Some(4)).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;
    assert!(
        events_in(&msgs).is_empty(),
        "nothing after revision 4: {msgs:?}"
    );
    let Some(Msg::CaughtUp { position, revision }) = msgs.last() else {
        panic!("CaughtUp expected: {msgs:?}");
    };
    match revision {
        // Nothing delivered: the proto says position 0 and no revision.
        None => assert_eq!(*position, 0, "CaughtUp.position with no revision"),
        // The cursor reading: revision 4 was "delivered" (skipped), at its position.
        Some(r) => {
            let at = sent
                .iter()
                .find(|s| s.stream == "acct-1" && s.revision == *r)
                .expect("the revision exists");
            assert_eq!(
                *position, at.position,
                "CaughtUp.revision is {r} but CaughtUp.position is not that event's position"
            );
        }
    }
    drop((sub, client));
    stop_and_close(server).await;
}

// ---------------------------------------------------------------------------------------------
// Slow subscribers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_falls_behind_and_loses_nothing() {
    const TASKS: u64 = 2;
    const APPENDS: u64 = 700;
    // About 2 KiB per event, 2,800 events: 5.6 MiB in all; 2 MiB appended before the
    // subscriber reads anything, against well under 1 MiB the transport can buffer for it.
    const PAD: usize = 2000;
    const STALL_UNTIL: u64 = 1000;
    let dir = tempdir();
    let server = TestServer::start(
        dir.path(),
        config(),
        ServerConfig {
            service: ServiceConfig {
                live_ring_batches: 2,
                subscriber_buffer_bytes: 4096,
                read_page_events: 100,
                ..ServiceConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = server.client().await;
    let mut sent = append(&mut client, "slow-0", vec![event("First", "{}".into())]).await;
    // The subscriber's own connection has small HTTP/2 windows, so that what the transport
    // buffers for it is small next to what is appended while it dawdles.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("endpoint")
        .initial_stream_window_size(64 << 10)
        .initial_connection_window_size(64 << 10)
        .connect()
        .await
        .expect("connect");
    let mut slow = EventStoreClient::new(channel);
    let mut sub = subscribe_all(&mut slow, 0, None, 0).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;

    let appending = Arc::new(AtomicBool::new(true));
    let appenders: Vec<_> = (0..TASKS)
        .map(|t| {
            let c = client.clone();
            tokio::spawn(appender(c, t, APPENDS, "slow-", PAD))
        })
        .collect();
    let (target_tx, target_rx) = watch::channel(u64::MAX);
    let reader = tokio::spawn({
        let appending = Arc::clone(&appending);
        let mut info = client.clone();
        async move {
            // Not reading at all until far more than the transport buffers has been appended:
            // the subscription is then certainly stuck behind the 2-batch ring.
            wait_for_info(&mut info, PATIENCE, "appends under way", |i| {
                i.last_position >= STALL_UNTIL
            })
            .await;
            collect_until_target(sub, msgs, target_rx, Some(appending)).await
        }
    });
    for a in appenders {
        sent.extend(a.await.expect("appender task"));
    }
    appending.store(false, Ordering::Relaxed);
    let expected = by_position(&sent);
    let n = sent.len() as u64;
    assert_eq!(expected.keys().next_back(), Some(&n), "positions are dense");
    target_tx.send(n).expect("the reader is running");
    let (sub, msgs) = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("every event delivered in time")
        .expect("reader task");

    let report = check_unfiltered(&msgs, 0, &expected);
    assert_eq!(
        events_in(&msgs).len() as u64,
        n,
        "every event delivered once"
    );
    assert!(
        report.fell_behind >= 1,
        "a subscriber this slow with a 2-batch ring must fall behind at least once"
    );
    assert_eq!(
        report.caught_up,
        report.fell_behind + 1,
        "a CaughtUp after each FellBehind"
    );
    let last_fell = msgs.iter().rposition(|m| matches!(m, Msg::FellBehind(_)));
    let last_caught = msgs.iter().rposition(|m| matches!(m, Msg::CaughtUp { .. }));
    assert!(
        last_caught > last_fell,
        "the last FellBehind is followed by a CaughtUp"
    );
    eprintln!(
        "{n} events, {} messages, {} FellBehind",
        msgs.len(),
        report.fell_behind
    );
    drop((sub, slow, client));
    stop_and_close(server).await;
}

// ---------------------------------------------------------------------------------------------
// Filtered subscriptions and checkpoints.

fn types_filter(types: &[&str]) -> Option<proto::EventFilter> {
    Some(proto::EventFilter {
        stream: None,
        event_types: types.iter().map(|t| t.to_string()).collect(),
    })
}

/// Appends `n` events in commits of 1..=5, one of every `every` of type "Rare" (the rest
/// "Common"), and returns them as acknowledged.
async fn append_mixed(client: &mut Client, n: u64, every: u64, seed: u64) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut i = 0;
    while i < n {
        let k = (1 + (i + seed) % 5).min(n - i);
        let events = (i..i + k)
            .map(|j| {
                let t = if (j + seed).is_multiple_of(every) {
                    "Rare"
                } else {
                    "Common"
                };
                event(t, format!("{{\"j\":{j},\"seed\":{seed}}}"))
            })
            .collect();
        sent.extend(append(client, &format!("mix-{}", i % 7), events).await);
        i += k;
    }
    sent
}

/// Checkpoints come at most every `interval` scanned events, give or take one read page or
/// live batch, both during catch-up and live, when every page and live batch is small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_subscription_sends_checkpoints() {
    const INTERVAL: u64 = 100;
    // Pages scan at most this many events (read_scan_max = read_page_events) and live batches
    // hold at most this many, so a checkpoint is at most this much late.
    const STEP: u64 = 20;
    const HISTORY: u64 = 3000;
    let dir = tempdir();
    let server = TestServer::start(
        dir.path(),
        Config {
            read_scan_max: STEP,
            ..config()
        },
        ServerConfig {
            service: ServiceConfig {
                read_page_events: STEP,
                live_batch_events: STEP,
                ..ServiceConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = server.client().await;
    let mut sent = append_mixed(&mut client, HISTORY, 97, 0).await;
    let mut sub = subscribe_all(&mut client, 0, types_filter(&["Rare"]), INTERVAL as u32).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;

    // Live: more mixed commits from two clients, then a Rare sentinel.
    let mut other = server.client().await;
    let (x, y) = tokio::join!(
        append_mixed(&mut client, 1000, 89, 1),
        append_mixed(&mut other, 1000, 101, 2)
    );
    sent.extend(x);
    sent.extend(y);
    let sentinel = append(
        &mut client,
        "mix-end",
        vec![event("Rare", "{\"end\":1}".into())],
    )
    .await;
    sent.extend(sentinel.iter().cloned());
    receive_until(&mut sub, &mut msgs, |m| has_event(m, &sentinel[0].id)).await;

    sent.sort_by_key(|s| s.position);
    let matches: Vec<&Sent> = sent.iter().filter(|s| s.event_type == "Rare").collect();
    let r = check_filtered(&msgs, 0, &matches);
    assert_eq!(r.delivered, matches.len(), "every Rare event delivered");
    assert_eq!(
        r.caught_up.first(),
        Some(&HISTORY),
        "CaughtUp at the end of history"
    );
    assert!(
        r.max_gap_catch_up < INTERVAL + STEP,
        "catch-up checkpoints {} apart (interval {INTERVAL})",
        r.max_gap_catch_up
    );
    assert!(
        r.max_gap_live < INTERVAL + STEP,
        "live checkpoints {} apart (interval {INTERVAL})",
        r.max_gap_live
    );
    let last_checkpoint = r.checkpoints.last().copied().unwrap_or(0);
    assert!(
        sentinel[0].position - last_checkpoint < INTERVAL + STEP,
        "live checkpoints keep coming: the last is at {last_checkpoint}, the sentinel at {}",
        sentinel[0].position
    );
    let before_caught_up = r.checkpoints.iter().filter(|&&p| p <= HISTORY).count() as u64;
    assert!(
        before_caught_up >= HISTORY / (INTERVAL + STEP),
        "{before_caught_up} checkpoints during catch-up of {HISTORY} events"
    );
    eprintln!(
        "{} checkpoints, max gap {} (catch-up) / {} (live), {} FellBehind",
        r.checkpoints.len(),
        r.max_gap_catch_up,
        r.max_gap_live,
        r.fell_behind
    );
    drop((sub, client, other));
    stop_and_close(server).await;
}

/// The proto promises a Checkpoint "at least every checkpoint_interval scanned events". With
/// the default limits one catch-up page of a rare filter scans up to `read_scan_max` (100,000)
/// events and is followed by a single checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_catch_up_checkpoints_respect_the_interval_with_default_limits() {
    const INTERVAL: u64 = 100;
    const HISTORY: u64 = 3000;
    let dir = tempdir();
    let server = TestServer::start(dir.path(), config(), ServerConfig::default()).await;
    let mut client = server.client().await;
    let mut sent = append_mixed(&mut client, HISTORY, 997, 0).await;
    let mut sub = subscribe_all(&mut client, 0, types_filter(&["Rare"]), INTERVAL as u32).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;
    sent.sort_by_key(|s| s.position);
    let matches: Vec<&Sent> = sent.iter().filter(|s| s.event_type == "Rare").collect();
    let r = check_filtered(&msgs, 0, &matches);
    assert!(
        r.max_gap_catch_up <= 2 * INTERVAL,
        "catch-up checkpoints at {:?}: up to {} scanned events apart, interval {INTERVAL}",
        r.checkpoints,
        r.max_gap_catch_up
    );
    drop((sub, client));
    stop_and_close(server).await;
}

/// The same promise, live: one commit of many non-matching events is one live batch, followed
/// by one checkpoint however many events it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_live_checkpoints_respect_the_interval_for_large_commits() {
    const INTERVAL: u64 = 100;
    let dir = tempdir();
    let server = TestServer::start(dir.path(), config(), ServerConfig::default()).await;
    let mut client = server.client().await;
    let mut sub = subscribe_all(&mut client, 0, types_filter(&["Rare"]), INTERVAL as u32).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let events = (0..500)
            .map(|k| event("Common", format!("{{\"i\":{i},\"k\":{k}}}")))
            .collect();
        sent.extend(append(&mut client, "big-1", events).await);
    }
    let sentinel = append(&mut client, "big-1", vec![event("Rare", "{}".into())]).await;
    sent.extend(sentinel.iter().cloned());
    receive_until(&mut sub, &mut msgs, |m| has_event(m, &sentinel[0].id)).await;
    let matches: Vec<&Sent> = sent.iter().filter(|s| s.event_type == "Rare").collect();
    let r = check_filtered(&msgs, 0, &matches);
    assert!(
        r.max_gap_live <= 2 * INTERVAL,
        "live checkpoints at {:?}: up to {} scanned events apart, interval {INTERVAL}",
        r.checkpoints,
        r.max_gap_live
    );
    drop((sub, client));
    stop_and_close(server).await;
}

// ---------------------------------------------------------------------------------------------
// Resuming after a restart.

fn order_filter() -> Option<proto::EventFilter> {
    Some(proto::EventFilter {
        stream: Some(event_filter::Stream::Category("order".into())),
        event_types: vec!["OrderShipped".into()],
    })
}

/// Appends `n` commits of 1..=3 events over order-*, orders-* and invoice-* streams with types
/// OrderPlaced and OrderShipped; the filter above selects only OrderShipped in order-*.
async fn append_orders(client: &mut Client, n: u64, seed: u64) -> Vec<Sent> {
    let mut sent = Vec::new();
    for i in 0..n {
        let stream = match (i + seed) % 4 {
            0 | 1 => format!("order-{}", (i + seed) % 11),
            2 => format!("orders-{}", i % 3),
            _ => format!("invoice-{}", i % 5),
        };
        let k = 1 + (i * 5 + seed) % 3;
        let events = (0..k)
            .map(|j| {
                let t = if (i + j + seed).is_multiple_of(3) {
                    "OrderShipped"
                } else {
                    "OrderPlaced"
                };
                event(t, format!("{{\"seed\":{seed},\"i\":{i},\"j\":{j}}}"))
            })
            .collect();
        sent.extend(append(client, &stream, events).await);
    }
    sent
}

fn order_matches(sent: &[Sent]) -> Vec<&Sent> {
    let mut m: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.event_type == "OrderShipped" && s.stream.starts_with("order-"))
        .collect();
    m.sort_by_key(|s| s.position);
    m
}

async fn start(dir: &Path) -> TestServer {
    TestServer::start(dir, config(), ServerConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_subscription_resumes_from_a_checkpoint_after_a_restart() {
    const INTERVAL: u32 = 50;
    let dir = tempdir();
    let mut sent = Vec::new();

    // Before the restart: history, a subscription that catches up, then goes live.
    let server = start(dir.path()).await;
    let mut client = server.client().await;
    sent.extend(append_orders(&mut client, 300, 0).await);
    let history_end = sent.iter().map(|s| s.position).max().expect("history");
    let mut sub = subscribe_all(&mut client, 0, order_filter(), INTERVAL).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;
    sent.extend(append_orders(&mut client, 200, 1).await);
    let sentinel = append(
        &mut client,
        "order-x",
        vec![event("OrderShipped", "{}".into())],
    )
    .await;
    sent.extend(sentinel.iter().cloned());
    receive_until(&mut sub, &mut msgs, |m| has_event(m, &sentinel[0].id)).await;
    // A few more commits the subscriber may or may not see before it goes away.
    sent.extend(append_orders(&mut client, 30, 2).await);
    let r = check_filtered(&msgs, 0, &order_matches(&sent));
    assert_eq!(
        r.caught_up.first(),
        Some(&history_end),
        "CaughtUp at the end of history"
    );
    assert!(r.checkpoints.len() >= 3, "checkpoints: {:?}", r.checkpoints);
    // Resume points: the furthest progress (the sentinel, or a later checkpoint) and an earlier
    // checkpoint.
    let resume = r.progress;
    let mid = r.checkpoints[r.checkpoints.len() / 2];
    assert!(
        mid < resume && resume >= sentinel[0].position,
        "checkpoint {mid}, progress {resume}"
    );
    drop((sub, client));
    stop_and_close(server).await;

    // After the restart: everything is still there, more is appended, and both resume points
    // deliver exactly the matches after them.
    let server = start(dir.path()).await;
    let mut client = server.client().await;
    let last_before = sent.iter().map(|s| s.position).max().expect("events");
    assert_eq!(
        server_info(&mut client).await.last_position,
        last_before,
        "the log after the restart"
    );
    sent.extend(append_orders(&mut client, 200, 3).await);
    for after in [resume, mid] {
        let end = sent.iter().map(|s| s.position).max().expect("events");
        let mut sub = subscribe_all(&mut client, after, order_filter(), INTERVAL).await;
        let mut msgs = Vec::new();
        receive_until(&mut sub, &mut msgs, caught_up).await;
        let r = check_filtered(&msgs, after, &order_matches(&sent));
        let expected: Vec<u64> = order_matches(&sent)
            .iter()
            .map(|s| s.position)
            .filter(|&p| p > after)
            .collect();
        let got: Vec<u64> = events_in(&msgs).iter().map(|e| e.position).collect();
        assert_eq!(
            got, expected,
            "resumed after {after}: exactly the matches after it"
        );
        assert_eq!(
            r.caught_up,
            [end],
            "resumed after {after}: CaughtUp at the end"
        );
        // And live from there.
        let tail = append(
            &mut client,
            "order-y",
            vec![event("OrderShipped", format!("{{\"after\":{after}}}"))],
        )
        .await;
        let skip = append(
            &mut client,
            "invoice-y",
            vec![event("OrderShipped", "{}".into())],
        )
        .await;
        sent.extend(tail.iter().chain(&skip).cloned());
        let before = msgs.len();
        receive_until(&mut sub, &mut msgs, |m| has_event(m, &tail[0].id)).await;
        let live = events_in(&msgs[before..]);
        assert_eq!(live.len(), 1, "live after resuming: {:?}", &msgs[before..]);
        assert_sent(live[0], &tail[0]);
    }
    drop(client);
    stop_and_close(server).await;
}

// ---------------------------------------------------------------------------------------------
// Cleanup and fan-out.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_of_clients_that_went_away_are_cleaned_up() {
    let dir = tempdir();
    let server = TestServer::start(
        dir.path(),
        config(),
        ServerConfig {
            service: ServiceConfig {
                subscriber_buffer_bytes: 4096,
                read_page_events: 10,
                ..ServiceConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = server.client().await;
    for i in 0..20 {
        let events = (0..50)
            .map(|k| {
                event(
                    "Bulk",
                    format!("{{\"i\":{i},\"k\":{k},\"pad\":\"{}\"}}", "x".repeat(2000)),
                )
            })
            .collect();
        append(&mut client, &format!("bulk-{i}"), events).await;
    }
    let last = server_info(&mut client).await.last_position;

    // 20 live subscriptions on one shared connection, caught up and idle.
    let shared = server.client().await;
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut c = shared.clone();
        let mut sub = if i % 2 == 0 {
            subscribe_all(&mut c, last, None, 0).await
        } else {
            subscribe_stream(&mut c, &format!("bulk-{i}"), Some(49)).await
        };
        let mut msgs = Vec::new();
        receive_until(&mut sub, &mut msgs, caught_up).await;
        idle.push(sub);
    }
    // 15 that never read their history: stuck sending into a full buffer.
    let mut stuck = Vec::new();
    for _ in 0..15 {
        let mut c = shared.clone();
        stuck.push(subscribe_all(&mut c, 0, None, 0).await);
    }
    // 15 on connections of their own, which close with them.
    let mut own = Vec::new();
    for i in 0..15 {
        let mut c = server.client().await;
        let sub = if i % 3 == 0 {
            subscribe_all(&mut c, 0, types_filter(&["Nothing"]), 10).await
        } else {
            subscribe_all(&mut c, 0, None, 0).await
        };
        own.push((c, sub));
    }
    wait_for_info(&mut client, PATIENCE, "50 subscriptions open", |i| {
        i.subscriptions == 50
    })
    .await;

    drop(idle);
    drop(stuck);
    drop(own);
    drop(shared);
    wait_for_info(
        &mut client,
        Duration::from_secs(10),
        "subscriptions closed",
        |i| i.subscriptions == 0,
    )
    .await;
    // The server still works, and a new subscription is counted.
    let mut sub = subscribe_all(&mut client, last, None, 0).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;
    assert_eq!(server_info(&mut client).await.subscriptions, 1);
    drop((sub, client));
    stop_and_close(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_subscribers_receive_the_same_events() {
    const SUBSCRIBERS: usize = 200;
    const CONNECTIONS: usize = 4;
    const HISTORY: u64 = 20;
    const LIVE: u64 = 100;
    let dir = tempdir();
    let server = TestServer::start(dir.path(), config(), ServerConfig::default()).await;
    let mut client = server.client().await;
    let mut sent = Vec::new();
    for i in 0..HISTORY {
        sent.extend(
            append(
                &mut client,
                &format!("fan-{}", i % 3),
                vec![event("Fan", format!("{{\"h\":{i}}}"))],
            )
            .await,
        );
    }
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(server.client().await);
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(SUBSCRIBERS);
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let mut c = connections[s % CONNECTIONS].clone();
        let ready = ready_tx.clone();
        subscribers.push(tokio::spawn(async move {
            let mut sub = subscribe_all(&mut c, 0, None, 0).await;
            let mut msgs = Vec::new();
            receive_until(&mut sub, &mut msgs, caught_up).await;
            ready.send(()).await.expect("ready");
            receive_until(&mut sub, &mut msgs, |m| {
                events_in(m).len() as u64 >= HISTORY + LIVE
            })
            .await;
            msgs
        }));
    }
    drop(ready_tx);
    for _ in 0..SUBSCRIBERS {
        tokio::time::timeout(PATIENCE, ready_rx.recv())
            .await
            .expect("every subscriber caught up in time")
            .expect("a subscriber failed before catching up");
    }
    assert_eq!(
        server_info(&mut client).await.subscriptions,
        SUBSCRIBERS as u64
    );

    // The live events, from two clients at once.
    let mut other = server.client().await;
    let (x, y) = tokio::join!(
        async {
            let mut v = Vec::new();
            for i in 0..LIVE / 2 {
                v.extend(
                    append(
                        &mut client,
                        "fan-a",
                        vec![event("Fan", format!("{{\"a\":{i}}}"))],
                    )
                    .await,
                );
            }
            v
        },
        async {
            let mut v = Vec::new();
            for i in 0..LIVE / 2 {
                v.extend(
                    append(
                        &mut other,
                        "fan-b",
                        vec![event("Fan", format!("{{\"b\":{i}}}"))],
                    )
                    .await,
                );
            }
            v
        }
    );
    sent.extend(x);
    sent.extend(y);
    let expected = by_position(&sent);
    assert_eq!(expected.len() as u64, HISTORY + LIVE);
    for (s, task) in subscribers.into_iter().enumerate() {
        let msgs = tokio::time::timeout(PATIENCE, task)
            .await
            .unwrap_or_else(|_| panic!("subscriber {s} received everything in time"))
            .expect("subscriber task");
        let report = check_unfiltered(&msgs, 0, &expected);
        // 100 commits cannot overflow a 256-batch ring.
        assert_eq!(report.fell_behind, 0, "subscriber {s} fell behind");
        assert_eq!(report.first_caught_up, Some(HISTORY), "subscriber {s}");
        assert_eq!(
            events_in(&msgs).len() as u64,
            HISTORY + LIVE,
            "subscriber {s}"
        );
    }
    drop((client, other, connections));
    stop_and_close(server).await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown.

/// Reads a subscription to its end; returns the messages and how it ended.
async fn read_to_end(sub: &mut Sub) -> (Vec<Msg>, Result<(), tonic::Status>) {
    let mut msgs = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, sub.message())
            .await
            .expect("the subscription ends")
        {
            Ok(Some(m)) => push_message(m, &mut msgs),
            Ok(None) => return (msgs, Ok(())),
            Err(status) => return (msgs, Err(status)),
        }
    }
}

/// A connection with small HTTP/2 windows, so that little is buffered in the transport.
async fn small_window_client(server: &TestServer) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("endpoint")
        .initial_stream_window_size(64 << 10)
        .initial_connection_window_size(64 << 10)
        .connect()
        .await
        .expect("connect");
    EventStoreClient::new(channel)
}

/// The server doc says shutdown "ends subscriptions with UNAVAILABLE". An idle live subscriber
/// gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_live_subscription_with_unavailable() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), config(), ServerConfig::default()).await;
    let mut client = server.client().await;
    let sent = append(&mut client, "bye-1", vec![event("Hello", "{}".into())]).await;
    let mut sub = subscribe_all(&mut client, 0, None, 0).await;
    let mut msgs = Vec::new();
    receive_until(&mut sub, &mut msgs, caught_up).await;
    let stopping = tokio::spawn(stop_and_close(server));
    let (rest, end) = read_to_end(&mut sub).await;
    assert!(rest.is_empty(), "nothing after CaughtUp: {rest:?}");
    let status = end.expect_err("the subscription ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    check_unfiltered(&msgs, 0, &by_position(&sent));
    drop((sub, client));
    stopping.await.expect("stop task");
}

/// The same for a subscriber that is behind, its buffer full, when the server stops: the
/// status must not be lost because the buffer is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_lagging_subscription_with_unavailable() {
    let dir = tempdir();
    let server = TestServer::start(
        dir.path(),
        config(),
        ServerConfig {
            service: ServiceConfig {
                subscriber_buffer_bytes: 4096,
                read_page_events: 10,
                ..ServiceConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .await;
    let mut client = server.client().await;
    let mut sent = Vec::new();
    for i in 0..40 {
        let events = (0..50)
            .map(|k| {
                event(
                    "Bulk",
                    format!("{{\"i\":{i},\"k\":{k},\"pad\":\"{}\"}}", "x".repeat(2000)),
                )
            })
            .collect();
        sent.extend(append(&mut client, &format!("bulk-{i}"), events).await);
    }
    // 4 MB of history behind a 64 KiB window: the subscription task soon waits on its full
    // buffer. (If it has not got there yet when the server stops, the test passes anyway.)
    let mut slow = small_window_client(&server).await;
    let mut sub = subscribe_all(&mut slow, 0, None, 0).await;
    wait_for_info(&mut client, PATIENCE, "the subscription is open", |i| {
        i.subscriptions == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let stopping = tokio::spawn(stop_and_close(server));
    let (msgs, end) = read_to_end(&mut sub).await;
    let expected = by_position(&sent);
    check_unfiltered(&msgs, 0, &expected);
    let status = end.expect_err(&format!(
        "the subscription ends with a status, not OK, after {} of {} events",
        events_in(&msgs).len(),
        sent.len()
    ));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop((sub, slow));
    stopping.await.expect("stop task");
}
