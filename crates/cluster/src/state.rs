//! The cluster's metadata as a deterministic state machine: what a
//! [`Command`] does to a [`ClusterState`].
//!
//! Every node applies the same committed commands in the same order, so
//! `apply` must depend on nothing but the state and the command: no clock,
//! no randomness, no local settings. A proposer decides what it can only
//! decide with those (a new topic's ID, where its replicas go) and puts the
//! decision in the command; `apply` checks it against the state it meets,
//! which may have moved on since the proposer looked, and refuses it then.
//! A refusal is a result, not an error: the command stays in the log and
//! changes nothing.

use std::collections::BTreeMap;

use uuid::Uuid;
use weir_metadata::{
    AlterPartition, BrokerInfo, ConfigChange, NO_LEADER, PartitionAssignment, TopicMeta,
};
pub use weir_metadata::{ElectionKind, PartitionError, PartitionResult, Reassignment};

/// The topic (or broker) config that lets a partition whose in-sync
/// replicas are all fenced be led by an out-of-sync one.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Most partitions an unregistration refused for the replicas a broker
/// still holds names (the message says how many more).
const UNREGISTER_NAMED_MAX: usize = 20;

/// Most producer ids one command may allocate.
pub(crate) const PRODUCER_ID_BLOCK_MAX: i64 = 1 << 20;

/// One change to the metadata: the application data of a Raft log entry.
/// Its serialized form is part of the Raft log's format (docs/format.md):
/// a variant or field is added, never renamed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Name the cluster: the first leader proposes it; once set it never changes.
    SetClusterId {
        /// The cluster id, Kafka style (22 characters of URL-safe base64).
        id: String,
    },
    /// Create a topic.
    CreateTopic {
        /// Topic name, validated by the proposer.
        name: String,
        /// Topic ID, chosen by the proposer.
        id: Uuid,
        /// Where its partitions' replicas go.
        replicas: Placement,
        /// Explicit configs.
        configs: BTreeMap<String, String>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Add partitions to a topic: one replica list per new partition.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The partition count the proposer saw; refused if it has changed.
        from: i32,
        /// Where the new partitions' replicas go.
        replicas: Placement,
    },
    /// Change a topic's configs.
    AlterTopicConfigs {
        /// Topic name.
        name: String,
        /// The changes, in order.
        changes: Vec<ConfigChange>,
    },
    /// Change broker-level config overrides.
    AlterBrokerConfigs {
        /// The changes, in order.
        changes: Vec<ConfigChange>,
    },
    /// Change a group's configs (the GROUP config resource).
    AlterGroupConfigs {
        /// The group id.
        group: String,
        /// The changes, in order.
        changes: Vec<ConfigChange>,
    },
    /// Set and remove users' SCRAM credentials (AlterUserScramCredentials).
    AlterScramCredentials {
        /// The changes, in order.
        changes: Vec<weir_metadata::ScramChange>,
    },
    /// Keep and remove ACL bindings (CreateAcls, DeleteAcls).
    AlterAcls {
        /// The changes, in order.
        changes: Vec<weir_metadata::AclChange>,
    },
    /// Set and remove client quota values (AlterClientQuotas).
    AlterClientQuotas {
        /// The changes, in order.
        changes: Vec<weir_metadata::ClientQuotaChange>,
    },
    /// Hand out `count` producer ids.
    AllocateProducerIds {
        /// How many.
        count: i64,
    },
    /// A broker (re)registers: it is fenced until it asks to be unfenced.
    RegisterBroker {
        /// Its id.
        id: i32,
        /// Its advertised Kafka host.
        host: String,
        /// Its advertised Kafka port.
        port: i32,
        /// `broker.rack`.
        rack: Option<String>,
        /// Its advertised listeners; absent in registrations written
        /// before listeners were named.
        #[serde(default)]
        endpoints: Vec<weir_metadata::Endpoint>,
    },
    /// Fence a broker (its session expired, or it shut down): it leaves
    /// every ISR it is not the last member of, and each partition it led
    /// moves to another in-sync replica.
    FenceBroker {
        /// Its id.
        id: i32,
        /// The registration fenced; a newer one is left alone.
        epoch: i64,
    },
    /// Unfence a broker that has caught up with the metadata; partitions left
    /// without a leader whose ISR it is in get it as leader.
    UnfenceBroker {
        /// Its id.
        id: i32,
        /// The registration unfenced.
        epoch: i64,
    },
    /// A leader changes a partition's ISR.
    AlterPartition(AlterPartition),
    /// Elect leaders: Kafka's ElectLeaders, and the controller's own
    /// preferred elections for `auto.leader.rebalance.enable`.
    ElectLeaders {
        /// The (topic, partition) pairs to elect for; `None` for every
        /// partition (then those that need no election are left out of the
        /// results, as Kafka's controller leaves them out).
        partitions: Option<Vec<(String, i32)>>,
        /// Which election (Kafka's field name; `kind` is the command's tag).
        election_type: ElectionKind,
    },
    /// Start, replace or cancel partition reassignments (Kafka's
    /// AlterPartitionReassignments, KIP-455).
    AlterReassignments {
        /// (topic, partition, target replicas), in order; a `None` target
        /// cancels the partition's reassignment.
        changes: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// Remove a broker's registration (Kafka's UnregisterBroker): only a
    /// fenced broker that no partition lists as a replica.
    UnregisterBroker {
        /// Its id.
        id: i32,
    },
    /// Record the metadata directory of a quorum node with the controller
    /// role (KIP-853's directory id): the quorum's leader binds a voter
    /// when it first admits it, and an observer when it joins. A node whose
    /// Raft folder was lost starts with a new directory and is not taken
    /// back as the voter it was (see `docs/operations.md`).
    BindDirectory {
        /// The node id.
        node: u64,
        /// Its directory id (`<data dir>/raft/directory.id`); none forgets
        /// the node's (it left the quorum).
        directory: Option<Uuid>,
    },
}

/// Where new partitions' replicas go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    /// As given: `replicas[p]` are new partition `p`'s brokers, the
    /// preferred leader first (CreateTopics with manual assignments).
    Explicit {
        /// Replicas per partition.
        replicas: Vec<Vec<i32>>,
    },
    /// Spread over the unfenced brokers when the command is applied, so the
    /// choice sees the committed state rather than the proposer's copy of
    /// it, which may trail. `seed` (chosen by the proposer) picks the first
    /// partition's leader, so many small topics do not all lead on one
    /// broker; the rest is a function of the state.
    Spread {
        /// How many partitions.
        partitions: i32,
        /// Replicas per partition.
        factor: i16,
        /// Where in the broker list the first partition starts.
        seed: u32,
    },
}

/// What applying a command gave: the Raft response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to return (membership changes, blank entries, config changes).
    Done,
    /// The topic as it now is.
    Topic(TopicMeta),
    /// The first of the producer ids allocated.
    ProducerIds {
        /// First id.
        first: i64,
    },
    /// The broker epoch given to a registration.
    BrokerEpoch {
        /// The epoch.
        epoch: i64,
    },
    /// The partition's assignment after an AlterPartition.
    Assignment(PartitionAssignment),
    /// One result per partition (ElectLeaders, AlterReassignments): the
    /// command may change some partitions and refuse others.
    PartitionResults {
        /// In the order the command named them.
        results: Vec<PartitionResult>,
    },
    /// The command was refused; nothing changed.
    Refused(Refusal),
}

/// Why a command was refused, as a Kafka client would be told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", content = "message", rename_all = "snake_case")]
pub enum Refusal {
    /// TOPIC_ALREADY_EXISTS.
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownTopic(String),
    /// The topic ID is taken.
    TopicIdTaken(String),
    /// INVALID_PARTITIONS.
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR, or a replica that is not a registered broker.
    InvalidReplicas(String),
    /// A stale or misdirected AlterPartition.
    StalePartitionChange(String),
    /// An ISR member that is not an unfenced replica.
    IneligibleReplica(String),
    /// A fence or unfence of an unknown or re-registered broker.
    StaleBroker(String),
    /// Producer ids exhausted, or a bad count.
    ProducerIds(String),
    /// BROKER_ID_NOT_REGISTERED: an unregistration of an unknown broker.
    BrokerNotRegistered(String),
    /// A new group's configs past `weir_metadata::GROUP_CONFIGS_MAX`.
    TooManyGroupConfigs(String),
    /// An unregistration of a broker that is alive or still holds replicas.
    BrokerInUse(String),
    /// SCRAM credentials past `weir_metadata::SCRAM_CREDENTIALS_MAX`.
    TooManyCredentials(String),
    /// ACL bindings past `weir_metadata::ACLS_MAX`.
    TooManyAcls(String),
    /// Client quota values past `weir_metadata::CLIENT_QUOTAS_MAX`.
    TooManyClientQuotas(String),
}

/// A topic as the state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicRecord {
    /// Topic ID.
    pub id: Uuid,
    /// Explicit configs.
    pub configs: BTreeMap<String, String>,
    /// One assignment per partition.
    pub partitions: Vec<PartitionAssignment>,
}

/// The whole metadata. Its serialized form is the snapshot's payload
/// (docs/format.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterState {
    /// The cluster id; empty until the first leader names the cluster.
    pub cluster_id: String,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicRecord>,
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Broker-level config overrides.
    pub broker_configs: BTreeMap<String, String>,
    /// The next producer id to hand out.
    pub next_producer_id: i64,
    /// The metadata directory of each quorum node with the controller role,
    /// by node id ([`Command::BindDirectory`]). Absent from snapshots taken
    /// before Weir kept it.
    #[serde(default)]
    pub directories: BTreeMap<u64, Uuid>,
    /// Configs set on groups, by group id ([`Command::AlterGroupConfigs`]).
    /// Absent from snapshots of format 1, which had none.
    #[serde(default)]
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// SCRAM credentials, ordered by user then mechanism
    /// ([`Command::AlterScramCredentials`]). Absent from snapshots of
    /// formats 1 and 2, which had none.
    #[serde(default)]
    pub scram_credentials: Vec<weir_metadata::ScramCredential>,
    /// ACL bindings, ordered ([`Command::AlterAcls`]). Absent from
    /// snapshots of formats 1 to 3, which had none.
    #[serde(default)]
    pub acls: Vec<weir_metadata::AclEntry>,
    /// The log index of the last [`Command::AlterAcls`] applied: the
    /// bindings' version, as `MetadataStore::acls` answers it.
    #[serde(default)]
    pub acls_changed_at: u64,
    /// Client quota values, ordered by entity then key
    /// ([`Command::AlterClientQuotas`]). Absent from snapshots of formats 1
    /// to 4, which had none.
    #[serde(default)]
    pub client_quotas: Vec<weir_metadata::ClientQuota>,
    /// The log index of the last [`Command::AlterClientQuotas`] applied:
    /// the values' version, as `MetadataStore::client_quotas` answers it.
    #[serde(default)]
    pub client_quotas_changed_at: u64,
}

