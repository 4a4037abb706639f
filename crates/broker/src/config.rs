//! Broker-wide settings, with Kafka's names where Kafka has one.

use std::collections::BTreeMap;

/// Settings the broker's handlers need. The `weir` binary builds this from
/// flags, environment variables and an optional TOML file.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// Host advertised to clients in Metadata.
    pub advertised_host: String,
    /// Port advertised to clients in Metadata.
    pub advertised_port: i32,
    /// `num.partitions`: partitions of an auto-created topic or one created with -1.
    pub default_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`.
    pub max_request_bytes: usize,
    /// `fetch.max.bytes`: upper bound of one fetch response.
    pub fetch_max_bytes: usize,
    /// Static broker-level topic defaults by Kafka's broker config name
    /// (`log.retention.ms`, `log.flush.interval.messages`, ...), from flags or
    /// the config file. Runtime overrides in the metadata store win over these.
    pub log_defaults: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            default_partitions: 4,
            auto_create_topics: true,
            max_request_bytes: 100 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            log_defaults: BTreeMap::new(),
        }
    }
}
