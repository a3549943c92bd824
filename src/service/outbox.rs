//! A channel bounded in bytes, per receiver and across the server. Every item is sent with the
//! number of bytes it will cost once converted for the wire; the sender waits until that many
//! bytes of the receiver's own budget and of the server-wide budget are free. The bytes of an
//! item are given back when the receiver asks for the next one: the transport asks only once
//! it has room to send, so the item it is still sending stays counted.
//!
//! A receiver that does not read therefore holds at most its own budget, and all of them
//! together at most the server-wide budget. When that budget runs short, every outbox whose
//! receiver has taken nothing for the stall timeout while items wait for it is revoked: its
//! queued items are dropped, its bytes go back to the others, and its sender ends with
//! [`Closed::Stalled`]. A sender that finds the budget short looks for such outboxes itself,
//! so a client that never reads cannot keep a healthy one waiting longer than the stall
//! timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tokio_stream::Stream;

/// The bytes buffered for every receiver together, and how long a receiver may take nothing
/// before its outbox counts as stalled.
#[derive(Clone)]
pub struct ServerBudget {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    total: Semaphore,
    total_bytes: usize,
    stall_timeout: Duration,
    /// Every outbox, so a sender short of budget can find the stalled ones.
    outboxes: Mutex<Registry>,
}

struct Registry {
    entries: Vec<Weak<dyn Revocable>>,
    /// When the registry was last scanned for stalled outboxes: scans are rate-limited.
    scanned: Instant,
}

impl ServerBudget {
    pub fn new(total_bytes: usize, stall_timeout: Duration) -> ServerBudget {
        ServerBudget {
            inner: Arc::new(ServerInner {
                total: Semaphore::new(total_bytes),
                total_bytes,
                stall_timeout,
                outboxes: Mutex::new(Registry {
                    entries: Vec::new(),
                    scanned: Instant::now(),
                }),
            }),
        }
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.inner.total.available_permits()
    }

    fn under_pressure(&self) -> bool {
        self.available() < self.inner.total_bytes / PRESSURE_FRACTION
    }

    /// How often a waiting sender looks again.
    fn tick(&self) -> Duration {
        (self.inner.stall_timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn register<T: Send + 'static>(&self, shared: &Arc<Shared<T>>) {
        let mut registry = self.inner.outboxes.lock();
        if registry.entries.len() >= 64 && registry.entries.len().is_power_of_two() {
            registry.entries.retain(|w| w.strong_count() > 0);
        }
        let shared: Arc<dyn Revocable> = shared.clone();
        registry.entries.push(Arc::downgrade(&shared));
    }

    /// Revokes every stalled outbox, at most once a tick across the server. Returns how many.
    fn evict_stalled(&self) -> usize {
        let now = Instant::now();
        let stalled: Vec<Arc<dyn Revocable>> = {
            let mut registry = self.inner.outboxes.lock();
            if now.duration_since(registry.scanned) < self.tick() {
                return 0;
            }
            registry.scanned = now;
            registry.entries.retain(|w| w.strong_count() > 0);
            registry
                .entries
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|s| s.is_stalled(now, self.inner.stall_timeout))
                .collect()
        };
        stalled.iter().for_each(|s| s.revoke());
        stalled.len()
    }
}

/// The server-wide budget counts as short when less than this fraction of it is free.
const PRESSURE_FRACTION: usize = 8;

/// An outbox as the registry sees it.
trait Revocable: Send + Sync {
    fn is_stalled(&self, now: Instant, timeout: Duration) -> bool;
    fn revoke(&self);
}

/// What the two halves of an outbox share.
struct Shared<T> {
    state: Mutex<State<T>>,
    own: Semaphore,
    server: ServerBudget,
    /// Woken when the receiver goes away or the outbox is revoked.
    ended: Notify,
}

struct State<T> {
    queue: VecDeque<(T, usize)>,
    /// Bytes of the items queued or in transport and not yet given back.
    outstanding: usize,
    /// When the receiver last took an item (or the outbox was made).
    last_taken: Instant,
    /// The outbox gave everything back and dropped its queue: nothing is given back again.
    revoked: bool,
    receiver_gone: bool,
    sender_gone: bool,
    waker: Option<Waker>,
}

impl<T> Shared<T> {
    fn give_back(&self, n: usize) {
        let mut state = self.state.lock();
        if state.revoked || n == 0 {
            return;
        }
        state.outstanding -= n;
        drop(state);
        self.own.add_permits(n);
        self.server.inner.total.add_permits(n);
    }
}

impl<T: Send> Revocable for Shared<T> {
    fn is_stalled(&self, now: Instant, timeout: Duration) -> bool {
        let state = self.state.lock();
        !state.revoked
            && !state.receiver_gone
            && state.outstanding > 0
            && now.duration_since(state.last_taken) >= timeout
    }

    fn revoke(&self) {
        let dropped = {
            let mut state = self.state.lock();
            if state.revoked {
                return;
            }
            state.revoked = true;
            self.server.inner.total.add_permits(state.outstanding);
            state.outstanding = 0;
            std::mem::take(&mut state.queue)
        };
        // The items are dropped outside the lock.
        drop(dropped);
        self.ended.notify_waiters();
    }
}

