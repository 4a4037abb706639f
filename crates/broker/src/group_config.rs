//! Group configs: settings an operator gives one group id, with
//! IncrementalAlterConfigs and DescribeConfigs on the GROUP config resource
//! (what `kafka-configs.sh --entity-type groups` sends), under Kafka's
//! names (KIP-932's `share.*`) and Weir's own
//! `weir.share.redelivery.backoff.ms`. KIP-1191's dead-letter configs
//! (`errors.deadletterqueue.*`) come with the dead-letter writer.
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
        GroupConfigKind::Choice(_) => 2,
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
            ConfigChange::Set(key, value) => validate(definition(key)?, value)?,
            ConfigChange::Delete(key) => {
                definition(key)?;
            }
        }
    }
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    broker.metadata().alter_group_configs(group, changes)?;
    tracing::info!(group, changes = changes.len(), "altered group configs");
    Ok(())
}

/// The value group config `def` has for a group that does not set it.
pub(crate) fn default_value(def: &GroupConfigDef, broker: &GroupConfig) -> String {
    match def.name {
        AUTO_OFFSET_RESET => "latest".to_string(),
        DELIVERY_COUNT_LIMIT => broker.share_delivery_count_limit.to_string(),
        RECORD_LOCK_DURATION_MS => broker.share_record_lock_duration_ms.to_string(),
        _ => String::new(),
    }
}

/// Check `value` for `def`; INVALID_CONFIG says why not.
pub(crate) fn validate(def: &GroupConfigDef, value: &str) -> Result<(), ApiError> {
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

/// What a share group acts on: its configs, else the broker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareGroupSettings {
    /// What its share-partitions act on.
    pub partition: ShareSettings,
    /// `share.auto.offset.reset`.
    pub offset_reset: OffsetReset,
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
                let ok = def.is_some_and(|d| validate(d, v).is_ok());
                if !ok {
                    tracing::warn!(group, config = name, value = %v, "ignoring a group config that does not validate");
                }
                ok
            });
            match (own, def) {
                // Validation trims numbers, so resolution does too.
                (Some(v), _) => v.trim().to_string(),
                (None, Some(def)) => default_value(def, broker),
                (None, None) => String::new(),
            }
        };
        let offset_reset = match value(AUTO_OFFSET_RESET).as_str() {
            "earliest" => OffsetReset::Earliest,
            _ => OffsetReset::Latest,
        };
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

        let set = BTreeMap::from(
            [
                (DELIVERY_COUNT_LIMIT, " 3 "),
                (RECORD_LOCK_DURATION_MS, "1500"),
                (AUTO_OFFSET_RESET, "earliest"),
                (REDELIVERY_BACKOFF_MS, "1000, 5000,10000"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let s = ShareGroupSettings::resolve(&b, "workers", &set);
        assert_eq!(s.partition.delivery_count_limit, 3);
        assert_eq!(s.partition.record_lock_duration_ms, 1500);
        assert_eq!(s.offset_reset, OffsetReset::Earliest);
        assert_eq!(s.partition.redelivery_backoff_ms, [1000, 5000, 10000]);
    }

    #[test]
    fn values_are_checked_with_the_reason_named() {
        let check = |name: &str, value: &str| validate(definition(name).unwrap(), value);
        for (name, value) in [
            (DELIVERY_COUNT_LIMIT, "1"),
            (DELIVERY_COUNT_LIMIT, "11"),
            (DELIVERY_COUNT_LIMIT, "five"),
            (RECORD_LOCK_DURATION_MS, "999"),
            (AUTO_OFFSET_RESET, "by_duration:PT1H"),
            (REDELIVERY_BACKOFF_MS, "1000,-1"),
            (REDELIVERY_BACKOFF_MS, "86400001"),
        ] {
            let err = check(name, value).unwrap_err();
            assert_eq!(err.code, ResponseError::InvalidConfig, "{name}={value}");
            assert!(err.message.contains(name), "{}", err.message);
        }
        let many = vec!["1"; BACKOFF_STEPS_MAX + 1].join(",");
        assert!(check(REDELIVERY_BACKOFF_MS, &many).is_err());
        assert!(check(REDELIVERY_BACKOFF_MS, "").is_ok());
        assert!(check(DELIVERY_COUNT_LIMIT, "10").is_ok());
        let unknown = definition("consumer.session.timeout.ms").unwrap_err();
        assert_eq!(unknown.code, ResponseError::InvalidConfig);
    }
}
