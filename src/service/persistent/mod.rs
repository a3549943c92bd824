//! Persistent subscriptions: named groups of competing consumers on a stream or on the whole
//! log, with acknowledgements, retries, parking and durable checkpoints. Every front-end (the
//! native API, the KurrentDB adapter) calls these `Service` methods.
//!
//! Durable state, all in the log through the ordinary commit path:
//! - the group definitions: the newest event of `$persistentSubscriptionConfig` holds them all
//!   (settings exactly as sent, the filter, and `End` resolved to a position at creation);
//! - each group's checkpoint: the tracking entry of source `$ps-{id}` (see `Store::commit`),
//!   where `id` is fixed at creation, so a group deleted and created again starts afresh;
//! - parked events: entries in the stream `$ps-{id}-parked`, hidden by truncate-before once
//!   replayed or truncated.

mod group;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use uuid::Uuid;

pub use self::group::Delivery;
use self::group::{Cmd, Group, Start};
pub use self::settings::{GroupSettings, StartFrom, Strategy};
use super::{ALL_STREAM, Access, Matcher, Principal, Service, blocking};
use crate::error::{Error, Result};
use crate::types::{
    Direction, EventData, ExpectedRevision, Filter, Revision, StreamAppend, StreamFilter,
};

/// The stream whose newest event holds every group's definition.
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
/// Event type of a definition record.
pub const CONFIG_EVENT_TYPE: &str = "$PersistentConfig";
/// Event type of a parked entry.
pub const PARKED_EVENT_TYPE: &str = "$parked";
/// Group names: 1 to 256 bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 256;
/// Groups on one server: each is a task with its own buffer, and all their definitions are
/// one record.
pub const GROUPS_MAX: usize = 1000;
/// Event ids in one ack or nack.
pub const ACK_IDS_MAX: usize = 10_000;
/// Bytes of a nack's reason kept (with each parked event).
pub const NACK_REASON_BYTES_MAX: usize = 1024;
/// Longest retry-after delay of a nack.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(3600);
/// Bytes of a consumer's name.
pub const CONSUMER_NAME_BYTES_MAX: usize = 256;

fn check_ids(ids: &[Uuid]) -> Result<()> {
    if ids.len() > ACK_IDS_MAX {
        return Err(Error::InvalidArgument(format!(
            "{} event ids in one ack or nack, over the limit of {ACK_IDS_MAX}",
            ids.len()
        )));
    }
    Ok(())
}

/// Where a group reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupSource {
    Stream(String),
    All,
}

impl GroupSource {
    /// The stream, or `$all`.
    pub fn name(&self) -> &str {
        match self {
            GroupSource::Stream(s) => s,
            GroupSource::All => ALL_STREAM,
        }
    }
}

/// A group's identity: its source and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub source: GroupSource,
    pub group: String,
}

impl std::fmt::Display for GroupKey {
    /// KurrentDB's subscription id: `{stream}::{group}`, `$all::{group}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.source.name(), self.group)
    }
}

/// The filter of a `$all` group: every non-empty condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupFilter {
    /// Streams whose name starts with one of these.
    pub stream_prefixes: Vec<String>,
    /// Events whose type starts with one of these.
    pub event_type_prefixes: Vec<String>,
    /// Events whose type is one of these.
    pub event_types: Vec<String>,
    /// Streams in this category (name up to the first `-`).
    pub category: Option<String>,
    /// Streams whose name this regular expression matches (anywhere in the name; see
    /// [`crate::service::name_filter`]).
    pub stream_regex: Option<String>,
    /// Events whose type this regular expression matches.
    pub event_type_regex: Option<String>,
}

impl GroupFilter {
    pub fn is_empty(&self) -> bool {
        *self == GroupFilter::default()
    }

    /// The part the engine's own filter expresses (one prefix or a category, exact types).
    fn engine_filter(&self) -> Filter {
        Filter {
            stream: match (&self.category, self.stream_prefixes.as_slice()) {
                (Some(c), _) => Some(StreamFilter::Category(c.clone())),
                (None, [one]) => Some(StreamFilter::Prefix(one.clone())),
                _ => None,
            },
            event_types: self.event_types.clone(),
        }
    }

