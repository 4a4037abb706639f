//! The share coordinator of a cluster (KIP-932's): the keeper of
//! share-partition state for each `__share_group_state` partition this
//! broker leads. It holds the newest snapshot of each share-partition of
//! its partitions in memory, replayed from the local replica when the
//! leadership arrives and dropped when it leaves, and answers the
//! share-partition leaders' ReadShareGroupState and WriteShareGroupState:
//! a write is appended to the partition and answered once the ISR holds
//! it, so it survives the coordinator's failover as the partition's data
//! does.
//!
//! Writes are fenced by the share-partition leader's leader epoch (of the
//! topic partition): once a leader at epoch E has read a share-partition,
//! writes from an older leader are refused with FENCED_LEADER_EPOCH, so a
//! deposed leader that has not heard yet cannot overwrite its successor.
//! The fence is kept in memory; after the coordinator itself moves, the
//! next read or write sets it again (a deposed leader's late write can at
//! worst make records available again, never lose one).
//!
//! On a single node the share manager writes its own partitions
//! (`manager`), and this keeper is unused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use kafka_protocol::ResponseError;
use weir_storage::{CommitWait, Partition};

use super::manager::SharePartitionKey;
use super::partition::PersistedPartition;
use super::state;
use crate::error::ApiError;

/// Every `__share_group_state` partition this broker leads, by index.
#[derive(Debug, Default)]
pub(crate) struct ShareCoordinator {
    shards: RwLock<HashMap<i32, Arc<Shard>>>,
    /// Most share-partitions one shard keeps (the broker's
    /// share-partition bound): keys come from requests, so the map is
    /// bounded.
    keys_max: usize,
}

#[derive(Debug)]
struct Shard {
    partition: Partition,
    /// The state partition's leader epoch when this broker took it over.
    epoch: i32,
    inner: Mutex<ShardState>,
}

#[derive(Debug, Default)]
struct ShardState {
    snapshots: HashMap<SharePartitionKey, PersistedPartition>,
    /// The newest share-partition leader epoch seen per key.
    fences: HashMap<SharePartitionKey, i32>,
}

impl ShareCoordinator {
    pub(crate) fn new(keys_max: usize) -> Self {
        Self {
            shards: RwLock::default(),
            keys_max,
        }
    }

    /// The leader epoch of partition `index` when this broker took it over,
    /// if it keeps it now.
    pub(crate) fn shard_epoch(&self, index: i32) -> Option<i32> {
        self.shards_read().get(&index).map(|s| s.epoch)
    }

    /// Stop keeping partition `index` (its leadership moved).
    pub(crate) fn unload_shard(&self, index: i32) {
        self.shards_write().remove(&index);
    }

    /// Keep partition `index` from now on: replay it from the local
    /// replica. Blocks on file I/O.
    pub(crate) fn load_shard(&self, index: i32, partition: Partition) -> Result<usize, String> {
        let mut loaded = state::Loaded::new();
        state::load_partition(index, &partition, &mut loaded)?;
        let count = loaded.len();
        let shard = Shard {
            epoch: partition.leader_epoch(),
            partition,
            inner: Mutex::new(ShardState {
                snapshots: loaded,
                fences: HashMap::new(),
            }),
        };
        self.shards_write().insert(index, Arc::new(shard));
        Ok(count)
    }

    /// The newest snapshot of `key` in partition `index` (`None`: the
    /// share-partition has none), read by its leader at `leader_epoch`,
    /// which fences older leaders' writes from now on; a negative epoch
    /// only looks (an admin's describe), fencing nothing.
    pub(crate) fn read(
        &self,
        index: i32,
        key: &SharePartitionKey,
        leader_epoch: i32,
    ) -> Result<Option<PersistedPartition>, ApiError> {
        let shard = self.shard(index)?;
        let mut inner = lock(&shard.inner);
        if leader_epoch >= 0 {
            fence(&mut inner, key, leader_epoch, self.keys_max)?;
        }
        Ok(inner.snapshots.get(key).cloned())
    }