impl ClusterState {
    /// A topic as the broker sees it.
    pub fn topic_meta(&self, name: &str) -> Option<TopicMeta> {
        self.topics.get(name).map(|t| meta_of(name, t))
    }

    /// Every topic, by name.
    pub fn topic_metas(&self) -> Vec<TopicMeta> {
        self.topics.iter().map(|(n, t)| meta_of(n, t)).collect()
    }

    /// A topic by ID.
    pub fn topic_meta_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, t)| meta_of(n, t))
    }

    /// The reassignments in progress, by topic and partition.
    pub fn reassignments(&self) -> Vec<Reassignment> {
        self.partitions()
            .filter(|(_, _, p)| reassigning(p))
            .map(|(topic, partition, p)| Reassignment {
                topic: topic.to_string(),
                partition,
                replicas: p.replicas.clone(),
                adding_replicas: p.adding_replicas.clone(),
                removing_replicas: p.removing_replicas.clone(),
            })
            .collect()
    }

    /// The partitions a preferred election would move: their preferred
    /// (first) replica is unfenced and in sync but does not lead. The
    /// controller proposes [`ElectionKind::Preferred`] for them when
    /// `auto.leader.rebalance.enable` is on.
    pub fn imbalanced_partitions(&self) -> Vec<(String, i32)> {
        self.partitions()
            .filter(|(_, _, p)| {
                p.replicas.first().is_some_and(|preferred| {
                    *preferred != p.leader
                        && p.isr.contains(preferred)
                        && self.is_unfenced(*preferred)
                })
            })
            .map(|(topic, partition, _)| (topic.to_string(), partition))
            .collect()
    }

    /// The partitions without a leader whose topic allows an unclean
    /// election and that have an unfenced replica. The fence that leaves a
    /// partition leaderless elects uncleanly at once where it may; these
    /// are the ones `unclean.leader.election.enable` was turned on for
    /// later, which Kafka's controller finds by a periodic check too and
    /// the controller here elects with [`ElectionKind::Unclean`].
    pub fn unclean_election_candidates(&self) -> Vec<(String, i32)> {
        self.partitions()
            .filter(|(topic, _, p)| {
                p.leader == NO_LEADER
                    && p.replicas.iter().any(|b| self.is_unfenced(*b))
                    && self.unclean_enabled(topic)
            })
            .map(|(topic, partition, _)| (topic.to_string(), partition))
            .collect()
    }

    /// Every partition, by topic and index.
    fn partitions(&self) -> impl Iterator<Item = (&str, i32, &PartitionAssignment)> {
        self.topics
            .iter()
            .flat_map(|(name, t)| (0..).zip(&t.partitions).map(|(i, p)| (name.as_str(), i, p)))
    }

    fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionAssignment> {
        let t = self.topics.get(topic)?;
        t.partitions.get(usize::try_from(partition).ok()?)
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionAssignment> {
        let t = self.topics.get_mut(topic)?;
        t.partitions.get_mut(usize::try_from(partition).ok()?)
    }

    /// Whether `unclean.leader.election.enable` is on for `topic`: its own
    /// config, else the broker-level override, else off (Kafka's default).
    fn unclean_enabled(&self, topic: &str) -> bool {
        unclean_enabled(
            self.topics.get(topic).map(|t| &t.configs),
            &self.broker_configs,
        )
    }

    /// Apply one committed command. `index` is the command's Raft log index:
    /// a registration's broker epoch.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        match self.try_apply(index, command) {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn try_apply(&mut self, index: u64, command: &Command) -> Result<Outcome, Refusal> {
        match command {
            Command::SetClusterId { id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = id.clone();
                }
                Ok(Outcome::Done)
            }
            Command::CreateTopic {
                name,
                id,
                replicas,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Err(Refusal::TopicAlreadyExists(format!(
                        "Topic '{name}' already exists."
                    )));
                }
                if id.is_nil() || self.topics.values().any(|t| t.id == *id) {
                    return Err(Refusal::TopicIdTaken(id.to_string()));
                }
                let replicas = self.place(replicas)?;
                if replicas.is_empty() {
                    return Err(Refusal::InvalidPartitions(
                        "a topic needs at least one partition".into(),
                    ));
                }
                let partitions = self.new_partitions(&replicas)?;
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        id: *id,
                        configs: configs.clone(),
                        partitions,
                    },
                );
                Ok(Outcome::Topic(self.known_topic(name)?))
            }
            Command::DeleteTopic { name } => {
                let record = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| unknown_topic(name))?;
                Ok(Outcome::Topic(meta_of(name, &record)))
            }
            Command::AddPartitions {
                name,
                from,
                replicas,
            } => {
                let current = self.known_topic(name)?.partitions;
                if current != *from {
                    return Err(Refusal::InvalidPartitions(format!(
                        "topic '{name}' has {current} partitions, not {from}"
                    )));
                }
                let replicas = self.place(replicas)?;
                let added = self.new_partitions(&replicas)?;
                // Kafka keeps one replication factor per topic.
                let factor = self
                    .topics
                    .get(name)
                    .and_then(|t| t.partitions.first())
                    .map(|p| p.replicas.len());
                if let (Some(factor), Some(new)) = (factor, replicas.first())
                    && new.len() != factor
                {
                    return Err(Refusal::InvalidReplicas(format!(
                        "topic '{name}' has {factor} replicas per partition; \
                         the new partitions have {}",
                        new.len()
                    )));
                }
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| unknown_topic(name))?;
                topic.partitions.extend(added);
                Ok(Outcome::Topic(self.known_topic(name)?))
            }
            Command::AlterTopicConfigs { name, changes } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| unknown_topic(name))?;
                apply_changes(&mut topic.configs, changes);
                Ok(Outcome::Topic(self.known_topic(name)?))
            }
            Command::AlterBrokerConfigs { changes } => {
                apply_changes(&mut self.broker_configs, changes);
                Ok(Outcome::Done)
            }
            Command::AlterGroupConfigs { group, changes } => {
                weir_metadata::apply_group_changes(&mut self.group_configs, group, changes)
                    .map_err(|e| Refusal::TooManyGroupConfigs(e.to_string()))?;
                Ok(Outcome::Done)
            }
            Command::AlterScramCredentials { changes } => {
                weir_metadata::apply_scram_changes(&mut self.scram_credentials, changes)
                    .map_err(|e| Refusal::TooManyCredentials(e.to_string()))?;
                Ok(Outcome::Done)
            }
            Command::AlterAcls { changes } => {
                weir_metadata::apply_acl_changes(&mut self.acls, changes)
                    .map_err(|e| Refusal::TooManyAcls(e.to_string()))?;
                self.acls_changed_at = index;
                Ok(Outcome::Done)
            }
            Command::AlterClientQuotas { changes } => {
                weir_metadata::apply_client_quota_changes(&mut self.client_quotas, changes)
                    .map_err(|e| Refusal::TooManyClientQuotas(e.to_string()))?;
                self.client_quotas_changed_at = index;
                Ok(Outcome::Done)
            }
            Command::AllocateProducerIds { count } => {
                if !(1..=PRODUCER_ID_BLOCK_MAX).contains(count) {
                    return Err(Refusal::ProducerIds(format!(
                        "cannot allocate {count} producer ids at once"
                    )));
                }
                let first = self.next_producer_id;
                self.next_producer_id = first
                    .checked_add(*count)
                    .ok_or_else(|| Refusal::ProducerIds("producer ids are exhausted".into()))?;
                Ok(Outcome::ProducerIds { first })
            }
            Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                endpoints,
            } => {
                let epoch = i64::try_from(index).unwrap_or(i64::MAX);
                // A new life of a broker is fenced until it has caught up:
                // whatever it led moves away now, as when its session expires.
                if self.brokers.get(id).is_some_and(|b| !b.fenced) {
                    self.fence(*id);
                }
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        endpoints: endpoints.clone(),
                        fenced: true,
                        epoch,
                    },
                );
                Ok(Outcome::BrokerEpoch { epoch })
            }
            Command::FenceBroker { id, epoch } => {
                self.current_registration(*id, *epoch)?;
                self.fence(*id);
                Ok(Outcome::Done)
            }
            Command::UnfenceBroker { id, epoch } => {
                self.current_registration(*id, *epoch)?;
                self.unfence(*id);
                Ok(Outcome::Done)
            }
            Command::AlterPartition(change) => {
                self.alter_partition(change).map(Outcome::Assignment)
            }
            Command::ElectLeaders {
                partitions,
                election_type,
            } => Ok(Outcome::PartitionResults {
                results: self.elect_leaders(partitions.as_deref(), *election_type),
            }),
            Command::UnregisterBroker { id } => {
                self.unregister(*id)?;
                Ok(Outcome::Done)
            }
            Command::BindDirectory { node, directory } => {
                match directory {
                    Some(directory) => self.directories.insert(*node, *directory),
                    None => self.directories.remove(node),
                };
                Ok(Outcome::Done)
            }
            Command::AlterReassignments { changes } => Ok(Outcome::PartitionResults {
                results: changes
                    .iter()
                    .map(|(topic, partition, target)| PartitionResult {
                        topic: topic.clone(),
                        partition: *partition,
                        error: self
                            .alter_reassignment(topic, *partition, target.as_deref())
                            .err(),
                    })
                    .collect(),
            }),
        }
    }

    /// The replica sets `placement` gives against this state. A spread
    /// leads partition `p` on the `seed + p`th unfenced broker, so leaders
    /// spread evenly; its followers are the brokers after it, in id order,
    /// or, when every unfenced broker has a rack, in Kafka's rack-alternated
    /// order and skipping racks the partition already has until it has them
    /// all, so a partition spans as many racks as it can.
    fn place(&self, placement: &Placement) -> Result<Vec<Vec<i32>>, Refusal> {
        match placement {
            Placement::Explicit { replicas } => Ok(replicas.clone()),
            Placement::Spread {
                partitions,
                factor,
                seed,
            } => {
                let brokers = self.unfenced();
                let factor = usize::try_from(*factor).unwrap_or(0);
                if factor == 0 || factor > brokers.len() {
                    return Err(Refusal::InvalidReplicas(format!(
                        "Replication factor: {factor} larger than available brokers: {}.",
                        brokers.len()
                    )));
                }
                // Kafka refuses a rack-aware assignment when only some
                // brokers have a rack (AdminOperationException); we spread
                // rack-unaware instead, so a topic can still be created.
                let racks: Option<Vec<&str>> = brokers
                    .iter()
                    .map(|b| self.brokers.get(b).and_then(|info| info.rack.as_deref()))
                    .collect();
                let order = match &racks {
                    Some(racks) => rack_alternated(&brokers, racks),
                    None => brokers.iter().map(|b| (*b, "")).collect(),
                };
                let start = usize::try_from(*seed).unwrap_or(0) % order.len();
                Ok((0..usize::try_from(*partitions).unwrap_or(0))
                    .map(|p| spread_one(&order, (start + p) % order.len(), factor))
                    .collect())
            }
        }
    }

    fn known_topic(&self, name: &str) -> Result<TopicMeta, Refusal> {
        self.topic_meta(name).ok_or_else(|| unknown_topic(name))
    }

    /// New partitions over `replicas`: every replica a registered broker,
    /// no broker twice, the same count for each; led by the first unfenced
    /// replica (none if all are fenced, as Kafka leaves it).
    fn new_partitions(&self, replicas: &[Vec<i32>]) -> Result<Vec<PartitionAssignment>, Refusal> {
        let factor = replicas.first().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(replicas.len());
        for set in replicas {
            if set.is_empty() || set.len() != factor {
                return Err(Refusal::InvalidReplicas(
                    "every partition needs the same, non-zero number of replicas".into(),
                ));
            }
            for (i, broker) in set.iter().enumerate() {
                if !self.brokers.contains_key(broker) {
                    return Err(Refusal::InvalidReplicas(format!(
                        "broker {broker} is not registered"
                    )));
                }
                if set[..i].contains(broker) {
                    return Err(Refusal::InvalidReplicas(format!(
                        "broker {broker} is named twice in one replica set"
                    )));
                }
            }
            let leader = set
                .iter()
                .copied()
                .find(|b| self.is_unfenced(*b))
                .unwrap_or(NO_LEADER);
            out.push(PartitionAssignment {
                replicas: set.clone(),
                isr: set.clone(),
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            });
        }
        Ok(out)
    }

    /// The unfenced brokers' ids, in id order.
    pub fn unfenced(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    fn is_unfenced(&self, broker: i32) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// Remove `id`'s registration: refused while it is unfenced (a running
    /// broker would only register again) or while a partition lists it as
    /// a replica (the partition would lose a replica nobody moved away).
    fn unregister(&mut self, id: i32) -> Result<(), Refusal> {
        let broker = self.brokers.get(&id).ok_or_else(|| {
            Refusal::BrokerNotRegistered(format!("broker {id} is not registered"))
        })?;
        if !broker.fenced {
            return Err(Refusal::BrokerInUse(format!(
                "broker {id} is alive (unfenced); stop it before unregistering it"
            )));
        }
        let held: Vec<String> = self
            .partitions()
            .filter(|(_, _, p)| p.replicas.contains(&id))
            .map(|(topic, partition, _)| format!("{topic}-{partition}"))
            .collect();
        if !held.is_empty() {
            let named = held
                .iter()
                .take(UNREGISTER_NAMED_MAX)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let more = held.len().saturating_sub(UNREGISTER_NAMED_MAX);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            return Err(Refusal::BrokerInUse(format!(
                "broker {id} is still a replica of {} partitions ({named}{more}); \
                 move them away with `weir topic reassign` first",
                held.len()
            )));
        }
        self.brokers.remove(&id);
        Ok(())
    }

    fn current_registration(&self, id: i32, epoch: i64) -> Result<(), Refusal> {
        match self.brokers.get(&id) {
            Some(b) if b.epoch == epoch => Ok(()),
            Some(b) => Err(Refusal::StaleBroker(format!(
                "broker {id} is registered with epoch {}, not {epoch}",
                b.epoch
            ))),
            None => Err(Refusal::StaleBroker(format!(
                "broker {id} is not registered"
            ))),
        }
    }

    /// Fence `id`: out of every ISR it is not alone in, and a new leader,
    /// from the remaining ISR in replica order, wherever it led. Where no
    /// in-sync replica is left unfenced and the topic allows an unclean
    /// election, the first unfenced replica leads and is the whole ISR.
    fn fence(&mut self, id: i32) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = true;
        }
        let unfenced = self.unfenced();
        for topic in self.topics.values_mut() {
            let unclean = unclean_enabled(Some(&topic.configs), &self.broker_configs);
            for p in &mut topic.partitions {
                if !p.isr.contains(&id) {
                    continue;
                }
                let mut changed = false;
                if p.isr.len() > 1 {
                    p.isr.retain(|b| *b != id);
                    changed = true;
                }
                if p.leader == id {
                    let mut next = clean_leader(p, &unfenced).unwrap_or(NO_LEADER);
                    if next == NO_LEADER
                        && unclean
                        && let Some(b) = unclean_leader(p, &unfenced)
                    {
                        p.isr = vec![b];
                        next = b;
                    }
                    p.leader = next;
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    complete_reassignment_if_ready(p, &unfenced);
                    close_change(p);
                }
            }
        }
    }

    /// Unfence `id`: it leads every partition that has no leader and whose
    /// ISR it is in; or, where the topic allows an unclean election, whose
    /// replica it is, as the whole ISR.
    fn unfence(&mut self, id: i32) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = false;
        }
        let unfenced = self.unfenced();
        for topic in self.topics.values_mut() {
            let unclean = unclean_enabled(Some(&topic.configs), &self.broker_configs);
            for p in &mut topic.partitions {
                if p.leader != NO_LEADER {
                    continue;
                }
                if !p.isr.contains(&id) && unclean && p.replicas.contains(&id) {
                    p.isr = vec![id];
                }
                if p.isr.contains(&id) {
                    p.leader = id;
                    p.leader_epoch += 1;
                    complete_reassignment_if_ready(p, &unfenced);
                    close_change(p);
                }
            }
        }
    }

    fn alter_partition(&mut self, c: &AlterPartition) -> Result<PartitionAssignment, Refusal> {
        let stale = |why: String| Refusal::StalePartitionChange(why);
        self.current_registration(c.leader, c.broker_epoch)
            .map_err(|e| stale(format!("{e:?}")))?;
        let unfenced = self.unfenced();
        let topic = self
            .topics
            .values_mut()
            .find(|t| t.id == c.topic_id)
            .ok_or_else(|| Refusal::UnknownTopic(c.topic_id.to_string()))?;
        let p = usize::try_from(c.partition)
            .ok()
            .and_then(|i| topic.partitions.get_mut(i))
            .ok_or_else(|| Refusal::UnknownTopic(format!("{}-{}", c.topic_id, c.partition)))?;
        if p.leader != c.leader {
            return Err(stale(format!(
                "broker {} does not lead partition {} (leader {})",
                c.leader, c.partition, p.leader
            )));
        }
        if p.leader_epoch != c.leader_epoch || p.partition_epoch != c.partition_epoch {
            return Err(stale(format!(
                "epochs {}/{} are not the current {}/{}",
                c.leader_epoch, c.partition_epoch, p.leader_epoch, p.partition_epoch
            )));
        }
        if c.new_isr.is_empty() || !c.new_isr.contains(&c.leader) {
            return Err(Refusal::IneligibleReplica(
                "the ISR must hold its leader".into(),
            ));
        }
        for (i, b) in c.new_isr.iter().enumerate() {
            if !p.replicas.contains(b) || c.new_isr[..i].contains(b) {
                return Err(Refusal::IneligibleReplica(format!(
                    "broker {b} is not a replica, or is named twice"
                )));
            }
            // A member already in the ISR may stay while fenced (the leader
            // only ever shrinks it then); a new member must be unfenced.
            if !p.isr.contains(b) && !unfenced.contains(b) {
                return Err(Refusal::IneligibleReplica(format!("broker {b} is fenced")));
            }
        }
        p.isr = c.new_isr.clone();
        complete_reassignment_if_ready(p, &unfenced);
        close_change(p);
        Ok(p.clone())
    }

    /// Run one election per named partition, or over every partition.
    fn elect_leaders(
        &mut self,
        partitions: Option<&[(String, i32)]>,
        kind: ElectionKind,
    ) -> Vec<PartitionResult> {
        let result = |topic: &str, partition, error| PartitionResult {
            topic: topic.to_string(),
            partition,
            error,
        };
        let unfenced = self.unfenced();
        match partitions {
            Some(named) => named
                .iter()
                .map(|(topic, p)| result(topic, *p, self.elect(topic, *p, kind, &unfenced).err()))
                .collect(),
            None => {
                let all: Vec<(String, i32)> = self
                    .partitions()
                    .map(|(topic, p, _)| (topic.to_string(), p))
                    .collect();
                all.iter()
                    .filter_map(|(topic, p)| match self.elect(topic, *p, kind, &unfenced) {
                        Err(PartitionError::ElectionNotNeeded) => None,
                        outcome => Some(result(topic, *p, outcome.err())),
                    })
                    .collect()
            }
        }
    }

    /// One partition's election, with Kafka's answers: an unclean one is
    /// clean when it can be, and is not needed while the partition has a
    /// leader; neither asks the topic's `unclean.leader.election.enable`
    /// (an operator asking for it is the permission).
    fn elect(
        &mut self,
        topic: &str,
        partition: i32,
        kind: ElectionKind,
        unfenced: &[i32],
    ) -> Result<(), PartitionError> {
        let p = self
            .partition_mut(topic, partition)
            .ok_or(PartitionError::UnknownTopicOrPartition)?;
        let leader = match kind {
            ElectionKind::Preferred => {
                let preferred = p.replicas.first().copied().unwrap_or(NO_LEADER);
                if p.leader == preferred {
                    return Err(PartitionError::ElectionNotNeeded);
                }
                if !p.isr.contains(&preferred) || !unfenced.contains(&preferred) {
                    return Err(PartitionError::PreferredLeaderNotAvailable);
                }
                preferred
            }
            ElectionKind::Unclean => {
                if p.leader != NO_LEADER {
                    return Err(PartitionError::ElectionNotNeeded);
                }
                match clean_leader(p, unfenced) {
                    Some(b) => b,
                    None => {
                        let b = unclean_leader(p, unfenced)
                            .ok_or(PartitionError::EligibleLeadersNotAvailable)?;
                        p.isr = vec![b];
                        b
                    }
                }
            }
        };
        p.leader = leader;
        p.leader_epoch += 1;
        complete_reassignment_if_ready(p, unfenced);
        close_change(p);
        Ok(())
    }

    /// Start (or replace) a partition's reassignment to `target`, or cancel
    /// it when `target` is `None`.
    fn alter_reassignment(
        &mut self,
        topic: &str,
        partition: i32,
        target: Option<&[i32]>,
    ) -> Result<(), PartitionError> {
        if self.partition(topic, partition).is_none() {
            return Err(PartitionError::UnknownTopicOrPartition);
        }
        if let Some(target) = target {
            self.check_target(target)?;
        }
        let unclean = self.unclean_enabled(topic);
        let unfenced = self.unfenced();
        let p = self
            .partition_mut(topic, partition)
            .ok_or(PartitionError::UnknownTopicOrPartition)?;
        let changed = match target {
            Some(target) => start_reassignment(p, target, &unfenced)?,
            None => cancel_reassignment(p, &unfenced, unclean)?,
        };
        if changed {
            close_change(p);
        }
        Ok(())
    }

    /// A reassignment's target: some replicas, each a registered broker,
    /// none twice (fenced brokers may be named: they catch up once back).
    fn check_target(&self, target: &[i32]) -> Result<(), PartitionError> {
        let invalid = PartitionError::InvalidReplicaAssignment;
        if target.is_empty() {
            return Err(invalid("The replica assignment is empty.".into()));
        }
        for (i, b) in target.iter().enumerate() {
            if target[..i].contains(b) {
                return Err(invalid(format!(
                    "The replica assignment names broker {b} more than once."
                )));
            }
            if !self.brokers.contains_key(b) {
                return Err(invalid(format!(
                    "The replica assignment names broker {b}, but no such broker is registered."
                )));
            }
        }
        Ok(())
    }
}

