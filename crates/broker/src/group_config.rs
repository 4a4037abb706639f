//! Group configs: settings an operator gives one group id, with
//! IncrementalAlterConfigs and DescribeConfigs on the GROUP config resource
//! (what `kafka-configs.sh --entity-type groups` sends), under Kafka's
//! names (KIP-932's `share.*`, KIP-1191's `errors.deadletterqueue.*`) and
//! Weir's own `weir.share.redelivery.backoff.ms`.
//!
//! They live in the metadata store, so a cluster's quorum replicates them,
//! and a group's configs do not depend on the group existing: they may be
//! set before its first member joins. A config not set on the group takes
//! the broker's value (`group.share.delivery.count.limit` for
//! `share.delivery.count.limit`, ...), else Weir's default. Only the
//! configs Weir acts on are accepted; any other name is INVALID_CONFIG.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use crate::config::GroupConfig;
use crate::error::ApiError;
use crate::share::partition::ShareSettings;

/// Kafka's ConfigResource type number for a group.
pub(crate) const RESOURCE_GROUP: i8 = 32;

/// `share.auto.offset.reset`.
pub(crate) const AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
/// `share.record.lock.duration.ms`.
pub(crate) const RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
/// `share.delivery.count.limit`.
pub(crate) const DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
/// `weir.share.redelivery.backoff.ms`.
pub(crate) const REDELIVERY_BACKOFF_MS: &str = "weir.share.redelivery.backoff.ms";
/// `errors.deadletterqueue.topic.name` (KIP-1191).
pub(crate) const DLQ_TOPIC_NAME: &str = "errors.deadletterqueue.topic.name";
/// `errors.deadletterqueue.copy.record.enable` (KIP-1191).
pub(crate) const DLQ_COPY_RECORD: &str = "errors.deadletterqueue.copy.record.enable";

/// Most steps in a redelivery backoff schedule.
const BACKOFF_STEPS_MAX: usize = 64;
/// Longest one backoff step: a day.
const BACKOFF_STEP_MS_MAX: i64 = 86_400_000;

/// How a group config's value is checked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GroupConfigKind {
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A comma-separated list of waits in milliseconds; empty for none.
    Backoff,
    /// `true` or `false`.
    Bool,
    /// A topic name starting with `errors.deadletterqueue.topic.name.prefix`;
    /// empty for no dead-letter topic.
    DeadLetterTopic,
}

/// One group config.
#[derive(Debug)]
pub(crate) struct GroupConfigDef {
    /// Kafka's name (Weir's own start with `weir.`).
    pub name: &'static str,
    /// Validation.
    pub kind: GroupConfigKind,
    /// What it does.
    pub doc: &'static str,
}

/// Every group config Weir acts on, by name.
pub(crate) static GROUP_CONFIGS: &[GroupConfigDef] = &[
    GroupConfigDef {
        name: AUTO_OFFSET_RESET,
        kind: GroupConfigKind::Choice(&["latest", "earliest"]),
        doc: "where a share-partition starts when the group first consumes it: latest (the \
              high watermark) or earliest (the log start offset)",
    },
    GroupConfigDef {
        name: DELIVERY_COUNT_LIMIT,
        kind: GroupConfigKind::Int { min: 2, max: 10 },
        doc: "deliveries of one record before it is given up on (dead-lettered); \
              defaults to group.share.delivery.count.limit",
    },
    GroupConfigDef {
        name: RECORD_LOCK_DURATION_MS,
        kind: GroupConfigKind::Int {
            min: 1_000,
            max: 3_600_000,
        },
        doc: "how long a fetched record stays acquired by its member before it is released; \
              defaults to group.share.record.lock.duration.ms",
    },
    GroupConfigDef {
        name: REDELIVERY_BACKOFF_MS,
        kind: GroupConfigKind::Backoff,
        doc: "waits before a released record is delivered again, by delivery count, comma \
              separated (the last repeats), e.g. 1000,5000,10000,30000,60000,120000; \
              empty (the default) redelivers at once, as Kafka does",
    },
    GroupConfigDef {
        name: DLQ_TOPIC_NAME,
        kind: GroupConfigKind::DeadLetterTopic,
        doc: "the topic a rejected record, or one past the delivery count limit, is written \
              to; it must start with errors.deadletterqueue.topic.name.prefix. Unset, Weir \
              uses <prefix><group> (e.g. dlq.orders-workers); empty, records are archived \
              with no dead letter, as Kafka does without one",
    },
    GroupConfigDef {
        name: DLQ_COPY_RECORD,
        kind: GroupConfigKind::Bool,
        doc: "true: a dead letter carries the record's key, value and headers; false (the \
              default, as in Kafka): only the headers naming the record and why",
    },
];

