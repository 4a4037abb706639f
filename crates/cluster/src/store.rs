//! [`RaftMetadataStore`]: the broker's `MetadataStore` over a
//! [`Controller`].
//!
//! Reads come from this node's applied copy of the metadata, so they never
//! wait on the network (and may trail the leader by a heartbeat). A change
//! is turned into a [`Command`] here, where what needs a choice (a new
//! topic's replicas) is chosen, committed through the quorum's leader, and
//! waited for until this node has applied it.
//!
//! The trait is synchronous: the broker calls it from blocking threads. A
//! call runs its write as a task on the runtime and waits for the answer
//! on a plain channel, so it works from any thread but a runtime worker
//! that the write needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use weir_metadata::{
    AlterPartition, BrokerInfo, ConfigChange, ElectionKind, MetadataError, MetadataStore, NewTopic,
    PartitionAssignment, PartitionResult, Reassignment, TopicMeta,
};

use crate::state::Placement;
use crate::{ClusterError, Command, Controller, Outcome, Refusal, VoterRefusal};

/// Longest DescribeQuorum waits for the quorum's leader.
const QUORUM_ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The broker's metadata, kept by the quorum.
#[derive(Debug, Clone)]
pub struct RaftMetadataStore {
    controller: Arc<Controller>,
    runtime: tokio::runtime::Handle,
}

impl RaftMetadataStore {
    /// A store over `controller`, running writes on `runtime`.
    pub fn new(controller: Arc<Controller>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            controller,
            runtime,
        }
    }

    /// The controller underneath.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Read the applied metadata. Its lock is poisoned only by a panic while
    /// a change was being applied: the state may be half changed, and an
    /// empty answer would read as "no topics" (and let a broker remove
    /// storage it thinks unreferenced), so the panic is raised again here,
    /// as `LocalMetadataStore` does.
    fn read<T>(&self, f: impl FnOnce(&crate::ClusterState) -> T) -> T {
        match self.controller.read(f) {
            Ok(value) => value,
            Err(e) => panic!("the applied metadata cannot be read after a panic: {e}"),
        }
    }

    /// Commit `command` and wait for its outcome, from a blocking thread.
    fn commit(&self, command: Command) -> Result<Outcome, MetadataError> {
        let controller = self.controller.clone();
        self.outcome_of(async move { controller.write(command).await })
    }

    /// Run a quorum change on the runtime and wait for its outcome, from a
    /// blocking thread; a refusal is the broker's error.
    fn outcome_of(
        &self,
        change: impl std::future::Future<Output = Result<Outcome, ClusterError>> + Send + 'static,
    ) -> Result<Outcome, MetadataError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(change.await);
        });
        let outcome = rx
            .recv()
            .map_err(|_| MetadataError::NoController("the runtime is shutting down".into()))?
            .map_err(|e| match e {
                ClusterError::NoLeader(_) => MetadataError::NoController(e.to_string()),
                ClusterError::VoterChange(why) => voter_refusal(why),
                e => MetadataError::Storage(e.to_string()),
            })?;
        match outcome {
            Outcome::Refused(why) => Err(refusal(why)),
            outcome => Ok(outcome),
        }
    }

    fn commit_topic(&self, command: Command) -> Result<TopicMeta, MetadataError> {
        match self.commit(command)? {
            Outcome::Topic(meta) => Ok(meta),
            other => Err(unexpected(&other)),
        }
    }
}

/// Replicas spread by the quorum when it applies the change, from a
/// random start as Kafka's placement has.
fn spread(partitions: i32, factor: i16) -> Placement {
    let bytes = Uuid::new_v4().into_bytes();
    Placement::Spread {
        partitions,
        factor,
        seed: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
    }
}

fn refusal(why: Refusal) -> MetadataError {
    match why {
        Refusal::TopicAlreadyExists(m) => MetadataError::TopicAlreadyExists(m),
        Refusal::UnknownTopic(m) => MetadataError::UnknownTopic(m),
        Refusal::TopicIdTaken(m) => MetadataError::Storage(format!("topic id {m} is taken")),
        Refusal::InvalidPartitions(m) => MetadataError::InvalidPartitions(m),
        Refusal::InvalidReplicas(m) => MetadataError::InvalidReplicationFactor(m),
        Refusal::StalePartitionChange(m) | Refusal::StaleBroker(m) => {
            MetadataError::StalePartitionChange(m)
        }
        Refusal::IneligibleReplica(m) => MetadataError::IneligibleReplica(m),
        Refusal::ProducerIds(m) => MetadataError::Storage(m),
        Refusal::BrokerNotRegistered(m) => MetadataError::BrokerNotRegistered(m),
        Refusal::BrokerInUse(m) => MetadataError::BrokerInUse(m),
        Refusal::TooManyGroupConfigs(m) => MetadataError::TooManyGroupConfigs(m),
        Refusal::TooManyCredentials(m) => MetadataError::Storage(m),
        Refusal::TooManyAcls(m) => MetadataError::TooManyAcls(m),
        Refusal::TooManyClientQuotas(m) => MetadataError::TooManyClientQuotas(m),
    }
}

