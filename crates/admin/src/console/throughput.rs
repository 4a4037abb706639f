//! `GET /console/throughput.json[?topic=]`: the produce and fetch counters
//! weir-metrics keeps (`weir_topic_{bytes,records}_{in,out}_total`),
//! summed over every topic or for one, with the time read. The console's
//! charts poll it and compute rates in the browser from two readings, so
//! the broker keeps no history for them.
//!
//! With metrics off (`metrics.enabled=false`) the counters do not move;
//! the answer says so (`enabled: false`) and the chart shows a note.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::IntCounterVec;
use prometheus::core::Collector as _;
use serde::{Deserialize, Serialize};

use crate::{AdminError, AdminState};

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/console/throughput.json", get(throughput))
}

/// One reading of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counters {
    /// When they were read, in ms since the Unix epoch (the broker's clock).
    pub time_ms: i64,
    /// Whether metrics are recorded at all.
    pub enabled: bool,
    /// Bytes of batches producers appended.
    pub bytes_in: u64,
    /// Records producers appended.
    pub records_in: u64,
    /// Bytes of batches sent to consumers.
    pub bytes_out: u64,
    /// Records sent to consumers.
    pub records_out: u64,
}

#[derive(Debug, Deserialize)]
struct ThroughputQuery {
    topic: Option<String>,
}

async fn throughput(
    State(state): State<AdminState>,
    query: Result<Query<ThroughputQuery>, QueryRejection>,
) -> Result<Json<Counters>, AdminError> {
    let Query(query) = query?;
    let mut counters = read(query.topic.as_deref());
    counters.time_ms = state.broker.clock().now_ms();
    Ok(Json(counters))
}

/// The counters now, for `topic` or summed over all topics.
pub(crate) fn read(topic: Option<&str>) -> Counters {
    let m = weir_metrics::metrics();
    Counters {
        time_ms: 0,
        enabled: weir_metrics::enabled(),
        bytes_in: sum(&m.topic_bytes_in, topic),
        records_in: sum(&m.topic_records_in, topic),
        bytes_out: sum(&m.topic_bytes_out, topic),
        records_out: sum(&m.topic_records_out, topic),
    }
}

/// The sum of `family`'s series, or the one labelled `topic`. Collected,
/// not looked up by label, so that reading never creates a series.
fn sum(family: &IntCounterVec, topic: Option<&str>) -> u64 {
    family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|metric| {
            topic.is_none_or(|t| {
                metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "topic" && l.value() == t)
            })
        })
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_topics_or_read_one() {
        let m = weir_metrics::metrics();
        let before_all = read(None);
        let before_one = read(Some("console-throughput-a"));
        m.topic_in("console-throughput-a", 100, 2);
        m.topic_in("console-throughput-b", 50, 1);
        m.topic_out("console-throughput-a", 30, 1);
        let all = read(None);
        let one = read(Some("console-throughput-a"));
        // Other tests in this process may count too: at least ours moved.
        assert!(all.bytes_in >= before_all.bytes_in + 150, "{all:?}");
        assert!(all.records_in >= before_all.records_in + 3, "{all:?}");
        assert_eq!(one.bytes_in, before_one.bytes_in + 100);
        assert_eq!(one.records_in, before_one.records_in + 2);
        assert_eq!(one.bytes_out, before_one.bytes_out + 30);
        assert_eq!(read(Some("console-no-such-topic")).bytes_in, 0);
    }
}
