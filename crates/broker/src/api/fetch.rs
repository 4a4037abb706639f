//! Fetch: read stored batches for each requested partition, and long-poll
//! until `min_bytes` are ready or `max_wait_ms` has passed.
//!
//! No fetch sessions (KIP-227) are created: every response carries session
//! id 0, which tells clients to keep sending full fetches, and a request
//! naming a session gets FETCH_SESSION_ID_NOT_FOUND so the client falls back
//! to a full one. Every requested partition appears in the response, with or
//! without data, because clients (kafka-python among them) check that a full
//! fetch answers exactly the partitions it asked for.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::{Duration, Instant};
use uuid::Uuid;
use weir_auth::AclOperation;
use weir_storage::{Partition, PartitionOffsets, TagExpr};

use crate::error::ApiError;
use crate::replica::Leadership;
use crate::{Broker, HandlerError, RequestContext};

/// Longest a fetch may wait for data, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;
/// First version with fetch sessions.
const SESSION_VERSION: i16 = 7;
/// First version that carries the client's view of the leader epoch.
const LEADER_EPOCH_VERSION: i16 = 9;
/// First version that addresses topics by ID instead of name.
const TOPIC_ID_VERSION: i16 = 13;
/// Session id meaning "no session".
const NO_SESSION_ID: i32 = 0;
/// Session epochs of a full fetch: 0 asks for a new session, -1 for none.
const FULL_FETCH_EPOCHS: [i32; 2] = [0, -1];
/// `isolation_level` of read_committed.
const READ_COMMITTED: i8 = 1;
/// First version whose partitions can name the current leader (KIP-595's
/// `CurrentLeader`, a tagged field).
const CURRENT_LEADER_VERSION: i16 = 12;
/// First version that carries the endpoints of the leaders it names (KIP-951).
const NODE_ENDPOINTS_VERSION: i16 = 16;
/// First version that names a follower in `replica_state`, not `replica_id`.
const REPLICA_STATE_VERSION: i16 = 15;
/// First version with the client's rack, and so fetching from followers
/// (KIP-392): a consumer may read a follower's copy up to its high watermark.
const RACK_VERSION: i16 = 11;

/// One requested partition, resolved once for every read of a long poll.
struct Target {
    index: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    partition: Result<Partition, ApiError>,
    /// The leader and epoch to name in a FENCED_LEADER_EPOCH or
    /// NOT_LEADER_OR_FOLLOWER answer, as Kafka does so the client need not
    /// ask Metadata first.
    current_leader: Option<LeaderIdAndEpoch>,
    /// Where the leader named in `current_leader` listens (KIP-951).
    leader_endpoint: Option<NodeEndpoint>,
    /// A follower replica's fetch: it reads up to the log end.
    replica: bool,
    /// The replica this client should fetch from instead (KIP-392): the
    /// partition is answered without records, naming it.
    preferred_read_replica: Option<i32>,
    /// A view's tag filter: only matching records are read.
    filter: Option<Arc<TagExpr>>,
}

struct TopicTarget {
    name: TopicName,
    id: Uuid,
    partitions: Vec<Target>,
    /// The name of the topic asked for (by name or ID), when it is one:
    /// what its bytes out are counted under.
    asked: Option<String>,
}

