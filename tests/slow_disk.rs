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
use common::Broker;
use common::raw::{RawClient, produce_error, produce_request, record_batch};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, MetadataRequest, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};

const TOPIC: &str = "slow";
/// How long each read of a commit-log segment takes once the failpoint is
/// on: long beside a metadata request, short for CI.
const READ_SLEEP_MS: u64 = 3_000;
/// Newest Fetch version whose fields these requests fill in (topics by name).
const FETCH_VERSION_MAX: i16 = 12;

/// What the test saw, in the order it saw it.
#[derive(Debug, PartialEq)]
enum Seen {
    FetchAnswered,
    MetadataAnswered,
}

#[test]
fn metadata_is_answered_while_slow_reads_hold_more_connections_than_workers() -> anyhow::Result<()>
{
    let failpoints = format!("storage::segment_read=sleep({READ_SLEEP_MS})");
    let broker = Broker::start_with_env("127.0.0.1:0", &[], &[("FAILPOINTS", &failpoints)])?;
    let addr = broker.bootstrap();

    // Writes are not slowed: one record to read back (the topic is auto-created).
    let mut producer = RawClient::connect(&addr)?;
    let produced = producer.send(&produce_request(TOPIC, 0, record_batch(&[b"v"])?), 9)?;
    anyhow::ensure!(
        produce_error(&produced)? == 0,
        "produce failed: {produced:?}"
    );

    // More fetches than the runtime has workers (one per core), each on its
    // own connection, each held READ_SLEEP_MS by its read.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let fetches = workers + 2;
    let (seen_tx, seen) = mpsc::channel();
    let (sent_tx, sent) = mpsc::channel();
    let mut readers = Vec::with_capacity(fetches);
    for _ in 0..fetches {
        let mut connection = RawClient::connect(&addr)?;
        let version = connection.version::<FetchRequest>(FETCH_VERSION_MAX)?;
        let (seen_tx, sent_tx) = (seen_tx.clone(), sent_tx.clone());
        readers.push(std::thread::spawn(
            move || -> anyhow::Result<FetchResponse> {
                let body = RawClient::encode(&fetch_from_start(), version, 1)?;
                connection.send_frame(&body)?;
                sent_tx.send(()).context("the test stopped")?;
                let mut answer = connection
                    .read_frame()?
                    .context("fetch: connection closed")?;
                seen_tx
                    .send(Seen::FetchAnswered)
                    .context("the test stopped")?;
                ResponseHeader::decode(&mut answer, FetchResponse::header_version(version))?;
                FetchResponse::decode(&mut answer, version)
            },
        ));
    }
    let mut metadata = RawClient::connect(&addr)?;
    metadata.version::<MetadataRequest>(12)?;
    for _ in 0..fetches {
        sent.recv_timeout(common::CLIENT_TIMEOUT)
            .context("a fetch was not sent")?;
    }
    // Not needed for the order asserted below (with reads off the workers it
    // holds whatever the timing). It lets the broker begin every fetch first,
    // so that code reading on the workers is seen failing: both workers are
    // then inside a read when the metadata request comes.
    std::thread::sleep(Duration::from_millis(300));

    metadata.send(&MetadataRequest::default().with_topics(None), 12)?;
    metadata.send(&ApiVersionsRequest::default(), 3)?;
    seen_tx.send(Seen::MetadataAnswered)?;

    for reader in readers {
        let fetched = reader
            .join()
            .map_err(|_| anyhow::anyhow!("a fetch thread panicked"))??;
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
    drop(seen_tx);
    let order: Vec<Seen> = seen.iter().collect();
    if order.first() != Some(&Seen::MetadataAnswered) {
        bail!(
            "metadata was answered only after a slow read finished: {order:?}\n{}",
            broker.stderr_tail()
        );
    }
    Ok(())
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
