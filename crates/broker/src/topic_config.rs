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

/// How a config value is checked, with Kafka's validators.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConfigKind {
    /// A 64-bit integer in `min..=i64::MAX`.
    Long { min: i64 },
    /// A 32-bit integer in `min..=max`, or exactly `or` when given (gzip's -1).
    Int { min: i32, max: i32, or: Option<i32> },
    /// A floating-point number in `min..=max`.
    Double { min: f64, max: f64 },
    /// A comma-separated list drawn from `allowed`; the empty list is allowed.
    List { allowed: &'static [&'static str] },
    /// Kafka's throttled-replicas list: empty, `*`, or `partition:broker` pairs.
    ThrottledReplicas,
    /// One of `allowed`.
    Choice { allowed: &'static [&'static str] },
    /// `true` or `false`.
    Bool,
}

/// Whether Weir does what a config says, or only keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The storage engine or the broker applies it.
    Applied,
    /// Accepted, stored and described, so admin tools and client test suites
    /// that set it work, but it changes nothing in Weir.
    StoredOnly,
}

/// One topic config.
#[derive(Debug)]
pub(crate) struct ConfigDef {
    /// Kafka's topic-level name.
    pub name: &'static str,
    /// The broker-level name whose value is the topic default, when Kafka has one.
    pub broker_synonym: Option<&'static str>,
    /// Kafka 4.x's default (Weir's own where it differs, as for `flush.messages`).
    pub default: &'static str,
    /// Validation.
    pub kind: ConfigKind,
    /// Whether Weir acts on it.
    pub effect: Effect,
    /// What it does.
    pub doc: &'static str,
}

