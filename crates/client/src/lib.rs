//! weir-client: a small blocking Kafka client, shared by the `weir` commands
//! and the end-to-end tests.
//!
//! It owns the connections (opened with a timeout, every read and write
//! bounded), the length framing, the request header, and the API version a
//! request is sent at. A [`Connection`] is one TCP connection: it sends a
//! request at an exact version ([`Connection::call`], what the tests need to
//! probe a broker), or at the highest version both sides speak, capped by
//! what the caller fills in ([`Connection::send`]); it also writes and reads
//! raw frames, for tests that send bad input. A [`Client`] is a cluster: the
//! first bootstrap broker that answered, and the others by node id once
//! metadata named them, with the look-ups the commands share (ListOffsets in
//! batches, a group's coordinator). [`share::ShareMember`] is a share group
//! member (KIP-932).
//!
//! The commands use it for the requests whose answers they must show in full
//! (librdkafka's admin calls keep the error code but drop the broker's error
//! message). Every message is encoded and decoded by the `kafka-protocol`
//! crate; only the 4-byte length prefix is written here.

pub mod datetime;
pub mod dead_letter;
mod error;
pub mod share;

pub use error::{BoxError, Error, Result};

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    metadata_request::MetadataRequestTopic, produce_request,
};
use kafka_protocol::protocol::{
    Decodable as _, Encodable as _, HeaderVersion as _, Request, StrBytes,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// How long opening one TCP connection may take, by default.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How long one read or write may block, by default; a broker that accepted
/// the connection but stopped answering fails the request after this.
pub const IO_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The client id sent when the caller names none.
pub const CLIENT_ID_DEFAULT: &str = "weir-client";
/// The largest response frame accepted; metadata of many thousands of
/// partitions fits comfortably.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The most addresses a bootstrap list may hold.
pub const BOOTSTRAP_BROKERS_MAX: usize = 64;
/// The ApiVersions version this client sends (the first with the client's
/// software name, which brokers log).
const API_VERSIONS_VERSION: i16 = 3;

/// How a connection names itself and how long it waits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sent in every request header, and as ApiVersions' software name.
    pub client_id: String,
    /// How long opening one TCP connection may take.
    pub connect_timeout: Duration,
    /// How long one read or write may block.
    pub io_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config::new(CLIENT_ID_DEFAULT)
    }
}

impl Config {
    /// The default timeouts, with `client_id`.
    pub fn new(client_id: &str) -> Config {
        Config {
            client_id: client_id.to_owned(),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            io_timeout: IO_TIMEOUT_DEFAULT,
        }
    }
}

/// One connection to one broker.
pub struct Connection {
    address: String,
    stream: TcpStream,
    client_id: StrBytes,
    io_timeout: Duration,
    /// The version range of each API the broker serves, once ApiVersions
    /// answered.
    served: Option<HashMap<i16, (i16, i16)>>,
    correlation_id: i32,
}

impl Connection {
    /// Connects to `address` (`host:port`) with the default [`Config`]; no
    /// request is sent.
    pub fn connect(address: &str) -> Result<Connection> {
        Connection::connect_with(address, &Config::default())
    }

