//! The network layer: the engine behind a tonic gRPC server. This is the only part of the
//! library that knows tokio, tonic and protobuf; it translates requests into calls on the
//! synchronous [`Store`] (on the blocking thread pool) and engine errors into gRPC statuses
//! (in [`status`], one place).
//!
//! - [`service`]: the `statestore.v1.EventStore` service (append, reads, stream info).
//! - [`live`]: one publisher task that decodes each new commit once and fans it out to every
//!   live subscriber through a bounded broadcast ring.
//! - [`subscribe`]: catch-up subscriptions: history from disk, then live, and back to disk when a
//!   subscriber falls behind the ring. Shared by both wires through its `Feed` trait.
//! - [`kurrent`]: the KurrentDB (EventStoreDB) client protocol, on the same port, translating
//!   onto the same store.

mod convert;
pub mod kurrent;
mod live;
mod quickack;
mod service;
pub mod status;
mod subscribe;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Store;

/// The generated protobuf and gRPC code for `proto/statestore/v1/statestore.proto`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("statestore.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("statestore_descriptor");
}

/// Limits and buffer sizes of the network edge. `ServerConfig::default()` is what production
/// should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest request or response message, in bytes. A larger request is refused with
    /// RESOURCE_EXHAUSTED before it reaches the engine; read pages are cut below this.
    pub message_bytes_max: usize,
    /// Concurrent HTTP/2 streams (calls) per client connection.
    pub concurrent_streams_max: u32,
    /// Events per page of ReadStream, ReadAll and subscription catch-up.
    pub read_page_events: u64,
    /// Batches the live ring holds. A subscriber more than this many commit batches behind the
    /// newest falls back to reading from disk. Memory held is at most this many batches of at
    /// most `live_batch_events` events each.
    pub live_ring_batches: usize,
    /// Most events the publisher decodes into one live batch.
    pub live_batch_events: u64,
    /// Messages buffered per subscriber between its task and its connection.
    pub subscriber_buffer: usize,
    /// Checkpoint interval (scanned events) of filtered subscriptions that ask for 0.
    pub checkpoint_interval: u64,
    /// The `host:port` the KurrentDB adapter's gossip advertises. `None`: the listening
    /// address (`localhost` for a wildcard one).
    pub advertise: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            // The engine's largest append (16 MiB) plus framing headroom.
            message_bytes_max: 20 << 20,
            concurrent_streams_max: 1024,
            read_page_events: 1000,
            live_ring_batches: 256,
            live_batch_events: 1000,
            subscriber_buffer: 16,
            checkpoint_interval: 1000,
            advertise: None,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self, store: &Store) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::InvalidConfig(what.to_string()));
        if self.message_bytes_max < 64 << 10 {
            return bad("message_bytes_max must be at least 64 KiB");
        }
        if self.concurrent_streams_max == 0 {
            return bad("concurrent_streams_max must be at least 1");
        }
        if self.read_page_events == 0 || self.read_page_events > store.config().read_count_max {
            return bad("read_page_events must be between 1 and the store's read_count_max");
        }
        if self.live_ring_batches == 0 || self.subscriber_buffer == 0 {
            return bad("live_ring_batches and subscriber_buffer must be at least 1");
        }
        if self.live_batch_events == 0 || self.live_batch_events > store.config().read_count_max {
            return bad("live_batch_events must be between 1 and the store's read_count_max");
        }
        if self.checkpoint_interval == 0 {
            return bad("checkpoint_interval must be at least 1");
        }
        if let Some(a) = &self.advertise {
            parse_advertise(a).map_err(crate::Error::InvalidConfig)?;
        }
        Ok(())
    }
}

/// Splits an advertised `host:port` (the host may be a name, an IPv4 address, or a bracketed
/// IPv6 address).
pub fn parse_advertise(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("advertised address '{text}' is not HOST:PORT");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// What gossip advertises: the configured address, or the one listened on.
fn advertised(config: &ServerConfig, local: Option<SocketAddr>) -> kurrent::KurrentConfig {
    let (advertise_host, advertise_port) = config
        .advertise
        .as_deref()
        .and_then(|a| parse_advertise(a).ok())
        .unwrap_or_else(|| match local {
            Some(addr) if addr.ip().is_unspecified() => ("localhost".to_string(), addr.port()),
            Some(addr) => (addr.ip().to_string(), addr.port()),
            None => ("localhost".to_string(), 2113),
        });
    kurrent::KurrentConfig {
        advertise_host,
        advertise_port,
    }
}

/// TCP keepalive on client connections, so dead peers are noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// HTTP/2 flow-control window per call.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
/// HTTP/2 flow-control window per connection.
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// State shared by every call.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub config: ServerConfig,
    pub live: live::Live,
    /// Turns true when the server begins shutting down; subscriptions end on it.
    pub shutdown: watch::Receiver<bool>,
}

/// Serves the native API, gRPC health and reflection on `listener` until `shutdown` resolves.
/// Then it stops accepting, ends subscriptions with UNAVAILABLE, lets in-flight calls finish
/// (for at most `drain`), and returns. The caller closes the store.
pub async fn serve(
    store: Arc<Store>,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    config.validate(&store)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let live = live::Live::start(
        Arc::clone(&store),
        config.live_ring_batches,
        config.live_batch_events,
        stop_rx.clone(),
    );
    let shared = Arc::new(Shared {
        store,
        config: config.clone(),
        live,
        shutdown: stop_rx,
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<proto::event_store_server::EventStoreServer<service::EventStoreService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let event_store = proto::event_store_server::EventStoreServer::new(
        service::EventStoreService::new(Arc::clone(&shared)),
    )
    .max_decoding_message_size(config.message_bytes_max)
    .max_encoding_message_size(config.message_bytes_max);

    let local = listener.local_addr().ok();
    let kurrent = kurrent::services(&shared, &advertised(&config, local));
    // The builder's TCP settings apply only to sockets it binds itself; set them here. Without
    // TCP_NODELAY, small responses wait on the peer's delayed ACK (40 ms stalls).
    let incoming = tokio_stream::StreamExt::map(
        tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE)),
        |accepted| accepted.map(quickack::QuickAck::new),
    );
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new calls, ending subscriptions, finishing appends");
        let _ = stop_tx.send(true);
        let _ = drained_tx.send(());
    };
    let limit = config.message_bytes_max;
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.concurrent_streams_max))
        // Flow-control windows wide enough that a batch append is not held back waiting for a
        // window update.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .layer(tower::util::MapResponseLayer::new(
            move |response: http::Response<tonic::body::Body>| {
                status::rewrite_too_large(limit, response)
            },
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(event_store)
        .add_service(kurrent.streams)
        .add_service(kurrent.gossip)
        .add_service(kurrent.features)
        .add_service(kurrent.persistent)
        .serve_with_incoming_shutdown(incoming, signal);
    if let Some(addr) = local {
        tracing::info!(listen = %addr, "serving gRPC");
    }
    tokio::pin!(server);
    // Graceful shutdown waits for every connection to finish; bound that wait.
    let result = tokio::select! {
        r = &mut server => r,
        _ = async {
            let _ = drained_rx.await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(drain_ms = drain.as_millis() as u64, "connections still open after the drain period; closing them");
            Ok(())
        }
    };
    Ok(result?)
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] crate::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server reflection: {0}")]
    Reflection(String),
}

/// Binds `addr` (use port 0 for any free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
