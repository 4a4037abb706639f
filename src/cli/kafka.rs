//! A small blocking Kafka client for the admin requests whose answers the
//! commands must show in full (librdkafka's admin calls keep the error code
//! but drop the broker's error message): the topic APIs, the config APIs,
//! DescribeCluster, ListOffsets in batches (log-start and log-end offsets of
//! many partitions at once), and the group APIs the `weir group` commands
//! need.
//!
//! It owns the connections (one per broker, opened with a timeout, every
//! read and write bounded), the API version each request is sent at (the
//! highest both sides speak, capped by what the caller fills in), and the
//! length framing. Every message is encoded and decoded by the
//! `kafka-protocol` crate.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{
    Decodable as _, Encodable as _, HeaderVersion as _, Request, StrBytes,
};

use super::Unreachable;

/// How long opening one TCP connection may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long one read or write may block; a broker that accepted the
/// connection but stopped answering fails the command after this.
const IO_TIMEOUT_MS: u64 = 30_000;
/// The largest response frame accepted; metadata of many thousands of
/// partitions fits comfortably.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The most addresses `--brokers` may list.
const BOOTSTRAP_BROKERS_MAX: usize = 64;
/// The ApiVersions version this client sends (the first with the client's
/// software name, which brokers log).
const API_VERSIONS_VERSION: i16 = 3;

/// One connection to one broker, with the API versions it serves.
struct Connection {
    address: String,
    stream: TcpStream,
    served: HashMap<i16, (i16, i16)>,
    correlation_id: i32,
}

impl Connection {
    fn open(address: &str) -> anyhow::Result<Connection> {
        let stream = connect(address)?;
        let mut connection = Connection {
            address: address.to_owned(),
            stream,
            served: HashMap::new(),
            correlation_id: 0,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("weir-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = connection.exchange(&request, API_VERSIONS_VERSION)?;
        if let Some(err) = ResponseError::try_from_code(response.error_code) {
            bail!("{address} refused ApiVersions: {err}");
        }
        connection.served = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, (api.min_version, api.max_version)))
            .collect();
        Ok(connection)
    }

    /// The version to send `R` at: the highest that the broker, the
    /// `kafka-protocol` crate and the caller (`version_max`, the newest
    /// version whose fields the caller fills in) all accept.
    fn version<R: Request>(&self, version_max: i16) -> anyhow::Result<i16> {
        let name = api_name(R::KEY);
        let Some(&(broker_min, broker_max)) = self.served.get(&R::KEY) else {
            bail!("the broker at {} does not serve {name}", self.address);
        };
        let version = broker_max.min(R::VERSIONS.max).min(version_max);
        if version < broker_min.max(R::VERSIONS.min) {
            bail!(
                "the broker at {} serves {name} only at versions {broker_min}..={broker_max}, \
                 which this tool does not speak",
                self.address
            );
        }
        Ok(version)
    }

    fn send<R: Request>(&mut self, request: &R, version_max: i16) -> anyhow::Result<R::Response> {
        let version = self.version::<R>(version_max)?;
        self.exchange(request, version)
    }

    fn exchange<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let name = api_name(R::KEY);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("weir-cli")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, R::header_version(version))
            .with_context(|| format!("cannot encode the {name} request header"))?;
        request
            .encode(&mut frame, version)
            .with_context(|| format!("cannot encode {name} v{version}"))?;
        let body_len = u32::try_from(frame.len() - 4).context("request too large")?;
        if let Some(prefix) = frame.get_mut(..4) {
            prefix.copy_from_slice(&body_len.to_be_bytes());
        }
        self.stream
            .write_all(&frame)
            .with_context(|| format!("cannot send {name} to {}", self.address))?;

        let mut body = self
            .read_frame()
            .with_context(|| format!("no {name} response from {}", self.address))?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .with_context(|| format!("bad {name} response header from {}", self.address))?;
        if header.correlation_id != correlation_id {
            bail!(
                "{} answered correlation id {} to request {correlation_id}",
                self.address,
                header.correlation_id
            );
        }
        R::Response::decode(&mut body, version)
            .with_context(|| format!("cannot decode {name} v{version} from {}", self.address))
    }

    fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = usize::try_from(i32::from_be_bytes(len))
            .map_err(|_| anyhow!("negative frame length"))?;
        if len > RESPONSE_BYTES_MAX {
            bail!("response of {len} bytes is over the limit of {RESPONSE_BYTES_MAX}");
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }
}

/// Opens a TCP connection to `address`, trying each resolved address in
/// turn, each within [`CONNECT_TIMEOUT_MS`].
fn connect(address: &str) -> anyhow::Result<TcpStream> {
    let resolved: Vec<SocketAddr> = address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {address}"))?
        .collect();
    let mut last_error = None;
    for socket in resolved {
        match TcpStream::connect_timeout(&socket, Duration::from_millis(CONNECT_TIMEOUT_MS)) {
            Ok(stream) => {
                let timeout = Some(Duration::from_millis(IO_TIMEOUT_MS));
                stream.set_read_timeout(timeout)?;
                stream.set_write_timeout(timeout)?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) => last_error = Some(err),
        }
    }
    match last_error {
        Some(err) => Err(err).with_context(|| format!("cannot connect to {address}")),
        None => bail!("{address} resolves to no address"),
    }
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|()| format!("API {key}"), |key| format!("{key:?}"))
}

