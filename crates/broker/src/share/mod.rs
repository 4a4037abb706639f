//! Share groups (KIP-932): records of a partition handed out one by one to
//! the members of a group, each under a lock with a delivery count, and
//! acknowledged one by one; with a dead-letter topic (KIP-1191) and a
//! growing redelivery backoff.
//!
//! The parts, from the bottom up:
//! - [`partition`]: one share-partition's state (start offset, in-flight
//!   slots, locks, delivery counts) as a pure state machine.
//! - [`session`]: share sessions, the partitions each member fetches from
//!   this broker, numbered by epoch.
//! - [`manager`]: every share-partition and session on this broker, and
//!   the read-then-acquire of a fetch.
//! - [`state`]: share-partition state in `__share_group_state`: its
//!   records, and the load at start-up.
//! - [`dead_letter`]: the background work: the dead-letter writer
//!   (KIP-1191), exactly once across crashes, and the lock-expiry driver.
//! - [`coordinator`] and [`remote`]: on a cluster, the share coordinator
//!   that keeps the state of the `__share_group_state` partitions this
//!   broker leads, and the share-partition leader's side that reads and
//!   writes state there.
//! - Membership (ShareGroupHeartbeat) is the group coordinator's:
//!   `crate::group::share`.
//!
//! Where they run. As in Kafka, a share-partition lives with the leader of
//! its topic partition (ShareFetch and ShareAcknowledge go there), while
//! membership and assignment live with the group coordinator
//! (ShareGroupHeartbeat). A share-partition's durable state is written to
//! the internal compacted topic `__share_group_state`, keyed by group,
//! topic id and partition: on a single node by the share manager itself,
//! on a cluster through the leader of its partition there (the share
//! coordinator), so it fails over as data does.

pub(crate) mod coordinator;
pub(crate) mod dead_letter;
pub(crate) mod manager;
pub(crate) mod partition;
pub(crate) mod remote;
pub(crate) mod session;
pub(crate) mod state;

pub(crate) use manager::{ShareConfig, ShareManager, SharePartitionKey};
pub use partition::InFlight;

/// One share-partition of a group, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePartitionView {
    /// Its topic's name (`None` once the topic is deleted).
    pub topic: Option<String>,
    /// Its topic's id.
    pub topic_id: uuid::Uuid,
    /// The partition.
    pub partition: i32,
    /// What the group has in flight there.
    pub in_flight: InFlight,
}

impl ShareConfig {
    /// The share settings among the group coordinator's.
    pub(crate) fn from_group_config(g: &crate::config::GroupConfig) -> Self {
        Self {
            settings: partition::ShareSettings {
                record_lock_duration_ms: g.share_record_lock_duration_ms,
                delivery_count_limit: g.share_delivery_count_limit,
                max_record_locks: g.share_partition_max_record_locks,
                redelivery_backoff_ms: Vec::new(),
            },
            max_sessions: g.share_max_sessions,
            session_idle_ms: i64::from(g.share_session_timeout_ms),
            partitions_max: g.share_partitions_max,
        }
    }
}

