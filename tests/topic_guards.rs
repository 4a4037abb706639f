//! What a client may not do to a topic, and the topic configs it may set:
//! internal topics refuse writes, deletes and new partitions from clients
//! (issue 7, item 1); compacted topics refuse records without a key with
//! per-record errors (item 7); every Kafka 4.x topic config is accepted,
//! and `cleanup.policy` can be emptied (item 9).

mod common;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use common::Broker;
use common::raw::{self, RawClient};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteRecordsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ProduceResponse, TopicName, create_topics_request,
    delete_records_request, describe_configs_request, incremental_alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::admin::NewPartitions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Kafka's INVALID_TOPIC_EXCEPTION.
const INVALID_TOPIC_EXCEPTION: i16 = 17;
/// Kafka's INVALID_RECORD.
const INVALID_RECORD: i16 = 87;
/// Config resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One RecordBatch v2 with the given keys, each record valued "v".
fn keyed_batch(keys: &[Option<&str>], compression: Compression) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = keys
        .iter()
        .zip(0..)
        .map(|(key, offset)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options)?;
    Ok(buf.freeze())
}

fn only_partition(
    response: &ProduceResponse,
) -> anyhow::Result<&kafka_protocol::messages::produce_response::PartitionProduceResponse> {
    response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("a Produce response without a partition")
}

/// Produce one keyed record with librdkafka, as kcat `-k zzz` does, and
/// return the delivery error, if any.
fn rdkafka_produce(
    bootstrap: &str,
    topic: &str,
    key: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let mut config = common::producer_config(bootstrap);
    config.set("message.timeout.ms", "10000");
    let producer = common::tracked_producer(&config)?;
    let mut record = BaseRecord::with_opaque_to(topic, Box::new(0u64))
        .partition(0)
        .payload(b"garbage".as_slice());
    if let Some(key) = key {
        record = record.key(key.as_bytes());
    }
    common::send_tracked(&producer, record)?;
    producer
        .flush(common::CLIENT_TIMEOUT)
        .context("flush did not complete")?;
    let deliveries = producer.context().drain();
    let delivery = deliveries.first().context("no delivery report")?;
    Ok(delivery.result.clone().err())
}

fn topic_exists(bootstrap: &str, topic: &str) -> anyhow::Result<bool> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let metadata = consumer.fetch_metadata(None, common::CLIENT_TIMEOUT)?;
    Ok(metadata.topics().iter().any(|t| t.name() == topic))
}

fn high_watermark(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    Ok(consumer
        .fetch_watermarks(topic, 0, common::CLIENT_TIMEOUT)?
        .1)
}

#[test]
fn clients_cannot_produce_to_delete_or_grow_internal_topics_and_the_broker_restarts()
-> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();

    // The repro: `echo garbage | kcat -P -t __consumer_offsets -p 0 -k zzz`.
    let error = rdkafka_produce(&bootstrap, "__consumer_offsets", Some("zzz"))?
        .context("a produce to __consumer_offsets was acknowledged")?;
    assert!(error.contains("Invalid topic"), "{error}");
    let mut client = RawClient::connect(&bootstrap)?;
    for topic in [
        "__consumer_offsets",
        "__transaction_state",
        "__share_group_state",
    ] {
        let request = raw::produce_request(topic, 0, raw::record_batch(&[b"garbage"])?);
        let response = client.call(&request, 9)?;
        let partition = only_partition(&response)?;
        assert_eq!(partition.error_code, INVALID_TOPIC_EXCEPTION, "{topic}");
        assert!(partition.error_message.is_some());
    }
    assert!(
        !topic_exists(&bootstrap, "__transaction_state")?,
        "a refused produce must not auto-create an internal topic"
    );

    let delete_records = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(TopicName(str("__consumer_offsets")))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(-1),
                ]),
        ]);
    let response = client.call(&delete_records, 2)?;
    assert_eq!(
        response.topics[0].partitions[0].error_code,
        INVALID_TOPIC_EXCEPTION
    );

    runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        let deleted = admin
            .delete_topics(&["__consumer_offsets"], &common::admin_options())
            .await?;
        assert_eq!(
            deleted,
            vec![Err((
                "__consumer_offsets".to_string(),
                RDKafkaErrorCode::InvalidTopic
            ))]
        );
        let grown = admin
            .create_partitions(
                [&NewPartitions::new("__consumer_offsets", 60)],
                &common::admin_options(),
            )
            .await?;
        assert_eq!(
            grown,
            vec![Err((
                "__consumer_offsets".to_string(),
                RDKafkaErrorCode::InvalidTopic
            ))]
        );
        anyhow::Ok(())
    })?;

    // The coordinator itself still appends to __consumer_offsets.
    common::create_topic_blocking(&bootstrap, "user", 1, &[])?;
    let committed = |bootstrap: &str| -> anyhow::Result<Offset> {
        let mut config = common::consumer_config(bootstrap);
        config.set("group.id", "guards");
        let consumer: BaseConsumer = config.create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition("user", 0);
        let committed = consumer.committed_offsets(list, common::CLIENT_TIMEOUT)?;
        Ok(committed
            .find_partition("user", 0)
            .context("no committed offset")?
            .offset())
    };
    {
        let mut config = common::consumer_config(&bootstrap);
        config.set("group.id", "guards");
        let consumer: BaseConsumer = config.create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("user", 0, Offset::Offset(0))?;
        consumer.commit(&list, CommitMode::Sync)?;
    }

    broker.stop()?;
    broker.restart()?;
    common::assert_serves_clients(&broker.bootstrap())?;
    assert_eq!(committed(&broker.bootstrap())?, Offset::Offset(0));
    Ok(())
}

