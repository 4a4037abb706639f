//! Cluster metadata: which topics exist, their IDs, partition counts and
//! configs, broker-level config overrides, and producer-id allocation.
//!
//! Everything sits behind [`MetadataStore`]. This crate ships
//! [`LocalMetadataStore`], a durable single-node store; the cluster issue backs
//! the same trait with an openraft quorum.

use std::collections::BTreeMap;

use uuid::Uuid;

mod local;
pub mod record_file;

pub use local::LocalMetadataStore;

/// A fresh topic ID: random, not nil, not `taken`, and whose Kafka text form
/// does not start with '-' (Kafka avoids those so they never read as a
/// command-line flag).
pub fn new_topic_id(taken: impl Fn(Uuid) -> bool) -> Uuid {
    local::random_uuid(taken)
}

/// A fresh cluster id, as Kafka writes one: a random UUID in URL-safe
/// base64 without padding (22 characters).
pub fn new_cluster_id() -> String {
    local::encode_uuid(local::random_uuid(|_| false))
}

/// A UUID as Kafka prints one (a topic id, a directory id): 22 characters
/// of URL-safe base64.
pub fn uuid_text(id: Uuid) -> String {
    local::encode_uuid(id)
}

/// Read a UUID written as Kafka prints one ([`uuid_text`]).
pub fn parse_uuid_text(text: &str) -> Option<Uuid> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// A new random UUID for a node's metadata directory (KIP-853's directory
/// id).
pub fn new_directory_id() -> Uuid {
    local::random_uuid(|_| false)
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
    /// Each partition's replicas and leadership, indexed by partition, as a
    /// cluster's controller decides them. Empty on a single node, where the
    /// node holds the only replica of every partition and leads it (see
    /// [`TopicMeta::assignment`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<PartitionAssignment>,
}

impl TopicMeta {
    /// Partition `partition`'s assignment. A topic without assignments (a
    /// single node's) has one replica, `local_node`, which leads it at epoch
    /// 0 and is the whole ISR.
    pub fn assignment(&self, partition: i32, local_node: i32) -> Option<PartitionAssignment> {
        if !(0..self.partitions).contains(&partition) {
            return None;
        }
        if self.assignments.is_empty() {
            return Some(PartitionAssignment::solo(local_node));
        }
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.assignments.get(p))
            .cloned()
    }
}

/// Kafka's ElectionType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectionKind {
    /// ElectionType 0: the preferred (first) replica leads, if it is in
    /// sync and unfenced.
    Preferred,
    /// ElectionType 1: a partition without a leader gets one, from outside
    /// the ISR if no in-sync replica is unfenced (records may be lost).
    Unclean,
}

/// What a command that works partition by partition did to one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionResult {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// `None` when done (Kafka's NONE).
    pub error: Option<PartitionError>,
}

/// Why a partition was left as it was, named after Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "message", rename_all = "snake_case")]
pub enum PartitionError {
    /// ELECTION_NOT_NEEDED: the wanted leader already leads.
    ElectionNotNeeded,
    /// PREFERRED_LEADER_NOT_AVAILABLE: the preferred replica is fenced or
    /// out of the ISR.
    PreferredLeaderNotAvailable,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE: every replica is fenced.
    EligibleLeadersNotAvailable,
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownTopicOrPartition,
    /// INVALID_REPLICA_ASSIGNMENT, and why.
    InvalidReplicaAssignment(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancel of a partition not being
    /// reassigned.
    NoReassignmentInProgress,
}

/// A partition reassignment in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reassignment {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Every replica now: the target's first, then those being removed.
    pub replicas: Vec<i32>,
    /// Replicas the reassignment adds.
    pub adding_replicas: Vec<i32>,
    /// Replicas the reassignment removes.
    pub removing_replicas: Vec<i32>,
}

/// `leader` of a partition that has none (every in-sync replica is fenced).
pub const NO_LEADER: i32 = -1;

/// Where one partition's replicas live and who leads it: Kafka's
/// PartitionRecord, as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionAssignment {
    /// Broker ids holding a replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas: those the high watermark waits for. Always a
    /// subset of `replicas`, never empty (Kafka keeps the last member when
    /// it is fenced, so an unclean election is needed to lose it).
    pub isr: Vec<i32>,
    /// The leader's broker id, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped whenever the leader changes; stamped on every batch the leader
    /// appends, and what OffsetForLeaderEpoch truncates by.
    pub leader_epoch: i32,
    /// Bumped on every change to this record (ISR, leader, replicas); an
    /// AlterPartition must name the current one, so a stale leader cannot
    /// overwrite a newer decision.
    pub partition_epoch: i32,
    /// Replicas being added by a reassignment (also in `replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    /// Replicas being removed by a reassignment (still in `replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
}

