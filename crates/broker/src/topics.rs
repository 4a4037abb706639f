//! The broker's registry of topics and their partitions, and the topic
//! lifecycle (create, delete, add partitions, alter configs).
//!
//! The metadata store is the source of truth; this registry mirrors it with
//! the open storage [`Partition`] handles, so the data path never touches the
//! store. Lifecycle changes are serialized by one lock: admin operations are
//! rare and must not interleave between the store and the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::ResponseError;
use uuid::Uuid;
use weir_metadata::{ConfigChange, NewTopic, TopicMeta};
use weir_storage::{Partition, PartitionId};
use weir_sync::{PoisonedLock, lock, read, write};

use crate::error::ApiError;
use crate::view::{self, VIEW_SOURCE, VIEW_TAGS, View};
use crate::{Broker, topic_config};

/// Longest topic name Kafka accepts.
pub(crate) const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have; bounds what one CreateTopics can make the broker allocate.
pub(crate) const TOPIC_PARTITIONS_MAX: i32 = 100_000;

/// Kafka's internal topics. Only the broker writes them (the group
/// coordinator appends through its own partition handles); clients may not
/// produce to them, delete them, delete their records, or add partitions to
/// them: a record the broker did not write could stop it from starting.
/// `__share_group_state` holds share-partition state (share groups).
pub(crate) const INTERNAL_TOPICS: [&str; 3] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
];

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
    /// Open partitions, indexed by partition number: `None` for a partition
    /// whose replicas are all on other brokers (a cluster's). A single node
    /// holds every partition. A view holds none: its data is its source's.
    pub partitions: Vec<Option<Partition>>,
    /// What makes the topic a view (`crate::view`), if it is one.
    pub view: Option<View>,
}

