//! Client quotas and connection limits end to end, against a real `weir
//! serve`, with librdkafka (the `rdkafka` crate) as the client being
//! throttled and `weir quota` setting the quotas.
//!
//! What users rely on: a producer over its `producer_byte_rate` is held to
//! within 10% of it while a second tenant, with its own quota, gets all of
//! its own at the same time; a consumer over its `consumer_byte_rate` is
//! held to it; `weir quota` sets, shows (as text and JSON, filtered as
//! `rpk cluster quotas describe` filters) and removes quotas, which
//! survive a restart, and refuses what Kafka refuses; an address past
//! `max.connections.per.ip` (or its override) has its next connection
//! closed, and one over its `connection_creation_rate` has new
//! connections closed unanswered; on a cluster, a quota set through one
//! broker is enforced by the others.
//!
//! Rates are measured after the quota's windows have filled once (the
//! broker runs with `quota.window.num=2`, so a client may first send a
//! window's worth at once, as Kafka allows), over twenty seconds.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use common::Broker;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;

/// Two quota windows of a second: a rate over them lets a client run at
/// most about a second's worth ahead of its quota at any moment (Kafka's
/// eleven let it run ten seconds' worth ahead, then hold it back as long),
/// which over twenty seconds is within a few percent.
const WINDOWS: [&str; 4] = [
    "--set",
    "quota.window.num=2",
    "--set",
    "quota.window.size.seconds=1",
];
/// Measuring starts once the windows have filled and the first burst they
/// allow has been paid for, and lasts this long.
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURED: Duration = Duration::from_secs(20);
const RECORD_BYTES: usize = 8 * 1024;

fn quota_broker() -> anyhow::Result<Broker> {
    let mut args = vec!["--default-partitions", "1"];
    args.extend(WINDOWS);
    Broker::start(&args)
}

/// `weir quota ARGS`, which must exit 0; its stdout.
fn quota_ok(broker: &Broker, args: &[&str]) -> anyhow::Result<String> {
    let argv: Vec<&str> = std::iter::once("quota")
        .chain(args.iter().copied())
        .collect();
    common::cli::weir_ok(broker, &argv, b"")
}

/// Payload bytes acknowledged, with when each was.
#[derive(Clone, Default)]
struct Acked(Arc<Mutex<Vec<(Instant, usize)>>>);

impl ClientContext for Acked {}

impl ProducerContext for Acked {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Ok(message) = result {
            let bytes = message.payload().map_or(0, <[u8]>::len);
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), bytes));
        }
    }
}

/// Bytes per second acknowledged between `from` and `from + MEASURED`.
fn rate(acked: &Acked, from: Instant) -> f64 {
    let until = from + MEASURED;
    let acked = acked.0.lock().unwrap_or_else(|p| p.into_inner());
    let bytes: usize = acked
        .iter()
        .filter(|(at, _)| *at >= from && *at < until)
        .map(|(_, bytes)| bytes)
        .sum();
    bytes as f64 / MEASURED.as_secs_f64()
}

/// Produce as fast as the client can to `topic` as `client_id` until
/// `until`, and answer what was acknowledged when.
fn produce_flat_out(
    bootstrap: &str,
    client_id: &str,
    topic: &str,
    until: Instant,
) -> anyhow::Result<Acked> {
    let acked = Acked::default();
    let producer: BaseProducer<Acked> = common::producer_config(bootstrap)
        .set("client.id", client_id)
        .set("queue.buffering.max.messages", "2000")
        .set("batch.size", "131072")
        .create_with_context(acked.clone())
        .context("cannot create the producer")?;
    let value = vec![b'q'; RECORD_BYTES];
    while Instant::now() < until {
        match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(&value)) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).context("producing"),
        }
    }
    // What is still queued is not measured.
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    producer.poll(Duration::from_millis(100));
    Ok(acked)
}

fn within_ten_percent(what: &str, rate: f64, quota: f64) -> anyhow::Result<()> {
    let off = (rate - quota).abs() / quota;
    eprintln!("{what}: {rate:.0} B/s against a quota of {quota:.0} B/s");
    ensure!(
        off <= 0.10,
        "{what}: {rate:.0} B/s is {:.1}% off its quota of {quota:.0} B/s",
        off * 100.0
    );
    Ok(())
}

