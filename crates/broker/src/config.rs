//! Broker-wide settings, with Kafka's names where Kafka has one.

use std::collections::BTreeMap;

/// Default of `max.partitions`: twice the 100,000 partitions the storage
/// engine is tested with, so it stops a runaway client long before the
/// machine's descriptors or memory run out.
pub const DEFAULT_MAX_PARTITIONS: i64 = 200_000;

/// The name of the listener `--listen` binds, and Kafka's default
/// `inter.broker.listener.name`.
pub const DEFAULT_LISTENER: &str = "PLAINTEXT";

/// Settings the broker's handlers need. The `weir` binary builds this from
/// flags, environment variables and an optional TOML file.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// Host other brokers reach this one at: the advertised endpoint of
    /// its inter-broker listener.
    pub advertised_host: String,
    /// Port other brokers reach this one at.
    pub advertised_port: i32,
    /// `advertised.listeners`: where the clients of each listener are told
    /// to connect. Empty means one listener, at `advertised_host:advertised_port`.
    pub listeners: Vec<weir_metadata::Endpoint>,
    /// `inter.broker.listener.name`: the listener other brokers use, and
    /// the one a request that came over no connection is taken to come in on.
    pub inter_broker_listener: String,
    /// `num.partitions`: partitions of an auto-created topic or one created with -1.
    pub default_partitions: i32,
    /// `default.replication.factor`: replicas of an auto-created topic or one
    /// created with -1 (a single node holds one whatever it says).
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `max.partitions` (the name KIP-578 proposed): the most partitions the
    /// broker holds, all topics together, internal ones included. A
    /// CreateTopics, CreatePartitions or auto-create past it is refused
    /// with POLICY_VIOLATION.
    pub max_partitions: i64,
    /// `socket.request.max.bytes`.
    pub max_request_bytes: usize,
    /// `fetch.max.bytes`: upper bound of one fetch response.
    pub fetch_max_bytes: usize,
    /// Static broker-level topic defaults by Kafka's broker config name
    /// (`log.retention.ms`, `log.flush.interval.messages`, ...), from flags or
    /// the config file. Runtime overrides in the metadata store win over these.
    pub log_defaults: BTreeMap<String, String>,
    /// Consumer group coordinator settings (`group.*`, `offsets.*`).
    pub group: GroupConfig,
    /// Transaction coordinator settings (`transaction.*`, `transactional.*`).
    pub txn: TxnConfig,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `replica.selector.class` names Kafka's RackAwareReplicaSelector:
    /// consumers that give their rack are sent to an in-sync replica there
    /// (KIP-392). Off by default, as in Kafka.
    pub rack_aware_replica_selector: bool,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: what a follower asks for per partition.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: what a follower asks for in all.
    pub replica_fetch_response_max_bytes: i32,
    /// ACL enforcement: set when `authorizer.class.name` names Kafka's
    /// StandardAuthorizer, with `super.users` and
    /// `allow.everyone.if.no.acl.found`. `None`: every client may do
    /// everything, as on a Kafka broker without an authorizer.
    pub authorizer: Option<weir_auth::AuthorizerConfig>,
    /// `quota.window.num` and `quota.window.size.seconds`: how client
    /// quotas measure rates.
    pub quota_windows: crate::QuotaWindows,
    /// `controller.quota.window.num` and `controller.quota.window.size.seconds`:
    /// the burst `controller_mutation_rate` allows.
    pub controller_quota_windows: crate::QuotaWindows,
}

impl BrokerConfig {
    /// Where a client that came in on `listener` reaches this broker, or
    /// `None` when it has no listener of that name.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        weir_metadata::Endpoint::of_listener(
            &self.listeners,
            listener,
            (&self.advertised_host, self.advertised_port),
        )
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            listeners: Vec::new(),
            inter_broker_listener: DEFAULT_LISTENER.into(),
            default_partitions: 4,
            default_replication_factor: 1,
            rack: None,
            rack_aware_replica_selector: false,
            auto_create_topics: true,
            max_partitions: DEFAULT_MAX_PARTITIONS,
            max_request_bytes: 100 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            log_defaults: BTreeMap::new(),
            group: GroupConfig::default(),
            txn: TxnConfig::default(),
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            authorizer: None,
            quota_windows: crate::QuotaWindows::default(),
            controller_quota_windows: crate::QuotaWindows::default(),
        }
    }
}