/// The definition of group config `name`.
pub(crate) fn definition(name: &str) -> Result<&'static GroupConfigDef, ApiError> {
    GROUP_CONFIGS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = GROUP_CONFIGS.iter().map(|d| d.name).collect();
            ApiError::new(
                ResponseError::InvalidConfig,
                format!(
                    "'{name}' is not a group config Weir acts on; the group configs are {}",
                    known.join(", ")
                ),
            )
        })
}

/// Longest group id that configs may be set for: group ids come from
/// clients, and every configured group is kept in the metadata.
pub(crate) const GROUP_ID_BYTES_MAX: usize = 1024;

/// Check a group id named as a config resource.
pub(crate) fn check_group_id(group: &str) -> Result<(), ApiError> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err(ApiError::new(
            ResponseError::InvalidGroupId,
            format!("a group id of 1..={GROUP_ID_BYTES_MAX} bytes names a group's configs"),
        ));
    }
    Ok(())
}

/// Kafka's config type number (DescribeConfigs v3+) of a group config.
pub(crate) fn kafka_type(def: &GroupConfigDef) -> i8 {
    match def.kind {
        GroupConfigKind::Bool => 1,
        GroupConfigKind::Choice(_) | GroupConfigKind::DeadLetterTopic => 2,
        GroupConfigKind::Int { .. } => 3,
        GroupConfigKind::Backoff => 7,
    }
}

/// Check changes to `group`'s configs and, unless `validate_only`, store
/// them (durably, and through the quorum on a cluster). They apply from
/// the group's next request on.
pub(crate) fn alter(
    broker: &crate::Broker,
    group: &str,
    changes: &[weir_metadata::ConfigChange],
    validate_only: bool,
) -> Result<(), ApiError> {
    use weir_metadata::ConfigChange;
    check_group_id(group)?;
    for change in changes {
        match change {
            ConfigChange::Set(key, value) => {
                validate(definition(key)?, value, &broker.config().group)?;
            }
            ConfigChange::Delete(key) => {
                definition(key)?;
            }
        }
    }
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    let altered = broker.metadata().alter_group_configs(group, changes);
    // Forgotten whether or not the change took: a failed commit may still
    // have been applied by a cluster's quorum.
    broker.shares().forget_settings();
    altered?;
    tracing::info!(group, changes = changes.len(), "altered group configs");
    Ok(())
}

/// The value group config `def` has for `group` when it does not set it.
pub(crate) fn default_value(def: &GroupConfigDef, broker: &GroupConfig, group: &str) -> String {
    match def.name {
        AUTO_OFFSET_RESET => "latest".to_string(),
        DELIVERY_COUNT_LIMIT => broker.share_delivery_count_limit.to_string(),
        RECORD_LOCK_DURATION_MS => broker.share_record_lock_duration_ms.to_string(),
        DLQ_COPY_RECORD => "false".to_string(),
        DLQ_TOPIC_NAME => default_dead_letter_topic(broker, group).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The value a group's `errors.deadletterqueue.topic.name` has when it is
/// not set: `<prefix><group>`, when that is a topic name.
pub(crate) fn default_dead_letter_topic(broker: &GroupConfig, group: &str) -> Option<String> {
    let name = format!("{}{group}", broker.dlq_topic_prefix);
    crate::topics::validate_topic_name(&name)
        .is_ok()
        .then_some(name)
}

/// Check `errors.deadletterqueue.topic.name.prefix`: a non-empty start of
/// a topic name that is not an internal one's.
pub fn validate_dlq_topic_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.starts_with("__") {
        return Err("must be non-empty and must not start with __ (internal topics)".to_string());
    }
    crate::topics::validate_topic_name(&format!("{prefix}x")).map_err(|e| e.message)
}

/// Check `value` for `def` (against `broker`'s dead-letter prefix);
/// INVALID_CONFIG says why not.
pub(crate) fn validate(
    def: &GroupConfigDef,
    value: &str,
    broker: &GroupConfig,
) -> Result<(), ApiError> {
    let invalid = |why: String| {
        ApiError::new(
            ResponseError::InvalidConfig,
            format!(
                "invalid value '{value}' for group config '{}': {why}",
                def.name
            ),
        )
    };
    match def.kind {
        GroupConfigKind::Choice(allowed) => {
            if !allowed.contains(&value) {
                return Err(invalid(format!("must be one of {}", allowed.join(", "))));
            }
        }
        GroupConfigKind::Int { min, max } => match value.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => {}
            _ => return Err(invalid(format!("must be an integer in {min}..={max}"))),
        },
        GroupConfigKind::Backoff => {
            parse_backoff(value).map_err(invalid)?;
        }
        GroupConfigKind::Bool => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(invalid("must be true or false".to_string()));
            }
        }
        GroupConfigKind::DeadLetterTopic => {
            let name = value.trim();
            let prefix = &broker.dlq_topic_prefix;
            if name.is_empty() {
                return Ok(());
            }
            if !name.starts_with(prefix.as_str()) || name.len() == prefix.len() {
                return Err(invalid(format!(
                    "a dead-letter topic's name starts with '{prefix}' \
                     (errors.deadletterqueue.topic.name.prefix) and goes on"
                )));
            }
            crate::topics::validate_topic_name(name).map_err(|e| invalid(e.message))?;
        }
    }
    Ok(())
}