    /// Connects to `address`, trying each resolved address in turn, each
    /// within the connect timeout; no request is sent.
    pub fn connect_with(address: &str, config: &Config) -> Result<Connection> {
        let resolved: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                address: address.to_owned(),
                source,
            })?
            .collect();
        let mut last_error = None;
        for socket in resolved {
            match TcpStream::connect_timeout(&socket, config.connect_timeout) {
                Ok(stream) => {
                    let timeout = Some(config.io_timeout);
                    stream
                        .set_read_timeout(timeout)
                        .and_then(|()| stream.set_write_timeout(timeout))
                        .and_then(|()| stream.set_nodelay(true))
                        .map_err(|source| Error::Socket {
                            address: address.to_owned(),
                            source,
                        })?;
                    return Ok(Connection {
                        address: address.to_owned(),
                        stream,
                        client_id: StrBytes::from_string(config.client_id.clone()),
                        io_timeout: config.io_timeout,
                        served: None,
                        correlation_id: 0,
                    });
                }
                Err(err) => last_error = Some(err),
            }
        }
        match last_error {
            Some(source) => Err(Error::Connect {
                address: address.to_owned(),
                source,
            }),
            None => Err(Error::NoAddress {
                address: address.to_owned(),
            }),
        }
    }

    /// Connects to `address` and asks which API versions it serves: a
    /// broker that does not answer ApiVersions is not counted as reached.
    pub fn open(address: &str, config: &Config) -> Result<Connection> {
        let mut connection = Connection::connect_with(address, config)?;
        connection.negotiate()?;
        Ok(connection)
    }

    /// The address this connection was opened to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Asks the broker which API versions it serves, and remembers them.
    fn negotiate(&mut self) -> Result<&HashMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(self.client_id.clone())
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = self.call(&request, API_VERSIONS_VERSION)?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(Error::ApiVersionsRefused {
                address: self.address.clone(),
                error,
            });
        }
        let served = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, (api.min_version, api.max_version)))
            .collect();
        Ok(self.served.insert(served))
    }

    /// The version to send `R` at: the highest that the broker, the
    /// `kafka-protocol` crate and the caller (`version_max`, the newest
    /// version whose fields the caller fills in) all accept. Asks the broker
    /// first if it was not asked yet.
    pub fn version<R: Request>(&mut self, version_max: i16) -> Result<i16> {
        let served = match self.served {
            Some(ref served) => served,
            None => self.negotiate()?,
        };
        let Some(&(broker_min, broker_max)) = served.get(&R::KEY) else {
            return Err(Error::NotServed {
                address: self.address.clone(),
                api: api_name(R::KEY),
            });
        };
        let version = broker_max.min(R::VERSIONS.max).min(version_max);
        if version < broker_min.max(R::VERSIONS.min) {
            return Err(Error::NoCommonVersion {
                address: self.address.clone(),
                api: api_name(R::KEY),
                min: broker_min,
                max: broker_max,
            });
        }
        Ok(version)
    }

    /// Sends `request` at the highest version both sides speak, at most
    /// `version_max` (the newest version whose fields the caller set), and
    /// reads its response.
    pub fn send<R: Request>(&mut self, request: &R, version_max: i16) -> Result<R::Response> {
        let version = self.version::<R>(version_max)?;
        self.call(request, version)
    }

    /// Sends `request` at exactly `version` and reads its response, which
    /// must be decoded to its last byte.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let sent = self.correlation_id;
        let body = encode_request(request, version, sent, &self.client_id)?;
        self.send_frame(&body)?;
        let Some(mut frame) = self.read_frame()? else {
            return Err(Error::Closed {
                address: self.address.clone(),
            });
        };
        let what = || format!("{} v{version}", api_name(R::KEY));
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .map_err(|err| Error::Decode {
                what: format!("the {} response header", api_name(R::KEY)),
                address: self.address.clone(),
                source: err.into(),
            })?;
        if header.correlation_id != sent {
            return Err(Error::CorrelationMismatch {
                address: self.address.clone(),
                sent,
                got: header.correlation_id,
            });
        }
        let response = R::Response::decode(&mut frame, version).map_err(|err| Error::Decode {
            what: what(),
            address: self.address.clone(),
            source: err.into(),
        })?;
        if frame.has_remaining() {
            return Err(Error::TrailingBytes {
                what: what(),
                address: self.address.clone(),
                len: frame.remaining(),
            });
        }
        Ok(response)
    }

    /// Encodes `request` at `version` into a frame body (header and message,
    /// no length prefix), with the default client id: for callers that write
    /// frames themselves.
    pub fn encode<R: Request>(request: &R, version: i16, correlation_id: i32) -> Result<BytesMut> {
        encode_request(
            request,
            version,
            correlation_id,
            &StrBytes::from_static_str(CLIENT_ID_DEFAULT),
        )
    }

    /// Writes one frame: a length prefix and `body`.
    pub fn send_frame(&mut self, body: &[u8]) -> Result<()> {
        let len =
            i32::try_from(body.len()).map_err(|_| Error::RequestTooLarge { len: body.len() })?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(body);
        self.send_bytes(&frame)
    }

    /// Writes bytes as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).map_err(|source| Error::Write {
            address: self.address.clone(),
            source,
        })
    }

    /// Closes the writing half, so the broker sees end of stream.
    pub fn shutdown_write(&mut self) -> Result<()> {
        self.stream
            .shutdown(Shutdown::Write)
            .map_err(|source| Error::Write {
                address: self.address.clone(),
                source,
            })
    }

    /// Reads one response frame (without its length prefix); `None` when the
    /// broker closed the connection before sending one.
    pub fn read_frame(&mut self) -> Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(err) if closed(&err) => return Ok(None),
            Err(source) => {
                return Err(Error::Read {
                    address: self.address.clone(),
                    source,
                });
            }
        }
        let len = i32::from_be_bytes(len);
        let len = usize::try_from(len).map_err(|_| Error::NegativeLength {
            address: self.address.clone(),
            len,
        })?;
        if len > RESPONSE_BYTES_MAX {
            return Err(Error::ResponseTooLarge {
                address: self.address.clone(),
                len,
            });
        }
        let mut body = vec![0u8; len];
        match self.stream.read_exact(&mut body) {
            Ok(()) => Ok(Some(Bytes::from(body))),
            Err(err) if closed(&err) => Err(Error::ClosedInside {
                address: self.address.clone(),
                len,
            }),
            Err(source) => Err(Error::Read {
                address: self.address.clone(),
                source,
            }),
        }
    }

    /// Waits up to `timeout` for the broker to close the connection,
    /// discarding whatever it sends before that. Returns the number of bytes
    /// discarded.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut discarded = 0;
        let mut buf = [0u8; 4096];
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(Error::StillOpen {
                    address: self.address.clone(),
                    timeout,
                    discarded,
                });
            }
            // Each read waits no longer than the time left.
            if let Err(source) = self
                .stream
                .set_read_timeout(Some(left.min(self.io_timeout)))
            {
                break Err(Error::Socket {
                    address: self.address.clone(),
                    source,
                });
            }
            match self.stream.read(&mut buf) {
                Ok(0) => break Ok(discarded),
                Ok(n) => discarded += n,
                Err(err) if closed(&err) => break Ok(discarded),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(source) => {
                    break Err(Error::Read {
                        address: self.address.clone(),
                        source,
                    });
                }
            }
        };
        // The socket may be closed by now; the timeout only matters if not.
        let _ = self.stream.set_read_timeout(Some(self.io_timeout));
        outcome
    }
}

