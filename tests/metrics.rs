//! `GET /metrics` on a real `weir serve`, scraped as Prometheus would
//! while librdkafka clients produce and consume: requests by API, errors by
//! Kafka's name, bytes and records in and out per topic, the partitions'
//! offsets and sizes, a consumer group's lag falling to zero as it commits,
//! the group commits' fdatasyncs, connections, and the process; a deleted
//! topic's series go; a single node's partitions are never short of
//! replicas; a share group's records in flight, its dead letters and the
//! bytes its ShareFetches hand out; delayed records pending, then delivered
//! with their lateness; `metrics.enabled=false` answers 404 and leaves
//! clients served. (A cluster's quorum and under-replicated partitions are
//! scraped in tests/cluster.rs.)

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::share::{ACCEPT, Member, REJECT};
use common::{Broker, CLIENT_TIMEOUT};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "metered";
const PARTITIONS: i32 = 2;
const RECORDS: usize = 200;
const GROUP: &str = "metered-readers";

/// The series of one scrape: `name{labels}` → value, as Prometheus'
/// text format writes them, and the families its `# TYPE` lines name.
struct Scraped(HashMap<String, f64>, HashSet<String>);

impl Scraped {
    fn get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    fn value(&self, series: &str) -> anyhow::Result<f64> {
        self.get(series)
            .with_context(|| format!("no series {series} in the scrape"))
    }

    /// Whether any series of family `name` has a label `label="value"`.
    fn any(&self, name: &str, label: &str) -> bool {
        self.0
            .keys()
            .any(|series| series.starts_with(&format!("{name}{{")) && series.contains(label))
    }
}

/// `GET /metrics`: its status, content type and, on 200, its series.
fn scrape(broker: &Broker) -> anyhow::Result<(u16, String, Option<Scraped>)> {
    let addr = broker.admin_addr().context("no admin address")?;
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("http://{addr}/metrics"))
        .send()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.text()?;
    if status != 200 {
        return Ok((status, content_type, None));
    }
    let families = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let mut series = HashMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("not a sample line: {line}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("not a sample value: {line}"))?;
        series.insert(name.to_owned(), value);
    }
    Ok((status, content_type, Some(Scraped(series, families))))
}

fn scraped(broker: &Broker) -> anyhow::Result<Scraped> {
    match scrape(broker)? {
        (200, content_type, Some(scraped)) => {
            ensure!(
                content_type.starts_with("text/plain; version=0.0.4"),
                "content type {content_type}"
            );
            Ok(scraped)
        }
        (status, _, _) => anyhow::bail!("/metrics answered {status}"),
    }
}

fn produce(bootstrap: &str) -> anyhow::Result<()> {
    let producer: rdkafka::producer::BaseProducer = common::producer_config(bootstrap).create()?;
    for i in 0..RECORDS {
        let key = format!("k{i}");
        let partition = i32::try_from(i)? % PARTITIONS;
        producer
            .send(
                BaseRecord::to(TOPIC)
                    .key(&key)
                    .payload("value")
                    .partition(partition),
            )
            .map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
    }
    producer.flush(CLIENT_TIMEOUT)?;
    Ok(())
}

/// The lag the scrape shows for GROUP in each partition.
fn lags(scraped: &Scraped) -> Vec<Option<f64>> {
    (0..PARTITIONS)
        .map(|p| {
            scraped.get(&format!(
                "weir_consumer_group_lag{{group=\"{GROUP}\",partition=\"{p}\",topic=\"{TOPIC}\"}}"
            ))
        })
        .collect()
}

/// Check that every metric the Grafana dashboard asks for that `chosen`
/// picks is a family of `m`; how many were asked.
fn dashboard_asks(m: &Scraped, chosen: impl Fn(&str) -> bool) -> anyhow::Result<usize> {
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/weir.json"),
    )?;
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard)?;
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for target in panel["targets"].as_array().context("no targets")? {
            let expr = target["expr"].as_str().context("no expr")?;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("weir_") || word.starts_with("process_")) || !chosen(word) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| word.strip_suffix(suffix))
                    .filter(|base| m.1.contains(*base))
                    .unwrap_or(word);
                ensure!(
                    m.1.contains(family),
                    "the dashboard asks for {word}, not exported"
                );
                asked += 1;
            }
        }
    }
    Ok(asked)
}

