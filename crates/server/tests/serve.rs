//! The listener driven over real TCP: pipelining, the KIP-511 fallback, bad
//! frames closing only their own connection, long-polling fetches, and
//! graceful shutdown.

// Helpers encode fixed, valid requests; a failure there is a bug in the test.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_broker::{Broker, BrokerConfig};
use weir_metadata::LocalMetadataStore;
use weir_server::ServerLimits;
use weir_storage::{CommitLog, LogConfig, SystemClock};

/// Longest any single step may take before the test fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_REQUEST_BYTES: usize = 64 * 1024;

struct Harness {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let clock = Arc::new(SystemClock);
        let (log, _) = CommitLog::open(dir.path(), LogConfig::default(), clock.clone())?;
        let metadata = Arc::new(LocalMetadataStore::open(dir.path())?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = BrokerConfig {
            advertised_port: i32::from(addr.port()),
            ..BrokerConfig::default()
        };
        let broker = Arc::new(
            Broker::new(config, log, metadata, clock).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let limits = ServerLimits {
            max_request_bytes: MAX_REQUEST_BYTES,
            ..ServerLimits::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(weir_server::serve(
            vec![weir_server::Listener::plaintext(listener)],
            broker,
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            stop: Some(stop),
            served,
            _dir: dir,
        })
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        Ok(TcpStream::connect(self.addr).await?)
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STEP_TIMEOUT, &mut self.served)
            .await
            .context("serve did not return after shutdown")???;
        Ok(())
    }
}

fn frame(api: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some("serve-test".into()))
        .encode(&mut out, api.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut out, version).expect("body encodes");
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.freeze()
}

async fn send(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: RequestKind,
) -> anyhow::Result<()> {
    stream
        .write_all(&frame(api, version, correlation_id, &body))
        .await?;
    Ok(())
}

/// Read one response frame; `None` when the broker closed the connection.
async fn recv_frame(stream: &mut TcpStream) -> anyhow::Result<Option<Bytes>> {
    let read = async {
        let mut size = [0u8; 4];
        match stream.read_exact(&mut size).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut body).await?;
        Ok(Some(Bytes::from(body)))
    };
    tokio::time::timeout(STEP_TIMEOUT, read)
        .await
        .context("no response in time")?
}

async fn recv(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
) -> anyhow::Result<(i32, ResponseKind)> {
    let Some(mut frame) = recv_frame(stream).await? else {
        bail!("connection closed instead of a {api:?} response");
    };
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))?;
    let body = ResponseKind::decode(api, &mut frame, version)?;
    Ok((header.correlation_id, body))
}

fn metadata_for(topic: &str) -> RequestKind {
    RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_string())),
            ))]))
            .with_allow_auto_topic_creation(true),
    )
}

fn fetch_from(topic: &str, offset: i64, max_wait_ms: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]),
    )
}

fn produce_to(topic: &str, values: &[&str]) -> RequestKind {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch encodes");
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.freeze())),
                    ]),
            ]),
    )
}

