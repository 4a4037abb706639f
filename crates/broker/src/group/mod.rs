//! The group coordinator: consumer groups and their committed offsets.
//!
//! The decisions live in a state machine ([`state::Groups`] over
//! [`classic::ClassicGroup`]) that takes requests and the time and returns
//! [`classic::Effects`]. This module carries those out: it parks JoinGroup
//! and SyncGroup requests until their answer is decided, appends records to
//! the internal topic `__consumer_offsets` (a group lives in partition
//! `abs(javaStringHashCode(group)) % partitions`, as in Kafka), and runs the
//! small driver task that advances time for session and rebalance timeouts.
//! At start-up the groups and offsets are rebuilt by replaying that topic.

pub(crate) mod assignor;
pub(crate) mod classic;
pub(crate) mod consumer;
pub(crate) mod records;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::oneshot;
use weir_storage::{Clock, DurableWait, Partition};

use crate::config::GroupConfig;
use classic::{Effects, Reply, Token};
pub(crate) use classic::{JoinParams, JoinResult, SyncParams, SyncResult};
pub(crate) use state::{CommitPartition, Committed, GroupSummary};

/// The internal topic holding offsets and group metadata.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often the driver advances time. Session and rebalance deadlines are
/// met within this much.
const TICK_INTERVAL_MS: u64 = 50;
/// Largest batch of records written at once; a commit of many partitions is
/// split so no batch nears the topic's `max.message.bytes`.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Bytes read per step when loading `__consumer_offsets` at start-up.
const LOAD_READ_BYTES: usize = 4 * 1024 * 1024;

/// Why the groups could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// The partition could not be read.
    #[error("cannot read {OFFSETS_TOPIC}-{partition}: {source}")]
    Read {
        partition: i32,
        source: weir_storage::ReadError,
    },
    /// The storage handed back bytes that are not framed as batches (a
    /// storage fault: undecodable batches and records are skipped instead).
    #[error("{OFFSETS_TOPIC}-{partition} at offset {offset}: {detail}")]
    Corrupt {
        partition: i32,
        offset: i64,
        detail: String,
    },
}

enum Waiter {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

struct Inner {
    groups: state::Groups,
    waiters: HashMap<Token, Waiter>,
    next_token: Token,
}

/// The coordinator of every group on this broker.
pub(crate) struct GroupCoordinator {
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Partitions of `__consumer_offsets`, set once at start-up.
    partitions: OnceLock<Vec<Partition>>,
    driver_started: AtomicBool,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    pub(crate) fn new(config: GroupConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            inner: Mutex::new(Inner {
                groups: state::Groups::default(),
                waiters: HashMap::new(),
                next_token: 0,
            }),
            partitions: OnceLock::new(),
            driver_started: AtomicBool::new(false),
        }
    }