#[test]
fn a_producer_over_its_byte_rate_is_held_to_it_and_another_tenant_is_not_slowed()
-> anyhow::Result<()> {
    let broker = quota_broker()?;
    let bootstrap = broker.bootstrap();
    const QUOTA_A: f64 = 512.0 * 1024.0;
    const QUOTA_B: f64 = 1536.0 * 1024.0;
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "client-id=tenant-a",
            "--add",
            "producer_byte_rate=524288",
        ],
    )?;
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "client-id=tenant-b",
            "--add",
            "producer_byte_rate=1572864",
        ],
    )?;
    common::create_topic_blocking(&bootstrap, "tenant-a", 1, &[])?;
    common::create_topic_blocking(&bootstrap, "tenant-b", 1, &[])?;
    let start = Instant::now();
    let until = start + WARM_UP + MEASURED + Duration::from_secs(1);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| produce_flat_out(&bootstrap, "tenant-a", "tenant-a", until));
        let b = scope.spawn(|| produce_flat_out(&bootstrap, "tenant-b", "tenant-b", until));
        (a.join(), b.join())
    });
    let a = a.map_err(|_| anyhow::anyhow!("tenant a's producer panicked"))??;
    let b = b.map_err(|_| anyhow::anyhow!("tenant b's producer panicked"))??;
    let from = start + WARM_UP;
    within_ten_percent("tenant a", rate(&a, from), QUOTA_A)?;
    within_ten_percent("tenant b, beside tenant a", rate(&b, from), QUOTA_B)?;
    Ok(())
}

#[test]
fn a_consumer_over_its_byte_rate_is_held_to_it() -> anyhow::Result<()> {
    let broker = quota_broker()?;
    let bootstrap = broker.bootstrap();
    const QUOTA: f64 = 1024.0 * 1024.0;
    common::create_topic_blocking(&bootstrap, "history", 1, &[])?;
    // More than the consumer may read in the time measured, in batches
    // small next to the quota, so each fetch answers a small part of it.
    let producer: BaseProducer = common::producer_config(&bootstrap)
        .set("batch.size", "65536")
        .create()
        .context("cannot create the producer")?;
    let value = vec![b'h'; RECORD_BYTES];
    let records = (QUOTA as usize * 30) / RECORD_BYTES;
    for _ in 0..records {
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to("history").payload(&value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("the history was not written")?;
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "client-id=reader",
            "--add",
            "consumer_byte_rate=1048576",
        ],
    )?;
    let consumer: BaseConsumer = common::consumer_config(&bootstrap)
        .set("client.id", "reader")
        .set("message.max.bytes", "65536")
        .set("max.partition.fetch.bytes", "65536")
        .set("fetch.max.bytes", "131072")
        .create()
        .context("cannot create the consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("history", 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let start = Instant::now();
    let (from, until) = (start + WARM_UP, start + WARM_UP + MEASURED);
    let mut read = 0usize;
    while Instant::now() < until {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.context("consuming")?;
        if Instant::now() >= from {
            read += message.payload().map_or(0, <[u8]>::len);
        }
    }
    let rate = read as f64 / MEASURED.as_secs_f64();
    within_ten_percent("the consumer", rate, QUOTA)
}

#[test]
fn weir_quota_sets_shows_and_removes_quotas_that_survive_a_restart() -> anyhow::Result<()> {
    let mut broker = quota_broker()?;
    let out = quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "user=alice",
            "--default",
            "client-id",
            "--add",
            "producer_byte_rate=1048576",
            "--add",
            "request_percentage=25.5",
        ],
    )?;
    ensure!(
        out.contains("altered the quotas of user=alice, client-id=<default>"),
        "{out}"
    );
    quota_ok(
        &broker,
        &[
            "alter",
            "--default",
            "user",
            "--add",
            "consumer_byte_rate=2048",
        ],
    )?;
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "ip=10.1.2.3",
            "--add",
            "connection_creation_rate=5",
        ],
    )?;
    // A dry run changes nothing.
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "user=bob",
            "--add",
            "producer_byte_rate=1",
            "--dry-run",
        ],
    )?;

    let all = listing(&broker, &[])?;
    let quotas = all["quotas"].as_array().context("no quotas array")?;
    ensure!(quotas.len() == 3, "three entities have quotas: {all}");
    let alice = listing(&broker, &["--name", "user=alice"])?;
    ensure!(
        alice["quotas"][0]["values"]
            == serde_json::json!({"producer_byte_rate": 1048576.0, "request_percentage": 25.5}),
        "{alice}"
    );
    ensure!(
        alice["quotas"][0]["entity"]
            == serde_json::json!([
                {"type": "client-id", "name": null},
                {"type": "user", "name": "alice"}
            ]),
        "{alice}"
    );
    // --strict leaves out alice's entity, which also has a client id.
    let users = listing(&broker, &["--any", "user", "--strict"])?;
    ensure!(
        users["quotas"].as_array().map(Vec::len) == Some(1)
            && users["quotas"][0]["entity"][0]["name"].is_null(),
        "only the default user: {users}"
    );
    let defaults = listing(&broker, &["--default", "user"])?;
    ensure!(
        defaults["quotas"].as_array().map(Vec::len) == Some(1),
        "{defaults}"
    );

    // Refused as Kafka refuses it: exit 1 with the broker's reason.
    let bad = common::cli::weir(
        &broker,
        &[
            "quota",
            "alter",
            "--name",
            "user=alice",
            "--add",
            "connection_creation_rate=3",
        ],
        b"",
    )?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        bad.status.code() == Some(1) && stderr.contains("connection_creation_rate"),
        "{:?} {stderr}",
        bad.status
    );
    // A command line that names no entity is a usage error, exit 2.
    let usage = common::cli::weir(
        &broker,
        &["quota", "alter", "--add", "producer_byte_rate=1"],
        b"",
    )?;
    ensure!(usage.status.code() == Some(2), "{:?}", usage.status);

    broker.restart()?;
    let text = quota_ok(&broker, &["describe", "--name", "ip=10.1.2.3"])?;
    ensure!(
        text.contains("ip=10.1.2.3") && text.contains("connection_creation_rate=5"),
        "{text}"
    );
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "user=alice",
            "--default",
            "client-id",
            "--delete",
            "producer_byte_rate",
        ],
    )?;
    let alice = listing(&broker, &["--name", "user=alice"])?;
    ensure!(
        alice["quotas"][0]["values"] == serde_json::json!({"request_percentage": 25.5}),
        "{alice}"
    );
    Ok(())
}