fn fetched_values(response: &ResponseKind) -> anyhow::Result<Vec<String>> {
    let ResponseKind::Fetch(fetch) = response else {
        bail!("not a fetch response");
    };
    let partition = fetch
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the fetch response")?;
    anyhow::ensure!(
        partition.error_code == 0,
        "fetch error {}",
        partition.error_code
    );
    let mut records = partition.records.clone().unwrap_or_default();
    let mut values = Vec::new();
    while records.has_remaining() {
        for record in RecordBatchDecoder::decode(&mut records)?.records {
            let value = record.value.unwrap_or_default();
            values.push(String::from_utf8(value.to_vec())?);
        }
    }
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_request_order() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.connect().await?;
    // Written in one go, before reading anything back.
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&frame(ApiKey::Metadata, 12, 1, &metadata_for("orders")));
    for correlation_id in 2..=20 {
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        wire.extend_from_slice(&frame(ApiKey::ApiVersions, 0, correlation_id, &body));
    }
    client.write_all(&wire).await?;
    let (first, metadata) = recv(&mut client, ApiKey::Metadata, 12).await?;
    assert_eq!(first, 1);
    let ResponseKind::Metadata(metadata) = metadata else {
        bail!("not metadata");
    };
    assert_eq!(metadata.topics.first().map(|t| t.error_code), Some(0));
    for expected in 2..=20 {
        let (correlation_id, _) = recv(&mut client, ApiKey::ApiVersions, 0).await?;
        assert_eq!(correlation_id, expected);
    }
    harness.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produces_reach_the_log_in_request_order() -> anyhow::Result<()> {
    // A non-idempotent producer with several requests in flight relies on
    // Kafka processing one connection's requests in order: the batches of
    // one partition must get offsets in the order they were sent.
    const REQUESTS: i32 = 200;
    let harness = Harness::start().await?;
    let mut client = harness.connect().await?;
    send(
        &mut client,
        ApiKey::Metadata,
        12,
        1,
        metadata_for("ordered"),
    )
    .await?;
    recv(&mut client, ApiKey::Metadata, 12).await?;
    let mut wire = BytesMut::new();
    let values: Vec<String> = (0..REQUESTS).map(|i| format!("record-{i}")).collect();
    for (i, value) in values.iter().enumerate() {
        let body = produce_to("ordered", &[value.as_str()]);
        wire.extend_from_slice(&frame(ApiKey::Produce, 9, 100 + i as i32, &body));
    }
    client.write_all(&wire).await?;
    for i in 0..REQUESTS {
        let (correlation_id, response) = recv(&mut client, ApiKey::Produce, 9).await?;
        assert_eq!(correlation_id, 100 + i);
        let ResponseKind::Produce(produce) = response else {
            bail!("not a produce response");
        };
        let partition = produce
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .context("no partition in the produce response")?;
        assert_eq!(partition.error_code, 0);
        assert_eq!(
            partition.base_offset,
            i64::from(i),
            "request {i} was appended out of order"
        );
    }
    send(
        &mut client,
        ApiKey::Fetch,
        12,
        2,
        fetch_from("ordered", 0, 0),
    )
    .await?;
    let (_, fetched) = recv(&mut client, ApiKey::Fetch, 12).await?;
    assert_eq!(fetched_values(&fetched)?, values);
    harness.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_api_versions_request_gets_error_35_and_the_served_list() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.connect().await?;
    let mut wire = BytesMut::new();
    wire.put_i32(12);
    wire.put_i16(ApiKey::ApiVersions as i16);
    wire.put_i16(99);
    wire.put_i32(7);
    wire.put_slice(&[0, 0, 0, 0]);
    client.write_all(&wire).await?;
    let (correlation_id, body) = recv(&mut client, ApiKey::ApiVersions, 0).await?;
    assert_eq!(correlation_id, 7);
    let ResponseKind::ApiVersions(body) = body else {
        bail!("not api versions");
    };
    assert_eq!(body.error_code, 35);
    assert_eq!(body.api_keys.len(), Broker::served_apis().len());
    // The client retries at a version it shares, on the same connection.
    send(
        &mut client,
        ApiKey::ApiVersions,
        3,
        8,
        RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name("serve-test".into())
                .with_client_software_version("1.0".into()),
        ),
    )
    .await?;
    let (correlation_id, _) = recv(&mut client, ApiKey::ApiVersions, 3).await?;
    assert_eq!(correlation_id, 8);
    harness.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_own_connection() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let mut bystander = harness.connect().await?;

    let oversized = (MAX_REQUEST_BYTES as i32 + 1).to_be_bytes();
    let negative = (-4i32).to_be_bytes();
    let mut unknown_api = BytesMut::new();
    unknown_api.put_i32(10);
    unknown_api.put_i16(12_345);
    unknown_api.put_i16(0);
    unknown_api.put_i32(1);
    unknown_api.put_i16(-1);
    let mut garbage_body = BytesMut::new();
    garbage_body.put_i32(9);
    garbage_body.put_i16(ApiKey::Metadata as i16);
    garbage_body.put_i16(12);
    garbage_body.put_i32(1);
    garbage_body.put_u8(0xff);
    for bad in [
        &oversized[..],
        &negative[..],
        &unknown_api[..],
        &garbage_body[..],
    ] {
        let mut client = harness.connect().await?;
        client.write_all(bad).await?;
        assert!(
            recv_frame(&mut client).await?.is_none(),
            "{bad:?} should close the connection"
        );
    }
    // Half a frame, then the peer goes away.
    let mut client = harness.connect().await?;
    client.write_all(&[0, 0, 0, 50, 0, 3]).await?;
    drop(client);

    send(
        &mut bystander,
        ApiKey::ApiVersions,
        0,
        3,
        RequestKind::ApiVersions(Default::default()),
    )
    .await?;
    let (correlation_id, _) = recv(&mut bystander, ApiKey::ApiVersions, 0).await?;
    assert_eq!(correlation_id, 3);
    harness.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_fetch_returns_as_soon_as_records_arrive() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let mut consumer = harness.connect().await?;
    send(
        &mut consumer,
        ApiKey::Metadata,
        12,
        1,
        metadata_for("events"),
    )
    .await?;
    recv(&mut consumer, ApiKey::Metadata, 12).await?;

    let started = std::time::Instant::now();
    send(
        &mut consumer,
        ApiKey::Fetch,
        12,
        2,
        fetch_from("events", 0, 15_000),
    )
    .await?;
    let mut producer = harness.connect().await?;
    send(
        &mut producer,
        ApiKey::Produce,
        9,
        1,
        produce_to("events", &["a", "b"]),
    )
    .await?;
    let (_, produced) = recv(&mut producer, ApiKey::Produce, 9).await?;
    let ResponseKind::Produce(produced) = produced else {
        bail!("not produce");
    };
    let answer = &produced.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 0));

    let (correlation_id, fetched) = recv(&mut consumer, ApiKey::Fetch, 12).await?;
    assert_eq!(correlation_id, 2);
    assert_eq!(fetched_values(&fetched)?, ["a", "b"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the fetch waited for its deadline instead of the records"
    );
    harness.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_requests_before_returning() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let mut client = harness.connect().await?;
    send(&mut client, ApiKey::Metadata, 12, 1, metadata_for("quiet")).await?;
    recv(&mut client, ApiKey::Metadata, 12).await?;
    let idle = harness.connect().await?;

    // A long poll on an empty partition is in flight when shutdown starts.
    // The request after it auto-creates a topic, which another connection
    // can see: once it exists, the broker has read the fetch too.
    send(
        &mut client,
        ApiKey::Fetch,
        12,
        2,
        fetch_from("quiet", 0, 1_000),
    )
    .await?;
    send(&mut client, ApiKey::Metadata, 12, 3, metadata_for("marker")).await?;
    let mut observer = harness.connect().await?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    let probe = RequestKind::Metadata(
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("marker")))),
            ]))
            .with_allow_auto_topic_creation(false),
    );
    loop {
        send(&mut observer, ApiKey::Metadata, 12, 1, probe.clone()).await?;
        let (_, seen) = recv(&mut observer, ApiKey::Metadata, 12).await?;
        let ResponseKind::Metadata(seen) = seen else {
            bail!("not metadata");
        };
        if seen.topics.first().map(|t| t.error_code) == Some(0) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "marker topic never appeared"
        );
        tokio::task::yield_now().await;
    }
    harness.shutdown().await?;

    let (correlation_id, fetched) = recv(&mut client, ApiKey::Fetch, 12).await?;
    assert_eq!(correlation_id, 2);
    assert!(fetched_values(&fetched)?.is_empty());
    let (correlation_id, _) = recv(&mut client, ApiKey::ApiVersions, 0).await?;
    assert_eq!(correlation_id, 3);
    assert!(
        recv_frame(&mut client).await?.is_none(),
        "closed after the owed responses"
    );
    drop(idle);
    Ok(())
}