/// Encodes a request header and `request` at `version`.
fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<BytesMut> {
    let name = api_name(R::KEY);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .map_err(|err| Error::Encode {
            what: format!("the {name} request header"),
            source: err.into(),
        })?;
    request
        .encode(&mut body, version)
        .map_err(|err| Error::Encode {
            what: format!("{name} v{version}"),
            source: err.into(),
        })?;
    Ok(body)
}

/// Whether a read or write error means the peer closed the connection.
fn closed(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// An API's name (`Metadata`), or its number when `kafka-protocol` has none.
fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|()| format!("API {key}"), |key| format!("{key:?}"))
}

/// Connections to a cluster: the first bootstrap broker that answered, and
/// the others by node id once metadata has named them.
pub struct Client {
    config: Config,
    bootstrap: Connection,
    addresses: HashMap<i32, String>,
    nodes: HashMap<i32, Connection>,
}

impl Client {
    /// Connects to the first broker of `brokers` (comma-separated) that
    /// answers ApiVersions. When none does, the error is
    /// [`Error::Unreachable`].
    pub fn connect(brokers: &str, config: &Config) -> Result<Client> {
        let addresses: Vec<&str> = brokers
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .collect();
        if addresses.is_empty() {
            return Err(Error::NoBrokers);
        }
        if addresses.len() > BOOTSTRAP_BROKERS_MAX {
            return Err(Error::TooManyBrokers);
        }
        let mut cause = String::new();
        for address in addresses {
            match Connection::open(address, config) {
                Ok(bootstrap) => {
                    return Ok(Client {
                        config: config.clone(),
                        bootstrap,
                        addresses: HashMap::new(),
                        nodes: HashMap::new(),
                    });
                }
                Err(err) => cause = chain(&err),
            }
        }
        Err(Error::Unreachable {
            brokers: brokers.to_owned(),
            cause,
        })
    }