    /// Compiles the regular expressions; refuses a bad or oversized one.
    pub fn compile(&self) -> Result<CompiledFilter> {
        use super::name_filter::{NameFilter, Subject};
        let compile = |subject, pattern: &Option<String>| -> Result<Option<Arc<dyn Matcher>>> {
            pattern
                .as_deref()
                .map(|p| NameFilter::regex(subject, p).map(NameFilter::into_matcher))
                .transpose()
        };
        Ok(CompiledFilter {
            stream_regex: compile(Subject::StreamName, &self.stream_regex)?,
            event_type_regex: compile(Subject::EventType, &self.event_type_regex)?,
            filter: self.clone(),
        })
    }

    fn matches_plain(&self, stream: &str, event_type: &str) -> bool {
        (self.stream_prefixes.is_empty()
            || self
                .stream_prefixes
                .iter()
                .any(|p| stream.starts_with(p.as_str())))
            && (self.event_type_prefixes.is_empty()
                || self
                    .event_type_prefixes
                    .iter()
                    .any(|p| event_type.starts_with(p.as_str())))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && self
                .category
                .as_ref()
                .is_none_or(|c| crate::types::category_of(stream) == c)
    }
}

/// A [`GroupFilter`] with its regular expressions compiled.
#[derive(Clone)]
pub struct CompiledFilter {
    filter: GroupFilter,
    stream_regex: Option<Arc<dyn Matcher>>,
    event_type_regex: Option<Arc<dyn Matcher>>,
}

impl CompiledFilter {
    /// The part the engine's own filter expresses.
    pub(crate) fn engine_filter(&self) -> Filter {
        self.filter.engine_filter()
    }

    /// Whether an event passes. An `Err` is a regular expression past its matching budget.
    pub fn matches(&self, stream: &str, event_type: &str) -> Result<bool> {
        if !self.filter.matches_plain(stream, event_type) {
            return Ok(false);
        }
        for m in [&self.stream_regex, &self.event_type_regex]
            .into_iter()
            .flatten()
        {
            if !m.matches(stream, event_type)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What a consumer does with an event it will not acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// KurrentDB's `Unknown`: as `Retry`.
    Unknown,
    /// Park the event (it leaves the group until replayed).
    Park,
    /// Deliver it again (after the events already waiting for a retry).
    Retry,
    /// Drop it: it counts as handled.
    Skip,
    /// Stop this consumer: its events go to the others.
    Stop,
    /// statestore: deliver it again after this delay.
    RetryAfter(Duration),
    /// statestore: keep it, and restart its message timeout.
    Extend,
}

/// A parked entry: the data of a `$parked` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEntry {
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    pub event_id: Uuid,
    pub reason: String,
    pub retry_count: u32,
    pub parked_at_us: u64,
}

/// A consumer's figures.
#[derive(Debug, Clone)]
pub struct ConsumerStats {
    pub id: u64,
    pub name: String,
    /// Who connected it.
    pub user: String,
    pub in_flight: u64,
    pub buffer_size: u64,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub connected_at: SystemTime,
}

/// How a group stands.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub key: GroupKey,
    /// KurrentDB's status names: `Live`, `Behind`, `ReplayingParkedMessages`.
    pub status: &'static str,
    /// Every event at or before this is handled (revision, or position for `$all`).
    pub checkpoint: Option<u64>,
    /// The source's newest revision (or the log's newest position).
    pub last_known: Option<u64>,
    /// Read (or scanned) up to here.
    pub read_through: Option<u64>,
    pub in_flight: u64,
    /// Waiting for a consumer with room (new events and retries).
    pub ready: u64,
    /// Waiting for a retry delay.
    pub delayed: u64,
    /// Events held: waiting, in flight, being parked.
    pub buffered: u64,
    pub parked: u64,
    /// When the oldest parked event not yet replayed was parked, in µs since the epoch.
    pub parked_oldest_us: Option<u64>,
    pub oldest_in_flight: Option<Duration>,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    /// The source's head minus the checkpoint.
    pub lag: Option<u64>,
    pub consumers: Vec<ConsumerStats>,
    /// The settings as sent (filled in by the service).
    pub settings: Option<GroupSettings>,
}