impl TopicState {
    /// Partition `index`'s storage on this broker, if it holds a replica.
    pub fn local(&self, index: i32) -> Option<&Partition> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .and_then(Option::as_ref)
    }

    /// The partitions this broker holds, with their numbers.
    pub fn local_partitions(&self) -> impl Iterator<Item = (i32, &Partition)> {
        (0..)
            .zip(&self.partitions)
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
    }
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

    /// Open storage partitions for every topic in the metadata store, and
    /// remove the storage of partitions the store does not know. Called once
    /// at start-up.
    ///
    /// Storage is created before metadata is committed (see
    /// [`Broker::create_topic`]), so a crash between the two leaves storage
    /// nobody refers to; removing it here is what makes creation atomic
    /// across a crash.
    pub(crate) fn load_topics(&self) -> Result<(), ApiError> {
        if self.metadata.replicated() {
            return self.follow_metadata();
        }
        let topics = self.metadata.topics();
        for meta in &topics {
            self.install_topic(meta.clone())?;
        }
        let known: HashMap<Uuid, i32> = topics.iter().map(|t| (t.id, t.partitions)).collect();
        for id in self.log.partitions() {
            let referenced = known
                .get(&id.topic_id)
                .is_some_and(|&count| (0..count).contains(&id.partition));
            if !referenced {
                tracing::warn!(
                    topic_id = %id.topic_id,
                    partition = id.partition,
                    "removing the storage of a partition no topic refers to \
                     (left by a creation that did not commit)"
                );
                self.log.remove_partition(id)?;
            }
        }
        Ok(())
    }

    /// Open (or re-open) every partition of a known topic and register it.
    fn install_topic(&self, meta: TopicMeta) -> Result<Arc<TopicState>, ApiError> {
        if View::of(&meta.configs).is_some() {
            let none = (0..meta.partitions).map(|_| None).collect();
            return Ok(self.register(meta, none)?);
        }
        let partitions = self.open_partitions(meta.id, 0..meta.partitions, &meta.configs)?;
        Ok(self.register(meta, partitions.into_iter().map(Some).collect())?)
    }

    /// Create (or re-open) the storage of partitions `range` of topic `id`.
    /// All or nothing: the storage creates every new partition of the range
    /// with one folder fsync, or none of them.
    fn open_partitions(
        &self,
        id: Uuid,
        range: std::ops::Range<i32>,
        configs: &BTreeMap<String, String>,
    ) -> Result<Vec<Partition>, ApiError> {
        let defaults = self.broker_topic_defaults();
        let mut config = topic_config::partition_config(configs, &defaults);
        config.tag_summaries = self.topic_by_id(id).is_some_and(|state| {
            self.view_sources(&self.topic_list())
                .contains(&state.meta.name)
        });
        let delete_retention_ms = topic_config::delete_retention_ms(configs, &defaults);
        let ids: Vec<PartitionId> = range
            .map(|partition| PartitionId {
                topic_id: id,
                partition,
            })
            .collect();
        let opened = self.log.create_partitions(&ids, config)?;
        for handle in &opened {
            handle.set_delete_retention_ms(delete_retention_ms);
        }
        Ok(opened)
    }

    /// Undo [`Self::open_partitions`] after a later step failed. A removal
    /// that fails leaves storage no topic refers to, which the next start
    /// removes; it is logged, not returned, so the first error is the one
    /// the client sees.
    fn remove_storage(&self, partitions: &[Partition]) {
        for partition in partitions {
            if let Err(err) = self.log.remove_partition(partition.id()) {
                tracing::error!(
                    partition = ?partition.id(),
                    error = %err,
                    "cannot roll back the storage of a partition; the next start removes it"
                );
            }
        }
    }

    fn register(
        &self,
        meta: TopicMeta,
        partitions: Vec<Option<Partition>>,
    ) -> Result<Arc<TopicState>, PoisonedLock> {
        let view = View::of(&meta.configs);
        let state = Arc::new(TopicState {
            meta,
            partitions,
            view,
        });
        write(&self.topics.by_name)?.insert(state.meta.name.clone(), state.clone());
        write(&self.topics.by_id)?.insert(state.meta.id, state.clone());
        Ok(state)
    }

    /// Every partition the broker holds, all topics together.
    fn partition_total(&self) -> i64 {
        read_registry(&self.topics.by_name)
            .values()
            .filter(|t| t.view.is_none())
            .map(|t| i64::from(t.meta.partitions))
            .sum()
    }

    /// POLICY_VIOLATION, and one log line naming the limit and how to
    /// raise it, if adding `adding` partitions would pass `max.partitions`.
    fn check_partition_limit(&self, adding: i32, what: &str) -> Result<(), ApiError> {
        let limit = self.config.max_partitions;
        let current = self.partition_total();
        let total = current.saturating_add(i64::from(adding));
        if total <= limit {
            return Ok(());
        }
        tracing::warn!(
            limit,
            current,
            adding,
            "refused {what}: the broker would hold {total} partitions, past its limit \
             max.partitions={limit}; raise it with `weir serve --set max.partitions=N` \
             or delete topics"
        );
        Err(ApiError::new(
            ResponseError::PolicyViolation,
            format!(
                "{what} would bring the broker to {total} partitions, past its limit \
                 max.partitions={limit} (it holds {current})"
            ),
        ))
    }

    /// A topic by name.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        read_registry(&self.topics.by_name).get(name).cloned()
    }

    /// A topic by ID.
    pub(crate) fn topic_by_id(&self, id: Uuid) -> Option<Arc<TopicState>> {
        read_registry(&self.topics.by_id).get(&id).cloned()
    }

    /// Every topic, ordered by name.
    pub(crate) fn topic_list(&self) -> Vec<Arc<TopicState>> {
        let mut all: Vec<_> = read_registry(&self.topics.by_name)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        all
    }

    /// One partition's storage here: UNKNOWN_TOPIC_OR_PARTITION if the topic
    /// has no such partition, NOT_LEADER_OR_FOLLOWER if this broker holds
    /// no replica of it. A view's partition is its source's.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Result<Partition, ApiError> {
        let state = self
            .topic(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?;
        let (state, _) = self.data_topic(state)?;
        local_partition(&state, partition)
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
        self.create_topic_assigned(
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
            None,
        )
    }

    /// [`Self::create_topic`], with the replica sets a client chose when
    /// `assignments` is given (one per partition, the preferred leader
    /// first; the caller has checked their shape and count against
    /// `partitions` and `replication_factor`). A cluster's quorum checks
    /// that every broker named is registered; a single node's caller has
    /// checked that each set is this node.
    pub(crate) fn create_topic_assigned(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicMeta, ApiError> {
        validate_topic_name(name)?;
        if configs.contains_key(VIEW_SOURCE) || configs.contains_key(VIEW_TAGS) {
            if assignments.is_some() {
                return Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("view {name} has its source's replicas; give no replica assignment"),
                ));
            }
            return self.create_view(name, partitions, replication_factor, configs, validate_only);
        }
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
        let replication_factor = if replication_factor == -1 && self.metadata.replicated() {
            self.config.default_replication_factor
        } else if replication_factor == -1 {
            1
        } else {
            replication_factor
        };
        if replication_factor != 1 && !self.metadata.replicated() {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {replication_factor} is larger than the 1 available broker"
                ),
            ));
        }
        if replication_factor < 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {replication_factor} must be at least 1"),
            ));
        }
        for (key, value) in &configs {
            topic_config::validate(key, value)?;
        }
        let _guard = lock(&self.topics.lifecycle)?;
        self.refuse_existing(name)?;
        self.check_partition_limit(
            partitions,
            &format!("creating topic '{name}' with {partitions} partitions"),
        )?;
        if validate_only {
            return Ok(TopicMeta {
                name: name.to_string(),
                id: Uuid::nil(),
                partitions,
                replication_factor,
                configs,
                assignments: Vec::new(),
            });
        }
        if self.metadata.replicated() {
            // A cluster's topic: commit first, then follow the commit like
            // every other broker (its storage is made where it is assigned).
            let assigned = assignments.is_some();
            let meta = self
                .metadata
                .create_topic(NewTopic {
                    name: name.to_string(),
                    id: weir_metadata::new_topic_id(|id| self.topic_by_id(id).is_some()),
                    partitions,
                    replication_factor,
                    configs,
                    assignments,
                })
                .map_err(|e| assignment_refused(e, assigned))?;
            self.follow_metadata_locked()?;
            return Ok(meta);
        }
        // Storage first, then the metadata commit, which is the commit
        // point: a failure before it removes the storage just made, and a
        // crash before it leaves storage that the next start removes.
        // A random v4 UUID; the checks only make a collision impossible
        // rather than improbable, at a cost independent of the topic count.
        let id = weir_metadata::new_topic_id(|id| {
            let first = PartitionId {
                topic_id: id,
                partition: 0,
            };
            self.topic_by_id(id).is_some() || self.log.partition(first).is_some()
        });
        let opened = self.open_partitions(id, 0..partitions, &configs)?;
        let committed = self.metadata.create_topic(NewTopic {
            name: name.to_string(),
            id,
            partitions,
            replication_factor,
            configs,
            assignments: None,
        });
        let meta = match committed {
            Ok(meta) => meta,
            Err(err) => {
                self.remove_storage(&opened);
                return Err(err.into());
            }
        };
        self.register(meta.clone(), opened.into_iter().map(Some).collect())?;
        tracing::info!(topic = %meta.name, id = %meta.id, partitions, "created topic");
        Ok(meta)
    }

    /// Create view `name` (see `crate::view`): metadata only, since its
    /// data is its source's. The source's partitions start keeping tag
    /// summaries, so the view's reads skip batches without a match.
    fn create_view(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, ApiError> {
        let _guard = lock(&self.topics.lifecycle)?;
        self.refuse_existing(name)?;
        let (source, filter) =
            view::check_new_view(self, name, partitions, replication_factor, &configs)?;
        let new = NewTopic {
            name: name.to_string(),
            id: Uuid::nil(),
            partitions: source.meta.partitions,
            replication_factor: source.meta.replication_factor,
            configs,
            assignments: None,
        };
        if validate_only {
            return Ok(TopicMeta {
                name: new.name,
                id: new.id,
                partitions: new.partitions,
                replication_factor: new.replication_factor,
                configs: new.configs,
                assignments: Vec::new(),
            });
        }
        let new = NewTopic {
            id: weir_metadata::new_topic_id(|id| self.topic_by_id(id).is_some()),
            ..new
        };
        let meta = self.metadata.create_topic(new)?;
        if self.metadata.replicated() {
            self.follow_metadata_locked()?;
        } else {
            let none = (0..meta.partitions).map(|_| None).collect();
            self.register(meta.clone(), none)?;
            self.refresh_partition_configs();
        }
        tracing::info!(view = %meta.name, id = %meta.id, source = %source.meta.name,
            tags = %filter, "created view");
        Ok(meta)
    }

    /// TOPIC_ALREADY_EXISTS if `name` is taken.
    fn refuse_existing(&self, name: &str) -> Result<(), ApiError> {
        match self.topic(name) {
            Some(existing) => Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic '{}' already exists", existing.meta.name),
            )),
            None => Ok(()),
        }
    }

    /// Delete a topic and forget its partitions. A topic that views read
    /// is refused until they are deleted.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<TopicMeta, ApiError> {
        if is_internal(name) {
            return Err(internal_topic_refused("delete", name));
        }
        let _guard = lock(&self.topics.lifecycle)?;
        let state = self
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        let views = self.views_of(name);
        if !views.is_empty() {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!(
                    "Cannot delete topic {name}: views read it ({}); delete them first",
                    views.join(", ")
                ),
            ));
        }
        let meta = self.metadata.delete_topic(name)?;
        if self.metadata.replicated() {
            self.follow_metadata_locked()?;
            return Ok(meta);
        }
        write(&self.topics.by_name)?.remove(name);
        write(&self.topics.by_id)?.remove(&state.meta.id);
        weir_metrics::metrics().forget_topic(name);
        for (_, partition) in state.local_partitions() {
            self.replicas.forget(partition.id())?;
            self.log.remove_partition(partition.id())?;
        }
        if state.view.is_some() {
            self.refresh_partition_configs();
        }
        tracing::info!(topic = %name, id = %meta.id, "deleted topic");
        Ok(meta)
    }

    /// Raise a topic's partition count to `total` (Kafka's CreatePartitions),
    /// over the replica sets a client chose when `assignments` is given (one
    /// per new partition; see [`Self::create_topic_assigned`]).
    pub(crate) fn create_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> Result<TopicMeta, ApiError> {
        // More partitions would move groups to other `__consumer_offsets`
        // partitions than the ones holding their offsets.
        if is_internal(name) {
            return Err(internal_topic_refused("add partitions to", name));
        }
        let _guard = lock(&self.topics.lifecycle)?;
        let state = self
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        view::refuse_if_view(&state, "add partitions to")?;
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
        self.check_partition_limit(
            total - current,
            &format!("adding {} partitions to topic '{name}'", total - current),
        )?;
        if validate_only {
            return Ok(TopicMeta {
                partitions: total,
                ..state.meta.clone()
            });
        }
        if self.metadata.replicated() {
            let meta = match assignments {
                Some(replicas) => self
                    .metadata
                    .add_assigned_partitions(name, current, replicas)
                    .map_err(|e| assignment_refused(e, true))?,
                None => self.metadata.set_partition_count(name, total)?,
            };
            self.follow_metadata_locked()?;
            tracing::info!(topic = %name, from = current, to = total, "added partitions");
            return Ok(meta);
        }
        // As in create_topic: storage of the new partitions first, then the commit.
        let added = self.open_partitions(state.meta.id, current..total, &state.meta.configs)?;
        let meta = match self.metadata.set_partition_count(name, total) {
            Ok(meta) => meta,
            Err(err) => {
                self.remove_storage(&added);
                return Err(err.into());
            }
        };
        let mut partitions = state.partitions.clone();
        partitions.extend(added.into_iter().map(Some));
        self.register(meta.clone(), partitions)?;
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
            let key = match change {
                ConfigChange::Set(key, _) | ConfigChange::Delete(key) => key,
            };
            if key == VIEW_SOURCE || key == VIEW_TAGS {
                return Err(ApiError::new(
                    ResponseError::InvalidConfig,
                    format!(
                        "{key} is set only when a view is created; \
                         delete the view and create it again to change it"
                    ),
                ));
            }
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
        let _guard = lock(&self.topics.lifecycle)?;
        let state = self
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        view::refuse_if_view(&state, "change the configs of")?;
        if validate_only {
            return Ok(state.meta.clone());
        }
        let meta = self.metadata.alter_topic_configs(name, changes)?;
        if self.metadata.replicated() {
            self.follow_metadata_locked()?;
        } else {
            self.install_topic(meta.clone())?;
        }
        Ok(meta)
    }

    /// Follow a cluster's metadata: hold storage for exactly the partitions
    /// this broker is assigned a replica of (made when assigned, removed
    /// when the replica moves away or the topic is deleted), give each
    /// topic its current metadata and configs, then take up each
    /// partition's role (leader or follower) and each group coordinator
    /// shard it now leads. The change feed calls it after every metadata
    /// change, start-up calls it first, and a lifecycle change made here
    /// calls it once committed; a second call with nothing new changes
    /// nothing.
    pub fn follow_metadata(&self) -> Result<(), ApiError> {
        let _guard = lock(&self.topics.lifecycle)?;
        self.follow_metadata_locked()
    }

    fn follow_metadata_locked(&self) -> Result<(), ApiError> {
        let me = self.config.node_id;
        let topics = self.metadata.topics();
        let defaults = self.broker_topic_defaults();
        let wanted: HashSet<Uuid> = topics.iter().map(|t| t.id).collect();
        let viewed: HashSet<String> = topics
            .iter()
            .filter_map(|t| View::of(&t.configs).map(|v| v.source))
            .collect();
        for state in self.topic_list() {
            if !wanted.contains(&state.meta.id) {
                self.forget_topic(&state)?;
                tracing::info!(topic = %state.meta.name, id = %state.meta.id, "deleted topic");
            }
        }
        for meta in topics {
            let existing = self.topic_by_id(meta.id);
            // A view created or deleted changes its source's tag summaries.
            let summaries = |e: &TopicState| {
                e.local_partitions()
                    .next()
                    .is_none_or(|(_, p)| p.config().tag_summaries == viewed.contains(&meta.name))
            };
            if existing
                .as_ref()
                .is_some_and(|e| e.meta == meta && summaries(e))
            {
                continue;
            }
            // A view holds no data of its own.
            let is_view = View::of(&meta.configs).is_some();
            let hosted = |p: i32| {
                !is_view
                    && meta.assignment(p, me).is_some_and(|a| {
                        a.replicas.contains(&me) || a.adding_replicas.contains(&me)
                    })
            };
            let held = |p: i32| existing.as_ref().and_then(|e| e.local(p).cloned());
            let mut config = topic_config::partition_config(&meta.configs, &defaults);
            config.tag_summaries = viewed.contains(&meta.name);
            let delete_retention_ms = topic_config::delete_retention_ms(&meta.configs, &defaults);
            let missing: Vec<PartitionId> = (0..meta.partitions)
                .filter(|&p| hosted(p) && held(p).is_none())
                .map(|partition| PartitionId {
                    topic_id: meta.id,
                    partition,
                })
                .collect();
            let mut opened: HashMap<i32, Partition> = HashMap::new();
            if !missing.is_empty() {
                for handle in self.log.create_partitions(&missing, config.clone())? {
                    opened.insert(handle.id().partition, handle);
                }
            }
            let mut partitions = Vec::with_capacity(usize::try_from(meta.partitions).unwrap_or(0));
            for p in 0..meta.partitions {
                let handle = held(p).or_else(|| opened.remove(&p));
                match handle {
                    Some(handle) if hosted(p) => {
                        handle.set_config(config.clone());
                        handle.set_delete_retention_ms(delete_retention_ms);
                        partitions.push(Some(handle));
                    }
                    Some(handle) => {
                        tracing::info!(topic = %meta.name, partition = p,
                            "removing the replica moved off this broker");
                        self.replicas.forget(handle.id())?;
                        self.log.remove_partition(handle.id())?;
                        partitions.push(None);
                    }
                    None => partitions.push(None),
                }
            }
            if existing.is_none() {
                let here = partitions.iter().flatten().count();
                tracing::info!(topic = %meta.name, id = %meta.id, partitions = meta.partitions,
                    replicas_here = here, "following topic");
            }
            // A name reused after a delete that this broker has not applied
            // yet: the old topic goes first.
            if let Some(old) = self.topic(&meta.name)
                && old.meta.id != meta.id
            {
                self.forget_topic(&old)?;
            }
            self.register(meta, partitions)?;
        }
        // Storage no topic refers to here: a crash between a step above and
        // the next left it.
        for id in self.log.partitions() {
            let referenced = self
                .topic_by_id(id.topic_id)
                .is_some_and(|state| state.local(id.partition).is_some());
            if !referenced {
                tracing::warn!(topic_id = %id.topic_id, partition = id.partition,
                    "removing the storage of a partition this broker is not assigned");
                self.replicas.forget(id)?;
                self.log.remove_partition(id)?;
            }
        }
        self.apply_replica_assignments()
            .map_err(|e| ApiError::new(ResponseError::KafkaStorageError, e.to_string()))?;
        // Group configs may be among what changed.
        self.shares.forget_settings();
        self.follow_coordinators()?;
        self.follow_txn_coordinators()?;
        self.follow_share_coordinators()
    }

    /// Drop a topic from the registry and remove its storage here.
    fn forget_topic(&self, state: &TopicState) -> Result<(), ApiError> {
        {
            let mut by_name = write(&self.topics.by_name)?;
            if by_name
                .get(&state.meta.name)
                .is_some_and(|t| t.meta.id == state.meta.id)
            {
                by_name.remove(&state.meta.name);
                weir_metrics::metrics().forget_topic(&state.meta.name);
            }
        }
        write(&self.topics.by_id)?.remove(&state.meta.id);
        for (_, partition) in state.local_partitions() {
            self.replicas.forget(partition.id())?;
            self.log.remove_partition(partition.id())?;
        }
        Ok(())
    }

    /// Re-apply effective configs to every partition after broker-level defaults changed.
    pub(crate) fn refresh_partition_configs(&self) {
        let defaults = self.broker_topic_defaults();
        let topics = self.topic_list();
        let viewed = self.view_sources(&topics);
        for state in topics {
            let mut config = topic_config::partition_config(&state.meta.configs, &defaults);
            config.tag_summaries = viewed.contains(&state.meta.name);
            let delete_retention_ms =
                topic_config::delete_retention_ms(&state.meta.configs, &defaults);
            for (_, partition) in state.local_partitions() {
                partition.set_config(config.clone());
                partition.set_delete_retention_ms(delete_retention_ms);
            }
        }
    }
}

