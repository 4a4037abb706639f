//! ShareFetch (KIP-932): a share group member acknowledges what it
//! processed and acquires more records, from every partition of its share
//! session on this broker, waiting up to `max_wait_ms` for some.
//!
//! The order is Kafka's: the session moves on first (a wrong epoch answers
//! the whole request), then the acknowledgements are applied, then records
//! are acquired. A request that closes the session (epoch -1) acquires
//! nothing, and what the member still held is released.
//!
//! Version 2 (KIP-1206, KIP-1222) adds the Renew acknowledgement, which
//! extends a record's lock without ending its delivery, and a renew fetch
//! (`is_renew_ack`), which only acknowledges: it must ask for nothing (its
//! wait, byte and record limits all 0), and acquires nothing. Its
//! `share_acquire_mode` is 0 (batch-optimized) or 1 (record-limit); both
//! acquire at most `max_records` records here, since records are acquired
//! one by one, never a batch beyond the limit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, NodeEndpoint, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::time::{Duration, Instant};
use uuid::Uuid;
use weir_auth::AclOperation;
use weir_storage::{Partition, PartitionId};

use crate::error::ApiError;
use crate::group_config::ShareGroupSettings;
use crate::replica::Leadership;
use crate::share::partition::{AckBatch, AckType};
use crate::share::session::{Evicted, FINAL_EPOCH, SessionKey, TopicIdPartition};
use crate::share::{ShareManager, SharePartitionKey};
use crate::{Broker, HandlerError, RequestContext};

/// Longest a share fetch may wait for records, whatever the client asks.
const WAIT_MS_MAX: i32 = 30_000;
/// Records one fetch acquires when the client names no bound (Kafka's
/// `max.poll.records` default).
const MAX_RECORDS_DEFAULT: u32 = 500;

/// One partition's answer, built up as the request is served.
#[derive(Debug, Default)]
struct Answer {
    error: Option<ApiError>,
    ack_error: Option<ApiError>,
    records: Option<bytes::Bytes>,
    acquired: Vec<AcquiredRecords>,
    /// For NOT_LEADER_OR_FOLLOWER: the partition's leader now.
    leader: Option<LeaderHint>,
}

/// The leader a NOT_LEADER_OR_FOLLOWER answer names (KIP-951 for share
/// groups: `current_leader`, with the leader's address in
/// `node_endpoints`), so the member goes there without a Metadata round.
#[derive(Debug, Clone)]
pub(crate) struct LeaderHint {
    pub id: i32,
    pub epoch: i32,
    pub endpoint: Option<(String, i32)>,
}

impl LeaderHint {
    /// `current_leader`'s id and epoch: -1 and -1 when none is named.
    pub(crate) fn id_epoch(hint: Option<&Self>) -> (i32, i32) {
        hint.map_or((-1, -1), |h| (h.id, h.epoch))
    }

    /// `node_endpoints`: where each leader named listens, once each, as
    /// (id, host, port).
    pub(crate) fn endpoints<'a>(hints: impl Iterator<Item = &'a Self>) -> Vec<(i32, String, i32)> {
        let mut out: Vec<(i32, String, i32)> = Vec::new();
        for h in hints {
            if let Some((host, port)) = &h.endpoint
                && !out.iter().any(|(id, _, _)| *id == h.id)
            {
                out.push((h.id, host.clone(), *port));
            }
        }
        out
    }
}

/// The leader of `tp` when another broker leads it, with where a client
/// of `listener` reaches it.
pub(crate) fn leader_hint(
    broker: &Broker,
    listener: &str,
    (topic_id, partition): TopicIdPartition,
) -> Option<LeaderHint> {
    match broker.replicas.leadership(PartitionId {
        topic_id,
        partition,
    }) {
        Leadership::NotLeader {
            leader,
            leader_epoch,
        } if leader >= 0 => Some(LeaderHint {
            id: leader,
            epoch: leader_epoch,
            endpoint: broker.client_endpoint(leader, listener),
        }),
        _ => None,
    }
}

