//! Accepted connections: the accept loop (a cap on connections, backoff when the process runs
//! out of file descriptors) and the connection wrapper (immediate ACKs, a deadline for the
//! client's first bytes, the connection's place under the cap).
//!
//! Immediate ACKs: many gRPC clients (the official KurrentDB Rust client among them) leave
//! Nagle's algorithm on. A request written in two pieces (HTTP/2 headers, then data) then holds
//! its second piece until the first is acknowledged, while the server's kernel delays that ACK
//! by up to 40 ms waiting for a reply to carry it: every call took 44 ms. Re-arming
//! `TCP_QUICKACK` after each read makes the kernel acknowledge at once. (The flag is not
//! sticky: the kernel may go back to delayed ACKs, so it is set again after every read.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes a client must send before the handshake deadline: the HTTP/2 preface (24) and the
/// header of its first frame (9). A TLS ClientHello is longer.
const HANDSHAKE_BYTES: u64 = 33;
/// How often a refusal (over the cap) or an accept failure is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The longest pause after an accept failure.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The accept loop's settings.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    pub connections_max: usize,
    pub handshake_timeout: Duration,
    pub tcp_keepalive: Duration,
}

/// Counts the accept loop keeps.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub refused_over_cap: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// Accepts connections on `listener` until `stop` turns true, and hands them to the server
/// through the returned channel.
pub fn accept_loop(
    listener: TcpListener,
    config: AcceptConfig,
    stats: Arc<ConnStats>,
    mut stop: watch::Receiver<bool>,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let cap = Arc::new(Semaphore::new(config.connections_max));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        let mut last_refusal_log: Option<Instant> = None;
        let mut last_error_log: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if due(&mut last_error_log) {
                        tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64,
                            "cannot accept connections (out of file descriptors?); pausing");
                    }
                    // EMFILE and its kind stay until a descriptor is freed: retrying at once
                    // would spin on a core.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&cap).try_acquire_owned() else {
                stats.refused_over_cap.fetch_add(1, Ordering::Relaxed);
                if due(&mut last_refusal_log) {
                    tracing::warn!(%peer, connections_max = config.connections_max,
                        "refusing a connection: the server holds its maximum number of connections");
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let sock = socket2::SockRef::from(&stream);
            let _ = sock
                .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(config.tcp_keepalive));
            let conn = Conn::new(stream, permit, Arc::clone(&stats), config.handshake_timeout);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    rx
}

fn due(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|t| t.elapsed() < LOG_INTERVAL) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// An accepted connection.
pub struct Conn {
    stream: TcpStream,
    /// Until the client has sent its first bytes: when it must have.
    handshake: Option<Pin<Box<Sleep>>>,
    received: u64,
    stats: Arc<ConnStats>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        stats: Arc<ConnStats>,
        handshake_timeout: Duration,
    ) -> Conn {
        rearm(&stream);
        stats.open.fetch_add(1, Ordering::Relaxed);
        Conn {
            stream,
            handshake: Some(Box::pin(tokio::time::sleep(handshake_timeout))),
            received: 0,
            stats,
            _permit: permit,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn rearm(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // Best effort: a failure leaves the kernel's default (delayed ACKs) in place.
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                rearm(&self.stream);
                self.received += n;
                if self.received >= HANDSHAKE_BYTES {
                    self.handshake = None;
                }
            }
            return polled;
        }
        if polled.is_pending()
            && let Some(deadline) = self.handshake.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent no handshake before the deadline",
            )));
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
