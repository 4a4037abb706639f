//! Tag-filtered views (issue 11): a producer tags records with the header
//! `weir.tag`; a view created over a source topic serves a Kafka consumer
//! exactly the matching records, at their source offsets, byte for byte,
//! for every codec, with duplicate header keys and batches of mixed tags;
//! consumer groups resume on a view across a restart; everything that would
//! write to a view is refused with INVALID_REQUEST naming the source.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::raw::{self, RawClient};
use common::{Broker, Plain};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest, GroupId,
    IncrementalAlterConfigsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
    create_topics_request, delete_records_request, incremental_alter_configs_request,
    offset_commit_request,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

/// Records over all codecs (the 100,000).
const RECORDS: u64 = 100_000;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PARTITIONS: i32 = 2;
/// The tag header.
const TAG: &str = "weir.tag";
/// Kafka error codes the refusals carry.
const INVALID_REQUEST: i16 = 42;
const INVALID_CONFIG: i16 = 40;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
/// Config resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
const WAIT: Duration = Duration::from_secs(120);

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Record `i` of a source: the first half tags records `T0`..`T9` in turn,
/// so every batch mixes tags; the second half in runs of 1,000, so most
/// batches hold one tag and a view skips them unread. Every 7th record has
/// no tag, every 11th a second `weir.tag` header (the next tag), and every
/// record two headers named `k`.
fn record(i: u64, half: u64) -> Plain {
    let tag = if i < half { i % 10 } else { (i / 1_000) % 10 };
    let mut headers = vec![
        ("k".to_string(), Some(format!("first-{i}").into_bytes())),
        ("k".to_string(), Some(format!("second-{i}").into_bytes())),
    ];
    if !i.is_multiple_of(7) {
        headers.push((TAG.to_string(), Some(format!("T{tag}").into_bytes())));
    }
    if i.is_multiple_of(11) {
        headers.push((
            TAG.to_string(),
            Some(format!("T{}", (tag + 1) % 10).into_bytes()),
        ));
    }
    headers.push(("id".to_string(), Some(i.to_be_bytes().to_vec())));
    Plain {
        key: Some(format!("key-{i}").into_bytes()),
        value: Some(format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes()),
        headers,
    }
}

/// Whether `plain` carries one of `tags` in a `weir.tag` header.
fn matches(plain: &Plain, tags: &[&str]) -> bool {
    plain.headers.iter().any(|(key, value)| {
        key == TAG
            && value
                .as_deref()
                .is_some_and(|v| tags.iter().any(|t| t.as_bytes() == v))
    })
}

/// Produce `count` records to `topic` with `compression`, in runs of 50 per
/// partition (so batches hold consecutive records). Returns each record's
/// partition and offset.
fn produce(
    bootstrap: &str,
    topic: &str,
    compression: &str,
    records: &[Plain],
) -> anyhow::Result<BTreeMap<(i32, i64), Plain>> {
    let mut config = common::producer_config(bootstrap);
    config
        .set("compression.codec", compression)
        .set("linger.ms", "20");
    let producer = common::tracked_producer(&config)?;
    for (i, plain) in (0u64..).zip(records) {
        let headers = plain.owned_headers();
        let partition = ((i / 50) % PARTITIONS as u64) as i32;
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(i))
            .partition(partition)
            .headers(headers);
        if let Some(key) = &plain.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &plain.value {
            record = record.payload(value.as_slice());
        }
        common::send_tracked(&producer, record)?;
    }
    let deliveries = common::flush_all_delivered(&producer, records.len())?;
    let mut at = BTreeMap::new();
    for d in deliveries {
        let (partition, offset) = d.result.map_err(anyhow::Error::msg)?;
        let plain = records
            .get(usize::try_from(d.id)?)
            .context("a delivery report for an unknown record")?;
        at.insert((partition, offset), plain.clone());
    }
    Ok(at)
}

/// Create view `name` of `source` with `tags` through CreateTopics, as any
/// Kafka admin client would: the error code and message of the answer.
fn create_view(
    raw: &mut RawClient,
    name: &str,
    configs: &[(&str, &str)],
    partitions: i32,
) -> anyhow::Result<(i16, String)> {
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(TopicName(str(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(str(k))
                        .with_value(Some(str(v)))
                })
                .collect(),
        );
    let response = raw.call(
        &CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000),
        7,
    )?;
    let result = response.topics.first().context("no topic in the answer")?;
    let message = result
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    Ok((result.error_code, message))
}

