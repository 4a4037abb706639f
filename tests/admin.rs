//! Topic administration through librdkafka's AdminClient (and, for
//! IncrementalAlterConfigs, which it lacks, through the raw client):
//! creating topics with configs, describing and altering those configs,
//! refusing invalid names, adding partitions, deleting topics, and deleting
//! records, after which reads below the new log start are out of range.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use common::Broker;
use common::raw::RawClient;
use kafka_protocol::messages::{
    AlterConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, TopicName,
    alter_configs_request, fetch_request, incremental_alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AlterConfig, ConfigEntry, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// The broker-level retention every test broker starts with, so a topic
/// that does not set its own shows it with source STATIC_BROKER_CONFIG.
const BROKER_RETENTION_MS: &str = "86400000";

fn start() -> anyhow::Result<Broker> {
    Broker::start(&["--set", &format!("log.retention.ms={BROKER_RETENTION_MS}")])
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// DescribeConfigs of one topic, by config name.
async fn describe(bootstrap: &str, topic: &str) -> anyhow::Result<HashMap<String, ConfigEntry>> {
    let admin = common::admin(bootstrap)?;
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &common::admin_options())
        .await
        .context("DescribeConfigs")?;
    let resource = results
        .into_iter()
        .next()
        .context("no DescribeConfigs result")?
        .map_err(|code| anyhow::anyhow!("DescribeConfigs {topic}: {code:?}"))?;
    Ok(resource
        .entries
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect())
}

fn value_and_source<'a>(
    configs: &'a HashMap<String, ConfigEntry>,
    name: &str,
) -> (Option<&'a str>, &'a ConfigSource) {
    match configs.get(name) {
        Some(entry) => (entry.value.as_deref(), &entry.source),
        None => panic!(
            "config {name} is not described; got {:?}",
            configs.keys().collect::<Vec<_>>()
        ),
    }
}

fn partition_count(bootstrap: &str, topic: &str) -> anyhow::Result<Option<usize>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let metadata = consumer.fetch_metadata(None, common::CLIENT_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len()))
}

#[test]
fn topic_configs_are_created_described_with_their_source_and_altered() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        let topic = NewTopic::new("configured", 3, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", "65536");
        let created = admin
            .create_topics([&topic], &common::admin_options())
            .await
            .context("CreateTopics")?;
        assert_eq!(created, vec![Ok("configured".to_string())]);
        assert_eq!(partition_count(&bootstrap, "configured")?, Some(3));

        let configs = describe(&bootstrap, "configured").await?;
        assert_eq!(
            value_and_source(&configs, "cleanup.policy"),
            (Some("compact"), &ConfigSource::DynamicTopic)
        );
        assert_eq!(
            value_and_source(&configs, "max.message.bytes"),
            (Some("65536"), &ConfigSource::DynamicTopic)
        );
        assert_eq!(
            value_and_source(&configs, "retention.ms"),
            (Some(BROKER_RETENTION_MS), &ConfigSource::StaticBroker),
            "a topic without its own retention.ms inherits the broker's log.retention.ms"
        );
        let (_, source) = value_and_source(&configs, "retention.bytes");
        assert_eq!(source, &ConfigSource::Default);
        for name in ["segment.bytes", "segment.ms", "message.timestamp.type"] {
            assert!(configs.contains_key(name), "{name} is not described");
        }

        // AlterConfigs replaces the topic's whole set: what it omits returns
        // to the default, as in Kafka.
        let alter =
            AlterConfig::new(ResourceSpecifier::Topic("configured")).set("retention.ms", "3600000");
        let altered = admin
            .alter_configs([&alter], &common::admin_options())
            .await
            .context("AlterConfigs")?;
        assert!(
            altered.iter().all(Result::is_ok),
            "AlterConfigs failed: {altered:?}"
        );
        let configs = describe(&bootstrap, "configured").await?;
        assert_eq!(
            value_and_source(&configs, "retention.ms"),
            (Some("3600000"), &ConfigSource::DynamicTopic)
        );
        assert_eq!(
            value_and_source(&configs, "cleanup.policy"),
            (Some("delete"), &ConfigSource::Default)
        );
        assert_eq!(
            value_and_source(&configs, "max.message.bytes").1,
            &ConfigSource::Default
        );

        // An unknown config name or a bad value is refused, and changes nothing.
        // rdkafka 0.39's `alter_configs` reports every resource as Ok whatever
        // the broker answers (it never reads the per-resource error), so the
        // refusal is checked on the wire.
        let bad = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("configured"))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("soon"))),
                ]),
        ]);
        let refused = RawClient::connect(&bootstrap)?.call(&bad, 1)?;
        let codes: Vec<i16> = refused.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![40], "a bad value must get INVALID_CONFIG (40)");
        let configs = describe(&bootstrap, "configured").await?;
        assert_eq!(
            value_and_source(&configs, "retention.ms").0,
            Some("3600000")
        );
        anyhow::Ok(())
    })
}

