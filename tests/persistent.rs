//! Persistent subscriptions through the service layer: at-least-once delivery to competing
//! consumers, acks, retries, parking and replay, and checkpoints that neither skip unacked
//! events nor restart from zero.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, ev, tempdir};
use statestore::service::persistent::{
    Delivery, GroupConsumer, GroupKey, GroupSettings, GroupSource, NackAction, StartFrom,
};
use statestore::service::{Principal, Service, ServiceConfig};
use statestore::{Error, ExpectedRevision, Store};
use tokio::sync::watch;

async fn start(store: &Arc<Store>) -> (Arc<Service>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let service = Service::start(Arc::clone(store), ServiceConfig::default(), rx).unwrap();
    service.start_groups().await.unwrap();
    (service, tx)
}

fn key(stream: &str, group: &str) -> GroupKey {
    GroupKey {
        source: GroupSource::Stream(stream.into()),
        group: group.into(),
    }
}

fn settings() -> GroupSettings {
    GroupSettings {
        start_from: Some(StartFrom::Start),
        checkpoint_after_ms: Some(50),
        min_checkpoint_count: Some(1),
        ..GroupSettings::default()
    }
}

async fn next(c: &mut GroupConsumer) -> (statestore::RecordedEvent, u32) {
    match tokio::time::timeout(Duration::from_secs(10), c.rx.recv()).await {
        Ok(Some(Delivery::Event { event, retry_count })) => (event, retry_count),
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn quiet(c: &mut GroupConsumer, wait: Duration) {
    if let Ok(Some(d)) = tokio::time::timeout(wait, c.rx.recv()).await {
        panic!("expected nothing, got {d:?}");
    }
}

fn append(store: &Store, stream: &str, from: u64, to: u64) {
    for n in from..to {
        store
            .append(stream, ExpectedRevision::Any, vec![ev(n, "E")])
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_acks_retries_and_parks() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    append(&store, "orders", 0, 5);
    let (service, _stop) = start(&store).await;
    let k = key("orders", "g");
    let s = GroupSettings {
        max_retry_count: Some(2),
        ..settings()
    };
    service
        .create_group(&Principal::Open, k.clone(), s.clone(), Default::default())
        .await
        .unwrap();
    // Twice is GroupExists.
    assert!(matches!(
        service
            .create_group(&Principal::Open, k.clone(), s, Default::default())
            .await,
        Err(Error::GroupExists { .. })
    ));
    let mut c = service
        .consume(&Principal::Open, k.clone(), "c1".into(), 10)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (e, retries) = next(&mut c).await;
        assert_eq!(retries, 0);
        seen.push(e);
    }
    let revisions: Vec<u64> = seen.iter().map(|e| e.revision.0).collect();
    assert_eq!(revisions, vec![0, 1, 2, 3, 4]);
    // Ack 0, 1, 3; retry 2 (comes back with retry count 1, before anything new).
    c.ack(vec![seen[0].id, seen[1].id, seen[3].id])
        .await
        .unwrap();
    c.nack(vec![seen[2].id], NackAction::Retry, "try again".into())
        .await
        .unwrap();
    let (e, retries) = next(&mut c).await;
    assert_eq!((e.revision.0, retries), (2, 1));
    // Nack to the maximum: parked on the third refusal.
    c.nack(vec![e.id], NackAction::Retry, String::new())
        .await
        .unwrap();
    let (e, retries) = next(&mut c).await;
    assert_eq!((e.revision.0, retries), (2, 2));
    c.nack(vec![e.id], NackAction::Retry, "poison".into())
        .await
        .unwrap();
    c.ack(vec![seen[4].id]).await.unwrap();
    quiet(&mut c, Duration::from_millis(300)).await;
    let info = wait_for(&service, &k, |i| i.parked == 1 && i.checkpoint == Some(4)).await;
    assert_eq!(info.in_flight, 0);

    // Live: a new event arrives after the history, once.
    append(&store, "orders", 5, 6);
    let (e, _) = next(&mut c).await;
    assert_eq!(e.revision.0, 5);
    c.ack(vec![e.id]).await.unwrap();

    // Replay parked: the poison event comes back, the checkpoint does not move back.
    service
        .replay_parked(&Principal::Open, k.clone(), None)
        .await
        .unwrap();
    let (e, retries) = next(&mut c).await;
    assert_eq!((e.revision.0, retries), (2, 0));
    c.ack(vec![e.id]).await.unwrap();
    let info = wait_for(&service, &k, |i| i.parked == 0 && i.checkpoint == Some(5)).await;
    assert_eq!(info.status, "Live");
}

async fn wait_for(
    service: &Arc<Service>,
    k: &GroupKey,
    ok: impl Fn(&statestore::service::persistent::GroupInfo) -> bool,
) -> statestore::service::persistent::GroupInfo {
    let mut last = None;
    for _ in 0..100 {
        let info = service
            .group_info(&Principal::Open, k.clone())
            .await
            .unwrap();
        if ok(&info) {
            return info;
        }
        last = Some(info);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("group never reached the state; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_disconnects_hand_events_to_other_consumers() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    append(&store, "s", 0, 4);
    let (service, _stop) = start(&store).await;
    let k = key("s", "g");
    let s = GroupSettings {
        message_timeout_ms: Some(300),
        consumer_strategy: Some("DispatchToSingle".into()),
        ..settings()
    };
    service
        .create_group(&Principal::Open, k.clone(), s, Default::default())
        .await
        .unwrap();
    let mut a = service
        .consume(&Principal::Open, k.clone(), "a".into(), 1)
        .await
        .unwrap();
    // Buffer size 1: one event in flight, the next only after an ack or a timeout.
    let (first, _) = next(&mut a).await;
    assert_eq!(first.revision.0, 0);
    quiet(&mut a, Duration::from_millis(100)).await;
    // Not acked: after the timeout it comes again, retry count 1.
    let (again, retries) = next(&mut a).await;
    assert_eq!((again.revision.0, retries), (0, 1));
    let mut b = service
        .consume(&Principal::Open, k.clone(), "b".into(), 10)
        .await
        .unwrap();
    // a disconnects with revision 0 in flight: b gets it, then the rest.
    drop(a);
    let mut got = Vec::new();
    for _ in 0..4 {
        let (e, _) = next(&mut b).await;
        got.push(e.revision.0);
        b.ack(vec![e.id]).await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
    wait_for(&service, &k, |i| i.checkpoint == Some(3)).await;
}

/// KurrentDB users report checkpoints that skip unacked events and groups that restart from
/// 0. Here: an unacked event in the middle holds the checkpoint below it, and after a restart
/// the group resumes strictly after the checkpoint, redelivering only what was not acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_never_skips_unacked_events_and_resumes_after_restart() {
    let dir = tempdir();
    let k = key("s", "g");
    {
        let store = Arc::new(Store::open(dir.path(), config()).unwrap());
        append(&store, "s", 0, 10);
        let (service, _stop) = start(&store).await;
        service
            .create_group(&Principal::Open, k.clone(), settings(), Default::default())
            .await
            .unwrap();
        let mut c = service
            .consume(&Principal::Open, k.clone(), "c".into(), 100)
            .await
            .unwrap();
        let mut events = Vec::new();
        for _ in 0..10 {
            events.push(next(&mut c).await.0);
        }
        // Everything but revision 4.
        let ids = events
            .iter()
            .filter(|e| e.revision.0 != 4)
            .map(|e| e.id)
            .collect();
        c.ack(ids).await.unwrap();
        let info = wait_for(&service, &k, |i| i.checkpoint == Some(3)).await;
        assert_eq!(info.in_flight, 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let info = service
            .group_info(&Principal::Open, k.clone())
            .await
            .unwrap();
        assert_eq!(
            info.checkpoint,
            Some(3),
            "the checkpoint passed an unacked event"
        );
        drop(c);
        service.stop_groups().await;
    }
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    let (service, _stop) = start(&store).await;
    let mut c = service
        .consume(&Principal::Open, k.clone(), "c".into(), 100)
        .await
        .unwrap();
    // Strictly after the checkpoint (3): 4 (unacked) and the acked 5..9 again, never 0..3.
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next(&mut c).await.0.revision.0);
    }
    assert_eq!(got, vec![4, 5, 6, 7, 8, 9]);
    // The definition survived too: creating it again is refused.
    assert!(matches!(
        service
            .create_group(&Principal::Open, k.clone(), settings(), Default::default())
            .await,
        Err(Error::GroupExists { .. })
    ));
    // Delete: consumers are dropped, the group is gone.
    service
        .delete_group(&Principal::Open, k.clone())
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), c.rx.recv()).await {
        Ok(Some(Delivery::Dropped(Error::GroupNotFound { .. })) | None) => {}
        other => panic!("expected the consumer to be dropped, got {other:?}"),
    }
    assert!(matches!(
        service.group_info(&Principal::Open, k.clone()).await,
        Err(Error::GroupNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_groups_start_at_end_and_respect_max_subscribers_and_validation() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    append(&store, "a-1", 0, 3);
    let (service, _stop) = start(&store).await;
    let k = GroupKey {
        source: GroupSource::All,
        group: "g".into(),
    };
    // KurrentDB's validation: read batch below the history buffer, a known strategy.
    for bad in [
        GroupSettings {
            read_batch_size: Some(500),
            ..GroupSettings::default()
        },
        GroupSettings {
            consumer_strategy: Some("Nope".into()),
            ..GroupSettings::default()
        },
    ] {
        assert!(matches!(
            service
                .create_group(&Principal::Open, k.clone(), bad, Default::default())
                .await,
            Err(Error::InvalidArgument(_))
        ));
    }
    let s = GroupSettings {
        start_from: Some(StartFrom::End),
        max_subscriber_count: Some(1),
        ..GroupSettings::default()
    };
    service
        .create_group(&Principal::Open, k.clone(), s.clone(), Default::default())
        .await
        .unwrap();
    let info = service
        .group_info(&Principal::Open, k.clone())
        .await
        .unwrap();
    assert_eq!(
        info.settings.as_ref(),
        Some(&s),
        "settings are echoed as sent"
    );
    let mut c = service
        .consume(&Principal::Open, k.clone(), "c".into(), 10)
        .await
        .unwrap();
    assert!(matches!(
        service
            .consume(&Principal::Open, k.clone(), "d".into(), 10)
            .await,
        Err(Error::GroupFull { max: 1, .. })
    ));
    quiet(&mut c, Duration::from_millis(200)).await;
    append(&store, "b-1", 0, 1);
    let (e, _) = next(&mut c).await;
    assert_eq!(e.stream(), "b-1", "only events committed after creation");
}

/// Everything `c` receives until it is quiet for `wait`.
async fn drain(c: &mut GroupConsumer, wait: Duration) -> Vec<statestore::RecordedEvent> {
    let mut got = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(wait, c.rx.recv()).await {
        match d {
            Delivery::Event { event, .. } => got.push(event),
            Delivery::Dropped(e) => panic!("dropped: {e}"),
        }
    }
    got
}

fn all_key(group: &str) -> GroupKey {
    GroupKey {
        source: GroupSource::All,
        group: group.into(),
    }
}

async fn consumers(
    service: &Arc<Service>,
    k: &GroupKey,
    buffer: usize,
) -> (GroupConsumer, GroupConsumer) {
    let a = service
        .consume(&Principal::Open, k.clone(), "a".into(), buffer)
        .await
        .unwrap();
    let b = service
        .consume(&Principal::Open, k.clone(), "b".into(), buffer)
        .await
        .unwrap();
    (a, b)
}

/// KeyOrdered: at most one event in flight per stream, in stream order, whoever holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordered_keeps_one_event_in_flight_per_stream() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    for n in 0..4 {
        append(&store, "ko-a", n, n + 1);
        append(&store, "ko-b", 100 + n, 101 + n);
    }
    let (service, _stop) = start(&store).await;
    let k = all_key("ko");
    let s = GroupSettings {
        consumer_strategy: Some("KeyOrdered".into()),
        ..settings()
    };
    service
        .create_group(&Principal::Open, k.clone(), s, Default::default())
        .await
        .unwrap();
    let (mut a, mut b) = consumers(&service, &k, 10).await;
    let mut order: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut delivered = 0;
    while delivered < 8 {
        // Whatever is in flight now: exactly one per stream with events left, never two.
        let in_a = drain(&mut a, Duration::from_millis(150)).await;
        let in_b = drain(&mut b, Duration::from_millis(50)).await;
        let mut streams: Vec<&str> = in_a.iter().chain(&in_b).map(|e| e.stream()).collect();
        streams.sort_unstable();
        let before = streams.len();
        streams.dedup();
        assert_eq!(
            streams.len(),
            before,
            "two events of one stream in flight at once"
        );
        assert!(before > 0, "nothing delivered with {delivered} of 8 done");
        for (c, events) in [(&a, &in_a), (&b, &in_b)] {
            for e in events.iter() {
                order
                    .entry(e.stream().to_string())
                    .or_default()
                    .push(e.revision.0);
                delivered += 1;
            }
            c.ack(events.iter().map(|e| e.id).collect()).await.unwrap();
        }
    }
    assert_eq!(order["ko-a"], vec![0, 1, 2, 3], "stream order");
    assert_eq!(order["ko-b"], vec![0, 1, 2, 3], "stream order");
}

/// Pinned: every event of a stream goes to one consumer; DispatchToSingle: to the first
/// consumer while it has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_and_dispatch_to_single_choose_consumers() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    let (service, _stop) = start(&store).await;
    let pinned = all_key("pinned");
    let single = all_key("single");
    for (k, strategy) in [(&pinned, "Pinned"), (&single, "DispatchToSingle")] {
        let s = GroupSettings {
            consumer_strategy: Some(strategy.into()),
            start_from: Some(StartFrom::End),
            ..settings()
        };
        service
            .create_group(&Principal::Open, k.clone(), s, Default::default())
            .await
            .unwrap();
    }
    let (mut pa, mut pb) = consumers(&service, &pinned, 1000).await;
    let (mut sa, mut sb) = consumers(&service, &single, 1000).await;
    for round in 0..3 {
        for s in 0..20 {
            append(
                &store,
                &format!("pin-{s}"),
                round * 100 + s,
                round * 100 + s + 1,
            );
        }
    }
    let got_a = drain(&mut pa, Duration::from_millis(300)).await;
    let got_b = drain(&mut pb, Duration::from_millis(50)).await;
    assert_eq!(got_a.len() + got_b.len(), 60, "every event once");
    let of = |events: &[statestore::RecordedEvent]| {
        events
            .iter()
            .map(|e| e.stream().to_string())
            .collect::<std::collections::HashSet<_>>()
    };
    let (streams_a, streams_b) = (of(&got_a), of(&got_b));
    assert!(
        streams_a.is_disjoint(&streams_b),
        "a stream's events went to both consumers: {:?}",
        streams_a.intersection(&streams_b).collect::<Vec<_>>()
    );
    assert!(
        !streams_a.is_empty() && !streams_b.is_empty(),
        "20 streams over 2 consumers"
    );

    let to_a = drain(&mut sa, Duration::from_millis(300)).await;
    quiet(&mut sb, Duration::from_millis(50)).await;
    assert_eq!(
        to_a.len(),
        60,
        "DispatchToSingle: all to the first consumer while it has room"
    );
}

/// A checkpoint on events since removed (truncated) resumes at the next event that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_on_removed_events_resumes_at_the_next_event() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    append(&store, "t", 0, 10);
    let k = key("t", "g");
    {
        let (service, _stop) = start(&store).await;
        service
            .create_group(&Principal::Open, k.clone(), settings(), Default::default())
            .await
            .unwrap();
        let mut c = service
            .consume(&Principal::Open, k.clone(), "c".into(), 4)
            .await
            .unwrap();
        for want in 0..4 {
            let (e, _) = next(&mut c).await;
            assert_eq!(e.revision.0, want);
            c.ack(vec![e.id]).await.unwrap();
        }
        wait_for(&service, &k, |i| i.checkpoint == Some(3)).await;
        drop(c);
        service.stop_groups().await;
    }
    // Revisions 4..7 go (truncate before 8): the checkpoint (3) now points into a gap.
    let metadata = statestore::StreamMetadata {
        truncate_before: Some(statestore::Revision(8)),
        ..Default::default()
    };
    store
        .set_stream_metadata("t", ExpectedRevision::Any, metadata)
        .unwrap();
    let (service, _stop) = start(&store).await;
    let mut c = service
        .consume(&Principal::Open, k.clone(), "c".into(), 10)
        .await
        .unwrap();
    let got: Vec<u64> = drain(&mut c, Duration::from_millis(300))
        .await
        .iter()
        .map(|e| e.revision.0)
        .collect();
    assert_eq!(got, vec![8, 9]);
}

