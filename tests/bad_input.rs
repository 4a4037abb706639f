//! Bad input over raw TCP: oversized, truncated, random and lying frames,
//! unknown APIs and versions, corrupt or oversized batches, invalid or
//! missing topics. Each gets an error code or a closed connection, never a
//! crash, and right after each one a normal librdkafka client still produces
//! and consumes on the same broker.

mod common;

use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, BytesMut};
use common::Broker;
use common::raw::{self, RawClient};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestHeader, ResponseHeader,
    TopicName, metadata_request,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The request size limit the brokers in these tests run with.
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// How long the broker may take to close a connection it should close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(40);
const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 9;

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNSUPPORTED_VERSION: i16 = 35;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

fn start(extra: &[&str]) -> anyhow::Result<Broker> {
    let limit = MAX_REQUEST_BYTES.to_string();
    let mut args = vec!["--max-request-bytes", limit.as_str()];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

/// The broker is running and serves a normal client.
fn assert_healthy(broker: &mut Broker) -> anyhow::Result<()> {
    assert!(broker.is_running(), "the broker process died");
    common::assert_serves_clients(&broker.bootstrap())
}

/// A request header (non-flexible, v1) for any API key and version, as bytes.
fn header_v1(api_key: i16, version: i16, correlation_id: i32) -> anyhow::Result<BytesMut> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("x")))
        .encode(&mut buf, 1)?;
    Ok(buf)
}

fn high_watermark(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    Ok(consumer
        .fetch_watermarks(topic, 0, common::CLIENT_TIMEOUT)?
        .1)
}

fn topic_names(bootstrap: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let metadata = consumer.fetch_metadata(None, common::CLIENT_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect())
}

fn metadata_for(name: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.to_string())))),
        ]))
}

#[test]
fn length_prefix_over_the_max_request_size_closes_the_connection() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    for claimed in [
        i32::try_from(MAX_REQUEST_BYTES)? + 1,
        i32::MAX,
        -1,
        i32::MIN,
    ] {
        let mut client = RawClient::connect(&broker.bootstrap())?;
        client.send_bytes(&claimed.to_be_bytes())?;
        // A few bytes of "body" that must not be waited for.
        let _ = client.send_bytes(&[0u8; 16]);
        let discarded = client
            .wait_closed(CLOSE_TIMEOUT)
            .with_context(|| format!("length prefix {claimed}"))?;
        assert_eq!(
            discarded, 0,
            "length prefix {claimed}: the broker answered instead of closing"
        );
        assert_healthy(&mut broker)?;
    }
    Ok(())
}

#[test]
fn truncated_frame_then_end_of_stream_closes_only_that_connection() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    let header = header_v1(3, 1, 1)?;
    client.send_bytes(&100i32.to_be_bytes())?;
    client.send_bytes(&header)?;
    // While this connection waits for the rest of its frame, others are served.
    assert_healthy(&mut broker)?;
    client.shutdown_write()?;
    let discarded = client.wait_closed(CLOSE_TIMEOUT)?;
    assert_eq!(discarded, 0, "a truncated frame was answered");
    assert_healthy(&mut broker)
}

#[test]
fn random_bytes_never_crash_the_broker() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let seeds = 0..24u64;
    for seed in seeds {
        let mut rng = StdRng::seed_from_u64(0x5eed_0000 + seed);
        let mut frame = BytesMut::new();
        match seed % 3 {
            // Pure noise, length prefix included.
            0 => {
                let mut noise = vec![0u8; rng.random_range(1..4096)];
                rng.fill_bytes(&mut noise);
                frame.put_slice(&noise);
            }
            // A truthful length prefix around a noise body.
            1 => {
                let mut noise = vec![0u8; rng.random_range(0..4096)];
                rng.fill_bytes(&mut noise);
                frame.put_i32(i32::try_from(noise.len())?);
                frame.put_slice(&noise);
            }
            // A valid header of a random API and version, then a noise body,
            // so the body decoders of real APIs see garbage.
            _ => {
                let api_key = rng.random_range(0..=75i16);
                let version = rng.random_range(0..=17i16);
                let header = header_v1(api_key, version, i32::try_from(seed)?)?;
                let mut noise = vec![0u8; rng.random_range(0..512)];
                rng.fill_bytes(&mut noise);
                frame.put_i32(i32::try_from(header.len() + noise.len())?);
                frame.put_slice(&header);
                frame.put_slice(&noise);
            }
        }
        let mut client = RawClient::connect(&broker.bootstrap())?;
        // The broker may close before reading everything; that is fine.
        let _ = client.send_bytes(&frame);
        let _ = client.shutdown_write();
        client
            .wait_closed(CLOSE_TIMEOUT)
            .with_context(|| format!("seed {seed}"))?;
        assert!(broker.is_running(), "the broker died on seed {seed}");
    }
    assert_healthy(&mut broker)
}