/// `acks` with each partition this broker does not lead (or that is
/// gone) refused as Fetch refuses it, before any acknowledgement applies.
pub(crate) fn led_acks(broker: &Broker, acks: Acks) -> Acks {
    acks.into_iter()
        .map(|(tp, parsed)| {
            let checked = parsed.and_then(|b| leader_partition(broker, tp).map(|_| b));
            (tp, checked)
        })
        .collect()
}

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ShareFetchRequest,
) -> Result<ShareFetchResponse, HandlerError> {
    let shares = broker.shares();
    let lock_ms_of = |ms: i64| i32::try_from(ms).unwrap_or(i32::MAX);
    let mut lock_ms = lock_ms_of(shares.settings().record_lock_duration_ms);
    let fail = |error: ResponseError, message: &str, lock_ms: i32| {
        ShareFetchResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string())))
            .with_acquisition_lock_timeout_ms(lock_ms)
    };
    let Some(key) = session_key(
        req.group_id.as_ref().map(|g| g.as_str()),
        req.member_id.as_ref().map(|m| m.as_str()),
    ) else {
        return Ok(fail(
            ResponseError::InvalidRequest,
            "a share fetch names its group and member",
            lock_ms,
        ));
    };
    if !broker.allowed_on_group(ctx, AclOperation::Read, &key.0) {
        return Ok(fail(
            ResponseError::GroupAuthorizationFailed,
            "this client may not read the share group",
            lock_ms,
        ));
    }
    let unreadable = unreadable_topics(broker, ctx, req.topics.iter().map(|t| t.topic_id));
    if !(0..=1).contains(&req.share_acquire_mode) {
        return Ok(fail(
            ResponseError::InvalidRequest,
            "share_acquire_mode is 0 (batch-optimized) or 1 (record-limit)",
            lock_ms,
        ));
    }
    let asks_for_records = [
        req.max_wait_ms,
        req.min_bytes,
        req.max_bytes,
        req.max_records,
    ]
    .iter()
    .any(|n| *n != 0);
    if req.is_renew_ack && asks_for_records {
        return Ok(fail(
            ResponseError::InvalidRequest,
            "a renew fetch (is_renew_ack) only acknowledges: its max_wait_ms, min_bytes, \
             max_bytes and max_records must be 0",
            lock_ms,
        ));
    }
    let renew = renew_allowed(ctx.version);
    let settings = Arc::new(shares.group_settings(&key.0));
    lock_ms = lock_ms_of(settings.partition.record_lock_duration_ms);
    let now_ms = shares.now_ms();
    let named: Vec<TopicIdPartition> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic_id, p.partition_index)))
        .collect();
    let forgotten: Vec<TopicIdPartition> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic_id, *p)))
        .collect();
    let step = shares
        .sessions()
        .fetch(&key, req.share_session_epoch, named, forgotten, now_ms);
    let (step, evicted) = match step {
        Ok(moved) => moved,
        Err(error) => return Ok(fail(error, session_message(error), lock_ms)),
    };
    let mut answers: BTreeMap<TopicIdPartition, Answer> = BTreeMap::new();
    // Acknowledgements first: what they release may be acquired below.
    let acks: Acks = req
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|p| !p.acknowledgement_batches.is_empty())
                .map(|p| {
                    let batches = p.acknowledgement_batches.iter().map(|b| {
                        (
                            b.first_offset,
                            b.last_offset,
                            b.acknowledge_types.as_slice(),
                        )
                    });
                    let parsed = match unreadable.get(&topic.topic_id) {
                        Some(denied) => Err(denied.clone()),
                        None => parse_acks(batches, renew),
                    };
                    ((topic.topic_id, p.partition_index), parsed)
                })
        })
        .collect();
    let mut released = vec![(key.clone(), step.left.clone())];
    released.extend(evicted);
    let acks = led_acks(broker, acks);
    for (tp, error) in apply_acks(shares, &key, acks, released, &settings).await? {
        answers.entry(tp).or_default().ack_error = error;
    }
    if req.share_session_epoch == FINAL_EPOCH || req.is_renew_ack {
        return Ok(response(answers, lock_ms));
    }
    // Resolved once for every look of the long poll.
    let targets: Vec<(TopicIdPartition, Result<Partition, ApiError>)> = step
        .partitions
        .iter()
        .map(|tp| match unreadable.get(&tp.0) {
            Some(denied) => (*tp, Err(denied.clone())),
            None => (*tp, leader_partition(broker, *tp)),
        })
        .collect();
    for (tp, partition) in &targets {
        if let Err(e) = partition {
            answers.entry(*tp).or_default().error = Some(e.clone());
        }
    }
    for (tp, answer) in answers.iter_mut() {
        let not_leader = |e: &Option<ApiError>| {
            e.as_ref()
                .is_some_and(|e| e.code == ResponseError::NotLeaderOrFollower)
        };
        if not_leader(&answer.error) || not_leader(&answer.ack_error) {
            answer.leader = leader_hint(broker, &ctx.listener, *tp);
        }
    }
    // A partition error is answered at once, as Fetch answers one.
    let any_error = targets.iter().any(|(_, p)| p.is_err());
    let max_records = u32::try_from(req.max_records)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(MAX_RECORDS_DEFAULT);
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(broker.config().fetch_max_bytes);
    // Version 0's per-partition limit; version 1 has none (read as 0).
    let partition_max: BTreeMap<TopicIdPartition, usize> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(|p| {
                let bytes = usize::try_from(p.partition_max_bytes)
                    .ok()
                    .filter(|b| *b > 0)?;
                Some(((t.topic_id, p.partition_index), bytes))
            })
        })
        .collect();
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;
    let mut progress = broker.log().progress();
    let mut released = shares.subscribe();
    let targets = Arc::new(targets);
    loop {
        progress.borrow_and_update();
        released.borrow_and_update();
        let (looking, member) = (targets.clone(), key.1.clone());
        let group = key.0.clone();
        let limits = (max_records, max_bytes, partition_max.clone());
        let (manager, settings) = (shares.clone(), settings.clone());
        let round = crate::blocking::run(move || {
            acquire_round(&manager, (&group, &settings), &member, &looking, limits)
        })
        .await?;
        let got_any = round
            .values()
            .any(|a| a.error.is_some() || !a.acquired.is_empty());
        for (tp, a) in round {
            let answer = answers.entry(tp).or_default();
            answer.error = answer.error.take().or(a.error);
            answer.records = a.records;
            answer.acquired = a.acquired;
        }
        if got_any || any_error || wait.is_zero() || Instant::now() >= deadline {
            break;
        }
        let keys: Vec<SharePartitionKey> = targets
            .iter()
            .map(|(tp, _)| share_key(&key.0, *tp))
            .collect();
        // Look again when the log grows, a record is released, a lock
        // expires or a backoff ends, or the wait is over.
        let wake = shares
            .next_deadline_ms(&keys)
            .map(|at| {
                let in_ms = u64::try_from(at.saturating_sub(shares.now_ms())).unwrap_or(0);
                (Instant::now() + Duration::from_millis(in_ms.max(1))).min(deadline)
            })
            .unwrap_or(deadline);
        tokio::select! {
            _ = progress.changed() => {}
            _ = released.changed() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    count_out(broker, &answers);
    Ok(response(answers, lock_ms))
}

/// Record the bytes and records a share fetch hands its member, per topic,
/// as a fetch's are: the records counted are those acquired.
fn count_out(broker: &Broker, answers: &BTreeMap<TopicIdPartition, Answer>) {
    if !weir_metrics::enabled() {
        return;
    }
    let mut per_topic: BTreeMap<Uuid, (usize, u64)> = BTreeMap::new();
    for ((topic_id, _), a) in answers {
        let sent = per_topic.entry(*topic_id).or_default();
        sent.0 += a.records.as_ref().map_or(0, bytes::Bytes::len);
        sent.1 += a
            .acquired
            .iter()
            .map(|r| u64::try_from(r.last_offset - r.first_offset + 1).unwrap_or(0))
            .sum::<u64>();
    }
    let metrics = weir_metrics::metrics();
    for (topic_id, (bytes, records)) in per_topic {
        if let Some(topic) = broker.topic_by_id(topic_id) {
            metrics.topic_out(&topic.meta.name, bytes, records);
        }
    }
}

type Limits = (u32, usize, BTreeMap<TopicIdPartition, usize>);

/// One look at every partition of the session: acquire what each holds, in
/// order, until the records or bytes run out.
fn acquire_round(
    shares: &ShareManager,
    (group, settings): (&Arc<str>, &ShareGroupSettings),
    member: &Arc<str>,
    targets: &[(TopicIdPartition, Result<Partition, ApiError>)],
    (mut records_left, mut bytes_left, partition_max): Limits,
) -> BTreeMap<TopicIdPartition, Answer> {
    let mut out = BTreeMap::new();
    for (tp, partition) in targets {
        let Ok(partition) = partition else {
            continue;
        };
        if records_left == 0 || bytes_left == 0 {
            break;
        }
        let limit = partition_max
            .get(tp)
            .copied()
            .unwrap_or(bytes_left)
            .min(bytes_left);
        let got = shares.acquire(
            &share_key(group, *tp),
            partition,
            member,
            (records_left, limit),
            settings,
        );
        let answer: &mut Answer = out.entry(*tp).or_default();
        match got {
            Ok(got) => {
                let count: i64 = got
                    .acquired
                    .iter()
                    .map(|r| r.last_offset - r.first_offset + 1)
                    .sum();
                records_left =
                    records_left.saturating_sub(u32::try_from(count).unwrap_or(u32::MAX));
                bytes_left = bytes_left.saturating_sub(got.records.len());
                answer.acquired = got
                    .acquired
                    .iter()
                    .map(|r| {
                        AcquiredRecords::default()
                            .with_first_offset(r.first_offset)
                            .with_last_offset(r.last_offset)
                            .with_delivery_count(
                                i16::try_from(r.delivery_count).unwrap_or(i16::MAX),
                            )
                    })
                    .collect();
                answer.records = (!got.records.is_empty()).then_some(got.records);
            }
            Err(e) => answer.error = Some(e),
        }
    }
    out
}

/// The session a request names by group and member; `None` when either
/// is missing or empty.
pub(crate) fn session_key(group: Option<&str>, member: Option<&str>) -> Option<SessionKey> {
    match (group, member) {
        (Some(g), Some(m)) if !g.is_empty() && !m.is_empty() => Some((Arc::from(g), Arc::from(m))),
        _ => None,
    }
}

pub(crate) fn share_key(
    group: &Arc<str>,
    (topic_id, partition): TopicIdPartition,
) -> SharePartitionKey {
    SharePartitionKey {
        group: group.clone(),
        topic_id,
        partition,
    }
}

/// The acknowledgements of a request, by partition, as parsed.
pub(crate) type Acks = Vec<(TopicIdPartition, Result<Vec<AckBatch>, ApiError>)>;

/// Whether a request of `version` may renew locks: ShareFetch and
/// ShareAcknowledge from version 2 (KIP-1222).
pub(crate) fn renew_allowed(version: i16) -> bool {
    version >= 2
}

/// The acknowledgement batches (first offset, last offset, types) a
/// request carries for one partition, checked; Renew only when `renew`.
pub(crate) fn parse_acks<'a>(
    batches: impl Iterator<Item = (i64, i64, &'a [i8])>,
    renew: bool,
) -> Result<Vec<AckBatch>, ApiError> {
    batches
        .map(|(first, last, types)| ack_batch(first, last, types, renew))
        .collect()
}

/// Apply session `key`'s acknowledgements, then release what the members
/// of `released` sessions held in their partitions (a closed, replaced or
/// evicted session, or partitions it forgot), on a blocking thread; then
/// wait until the new state is durable. One answer per partition
/// acknowledged: `Some` error when its acknowledgements were refused or
/// could not be made durable.
pub(crate) async fn apply_acks(
    shares: &Arc<ShareManager>,
    key: &SessionKey,
    acks: Acks,
    released: Vec<Evicted>,
    settings: &Arc<ShareGroupSettings>,
) -> Result<Vec<(TopicIdPartition, Option<ApiError>)>, HandlerError> {
    let (manager, key, settings) = (shares.clone(), key.clone(), settings.clone());
    let applied = crate::blocking::run(move || {
        let out: Vec<_> = acks
            .into_iter()
            .map(|(tp, parsed)| {
                let done = parsed.and_then(|batches| {
                    manager.acknowledge(&share_key(&key.0, tp), &key.1, &batches, &settings)
                });
                (tp, done)
            })
            .collect();
        for ((group, member), partitions) in released {
            manager.release(&group, &member, &partitions);
        }
        out
    })
    .await?;
    let mut out = Vec::with_capacity(applied.len());
    for (tp, done) in applied {
        let error = match done {
            Ok(Some(durable)) => durable.wait().await.err().map(not_durable),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        out.push((tp, error));
    }
    Ok(out)
}

/// The answer to an acknowledgement whose state was not made durable: a
/// write the share coordinator fenced means a newer leader took the
/// share-partition up (NOT_LEADER_OR_FOLLOWER: the member acknowledges
/// there); anything else is KAFKA_STORAGE_ERROR.
fn not_durable(e: ApiError) -> ApiError {
    if e.code == ResponseError::FencedLeaderEpoch {
        ApiError::new(
            ResponseError::NotLeaderOrFollower,
            format!("this broker no longer leads the partition: {}", e.message),
        )
    } else {
        ApiError::new(
            ResponseError::KafkaStorageError,
            format!(
                "the acknowledgement could not be made durable: {}",
                e.message
            ),
        )
    }
}

/// One acknowledgement batch of a request, checked: its types must be
/// ones the request's version knows (0 gap, 1 accept, 2 release, 3 reject,
/// and from version 2, 4 renew).
fn ack_batch(first: i64, last: i64, types: &[i8], renew: bool) -> Result<AckBatch, ApiError> {
    let types: Option<Vec<AckType>> = types
        .iter()
        .map(|t| AckType::from_code(*t).filter(|t| renew || *t != AckType::Renew))
        .collect();
    let types = types.filter(|t| !t.is_empty()).ok_or_else(|| {
        let message = if renew {
            "acknowledge types are 0 (gap), 1 (accept), 2 (release), 3 (reject) or 4 (renew)"
        } else {
            "acknowledge types are 0 (gap), 1 (accept), 2 (release) or 3 (reject); \
             4 (renew) needs version 2"
        };
        ApiError::new(ResponseError::InvalidRequest, message)
    })?;
    Ok(AckBatch {
        first_offset: first,
        last_offset: last,
        types,
    })
}

pub(crate) fn session_message(e: ResponseError) -> &'static str {
    match e {
        ResponseError::ShareSessionNotFound => {
            "this broker has no share session for the member: open one with epoch 0"
        }
        ResponseError::InvalidShareSessionEpoch => {
            "the share session epoch is not the session's current one"
        }
        ResponseError::ShareSessionLimitReached => {
            "this broker holds group.share.max.share.sessions sessions, none idle"
        }
        ResponseError::InvalidRequest => {
            "a share session holds at most 1000 partitions: forget some first"
        }
        _ => "the share session cannot be used",
    }
}

/// The partition `tp` when this broker leads it: a topic, not a view.
/// The topics among `ids` the client may not read (READ on the topic),
/// with the error their partitions are answered; each checked once. An
/// unknown id is left to the lookup that follows.
pub(crate) fn unreadable_topics(
    broker: &Broker,
    ctx: &RequestContext,
    ids: impl Iterator<Item = Uuid>,
) -> HashMap<Uuid, ApiError> {
    let mut checked = HashSet::new();
    let mut unreadable = HashMap::new();
    for id in ids {
        if !checked.insert(id) {
            continue;
        }
        if let Some(state) = broker.topic_by_id(id)
            && !broker.allowed_on_topic(ctx, AclOperation::Read, &state.meta.name)
        {
            let denied = crate::acls::topic_denied(ctx, AclOperation::Read, &state.meta.name);
            unreadable.insert(id, denied);
        }
    }
    unreadable
}

pub(crate) fn leader_partition(
    broker: &Broker,
    (topic_id, index): TopicIdPartition,
) -> Result<Partition, ApiError> {
    let state = broker.topic_by_id(topic_id).ok_or_else(|| {
        ApiError::new(
            ResponseError::UnknownTopicId,
            format!("no topic has id {topic_id}"),
        )
    })?;
    if let Some(view) = &state.view {
        return Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!(
                "{} is a view of {}: share groups read topics, not views",
                state.meta.name, view.source
            ),
        ));
    }
    let id = PartitionId {
        topic_id,
        partition: index,
    };
    if let Leadership::NotLeader { leader, .. } = broker.replicas.leadership(id) {
        return Err(ApiError::new(
            ResponseError::NotLeaderOrFollower,
            format!("this broker does not lead the partition; broker {leader} does"),
        ));
    }
    crate::topics::local_partition(&state, index)
}