/// A backoff schedule: waits in milliseconds, comma separated.
fn parse_backoff(value: &str) -> Result<Vec<i64>, String> {
    let steps: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if steps.len() > BACKOFF_STEPS_MAX {
        return Err(format!("at most {BACKOFF_STEPS_MAX} waits"));
    }
    steps
        .into_iter()
        .map(|s| match s.parse::<i64>() {
            Ok(ms) if (0..=BACKOFF_STEP_MS_MAX).contains(&ms) => Ok(ms),
            _ => Err(format!(
                "'{s}' is not a wait in milliseconds (0..={BACKOFF_STEP_MS_MAX})"
            )),
        })
        .collect()
}

/// Where a share-partition starts (`share.auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetReset {
    /// The high watermark: only records produced from now on.
    Latest,
    /// The log start offset: every record still retained.
    Earliest,
}

impl OffsetReset {
    /// The start offset for a partition whose log starts at `log_start`
    /// and whose high watermark is `high_watermark`.
    pub(crate) fn start(self, log_start: i64, high_watermark: i64) -> i64 {
        match self {
            Self::Latest => high_watermark,
            Self::Earliest => log_start,
        }
    }
}

/// Where a share group's dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetterTopic {
    /// `errors.deadletterqueue.topic.name`, or `<prefix><group>`.
    pub name: String,
    /// `errors.deadletterqueue.copy.record.enable`.
    pub copy_record: bool,
}

/// What a share group acts on: its configs, else the broker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareGroupSettings {
    /// What its share-partitions act on.
    pub partition: ShareSettings,
    /// `share.auto.offset.reset`.
    pub offset_reset: OffsetReset,
    /// Its dead-letter topic; `None`: a record given up on is archived
    /// with no dead letter.
    pub dead_letter: Option<DeadLetterTopic>,
}