fn view(source: &str, tags: &str) -> Vec<(&'static str, String)> {
    vec![
        ("weir.view.source", source.to_string()),
        ("weir.view.tags", tags.to_string()),
    ]
}

/// Create a view, failing unless the broker accepts it.
fn create_view_ok(raw: &mut RawClient, name: &str, source: &str, tags: &str) -> anyhow::Result<()> {
    let configs = view(source, tags);
    let configs: Vec<(&str, &str)> = configs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, message) = create_view(raw, name, &configs, -1)?;
    if code != 0 {
        bail!("cannot create view {name}: error {code}: {message}");
    }
    Ok(())
}

/// Read `topic` (every partition, from the beginning) with an assigned
/// consumer until `want` records and the record at `fence` (partition,
/// offset), produced after them, have arrived. A record served by mistake
/// counts too, so the caller sees it (and one it is then missing).
fn read_view(
    bootstrap: &str,
    topic: &str,
    want: usize,
    fence: (i32, i64),
) -> anyhow::Result<BTreeMap<(i32, i64), Plain>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while got.len() <= want || !got.contains_key(&fence) {
        if Instant::now() > deadline {
            bail!(
                "reading {topic} timed out with {} of {want} records (fence {fence:?} seen: {})",
                got.len(),
                got.contains_key(&fence)
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(err)) => bail!("consumer error on {topic}: {err}"),
            Some(Ok(message)) => {
                let at = (message.partition(), message.offset());
                if got.insert(at, Plain::of(&message.detach())).is_some() {
                    bail!("{topic}: {at:?} served twice");
                }
            }
        }
    }
    Ok(got)
}

#[test]
fn a_view_of_one_tag_in_ten_serves_exactly_the_matching_records_at_their_source_offsets()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let mut raw = RawClient::connect(&bootstrap)?;
    let per_codec = RECORDS / CODECS.len() as u64;
    for codec in CODECS {
        let source = format!("orders-{codec}");
        common::create_topic_blocking(&bootstrap, &source, PARTITIONS, &[])?;
        // Views made before the data (summaries kept from the first batch) and
        // after some of it (older batches have none and are read).
        create_view_ok(&mut raw, &format!("vip-{codec}"), &source, "T3")?;
        let records: Vec<Plain> = (0..per_codec).map(|i| record(i, per_codec / 2)).collect();
        let (early, late) = records.split_at(records.len() / 4);
        let mut at = produce(&bootstrap, &source, codec, early)?;
        create_view_ok(&mut raw, &format!("two-{codec}"), &source, " T3 ||T7 ")?;
        at.extend(produce(&bootstrap, &source, codec, late)?);

        for (name, tags) in [
            (format!("vip-{codec}"), vec!["T3"]),
            (format!("two-{codec}"), vec!["T3", "T7"]),
        ] {
            // A last matching record after everything: the fence.
            let fence_record = Plain {
                key: Some(b"fence".to_vec()),
                value: Some(b"fence".to_vec()),
                headers: vec![(TAG.to_string(), Some(b"T3".to_vec()))],
            };
            let fenced = produce(&bootstrap, &source, codec, &[fence_record])?;
            let expected: BTreeMap<(i32, i64), Plain> = at
                .iter()
                .filter(|(_, p)| matches(p, &tags))
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let fence = *fenced.keys().next().context("no fence")?;
            let mut got = read_view(&bootstrap, &name, expected.len(), fence)?;
            got.remove(&fence);
            at.extend(fenced);
            let unexpected: Vec<_> = got.keys().filter(|k| !expected.contains_key(k)).collect();
            let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(k)).collect();
            assert!(
                unexpected.is_empty() && missing.is_empty(),
                "{name}: {} unexpected (first {:?}), {} missing (first {:?})",
                unexpected.len(),
                unexpected.first(),
                missing.len(),
                missing.first()
            );
            for (k, plain) in &expected {
                assert_eq!(got.get(k), Some(plain), "{name} at {k:?}");
            }
            assert!(
                expected.len() > (per_codec as usize) / 20,
                "{name}: too few matches ({}) to prove anything",
                expected.len()
            );
        }
    }
    Ok(())
}