    /// Append `value` (a snapshot, or a tombstone for `None`) as `key`'s
    /// newest state in partition `index`, written by its leader at
    /// `leader_epoch`. The wait resolves once the ISR holds it. Blocks on
    /// file I/O.
    pub(crate) fn write(
        &self,
        index: i32,
        key: &SharePartitionKey,
        value: Option<PersistedPartition>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<CommitWait, ApiError> {
        let shard = self.shard(index)?;
        let mut inner = lock(&shard.inner);
        fence(&mut inner, key, leader_epoch, self.keys_max)?;
        if value.is_some()
            && !inner.snapshots.contains_key(key)
            && inner.snapshots.len() >= self.keys_max
        {
            return Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "the share coordinator keeps as many share-partitions as it may",
            ));
        }
        let entry = (
            state::encode_key(key),
            value.as_ref().map(state::encode_value),
        );
        let committed = append(&shard, &[entry], now_ms)?;
        match value {
            Some(v) => inner.snapshots.insert(key.clone(), v),
            None => {
                inner.fences.remove(key);
                inner.snapshots.remove(key)
            }
        };
        Ok(committed)
    }

    /// Tombstone every snapshot of `group` (of `topic` only, when given)
    /// that the partitions led here keep (DeleteShareGroupOffsets and
    /// DeleteGroups on a cluster). Each wait resolves once the ISR holds the
    /// tombstones. Blocks on file I/O.
    pub(crate) fn forget(
        &self,
        group: &str,
        topic: Option<uuid::Uuid>,
        now_ms: i64,
    ) -> Result<Vec<CommitWait>, ApiError> {
        let shards: Vec<Arc<Shard>> = self.shards_read().values().cloned().collect();
        let mut waits = Vec::new();
        for shard in shards {
            let mut inner = lock(&shard.inner);
            let gone: Vec<SharePartitionKey> = inner
                .snapshots
                .keys()
                .filter(|k| &*k.group == group && topic.is_none_or(|t| k.topic_id == t))
                .cloned()
                .collect();
            if gone.is_empty() {
                continue;
            }
            let entries: Vec<_> = gone.iter().map(|k| (state::encode_key(k), None)).collect();
            waits.push(append(&shard, &entries, now_ms)?);
            for key in &gone {
                inner.snapshots.remove(key);
                inner.fences.remove(key);
            }
        }
        Ok(waits)
    }

    fn shard(&self, index: i32) -> Result<Arc<Shard>, ApiError> {
        self.shards_read().get(&index).cloned().ok_or_else(|| {
            ApiError::new(
                ResponseError::NotCoordinator,
                format!("this broker does not lead {}-{index}", state::STATE_TOPIC),
            )
        })
    }

    fn shards_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i32, Arc<Shard>>> {
        weir_sync::read(&self.shards).unwrap_or_else(weir_sync::PoisonedLock::reraise)
    }

    fn shards_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<i32, Arc<Shard>>> {
        weir_sync::write(&self.shards).unwrap_or_else(weir_sync::PoisonedLock::reraise)
    }
}

/// Append `entries` (encoded keys, and values or tombstones) to `shard`'s
/// partition; the wait resolves once the ISR holds them.
fn append(
    shard: &Shard,
    entries: &[(bytes::Bytes, Option<bytes::Bytes>)],
    now_ms: i64,
) -> Result<CommitWait, ApiError> {
    let storage = |what: String| ApiError::new(ResponseError::KafkaStorageError, what);
    let batches = crate::group::encode_batches(entries, now_ms).map_err(storage)?;
    let mut committed = None;
    for batch in batches {
        let out = shard
            .partition
            .append(batch)
            .map_err(|e| storage(e.to_string()))?;
        committed = Some(out.committed);
    }
    committed.ok_or_else(|| storage("nothing was encoded".into()))
}