impl PartitionAssignment {
    /// A single node's partition: one replica, leading at epoch 0.
    pub fn solo(node: i32) -> Self {
        Self {
            replicas: vec![node],
            isr: vec![node],
            leader: node,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }
}

/// A broker as registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerInfo {
    /// `--node-id`.
    pub id: i32,
    /// The host other brokers connect to: the advertised endpoint of its
    /// inter-broker listener (`inter.broker.listener.name`).
    pub host: String,
    /// The port other brokers connect to.
    pub port: i32,
    /// `broker.rack`, when set.
    pub rack: Option<String>,
    /// Its advertised listeners, each by name (`advertised.listeners`); a
    /// client is told the endpoints of the listener it came in on. Empty in
    /// a registration written before listeners were named: such a broker
    /// had one plaintext listener, at `host:port`.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// A fenced broker's session expired (or it has not yet caught up with
    /// the metadata): it leads nothing and is in no ISR.
    pub fenced: bool,
    /// The broker epoch: the metadata offset of its latest registration, so
    /// a restarted broker's requests are told from its former life's.
    pub epoch: i64,
}

impl BrokerInfo {
    /// Where a client that came in on `listener` reaches this broker, or
    /// `None` when the broker has no listener of that name.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        Endpoint::of_listener(&self.endpoints, listener, (&self.host, self.port))
    }
}

/// One advertised listener of a broker (an entry of Kafka's
/// `advertised.listeners`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `SSL`, `CLIENT`, ...).
    pub listener: String,
    /// The host clients of this listener are told.
    pub host: String,
    /// The port clients of this listener are told.
    pub port: i32,
    /// Its security protocol (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`,
    /// `SASL_SSL`), as DescribeCluster and Kafka's tools show it.
    pub security_protocol: String,
}

impl Endpoint {
    /// The host and port of `listener` among a broker's `endpoints`; a
    /// broker that names none has one plaintext listener, at `only`, which
    /// every client is told.
    pub fn of_listener<'a>(
        endpoints: &'a [Endpoint],
        listener: &str,
        only: (&'a str, i32),
    ) -> Option<(&'a str, i32)> {
        if endpoints.is_empty() {
            return Some(only);
        }
        endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// This node's own view of the metadata quorum's Raft log, read locally
/// without asking the leader, for the metrics: its term, the leader it
/// knows, how far its log and its applied state reach and, on the leader,
/// how far each other member is behind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RaftStatus {
    /// This node's id.
    pub node_id: i32,
    /// The leader this node knows of, or [`NO_LEADER`].
    pub leader_id: i32,
    /// The Raft term this node is in.
    pub term: u64,
    /// The index of the last entry in this node's log.
    pub last_log_index: u64,
    /// The index of the last entry this node applied (committed entries
    /// only are applied).
    pub applied_index: u64,
    /// On the leader, each other member's entries behind the leader's log
    /// end (by node id); empty elsewhere.
    pub member_lag: Vec<(i32, u64)>,
}

/// The metadata quorum as its leader sees it, for DescribeQuorum: Kafka's
/// `__cluster_metadata` partition, whose offsets are Raft log indexes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumInfo {
    /// The leader's node id, or [`NO_LEADER`] while there is none (an
    /// election, or a node that cannot reach the quorum): DescribeQuorum
    /// then answers NOT_LEADER_OR_FOLLOWER.
    pub leader_id: i32,
    /// The leader's epoch: its Raft term.
    pub leader_epoch: i32,
    /// The committed index: the end of what a majority of voters holds.
    pub high_watermark: i64,
    /// The voters, the leader among them.
    pub voters: Vec<QuorumReplica>,
    /// Nodes that copy the metadata but do not vote (Raft learners).
    pub observers: Vec<QuorumReplica>,
    /// Each voter's controller listener, for DescribeQuorum v2 (KIP-853).
    pub nodes: Vec<QuorumNode>,
}