    /// Sends `request` to the bootstrap broker. `version_max` is the newest
    /// version whose fields the caller set.
    pub fn send<R: Request>(&mut self, request: &R, version_max: i16) -> Result<R::Response> {
        self.bootstrap.send(request, version_max)
    }

    /// Sends `request` to broker `node`, connecting to it first if needed.
    /// Its address comes from the last [`Client::metadata`] answer.
    pub fn send_to<R: Request>(
        &mut self,
        node: i32,
        request: &R,
        version_max: i16,
    ) -> Result<R::Response> {
        self.node(node)?.send(request, version_max)
    }

    /// Whether broker `node` serves `R` at a version this client speaks.
    pub fn serves<R: Request>(&mut self, node: i32) -> Result<bool> {
        Ok(self.node(node)?.version::<R>(R::VERSIONS.max).is_ok())
    }

    /// The connection to broker `node`, opened on first use.
    fn node(&mut self, node: i32) -> Result<&mut Connection> {
        if !self.nodes.contains_key(&node) {
            let address = self
                .addresses
                .get(&node)
                .ok_or(Error::UnknownNode { node })?
                .clone();
            // The bootstrap connection may already be this broker; a second
            // connection to it is harmless and keeps the bookkeeping simple.
            let connection =
                Connection::open(&address, &self.config).map_err(|err| Error::NodeUnreachable {
                    node,
                    address: address.clone(),
                    source: Box::new(err),
                })?;
            self.nodes.insert(node, connection);
        }
        self.nodes.get_mut(&node).ok_or(Error::UnknownNode { node })
    }

    /// Metadata of `topics` (all topics when `None`), and remembers where
    /// each broker listens for [`Client::send_to`]. Never creates a topic.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    })
                    .collect()
            }));
        // v12 is the newest whose request fields are all set here.
        let response = self.send(&request, 12)?;
        for broker in &response.brokers {
            self.addresses.insert(
                broker.node_id.0,
                format!("{}:{}", broker.host.as_str(), broker.port),
            );
        }
        Ok(response)
    }

    /// The controller's node id, for the requests only it serves
    /// (CreateTopics, DeleteTopics, CreatePartitions); the bootstrap broker
    /// when the cluster names none.
    pub fn controller(&mut self) -> Result<Option<i32>> {
        let metadata = self.metadata(Some(&[]))?;
        Ok((metadata.controller_id.0 >= 0).then_some(metadata.controller_id.0))
    }

    /// Sends `request` to the controller (see [`Client::controller`]).
    pub fn send_to_controller<R: Request>(
        &mut self,
        request: &R,
        version_max: i16,
    ) -> Result<R::Response> {
        match self.controller()? {
            Some(node) => self.send_to(node, request, version_max),
            None => self.send(request, version_max),
        }
    }
}

/// An error and its causes on one line, as `{:#}` of `anyhow` prints them.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// A Kafka error code as a readable error, or `Ok` for 0.
pub fn check(code: i16, what: impl FnOnce() -> String) -> Result<()> {
    check_message(code, None, what)
}

