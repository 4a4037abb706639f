//! Kafka requests from this broker to another, over the other broker's
//! Kafka listener: the replica fetcher's session (one connection per leader
//! it follows), and [`Peers`], the connections the transaction coordinator
//! sends markers (WriteTxnMarkers) and partition leaders send verifications
//! (AddPartitionsToTxn with `verify_only`) over.
//!
//! A [`Connection`] carries one request at a time: it writes a frame and
//! reads the answer, every step bounded by its timeout, and the answer's
//! size by its bound. An error leaves the connection unusable; [`Peers`]
//! drops it and opens another on the next call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use weir_metadata::MetadataStore;

/// Why a request to another broker got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("connection to broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker did not answer within {0} ms")]
    Timeout(u64),
    #[error("encoding or decoding a message: {0}")]
    Codec(String),
    #[error("a response frame of {0} bytes is over the bound")]
    TooLarge(usize),
    #[error("broker {0} is not registered, or is fenced")]
    Unknown(i32),
}

/// An encoding or decoding failure of kafka-protocol.
fn codec(e: impl std::fmt::Display) -> PeerError {
    PeerError::Codec(e.to_string())
}

/// A connection to another broker's Kafka listener.
pub(crate) struct Connection {
    stream: TcpStream,
    correlation_id: i32,
    response_bytes_max: usize,
    client_id: &'static str,
    /// How long connecting, or one request, may take.
    timeout: Duration,
}

impl Connection {
    /// Connect to `endpoint` (host, port).
    pub(crate) async fn open(
        endpoint: &(String, i32),
        response_bytes_max: usize,
        client_id: &'static str,
        timeout: Duration,
    ) -> Result<Self, PeerError> {
        let port = u16::try_from(endpoint.1)
            .map_err(|_| PeerError::Codec(format!("port {} is not a port", endpoint.1)))?;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let stream = tokio::time::timeout(timeout, TcpStream::connect((endpoint.0.as_str(), port)))
            .await
            .map_err(|_| PeerError::Timeout(timeout_ms))??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            correlation_id: 0,
            response_bytes_max,
            client_id,
            timeout,
        })
    }

    /// Send `request` at `version` and read its answer.
    pub(crate) async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, PeerError> {
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        tokio::time::timeout(self.timeout, self.exchange(request, version))
            .await
            .map_err(|_| PeerError::Timeout(timeout_ms))?
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, PeerError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(codec)?;
        request.encode(&mut frame, version).map_err(codec)?;
        let len = i32::try_from(frame.len() - 4).map_err(|_| PeerError::TooLarge(frame.len()))?;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&frame).await?;
        // The one frame reader, which grows its buffer with the bytes that
        // arrive rather than with the size announced.
        let mut body = match weir_protocol::read_frame(&mut self.stream, self.response_bytes_max)
            .await
        {
            Ok(Some(body)) => body,
            Ok(None) => return Err(PeerError::Codec("the broker closed the connection".into())),
            Err(weir_protocol::FrameError::TooLarge { size, .. }) => {
                return Err(PeerError::TooLarge(
                    usize::try_from(size).unwrap_or(usize::MAX),
                ));
            }
            Err(e) => return Err(PeerError::Codec(e.to_string())),
        };
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(codec)?;
        if header.correlation_id != self.correlation_id {
            return Err(PeerError::Codec(format!(
                "response to request {} came for {}",
                self.correlation_id, header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(codec)
    }
}

/// The coordinator's and leaders' requests to other brokers: one connection
/// per broker, made on first use and replaced after an error. Requests to
/// one broker take turns on its connection.
pub(crate) struct Peers {
    metadata: Arc<dyn MetadataStore>,
    connections: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

/// The client id these requests carry.
const CLIENT_ID: &str = "weir-broker";
/// How long connecting, or one request, may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read: markers and verifications answer a few bytes
/// per partition.
const RESPONSE_BYTES_MAX: usize = 8 << 20;

impl Peers {
    pub(crate) fn new(metadata: Arc<dyn MetadataStore>) -> Self {
        Self {
            metadata,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Send `request` at `version` to broker `id` and read its answer.
    pub(crate) async fn call<R: Request>(
        &self,
        id: i32,
        request: &R,
        version: i16,
    ) -> Result<R::Response, PeerError> {
        let slot = {
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.entry(id).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if slot.is_none() {
            let endpoint = self
                .metadata
                .brokers()
                .into_iter()
                .find(|b| b.id == id && !b.fenced)
                .map(|b| (b.host, b.port))
                .ok_or(PeerError::Unknown(id))?;
            *slot =
                Some(Connection::open(&endpoint, RESPONSE_BYTES_MAX, CLIENT_ID, TIMEOUT).await?);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(PeerError::Unknown(id));
        };
        let answer = connection.call(request, version).await;
        if answer.is_err() {
            *slot = None;
        }
        answer
    }
}