/// One replica of the metadata log, as the quorum's leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumReplica {
    /// Its node id.
    pub replica_id: i32,
    /// The end of its copy of the log (-1 when unknown).
    pub log_end_offset: i64,
    /// When it last fetched from the leader (-1 when unknown).
    pub last_fetch_timestamp_ms: i64,
    /// When it last held everything the leader had (-1 when unknown).
    pub last_caught_up_timestamp_ms: i64,
    /// Its metadata directory (KIP-853), when the quorum knows it: a node
    /// with the controller role.
    #[serde(default)]
    pub directory_id: Option<Uuid>,
}

/// Where a controller is reached: its `--controller-listen` address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumNode {
    /// Its node id.
    pub id: i32,
    /// Host of its controller listener.
    pub host: String,
    /// Port of its controller listener.
    pub port: u16,
}

/// A leader's request to change a partition's ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlterPartition {
    /// The topic.
    pub topic_id: Uuid,
    /// The partition.
    pub partition: i32,
    /// The broker asking: must be the partition's leader.
    pub leader: i32,
    /// The asking leader's broker epoch.
    pub broker_epoch: i64,
    /// The leader epoch the leader leads under.
    pub leader_epoch: i32,
    /// The partition epoch the change is based on.
    pub partition_epoch: i32,
    /// The ISR wanted.
    pub new_isr: Vec<i32>,
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
    /// Replica sets the client chose (CreateTopics with manual
    /// assignments), one per partition, the preferred leader first; `None`
    /// lets the store place them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// One change to a config map (IncrementalAlterConfigs semantics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConfigChange {
    /// Set a key to a value.
    Set(String, String),
    /// Remove a key, reverting it to the default.
    Delete(String),
}

/// Most groups that may have configs set: group ids come from clients, and
/// the metadata is held in memory and snapshotted whole.
pub const GROUP_CONFIGS_MAX: usize = 100_000;

/// Apply `changes` to a config map, in order.
pub fn apply_config_changes(configs: &mut BTreeMap<String, String>, changes: &[ConfigChange]) {
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

/// The configs of `group` after `changes`, refused when it is a new group
/// past [`GROUP_CONFIGS_MAX`]. Changes nothing: a store checks with it
/// before writing, then applies with [`apply_group_changes`].
pub fn group_configs_after(
    groups: &BTreeMap<String, BTreeMap<String, String>>,
    group: &str,
    changes: &[ConfigChange],
) -> Result<BTreeMap<String, String>, MetadataError> {
    let mut configs = groups.get(group).cloned().unwrap_or_default();
    apply_config_changes(&mut configs, changes);
    if !configs.is_empty() && !groups.contains_key(group) && groups.len() >= GROUP_CONFIGS_MAX {
        return Err(MetadataError::TooManyGroupConfigs(format!(
            "{GROUP_CONFIGS_MAX} groups already have configs; \
             delete the configs of groups no longer used"
        )));
    }
    Ok(configs)
}

/// Apply `changes` to the configs of `group` in `groups` (see
/// [`group_configs_after`]); a group left without configs is removed.
pub fn apply_group_changes(
    groups: &mut BTreeMap<String, BTreeMap<String, String>>,
    group: &str,
    changes: &[ConfigChange],
) -> Result<(), MetadataError> {
    let configs = group_configs_after(groups, group, changes)?;
    if configs.is_empty() {
        groups.remove(group);
    } else {
        groups.insert(group.to_string(), configs);
    }
    Ok(())
}

/// Most SCRAM credentials the metadata keeps, all users together.
pub const SCRAM_CREDENTIALS_MAX: usize = 100_000;

/// A user's SCRAM credential for one mechanism, as Kafka keeps it (its
/// UserScramCredentialRecord): never the password, only what RFC 5802's
/// server needs to check one. Its `Debug` shows no key or salt.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    /// The user name.
    pub user: String,
    /// Kafka's mechanism type: 1 is SCRAM-SHA-256, 2 SCRAM-SHA-512.
    pub mechanism: i8,
    /// The salt.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    /// H(ClientKey).
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
    /// The iterations of the salted password.
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScramChange {
    /// Set a user's credential for its mechanism.
    Upsert(ScramCredential),
    /// Remove a user's credential for one mechanism.
    Delete {
        /// The user name.
        user: String,
        /// Kafka's mechanism type.
        mechanism: i8,
    },
}

/// Apply `changes` in order to `credentials` (kept ordered by user, then
/// mechanism). A deletion of a credential that is not there changes
/// nothing; the broker answers RESOURCE_NOT_FOUND before it asks. Refused
/// whole past [`SCRAM_CREDENTIALS_MAX`].
pub fn apply_scram_changes(
    credentials: &mut Vec<ScramCredential>,
    changes: &[ScramChange],
) -> Result<(), MetadataError> {
    let mut after = credentials.clone();
    for change in changes {
        match change {
            ScramChange::Upsert(credential) => {
                let key = (credential.user.as_str(), credential.mechanism);
                match after.binary_search_by(|c| (c.user.as_str(), c.mechanism).cmp(&key)) {
                    Ok(at) => after[at] = credential.clone(),
                    Err(at) => after.insert(at, credential.clone()),
                }
            }
            ScramChange::Delete { user, mechanism } => {
                after.retain(|c| !(c.user == *user && c.mechanism == *mechanism));
            }
        }
    }
    if after.len() > SCRAM_CREDENTIALS_MAX && after.len() > credentials.len() {
        return Err(MetadataError::Storage(format!(
            "{SCRAM_CREDENTIALS_MAX} SCRAM credentials are kept at most"
        )));
    }
    *credentials = after;
    Ok(())
}

/// Most ACL bindings the metadata keeps, all resources together.
pub const ACLS_MAX: usize = 100_000;

/// One ACL binding as the metadata keeps it (Kafka's
/// AccessControlEntryRecord): a resource pattern and an access control
/// entry, with Kafka's codes for the resource type, pattern type,
/// operation and permission. The broker checks a binding (weir-auth's
/// `AclBinding::validate`) before it asks the store to keep it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// Kafka's resource type code (2 topic, 3 group, 4 cluster, ...).
    pub resource_type: i8,
    /// The resource name, prefix, or `*`.
    pub resource_name: String,
    /// Kafka's pattern type code (3 literal, 4 prefixed).
    pub pattern_type: i8,
    /// `Type:name`, or `User:*`.
    pub principal: String,
    /// An IP address, or `*`.
    pub host: String,
    /// Kafka's operation code.
    pub operation: i8,
    /// Kafka's permission type code (2 deny, 3 allow).
    pub permission_type: i8,
}

