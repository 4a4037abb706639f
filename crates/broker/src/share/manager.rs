//! The share-partitions this broker leads and the share sessions of the
//! members fetching from it: where ShareFetch and ShareAcknowledge find
//! their state, and where a fetch reads a partition and acquires what it
//! read.
//!
//! Each share-partition has its own lock, held across a fetch's read and
//! acquisition, so two members fetching from one partition acquire
//! distinct records and never wait on a read they would both have made.
//! Nothing here holds two of those locks at once; the session cache's lock
//! is taken alone, before or after.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;
use weir_storage::{Clock, DurableWait, Partition, batches};

use super::dead_letter::Job;
use super::partition::{
    AckBatch, AcquiredRange, Changes, FetchedBatch, InFlight, PersistedPartition, SharePartition,
    ShareSettings,
};
use super::session::{Sessions, TopicIdPartition};
use super::state;
use crate::error::ApiError;
use crate::group_config::ShareGroupSettings;

/// A group's share settings, from its group configs and the broker's.
pub(crate) type SettingsOf = Box<dyn Fn(&str) -> ShareGroupSettings + Send + Sync>;

/// A share-partition: group, topic id and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SharePartitionKey {
    pub group: Arc<str>,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// The broker's share groups settings.
#[derive(Debug, Clone)]
pub(crate) struct ShareConfig {
    /// The settings every share-partition acts on.
    pub settings: ShareSettings,
    /// `group.share.max.share.sessions`.
    pub max_sessions: usize,
    /// How long a session must be idle before a new one may evict it
    /// (`group.share.session.timeout.ms`).
    pub session_idle_ms: i64,
    /// Most share-partitions kept: group ids come from clients, so the map
    /// is bounded. Past it, a new share-partition is refused with
    /// COORDINATOR_NOT_AVAILABLE (retriable), as `groups_max` refuses a
    /// new group. Kafka has no such bound.
    pub partitions_max: usize,
}

/// A wait for a share-partition's new state to be durable: on a single
/// node, for the local log's fsync; on a cluster, for the share
/// coordinator's answer (the ISR holds it).
#[derive(Debug, Clone)]
pub(crate) enum StateWait {
    Local(DurableWait),
    Remote(watch::Receiver<Option<Result<(), ApiError>>>),
}

impl StateWait {
    /// Resolves once the state is durable; else the error says why
    /// (KAFKA_STORAGE_ERROR, or on a cluster the share coordinator's answer:
    /// FENCED_LEADER_EPOCH when this broker no longer leads the partition).
    pub(crate) async fn wait(self) -> Result<(), ApiError> {
        let storage = |why: String| ApiError::new(ResponseError::KafkaStorageError, why);
        match self {
            Self::Local(wait) => wait.wait().await.map_err(|e| storage(e.to_string())),
            Self::Remote(mut rx) => match rx.wait_for(Option::is_some).await {
                Ok(done) => done.clone().unwrap_or(Ok(())),
                Err(_) => Err(storage("the share-state writer stopped".into())),
            },
        }
    }
}

/// One change of a share-partition's state for a cluster's share
/// coordinator, in the order it was made (`remote` sends them).
#[derive(Debug)]
pub(crate) struct Write {
    pub key: SharePartitionKey,
    /// The snapshot, or `None` for a tombstone.
    pub value: Option<PersistedPartition>,
    /// The leader epoch of the share-partition's topic partition here.
    pub leader_epoch: i32,
    /// Told the outcome.
    pub done: watch::Sender<Option<Result<(), ApiError>>>,
}

/// Reads a share-partition's state from its share coordinator (a
/// cluster): `None` when it has none. Blocks on the network.
pub(crate) type ReadState = Box<
    dyn Fn(&SharePartitionKey, i32) -> Result<Option<PersistedPartition>, ApiError> + Send + Sync,
>;

/// Where share-partition state is kept.
enum Store {
    /// A single node: the partitions of `__share_group_state`, each change
    /// appended here.
    Local(Vec<Partition>),
    /// A cluster: each change sent to the share coordinator of its
    /// `__share_group_state` partition, by the writer task (`remote`), and
    /// a share-partition's state read from there when it is taken up.
    Cluster {
        writes: mpsc::UnboundedSender<Write>,
        read: ReadState,
    },
}

