//! Topic configs: the names Kafka users know, their defaults, validation, and
//! the [`PartitionConfig`] the storage engine applies.
//!
//! A topic stores only the configs set on it. Its effective value for a key
//! is the topic's own, else the broker-level override of the synonym
//! (`log.retention.ms` for `retention.ms`), else the default listed here.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use weir_storage::{PartitionConfig, TimestampType};

use crate::error::ApiError;

/// How a config value is checked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConfigKind {
    /// A 64-bit integer no smaller than `min`.
    Long { min: i64 },
    /// A 32-bit integer no smaller than `min`.
    Int { min: i32 },
    /// A comma-separated list drawn from `allowed`.
    List { allowed: &'static [&'static str] },
    /// One of `allowed`.
    Choice { allowed: &'static [&'static str] },
    /// `true` or `false`.
    Bool,
}

/// One topic config.
#[derive(Debug)]
pub(crate) struct ConfigDef {
    /// Kafka's topic-level name.
    pub name: &'static str,
    /// The broker-level name whose value is the topic default.
    pub broker_synonym: &'static str,
    /// Weir's default when neither the topic nor the broker sets it.
    pub default: &'static str,
    /// Validation.
    pub kind: ConfigKind,
    /// What it does.
    pub doc: &'static str,
}

/// Every topic config Weir knows. Unknown names are refused with INVALID_CONFIG.
pub(crate) static TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
        default: "delete",
        kind: ConfigKind::List {
            allowed: &["delete", "compact"],
        },
        doc: "delete: drop data older than retention; compact: keep the newest value per key",
    },
    ConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: -1 },
        doc: "how long data is kept, in milliseconds; -1 keeps it forever",
    },
    ConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
        default: "-1",
        kind: ConfigKind::Long { min: -1 },
        doc: "largest size of one partition before old data is dropped; -1 means no limit",
    },
    ConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
        default: "1073741824",
        kind: ConfigKind::Int { min: 14 },
        doc: "accepted for compatibility; Weir's shared commit log rolls by the broker's log.segment.bytes",
    },
    ConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
        default: "604800000",
        kind: ConfigKind::Long { min: 1 },
        doc: "accepted for compatibility; Weir's shared commit log rolls by the broker's log.roll.ms",
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
        default: "1048588",
        kind: ConfigKind::Int { min: 0 },
        doc: "largest record batch accepted, in bytes",
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
        default: "CreateTime",
        kind: ConfigKind::Choice {
            allowed: &["CreateTime", "LogAppendTime"],
        },
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's time",
    },
    ConfigDef {
        name: "flush.messages",
        broker_synonym: "log.flush.interval.messages",
        default: "1",
        kind: ConfigKind::Long { min: 1 },
        doc: "1 makes every batch durable (fdatasync) before it is acknowledged or visible; larger values sync in the background",
    },
    ConfigDef {
        name: "flush.ms",
        broker_synonym: "log.flush.interval.ms",
        default: "9223372036854775807",
        kind: ConfigKind::Long { min: 0 },
        doc: "longest time a batch may stay unsynced when flush.messages is above 1",
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
        default: "1",
        kind: ConfigKind::Int { min: 1 },
        doc: "replicas that must hold a batch before acks=all is answered",
    },
    ConfigDef {
        name: "compression.type",
        broker_synonym: "compression.type",
        default: "producer",
        kind: ConfigKind::Choice {
            allowed: &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"],
        },
        doc: "Weir stores batches as produced; only 'producer' changes nothing",
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker_synonym: "log.cleaner.delete.retention.ms",
        default: "86400000",
        kind: ConfigKind::Long { min: 0 },
        doc: "how long tombstones stay in a compacted topic",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        kind: ConfigKind::Long { min: 0 },
        doc: "youngest a record may be and still be compacted",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        broker_synonym: "unclean.leader.election.enable",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "allow a replica outside the ISR to become leader",
    },
];

/// The definition of a topic config by name.
pub(crate) fn definition(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// The definition whose broker-level synonym is `name`.
pub(crate) fn definition_by_broker_name(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.broker_synonym == name)
}

/// Check one topic config; INVALID_CONFIG names what is wrong.
pub(crate) fn validate(name: &str, value: &str) -> Result<(), ApiError> {
    let def = definition(name).ok_or_else(|| {
        ApiError::new(
            ResponseError::InvalidConfig,
            format!("unknown topic config '{name}'"),
        )
    })?;
    validate_value(def, value)
}

