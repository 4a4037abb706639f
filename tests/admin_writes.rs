//! The write side of the HTTP admin API, asked over HTTP as an operator's
//! script would and checked with librdkafka and the `weir` CLI: topics
//! created, altered, grown and deleted (409 for one that exists, 400 for a
//! bad name or config, 415 for a body that is not JSON); a consumer
//! group's offsets reset to the earliest, an offset and a time, a dry run
//! changing nothing and a group with a live member refused; and dead
//! letters redriven to their topic with `weir.redriven-from`, in bounded
//! calls, once, with `weir dlq redrive` and the API taking turns on one
//! dead-letter topic.

mod common;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::Broker;
use common::cli::{weir, weir_ok};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::ResourceSpecifier;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde_json::{Value, json};

/// Longest an admin request may take here.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a change takes to show in metadata or a topic.
const WAIT: Duration = Duration::from_secs(30);

/// `METHOD http://ADDR/PATH` with `body` as JSON: the status and the JSON
/// answer.
fn call(
    broker: &Broker,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let addr = broker.admin_addr().context("no admin address")?;
    let client = reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()?;
    let mut request = client.request(method, format!("http://{addr}{path}"));
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?);
    }
    let response = request
        .send()
        .with_context(|| format!("cannot ask {path}"))?;
    let status = response.status().as_u16();
    let text = response.text()?;
    let json = serde_json::from_str(&text).with_context(|| format!("{path}: {text:?}"))?;
    Ok((status, json))
}

fn post(broker: &Broker, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    call(broker, reqwest::Method::POST, path, Some(body))
}

/// The partition count of `topic` in librdkafka's metadata; `None` when
/// the broker does not know it.
fn partitions(bootstrap: &str, topic: &str) -> anyhow::Result<Option<usize>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), common::CLIENT_TIMEOUT)?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    Ok(found
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len()))
}

/// `topic`'s configs set on the topic itself, by AdminClient.
fn topic_configs(
    bootstrap: &str,
    topic: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = common::admin(bootstrap)?;
    let results = runtime.block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &common::admin_options()),
    )?;
    let resource = results
        .into_iter()
        .next()
        .context("no answer")?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(resource
        .entries
        .into_iter()
        .filter(|e| !e.is_default)
        .filter_map(|e| Some((e.name, e.value?)))
        .collect())
}

#[test]
fn a_topic_is_created_altered_grown_and_deleted_through_the_api() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let (status, body) = post(
        &broker,
        "/v1/topics",
        &json!({"name": "orders", "partitions": 2, "configs": {"retention.ms": 86400000}}),
    )?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["partitions"], 2);
    assert_eq!(body["replication_factor"], 1);
    assert!(body["topic_id"].is_string(), "{body}");
    assert_eq!(partitions(&bootstrap, "orders")?, Some(2));
    assert_eq!(
        topic_configs(&bootstrap, "orders")?.get("retention.ms"),
        Some(&"86400000".to_owned())
    );

    // Kafka's refusals, with their names.
    let (status, body) = post(&broker, "/v1/topics", &json!({"name": "orders"}))?;
    assert_eq!(
        (status, &body["kafka_error"]),
        (409, &json!("TOPIC_ALREADY_EXISTS")),
        "{body}"
    );
    let (status, body) = post(&broker, "/v1/topics", &json!({"name": "no spaces"}))?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["kafka_error"], "INVALID_TOPIC_EXCEPTION");
    let (status, body) = post(
        &broker,
        "/v1/topics",
        &json!({"name": "bad-config", "configs": {"retention.ms": "abc"}}),
    )?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["kafka_error"], "INVALID_CONFIG");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("retention.ms"),
        "{body}"
    );
    let (status, body) = post(
        &broker,
        "/v1/topics",
        &json!({"name": "p", "partitions": 0}),
    )?;
    assert_eq!(status, 400, "{body}");
    // validate_only creates nothing.
    let (status, body) = post(
        &broker,
        "/v1/topics",
        &json!({"name": "checked", "partitions": 3, "validate_only": true}),
    )?;
    assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");
    assert_eq!(partitions(&bootstrap, "checked")?, None);
    // A body that is not JSON (what a cross-site form sends) is refused.
    let addr = broker.admin_addr().context("no admin address")?;
    let response = reqwest::blocking::Client::new()
        .post(format!("http://{addr}/v1/topics"))
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(r#"{"name": "sneaky"}"#)
        .timeout(HTTP_TIMEOUT)
        .send()?;
    assert_eq!(response.status().as_u16(), 415);
    let body: Value = serde_json::from_str(&response.text()?)?;
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(partitions(&bootstrap, "sneaky")?, None);

    // Configs set and deleted incrementally.
    let (status, body) = call(
        &broker,
        reqwest::Method::PATCH,
        "/v1/topics/orders/configs",
        Some(&json!({"set": {"cleanup.policy": "compact"}, "delete": ["retention.ms"]})),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"topic": "orders", "set": ["cleanup.policy"], "deleted": ["retention.ms"]})
    );
    let configs = topic_configs(&bootstrap, "orders")?;
    assert_eq!(configs.get("cleanup.policy"), Some(&"compact".to_owned()));
    assert_eq!(configs.get("retention.ms"), None, "{configs:?}");
    let (status, body) = call(
        &broker,
        reqwest::Method::PATCH,
        "/v1/topics/orders/configs",
        Some(&json!({"set": {"cleanup.policy": "sometimes"}})),
    )?;
    assert_eq!(status, 400, "{body}");

    // Partitions only grow.
    let (status, body) = post(
        &broker,
        "/v1/topics/orders/partitions",
        &json!({"count": 4}),
    )?;
    assert_eq!(
        (status, body),
        (200, json!({"topic": "orders", "partitions": 4}))
    );
    common::wait_until(WAIT, "4 partitions", || {
        Ok(partitions(&bootstrap, "orders")? == Some(4))
    })?;
    let (status, body) = post(
        &broker,
        "/v1/topics/orders/partitions",
        &json!({"count": 3}),
    )?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["kafka_error"], "INVALID_PARTITIONS");
    let (status, body) = post(
        &broker,
        "/v1/topics/nowhere/partitions",
        &json!({"count": 3}),
    )?;
    assert_eq!(status, 404, "{body}");

    let (status, body) = call(&broker, reqwest::Method::DELETE, "/v1/topics/orders", None)?;
    assert_eq!(
        (status, body),
        (200, json!({"topic": "orders", "deleted": true}))
    );
    common::wait_until(WAIT, "the topic gone", || {
        Ok(partitions(&bootstrap, "orders")?.is_none())
    })?;
    let (status, body) = call(&broker, reqwest::Method::DELETE, "/v1/topics/orders", None)?;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["kafka_error"], "UNKNOWN_TOPIC_OR_PARTITION");
    Ok(())
}

