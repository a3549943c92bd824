//! The KurrentDB (EventStoreDB) client protocol, served beside the native API on the same port,
//! so the official KurrentDB clients (.NET, Java, Node, Go, Python, Rust) work against
//! statestore unchanged (`esdb://host:2113?Tls=false`, `kurrentdb://host:2113?tls=false`).
//!
//! This module is a translation layer only: it turns the protocol's requests into calls on the
//! same [`crate::service::Service`] the native service uses, and the engine's answers and errors into the
//! protocol's messages, statuses and trailers. The engine and the native API know nothing of
//! it. The protocol's quirks live here:
//! - positions are the engine's positions (commit = prepare = position, first event at 1);
//!   a tombstone's revision reads as `i64::MAX`;
//! - stream metadata is read and written through `$$stream`, mapped onto the engine's
//!   [`crate::StreamMetadata`];
//! - an append's wrong expected version is a successful reply carrying the versions, while a
//!   delete's is an error whose message text clients parse;
//! - filters are .NET regular expressions (search semantics, lookahead) or prefix lists.
//!
//! - [`streams`]: `event_store.client.streams.Streams` (Read, Append, BatchAppend, Delete,
//!   Tombstone).
//! - [`cluster`]: Gossip (one leader member) and ServerFeatures.
//! - [`persistent`]: PersistentSubscriptions (groups of competing consumers).
//! - [`convert`]: events, ids, positions and filters between the protocol and the engine.
//! - [`errors`]: the error contract the clients parse.

mod cluster;
mod convert;
mod errors;
mod persistent;
mod streams;

pub use streams::PENDING_BATCHES_MAX;

use std::sync::Arc;

use crate::service::Service;

/// The generated code for `proto/kurrentdb`, one module per protobuf package.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]

    pub mod event_store {
        pub mod client {
            tonic::include_proto!("event_store.client");

            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
            pub mod gossip {
                tonic::include_proto!("event_store.client.gossip");
            }
            pub mod server_features {
                tonic::include_proto!("event_store.client.server_features");
            }
            pub mod persistent_subscriptions {
                tonic::include_proto!("event_store.client.persistent_subscriptions");
            }
        }
    }

    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

/// The KurrentDB server version the adapter reports. Clients gate behaviour on it; 24.10 is the
/// protocol generation the adapter implements (caught-up messages with positions, batch
/// append deadlines as durations).
pub const SERVER_VERSION: &str = "24.10.0";

/// How the adapter describes this node to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KurrentConfig {
    /// The host and port gossip advertises (what clients that discover the cluster connect
    /// to).
    pub advertise_host: String,
    pub advertise_port: u16,
}

type StreamsServer =
    proto::event_store::client::streams::streams_server::StreamsServer<streams::StreamsService>;
type GossipServer =
    proto::event_store::client::gossip::gossip_server::GossipServer<cluster::GossipService>;
type FeaturesServer =
    proto::event_store::client::server_features::server_features_server::ServerFeaturesServer<
        cluster::FeaturesService,
    >;
type PersistentServer = proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer<persistent::PersistentService>;

/// The adapter's gRPC services.
pub(crate) struct Services {
    pub streams: StreamsServer,
    pub gossip: GossipServer,
    pub features: FeaturesServer,
    pub persistent: PersistentServer,
}

pub(crate) fn services(
    service: &Arc<Service>,
    server: &super::ServerConfig,
    config: &KurrentConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Services {
    let limit = server.message_bytes_max;
    Services {
        streams: StreamsServer::new(streams::StreamsService::new(Arc::clone(service)))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        gossip: GossipServer::new(cluster::GossipService::new(config.clone())),
        features: FeaturesServer::new(cluster::FeaturesService),
        persistent: PersistentServer::new(persistent::PersistentService::new(
            Arc::clone(service),
            shutdown,
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit),
    }
}