#[test]
fn unknown_api_key_or_version_closes_the_connection() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    // An API key Kafka does not have, and Metadata at a version nobody serves.
    for (api_key, version) in [(32_000i16, 0i16), (3, 99)] {
        let mut client = RawClient::connect(&broker.bootstrap())?;
        let mut body = header_v1(api_key, version, 5)?;
        body.put_slice(&[0u8; 8]);
        client.send_frame(&body)?;
        let discarded = client
            .wait_closed(CLOSE_TIMEOUT)
            .with_context(|| format!("api key {api_key} version {version}"))?;
        assert_eq!(
            discarded, 0,
            "api key {api_key} version {version} was answered"
        );
        assert_healthy(&mut broker)?;
    }
    Ok(())
}

#[test]
fn api_versions_newer_than_served_gets_unsupported_version_in_a_v0_body() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let mut client = RawClient::connect(&broker.bootstrap())?;
    // A client from the future: header v2 (flexible), a v3-shaped body, version 99.
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(18)
        .with_request_api_version(99)
        .with_correlation_id(77)
        .with_client_id(Some(StrBytes::from_static_str("future-client")))
        .encode(&mut body, 2)?;
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("future"))
        .with_client_software_version(StrBytes::from_static_str("99.0"))
        .encode(&mut body, 3)?;
    client.send_frame(&body)?;
    let mut frame = client
        .read_frame()?
        .context("the broker closed instead of answering ApiVersions v99")?;
    let header = ResponseHeader::decode(&mut frame, 0)?;
    assert_eq!(header.correlation_id, 77);
    let response = ApiVersionsResponse::decode(&mut frame, 0)?;
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
    let api_versions = response
        .api_keys
        .iter()
        .find(|k| k.api_key == 18)
        .context("the error response does not list ApiVersions itself")?;
    assert!(
        api_versions.min_version == 0 && api_versions.max_version >= 3,
        "ApiVersions range {api_versions:?}"
    );
    for key in [0i16, 1, 2, 3] {
        assert!(
            response.api_keys.iter().any(|k| k.api_key == key),
            "API {key} is not listed"
        );
    }
    // The connection stays usable: a supported ApiVersions now succeeds.
    let supported = client.call(&ApiVersionsRequest::default(), 0)?;
    assert_eq!(supported.error_code, 0);
    assert_healthy(&mut broker)
}

#[test]
fn batch_with_a_wrong_crc_is_refused_with_corrupt_message() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "crc", 1, &[])?;
    let batch = raw::record_batch(&[b"first", b"second"])?;
    let mut corrupt = batch.to_vec();
    // The last byte is record data, inside the CRC-covered range.
    if let Some(last) = corrupt.last_mut() {
        *last ^= 0xff;
    }
    let mut client = RawClient::connect(&bootstrap)?;
    let response = client.call(
        &raw::produce_request("crc", 0, corrupt.into()),
        PRODUCE_VERSION,
    )?;
    assert_eq!(raw::produce_error(&response)?, CORRUPT_MESSAGE);
    assert_eq!(
        high_watermark(&bootstrap, "crc")?,
        0,
        "a corrupt batch was stored"
    );
    // The intact batch on the same connection is accepted.
    let response = client.call(&raw::produce_request("crc", 0, batch), PRODUCE_VERSION)?;
    assert_eq!(raw::produce_error(&response)?, 0);
    assert_eq!(high_watermark(&bootstrap, "crc")?, 2);
    assert_healthy(&mut broker)
}

