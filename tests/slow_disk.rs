//! A slow disk holds only the requests that touch it: file I/O runs on
//! blocking threads, never on the async runtime's workers, so other
//! connections are still served while reads or writes wait for the disk.
//!
//! The disk is made slow with the storage failpoints (docs/testing.md), so
//! these tests need a broker built with `--features failpoints`.

#![cfg(feature = "failpoints")]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use common::Broker;
use common::raw::{RawClient, produce_error, produce_request, record_batch};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, MetadataRequest, ProduceRequest,
    ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};

const TOPIC: &str = "slow";
/// How long each read of a commit-log segment takes once the failpoint is
/// on: long beside a metadata request, short for CI.
const READ_SLEEP_MS: u64 = 3_000;
/// How long each write to a commit-log segment takes once the failpoint is
/// on. Writes take the log's one writer lock in turn, so shorter than reads.
const WRITE_SLEEP_MS: u64 = 1_000;
/// Newest Fetch version whose fields these requests fill in (topics by name).
const FETCH_VERSION_MAX: i16 = 12;
/// Newest Produce version whose fields these requests fill in (topics by name).
const PRODUCE_VERSION_MAX: i16 = 9;

/// What the test saw, in the order it saw it.
#[derive(Debug, PartialEq)]
enum Seen {
    SlowCallAnswered,
    MetadataAnswered,
}

#[test]
fn metadata_is_answered_while_slow_reads_hold_more_connections_than_workers() -> anyhow::Result<()>
{
    let failpoints = format!("storage::segment_read=sleep({READ_SLEEP_MS})");
    let broker = Broker::start_with_env("127.0.0.1:0", &[], &[("FAILPOINTS", &failpoints)])?;
    // Writes are not slowed: one record to read back (the topic is auto-created).
    produce_one(&broker.bootstrap())?;
    let fetched = answered_before_slow_calls(&broker, |connection| {
        let version = connection.version::<FetchRequest>(FETCH_VERSION_MAX)?;
        Ok((RawClient::encode(&fetch_from_start(), version, 1)?, version))
    })?;
    for (mut answer, version) in fetched {
        ResponseHeader::decode(&mut answer, FetchResponse::header_version(version))?;
        let fetched = FetchResponse::decode(&mut answer, version)?;
        // Each fetch did read the record: it was one of the slow calls.
        let partition = fetched
            .responses
            .first()
            .and_then(|topic| topic.partitions.first())
            .context("a fetch answer without its partition")?;
        anyhow::ensure!(
            partition.error_code == 0 && partition.records.as_ref().is_some_and(|r| !r.is_empty()),
            "a fetch did not read the record: {partition:?}"
        );
    }
    Ok(())
}

#[test]
fn metadata_is_answered_while_slow_writes_hold_more_connections_than_workers() -> anyhow::Result<()>
{
    let failpoints = format!("storage::segment_write=sleep({WRITE_SLEEP_MS})");
    let broker = Broker::start_with_env("127.0.0.1:0", &[], &[("FAILPOINTS", &failpoints)])?;
    // The topic exists before the slow produces are sent (this one is slow too).
    produce_one(&broker.bootstrap())?;
    let produced = answered_before_slow_calls(&broker, |connection| {
        let version = connection.version::<ProduceRequest>(PRODUCE_VERSION_MAX)?;
        let request = produce_request(TOPIC, 0, record_batch(&[b"w"])?);
        Ok((RawClient::encode(&request, version, 1)?, version))
    })?;
    for (mut answer, version) in produced {
        ResponseHeader::decode(&mut answer, ProduceResponse::header_version(version))?;
        let produced = ProduceResponse::decode(&mut answer, version)?;
        anyhow::ensure!(
            produce_error(&produced)? == 0,
            "produce failed: {produced:?}"
        );
    }
    Ok(())
}

/// Produce one record to partition 0 of [`TOPIC`], creating the topic.
fn produce_one(addr: &str) -> anyhow::Result<()> {
    let mut producer = RawClient::connect(addr)?;
    let produced = producer.send(
        &produce_request(TOPIC, 0, record_batch(&[b"v"])?),
        PRODUCE_VERSION_MAX,
    )?;
    anyhow::ensure!(
        produce_error(&produced)? == 0,
        "produce failed: {produced:?}"
    );
    Ok(())
}

/// Send the request `slow` builds (a frame body and its version) on more
/// connections than the runtime has workers (one per core), each held by the
/// slowed disk; then check that Metadata and ApiVersions on another
/// connection are answered before any of them. Returns each slow call's
/// answer frame and version.
fn answered_before_slow_calls(
    broker: &Broker,
    slow: impl Fn(&mut RawClient) -> anyhow::Result<(BytesMut, i16)>,
) -> anyhow::Result<Vec<(Bytes, i16)>> {
    let addr = broker.bootstrap();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let calls = workers + 2;
    let (seen_tx, seen) = mpsc::channel();
    let (sent_tx, sent) = mpsc::channel();
    let mut waiting = Vec::with_capacity(calls);
    for _ in 0..calls {
        let mut connection = RawClient::connect(&addr)?;
        let (body, version) = slow(&mut connection)?;
        let (seen_tx, sent_tx) = (seen_tx.clone(), sent_tx.clone());
        waiting.push(std::thread::spawn(
            move || -> anyhow::Result<(Bytes, i16)> {
                connection.send_frame(&body)?;
                sent_tx.send(()).context("the test stopped")?;
                let answer = connection.read_frame()?.context("connection closed")?;
                seen_tx
                    .send(Seen::SlowCallAnswered)
                    .context("the test stopped")?;
                Ok((answer, version))
            },
        ));
    }
    let mut metadata = RawClient::connect(&addr)?;
    metadata.version::<MetadataRequest>(12)?;
    for _ in 0..calls {
        sent.recv_timeout(common::CLIENT_TIMEOUT)
            .context("a slow call was not sent")?;
    }
    // Not needed for the order asserted below (with the disk off the workers
    // it holds whatever the timing). It lets the broker begin every slow call
    // first, so that code doing file I/O on the workers is seen failing: the
    // workers are then all inside the disk when the metadata request comes.
    std::thread::sleep(Duration::from_millis(300));

    metadata.send(&MetadataRequest::default().with_topics(None), 12)?;
    metadata.send(&ApiVersionsRequest::default(), 3)?;
    seen_tx.send(Seen::MetadataAnswered)?;

    let mut answers = Vec::with_capacity(calls);
    for call in waiting {
        answers.push(
            call.join()
                .map_err(|_| anyhow::anyhow!("a slow call's thread panicked"))??,
        );
    }
    drop(seen_tx);
    let order: Vec<Seen> = seen.iter().collect();
    if order.first() != Some(&Seen::MetadataAnswered) {
        bail!(
            "metadata was answered only after a slow call finished: {order:?}\n{}",
            broker.stderr_tail()
        );
    }
    Ok(answers)
}

/// A fetch of partition 0 of [`TOPIC`] from offset 0, answered at once.
fn fetch_from_start() -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_current_leader_epoch(-1)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}
