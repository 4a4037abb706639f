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

mod admin;
mod api;
mod config;
mod error;
mod producer_ids;
mod topic_config;
mod topics;

pub use config::BrokerConfig;
pub use error::ApiError;

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
}

/// What a handler knows about the request besides its body.
#[derive(Debug)]
pub struct RequestContext {
    /// The API.
    pub api_key: ApiKey,
    /// The API version of the request.
    pub version: i16,
    /// The request header (client id, correlation id).
    pub header: RequestHeader,
}

/// The broker. Shared by every connection.
pub struct Broker {
    config: BrokerConfig,
    log: CommitLog,
    metadata: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    topics: topics::Topics,
    producer_ids: producer_ids::ProducerIds,
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
        let broker = Self {
            config,
            log,
            metadata,
            clock,
            topics: topics::Topics::default(),
            producer_ids: producer_ids::ProducerIds::default(),
        };
        broker.load_topics()?;
        Ok(broker)
    }

    /// The APIs and version ranges served, as advertised in ApiVersions.
    pub fn served_apis() -> &'static [(ApiKey, VersionRange)] {
        &api::SERVED
    }

    /// The version range served for one API, if it is served.
    pub fn served_versions(api: ApiKey) -> Option<VersionRange> {
        api::SERVED
            .iter()
            .find(|(key, _)| *key == api)
            .map(|(_, range)| *range)
    }

    /// Handle one request. `Ok(None)` means no response is sent.
    pub async fn handle(&self, request: Request) -> Result<Option<ResponseKind>, HandlerError> {
        let ctx = RequestContext {
            api_key: request.api_key,
            version: request.version,
            header: request.header,
        };
        api::dispatch(self, &ctx, request.body).await
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