/// What one fetch acquired from one partition.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acquisition {
    /// The batches holding the acquired records, as stored.
    pub records: Bytes,
    pub acquired: Vec<AcquiredRange>,
}

/// Every share-partition and share session on this broker.
pub(crate) struct ShareManager {
    config: ShareConfig,
    settings_of: SettingsOf,
    /// Each group's settings as last resolved: resolving reads the
    /// metadata store, whose lock a metadata commit holds across its fsync,
    /// and requests ask on the runtime. Emptied whenever group configs may
    /// have changed ([`Self::forget_settings`]); bounded by [`SETTINGS_KEPT`].
    settings: Mutex<SettingsCache>,
    clock: Arc<dyn Clock>,
    partitions: Mutex<HashMap<SharePartitionKey, Arc<Mutex<SharePartition>>>>,
    sessions: Mutex<Sessions>,
    /// Where every change of a share-partition's durable state goes, once
    /// set (at load on a single node, at start on a cluster). Unset, state
    /// is kept in memory (share groups off, or unit tests).
    store: OnceLock<Store>,
    /// Moved on whenever records may have become available again (an
    /// acknowledgement, a release, an expired lock), so waiting fetches
    /// look again.
    changed: watch::Sender<u64>,
    /// Dead letters to write, for the writer (`dead_letter`). Unbounded, but
    /// what it holds is bounded: each record in it is a dead-lettering slot
    /// of a share-partition, and their slots are bounded.
    jobs: mpsc::UnboundedSender<Job>,
    /// The writer's end, until the background work takes it.
    jobs_rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    /// On a cluster, the share coordinator of the `__share_group_state`
    /// partitions this broker leads.
    coordinator: super::coordinator::ShareCoordinator,
}

impl std::fmt::Debug for ShareManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareManager").finish_non_exhaustive()
    }
}

impl ShareManager {
    pub(crate) fn new(config: ShareConfig, clock: Arc<dyn Clock>, settings_of: SettingsOf) -> Self {
        let sessions = Sessions::new(config.max_sessions, config.session_idle_ms);
        let coordinator = super::coordinator::ShareCoordinator::new(config.partitions_max);
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        Self {
            config,
            settings_of,
            settings: Mutex::default(),
            clock,
            partitions: Mutex::new(HashMap::new()),
            sessions: Mutex::new(sessions),
            store: OnceLock::new(),
            changed: watch::channel(0).0,
            jobs,
            jobs_rx: Mutex::new(Some(jobs_rx)),
            coordinator,
        }
    }

    /// The share coordinator (a cluster's).
    pub(crate) fn coordinator(&self) -> &super::coordinator::ShareCoordinator {
        &self.coordinator
    }

    /// Start the dead-letter writer and the lock-expiry driver on the
    /// runtime (once; later calls do nothing). On a cluster, also the
    /// share-state writer, and state is kept by the share coordinators
    /// from now on.
    pub(crate) fn start_background(&self, broker: &Arc<crate::Broker>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if broker.metadata().replicated() && self.store.get().is_none() {
            let (writes, rx) = mpsc::unbounded_channel();
            let store = Store::Cluster {
                writes,
                read: super::remote::reader(Arc::downgrade(broker)),
            };
            if self.store.set(store).is_ok() {
                tokio::spawn(super::remote::drive(Arc::downgrade(broker), rx));
            }
        }
        let taken = weir_sync::lock(&self.jobs_rx)
            .unwrap_or_else(weir_sync::PoisonedLock::reraise)
            .take();
        if let Some(jobs) = taken {
            tokio::spawn(super::dead_letter::drive(Arc::downgrade(broker), jobs));
        }
    }

    /// The broker's defaults, for answers that name no group.
    pub(crate) fn settings(&self) -> &ShareSettings {
        &self.config.settings
    }

    /// What `group` acts on: its group configs, else the broker's.
    pub(crate) fn group_settings(&self, group: &str) -> ShareGroupSettings {
        let generation = {
            let cache = self.settings_cache();
            if let Some(known) = cache.groups.get(group) {
                return known.clone();
            }
            cache.generation
        };
        let resolved = (self.settings_of)(group);
        let mut cache = self.settings_cache();
        // Kept only if nothing was forgotten meanwhile: what was read may
        // predate the change that made it forget.
        if cache.generation == generation {
            if cache.groups.len() >= SETTINGS_KEPT {
                cache.groups.clear();
            }
            cache.groups.insert(Arc::from(group), resolved.clone());
        }
        resolved
    }

