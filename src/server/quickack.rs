//! Immediate ACKs on client connections.
//!
//! Many gRPC clients (the official KurrentDB Rust client among them) leave Nagle's algorithm
//! on. A request written in two pieces (HTTP/2 headers, then data) then holds its second piece
//! until the first is acknowledged, while the server's kernel delays that ACK by up to 40 ms
//! waiting for a reply to carry it: every call took 44 ms. Re-arming `TCP_QUICKACK` after each
//! read makes the kernel acknowledge at once. (The flag is not sticky: the kernel may go back
//! to delayed ACKs, so it is set again after every read; one `setsockopt` per read, not per
//! event.) On systems without the option this wrapper only forwards.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection whose reads re-arm immediate ACKs.
pub struct QuickAck(TcpStream);

impl QuickAck {
    pub fn new(stream: TcpStream) -> QuickAck {
        rearm(&stream);
        QuickAck(stream)
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

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            rearm(&self.0);
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connected for QuickAck {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}