#[test]
fn incremental_alter_configs_sets_and_deletes_single_configs() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "incremental", 1, &[("retention.ms", "3600000")])?;

    let op = |name: &'static str, operation: i8, value: Option<&'static str>| {
        incremental_alter_configs_request::AlterableConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_config_operation(operation)
            .with_value(value.map(StrBytes::from_static_str))
    };
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const TOPIC_RESOURCE: i8 = 2;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_static_str("incremental"))
            .with_configs(vec![
                op("max.message.bytes", SET, Some("2048")),
                op("retention.ms", DELETE, None),
            ]),
    ]);
    let mut client = RawClient::connect(&bootstrap)?;
    let response = client.call(&request, 1)?;
    let errors: Vec<(i16, Option<String>)> = response
        .responses
        .iter()
        .map(|r| {
            (
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![(0, None)],
        "IncrementalAlterConfigs answered with errors"
    );

    let configs = runtime()?.block_on(describe(&bootstrap, "incremental"))?;
    assert_eq!(
        value_and_source(&configs, "max.message.bytes"),
        (Some("2048"), &ConfigSource::DynamicTopic)
    );
    assert_eq!(
        value_and_source(&configs, "retention.ms"),
        (Some(BROKER_RETENTION_MS), &ConfigSource::StaticBroker),
        "a deleted topic config falls back to the broker's"
    );

    // validate_only checks without applying.
    let dry = IncrementalAlterConfigsRequest::default()
        .with_validate_only(true)
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_static_str("incremental"))
                .with_configs(vec![op("max.message.bytes", SET, Some("4096"))]),
        ]);
    let response = client.call(&dry, 1)?;
    assert_eq!(response.responses.first().map(|r| r.error_code), Some(0));
    let configs = runtime()?.block_on(describe(&bootstrap, "incremental"))?;
    assert_eq!(
        value_and_source(&configs, "max.message.bytes").0,
        Some("2048")
    );
    Ok(())
}

#[test]
fn invalid_topic_names_are_refused_with_invalid_topic() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    let long = "x".repeat(250);
    runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        for name in ["bad/name", "spaces are bad", "..", ".", long.as_str()] {
            let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
            let result = admin
                .create_topics([&topic], &common::admin_options())
                .await?;
            assert_eq!(
                result,
                vec![Err((name.to_string(), RDKafkaErrorCode::InvalidTopic))],
                "creating {name:?}"
            );
        }
        anyhow::Ok(())
    })?;
    let consumer: BaseConsumer = common::consumer_config(&bootstrap).create()?;
    let metadata = consumer.fetch_metadata(None, common::CLIENT_TIMEOUT)?;
    let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("bad") || n.starts_with('.')),
        "invalid topics exist: {names:?}"
    );
    Ok(())
}

#[test]
fn create_partitions_raises_the_count_and_new_partitions_take_records() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "growing", 2, &[])?;
    runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        let result = admin
            .create_partitions(
                [&NewPartitions::new("growing", 5)],
                &common::admin_options(),
            )
            .await?;
        assert_eq!(result, vec![Ok("growing".to_string())]);
        // Shrinking is not allowed.
        let result = admin
            .create_partitions(
                [&NewPartitions::new("growing", 3)],
                &common::admin_options(),
            )
            .await?;
        assert!(
            matches!(result.first(), Some(Err(_))),
            "shrinking was accepted: {result:?}"
        );
        anyhow::Ok(())
    })?;
    assert_eq!(partition_count(&bootstrap, "growing")?, Some(5));

    let producer = common::tracked_producer(&common::producer_config(&bootstrap))?;
    common::send_tracked(
        &producer,
        BaseRecord::with_opaque_to("growing", Box::new(0))
            .partition(4)
            .payload(b"new"),
    )?;
    let deliveries = common::flush_all_delivered(&producer, 1)?;
    assert_eq!(
        deliveries.first().map(|d| d.result.clone()),
        Some(Ok((4, 0)))
    );
    Ok(())
}

