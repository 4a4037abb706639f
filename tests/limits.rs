//! What one client can make the broker hold, driven against a real `weir
//! serve`: a Metadata or DescribeGroups request naming one thing 50,000
//! times, a connection that pipelines fetches and never reads the answers,
//! idle connections (`connections.max.idle.ms`), `max.connections`, and
//! InitProducerId presenting an id and epoch (KIP-360).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use common::Broker;
use common::raw::{self, RawClient};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FetchRequest, GroupId, InitProducerIdRequest, MetadataRequest,
    MetadataResponse, ProducerId, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
use rdkafka::producer::{BaseRecord, Producer};

const MIB: usize = 1024 * 1024;
/// How often a name is repeated in one request.
const REPEATS: usize = 50_000;
/// Partitions of the topic named in the Metadata request: one copy of it is
/// a few KiB, 50,000 copies are over 100 MiB.
const WIDE_TOPIC_PARTITIONS: i32 = 100;
/// Largest response expected for one copy of that topic.
const ONE_TOPIC_RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// What the pipelining connection asks per fetch, and how many it sends.
const FETCH_BYTES: usize = 16 * MIB;
const PIPELINED_FETCHES: i32 = 64;
/// Data stored in the fetched partition, in records of this size.
const STORED_BYTES: usize = 64 * MIB;
const RECORD_BYTES: usize = 512 * 1024;
/// Peak resident memory allowed while the pipelining connection is held:
/// the budget lets it pin a few fetches, far from all 64 (1 GiB).
const PEAK_RSS_BYTES_MAX: usize = 384 * MIB;
/// How long a connection the broker should close may stay open.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(20);
/// DescribeConfigs' resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// Kafka's error codes seen here.
const INVALID_REQUEST: i16 = 42;

fn decode<R: Decodable + HeaderVersion>(mut frame: Bytes, version: i16) -> anyhow::Result<R> {
    ResponseHeader::decode(&mut frame, R::header_version(version))?;
    R::decode(&mut frame, version)
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[test]
fn metadata_and_describe_configs_naming_one_topic_50000_times_answer_it_once() -> anyhow::Result<()>
{
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "wide", WIDE_TOPIC_PARTITIONS, &[])?;
    let mut client = RawClient::connect(&bootstrap)?;
    let topic = MetadataRequestTopic::default().with_name(Some(TopicName(name("wide"))));
    let request = MetadataRequest::default()
        .with_topics(Some(vec![topic; REPEATS]))
        .with_allow_auto_topic_creation(false);
    client.send_frame(&RawClient::encode(&request, 12, 1)?)?;
    let frame = client
        .read_frame()?
        .context("the broker closed the connection")?;
    ensure!(
        frame.len() < ONE_TOPIC_RESPONSE_BYTES_MAX,
        "a {}-byte response",
        frame.len()
    );
    let response: MetadataResponse = decode(frame, 12)?;
    assert_eq!(response.topics.len(), 1);
    assert_eq!(
        response.topics[0].partitions.len(),
        WIDE_TOPIC_PARTITIONS as usize
    );

    // DescribeConfigs of the same topic, named as often, is answered once.
    let resource = DescribeConfigsResource::default()
        .with_resource_type(TOPIC_RESOURCE)
        .with_resource_name(name("wide"))
        .with_configuration_keys(None);
    let request = DescribeConfigsRequest::default().with_resources(vec![resource; REPEATS]);
    let response: DescribeConfigsResponse = client.call(&request, 4)?;
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].error_code, 0);
    Ok(())
}

#[test]
fn describe_groups_naming_one_group_50000_times_answers_it_once() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(name("g")); REPEATS]);
    let response: DescribeGroupsResponse = client.call(&request, 5)?;
    assert_eq!(response.groups.len(), 1);
    assert_eq!(response.groups[0].group_id.as_str(), "g");
    Ok(())
}

/// A resident-memory figure of `/proc/<pid>/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> anyhow::Result<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .context("no number")?
        .parse()?;
    Ok(kib * 1024)
}

fn fetch_request(topic: &str, max_bytes: usize) -> anyhow::Result<FetchRequest> {
    let max_bytes = i32::try_from(max_bytes)?;
    Ok(FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(name(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_current_leader_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ]))
}

/// Create `topic` with one partition holding `bytes` of records.
fn fill(bootstrap: &str, topic: &str, bytes: usize) -> anyhow::Result<()> {
    common::create_topic_blocking(bootstrap, topic, 1, &[])?;
    let mut loader = RawClient::connect(bootstrap)?;
    let value = vec![b'x'; RECORD_BYTES];
    for _ in 0..bytes / RECORD_BYTES {
        let batch = raw::record_batch(&[&value])?;
        let response = loader.call(&raw::produce_request(topic, 0, batch), 9)?;
        ensure!(raw::produce_error(&response)? == 0, "{response:?}");
    }
    Ok(())
}

/// Connect and get an ApiVersions answer, retrying until `CLOSE_TIMEOUT`
/// while the broker has not yet seen an earlier connection close.
fn served_before_timeout(bootstrap: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    loop {
        let answered = RawClient::connect(bootstrap)
            .and_then(|mut c| c.call(&ApiVersionsRequest::default(), 2));
        match answered {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => return Err(anyhow::Error::new(err).context("no connection served")),
        }
    }
}

