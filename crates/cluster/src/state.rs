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
        }
    }

    /// The replica sets `placement` gives against this state. A spread puts
    /// each partition on consecutive unfenced brokers in id order, from a
    /// start that moves one broker per partition, so leaders (the first
    /// replica) spread evenly.
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
                let start = usize::try_from(*seed).unwrap_or(0) % brokers.len();
                Ok((0..usize::try_from(*partitions).unwrap_or(0))
                    .map(|p| {
                        (0..factor)
                            .map(|j| brokers[(start + p + j) % brokers.len()])
                            .collect()
                    })
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
    /// from the remaining ISR in replica order, wherever it led.
    fn fence(&mut self, id: i32) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = true;
        }
        let unfenced = self.unfenced();
        for topic in self.topics.values_mut() {
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
                    let next = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|b| p.isr.contains(b) && unfenced.contains(b))
                        .unwrap_or(NO_LEADER);
                    p.leader = next;
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Unfence `id`: it leads every partition that has no leader and whose
    /// ISR it is in.
    fn unfence(&mut self, id: i32) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = false;
        }
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if p.leader == NO_LEADER && p.isr.contains(&id) {
                    p.leader = id;
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
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
        p.partition_epoch += 1;
        Ok(p.clone())
    }
}

fn unknown_topic(name: &str) -> Refusal {
    Refusal::UnknownTopic(format!("Topic '{name}' does not exist."))
}

fn apply_changes(configs: &mut BTreeMap<String, String>, changes: &[ConfigChange]) {
    for change in changes {
        match change {
            ConfigChange::Set(key, value) => {
                configs.insert(key.clone(), value.clone());
            }
            ConfigChange::Delete(key) => {
                configs.remove(key);
            }
        }
    }
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
        let outcome = state.apply(
            index,
            &Command::RegisterBroker {
                id,
                host: "127.0.0.1".into(),
                port: 9092 + id,
                rack: None,
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