/// The metadata's refusal of replica sets as Kafka answers it: a client's
/// own assignment that names an unknown broker, or twice the same one, is
/// INVALID_REPLICA_ASSIGNMENT, not INVALID_REPLICATION_FACTOR.
fn assignment_refused(err: weir_metadata::MetadataError, assigned: bool) -> ApiError {
    match err {
        weir_metadata::MetadataError::InvalidReplicationFactor(why) if assigned => {
            ApiError::new(ResponseError::InvalidReplicaAssignment, why)
        }
        other => other.into(),
    }
}

impl Broker {
    /// Make a coordinator's shards follow this broker's leadership of the
    /// partitions of its internal topic `state` (`__consumer_offsets`,
    /// `__transaction_state`): a partition led here at an epoch its shard
    /// was not loaded at is loaded (an older load unloaded first: it
    /// missed what the leaders in between wrote, and changes can arrive
    /// coalesced, so this broker may never have seen itself lose the lead;
    /// the old load's parked requests hear NOT_COORDINATOR and retry
    /// against the new one), and a loaded partition no longer led here is
    /// unloaded. Returns the partitions loaded and unloaded. Blocks on file
    /// I/O (a load replays the partition).
    pub(crate) fn follow_leadership(
        &self,
        state: &TopicState,
        loaded_epoch: impl Fn(i32) -> Option<i32>,
        unload: impl Fn(i32),
        load: impl Fn(i32, Partition) -> Result<(), String>,
    ) -> Result<(Vec<i32>, Vec<i32>), ApiError> {
        let (mut loaded, mut unloaded) = (Vec::new(), Vec::new());
        for index in 0..state.meta.partitions {
            let led = state.local(index).filter(|p| {
                matches!(
                    self.replicas.leadership(p.id()),
                    crate::replica::Leadership::Leader { .. }
                )
            });
            match (led, loaded_epoch(index)) {
                (Some(partition), was) if was != Some(partition.leader_epoch()) => {
                    if was.is_some() {
                        unload(index);
                    }
                    load(index, partition.clone())
                        .map_err(|e| ApiError::new(ResponseError::KafkaStorageError, e))?;
                    loaded.push(index);
                }
                (None, Some(_)) => {
                    unload(index);
                    unloaded.push(index);
                }
                _ => {}
            }
        }
        Ok((loaded, unloaded))
    }
}