/// Close a change to `p`: a new partition epoch, so an AlterPartition
/// based on the old record is refused; and the record still holds
/// together, whatever path changed it.
fn close_change(p: &mut PartitionAssignment) {
    p.partition_epoch += 1;
    let within = |set: &[i32]| set.iter().all(|b| p.replicas.contains(b));
    let distinct = p
        .replicas
        .iter()
        .enumerate()
        .all(|(i, b)| !p.replicas[..i].contains(b));
    assert!(
        distinct
            && !p.isr.is_empty()
            && within(&p.isr)
            && within(&p.adding_replicas)
            && within(&p.removing_replicas)
            && !p
                .adding_replicas
                .iter()
                .any(|b| p.removing_replicas.contains(b))
            && (p.leader == NO_LEADER || p.isr.contains(&p.leader)),
        "partition record broken by a change: {p:?}"
    );
}

/// Whether a partition is being reassigned.
fn reassigning(p: &PartitionAssignment) -> bool {
    !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty()
}

/// The first in-sync unfenced replica, in replica order: who leads after a
/// clean election.
fn clean_leader(p: &PartitionAssignment, unfenced: &[i32]) -> Option<i32> {
    p.replicas
        .iter()
        .copied()
        .find(|b| p.isr.contains(b) && unfenced.contains(b))
}

