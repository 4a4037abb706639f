//! The group coordinator: consumer groups and their committed offsets.
//!
//! The decisions live in a state machine ([`state::Groups`] over
//! [`classic::ClassicGroup`]) that takes requests and the time and returns
//! [`classic::Effects`]. [`shard::Shard`] carries those out for the groups
//! of one partition of the internal topic `__consumer_offsets` (a group
//! lives in partition `abs(javaStringHashCode(group)) % partitions`, as in
//! Kafka): it parks JoinGroup and SyncGroup requests until their answer is
//! decided, appends records, and runs a driver that wakes at the earliest
//! session or rebalance deadline. This module routes each request to its
//! group's shard, and rebuilds every shard at start-up by replaying its
//! partition.

pub(crate) mod assignor;
pub(crate) mod classic;
pub(crate) mod consumer;
mod migration;
pub(crate) mod records;
pub(crate) mod shard;
pub(crate) mod share;
pub(crate) mod state;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use weir_storage::{Clock, Partition, batches};

use crate::config::GroupConfig;
pub(crate) use classic::{JoinParams, JoinResult, SyncParams, SyncResult};
pub(crate) use state::{CommitPartition, Committed, GroupSummary};

/// The internal topic holding offsets and group metadata.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
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
    /// The partition has no shard (it is past the topic's partition count).
    #[error("{OFFSETS_TOPIC} has no partition {partition}")]
    NoShard { partition: i32 },
    /// The storage handed back bytes that are not framed as batches (a
    /// storage fault: undecodable batches and records are skipped instead).
    #[error("{OFFSETS_TOPIC}-{partition} at offset {offset}: {detail}")]
    Corrupt {
        partition: i32,
        offset: i64,
        detail: String,
    },
}