/// `records` with `edit` applied and the CRC32C of its first batch
/// recomputed (bytes 21 to the end of the batch are covered).
fn forged(records: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> bytes::Bytes {
    type H = weir_storage::RecordBatchHeader;
    let mut v = records.to_vec();
    edit(&mut v);
    let end = H::parse(&v).and_then(|h| h.batch_bytes()).unwrap_or(0);
    let crc = crc32c::crc32c(v.get(H::ATTRIBUTES_AT..end).unwrap_or_default());
    if let Some(field) = v.get_mut(H::CRC_AT..H::CRC_AT + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    v.into()
}

#[test]
fn batch_lying_about_its_contents_is_refused_and_moves_no_offset() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "lies", 1, &[])?;
    let good = raw::record_batch(&[b"first", b"second"])?;
    // A bare 61-byte header (batch length 49) claiming i32::MAX records.
    type H = weir_storage::RecordBatchHeader;
    let put = |v: &mut Vec<u8>, at: usize, value: i32| {
        v[at..at + 4].copy_from_slice(&value.to_be_bytes());
    };
    let header_only = forged(good.get(..H::BYTES).context("short batch")?, |v| {
        put(v, H::BATCH_LENGTH_AT, 49);
        put(v, H::LAST_OFFSET_DELTA_AT, i32::MAX - 1);
        put(v, H::RECORD_COUNT_AT, i32::MAX);
    });
    // The low byte of the big-endian attributes holds the codec and control bits.
    let codec_seven = forged(&good, |v| v[H::ATTRIBUTES_AT + 1] |= 0x07);
    let control = forged(&good, |v| v[H::ATTRIBUTES_AT + 1] |= 0x20);
    let mut client = RawClient::connect(&bootstrap)?;
    for (batch, code) in [
        (header_only, INVALID_RECORD),
        (codec_seven, UNSUPPORTED_COMPRESSION_TYPE),
        (control, INVALID_RECORD),
    ] {
        let response = client.call(&raw::produce_request("lies", 0, batch), PRODUCE_VERSION)?;
        let message = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .and_then(|p| p.error_message.clone());
        assert_eq!(raw::produce_error(&response)?, code, "{message:?}");
    }
    // The log end did not move: the next good batch starts at offset 0.
    let response = client.call(&raw::produce_request("lies", 0, good), PRODUCE_VERSION)?;
    assert_eq!(raw::produce_error(&response)?, 0);
    let base = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .map(|p| p.base_offset);
    assert_eq!(base, Some(0));
    assert_eq!(high_watermark(&bootstrap, "lies")?, 2);
    assert_healthy(&mut broker)
}

#[test]
fn batch_over_max_message_bytes_is_refused_with_message_too_large() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "small", 1, &[("max.message.bytes", "1024")])?;
    let mut big = vec![0u8; 4096];
    StdRng::seed_from_u64(7).fill_bytes(&mut big);
    let mut client = RawClient::connect(&bootstrap)?;
    let response = client.call(
        &raw::produce_request("small", 0, raw::record_batch(&[&big])?),
        PRODUCE_VERSION,
    )?;
    assert_eq!(raw::produce_error(&response)?, MESSAGE_TOO_LARGE);
    assert_eq!(
        high_watermark(&bootstrap, "small")?,
        0,
        "an oversized batch was stored"
    );
    let response = client.call(
        &raw::produce_request("small", 0, raw::record_batch(&[b"fits"])?),
        PRODUCE_VERSION,
    )?;
    assert_eq!(raw::produce_error(&response)?, 0);
    assert_healthy(&mut broker)
}