/// A Kafka error code as a readable error with the broker's own message
/// (the `error_message` field), or `Ok` for 0. The message says what was
/// wrong (`invalid value 'abc' for retention.ms: not an integer`); the
/// error name alone rarely does.
pub fn check_message(
    code: i16,
    message: Option<&StrBytes>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(failure(what(), error, message)),
    }
}

/// `what` failed with `error`, and the broker's message when it sent one.
fn failure(what: String, error: ResponseError, message: Option<&StrBytes>) -> Error {
    Error::Broker {
        what,
        error,
        message: message
            .map(|m| m.as_str().trim())
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
    }
}

/// A topic or group name as the wire types hold it.
pub fn str_bytes(name: &str) -> StrBytes {
    StrBytes::from_string(name.to_owned())
}

/// ListOffsets' timestamp for a partition's log-start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets' timestamp for a partition's log-end offset (high watermark).
pub const LATEST_TIMESTAMP: i64 = -1;

/// A partition and the broker that leads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Led {
    /// The topic.
    pub topic: String,
    /// The partition's index.
    pub partition: i32,
    /// The leader's node id.
    pub leader: i32,
}

impl Client {
    /// The offset of each partition at `timestamp` (or [`EARLIEST_TIMESTAMP`]
    /// / [`LATEST_TIMESTAMP`]), one ListOffsets request per leader. For a
    /// time, the answer is the first offset at or after it, or `None` when
    /// no record is that recent. Any partition error fails the whole call.
    pub fn list_offsets(
        &mut self,
        partitions: &[Led],
        timestamp: i64,
    ) -> Result<HashMap<(String, i32), Option<i64>>> {
        use kafka_protocol::messages::ListOffsetsRequest;
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };

        let mut by_leader: HashMap<i32, HashMap<&str, Vec<i32>>> = HashMap::new();
        for led in partitions {
            by_leader
                .entry(led.leader)
                .or_default()
                .entry(led.topic.as_str())
                .or_default()
                .push(led.partition);
        }
        let mut offsets = HashMap::new();
        for (leader, topics) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(0)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(str_bytes(topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|partition| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(partition)
                                                .with_current_leader_epoch(-1)
                                                .with_timestamp(timestamp)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            // v8 is the newest without the request-level timeout field.
            let response = self.send_to(leader, &request, 8)?;
            for topic in response.topics {
                let name = topic.name.0.as_str().to_owned();
                for partition in topic.partitions {
                    let index = partition.partition_index;
                    check(partition.error_code, || {
                        format!("ListOffsets of {name}/{index}")
                    })?;
                    let offset = (partition.offset >= 0).then_some(partition.offset);
                    offsets.insert((name.clone(), index), offset);
                }
            }
        }
        Ok(offsets)
    }
}

/// How long finding a group's coordinator keeps retrying while the broker
/// says it is not ready (still loading the offsets topic, electing).
const COORDINATOR_WAIT: Duration = Duration::from_secs(15);
/// The pause between those retries.
const COORDINATOR_RETRY: Duration = Duration::from_millis(200);

impl Client {
    /// The node id of `group`'s coordinator, which then takes
    /// [`Client::send_to`].
    pub fn coordinator(&mut self, group: &str) -> Result<i32> {
        self.coordinator_of(0, group, "group")
    }

    /// The node id of the transaction coordinator of `transactional_id`.
    pub fn txn_coordinator(&mut self, transactional_id: &str) -> Result<i32> {
        self.coordinator_of(1, transactional_id, "transactional id")
    }