/// Events parked together keep their park order in the parked stream: replaying the oldest N
/// replays those N, and the rest follow in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_keep_their_order_and_replay_the_oldest_first() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    append(&store, "p", 0, 10);
    let (service, _stop) = start(&store).await;
    let k = key("p", "g");
    service
        .create_group(&Principal::Open, k.clone(), settings(), Default::default())
        .await
        .unwrap();
    let mut c = service
        .consume(&Principal::Open, k.clone(), "c".into(), 10)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for want in 0..10 {
        let (e, _) = next(&mut c).await;
        assert_eq!(e.revision.0, want);
        ids.push(e.id);
    }
    c.nack(ids, NackAction::Park, "poison".into())
        .await
        .unwrap();
    wait_for(&service, &k, |i| i.parked == 10).await;
    service
        .replay_parked(&Principal::Open, k.clone(), Some(2))
        .await
        .unwrap();
    let first = drain(&mut c, Duration::from_millis(300)).await;
    let revisions: Vec<u64> = first.iter().map(|e| e.revision.0).collect();
    assert_eq!(revisions, vec![0, 1], "the oldest two parked");
    c.ack(first.iter().map(|e| e.id).collect()).await.unwrap();
    wait_for(&service, &k, |i| {
        i.status != "ReplayingParkedMessages" && i.parked == 8
    })
    .await;
    service
        .replay_parked(&Principal::Open, k.clone(), None)
        .await
        .unwrap();
    let rest: Vec<u64> = drain(&mut c, Duration::from_millis(300))
        .await
        .iter()
        .map(|e| e.revision.0)
        .collect();
    assert_eq!(rest, (2..10).collect::<Vec<_>>(), "the rest, in park order");
}

/// A consumer that disconnects with an event in flight counts as a retry: an event that
/// kills every consumer it reaches is parked at the maximum, not redelivered forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_count_as_retries_and_park_a_poison_event() {
    let dir = tempdir();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    append(&store, "d", 0, 2);
    let (service, _stop) = start(&store).await;
    let k = key("d", "g");
    let s = GroupSettings {
        max_retry_count: Some(2),
        ..settings()
    };
    service
        .create_group(&Principal::Open, k.clone(), s, Default::default())
        .await
        .unwrap();
    for want_retries in 0..=2 {
        let mut c = service
            .consume(&Principal::Open, k.clone(), "c".into(), 1)
            .await
            .unwrap();
        let (e, retries) = next(&mut c).await;
        assert_eq!((e.revision.0, retries), (0, want_retries));
        drop(c);
    }
    let mut c = service
        .consume(&Principal::Open, k.clone(), "c".into(), 1)
        .await
        .unwrap();
    let (e, retries) = next(&mut c).await;
    assert_eq!((e.revision.0, retries), (1, 0), "event 0 is parked");
    c.ack(vec![e.id]).await.unwrap();
    wait_for(&service, &k, |i| i.parked == 1 && i.checkpoint == Some(1)).await;
}