    pub(crate) fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Take the partitions of `__consumer_offsets` and rebuild every group
    /// and committed offset from them.
    pub(crate) fn load(&self, partitions: Vec<Partition>) -> Result<(), LoadError> {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let mut loaded = 0u64;
        for (index, partition) in partitions.iter().enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            loaded += replay_partition(index, partition, &mut inner.groups, now_ms, &self.config)?;
        }
        drop(inner);
        if loaded > 0 {
            tracing::info!(records = loaded, "loaded consumer groups and offsets");
        }
        let _ = self.partitions.set(partitions);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the groups as the last
        // complete operation left them; serving on is better than failing all.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start the timer task on first use (it needs the async runtime, which
    /// `Broker::new` may run outside of).
    fn ensure_driver(self: &Arc<Self>) {
        if self.driver_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(drive(weak));
            }
            Err(_) => self.driver_started.store(false, Ordering::SeqCst),
        }
    }

    /// Advance time by hand: what the driver does every tick.
    pub(crate) fn tick(&self) {
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let mut fx = Effects::default();
        inner.groups.tick(now_ms, &self.config, &mut fx);
        if let Err(err) = self.carry_out(&mut inner, fx) {
            tracing::warn!(error = %err, "cannot store group changes after a timeout");
        }
    }

    /// JoinGroup: answers once the rebalance it belongs to completes.
    pub(crate) async fn join(self: &Arc<Self>, p: JoinParams) -> JoinResult {
        self.ensure_driver();
        let member_id = p.member_id.clone();
        let (tx, rx) = oneshot::channel();
        {
            let now_ms = self.clock.now_ms();
            let mut inner = self.lock();
            let token = inner.token(Waiter::Join(tx));
            let mut fx = Effects::default();
            inner.groups.join(p, token, now_ms, &self.config, &mut fx);
            if let Err(err) = self.carry_out(&mut inner, fx) {
                tracing::warn!(error = %err, "cannot store group metadata");
            }
        }
        rx.await.unwrap_or_else(|_| {
            JoinResult::error(ResponseError::CoordinatorNotAvailable, &member_id)
        })
    }

    /// SyncGroup: answers once the leader has sent the assignment.
    pub(crate) async fn sync(self: &Arc<Self>, p: SyncParams) -> SyncResult {
        self.ensure_driver();
        let (tx, rx) = oneshot::channel();
        {
            let now_ms = self.clock.now_ms();
            let mut inner = self.lock();
            let token = inner.token(Waiter::Sync(tx));
            let mut fx = Effects::default();
            inner.groups.sync(p, token, now_ms, &self.config, &mut fx);
            if let Err(err) = self.carry_out(&mut inner, fx) {
                tracing::warn!(error = %err, "cannot store group metadata");
            }
        }
        rx.await
            .unwrap_or_else(|_| SyncResult::error(ResponseError::CoordinatorNotAvailable))
    }

    /// Heartbeat.
    pub(crate) fn heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        self.ensure_driver();
        let now_ms = self.clock.now_ms();
        self.lock()
            .groups
            .heartbeat(group_id, member_id, instance_id, generation, now_ms)
    }

    /// LeaveGroup of several members: one result per member.
    pub(crate) fn leave(
        self: &Arc<Self>,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Option<ResponseError>> {
        self.ensure_driver();
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let results = inner
            .groups
            .leave(group_id, members, now_ms, &self.config, &mut fx);
        if let Err(err) = self.carry_out(&mut inner, fx) {
            tracing::warn!(error = %err, "cannot store group metadata");
        }
        results
    }

    /// OffsetCommit: validate the member, store the offsets, and return once
    /// they are durable. The error applies to every partition.
    pub(crate) async fn commit(
        self: &Arc<Self>,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        partitions: Vec<CommitPartition>,
    ) -> Result<(), ResponseError> {
        self.ensure_driver();
        let waits = {
            let now_ms = self.clock.now_ms();
            let mut inner = self.lock();
            inner
                .groups
                .check_commit(
                    group_id,
                    member_id,
                    instance_id,
                    generation,
                    now_ms,
                    self.config.groups_max,
                )
                .inspect_err(|error| {
                    tracing::debug!(group = %group_id, member = %member_id, generation, %error, "commit refused");
                })?;
            let mut fx = Effects::default();
            inner.groups.commit(group_id, partitions, now_ms, &mut fx);
            self.carry_out(&mut inner, fx).map_err(|err| {
                tracing::error!(group = %group_id, error = %err, "cannot store committed offsets");
                ResponseError::NotCoordinator
            })?
        };
        for wait in waits {
            wait.wait().await.map_err(|err| {
                tracing::error!(group = %group_id, error = %err, "committed offsets are not durable");
                ResponseError::NotCoordinator
            })?;
        }
        Ok(())
    }

    /// ConsumerGroupHeartbeat (KIP-848): answered at once.
    pub(crate) fn consumer_heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        p: consumer::HeartbeatParams,
        shape: &dyn Fn(&str) -> Option<assignor::TopicShape>,
    ) -> consumer::HeartbeatResult {
        self.ensure_driver();
        let now_ms = self.clock.now_ms();
        let mut inner = self.lock();
        let mut fx = Effects::default();
        let result =
            inner
                .groups
                .consumer_heartbeat(group_id, p, shape, now_ms, &self.config, &mut fx);
        if let Err(err) = self.carry_out(&mut inner, fx) {
            tracing::warn!(group = %group_id, error = %err, "cannot store consumer group metadata");
        }
        result
    }

    /// A KIP-848 group as it is now, for ConsumerGroupDescribe.
    pub(crate) fn consumer_group(
        &self,
        group_id: &str,
    ) -> Result<consumer::ConsumerGroup, ResponseError> {
        self.lock().groups.consumer_group(group_id).cloned()
    }

    /// OffsetFetch v9: a consumer group member's id and epoch must be current.
    /// Classic groups and unknown groups are not checked.
    pub(crate) fn check_member_epoch(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Result<(), ResponseError> {
        match self.lock().groups.consumer_group(group_id) {
            Ok(g) if !g.members.is_empty() => match g.accepts_epoch(member_id, epoch) {
                None => Err(ResponseError::UnknownMemberId),
                Some(false) => Err(ResponseError::StaleMemberEpoch),
                Some(true) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A committed offset.
    pub(crate) fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<Committed> {
        self.lock()
            .groups
            .committed(group_id, topic, partition)
            .cloned()
    }

    /// Every committed offset of a group.
    pub(crate) fn all_committed(&self, group_id: &str) -> Vec<(String, i32, Committed)> {
        self.lock().groups.all_committed(group_id)
    }

    /// A group's description.
    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.lock().groups.describe(group_id)
    }

    /// Every group.
    pub(crate) fn list(&self) -> Vec<GroupSummary> {
        self.lock().groups.list()
    }

    /// DeleteGroups of one group.
    pub(crate) async fn delete(&self, group_id: &str) -> Option<ResponseError> {
        let waits = {
            let mut inner = self.lock();
            let mut fx = Effects::default();
            if let Some(err) = inner.groups.delete(group_id, &mut fx) {
                return Some(err);
            }
            match self.carry_out(&mut inner, fx) {
                Ok(waits) => waits,
                Err(_) => return Some(ResponseError::NotCoordinator),
            }
        };
        for wait in waits {
            if wait.wait().await.is_err() {
                return Some(ResponseError::NotCoordinator);
            }
        }
        None
    }

    /// OffsetDelete: per-partition errors, or a group-level one.
    pub(crate) async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let (results, waits) = {
            let mut inner = self.lock();
            let mut fx = Effects::default();
            let results =
                inner
                    .groups
                    .delete_offsets(group_id, partitions, subscribes_to, &mut fx)?;
            let waits = self
                .carry_out(&mut inner, fx)
                .map_err(|_| ResponseError::NotCoordinator)?;
            (results, waits)
        };
        for wait in waits {
            wait.wait()
                .await
                .map_err(|_| ResponseError::NotCoordinator)?;
        }
        Ok(results)
    }

    /// Answer parked requests and append records. Appends happen under the
    /// state lock so the log holds changes in the order they were made.
    fn carry_out(&self, inner: &mut Inner, fx: Effects) -> Result<Vec<DurableWait>, String> {
        for reply in fx.replies {
            match reply {
                Reply::Join(token, result) => {
                    if let Some(Waiter::Join(tx)) = inner.waiters.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Reply::Sync(token, result) => {
                    if let Some(Waiter::Sync(tx)) = inner.waiters.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
        if fx.records.is_empty() {
            return Ok(Vec::new());
        }
        let Some(partitions) = self.partitions.get() else {
            return Err(format!("{OFFSETS_TOPIC} is not loaded"));
        };
        let count = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
        let mut by_partition: BTreeMap<i32, Vec<(Bytes, Option<Bytes>)>> = BTreeMap::new();
        for (key, value) in fx.records {
            let index = records::partition_for(key.group(), count);
            by_partition
                .entry(index)
                .or_default()
                .push((key.encode(), value));
        }
        let now_ms = self.clock.now_ms();
        let mut waits = Vec::new();
        for (index, entries) in by_partition {
            let partition = usize::try_from(index)
                .ok()
                .and_then(|i| partitions.get(i))
                .ok_or_else(|| format!("{OFFSETS_TOPIC} has no partition {index}"))?;
            for payload in encode_batches(&entries, now_ms)? {
                let outcome = partition
                    .append(payload)
                    .map_err(|e| format!("append to {OFFSETS_TOPIC}-{index}: {e}"))?;
                waits.push(outcome.durable);
            }
        }
        Ok(waits)
    }
}

impl Inner {
    fn token(&mut self, waiter: Waiter) -> Token {
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        self.waiters.insert(token, waiter);
        token
    }
}

impl records::Key {
    fn group(&self) -> &str {
        match self {
            records::Key::Offset { group, .. }
            | records::Key::Group { group }
            | records::Key::ConsumerGroup { group } => group,
        }
    }
}

/// Whether any member of a consumer-protocol group subscribes to `topic`.
fn subscribes_to(group: &classic::ClassicGroup, topic: &str) -> bool {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if group.protocol_type.as_deref() != Some("consumer") {
        // Other protocols' metadata is opaque: assume the topic is in use.
        return true;
    }
    let protocol = group.protocol_name.clone().unwrap_or_default();
    group.members.values().any(|m| {
        let Some((_, metadata)) = m.protocols.iter().find(|(n, _)| *n == protocol) else {
            return true;
        };
        let mut buf = metadata.clone();
        let Some(version) = buf.get(..2).map(|v| i16::from_be_bytes([v[0], v[1]])) else {
            return true;
        };
        bytes::Buf::advance(&mut buf, 2);
        match ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
            Ok(sub) => sub.topics.iter().any(|t| t.as_str() == topic),
            Err(_) => true,
        }
    })
}

/// Encode records into as few batches as fit [`WRITE_BATCH_BYTES_MAX`].
fn encode_batches(entries: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut chunk_bytes = 0usize;
    let flush = |chunk: &mut Vec<Record>, out: &mut Vec<Bytes>| -> Result<(), String> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            chunk.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| format!("cannot encode a {OFFSETS_TOPIC} batch: {e}"))?;
        out.push(buf.freeze());
        chunk.clear();
        Ok(())
    };
    for (key, value) in entries {
        let size = key.len() + value.as_ref().map_or(0, Bytes::len);
        if chunk_bytes + size > WRITE_BATCH_BYTES_MAX {
            flush(&mut chunk, &mut out)?;
            chunk_bytes = 0;
        }
        chunk_bytes += size;
        chunk.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(chunk.len()).unwrap_or(i64::MAX),
            sequence: -1,
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        });
    }
    flush(&mut chunk, &mut out)?;
    Ok(out)
}

