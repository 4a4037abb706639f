//! What the connection layer records in weir-metrics: each request's API
//! and version, its latency from its last byte read to its response
//! encoded, the error codes its response carries, the requests in flight
//! across connections, and the connections open per listener.
//!
//! Nothing here runs while `metrics.enabled=false` beyond the check.

use std::sync::LazyLock;
use std::time::Instant;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseKind};

/// The label of each API key (`Produce`), by key.
static API_NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..=API_KEY_MAX)
        .map(|key| match ApiKey::try_from(key) {
            Ok(api) => format!("{api:?}"),
            Err(()) => key.to_string(),
        })
        .collect()
});
/// The largest API key named in [`API_NAMES`].
const API_KEY_MAX: i16 = 128;
/// Version labels, by version.
const VERSIONS: [&str; 32] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
];

fn api_name(api: ApiKey) -> &'static str {
    let names: &'static [String] = &API_NAMES;
    names
        .get(usize::try_from(api as i16).unwrap_or(usize::MAX))
        .map_or("unknown", String::as_str)
}

/// One request being handled: counted in flight until dropped.
pub(crate) struct Measured {
    api: ApiKey,
    version: i16,
    started: Instant,
}

impl Measured {
    /// A request just read; `None` while metrics are off.
    pub(crate) fn start(api: ApiKey, version: i16) -> Option<Self> {
        if !weir_metrics::enabled() {
            return None;
        }
        weir_metrics::metrics().requests_in_flight.inc();
        Some(Self {
            api,
            version,
            started: Instant::now(),
        })
    }

    /// The request is answered with `response` (`None`: a produce with
    /// acks=0, or a request the connection closed over).
    pub(crate) fn done(self, response: Option<&ResponseKind>) {
        let metrics = weir_metrics::metrics();
        let api = api_name(self.api);
        let version = usize::try_from(self.version)
            .ok()
            .and_then(|v| VERSIONS.get(v))
            .copied()
            .unwrap_or("other");
        metrics.requests.with_label_values(&[api, version]).inc();
        metrics
            .request_duration
            .with_label_values(&[api])
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(response) = response {
            for_each_error(response, |code| {
                let name = ResponseError::try_from_code(code)
                    .map(|e| weir_metrics::error_name(&format!("{e:?}")))
                    .unwrap_or_else(|| code.to_string());
                metrics
                    .request_errors
                    .with_label_values(&[api, &name])
                    .inc();
            });
        }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        weir_metrics::metrics().requests_in_flight.dec();
    }
}

/// A request answered by the connection itself (a SASL step): counted,
/// without a latency.
pub(crate) fn answered(api: ApiKey, version: i16) {
    if let Some(measured) = Measured::start(api, version) {
        measured.done(None);
    }
}

/// One open connection, counted under its listener until dropped.
pub(crate) struct Open {
    listener: std::sync::Arc<str>,
}

impl Open {
    /// A connection just accepted on `listener`; `None` while metrics are
    /// off.
    pub(crate) fn start(listener: std::sync::Arc<str>) -> Option<Self> {
        if !weir_metrics::enabled() {
            return None;
        }
        weir_metrics::metrics()
            .connections
            .with_label_values(&[&listener])
            .inc();
        Some(Self { listener })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        weir_metrics::metrics()
            .connections
            .with_label_values(&[&self.listener])
            .dec();
    }
}

/// Call `each` with every error code (not NONE) `response` carries: its
/// top-level code and those of its partitions or resources, for the APIs
/// clients send most; other responses count none.
fn for_each_error(response: &ResponseKind, mut each: impl FnMut(i16)) {
    let mut code = |c: i16| {
        if c != 0 {
            each(c);
        }
    };
    match response {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| code(p.error_code)),
        ResponseKind::Fetch(r) => {
            code(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| code(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| code(p.error_code)),
        ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| {
            code(t.error_code);
            t.partitions.iter().for_each(|p| code(p.error_code));
        }),
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| code(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            code(r.error_code);
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| code(p.error_code));
            r.groups.iter().for_each(|g| code(g.error_code));
        }
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| code(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| code(t.error_code)),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| code(t.error_code)),
        ResponseKind::FindCoordinator(r) => {
            code(r.error_code);
            r.coordinators.iter().for_each(|c| code(c.error_code));
        }
        ResponseKind::JoinGroup(r) => code(r.error_code),
        ResponseKind::SyncGroup(r) => code(r.error_code),
        ResponseKind::Heartbeat(r) => code(r.error_code),
        ResponseKind::LeaveGroup(r) => code(r.error_code),
        ResponseKind::ListGroups(r) => code(r.error_code),
        ResponseKind::ApiVersions(r) => code(r.error_code),
        ResponseKind::InitProducerId(r) => code(r.error_code),
        ResponseKind::EndTxn(r) => code(r.error_code),
        ResponseKind::AddOffsetsToTxn(r) => code(r.error_code),
        ResponseKind::ConsumerGroupHeartbeat(r) => code(r.error_code),
        ResponseKind::ShareGroupHeartbeat(r) => code(r.error_code),
        ResponseKind::ShareFetch(r) => {
            code(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| code(p.error_code));
        }
        ResponseKind::DescribeCluster(r) => code(r.error_code),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ProduceResponse;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };

    use super::*;

    #[test]
    fn api_names_are_the_protocol_guides() {
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(
            api_name(ApiKey::ConsumerGroupHeartbeat),
            "ConsumerGroupHeartbeat"
        );
    }

    #[test]
    fn a_produce_counts_each_partitions_error() {
        let response = ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
            TopicProduceResponse::default().with_partition_responses(vec![
                PartitionProduceResponse::default().with_error_code(6),
                PartitionProduceResponse::default().with_error_code(0),
                PartitionProduceResponse::default().with_error_code(6),
            ]),
        ]));
        let mut codes = Vec::new();
        for_each_error(&response, |c| codes.push(c));
        assert_eq!(codes, [6, 6]);
    }
}