/// The group coordinator's settings, with Kafka's broker config names and defaults.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members before completing.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`: the shortest session a member may ask for.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`: the longest session a member may ask for.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`: members one group may hold.
    pub max_size: usize,
    /// `group.consumer.heartbeat.interval.ms`: the heartbeat interval given to
    /// KIP-848 consumers.
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms`: the session of KIP-848 consumers.
    pub consumer_session_timeout_ms: i32,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when
    /// it is created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: replicas of each `__consumer_offsets`
    /// partition on a cluster (a single node keeps one).
    pub offsets_topic_replication_factor: i16,
    /// `offsets.retention.minutes`: how long the offsets of an empty group are
    /// kept after its last commit.
    pub offsets_retention_minutes: i64,
    /// `offset.metadata.max.bytes`: the largest metadata string of a commit.
    pub offset_metadata_max_bytes: usize,
    /// Largest protocol metadata one member may send in JoinGroup, and
    /// largest assignment the leader may give one member in SyncGroup. Kafka
    /// has no such bound; the coordinator keeps both in memory per member.
    pub protocol_metadata_bytes_max: usize,
    /// Most groups the coordinator keeps: group ids come from clients, so
    /// the map of groups is bounded. Past it, requests that would create a
    /// group are answered COORDINATOR_NOT_AVAILABLE (retriable). Each
    /// coordinator shard (one per `__consumer_offsets` partition) holds an
    /// even share, rounded up.
    pub groups_max: usize,
    /// `group.consumer.migration.policy`: which online migrations between
    /// the classic and the consumer (KIP-848) protocol a group may make.
    pub consumer_migration_policy: MigrationPolicy,
    /// `group.share.heartbeat.interval.ms`: the heartbeat interval given to
    /// share group members (KIP-932).
    pub share_heartbeat_interval_ms: i32,
    /// `group.share.session.timeout.ms`: the session of share group members.
    pub share_session_timeout_ms: i32,
    /// `group.share.max.size`: members one share group may hold.
    pub share_max_size: usize,
    /// `group.share.enable` (Kafka 4.0's switch for share groups): serve the
    /// share group APIs (KIP-932), keep share-partition state in
    /// `__share_group_state`, and finalize the `share.version` feature.
    /// Off by default while share groups are being built (a cluster keeps
    /// share-partition state in memory).
    pub share_enable: bool,
    /// `group.share.record.lock.duration.ms`: how long a fetched record
    /// stays acquired by its member.
    pub share_record_lock_duration_ms: i64,
    /// `group.share.delivery.count.limit`: deliveries of one record before
    /// it is archived.
    pub share_delivery_count_limit: u16,
    /// `group.share.partition.max.record.locks`: the most records in flight
    /// (from the share-partition start offset to its end offset) per
    /// share-partition.
    pub share_partition_max_record_locks: u32,
    /// `group.share.max.share.sessions`: share sessions one broker keeps.
    pub share_max_sessions: usize,
    /// `share.coordinator.state.topic.num.partitions`: partitions of
    /// `__share_group_state` when it is created.
    pub share_state_topic_num_partitions: i32,
    /// `share.coordinator.state.topic.replication.factor`: replicas of each
    /// `__share_group_state` partition on a cluster, made on first use.
    pub share_state_topic_replication_factor: i16,
    /// Most share-partitions (group and partition pairs) one broker keeps:
    /// group ids come from clients, so the map is bounded. Kafka has no
    /// such bound.
    pub share_partitions_max: usize,
    /// `errors.deadletterqueue.topic.name.prefix` (KIP-1191): every
    /// dead-letter topic's name starts with it, and a share group that
    /// names none dead-letters to `<prefix><group>` (Weir's default; Kafka
    /// has none).
    pub dlq_topic_prefix: String,
    /// `errors.deadletterqueue.auto.create.topics.enable` (KIP-1191): a
    /// missing dead-letter topic is created on its first dead letter, with
    /// `errors.deadletterqueue.group.enable=true`. On by default in Weir
    /// (off in Kafka), so the per-group default works with no setup.
    pub dlq_auto_create: bool,
}

/// The transaction coordinator's settings, with Kafka's broker config names
/// and defaults.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a
    /// producer may ask for (INVALID_TRANSACTION_TIMEOUT past it).
    pub transaction_max_timeout_ms: i64,
    /// `transactional.id.expiration.ms`: an id with no transaction open and
    /// no change for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how
    /// often the coordinator looks for transactions past their timeout (and
    /// for expired ids).
    pub abort_timed_out_interval_ms: i64,
    /// `transaction.state.log.num.partitions`: partitions of
    /// `__transaction_state` when it is created.
    pub state_log_num_partitions: i32,
    /// `transaction.state.log.replication.factor`: replicas of each
    /// `__transaction_state` partition on a cluster.
    pub state_log_replication_factor: i16,
    /// Most transactional ids the coordinator keeps (they come from
    /// clients); past it a new id is answered COORDINATOR_NOT_AVAILABLE.
    /// Kafka has no such bound. Each shard holds an even share, rounded up.
    pub transactional_ids_max: usize,
    /// Check-back: whom the coordinator asks about a transaction whose
    /// producer vanished (`weir.txn.checkback.*`).
    pub checkback: CheckbackConfig,
}

/// Check-back (RocketMQ's transaction check, over Kafka transactions): before
/// the coordinator aborts a transaction past its timeout, or when it finds
/// one open after a restart, it asks the application's service whether the
/// application's local work committed.
#[derive(Debug, Clone)]
pub struct CheckbackConfig {
    /// `weir.txn.checkback.url`: where transactions are POSTed; `None`: no
    /// check-back, a timed-out transaction is aborted as in Kafka.
    pub url: Option<String>,
    /// `weir.txn.checkback.prefixes`: `prefix=url` overrides for the
    /// transactional ids starting with `prefix`; the longest prefix wins,
    /// and an empty url turns check-back off for those ids.
    pub prefixes: Vec<(String, Option<String>)>,
    /// `weir.txn.checkback.max.checks`: how many checks a transaction gets
    /// (RocketMQ's `transactionCheckMax`) before the default action decides.
    pub max_checks: u32,
    /// `weir.txn.checkback.default.action`: what decides a transaction the
    /// service never answered for: commit (`true`) or abort (`false`).
    pub default_commit: bool,
    /// `weir.txn.checkback.backoff.ms`: the wait after the first check that
    /// decided nothing; it doubles after each one.
    pub backoff_ms: u64,
    /// `weir.txn.checkback.backoff.max.ms`: the longest wait between checks.
    pub backoff_max_ms: u64,
    /// `weir.txn.checkback.timeout.ms`: how long one check may take.
    pub timeout_ms: u64,
}

impl Default for CheckbackConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefixes: Vec::new(),
            max_checks: 15,
            default_commit: false,
            backoff_ms: 1_000,
            backoff_max_ms: 60_000,
            timeout_ms: 5_000,
        }
    }
}

impl CheckbackConfig {
    /// Check a check-back URL: an absolute `http://` URL (an empty value
    /// means none).
    pub fn parse_url(value: &str) -> Result<Option<String>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "the scheme is {:?}; check-back speaks http:// only (https comes with TLS support)",
                url.scheme()
            ));
        }
        Ok(Some(value.to_string()))
    }

    /// Parse `weir.txn.checkback.prefixes`: comma-separated `prefix=url`
    /// pairs, `prefix=` turning check-back off for that prefix.
    pub fn parse_prefixes(value: &str) -> Result<Vec<(String, Option<String>)>, String> {
        let mut out = Vec::new();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (prefix, url) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not prefix=url"))?;
            let prefix = prefix.trim();
            if prefix.is_empty() {
                return Err(format!("{pair:?} has an empty prefix"));
            }
            if out.iter().any(|(p, _)| p == prefix) {
                return Err(format!("the prefix {prefix:?} is given twice"));
            }
            out.push((prefix.to_string(), Self::parse_url(url)?));
        }
        Ok(out)
    }

    /// The URL to ask about `transactional_id`, if any.
    pub(crate) fn url_for(&self, transactional_id: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .filter(|(prefix, _)| transactional_id.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.url.as_deref(), |(_, url)| url.as_deref())
    }
}