/// What one pass over the requested partitions found.
struct Round {
    topics: Vec<FetchableTopicResponse>,
    bytes: usize,
    any_error: bool,
    /// Offsets seen per partition, in request order, to tell whether a later
    /// change in the log concerns this fetch.
    seen: Vec<Option<PartitionOffsets>>,
}

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: FetchRequest,
) -> Result<FetchResponse, HandlerError> {
    let version = ctx.version;
    if version >= SESSION_VERSION {
        if req.session_id != NO_SESSION_ID {
            return Ok(session_error(ResponseError::FetchSessionIdNotFound));
        }
        if !FULL_FETCH_EPOCHS.contains(&req.session_epoch) {
            return Ok(session_error(ResponseError::InvalidFetchSessionEpoch));
        }
    }
    let replica_id = if version >= REPLICA_STATE_VERSION {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let rack =
        (version >= RACK_VERSION && !req.rack_id.is_empty()).then(|| req.rack_id.to_string());
    let targets: Arc<Vec<TopicTarget>> = Arc::new(
        req.topics
            .into_iter()
            .map(|topic| resolve(broker, ctx, replica_id, rack.as_deref(), topic))
            .collect(),
    );
    let names_a_leader = partitions(&targets).any(|t| t.current_leader.is_some());
    let read_committed = req.isolation_level == READ_COMMITTED;
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(broker.config().fetch_max_bytes);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;

    // Subscribed before the first read, so an append landing between the
    // read and the wait still wakes this fetch.
    let mut progress = broker.log().progress();
    let round = loop {
        progress.borrow_and_update();
        // The reads (a pread per run of batches) go to a blocking thread;
        // the long poll below waits on the runtime without holding one.
        let reading = targets.clone();
        let round =
            crate::blocking::run(move || read_all(&reading, max_bytes, read_committed)).await?;
        if round.bytes >= min_bytes || round.any_error || wait.is_zero() {
            break round;
        }
        if !wait_for_change(&mut progress, deadline, &targets, &round.seen).await? {
            break round;
        }
    };
    if replica_id < 0 {
        count_out(&targets, &round.topics);
    }
    let config = broker.config();
    let node_endpoints = if names_a_leader && version >= NODE_ENDPOINTS_VERSION {
        let mut endpoints: Vec<NodeEndpoint> = config
            .endpoint(&ctx.listener)
            .map(|(host, port)| {
                NodeEndpoint::default()
                    .with_node_id(config.node_id.into())
                    .with_host(host.to_owned().into())
                    .with_port(port)
            })
            .into_iter()
            .collect();
        for endpoint in partitions(&targets).filter_map(|t| t.leader_endpoint.as_ref()) {
            if !endpoints.iter().any(|e| e.node_id == endpoint.node_id) {
                endpoints.push(endpoint.clone());
            }
        }
        endpoints
    } else {
        Vec::new()
    };
    Ok(FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_session_id(NO_SESSION_ID)
        .with_responses(round.topics)
        .with_node_endpoints(node_endpoints))
}

/// Record the bytes and records a consumer's fetch sends, per topic.
fn count_out(targets: &[TopicTarget], answers: &[FetchableTopicResponse]) {
    if !weir_metrics::enabled() {
        return;
    }
    let metrics = weir_metrics::metrics();
    for (target, answer) in targets.iter().zip(answers) {
        let Some(name) = target.asked.as_deref() else {
            continue;
        };
        let (mut bytes, mut records) = (0, 0u64);
        for records_sent in answer
            .partitions
            .iter()
            .filter_map(|p| p.records.as_deref())
        {
            bytes += records_sent.len();
            records += weir_storage::batches(records_sent)
                .map_while(Result::ok)
                .filter(|(header, _)| !header.is_control())
                .map(|(header, _)| u64::try_from(header.record_count).unwrap_or(0))
                .sum::<u64>();
        }
        metrics.topic_out(name, bytes, records);
    }
}

/// Wait until a requested partition's offsets move. False when the deadline
/// passed or the log stopped publishing progress.
async fn wait_for_change(
    progress: &mut tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    targets: &Arc<Vec<TopicTarget>>,
    seen: &[Option<PartitionOffsets>],
) -> Result<bool, HandlerError> {
    loop {
        match tokio::time::timeout_at(deadline, progress.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Ok(false),
        }
        progress.borrow_and_update();
        // Offsets are read under the partition's lock, which an append
        // holds across its write: looked at from a blocking thread.
        let (targets, seen) = (targets.clone(), seen.to_vec());
        let moved = crate::blocking::run(move || {
            partitions(&targets).zip(&seen).any(|(target, before)| {
                match (&target.partition, before) {
                    (Ok(partition), Some(before)) => partition.offsets() != *before,
                    _ => false,
                }
            })
        })
        .await?;
        if moved {
            return Ok(true);
        }
    }
}

fn partitions(targets: &[TopicTarget]) -> impl Iterator<Item = &Target> {
    targets.iter().flat_map(|t| t.partitions.iter())
}

fn resolve(
    broker: &Broker,
    ctx: &RequestContext,
    replica_id: i32,
    rack: Option<&str>,
    topic: FetchTopic,
) -> TopicTarget {
    let version = ctx.version;
    // A follower reads as the cluster (CLUSTER_ACTION), a consumer with
    // READ on the topic; by name, before the topic is looked up, so a
    // client that may not read cannot learn which topics exist.
    let read_denied = |name: &str| {
        let allowed = if replica_id >= 0 {
            broker.allowed_on_cluster(ctx, AclOperation::ClusterAction)
        } else {
            broker.allowed_on_topic(ctx, AclOperation::Read, name)
        };
        match allowed {
            true => Ok(()),
            false => Err(crate::acls::topic_denied(ctx, AclOperation::Read, name)),
        }
    };
    let state = if version >= TOPIC_ID_VERSION {
        broker
            .topic_by_id(topic.topic_id)
            .ok_or_else(|| {
                ApiError::new(
                    ResponseError::UnknownTopicId,
                    format!("no topic has id {}", topic.topic_id),
                )
            })
            .and_then(|state| read_denied(&state.meta.name).map(|()| state))
    } else {
        read_denied(&topic.topic).and_then(|()| {
            broker
                .topic(&topic.topic)
                .ok_or_else(|| ApiError::unknown_topic(&topic.topic))
        })
    };
    let asked = state.as_ref().ok().map(|state| state.meta.name.clone());
    // A view reads its source's partitions through its filter; followers
    // replicate sources, never views.
    let state = state.and_then(|state| match (&state.view, replica_id >= 0) {
        (Some(view), true) => Err(crate::view::read_only(
            "replicate",
            &state.meta.name,
            &view.source,
        )),
        _ => broker.data_topic(state),
    });
    let filter = state.as_ref().ok().and_then(|(_, filter)| filter.clone());
    let state = state.map(|(state, _)| state);
    let partitions = topic
        .partitions
        .into_iter()
        .map(|p| {
            let partition = state.as_ref().map_err(Clone::clone).and_then(|state| {
                if (0..state.meta.partitions).contains(&p.partition) {
                    Ok((state, p.partition))
                } else {
                    Err(ApiError::unknown_partition(&state.meta.name, p.partition))
                }
            });
            let mut current_leader = None;
            let mut leader_endpoint = None;
            let mut preferred_read_replica = None;
            // On a follower serving a consumer, the leader epoch the
            // assignment gives (its log may not hold a batch of it yet).
            let mut follower_epoch = None;
            let partition = partition.and_then(|(state, index)| {
                let id = weir_storage::PartitionId {
                    topic_id: state.meta.id,
                    partition: index,
                };
                // A follower's fetch is recorded (it moves the high
                // watermark); anyone else reads only from the leader.
                let leadership = if replica_id >= 0 {
                    broker
                        .replicas
                        .follower_fetched(id, replica_id, p.fetch_offset)
                        .err()
                } else {
                    match broker.replicas.leadership(id) {
                        Leadership::Leader { .. } => {
                            preferred_read_replica =
                                rack.and_then(|rack| broker.closest_replica(id, rack));
                            None
                        }
                        // A consumer that knows of KIP-392 may read a
                        // follower's copy, up to its high watermark.
                        Leadership::NotLeader { leader_epoch, .. }
                            if version >= RACK_VERSION && broker.replicas.follows(id) =>
                        {
                            follower_epoch = Some(leader_epoch);
                            None
                        }
                        not => Some(not),
                    }
                };
                if let Some(not) = leadership {
                    if let Leadership::NotLeader {
                        leader,
                        leader_epoch,
                    } = &not
                        && version >= CURRENT_LEADER_VERSION
                    {
                        current_leader = Some(
                            LeaderIdAndEpoch::default()
                                .with_leader_id((*leader).into())
                                .with_leader_epoch(*leader_epoch),
                        );
                        leader_endpoint =
                            broker
                                .client_endpoint(*leader, &ctx.listener)
                                .map(|(host, port)| {
                                    NodeEndpoint::default()
                                        .with_node_id((*leader).into())
                                        .with_host(host.into())
                                        .with_port(port)
                                });
                    }
                    return Err(not_leader(&not, replica_id));
                }
                let partition = crate::topics::local_partition(state, index)?;
                if version >= LEADER_EPOCH_VERSION {
                    let epoch = follower_epoch.unwrap_or_else(|| partition.leader_epoch());
                    let checked = check_current_leader_epoch(p.current_leader_epoch, epoch);
                    if checked
                        .as_ref()
                        .is_err_and(|e| e.code == ResponseError::FencedLeaderEpoch)
                        && version >= CURRENT_LEADER_VERSION
                        && follower_epoch.is_none()
                    {
                        current_leader = Some(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(broker.config().node_id.into())
                                .with_leader_epoch(epoch),
                        );
                    }
                    checked?;
                }
                Ok(partition)
            });
            Target {
                index: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                partition,
                current_leader,
                leader_endpoint,
                replica: replica_id >= 0,
                preferred_read_replica,
                filter: filter.clone(),
            }
        })
        .collect();
    TopicTarget {
        name: topic.topic,
        id: topic.topic_id,
        partitions,
        asked,
    }
}

/// NOT_LEADER_OR_FOLLOWER for a read this broker cannot serve.
fn not_leader(leadership: &Leadership, replica_id: i32) -> ApiError {
    let why = match leadership {
        Leadership::Leader { .. } => {
            format!("broker {replica_id} is not a follower of this partition")
        }
        Leadership::NotLeader { leader, .. } => {
            format!("this broker does not lead the partition; broker {leader} does")
        }
    };
    ApiError::new(ResponseError::NotLeaderOrFollower, why)
}

/// The client's idea of the partition's leader epoch against the
/// partition's own, as Kafka checks it (Fetch, ListOffsets,
/// OffsetForLeaderEpoch): -1 skips the check, a newer one than ours is
/// UNKNOWN_LEADER_EPOCH (this broker has not heard of it yet), an older one
/// FENCED_LEADER_EPOCH (the client's metadata is stale).
pub(crate) fn check_current_leader_epoch(current: i32, ours: i32) -> Result<(), ApiError> {
    if current == -1 || current == ours {
        return Ok(());
    }
    if current > ours {
        Err(ApiError::new(
            ResponseError::UnknownLeaderEpoch,
            format!("leader epoch {current} is newer than the partition's {ours}"),
        ))
    } else {
        Err(ApiError::new(
            ResponseError::FencedLeaderEpoch,
            format!("leader epoch {current} is older than the partition's {ours}"),
        ))
    }
}

/// Read every requested partition once, within `max_bytes` overall. The first
/// partition with data returns at least one whole batch even when it is larger
/// than the limits (KIP-74), so a big batch never stalls a consumer; later
/// partitions return nothing that would overflow.
fn read_all(targets: &[TopicTarget], max_bytes: usize, read_committed: bool) -> Round {
    let mut remaining = max_bytes;
    let mut bytes = 0;
    let mut any_error = false;
    let mut seen = Vec::new();
    let topics = targets
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|target| {
                    let partition = match &target.partition {
                        Ok(partition) => partition,
                        Err(err) => {
                            any_error = true;
                            seen.push(None);
                            return errored(target.index, err, read_committed).with_current_leader(
                                target.current_leader.clone().unwrap_or_default(),
                            );
                        }
                    };
                    if let Some(replica) = target.preferred_read_replica {
                        let offsets = partition.offsets();
                        seen.push(Some(offsets));
                        return answered(
                            target.index,
                            bytes::Bytes::new(),
                            offsets,
                            read_committed.then(Vec::new),
                        )
                        .with_preferred_read_replica(replica.into());
                    }
                    let first = bytes == 0;
                    let limit = target.partition_max_bytes.min(remaining);
                    let read = read_one(
                        partition,
                        (target.fetch_offset, limit),
                        first,
                        (target.replica, target.filter.as_deref()),
                        read_committed,
                    );
                    match read {
                        Ok(Read {
                            records,
                            offsets,
                            aborted,
                        }) => {
                            bytes += records.len();
                            remaining = remaining.saturating_sub(records.len());
                            seen.push(Some(offsets));
                            answered(target.index, records, offsets, aborted)
                        }
                        Err(err) => {
                            any_error = true;
                            seen.push(Some(partition.offsets()));
                            errored(target.index, &err, read_committed)
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.name.clone())
                .with_topic_id(topic.id)
                .with_partitions(partitions)
        })
        .collect();
    Round {
        topics,
        bytes,
        any_error,
        seen,
    }
}

/// What [`read_one`] read.
#[derive(Debug)]
struct Read {
    records: bytes::Bytes,
    offsets: PartitionOffsets,
    /// For a read_committed read, the aborted transactions among the
    /// records (`None` otherwise, which Kafka sends as null).
    aborted: Option<Vec<AbortedTransaction>>,
}

/// Read one partition from `offset`, up to `limit` bytes unless `first`;
/// up to the log end for a follower `replica`, the last stable offset for
/// a read_committed consumer, else the high watermark. A view's `filter`
/// keeps only the records it matches (the storage skips, copies or rebuilds
/// each batch).
///
/// An offset the log holds but has not committed yet reads as empty, as in
/// Kafka: a consumer that saw a high watermark on one leader may ask the
/// next one before that leader's high watermark has caught up. Only an
/// offset outside the log is out of range.
fn read_one(
    partition: &Partition,
    (offset, limit): (i64, usize),
    first: bool,
    (replica, filter): (bool, Option<&TagExpr>),
    read_committed: bool,
) -> Result<Read, ApiError> {
    let offsets = partition.offsets();
    if offset < offsets.log_start || offset > offsets.log_end {
        return Err(ApiError::new(
            ResponseError::OffsetOutOfRange,
            format!(
                "offset {offset} is outside the log [{}, {}]",
                offsets.log_start, offsets.log_end
            ),
        ));
    }
    let committed = read_committed && !replica;
    let end = if replica {
        offsets.log_end
    } else if committed {
        offsets.last_stable
    } else {
        offsets.high_watermark
    };
    let nothing = |offsets| Read {
        records: bytes::Bytes::new(),
        offsets,
        aborted: committed.then(Vec::new),
    };
    if offset >= end || (!first && limit == 0) {
        return Ok(nothing(offsets));
    }
    let read = if let Some(filter) = filter {
        partition.read_filtered(offset, limit, committed, filter)?
    } else if replica {
        partition.read_replica(offset, limit)?
    } else if committed {
        partition.read_committed(offset, limit)?
    } else {
        partition.read(offset, limit)?
    };
    if !first && read.records.len() > limit {
        return Ok(nothing(read.offsets));
    }
    let aborted = committed.then(|| {
        read.aborted
            .iter()
            .map(|a| {
                AbortedTransaction::default()
                    .with_producer_id(a.producer_id.into())
                    .with_first_offset(a.first_offset)
            })
            .collect()
    });
    Ok(Read {
        records: read.records,
        offsets: read.offsets,
        aborted,
    })
}

fn answered(
    index: i32,
    records: bytes::Bytes,
    offsets: PartitionOffsets,
    aborted: Option<Vec<AbortedTransaction>>,
) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(0)
        .with_high_watermark(offsets.high_watermark)
        .with_last_stable_offset(offsets.last_stable)
        .with_log_start_offset(offsets.log_start)
        .with_aborted_transactions(aborted)
        .with_preferred_read_replica((-1).into())
        .with_records(Some(records))
}