#[test]
fn invalid_topic_name_gets_invalid_topic_exception() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    let mut client = RawClient::connect(&bootstrap)?;
    for name in ["bad name!", "a/b", "..", &"y".repeat(300)] {
        // Metadata with auto-create on: the name is refused, not created.
        let response = client.call(&metadata_for(name), METADATA_VERSION)?;
        let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            vec![INVALID_TOPIC_EXCEPTION],
            "Metadata for {name:?}"
        );
        // Produce to it: refused (Kafka says UNKNOWN_TOPIC_OR_PARTITION here,
        // Weir may say INVALID_TOPIC_EXCEPTION).
        let response = client.call(
            &raw::produce_request(name, 0, raw::record_batch(&[b"v"])?),
            PRODUCE_VERSION,
        )?;
        let code = raw::produce_error(&response)?;
        assert!(
            [INVALID_TOPIC_EXCEPTION, UNKNOWN_TOPIC_OR_PARTITION].contains(&code),
            "Produce to {name:?} got error {code}"
        );
    }
    let names = topic_names(&bootstrap)?;
    assert!(
        !names
            .iter()
            .any(|n| n.contains(' ') || n.contains('/') || n == ".."),
        "created: {names:?}"
    );
    assert_healthy(&mut broker)
}

#[test]
fn produce_to_a_missing_topic_with_auto_create_off_gets_unknown_topic() -> anyhow::Result<()> {
    let mut broker = start(&["--auto-create-topics", "false"])?;
    let bootstrap = broker.bootstrap();
    let mut client = RawClient::connect(&bootstrap)?;
    let response = client.call(
        &raw::produce_request("missing", 0, raw::record_batch(&[b"v"])?),
        PRODUCE_VERSION,
    )?;
    assert_eq!(raw::produce_error(&response)?, UNKNOWN_TOPIC_OR_PARTITION);
    let response = client.call(&metadata_for("missing"), METADATA_VERSION)?;
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(
        codes,
        vec![UNKNOWN_TOPIC_OR_PARTITION],
        "Metadata must not create the topic"
    );
    assert!(!topic_names(&bootstrap)?.contains(&"missing".to_string()));
    // Normal clients work on explicitly created topics.
    common::create_topic_blocking(&bootstrap, "weir-e2e-health", 1, &[])?;
    assert_healthy(&mut broker)
}

#[test]
fn array_count_of_two_billion_in_a_tiny_frame_closes_the_connection() -> anyhow::Result<()> {
    let mut broker = start(&[])?;
    // Metadata v1 (non-flexible): the topics array claims 2^31-1 elements.
    let mut classic = header_v1(3, 1, 9)?;
    classic.put_i32(i32::MAX);
    // Metadata v9 (flexible): a compact array whose varint count is 2^31-1 (+1 for null).
    let mut flexible = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(3)
        .with_request_api_version(9)
        .with_correlation_id(10)
        .with_client_id(Some(StrBytes::from_static_str("x")))
        .encode(&mut flexible, 2)?;
    flexible.put_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
    for (what, mut body) in [("classic", classic), ("flexible", flexible)] {
        body.resize(40 - 4, 0);
        let mut client = RawClient::connect(&broker.bootstrap())?;
        client.send_frame(&body)?;
        let discarded = client
            .wait_closed(CLOSE_TIMEOUT)
            .with_context(|| what.to_string())?;
        assert_eq!(
            discarded, 0,
            "{what}: a request with an impossible array was answered"
        );
        assert_healthy(&mut broker)?;
    }
    Ok(())
}

/// The soft and hard "Max open files" limits of a process, from /proc.
fn open_files_limits(pid: u32) -> anyhow::Result<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open files limit")?;
    let mut fields = line.split_whitespace().skip(3);
    let soft = fields.next().context("no soft limit")?.to_string();
    let hard = fields.next().context("no hard limit")?.to_string();
    Ok((soft, hard))
}

#[test]
fn serve_raises_its_open_files_soft_limit_to_the_hard_limit() -> anyhow::Result<()> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    // Started with a soft limit far below the hard one, as on many systems.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$1" --log-level info"#)
        .arg(env!("CARGO_BIN_EXE_weir"))
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    // The limit is raised before the commit log is opened.
    let mut opened = false;
    for line in std::io::BufReader::new(stderr).lines() {
        if line?.contains("opened commit log") {
            opened = true;
            break;
        }
    }
    let limits = open_files_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(opened, "the broker exited before it opened its log");
    let (soft, hard) = limits?;
    assert_eq!(soft, hard, "soft limit {soft}, hard limit {hard}");
    Ok(())
}