impl TxnConfig {
    /// The share of [`Self::transactional_ids_max`] one shard may hold.
    pub(crate) fn transactional_ids_max_per_shard(&self) -> usize {
        let shards = usize::try_from(self.state_log_num_partitions.max(1)).unwrap_or(1);
        self.transactional_ids_max.div_ceil(shards)
    }
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            abort_timed_out_interval_ms: 10_000,
            state_log_num_partitions: 50,
            state_log_replication_factor: 3,
            transactional_ids_max: 100_000,
            checkback: CheckbackConfig::default(),
        }
    }
}

/// `group.consumer.migration.policy`, with Kafka's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    /// Both directions (Kafka's default).
    #[default]
    Bidirectional,
    /// Classic to consumer only.
    Upgrade,
    /// Consumer to classic only.
    Downgrade,
    /// Neither: a group keeps the protocol it has while it has members.
    Disabled,
}

impl MigrationPolicy {
    /// Parse Kafka's value, ignoring case.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "bidirectional" => Some(Self::Bidirectional),
            "upgrade" => Some(Self::Upgrade),
            "downgrade" => Some(Self::Downgrade),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }

    /// Whether a classic group may become a consumer group.
    pub fn upgrades(self) -> bool {
        matches!(self, Self::Bidirectional | Self::Upgrade)
    }

    /// Whether a consumer group may become a classic group.
    pub fn downgrades(self) -> bool {
        matches!(self, Self::Bidirectional | Self::Downgrade)
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_session_timeout_ms: 45_000,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_retention_minutes: 10_080,
            offset_metadata_max_bytes: 4_096,
            protocol_metadata_bytes_max: 1024 * 1024,
            groups_max: 100_000,
            consumer_migration_policy: MigrationPolicy::default(),
            share_heartbeat_interval_ms: 5_000,
            share_session_timeout_ms: 45_000,
            share_max_size: 200,
            share_enable: false,
            share_record_lock_duration_ms: 30_000,
            share_delivery_count_limit: 5,
            share_partition_max_record_locks: 2_000,
            share_max_sessions: 2_000,
            share_partitions_max: 100_000,
            dlq_topic_prefix: "dlq.".to_string(),
            dlq_auto_create: true,
            share_state_topic_num_partitions: 50,
            share_state_topic_replication_factor: 3,
        }
    }
}