impl crate::Broker {
    /// With `group.share.enable` on a single node: create
    /// `__share_group_state` if it is missing (compacted, written with
    /// `flush.messages=1`, `share.coordinator.state.topic.num.partitions`
    /// partitions) and load every share-partition's state from it. A
    /// cluster's share coordinators follow leadership instead
    /// ([`Self::follow_share_coordinators`]). Blocks on file I/O.
    pub(crate) fn load_share_state(&self) -> Result<(), crate::ApiError> {
        if !self.shares_enabled() {
            return Ok(());
        }
        if self.metadata().replicated() {
            return self.follow_share_coordinators();
        }
        let topic = match self.topic(state::STATE_TOPIC) {
            Some(topic) => topic,
            None => {
                let configs = std::collections::BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("flush.messages".to_string(), "1".to_string()),
                ]);
                let partitions = self.config().group.share_state_topic_num_partitions;
                self.create_topic(state::STATE_TOPIC, partitions, -1, configs, false)?;
                self.topic(state::STATE_TOPIC)
                    .ok_or_else(|| crate::ApiError::unknown_topic(state::STATE_TOPIC))?
            }
        };
        let partitions: Option<Vec<weir_storage::Partition>> =
            topic.partitions.iter().cloned().collect();
        let partitions = partitions.ok_or_else(|| {
            crate::ApiError::new(
                kafka_protocol::ResponseError::KafkaStorageError,
                format!(
                    "a partition of {} is not on this broker",
                    state::STATE_TOPIC
                ),
            )
        })?;
        let count = self.shares.load(partitions).map_err(|e| {
            crate::ApiError::new(kafka_protocol::ResponseError::KafkaStorageError, e)
        })?;
        tracing::info!(share_partitions = count, "loaded share-partition state");
        Ok(())
    }

    /// On a cluster with share groups on: keep the state of each
    /// `__share_group_state` partition this broker leads, and only those
    /// (replayed from the local replica when the leadership arrives), and
    /// drop each share-partition whose topic partition this broker no
    /// longer leads at the epoch it took it up at; its next leader takes
    /// it up from the share coordinator. Blocks on file I/O.
    pub(crate) fn follow_share_coordinators(&self) -> Result<(), crate::ApiError> {
        if !self.shares_enabled() || !self.metadata().replicated() {
            return Ok(());
        }
        let dropped = self.shares.drop_unled(|key| {
            let id = weir_storage::PartitionId {
                topic_id: key.topic_id,
                partition: key.partition,
            };
            match self.replicas.leadership(id) {
                crate::replica::Leadership::Leader { .. } => self
                    .topic_by_id(key.topic_id)
                    .and_then(|t| t.local(key.partition).map(|p| p.leader_epoch())),
                _ => None,
            }
        });
        if dropped > 0 {
            tracing::info!(
                share_partitions = dropped,
                "handed over share-partitions whose partitions this broker no longer leads"
            );
        }
        let Some(state) = self.topic(state::STATE_TOPIC) else {
            return Ok(());
        };
        let coordinator = self.shares.coordinator();
        let (loaded, unloaded) = self.follow_leadership(
            &state,
            |index| coordinator.shard_epoch(index),
            |index| coordinator.unload_shard(index),
            |index, partition| {
                let count = coordinator.load_shard(index, partition)?;
                tracing::debug!(
                    partition = index,
                    share_partitions = count,
                    "loaded share-partition state"
                );
                Ok(())
            },
        )?;
        if !loaded.is_empty() || !unloaded.is_empty() {
            tracing::info!(took_over = ?loaded, handed_over = ?unloaded,
                "share coordination follows the leadership of {} partitions", state::STATE_TOPIC);
        }
        Ok(())
    }

    /// Where `key`'s share coordinator is on a cluster: the leader of its
    /// `__share_group_state` partition, as `(broker id, partition)`, the
    /// topic made on first use with
    /// `share.coordinator.state.topic.num.partitions` partitions and
    /// `share.coordinator.state.topic.replication.factor` replicas.
    /// COORDINATOR_NOT_AVAILABLE while it has no leader. Blocks on the
    /// metadata quorum when it makes the topic.
    pub(crate) fn share_coordinator_of(
        &self,
        key: &SharePartitionKey,
    ) -> Result<(i32, i32), crate::ApiError> {
        let group = &self.config().group;
        let node = self.internal_topic_leader(
            state::STATE_TOPIC,
            &state::coordinator_key(key),
            group.share_state_topic_num_partitions,
            group.share_state_topic_replication_factor,
        )?;
        let partitions = self
            .metadata()
            .topic(state::STATE_TOPIC)
            .map_or(group.share_state_topic_num_partitions, |t| t.partitions);
        Ok((node, state::state_partition(key, partitions)))
    }

    /// Share-partitions and share sessions.
    pub(crate) fn shares(&self) -> &std::sync::Arc<ShareManager> {
        &self.shares
    }

    /// What share group `group` has in flight in each partition this
    /// broker leads (`None` when share groups are off, or no share group
    /// has this id and it has no share-partition here).
    pub fn share_group_in_flight(&self, group: &str) -> Option<Vec<SharePartitionView>> {
        if !self.shares_enabled() {
            return None;
        }
        let mut views: Vec<SharePartitionView> = self
            .shares
            .group_in_flight(group)
            .into_iter()
            .map(|(key, in_flight)| SharePartitionView {
                topic: self.topic_by_id(key.topic_id).map(|t| t.meta.name.clone()),
                topic_id: key.topic_id,
                partition: key.partition,
                in_flight,
            })
            .collect();
        if views.is_empty() && self.groups().share_group(group).is_err() {
            return None;
        }
        views.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Some(views)
    }
}
