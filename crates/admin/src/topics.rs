//! The topics, as this node knows them (what `weir topic list` and `weir
//! topic describe` show):
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/topics` | `{"topics": [...]}`, a [`TopicSummary`] per topic, by name: id, partitions, replication factor, internal or not, a view's source, whether it takes dead letters, and the size and record estimate of the partitions held here |
//! | `GET /v1/topics/{topic}` | [`TopicDetail`]: the summary, each partition's leader, replicas, ISR and leader epoch, and (where this node holds a replica) its log start, high watermark, last stable offset, log end and size; and the configs as DescribeConfigs reports them, sensitive values hidden |
//!
//! 404 for an unknown topic. Structure (partitions, replicas, leaders)
//! comes from this node's copy of the metadata; offsets and sizes from the
//! replicas it holds, so on a cluster a partition held elsewhere shows
//! `held_here: false` and no offsets, and one led elsewhere
//! `led_here: false` with offsets as this follower's copy has them. The
//! record estimate is the sum, over partitions held here, of the high
//! watermark less the log start: compaction, transaction markers and
//! aborted records make the true count lower. A view has no records of
//! its own (its partitions are its source's), so it shows none.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use weir_metadata::TopicMeta;

use crate::kafka::{ask, expect_response};
use crate::{AdminError, AdminState};

/// The topic config naming a view's source (`weir.view.source`).
pub(crate) const VIEW_SOURCE: &str = "weir.view.source";
/// The topic config that lets share groups write dead letters to a topic
/// (KIP-1191's `errors.deadletterqueue.group.enable`).
pub(crate) const DLQ_GROUP_ENABLE: &str = "errors.deadletterqueue.group.enable";
/// Kafka's internal topics (only the broker writes them).
const INTERNAL_TOPICS: [&str; 3] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
];
/// Kafka's ConfigResource type of a topic.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// The DescribeConfigs version sent (the newest; no documentation asked).
const DESCRIBE_CONFIGS_VERSION: i16 = 4;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/topics", get(list))
        .route("/v1/topics/{topic}", get(describe))
}

/// One topic, as `GET /v1/topics` lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicSummary {
    /// Its name.
    pub name: String,
    /// Its topic id, in Kafka's base64 text (as `kafka-topics.sh` shows it).
    pub topic_id: String,
    /// Its partition count.
    pub partitions: i32,
    /// Its replication factor.
    pub replication_factor: i16,
    /// One of Kafka's internal topics (`__consumer_offsets`, ...).
    pub internal: bool,
    /// For a view (`weir.view.source`), the topic whose records it filters.
    pub view_of: Option<String>,
    /// It takes share groups' dead letters
    /// (`errors.deadletterqueue.group.enable=true`).
    pub dead_letter: bool,
    /// How many of its partitions this node holds a replica of (0 for a
    /// view).
    pub partitions_held: i32,
    /// Bytes its partitions held here take in the commit log.
    pub size_bytes: u64,
    /// Records in its partitions held here, estimated: the sum of high
    /// watermark less log start.
    pub records: i64,
}

/// One topic in full, as `GET /v1/topics/{topic}` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicDetail {
    /// What the list shows of it.
    #[serde(flatten)]
    pub summary: TopicSummary,
    /// Each partition, by number.
    pub partition_details: Vec<PartitionDetail>,
    /// Every config, as DescribeConfigs reports it, by name.
    pub configs: Vec<ConfigEntry>,
}

/// One partition of a topic.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionDetail {
    /// Its number.
    pub partition: i32,
    /// The leader's broker id, or -1 while it has none.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// Broker ids holding a replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// This node leads it.
    pub led_here: bool,
    /// This node holds a replica of it: the offsets below are that copy's.
    pub held_here: bool,
    /// Kafka's log-start offset (`None`: not held here).
    pub log_start_offset: Option<i64>,
    /// The high watermark.
    pub high_watermark: Option<i64>,
    /// The last stable offset (read_committed consumers read below it).
    pub last_stable_offset: Option<i64>,
    /// The offset after the last record appended, committed or not.
    pub log_end_offset: Option<i64>,
    /// Bytes its batches take in the commit log.
    pub size_bytes: Option<u64>,
    /// Why offsets are missing or may be behind, when they are.
    pub note: Option<String>,
}

/// One topic config.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigEntry {
    /// Its name (`retention.ms`, ...).
    pub name: String,
    /// Its value; `None` when unset or sensitive.
    pub value: Option<String>,
    /// Where the value comes from, in Kafka's ConfigSource words:
    /// `DYNAMIC_TOPIC_CONFIG` (set on the topic), `STATIC_BROKER_CONFIG`,
    /// `DYNAMIC_DEFAULT_BROKER_CONFIG`, `DEFAULT_CONFIG`, ...
    pub source: &'static str,
    /// It cannot be changed.
    pub read_only: bool,
    /// Its value is hidden.
    pub sensitive: bool,
}

/// One partition held here: offsets and size.
#[derive(Debug, Clone, Copy)]
struct Held {
    offsets: weir_storage::PartitionOffsets,
    size_bytes: u64,
}

/// Every topic, by name, with what this node holds of each.
pub(crate) async fn topic_list(state: &AdminState) -> Result<Vec<TopicSummary>, AdminError> {
    let broker = state.broker.clone();
    crate::kafka::blocking(move || {
        let mut held: HashMap<String, Vec<Held>> = HashMap::new();
        for p in broker.partition_stats() {
            held.entry(p.topic).or_default().push(Held {
                offsets: weir_storage::PartitionOffsets {
                    log_start: p.log_start,
                    high_watermark: p.high_watermark,
                    last_stable: p.high_watermark,
                    log_end: p.log_end,
                },
                size_bytes: p.size_bytes,
            });
        }
        let mut topics: Vec<TopicSummary> = broker
            .metadata()
            .topics()
            .iter()
            .map(|meta| {
                let held = held.get(&meta.name).map(Vec::as_slice).unwrap_or_default();
                summary(meta, held)
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    })
    .await
}

/// One topic in full; 404 when no topic has the name.
pub(crate) async fn topic_detail(
    state: &AdminState,
    topic: &str,
) -> Result<TopicDetail, AdminError> {
    let broker = state.broker.clone();
    let name = topic.to_owned();
    let (summary, partition_details) = crate::kafka::blocking(move || {
        let meta = broker
            .metadata()
            .topic(&name)
            .ok_or_else(|| unknown_topic(&name))?;
        let partitions = partitions_of(&broker, &meta);
        let held: Vec<Held> = partitions.iter().filter_map(|(_, held)| *held).collect();
        let summary = summary(&meta, if view_of(&meta).is_some() { &[] } else { &held });
        let details = partitions.into_iter().map(|(d, _)| d).collect();
        Ok::<_, AdminError>((summary, details))
    })
    .await??;
    let configs = topic_configs(state, topic).await?;
    Ok(TopicDetail {
        summary,
        partition_details,
        configs,
    })
}

/// The 404 for a topic no one has.
pub(crate) fn unknown_topic(topic: &str) -> AdminError {
    AdminError::not_found(format!("no topic named {topic}"))
}

/// A view's source topic, when `meta` is a view's.
pub(crate) fn view_of(meta: &TopicMeta) -> Option<String> {
    meta.configs.get(VIEW_SOURCE).cloned()
}

/// Whether `meta`'s topic takes share groups' dead letters.
pub(crate) fn takes_dead_letters(meta: &TopicMeta) -> bool {
    meta.configs
        .get(DLQ_GROUP_ENABLE)
        .is_some_and(|v| v.trim() == "true")
}

/// The topic id as Kafka's tools print it: URL-safe base64, no padding.
pub(crate) fn topic_id_text(meta: &TopicMeta) -> String {
    weir_metadata::uuid_text(meta.id)
}

fn summary(meta: &TopicMeta, held: &[Held]) -> TopicSummary {
    let view = view_of(meta);
    let held = if view.is_some() { &[][..] } else { held };
    TopicSummary {
        name: meta.name.clone(),
        topic_id: topic_id_text(meta),
        partitions: meta.partitions,
        replication_factor: meta.replication_factor,
        internal: INTERNAL_TOPICS.contains(&meta.name.as_str()),
        view_of: view,
        dead_letter: takes_dead_letters(meta),
        partitions_held: i32::try_from(held.len()).unwrap_or(i32::MAX),
        size_bytes: held.iter().map(|h| h.size_bytes).sum(),
        records: held
            .iter()
            .map(|h| (h.offsets.high_watermark - h.offsets.log_start).max(0))
            .sum(),
    }
}

/// Each partition of `meta` with its replica here, if any. A view's
/// partitions are its source's: their leaders and offsets are shown.
fn partitions_of(
    broker: &Arc<weir_broker::Broker>,
    meta: &TopicMeta,
) -> Vec<(PartitionDetail, Option<Held>)> {
    let node_id = broker.config().node_id;
    let cluster = broker.metadata().replicated();
    let data = match view_of(meta) {
        Some(source) => broker.metadata().topic(&source),
        None => Some(meta.clone()),
    };
    (0..meta.partitions)
        .map(|index| {
            let assignment = data
                .as_ref()
                .and_then(|d| d.assignment(index, node_id))
                .unwrap_or_else(|| weir_metadata::PartitionAssignment {
                    leader: weir_metadata::NO_LEADER,
                    ..weir_metadata::PartitionAssignment::solo(node_id)
                });
            let local = data.as_ref().and_then(|d| {
                broker.log().partition(weir_storage::PartitionId {
                    topic_id: d.id,
                    partition: index,
                })
            });
            let held = local.as_ref().map(|p| Held {
                offsets: p.offsets(),
                size_bytes: p.size_bytes(),
            });
            let led_here = assignment.leader == node_id;
            // A single node's log carries the epoch; its metadata none.
            let leader_epoch = match (&local, cluster) {
                (Some(p), false) => p.leader_epoch(),
                _ => assignment.leader_epoch,
            };
            let note = match (&held, led_here) {
                (None, _) => Some(format!(
                    "this node holds no replica of it; ask broker {}",
                    assignment.leader
                )),
                (Some(_), false) => Some(format!(
                    "led by broker {}: offsets are this follower's copy",
                    assignment.leader
                )),
                (Some(_), true) => None,
            };
            let detail = PartitionDetail {
                partition: index,
                leader: assignment.leader,
                leader_epoch,
                replicas: assignment.replicas.clone(),
                isr: assignment.isr.clone(),
                led_here,
                held_here: held.is_some(),
                log_start_offset: held.map(|h| h.offsets.log_start),
                high_watermark: held.map(|h| h.offsets.high_watermark),
                last_stable_offset: held.map(|h| h.offsets.last_stable),
                log_end_offset: held.map(|h| h.offsets.log_end),
                size_bytes: held.map(|h| h.size_bytes),
                note,
            };
            (detail, held)
        })
        .collect()
}

/// The topic's configs, as DescribeConfigs answers them (sensitive values
/// hidden), by name.
pub(crate) async fn topic_configs(
    state: &AdminState,
    topic: &str,
) -> Result<Vec<ConfigEntry>, AdminError> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configuration_keys(None),
    ]);
    let response = ask(&state.broker, request, DESCRIBE_CONFIGS_VERSION).await?;
    let response = expect_response!(response, DescribeConfigs)?;
    let mut configs = BTreeMap::new();
    for result in response.results {
        if result.error_code == kafka_protocol::ResponseError::UnknownTopicOrPartition.code() {
            return Err(unknown_topic(topic));
        }
        if result.error_code != 0 {
            return Err(crate::kafka::failed(
                &format!("the configs of topic {topic}"),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        for entry in result.configs {
            let name = entry.name.as_str().to_owned();
            configs.insert(
                name.clone(),
                ConfigEntry {
                    name,
                    value: entry
                        .value
                        .filter(|_| !entry.is_sensitive)
                        .map(|v| v.as_str().to_owned()),
                    source: config_source(entry.config_source),
                    read_only: entry.read_only,
                    sensitive: entry.is_sensitive,
                },
            );
        }
    }
    Ok(configs.into_values().collect())
}

/// Kafka's ConfigSource names (DescribeConfigs v1+).
fn config_source(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

async fn list(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, AdminError> {
    let topics = topic_list(&state).await?;
    Ok(Json(serde_json::json!({ "topics": topics })))
}

async fn describe(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicDetail>, AdminError> {
    let Path(topic) = topic?;
    topic_detail(&state, &topic).await.map(Json)
}

/// The offsets of `topic`'s partition `partition` as this node's replica
/// has them (a view's are its source's); `None` when the topic is unknown
/// or no replica of it is held here. Reads the metadata store: call it off
/// the runtime's workers.
pub(crate) fn held_offsets(
    broker: &weir_broker::Broker,
    topic: &str,
    partition: i32,
) -> Option<weir_storage::PartitionOffsets> {
    let meta = broker.metadata().topic(topic)?;
    let data = match view_of(&meta) {
        Some(source) => broker.metadata().topic(&source)?,
        None => meta,
    };
    broker
        .log()
        .partition(weir_storage::PartitionId {
            topic_id: data.id,
            partition,
        })
        .map(|p| p.offsets())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::testing::{create_topic, produce};

    #[tokio::test(flavor = "multi_thread")]
    async fn a_topic_shows_its_records_offsets_and_configs_and_a_view_its_source() {
        let (state, _dir) = crate::tests::state();
        create_topic(&state, "orders", 2, &[("retention.ms", "3600000")]).await;
        create_topic(
            &state,
            "vip",
            2,
            &[(VIEW_SOURCE, "orders"), ("weir.view.tags", "VIP")],
        )
        .await;
        produce(
            &state,
            "orders",
            0,
            &[("a", b"1", 5, &[]), ("b", b"2", 6, &[])],
        )
        .await;
        produce(&state, "orders", 1, &[("c", b"3", 7, &[])]).await;

        let list = topic_list(&state).await.expect("topics");
        let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["__consumer_offsets", "orders", "vip"]);
        assert!(list[0].internal);
        let list = &list[1..];
        let orders = &list[0];
        assert_eq!((orders.partitions, orders.partitions_held), (2, 2));
        assert_eq!(orders.records, 3);
        assert!(orders.size_bytes > 0);
        assert!(!orders.internal && !orders.dead_letter);
        let vip = &list[1];
        assert_eq!(vip.view_of.as_deref(), Some("orders"));
        assert_eq!(
            (vip.records, vip.size_bytes, vip.partitions_held),
            (0, 0, 0)
        );

        let detail = topic_detail(&state, "orders").await.expect("orders");
        let p0 = &detail.partition_details[0];
        assert_eq!(
            (
                p0.log_start_offset,
                p0.high_watermark,
                p0.last_stable_offset
            ),
            (Some(0), Some(2), Some(2))
        );
        assert!(p0.led_here && p0.held_here && p0.note.is_none());
        assert_eq!(p0.replicas, vec![state.broker.config().node_id]);
        let retention = detail
            .configs
            .iter()
            .find(|c| c.name == "retention.ms")
            .expect("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.source, "DYNAMIC_TOPIC_CONFIG");
        // A view's partitions are its source's.
        let vip = topic_detail(&state, "vip").await.expect("vip");
        assert_eq!(vip.partition_details[1].high_watermark, Some(1));

        let err = topic_detail(&state, "nope").await.expect_err("unknown");
        assert_eq!(err.status(), axum::http::StatusCode::NOT_FOUND);
    }
}
