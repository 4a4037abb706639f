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
//!   and each partition it holds.
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
    scrape
}
