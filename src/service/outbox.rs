//! A channel bounded in bytes, per receiver and across the server. Every item is sent with the
//! number of bytes it will cost once converted for the wire; the sender waits until that many
//! bytes of the receiver's own budget and of the server-wide budget are free, and the bytes are
//! given back when the receiver takes the item. A receiver that does not read therefore holds
//! at most its own budget, and all of them together at most the server-wide budget, whatever
//! the number of receivers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;

/// The bytes an item holds in both budgets, given back when it is dropped.
struct Held {
    _own: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// The sending half. Cloning is not offered: one task fills one outbox.
pub struct Outbox<T> {
    tx: mpsc::UnboundedSender<(T, Option<Held>)>,
    own: Arc<Semaphore>,
    total: Arc<Semaphore>,
    own_bytes: u32,
}

/// The receiver went away.
#[derive(Debug)]
pub struct Closed;

/// The receiving half: a stream of items.
pub struct Inbox<T> {
    rx: mpsc::UnboundedReceiver<(T, Option<Held>)>,
}

/// An outbox of `own_bytes` that also draws on `total` (the server-wide budget).
pub fn outbox<T>(own_bytes: u32, total: &Arc<Semaphore>) -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let outbox = Outbox {
        tx,
        own: Arc::new(Semaphore::new(own_bytes as usize)),
        total: Arc::clone(total),
        own_bytes,
    };
    (outbox, Inbox { rx })
}

impl<T> Outbox<T> {
    /// Sends `item`, waiting for `bytes` of room. An item larger than the whole budget waits
    /// for all of it, so it is alone in the outbox.
    pub async fn send(&self, item: T, bytes: usize) -> Result<(), Closed> {
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.own_bytes);
        let own = tokio::select! {
            p = Arc::clone(&self.own).acquire_many_owned(n) => p.map_err(|_| Closed)?,
            _ = self.tx.closed() => return Err(Closed),
        };
        let total = tokio::select! {
            p = Arc::clone(&self.total).acquire_many_owned(n) => p.map_err(|_| Closed)?,
            _ = self.tx.closed() => return Err(Closed),
        };
        let held = Held {
            _own: own,
            _total: total,
        };
        self.tx.send((item, Some(held))).map_err(|_| Closed)
    }

    /// Sends `item` without waiting and without counting it: for the last message of a
    /// stream (its end or its error), which must not wait behind a full budget.
    pub fn send_last(&self, item: T) -> Result<(), Closed> {
        self.tx.send((item, None)).map_err(|_| Closed)
    }

    /// Resolves when the receiver has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl<T> Stream for Inbox<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // The bytes are given back as the item leaves the outbox.
        self.rx.poll_recv(cx).map(|o| o.map(|(item, _held)| item))
    }
}

#[cfg(test)]
mod test;
