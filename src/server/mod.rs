//! The network layer: the service layer behind a tonic gRPC server. This is the only part of
//! the library that knows tonic and protobuf.
//!
//! Every service here only converts: requests into calls on [`crate::service::Service`] (which
//! authenticates, authorizes, checks names and limits, and calls the engine), and its answers
//! and errors into messages and statuses. None calls the store directly.
//!
//! - [`service`]: the `statestore.v1.EventStore` service (append, reads, stream info).
//! - [`persistent`]: the `statestore.v1.PersistentSubscriptions` service (groups of
//!   competing consumers, with acks, retries and parking).
//! - [`users`]: the `statestore.v1.Users` service (user management, admins only).
//! - [`kurrent`]: the KurrentDB (EventStoreDB) client protocol, on the same port.
//! - [`conn`]: the accept loop (a cap on connections, backoff on accept errors) and the
//!   connection wrapper (immediate ACKs, a handshake deadline).
//! - [`status`]: engine errors to gRPC statuses, in one place.

mod conn;
mod convert;
pub mod kurrent;
mod persistent;
mod service;
pub mod status;
mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use self::conn::ConnStats;
use crate::Store;
use crate::service::{Principal, Service, ServiceConfig};

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
    /// RESOURCE_EXHAUSTED before it reaches the engine. Default: 20 MiB (the engine's largest
    /// append, 16 MiB, plus framing).
    pub message_bytes_max: usize,
    /// Concurrent HTTP/2 streams (calls) per client connection. Default: 1024.
    pub concurrent_streams_max: u32,
    /// Connections held at once; one more is closed at accept (and logged, at most once per
    /// 10 s). Default: 4096.
    pub connections_max: usize,
    /// Time a new connection has to send its first bytes (the HTTP/2 preface, or the TLS
    /// ClientHello), and for TLS to finish its handshake. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a peer that does not answer one within
    /// `keepalive_timeout` is disconnected. Default: 30 s and 10 s.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// TLS: `None` serves plaintext (h2c).
    pub tls: Option<TlsConfig>,
    /// The `host:port` the KurrentDB adapter's gossip advertises. `None`: the listening
    /// address (`localhost` for a wildcard one).
    pub advertise: Option<String>,
    /// The service layer's limits (pages, buffers, subscriptions).
    pub service: ServiceConfig,
}

/// Certificates for TLS, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// The server's private key.
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate signed by one of these.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("client_ca", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            message_bytes_max: 20 << 20,
            concurrent_streams_max: 1024,
            connections_max: 4096,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            tls: None,
            advertise: None,
            service: ServiceConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The service layer's limits, with pages cut to fit in half a message.
    fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            page_bytes: self.service.page_bytes.min(self.message_bytes_max / 2),
            ..self.service.clone()
        }
    }

    pub fn validate(&self, store: &Store) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::InvalidConfig(what.to_string()));
        if self.message_bytes_max < 64 << 10 {
            return bad("message_bytes_max must be at least 64 KiB");
        }
        if self.concurrent_streams_max == 0 || self.connections_max == 0 {
            return bad("concurrent_streams_max and connections_max must be at least 1");
        }
        if self.handshake_timeout.is_zero()
            || self.keepalive_interval.is_zero()
            || self.keepalive_timeout.is_zero()
        {
            return bad(
                "handshake_timeout, keepalive_interval and keepalive_timeout must be positive",
            );
        }
        self.service_config().validate(store)?;
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

/// The caller of a gRPC request: its `authorization` metadata (HTTP Basic, as the KurrentDB
/// clients send it) checked by the service layer.
pub(crate) async fn caller<T>(
    service: &Arc<Service>,
    request: &tonic::Request<T>,
) -> crate::Result<Principal> {
    let authorization = match request.metadata().get("authorization") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    crate::Error::Unauthenticated("the authorization is not ASCII text".into())
                })?
                .to_string(),
        ),
    };
    service
        .authenticate(authorization, request.remote_addr().map(|a| a.ip()))
        .await
}

/// Serves the native API, the KurrentDB adapter, gRPC health and reflection on `listener`
/// until `shutdown` resolves. Then it stops accepting, ends subscriptions with UNAVAILABLE,
/// lets in-flight calls finish (for at most `drain`), and returns. The caller closes the store.
pub async fn serve(
    store: Arc<Store>,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    serve_with_stats(store, config, listener, shutdown, drain, Arc::default()).await
}

/// [`serve`], counting connections in `stats`.
pub async fn serve_with_stats(
    store: Arc<Store>,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    stats: Arc<ConnStats>,
) -> Result<(), ServeError> {
    config.validate(&store)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = Service::start(store, config.service_config(), stop_rx.clone())?;
    service.start_groups().await?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<proto::event_store_server::EventStoreServer<service::EventStoreService>>()
        .await;
    health_reporter
        .set_serving::<proto::persistent_subscriptions_server::PersistentSubscriptionsServer<
            persistent::PersistentService,
        >>()
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
        service::EventStoreService::new(Arc::clone(&service), config.message_bytes_max),
    )
    .max_decoding_message_size(config.message_bytes_max)
    .max_encoding_message_size(config.message_bytes_max);

    let persistent_subscriptions =
        proto::persistent_subscriptions_server::PersistentSubscriptionsServer::new(
            persistent::PersistentService::new(
                Arc::clone(&service),
                config.message_bytes_max,
                stop_rx.clone(),
            ),
        )
        .max_decoding_message_size(config.message_bytes_max)
        .max_encoding_message_size(config.message_bytes_max);

    let users =
        proto::users_server::UsersServer::new(users::UsersService::new(Arc::clone(&service)));
    let local = listener.local_addr().ok();
    let kurrent = kurrent::services(
        &service,
        &config,
        &advertised(&config, local),
        stop_rx.clone(),
    );
    let accept = conn::AcceptConfig {
        connections_max: config.connections_max,
        handshake_timeout: config.handshake_timeout,
        tcp_keepalive: TCP_KEEPALIVE,
    };
    let incoming = tokio_stream::wrappers::ReceiverStream::new(conn::accept_loop(
        listener,
        accept,
        stats,
        stop_rx.clone(),
    ));
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new calls, ending subscriptions, finishing appends");
        let _ = stop_tx.send(true);
        let _ = drained_tx.send(());
    };
    let limit = config.message_bytes_max;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        // Fails only when a provider is installed already, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut tls_config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &tls.cert_pem,
                &tls.key_pem,
            ))
            .timeout(config.handshake_timeout);
        if let Some(ca) = &tls.client_ca_pem {
            tls_config = tls_config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(tls_config)?;
    }
    let server = builder
        .max_concurrent_streams(Some(config.concurrent_streams_max))
        // Flow-control windows wide enough that a batch append is not held back waiting for a
        // window update.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .layer(tower::util::MapResponseLayer::new(
            move |response: http::Response<tonic::body::Body>| {
                status::rewrite_request_errors(limit, response)
            },
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(event_store)
        .add_service(persistent_subscriptions)
        .add_service(users)
        .add_service(kurrent.streams)
        .add_service(kurrent.gossip)
        .add_service(kurrent.features)
        .add_service(kurrent.persistent)
        .serve_with_incoming_shutdown(incoming, signal);
    if let Some(addr) = local {
        tracing::info!(listen = %addr, tls = config.tls.is_some(),
            authentication = service.authentication_enabled(), "serving gRPC");
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
    // Groups write their last checkpoints before the caller closes the store.
    service.stop_groups().await;
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