    /// Group configs may have changed (altered here, or a cluster's
    /// metadata moved on): resolve every group's settings afresh.
    pub(crate) fn forget_settings(&self) {
        let mut cache = self.settings_cache();
        cache.groups.clear();
        cache.generation = cache.generation.wrapping_add(1);
    }

    fn settings_cache(&self) -> MutexGuard<'_, SettingsCache> {
        weir_sync::lock(&self.settings).unwrap_or_else(weir_sync::PoisonedLock::reraise)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The session cache.
    pub(crate) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        weir_sync::lock(&self.sessions).unwrap_or_else(weir_sync::PoisonedLock::reraise)
    }

    /// A receiver that sees every change that may make records available.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn map(&self) -> MutexGuard<'_, HashMap<SharePartitionKey, Arc<Mutex<SharePartition>>>> {
        weir_sync::lock(&self.partitions).unwrap_or_else(weir_sync::PoisonedLock::reraise)
    }

    /// The share-partition of `key`, created at `start()` (the offset
    /// `share.auto.offset.reset` names) when it has none. Blocks on file I/O.
    pub(crate) fn get_or_start(
        &self,
        key: &SharePartitionKey,
        leader_epoch: i32,
        start: impl FnOnce() -> i64,
    ) -> Result<Arc<Mutex<SharePartition>>, ApiError> {
        self.start(key, leader_epoch, start).map(|(sp, _)| sp)
    }

    /// [`Self::get_or_start`], with the wait for a new share-partition's
    /// first state to be durable: a restart must not start it again at a
    /// later high watermark and skip what came in between. On a cluster, a
    /// share-partition is taken up from its share coordinator's state,
    /// which its previous leader wrote; only one it has none of starts
    /// afresh. `leader_epoch` is its topic partition's, here.
    pub(crate) fn start(
        &self,
        key: &SharePartitionKey,
        leader_epoch: i32,
        start: impl FnOnce() -> i64,
    ) -> Result<(Arc<Mutex<SharePartition>>, Option<StateWait>), ApiError> {
        if let Some(sp) = self.map().get(key) {
            return Ok((sp.clone(), None));
        }
        // Read with no lock held: it may cross the network.
        let found = match self.store.get() {
            Some(Store::Cluster { read, .. }) => read(key, leader_epoch)?,
            _ => None,
        };
        let mut map = self.map();
        if let Some(sp) = map.get(key) {
            return Ok((sp.clone(), None));
        }
        if map.len() >= self.config.partitions_max {
            tracing::warn!(
                partitions_max = self.config.partitions_max,
                "refusing a new share-partition: the broker holds its most"
            );
            return Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "the broker holds as many share-partitions as it may",
            ));
        }
        if let Some(persisted) = found {
            let sp = SharePartition::from_persisted(&persisted).led_at(leader_epoch);
            self.resume_dead_letters(key, &sp);
            let sp = Arc::new(Mutex::new(sp));
            map.insert(key.clone(), sp.clone());
            tracing::info!(group = %key.group, topic_id = %key.topic_id, partition = key.partition,
                start_offset = persisted.start_offset, leader_epoch,
                "took up a share-partition from its share coordinator");
            return Ok((sp, None));
        }
        let sp = Arc::new(Mutex::new(
            SharePartition::new(start()).led_at(leader_epoch),
        ));
        // Locked before it is published, and its first snapshot appended
        // under that lock once the map is free again: whoever finds it
        // next writes after it.
        let started = lock(&sp);
        map.insert(key.clone(), sp.clone());
        drop(map);
        match self.persist(key, &started) {
            Ok(durable) => {
                drop(started);
                Ok((sp, durable))
            }
            Err(e) => {
                drop(started);
                self.map().remove(key);
                Err(e)
            }
        }
    }

    /// Take the state of every share-partition from `store` (the
    /// partitions of `__share_group_state`, read whole at start-up), and
    /// write every change there from now on. Blocks on file I/O.
    pub(crate) fn load(&self, store: Vec<Partition>) -> Result<usize, String> {
        let mut loaded = state::Loaded::new();
        for (index, partition) in (0..).zip(&store) {
            state::load_partition(index, partition, &mut loaded)?;
        }
        let count = loaded.len();
        let mut map = self.map();
        for (key, persisted) in loaded {
            let sp = SharePartition::from_persisted(&persisted);
            self.resume_dead_letters(&key, &sp);
            map.insert(key, Arc::new(Mutex::new(sp)));
        }
        drop(map);
        self.store
            .set(Store::Local(store))
            .map_err(|_| "share-partition state was loaded twice".to_string())?;
        Ok(count)
    }

    /// Records of `sp` archived for a dead letter that may or may not have
    /// been written before the broker stopped (or its previous leader
    /// did): the writer looks first.
    fn resume_dead_letters(&self, key: &SharePartitionKey, sp: &SharePartition) {
        let letters = sp.pending_dead_letters();
        if !letters.is_empty() {
            self.dead_letter(Job {
                key: key.clone(),
                letters,
                after: None,
                look_first: true,
            });
        }
    }

    /// On a cluster: drop every share-partition whose topic partition this
    /// broker no longer leads at the epoch it took it up at (`led` says
    /// the epoch it leads at now, if it does). What it had not written is
    /// lost as acquisitions are at a restart; its next leader takes it up
    /// from the share coordinator. Returns how many were dropped.
    pub(crate) fn drop_unled(&self, led: impl Fn(&SharePartitionKey) -> Option<i32>) -> usize {
        let all: Vec<(SharePartitionKey, Arc<Mutex<SharePartition>>)> = self
            .map()
            .iter()
            .map(|(k, sp)| (k.clone(), sp.clone()))
            .collect();
        let mut dropped = 0;
        for (key, sp) in all {
            let now = led(&key);
            // Under its lock (a request using it finishes first), so
            // nothing of it is written once it is retired.
            let mut held = lock(&sp);
            if now == Some(held.leader_epoch()) {
                continue;
            }
            held.retire();
            drop(held);
            let mut map = self.map();
            if map
                .get(&key)
                .is_some_and(|current| Arc::ptr_eq(current, &sp))
            {
                map.remove(&key);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.changed();
        }
        dropped
    }

    /// Forget every share-partition of `group` here (of topic `topic`
    /// only, when given): the group was deleted, or its offsets were
    /// (DeleteShareGroupOffsets). Their tombstones are written, and the
    /// waits resolve once they are durable. Blocks on file I/O.
    pub(crate) fn forget_of(&self, group: &str, topic: Option<Uuid>) -> Vec<StateWait> {
        self.forget(|k| &*k.group == group && topic.is_none_or(|t| k.topic_id == t))
    }

    /// What each share-partition of `group` here has in flight.
    pub(crate) fn group_in_flight(&self, group: &str) -> Vec<(SharePartitionKey, InFlight)> {
        let now_ms = self.now_ms();
        self.of_group(group, |sp| sp.summary(now_ms))
    }

    /// What every share-partition here has in flight.
    pub(crate) fn all_in_flight(&self) -> Vec<(SharePartitionKey, InFlight)> {
        let now_ms = self.now_ms();
        self.each(|_| true, |sp| sp.summary(now_ms))
    }

    /// The start offset of each share-partition of `group` here.
    pub(crate) fn group_start_offsets(&self, group: &str) -> Vec<(SharePartitionKey, i64)> {
        self.of_group(group, SharePartition::start_offset)
    }

    /// `look` at each share-partition of `group` here, under its lock
    /// (taken after the map's is let go).
    fn of_group<T>(
        &self,
        group: &str,
        look: impl Fn(&SharePartition) -> T,
    ) -> Vec<(SharePartitionKey, T)> {
        self.each(|k| &*k.group == group, look)
    }

    /// `look` at each share-partition here whose key is `chosen`, under its
    /// lock (taken after the map's is let go).
    fn each<T>(
        &self,
        chosen: impl Fn(&SharePartitionKey) -> bool,
        look: impl Fn(&SharePartition) -> T,
    ) -> Vec<(SharePartitionKey, T)> {
        let picked: Vec<(SharePartitionKey, Arc<Mutex<SharePartition>>)> = self
            .map()
            .iter()
            .filter(|(k, _)| chosen(k))
            .map(|(k, sp)| (k.clone(), sp.clone()))
            .collect();
        picked
            .into_iter()
            .map(|(k, sp)| {
                let seen = look(&lock(&sp));
                (k, seen)
            })
            .collect()
    }

    /// Start `key`'s share-partition afresh at `offset`
    /// (AlterShareGroupOffsets): what was in flight is dropped. The wait
    /// resolves once the new state is durable. Blocks on file I/O.
    pub(crate) fn reset(
        &self,
        key: &SharePartitionKey,
        leader_epoch: i32,
        offset: i64,
    ) -> Result<Option<StateWait>, ApiError> {
        let (sp, started) = self.start(key, leader_epoch, || offset)?;
        if started.is_some() {
            return Ok(started);
        }
        let mut sp = lock(&sp);
        sp.reset_to(offset);
        self.changed();
        self.persist(key, &sp)
    }

    fn forget(&self, which: impl Fn(&SharePartitionKey) -> bool) -> Vec<StateWait> {
        let gone: Vec<(SharePartitionKey, Arc<Mutex<SharePartition>>)> = {
            let mut map = self.map();
            let keys: Vec<SharePartitionKey> = map.keys().filter(|k| which(k)).cloned().collect();
            keys.into_iter()
                .filter_map(|key| map.remove(&key).map(|sp| (key, sp)))
                .collect()
        };
        let mut waits = Vec::new();
        for (key, sp) in gone {
            // Under its lock, so no snapshot of it follows the tombstone.
            let mut sp = lock(&sp);
            sp.retire();
            match self.append(&key, None, sp.leader_epoch()) {
                Ok(wait) => waits.extend(wait),
                Err(e) => {
                    tracing::warn!(group = %key.group, error = %e.message,
                        "cannot write a share-partition's tombstone");
                }
            }
        }
        waits
    }

    /// Append `sp`'s durable state as `key`'s newest snapshot; the wait
    /// resolves once it is durable. `None` when state is kept in memory.
    /// Called with `sp`'s lock held, so a share-partition's snapshots reach
    /// the log in the order they were taken.
    fn persist(
        &self,
        key: &SharePartitionKey,
        sp: &SharePartition,
    ) -> Result<Option<StateWait>, ApiError> {
        if sp.is_retired() {
            return Ok(None);
        }
        self.append(key, Some(sp.persisted()), sp.leader_epoch())
    }

    /// Write `key`'s record (a snapshot, or a tombstone for `None`): append
    /// it to its partition of `__share_group_state` here, or (a cluster)
    /// hand it to the writer for its share coordinator. `None` when state
    /// is kept in memory.
    fn append(
        &self,
        key: &SharePartitionKey,
        value: Option<PersistedPartition>,
        leader_epoch: i32,
    ) -> Result<Option<StateWait>, ApiError> {
        let store = match self.store.get() {
            None => return Ok(None),
            Some(Store::Cluster { writes, .. }) => {
                let (done, wait) = watch::channel(None);
                let write = Write {
                    key: key.clone(),
                    value,
                    leader_epoch,
                    done,
                };
                if writes.send(write).is_err() {
                    return Err(ApiError::new(
                        ResponseError::CoordinatorNotAvailable,
                        "the share-state writer has stopped",
                    ));
                }
                return Ok(Some(StateWait::Remote(wait)));
            }
            Some(Store::Local(store)) => store,
        };
        let count = i32::try_from(store.len()).unwrap_or(i32::MAX);
        let index = state::state_partition(key, count);
        let partition = usize::try_from(index)
            .ok()
            .and_then(|i| store.get(i))
            .ok_or_else(|| {
                ApiError::new(
                    ResponseError::CoordinatorNotAvailable,
                    format!("{} has no partition {index}", state::STATE_TOPIC),
                )
            })?;
        let entry = (
            state::encode_key(key),
            value.as_ref().map(state::encode_value),
        );
        let storage_error = |what: String| {
            tracing::warn!(group = %key.group, partition = key.partition, error = %what,
                "cannot write share-partition state");
            ApiError::new(ResponseError::KafkaStorageError, what)
        };
        let batches =
            crate::group::encode_batches(&[entry], self.now_ms()).map_err(storage_error)?;
        let mut last = None;
        for batch in batches {
            let out = partition
                .append(batch)
                .map_err(|e| storage_error(e.to_string()))?;
            last = Some(StateWait::Local(out.durable));
        }
        Ok(last)
    }

    /// The share-partition of `key`, if it has one.
    pub(crate) fn get(&self, key: &SharePartitionKey) -> Option<Arc<Mutex<SharePartition>>> {
        self.map().get(key).cloned()
    }

    /// Acquire for `member` what `partition` holds past what the group has
    /// acquired: at most `max_records` records, read up to the high
    /// watermark in at most `max_bytes` (a first batch larger than that is
    /// still read whole, as Fetch does).
    pub(crate) fn acquire(
        &self,
        key: &SharePartitionKey,
        partition: &Partition,
        member: &Arc<str>,
        (max_records, max_bytes): (u32, usize),
        group: &ShareGroupSettings,
    ) -> Result<Acquisition, ApiError> {
        let offsets = partition.offsets();
        let sp = self.get_or_start(key, partition.leader_epoch(), || {
            group
                .offset_reset
                .start(offsets.log_start, offsets.high_watermark)
        })?;
        let mut sp = lock(&sp);
        let now_ms = self.now_ms();
        let s = &group.partition;
        let mut changes = sp.expire_locks(now_ms, s);
        if sp.start_offset() < offsets.log_start {
            // Retention or DeleteRecords took what the group had not
            // finished: it can no longer be delivered.
            sp.move_start(offsets.log_start);
            changes.persist = true;
        }
        // Nobody waits for these: the fetch goes on whether or not they
        // are durable yet (a failure is logged).
        let _ = self.carry_out(key, &mut sp, changes);
        let mut acquisition = Acquisition::default();
        let mut kept: Vec<Bytes> = Vec::new();
        let (mut left, mut budget, mut step) = (max_records, max_bytes, READ_FIRST_BYTES);
        // Read in growing steps, not `max_bytes` at once: a fetch for a few
        // hundred records must not copy megabytes it then leaves behind.
        let mut read_to = i64::MIN;
        while left > 0 && budget > 0 {
            let Some(from) = sp.next_fetch_offset(now_ms, s) else {
                break;
            };
            if from >= offsets.high_watermark || from <= read_to {
                break;
            }
            let read = partition.read(from, step.min(budget))?;
            if read.records.is_empty() {
                break;
            }
            budget = budget.saturating_sub(read.records.len());
            step = step.saturating_mul(2);
            let mut fetched = Vec::new();
            let mut spans = Vec::new();
            let mut at = 0;
            for (header, batch) in batches(&read.records).map_while(Result::ok) {
                let span = at..at + batch.len();
                at = span.end;
                let dense =
                    i64::from(header.record_count) == i64::from(header.last_offset_delta) + 1;
                fetched.push(FetchedBatch {
                    base_offset: header.base_offset,
                    last_offset: header.last_offset(),
                    control: header.is_control(),
                    present: (!dense)
                        .then(|| record_offsets(read.records.slice_ref(batch)))
                        .flatten(),
                });
                spans.push(span);
            }
            let Some(last) = fetched.last().map(|b| b.last_offset) else {
                break;
            };
            read_to = last;
            let mut got = sp.acquire(member, &fetched, left, now_ms, s);
            let _ = self.carry_out(key, &mut sp, std::mem::take(&mut got.changes));
            let spans = fetched.iter().zip(spans).filter(|(b, _)| {
                got.ranges
                    .iter()
                    .any(|r| r.first_offset <= b.last_offset && b.base_offset <= r.last_offset)
            });
            kept.push(concat(&read.records, spans.map(|(_, span)| span)));
            left = left.saturating_sub(got.records);
            acquisition.acquired.append(&mut got.ranges);
        }
        acquisition.records = match kept.len() {
            0 => Bytes::new(),
            1 => kept.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(kept.iter().map(Bytes::len).sum());
                for part in &kept {
                    out.extend_from_slice(part);
                }
                out.freeze()
            }
        };
        Ok(acquisition)
    }

    /// Apply `member`'s acknowledgements to `key`'s share-partition.
    /// The wait resolves once the new state is durable: answer the
    /// acknowledgement only then. Blocks on file I/O.
    pub(crate) fn acknowledge(
        &self,
        key: &SharePartitionKey,
        member: &str,
        batches: &[AckBatch],
        group: &ShareGroupSettings,
    ) -> Result<Option<StateWait>, ApiError> {
        let sp = self.get(key).ok_or_else(|| {
            ApiError::new(
                ResponseError::InvalidRecordState,
                "the group has acquired nothing from this partition",
            )
        })?;
        let mut sp = lock(&sp);
        let now_ms = self.now_ms();
        let s = &group.partition;
        let expired = sp.expire_locks(now_ms, s);
        let _ = self.carry_out(key, &mut sp, expired);
        let changes = sp
            .acknowledge(member, batches, now_ms, s)
            .map_err(|e| ApiError::new(e, ack_message(e)))?;
        self.carry_out(key, &mut sp, changes)
    }

    /// Release what `member` holds in `partitions` of `group` (its session
    /// closed, was replaced, or forgot them).
    pub(crate) fn release(
        &self,
        group: &Arc<str>,
        member: &str,
        partitions: &BTreeSet<TopicIdPartition>,
    ) {
        if partitions.is_empty() {
            return;
        }
        let settings = self.group_settings(group).partition;
        for (topic_id, partition) in partitions {
            let key = SharePartitionKey {
                group: group.clone(),
                topic_id: *topic_id,
                partition: *partition,
            };
            if let Some(sp) = self.get(&key) {
                let mut sp = lock(&sp);
                let changes = sp.release_member(member, self.now_ms(), &settings);
                let _ = self.carry_out(&key, &mut sp, changes);
            }
        }
    }

    /// Whether `key` has a share-partition here.
    pub(crate) fn holds(&self, key: &SharePartitionKey) -> bool {
        self.map().contains_key(key)
    }

    /// The dead letters of `offsets` of `key` are committed (or will never
    /// be written): those records are done. Blocks on file I/O.
    pub(crate) fn confirm_dead_letters(&self, key: &SharePartitionKey, offsets: &[i64]) {
        if offsets.is_empty() {
            return;
        }
        if let Some(sp) = self.get(key) {
            weir_metrics::metrics().share_dead_lettered(&key.group, offsets.len());
            let mut sp = lock(&sp);
            let changes = sp.dead_lettered(offsets);
            let _ = self.carry_out(key, &mut sp, changes);
        }
    }

    /// Release every lock that expired, in every share-partition (the
    /// driver calls this on a tick, so locks expire without fetches).
    /// Blocks on file I/O.
    pub(crate) fn expire_due(&self) {
        let now_ms = self.now_ms();
        let all: Vec<(SharePartitionKey, Arc<Mutex<SharePartition>>)> = self
            .map()
            .iter()
            .map(|(k, sp)| (k.clone(), sp.clone()))
            .collect();
        for (key, sp) in all {
            // A share-partition busy with a request is left to it: the
            // request expires its locks first.
            let Ok(mut sp) = sp.try_lock() else {
                continue;
            };
            if !sp.locks_due(now_ms) {
                continue;
            }
            let settings = self.group_settings(&key.group).partition;
            let changes = sp.expire_locks(now_ms, &settings);
            let _ = self.carry_out(&key, &mut sp, changes);
        }
    }

    /// The earliest time a lock held in one of `keys` expires or a
    /// backoff there ends, so a waiting fetch looks again then.
    /// Asked from the runtime: a share-partition busy with a fetch's read
    /// is skipped (that fetch's changes wake the waiters anyway).
    pub(crate) fn next_deadline_ms(&self, keys: &[SharePartitionKey]) -> Option<i64> {
        keys.iter()
            .filter_map(|k| self.get(k))
            .filter_map(|sp| sp.try_lock().ok().and_then(|sp| sp.next_deadline_ms()))
            .min()
    }

    /// Carry out what a change asks: persist the new state (the wait says
    /// when it is durable), and hand records archived for dead letters to
    /// the writer, which writes them once that state is durable.
    fn carry_out(
        &self,
        key: &SharePartitionKey,
        sp: &mut SharePartition,
        changes: Changes,
    ) -> Result<Option<StateWait>, ApiError> {
        if !changes.persist {
            return Ok(None);
        }
        self.changed();
        let durable = self.persist(key, sp)?;
        if !changes.dead_letters.is_empty() {
            self.dead_letter(Job {
                key: key.clone(),
                letters: changes.dead_letters,
                after: durable.clone(),
                look_first: false,
            });
        }
        Ok(durable)
    }

    fn dead_letter(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            // Only once the broker is going away: a restart finds the
            // records dead-lettering and writes them.
            tracing::debug!("dead letters left for the next start: the writer has stopped");
        }
    }
}