fn errored(index: i32, err: &ApiError, read_committed: bool) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(err.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(aborted_transactions(read_committed))
        .with_preferred_read_replica((-1).into())
        .with_records(Some(bytes::Bytes::new()))
}

/// Kafka sends an empty list to read_committed consumers and null otherwise.
fn aborted_transactions(read_committed: bool) -> Option<Vec<AbortedTransaction>> {
    read_committed.then(Vec::new)
}

fn session_error(code: ResponseError) -> FetchResponse {
    FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(code.code())
        .with_session_id(NO_SESSION_ID)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;

    #[tokio::test]
    async fn an_offset_held_but_not_committed_reads_empty_and_only_one_outside_the_log_is_out_of_range()
     {
        // A leader waiting for its followers: 5 records held, 2 committed.
        let dir = tempfile::tempdir().unwrap();
        let (_log, partition) = crate::admin::testing::held_partition(dir.path(), &[2, 3], 2).await;
        assert_eq!(partition.offsets().log_end, 5);

        let last_offset = |records: &bytes::Bytes| {
            weir_storage::batches(records)
                .map(|b| {
                    b.map(|(header, _)| header.base_offset + i64::from(header.last_offset_delta))
                })
                .last()
        };
        let Read {
            records, offsets, ..
        } = read_one(&partition, (0, 1 << 20), true, (false, None), false).unwrap();
        assert_eq!(last_offset(&records), Some(Ok(1)), "only what is committed");
        assert_eq!(offsets.high_watermark, 2);
        for offset in 2..=5 {
            let records = read_one(&partition, (offset, 1 << 20), true, (false, None), false)
                .unwrap()
                .records;
            assert!(
                records.is_empty(),
                "offset {offset} is held, not yet committed"
            );
        }
        // A follower copies it all.
        let records = read_one(&partition, (2, 1 << 20), true, (true, None), false)
            .unwrap()
            .records;
        assert_eq!(last_offset(&records), Some(Ok(4)));
        for replica in [false, true] {
            let past =
                read_one(&partition, (6, 1 << 20), true, (replica, None), false).unwrap_err();
            assert_eq!(past.code, ResponseError::OffsetOutOfRange);
            let before =
                read_one(&partition, (-1, 1 << 20), true, (replica, None), false).unwrap_err();
            assert_eq!(before.code, ResponseError::OffsetOutOfRange);
        }
    }

    #[test]
    fn leader_epoch_checks_follow_kafka() {
        assert!(check_current_leader_epoch(-1, 4).is_ok());
        assert!(check_current_leader_epoch(4, 4).is_ok());
        assert_eq!(
            check_current_leader_epoch(5, 4).unwrap_err().code,
            ResponseError::UnknownLeaderEpoch
        );
        assert_eq!(
            check_current_leader_epoch(3, 4).unwrap_err().code,
            ResponseError::FencedLeaderEpoch
        );
        assert_eq!(
            check_current_leader_epoch(-3, 0).unwrap_err().code,
            ResponseError::FencedLeaderEpoch
        );
    }

    #[test]
    fn partition_answers_encode_at_every_version() {
        let offsets = PartitionOffsets {
            log_start: 3,
            high_watermark: 10,
            last_stable: 10,
            log_end: 10,
        };
        let err = ApiError::unknown_topic("t");
        for version in 4..=18 {
            for read_committed in [false, true] {
                let topic = FetchableTopicResponse::default()
                    .with_topic(TopicName("t".into()))
                    .with_topic_id(Uuid::from_u128(7))
                    .with_partitions(vec![
                        answered(
                            0,
                            bytes::Bytes::from_static(b"batch"),
                            offsets,
                            read_committed.then(|| {
                                vec![
                                    AbortedTransaction::default()
                                        .with_producer_id(5.into())
                                        .with_first_offset(4),
                                ]
                            }),
                        ),
                        errored(1, &err, read_committed),
                    ]);
                let response = FetchResponse::default()
                    .with_session_id(NO_SESSION_ID)
                    .with_responses(vec![topic]);
                let mut buf = BytesMut::new();
                response.encode(&mut buf, version).expect("encodes");
                let back = FetchResponse::decode(&mut buf.freeze(), version).expect("decodes");
                let partitions = &back.responses[0].partitions;
                assert_eq!(partitions[0].high_watermark, 10, "v{version}");
                assert_eq!(partitions[0].records.as_deref(), Some(&b"batch"[..]));
                assert_eq!(partitions[1].error_code, 3);
            }
        }
    }

    #[test]
    fn session_errors_encode_from_v7() {
        for version in 7..=18 {
            let mut buf = BytesMut::new();
            session_error(ResponseError::FetchSessionIdNotFound)
                .encode(&mut buf, version)
                .expect("encodes");
            let back = FetchResponse::decode(&mut buf.freeze(), version).expect("decodes");
            assert_eq!(back.error_code, 70);
            assert_eq!(back.session_id, 0);
        }
    }
}