/// The first unfenced replica, in sync or not: who leads after an unclean
/// election.
fn unclean_leader(p: &PartitionAssignment, unfenced: &[i32]) -> Option<i32> {
    p.replicas.iter().copied().find(|b| unfenced.contains(b))
}

/// `unclean.leader.election.enable` from a topic's configs, else the
/// broker-level overrides, else Kafka's default, false.
fn unclean_enabled(
    topic: Option<&BTreeMap<String, String>>,
    broker: &BTreeMap<String, String>,
) -> bool {
    topic
        .and_then(|c| c.get(UNCLEAN_LEADER_ELECTION_ENABLE))
        .or_else(|| broker.get(UNCLEAN_LEADER_ELECTION_ENABLE))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Point `p` at `target` (KIP-455): its replicas become the target's, in
/// order, then the original ones (those before any reassignment) the
/// target drops; those are being removed and the target's others added.
/// A reassignment in progress is replaced, as the ZooKeeper controller
/// replaces it: the same target again changes nothing, and additions the
/// new target does not name leave at once (Kafka's KRaft controller keeps
/// them as replicas being removed instead). Refused if that would leave
/// no replica in sync. Whether anything changed.
fn start_reassignment(
    p: &mut PartitionAssignment,
    target: &[i32],
    unfenced: &[i32],
) -> Result<bool, PartitionError> {
    let original: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|b| !p.adding_replicas.contains(b))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|b| !target.contains(b))
        .collect();
    let replicas: Vec<i32> = target.iter().chain(&removing).copied().collect();
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|b| replicas.contains(b))
        .collect();
    if isr.is_empty() {
        return Err(PartitionError::InvalidReplicaAssignment(
            "The new target drops every in-sync replica.".into(),
        ));
    }
    let before = p.clone();
    p.adding_replicas = target
        .iter()
        .copied()
        .filter(|b| !original.contains(b))
        .collect();
    p.removing_replicas = removing;
    p.replicas = replicas;
    p.isr = isr;
    move_leader_into_isr(p, unfenced);
    complete_reassignment_if_ready(p, unfenced);
    Ok(*p != before)
}

/// Cancel `p`'s reassignment: the replicas it was adding go, those it was
/// removing stay. Kafka keeps the replicas' current order, so the
/// preferred leader may differ from the one before the reassignment. When
/// only added replicas are in sync, going back needs an unclean election:
/// refused unless the topic allows one.
fn cancel_reassignment(
    p: &mut PartitionAssignment,
    unfenced: &[i32],
    unclean: bool,
) -> Result<bool, PartitionError> {
    if !reassigning(p) {
        return Err(PartitionError::NoReassignmentInProgress);
    }
    let adding = std::mem::take(&mut p.adding_replicas);
    let replicas: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|b| !adding.contains(b))
        .collect();
    let mut isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|b| !adding.contains(b))
        .collect();
    if isr.is_empty() {
        let first = replicas.iter().copied().find(|b| unfenced.contains(b));
        match first {
            Some(b) if unclean => isr.push(b),
            _ => {
                p.adding_replicas = adding;
                return Err(PartitionError::InvalidReplicaAssignment(
                    "Cancelling the reassignment would need an unclean leader election.".into(),
                ));
            }
        }
    }
    p.replicas = replicas;
    p.isr = isr;
    p.removing_replicas.clear();
    move_leader_into_isr(p, unfenced);
    Ok(true)
}

/// Finish `p`'s reassignment once every replica it adds is in sync and
/// some replica it keeps is (Kafka's rule): the replicas become the
/// target, the ISR loses the removed ones, and a removed leader hands over
/// to the first in-sync replica of the target.
fn complete_reassignment_if_ready(p: &mut PartitionAssignment, unfenced: &[i32]) {
    if !reassigning(p) {
        return;
    }
    let removing = &p.removing_replicas;
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|b| !removing.contains(b))
        .collect();
    if isr.is_empty() || p.adding_replicas.iter().any(|b| !isr.contains(b)) {
        return;
    }
    p.replicas.retain(|b| !removing.contains(b));
    p.isr = isr;
    p.adding_replicas.clear();
    p.removing_replicas.clear();
    move_leader_into_isr(p, unfenced);
}

/// A leader that left the ISR (or the replicas) hands over to the first
/// in-sync unfenced replica, or to none; the leader epoch moves with it.
fn move_leader_into_isr(p: &mut PartitionAssignment, unfenced: &[i32]) {
    if p.isr.contains(&p.leader) {
        return;
    }
    let next = clean_leader(p, unfenced).unwrap_or(NO_LEADER);
    if next != p.leader {
        p.leader = next;
        p.leader_epoch += 1;
    }
}

/// Kafka's rack-alternated broker list: the first broker of each rack (racks
/// in name order, brokers in id order), then the second of each, and so on,
/// so consecutive brokers sit on different racks. Each with its rack.
fn rack_alternated<'a>(brokers: &[i32], racks: &[&'a str]) -> Vec<(i32, &'a str)> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (b, rack) in brokers.iter().zip(racks) {
        by_rack.entry(rack).or_default().push(*b);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|round| {
            by_rack
                .iter()
                .filter_map(move |(rack, ids)| ids.get(round).map(|b| (*b, *rack)))
        })
        .collect()
}

/// One partition's replicas from `order`: `order[first]` leads; followers
/// come from the brokers after it, skipping racks the partition already
/// has while it lacks one, then any broker not yet chosen.
fn spread_one(order: &[(i32, &str)], first: usize, factor: usize) -> Vec<i32> {
    let mut racks: Vec<&str> = order.iter().map(|(_, r)| *r).collect();
    racks.sort_unstable();
    racks.dedup();
    let mut chosen: Vec<(i32, &str)> = Vec::with_capacity(factor);
    // Two passes: the first may skip brokers for their rack; by its end
    // every rack is used (or the set is full), so the second skips none.
    for i in 0..2 * order.len() {
        if chosen.len() == factor {
            break;
        }
        let (b, rack) = order[(first + i) % order.len()];
        let rack_used = chosen.iter().any(|(_, r)| *r == rack);
        let all_racks_used = racks.iter().all(|r| chosen.iter().any(|(_, c)| c == r));
        if chosen.iter().any(|(c, _)| *c == b) || (rack_used && !all_racks_used) {
            continue;
        }
        chosen.push((b, rack));
    }
    assert_eq!(chosen.len(), factor, "a spread over {order:?} fell short");
    chosen.into_iter().map(|(b, _)| b).collect()
}

fn unknown_topic(name: &str) -> Refusal {
    Refusal::UnknownTopic(format!("Topic '{name}' does not exist."))
}

fn apply_changes(configs: &mut BTreeMap<String, String>, changes: &[ConfigChange]) {
    weir_metadata::apply_config_changes(configs, changes);
}