/// One change of CreateAcls or DeleteAcls: DeleteAcls' filters are
/// matched by the broker, which asks for the bindings they matched to be
/// removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AclChange {
    /// Keep a binding (once: a binding already kept is left as it is).
    Create(AclEntry),
    /// Remove a binding (one not kept changes nothing).
    Delete(AclEntry),
}

/// Apply `changes` in order to `acls` (kept ordered and each once).
/// Refused whole when it would leave more than [`ACLS_MAX`].
pub fn apply_acl_changes(
    acls: &mut Vec<AclEntry>,
    changes: &[AclChange],
) -> Result<(), MetadataError> {
    let mut after = acls.clone();
    for change in changes {
        match change {
            AclChange::Create(entry) => {
                if let Err(at) = after.binary_search(entry) {
                    after.insert(at, entry.clone());
                }
            }
            AclChange::Delete(entry) => {
                if let Ok(at) = after.binary_search(entry) {
                    after.remove(at);
                }
            }
        }
    }
    if after.len() > ACLS_MAX && after.len() > acls.len() {
        return Err(MetadataError::TooManyAcls(format!(
            "{ACLS_MAX} ACL bindings are kept at most"
        )));
    }
    *acls = after;
    Ok(())
}

/// Most client quota values the metadata keeps, all entities together.
pub const CLIENT_QUOTAS_MAX: usize = 100_000;

/// One component of a client quota entity: Kafka's entity type (`user`,
/// `client-id` or `ip`) and the entity's name, or `None` for the type's
/// default entity (Kafka's `<default>`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct QuotaEntityPart {
    /// `user`, `client-id` or `ip`.
    pub entity_type: String,
    /// The entity's name; `None` is the default entity.
    pub name: Option<String>,
}

/// One quota value as the metadata keeps it (Kafka's ClientQuotaRecord):
/// the entity it applies to, with its parts ordered by entity type, the
/// quota's key (`producer_byte_rate`, `consumer_byte_rate`,
/// `request_percentage`, `controller_mutation_rate`,
/// `connection_creation_rate`) and its value. The broker checks them
/// before it asks the store to keep them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientQuota {
    /// The entity, its parts ordered by entity type.
    pub entity: Vec<QuotaEntityPart>,
    /// The quota's key.
    pub key: String,
    /// The quota's value.
    pub value: f64,
}