#[test]
fn deleted_topics_disappear_from_metadata() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "doomed", 2, &[])?;
    common::create_topic_blocking(&bootstrap, "kept", 1, &[])?;
    runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        let result = admin
            .delete_topics(&["doomed"], &common::admin_options())
            .await?;
        assert_eq!(result, vec![Ok("doomed".to_string())]);
        let result = admin
            .delete_topics(&["never-existed"], &common::admin_options())
            .await?;
        assert_eq!(
            result,
            vec![Err((
                "never-existed".to_string(),
                RDKafkaErrorCode::UnknownTopicOrPartition
            ))]
        );
        anyhow::Ok(())
    })?;
    common::wait_until(
        common::CLIENT_TIMEOUT,
        "doomed to leave the metadata",
        || Ok(partition_count(&bootstrap, "doomed")?.is_none()),
    )?;
    assert_eq!(partition_count(&bootstrap, "kept")?, Some(1));
    Ok(())
}

#[test]
fn delete_records_moves_log_start_and_reads_below_it_are_out_of_range() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    let topic = "trimmed";
    common::create_topic_blocking(&bootstrap, topic, 1, &[])?;
    let producer = common::tracked_producer(&common::producer_config(&bootstrap))?;
    for i in 0..100u64 {
        let value = format!("record-{i}");
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition(0)
                .payload(value.as_bytes()),
        )?;
    }
    common::flush_all_delivered(&producer, 100)?;

    let mut before = TopicPartitionList::new();
    before.add_partition_offset(topic, 0, Offset::Offset(40))?;
    let result = runtime()?.block_on(async {
        let admin = common::admin(&bootstrap)?;
        anyhow::Ok(
            admin
                .delete_records(&before, &common::admin_options())
                .await?,
        )
    })?;
    let element = result
        .elements()
        .into_iter()
        .next()
        .context("no DeleteRecords result")?;
    assert_eq!(element.error(), Ok(()));
    assert_eq!(
        element.offset(),
        Offset::Offset(40),
        "the new low watermark"
    );

    let consumer: BaseConsumer = common::consumer_config(&bootstrap).create()?;
    assert_eq!(
        consumer.fetch_watermarks(topic, 0, common::CLIENT_TIMEOUT)?,
        (40, 100),
        "ListOffsets earliest moved"
    );

    // A consumer that asks for offset 10 with auto.offset.reset=error is told it is out of range.
    let strict: BaseConsumer = common::consumer_config(&bootstrap)
        .set("auto.offset.reset", "error")
        .create()?;
    let mut at_ten = TopicPartitionList::new();
    at_ten.add_partition_offset(topic, 0, Offset::Offset(10))?;
    strict.assign(&at_ten)?;
    let deadline = std::time::Instant::now() + common::CLIENT_TIMEOUT;
    let error = loop {
        if std::time::Instant::now() > deadline {
            bail!("no out-of-range error within {:?}", common::CLIENT_TIMEOUT);
        }
        match strict.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => bail!("read offset {} below the log start", message.offset()),
            Some(Err(err)) => break err,
        }
    };
    assert!(
        matches!(
            error,
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
            )
        ),
        "expected an offset-out-of-range error, got {error:?}"
    );

    // The same on the wire: Fetch at 10 gets OFFSET_OUT_OF_RANGE and the log start.
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("trimmed")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(10)
                        .with_current_leader_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response = RawClient::connect(&bootstrap)?.call(&fetch, 12)?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("a Fetch response without a partition")?;
    assert_eq!(partition.error_code, 1, "OFFSET_OUT_OF_RANGE");

    // Reading from the new start works and begins with record 40.
    let read = common::read_to_high_watermark(&bootstrap, topic, &[0], common::CLIENT_TIMEOUT)?;
    let first = read
        .get(&0)
        .and_then(|m| m.first())
        .context("nothing read after DeleteRecords")?;
    assert_eq!(
        (first.offset(), first.payload()),
        (40, Some(&b"record-40"[..]))
    );
    assert_eq!(read.get(&0).map(Vec::len), Some(60));
    Ok(())
}
