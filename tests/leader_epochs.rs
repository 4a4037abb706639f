//! Leader epochs end to end: OffsetForLeaderEpoch answered from the
//! partition's leader-epoch cache, `current_leader_epoch` fencing in Fetch,
//! ListOffsets and OffsetForLeaderEpoch, the epoch reported by Metadata and
//! stamped into batches, and a librdkafka consumer that validates its
//! position with OffsetForLeaderEpoch after the epoch moves.
//!
//! Nothing in a running single broker changes the epoch yet (the cluster
//! work will, on leader change), so these tests move it the way that work
//! will: through the storage API (`Partition::set_leader_epoch`), on the
//! broker's data folder while the broker is stopped.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::Broker;
use common::raw::{RawClient, produce_error, produce_request, record_batch};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;
use weir_storage::{CommitLog, LogConfig, PartitionId, SystemClock};

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Produce one batch of `values` to partition 0 of `topic`; its base offset.
fn produce(client: &mut RawClient, topic: &str, values: &[&str]) -> anyhow::Result<i64> {
    let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let response = client.call(&produce_request(topic, 0, record_batch(&values)?), 9)?;
    assert_eq!(produce_error(&response)?, NONE, "produce to {topic}");
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("a Produce response without a partition")?;
    Ok(partition.base_offset)
}

/// OffsetForLeaderEpoch for one partition at `version`.
fn end_offset(
    client: &mut RawClient,
    version: i16,
    replica_id: i32,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> anyhow::Result<EpochEndOffset> {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current_leader_epoch)
                        .with_leader_epoch(leader_epoch),
                ]),
        ]);
    let response = client.call(&request, version)?;
    response
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("an OffsetForLeaderEpoch response without a partition")
}

/// (error code, leader epoch, end offset) of a consumer's OffsetForLeaderEpoch at v4.
fn epoch_end(
    client: &mut RawClient,
    topic: &str,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> anyhow::Result<(i16, i32, i64)> {
    let e = end_offset(client, 4, -1, topic, 0, current_leader_epoch, leader_epoch)?;
    Ok((e.error_code, e.leader_epoch, e.end_offset))
}

/// One Fetch of partition 0 from `offset` at `version` (by name, or by
/// `topic_id` from v13): (error code, records, the leader epoch the response
/// names as current).
fn fetch(
    client: &mut RawClient,
    version: i16,
    (topic, topic_id): (&str, Uuid),
    offset: i64,
    current_leader_epoch: i32,
) -> anyhow::Result<(i16, bytes::Bytes, i32)> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_topic_id(topic_id)
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_current_leader_epoch(current_leader_epoch)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response = client.call(&request, version)?;
    let p = response
        .responses
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("a Fetch response without a partition")?;
    Ok((
        p.error_code,
        p.records.unwrap_or_default(),
        p.current_leader.leader_epoch,
    ))
}

/// (base offset, partitionLeaderEpoch) of every batch in fetched records.
fn batch_epochs(mut records: &[u8]) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    while records.len() >= 61 {
        let base = i64::from_be_bytes(records[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize + 12;
        let epoch = i32::from_be_bytes(records[12..16].try_into().unwrap());
        out.push((base, epoch));
        records = &records[len..];
    }
    out
}

/// ListOffsets v9 for partition 0: (error code, offset, leader epoch).
fn list_offset(
    client: &mut RawClient,
    topic: &str,
    current_leader_epoch: i32,
    timestamp: i64,
) -> anyhow::Result<(i16, i64, i32)> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(current_leader_epoch)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let response = client.call(&request, 9)?;
    let p = response
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("a ListOffsets response without a partition")?;
    Ok((p.error_code, p.offset, p.leader_epoch))
}

/// The topic's id and partition 0's leader epoch, from Metadata v12.
fn metadata(client: &mut RawClient, topic: &str) -> anyhow::Result<(Uuid, i32)> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic))),
    ]));
    let response = client.call(&request, 12)?;
    let t = response
        .topics
        .into_iter()
        .next()
        .context("a Metadata response without the topic")?;
    let p = t.partitions.first().context("a topic without partitions")?;
    Ok((t.topic_id, p.leader_epoch))
}