fn response(answers: BTreeMap<TopicIdPartition, Answer>, lock_ms: i32) -> ShareFetchResponse {
    let mut topics: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    let endpoints = LeaderHint::endpoints(answers.values().filter_map(|a| a.leader.as_ref()));
    for ((topic_id, index), a) in answers {
        let text = |e: &ApiError| Some(StrBytes::from_string(e.message.clone()));
        let (leader_id, leader_epoch) = LeaderHint::id_epoch(a.leader.as_ref());
        let data = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(a.error.as_ref().map_or(0, ApiError::code))
            .with_error_message(a.error.as_ref().and_then(text))
            .with_acknowledge_error_code(a.ack_error.as_ref().map_or(0, ApiError::code))
            .with_acknowledge_error_message(a.ack_error.as_ref().and_then(text))
            .with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(leader_id)
                    .with_leader_epoch(leader_epoch),
            )
            .with_records(Some(a.records.unwrap_or_default()))
            .with_acquired_records(a.acquired);
        topics.entry(topic_id).or_default().push(data);
    }
    ShareFetchResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    ShareFetchableTopicResponse::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_node_endpoints(
            endpoints
                .into_iter()
                .map(|(id, host, port)| {
                    NodeEndpoint::default()
                        .with_node_id(id.into())
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_fenced_by_a_newer_leader_is_answered_not_leader() {
        let fenced = ApiError::new(ResponseError::FencedLeaderEpoch, "epoch 4 read it");
        assert_eq!(not_durable(fenced).code, ResponseError::NotLeaderOrFollower);
        let failed = ApiError::new(ResponseError::KafkaStorageError, "disk");
        assert_eq!(not_durable(failed).code, ResponseError::KafkaStorageError);
        let moving = ApiError::new(ResponseError::CoordinatorNotAvailable, "moving");
        assert_eq!(not_durable(moving).code, ResponseError::KafkaStorageError);
    }
}
