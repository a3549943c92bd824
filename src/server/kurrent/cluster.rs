//! The small services clients call around the streams: Gossip (this node is the one leader),
//! ServerFeatures (what is served, so clients enable batch append), and the read-only
//! management calls of PersistentSubscriptions, which say "none exist" until persistent
//! subscriptions do. (The Rust client uses gRPC for List only when all four management
//! methods are advertised; otherwise it falls back to HTTP/1.1, which this port does not
//! speak.)

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::proto::event_store::client::server_features as features;
use super::proto::event_store::client::{self as shared, gossip, persistent_subscriptions as ps};
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

/// The methods served, as (service, method): lower-case, as clients compare them.
const SERVED: &[(&str, &str)] = &[
    ("event_store.client.streams.streams", "read"),
    ("event_store.client.streams.streams", "append"),
    ("event_store.client.streams.streams", "batchappend"),
    ("event_store.client.streams.streams", "delete"),
    ("event_store.client.streams.streams", "tombstone"),
    ("event_store.client.gossip.gossip", "read"),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "list",
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "getinfo",
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "replayparked",
    ),
    (
        "event_store.client.persistent_subscriptions.persistentsubscriptions",
        "restartsubsystem",
    ),
];

#[tonic::async_trait]
impl features::server_features_server::ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<features::SupportedMethods>, Status> {
        let methods = SERVED
            .iter()
            .map(|(service, method)| features::SupportedMethod {
                method_name: (*method).to_string(),
                service_name: (*service).to_string(),
                features: Vec::new(),
            })
            .collect();
        Ok(Response::new(features::SupportedMethods {
            methods,
            event_store_server_version: SERVER_VERSION.to_string(),
        }))
    }
}

pub struct PersistentService;

#[tonic::async_trait]
impl ps::persistent_subscriptions_server::PersistentSubscriptions for PersistentService {
    /// No persistent subscription can exist yet: NOT_FOUND, which clients read as an empty list.
    async fn list(&self, _request: Request<ps::ListReq>) -> Result<Response<ps::ListResp>, Status> {
        Err(Status::not_found("Subscriptions not found"))
    }

    async fn get_info(
        &self,
        request: Request<ps::GetInfoReq>,
    ) -> Result<Response<ps::GetInfoResp>, Status> {
        Err(no_such_group(
            request.into_inner().options.map(|o| o.group_name),
        ))
    }

    async fn replay_parked(
        &self,
        request: Request<ps::ReplayParkedReq>,
    ) -> Result<Response<ps::ReplayParkedResp>, Status> {
        Err(no_such_group(
            request.into_inner().options.map(|o| o.group_name),
        ))
    }

    /// There is no subsystem state to restart while no persistent subscription can exist.
    async fn restart_subsystem(
        &self,
        _request: Request<shared::Empty>,
    ) -> Result<Response<shared::Empty>, Status> {
        Ok(Response::new(shared::Empty {}))
    }
}

fn no_such_group(group: Option<String>) -> Status {
    let group = group.unwrap_or_default();
    Status::not_found(format!("Subscription group '{group}' does not exist."))
}
