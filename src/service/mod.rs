//! The one layer between every front-end and the engine. The native gRPC service, the KurrentDB
//! adapter and every later front-end (HTTP, GraphQL, webhooks) call [`Service`] and only
//! convert: requests into its arguments, its answers into messages, its [`crate::Error`]s into
//! their statuses. Here, once, and for all of them:
//! - authentication ([`Service::authenticate`]) and authorization (every call takes the
//!   caller's [`Principal`] and checks the stream's ACL);
//! - names: stream names are checked on reads as on appends, and reserved names (`$all`) are
//!   refused as streams;
//! - limits: caps on subscriptions, bytes buffered for slow clients per call and in total, and
//!   arithmetic on client values that cannot wrap;
//! - engine calls that block run on tokio's blocking pool, never on a runtime worker.
//!
//! Architecture invariant: `service/` knows tokio but no wire format (no tonic, no prost, no
//! protobuf types); only `server/` knows protobuf and HTTP; no front-end calls `Store` around
//! `service/`.

pub mod auth;
mod events;
pub mod jwt;
mod live;
pub mod name_filter;
mod outbox;
pub mod persistent;
mod reads;
pub mod subscribe;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Semaphore, oneshot, watch};

pub use self::auth::{Access, Principal};
pub use self::events::Events;
pub use self::outbox::Inbox;
pub use self::reads::{AllPage, AllRead, StreamRead};
pub use self::subscribe::{Matcher, SubscriptionMessage, Target};
use crate::error::{Error, Limit, Result};
use crate::types::{
    AppendResult, ExpectedRevision, Position, RecordedEvent, Revision, StreamAppend,
};
use crate::users::{self, Users};
use crate::{Snapshot, Store, StreamMetadata, StreamMetadataRecord, Tracking, TrackingEntry};

/// The stream name that means the whole log. Never a stream of its own.
pub const ALL_STREAM: &str = "$all";

/// Bytes an event adds to a response message beyond its stored size (field tags and lengths),
/// used to cut pages and to count buffered bytes.
pub const EVENT_OVERHEAD_BYTES: usize = 64;

/// Limits of the service layer. `ServiceConfig::default()` is what production should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Events per page read from the engine for reads and subscription catch-up.
    /// Default: 1000.
    pub read_page_events: u64,
    /// Most bytes of events in one page handed to a front-end (one response message); a single
    /// larger event goes alone. Default: 1 MiB.
    pub page_bytes: usize,
    /// Batches the live ring holds (see `live`). Default: 256.
    pub live_ring_batches: usize,
    /// Most events decoded into one live batch. Default: 1000.
    pub live_batch_events: u64,
    /// Bytes buffered per subscription between its task and its connection. A subscriber
    /// that does not read waits here, then falls behind the ring and is served from disk.
    /// Default: 1 MiB.
    pub subscriber_buffer_bytes: u32,
    /// Bytes buffered per read call between its task and its connection. Default: 4 MiB.
    pub read_buffer_bytes: u32,
    /// Bytes buffered for every slow client together (reads and subscriptions). Default:
    /// 256 MiB.
    pub buffered_bytes_max: u32,
    /// Bytes of events in one subscription message. Small, because a client that stops
    /// reading leaves one message in the transport's buffers, uncounted. Default: 32 KiB.
    pub subscriber_message_bytes: usize,
    /// Subscriptions open at once. Default: 10,000.
    pub subscriptions_max: usize,
    /// When less than an eighth of `buffered_bytes_max` is free, a subscription or read whose
    /// client has taken nothing for this long is ended (RESOURCE_EXHAUSTED, `buffered_bytes`),
    /// and its bytes are freed for the others. Default: 10 s.
    pub stall_timeout: std::time::Duration,
    /// Checkpoint interval (scanned events) of filtered subscriptions that ask for 0.
    /// Default: 1000.
    pub checkpoint_interval: u64,
    /// Bearer tokens: the JWKS and the checks every token passes. Default: none (only HTTP
    /// Basic credentials of the store's users).
    pub jwt: Option<jwt::JwtConfig>,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            read_page_events: 1000,
            page_bytes: 1 << 20,
            live_ring_batches: 256,
            live_batch_events: 1000,
            subscriber_buffer_bytes: 1 << 20,
            read_buffer_bytes: 4 << 20,
            buffered_bytes_max: 256 << 20,
            subscriber_message_bytes: 32 << 10,
            subscriptions_max: 10_000,
            stall_timeout: std::time::Duration::from_secs(10),
            checkpoint_interval: 1000,
            jwt: None,
        }
    }
}

