//! What the admin APIs share: Kafka's config resource types, the checks a
//! single broker applies to replica assignments and BROKER resources, and
//! broker-level config changes. The handlers themselves live in `api/`, one
//! file per Kafka API.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;
use weir_metadata::ConfigChange;

use crate::Broker;
use crate::error::ApiError;
use crate::topic_config::{self, ConfigDef, Synonym};

/// Kafka's config resource type for a topic.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
/// Kafka's config resource type for a broker.
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// A wire string from an owned one.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The error code and message a result reports: 0 and no message on success.
pub(crate) fn outcome<T>(result: &Result<T, ApiError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(_) => (0, None),
        Err(err) => (err.code(), Some(str_bytes(err.message.clone()))),
    }
}

/// INVALID_REQUEST with a message.
pub(crate) fn invalid_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, message)
}

/// The keys that appear more than once, in order.
pub(crate) fn duplicates<K: Ord + Clone>(keys: impl IntoIterator<Item = K>) -> BTreeSet<K> {
    let mut seen = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for key in keys {
        if !seen.insert(key.clone()) {
            twice.insert(key);
        }
    }
    twice
}

/// Apply `apply` to each config resource of a request, in order. A resource
/// named more than once is answered once, with INVALID_REQUEST, and not
/// applied at all, as Kafka does.
pub(crate) fn each_resource<R>(
    resources: &[R],
    key: impl Fn(&R) -> (i8, String),
    mut apply: impl FnMut(&R) -> Result<(), ApiError>,
) -> Vec<(&R, Result<(), ApiError>)> {
    let repeated = duplicates(resources.iter().map(&key));
    let mut answered = BTreeSet::new();
    let mut outcomes = Vec::with_capacity(resources.len());
    for resource in resources {
        let name = key(resource);
        let outcome = if repeated.contains(&name) {
            if !answered.insert(name) {
                continue;
            }
            Err(invalid_request(
                "the resource appears more than once in the request",
            ))
        } else {
            apply(resource)
        };
        outcomes.push((resource, outcome));
    }
    outcomes
}

/// A client's replica list for one partition, as ids. On a cluster it must
/// have `factor` brokers, none twice (the quorum checks they are
/// registered); with one broker it must be exactly this node.
pub(crate) fn check_replicas(
    broker: &Broker,
    partition: i32,
    replicas: &[BrokerId],
    factor: usize,
) -> Result<Vec<i32>, ApiError> {
    let listed: Vec<i32> = replicas.iter().map(|id| id.0).collect();
    let invalid = |why: String| ApiError::new(ResponseError::InvalidReplicaAssignment, why);
    if broker.metadata().replicated() {
        let brokers = broker.metadata().brokers().len();
        if listed.len() > brokers {
            return Err(invalid(format!(
                "partition {partition} is assigned to {} brokers; the cluster has {brokers}",
                listed.len()
            )));
        }
        if listed.is_empty() || listed.len() != factor {
            return Err(invalid(format!(
                "partition {partition} is assigned to {} brokers {listed:?}; \
                 every partition needs the same, non-zero number ({factor})",
                listed.len()
            )));
        }
        if let Some(twice) = listed
            .iter()
            .enumerate()
            .find_map(|(i, b)| listed[..i].contains(b).then_some(*b))
        {
            return Err(invalid(format!(
                "partition {partition} names broker {twice} twice in {listed:?}"
            )));
        }
        return Ok(listed);
    }
    let node = broker.config().node_id;
    if listed == [node] {
        return Ok(listed);
    }
    Err(invalid(format!(
        "partition {partition} is assigned to brokers {listed:?}; \
         the only broker is node {node}, so the assignment must be [{node}]"
    )))
}

/// A BROKER config resource names this node by id, or is "" for the
/// cluster-wide defaults; anything else is INVALID_REQUEST, as in Kafka.
pub(crate) fn check_broker_resource(broker: &Broker, name: &str) -> Result<(), ApiError> {
    let node = broker.config().node_id;
    if name.is_empty() || name.parse::<i32>().ok() == Some(node) {
        return Ok(());
    }
    Err(invalid_request(format!(
        "unexpected broker id '{name}': expected {node} or the empty string"
    )))
}

/// A broker-level config Weir accepts at runtime: the broker synonym of a
/// topic config (`log.retention.ms`, ...); anything else is INVALID_CONFIG.
pub(crate) fn broker_config_def(key: &str) -> Result<&'static ConfigDef, ApiError> {
    topic_config::definition_by_broker_name(key).ok_or_else(|| {
        ApiError::new(
            ResponseError::InvalidConfig,
            format!("'{key}' is not a broker config that can be changed at runtime"),
        )
    })
}

/// Validate broker-level config changes and, unless `validate_only`, store
/// them and apply the new defaults to every open partition.
pub(crate) fn alter_broker_configs(
    broker: &Broker,
    changes: &[ConfigChange],
    validate_only: bool,
) -> Result<(), ApiError> {
    for change in changes {
        match change {
            ConfigChange::Set(key, value) => {
                topic_config::validate_value(broker_config_def(key)?, value)?
            }
            ConfigChange::Delete(key) => {
                broker_config_def(key)?;
            }
        }
    }
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    broker.metadata().alter_broker_configs(changes)?;
    broker.refresh_partition_configs();
    tracing::info!(changes = changes.len(), "altered broker configs");
    Ok(())
}