/// Connections to a cluster: the first bootstrap broker that answered, and
/// the others by node id once metadata has named them.
pub struct Client {
    bootstrap: Connection,
    addresses: HashMap<i32, String>,
    nodes: HashMap<i32, Connection>,
}

impl Client {
    /// Connects to the first broker of `brokers` (comma-separated) that
    /// answers ApiVersions. When none does, the error is [`Unreachable`].
    pub fn connect(brokers: &str) -> anyhow::Result<Client> {
        let addresses: Vec<&str> = brokers
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .collect();
        if addresses.is_empty() {
            bail!("--brokers is empty");
        }
        if addresses.len() > BOOTSTRAP_BROKERS_MAX {
            bail!("--brokers lists more than {BOOTSTRAP_BROKERS_MAX} addresses");
        }
        let mut cause = String::new();
        for address in addresses {
            match Connection::open(address) {
                Ok(bootstrap) => {
                    return Ok(Client {
                        bootstrap,
                        addresses: HashMap::new(),
                        nodes: HashMap::new(),
                    });
                }
                Err(err) => cause = format!("{err:#}"),
            }
        }
        Err(Unreachable {
            brokers: brokers.to_owned(),
            cause,
        }
        .into())
    }

    /// Sends `request` to the bootstrap broker. `version_max` is the newest
    /// version whose fields the caller set.
    pub fn send<R: Request>(
        &mut self,
        request: &R,
        version_max: i16,
    ) -> anyhow::Result<R::Response> {
        self.bootstrap.send(request, version_max)
    }

    /// Sends `request` to broker `node`, connecting to it first if needed.
    /// Its address comes from the last [`Client::metadata`] answer.
    pub fn send_to<R: Request>(
        &mut self,
        node: i32,
        request: &R,
        version_max: i16,
    ) -> anyhow::Result<R::Response> {
        self.node(node)?.send(request, version_max)
    }

    /// Whether broker `node` serves `R` at a version this client speaks.
    pub fn serves<R: Request>(&mut self, node: i32) -> anyhow::Result<bool> {
        Ok(self.node(node)?.version::<R>(R::VERSIONS.max).is_ok())
    }

    /// The connection to broker `node`, opened on first use.
    fn node(&mut self, node: i32) -> anyhow::Result<&mut Connection> {
        if !self.nodes.contains_key(&node) {
            let address = self
                .addresses
                .get(&node)
                .ok_or_else(|| anyhow!("broker {node} is not in the cluster metadata"))?
                .clone();
            // The bootstrap connection may already be this broker; a second
            // connection to it is harmless and keeps the bookkeeping simple.
            let connection = Connection::open(&address)
                .with_context(|| format!("cannot reach broker {node} at {address}"))?;
            self.nodes.insert(node, connection);
        }
        self.nodes
            .get_mut(&node)
            .ok_or_else(|| anyhow!("no connection to broker {node}"))
    }

    /// Metadata of `topics` (all topics when `None`), and remembers where
    /// each broker listens for [`Client::send_to`]. Never creates a topic.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> anyhow::Result<MetadataResponse> {
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
    pub fn controller(&mut self) -> anyhow::Result<Option<i32>> {
        let metadata = self.metadata(Some(&[]))?;
        Ok((metadata.controller_id.0 >= 0).then_some(metadata.controller_id.0))
    }

    /// Sends `request` to the controller (see [`Client::controller`]).
    pub fn send_to_controller<R: Request>(
        &mut self,
        request: &R,
        version_max: i16,
    ) -> anyhow::Result<R::Response> {
        match self.controller()? {
            Some(node) => self.send_to(node, request, version_max),
            None => self.send(request, version_max),
        }
    }
}

/// A Kafka error code as a readable error, or `Ok` for 0.
pub fn check(code: i16, what: impl FnOnce() -> String) -> anyhow::Result<()> {
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
) -> anyhow::Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(err) => Err(failure(&what(), err, message)),
    }
}

/// `what` failed with `err`, and the broker's message when it sent one.
fn failure(what: &str, err: ResponseError, message: Option<&StrBytes>) -> anyhow::Error {
    let code = err.code();
    match message.map(|m| m.as_str().trim()).filter(|m| !m.is_empty()) {
        Some(message) => anyhow!("{what}: {err} (error code {code}): {message}"),
        None => anyhow!("{what}: {err} (error code {code})"),
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
    pub topic: String,
    pub partition: i32,
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
    ) -> anyhow::Result<HashMap<(String, i32), Option<i64>>> {
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
const COORDINATOR_WAIT_MS: u64 = 15_000;
/// The pause between those retries.
const COORDINATOR_RETRY_MS: u64 = 200;

impl Client {
    /// The node id of `group`'s coordinator, which then takes
    /// [`Client::send_to`].
    pub fn coordinator(&mut self, group: &str) -> anyhow::Result<i32> {
        use kafka_protocol::messages::FindCoordinatorRequest;

        let request = FindCoordinatorRequest::default().with_key(str_bytes(group));
        let deadline = std::time::Instant::now() + Duration::from_millis(COORDINATOR_WAIT_MS);
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
                Some(err) if err.is_retriable() && std::time::Instant::now() < deadline => {
                    // The broker has no "tell me when ready"; this paces the retries.
                    std::thread::sleep(Duration::from_millis(COORDINATOR_RETRY_MS));
                }
                Some(err) => {
                    return Err(failure(
                        &format!("cannot find the coordinator of group {group}"),
                        err,
                        response.error_message.as_ref(),
                    ));
                }
            }
        }
    }
}