impl ServiceConfig {
    pub fn validate(&self, store: &Store) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidConfig(what.to_string()));
        let read_max = store.config().read_count_max;
        if self.read_page_events == 0 || self.read_page_events > read_max {
            return bad("read_page_events must be between 1 and the store's read_count_max");
        }
        if self.live_batch_events == 0 || self.live_batch_events > read_max {
            return bad("live_batch_events must be between 1 and the store's read_count_max");
        }
        if self.live_ring_batches == 0 || self.subscriptions_max == 0 {
            return bad("live_ring_batches and subscriptions_max must be at least 1");
        }
        if self.page_bytes < 4096 || self.subscriber_message_bytes < 4096 {
            return bad("page_bytes and subscriber_message_bytes must be at least 4 KiB");
        }
        if self.stall_timeout.is_zero() {
            return bad("stall_timeout must be positive");
        }
        if self.subscriber_buffer_bytes < 4096 || self.read_buffer_bytes < 4096 {
            return bad("subscriber_buffer_bytes and read_buffer_bytes must be at least 4 KiB");
        }
        if self.buffered_bytes_max < self.subscriber_buffer_bytes.max(self.read_buffer_bytes) {
            return bad(
                "buffered_bytes_max must hold at least one subscriber's or reader's buffer",
            );
        }
        if self.checkpoint_interval == 0 {
            return bad("checkpoint_interval must be at least 1");
        }
        Ok(())
    }
}

/// What `ServerInfo` reports.
#[derive(Debug, Clone)]
pub struct Info {
    pub version: &'static str,
    pub last_position: Position,
    /// Shown to admins and operators only.
    pub data_dir: Option<PathBuf>,
    pub streams: u64,
    pub event_types: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub fsync: String,
    pub subscriptions: u64,
    pub checkpoint_position: Position,
    pub index_runs: u64,
    pub memtable_events: u64,
    pub authentication: bool,
}

/// The service: the store, the live ring, the users, and the shared budgets.
pub struct Service {
    store: Arc<Store>,
    config: ServiceConfig,
    live: live::Live,
    auth: auth::Authenticator,
    /// Turns true when the server begins shutting down; subscriptions end on it.
    shutdown: watch::Receiver<bool>,
    /// One permit per open subscription.
    subscriptions: Arc<Semaphore>,
    /// Bytes buffered for slow clients, across the server.
    buffered: outbox::ServerBudget,
    /// Persistent-subscription groups.
    groups: persistent::Groups,
}