/// Stop the broker, make `epoch` partition 0's leader epoch through the
/// storage API (what the cluster work will do on a leader change), start it again.
fn move_leader_epoch(broker: &mut Broker, topic_id: Uuid, epoch: i32) -> anyhow::Result<()> {
    let status = broker.stop()?;
    anyhow::ensure!(status.success(), "the broker exited with {status}");
    let (log, _) = CommitLog::open(
        &broker.data_dir(),
        LogConfig::default(),
        Arc::new(SystemClock),
    )?;
    let partition = log
        .partition(PartitionId {
            topic_id,
            partition: 0,
        })
        .context("partition 0 is not in the log")?;
    partition.set_leader_epoch(epoch)?;
    log.shutdown()?;
    broker.restart()
}

#[test]
fn offset_for_leader_epoch_answers_from_the_cache_and_fences_stale_epochs() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "epochs", 1, &[])?;
    let mut client = RawClient::connect(&bootstrap)?;
    produce(&mut client, "epochs", &["a", "b"])?;
    produce(&mut client, "epochs", &["c"])?;

    // Epoch 0 is current: it ends at the log end, at every version Kafka
    // 4.x serves, for a consumer (-1) and a follower (broker id) alike.
    for version in 2..=4 {
        for replica_id in [-1, 1] {
            let e = end_offset(&mut client, version, replica_id, "epochs", 0, -1, 0)?;
            assert_eq!(
                (e.error_code, e.leader_epoch, e.end_offset),
                (NONE, 0, 3),
                "v{version} replica {replica_id}"
            );
        }
    }
    // An epoch above every known one, and -1, cannot be placed.
    assert_eq!(epoch_end(&mut client, "epochs", -1, 1)?, (NONE, -1, -1));
    assert_eq!(epoch_end(&mut client, "epochs", -1, -1)?, (NONE, -1, -1));
    // The client's idea of the current epoch is checked first.
    assert_eq!(epoch_end(&mut client, "epochs", 0, 0)?, (NONE, 0, 3));
    assert_eq!(
        epoch_end(&mut client, "epochs", 1, 0)?,
        (UNKNOWN_LEADER_EPOCH, -1, -1)
    );
    // Unknown topics and partitions, as Kafka answers them.
    assert_eq!(
        epoch_end(&mut client, "no-such-topic", -1, 0)?.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let e = end_offset(&mut client, 4, -1, "epochs", 7, -1, 0)?;
    assert_eq!(e.error_code, UNKNOWN_TOPIC_OR_PARTITION);

    // Fetch and ListOffsets fence the same way.
    assert_eq!(
        fetch(&mut client, 12, ("epochs", Uuid::nil()), 0, 1)?.0,
        UNKNOWN_LEADER_EPOCH
    );
    assert_eq!(
        fetch(&mut client, 12, ("epochs", Uuid::nil()), 0, 0)?.0,
        NONE
    );
    assert_eq!(
        list_offset(&mut client, "epochs", 1, LATEST)?.0,
        UNKNOWN_LEADER_EPOCH
    );
    assert_eq!(list_offset(&mut client, "epochs", 0, LATEST)?, (NONE, 3, 0));
    assert_eq!(metadata(&mut client, "epochs")?.1, 0);
    Ok(())
}

#[test]
fn a_leader_epoch_set_through_storage_survives_a_restart_and_is_served() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "moved", 1, &[])?;
    let mut client = RawClient::connect(&bootstrap)?;
    for value in ["a", "b", "c"] {
        produce(&mut client, "moved", &[value])?;
    }
    let (topic_id, epoch) = metadata(&mut client, "moved")?;
    assert_eq!(epoch, 0);
    drop(client);

    move_leader_epoch(&mut broker, topic_id, 1)?;
    let mut client = RawClient::connect(&bootstrap)?;
    assert_eq!(metadata(&mut client, "moved")?.1, 1, "Metadata reports it");
    // Epoch 0 ends where epoch 1 began, before any batch of epoch 1.
    assert_eq!(epoch_end(&mut client, "moved", 1, 0)?, (NONE, 0, 3));
    assert_eq!(epoch_end(&mut client, "moved", 1, 1)?, (NONE, 1, 3));
    assert_eq!(produce(&mut client, "moved", &["d", "e"])?, 3);
    assert_eq!(epoch_end(&mut client, "moved", 1, 0)?, (NONE, 0, 3));
    assert_eq!(epoch_end(&mut client, "moved", -1, 1)?, (NONE, 1, 5));

    // Batches appended after carry the new epoch; the old ones keep theirs.
    let (code, records, _) = fetch(&mut client, 12, ("moved", topic_id), 0, 1)?;
    assert_eq!(code, NONE);
    assert_eq!(
        batch_epochs(&records),
        [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]
    );

    // The old epoch is now fenced everywhere; a Fetch names the current leader epoch.
    assert_eq!(
        epoch_end(&mut client, "moved", 0, 0)?,
        (FENCED_LEADER_EPOCH, -1, -1)
    );
    for version in [12, 16] {
        let (code, records, current) = fetch(&mut client, version, ("moved", topic_id), 0, 0)?;
        assert_eq!(
            (code, records.len(), current),
            (FENCED_LEADER_EPOCH, 0, 1),
            "Fetch v{version}"
        );
    }
    assert_eq!(
        list_offset(&mut client, "moved", 0, LATEST)?.0,
        FENCED_LEADER_EPOCH
    );
    assert_eq!(
        list_offset(&mut client, "moved", 2, LATEST)?.0,
        UNKNOWN_LEADER_EPOCH
    );
    // ListOffsets names the epoch of what it found.
    assert_eq!(list_offset(&mut client, "moved", 1, LATEST)?, (NONE, 5, 1));
    assert_eq!(
        list_offset(&mut client, "moved", -1, EARLIEST)?,
        (NONE, 0, 0)
    );

    // And it all survives another restart.
    drop(client);
    broker.restart()?;
    let mut client = RawClient::connect(&bootstrap)?;
    assert_eq!(metadata(&mut client, "moved")?.1, 1);
    assert_eq!(epoch_end(&mut client, "moved", 1, 0)?, (NONE, 0, 3));
    assert_eq!(epoch_end(&mut client, "moved", 1, 1)?, (NONE, 1, 5));
    Ok(())
}

