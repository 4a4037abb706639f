//! The broker's registry of topics and their partitions, and the topic
//! lifecycle (create, delete, add partitions, alter configs).
//!
//! The metadata store is the source of truth; this registry mirrors it with
//! the open storage [`Partition`] handles, so the data path never touches the
//! store. Lifecycle changes are serialized by one lock: admin operations are
//! rare and must not interleave between the store and the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::ResponseError;
use uuid::Uuid;
use weir_metadata::{ConfigChange, NewTopic, TopicMeta};
use weir_storage::{Partition, PartitionId};

use crate::error::ApiError;
use crate::{Broker, topic_config};

/// Longest topic name Kafka accepts.
pub(crate) const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have; bounds what one CreateTopics can make the broker allocate.
pub(crate) const TOPIC_PARTITIONS_MAX: i32 = 100_000;

/// Kafka's internal topics. Only the broker writes them (the group
/// coordinator appends through its own partition handles); clients may not
/// produce to them, delete them, delete their records, or add partitions to
/// them: a record the broker did not write could stop it from starting.
/// `__transaction_state` is listed before it exists so the rule is in place
/// when transactions arrive.
pub(crate) const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// Whether `name` is one of [`INTERNAL_TOPICS`].
pub(crate) fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// INVALID_TOPIC_EXCEPTION for a client operation on an internal topic, as
/// Kafka's ReplicaManager answers a produce or DeleteRecords to one.
pub(crate) fn internal_topic_refused(action: &str, name: &str) -> ApiError {
    ApiError::new(
        ResponseError::InvalidTopicException,
        format!("Cannot {action} internal topic {name}"),
    )
}

/// A topic and its open partitions.
#[derive(Debug)]
pub(crate) struct TopicState {
    /// What the metadata store holds.
    pub meta: TopicMeta,
    /// Open partitions, indexed by partition number.
    pub partitions: Vec<Partition>,
}

/// Topics by name and by ID.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: RwLock<HashMap<String, Arc<TopicState>>>,
    by_id: RwLock<HashMap<Uuid, Arc<TopicState>>>,
    /// Serializes lifecycle changes.
    lifecycle: Mutex<()>,
}