// Quota values are finite (the broker refuses any other), so their
// equality is an equivalence.
impl Eq for ClientQuota {}

/// One change of AlterClientQuotas: set a quota's value, or remove it
/// (`value` `None`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientQuotaChange {
    /// The entity, its parts ordered by entity type.
    pub entity: Vec<QuotaEntityPart>,
    /// The quota's key.
    pub key: String,
    /// The new value, or `None` to remove the quota.
    pub value: Option<f64>,
}

impl Eq for ClientQuotaChange {}

/// Apply `changes` in order to `quotas` (kept ordered by entity then key,
/// each once). Refused whole when it would leave more than
/// [`CLIENT_QUOTAS_MAX`].
pub fn apply_client_quota_changes(
    quotas: &mut Vec<ClientQuota>,
    changes: &[ClientQuotaChange],
) -> Result<(), MetadataError> {
    let mut after = quotas.clone();
    for change in changes {
        let at =
            after.binary_search_by(|q| (&q.entity, &q.key).cmp(&(&change.entity, &change.key)));
        match (at, change.value) {
            (Ok(at), Some(value)) => after[at].value = value,
            (Err(at), Some(value)) => after.insert(
                at,
                ClientQuota {
                    entity: change.entity.clone(),
                    key: change.key.clone(),
                    value,
                },
            ),
            (Ok(at), None) => {
                after.remove(at);
            }
            (Err(_), None) => {}
        }
    }
    if after.len() > CLIENT_QUOTAS_MAX && after.len() > quotas.len() {
        return Err(MetadataError::TooManyClientQuotas(format!(
            "{CLIENT_QUOTAS_MAX} client quota values are kept at most"
        )));
    }
    *quotas = after;
    Ok(())
}

/// Bytes as base64 text in the metadata's JSON.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

