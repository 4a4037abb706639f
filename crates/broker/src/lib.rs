//! The broker: everything a Kafka request means.
//!
//! [`Broker::handle`] takes a decoded request (from `weir-protocol`) and
//! returns its response. Handlers live one per Kafka API in `api/`; they read
//! and change topics through the [`MetadataStore`](weir_metadata::MetadataStore)
//! and records through the [`CommitLog`](weir_storage::CommitLog). The broker
//! owns no sockets: `weir-server` does.

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseKind};
use kafka_protocol::protocol::VersionRange;
use weir_metadata::MetadataStore;
use weir_protocol::Request;
use weir_storage::{Clock, CommitLog};

mod acls;
mod admin;
mod api;
mod blocking;
mod config;
pub mod delay;
mod error;
mod group;
mod group_config;
mod peer;
mod producer_ids;
mod quotas;
mod record_keys;
mod replica;
pub mod share;
pub mod stats;
mod topic_config;
mod topics;
mod txn;
mod view;

pub use acls::{AclsUnusable, STANDARD_AUTHORIZER};
pub use config::{
    BrokerConfig, CheckbackConfig, DEFAULT_LISTENER, DEFAULT_MAX_PARTITIONS, GroupConfig,
    MigrationPolicy, TxnConfig,
};
pub use error::ApiError;
pub use group_config::validate_dlq_topic_prefix;
pub use quotas::{QuotaSession, QuotaWindows, Sensor, Usage, WorkClock};
pub use replica::ReplicaError;

/// Why a request got no response; the server closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The API is decoded but not served.
    #[error("{0:?} is not served")]
    Unsupported(ApiKey),
    /// The request is well-formed but violates the protocol in a way Kafka
    /// answers by closing the connection.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The runtime is shutting down and dropped the request's blocking work.
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// The rest of a request that may complete out of request order.
pub type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<ResponseKind>, HandlerError>> + Send>,
>;

/// What [`Broker::begin`] hands back.
pub enum Reply {
    /// The response, or `None` when none is sent (a produce with acks=0).
    Ready(Option<Box<ResponseKind>>),
    /// The ordered part is done; this completes the response.
    Later(Pending),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Ready(body) => f.debug_tuple("Ready").field(body).finish(),
            Reply::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// What a handler knows about the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The API.
    pub api_key: ApiKey,
    /// The API version of the request.
    pub version: i16,
    /// The request header (client id, correlation id).
    pub header: RequestHeader,
    /// The client's address, when the request came over a connection.
    pub peer: Option<std::net::SocketAddr>,
    /// The listener the request came in on (`inter.broker.listener.name`
    /// for one that came over no connection): clients are told the
    /// brokers' endpoints of that listener.
    pub listener: Arc<str>,
    /// Who sent it (`User:ANONYMOUS` for a request that came over no
    /// connection, or over one that did not authenticate).
    pub principal: weir_auth::KafkaPrincipal,
}

/// What the network edge knows of the connection a request came over.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The name of the listener it connected to.
    pub listener: Arc<str>,
    /// Who it is: the principal its client certificate or SASL exchange
    /// named, `User:ANONYMOUS` otherwise.
    pub principal: weir_auth::KafkaPrincipal,
}

impl RequestContext {
    /// The client's host as Kafka reports it in group descriptions
    /// (`/127.0.0.1`); empty when unknown.
    pub fn client_host(&self) -> String {
        self.peer
            .map(|peer| format!("/{}", peer.ip()))
            .unwrap_or_default()
    }
}