/// Every topic config with the levels that set it for a topic whose own
/// configs are `topic` (`None`: the broker itself), effective value first.
pub(crate) fn config_chains(
    broker: &Broker,
    topic: Option<&BTreeMap<String, String>>,
) -> Vec<(&'static ConfigDef, Vec<Synonym>)> {
    let dynamic = broker.metadata().broker_configs();
    let fixed = &broker.config().log_defaults;
    topic_config::TOPIC_CONFIGS
        .iter()
        .map(|def| (def, topic_config::synonyms(def, topic, &dynamic, fixed)))
        .collect()
}

/// A broker over a real commit log and metadata store in a temp dir, and a
/// way to call it through the wire codec at any version.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use bytes::BytesMut;
    use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, Request};
    use weir_metadata::LocalMetadataStore;
    use weir_storage::{CommitLog, LogConfig, SystemClock};

    use crate::{Broker, BrokerConfig};

    /// One RecordBatch v2 of `count` records, as a producer sends it.
    pub(crate) fn batch(count: i64) -> bytes::Bytes {
        batch_of(count, |i| bytes::Bytes::from(format!("record {i}")))
    }

    /// One RecordBatch v2 of `count` records, record `i` holding `value(i)`.
    pub(crate) fn batch_of(count: i64, value: impl Fn(i64) -> bytes::Bytes) -> bytes::Bytes {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: -1,
                timestamp: 1_700_000_000_000 + i,
                key: None,
                value: Some(value(i)),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    /// An empty partition of a fresh log in `dir`, with the default
    /// config. Returns the log (which must outlive the handle) and the
    /// partition.
    pub(crate) fn fresh_partition(dir: &std::path::Path) -> (CommitLog, weir_storage::Partition) {
        let (log, _) = CommitLog::open(dir, LogConfig::default(), Arc::new(SystemClock)).unwrap();
        let partition = log
            .create_partition(
                weir_storage::PartitionId {
                    topic_id: uuid::Uuid::from_u128(1),
                    partition: 0,
                },
                weir_storage::PartitionConfig::default(),
            )
            .unwrap();
        (log, partition)
    }

    /// A partition of a fresh log in `dir` holding durable batches of
    /// `counts` records (one record per batch), of which only the first
    /// `committed` offsets are under the high watermark: a leader waiting
    /// for its followers. Returns the log (which must outlive the handle)
    /// and the partition.
    pub(crate) async fn held_partition(
        dir: &std::path::Path,
        counts: &[i64],
        committed: i64,
    ) -> (CommitLog, weir_storage::Partition) {
        let (log, partition) = fresh_partition(dir);
        partition.set_high_watermark_bound(Some(0));
        for &count in counts {
            let appended = partition.append(batch(count)).unwrap();
            appended.durable.wait().await.unwrap();
        }
        assert_eq!(
            partition.set_high_watermark_bound(Some(committed)),
            committed
        );
        (log, partition)
    }

    /// A broker and the temp dir holding its data.
    pub(crate) struct TestBroker {
        pub broker: Arc<Broker>,
        pub dir: tempfile::TempDir,
    }

    /// A broker with default settings.
    pub(crate) fn broker() -> TestBroker {
        broker_with(BrokerConfig::default())
    }

    /// A broker with `config`.
    pub(crate) fn broker_with(config: BrokerConfig) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path(), config);
        TestBroker { broker, dir }
    }

    /// Open (or reopen) a broker over the data in `dir`.
    pub(crate) fn open(dir: &std::path::Path, config: BrokerConfig) -> Arc<Broker> {
        let clock = Arc::new(SystemClock);
        let (log, _) = CommitLog::open(dir, LogConfig::default(), clock.clone()).unwrap();
        let metadata = Arc::new(LocalMetadataStore::open(dir).unwrap());
        Arc::new(Broker::new(config, log, metadata, clock).unwrap())
    }

    /// Encode `request` at `version`, decode it as the server does, handle
    /// it, and decode the encoded response at the same version, so a field
    /// that a version cannot carry shows up as it would to a client.
    pub(crate) async fn call<R: Request + std::fmt::Debug>(
        broker: &Arc<Broker>,
        version: i16,
        request: R,
    ) -> R::Response {
        let api = ApiKey::try_from(R::KEY).unwrap();
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .encode(&mut frame, api.request_header_version(version))
            .unwrap();
        request.encode(&mut frame, version).unwrap();
        let decoded =
            weir_protocol::decode_request(frame.freeze(), |key| Some(key.valid_versions()))
                .unwrap();
        let weir_protocol::Decoded::Request(decoded) = decoded else {
            panic!("{api:?} v{version} did not decode as a request");
        };
        let response = broker
            .handle(decoded)
            .await
            .unwrap()
            .expect("admin APIs always answer");
        let wire = weir_protocol::encode_response(api, version, 7, &response).unwrap();
        let mut body = wire.slice(4..);
        let header =
            ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, 7);
        let decoded = R::Response::decode(&mut body, version).unwrap();
        assert!(
            body.is_empty(),
            "{api:?} v{version}: bytes left after the response"
        );
        decoded
    }

    /// Every version of `api` the crate can decode.
    pub(crate) fn versions(api: ApiKey) -> std::ops::RangeInclusive<i16> {
        let range = api.valid_versions();
        range.min..=range.max
    }
}