/// Check a value against a definition.
pub(crate) fn validate_value(def: &ConfigDef, value: &str) -> Result<(), ApiError> {
    let bad = |why: String| {
        ApiError::new(
            ResponseError::InvalidConfig,
            format!("invalid value '{value}' for {}: {why}", def.name),
        )
    };
    match def.kind {
        ConfigKind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(bad(format!("must be at least {min}"))),
            Err(_) => Err(bad("not an integer".into())),
        },
        ConfigKind::Int { min } => match value.trim().parse::<i32>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(bad(format!("must be at least {min}"))),
            Err(_) => Err(bad("not a 32-bit integer".into())),
        },
        ConfigKind::List { allowed } => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.iter().all(|item| allowed.contains(item)) && !items.is_empty() {
                Ok(())
            } else {
                Err(bad(format!(
                    "each item must be one of {}",
                    allowed.join(", ")
                )))
            }
        }
        ConfigKind::Choice { allowed } => {
            if allowed.contains(&value.trim()) {
                Ok(())
            } else {
                Err(bad(format!("must be one of {}", allowed.join(", "))))
            }
        }
        ConfigKind::Bool => match value.trim() {
            "true" | "false" => Ok(()),
            _ => Err(bad("must be true or false".into())),
        },
    }
}

/// Where an effective value comes from (DescribeConfigs' config source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigSource {
    /// Set on the topic (TOPIC_CONFIG, 1).
    Topic,
    /// Set as a broker-wide default at runtime (DYNAMIC_DEFAULT_BROKER_CONFIG, 3).
    /// [`effective`] sees start-up and runtime broker values merged, and
    /// reports both as this.
    BrokerDefault,
    /// Set at start-up by a flag or the config file (STATIC_BROKER_CONFIG, 4).
    StaticBroker,
    /// Weir's default (DEFAULT_CONFIG, 5).
    Default,
}

impl ConfigSource {
    /// Kafka's number for the source in DescribeConfigs and CreateTopics responses.
    pub(crate) fn kafka_id(self) -> i8 {
        match self {
            Self::Topic => 1,
            Self::BrokerDefault => 3,
            Self::StaticBroker => 4,
            Self::Default => 5,
        }
    }
}

impl ConfigKind {
    /// Kafka's config type number (DescribeConfigs v3+): BOOLEAN 1, STRING 2,
    /// INT 3, LONG 5, LIST 7.
    pub(crate) fn kafka_type(self) -> i8 {
        match self {
            Self::Bool => 1,
            Self::Choice { .. } => 2,
            Self::Int { .. } => 3,
            Self::Long { .. } => 5,
            Self::List { .. } => 7,
        }
    }
}

/// One level that sets a config, under the name it has at that level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Synonym {
    /// The topic-level name for [`ConfigSource::Topic`], else the broker-level one.
    pub name: &'static str,
    /// The value set there.
    pub value: String,
    /// The level.
    pub source: ConfigSource,
}

/// Every level that sets `def`, most specific first and ending with Weir's
/// default, so the first entry is the effective value. `topic` is `None`
/// when describing the broker itself. `dynamic_broker` holds the runtime
/// overrides (metadata store), `static_broker` the start-up values.
pub(crate) fn synonyms(
    def: &'static ConfigDef,
    topic: Option<&BTreeMap<String, String>>,
    dynamic_broker: &BTreeMap<String, String>,
    static_broker: &BTreeMap<String, String>,
) -> Vec<Synonym> {
    let mut chain = Vec::with_capacity(4);
    if let Some(value) = topic.and_then(|t| t.get(def.name)) {
        chain.push(Synonym {
            name: def.name,
            value: value.clone(),
            source: ConfigSource::Topic,
        });
    }
    let broker_levels = [
        (dynamic_broker, ConfigSource::BrokerDefault),
        (static_broker, ConfigSource::StaticBroker),
    ];
    for (level, source) in broker_levels {
        if let Some(value) = level.get(def.broker_synonym) {
            chain.push(Synonym {
                name: def.broker_synonym,
                value: value.clone(),
                source,
            });
        }
    }
    chain.push(Synonym {
        name: def.broker_synonym,
        value: def.default.to_string(),
        source: ConfigSource::Default,
    });
    chain
}