/// A consumer context that keeps librdkafka's log lines.
#[derive(Default, Clone)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn any(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl ClientContext for Logs {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.lock().unwrap().push(format!("{fac}: {log_message}"));
    }
}

impl ConsumerContext for Logs {}

/// Poll until `n` more values arrive; every error fails.
fn consume(consumer: &BaseConsumer<Logs>, n: usize) -> anyhow::Result<Vec<(i64, String)>> {
    let deadline = Instant::now() + common::CLIENT_TIMEOUT;
    let mut out = Vec::new();
    while out.len() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {out:?} consumed of {n} in time"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            // The broker restarting under the consumer is expected; anything
            // else (a detected truncation above all) fails the test.
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(err)) => anyhow::bail!("the consumer failed: {err}"),
        }
    }
    Ok(out)
}

#[test]
fn an_rdkafka_consumer_validates_its_position_when_the_leader_epoch_moves() -> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "validated", 1, &[])?;
    let mut client = RawClient::connect(&bootstrap)?;
    for i in 0..5 {
        produce(&mut client, "validated", &[&format!("v{i}")])?;
    }
    let (topic_id, _) = metadata(&mut client, "validated")?;
    drop(client);

    let logs = Logs::default();
    let mut config = common::consumer_config(&bootstrap);
    config
        // Truncation detected by the validation must surface as an error,
        // not as a silent reset.
        .set("auto.offset.reset", "error")
        .set("topic.metadata.refresh.interval.ms", "500")
        .set("debug", "fetch,topic")
        .set_log_level(RDKafkaLogLevel::Debug);
    let consumer: BaseConsumer<Logs> = config.create_with_context(logs.clone())?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("validated", 0, Offset::Offset(0))?;
    consumer.assign(&assignment)?;
    let first = consume(&consumer, 5)?;
    assert_eq!(first.last(), Some(&(4, "v4".to_string())));
    assert!(
        !logs.any("querying broker for epoch validation"),
        "no validation while the epoch stays"
    );

    // The leader epoch moves while the consumer is running: its next Fetch
    // (epoch 0) is fenced, Metadata shows epoch 1, and librdkafka validates
    // its position (offset 5, last read in epoch 0) with OffsetForLeaderEpoch.
    move_leader_epoch(&mut broker, topic_id, 1)?;
    let mut client = RawClient::connect(&bootstrap)?;
    for i in 5..8 {
        produce(&mut client, "validated", &[&format!("v{i}")])?;
    }
    let rest = consume(&consumer, 3)?;
    assert_eq!(
        rest,
        [
            (5, "v5".to_string()),
            (6, "v6".to_string()),
            (7, "v7".to_string())
        ]
    );
    assert!(
        logs.any("querying broker for epoch validation"),
        "librdkafka never sent OffsetForLeaderEpoch"
    );
    assert!(
        logs.any("offset and epoch validation succeeded: broker end offset 5"),
        "the validation did not succeed at offset 5"
    );
    Ok(())
}