/// Refuse a leader older than the newest seen for `key`; remember a newer.
fn fence(
    inner: &mut ShardState,
    key: &SharePartitionKey,
    leader_epoch: i32,
    keys_max: usize,
) -> Result<(), ApiError> {
    let seen = inner.fences.get(key).copied().unwrap_or(i32::MIN);
    if leader_epoch < seen {
        return Err(ApiError::new(
            ResponseError::FencedLeaderEpoch,
            format!(
                "the share-partition's leader is at epoch {seen}; this write is from epoch \
                 {leader_epoch}"
            ),
        ));
    }
    // Bounded as the snapshots are: past the bound a new key goes unfenced.
    if leader_epoch > seen && (seen != i32::MIN || inner.fences.len() < keys_max) {
        inner.fences.insert(key.clone(), leader_epoch);
    }
    Ok(())
}

fn lock(m: &Mutex<ShardState>) -> MutexGuard<'_, ShardState> {
    weir_sync::lock(m).unwrap_or_else(weir_sync::PoisonedLock::reraise)
}

#[cfg(test)]
mod tests {
    // Test code: a failed step should panic and fail the test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;
    use crate::share::partition::{PersistedState, StateBatch};

    fn key(partition: i32) -> SharePartitionKey {
        SharePartitionKey {
            group: Arc::from("workers"),
            topic_id: uuid::Uuid::from_u128(7),
            partition,
        }
    }

    fn snapshot(start_offset: i64) -> PersistedPartition {
        PersistedPartition {
            start_offset,
            batches: vec![StateBatch {
                first_offset: start_offset,
                last_offset: start_offset + 3,
                state: PersistedState::Available,
                delivery_count: 2,
            }],
        }
    }

    #[tokio::test]
    async fn writes_are_fenced_by_leader_epoch_bounded_replayed_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, partition) = crate::admin::testing::fresh_partition(dir.path());
        let coordinator = ShareCoordinator::new(2);
        // Not led here yet: the sender looks the coordinator up again.
        let err = coordinator.read(0, &key(0), 1).unwrap_err();
        assert_eq!(err.code, ResponseError::NotCoordinator);
        coordinator.load_shard(0, partition.clone()).unwrap();
        assert_eq!(coordinator.read(0, &key(0), 1).unwrap(), None);
        let w = coordinator
            .write(0, &key(0), Some(snapshot(10)), 1, 0)
            .unwrap();
        w.wait().await.unwrap();
        // A new leader at epoch 2 reads it; the old one can no longer write.
        assert_eq!(coordinator.read(0, &key(0), 2).unwrap(), Some(snapshot(10)));
        let err = coordinator
            .write(0, &key(0), Some(snapshot(11)), 1, 0)
            .unwrap_err();
        assert_eq!(err.code, ResponseError::FencedLeaderEpoch);
        let w = coordinator
            .write(0, &key(0), Some(snapshot(12)), 2, 0)
            .unwrap();
        w.wait().await.unwrap();
        // At most two share-partitions per shard: a third is refused, a
        // tombstone still goes through.
        coordinator
            .write(0, &key(1), Some(snapshot(0)), 1, 0)
            .unwrap();
        let err = coordinator
            .write(0, &key(2), Some(snapshot(0)), 1, 0)
            .unwrap_err();
        assert_eq!(err.code, ResponseError::CoordinatorNotAvailable);
        let w = coordinator.write(0, &key(1), None, 1, 0).unwrap();
        w.wait().await.unwrap();
        // The next coordinator of the partition replays it.
        coordinator.unload_shard(0);
        assert_eq!(coordinator.shard_epoch(0), None);
        let next = ShareCoordinator::new(2);
        assert_eq!(next.load_shard(0, partition.clone()).unwrap(), 1);
        assert_eq!(next.read(0, &key(0), 2).unwrap(), Some(snapshot(12)));
        assert_eq!(next.read(0, &key(1), 1).unwrap(), None);
        // A deleted group's snapshots are tombstoned: gone here, and for
        // the coordinator after.
        let waits = next.forget("workers", None, 0).unwrap();
        assert_eq!(waits.len(), 1);
        for w in waits {
            w.wait().await.unwrap();
        }
        assert_eq!(next.read(0, &key(0), 2).unwrap(), None);
        assert!(next.forget("workers", None, 0).unwrap().is_empty());
        next.unload_shard(0);
        let after = ShareCoordinator::new(2);
        assert_eq!(after.load_shard(0, partition).unwrap(), 0);
    }
}