/// The first of the test records' timestamps (2023-11-14T22:13:20Z); the
/// record at offset i has this plus i seconds.
const T0_MS: i64 = 1_700_000_000_000;

/// `group`'s committed offset on partition 0 of `topic`, by librdkafka.
fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<Option<i64>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("group.id", group)
        .create()?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let found = consumer.committed_offsets(wanted, common::CLIENT_TIMEOUT)?;
    Ok(found
        .find_partition(topic, 0)
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }))
}

#[test]
fn a_groups_offsets_are_reset_to_earliest_an_offset_and_a_time_unless_it_has_members()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "events", 1, &[])?;
    let producer: BaseProducer = common::producer_config(&bootstrap).create()?;
    for i in 0..10i64 {
        let value = format!("event-{i}");
        producer
            .send(
                BaseRecord::<(), str>::to("events")
                    .partition(0)
                    .payload(value.as_str())
                    .timestamp(T0_MS + i * 1_000),
            )
            .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
    }
    producer.flush(common::CLIENT_TIMEOUT)?;
    // The group has consumed everything, and left.
    {
        let consumer: BaseConsumer = common::consumer_config(&bootstrap)
            .set("group.id", "billing")
            .create()?;
        let mut done = TopicPartitionList::new();
        done.add_partition_offset("events", 0, Offset::Offset(10))?;
        consumer.commit(&done, CommitMode::Sync)?;
    }
    let reset = |body: Value| post(&broker, "/v1/groups/billing/offsets/reset", &body);

    let (status, body) = reset(json!({"topic": "events", "to_earliest": true, "dry_run": true}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"group": "billing", "topic": "events", "dry_run": true, "committed": false,
               "plan": [{"topic": "events", "partition": 0, "current_offset": 10, "new_offset": 0}]})
    );
    assert_eq!(
        committed_offset(&bootstrap, "billing", "events")?,
        Some(10),
        "a dry run commits nothing"
    );

    let (status, body) = reset(json!({"topic": "events", "to_earliest": true}))?;
    assert_eq!((status, &body["committed"]), (200, &json!(true)), "{body}");
    assert_eq!(committed_offset(&bootstrap, "billing", "events")?, Some(0));

    let (status, body) = reset(json!({"topic": "events", "partitions": [0], "to_offset": 7}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"][0]["current_offset"], 0);
    assert_eq!(body["plan"][0]["new_offset"], 7);
    assert_eq!(committed_offset(&bootstrap, "billing", "events")?, Some(7));

    // 2023-11-14T22:13:23Z, written in another zone: the record of offset 3.
    let (status, body) =
        reset(json!({"topic": "events", "to_datetime": "2023-11-14T23:13:22.500+01:00"}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"][0]["new_offset"], 3);
    assert_eq!(committed_offset(&bootstrap, "billing", "events")?, Some(3));
    // Later than every record: the log end.
    let (_, body) = reset(json!({"topic": "events", "to_datetime": T0_MS + 60_000}))?;
    assert_eq!(body["plan"][0]["new_offset"], 10);
    let (_, body) = reset(json!({"topic": "events", "shift_by": -4}))?;
    assert_eq!(body["plan"][0]["new_offset"], 6);
    // Kept within the log.
    let (_, body) = reset(json!({"topic": "events", "to_offset": 1_000}))?;
    assert_eq!(body["plan"][0]["new_offset"], 10);

    let (status, body) = reset(json!({"topic": "events"}))?;
    assert_eq!(status, 400, "no target: {body}");
    let (status, body) = reset(json!({"topic": "nowhere", "to_earliest": true}))?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = reset(json!({"topic": "events", "partitions": [5], "to_earliest": true}))?;
    assert_eq!(status, 404, "{body}");

    // A live member: refused, as Kafka refuses it, and nothing moves.
    let member: BaseConsumer = common::consumer_config(&bootstrap)
        .set("group.id", "billing")
        .create()?;
    member.subscribe(&["events"])?;
    common::wait_until(WAIT, "the member's assignment", || {
        let _ = member.poll(Duration::from_millis(100));
        Ok(member.assignment()?.count() == 1)
    })?;
    let (status, body) = reset(json!({"topic": "events", "to_earliest": true}))?;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("group billing has 1 active members")
            && error.contains("stop its consumers before resetting its offsets"),
        "{body}"
    );
    assert_eq!(committed_offset(&bootstrap, "billing", "events")?, Some(10));
    Ok(())
}

/// How many records `topic` holds, read with `weir consume` (0 when it
/// does not exist yet), as JSON lines.
fn records_of(broker: &Broker, topic: &str) -> anyhow::Result<Vec<Value>> {
    let out = weir(
        broker,
        &["consume", topic, "--from-beginning", "--format", "json"],
        b"",
    )?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

fn wait_for_records(broker: &Broker, topic: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let mut found = Vec::new();
    common::wait_until(WAIT, &format!("{n} records in {topic}"), || {
        found = records_of(broker, topic)?;
        Ok(found.len() >= n)
    })?;
    Ok(found)
}

#[test]
fn dead_letters_are_redriven_once_and_the_api_and_the_cli_take_turns() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "group.share.enable=true"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "refunds", 1, &[])?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "refunders",
            "share.auto.offset.reset=earliest",
        ],
        b"",
    )?;
    let producer: BaseProducer = common::producer_config(&bootstrap).create()?;
    for value in ["a", "poison-b", "poison-c"] {
        producer
            .send(
                BaseRecord::<(), str>::to("refunds")
                    .partition(0)
                    .payload(value),
            )
            .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
    }
    producer.flush(common::CLIENT_TIMEOUT)?;
    let share = [
        "consume",
        "refunds",
        "--share-group",
        "refunders",
        "--reject-if",
        "^poison",
    ];
    assert_eq!(weir_ok(&broker, &share, b"")?, "a\npoison-b\npoison-c\n");
    wait_for_records(&broker, "dlq.refunders", 2)?;
    let redrive = |body: Value| {
        post(
            &broker,
            "/v1/dead-letter-topics/dlq.refunders/redrive",
            &body,
        )
    };

    // A dry run lists them and moves nothing.
    let (status, body) = redrive(json!({"to": "refunds", "dry_run": true}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], 2, "{body}");
    assert_eq!(body["more"], false, "{body}");
    assert_eq!(
        body["records"][0],
        json!({"dead_letter": "dlq.refunders/0/0", "source": "refunds/0/1",
               "message": "Offset rejected by client."})
    );
    assert_eq!(records_of(&broker, "refunds")?.len(), 3);

    // Bounded calls: one record, then the rest.
    let (status, body) = redrive(json!({"to": "refunds", "limit": 1}))?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["redriven"],
            &body["more"],
            &body["group"],
            &body["progress"]
        ),
        (
            &json!(1),
            &json!(true),
            &json!("weir-dlq-redrive.dlq.refunders"),
            &json!({"0": 1})
        ),
        "{body}"
    );
    let (_, body) = redrive(json!({"to": "refunds"}))?;
    assert_eq!(
        (&body["redriven"], &body["more"]),
        (&json!(1), &json!(false)),
        "{body}"
    );
    let (_, body) = redrive(json!({"to": "refunds"}))?;
    assert_eq!(body["redriven"], 0, "nothing new: {body}");

    // Back in their partition, read back from the originals (no copy), with
    // where they came from.
    let records = wait_for_records(&broker, "refunds", 5)?;
    assert_eq!(records.len(), 5);
    for (record, (value, from)) in records[3..].iter().zip([
        ("poison-b", "dlq.refunders/0/0"),
        ("poison-c", "dlq.refunders/0/1"),
    ]) {
        assert_eq!(record["value"], value);
        assert_eq!(record["partition"], 0);
        assert_eq!(
            record["headers"],
            json!([{"key": "weir.redriven-from", "value": from}])
        );
    }

    // The CLI goes on from where the API stopped: nothing new.
    let cli = |args: &[&str]| -> anyhow::Result<Value> {
        let base = [
            "dlq",
            "redrive",
            "dlq.refunders",
            "--to",
            "refunds",
            "--json",
        ];
        Ok(serde_json::from_str(&weir_ok(
            &broker,
            &[&base[..], args].concat(),
            b"",
        )?)?)
    };
    assert_eq!(cli(&[])?["redriven"], 0);

    // Rejected again, the redriven records (offsets 3 and 4 of refunds) are
    // new dead letters; the CLI moves one and passes the other over, and
    // the API then finds nothing new.
    assert_eq!(weir_ok(&broker, &share, b"")?, "poison-b\npoison-c\n");
    wait_for_records(&broker, "dlq.refunders", 4)?;
    let moved = cli(&["--where", "offset=3"])?;
    assert_eq!(
        (&moved["redriven"], &moved["passed_over"]),
        (&json!(1), &json!(1)),
        "{moved}"
    );
    let (_, body) = redrive(json!({"to": "refunds"}))?;
    assert_eq!(body["redriven"], 0, "{body}");
    let records = wait_for_records(&broker, "refunds", 6)?;
    ensure!(records.len() == 6, "{records:?}");
    assert_eq!(records[5]["value"], "poison-b");

    // Refusals.
    let (status, body) = redrive(json!({"to": "refunds", "where": {"colour": "red"}}))?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = redrive(json!({"to": "refunds", "limit": 0}))?;
    assert_eq!(status, 400, "{body}");
    let (status, body) = redrive(json!({"to": "nowhere"}))?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &broker,
        "/v1/dead-letter-topics/dlq.nobody/redrive",
        &json!({"to": "refunds"}),
    )?;
    assert_eq!(status, 404, "{body}");
    Ok(())
}

