use std::time::Duration;

use tokio_stream::StreamExt;

use super::{Closed, ServerBudget, outbox};

fn budget(total: usize) -> ServerBudget {
    ServerBudget::new(total, Duration::from_millis(100))
}

#[tokio::test]
async fn a_full_outbox_waits_until_the_receiver_asks_for_more() {
    let server = budget(1 << 20);
    let (tx, mut rx) = outbox::<u32>(100, &server);
    tx.send(1, 60).await.expect("room for the first");
    // 60 + 60 is over the 100-byte budget: the second waits.
    let second = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 60)).await;
    assert!(second.is_err(), "the second item waited for room");
    assert_eq!(rx.next().await, Some(1));
    // The first is still "in transport" until the receiver asks again.
    assert_eq!(server.available(), (1 << 20) - 60);
    let again = tokio::spawn(async move {
        tx.send(2, 60).await.expect("room once the first was sent");
        tx
    });
    assert_eq!(rx.next().await, Some(2));
    let _tx = again.await.expect("task");
    let _ = tokio::time::timeout(Duration::from_millis(10), rx.next()).await;
    assert_eq!(server.available(), 1 << 20, "every byte given back");
}

#[tokio::test]
async fn the_server_wide_budget_bounds_every_outbox_together() {
    let server = ServerBudget::new(100, Duration::from_secs(60));
    let (a, ra) = outbox::<u32>(100, &server);
    let (b, mut rb) = outbox::<u32>(100, &server);
    a.send(1, 100)
        .await
        .expect("a takes the whole server budget");
    let blocked = tokio::time::timeout(Duration::from_millis(50), b.send(2, 10)).await;
    assert!(blocked.is_err(), "b waits for the server-wide budget");
    drop(ra);
    // a's receiver is gone and its item dropped: the bytes come back.
    b.send(2, 10).await.expect("room after a's receiver left");
    assert_eq!(rb.next().await, Some(2));
}

#[tokio::test]
async fn an_item_larger_than_the_budget_is_sent_alone() {
    let server = budget(1000);
    let (tx, mut rx) = outbox::<u32>(100, &server);
    tx.send(1, 5000)
        .await
        .expect("a large item takes the whole budget");
    let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 1)).await;
    assert!(blocked.is_err());
    assert_eq!(rx.next().await, Some(1));
}

#[tokio::test]
async fn a_send_to_a_dropped_receiver_fails_even_while_waiting() {
    let server = ServerBudget::new(100, Duration::from_secs(60));
    let (tx, rx) = outbox::<u32>(10, &server);
    tx.send(1, 10).await.expect("first");
    let waiting = tokio::spawn(async move { tx.send(2, 10).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(rx);
    let result = waiting.await.expect("task");
    assert_eq!(
        result,
        Err(Closed::Gone),
        "the waiting send ends when the receiver goes"
    );
}

#[tokio::test]
async fn a_stalled_receiver_gives_its_bytes_back_when_the_server_budget_is_short() {
    let server = budget(1000);
    // A receiver that never reads, holding most of the server's budget.
    let (stalled, _never_read) = outbox::<u32>(900, &server);
    stalled.send(1, 900).await.expect("first");
    let result = stalled.send(2, 10).await;
    assert_eq!(result, Err(Closed::Stalled));
    assert_eq!(server.available(), 1000, "its bytes are back");
    // Another outbox is served.
    let (tx, mut rx) = outbox::<u32>(900, &server);
    tx.send(3, 900).await.expect("room again");
    assert_eq!(rx.next().await, Some(3));
}

#[tokio::test]
async fn a_slow_receiver_is_left_alone_while_the_server_budget_is_ample() {
    let server = budget(1 << 20);
    let (tx, mut rx) = outbox::<u32>(100, &server);
    tx.send(1, 100).await.expect("first");
    // Waits past several stall timeouts: no pressure, so no eviction.
    let waiting = tokio::spawn(async move { tx.send(2, 100).await });
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        !waiting.is_finished(),
        "still waiting for its slow receiver"
    );
    assert_eq!(rx.next().await, Some(1));
    assert_eq!(rx.next().await, Some(2));
    assert_eq!(waiting.await.expect("task"), Ok(()));
}

#[tokio::test]
async fn a_sender_short_of_budget_revokes_the_stalled_outboxes_of_others() {
    let server = budget(1000);
    // A receiver that never reads holds nearly all of the server's budget, with an item
    // queued behind the one "in transport".
    let (stalled, mut never_read) = outbox::<std::sync::Arc<()>>(1000, &server);
    let held = std::sync::Arc::new(());
    stalled.send(held.clone(), 100).await.expect("first");
    let _in_transport = never_read.next().await;
    stalled.send(held.clone(), 850).await.expect("second");
    assert_eq!(server.available(), 50);
    // A healthy receiver's sender needs 500: it waits for the stall timeout, then the stalled
    // outbox is revoked and its queued item dropped.
    let (tx, mut rx) = outbox::<std::sync::Arc<()>>(1000, &server);
    tx.send(std::sync::Arc::new(()), 500)
        .await
        .expect("served once the stalled outbox is revoked");
    assert_eq!(
        std::sync::Arc::strong_count(&held),
        2,
        "the queued item was dropped"
    );
    assert_eq!(
        stalled.send(held.clone(), 1).await,
        Err(Closed::Stalled),
        "the stalled sender learns it ended"
    );
    stalled
        .send_last(held.clone())
        .expect("the reason still reaches the receiver");
    drop(stalled);
    assert!(never_read.next().await.is_some(), "the last message");
    assert_eq!(never_read.next().await, None);
    assert!(rx.next().await.is_some());
}

#[tokio::test]
async fn a_receiver_that_keeps_taking_is_not_stalled() {
    let server = budget(1000);
    let (tx, mut rx) = outbox::<u32>(950, &server);
    let sender = tokio::spawn(async move {
        for i in 0..20 {
            tx.send(i, 950).await?;
        }
        Ok::<_, Closed>(())
    });
    // Takes one item every 40 ms, less than the 100 ms stall timeout, under pressure all along.
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(rx.next().await, Some(i));
    }
    assert_eq!(sender.await.expect("task"), Ok(()));
}
