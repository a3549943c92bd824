//! The small services clients call around the streams: Gossip (this node is the one leader)
//! and ServerFeatures (what is served, so clients enable batch append and use gRPC, not
//! KurrentDB's HTTP API, for persistent-subscription management).

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::proto::event_store::client::server_features as features;
use super::proto::event_store::client::{self as shared, gossip};
use super::{KurrentConfig, SERVER_VERSION, convert};

/// .NET ticks (100 ns) from 0001-01-01 to the Unix epoch.
const TICKS_AT_UNIX_EPOCH: i64 = 621_355_968_000_000_000;

pub struct GossipService {
    config: KurrentConfig,
    instance_id: uuid::Uuid,
}

impl GossipService {
    pub fn new(config: KurrentConfig) -> GossipService {
        GossipService {
            config,
            instance_id: uuid::Uuid::new_v4(),
        }
    }
}

#[tonic::async_trait]
impl gossip::gossip_server::Gossip for GossipService {
    async fn read(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<gossip::ClusterInfo>, Status> {
        let unix_ticks = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| (d.as_nanos() / 100) as i64);
        let member = gossip::MemberInfo {
            instance_id: Some(convert::uuid_to_wire(self.instance_id, true)),
            time_stamp: TICKS_AT_UNIX_EPOCH.saturating_add(unix_ticks),
            state: gossip::member_info::VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(gossip::EndPoint {
                address: self.config.advertise_host.clone(),
                port: u32::from(self.config.advertise_port),
            }),
        };
        Ok(Response::new(gossip::ClusterInfo {
            members: vec![member],
        }))
    }
}

pub struct FeaturesService;

const PERSISTENT: &str = "event_store.client.persistent_subscriptions.persistentsubscriptions";
/// The feature tags KurrentDB 24.x gives persistent-subscription methods: groups on streams
/// and on `$all`. Clients without them fall back to the HTTP API (which this port does not
/// speak) or refuse `$all` groups.
const STREAM_AND_ALL: &[&str] = &["stream", "all"];

/// The methods served, as (service, method, feature tags): lower-case, as clients compare
/// them.
const SERVED: &[(&str, &str, &[&str])] = &[
    ("event_store.client.streams.streams", "read", &[]),
    ("event_store.client.streams.streams", "append", &[]),
    ("event_store.client.streams.streams", "batchappend", &[]),
    ("event_store.client.streams.streams", "delete", &[]),
    ("event_store.client.streams.streams", "tombstone", &[]),
    ("event_store.client.gossip.gossip", "read", &[]),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
        &[],
    ),
    (PERSISTENT, "create", STREAM_AND_ALL),
    (PERSISTENT, "update", STREAM_AND_ALL),
    (PERSISTENT, "delete", STREAM_AND_ALL),
    (PERSISTENT, "read", STREAM_AND_ALL),
    (PERSISTENT, "getinfo", STREAM_AND_ALL),
    (PERSISTENT, "replayparked", STREAM_AND_ALL),
    (PERSISTENT, "list", STREAM_AND_ALL),
    (PERSISTENT, "restartsubsystem", &[]),
];

#[tonic::async_trait]
impl features::server_features_server::ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<features::SupportedMethods>, Status> {
        let methods = SERVED
            .iter()
            .map(|(service, method, tags)| features::SupportedMethod {
                method_name: (*method).to_string(),
                service_name: (*service).to_string(),
                features: tags.iter().map(|t| (*t).to_string()).collect(),
            })
            .collect();
        Ok(Response::new(features::SupportedMethods {
            methods,
            event_store_server_version: SERVER_VERSION.to_string(),
        }))
    }
}