/// A Kafka node id as the quorum's: a negative one names no node.
fn node_id(id: i32) -> Result<u64, MetadataError> {
    u64::try_from(id).map_err(|_| MetadataError::VoterNotFound(format!("node {id} is no node")))
}

fn voter_refusal(why: VoterRefusal) -> MetadataError {
    match why {
        VoterRefusal::Duplicate(m) => MetadataError::DuplicateVoter(m),
        VoterRefusal::NotFound(m) => MetadataError::VoterNotFound(m),
        VoterRefusal::Invalid(m) => MetadataError::InvalidVoterChange(m),
        VoterRefusal::TimedOut(m) => MetadataError::NoController(m),
    }
}

fn unexpected(outcome: &Outcome) -> MetadataError {
    MetadataError::Storage(format!(
        "unexpected outcome of a metadata command: {outcome:?}"
    ))
}

impl MetadataStore for RaftMetadataStore {
    fn cluster_id(&self) -> String {
        self.read(|s| s.cluster_id.clone())
    }

    fn topics(&self) -> Vec<TopicMeta> {
        self.read(|s| s.topic_metas())
    }

    fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.read(|s| s.topic_meta(name))
    }

    fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.read(|s| s.topic_meta_by_id(id))
    }

    fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetadataError> {
        let replicas = match topic.assignments {
            Some(replicas) => Placement::Explicit { replicas },
            None => spread(topic.partitions, topic.replication_factor),
        };
        self.commit_topic(Command::CreateTopic {
            name: topic.name,
            id: topic.id,
            replicas,
            configs: topic.configs,
        })
    }

    fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError> {
        self.commit_topic(Command::DeleteTopic { name: name.into() })
    }

    fn set_partition_count(&self, name: &str, total: i32) -> Result<TopicMeta, MetadataError> {
        let current = self
            .topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.into()))?;
        if total <= current.partitions {
            return Err(MetadataError::InvalidPartitions(format!(
                "Topic currently has {} partitions, which is higher than the requested {total}.",
                current.partitions
            )));
        }
        let factor = i16::try_from(current.assignments.first().map_or(1, |a| a.replicas.len()))
            .unwrap_or(i16::MAX);
        self.commit_topic(Command::AddPartitions {
            name: name.into(),
            from: current.partitions,
            replicas: spread(total - current.partitions, factor),
        })
    }

    fn add_assigned_partitions(
        &self,
        name: &str,
        from: i32,
        replicas: Vec<Vec<i32>>,
    ) -> Result<TopicMeta, MetadataError> {
        self.commit_topic(Command::AddPartitions {
            name: name.into(),
            from,
            replicas: Placement::Explicit { replicas },
        })
    }

    fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<TopicMeta, MetadataError> {
        self.commit_topic(Command::AlterTopicConfigs {
            name: name.into(),
            changes: changes.to_vec(),
        })
    }

    fn broker_configs(&self) -> BTreeMap<String, String> {
        self.read(|s| s.broker_configs.clone())
    }

    fn alter_broker_configs(&self, changes: &[ConfigChange]) -> Result<(), MetadataError> {
        self.commit(Command::AlterBrokerConfigs {
            changes: changes.to_vec(),
        })
        .map(|_| ())
    }

    fn group_configs(&self, group: &str) -> BTreeMap<String, String> {
        self.read(|s| s.group_configs.get(group).cloned().unwrap_or_default())
    }

    fn alter_group_configs(
        &self,
        group: &str,
        changes: &[ConfigChange],
    ) -> Result<(), MetadataError> {
        self.commit(Command::AlterGroupConfigs {
            group: group.into(),
            changes: changes.to_vec(),
        })
        .map(|_| ())
    }

    fn scram_credentials(&self) -> Vec<weir_metadata::ScramCredential> {
        self.read(|s| s.scram_credentials.clone())
    }

    fn alter_scram_credentials(
        &self,
        changes: &[weir_metadata::ScramChange],
    ) -> Result<(), MetadataError> {
        self.commit(Command::AlterScramCredentials {
            changes: changes.to_vec(),
        })
        .map(|_| ())
    }

    fn acls(&self) -> (u64, Vec<weir_metadata::AclEntry>) {
        self.read(|s| (s.acls_changed_at, s.acls.clone()))
    }

    fn acls_version(&self) -> u64 {
        self.read(|s| s.acls_changed_at)
    }

    fn alter_acls(&self, changes: &[weir_metadata::AclChange]) -> Result<(), MetadataError> {
        self.commit(Command::AlterAcls {
            changes: changes.to_vec(),
        })
        .map(|_| ())
    }

    fn client_quotas(&self) -> (u64, Vec<weir_metadata::ClientQuota>) {
        self.read(|s| (s.client_quotas_changed_at, s.client_quotas.clone()))
    }

    fn client_quotas_version(&self) -> u64 {
        self.read(|s| s.client_quotas_changed_at)
    }

    fn alter_client_quotas(
        &self,
        changes: &[weir_metadata::ClientQuotaChange],
    ) -> Result<(), MetadataError> {
        self.commit(Command::AlterClientQuotas {
            changes: changes.to_vec(),
        })
        .map(|_| ())
    }

    fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError> {
        match self.commit(Command::AllocateProducerIds { count })? {
            Outcome::ProducerIds { first } => Ok(first),
            other => Err(unexpected(&other)),
        }
    }

    fn replicated(&self) -> bool {
        true
    }

    fn raft_status(&self) -> Option<weir_metadata::RaftStatus> {
        let m = self.controller.metrics();
        let id = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        let last = m.last_log_index.unwrap_or(0);
        let member_lag = m
            .replication
            .iter()
            .flatten()
            .filter(|(member, _)| **member != m.id)
            .map(|(member, matched)| {
                (
                    id(*member),
                    last.saturating_sub(matched.map_or(0, |l| l.index)),
                )
            })
            .collect();
        Some(weir_metadata::RaftStatus {
            node_id: id(m.id),
            leader_id: m.current_leader.map_or(weir_metadata::NO_LEADER, id),
            term: m.current_term,
            last_log_index: last,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            member_lag,
        })
    }

    fn quorum(&self) -> Option<weir_metadata::QuorumInfo> {
        // Asked of the leader; without one (an election, or this node cut
        // off) the answer says so and DescribeQuorum answers
        // NOT_LEADER_OR_FOLLOWER.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let controller = self.controller.clone();
        self.runtime.spawn(async move {
            let asked = tokio::time::timeout(QUORUM_ASK_TIMEOUT, controller.describe_quorum());
            let _ = tx.send(asked.await.ok().and_then(Result::ok));
        });
        let leaderless = || weir_metadata::QuorumInfo {
            leader_id: weir_metadata::NO_LEADER,
            leader_epoch: -1,
            high_watermark: -1,
            voters: Vec::new(),
            observers: Vec::new(),
            nodes: Vec::new(),
        };
        Some(rx.recv().ok().flatten().unwrap_or_else(leaderless))
    }

    fn brokers(&self) -> Vec<BrokerInfo> {
        self.read(|s| s.brokers.values().cloned().collect())
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.controller.changes()
    }

    fn elect_leaders(
        &self,
        partitions: Option<Vec<(String, i32)>>,
        kind: ElectionKind,
    ) -> Result<Vec<PartitionResult>, MetadataError> {
        match self.commit(Command::ElectLeaders {
            partitions,
            election_type: kind,
        })? {
            Outcome::PartitionResults { results } => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    fn alter_reassignments(
        &self,
        changes: Vec<(String, i32, Option<Vec<i32>>)>,
        _local_node: i32,
    ) -> Result<Vec<PartitionResult>, MetadataError> {
        match self.commit(Command::AlterReassignments { changes })? {
            Outcome::PartitionResults { results } => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    fn reassignments(&self) -> Vec<Reassignment> {
        self.read(|s| s.reassignments())
    }

    fn unregister_broker(&self, id: i32) -> Result<(), MetadataError> {
        let controller = self.controller.clone();
        match self.outcome_of(async move { controller.unregister_broker(id).await })? {
            Outcome::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn add_voter(&self, id: i32, directory: Option<Uuid>) -> Result<(), MetadataError> {
        let controller = self.controller.clone();
        let id = node_id(id)?;
        self.outcome_of(async move {
            controller.add_voter(id, directory).await?;
            Ok(Outcome::Done)
        })
        .map(drop)
    }

    fn remove_voter(&self, id: i32, directory: Option<Uuid>) -> Result<(), MetadataError> {
        let controller = self.controller.clone();
        let id = node_id(id)?;
        self.outcome_of(async move {
            controller.remove_voter(id, directory).await?;
            Ok(Outcome::Done)
        })
        .map(drop)
    }

    fn alter_partition(
        &self,
        change: AlterPartition,
    ) -> Result<PartitionAssignment, MetadataError> {
        match self.commit(Command::AlterPartition(change))? {
            Outcome::Assignment(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }
}