/// Kafka's topic name rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        ApiError::new(
            ResponseError::InvalidTopicException,
            format!("topic name '{name}' {why}"),
        )
    };
    if name.is_empty() {
        return Err(invalid("is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("cannot be '.' or '..'"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid("is longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "may contain only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

impl Broker {
    /// Broker-level topic defaults: static ones from start-up, overlaid by runtime overrides.
    pub(crate) fn broker_topic_defaults(&self) -> BTreeMap<String, String> {
        let mut defaults = self.config.log_defaults.clone();
        defaults.extend(self.metadata.broker_configs());
        defaults
    }

    /// Open storage partitions for every topic in the metadata store. Called once at start-up.
    pub(crate) fn load_topics(&self) -> Result<(), ApiError> {
        for meta in self.metadata.topics() {
            self.install_topic(meta)?;
        }
        Ok(())
    }

    fn install_topic(&self, meta: TopicMeta) -> Result<Arc<TopicState>, ApiError> {
        let defaults = self.broker_topic_defaults();
        let config = topic_config::partition_config(&meta.configs, &defaults);
        let delete_retention_ms = topic_config::delete_retention_ms(&meta.configs, &defaults);
        let partitions = (0..meta.partitions)
            .map(|partition| {
                let opened = self.log.create_partition(
                    PartitionId {
                        topic_id: meta.id,
                        partition,
                    },
                    config.clone(),
                )?;
                opened.set_delete_retention_ms(delete_retention_ms);
                Ok(opened)
            })
            .collect::<Result<Vec<_>, weir_storage::StorageError>>()?;
        let state = Arc::new(TopicState { meta, partitions });
        write(&self.topics.by_name).insert(state.meta.name.clone(), state.clone());
        write(&self.topics.by_id).insert(state.meta.id, state.clone());
        Ok(state)
    }

    /// A topic by name.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        read(&self.topics.by_name).get(name).cloned()
    }

    /// A topic by ID.
    pub(crate) fn topic_by_id(&self, id: Uuid) -> Option<Arc<TopicState>> {
        read(&self.topics.by_id).get(&id).cloned()
    }

    /// Every topic, ordered by name.
    pub(crate) fn topic_list(&self) -> Vec<Arc<TopicState>> {
        let mut all: Vec<_> = read(&self.topics.by_name).values().cloned().collect();
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    /// One partition, or UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Result<Partition, ApiError> {
        let state = self
            .topic(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| state.partitions.get(i).cloned())
            .ok_or_else(|| ApiError::unknown_partition(topic, partition))
    }

    /// The topic, created with the broker's defaults if it is missing and
    /// `auto.create.topics.enable` is on; otherwise UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) fn topic_or_auto_create(&self, name: &str) -> Result<Arc<TopicState>, ApiError> {
        if let Some(state) = self.topic(name) {
            return Ok(state);
        }
        // An internal topic is created by the component that owns it, with
        // its own settings, never as a side effect of a client's request.
        if !self.config.auto_create_topics || is_internal(name) {
            return Err(ApiError::unknown_topic(name));
        }
        validate_topic_name(name)?;
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Ok(_) => {}
            Err(err) if err.code == ResponseError::TopicAlreadyExists => {}
            Err(err) => return Err(err),
        }
        self.topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))
    }

    /// Create a topic. `partitions` and `replication_factor` of -1 take the
    /// broker defaults. With `validate_only` nothing changes.
    pub(crate) fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, ApiError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.default_partitions
        } else {
            partitions
        };
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("partition count {partitions} is outside 1..={TOPIC_PARTITIONS_MAX}"),
            ));
        }
        let replication_factor = if replication_factor == -1 {
            1
        } else {
            replication_factor
        };
        if replication_factor != 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {replication_factor} is larger than the 1 available broker"
                ),
            ));
        }
        for (key, value) in &configs {
            topic_config::validate(key, value)?;
        }
        let _guard = lock(&self.topics.lifecycle);
        if let Some(existing) = self.topic(name) {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic '{}' already exists", existing.meta.name),
            ));
        }
        if validate_only {
            return Ok(TopicMeta {
                name: name.to_string(),
                id: Uuid::nil(),
                partitions,
                replication_factor,
                configs,
            });
        }
        let meta = self.metadata.create_topic(NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs,
        })?;
        self.install_topic(meta.clone())?;
        tracing::info!(topic = %meta.name, id = %meta.id, partitions, "created topic");
        Ok(meta)
    }

    /// Delete a topic and forget its partitions.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<TopicMeta, ApiError> {
        if is_internal(name) {
            return Err(internal_topic_refused("delete", name));
        }
        let _guard = lock(&self.topics.lifecycle);
        let state = self
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        let meta = self.metadata.delete_topic(name)?;
        write(&self.topics.by_name).remove(name);
        write(&self.topics.by_id).remove(&state.meta.id);
        for partition in &state.partitions {
            self.log.remove_partition(partition.id())?;
        }
        tracing::info!(topic = %name, id = %meta.id, "deleted topic");
        Ok(meta)
    }

    /// Raise a topic's partition count to `total` (Kafka's CreatePartitions).
    pub(crate) fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<TopicMeta, ApiError> {
        // More partitions would move groups to other `__consumer_offsets`
        // partitions than the ones holding their offsets.
        if is_internal(name) {
            return Err(internal_topic_refused("add partitions to", name));
        }
        let _guard = lock(&self.topics.lifecycle);
        let state = self
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        let current = state.meta.partitions;
        if total <= current {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic '{name}' has {current} partitions; the new total {total} must be larger"
                ),
            ));
        }
        if total > TOPIC_PARTITIONS_MAX {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("partition count {total} is above {TOPIC_PARTITIONS_MAX}"),
            ));
        }
        if validate_only {
            return Ok(TopicMeta {
                partitions: total,
                ..state.meta.clone()
            });
        }
        let meta = self.metadata.set_partition_count(name, total)?;
        self.install_topic(meta.clone())?;
        tracing::info!(topic = %name, from = current, to = total, "added partitions");
        Ok(meta)
    }

    /// Apply config changes to a topic and to its open partitions.
    pub(crate) fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
        validate_only: bool,
    ) -> Result<TopicMeta, ApiError> {
        for change in changes {
            match change {
                ConfigChange::Set(key, value) => topic_config::validate(key, value)?,
                ConfigChange::Delete(key) => {
                    topic_config::definition(key).ok_or_else(|| {
                        ApiError::new(
                            ResponseError::InvalidConfig,
                            format!("unknown topic config '{key}'"),
                        )
                    })?;
                }
            }
        }
        let _guard = lock(&self.topics.lifecycle);
        let state = self
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        if validate_only {
            return Ok(state.meta.clone());
        }
        let meta = self.metadata.alter_topic_configs(name, changes)?;
        self.install_topic(meta.clone())?;
        Ok(meta)
    }

    /// Re-apply effective configs to every partition after broker-level defaults changed.
    pub(crate) fn refresh_partition_configs(&self) {
        let defaults = self.broker_topic_defaults();
        for state in self.topic_list() {
            let config = topic_config::partition_config(&state.meta.configs, &defaults);
            let delete_retention_ms =
                topic_config::delete_retention_ms(&state.meta.configs, &defaults);
            for partition in &state.partitions {
                partition.set_config(config.clone());
                partition.set_delete_retention_ms(delete_retention_ms);
            }
        }
    }
}

// A poisoned lock means a panic elsewhere already broke an invariant; the
// registry itself stays consistent (every write is one insert or remove), so
// keep serving with the data as it is.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a b", "caf\u{e9}", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code, ResponseError::InvalidTopicException, "{bad:?}");
        }
    }
}