/// RecordBatch v2 header: base offset at 0, last offset delta at 23.
const BATCH_LAST_OFFSET_DELTA_AT: usize = 23;
const BATCH_LENGTH_AT: usize = 8;
const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

/// Replay one partition from its log start to its high watermark. Returns
/// the number of records applied.
fn replay_partition(
    index: i32,
    partition: &Partition,
    groups: &mut state::Groups,
    now_ms: i64,
    cfg: &GroupConfig,
) -> Result<u64, LoadError> {
    let end = partition.offsets().high_watermark;
    let mut next = partition.offsets().log_start;
    let mut applied = 0u64;
    while next < end {
        let read = partition
            .read(next, LOAD_READ_BYTES)
            .map_err(|source| LoadError::Read {
                partition: index,
                source,
            })?;
        if read.records.is_empty() {
            break;
        }
        let corrupt = |offset: i64, detail: String| LoadError::Corrupt {
            partition: index,
            offset,
            detail,
        };
        let mut rest = read.records.clone();
        let before = next;
        while !rest.is_empty() {
            let header = |at: usize| {
                rest.get(at..at + 4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            let base = rest
                .get(..8)
                .map(|b| i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
            let (Some(base), Some(length), Some(delta)) = (
                base,
                header(BATCH_LENGTH_AT),
                header(BATCH_LAST_OFFSET_DELTA_AT),
            ) else {
                return Err(corrupt(next, "truncated batch header".into()));
            };
            let batch_len = usize::try_from(length)
                .ok()
                .and_then(|l| l.checked_add(BATCH_LOG_OVERHEAD_BYTES))
                .filter(|l| *l <= rest.len())
                .ok_or_else(|| corrupt(base, format!("batch length {length} out of range")))?;
            let mut batch = rest.split_to(batch_len);
            // A batch or record that is not Weir's (a client produced it, or
            // a newer Weir wrote it) is skipped with a warning: one foreign
            // record must not keep every group from loading.
            let records = match RecordBatchDecoder::decode(&mut batch) {
                Ok(set) => set.records,
                Err(e) => {
                    skipped(index, base, &format!("undecodable batch: {e}"));
                    Vec::new()
                }
            };
            for record in records {
                if record.offset < next || record.control {
                    continue;
                }
                let Some(key) = record.key.as_deref() else {
                    skipped(index, record.offset, "record without a key");
                    continue;
                };
                match records::decode(key, record.value.as_deref()) {
                    Ok(entry) => {
                        groups.replay(entry, now_ms, cfg);
                        applied += 1;
                    }
                    Err(e) => skipped(index, record.offset, &e.to_string()),
                }
            }
            next = next.max(base + i64::from(delta) + 1);
        }
        if next <= before {
            return Err(corrupt(next, "reading made no progress".into()));
        }
    }
    Ok(applied)
}

/// Log a record of `__consumer_offsets` that loading skips.
fn skipped(partition: i32, offset: i64, reason: &str) {
    tracing::warn!(
        topic = OFFSETS_TOPIC,
        partition,
        offset,
        reason,
        "skipping a record the group coordinator cannot read"
    );
}

/// The driver: advance time every tick until the coordinator is gone.
async fn drive(coordinator: Weak<GroupCoordinator>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(TICK_INTERVAL_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        coordinator.tick();
    }
}

impl crate::Broker {
    /// Create `__consumer_offsets` if it is missing (compacted, with
    /// `offsets.topic.num.partitions` partitions) and load every group from it.
    pub(crate) fn load_groups(&self) -> Result<(), crate::ApiError> {
        let state = match self.topic(OFFSETS_TOPIC) {
            Some(state) => state,
            None => {
                let configs =
                    BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
                let partitions = self.groups.config().offsets_topic_num_partitions;
                self.create_topic(OFFSETS_TOPIC, partitions, -1, configs, false)?;
                self.topic(OFFSETS_TOPIC)
                    .ok_or_else(|| crate::ApiError::unknown_topic(OFFSETS_TOPIC))?
            }
        };
        self.groups
            .load(state.partitions.clone())
            .map_err(|e| crate::ApiError::new(ResponseError::KafkaStorageError, e.to_string()))
    }

    /// The group coordinator.
    pub(crate) fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }
}