/// The sending half. Cloning is not offered: one task fills one outbox.
pub struct Outbox<T> {
    shared: Arc<Shared<T>>,
    own_bytes: u32,
}

/// Why a send failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The receiver went away.
    Gone,
    /// The receiver took nothing for the stall timeout while the server-wide budget was short;
    /// the outbox gave its bytes back and dropped what it held.
    Stalled,
}

/// The receiving half: a stream of items.
pub struct Inbox<T> {
    shared: Arc<Shared<T>>,
    /// The bytes of the item handed out last, given back at the next poll.
    in_transport: usize,
}

/// An outbox of `own_bytes` that also draws on the server-wide budget.
pub fn outbox<T: Send + 'static>(own_bytes: u32, server: &ServerBudget) -> (Outbox<T>, Inbox<T>) {
    // At least one byte, and never more than the server holds, so one item always fits both.
    let server_bytes = u32::try_from(server.inner.total_bytes).unwrap_or(u32::MAX);
    let own_bytes = own_bytes.min(server_bytes).max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            outstanding: 0,
            last_taken: Instant::now(),
            revoked: false,
            receiver_gone: false,
            sender_gone: false,
            waker: None,
        }),
        own: Semaphore::new(own_bytes as usize),
        server: server.clone(),
        ended: Notify::new(),
    });
    server.register(&shared);
    (
        Outbox {
            shared: Arc::clone(&shared),
            own_bytes,
        },
        Inbox {
            shared,
            in_transport: 0,
        },
    )
}

impl<T: Send + 'static> Outbox<T> {
    /// Sends `item`, waiting for `bytes` of room. An item larger than the whole budget waits
    /// for all of it, so it is alone in the outbox.
    pub async fn send(&self, item: T, bytes: usize) -> Result<(), Closed> {
        let n = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.own_bytes);
        self.acquire(&self.shared.own, n).await?;
        if let Err(e) = self.acquire(&self.shared.server.inner.total, n).await {
            self.shared.own.add_permits(n as usize);
            return Err(e);
        }
        let mut state = self.shared.state.lock();
        let refused = if state.receiver_gone {
            Some(Closed::Gone)
        } else if state.revoked {
            Some(Closed::Stalled)
        } else {
            None
        };
        if let Some(e) = refused {
            drop(state);
            self.shared.server.inner.total.add_permits(n as usize);
            return Err(e);
        }
        state.outstanding += n as usize;
        state.queue.push_back((item, n as usize));
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Waits for `n` permits of `semaphore` (forgotten: the account counts them instead),
    /// ending early when the receiver goes or the outbox is revoked. While the server-wide
    /// budget is short, it revokes the stalled outboxes, its own included.
    async fn acquire(&self, semaphore: &Semaphore, n: u32) -> Result<(), Closed> {
        let server = &self.shared.server;
        loop {
            let ended = self.shared.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            self.ended()?;
            if let Ok(permit) = semaphore.try_acquire_many(n) {
                permit.forget();
                return Ok(());
            }
            if server.under_pressure() {
                server.evict_stalled();
                self.ended()?;
            }
            tokio::select! {
                p = semaphore.acquire_many(n) => match p {
                    Ok(permit) => {
                        permit.forget();
                        return Ok(());
                    }
                    Err(_) => return Err(Closed::Gone),
                },
                _ = &mut ended => {}
                _ = tokio::time::sleep(server.tick()) => {}
            }
        }
    }

    /// Why the outbox takes nothing more, if it does not.
    fn ended(&self) -> Result<(), Closed> {
        let state = self.shared.state.lock();
        if state.receiver_gone {
            Err(Closed::Gone)
        } else if state.revoked {
            Err(Closed::Stalled)
        } else {
            Ok(())
        }
    }

    /// Sends `item` without waiting and without counting it: for the last message of a
    /// stream (its end or its error), which must not wait behind a full budget. Sent even to
    /// a revoked outbox, so its receiver learns why it ended.
    pub fn send_last(&self, item: T) -> Result<(), Closed> {
        let mut state = self.shared.state.lock();
        if state.receiver_gone {
            return Err(Closed::Gone);
        }
        state.queue.push_back((item, 0));
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Bytes of the receiver's own budget free now.
    pub fn room(&self) -> usize {
        self.shared.own.available_permits()
    }

    /// Resolves when the receiver has gone away.
    pub async fn closed(&self) {
        loop {
            let ended = self.shared.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.shared.state.lock().receiver_gone {
                return;
            }
            ended.await;
        }
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.sender_gone = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut state = self.shared.state.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.queue)
        };
        drop(dropped);
        // Whatever was queued or in transport is gone: give all of it back.
        let outstanding = self.shared.state.lock().outstanding;
        self.shared.give_back(outstanding);
        self.shared.ended.notify_waiters();
    }
}

impl<T> Stream for Inbox<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Asked for the next item: the transport has sent the last one.
        let sent = std::mem::replace(&mut self.in_transport, 0);
        self.shared.give_back(sent);
        let mut state = self.shared.state.lock();
        match state.queue.pop_front() {
            Some((item, n)) => {
                state.last_taken = Instant::now();
                drop(state);
                self.in_transport = n;
                Poll::Ready(Some(item))
            }
            None if state.sender_gone => Poll::Ready(None),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod test;