#[test]
fn a_consumer_group_on_a_view_resumes_after_a_restart_and_offsets_are_the_sources()
-> anyhow::Result<()> {
    let mut broker = Broker::start(&["--set", "group.initial.rebalance.delay.ms=0"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "events", PARTITIONS, &[])?;
    let mut raw = RawClient::connect(&bootstrap)?;
    create_view_ok(&mut raw, "gold", "events", "GOLD")?;
    let records: Vec<Plain> = (0..4_000u64)
        .map(|i| {
            let tag = if i % 4 == 0 { "GOLD" } else { "IRON" };
            Plain {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("v{i}").into_bytes()),
                headers: vec![(TAG.to_string(), Some(tag.as_bytes().to_vec()))],
            }
        })
        .collect();
    let at = produce(&bootstrap, "events", "lz4", &records)?;
    let gold: Vec<(i32, i64)> = at
        .iter()
        .filter(|(_, p)| matches(p, &["GOLD"]))
        .map(|(k, _)| *k)
        .collect();

    // Offsets of the view are the source's.
    let consumer: BaseConsumer = common::consumer_config(&bootstrap).create()?;
    for p in 0..PARTITIONS {
        let view = consumer.fetch_watermarks("gold", p, Duration::from_secs(10))?;
        let source = consumer.fetch_watermarks("events", p, Duration::from_secs(10))?;
        assert_eq!(view, source, "watermarks of partition {p}");
    }
    let mut times = TopicPartitionList::new();
    times.add_partition_offset("gold", 0, Offset::Offset(0))?;
    let found = consumer.offsets_for_times(times, Duration::from_secs(10))?;
    assert_eq!(
        found.find_partition("gold", 0).map(|e| e.offset()),
        Some(Offset::Offset(0))
    );
    drop(consumer);

    let consumer = |subscribe: bool| -> anyhow::Result<BaseConsumer> {
        let mut config = common::consumer_config(&bootstrap);
        config
            .set("group.id", "gold-readers")
            .set("enable.auto.offset.store", "true");
        let consumer: BaseConsumer = config.create()?;
        if subscribe {
            consumer.subscribe(&["gold"])?;
        } else {
            let mut assignment = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                assignment.add_partition_offset("gold", p, Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
        }
        Ok(consumer)
    };
    let take = |consumer: &BaseConsumer, n: usize| -> anyhow::Result<Vec<(i32, i64)>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < n {
            if Instant::now() > deadline {
                bail!("the group read {} of {n} records", got.len());
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(err)) => bail!("consumer error: {err}"),
                Some(Ok(m)) => {
                    let tags: Vec<Vec<u8>> = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .filter_map(|h| h.value.map(<[u8]>::to_vec))
                                .collect()
                        })
                        .unwrap_or_default();
                    assert_eq!(
                        tags,
                        [b"GOLD".to_vec()],
                        "a record the view should not serve"
                    );
                    got.push((m.partition(), m.offset()));
                }
            }
        }
        Ok(got)
    };
    // Half the records, then their offsets committed for the group: by an
    // admin commit, as `weir group reset-offsets` or Kafka's tool does
    // (a librdkafka consumer that committed hangs in its close, rdkafka 0.39).
    let first = consumer(false)?;
    let half = take(&first, gold.len() / 2)?;
    drop(first);
    let mut topic = offset_commit_request::OffsetCommitRequestTopic::default()
        .with_name(TopicName(str("gold")));
    for p in 0..PARTITIONS {
        if let Some(last) = half.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).max() {
            topic.partitions.push(
                offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(last + 1),
            );
        }
    }
    let committed = raw.call(
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(str("gold-readers")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![topic]),
        8,
    )?;
    for p in committed.topics.iter().flat_map(|t| &t.partitions) {
        assert_eq!(p.error_code, 0, "commit of gold-{}", p.partition_index);
    }

    broker.stop()?;
    broker.restart()?;

    // A member of the group resumes where it committed: the rest, once each.
    let second = consumer(true)?;
    let rest = take(&second, gold.len() - half.len())?;
    let mut all: Vec<(i32, i64)> = half.iter().chain(&rest).copied().collect();
    all.sort();
    assert_eq!(all, gold, "every GOLD record once, across the restart");
    // The group's offsets are source offsets, as committed.
    let mut raw = RawClient::connect(&broker.bootstrap())?;
    let fetched = raw.call(
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(str("gold-readers")))
            .with_topics(None),
        7,
    )?;
    for t in &fetched.topics {
        for p in &t.partitions {
            let last = half
                .iter()
                .filter(|(q, _)| *q == p.partition_index)
                .map(|(_, o)| *o)
                .max();
            assert_eq!(
                Some(p.committed_offset),
                last.map(|o| o + 1),
                "gold-{}",
                p.partition_index
            );
        }
    }
    Ok(())
}