/// Every topic config Kafka 4.x defines (its `LogConfig`), then Weir's own
/// (`weir.*`), in one table. Unknown names are refused with INVALID_CONFIG,
/// as Kafka does.
pub(crate) static TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_synonym: Some("log.cleanup.policy"),
        default: "delete",
        kind: ConfigKind::List {
            allowed: &["delete", "compact"],
        },
        effect: Effect::Applied,
        doc: "delete: drop data older than retention; compact: keep the newest value per key; \
              both: compact, then drop by retention; empty: neither, data is kept until DeleteRecords",
    },
    ConfigDef {
        name: "compression.gzip.level",
        broker_synonym: Some("compression.gzip.level"),
        default: "-1",
        kind: ConfigKind::Int {
            min: 1,
            max: 9,
            or: Some(-1),
        },
        effect: Effect::StoredOnly,
        doc: "gzip level when compression.type is gzip",
    },
    ConfigDef {
        name: "compression.lz4.level",
        broker_synonym: Some("compression.lz4.level"),
        default: "9",
        kind: ConfigKind::Int {
            min: 1,
            max: 17,
            or: None,
        },
        effect: Effect::StoredOnly,
        doc: "lz4 level when compression.type is lz4",
    },
    ConfigDef {
        name: "compression.type",
        broker_synonym: Some("compression.type"),
        default: "producer",
        kind: ConfigKind::Choice {
            allowed: &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        },
        effect: Effect::StoredOnly,
        doc: "the codec the broker recompresses batches with; Weir stores batches as produced",
    },
    ConfigDef {
        name: "compression.zstd.level",
        broker_synonym: Some("compression.zstd.level"),
        default: "3",
        kind: ConfigKind::Int {
            min: -131_072,
            max: 22,
            or: None,
        },
        effect: Effect::StoredOnly,
        doc: "zstd level when compression.type is zstd",
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker_synonym: Some("log.cleaner.delete.retention.ms"),
        default: "86400000",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::Applied,
        doc: "how long tombstones stay in a compacted topic",
    },
    ConfigDef {
        name: DLQ_GROUP_ENABLE,
        broker_synonym: None,
        default: "false",
        kind: ConfigKind::Bool,
        effect: Effect::Applied,
        doc: "KIP-1191: share groups may write their dead letters to this topic; a dead-letter \
              topic Weir creates (errors.deadletterqueue.auto.create.topics.enable) has it set",
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        broker_synonym: Some("log.segment.delete.delay.ms"),
        default: "60000",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::StoredOnly,
        doc: "how long a deleted segment file is kept; Weir deletes shared commit-log segments itself",
    },
    ConfigDef {
        name: "flush.messages",
        broker_synonym: Some("log.flush.interval.messages"),
        default: "1",
        kind: ConfigKind::Long { min: 1 },
        effect: Effect::Applied,
        doc: "1 makes every batch durable (fdatasync) before it is acknowledged or visible; \
              larger values sync in the background",
    },
    ConfigDef {
        name: "flush.ms",
        broker_synonym: Some("log.flush.interval.ms"),
        default: "9223372036854775807",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::Applied,
        doc: "longest time a batch may stay unsynced when flush.messages is above 1",
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        broker_synonym: None,
        default: "",
        kind: ConfigKind::ThrottledReplicas,
        effect: Effect::StoredOnly,
        doc: "replicas whose follower traffic is throttled: '*' or partition:broker pairs",
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_synonym: Some("log.index.interval.bytes"),
        default: "4096",
        kind: ConfigKind::Int {
            min: 0,
            max: i32::MAX,
            or: None,
        },
        effect: Effect::StoredOnly,
        doc: "bytes between offset index entries; Weir indexes every batch",
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        broker_synonym: None,
        default: "",
        kind: ConfigKind::ThrottledReplicas,
        effect: Effect::StoredOnly,
        doc: "replicas whose leader traffic is throttled: '*' or partition:broker pairs",
    },
    ConfigDef {
        name: "local.retention.bytes",
        broker_synonym: Some("log.local.retention.bytes"),
        default: "-2",
        kind: ConfigKind::Long { min: -2 },
        effect: Effect::StoredOnly,
        doc: "local size limit with tiered storage (-2: retention.bytes); Weir has no tiered storage",
    },
    ConfigDef {
        name: "local.retention.ms",
        broker_synonym: Some("log.local.retention.ms"),
        default: "-2",
        kind: ConfigKind::Long { min: -2 },
        effect: Effect::StoredOnly,
        doc: "local time limit with tiered storage (-2: retention.ms); Weir has no tiered storage",
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        broker_synonym: Some("log.cleaner.max.compaction.lag.ms"),
        default: "9223372036854775807",
        kind: ConfigKind::Long { min: 1 },
        effect: Effect::StoredOnly,
        doc: "longest a record may stay uncompacted; Weir compacts at every maintenance run",
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_synonym: Some("message.max.bytes"),
        default: "1048588",
        kind: ConfigKind::Int {
            min: 0,
            max: i32::MAX,
            or: None,
        },
        effect: Effect::Applied,
        doc: "largest record batch accepted, in bytes",
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_synonym: Some("log.message.timestamp.after.max.ms"),
        default: "3600000",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::StoredOnly,
        doc: "how far in the future a CreateTime timestamp may be",
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_synonym: Some("log.message.timestamp.before.max.ms"),
        default: "9223372036854775807",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::StoredOnly,
        doc: "how far in the past a CreateTime timestamp may be",
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_synonym: Some("log.message.timestamp.type"),
        default: "CreateTime",
        kind: ConfigKind::Choice {
            allowed: &["CreateTime", "LogAppendTime"],
        },
        effect: Effect::Applied,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's time",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: Some("log.cleaner.min.cleanable.ratio"),
        default: "0.5",
        kind: ConfigKind::Double { min: 0.0, max: 1.0 },
        effect: Effect::StoredOnly,
        doc: "share of a compacted log that must be dirty before it is cleaned",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: Some("log.cleaner.min.compaction.lag.ms"),
        default: "0",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::StoredOnly,
        doc: "youngest a record may be and still be compacted",
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_synonym: Some("min.insync.replicas"),
        default: "1",
        kind: ConfigKind::Int {
            min: 1,
            max: i32::MAX,
            or: None,
        },
        effect: Effect::Applied,
        doc: "in-sync replicas an acks=all produce needs: fewer gets NOT_ENOUGH_REPLICAS",
    },
    ConfigDef {
        name: "preallocate",
        broker_synonym: Some("log.preallocate"),
        default: "false",
        kind: ConfigKind::Bool,
        effect: Effect::StoredOnly,
        doc: "preallocate segment files",
    },
    ConfigDef {
        name: "remote.log.copy.disable",
        broker_synonym: None,
        default: "false",
        kind: ConfigKind::Bool,
        effect: Effect::StoredOnly,
        doc: "stop copying segments to tiered storage; Weir has no tiered storage",
    },
    ConfigDef {
        name: "remote.log.delete.on.disable",
        broker_synonym: None,
        default: "false",
        kind: ConfigKind::Bool,
        effect: Effect::StoredOnly,
        doc: "delete tiered data when tiered storage is turned off; Weir has no tiered storage",
    },
    ConfigDef {
        name: "remote.storage.enable",
        broker_synonym: None,
        default: "false",
        kind: ConfigKind::Bool,
        effect: Effect::StoredOnly,
        doc: "tiered storage for the topic; Weir has no tiered storage",
    },
    ConfigDef {
        name: "retention.bytes",
        broker_synonym: Some("log.retention.bytes"),
        default: "-1",
        kind: ConfigKind::Long { min: i64::MIN },
        effect: Effect::Applied,
        doc: "largest size of one partition before old data is dropped; a negative value means no limit",
    },
    ConfigDef {
        name: "retention.ms",
        broker_synonym: Some("log.retention.ms"),
        default: "604800000",
        kind: ConfigKind::Long { min: -1 },
        effect: Effect::Applied,
        doc: "how long data is kept, in milliseconds; -1 keeps it forever",
    },
    ConfigDef {
        name: "segment.bytes",
        broker_synonym: Some("log.segment.bytes"),
        default: "1073741824",
        kind: ConfigKind::Int {
            min: 1_048_576,
            max: i32::MAX,
            or: None,
        },
        effect: Effect::StoredOnly,
        doc: "segment size; Weir's shared commit log rolls by the broker's log.segment.bytes",
    },
    ConfigDef {
        name: "segment.index.bytes",
        broker_synonym: Some("log.index.size.max.bytes"),
        default: "10485760",
        kind: ConfigKind::Int {
            min: 4,
            max: i32::MAX,
            or: None,
        },
        effect: Effect::StoredOnly,
        doc: "largest offset index of a segment; Weir keeps one queue index per partition",
    },
    ConfigDef {
        name: "segment.jitter.ms",
        broker_synonym: Some("log.roll.jitter.ms"),
        default: "0",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::StoredOnly,
        doc: "random jitter subtracted from segment.ms",
    },
    ConfigDef {
        name: "segment.ms",
        broker_synonym: Some("log.roll.ms"),
        default: "604800000",
        kind: ConfigKind::Long { min: 1 },
        effect: Effect::StoredOnly,
        doc: "segment age before a roll; Weir's shared commit log rolls by the broker's log.roll.ms",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        broker_synonym: Some("unclean.leader.election.enable"),
        default: "false",
        kind: ConfigKind::Bool,
        effect: Effect::StoredOnly,
        doc: "allow a replica outside the ISR to become leader; a single node has no other replica",
    },
    ConfigDef {
        name: DELAY_MAX_MS,
        broker_synonym: Some(DELAY_MAX_MS),
        default: "3456000000",
        kind: ConfigKind::Long { min: 0 },
        effect: Effect::Applied,
        doc: "Weir's own: the longest delay a record may ask for with the weir.delay-ms or \
              weir.deliver-at-ms header (default 40 days); a longer one is refused (INVALID_RECORD)",
    },
];