/// Partition `index` of `state` as held here (see [`Broker::partition`]).
pub(crate) fn local_partition(state: &TopicState, index: i32) -> Result<Partition, ApiError> {
    if !(0..state.meta.partitions).contains(&index) {
        return Err(ApiError::unknown_partition(&state.meta.name, index));
    }
    state.local(index).cloned().ok_or_else(|| {
        ApiError::new(
            ResponseError::NotLeaderOrFollower,
            format!(
                "this broker holds no replica of {}-{index}",
                state.meta.name
            ),
        )
    })
}

/// The registry for a reader that has no error to return: a lock a panic
/// poisoned raises that panic again rather than be read past.
fn read_registry<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    read(lock).unwrap_or_else(PoisonedLock::reraise)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use weir_metadata::{LocalMetadataStore, MetadataError, MetadataStore};
    use weir_storage::{CommitLog, LogConfig, SystemClock};

    use super::*;
    use crate::BrokerConfig;
    use crate::admin::testing;

    /// A local store whose topic changes fail while `fail` is set, as a
    /// full disk would make them.
    struct FailingStore {
        inner: LocalMetadataStore,
        fail: AtomicBool,
    }

    impl FailingStore {
        fn refuse(&self) -> Result<(), MetadataError> {
            match self.fail.load(Ordering::SeqCst) {
                true => Err(MetadataError::Storage("injected failure".into())),
                false => Ok(()),
            }
        }
    }

    impl MetadataStore for FailingStore {
        fn cluster_id(&self) -> String {
            self.inner.cluster_id()
        }
        fn topics(&self) -> Vec<TopicMeta> {
            self.inner.topics()
        }
        fn topic(&self, name: &str) -> Option<TopicMeta> {
            self.inner.topic(name)
        }
        fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
            self.inner.topic_by_id(id)
        }
        fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetadataError> {
            self.refuse()?;
            self.inner.create_topic(topic)
        }
        fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError> {
            self.inner.delete_topic(name)
        }
        fn set_partition_count(&self, name: &str, total: i32) -> Result<TopicMeta, MetadataError> {
            self.refuse()?;
            self.inner.set_partition_count(name, total)
        }
        fn alter_topic_configs(
            &self,
            name: &str,
            changes: &[ConfigChange],
        ) -> Result<TopicMeta, MetadataError> {
            self.inner.alter_topic_configs(name, changes)
        }
        fn broker_configs(&self) -> BTreeMap<String, String> {
            self.inner.broker_configs()
        }
        fn alter_broker_configs(&self, changes: &[ConfigChange]) -> Result<(), MetadataError> {
            self.inner.alter_broker_configs(changes)
        }
        fn group_configs(&self, group: &str) -> BTreeMap<String, String> {
            self.inner.group_configs(group)
        }
        fn alter_group_configs(
            &self,
            group: &str,
            changes: &[ConfigChange],
        ) -> Result<(), MetadataError> {
            self.inner.alter_group_configs(group, changes)
        }
        fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError> {
            self.inner.allocate_producer_ids(count)
        }
    }

    #[test]
    fn a_failed_metadata_commit_leaves_no_storage_and_the_broker_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SystemClock);
        let (log, _) = CommitLog::open(dir.path(), LogConfig::default(), clock.clone()).unwrap();
        let store = Arc::new(FailingStore {
            inner: LocalMetadataStore::open(dir.path()).unwrap(),
            fail: AtomicBool::new(false),
        });
        let broker = Broker::new(BrokerConfig::default(), log, store.clone(), clock).unwrap();
        broker
            .create_topic("grown", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let before = broker.log().partitions();

        store.fail.store(true, Ordering::SeqCst);
        let err = broker
            .create_topic("half", 3, 1, BTreeMap::new(), false)
            .unwrap_err();
        assert_eq!(err.code, ResponseError::KafkaStorageError);
        let err = broker
            .create_partitions("grown", 4, false, None)
            .unwrap_err();
        assert_eq!(err.code, ResponseError::KafkaStorageError);
        assert!(broker.topic("half").is_none());
        assert_eq!(broker.topic("grown").unwrap().meta.partitions, 1);
        assert_eq!(broker.log().partitions(), before, "storage rolled back");
        broker.log().shutdown().unwrap();
        drop(broker);

        let broker = testing::open(dir.path(), BrokerConfig::default());
        assert!(broker.topic("half").is_none());
        assert_eq!(broker.log().partitions(), before);
        broker
            .create_topic("half", 3, 1, BTreeMap::new(), false)
            .unwrap();
        broker.create_partitions("grown", 4, false, None).unwrap();
        assert!(broker.partition("grown", 3).is_ok());
    }

    #[test]
    fn a_registry_lock_poisoned_by_a_panic_refuses_lifecycle_changes() {
        let t = testing::broker();
        t.broker
            .create_topic("kept", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = lock(&t.broker.topics.lifecycle);
            panic!("a lifecycle change stopped halfway");
        }));
        assert!(panicked.is_err());
        let err = t
            .broker
            .create_topic("new", 1, 1, BTreeMap::new(), false)
            .unwrap_err();
        assert_eq!(err.code, ResponseError::UnknownServerError);
        let err = t.broker.delete_topic("kept").unwrap_err();
        assert_eq!(err.code, ResponseError::UnknownServerError);
        assert!(t.broker.metadata().topic("new").is_none());
        assert!(t.broker.topic("kept").is_some());
    }

    #[test]
    fn a_storage_failure_while_adding_partitions_commits_nothing_and_the_broker_restarts() {
        let t = testing::broker();
        t.broker
            .create_topic("grow", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let id = t.broker.topic("grow").unwrap().meta.id;
        let before = t.broker.log().partitions();
        // Partition 2's index file cannot be created: a folder is in its way.
        let blocker = t
            .dir
            .path()
            .join("index")
            .join(format!("{}-2.idx", id.hyphenated()));
        std::fs::create_dir_all(&blocker).unwrap();
        let err = t
            .broker
            .create_partitions("grow", 4, false, None)
            .unwrap_err();
        assert_eq!(err.code, ResponseError::KafkaStorageError);
        assert_eq!(t.broker.metadata().topic("grow").unwrap().partitions, 1);
        assert_eq!(t.broker.topic("grow").unwrap().partitions.len(), 1);
        assert_eq!(
            t.broker.log().partitions(),
            before,
            "partition 1 rolled back"
        );
        std::fs::remove_dir(&blocker).unwrap();
        t.broker.log().shutdown().unwrap();
        let testing::TestBroker { broker, dir } = t;
        drop(broker);

        let broker = testing::open(dir.path(), BrokerConfig::default());
        assert_eq!(broker.topic("grow").unwrap().meta.partitions, 1);
        broker.create_partitions("grow", 4, false, None).unwrap();
        assert!(broker.partition("grow", 3).is_ok());
    }

    #[test]
    fn storage_no_topic_refers_to_is_removed_at_start() {
        let t = testing::broker();
        t.broker
            .create_topic("kept", 2, 1, BTreeMap::new(), false)
            .unwrap();
        let before = t.broker.log().partitions();
        let kept = t.broker.topic("kept").unwrap().meta.id;
        // What a crash between storage and the metadata commit leaves behind.
        let orphans = [
            PartitionId {
                topic_id: Uuid::from_u128(7),
                partition: 0,
            },
            PartitionId {
                topic_id: kept,
                partition: 2,
            },
        ];
        for id in orphans {
            t.broker
                .log()
                .create_partition(id, weir_storage::PartitionConfig::default())
                .unwrap();
        }
        t.broker.log().shutdown().unwrap();
        let testing::TestBroker { broker, dir } = t;
        drop(broker);

        let broker = testing::open(dir.path(), BrokerConfig::default());
        assert_eq!(broker.log().partitions(), before);
        assert_eq!(broker.topic("kept").unwrap().partitions.len(), 2);
    }

    #[test]
    fn partition_limit_is_policy_violation_for_create_grow_and_auto_create() {
        let offsets = crate::GroupConfig::default().offsets_topic_num_partitions;
        let t = testing::broker_with(BrokerConfig {
            max_partitions: i64::from(offsets) + 10,
            ..BrokerConfig::default()
        });
        t.broker
            .create_topic("eight", 8, 1, BTreeMap::new(), false)
            .unwrap();
        let refused = [
            t.broker.create_topic("three", 3, 1, BTreeMap::new(), false),
            t.broker.create_topic("dry", 3, 1, BTreeMap::new(), true),
            t.broker.create_partitions("eight", 11, false, None),
        ];
        for outcome in refused {
            let err = outcome.unwrap_err();
            assert_eq!(err.code, ResponseError::PolicyViolation, "{err}");
            assert!(err.message.contains("max.partitions"), "{err}");
        }
        // Auto-create takes num.partitions (4): past the limit too.
        let err = t.broker.topic_or_auto_create("auto").unwrap_err();
        assert_eq!(err.code, ResponseError::PolicyViolation);
        assert!(t.broker.topic("three").is_none() && t.broker.topic("auto").is_none());
        t.broker
            .create_partitions("eight", 10, false, None)
            .unwrap();
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a b", "caf\u{e9}", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code, ResponseError::InvalidTopicException, "{bad:?}");
        }
    }
}