#[test]
fn a_scrape_shows_traffic_partitions_lag_and_the_process() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "auto.create.topics.enable=false"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, TOPIC, PARTITIONS, &[])?;
    produce(&bootstrap)?;

    // A group commits half of each partition: its lag is the other half.
    let consumer: BaseConsumer = common::consumer_config(&bootstrap)
        .set("group.id", GROUP)
        .create()?;
    let per_partition = i64::try_from(RECORDS)? / i64::from(PARTITIONS);
    let commit = |offset: i64| -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            offsets.add_partition_offset(TOPIC, p, Offset::Offset(offset))?;
        }
        consumer.commit(&offsets, CommitMode::Sync)?;
        Ok(())
    };
    commit(per_partition / 2)?;
    let half = (per_partition / 2) as f64;
    common::wait_until(Duration::from_secs(10), "the half lag to show", || {
        Ok(lags(&scraped(&broker)?) == vec![Some(half); PARTITIONS as usize])
    })?;
    // It reads everything and commits the end: its lag falls to zero.
    let ends = (0..PARTITIONS).map(|p| (p, per_partition)).collect();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(TOPIC, p, Offset::Offset(0))?;
    }
    common::read_until(&consumer, &assignment, &ends, CLIENT_TIMEOUT)?;
    commit(per_partition)?;
    let m = scraped(&broker)?;
    ensure!(
        lags(&m) == vec![Some(0.0); PARTITIONS as usize],
        "lags {:?}",
        lags(&m)
    );

    let topic = format!("topic=\"{TOPIC}\"");
    ensure!(m.value(&format!("weir_topic_records_in_total{{{topic}}}"))? == RECORDS as f64);
    ensure!(m.value(&format!("weir_topic_records_out_total{{{topic}}}"))? >= RECORDS as f64);
    let bytes_in = m.value(&format!("weir_topic_bytes_in_total{{{topic}}}"))?;
    let bytes_out = m.value(&format!("weir_topic_bytes_out_total{{{topic}}}"))?;
    ensure!(bytes_in > (RECORDS * 5) as f64, "bytes in {bytes_in}");
    ensure!(
        bytes_out >= bytes_in,
        "bytes out {bytes_out} < in {bytes_in}"
    );
    let mut total_size = 0.0;
    for p in 0..PARTITIONS {
        let labels = format!("{{partition=\"{p}\",{topic}}}");
        ensure!(
            m.value(&format!("weir_partition_high_watermark{labels}"))? == per_partition as f64
        );
        ensure!(
            m.value(&format!("weir_partition_log_end_offset{labels}"))? == per_partition as f64
        );
        ensure!(m.value(&format!("weir_partition_log_start_offset{labels}"))? == 0.0);
        total_size += m.value(&format!("weir_partition_size_bytes{labels}"))?;
    }
    ensure!(
        total_size >= bytes_in,
        "partition sizes {total_size} < bytes in {bytes_in}"
    );
    ensure!(m.any("weir_requests_total", "api=\"Produce\""));
    ensure!(m.any("weir_requests_total", "api=\"Fetch\""));
    ensure!(m.any("weir_request_duration_seconds_count", "api=\"Produce\""));
    ensure!(m.value("weir_log_fsync_duration_seconds_count")? > 0.0);
    ensure!(m.value("weir_log_group_commit_bytes_sum")? >= bytes_in);
    ensure!(m.value("weir_connections{listener=\"PLAINTEXT\"}")? >= 1.0);
    ensure!(m.value("weir_requests_in_flight")? >= 0.0);
    ensure!(m.value("process_resident_memory_bytes")? > 0.0);
    ensure!(m.value("process_open_fds")? > 0.0);
    ensure!(m.value("process_threads")? > 1.0);
    // One node holds every replica and leads every partition.
    ensure!(m.value("weir_under_replicated_partitions")? == 0.0);
    ensure!(m.value("weir_under_min_isr_partitions")? == 0.0);
    ensure!(m.value("weir_offline_partitions")? == 0.0);
    ensure!(
        !m.any("weir_raft_term", ""),
        "a single node has no quorum to report"
    );

    // A topic that does not exist is an error, counted by Kafka's name.
    let metadata = consumer.fetch_metadata(Some("no-such-topic"), CLIENT_TIMEOUT)?;
    ensure!(metadata.topics()[0].error().is_some());
    let m = scraped(&broker)?;
    ensure!(
        m.value(
            "weir_request_errors_total{api=\"Metadata\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"}"
        )? >= 1.0
    );

    // The Grafana dashboard asks only for families the broker exports
    // (an error family shows once an error has been counted); the share
    // groups' are checked below, the quorum's in tests/cluster.rs.
    let asked = dashboard_asks(&m, |word| {
        !(word.starts_with("weir_raft_") || word.starts_with("weir_share_group_"))
    })?;
    ensure!(asked >= 18, "the dashboard asks for {asked} metrics");

    // A deleted topic's series go.
    drop(consumer);
    common::cli::weir_ok(&broker, &["topic", "delete", TOPIC], b"")?;
    let m = scraped(&broker)?;
    ensure!(!m.any("weir_topic_records_in_total", &topic));
    ensure!(!m.any("weir_partition_high_watermark", &topic));
    Ok(())
}

