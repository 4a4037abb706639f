//! weir-metrics: the broker's Prometheus metrics. It owns the registry,
//! the metric families that the layers record into as work happens (the
//! server's requests and connections, the broker's bytes and records per
//! topic, the commit log's fdatasyncs), the switch that turns recording off
//! (`metrics.enabled=false`), and the text exposition `GET /metrics` serves.
//!
//! Values read from state at scrape time (partition offsets and sizes,
//! consumer lag, the quorum) are not kept here: the admin API builds them
//! when it is asked ([`Scrape`]), so that a broker nobody scrapes pays
//! nothing for them.
//!
//! Every name follows Prometheus' conventions: a `weir_` prefix, base
//! units (seconds, bytes), `_total` on counters. docs/operations.md lists
//! each one and what it means.
//!
//! The families live in one process-wide [`Metrics`], as a process is one
//! broker. Recording costs a label lookup and an atomic add; with
//! `metrics.enabled=false` it costs one relaxed atomic load.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Whether metrics are recorded (`metrics.enabled`).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether metrics are recorded: callers skip their recording when not.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turn recording on or off (`metrics.enabled`), once at start.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The families recorded as work happens.
pub struct Metrics {
    registry: Registry,
    /// `weir_requests_total{api, version}`: requests answered (or, for a
    /// produce with acks=0, done).
    pub requests: IntCounterVec,
    /// `weir_request_errors_total{api, error}`: error codes in responses,
    /// by Kafka's name (`NOT_LEADER_OR_FOLLOWER`), one per partition or
    /// resource that carried one.
    pub request_errors: IntCounterVec,
    /// `weir_request_duration_seconds{api}`: from a request's last byte
    /// read to its response encoded.
    pub request_duration: HistogramVec,
    /// `weir_requests_in_flight`: requests read and not yet answered.
    pub requests_in_flight: IntGauge,
    /// `weir_connections{listener}`: client connections open.
    pub connections: IntGaugeVec,
    /// `weir_topic_bytes_in_total{topic}`: bytes of record batches
    /// appended by producers.
    pub topic_bytes_in: IntCounterVec,
    /// `weir_topic_records_in_total{topic}`: records appended by producers.
    pub topic_records_in: IntCounterVec,
    /// `weir_topic_bytes_out_total{topic}`: bytes of record batches sent to
    /// consumers (followers' fetches not counted).
    pub topic_bytes_out: IntCounterVec,
    /// `weir_topic_records_out_total{topic}`: records sent to consumers.
    pub topic_records_out: IntCounterVec,
    /// `weir_log_fsync_duration_seconds`: each group commit's fdatasyncs.
    pub fsync_duration: Histogram,
    /// `weir_log_group_commit_bytes`: bytes each group commit made durable.
    pub group_commit_bytes: Histogram,
    /// `weir_delayed_records_pending`: delayed records this broker's
    /// schedule holds that are not yet due.
    pub delayed_pending: IntGauge,
    /// `weir_delayed_records_due`: delayed records due and handed to
    /// delivery whose copies are not committed yet.
    pub delayed_due: IntGauge,
    /// `weir_delayed_delivery_lateness_seconds`: how long after its due
    /// time each delayed record's copy was appended.
    pub delayed_lateness: Histogram,
    /// `weir_share_group_dead_letters_total{group}`: records a share group
    /// gave up on whose dead letters were written.
    pub share_dead_letters: IntCounterVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Request latencies: 100 µs to about 13 s, doubling.
fn duration_buckets() -> Vec<f64> {
    (0..18).map(|i| 0.0001 * f64::from(1u32 << i)).collect()
}

/// Delayed-delivery lateness: 1 ms to about 35 minutes, doubling (a broker
/// that was down delivers what fell due meanwhile as late as it was down).
fn lateness_buckets() -> Vec<f64> {
    (0..22).map(|i| 0.001 * f64::from(1u32 << i)).collect()
}

/// Group commit sizes: 512 B to 512 MiB, quadrupling.
fn size_buckets() -> Vec<f64> {
    (0..11).map(|i| 512.0 * 4f64.powi(i)).collect()
}

impl Metrics {
    // The names, help texts, labels and buckets below are this crate's own
    // constants, which the prometheus crate accepts; a refusal is a bug
    // here, found by the first test that runs.
    #[allow(clippy::expect_used)]
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let family =
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
            registry
                .register(Box::new(family.clone()))
                .expect("a name registered once");
            family
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let family = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("a valid histogram");
            registry
                .register(Box::new(family.clone()))
                .expect("a name registered once");
            family
        };
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_request_duration_seconds",
                "Time from a request's last byte read to its response encoded, by API.",
            )
            .buckets(duration_buckets()),
            &["api"],
        )
        .expect("a valid histogram");
        let requests_in_flight = IntGauge::new(
            "weir_requests_in_flight",
            "Requests read and not yet answered, over all connections.",
        )
        .expect("a valid gauge");
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid gauge");
            registry
                .register(Box::new(gauge.clone()))
                .expect("a name registered once");
            gauge
        };
        let connections = IntGaugeVec::new(
            Opts::new("weir_connections", "Client connections open, by listener."),
            &["listener"],
        )
        .expect("a valid gauge");
        for family in [
            Box::new(request_duration.clone()) as Box<dyn Collector>,
            Box::new(requests_in_flight.clone()),
            Box::new(connections.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(family).expect("a name registered once");
        }
        Metrics {
            requests: counter(
                "weir_requests_total",
                "Requests handled, by API and version.",
                &["api", "version"],
            ),
            request_errors: counter(
                "weir_request_errors_total",
                "Error codes in responses, by API and Kafka error name: one per partition or resource that carried one.",
                &["api", "error"],
            ),
            request_duration,
            requests_in_flight,
            connections,
            topic_bytes_in: counter(
                "weir_topic_bytes_in_total",
                "Bytes of record batches appended by producers, by topic.",
                &["topic"],
            ),
            topic_records_in: counter(
                "weir_topic_records_in_total",
                "Records appended by producers, by topic.",
                &["topic"],
            ),
            topic_bytes_out: counter(
                "weir_topic_bytes_out_total",
                "Bytes of record batches sent to consumers, by topic (followers' fetches not counted).",
                &["topic"],
            ),
            topic_records_out: counter(
                "weir_topic_records_out_total",
                "Records sent to consumers, by topic (followers' fetches not counted).",
                &["topic"],
            ),
            fsync_duration: histogram(
                "weir_log_fsync_duration_seconds",
                "Time each group commit spent in fdatasync.",
                duration_buckets(),
            ),
            group_commit_bytes: histogram(
                "weir_log_group_commit_bytes",
                "Bytes each group commit made durable.",
                size_buckets(),
            ),
            delayed_pending: gauge(
                "weir_delayed_records_pending",
                "Delayed records in this broker's schedule that are not yet due.",
            ),
            delayed_due: gauge(
                "weir_delayed_records_due",
                "Delayed records due and handed to delivery whose copies are not committed yet.",
            ),
            delayed_lateness: histogram(
                "weir_delayed_delivery_lateness_seconds",
                "Time from a delayed record's due time to its copy's append, per record delivered.",
                lateness_buckets(),
            ),
            share_dead_letters: counter(
                "weir_share_group_dead_letters_total",
                "Records a share group gave up on whose dead letters were written, by group.",
                &["group"],
            ),
            registry,
        }
    }

    /// Record one group commit: `bytes` made durable in `took`.
    pub fn group_commit(&self, bytes: u64, took: Duration) {
        if !enabled() {
            return;
        }
        self.fsync_duration.observe(took.as_secs_f64());
        self.group_commit_bytes.observe(bytes as f64);
    }

    /// Record `bytes` and `records` appended to `topic` by a producer.
    pub fn topic_in(&self, topic: &str, bytes: usize, records: u64) {
        if !enabled() {
            return;
        }
        self.topic_bytes_in
            .with_label_values(&[topic])
            .inc_by(bytes as u64);
        self.topic_records_in
            .with_label_values(&[topic])
            .inc_by(records);
    }

    /// Record `bytes` and `records` of `topic` sent to a consumer.
    pub fn topic_out(&self, topic: &str, bytes: usize, records: u64) {
        if !enabled() || bytes == 0 {
            return;
        }
        self.topic_bytes_out
            .with_label_values(&[topic])
            .inc_by(bytes as u64);
        self.topic_records_out
            .with_label_values(&[topic])
            .inc_by(records);
    }

    /// Record delayed records' copies appended `lateness_ms` each after
    /// they were due.
    pub fn delayed_delivered(&self, lateness_ms: impl Iterator<Item = i64>) {
        if !enabled() {
            return;
        }
        for late in lateness_ms {
            self.delayed_lateness.observe(late.max(0) as f64 / 1000.0);
        }
    }

    /// Record the delayed-delivery schedule's counts: `pending` not yet
    /// due, `due` handed to delivery and not committed.
    pub fn delayed_counts(&self, pending: u64, due: usize) {
        if !enabled() {
            return;
        }
        self.delayed_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.delayed_due.set(i64::try_from(due).unwrap_or(i64::MAX));
    }

    /// Record `count` dead letters written for share group `group`.
    pub fn share_dead_lettered(&self, group: &str, count: usize) {
        if !enabled() || count == 0 {
            return;
        }
        self.share_dead_letters
            .with_label_values(&[group])
            .inc_by(count as u64);
    }

    /// Forget a deleted topic's series, so that deleted topics do not
    /// accumulate.
    pub fn forget_topic(&self, topic: &str) {
        for family in [
            &self.topic_bytes_in,
            &self.topic_records_in,
            &self.topic_bytes_out,
            &self.topic_records_out,
        ] {
            // Absent when nothing was recorded for it.
            let _ = family.remove_label_values(&[topic]);
        }
    }

    /// The recorded families, and then `scraped`, in Prometheus' text
    /// format.
    pub fn encode(&self, scraped: &Scrape) -> String {
        let mut families = self.registry.gather();
        // A family with no series yet (no partition held) is left out: the
        // text format has nothing to say of it.
        families.extend(
            scraped
                .gather()
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        let mut out = Vec::new();
        // The encoder refuses only a family with no series or a name it
        // cannot write, which the families here never are; should one be,
        // the families before it are still answered.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            out.extend_from_slice(format!("# weir: encoding stopped: {e}\n").as_bytes());
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Gauges read from state at scrape time, built for one answer.
#[derive(Default)]
pub struct Scrape {
    families: Vec<IntGaugeVec>,
}

impl Scrape {
    /// A gauge family `name` with `labels`, to set values on; `None` when
    /// the name or labels are not valid Prometheus ones (the caller's
    /// constants; a test of each caller shows them valid).
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
        let family = IntGaugeVec::new(Opts::new(name, help), labels).ok()?;
        self.families.push(family.clone());
        Some(family)
    }

    /// The families built, gathered.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.families.iter().flat_map(|f| f.collect()).collect()
    }
}