#[test]
fn writes_to_a_view_are_refused_naming_its_source_and_bad_views_are_not_created()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "orders", 3, &[])?;
    common::create_topic_blocking(&bootstrap, "ledger", 1, &[("cleanup.policy", "compact")])?;
    let mut raw = RawClient::connect(&bootstrap)?;
    create_view_ok(&mut raw, "vip", "orders", "VIP || GOLD")?;

    // Produce.
    let batch = raw::record_batch(&[b"v"])?;
    let response = raw.call(&raw::produce_request("vip", 0, batch), 9)?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("no partition answered")?;
    assert_eq!(p.error_code, INVALID_REQUEST);
    let message = p
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(message.contains("orders"), "{message}");

    // DeleteRecords.
    let response = raw.call(
        &DeleteRecordsRequest::default()
            .with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(TopicName(str("vip")))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0),
                    ]),
            ])
            .with_timeout_ms(10_000),
        2,
    )?;
    let code = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.error_code);
    assert_eq!(code, Some(INVALID_REQUEST));

    // Config changes, on the view and of the view configs anywhere.
    let alter = |raw: &mut RawClient, topic: &str, key: &str| -> anyhow::Result<(i16, String)> {
        let response = raw.call(
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(str(topic))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(str(key))
                            .with_config_operation(0)
                            .with_value(Some(str("1000"))),
                    ]),
            ]),
            1,
        )?;
        let r = response.responses.first().context("no answer")?;
        Ok((
            r.error_code,
            r.error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ))
    };
    let (code, message) = alter(&mut raw, "vip", "retention.ms")?;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(message.contains("orders"), "{message}");
    let (code, _) = alter(&mut raw, "orders", "weir.view.tags")?;
    assert_eq!(code, INVALID_CONFIG);

    // Views that cannot be made.
    // (name, configs, partitions, the error expected)
    type Refused<'a> = (&'a str, Vec<(&'a str, &'a str)>, i32, i16);
    let refused: [Refused; 7] = [
        (
            "bad-tags",
            vec![("weir.view.source", "orders"), ("weir.view.tags", "A || ")],
            -1,
            INVALID_CONFIG,
        ),
        (
            "no-source",
            vec![("weir.view.tags", "A")],
            -1,
            INVALID_CONFIG,
        ),
        (
            "lost",
            vec![("weir.view.source", "nowhere"), ("weir.view.tags", "A")],
            -1,
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            "of-view",
            vec![("weir.view.source", "vip"), ("weir.view.tags", "A")],
            -1,
            INVALID_CONFIG,
        ),
        (
            "extra",
            vec![("weir.view.source", "orders"), ("retention.ms", "1")],
            -1,
            INVALID_CONFIG,
        ),
        (
            "sized",
            vec![("weir.view.source", "orders"), ("weir.view.tags", "A")],
            5,
            INVALID_PARTITIONS,
        ),
        (
            "vip",
            vec![("weir.view.source", "orders"), ("weir.view.tags", "A")],
            -1,
            TOPIC_ALREADY_EXISTS,
        ),
    ];
    for (name, configs, partitions, want) in refused {
        let (code, message) = create_view(&mut raw, name, &configs, partitions)?;
        assert_eq!(code, want, "{name}: {message}");
    }
    create_view_ok(&mut raw, "ledger-view", "ledger", "A")?;

    // The source grows; the view follows. The source cannot go while a view reads it.
    let admin = common::admin(&bootstrap)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(admin.create_partitions(
        [&rdkafka::admin::NewPartitions::new("orders", 5)],
        &common::admin_options(),
    ))?;
    let consumer: BaseConsumer = common::consumer_config(&bootstrap).create()?;
    let metadata = consumer.fetch_metadata(Some("vip"), Duration::from_secs(10))?;
    assert_eq!(
        metadata.topics().first().map(|t| t.partitions().len()),
        Some(5)
    );
    let delete = |raw: &mut RawClient, topic: &str| -> anyhow::Result<i16> {
        let response = raw.call(
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(str(topic))])
                .with_timeout_ms(10_000),
            5,
        )?;
        Ok(response.responses.first().map_or(-1, |r| r.error_code))
    };
    assert_eq!(delete(&mut raw, "orders")?, INVALID_REQUEST);
    assert_eq!(delete(&mut raw, "vip")?, 0);
    assert_eq!(delete(&mut raw, "orders")?, 0);
    Ok(())
}