/// A group's definition as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupRecord {
    source: GroupSource,
    group: String,
    id: String,
    settings: GroupSettings,
    #[serde(default)]
    filter: GroupFilter,
    /// `End` resolved at creation: the first sequence after the source's head then.
    resolved_start: u64,
    created_us: u64,
}

impl GroupRecord {
    fn key(&self) -> GroupKey {
        GroupKey {
            source: self.source.clone(),
            group: self.group.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigData {
    groups: Vec<GroupRecord>,
}

/// The service's groups: the definitions and the running tasks.
pub(crate) struct Groups {
    registry: Mutex<Registry>,
    commits: watch::Receiver<u64>,
}

#[derive(Default)]
struct Registry {
    records: Vec<GroupRecord>,
    /// The config stream's revision (for the next write's expectation).
    revision: Option<u64>,
    running: HashMap<GroupKey, mpsc::Sender<Cmd>>,
}

impl Groups {
    pub(crate) fn new(store: &crate::Store) -> Groups {
        let (tx, rx) = watch::channel(store.last_position().0);
        store.on_commit(move |p| {
            tx.send_replace(p.0);
        });
        Groups {
            registry: Mutex::new(Registry::default()),
            commits: rx,
        }
    }
}

/// Streams of the server's own bookkeeping, which `$all` groups never deliver (they would
/// feed on their own checkpoints).
pub fn is_bookkeeping(stream: &str) -> bool {
    let s = stream
        .strip_prefix(crate::METADATA_STREAM_PREFIX)
        .unwrap_or(stream);
    s.starts_with(crate::TRACKING_REGISTRY_STREAM) || s.starts_with("$ps-") || s == CONFIG_STREAM
}

pub(crate) fn parked_stream_of(id: &str) -> String {
    format!("$ps-{id}-parked")
}

pub(crate) fn checkpoint_source_of(id: &str) -> String {
    format!("$ps-{id}")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn check_group_name(group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::InvalidArgument("the group name is empty".into()));
    }
    if group.len() > GROUP_NAME_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "the group name is {} bytes, over the limit of {GROUP_NAME_BYTES_MAX}",
            group.len()
        )));
    }
    if group.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "the group name contains a control character".into(),
        ));
    }
    Ok(())
}

fn not_found(key: &GroupKey) -> Error {
    Error::GroupNotFound {
        source_name: key.source.name().to_string(),
        group: key.group.clone(),
    }
}

/// A consumer connected to a group. Dropping it disconnects it: its in-flight events go to
/// the other consumers.
pub struct GroupConsumer {
    pub id: u64,
    pub key: GroupKey,
    pub rx: mpsc::Receiver<Delivery>,
    group: mpsc::Sender<Cmd>,
}