/// Resolved group settings, and how many times they were forgotten.
#[derive(Debug, Default)]
struct SettingsCache {
    groups: HashMap<Arc<str>, ShareGroupSettings>,
    generation: u64,
}

/// Groups whose resolved settings are kept; past it the cache starts over.
const SETTINGS_KEPT: usize = 4_096;

/// The first read of a fetch's acquisition; each next one doubles.
const READ_FIRST_BYTES: usize = 64 << 10;

fn lock(sp: &Mutex<SharePartition>) -> MutexGuard<'_, SharePartition> {
    weir_sync::lock(sp).unwrap_or_else(weir_sync::PoisonedLock::reraise)
}

/// The offsets of the records a batch holds, when some offsets of its range
/// hold none; `None` when the batch cannot be decoded (every offset is then
/// taken to hold a record, and the client acknowledges the gaps it finds).
fn record_offsets(mut batch: Bytes) -> Option<Vec<i64>> {
    let decoded = RecordBatchDecoder::decode(&mut batch).ok()?;
    let mut offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
    offsets.sort_unstable();
    Some(offsets)
}

/// The bytes of `spans` of `read`, in order: a slice when they are
/// contiguous, else a copy.
fn concat(read: &Bytes, spans: impl Iterator<Item = std::ops::Range<usize>>) -> Bytes {
    let spans: Vec<std::ops::Range<usize>> = spans.collect();
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Bytes::new();
    };
    if spans.windows(2).all(|w| w[0].end == w[1].start) {
        return read.slice(first.start..last.end);
    }
    let mut out = BytesMut::with_capacity(spans.iter().map(|s| s.len()).sum());
    for span in spans {
        out.extend_from_slice(&read[span]);
    }
    out.freeze()
}