/// Kafka's name for an error (`NOT_LEADER_OR_FOLLOWER`) from its Rust
/// variant name (`NotLeaderOrFollower`).
pub fn error_name(variant: &str) -> String {
    let mut name = String::with_capacity(variant.len() + 8);
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_registers_and_encodes_in_the_text_format() {
        let m = metrics();
        m.requests.with_label_values(&["Produce", "9"]).inc();
        m.topic_in("orders", 100, 3);
        m.group_commit(4096, Duration::from_micros(300));
        m.delayed_counts(5, 2);
        m.delayed_delivered([20, -3].into_iter());
        m.share_dead_lettered("workers", 2);
        let mut scrape = Scrape::default();
        let gauge = scrape
            .gauge("weir_test_gauge", "A gauge for this test.", &["topic"])
            .unwrap_or_else(|| panic!("a valid gauge"));
        gauge.with_label_values(&["orders"]).set(7);
        let text = m.encode(&scrape);
        for line in [
            "# TYPE weir_requests_total counter",
            "weir_requests_total{api=\"Produce\",version=\"9\"} 1",
            "weir_topic_bytes_in_total{topic=\"orders\"} 100",
            "weir_topic_records_in_total{topic=\"orders\"} 3",
            "weir_log_group_commit_bytes_count 1",
            "# TYPE weir_log_fsync_duration_seconds histogram",
            "weir_test_gauge{topic=\"orders\"} 7",
            "weir_delayed_records_pending 5",
            "weir_delayed_records_due 2",
            "weir_delayed_delivery_lateness_seconds_count 2",
            "weir_share_group_dead_letters_total{group=\"workers\"} 2",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        m.forget_topic("orders");
        let mut empty = Scrape::default();
        empty.gauge("weir_test_empty", "A gauge with no series.", &["topic"]);
        let text = m.encode(&empty);
        assert!(!text.contains("topic=\"orders\""), "{text}");
        assert!(!text.contains("weir_test_empty"), "{text}");
        assert!(!text.contains("encoding stopped"), "{text}");
    }

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name("NotLeaderOrFollower"), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name("None"), "NONE");
    }
}
