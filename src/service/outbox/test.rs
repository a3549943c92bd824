use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use super::outbox;

#[tokio::test]
async fn a_full_outbox_waits_until_the_receiver_takes_an_item() {
    let total = Arc::new(Semaphore::new(1 << 20));
    let (tx, mut rx) = outbox::<u32>(100, &total);
    tx.send(1, 60).await.expect("room for the first");
    // 60 + 60 is over the 100-byte budget: the second waits.
    let second = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 60)).await;
    assert!(second.is_err(), "the second item waited for room");
    assert_eq!(rx.next().await, Some(1));
    tx.send(2, 60).await.expect("room once the first was taken");
    assert_eq!(rx.next().await, Some(2));
    assert_eq!(total.available_permits(), 1 << 20, "every byte given back");
}

#[tokio::test]
async fn the_server_wide_budget_bounds_every_outbox_together() {
    let total = Arc::new(Semaphore::new(100));
    let (a, _ra) = outbox::<u32>(100, &total);
    let (b, mut rb) = outbox::<u32>(100, &total);
    a.send(1, 100)
        .await
        .expect("a takes the whole server budget");
    let blocked = tokio::time::timeout(Duration::from_millis(50), b.send(2, 10)).await;
    assert!(blocked.is_err(), "b waits for the server-wide budget");
    drop(_ra);
    drop(a);
    // a's receiver is gone and its item dropped: the bytes come back.
    b.send(2, 10).await.expect("room after a's item is dropped");
    assert_eq!(rb.next().await, Some(2));
}

#[tokio::test]
async fn an_item_larger_than_the_budget_is_sent_alone() {
    let total = Arc::new(Semaphore::new(1000));
    let (tx, mut rx) = outbox::<u32>(100, &total);
    tx.send(1, 5000)
        .await
        .expect("a large item takes the whole budget");
    let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 1)).await;
    assert!(blocked.is_err());
    assert_eq!(rx.next().await, Some(1));
}

#[tokio::test]
async fn a_send_to_a_dropped_receiver_fails_even_while_waiting() {
    let total = Arc::new(Semaphore::new(100));
    let (tx, rx) = outbox::<u32>(10, &total);
    tx.send(1, 10).await.expect("first");
    let waiting = tokio::spawn(async move { tx.send(2, 10).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(rx);
    let result = waiting.await.expect("task");
    assert!(
        result.is_err(),
        "the waiting send ends when the receiver goes"
    );
}
