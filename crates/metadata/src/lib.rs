//! Cluster metadata: which topics exist, their IDs, partition counts and
//! configs, broker-level config overrides, and producer-id allocation.
//!
//! Everything sits behind [`MetadataStore`]. This crate ships
//! [`LocalMetadataStore`], a durable single-node store; the cluster issue backs
//! the same trait with an openraft quorum.

use std::collections::BTreeMap;

use uuid::Uuid;

mod local;

pub use local::LocalMetadataStore;

/// A fresh topic ID: random, not nil, not `taken`, and whose Kafka text form
/// does not start with '-' (Kafka avoids those so they never read as a
/// command-line flag).
pub fn new_topic_id(taken: impl Fn(Uuid) -> bool) -> Uuid {
    local::random_uuid(taken)
}

/// A topic as the metadata layer knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Persistent topic ID.
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor (1 until the cluster issue lands).
    pub replication_factor: i16,
    /// Configs set explicitly on the topic (defaults are not stored).
    pub configs: BTreeMap<String, String>,
}

/// A request to create a topic.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Topic name (already validated by the caller).
    pub name: String,
    /// The topic ID, chosen by the caller with [`new_topic_id`] so that the
    /// topic's storage can be created before its metadata is committed.
    pub id: Uuid,
    /// Number of partitions (> 0).
    pub partitions: i32,
    /// Replication factor (> 0).
    pub replication_factor: i16,
    /// Explicit configs.
    pub configs: BTreeMap<String, String>,
}

/// One change to a config map (IncrementalAlterConfigs semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set a key to a value.
    Set(String, String),
    /// Remove a key, reverting it to the default.
    Delete(String),
}

/// Why a metadata change was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// INVALID_PARTITIONS.
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// The ID given for a new topic is nil or already belongs to a topic.
    #[error("topic id {0} is nil or already in use")]
    TopicIdTaken(Uuid),
    /// The store could not persist the change (KAFKA_STORAGE_ERROR).
    #[error("metadata store: {0}")]
    Storage(String),
}

/// A panic while the store's lock was held: nothing more is changed.
impl From<weir_sync::PoisonedLock> for MetadataError {
    fn from(e: weir_sync::PoisonedLock) -> Self {
        Self::Storage(e.to_string())
    }
}

/// The metadata interface the broker depends on.
pub trait MetadataStore: Send + Sync + 'static {
    /// The cluster ID, stable across restarts.
    fn cluster_id(&self) -> String;
    /// Every topic, ordered by name.
    fn topics(&self) -> Vec<TopicMeta>;
    /// A topic by name.
    fn topic(&self, name: &str) -> Option<TopicMeta>;
    /// A topic by ID.
    fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta>;
    /// Create a topic under the ID it carries; durable on return.
    fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetadataError>;
    /// Delete a topic; durable on return.
    fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError>;
    /// Raise a topic's partition count to `total`; durable on return.
    fn set_partition_count(&self, name: &str, total: i32) -> Result<TopicMeta, MetadataError>;
    /// Apply config changes to a topic; durable on return.
    fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<TopicMeta, MetadataError>;
    /// Broker-level config overrides set at runtime.
    fn broker_configs(&self) -> BTreeMap<String, String>;
    /// Apply broker-level config changes; durable on return.
    fn alter_broker_configs(&self, changes: &[ConfigChange]) -> Result<(), MetadataError>;
    /// Allocate `count` fresh producer ids, returning the first; durable on return
    /// so that ids are never reused after a restart.
    fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError>;
}