/// The broker. Shared by every connection.
pub struct Broker {
    config: BrokerConfig,
    log: CommitLog,
    metadata: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    topics: topics::Topics,
    producer_ids: producer_ids::ProducerIds,
    groups: Arc<group::GroupCoordinator>,
    txns: Arc<txn::TxnCoordinator>,
    replicas: Arc<replica::ReplicaManager>,
    /// Requests to other brokers: transaction markers and verifications.
    peers: peer::Peers,
    /// What the delayed-delivery mover reports (`delay.rs`).
    delays: Arc<delay::DelayState>,
    /// Share-partitions and share sessions (KIP-932).
    shares: Arc<share::ShareManager>,
    /// What each client may do (`acls.rs`).
    acls: acls::Acls,
    /// Client quotas and the rates measured against them (`quotas.rs`).
    quotas: quotas::Quotas,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Build a broker over an opened log and metadata store, opening the
    /// partitions of every known topic.
    pub fn new(
        config: BrokerConfig,
        log: CommitLog,
        metadata: Arc<dyn MetadataStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ApiError> {
        let config_groups = config.group.clone();
        let clock_groups = clock.clone();
        let (config_txn, clock_txn) = (config.txn.clone(), clock.clone());
        let metadata_peers = metadata.clone();
        let share_config = share::ShareConfig::from_group_config(&config.group);
        let clock_shares = clock.clone();
        let (share_metadata, share_groups) = (metadata.clone(), config.group.clone());
        let share_settings_of: share::manager::SettingsOf = Box::new(move |group| {
            group_config::ShareGroupSettings::resolve(
                &share_groups,
                group,
                &share_metadata.group_configs(group),
            )
        });
        let replicas = replica::ReplicaManager::new(
            replica::ReplicaSettings {
                node_id: config.node_id,
                lag_time_max_ms: config.replica_lag_time_max_ms,
                fetch_partition_bytes_max: config.replica_fetch_max_bytes,
                fetch_response_bytes_max: config.replica_fetch_response_max_bytes,
            },
            clock.clone(),
            metadata.clone(),
        );
        let acls = acls::Acls::new(config.authorizer.clone(), metadata.as_ref()).map_err(|e| {
            ApiError::new(
                kafka_protocol::ResponseError::UnknownServerError,
                format!("{e}"),
            )
        })?;
        let quotas = quotas::Quotas::new(
            (config.quota_windows, config.controller_quota_windows),
            metadata.as_ref(),
        );
        let broker = Self {
            acls,
            quotas,
            config,
            log,
            metadata,
            clock,
            topics: topics::Topics::default(),
            producer_ids: producer_ids::ProducerIds::default(),
            groups: Arc::new(group::GroupCoordinator::new(config_groups, clock_groups)),
            txns: Arc::new(txn::TxnCoordinator::new(config_txn, clock_txn)),
            replicas,
            peers: peer::Peers::new(metadata_peers),
            delays: Arc::default(),
            shares: Arc::new(share::ShareManager::new(
                share_config,
                clock_shares,
                share_settings_of,
            )),
        };
        broker.load_topics()?;
        broker.load_groups()?;
        broker.load_share_state()?;
        broker.load_transactions()?;
        Ok(broker)
    }

    /// Start the broker's own background work: the transaction
    /// coordinator's driver (transactions left in a Prepare state are
    /// finished, timed-out ones aborted), and with share groups on, the
    /// dead-letter writer and lock-expiry driver. Call once, on the runtime.
    pub fn start_background(self: &Arc<Self>) {
        self.txns.ensure_driver(self);
        if self.metadata.replicated() {
            self.follow_security_metadata();
        }
        if self.shares_enabled() {
            self.shares.start_background(self);
        }
    }

    /// Keeps the authorizer and the quota table current with the ACLs and
    /// quotas other brokers change: on each change the metadata applies,
    /// builds them again if they changed.
    fn follow_security_metadata(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        let mut changes = self.metadata.changes();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                let refreshed = tokio::task::spawn_blocking(move || {
                    if broker.acls.enabled() {
                        broker.acls.refresh(broker.metadata.as_ref());
                    }
                    broker.quotas.refresh(broker.metadata.as_ref());
                })
                .await;
                if refreshed.is_err() {
                    return;
                }
            }
        });
    }

    /// Record what a request cost against the client quotas that apply to
    /// `caller` and `client_id`, and answer how long the connection must
    /// now stay muted: the largest throttle time earned, by this usage or
    /// `earlier` (what the same request earned before), zero when none is.
    ///
    /// The time a CreateTopics, CreatePartitions or DeleteTopics response
    /// says its `controller_mutation_rate` debt takes to repay counts too.
    ///
    /// When one was earned, `response` carries it as `throttle_time_ms`,
    /// and a Fetch response over `consumer_byte_rate` (or the request
    /// quota) has its records taken out and not counted, as Kafka sends a
    /// throttled fetch back empty; the caller encodes it again.
    pub fn throttle(
        &self,
        session: &mut QuotaSession,
        (caller, client_id): (&Caller, &str),
        (usage, earlier): (Usage, std::time::Duration),
        response: Option<&mut kafka_protocol::messages::ResponseKind>,
    ) -> std::time::Duration {
        let now = std::time::Instant::now();
        let earned = session.record(
            &self.quotas,
            (&caller.principal.name, client_id),
            usage,
            now,
        );
        let wait = earned
            .into_iter()
            .chain(response.as_deref().map(quotas::mutation_throttle))
            .fold(earlier, std::cmp::max);
        if wait.is_zero() {
            return wait;
        }
        let Some(response) = response else {
            return wait;
        };
        if let kafka_protocol::messages::ResponseKind::Fetch(fetch) = response {
            session.unrecord_fetch(usage.fetch_bytes);
            for topic in &mut fetch.responses {
                for partition in &mut topic.partitions {
                    partition.records = None;
                }
            }
        }
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        quotas::set_throttle_time(response, ms);
        wait
    }

    /// The `controller_mutation_rate` quota of the request's principal and
    /// client id, if one is set. `strict_since`: the first version of the
    /// request's API that has THROTTLING_QUOTA_EXCEEDED (older ones are
    /// only throttled).
    pub(crate) fn mutation_quota(
        &self,
        ctx: &RequestContext,
        strict_since: i16,
    ) -> Option<quotas::MutationQuota> {
        let client_id = ctx.header.client_id.as_deref().unwrap_or_default();
        self.quotas.mutation_quota(
            (&ctx.principal.name, client_id),
            ctx.version >= strict_since,
        )
    }

    /// Whether any user or client-id quota is set: while none is, requests
    /// need not be measured at all.
    pub fn client_quotas_in_force(&self) -> bool {
        self.quotas.in_force()
    }

    /// Whether a request is measured against client quotas at all: not the
    /// connection's own set-up (ApiVersions, SASL) and not a follower
    /// broker's replica fetch, as Kafka exempts them.
    pub fn quota_exempt(request: &Request) -> bool {
        use kafka_protocol::messages::RequestKind;
        match &request.body {
            RequestKind::ApiVersions(_)
            | RequestKind::SaslHandshake(_)
            | RequestKind::SaslAuthenticate(_) => true,
            RequestKind::Fetch(fetch) => {
                fetch.replica_id.0 >= 0 || fetch.replica_state.replica_id.0 >= 0
            }
            _ => false,
        }
    }

    /// How connection creation rates are measured (the client quotas'
    /// windows).
    pub fn quota_windows(&self) -> QuotaWindows {
        self.config.quota_windows
    }

    /// `connection_creation_rate` for connections from `ip`, when an ip
    /// quota sets one.
    pub fn connection_creation_rate(&self, ip: std::net::IpAddr) -> Option<f64> {
        // Checked on every accept: skip building the address's text when
        // no ip quota is set.
        let table = self.quotas.table().1;
        if !table.has_ip_quotas() {
            return None;
        }
        table.connection_rate(&ip.to_string())
    }

    /// The APIs and version ranges served, as advertised in ApiVersions.
    pub fn served_apis() -> &'static [(ApiKey, VersionRange)] {
        &api::SERVED
    }

    /// The APIs and version ranges this broker advertises: those of
    /// [`Broker::served_apis`], on a cluster's broker the APIs only a
    /// cluster serves (UnregisterBroker), and the share group APIs when
    /// `group.share.enable` is set.
    pub fn advertised_apis(&self) -> Vec<(ApiKey, VersionRange)> {
        let mut apis = if self.metadata().replicated() {
            api::CLUSTER_SERVED.clone()
        } else {
            api::SERVED.clone()
        };
        if self.shares_enabled() {
            apis.extend(api::SHARE_SERVED.iter().copied());
            if self.metadata().replicated() {
                apis.extend(api::SHARE_CLUSTER_SERVED.iter().copied());
            }
        }
        apis
    }

    /// Whether the share group APIs are served (`group.share.enable`).
    pub(crate) fn shares_enabled(&self) -> bool {
        self.config.group.share_enable
    }

    /// The version range decoded for one API, if any broker serves it (a
    /// cluster-only API reaching a single node, or a share group API
    /// reaching a broker without `group.share.enable`, is refused by its
    /// handler).
    pub fn served_versions(api: ApiKey) -> Option<VersionRange> {
        api::CLUSTER_SERVED
            .iter()
            .chain(api::SHARE_SERVED.iter())
            .chain(api::SHARE_CLUSTER_SERVED.iter())
            .find(|(key, _)| *key == api)
            .map(|(_, range)| *range)
    }

    /// Handle one request to the end. `Ok(None)` means no response is sent.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request,
    ) -> Result<Option<ResponseKind>, HandlerError> {
        let ctx = RequestContext {
            api_key: request.api_key,
            version: request.version,
            header: request.header,
            peer: None,
            listener: Arc::from(self.config.inter_broker_listener.as_str()),
            principal: weir_auth::KafkaPrincipal::anonymous(),
        };
        api::dispatch(self, &ctx, request.body).await
    }

    /// Handle one request as far as request order matters, and hand back
    /// what may finish out of order.
    ///
    /// Kafka processes the requests of one connection in order: a client
    /// pipelining produce requests relies on their batches reaching the log
    /// in the order sent. The server awaits `begin` for each request in turn.
    /// A produce appends its batches here (the write itself on a blocking
    /// thread, awaited) and returns [`Reply::Later`] for the wait on its
    /// fsync, so the next request is read meanwhile; a fetch
    /// (which changes nothing) is deferred whole, so its long poll does not
    /// hold up the connection. Everything else completes here.
    /// `caller` says who sent it: its address (group members report it as
    /// their host) and the listener it came in on.
    pub async fn begin(
        self: &Arc<Self>,
        request: Request,
        caller: &Caller,
    ) -> Result<Reply, HandlerError> {
        let ctx = RequestContext {
            api_key: request.api_key,
            version: request.version,
            header: request.header,
            peer: Some(caller.peer),
            listener: caller.listener.clone(),
            principal: caller.principal.clone(),
        };
        match request.body {
            kafka_protocol::messages::RequestKind::Produce(req) => {
                api::produce::begin(self, &ctx, req).await
            }
            body @ kafka_protocol::messages::RequestKind::Fetch(_) => {
                let broker = self.clone();
                Ok(Reply::Later(Box::pin(async move {
                    api::dispatch(&broker, &ctx, body).await
                })))
            }
            body => api::dispatch(self, &ctx, body)
                .await
                .map(|response| Reply::Ready(response.map(Box::new))),
        }
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The commit log.
    pub fn log(&self) -> &CommitLog {
        &self.log
    }

    /// The metadata store.
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.metadata
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Check a broker-level topic default by its Kafka broker config name
/// (`log.retention.ms`, `log.flush.interval.messages`, ...), as set at start-up.
pub fn validate_log_default(key: &str, value: &str) -> Result<(), ApiError> {
    let def = topic_config::definition_by_broker_name(key).ok_or_else(|| {
        ApiError::new(
            kafka_protocol::ResponseError::InvalidConfig,
            format!("'{key}' is not a broker config Weir knows"),
        )
    })?;
    topic_config::validate_value(def, value)
}