#[test]
fn compacted_topic_refuses_records_without_a_key_with_record_errors() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "compacted", 1, &[("cleanup.policy", "compact")])?;
    common::create_topic_blocking(&bootstrap, "plain", 1, &[])?;

    let error = rdkafka_produce(&bootstrap, "compacted", None)?
        .context("a keyless record was acknowledged on a compacted topic")?;
    assert!(error.contains("InvalidRecord"), "{error}");
    assert_eq!(rdkafka_produce(&bootstrap, "compacted", Some("k"))?, None);
    assert_eq!(rdkafka_produce(&bootstrap, "plain", None)?, None);

    let mut client = RawClient::connect(&bootstrap)?;
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let batch = keyed_batch(&[Some("a"), None, Some("c"), None], compression)?;
        let response = client.call(&raw::produce_request("compacted", 0, batch), 9)?;
        let partition = only_partition(&response)?;
        assert_eq!(partition.error_code, INVALID_RECORD, "{compression:?}");
        let message = partition.error_message.as_deref().unwrap_or_default();
        assert!(message.contains("2 record errors"), "{message}");
        let indexes: Vec<i32> = partition
            .record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect();
        assert_eq!(indexes, [1, 3], "{compression:?}");
        assert!(partition.record_errors.iter().all(|e| {
            e.batch_index_error_message
                .as_deref()
                .is_some_and(|m| m.contains("without key"))
        }));
    }
    assert_eq!(
        high_watermark(&bootstrap, "compacted")?,
        1,
        "only the keyed record was appended"
    );
    Ok(())
}

fn alter(topic: &str, ops: &[(&str, i8, &str)]) -> IncrementalAlterConfigsRequest {
    let configs = ops
        .iter()
        .map(|(name, op, value)| {
            incremental_alter_configs_request::AlterableConfig::default()
                .with_name(str(name))
                .with_config_operation(*op)
                .with_value(Some(str(value)))
        })
        .collect();
    IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str(topic))
            .with_configs(configs),
    ])
}

/// A described config's value and documentation.
type Described = (Option<String>, Option<String>);

/// (value, documentation) of each config of `topic`.
fn describe(
    client: &mut RawClient,
    topic: &str,
) -> anyhow::Result<std::collections::HashMap<String, Described>> {
    let request = DescribeConfigsRequest::default()
        .with_include_documentation(true)
        .with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str(topic)),
        ]);
    let response = client.call(&request, 4)?;
    let result = response.results.first().context("no result")?;
    anyhow::ensure!(result.error_code == 0, "{:?}", result.error_message);
    Ok(result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (
                    c.value.as_ref().map(|v| v.to_string()),
                    c.documentation.as_ref().map(|d| d.to_string()),
                ),
            )
        })
        .collect())
}

#[test]
fn standard_kafka_topic_configs_are_stored_and_cleanup_policy_can_be_emptied() -> anyhow::Result<()>
{
    const SET: i8 = 0;
    const SUBTRACT: i8 = 3;
    let mut broker = Broker::start(&[])?;
    common::create_topic_blocking(&broker.bootstrap(), "tuned", 1, &[])?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    let wanted = [
        ("file.delete.delay.ms", "1000"),
        ("max.compaction.lag.ms", "600000"),
        ("min.cleanable.dirty.ratio", "0.25"),
        ("segment.index.bytes", "4096"),
        ("message.timestamp.after.max.ms", "60000"),
    ];
    let ops: Vec<(&str, i8, &str)> = wanted.iter().map(|(k, v)| (*k, SET, *v)).collect();
    let response = client.call(&alter("tuned", &ops), 1)?;
    assert_eq!(
        response.responses[0].error_code, 0,
        "{:?}",
        response.responses[0].error_message
    );
    let response = client.call(
        &alter("tuned", &[("cleanup.policy", SUBTRACT, "delete")]),
        1,
    )?;
    assert_eq!(
        response.responses[0].error_code, 0,
        "{:?}",
        response.responses[0].error_message
    );

    broker.stop()?;
    broker.restart()?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    let configs = describe(&mut client, "tuned")?;
    for (name, value) in wanted {
        let (stored, doc) = configs
            .get(name)
            .with_context(|| format!("{name} missing"))?;
        assert_eq!(stored.as_deref(), Some(value), "{name}");
        let doc = doc.as_deref().unwrap_or_default();
        assert!(doc.contains("does not act on it"), "{name}: {doc}");
    }
    assert_eq!(
        configs.get("cleanup.policy").and_then(|c| c.0.as_deref()),
        Some("")
    );
    let response = client.call(&alter("tuned", &[("cleanup.policy", SET, "")]), 1)?;
    assert_eq!(response.responses[0].error_code, 0);
    Ok(())
}

