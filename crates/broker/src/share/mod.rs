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
//! - Membership (ShareGroupHeartbeat) is the group coordinator's:
//!   `crate::group::share`.
//!
//! Where they run. As in Kafka, a share-partition lives with the leader of
//! its topic partition (ShareFetch and ShareAcknowledge go there), while
//! membership and assignment live with the group coordinator
//! (ShareGroupHeartbeat). A share-partition's durable state is written to
//! the internal compacted topic `__share_group_state`, keyed by group,
//! topic id and partition, so it fails over as data does.

pub(crate) mod dead_letter;
pub(crate) mod manager;
pub(crate) mod partition;
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
    /// cluster's brokers keep share-partition state in memory in this
    /// version. Blocks on file I/O.
    pub(crate) fn load_share_state(&self) -> Result<(), crate::ApiError> {
        if !self.shares_enabled() || self.metadata().replicated() {
            return Ok(());
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