/// Why a metadata change was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// DUPLICATE_VOTER: a voter change adding a node that already votes.
    #[error("{0}")]
    DuplicateVoter(String),
    /// VOTER_NOT_FOUND: a voter change removing a node that does not vote
    /// (or not with the directory named).
    #[error("{0}")]
    VoterNotFound(String),
    /// INVALID_REQUEST: a voter change the quorum cannot make (a node that
    /// is not an observer with the controller role, the last voter).
    #[error("{0}")]
    InvalidVoterChange(String),
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// INVALID_PARTITIONS.
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR: more replicas than brokers able to hold them.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// The ID given for a new topic is nil or already belongs to a topic.
    #[error("topic id {0} is nil or already in use")]
    TopicIdTaken(Uuid),
    /// An AlterPartition named a stale leader or partition epoch, or came
    /// from a broker that does not lead the partition (FENCED_LEADER_EPOCH,
    /// INVALID_UPDATE_VERSION, NOT_LEADER_OR_FOLLOWER in Kafka).
    #[error("stale partition change: {0}")]
    StalePartitionChange(String),
    /// An AlterPartition's ISR names a broker that is not a replica or is
    /// fenced (INELIGIBLE_REPLICA).
    #[error("ineligible replica: {0}")]
    IneligibleReplica(String),
    /// This node cannot reach the controller quorum's leader, or the quorum
    /// has none now (Kafka clients retry: NOT_CONTROLLER / REQUEST_TIMED_OUT).
    #[error("no controller: {0}")]
    NoController(String),
    /// More ACL bindings than [`ACLS_MAX`] (INVALID_REQUEST).
    #[error("{0}")]
    TooManyAcls(String),
    /// More client quota values than [`CLIENT_QUOTAS_MAX`] (INVALID_REQUEST).
    #[error("{0}")]
    TooManyClientQuotas(String),
    /// The store could not persist the change (KAFKA_STORAGE_ERROR).
    #[error("metadata store: {0}")]
    Storage(String),
    /// A new group's configs past [`GROUP_CONFIGS_MAX`] (INVALID_REQUEST).
    #[error("{0}")]
    TooManyGroupConfigs(String),
    /// BROKER_ID_NOT_REGISTERED: no broker has this id.
    #[error("{0}")]
    BrokerNotRegistered(String),
    /// A broker cannot be unregistered yet: it is alive, or partitions
    /// still list it as a replica (INVALID_REQUEST, with why).
    #[error("{0}")]
    BrokerInUse(String),
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
    /// Add one partition per replica set in `replicas` (the preferred
    /// leader first) to a topic that has `from` partitions (CreatePartitions
    /// with manual assignments); durable on return. Only a store that
    /// places replicas across brokers takes this; a single node's has one
    /// place for every replica and grows with [`Self::set_partition_count`].
    fn add_assigned_partitions(
        &self,
        name: &str,
        from: i32,
        replicas: Vec<Vec<i32>>,
    ) -> Result<TopicMeta, MetadataError> {
        let _ = (from, replicas);
        Err(MetadataError::InvalidReplicationFactor(format!(
            "topic '{name}': this node places every replica itself"
        )))
    }
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
    /// Configs set on group `group` (the GROUP config resource: KIP-848's
    /// and KIP-932's group configs); empty when none is set. A group's
    /// configs do not depend on the group existing: they may be set before
    /// its first member joins.
    fn group_configs(&self, group: &str) -> BTreeMap<String, String>;
    /// Apply config changes to group `group`; durable on return. A group
    /// left with no config is forgotten. At most [`GROUP_CONFIGS_MAX`]
    /// groups have configs (TooManyGroupConfigs past it).
    fn alter_group_configs(
        &self,
        group: &str,
        changes: &[ConfigChange],
    ) -> Result<(), MetadataError>;
    /// Allocate `count` fresh producer ids, returning the first; durable on return
    /// so that ids are never reused after a restart.
    fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError>;

    /// Whether the metadata is a cluster's, kept by a quorum: topics are
    /// then created, grown and deleted by committing the change first and
    /// following it on every broker (each holds storage only for the
    /// partitions it is a replica of). A single node's store answers false:
    /// its broker makes storage first and commits after.
    fn replicated(&self) -> bool {
        false
    }
    /// The registered brokers, by id. Empty on a single node, which knows
    /// itself from its own settings.
    fn brokers(&self) -> Vec<BrokerInfo> {
        Vec::new()
    }
    /// The change feed: a counter bumped after every change is applied.
    /// A broker waits on it and then reads what it needs. A single node's
    /// store, where only this broker changes anything, never bumps it.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }
    /// Elect leaders (Kafka's ElectLeaders) for `partitions` (`None`: every
    /// partition that needs one); one result per partition. A single node's
    /// only replica always leads: nothing to elect.
    fn elect_leaders(
        &self,
        partitions: Option<Vec<(String, i32)>>,
        _kind: ElectionKind,
    ) -> Result<Vec<PartitionResult>, MetadataError> {
        Ok(partitions
            .unwrap_or_default()
            .into_iter()
            .map(|(topic, partition)| {
                let known = self
                    .topic(&topic)
                    .is_some_and(|t| (0..t.partitions).contains(&partition));
                PartitionResult {
                    topic,
                    partition,
                    error: Some(if known {
                        PartitionError::ElectionNotNeeded
                    } else {
                        PartitionError::UnknownTopicOrPartition
                    }),
                }
            })
            .collect())
    }
    /// Start, replace or cancel (`None`) partition reassignments (Kafka's
    /// AlterPartitionReassignments); one result per partition. A single
    /// node has nowhere to move a replica: a target other than itself is
    /// refused, and there is never one to cancel.
    fn alter_reassignments(
        &self,
        changes: Vec<(String, i32, Option<Vec<i32>>)>,
        local_node: i32,
    ) -> Result<Vec<PartitionResult>, MetadataError> {
        Ok(changes
            .into_iter()
            .map(|(topic, partition, target)| {
                let known = self
                    .topic(&topic)
                    .is_some_and(|t| (0..t.partitions).contains(&partition));
                let error = match target {
                    _ if !known => Some(PartitionError::UnknownTopicOrPartition),
                    None => Some(PartitionError::NoReassignmentInProgress),
                    Some(t) if t == [local_node] => None,
                    Some(t) => Some(PartitionError::InvalidReplicaAssignment(format!(
                        "replicas {t:?} name brokers that are not registered; \
                         this one-node cluster has only broker {local_node}"
                    ))),
                };
                PartitionResult {
                    topic,
                    partition,
                    error,
                }
            })
            .collect())
    }
    /// Remove a fenced broker that holds no replica from the cluster
    /// (Kafka's UnregisterBroker). A single node has no other broker, and
    /// its own cannot be removed.
    fn unregister_broker(&self, id: i32) -> Result<(), MetadataError> {
        Err(MetadataError::BrokerNotRegistered(format!(
            "broker {id} is not registered: a one-node cluster has no broker to unregister"
        )))
    }
    /// Make observer `id` a voter of the metadata quorum once it has caught
    /// up (KRaft's AddRaftVoter); with `directory`, only if that is its
    /// metadata directory. A single node has no quorum to change.
    fn add_voter(&self, id: i32, directory: Option<Uuid>) -> Result<(), MetadataError> {
        let _ = directory;
        Err(MetadataError::InvalidVoterChange(format!(
            "node {id}: a one-node cluster has no metadata quorum to change"
        )))
    }
    /// Make voter `id` an observer (KRaft's RemoveRaftVoter); with
    /// `directory`, only if that is its metadata directory.
    fn remove_voter(&self, id: i32, directory: Option<Uuid>) -> Result<(), MetadataError> {
        let _ = directory;
        Err(MetadataError::VoterNotFound(format!(
            "node {id}: a one-node cluster has no metadata quorum to change"
        )))
    }
    /// The reassignments in progress (Kafka's ListPartitionReassignments).
    fn reassignments(&self) -> Vec<Reassignment> {
        Vec::new()
    }
    /// The metadata quorum, for DescribeQuorum. `None` when there is none:
    /// a single node, whose metadata no other node votes on.
    fn quorum(&self) -> Option<QuorumInfo> {
        None
    }
    /// This node's own view of the quorum's log, for the metrics. `None`
    /// on a single node.
    fn raft_status(&self) -> Option<RaftStatus> {
        None
    }
    /// How many changes the store has committed since it was created, when
    /// it counts them: a single node's stand-in for the metadata log's end.
    fn change_count(&self) -> Option<u64> {
        None
    }
    /// Every SCRAM credential, ordered by user, then mechanism.
    fn scram_credentials(&self) -> Vec<ScramCredential> {
        Vec::new()
    }
    /// Apply AlterUserScramCredentials' changes at once; committed on return.
    fn alter_scram_credentials(&self, changes: &[ScramChange]) -> Result<(), MetadataError> {
        let _ = changes;
        Err(MetadataError::Storage(
            "this metadata store keeps no SCRAM credentials".into(),
        ))
    }
    /// Every ACL binding, ordered, and the version of this set: a number
    /// that changes whenever a change to the bindings is applied (the
    /// position of that change in the store's log), so a broker keeping
    /// an authorizer built from them knows when to build it again.
    fn acls(&self) -> (u64, Vec<AclEntry>) {
        (0, Vec::new())
    }
    /// The version [`MetadataStore::acls`] would answer now, without
    /// copying the bindings.
    fn acls_version(&self) -> u64 {
        0
    }
    /// Apply CreateAcls' or DeleteAcls' changes at once; committed on
    /// return.
    fn alter_acls(&self, changes: &[AclChange]) -> Result<(), MetadataError> {
        let _ = changes;
        Err(MetadataError::Storage(
            "this metadata store keeps no ACLs".into(),
        ))
    }
    /// Every client quota value, ordered by entity then key, and the
    /// version of this set: the position in the store's log of the last
    /// change to them, as [`MetadataStore::acls`] versions the ACLs.
    fn client_quotas(&self) -> (u64, Vec<ClientQuota>) {
        (0, Vec::new())
    }
    /// The version [`MetadataStore::client_quotas`] would answer now,
    /// without copying the values.
    fn client_quotas_version(&self) -> u64 {
        0
    }
    /// Apply AlterClientQuotas' changes at once; committed on return.
    fn alter_client_quotas(&self, changes: &[ClientQuotaChange]) -> Result<(), MetadataError> {
        let _ = changes;
        Err(MetadataError::Storage(
            "this metadata store keeps no client quotas".into(),
        ))
    }
    /// A leader's ISR change; committed on return, and the new assignment
    /// returned. A single node has no ISR to change.
    fn alter_partition(
        &self,
        change: AlterPartition,
    ) -> Result<PartitionAssignment, MetadataError> {
        Err(MetadataError::StalePartitionChange(format!(
            "partition {}-{} has no replicas to change on a single node",
            change.topic_id, change.partition
        )))
    }
}