/// The coordinator of every group on this broker: one [`shard::Shard`] per
/// partition of `__consumer_offsets`, each owning the groups that live there.
pub(crate) struct GroupCoordinator {
    config: GroupConfig,
    clock: Arc<dyn Clock>,
    /// One shard per partition of `__consumer_offsets`, set once at start-up.
    shards: OnceLock<Vec<Arc<shard::Shard>>>,
    drivers_started: AtomicBool,
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
            shards: OnceLock::new(),
            drivers_started: AtomicBool::new(false),
        }
    }

    pub(crate) fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Make one shard per partition of `__consumer_offsets` and load each
    /// from its partition.
    pub(crate) fn load(&self, partitions: Vec<Option<Partition>>) -> Result<(), LoadError> {
        let count = partitions.len().max(1);
        // `groups_max` bounds the whole coordinator; each shard holds its share.
        let shard_config = GroupConfig {
            groups_max: self.config.groups_max.div_ceil(count),
            ..self.config.clone()
        };
        let mut shards = Vec::with_capacity(partitions.len());
        let mut loaded = 0u64;
        for (index, partition) in partitions.into_iter().enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let shard = Arc::new(shard::Shard::new(
                index,
                shard_config.clone(),
                self.clock.clone(),
            ));
            // A partition held elsewhere (a cluster's) starts unloaded: its
            // shard answers NOT_COORDINATOR until this broker leads it.
            if let Some(partition) = partition {
                loaded += shard.load(partition)?;
            }
            shards.push(shard);
        }
        if loaded > 0 {
            tracing::info!(records = loaded, "loaded consumer groups and offsets");
        }
        let _ = self.shards.set(shards);
        Ok(())
    }

    /// The leader epoch shard `index` was loaded at, while it coordinates
    /// its groups.
    fn shard_epoch(&self, index: i32) -> Option<i32> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.shards().get(i))
            .and_then(|shard| shard.loaded_epoch())
    }

    /// Stop coordinating the groups of one partition (its leadership moved).
    pub(crate) fn unload_shard(&self, index: i32) {
        if let Some(shard) = usize::try_from(index)
            .ok()
            .and_then(|i| self.shards().get(i))
        {
            shard.unload();
        }
    }

    /// Coordinate the groups of one partition again, replaying it (from
    /// disk: call it where blocking is allowed).
    pub(crate) fn load_shard(&self, index: i32, partition: Partition) -> Result<(), LoadError> {
        let shard = usize::try_from(index)
            .ok()
            .and_then(|i| self.shards().get(i))
            .ok_or(LoadError::NoShard { partition: index })?;
        shard.load(partition).map(|_| ())
    }

    /// The shard owning `group_id`.
    fn shard(&self, group_id: &str) -> Result<&Arc<shard::Shard>, ResponseError> {
        let shards = self
            .shards
            .get()
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        if !self.drivers_started.load(Ordering::Relaxed)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            // Loaded outside the runtime: every shard's driver starts with
            // the first request, so restored groups time out even on shards
            // that see no request.
            self.drivers_started.store(true, Ordering::Relaxed);
            for shard in shards {
                shard.ensure_driver();
            }
        }
        let count = i32::try_from(shards.len()).unwrap_or(i32::MAX);
        let index = records::partition_for(group_id, count);
        usize::try_from(index)
            .ok()
            .and_then(|i| shards.get(i))
            .ok_or(ResponseError::CoordinatorNotAvailable)
    }

    fn shards(&self) -> &[Arc<shard::Shard>] {
        self.shards.get().map_or(&[], Vec::as_slice)
    }

    /// JoinGroup: answers once the rebalance it belongs to completes.
    pub(crate) async fn join(&self, p: JoinParams) -> JoinResult {
        match self.shard(&p.group_id) {
            Ok(shard) => shard.join(p).await,
            Err(error) => JoinResult::error(error, &p.member_id),
        }
    }

    /// SyncGroup: answers once the leader has sent the assignment.
    pub(crate) async fn sync(&self, p: SyncParams) -> SyncResult {
        match self.shard(&p.group_id) {
            Ok(shard) => shard.sync(p).await,
            Err(error) => SyncResult::error(error),
        }
    }

    /// Heartbeat.
    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        match self.shard(group_id) {
            Ok(shard) => shard.heartbeat(group_id, member_id, instance_id, generation),
            Err(error) => Some(error),
        }
    }

    /// LeaveGroup of several members: one result per member.
    pub(crate) fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Option<ResponseError>> {
        match self.shard(group_id) {
            Ok(shard) => shard.leave(group_id, members),
            Err(error) => vec![Some(error); members.len()],
        }
    }

    /// OffsetCommit: validate the member, append the offsets, wait until
    /// they are durable, then apply them. The error applies to every partition.
    pub(crate) async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        partitions: Vec<CommitPartition>,
    ) -> Result<(), ResponseError> {
        self.shard(group_id)?
            .commit(group_id, member_id, instance_id, generation, partitions)
            .await
    }

    /// TxnOffsetCommit: the offsets wait for the transaction's marker.
    pub(crate) async fn txn_commit(
        &self,
        group_id: &str,
        member: (&str, Option<&str>, i32),
        producer: (i64, i16),
        partitions: Vec<CommitPartition>,
    ) -> Result<(), ResponseError> {
        self.shard(group_id)?
            .txn_commit(group_id, member, producer, partitions)
            .await
    }

    /// A transaction marker for `producer_id` was committed to partition
    /// `index` of `__consumer_offsets`.
    pub(crate) fn txn_completed(&self, index: i32, producer_id: i64, commit: bool) {
        if let Some(shard) = usize::try_from(index)
            .ok()
            .and_then(|i| self.shards().get(i))
        {
            shard.txn_completed(producer_id, commit);
        }
    }

    /// Whether a transaction's offset of the partition awaits its marker.
    pub(crate) fn unstable(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.shard(group_id)
            .is_ok_and(|s| s.unstable(group_id, topic, partition))
    }

    /// ConsumerGroupHeartbeat (KIP-848): answered at once.
    pub(crate) fn consumer_heartbeat(
        &self,
        group_id: &str,
        p: consumer::HeartbeatParams,
        shape: &dyn Fn(&str) -> Option<assignor::TopicShape>,
    ) -> consumer::HeartbeatResult {
        match self.shard(group_id) {
            Ok(shard) => shard.consumer_heartbeat(group_id, p, shape),
            Err(error) => consumer::HeartbeatResult::error(
                error,
                "the group coordinator is not loaded",
                &p.member_id,
            ),
        }
    }

    /// ShareGroupHeartbeat (KIP-932): answered at once.
    pub(crate) fn share_heartbeat(
        &self,
        group_id: &str,
        p: share::ShareHeartbeatParams,
        shape: &dyn Fn(&str) -> Option<assignor::TopicShape>,
    ) -> consumer::HeartbeatResult {
        match self.shard(group_id) {
            Ok(shard) => shard.share_heartbeat(group_id, p, shape),
            Err(error) => consumer::HeartbeatResult::error(
                error,
                "the group coordinator is not loaded",
                &p.member_id,
            ),
        }
    }

    /// A share group as it is now, for ShareGroupDescribe.
    pub(crate) fn share_group(&self, group_id: &str) -> Result<share::ShareGroup, ResponseError> {
        self.shard(group_id)?.share_group(group_id)
    }

    /// A KIP-848 group as it is now, for ConsumerGroupDescribe.
    pub(crate) fn consumer_group(
        &self,
        group_id: &str,
    ) -> Result<consumer::ConsumerGroup, ResponseError> {
        self.shard(group_id)?.consumer_group(group_id)
    }

    /// OffsetFetch v9: a consumer group member's id and epoch must be current.
    /// Classic groups and unknown groups are not checked.
    pub(crate) fn check_member_epoch(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Result<(), ResponseError> {
        self.shard(group_id)?
            .check_member_epoch(group_id, member_id, epoch)
    }

    /// A committed offset (only ever one that is durable).
    pub(crate) fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<Committed> {
        self.shard(group_id)
            .ok()?
            .committed(group_id, topic, partition)
    }

    /// Every committed offset of a group.
    pub(crate) fn all_committed(&self, group_id: &str) -> Vec<(String, i32, Committed)> {
        self.shard(group_id)
            .map(|s| s.all_committed(group_id))
            .unwrap_or_default()
    }

    /// A group's description.
    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.shard(group_id).ok()?.describe(group_id)
    }

    /// Every group, sorted by id.
    pub(crate) fn list(&self) -> Vec<GroupSummary> {
        let mut all: Vec<GroupSummary> = self.shards().iter().flat_map(|s| s.list()).collect();
        all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        all
    }

    /// DeleteGroups of one group.
    pub(crate) async fn delete(&self, group_id: &str) -> Option<ResponseError> {
        match self.shard(group_id) {
            Ok(shard) => shard.delete(group_id).await,
            Err(error) => Some(error),
        }
    }

    /// OffsetDelete: per-partition errors, or a group-level one.
    pub(crate) async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        self.shard(group_id)?
            .delete_offsets(group_id, partitions)
            .await
    }
}