/// The effective value of one topic config.
pub(crate) fn effective<'a>(
    def: &'a ConfigDef,
    topic: &'a BTreeMap<String, String>,
    broker: &'a BTreeMap<String, String>,
) -> (&'a str, ConfigSource) {
    if let Some(v) = topic.get(def.name) {
        (v, ConfigSource::Topic)
    } else if let Some(v) = broker.get(def.broker_synonym) {
        (v, ConfigSource::BrokerDefault)
    } else {
        (def.default, ConfigSource::Default)
    }
}

/// The storage settings for a topic's partitions.
pub(crate) fn partition_config(
    topic: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> PartitionConfig {
    let value = |name: &str| {
        definition(name)
            .map(|def| effective(def, topic, broker).0)
            .unwrap_or("")
    };
    let long = |name: &str, fallback: i64| value(name).trim().parse::<i64>().unwrap_or(fallback);
    let positive = |v: i64| (v >= 0).then_some(v);
    let deletes = value("cleanup.policy")
        .split(',')
        .any(|p| p.trim() == "delete");
    PartitionConfig {
        // A compact-only topic keeps every key's newest value forever: retention
        // applies only when the policy includes `delete`.
        retention_ms: deletes
            .then(|| positive(long("retention.ms", -1)))
            .flatten(),
        retention_bytes: deletes
            .then(|| positive(long("retention.bytes", -1)))
            .flatten(),
        flush_messages: long("flush.messages", 1).max(1) as u64,
        flush_ms: long("flush.ms", i64::MAX).max(0) as u64,
        max_message_bytes: long("max.message.bytes", 1_048_588).clamp(0, i64::from(i32::MAX))
            as u32,
        timestamp_type: if value("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        compact: value("cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "compact"),
    }
}

/// The effective `delete.retention.ms`: how long compaction keeps a tombstone.
pub(crate) fn delete_retention_ms(
    topic: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> Option<i64> {
    definition("delete.retention.ms")
        .and_then(|def| effective(def, topic, broker).0.trim().parse::<i64>().ok())
        .filter(|ms| *ms >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_config_is_invalid_config() {
        let err = validate("retention.mss", "1").unwrap_err();
        assert_eq!(err.code, ResponseError::InvalidConfig);
    }

    #[test]
    fn values_are_checked_against_their_kind() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "forever").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("max.message.bytes", "99999999999").is_err());
    }

    #[test]
    fn synonyms_run_from_topic_to_runtime_to_startup_to_default() {
        let def = definition("retention.ms").unwrap();
        let topic = BTreeMap::from([("retention.ms".to_string(), "1".to_string())]);
        let dynamic = BTreeMap::from([("log.retention.ms".to_string(), "2".to_string())]);
        let fixed = BTreeMap::from([("log.retention.ms".to_string(), "3".to_string())]);
        let chain = synonyms(def, Some(&topic), &dynamic, &fixed);
        let seen: Vec<(&str, &str, i8)> = chain
            .iter()
            .map(|s| (s.name, s.value.as_str(), s.source.kafka_id()))
            .collect();
        assert_eq!(
            seen,
            [
                ("retention.ms", "1", 1),
                ("log.retention.ms", "2", 3),
                ("log.retention.ms", "3", 4),
                ("log.retention.ms", "604800000", 5),
            ]
        );
        let chain = synonyms(def, None, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].source, ConfigSource::Default);
    }

    #[test]
    fn compact_only_topics_keep_data_past_retention() {
        let broker = BTreeMap::new();
        let mut topic = BTreeMap::new();
        topic.insert("cleanup.policy".to_string(), "compact".to_string());
        topic.insert("retention.ms".to_string(), "1000".to_string());
        let config = partition_config(&topic, &broker);
        assert!(config.compact);
        assert_eq!(config.retention_ms, None);
        topic.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        assert_eq!(partition_config(&topic, &broker).retention_ms, Some(1000));
        assert_eq!(delete_retention_ms(&topic, &broker), Some(86_400_000));
    }

    #[test]
    fn topic_value_beats_broker_default_beats_builtin() {
        let mut topic = BTreeMap::new();
        let mut broker = BTreeMap::new();
        assert_eq!(
            partition_config(&topic, &broker).retention_ms,
            Some(604_800_000)
        );
        broker.insert("log.retention.ms".to_string(), "1000".to_string());
        assert_eq!(partition_config(&topic, &broker).retention_ms, Some(1000));
        topic.insert("retention.ms".to_string(), "-1".to_string());
        assert_eq!(partition_config(&topic, &broker).retention_ms, None);
    }
}
