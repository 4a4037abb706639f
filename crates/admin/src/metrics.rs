//! `GET /metrics`: the broker's metrics in Prometheus' text format
//! (version 0.0.4): what weir-metrics recorded as work happened, and
//! gauges read from the broker's state for this answer:
//!
//! - `weir_partition_log_start_offset`, `weir_partition_high_watermark`,
//!   `weir_partition_log_end_offset` and `weir_partition_size_bytes`, by
//!   topic and partition, for each partition this broker holds;
//! - `weir_consumer_group_committed_offset` and `weir_consumer_group_lag`
//!   (records between the committed offset and the high watermark), by
//!   group, topic and partition, for each group this broker coordinates
//!   and each partition it holds;
//! - `weir_under_replicated_partitions`, `weir_under_min_isr_partitions`
//!   (of the partitions this broker leads) and `weir_offline_partitions`
//!   (of the whole cluster, as this node's metadata says);
//! - `weir_share_group_records_acquired` and
//!   `weir_share_group_records_dead_lettering`, by group, topic and
//!   partition, for each share-partition this broker leads;
//! - on a cluster node, its view of the metadata quorum's Raft log:
//!   `weir_raft_leader_id`, `weir_raft_term`, `weir_raft_last_log_index`,
//!   `weir_raft_applied_index` and, on the leader,
//!   `weir_raft_member_lag_entries` by member.
//!
//! 404 when metrics are off (`metrics.enabled=false`). docs/operations.md
//! lists every metric.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use weir_metrics::Scrape;

use crate::{AdminError, AdminState};

/// The content type of Prometheus' text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AdminState>) -> Result<impl IntoResponse, AdminError> {
    if !weir_metrics::enabled() {
        return Err(AdminError::not_found(
            "metrics are off on this broker (metrics.enabled=false)",
        ));
    }
    // Reading every partition's offsets takes their locks: off the workers.
    let broker = state.broker.clone();
    let text = tokio::task::spawn_blocking(move || {
        let scrape = scrape(&broker);
        weir_metrics::metrics().encode(&scrape)
    })
    .await
    .map_err(|e| {
        AdminError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the metrics failed: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], text))
}

/// The gauges read from the broker's state.
fn scrape(broker: &weir_broker::Broker) -> Scrape {
    let mut scrape = Scrape::default();
    let partition_labels = ["topic", "partition"];
    let gauges = [
        (
            "weir_partition_log_start_offset",
            "The first offset still readable (Kafka's log-start offset), by partition held here.",
        ),
        (
            "weir_partition_high_watermark",
            "The offset after the last record consumers may read, by partition held here.",
        ),
        (
            "weir_partition_log_end_offset",
            "The offset after the last record appended, by partition held here.",
        ),
        (
            "weir_partition_size_bytes",
            "Bytes the partition's batches take in the commit log, by partition held here.",
        ),
    ]
    .map(|(name, help)| scrape.gauge(name, help, &partition_labels));
    if let [Some(start), Some(high), Some(end), Some(size)] = gauges {
        for p in broker.partition_stats() {
            let partition = p.partition.to_string();
            let labels = [p.topic.as_str(), partition.as_str()];
            start.with_label_values(&labels).set(p.log_start);
            high.with_label_values(&labels).set(p.high_watermark);
            end.with_label_values(&labels).set(p.log_end);
            size.with_label_values(&labels)
                .set(i64::try_from(p.size_bytes).unwrap_or(i64::MAX));
        }
    }
    let group_labels = ["group", "topic", "partition"];
    let committed = scrape.gauge(
        "weir_consumer_group_committed_offset",
        "The offset a consumer group committed, by group and partition.",
        &group_labels,
    );
    let lag = scrape.gauge(
        "weir_consumer_group_lag",
        "Records between a consumer group's committed offset and the high watermark, by group and partition.",
        &group_labels,
    );
    if let (Some(committed), Some(lag)) = (committed, lag) {
        for g in broker.group_lags() {
            let partition = g.partition.to_string();
            let labels = [g.group.as_str(), g.topic.as_str(), partition.as_str()];
            committed.with_label_values(&labels).set(g.committed);
            lag.with_label_values(&labels).set(g.lag);
        }
    }
    replication(&mut scrape, broker);
    share_groups(&mut scrape, broker);
    if let Some(raft) = broker.metadata().raft_status() {
        quorum(&mut scrape, &raft);
    }
    scrape
}

/// A gauge with no labels, set to `value`.
fn single(scrape: &mut Scrape, name: &str, help: &str, value: u64) {
    if let Some(gauge) = scrape.gauge(name, help, &[]) {
        gauge
            .with_label_values(&[] as &[&str])
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

/// The partitions short of in-sync replicas or of a leader.
fn replication(scrape: &mut Scrape, broker: &weir_broker::Broker) {
    let stats = broker.replication_stats();
    single(
        scrape,
        "weir_under_replicated_partitions",
        "Partitions this broker leads whose ISR is smaller than their replica set.",
        stats.under_replicated,
    );
    single(
        scrape,
        "weir_under_min_isr_partitions",
        "Partitions this broker leads whose ISR is smaller than min.insync.replicas: acks=all produces to them fail.",
        stats.under_min_isr,
    );
    single(
        scrape,
        "weir_offline_partitions",
        "Partitions without a leader in the whole cluster, as this node's metadata says.",
        stats.offline,
    );
}

/// Each share-partition's records in flight.
fn share_groups(scrape: &mut Scrape, broker: &weir_broker::Broker) {
    let labels = ["group", "topic", "partition"];
    let acquired = scrape.gauge(
        "weir_share_group_records_acquired",
        "Records a share group's members hold under an acquisition lock, by share-partition this broker leads.",
        &labels,
    );
    let dead_lettering = scrape.gauge(
        "weir_share_group_records_dead_lettering",
        "Records a share group gave up on whose dead letters are not written yet, by share-partition this broker leads.",
        &labels,
    );
    let (Some(acquired), Some(dead_lettering)) = (acquired, dead_lettering) else {
        return;
    };
    for s in broker.share_in_flight_stats() {
        let partition = s.partition.to_string();
        let labels = [s.group.as_str(), s.topic.as_str(), partition.as_str()];
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        acquired.with_label_values(&labels).set(count(s.acquired));
        dead_lettering
            .with_label_values(&labels)
            .set(count(s.dead_lettering));
    }
}

/// A cluster node's view of the metadata quorum's log.
fn quorum(scrape: &mut Scrape, raft: &weir_metadata::RaftStatus) {
    if let Some(leader) = scrape.gauge(
        "weir_raft_leader_id",
        "The metadata quorum's leader this node knows of (-1 while there is none).",
        &[],
    ) {
        leader
            .with_label_values(&[] as &[&str])
            .set(i64::from(raft.leader_id));
    }
    single(
        scrape,
        "weir_raft_term",
        "The Raft term this node is in: it grows with every election.",
        raft.term,
    );
    single(
        scrape,
        "weir_raft_last_log_index",
        "The index of the last entry in this node's copy of the metadata log.",
        raft.last_log_index,
    );
    single(
        scrape,
        "weir_raft_applied_index",
        "The index of the last committed metadata entry this node applied.",
        raft.applied_index,
    );
    if let Some(lag) = scrape.gauge(
        "weir_raft_member_lag_entries",
        "On the quorum's leader: entries each other member is behind the leader's log end.",
        &["node"],
    ) {
        for (node, behind) in &raft.member_lag {
            lag.with_label_values(&[node.to_string().as_str()])
                .set(i64::try_from(*behind).unwrap_or(i64::MAX));
        }
    }
}
