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
//! - Membership (ShareGroupHeartbeat) is the group coordinator's:
//!   `crate::group::share`.
//!
//! Where they run. As in Kafka, a share-partition lives with the leader of
//! its topic partition (ShareFetch and ShareAcknowledge go there), while
//! membership and assignment live with the group coordinator
//! (ShareGroupHeartbeat). A share-partition's durable state is written to
//! the internal compacted topic `__share_group_state`, keyed by group,
//! topic id and partition, so it fails over as data does.

pub(crate) mod manager;
pub(crate) mod partition;
pub(crate) mod session;

pub(crate) use manager::{ShareConfig, ShareManager, SharePartitionKey};

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
    /// Share-partitions and share sessions.
    pub(crate) fn shares(&self) -> &std::sync::Arc<ShareManager> {
        &self.shares
    }
}