/// `weir ARGS`, which must fail: its stderr.
fn weir_fails(broker: &Broker, args: &[&str]) -> anyhow::Result<String> {
    let output = common::cli::weir(broker, args, b"")?;
    ensure!(!output.status.success(), "weir {args:?} should have failed");
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn topic_mutations_past_controller_mutation_rate_are_refused_or_throttled() -> anyhow::Result<()> {
    // A burst of one window of two seconds: at 0.1 partitions a second, a
    // 4-partition topic leaves a debt of 3.8 partitions, 38 seconds long.
    let broker = Broker::start(&[
        "--set",
        "controller.quota.window.num=1",
        "--set",
        "controller.quota.window.size.seconds=2",
    ])?;
    let bootstrap = broker.bootstrap();
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "client-id=weir-cli",
            "--add",
            "controller_mutation_rate=0.1",
        ],
    )?;
    // The mutation that finds tokens left is done in full.
    common::cli::weir_ok(
        &broker,
        &["topic", "create", "burst", "--partitions", "4"],
        b"",
    )?;
    // The CLI's CreateTopics v7 and DeleteTopics v6 are strict: refused.
    let refused = weir_fails(&broker, &["topic", "create", "later", "--partitions", "1"])?;
    ensure!(refused.contains("error code 89"), "{refused}");
    let refused = weir_fails(
        &broker,
        &["topic", "add-partitions", "burst", "--total", "5"],
    )?;
    ensure!(refused.contains("error code 89"), "{refused}");
    let refused = weir_fails(&broker, &["topic", "delete", "burst"])?;
    ensure!(refused.contains("error code 89"), "{refused}");
    // A request that fails anyway gets its own error first.
    let exists = weir_fails(&broker, &["topic", "create", "burst", "--partitions", "1"])?;
    ensure!(exists.contains("error code 36"), "{exists}");
    // librdkafka's CreateTopics (v4 and older) is not refused, only
    // throttled (its connection is muted afterwards, so it asks once).
    let admin: rdkafka::admin::AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("client.id", "weir-cli")
        .create()?;
    let new = rdkafka::admin::NewTopic::new("older", 1, rdkafka::admin::TopicReplication::Fixed(1));
    let runtime = tokio::runtime::Runtime::new()?;
    let results = runtime.block_on(admin.create_topics([&new], &common::admin_options()))?;
    for result in results {
        result.map_err(|(name, code)| anyhow::anyhow!("{name}: {code:?}"))?;
    }
    let listed = common::cli::weir_ok(&broker, &["topic", "list"], b"")?;
    for topic in ["burst", "older"] {
        ensure!(
            listed.lines().any(|l| l.trim() == topic),
            "{topic} missing: {listed}"
        );
    }
    ensure!(!listed.lines().any(|l| l.trim() == "later"), "{listed}");
    // Without the quota, the same mutation goes ahead at once.
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "client-id=weir-cli",
            "--delete",
            "controller_mutation_rate",
        ],
    )?;
    common::cli::weir_ok(
        &broker,
        &["topic", "create", "later", "--partitions", "1"],
        b"",
    )?;
    common::cli::weir_ok(&broker, &["topic", "delete", "burst"], b"")?;
    Ok(())
}

/// `weir quota describe ARGS --json`, parsed.
fn listing(broker: &Broker, args: &[&str]) -> anyhow::Result<Value> {
    let argv: Vec<&str> = ["describe"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--json"])
        .collect();
    let out = quota_ok(broker, &argv)?;
    serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))
}