fn ack_message(e: ResponseError) -> &'static str {
    match e {
        ResponseError::InvalidRecordState => {
            "a record acknowledged is not acquired by this member (its lock may have expired)"
        }
        _ => "the acknowledgement batch is malformed",
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed step should panic and fail the test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Weak;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    use super::*;
    use crate::group_config::OffsetReset;

    #[test]
    fn group_settings_are_kept_until_forgotten_and_a_resolve_raced_by_a_change_is_not_kept() {
        // The group's delivery count limit "in the store", how many times
        // the store was read, and a change landing during the next read.
        let limit = Arc::new(AtomicU16::new(5));
        let reads = Arc::new(AtomicUsize::new(0));
        let me: Arc<OnceLock<Weak<ShareManager>>> = Arc::new(OnceLock::new());
        let change_during_read = Arc::new(AtomicU16::new(0));
        let (l, r, m, c) = (
            limit.clone(),
            reads.clone(),
            me.clone(),
            change_during_read.clone(),
        );
        let settings_of: SettingsOf = Box::new(move |_group| {
            r.fetch_add(1, Ordering::SeqCst);
            let seen = l.load(Ordering::SeqCst);
            let next = c.swap(0, Ordering::SeqCst);
            if next != 0 {
                // The store changes after this read, and the manager hears.
                l.store(next, Ordering::SeqCst);
                m.get().and_then(Weak::upgrade).unwrap().forget_settings();
            }
            ShareGroupSettings {
                partition: ShareSettings {
                    delivery_count_limit: seen,
                    ..ShareSettings::default()
                },
                offset_reset: OffsetReset::Latest,
                dead_letter: None,
            }
        });
        let config = ShareConfig {
            settings: ShareSettings::default(),
            max_sessions: 10,
            session_idle_ms: 1_000,
            partitions_max: 10,
        };
        let manager = Arc::new(ShareManager::new(
            config,
            Arc::new(weir_storage::SystemClock),
            settings_of,
        ));
        me.set(Arc::downgrade(&manager)).unwrap();
        let limit_of = || manager.group_settings("g").partition.delivery_count_limit;
        assert_eq!(limit_of(), 5);
        assert_eq!(limit_of(), 5);
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "the second ask is answered from memory"
        );
        limit.store(7, Ordering::SeqCst);
        manager.forget_settings();
        assert_eq!(limit_of(), 7);
        // A read that a change overtakes answers what it read, and is not
        // kept: the next ask reads the store again.
        change_during_read.store(9, Ordering::SeqCst);
        manager.forget_settings();
        assert_eq!(limit_of(), 7);
        assert_eq!(limit_of(), 9);
        assert_eq!(limit_of(), 9);
        assert_eq!(reads.load(Ordering::SeqCst), 4);
    }
}
