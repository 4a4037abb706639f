//! A minimal blocking Kafka client on one TCP connection, for requests that
//! librdkafka cannot send (IncrementalAlterConfigs, hand-made bad frames).
//! Every message is encoded and decoded by the `kafka-protocol` crate; only
//! the 4-byte length framing is done here.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ProduceRequest, RequestHeader, ResponseHeader, TopicName, produce_request,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// How long one read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response frame this client accepts.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One connection to a broker.
pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    /// Connect to `addr` (`host:port`).
    pub fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            correlation_id: 0,
        })
    }

    /// Encode `request` at `version` into a frame body (header + message, no length prefix).
    pub fn encode<R: Request>(
        request: &R,
        version: i16,
        correlation_id: i32,
    ) -> anyhow::Result<BytesMut> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("weir-e2e-raw")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        request.encode(&mut body, version)?;
        Ok(body)
    }

    /// Send `request` and read its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let correlation_id = self.correlation_id;
        let body = Self::encode(request, version, correlation_id)?;
        self.send_frame(&body)?;
        let Some(mut frame) = self.read_frame()? else {
            bail!("the broker closed the connection instead of answering");
        };
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))?;
        if header.correlation_id != correlation_id {
            bail!(
                "response for correlation id {} to request {correlation_id}",
                header.correlation_id
            );
        }
        let response = R::Response::decode(&mut frame, version)?;
        if frame.has_remaining() {
            bail!("{} bytes left after the response", frame.remaining());
        }
        Ok(response)
    }

    /// Write one frame: a length prefix and `body`.
    pub fn send_frame(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let len = i32::try_from(body.len()).context("frame too long")?;
        self.send_bytes(&len.to_be_bytes())?;
        self.send_bytes(body)
    }

    /// Write bytes as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream
            .write_all(bytes)
            .context("cannot write to the broker")
    }

    /// Close the writing half, so the broker sees end of stream.
    pub fn shutdown_write(&mut self) -> anyhow::Result<()> {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .context("cannot shut down writes")
    }

    /// Read one response frame; `None` if the broker closed the connection first.
    pub fn read_frame(&mut self) -> anyhow::Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(err) if closed(&err) => return Ok(None),
            Err(err) => return Err(err).context("cannot read a response length"),
        }
        let len = usize::try_from(i32::from_be_bytes(len)).context("negative response length")?;
        if len > RESPONSE_BYTES_MAX {
            bail!("response of {len} bytes is over {RESPONSE_BYTES_MAX}");
        }
        let mut body = vec![0u8; len];
        match self.stream.read_exact(&mut body) {
            Ok(()) => Ok(Some(Bytes::from(body))),
            Err(err) if closed(&err) => bail!("connection closed inside a {len}-byte response"),
            Err(err) => Err(err).context("cannot read a response body"),
        }
    }

    /// Wait up to `timeout` for the broker to close the connection, discarding
    /// whatever it sends before that. Returns the number of bytes discarded.
    pub fn wait_closed(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut discarded = 0;
        let mut buf = [0u8; 4096];
        loop {
            if Instant::now() > deadline {
                bail!(
                    "the broker kept the connection open for {timeout:?} ({discarded} bytes received)"
                );
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(discarded),
                Ok(n) => discarded += n,
                Err(err) if closed(&err) => return Ok(discarded),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(err) => return Err(err).context("cannot read from the broker"),
            }
        }
    }
}

fn closed(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// A RecordBatch v2 holding `values`, uncompressed, encoded by `kafka-protocol`.
pub fn record_batch(values: &[&[u8]]) -> anyhow::Result<Bytes> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).unwrap_or(i64::MAX),
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

/// A Produce request (acks=all) of one batch to one partition.
pub fn produce_request(topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ]),
        ])
}

/// The error code of the only partition in a Produce response.
pub fn produce_error(response: &kafka_protocol::messages::ProduceResponse) -> anyhow::Result<i16> {
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("a Produce response without a partition")?;
    Ok(partition.error_code)
}