#[test]
fn a_redrive_carries_a_dead_letters_copy_to_another_topic() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "group.share.enable=true"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "jobs", 1, &[])?;
    common::create_topic_blocking(&bootstrap, "jobs-retry", 3, &[])?;
    for setting in [
        "share.auto.offset.reset=earliest",
        "errors.deadletterqueue.copy.record.enable=true",
    ] {
        weir_ok(
            &broker,
            &["group", "config", "set", "workers", setting],
            b"",
        )?;
    }
    let producer: BaseProducer = common::producer_config(&bootstrap).create()?;
    producer
        .send(
            BaseRecord::<str, str>::to("jobs")
                .partition(0)
                .key("job-7")
                .payload("poison-job"),
        )
        .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
    producer.flush(common::CLIENT_TIMEOUT)?;
    let share = [
        "consume",
        "jobs",
        "--share-group",
        "workers",
        "--reject-if",
        "^poison",
    ];
    assert_eq!(weir_ok(&broker, &share, b"")?, "poison-job\n");
    wait_for_records(&broker, "dlq.workers", 1)?;
    let (status, body) = post(
        &broker,
        "/v1/dead-letter-topics/dlq.workers/redrive",
        &json!({"to": "jobs-retry", "group": "my-progress", "where": {"partition": 0}}),
    )?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["redriven"], &body["group"]),
        (&json!(1), &json!("my-progress")),
        "{body}"
    );
    let records = wait_for_records(&broker, "jobs-retry", 1)?;
    assert_eq!(records[0]["key"], "job-7");
    assert_eq!(records[0]["value"], "poison-job");
    assert_eq!(
        records[0]["headers"],
        json!([{"key": "weir.redriven-from", "value": "dlq.workers/0/0"}])
    );
    // The progress is the named group's; the default one has none.
    assert_eq!(
        committed_offset(&bootstrap, "my-progress", "dlq.workers")?,
        Some(1)
    );
    assert_eq!(
        committed_offset(&bootstrap, "weir-dlq-redrive.dlq.workers", "dlq.workers")?,
        None
    );
    Ok(())
}