impl ShareGroupSettings {
    /// The settings of `group`, whose own configs are `configs`. A stored
    /// value that no longer passes validation (written by another build)
    /// is passed over for the default, with a warning.
    pub(crate) fn resolve(
        broker: &GroupConfig,
        group: &str,
        configs: &BTreeMap<String, String>,
    ) -> Self {
        let value = |name: &str| -> String {
            let def = definition(name).ok();
            let own = configs.get(name).filter(|v| {
                let ok = def.is_some_and(|d| validate(d, v, broker).is_ok());
                if !ok {
                    tracing::warn!(group, config = name, value = %v, "ignoring a group config that does not validate");
                }
                ok
            });
            match (own, def) {
                // Validation trims numbers, so resolution does too.
                (Some(v), _) => v.trim().to_string(),
                (None, Some(def)) => default_value(def, broker, group),
                (None, None) => String::new(),
            }
        };
        let offset_reset = match value(AUTO_OFFSET_RESET).as_str() {
            "earliest" => OffsetReset::Earliest,
            _ => OffsetReset::Latest,
        };
        // Set (even to empty, for none) or Weir's per-group default.
        let dead_letter_topic = if configs.contains_key(DLQ_TOPIC_NAME) {
            Some(value(DLQ_TOPIC_NAME)).filter(|n| !n.is_empty())
        } else {
            default_dead_letter_topic(broker, group)
        };
        let dead_letter = dead_letter_topic.map(|name| DeadLetterTopic {
            name,
            copy_record: value(DLQ_COPY_RECORD) == "true",
        });
        Self {
            partition: ShareSettings {
                record_lock_duration_ms: value(RECORD_LOCK_DURATION_MS)
                    .parse()
                    .unwrap_or(broker.share_record_lock_duration_ms),
                delivery_count_limit: value(DELIVERY_COUNT_LIMIT)
                    .parse()
                    .unwrap_or(broker.share_delivery_count_limit),
                max_record_locks: broker.share_partition_max_record_locks,
                redelivery_backoff_ms: parse_backoff(&value(REDELIVERY_BACKOFF_MS))
                    .unwrap_or_default(),
            },
            offset_reset,
            dead_letter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> GroupConfig {
        crate::config::BrokerConfig::default().group
    }

    #[test]
    fn unset_configs_take_the_broker_values_and_set_ones_win() {
        let b = broker();
        let s = ShareGroupSettings::resolve(&b, "workers", &BTreeMap::new());
        assert_eq!(
            s.partition.delivery_count_limit,
            b.share_delivery_count_limit
        );
        assert_eq!(
            s.partition.record_lock_duration_ms,
            b.share_record_lock_duration_ms
        );
        assert_eq!(s.offset_reset, OffsetReset::Latest);
        assert!(s.partition.redelivery_backoff_ms.is_empty());
        let dlq = s.dead_letter.unwrap();
        assert_eq!((dlq.name.as_str(), dlq.copy_record), ("dlq.workers", false));
        // A group id that makes no topic name has no default dead-letter topic.
        let odd = ShareGroupSettings::resolve(&b, "a b", &BTreeMap::new());
        assert_eq!(odd.dead_letter, None);

        let set = BTreeMap::from(
            [
                (DELIVERY_COUNT_LIMIT, " 3 "),
                (RECORD_LOCK_DURATION_MS, "1500"),
                (AUTO_OFFSET_RESET, "earliest"),
                (REDELIVERY_BACKOFF_MS, "1000, 5000,10000"),
                (DLQ_TOPIC_NAME, " dlq.failed "),
                (DLQ_COPY_RECORD, "true"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let s = ShareGroupSettings::resolve(&b, "workers", &set);
        assert_eq!(s.partition.delivery_count_limit, 3);
        assert_eq!(s.partition.record_lock_duration_ms, 1500);
        assert_eq!(s.offset_reset, OffsetReset::Earliest);
        assert_eq!(s.partition.redelivery_backoff_ms, [1000, 5000, 10000]);
        let dlq = s.dead_letter.unwrap();
        assert_eq!((dlq.name.as_str(), dlq.copy_record), ("dlq.failed", true));
        // Set empty: no dead-letter topic.
        let none = BTreeMap::from([(DLQ_TOPIC_NAME.to_string(), String::new())]);
        let s = ShareGroupSettings::resolve(&b, "workers", &none);
        assert_eq!(s.dead_letter, None);
    }

    #[test]
    fn values_are_checked_with_the_reason_named() {
        let b = broker();
        let check = |name: &str, value: &str| validate(definition(name).unwrap(), value, &b);
        for (name, value) in [
            (DELIVERY_COUNT_LIMIT, "1"),
            (DELIVERY_COUNT_LIMIT, "11"),
            (DELIVERY_COUNT_LIMIT, "five"),
            (RECORD_LOCK_DURATION_MS, "999"),
            (AUTO_OFFSET_RESET, "by_duration:PT1H"),
            (REDELIVERY_BACKOFF_MS, "1000,-1"),
            (REDELIVERY_BACKOFF_MS, "86400001"),
            (DLQ_TOPIC_NAME, "orders-dead"),
            (DLQ_TOPIC_NAME, "dlq."),
            (DLQ_TOPIC_NAME, "dlq.bad name"),
            (DLQ_COPY_RECORD, "yes"),
        ] {
            let err = check(name, value).unwrap_err();
            assert_eq!(err.code, ResponseError::InvalidConfig, "{name}={value}");
            assert!(err.message.contains(name), "{}", err.message);
        }
        let many = vec!["1"; BACKOFF_STEPS_MAX + 1].join(",");
        assert!(check(REDELIVERY_BACKOFF_MS, &many).is_err());
        assert!(check(REDELIVERY_BACKOFF_MS, "").is_ok());
        assert!(check(DELIVERY_COUNT_LIMIT, "10").is_ok());
        assert!(check(DLQ_TOPIC_NAME, "dlq.orders-failed").is_ok());
        assert!(check(DLQ_TOPIC_NAME, "").is_ok());
        assert!(check(DLQ_COPY_RECORD, "true").is_ok());
        let unknown = definition("consumer.session.timeout.ms").unwrap_err();
        assert_eq!(unknown.code, ResponseError::InvalidConfig);
    }
}