#[test]
fn partition_limit_is_policy_violation_with_a_log_line_naming_the_setting() -> anyhow::Result<()> {
    // 50 partitions of __consumer_offsets, plus room for 10.
    let broker = Broker::start(&["--set", "max.partitions=60"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "fits", 10, &[])?;
    runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        let topic = rdkafka::admin::NewTopic::new(
            "too-many",
            1,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let created = admin
            .create_topics([&topic], &common::admin_options())
            .await?;
        assert_eq!(
            created,
            vec![Err((
                "too-many".to_string(),
                RDKafkaErrorCode::PolicyViolation
            ))]
        );
        anyhow::Ok(())
    })?;
    let log = broker.stderr_tail();
    assert!(
        log.contains("max.partitions=60") && log.contains("--set max.partitions="),
        "{log}"
    );
    assert!(!topic_exists(&bootstrap, "too-many")?);
    Ok(())
}

/// One topic change the broker acknowledged during the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acked {
    Created(u32),
    Altered(u32),
}

/// retention.ms the burst sets on topic `i`.
fn burst_retention(i: u32) -> String {
    (1_000_000 + u64::from(i)).to_string()
}

#[test]
fn topic_metadata_survives_sigkill_during_a_burst_of_creations_and_alterations()
-> anyhow::Result<()> {
    /// Acknowledged changes to wait for before the kill.
    const ACKED_BEFORE_KILL: usize = 60;
    const SET: i8 = 0;
    let mut broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let (acked_tx, acked_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let Ok(mut client) = RawClient::connect(&bootstrap) else {
            return;
        };
        for i in 0u32.. {
            let name = format!("burst-{i}");
            let create = CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(TopicName(str(&name)))
                        .with_num_partitions(1)
                        .with_replication_factor(-1),
                ]);
            match client.call(&create, 5) {
                Ok(r) if r.topics.first().is_some_and(|t| t.error_code == 0) => {}
                _ => return,
            }
            if acked_tx.send(Acked::Created(i)).is_err() {
                return;
            }
            let retention = burst_retention(i);
            let alter_request = alter(&name, &[("retention.ms", SET, &retention)]);
            match client.call(&alter_request, 1) {
                Ok(r) if r.responses.first().is_some_and(|r| r.error_code == 0) => {}
                _ => return,
            }
            if acked_tx.send(Acked::Altered(i)).is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < ACKED_BEFORE_KILL {
        acked.push(
            acked_rx
                .recv()
                .context("the burst stopped before the kill")?,
        );
    }
    broker.sigkill()?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the burst thread panicked"))?;
    acked.extend(acked_rx.try_iter());

    broker.restart()?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    let created: Vec<u32> = acked
        .iter()
        .filter_map(|a| match a {
            Acked::Created(i) => Some(*i),
            Acked::Altered(_) => None,
        })
        .collect();
    let last = *created.last().context("nothing was created")?;
    for i in 0..=last + 1 {
        let name = format!("burst-{i}");
        let exists = topic_exists(&broker.bootstrap(), &name)?;
        if i > last {
            // The creation in flight at the kill may or may not have committed.
            continue;
        }
        assert!(exists, "acknowledged creation of {name} was lost");
        let configs = describe(&mut client, &name)?;
        let retention = configs.get("retention.ms").and_then(|c| c.0.clone());
        let want = burst_retention(i);
        if acked.contains(&Acked::Altered(i)) {
            assert_eq!(retention.as_deref(), Some(want.as_str()), "{name}");
        } else {
            // In flight at the kill: either outcome, nothing else.
            assert!(
                retention.as_deref() == Some(want.as_str())
                    || retention.as_deref() == Some("604800000"),
                "{name}: {retention:?}"
            );
        }
    }
    assert!(!topic_exists(
        &broker.bootstrap(),
        &format!("burst-{}", last + 2)
    )?);
    Ok(())
}