impl GroupConsumer {
    /// Acknowledges events by id.
    pub async fn ack(&self, ids: Vec<Uuid>) -> Result<()> {
        check_ids(&ids)?;
        self.group
            .send(Cmd::Ack {
                consumer: self.id,
                ids,
            })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Refuses events by id. A reason longer than [`NACK_REASON_BYTES_MAX`] is cut there (it
    /// is kept with every parked event).
    pub async fn nack(&self, ids: Vec<Uuid>, action: NackAction, mut reason: String) -> Result<()> {
        check_ids(&ids)?;
        if reason.len() > NACK_REASON_BYTES_MAX {
            let mut at = NACK_REASON_BYTES_MAX;
            while !reason.is_char_boundary(at) {
                at -= 1;
            }
            reason.truncate(at);
        }
        let action = match action {
            NackAction::RetryAfter(d) => NackAction::RetryAfter(d.min(RETRY_DELAY_MAX)),
            other => other,
        };
        self.group
            .send(Cmd::Nack {
                consumer: self.id,
                ids,
                action,
                reason,
            })
            .await
            .map_err(|_| Error::Closed)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        let cmd = Cmd::Disconnect { consumer: self.id };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.group.try_send(cmd) {
            let group = self.group.clone();
            tokio::spawn(async move {
                let _ = group.send(cmd).await;
            });
        }
    }
}

impl Service {
    /// Checks that `who` may use (create, read, consume) a group on `source`.
    fn authorize_source(&self, who: &Principal, source: &GroupSource) -> Result<()> {
        match source {
            GroupSource::All => self.authorize_all(who),
            GroupSource::Stream(name) => {
                self.check_stream_name(name)?;
                if is_bookkeeping(name) {
                    return Err(Error::InvalidArgument(format!(
                        "'{name}' is the server's bookkeeping; no group can read it"
                    )));
                }
                self.authorize(who, Access::Read, name)
            }
        }
    }

    /// Checks the group's name, and that `who` may use its source.
    fn authorize_key(&self, who: &Principal, key: &GroupKey) -> Result<()> {
        check_group_name(&key.group)?;
        self.authorize_source(who, &key.source)
    }

    fn authorize_operator(&self, who: &Principal) -> Result<()> {
        match who {
            Principal::Anonymous => Err(Error::Unauthenticated(
                "this server requires credentials (user name and password)".into(),
            )),
            w if w.is_operator() => Ok(()),
            w => Err(super::denied(w, "administer", "$persistentSubscriptions")),
        }
    }

    /// Loads the group definitions and starts every group. Called once by the server after
    /// the service starts.
    pub async fn start_groups(self: &Arc<Self>) -> Result<()> {
        let mut registry = self.groups.registry.lock().await;
        let store = Arc::clone(&self.store);
        let (records, revision) = blocking(move || load_config(&store)).await?;
        registry.records = records;
        registry.revision = revision;
        for record in registry.records.clone() {
            match self.spawn_group(&record).await {
                Ok(tx) => {
                    registry.running.insert(record.key(), tx);
                }
                Err(e) => {
                    tracing::error!(group = %record.key(), error = %e, "persistent subscription group not started");
                }
            }
        }
        Ok(())
    }

    async fn spawn_group(self: &Arc<Self>, record: &GroupRecord) -> Result<mpsc::Sender<Cmd>> {
        let settings = record.settings.effective()?;
        let f = record.filter.clone();
        let filter = blocking(move || f.compile()).await?;
        let store = Arc::clone(&self.store);
        let source = checkpoint_source_of(&record.id);
        let checkpoint = blocking(move || store.tracking(&source))
            .await?
            .map(|t| t.position);
        Ok(Group::spawn(
            Arc::clone(self),
            Start {
                key: record.key(),
                id: record.id.clone(),
                settings,
                filter,
                resolved_start: record.resolved_start,
            },
            checkpoint,
            self.groups.commits.clone(),
        ))
    }

    /// Stops every group, writing their last checkpoints. Called at shutdown.
    pub async fn stop_groups(&self) {
        let running: Vec<_> = {
            let mut registry = self.groups.registry.lock().await;
            registry.running.drain().collect()
        };
        for (_, tx) in running {
            stop(&tx, Error::Closed).await;
        }
    }

    /// Creates a group. `filter` applies to `$all` groups only.
    pub async fn create_group(
        self: &Arc<Self>,
        who: &Principal,
        key: GroupKey,
        settings: GroupSettings,
        filter: GroupFilter,
    ) -> Result<()> {
        self.authorize_key(who, &key)?;
        if matches!(key.source, GroupSource::Stream(_)) && !filter.is_empty() {
            return Err(Error::InvalidArgument(
                "filters apply to groups on $all only".into(),
            ));
        }
        settings.effective()?;
        let f = filter.clone();
        blocking(move || f.compile().map(drop)).await?;
        let mut registry = self.groups.registry.lock().await;
        if registry.records.iter().any(|r| r.key() == key) {
            return Err(Error::GroupExists {
                source_name: key.source.name().to_string(),
                group: key.group,
            });
        }
        if registry.records.len() >= GROUPS_MAX {
            return Err(Error::LimitExceeded {
                what: crate::error::Limit::PersistentGroups,
                limit: GROUPS_MAX as u64,
                actual: registry.records.len() as u64 + 1,
            });
        }
        let resolved_start = match &key.source {
            GroupSource::All => self.store.last_position().0 + 1,
            GroupSource::Stream(name) => self
                .store
                .stream_revision(name)
                .ok()
                .flatten()
                .map_or(0, |r| r.0 + 1),
        };
        let record = GroupRecord {
            source: key.source.clone(),
            group: key.group.clone(),
            id: Uuid::new_v4().simple().to_string(),
            settings,
            filter,
            resolved_start,
            created_us: now_us(),
        };
        let mut records = registry.records.clone();
        records.push(record.clone());
        self.write_config(&mut registry, records).await?;
        let tx = self.spawn_group(&record).await?;
        registry.running.insert(key, tx);
        Ok(())
    }

    /// Replaces a group's settings. Its consumers are dropped (they reconnect), its
    /// checkpoint and parked events are kept. The filter of a `$all` group is kept when
    /// `filter` is `None`.
    pub async fn update_group(
        self: &Arc<Self>,
        who: &Principal,
        key: GroupKey,
        settings: GroupSettings,
        filter: Option<GroupFilter>,
    ) -> Result<()> {
        self.authorize_key(who, &key)?;
        settings.effective()?;
        if let Some(f) = filter.clone() {
            blocking(move || f.compile().map(drop)).await?;
        }
        let mut registry = self.groups.registry.lock().await;
        let Some(at) = registry.records.iter().position(|r| r.key() == key) else {
            return Err(not_found(&key));
        };
        if matches!(key.source, GroupSource::Stream(_))
            && filter.as_ref().is_some_and(|f| !f.is_empty())
        {
            return Err(Error::InvalidArgument(
                "filters apply to groups on $all only".into(),
            ));
        }
        let old = registry.records[at].clone();
        let mut records = registry.records.clone();
        records[at].settings = settings;
        if let Some(f) = filter {
            records[at].filter = f;
        }
        let record = records[at].clone();
        if let Some(tx) = registry.running.remove(&key) {
            stop(
                &tx,
                Error::GroupDropped {
                    source_name: key.source.name().to_string(),
                    group: key.group.clone(),
                    reason: "the group was updated".into(),
                },
            )
            .await;
        }
        // The group runs what is stored: the new definition once written, else the old one.
        let written = self.write_config(&mut registry, records).await;
        let running = if written.is_ok() { &record } else { &old };
        let tx = self.spawn_group(running).await?;
        registry.running.insert(key, tx);
        written
    }

    /// Deletes a group, its checkpoint and its parked events. Its consumers are dropped with
    /// `GroupNotFound`.
    pub async fn delete_group(self: &Arc<Self>, who: &Principal, key: GroupKey) -> Result<()> {
        self.authorize_key(who, &key)?;
        let mut registry = self.groups.registry.lock().await;
        let Some(at) = registry.records.iter().position(|r| r.key() == key) else {
            return Err(not_found(&key));
        };
        let mut records = registry.records.clone();
        let record = records.remove(at);
        self.write_config(&mut registry, records).await?;
        if let Some(tx) = registry.running.remove(&key) {
            stop(&tx, not_found(&key)).await;
        }
        // The checkpoint source dies with the id; the parked entries are deleted.
        let parked = parked_stream_of(&record.id);
        let store = Arc::clone(&self.store);
        let result = blocking(move || {
            match store.delete_stream_by(&parked, ExpectedRevision::Any, "$system") {
                Ok(_) | Err(Error::StreamNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(group = %key, error = %e, "deleting the parked events of a deleted group failed");
        }
        Ok(())
    }

    /// Connects a consumer. `buffer_size` is its in-flight limit.
    pub async fn consume(
        &self,
        who: &Principal,
        key: GroupKey,
        mut name: String,
        buffer_size: usize,
    ) -> Result<GroupConsumer> {
        self.authorize_key(who, &key)?;
        if name.len() > CONSUMER_NAME_BYTES_MAX {
            let mut at = CONSUMER_NAME_BYTES_MAX;
            while !name.is_char_boundary(at) {
                at -= 1;
            }
            name.truncate(at);
        }
        let group = {
            let registry = self.groups.registry.lock().await;
            registry.running.get(&key).cloned()
        };
        let Some(group) = group else {
            return Err(not_found(&key));
        };
        let buffer_size = buffer_size.clamp(1, settings::BUFFER_MAX as usize);
        let (tx, rx) = mpsc::channel(buffer_size + 1);
        let (reply, answer) = oneshot::channel();
        group
            .send(Cmd::Connect {
                name,
                user: who.name().to_string(),
                buffer_size,
                tx,
                reply,
            })
            .await
            .map_err(|_| not_found(&key))?;
        let id = answer.await.map_err(|_| not_found(&key))??;
        Ok(GroupConsumer { id, key, rx, group })
    }

    /// One group's figures.
    pub async fn group_info(&self, who: &Principal, key: GroupKey) -> Result<GroupInfo> {
        self.authorize_key(who, &key)?;
        let (tx, settings, parked) = {
            let registry = self.groups.registry.lock().await;
            let record = registry.records.iter().find(|r| r.key() == key);
            let Some(record) = record else {
                return Err(not_found(&key));
            };
            (
                registry.running.get(&key).cloned(),
                record.settings.clone(),
                parked_stream_of(&record.id),
            )
        };
        let Some(tx) = tx else {
            return Err(not_found(&key));
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Cmd::Info { reply })
            .await
            .map_err(|_| not_found(&key))?;
        let mut info = answer.await.map_err(|_| not_found(&key))?;
        info.settings = Some(settings);
        // The parked list is counted from the store, which a truncation changes behind the
        // group's back.
        let store = Arc::clone(&self.store);
        let (count, oldest) = blocking(move || {
            let count = group::parked_count(&store, &parked).ok();
            let events = match store.read_stream(&parked, Revision(0), Direction::Forwards, 1) {
                Ok(events) => events,
                Err(_) => return Ok((count, None)),
            };
            Ok((count, events.first().map(|e| e.timestamp_us)))
        })
        .await
        .unwrap_or((None, None));
        if let Some(count) = count {
            info.parked = count;
        }
        info.parked_oldest_us = oldest;
        Ok(info)
    }

    /// Every group (on `source`, when given), with its figures.
    pub async fn list_groups(
        &self,
        who: &Principal,
        source: Option<GroupSource>,
    ) -> Result<Vec<GroupInfo>> {
        match &source {
            Some(s) => self.authorize_source(who, s)?,
            None => self.authorize_all(who)?,
        }
        let keys: Vec<GroupKey> = {
            let registry = self.groups.registry.lock().await;
            registry
                .records
                .iter()
                .filter(|r| source.as_ref().is_none_or(|s| *s == r.source))
                .map(GroupRecord::key)
                .collect()
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.group_info(&Principal::System, key).await {
                Ok(info) => out.push(info),
                Err(Error::GroupNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Delivers the group's parked events again (all, or the oldest `stop_at`), before new
    /// events; the checkpoint does not move for them.
    pub async fn replay_parked(
        &self,
        who: &Principal,
        key: GroupKey,
        stop_at: Option<u64>,
    ) -> Result<()> {
        check_group_name(&key.group)?;
        self.authorize_operator(who)?;
        let tx = self.running(&key).await?;
        let (reply, answer) = oneshot::channel();
        tx.send(Cmd::ReplayParked { stop_at, reply })
            .await
            .map_err(|_| not_found(&key))?;
        answer.await.map_err(|_| not_found(&key))?
    }

    /// Drops the group's parked events without replaying them.
    pub async fn truncate_parked(self: &Arc<Self>, who: &Principal, key: GroupKey) -> Result<u64> {
        check_group_name(&key.group)?;
        self.authorize_operator(who)?;
        let id = {
            let registry = self.groups.registry.lock().await;
            let record = registry.records.iter().find(|r| r.key() == key);
            record
                .map(|r| r.id.clone())
                .ok_or_else(|| not_found(&key))?
        };
        let stream = parked_stream_of(&id);
        let store = Arc::clone(&self.store);
        let s = stream.clone();
        let (end, count) = blocking(move || {
            let end = store.stream_revision(&s)?.map_or(0, |r| r.0 + 1);
            Ok((end, group::parked_count(&store, &s)?))
        })
        .await?;
        if end > 0 {
            group::truncate_parked(self, &stream, end).await?;
        }
        Ok(count)
    }

    /// Stops every group and starts them again from their stored definitions and
    /// checkpoints; consumers are dropped and reconnect.
    pub async fn restart_groups(self: &Arc<Self>, who: &Principal) -> Result<()> {
        self.authorize_operator(who)?;
        let mut registry = self.groups.registry.lock().await;
        let running: Vec<_> = registry.running.drain().collect();
        for (key, tx) in running {
            stop(
                &tx,
                Error::GroupDropped {
                    source_name: key.source.name().to_string(),
                    group: key.group.clone(),
                    reason: "the persistent subscription subsystem restarted".into(),
                },
            )
            .await;
        }
        for record in registry.records.clone() {
            let tx = self.spawn_group(&record).await?;
            registry.running.insert(record.key(), tx);
        }
        Ok(())
    }

    async fn running(&self, key: &GroupKey) -> Result<mpsc::Sender<Cmd>> {
        let registry = self.groups.registry.lock().await;
        registry
            .running
            .get(key)
            .cloned()
            .ok_or_else(|| not_found(key))
    }

    async fn write_config(&self, registry: &mut Registry, records: Vec<GroupRecord>) -> Result<()> {
        let data = serde_json::to_vec(&ConfigData {
            groups: records.clone(),
        })
        .map_err(|e| Error::Internal(format!("group definitions do not serialize: {e}")))?;
        let expected = registry.revision.map_or(ExpectedRevision::NoStream, |r| {
            ExpectedRevision::Exact(Revision(r))
        });
        let part = StreamAppend::new(
            CONFIG_STREAM,
            expected,
            vec![EventData::json(CONFIG_EVENT_TYPE, data)],
        );
        let results = self.commit_as(&Principal::System, vec![part], None).await?;
        registry.revision = results.first().map(|r| r.revision.0);
        registry.records = records;
        Ok(())
    }
}

async fn stop(tx: &mpsc::Sender<Cmd>, reason: Error) {
    let (reply, done) = oneshot::channel();
    if tx.send(Cmd::Stop { reason, reply }).await.is_ok() {
        let _ = done.await;
    }
}

fn load_config(store: &crate::Store) -> Result<(Vec<GroupRecord>, Option<u64>)> {
    let events = match store.read_stream(CONFIG_STREAM, Revision::END, Direction::Backwards, 1) {
        Ok(events) => events,
        Err(Error::StreamNotFound { .. }) => return Ok((Vec::new(), None)),
        Err(e) => return Err(e),
    };
    let Some(last) = events.first() else {
        return Ok((Vec::new(), None));
    };
    let config: ConfigData = serde_json::from_slice(last.data()).map_err(|e| {
        Error::InvalidArgument(format!(
            "the persistent subscription definitions at position {} do not parse: {e}",
            last.position.0
        ))
    })?;
    Ok((config.groups, Some(last.revision.0)))
}