#[test]
fn a_connection_that_never_reads_its_fetches_is_closed_when_idle() -> anyhow::Result<()> {
    // One connection slot: a new client is served only once the stuck one is closed.
    let broker = Broker::start(&[
        "--set",
        "max.connections=1",
        "--set",
        "connections.max.idle.ms=1000",
    ])?;
    let bootstrap = broker.bootstrap();
    fill(&bootstrap, "big", 2 * FETCH_BYTES)?;
    served_before_timeout(&bootstrap)?;
    // The stuck client must hold the one slot first: the broker frees the
    // slot of a client that just closed only once it sees the close, and a
    // connection made before that is refused (closed at once).
    let mut stuck = None;
    common::wait_until(
        common::CLIENT_TIMEOUT,
        "the only connection slot to be free",
        || {
            let mut client = RawClient::connect(&bootstrap)?;
            let held = client.call(&ApiVersionsRequest::default(), 2).is_ok();
            stuck = held.then_some(client);
            Ok(held)
        },
    )?;
    let mut stuck = stuck.context("no connection held the slot")?;
    let fetch = fetch_request("big", FETCH_BYTES)?;
    for correlation_id in 0..PIPELINED_FETCHES {
        stuck.send_frame(&RawClient::encode(&fetch, 11, correlation_id)?)?;
    }
    // The stuck connection is never read from here on.
    served_before_timeout(&bootstrap)?;
    drop(stuck);
    Ok(())
}

#[test]
fn pipelined_fetches_never_read_do_not_pin_memory_and_others_are_served() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    fill(&bootstrap, "big", STORED_BYTES)?;
    common::create_topic_blocking(&bootstrap, "small", 1, &[])?;

    // Count the peak from here on (5 resets VmHWM to the current RSS).
    let pid = broker.pid().context("the broker is not running")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;

    let mut stuck = RawClient::connect(&bootstrap)?;
    let fetch = fetch_request("big", FETCH_BYTES)?;
    for correlation_id in 0..PIPELINED_FETCHES {
        stuck.send_frame(&RawClient::encode(&fetch, 11, correlation_id)?)?;
    }

    // Another client is served meanwhile: it produces and reads back.
    let producer: rdkafka::producer::BaseProducer = common::producer_config(&bootstrap).create()?;
    for i in 0..10u32 {
        let payload = i.to_be_bytes();
        producer
            .send(BaseRecord::<[u8], [u8]>::to("small").payload(&payload[..]))
            .map_err(|(err, _)| err)?;
    }
    producer.flush(common::CLIENT_TIMEOUT)?;
    let read = common::read_to_high_watermark(&bootstrap, "small", &[0], common::CLIENT_TIMEOUT)?;
    assert_eq!(read.get(&0).map(Vec::len), Some(10));

    let peak = proc_status_bytes(pid, "VmHWM")?;
    eprintln!("peak RSS {} MiB", peak / MIB);
    assert!(
        peak < PEAK_RSS_BYTES_MAX,
        "peak RSS {} MiB with {PIPELINED_FETCHES} unread fetches of {} MiB",
        peak / MIB,
        FETCH_BYTES / MIB
    );
    // The held connection still gets its answers, in order, once it reads.
    let first = stuck.read_frame()?.context("closed before answering")?;
    ensure!(first.len() > RECORD_BYTES, "a {}-byte answer", first.len());
    Ok(())
}

#[test]
fn an_idle_connection_is_closed_after_connections_max_idle_ms() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "connections.max.idle.ms=300"])?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    client.call(&ApiVersionsRequest::default(), 2)?;
    client
        .wait_closed(CLOSE_TIMEOUT)
        .context("the idle connection was kept open")?;
    Ok(())
}

#[test]
fn a_connection_past_max_connections_is_closed() -> anyhow::Result<()> {
    let broker = Broker::start(&["--set", "max.connections=2"])?;
    let bootstrap = broker.bootstrap();
    let mut first = RawClient::connect(&bootstrap)?;
    let mut second = RawClient::connect(&bootstrap)?;
    first.call(&ApiVersionsRequest::default(), 2)?;
    second.call(&ApiVersionsRequest::default(), 2)?;
    let mut third = RawClient::connect(&bootstrap)?;
    third
        .wait_closed(CLOSE_TIMEOUT)
        .context("the connection past max.connections was kept open")?;
    second.call(&ApiVersionsRequest::default(), 2)?;

    // Once one closes, a new connection is served (after the broker has
    // seen the close, which it learns asynchronously).
    drop(first);
    served_before_timeout(&bootstrap)
}

fn init_producer_id(
    client: &mut RawClient,
    producer_id: i64,
    epoch: i16,
) -> anyhow::Result<(i16, i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    let response = client.call(&request, 4)?;
    Ok((
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    ))
}

#[test]
fn an_idempotent_producer_presenting_its_id_gets_a_fresh_one_not_a_bump() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    let (error, first, epoch) = init_producer_id(&mut client, -1, -1)?;
    assert_eq!((error, epoch), (0, 0));

    // KIP-360: the producer presents its id and epoch; Kafka answers an
    // idempotent producer with a new id at epoch 0.
    let (error, second, epoch) = init_producer_id(&mut client, first, 0)?;
    assert_eq!((error, epoch), (0, 0));
    assert_ne!(second, first);

    // An id the broker never handed out is not bumped for whoever names it.
    let (error, third, epoch) = init_producer_id(&mut client, 987_654, 7)?;
    assert_eq!((error, epoch), (0, 0));
    assert!(![first, second, 987_654].contains(&third), "{third}");

    // An exhausted epoch gets a new id too.
    let (error, fourth, epoch) = init_producer_id(&mut client, third, i16::MAX)?;
    assert_eq!((error, epoch), (0, 0));
    assert_ne!(fourth, third);

    // Only one of the two set is INVALID_REQUEST.
    for (id, epoch) in [(first, -1), (-1, 3)] {
        let (error, id, epoch) = init_producer_id(&mut client, id, epoch)?;
        assert_eq!((error, id, epoch), (INVALID_REQUEST, -1, -1));
    }
    Ok(())
}