/// Whether a new connection to `bootstrap` is served: it answers
/// ApiVersions, rather than being closed.
fn served(bootstrap: &str) -> anyhow::Result<Option<common::raw::RawClient>> {
    let config = weir_client::Config {
        io_timeout: Duration::from_secs(10),
        ..weir_client::Config::new("limits")
    };
    let mut raw = common::raw::RawClient::connect_with(bootstrap, &config)?;
    match raw.version::<kafka_protocol::messages::MetadataRequest>(12) {
        Ok(_) => Ok(Some(raw)),
        Err(_) => Ok(None),
    }
}

#[test]
fn an_address_past_max_connections_per_ip_has_its_next_connection_closed() -> anyhow::Result<()> {
    let broker = Broker::start(&[
        "--set",
        "max.connections.per.ip=1",
        "--set",
        "max.connections.per.ip.overrides=127.0.0.1:2",
    ])?;
    let bootstrap = broker.bootstrap();
    // The start-up check's own connection may still be closing.
    let mut first = None;
    common::wait_until(Duration::from_secs(10), "a first connection", || {
        first = served(&bootstrap)?;
        Ok(first.is_some())
    })?;
    let second = served(&bootstrap)?.context("the override allows a second")?;
    ensure!(served(&bootstrap)?.is_none(), "a third is closed");
    drop(first);
    // Once one closes, its place is free again.
    common::wait_until(
        Duration::from_secs(10),
        "a connection after one closed",
        || Ok(served(&bootstrap)?.is_some()),
    )?;
    drop(second);
    Ok(())
}

#[test]
fn an_address_over_its_connection_creation_rate_has_new_connections_closed() -> anyhow::Result<()> {
    let broker = quota_broker()?;
    let bootstrap = broker.bootstrap();
    quota_ok(
        &broker,
        &[
            "alter",
            "--name",
            "ip=127.0.0.1",
            "--add",
            "connection_creation_rate=1",
        ],
    )?;
    // One per second, over at least one window: of five connections made
    // at once, the first is served and the rest closed unanswered.
    let config = weir_client::Config {
        io_timeout: Duration::from_secs(10),
        ..weir_client::Config::new("limits")
    };
    let mut made = (0..5)
        .map(|_| common::raw::RawClient::connect_with(&bootstrap, &config))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes: Vec<bool> = made
        .iter_mut()
        .map(|raw| {
            raw.version::<kafka_protocol::messages::MetadataRequest>(12)
                .is_ok()
        })
        .collect();
    ensure!(
        outcomes == [true, false, false, false, false],
        "served: {outcomes:?}"
    );
    let mut kept: Vec<_> = made.into_iter().take(1).collect();
    // The connections served were not disturbed.
    for raw in &mut kept {
        let request =
            kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![]));
        raw.send(&request, 12)?;
    }
    Ok(())
}

/// The `throttle_time_ms` of a Produce of one 4 KiB record to `topic`'s
/// partition 0 at `address`, sent as `client_id`.
fn produce_throttle(address: &str, client_id: &str, topic: &str) -> anyhow::Result<i32> {
    let mut raw =
        common::raw::RawClient::connect_with(address, &weir_client::Config::new(client_id))?;
    let value = vec![b'x'; 4096];
    let batch = common::raw::record_batch(&[value.as_slice()])?;
    let response = raw.send(&common::raw::produce_request(topic, 0, batch), 9)?;
    Ok(response.throttle_time_ms)
}

#[test]
fn a_quota_set_through_one_broker_of_a_cluster_is_enforced_by_every_broker() -> anyhow::Result<()> {
    let nodes = common::security::start_cluster(3, "", &[])?;
    let bootstraps: Vec<String> = nodes.iter().map(Broker::bootstrap).collect();
    common::create_topic_blocking(&bootstraps[0], "metered", 1, &[])?;
    // A byte rate no produce can stay under.
    quota_ok(
        &nodes[0],
        &[
            "alter",
            "--name",
            "client-id=metered",
            "--add",
            "producer_byte_rate=1",
        ],
    )?;
    for (node, address) in nodes.iter().zip(&bootstraps) {
        common::wait_until(
            Duration::from_secs(15),
            "the quota to reach every broker",
            || Ok(produce_throttle(address, "metered", "metered")? > 0),
        )
        .with_context(|| format!("at {address}: {}", node.stderr_tail()))?;
        ensure!(
            produce_throttle(address, "free", "metered")? == 0,
            "a client id without a quota is not throttled at {address}"
        );
    }
    quota_ok(
        &nodes[2],
        &[
            "alter",
            "--name",
            "client-id=metered",
            "--delete",
            "producer_byte_rate",
        ],
    )?;
    for address in &bootstraps {
        common::wait_until(
            Duration::from_secs(15),
            "the quota's removal to reach every broker",
            || Ok(produce_throttle(address, "metered", "metered")? == 0),
        )?;
    }
    Ok(())
}