impl Service {
    /// Starts the service on the current tokio runtime (the live publisher is a task). It ends
    /// subscriptions when `shutdown` turns true.
    pub fn start(
        store: Arc<Store>,
        config: ServiceConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Service>> {
        config.validate(&store)?;
        let users = Users::load(&store)?;
        let jwt = config.jwt.clone().map(jwt::JwtVerifier::new).transpose()?;
        let live = live::Live::start(
            Arc::clone(&store),
            config.live_ring_batches,
            config.live_batch_events,
            shutdown.clone(),
        );
        Ok(Arc::new(Service {
            groups: persistent::Groups::new(&store),
            subscriptions: Arc::new(Semaphore::new(config.subscriptions_max)),
            buffered: outbox::ServerBudget::new(
                config.buffered_bytes_max as usize,
                config.stall_timeout,
            ),
            store,
            config,
            live,
            auth: auth::Authenticator::new(users, jwt),
            shutdown,
        }))
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The store's limits (event sizes, append sizes), for front-ends that check sizes while
    /// a request is still arriving.
    pub fn store_config(&self) -> &crate::Config {
        self.store.config()
    }

    /// True once the store has users: calls then need credentials.
    pub fn authentication_enabled(&self) -> bool {
        self.auth.enabled()
    }

    /// The caller of a request that came with `authorization` (an HTTP `Authorization`
    /// value, `Basic base64(user:password)`) from `peer`. No credentials is
    /// [`Principal::Anonymous`] (or [`Principal::Open`] while authentication is off); bad ones
    /// are `Unauthenticated`.
    pub async fn authenticate(
        self: &Arc<Self>,
        authorization: Option<String>,
        peer: Option<IpAddr>,
    ) -> Result<Principal> {
        if !self.auth.enabled() {
            return Ok(Principal::Open);
        }
        let Some(header) = authorization else {
            return Ok(Principal::Anonymous);
        };
        let this = Arc::clone(self);
        // A first login costs an argon2id verification: not on a runtime worker.
        blocking(move || this.auth.authenticate(Some(&header), peer)).await
    }

    /// `Ok` when `who` may do `access` on `stream` (for metadata access, the stream the
    /// metadata belongs to).
    pub fn authorize(&self, who: &Principal, access: Access, stream: &str) -> Result<()> {
        if who.is_admin() {
            return Ok(());
        }
        if *who == Principal::Anonymous {
            return Err(Error::Unauthenticated(
                "this server requires credentials (user name and password)".into(),
            ));
        }
        // A tombstoned stream's metadata is gone; the default ACL applies.
        let metadata = self.store.stream_metadata(stream).ok().flatten();
        let custom = metadata.as_ref().map(|(_, m)| &m.custom);
        if auth::allowed(who, access, stream, custom) {
            return Ok(());
        }
        Err(denied(who, access_name(access), stream))
    }

    /// Reading the whole log (`$all`) needs `$admins` or `$ops`, as in KurrentDB, whose `$all`
    /// carries the system streams' ACL: a user who may read only some streams cannot see
    /// every event by reading the log.
    pub fn authorize_all(&self, who: &Principal) -> Result<()> {
        match who {
            Principal::Anonymous => Err(Error::Unauthenticated(
                "this server requires credentials (user name and password)".into(),
            )),
            w if w.is_operator() => Ok(()),
            w => Err(denied(w, "read", ALL_STREAM)),
        }
    }

    fn authorize_admin(&self, who: &Principal) -> Result<()> {
        match who {
            Principal::Anonymous => Err(Error::Unauthenticated(
                "this server requires credentials (user name and password)".into(),
            )),
            w if w.is_admin() => Ok(()),
            w => Err(denied(w, "administer", "$users")),
        }
    }

    /// Appends (one or several streams, one atomic commit). Waits for the durable answer
    /// without holding a thread.
    pub async fn append(
        &self,
        who: &Principal,
        parts: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>> {
        self.commit(who, parts, None).await
    }

    /// Appends and, in the same atomic commit, a tracking entry (which then may come alone).
    /// For a tracked commit the answer ends with the tracking record's result. Sources
    /// starting with `$` are the server's own (persistent-subscription checkpoints) and are
    /// refused here; any caller that may append may track (an anonymous caller only on an
    /// open server).
    pub async fn commit(
        &self,
        who: &Principal,
        parts: Vec<StreamAppend>,
        tracking: Option<Tracking>,
    ) -> Result<Vec<AppendResult>> {
        if let Some(t) = &tracking {
            if t.source.starts_with('$') {
                return Err(Error::InvalidArgument(format!(
                    "tracking sources starting with '$' are reserved for the server ('{}')",
                    t.source.escape_debug()
                )));
            }
            if matches!(who, Principal::Anonymous) {
                return Err(Error::Unauthenticated(
                    "tracking entries need credentials on this server".into(),
                ));
            }
        }
        self.commit_as(who, parts, tracking).await
    }

    /// [`Service::commit`] without the reservation of `$` sources: for the server's own
    /// bookkeeping (checkpoints, parked entries) under the system principal.
    pub(crate) async fn commit_as(
        &self,
        who: &Principal,
        mut parts: Vec<StreamAppend>,
        tracking: Option<Tracking>,
    ) -> Result<Vec<AppendResult>> {
        for part in &mut parts {
            self.check_stream_name(&part.stream)?;
            self.authorize(who, Access::Write, &part.stream)?;
            // The audit trail: who appended is the service's to say, never the client's.
            part.principal = who.recorded().to_string();
        }
        let (tx, rx) = oneshot::channel();
        let principal = who.recorded().to_string();
        let queued = self
            .store
            .try_commit_with(parts, tracking, principal, move |result| {
                let _ = tx.send(result);
            });
        if let Err(full) = queued {
            // The writer's queue is full: wait for room on a blocking thread, not here.
            blocking(move || {
                full.wait();
                Ok(())
            })
            .await?;
        }
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// The stored tracking entry of a source (`None` when it has none).
    pub async fn tracking(&self, who: &Principal, source: String) -> Result<Option<TrackingEntry>> {
        self.authorize_tracking_read(who)?;
        let store = Arc::clone(&self.store);
        blocking(move || store.tracking(&source)).await
    }

    /// The tracking entries whose source starts with `prefix`, a page at a time (see
    /// [`Store::list_tracking`]).
    pub async fn list_tracking(
        &self,
        who: &Principal,
        prefix: String,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<TrackingEntry>, Option<u64>)> {
        self.authorize_tracking_read(who)?;
        let store = Arc::clone(&self.store);
        blocking(move || store.list_tracking(&prefix, after, limit)).await
    }

    /// Tracking entries are readable by any authenticated caller (on an open server, by
    /// anyone): they hold positions, not event data.
    fn authorize_tracking_read(&self, who: &Principal) -> Result<()> {
        if matches!(who, Principal::Anonymous) {
            return Err(Error::Unauthenticated(
                "this server requires credentials (user name and password)".into(),
            ));
        }
        Ok(())
    }

    /// The current revision of a stream, `None` when it has no events.
    pub fn stream_revision(&self, who: &Principal, stream: &str) -> Result<Option<Revision>> {
        self.check_read_name(stream)?;
        self.authorize_read(who, stream)?;
        self.store.stream_revision(stream)
    }

    /// The position of the newest visible event.
    pub fn last_position(&self) -> Position {
        self.store.last_position()
    }

    pub async fn save_snapshot(
        &self,
        who: &Principal,
        stream: String,
        revision: Revision,
        schema: String,
        data: bytes::Bytes,
    ) -> Result<()> {
        self.check_stream_name(&stream)?;
        self.authorize(who, Access::Write, &stream)?;
        let store = Arc::clone(&self.store);
        // The save syncs the snapshot log.
        blocking(move || store.save_snapshot(&stream, revision, &schema, data)).await
    }

    pub async fn load_snapshot(
        &self,
        who: &Principal,
        stream: String,
        at_or_below: Revision,
    ) -> Result<Option<Snapshot>> {
        self.check_stream_name(&stream)?;
        self.authorize(who, Access::Read, &stream)?;
        let store = Arc::clone(&self.store);
        blocking(move || store.load_snapshot(&stream, at_or_below)).await
    }

    /// Sets a stream's metadata (its ACL included, which is checked here).
    pub async fn set_stream_metadata(
        &self,
        who: &Principal,
        stream: String,
        expected: ExpectedRevision,
        metadata: StreamMetadata,
    ) -> Result<AppendResult> {
        self.check_stream_name(&stream)?;
        self.authorize(who, Access::MetadataWrite, &stream)?;
        auth::check_acl(&metadata.custom)?;
        let store = Arc::clone(&self.store);
        let by = who.recorded().to_string();
        blocking(move || store.set_stream_metadata_by(&stream, expected, metadata, &by)).await
    }

    /// Sets a stream's metadata from its stored JSON form (KurrentDB's `$$S` events). The size
    /// is checked before the JSON is parsed.
    pub async fn set_stream_metadata_json(
        &self,
        who: &Principal,
        stream: String,
        expected: ExpectedRevision,
        json: &[u8],
    ) -> Result<AppendResult> {
        let limit = self.store.config().event_bytes_max;
        if json.len() as u64 > limit {
            return Err(Error::LimitExceeded {
                what: Limit::MetadataBytes,
                limit,
                actual: json.len() as u64,
            });
        }
        let metadata = StreamMetadata::from_json(json)?;
        self.set_stream_metadata(who, stream, expected, metadata)
            .await
    }

    /// The current metadata of a stream and its revision.
    pub fn stream_metadata(
        &self,
        who: &Principal,
        stream: &str,
    ) -> Result<Option<(Revision, StreamMetadata)>> {
        self.check_stream_name(stream)?;
        self.authorize(who, Access::MetadataRead, stream)?;
        self.store.stream_metadata(stream)
    }

    /// Versions of a stream's metadata from `from` (a metadata revision), oldest first, at
    /// most `count`; `count` is capped by the store's read limit.
    pub async fn stream_metadata_history(
        &self,
        who: &Principal,
        stream: String,
        from: Revision,
        count: u64,
    ) -> Result<Vec<StreamMetadataRecord>> {
        self.check_stream_name(&stream)?;
        self.authorize(who, Access::MetadataRead, &stream)?;
        let limit = self.config.read_page_events;
        if count > limit {
            return Err(Error::LimitExceeded {
                what: Limit::MetadataHistory,
                limit,
                actual: count,
            });
        }
        let store = Arc::clone(&self.store);
        blocking(move || store.stream_metadata_history_page(&stream, from, count)).await
    }

    pub async fn delete_stream(
        &self,
        who: &Principal,
        stream: String,
        expected: ExpectedRevision,
    ) -> Result<Position> {
        self.check_stream_name(&stream)?;
        self.authorize(who, Access::Delete, &stream)?;
        let store = Arc::clone(&self.store);
        let by = who.recorded().to_string();
        blocking(move || store.delete_stream_by(&stream, expected, &by)).await
    }

    pub async fn tombstone_stream(
        &self,
        who: &Principal,
        stream: String,
        expected: ExpectedRevision,
    ) -> Result<Position> {
        self.check_stream_name(&stream)?;
        self.authorize(who, Access::Delete, &stream)?;
        let store = Arc::clone(&self.store);
        let by = who.recorded().to_string();
        blocking(move || store.tombstone_stream_by(&stream, expected, &by)).await
    }

    /// The server's figures; the data directory only for admins and operators.
    pub async fn info(&self, who: &Principal) -> Result<Info> {
        if *who == Principal::Anonymous {
            return Err(Error::Unauthenticated(
                "this server requires credentials (user name and password)".into(),
            ));
        }
        let stats = self.store.stats();
        let dir = self.store.dir().to_path_buf();
        let segment_bytes = {
            let dir = dir.clone();
            blocking(move || Ok(segment_bytes(&dir))).await?
        };
        Ok(Info {
            version: env!("CARGO_PKG_VERSION"),
            last_position: stats.last_position,
            data_dir: who.is_operator().then_some(dir),
            streams: stats.streams as u64,
            event_types: stats.event_types as u64,
            segments: stats.segments as u64,
            segment_bytes,
            fsync: self.store.config().fsync.to_string(),
            subscriptions: self.live.subscribers() as u64,
            checkpoint_position: stats.checkpoint_position,
            index_runs: stats.index_runs as u64,
            memtable_events: stats.memtable_events,
            authentication: self.auth.enabled(),
        })
    }

    /// Every user (admins only).
    pub fn users(&self, who: &Principal) -> Result<Vec<users::User>> {
        self.authorize_admin(who)?;
        Ok(self.auth.users().iter().cloned().collect())
    }

    /// Adds a user (admins only).
    pub async fn add_user(
        &self,
        who: &Principal,
        name: String,
        password: String,
        groups: Vec<String>,
    ) -> Result<()> {
        self.authorize_admin(who)?;
        self.change_users(move |store| users::add_user(store, &name, &password, &groups))
            .await
    }

    /// Sets a user's password (admins only).
    pub async fn set_password(
        &self,
        who: &Principal,
        name: String,
        password: String,
    ) -> Result<()> {
        self.authorize_admin(who)?;
        self.change_users(move |store| users::set_password(store, &name, &password))
            .await
    }

    /// Removes a user (admins only).
    pub async fn remove_user(&self, who: &Principal, name: String) -> Result<()> {
        self.authorize_admin(who)?;
        self.change_users(move |store| users::remove_user(store, &name))
            .await
    }

    async fn change_users(
        &self,
        change: impl FnOnce(&Store) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let store = Arc::clone(&self.store);
        let users = blocking(move || {
            change(&store)?;
            Users::load(&store)
        })
        .await?;
        self.auth.set_users(users);
        Ok(())
    }

    /// A stream name a client may write: valid, and not a reserved name.
    fn check_stream_name(&self, stream: &str) -> Result<()> {
        crate::store::check_stream_name(self.store.config(), stream)?;
        if stream == ALL_STREAM {
            return Err(Error::InvalidArgument(format!(
                "'{ALL_STREAM}' is the whole log, not a stream"
            )));
        }
        Ok(())
    }

    /// A stream name a client may read: as for writes, but metadata streams (`$$S`) are
    /// readable (KurrentDB clients read them).
    fn check_read_name(&self, stream: &str) -> Result<()> {
        match stream.strip_prefix(crate::METADATA_STREAM_PREFIX) {
            Some(target) => self.check_stream_name(target),
            None => self.check_stream_name(stream),
        }
    }

    /// Reading `$$S` is reading S's metadata.
    fn authorize_read(&self, who: &Principal, stream: &str) -> Result<()> {
        match stream.strip_prefix(crate::METADATA_STREAM_PREFIX) {
            Some(target) => self.authorize(who, Access::MetadataRead, target),
            None => self.authorize(who, Access::Read, stream),
        }
    }
}

impl Service {
    /// The error that ends a call whose client stopped reading while the server's buffer for
    /// slow clients was short.
    fn stalled(&self) -> Error {
        let limit = u64::from(self.config.buffered_bytes_max);
        Error::LimitExceeded {
            what: Limit::BufferedBytes,
            limit,
            actual: limit,
        }
    }

    /// Sends an item of a read or subscription; a stalled receiver gets the error that ends
    /// it. `Err` means the call is over.
    async fn put<T: Send + 'static>(
        &self,
        tx: &outbox::Outbox<Result<T>>,
        item: T,
        bytes: usize,
    ) -> std::result::Result<(), outbox::Closed> {
        match tx.send(Ok(item), bytes).await {
            Err(outbox::Closed::Stalled) => {
                tracing::warn!(
                    "ending a call whose client stopped reading while the buffer for slow \
                     clients is short"
                );
                let _ = tx.send_last(Err(self.stalled()));
                Err(outbox::Closed::Stalled)
            }
            other => other,
        }
    }
}

fn denied(who: &Principal, access: &'static str, stream: &str) -> Error {
    Error::PermissionDenied {
        principal: who.name().to_string(),
        access,
        stream: stream.to_string(),
    }
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
        Access::Delete => "delete",
        Access::MetadataRead => "metadata read",
        Access::MetadataWrite => "metadata write",
    }
}

/// The size an event will have in a response message.
pub fn wire_bytes(e: &RecordedEvent) -> usize {
    e.stored_bytes() + EVENT_OVERHEAD_BYTES
}

/// Runs an engine call on the blocking pool. A task that panicked is `Error::Internal`.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("engine task failed: {e}"))))
}

/// Total size of the segment files in `dir`.
fn segment_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(std::result::Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