fn meta_of(name: &str, t: &TopicRecord) -> TopicMeta {
    TopicMeta {
        name: name.to_string(),
        id: t.id,
        partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
        replication_factor: t
            .partitions
            .first()
            .map_or(0, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX)),
        configs: t.configs.clone(),
        assignments: t.partitions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut ClusterState, index: u64, id: i32) -> i64 {
        register_in(state, index, id, None)
    }

    fn register_in(state: &mut ClusterState, index: u64, id: i32, rack: Option<&str>) -> i64 {
        let outcome = state.apply(
            index,
            &Command::RegisterBroker {
                id,
                host: "127.0.0.1".into(),
                port: 9092 + id,
                rack: rack.map(str::to_string),
                endpoints: Vec::new(),
            },
        );
        let Outcome::BrokerEpoch { epoch } = outcome else {
            panic!("registration refused: {outcome:?}");
        };
        assert_eq!(
            state.apply(index + 1, &Command::UnfenceBroker { id, epoch }),
            Outcome::Done
        );
        epoch
    }

    #[test]
    fn a_directory_binding_is_replaced_and_forgotten() {
        let mut state = ClusterState::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for (directory, expected) in [(Some(a), Some(a)), (Some(b), Some(b)), (None, None)] {
            let outcome = state.apply(10, &Command::BindDirectory { node: 3, directory });
            assert_eq!(outcome, Outcome::Done);
            assert_eq!(state.directories.get(&3).copied(), expected);
        }
        // A snapshot written before directories were kept reads as none.
        let old = r#"{"cluster_id":"c","topics":{},"brokers":{},"broker_configs":{},"next_producer_id":0}"#;
        let read: Result<ClusterState, _> = serde_json::from_str(old);
        assert!(read.is_ok_and(|s| s.directories.is_empty()));
    }

    #[test]
    fn group_configs_are_set_deleted_and_read_back_from_a_snapshot() {
        let mut state = ClusterState::default();
        let alter = |changes| Command::AlterGroupConfigs {
            group: "workers".into(),
            changes,
        };
        let set = ConfigChange::Set("share.delivery.count.limit".into(), "3".into());
        assert_eq!(state.apply(1, &alter(vec![set])), Outcome::Done);
        let json = serde_json::to_string(&state).unwrap();
        let read: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(
            read.group_configs["workers"]["share.delivery.count.limit"],
            "3"
        );
        let delete = ConfigChange::Delete("share.delivery.count.limit".into());
        assert_eq!(state.apply(2, &alter(vec![delete])), Outcome::Done);
        assert!(state.group_configs.is_empty());
        // A format-1 snapshot has none.
        let old = r#"{"cluster_id":"c","topics":{},"brokers":{},"broker_configs":{},"next_producer_id":0}"#;
        let read: Result<ClusterState, _> = serde_json::from_str(old);
        assert!(read.is_ok_and(|s| s.group_configs.is_empty()));
    }

    #[test]
    fn scram_credentials_are_set_deleted_and_read_back_from_a_snapshot() {
        let mut state = ClusterState::default();
        let credential = |user: &str, mechanism| weir_metadata::ScramCredential {
            user: user.into(),
            mechanism,
            salt: vec![1; 16],
            stored_key: vec![2; 32],
            server_key: vec![3; 32],
            iterations: 8192,
        };
        let set = Command::AlterScramCredentials {
            changes: vec![
                weir_metadata::ScramChange::Upsert(credential("bob", 2)),
                weir_metadata::ScramChange::Upsert(credential("alice", 1)),
            ],
        };
        assert_eq!(state.apply(1, &set), Outcome::Done);
        let delete = Command::AlterScramCredentials {
            changes: vec![weir_metadata::ScramChange::Delete {
                user: "bob".into(),
                mechanism: 2,
            }],
        };
        assert_eq!(state.apply(2, &delete), Outcome::Done);
        let json = serde_json::to_string(&state).unwrap();
        let read: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(read.scram_credentials, vec![credential("alice", 1)]);
        // A snapshot of format 2 has none.
        let old = r#"{"cluster_id":"c","topics":{},"brokers":{},"broker_configs":{},"next_producer_id":0}"#;
        let read: Result<ClusterState, _> = serde_json::from_str(old);
        assert!(read.is_ok_and(|s| s.scram_credentials.is_empty()));
    }

    #[test]
    fn acls_are_kept_removed_and_versioned_by_their_log_index() {
        let mut state = ClusterState::default();
        let acl = |topic: &str| weir_metadata::AclEntry {
            resource_type: 2,
            resource_name: topic.into(),
            pattern_type: 4,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 4,
            permission_type: 3,
        };
        let create = Command::AlterAcls {
            changes: vec![
                weir_metadata::AclChange::Create(acl("orders-")),
                weir_metadata::AclChange::Create(acl("audit-")),
            ],
        };
        assert_eq!(state.apply(7, &create), Outcome::Done);
        assert_eq!(state.acls_changed_at, 7);
        let delete = Command::AlterAcls {
            changes: vec![weir_metadata::AclChange::Delete(acl("audit-"))],
        };
        assert_eq!(state.apply(9, &delete), Outcome::Done);
        let json = serde_json::to_string(&state).unwrap();
        let read: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!((read.acls_changed_at, read.acls), (9, vec![acl("orders-")]));
        // A snapshot of format 3 has none.
        let old = r#"{"cluster_id":"c","topics":{},"brokers":{},"broker_configs":{},"next_producer_id":0,"scram_credentials":[]}"#;
        let read: Result<ClusterState, _> = serde_json::from_str(old);
        assert!(read.is_ok_and(|s| s.acls.is_empty() && s.acls_changed_at == 0));
    }

    #[test]
    fn client_quotas_are_set_removed_and_versioned_by_their_log_index() {
        let mut state = ClusterState::default();
        let entity = |user: Option<&str>| {
            vec![weir_metadata::QuotaEntityPart {
                entity_type: "user".into(),
                name: user.map(str::to_owned),
            }]
        };
        let set = |user, value| weir_metadata::ClientQuotaChange {
            entity: entity(user),
            key: "producer_byte_rate".into(),
            value,
        };
        let alter = Command::AlterClientQuotas {
            changes: vec![set(Some("alice"), Some(1024.0)), set(None, Some(512.0))],
        };
        assert_eq!(state.apply(5, &alter), Outcome::Done);
        assert_eq!(state.client_quotas_changed_at, 5);
        let alter = Command::AlterClientQuotas {
            changes: vec![set(Some("alice"), None), set(None, Some(2048.0))],
        };
        assert_eq!(state.apply(8, &alter), Outcome::Done);
        let json = serde_json::to_string(&state).unwrap();
        let read: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(read.client_quotas_changed_at, 8);
        assert_eq!(
            read.client_quotas,
            vec![weir_metadata::ClientQuota {
                entity: entity(None),
                key: "producer_byte_rate".into(),
                value: 2048.0
            }]
        );
        // A snapshot of format 4 has none.
        let old = r#"{"cluster_id":"c","topics":{},"brokers":{},"broker_configs":{},"next_producer_id":0,"acls":[],"acls_changed_at":3}"#;
        let read: Result<ClusterState, _> = serde_json::from_str(old);
        assert!(read.is_ok_and(|s| s.client_quotas.is_empty() && s.client_quotas_changed_at == 0));
    }

    #[test]
    fn a_broker_is_reached_at_the_endpoint_of_the_listener_asked_for() {
        let mut state = ClusterState::default();
        let endpoint = |listener: &str, port| weir_metadata::Endpoint {
            listener: listener.into(),
            host: "broker-1.example".into(),
            port,
            security_protocol: listener.into(),
        };
        let register = Command::RegisterBroker {
            id: 1,
            host: "10.0.0.1".into(),
            port: 9092,
            rack: None,
            endpoints: vec![endpoint("PLAINTEXT", 9092), endpoint("SSL", 9093)],
        };
        assert!(matches!(
            state.apply(1, &register),
            Outcome::BrokerEpoch { .. }
        ));
        let broker = &state.brokers[&1];
        assert_eq!(broker.endpoint("SSL"), Some(("broker-1.example", 9093)));
        assert_eq!(broker.endpoint("SASL_SSL"), None);
        // A registration logged before listeners were named had one
        // plaintext listener, which every client is told.
        let old = r#"{"kind":"register_broker","id":2,"host":"10.0.0.2","port":9092,"rack":null}"#;
        let old: Command = serde_json::from_str(old).unwrap();
        assert!(matches!(state.apply(2, &old), Outcome::BrokerEpoch { .. }));
        assert_eq!(state.brokers[&2].endpoint("SSL"), Some(("10.0.0.2", 9092)));
    }

    fn three_brokers() -> (ClusterState, Vec<i64>) {
        let mut state = ClusterState::default();
        let epochs = (1..=3)
            .map(|id| register(&mut state, u64::try_from(id).unwrap_or(0) * 10, id))
            .collect();
        (state, epochs)
    }

    fn create(state: &mut ClusterState, name: &str, replicas: Vec<Vec<i32>>) -> Outcome {
        state.apply(
            100,
            &Command::CreateTopic {
                name: name.into(),
                id: Uuid::new_v4(),
                replicas: Placement::Explicit { replicas },
                configs: BTreeMap::new(),
            },
        )
    }

    #[test]
    fn only_a_fenced_broker_that_is_no_replica_is_unregistered() {
        let (mut state, epochs) = three_brokers();
        let unregister =
            |state: &mut ClusterState, id| state.apply(200, &Command::UnregisterBroker { id });
        assert!(matches!(
            unregister(&mut state, 9),
            Outcome::Refused(Refusal::BrokerNotRegistered(_))
        ));
        assert!(matches!(
            create(&mut state, "t", vec![vec![3, 1]]),
            Outcome::Topic(_)
        ));
        let Outcome::Refused(Refusal::BrokerInUse(alive)) = unregister(&mut state, 3) else {
            panic!("an unfenced broker was unregistered");
        };
        assert!(alive.contains("alive"), "{alive}");
        state.apply(
            201,
            &Command::FenceBroker {
                id: 3,
                epoch: epochs[2],
            },
        );
        let Outcome::Refused(Refusal::BrokerInUse(held)) = unregister(&mut state, 3) else {
            panic!("a replica's broker was unregistered");
        };
        assert!(held.contains("t-0"), "{held}");
        assert!(state.brokers.contains_key(&3));
        let Outcome::PartitionResults { .. } = state.apply(
            202,
            &Command::AlterReassignments {
                changes: vec![("t".into(), 0, Some(vec![1, 2]))],
            },
        ) else {
            panic!("reassignment refused");
        };
        // Broker 2 catches up, which completes the move off broker 3.
        let p = state.topics["t"].partitions[0].clone();
        let Outcome::Assignment(_) = state.apply(
            203,
            &Command::AlterPartition(AlterPartition {
                topic_id: state.topics["t"].id,
                partition: 0,
                leader: p.leader,
                broker_epoch: epochs[0],
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: vec![1, 2],
            }),
        ) else {
            panic!("ISR change refused");
        };
        assert_eq!(state.topics["t"].partitions[0].replicas, vec![1, 2]);
        assert_eq!(unregister(&mut state, 3), Outcome::Done);
        assert!(!state.brokers.contains_key(&3));
    }

    #[test]
    fn a_created_topic_is_led_by_its_first_replica_with_a_full_isr() {
        let (mut state, _) = three_brokers();
        let Outcome::Topic(meta) = create(&mut state, "t", vec![vec![2, 3, 1], vec![3, 1, 2]])
        else {
            panic!("refused");
        };
        assert_eq!(meta.partitions, 2);
        assert_eq!(meta.replication_factor, 3);
        assert_eq!(meta.assignments[0].leader, 2);
        assert_eq!(meta.assignments[0].isr, vec![2, 3, 1]);
        assert_eq!(meta.assignments[1].leader, 3);
        assert!(matches!(
            create(&mut state, "t", vec![vec![1]]),
            Outcome::Refused(Refusal::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            create(&mut state, "u", vec![vec![1, 4]]),
            Outcome::Refused(Refusal::InvalidReplicas(_))
        ));
        assert!(matches!(
            create(&mut state, "u", vec![vec![1, 1]]),
            Outcome::Refused(Refusal::InvalidReplicas(_))
        ));
    }

    #[test]
    fn fencing_a_leader_moves_leadership_to_the_next_in_sync_replica_and_unfencing_fills_offline_partitions()
     {
        let (mut state, epochs) = three_brokers();
        create(&mut state, "t", vec![vec![1, 2, 3]]);
        assert_eq!(
            state.apply(
                200,
                &Command::FenceBroker {
                    id: 1,
                    epoch: epochs[0]
                }
            ),
            Outcome::Done
        );
        let p = &state.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 1));
        assert_eq!(p.isr, vec![2, 3]);
        state.apply(
            201,
            &Command::FenceBroker {
                id: 2,
                epoch: epochs[1],
            },
        );
        state.apply(
            202,
            &Command::FenceBroker {
                id: 3,
                epoch: epochs[2],
            },
        );
        let p = &state.topics["t"].partitions[0];
        // The last in-sync replica stays in the ISR: only it may lead cleanly.
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![3]));
        // Broker 2 coming back does not lead: it is not in the ISR.
        state.apply(
            203,
            &Command::UnfenceBroker {
                id: 2,
                epoch: epochs[1],
            },
        );
        assert_eq!(state.topics["t"].partitions[0].leader, NO_LEADER);
        state.apply(
            204,
            &Command::UnfenceBroker {
                id: 3,
                epoch: epochs[2],
            },
        );
        assert_eq!(state.topics["t"].partitions[0].leader, 3);
        // A fence of an older registration changes nothing.
        assert!(matches!(
            state.apply(
                205,
                &Command::FenceBroker {
                    id: 3,
                    epoch: epochs[2] - 1
                }
            ),
            Outcome::Refused(Refusal::StaleBroker(_))
        ));
    }

    #[test]
    fn alter_partition_needs_the_current_leader_and_epochs_and_an_eligible_isr() {
        let (mut state, epochs) = three_brokers();
        let Outcome::Topic(meta) = create(&mut state, "t", vec![vec![1, 2, 3]]) else {
            panic!("refused");
        };
        let change = AlterPartition {
            topic_id: meta.id,
            partition: 0,
            leader: 1,
            broker_epoch: epochs[0],
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: vec![1, 2],
        };
        let Outcome::Assignment(p) = state.apply(300, &Command::AlterPartition(change.clone()))
        else {
            panic!("refused");
        };
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1, 2], 1));
        // The same change again is stale: the partition epoch moved.
        assert!(matches!(
            state.apply(301, &Command::AlterPartition(change.clone())),
            Outcome::Refused(Refusal::StalePartitionChange(_))
        ));
        // A follower cannot change the ISR.
        let by_follower = AlterPartition {
            leader: 2,
            broker_epoch: epochs[1],
            partition_epoch: 1,
            ..change.clone()
        };
        assert!(matches!(
            state.apply(302, &Command::AlterPartition(by_follower)),
            Outcome::Refused(Refusal::StalePartitionChange(_))
        ));
        // A fenced broker cannot join the ISR.
        state.apply(
            303,
            &Command::FenceBroker {
                id: 3,
                epoch: epochs[2],
            },
        );
        let add_fenced = AlterPartition {
            partition_epoch: 1,
            new_isr: vec![1, 2, 3],
            ..change
        };
        assert!(matches!(
            state.apply(304, &Command::AlterPartition(add_fenced)),
            Outcome::Refused(Refusal::IneligibleReplica(_))
        ));
    }

    #[test]
    fn a_broker_registering_again_is_fenced_and_loses_leadership() {
        let (mut state, _) = three_brokers();
        create(&mut state, "t", vec![vec![1, 2, 3]]);
        let epoch = register(&mut state, 400, 1);
        let p = &state.topics["t"].partitions[0];
        assert_eq!(p.leader, 2);
        assert_eq!(state.brokers[&1].epoch, epoch);
        assert!(!state.brokers[&1].fenced);
    }

    #[test]
    fn a_spread_puts_each_partition_on_distinct_unfenced_brokers_with_leaders_balanced() {
        let (mut state, epochs) = three_brokers();
        state.apply(
            50,
            &Command::FenceBroker {
                id: 2,
                epoch: epochs[1],
            },
        );
        let spread = |partitions, factor| Command::CreateTopic {
            name: format!("t{partitions}-{factor}"),
            id: Uuid::new_v4(),
            replicas: Placement::Spread {
                partitions,
                factor,
                seed: 7,
            },
            configs: BTreeMap::new(),
        };
        let Outcome::Topic(meta) = state.apply(60, &spread(4, 2)) else {
            panic!("refused");
        };
        let leaders: Vec<i32> = meta.assignments.iter().map(|a| a.leader).collect();
        assert_eq!(
            leaders.iter().filter(|l| **l == 1).count(),
            2,
            "{leaders:?}"
        );
        assert_eq!(
            leaders.iter().filter(|l| **l == 3).count(),
            2,
            "{leaders:?}"
        );
        for a in &meta.assignments {
            assert!(
                !a.replicas.contains(&2),
                "fenced broker 2 got a replica: {a:?}"
            );
            assert_ne!(a.replicas[0], a.replicas[1]);
        }
        assert!(matches!(
            state.apply(61, &spread(1, 3)),
            Outcome::Refused(Refusal::InvalidReplicas(_))
        ));
    }

    fn brokers(count: i32) -> ClusterState {
        let mut state = ClusterState::default();
        for id in 1..=count {
            register(&mut state, u64::try_from(id).unwrap_or(0) * 10, id);
        }
        state
    }

    fn racked(racks: &[(i32, Option<&str>)]) -> ClusterState {
        let mut state = ClusterState::default();
        for (id, rack) in racks {
            register_in(&mut state, u64::try_from(*id).unwrap_or(0) * 10, *id, *rack);
        }
        state
    }

    /// The replica sets a spread gives on `state`.
    fn spread(state: &ClusterState, partitions: i32, factor: i16, seed: u32) -> Vec<Vec<i32>> {
        let mut state = state.clone();
        let outcome = state.apply(
            1000,
            &Command::CreateTopic {
                name: "spread".into(),
                id: Uuid::new_v4(),
                replicas: Placement::Spread {
                    partitions,
                    factor,
                    seed,
                },
                configs: BTreeMap::new(),
            },
        );
        let Outcome::Topic(meta) = outcome else {
            panic!("spread refused: {outcome:?}");
        };
        meta.assignments.into_iter().map(|a| a.replicas).collect()
    }

    fn rack_count(state: &ClusterState, replicas: &[i32]) -> usize {
        let mut racks: Vec<Option<&str>> = replicas
            .iter()
            .map(|b| state.brokers.get(b).and_then(|i| i.rack.as_deref()))
            .collect();
        racks.sort_unstable();
        racks.dedup();
        racks.len()
    }

    fn partition(state: &ClusterState, topic: &str, p: usize) -> PartitionAssignment {
        state.topics[topic].partitions[p].clone()
    }

    /// The leader of `topic`'s partition `p` sets its ISR to `new_isr`.
    fn alter_isr(state: &mut ClusterState, topic: &str, p: i32, new_isr: Vec<i32>) -> Outcome {
        let a = partition(state, topic, usize::try_from(p).unwrap_or(0));
        let change = AlterPartition {
            topic_id: state.topics[topic].id,
            partition: p,
            leader: a.leader,
            broker_epoch: state.brokers[&a.leader].epoch,
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            new_isr,
        };
        state.apply(500, &Command::AlterPartition(change))
    }

    fn fence(state: &mut ClusterState, id: i32) {
        let epoch = state.brokers[&id].epoch;
        assert_eq!(
            state.apply(600, &Command::FenceBroker { id, epoch }),
            Outcome::Done
        );
    }

    fn unfence(state: &mut ClusterState, id: i32) {
        let epoch = state.brokers[&id].epoch;
        assert_eq!(
            state.apply(601, &Command::UnfenceBroker { id, epoch }),
            Outcome::Done
        );
    }

    fn set_config(state: &mut ClusterState, topic: Option<&str>, key: &str, value: &str) {
        let changes = vec![ConfigChange::Set(key.into(), value.into())];
        let command = match topic {
            Some(name) => Command::AlterTopicConfigs {
                name: name.into(),
                changes,
            },
            None => Command::AlterBrokerConfigs { changes },
        };
        assert!(!matches!(state.apply(700, &command), Outcome::Refused(_)));
    }

    fn errors(outcome: Outcome) -> Vec<(String, i32, Option<PartitionError>)> {
        let Outcome::PartitionResults { results } = outcome else {
            panic!("not per-partition results: {outcome:?}");
        };
        results
            .into_iter()
            .map(|r| (r.topic, r.partition, r.error))
            .collect()
    }

    fn elect(state: &mut ClusterState, named: &[(&str, i32)], kind: ElectionKind) -> Outcome {
        let partitions = named.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        state.apply(
            800,
            &Command::ElectLeaders {
                partitions: Some(partitions),
                election_type: kind,
            },
        )
    }

    fn reassign(state: &mut ClusterState, changes: &[(&str, i32, Option<Vec<i32>>)]) -> Outcome {
        let changes = changes
            .iter()
            .map(|(t, p, target)| (t.to_string(), *p, target.clone()))
            .collect();
        state.apply(900, &Command::AlterReassignments { changes })
    }

    #[test]
    fn a_rack_aware_spread_puts_each_partition_on_distinct_racks_with_leaders_balanced() {
        let state = racked(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        for seed in 0..6 {
            let sets = spread(&state, 6, 3, seed);
            for set in &sets {
                assert_eq!(rack_count(&state, set), 3, "seed {seed}: {sets:?}");
            }
            let mut leaders: Vec<i32> = sets.iter().map(|s| s[0]).collect();
            leaders.sort_unstable();
            assert_eq!(leaders, vec![1, 2, 3, 4, 5, 6], "seed {seed}: {sets:?}");
        }
        // Fewer racks than replicas: every rack is used, no broker twice.
        let uneven = racked(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        for set in spread(&uneven, 8, 3, 5) {
            assert_eq!(rack_count(&uneven, &set), 2, "{set:?}");
            let mut distinct = set.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{set:?}");
        }
        // The same state and seed give the same replicas.
        assert_eq!(spread(&state, 12, 2, 9), spread(&state, 12, 2, 9));
    }

    #[test]
    fn a_spread_with_racks_on_only_some_brokers_ignores_racks() {
        let some = racked(&[(1, Some("a")), (2, Some("a")), (3, None), (4, Some("b"))]);
        let none = racked(&[(1, None), (2, None), (3, None), (4, None)]);
        assert_eq!(spread(&some, 8, 2, 3), spread(&none, 8, 2, 3));
        assert_eq!(
            spread(&none, 4, 2, 0),
            vec![vec![1, 2], vec![2, 3], vec![3, 4], vec![4, 1]]
        );
    }

    #[test]
    fn a_preferred_election_gives_the_first_replica_back_its_leadership() {
        let mut state = brokers(3);
        create(&mut state, "t", vec![vec![1, 2, 3], vec![2, 3, 1]]);
        fence(&mut state, 1);
        unfence(&mut state, 1);
        // Broker 1 is back but out of sync: not yet available to lead.
        assert_eq!(partition(&state, "t", 0).leader, 2);
        assert!(state.imbalanced_partitions().is_empty());
        assert_eq!(
            errors(elect(&mut state, &[("t", 0)], ElectionKind::Preferred)),
            vec![(
                "t".into(),
                0,
                Some(PartitionError::PreferredLeaderNotAvailable)
            )]
        );
        assert!(!matches!(
            alter_isr(&mut state, "t", 0, vec![2, 3, 1]),
            Outcome::Refused(_)
        ));
        assert_eq!(state.imbalanced_partitions(), vec![("t".to_string(), 0)]);
        let before = partition(&state, "t", 0);
        let untouched = partition(&state, "t", 1);
        assert_eq!(
            errors(elect(
                &mut state,
                &[("t", 0), ("t", 1), ("t", 2), ("u", 0)],
                ElectionKind::Preferred
            )),
            vec![
                ("t".into(), 0, None),
                ("t".into(), 1, Some(PartitionError::ElectionNotNeeded)),
                ("t".into(), 2, Some(PartitionError::UnknownTopicOrPartition)),
                ("u".into(), 0, Some(PartitionError::UnknownTopicOrPartition)),
            ]
        );
        let after = partition(&state, "t", 0);
        assert_eq!(after.leader, 1);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.partition_epoch, before.partition_epoch + 1);
        assert_eq!(partition(&state, "t", 1), untouched);
        assert!(state.imbalanced_partitions().is_empty());
        // Over every partition, those needing nothing are left out.
        let all = Command::ElectLeaders {
            partitions: None,
            election_type: ElectionKind::Preferred,
        };
        assert_eq!(errors(state.apply(801, &all)), vec![]);
        // A fenced preferred replica is not available.
        fence(&mut state, 1);
        assert_eq!(
            errors(elect(&mut state, &[("t", 0)], ElectionKind::Preferred)),
            vec![(
                "t".into(),
                0,
                Some(PartitionError::PreferredLeaderNotAvailable)
            )]
        );
    }

    #[test]
    fn an_unclean_election_leads_a_leaderless_partition_from_outside_the_isr() {
        let mut state = brokers(3);
        create(&mut state, "t", vec![vec![1, 2, 3]]);
        create(&mut state, "u", vec![vec![3]]);
        for id in [1, 2, 3] {
            fence(&mut state, id);
        }
        unfence(&mut state, 1);
        let before = partition(&state, "t", 0);
        assert_eq!((before.leader, before.isr.clone()), (NO_LEADER, vec![3]));
        assert_eq!(
            errors(elect(
                &mut state,
                &[("t", 0), ("u", 0)],
                ElectionKind::Unclean
            )),
            vec![
                ("t".into(), 0, None),
                (
                    "u".into(),
                    0,
                    Some(PartitionError::EligibleLeadersNotAvailable)
                ),
            ]
        );
        let after = partition(&state, "t", 0);
        assert_eq!((after.leader, after.isr.clone()), (1, vec![1]));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.partition_epoch, before.partition_epoch + 1);
        assert_eq!(
            errors(elect(&mut state, &[("t", 0)], ElectionKind::Unclean)),
            vec![("t".into(), 0, Some(PartitionError::ElectionNotNeeded))]
        );
    }

    #[test]
    fn fencing_the_last_in_sync_replica_elects_uncleanly_only_where_the_topic_allows_it() {
        let mut state = brokers(3);
        for topic in ["clean", "unclean", "inherits", "overrides"] {
            create(&mut state, topic, vec![vec![1, 2, 3]]);
            assert!(!matches!(
                alter_isr(&mut state, topic, 0, vec![1]),
                Outcome::Refused(_)
            ));
        }
        set_config(
            &mut state,
            Some("unclean"),
            UNCLEAN_LEADER_ELECTION_ENABLE,
            "true",
        );
        set_config(&mut state, None, UNCLEAN_LEADER_ELECTION_ENABLE, "true");
        set_config(
            &mut state,
            Some("overrides"),
            UNCLEAN_LEADER_ELECTION_ENABLE,
            "false",
        );
        let before = partition(&state, "unclean", 0);
        fence(&mut state, 1);
        let after = partition(&state, "unclean", 0);
        assert_eq!((after.leader, after.isr.clone()), (2, vec![2]));
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.partition_epoch, before.partition_epoch + 1);
        assert_eq!(partition(&state, "inherits", 0).leader, 2);
        let clean = partition(&state, "overrides", 0);
        assert_eq!((clean.leader, clean.isr), (NO_LEADER, vec![1]));
        // Without any setting the default is off.
        set_config(&mut state, None, UNCLEAN_LEADER_ELECTION_ENABLE, "false");
        assert_eq!(partition(&state, "clean", 0).leader, 2);
        fence(&mut state, 2);
        let clean = partition(&state, "clean", 0);
        assert_eq!(clean.isr, vec![2]);
        // Fenced and back: a replica out of the ISR leads a leaderless
        // partition when its topic allows an unclean election.
        for id in [2, 3] {
            fence(&mut state, id);
        }
        set_config(
            &mut state,
            Some("clean"),
            UNCLEAN_LEADER_ELECTION_ENABLE,
            "true",
        );
        unfence(&mut state, 3);
        let p = partition(&state, "clean", 0);
        assert_eq!((p.leader, p.isr), (3, vec![3]));
        assert_eq!(partition(&state, "overrides", 0).leader, NO_LEADER);
    }

    #[test]
    fn turning_unclean_election_on_later_makes_leaderless_partitions_candidates() {
        let mut state = brokers(2);
        create(&mut state, "t", vec![vec![1, 2]]);
        create(&mut state, "u", vec![vec![1, 2]]);
        for topic in ["t", "u"] {
            alter_isr(&mut state, topic, 0, vec![1]);
        }
        fence(&mut state, 1);
        assert_eq!(partition(&state, "t", 0).leader, NO_LEADER);
        assert!(state.unclean_election_candidates().is_empty());
        set_config(
            &mut state,
            Some("t"),
            UNCLEAN_LEADER_ELECTION_ENABLE,
            "true",
        );
        assert_eq!(
            state.unclean_election_candidates(),
            vec![("t".to_string(), 0)]
        );
        // The controller's election empties the list.
        assert_eq!(
            errors(elect(&mut state, &[("t", 0)], ElectionKind::Unclean)),
            vec![("t".into(), 0, None)]
        );
        assert_eq!(partition(&state, "t", 0).leader, 2);
        assert!(state.unclean_election_candidates().is_empty());
        // No unfenced replica: nothing to elect.
        fence(&mut state, 2);
        set_config(&mut state, None, UNCLEAN_LEADER_ELECTION_ENABLE, "true");
        assert!(state.unclean_election_candidates().is_empty());
    }

    #[test]
    fn a_reassignment_adds_the_new_replicas_and_completes_when_they_are_in_sync() {
        let mut state = brokers(4);
        create(&mut state, "t", vec![vec![1, 2, 3], vec![1, 2, 3]]);
        assert_eq!(
            errors(reassign(&mut state, &[("t", 0, Some(vec![2, 3, 4]))])),
            vec![("t".into(), 0, None)]
        );
        let p = partition(&state, "t", 0);
        assert_eq!(p.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!((p.leader, p.partition_epoch, p.leader_epoch), (1, 1, 0));
        assert_eq!(
            state.reassignments(),
            vec![Reassignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![2, 3, 4, 1],
                adding_replicas: vec![4],
                removing_replicas: vec![1],
            }]
        );
        // The leader lets broker 4 in: the reassignment is done, and the
        // removed leader hands over to the target's first in-sync replica.
        let Outcome::Assignment(done) = alter_isr(&mut state, "t", 0, vec![1, 2, 3, 4]) else {
            panic!("refused");
        };
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.isr, vec![2, 3, 4]);
        assert_eq!(
            (done.leader, done.leader_epoch, done.partition_epoch),
            (2, 1, 2)
        );
        assert!(done.adding_replicas.is_empty() && done.removing_replicas.is_empty());
        assert_eq!(partition(&state, "t", 0), done);
        assert!(state.reassignments().is_empty());
        // Only removing replicas completes at once.
        assert_eq!(
            errors(reassign(&mut state, &[("t", 1, Some(vec![1, 2]))])),
            vec![("t".into(), 1, None)]
        );
        let p = partition(&state, "t", 1);
        assert_eq!((p.replicas, p.isr, p.leader), (vec![1, 2], vec![1, 2], 1));
        assert_eq!(p.partition_epoch, 1);
        // The same target again changes nothing.
        reassign(&mut state, &[("t", 1, Some(vec![1, 2]))]);
        assert_eq!(partition(&state, "t", 1).partition_epoch, 1);
    }

    #[test]
    fn a_new_target_replaces_a_reassignment_in_progress_from_the_original_replicas() {
        let mut state = brokers(5);
        create(&mut state, "t", vec![vec![1, 2, 3]]);
        reassign(&mut state, &[("t", 0, Some(vec![4, 5, 3]))]);
        assert!(!matches!(
            alter_isr(&mut state, "t", 0, vec![1, 2, 3, 4]),
            Outcome::Refused(_)
        ));
        let before = partition(&state, "t", 0);
        assert_eq!(before.adding_replicas, vec![4, 5]);
        // The same target again: broker 5 is still to catch up.
        assert_eq!(
            errors(reassign(&mut state, &[("t", 0, Some(vec![4, 5, 3]))])),
            vec![("t".into(), 0, None)]
        );
        assert_eq!(partition(&state, "t", 0), before);
        // A new target: broker 4, added by the old one, leaves at once.
        reassign(&mut state, &[("t", 0, Some(vec![5, 3]))]);
        let p = partition(&state, "t", 0);
        assert_eq!(p.replicas, vec![5, 3, 1, 2]);
        assert_eq!(
            (p.adding_replicas, p.removing_replicas),
            (vec![5], vec![1, 2])
        );
        assert_eq!((p.isr, p.leader), (vec![1, 2, 3], 1));
        assert_eq!(p.partition_epoch, before.partition_epoch + 1);
    }

    #[test]
    fn a_bad_reassignment_is_refused_per_partition_with_kafkas_codes() {
        let mut state = brokers(3);
        create(&mut state, "t", vec![vec![1, 2], vec![1, 2]]);
        let results = errors(reassign(
            &mut state,
            &[
                ("t", 0, Some(vec![])),
                ("t", 0, Some(vec![3, 3])),
                ("t", 0, Some(vec![1, 7])),
                ("t", 1, None),
                ("t", 2, Some(vec![1])),
                ("u", 0, None),
                ("t", 1, Some(vec![2, 3])),
            ],
        ));
        let codes: Vec<_> = results.into_iter().map(|(_, _, e)| e).collect();
        assert!(
            matches!(
                codes.as_slice(),
                [
                    Some(PartitionError::InvalidReplicaAssignment(_)),
                    Some(PartitionError::InvalidReplicaAssignment(_)),
                    Some(PartitionError::InvalidReplicaAssignment(_)),
                    Some(PartitionError::NoReassignmentInProgress),
                    Some(PartitionError::UnknownTopicOrPartition),
                    Some(PartitionError::UnknownTopicOrPartition),
                    None,
                ]
            ),
            "{codes:?}"
        );
        assert_eq!(partition(&state, "t", 0).partition_epoch, 0);
        assert_eq!(partition(&state, "t", 1).adding_replicas, vec![3]);
    }

    #[test]
    fn cancelling_a_reassignment_drops_the_added_replicas_and_moves_their_leadership() {
        let mut state = brokers(4);
        create(&mut state, "t", vec![vec![1, 2]]);
        reassign(&mut state, &[("t", 0, Some(vec![3, 4]))]);
        assert!(!matches!(
            alter_isr(&mut state, "t", 0, vec![1, 2, 3]),
            Outcome::Refused(_)
        ));
        // Broker 4 is not in sync yet: the reassignment goes on.
        assert_eq!(partition(&state, "t", 0).adding_replicas, vec![3, 4]);
        assert_eq!(
            errors(elect(&mut state, &[("t", 0)], ElectionKind::Preferred)),
            vec![("t".into(), 0, None)]
        );
        let before = partition(&state, "t", 0);
        assert_eq!(before.leader, 3);
        assert_eq!(
            errors(reassign(&mut state, &[("t", 0, None)])),
            vec![("t".into(), 0, None)]
        );
        let p = partition(&state, "t", 0);
        assert_eq!((p.replicas, p.isr, p.leader), (vec![1, 2], vec![1, 2], 1));
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        assert_eq!(p.partition_epoch, before.partition_epoch + 1);
        assert!(p.adding_replicas.is_empty() && p.removing_replicas.is_empty());
        assert!(state.reassignments().is_empty());
    }

    #[test]
    fn cancelling_a_reassignment_whose_isr_is_only_added_replicas_needs_unclean_election() {
        let mut state = brokers(4);
        create(&mut state, "t", vec![vec![1, 2]]);
        reassign(&mut state, &[("t", 0, Some(vec![3, 4]))]);
        alter_isr(&mut state, "t", 0, vec![1, 2, 3]);
        elect(&mut state, &[("t", 0)], ElectionKind::Preferred);
        assert!(!matches!(
            alter_isr(&mut state, "t", 0, vec![3]),
            Outcome::Refused(_)
        ));
        let before = partition(&state, "t", 0);
        assert!(matches!(
            errors(reassign(&mut state, &[("t", 0, None)])).as_slice(),
            [(_, 0, Some(PartitionError::InvalidReplicaAssignment(_)))]
        ));
        assert_eq!(partition(&state, "t", 0), before);
        set_config(
            &mut state,
            Some("t"),
            UNCLEAN_LEADER_ELECTION_ENABLE,
            "true",
        );
        assert_eq!(
            errors(reassign(&mut state, &[("t", 0, None)])),
            vec![("t".into(), 0, None)]
        );
        let p = partition(&state, "t", 0);
        assert_eq!((p.replicas, p.isr, p.leader), (vec![1, 2], vec![1], 1));
    }

    #[test]
    fn the_new_commands_keep_their_serialized_form() -> Result<(), serde_json::Error> {
        let elect = Command::ElectLeaders {
            partitions: Some(vec![("t".into(), 0)]),
            election_type: ElectionKind::Unclean,
        };
        let json = serde_json::to_string(&elect)?;
        assert_eq!(
            json,
            r#"{"kind":"elect_leaders","partitions":[["t",0]],"election_type":"unclean"}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&json)?, elect);
        Ok(())
    }

    /// A seeded stream of numbers for the random command sequence.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(self.0 >> 33).unwrap_or(0) % n.max(1)
        }

        fn broker(&mut self) -> i32 {
            // 1..=6, and sometimes 7, which never registers.
            i32::try_from(self.below(7)).unwrap_or(0) + 1
        }
    }

    /// A random command against `state`, as a proposer might send it
    /// (stale or wrong ones included).
    fn random_command(rng: &mut Lcg, state: &ClusterState, n: u128) -> Command {
        let topics: Vec<String> = state.topics.keys().cloned().collect();
        let topic = topics
            .get(rng.below(topics.len()))
            .cloned()
            .unwrap_or_else(|| "none".into());
        let partition = i32::try_from(rng.below(4)).unwrap_or(0);
        let broker = rng.broker();
        let epoch = state.brokers.get(&broker).map_or(0, |b| b.epoch);
        match rng.below(9) {
            0 => Command::FenceBroker { id: broker, epoch },
            1 | 2 => Command::UnfenceBroker { id: broker, epoch },
            3 => {
                let Some(p) = state.partition(&topic, partition) else {
                    return Command::AllocateProducerIds { count: 1 };
                };
                let mut new_isr = vec![p.leader];
                new_isr.extend(
                    p.replicas
                        .iter()
                        .filter(|b| **b != p.leader && rng.below(2) == 0),
                );
                Command::AlterPartition(AlterPartition {
                    topic_id: state.topics[&topic].id,
                    partition,
                    leader: p.leader,
                    broker_epoch: state.brokers.get(&p.leader).map_or(0, |b| b.epoch),
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    new_isr,
                })
            }
            4 => Command::ElectLeaders {
                partitions: (rng.below(3) > 0).then(|| vec![(topic, partition)]),
                election_type: if rng.below(2) == 0 {
                    ElectionKind::Preferred
                } else {
                    ElectionKind::Unclean
                },
            },
            5 | 6 => {
                let target = (rng.below(5) > 0).then(|| {
                    let len = rng.below(4);
                    (0..len).map(|_| rng.broker()).collect()
                });
                Command::AlterReassignments {
                    changes: vec![(topic, partition, target)],
                }
            }
            7 => {
                let value = if rng.below(2) == 0 { "true" } else { "false" };
                let changes = vec![ConfigChange::Set(
                    UNCLEAN_LEADER_ELECTION_ENABLE.into(),
                    value.into(),
                )];
                if rng.below(2) == 0 {
                    Command::AlterTopicConfigs {
                        name: topic,
                        changes,
                    }
                } else {
                    Command::AlterBrokerConfigs { changes }
                }
            }
            _ => Command::CreateTopic {
                name: format!("t{n}"),
                id: Uuid::from_u128(n + 1),
                replicas: Placement::Spread {
                    partitions: i32::try_from(rng.below(4)).unwrap_or(0) + 1,
                    factor: i16::try_from(rng.below(4)).unwrap_or(0) + 1,
                    seed: u32::try_from(rng.below(100)).unwrap_or(0),
                },
                configs: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn random_commands_keep_every_partition_record_consistent() {
        for seed in 0..20 {
            let mut rng = Lcg(seed);
            let mut state = ClusterState::default();
            for id in 1..=6 {
                let rack = ["a", "b", "c"][usize::try_from(id % 3).unwrap_or(0)];
                register_in(&mut state, u64::try_from(id).unwrap_or(0), id, Some(rack));
            }
            for n in 0..400u64 {
                let command = random_command(&mut rng, &state, u128::from(n));
                state.apply(100 + n, &command);
                for (topic, i, p) in state.partitions() {
                    let ok = !p.isr.is_empty()
                        && p.isr.iter().all(|b| p.replicas.contains(b))
                        && p.adding_replicas.iter().all(|b| p.replicas.contains(b))
                        && p.removing_replicas.iter().all(|b| p.replicas.contains(b))
                        && (p.leader == NO_LEADER
                            || (p.isr.contains(&p.leader) && state.is_unfenced(p.leader)));
                    assert!(ok, "seed {seed}, step {n} ({command:?}): {topic}-{i} {p:?}");
                }
            }
        }
    }

    #[test]
    fn producer_ids_never_repeat() {
        let mut state = ClusterState::default();
        let a = state.apply(1, &Command::AllocateProducerIds { count: 1000 });
        let b = state.apply(2, &Command::AllocateProducerIds { count: 1 });
        assert_eq!(a, Outcome::ProducerIds { first: 0 });
        assert_eq!(b, Outcome::ProducerIds { first: 1000 });
        assert!(matches!(
            state.apply(3, &Command::AllocateProducerIds { count: 0 }),
            Outcome::Refused(Refusal::ProducerIds(_))
        ));
    }
}