#[test]
fn with_metrics_off_the_scrape_is_refused_and_clients_are_served() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "metrics.enabled=false"])?;
    let (status, _, _) = scrape(&broker)?;
    ensure!(status == 404, "/metrics answered {status}");
    common::assert_serves_clients(&broker.bootstrap())?;
    Ok(())
}

#[test]
fn share_groups_and_delayed_records_show_what_they_hold() -> anyhow::Result<()> {
    const SHARED: &str = "metered-shares";
    const SHARE_GROUP: &str = "metered-workers";
    let broker = Broker::start(&["--set", "group.share.enable=true"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, SHARED, 1, &[])?;
    let mut member = Member::join(&bootstrap, SHARE_GROUP, SHARED)?;
    let producer: rdkafka::producer::BaseProducer = common::producer_config(&bootstrap).create()?;
    for i in 0..3 {
        let value = format!("record-{i}");
        producer
            .send(
                BaseRecord::<(), str>::to(SHARED)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(CLIENT_TIMEOUT)?;

    // Three records acquired and held under their locks.
    ensure!(member.fetch_until(3)?.len() == 3);
    let series = format!("{{group=\"{SHARE_GROUP}\",partition=\"0\",topic=\"{SHARED}\"}}");
    let m = scraped(&broker)?;
    ensure!(m.value(&format!("weir_share_group_records_acquired{series}"))? == 3.0);
    let topic = format!("{{topic=\"{SHARED}\"}}");
    ensure!(m.value(&format!("weir_topic_records_out_total{topic}"))? == 3.0);
    ensure!(m.value(&format!("weir_topic_bytes_out_total{topic}"))? > 0.0);

    // One rejected, two accepted: one dead letter, nothing held.
    ensure!(member.acknowledge(&[(0, 0, REJECT), (1, 2, ACCEPT)])? == (0, 0));
    let dead = format!("weir_share_group_dead_letters_total{{group=\"{SHARE_GROUP}\"}}");
    common::wait_until(
        Duration::from_secs(10),
        "the dead letter to be counted",
        || Ok(scraped(&broker)?.get(&dead) == Some(1.0)),
    )?;
    let m = scraped(&broker)?;
    ensure!(m.value(&format!("weir_share_group_records_acquired{series}"))? == 0.0);
    ensure!(m.value(&format!("weir_share_group_records_dead_lettering{series}"))? == 0.0);
    let asked = dashboard_asks(&m, |word| word.starts_with("weir_share_group_"))?;
    ensure!(
        asked == 2,
        "the dashboard asks for {asked} share group metrics"
    );

    // A record delayed two seconds is pending, then delivered late by
    // some milliseconds.
    const DELAYED: &str = "metered-delays";
    common::create_topic_blocking(&bootstrap, DELAYED, 1, &[])?;
    producer
        .send(BaseRecord::<(), str>::to(DELAYED).payload("later").headers(
            OwnedHeaders::new().insert(Header {
                key: "weir.delay-ms",
                value: Some("2000"),
            }),
        ))
        .map_err(|(e, _)| e)?;
    producer.flush(CLIENT_TIMEOUT)?;
    common::wait_until(Duration::from_secs(10), "the record to be pending", || {
        Ok(scraped(&broker)?.get("weir_delayed_records_pending") == Some(1.0))
    })?;
    common::wait_until(
        Duration::from_secs(15),
        "the record to be delivered",
        || {
            let m = scraped(&broker)?;
            Ok(
                m.get("weir_delayed_delivery_lateness_seconds_count") == Some(1.0)
                    && m.get("weir_delayed_records_pending") == Some(0.0)
                    && m.get("weir_delayed_records_due") == Some(0.0),
            )
        },
    )?;
    let m = scraped(&broker)?;
    ensure!(m.value("weir_delayed_delivery_lateness_seconds_sum")? >= 0.0);
    Ok(())
}