    /// FindCoordinator of `key` with `key_type` (0 a group, 1 a
    /// transactional id; `what` names it in errors).
    fn coordinator_of(&mut self, key_type: i8, key: &str, what: &str) -> Result<i32> {
        use kafka_protocol::messages::FindCoordinatorRequest;

        let request = FindCoordinatorRequest::default()
            .with_key(str_bytes(key))
            .with_key_type(key_type);
        let group = key;
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            // v3 is the newest with one key per request.
            let response = self.send(&request, 3)?;
            match ResponseError::try_from_code(response.error_code) {
                None => {
                    let node = response.node_id.0;
                    self.addresses.insert(
                        node,
                        format!("{}:{}", response.host.as_str(), response.port),
                    );
                    return Ok(node);
                }
                Some(err) if err.is_retriable() && Instant::now() < deadline => {
                    // The broker has no "tell me when ready"; this paces the retries.
                    std::thread::sleep(COORDINATOR_RETRY);
                }
                Some(err) => {
                    return Err(failure(
                        format!("cannot find the coordinator of {what} {group}"),
                        err,
                        response.error_message.as_ref(),
                    ));
                }
            }
        }
    }
}

/// A RecordBatch v2 holding `values`, uncompressed, encoded by
/// `kafka-protocol`: for callers that build Produce requests by hand.
pub fn record_batch(values: &[&[u8]]) -> Result<Bytes> {
    encode_batch(values, None)
}

/// [`record_batch`], transactional, from `producer` (id, epoch), its first
/// record at `sequence`: a transactional producer's batch, by hand.
pub fn transactional_batch(values: &[&[u8]], producer: (i64, i16), sequence: i32) -> Result<Bytes> {
    encode_batch(values, Some((producer, sequence)))
}

fn encode_batch(values: &[&[u8]], transactional: Option<((i64, i16), i32)>) -> Result<Bytes> {
    let ((producer_id, producer_epoch), first_sequence) = transactional.unwrap_or(((-1, -1), -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: transactional.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).unwrap_or(i64::MAX),
            sequence: if first_sequence < 0 {
                -1
            } else {
                first_sequence.wrapping_add(i32::try_from(i).unwrap_or(i32::MAX))
            },
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
    )
    .map_err(|err| Error::Encode {
        what: "a record batch".to_owned(),
        source: err.into(),
    })?;
    Ok(buf.freeze())
}

/// A Produce request (acks=all) of one batch to one partition.
pub fn produce_request(topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ]),
        ])
}

/// The error code of the only partition in a Produce response, or `None`
/// when the response names no partition.
pub fn produce_error(response: &ProduceResponse) -> Option<i16> {
    response
        .responses
        .first()
        .and_then(|topic| topic.partition_responses.first())
        .map(|partition| partition.error_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_carry_the_brokers_message_when_it_sent_one() {
        let message = StrBytes::from_static_str(" not an integer ");
        let text = check_message(42, Some(&message), || "topic t".to_owned())
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("topic t: "), "{text}");
        assert!(text.ends_with("(error code 42): not an integer"), "{text}");
        let text = check(3, || "topic t".to_owned()).unwrap_err().to_string();
        assert!(text.ends_with("(error code 3)"), "{text}");
        assert!(check(0, || unreachable!()).is_ok());
    }

    #[test]
    fn an_unreachable_bootstrap_list_is_one_error_naming_the_list() {
        // Port 1 on loopback refuses at once: nothing listens there.
        let err = Client::connect("127.0.0.1:1", &Config::default()).err();
        assert!(err.as_ref().is_some_and(Error::is_unreachable), "{err:?}");
        assert!(err.is_some_and(|err| err.to_string().contains("127.0.0.1:1")));
        assert!(matches!(
            Client::connect(" , ", &Config::default()),
            Err(Error::NoBrokers)
        ));
    }

    #[test]
    fn a_record_batch_decodes_to_its_values() {
        use kafka_protocol::records::RecordBatchDecoder;
        let mut batch = record_batch(&[b"a", b"bc"]).unwrap();
        let sets = RecordBatchDecoder::decode_all(&mut batch).unwrap();
        let values: Vec<Option<Bytes>> = sets
            .into_iter()
            .flat_map(|set| set.records)
            .map(|r| r.value)
            .collect();
        assert_eq!(
            values,
            vec![
                Some(Bytes::from_static(b"a")),
                Some(Bytes::from_static(b"bc"))
            ]
        );
    }
}