/// KIP-1191's topic config allowing share groups to dead-letter to a topic.
pub(crate) const DLQ_GROUP_ENABLE: &str = "errors.deadletterqueue.group.enable";

/// Whether a topic with `configs` (its own) takes dead letters.
pub(crate) fn dlq_group_enabled(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get(DLQ_GROUP_ENABLE)
        .is_some_and(|v| v.trim() == "true")
}

/// Weir's topic config bounding delayed delivery (`crate::delay`).
pub(crate) const DELAY_MAX_MS: &str = "weir.delay.max.ms";

/// The effective `weir.delay.max.ms` of a topic.
pub(crate) fn delay_max_ms(
    topic: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> i64 {
    definition(DELAY_MAX_MS)
        .and_then(|def| effective(def, topic, broker).0.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

/// The documentation DescribeConfigs gives for `def`: what it means, and
/// whether Weir acts on it.
pub(crate) fn documentation(def: &ConfigDef) -> String {
    match def.effect {
        Effect::Applied => def.doc.to_string(),
        Effect::StoredOnly => format!(
            "{}. Weir accepts and stores this config but does not act on it.",
            def.doc
        ),
    }
}

/// The definition of a topic config by name.
pub(crate) fn definition(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// The definition whose broker-level synonym is `name`.
pub(crate) fn definition_by_broker_name(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|def| def.broker_synonym == Some(name))
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

/// The items of a list value; blanks around commas do not count, so `""`
/// is the empty list.
pub(crate) fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Check a value against a definition.
pub(crate) fn validate_value(def: &ConfigDef, value: &str) -> Result<(), ApiError> {
    let bad = |why: String| {
        ApiError::new(
            ResponseError::InvalidConfig,
            format!("invalid value '{value}' for {}: {why}", def.name),
        )
    };
    let trimmed = value.trim();
    match def.kind {
        ConfigKind::Long { min } => match trimmed.parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(bad(format!("must be at least {min}"))),
            Err(_) => Err(bad("not an integer".into())),
        },
        ConfigKind::Int { min, max, or } => match trimmed.parse::<i32>() {
            Ok(v) if (min..=max).contains(&v) || Some(v) == or => Ok(()),
            Ok(_) => Err(bad(match or {
                Some(or) => format!("must be in {min}..={max} or {or}"),
                None if max == i32::MAX => format!("must be at least {min}"),
                None => format!("must be in {min}..={max}"),
            })),
            Err(_) => Err(bad("not a 32-bit integer".into())),
        },
        ConfigKind::Double { min, max } => match trimmed.parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(_) => Err(bad(format!("must be between {min} and {max}"))),
            Err(_) => Err(bad("not a number".into())),
        },
        // Kafka 4.x accepts the empty list: cleanup.policy="" means
        // neither deletion nor compaction.
        ConfigKind::List { allowed } => match list_items(value).find(|i| !allowed.contains(i)) {
            None => Ok(()),
            Some(item) => Err(bad(format!(
                "'{item}' is not one of {}",
                allowed.join(", ")
            ))),
        },
        ConfigKind::ThrottledReplicas => {
            let pair = |item: &str| {
                item.split_once(':').is_some_and(|(p, b)| {
                    p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                })
            };
            if trimmed == "*" || list_items(value).all(pair) {
                Ok(())
            } else {
                Err(bad("must be '*' or a list of partition:broker pairs".into()))
            }
        }
        ConfigKind::Choice { allowed } => {
            if allowed.contains(&trimmed) {
                Ok(())
            } else {
                Err(bad(format!("must be one of {}", allowed.join(", "))))
            }
        }
        ConfigKind::Bool => match trimmed {
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
    /// Set on a group (GROUP_CONFIG, 8).
    Group,
}

impl ConfigSource {
    /// Kafka's number for the source in DescribeConfigs and CreateTopics responses.
    pub(crate) fn kafka_id(self) -> i8 {
        match self {
            Self::Topic => 1,
            Self::BrokerDefault => 3,
            Self::StaticBroker => 4,
            Self::Default => 5,
            Self::Group => 8,
        }
    }
}

impl ConfigKind {
    /// Kafka's config type number (DescribeConfigs v3+): BOOLEAN 1, STRING 2,
    /// INT 3, LONG 5, DOUBLE 6, LIST 7.
    pub(crate) fn kafka_type(self) -> i8 {
        match self {
            Self::Bool => 1,
            Self::Choice { .. } => 2,
            Self::Int { .. } => 3,
            Self::Long { .. } => 5,
            Self::Double { .. } => 6,
            Self::List { .. } | Self::ThrottledReplicas => 7,
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
    if let Some(broker_name) = def.broker_synonym {
        for (level, source) in broker_levels {
            if let Some(value) = level.get(broker_name) {
                chain.push(Synonym {
                    name: broker_name,
                    value: value.clone(),
                    source,
                });
            }
        }
    }
    chain.push(Synonym {
        name: def.broker_synonym.unwrap_or(def.name),
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
    } else if let Some(v) = def.broker_synonym.and_then(|name| broker.get(name)) {
        (v, ConfigSource::BrokerDefault)
    } else {
        (def.default, ConfigSource::Default)
    }
}

/// The effective `min.insync.replicas` of a topic.
pub(crate) fn min_insync_replicas(
    topic: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> usize {
    definition("min.insync.replicas")
        .and_then(|def| effective(def, topic, broker).0.trim().parse::<usize>().ok())
        .unwrap_or(1)
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
    let deletes = list_items(value("cleanup.policy")).any(|p| p == "delete");
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
        compact: list_items(value("cleanup.policy")).any(|p| p == "compact"),
        // The topic registry turns it on while views read the topic.
        tag_summaries: false,
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

    /// Kafka 4.x's topic configs (LogConfig, without internal ones), with a
    /// valid and an invalid value of each.
    const KAFKA_4_TOPIC_CONFIGS: &[(&str, &str, &str)] = &[
        ("cleanup.policy", "compact,delete", "forever"),
        ("compression.gzip.level", "-1", "0"),
        ("compression.lz4.level", "17", "18"),
        ("compression.type", "zstd", "brotli"),
        ("compression.zstd.level", "-131072", "23"),
        ("delete.retention.ms", "0", "-1"),
        // KIP-1191 (Kafka 4.4).
        ("errors.deadletterqueue.group.enable", "true", "maybe"),
        ("file.delete.delay.ms", "60000", "-1"),
        ("flush.messages", "1", "0"),
        ("flush.ms", "0", "-1"),
        ("follower.replication.throttled.replicas", "0:1,1:1", "0-1"),
        ("index.interval.bytes", "4096", "-1"),
        ("leader.replication.throttled.replicas", "*", "x"),
        ("local.retention.bytes", "-2", "-3"),
        ("local.retention.ms", "-2", "-3"),
        ("max.compaction.lag.ms", "1", "0"),
        ("max.message.bytes", "0", "2147483648"),
        ("message.timestamp.after.max.ms", "0", "-1"),
        ("message.timestamp.before.max.ms", "0", "soon"),
        ("message.timestamp.type", "LogAppendTime", "Now"),
        ("min.cleanable.dirty.ratio", "0.75", "1.5"),
        ("min.compaction.lag.ms", "0", "-1"),
        ("min.insync.replicas", "1", "0"),
        ("preallocate", "true", "yes"),
        ("remote.log.copy.disable", "false", "1"),
        ("remote.log.delete.on.disable", "true", "0"),
        ("remote.storage.enable", "false", "no"),
        ("retention.bytes", "-5", "lots"),
        ("retention.ms", "-1", "-2"),
        ("segment.bytes", "1048576", "1048575"),
        ("segment.index.bytes", "4", "3"),
        ("segment.jitter.ms", "0", "-1"),
        ("segment.ms", "1", "0"),
        ("unclean.leader.election.enable", "false", "maybe"),
    ];

    #[test]
    fn every_kafka_4_topic_config_is_accepted_and_checked() {
        for (name, good, bad) in KAFKA_4_TOPIC_CONFIGS {
            assert!(validate(name, good).is_ok(), "{name}={good}");
            let err = validate(name, bad).unwrap_err();
            assert_eq!(err.code, ResponseError::InvalidConfig, "{name}={bad}");
            assert!(err.message.contains(name), "{}", err.message);
            let def = definition(name).unwrap();
            assert!(validate(name, def.default).is_ok(), "{name} default");
        }
        let ours: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut kafka: Vec<&str> = KAFKA_4_TOPIC_CONFIGS.iter().map(|c| c.0).collect();
        kafka.push(DELAY_MAX_MS);
        assert_eq!(ours, kafka, "one table, sorted by name, then Weir's own");
        // Removed in Kafka 4.0 with message down-conversion (KIP-724).
        assert!(validate("message.downconversion.enable", "true").is_err());
    }

    #[test]
    fn documentation_says_when_weir_does_not_act_on_a_config() {
        for def in TOPIC_CONFIGS {
            let doc = documentation(def);
            let says_so = doc.contains("does not act on it");
            assert_eq!(says_so, def.effect == Effect::StoredOnly, "{}", def.name);
        }
        assert_eq!(
            definition("segment.index.bytes").map(|d| d.effect),
            Some(Effect::StoredOnly)
        );
        assert_eq!(
            definition("retention.ms").map(|d| d.effect),
            Some(Effect::Applied)
        );
    }

    #[test]
    fn empty_cleanup_policy_is_valid_and_neither_deletes_nor_compacts() {
        for empty in ["", " ", ","] {
            assert!(validate("cleanup.policy", empty).is_ok(), "{empty:?}");
            let topic = BTreeMap::from([("cleanup.policy".to_string(), empty.to_string())]);
            let config = partition_config(&topic, &BTreeMap::new());
            assert!(!config.compact);
            assert_eq!((config.retention_ms, config.retention_bytes), (None, None));
        }
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