/// Whether any member of a consumer-protocol group subscribes to `topic`.
pub(super) fn subscribes_to(group: &classic::ClassicGroup, topic: &str) -> bool {
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

/// Offsets a transaction committed (TxnOffsetCommit) but whose marker has
/// not come yet, by producer id: applied on COMMIT, dropped on ABORT.
pub(crate) type TxnOffsets = HashMap<i64, Vec<records::Entry>>;

/// Encode records into as few batches as fit [`WRITE_BATCH_BYTES_MAX`].
pub(crate) fn encode_batches(
    entries: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
) -> Result<Vec<Bytes>, String> {
    encode_batches_as(entries, now_ms, None)
}

/// [`encode_batches`], as transactional batches of `producer` (id, epoch)
/// when given: TxnOffsetCommit's records, which carry no sequence.
pub(crate) fn encode_batches_as(
    entries: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Result<Vec<Bytes>, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
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
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
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

/// Replay one partition from its log start to its log end. Returns the
/// number of records applied.
///
/// To the log end, not the high watermark, as Kafka's coordinator loads: a
/// replica that has just become the partition's leader may not know yet
/// how far its log is committed (its followers have not fetched from it),
/// but everything in it is the partition's from now on, and a commit a
/// client was told of is in it (commits wait for every in-sync replica).
///
/// A transaction's offsets (TxnOffsetCommit's transactional batches) wait in
/// `txn` for their producer's marker: COMMIT applies them, ABORT drops them.
pub(super) fn replay_partition(
    index: i32,
    partition: &Partition,
    (groups, txn): (&mut state::Groups, &mut TxnOffsets),
    now_ms: i64,
    cfg: &GroupConfig,
) -> Result<u64, LoadError> {
    let end = partition.offsets().log_end;
    let mut next = partition.offsets().log_start;
    let mut applied = 0u64;
    while next < end {
        let read = partition
            .read_replica(next, LOAD_READ_BYTES)
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
        let before = next;
        for framed in batches(&read.records) {
            let (header, batch) = framed.map_err(|e| corrupt(next, e.to_string()))?;
            let base = header.base_offset;
            if header.is_control() {
                let ended = txn.remove(&header.producer_id);
                if let (Some(entries), Some(marker)) = (ended, weir_storage::control_marker(batch))
                    && marker.commit
                {
                    for entry in entries {
                        groups.replay(entry, now_ms, cfg);
                        applied += 1;
                    }
                }
                next = next.max(header.last_offset().saturating_add(1));
                continue;
            }
            let in_txn = header.is_transactional() && header.producer_id >= 0;
            let mut batch = read.records.slice_ref(batch);
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
                    Ok(entry) if in_txn => {
                        txn.entry(header.producer_id).or_default().push(entry);
                    }
                    Ok(entry) => {
                        groups.replay(entry, now_ms, cfg);
                        applied += 1;
                    }
                    Err(e) => skipped(index, record.offset, &e.to_string()),
                }
            }
            next = next.max(header.last_offset().saturating_add(1));
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

impl crate::Broker {
    /// Create `__consumer_offsets` if it is missing (compacted, with
    /// `offsets.topic.num.partitions` partitions) and load every group from it.
    pub(crate) fn load_groups(&self) -> Result<(), crate::ApiError> {
        // A cluster's coordinators follow leadership (follow_coordinators),
        // and its offsets topic is made on first use, once brokers are up.
        if self.metadata.replicated() {
            return self.follow_coordinators();
        }
        let state = match self.topic(OFFSETS_TOPIC) {
            Some(state) => state,
            None => {
                // Commits are answered once durable whatever the broker's
                // flush policy: the topic never inherits a relaxed one.
                let configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("flush.messages".to_string(), "1".to_string()),
                ]);
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

    /// On a cluster: coordinate the groups of each `__consumer_offsets`
    /// partition this broker leads, and only those. A shard is replayed
    /// from the local replica when its leadership arrives (which holds
    /// every commit acknowledged, since commits wait for the ISR) and
    /// unloaded when it leaves; FindCoordinator sends clients to the
    /// partition's leader. Blocks on file I/O.
    pub(crate) fn follow_coordinators(&self) -> Result<(), crate::ApiError> {
        let Some(state) = self.topic(OFFSETS_TOPIC) else {
            return Ok(());
        };
        if self.groups.shards.get().is_none() {
            let unloaded = vec![None; usize::try_from(state.meta.partitions).unwrap_or(0)];
            self.groups.load(unloaded).map_err(|e| {
                crate::ApiError::new(ResponseError::KafkaStorageError, e.to_string())
            })?;
        }
        let (loaded, unloaded) = self.follow_leadership(
            &state,
            |index| self.groups.shard_epoch(index),
            |index| self.groups.unload_shard(index),
            |index, partition| {
                self.groups
                    .load_shard(index, partition)
                    .map_err(|e| e.to_string())
            },
        )?;
        if !loaded.is_empty() || !unloaded.is_empty() {
            tracing::info!(took_over = ?loaded, handed_over = ?unloaded,
                "group coordination follows the leadership of {OFFSETS_TOPIC} partitions");
        }
        Ok(())
    }

    /// The broker coordinating `group`: this one on a single node; on a
    /// cluster the leader of the group's `__consumer_offsets` partition. A cluster makes the offsets topic on first use,
    /// with `offsets.topic.replication.factor` replicas: until enough
    /// brokers are up, or while the partition has no leader, the answer is
    /// COORDINATOR_NOT_AVAILABLE and the client retries. Blocks on the
    /// metadata quorum when it creates the topic.
    pub(crate) fn group_coordinator(&self, group: &str) -> Result<i32, crate::ApiError> {
        if !self.metadata.replicated() {
            return Ok(self.config.node_id);
        }
        let config = self.groups.config();
        self.internal_topic_leader(
            OFFSETS_TOPIC,
            group,
            config.offsets_topic_num_partitions,
            config.offsets_topic_replication_factor,
        )
    }

    /// On a cluster, the leader of `key`'s partition of the compacted
    /// internal topic `topic` (`__consumer_offsets`, `__transaction_state`),
    /// making the topic on first use with
    /// `partitions` and `replication_factor`: until enough brokers are up,
    /// or while the partition has no leader, the answer is
    /// COORDINATOR_NOT_AVAILABLE and the client retries. Blocks on the
    /// metadata quorum when it creates the topic.
    pub(crate) fn internal_topic_leader(
        &self,
        topic: &str,
        key: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<i32, crate::ApiError> {
        let unavailable =
            |why: String| crate::ApiError::new(ResponseError::CoordinatorNotAvailable, why);
        let meta = match self.metadata.topic(topic) {
            Some(meta) => meta,
            None => {
                let configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("flush.messages".to_string(), "1".to_string()),
                ]);
                match self.create_topic(topic, partitions, replication_factor, configs, false) {
                    Ok(meta) => meta,
                    Err(err) if err.code == ResponseError::TopicAlreadyExists => self
                        .metadata
                        .topic(topic)
                        .ok_or_else(|| unavailable(format!("{topic} is being changed")))?,
                    Err(err) => {
                        return Err(unavailable(format!(
                            "cannot create {topic}: {}",
                            err.message
                        )));
                    }
                }
            }
        };
        let index = records::partition_for(key, meta.partitions);
        let leader = meta
            .assignment(index, self.config.node_id)
            .map_or(weir_metadata::NO_LEADER, |a| a.leader);
        if leader == self.config.node_id
            || self
                .metadata
                .brokers()
                .iter()
                .any(|b| b.id == leader && !b.fenced)
        {
            return Ok(leader);
        }
        Err(unavailable(format!("{topic}-{index} has no leader now")))
    }

    /// Where a client that came in on `listener` reaches broker `id`: its
    /// endpoint of that listener, or `None` when it is not registered and
    /// unfenced, or has no listener of that name.
    pub(crate) fn client_endpoint(&self, id: i32, listener: &str) -> Option<(String, i32)> {
        if id == self.config.node_id {
            return self
                .config
                .endpoint(listener)
                .map(|(host, port)| (host.to_owned(), port));
        }
        self.metadata
            .brokers()
            .iter()
            .find(|b| b.id == id && !b.fenced)?
            .endpoint(listener)
            .map(|(host, port)| (host.to_owned(), port))
    }

    /// The group coordinator.
    pub(crate) fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }
}
