//! DescribeShareGroupOffsets, AlterShareGroupOffsets and
//! DeleteShareGroupOffsets (KIP-932's admin APIs, 90–92, what
//! `kafka-share-groups.sh --describe / --reset-offsets / --delete-offsets`
//! sends): a share group's start offset per partition, set, or forgotten.
//!
//! Sent to the group's coordinator. The share-partitions themselves live
//! with their partitions' leaders (`crate::share`). Altering and deleting
//! need the group empty (NON_EMPTY_GROUP otherwise), as in Kafka; they are
//! answered once the new state is durable. On a cluster the coordinator
//! reaches the share-partitions on other brokers itself: a describe of a
//! partition led elsewhere reads its start offset from its share
//! coordinator; an alter of one is forwarded to its leader (the request
//! again, marked with [`FORWARDED_TAG`]), tried again while the leadership
//! moves; a delete (and DeleteGroups of a share group) is forwarded to
//! every broker, each dropping the share-partitions it has taken up and
//! tombstoning the snapshots its share coordinator keeps.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_share_group_offsets_request::{
    AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
};
use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic;
use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsResponse, DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::time::{Duration, Instant};
use uuid::Uuid;
use weir_auth::{AclOperation, ResourceType};
use weir_storage::PartitionId;

use super::share_fetch::{leader_partition, share_key};
use crate::error::ApiError;
use crate::replica::Leadership;
use crate::{Broker, HandlerError, RequestContext};

fn text(s: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.into()))
}

/// The share group `group`, which must exist; with `empty`, it must also
/// have no member.
fn check_group(broker: &Broker, group: &str, empty: bool) -> Result<(), ApiError> {
    let g = broker.groups().share_group(group).map_err(|e| {
        ApiError::new(
            e,
            if e == ResponseError::GroupIdNotFound {
                format!("no share group has the id {group}")
            } else {
                format!("share group {group} cannot be used here")
            },
        )
    })?;
    if empty && !g.members.is_empty() {
        return Err(ApiError::new(
            ResponseError::NonEmptyGroup,
            format!(
                "share group {group} has {} members: its offsets change only while it is empty",
                g.members.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeShareGroupOffsetsRequest,
) -> Result<DescribeShareGroupOffsetsResponse, HandlerError> {
    let mut groups = Vec::new();
    for g in super::first_of_each(req.groups, |g| g.group_id.clone()) {
        let id = g.group_id.0.to_string();
        let out = DescribeShareGroupOffsetsResponseGroup::default().with_group_id(g.group_id);
        let checked = admin_denied(broker, ctx, &id, (false, AclOperation::Describe))
            .map_or_else(|| check_group(broker, &id, false), Err);
        if let Err(e) = checked {
            groups.push(
                out.with_error_code(e.code())
                    .with_error_message(text(e.message)),
            );
            continue;
        }
        let shares = broker.shares();
        let mut remote: std::collections::HashSet<(Uuid, i32)> = Default::default();
        let mut known: BTreeMap<(Uuid, i32), i64> = shares
            .group_start_offsets(&id)
            .into_iter()
            .map(|(k, start)| ((k.topic_id, k.partition), start))
            .collect();
        // On a cluster, the rest from their share coordinators: the
        // partitions asked for, or those of the topics the group reads.
        let elsewhere: Vec<(Uuid, i32)> = match &g.topics {
            _ if !broker.metadata().replicated() => Vec::new(),
            Some(asked) => asked
                .iter()
                .filter_map(|t| {
                    let state = broker.topic(t.topic_name.0.as_str())?;
                    Some(t.partitions.iter().map(move |p| (state.meta.id, *p)))
                })
                .flatten()
                .collect(),
            None => broker
                .groups()
                .share_group(&id)
                .map(|g| {
                    g.topics
                        .values()
                        .flat_map(|shape| (0..shape.partitions).map(move |p| (shape.id, p)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let elsewhere: Vec<(Uuid, i32)> = elsewhere
            .into_iter()
            .filter(|tp| !known.contains_key(tp) && leader_partition(broker, *tp).is_err())
            .collect();
        if !elsewhere.is_empty() {
            let (b, group) = (broker.clone(), Arc::<str>::from(id.as_str()));
            let looked = crate::blocking::run(move || {
                elsewhere
                    .into_iter()
                    .filter_map(|tp| {
                        let key = share_key(&group, tp);
                        match crate::share::remote::look(&b, &key) {
                            Ok(found) => Some((tp, found.map(|s| s.start_offset))),
                            Err(e) => {
                                tracing::debug!(error = %e.message, "no start offset from the share coordinator");
                                None
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            // Asked for and not found: not consumed yet (-1), as here.
            remote.extend(looked.iter().map(|(tp, _)| *tp));
            known.extend(
                looked
                    .into_iter()
                    .filter_map(|(tp, start)| Some((tp, start?))),
            );
        }
        let topics = match g.topics {
            // Every partition the group has state for.
            None => {
                let mut by_topic: BTreeMap<Uuid, Vec<DescribeShareGroupOffsetsResponsePartition>> =
                    BTreeMap::new();
                for ((topic_id, partition), start) in &known {
                    by_topic.entry(*topic_id).or_default().push(
                        DescribeShareGroupOffsetsResponsePartition::default()
                            .with_partition_index(*partition)
                            .with_start_offset(*start)
                            .with_leader_epoch(-1),
                    );
                }
                by_topic
                    .into_iter()
                    .filter_map(|(topic_id, partitions)| {
                        let topic = broker.topic_by_id(topic_id)?;
                        // Only the topics the client may describe.
                        broker
                            .allowed_quietly(
                                ctx,
                                AclOperation::Describe,
                                ResourceType::Topic,
                                &topic.meta.name,
                            )
                            .then_some(())?;
                        Some(
                            DescribeShareGroupOffsetsResponseTopic::default()
                                .with_topic_name(TopicName(StrBytes::from_string(
                                    topic.meta.name.clone(),
                                )))
                                .with_topic_id(topic_id)
                                .with_partitions(partitions),
                        )
                    })
                    .collect()
            }
            Some(asked) => asked
                .into_iter()
                .map(|t| {
                    let topic = broker.topic(t.topic_name.0.as_str());
                    let topic_id = topic.as_ref().map_or(Uuid::nil(), |s| s.meta.id);
                    let describable = broker.allowed_on_topic(
                        ctx,
                        AclOperation::Describe,
                        t.topic_name.0.as_str(),
                    );
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let out = DescribeShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(*p)
                                .with_leader_epoch(-1);
                            let checked = match &topic {
                                _ if !describable => Err(crate::acls::topic_denied(
                                    ctx,
                                    AclOperation::Describe,
                                    t.topic_name.0.as_str(),
                                )),
                                None => Err(ApiError::unknown_topic(t.topic_name.0.as_str())),
                                Some(_) if remote.contains(&(topic_id, *p)) => Ok(()),
                                Some(_) => leader_partition(broker, (topic_id, *p)).map(|_| ()),
                            };
                            match checked {
                                // -1: the group has not consumed it.
                                Ok(()) => out.with_start_offset(
                                    known.get(&(topic_id, *p)).copied().unwrap_or(-1),
                                ),
                                Err(e) => out
                                    .with_start_offset(-1)
                                    .with_error_code(e.code())
                                    .with_error_message(text(e.message)),
                            }
                        })
                        .collect();
                    DescribeShareGroupOffsetsResponseTopic::default()
                        .with_topic_name(t.topic_name)
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        };
        groups.push(out.with_topics(topics));
    }
    Ok(DescribeShareGroupOffsetsResponse::default().with_groups(groups))
}

/// Why a client may not run a share-group admin request on `group`: a
/// request another broker forwarded needs CLUSTER_ACTION, a client's
/// `operation` on the group.
fn admin_denied(
    broker: &Broker,
    ctx: &RequestContext,
    group: &str,
    (forwarded, operation): (bool, AclOperation),
) -> Option<ApiError> {
    if forwarded {
        return (!broker.allowed_on_cluster(ctx, AclOperation::ClusterAction))
            .then(|| crate::acls::cluster_denied(ctx, AclOperation::ClusterAction));
    }
    (!broker.allowed_on_group(ctx, operation, group)).then(|| {
        ApiError::new(
            ResponseError::GroupAuthorizationFailed,
            format!(
                "{} may not {operation} share group '{group}'",
                ctx.principal
            ),
        )
    })
}

/// Weir's own tagged field (outside Kafka's numbers) on an
/// AlterShareGroupOffsets or DeleteShareGroupOffsets that a cluster's
/// group coordinator forwards to another broker, after checking the group
/// itself: the receiver applies it to the share-partitions it holds. Its
/// value is one byte; on a delete, [`WHOLE_GROUP`] forgets every topic of
/// the group (DeleteGroups), 0 the topics named.
pub(crate) const FORWARDED_TAG: i32 = 0x5746;
pub(crate) const WHOLE_GROUP: u8 = 1;
/// How long a forwarded change is tried against leaders that move.
const FORWARD_FOR: Duration = Duration::from_secs(15);
const FORWARD_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const FORWARD_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The version of the forwarded requests (both APIs have one).
const FORWARD_VERSION: i16 = 0;

/// The start offset of a forwarded alter that starts a share-partition
/// where `share.auto.offset.reset` says, unless it has started already
/// (the coordinator assigned it: ShareGroupHeartbeat).
const START_IF_NEW: i64 = -1;

/// Ask the leaders of `tps`, share-partitions of `group` led on other
/// brokers, to start each that has not started, where
/// `share.auto.offset.reset` says: one forwarded alter per leader, at once,
/// one try. What fails is logged; such a share-partition starts at its
/// leader's first fetch.
pub(crate) async fn start_on_leaders(broker: &Arc<Broker>, group: &str, tps: Vec<(Uuid, i32)>) {
    let mut by_leader: BTreeMap<i32, Vec<ResetItem>> = BTreeMap::new();
    for (topic_id, index) in tps {
        let id = PartitionId {
            topic_id,
            partition: index,
        };
        let (Leadership::NotLeader { leader, .. }, Some(topic)) =
            (broker.replicas.leadership(id), broker.topic_by_id(topic_id))
        else {
            continue;
        };
        if leader >= 0 {
            let name = TopicName(StrBytes::from_string(topic.meta.name.clone()));
            by_leader
                .entry(leader)
                .or_default()
                .push((name, topic_id, index, START_IF_NEW));
        }
    }
    let mut sends = tokio::task::JoinSet::new();
    for (node, items) in by_leader {
        let (b, g) = (broker.clone(), group.to_string());
        sends.spawn(async move { forward_reset(&b, &g, node, items).await });
    }
    while let Some(sent) = sends.join_next().await {
        for (item, outcome) in sent.unwrap_or_default() {
            if let Err(e) = outcome {
                tracing::debug!(group, partition = item.2, error = %e.message,
                    "a share-partition led elsewhere did not start at its assignment");
            }
        }
    }
}

/// The scope byte of a forwarded request, `None` when it comes from a client.
fn forwarded(tags: &BTreeMap<i32, bytes::Bytes>) -> Option<u8> {
    tags.get(&FORWARDED_TAG)
        .map(|v| v.first().copied().unwrap_or(0))
}

fn forward_tag(scope: u8) -> BTreeMap<i32, bytes::Bytes> {
    BTreeMap::from([(FORWARDED_TAG, bytes::Bytes::copy_from_slice(&[scope]))])
}

/// A share-partition to start afresh: its topic's name and id, its index,
/// and the new start offset.
type ResetItem = (TopicName, Uuid, i32, i64);
/// A topic of an AlterShareGroupOffsets: its name, id, and partitions, each
/// with the error it is answered at once, if any.
type AskedTopic = (TopicName, Uuid, Vec<(i32, Option<ApiError>)>);

pub(crate) async fn alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterShareGroupOffsetsRequest,
) -> Result<AlterShareGroupOffsetsResponse, HandlerError> {
    let group = req.group_id.0.to_string();
    let forwarded = forwarded(&req.unknown_tagged_fields).is_some();
    let checked = match admin_denied(broker, ctx, &group, (forwarded, AclOperation::Read)) {
        Some(denied) => Err(denied),
        None if forwarded => Ok(()),
        None => check_group(broker, &group, true),
    };
    if let Err(e) = checked {
        return Ok(AlterShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(text(e.message)));
    }
    let group: Arc<str> = Arc::from(group.as_str());
    // Each partition asked for once, in order; those of unknown topics are
    // answered at once.
    let mut asked: Vec<AskedTopic> = Vec::new();
    let mut items: Vec<ResetItem> = Vec::new();
    for t in super::first_of_each(req.topics, |t| t.topic_name.clone()) {
        let readable =
            forwarded || broker.allowed_on_topic(ctx, AclOperation::Read, t.topic_name.0.as_str());
        let topic = broker.topic(t.topic_name.0.as_str()).filter(|_| readable);
        let topic_id = topic.as_ref().map(|s| s.meta.id);
        let count = topic.as_ref().map_or(0, |s| s.meta.partitions);
        let mut partitions = Vec::new();
        for p in super::first_of_each(t.partitions, |p| p.partition_index) {
            let index = p.partition_index;
            match topic_id {
                Some(id) if (0..count).contains(&index) => {
                    items.push((t.topic_name.clone(), id, index, p.start_offset));
                    partitions.push((index, None));
                }
                Some(_) => {
                    let e = ApiError::unknown_partition(t.topic_name.0.as_str(), index);
                    partitions.push((index, Some(e)));
                }
                None if !readable => {
                    let name = t.topic_name.0.as_str();
                    let e = crate::acls::topic_denied(ctx, AclOperation::Read, name);
                    partitions.push((index, Some(e)));
                }
                None => {
                    let e = ApiError::unknown_topic(t.topic_name.0.as_str());
                    partitions.push((index, Some(e)));
                }
            }
        }
        asked.push((t.topic_name, topic_id.unwrap_or(Uuid::nil()), partitions));
    }
    // A forwarded change, or any on a single node, applies here; a
    // cluster's coordinator sends each partition to its leader.
    let done = if forwarded || !broker.metadata().replicated() {
        let mut done = HashMap::new();
        let mut starts = Vec::new();
        for (_, topic_id, index, offset) in items {
            if forwarded && offset == START_IF_NEW {
                starts.push((topic_id, index));
                continue;
            }
            let r = reset(broker, &group, (topic_id, index), offset).await?;
            done.insert((topic_id, index), r);
        }
        super::share_group_heartbeat::start_here(broker, &group, starts).await?;
        done
    } else {
        reset_on_leaders(broker, &group, items).await?
    };
    let mut responses = Vec::new();
    for (name, topic_id, partitions) in asked {
        let partitions = partitions
            .into_iter()
            .map(|(index, early)| {
                let out =
                    AlterShareGroupOffsetsResponsePartition::default().with_partition_index(index);
                let outcome = match early {
                    Some(e) => Err(e),
                    None => done.get(&(topic_id, index)).cloned().unwrap_or(Ok(())),
                };
                match outcome {
                    Ok(()) => out,
                    Err(e) => out
                        .with_error_code(e.code())
                        .with_error_message(text(e.message)),
                }
            })
            .collect();
        responses.push(
            AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_name(name)
                .with_topic_id(topic_id)
                .with_partitions(partitions),
        );
    }
    if !responses.is_empty() {
        tracing::info!(group = %group, topics = responses.len(), forwarded,
            "altered share group offsets");
    }
    Ok(AlterShareGroupOffsetsResponse::default().with_responses(responses))
}

/// Start each share-partition of `items` afresh at its leader: here for
/// those led here, else with an AlterShareGroupOffsets forwarded to the
/// leader. A leader that moves, or cannot be reached, is tried again for
/// up to [`FORWARD_FOR`]; a deposed leader's late write is fenced at the
/// share coordinator, so the newest leader's reset is the one that holds.
async fn reset_on_leaders(
    broker: &Arc<Broker>,
    group: &Arc<str>,
    mut items: Vec<ResetItem>,
) -> Result<HashMap<(Uuid, i32), Result<(), ApiError>>, HandlerError> {
    let deadline = Instant::now() + FORWARD_FOR;
    let mut backoff = FORWARD_BACKOFF_FIRST;
    let mut done = HashMap::new();
    loop {
        let mut again: Vec<(ResetItem, ApiError)> = Vec::new();
        let mut by_leader: BTreeMap<i32, Vec<ResetItem>> = BTreeMap::new();
        for item in items {
            let id = PartitionId {
                topic_id: item.1,
                partition: item.2,
            };
            match broker.replicas.leadership(id) {
                Leadership::NotLeader { leader, .. } if leader >= 0 => {
                    by_leader.entry(leader).or_default().push(item);
                }
                Leadership::NotLeader { .. } => {
                    let e = ApiError::new(
                        ResponseError::LeaderNotAvailable,
                        "the partition has no leader now",
                    );
                    again.push((item, e));
                }
                Leadership::Leader { .. } => {
                    let tp = (item.1, item.2);
                    match reset(broker, group, tp, item.3).await? {
                        Err(e) if moving(e.code) => again.push((item, e)),
                        outcome => {
                            done.insert(tp, outcome);
                        }
                    }
                }
            }
        }
        for (node, items) in by_leader {
            for (item, outcome) in forward_reset(broker, group, node, items).await {
                match outcome {
                    Err(e) if moving(e.code) => again.push((item, e)),
                    outcome => {
                        done.insert((item.1, item.2), outcome);
                    }
                }
            }
        }
        if again.is_empty() || Instant::now() + backoff >= deadline {
            for (item, e) in again {
                done.insert((item.1, item.2), Err(e));
            }
            return Ok(done);
        }
        tracing::debug!(group = %group, partitions = again.len(),
            "share-partition leaders moving; resetting them again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(FORWARD_BACKOFF_MAX);
        items = again.into_iter().map(|(item, _)| item).collect();
    }
}

/// An error that a moving leader (or share coordinator) answers: the
/// change is tried again where the partition is led next.
fn moving(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::FencedLeaderEpoch
            | ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
    )
}

/// Forward the resets of `items` to broker `node`, their leader.
async fn forward_reset(
    broker: &Broker,
    group: &str,
    node: i32,
    items: Vec<ResetItem>,
) -> Vec<(ResetItem, Result<(), ApiError>)> {
    let mut topics: BTreeMap<TopicName, Vec<AlterShareGroupOffsetsRequestPartition>> =
        BTreeMap::new();
    for (name, _, index, offset) in &items {
        topics.entry(name.clone()).or_default().push(
            AlterShareGroupOffsetsRequestPartition::default()
                .with_partition_index(*index)
                .with_start_offset(*offset),
        );
    }
    let request = AlterShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    AlterShareGroupOffsetsRequestTopic::default()
                        .with_topic_name(name)
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_unknown_tagged_fields(forward_tag(0));
    let answer = match broker.peers.call(node, &request, FORWARD_VERSION).await {
        Ok(answer) => answer,
        Err(e) => {
            let e = ApiError::new(
                ResponseError::LeaderNotAvailable,
                format!("the partition's leader, broker {node}, cannot be reached: {e}"),
            );
            return items.into_iter().map(|i| (i, Err(e.clone()))).collect();
        }
    };
    let whole = (answer.error_code != 0).then(|| {
        ApiError::new(
            code_of(answer.error_code),
            answer.error_message.as_deref().unwrap_or("").to_string(),
        )
    });
    let mut codes: HashMap<(TopicName, i32), ApiError> = HashMap::new();
    let mut answered = std::collections::HashSet::new();
    for t in &answer.responses {
        for p in &t.partitions {
            answered.insert((t.topic_name.clone(), p.partition_index));
            if p.error_code != 0 {
                let message = p.error_message.as_deref().unwrap_or("").to_string();
                codes.insert(
                    (t.topic_name.clone(), p.partition_index),
                    ApiError::new(code_of(p.error_code), message),
                );
            }
        }
    }
    items
        .into_iter()
        .map(|item| {
            let key = (item.0.clone(), item.2);
            let outcome = match (&whole, codes.remove(&key)) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(e)) => Err(e),
                (None, None) if answered.contains(&key) => Ok(()),
                (None, None) => Err(ApiError::new(
                    ResponseError::LeaderNotAvailable,
                    format!("broker {node} did not answer for the partition"),
                )),
            };
            (item, outcome)
        })
        .collect()
}

fn code_of(code: i16) -> ResponseError {
    ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError)
}

/// Reset one share-partition to `offset`, which must be within the
/// partition's log-start offset and high watermark.
async fn reset(
    broker: &Broker,
    group: &Arc<str>,
    tp: (Uuid, i32),
    offset: i64,
) -> Result<Result<(), ApiError>, HandlerError> {
    let partition = match leader_partition(broker, tp) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let offsets = partition.offsets();
    if !(offsets.log_start..=offsets.high_watermark).contains(&offset) {
        return Ok(Err(ApiError::new(
            ResponseError::OffsetOutOfRange,
            format!(
                "start offset {offset} is outside the partition's {}..={}",
                offsets.log_start, offsets.high_watermark
            ),
        )));
    }
    let (shares, key) = (broker.shares().clone(), share_key(group, tp));
    let epoch = partition.leader_epoch();
    let done = crate::blocking::run(move || shares.reset(&key, epoch, offset)).await?;
    Ok(match done {
        Ok(Some(durable)) => durable.wait().await.map_err(|e| {
            ApiError::new(
                ResponseError::KafkaStorageError,
                format!("the new start offset could not be made durable: {e}"),
            )
        }),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    })
}

pub(crate) async fn delete(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteShareGroupOffsetsRequest,
) -> Result<DeleteShareGroupOffsetsResponse, HandlerError> {
    let group = req.group_id.0.to_string();
    let scope = forwarded(&req.unknown_tagged_fields);
    if let Some(e) = admin_denied(broker, ctx, &group, (scope.is_some(), AclOperation::Delete)) {
        return Ok(DeleteShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(text(e.message)));
    }
    if scope == Some(WHOLE_GROUP) {
        // DeleteGroups on a cluster: the whole group, here.
        let outcome = forget_here(broker, &group, None).await?;
        let out = DeleteShareGroupOffsetsResponse::default();
        return Ok(match outcome {
            Ok(()) => out,
            Err(e) => out
                .with_error_code(e.code())
                .with_error_message(text(e.message)),
        });
    }
    if scope.is_none()
        && let Err(e) = check_group(broker, &group, true)
    {
        return Ok(DeleteShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(text(e.message)));
    }
    let mut responses = Vec::new();
    for t in super::first_of_each(req.topics, |t| t.topic_name.clone()) {
        let out =
            DeleteShareGroupOffsetsResponseTopic::default().with_topic_name(t.topic_name.clone());
        if scope.is_none()
            && !broker.allowed_on_topic(ctx, AclOperation::Read, t.topic_name.0.as_str())
        {
            let e = crate::acls::topic_denied(ctx, AclOperation::Read, t.topic_name.0.as_str());
            responses.push(
                out.with_error_code(e.code())
                    .with_error_message(text(e.message)),
            );
            continue;
        }
        let Some(topic) = broker.topic(t.topic_name.0.as_str()) else {
            let e = ApiError::unknown_topic(t.topic_name.0.as_str());
            responses.push(
                out.with_error_code(e.code())
                    .with_error_message(text(e.message)),
            );
            continue;
        };
        let topic_id = topic.meta.id;
        let outcome = if scope.is_some() {
            forget_here(broker, &group, Some(topic_id)).await?
        } else {
            forget_everywhere(broker, &group, Some((&t.topic_name, topic_id))).await?
        };
        let out = out.with_topic_id(topic_id);
        responses.push(match outcome {
            Ok(()) => out,
            Err(e) => out
                .with_error_code(e.code())
                .with_error_message(text(e.message)),
        });
    }
    if !responses.is_empty() {
        tracing::info!(
            group,
            topics = responses.len(),
            forwarded = scope.is_some(),
            "deleted share group offsets"
        );
    }
    Ok(DeleteShareGroupOffsetsResponse::default().with_responses(responses))
}

/// Forget `group`'s share-partitions (of `topic` only, when given) on
/// every broker: here, and on a cluster with a DeleteShareGroupOffsets
/// forwarded to every other broker not fenced. Each drops those it has
/// taken up and writes their tombstones, and as a share coordinator
/// tombstones the snapshots it keeps, so the state is gone wherever the
/// partitions are led next. Answered once every broker has it durable.
pub(crate) async fn forget_everywhere(
    broker: &Arc<Broker>,
    group: &str,
    topic: Option<(&TopicName, Uuid)>,
) -> Result<Result<(), ApiError>, HandlerError> {
    let mut outcome = forget_here(broker, group, topic.map(|(_, id)| id)).await?;
    if !broker.metadata().replicated() {
        return Ok(outcome);
    }
    let me = broker.config().node_id;
    let others: Vec<i32> = broker
        .metadata()
        .brokers()
        .into_iter()
        .filter(|b| b.id != me && !b.fenced)
        .map(|b| b.id)
        .collect();
    let request = DeleteShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(
            topic
                .map(|(name, _)| {
                    vec![
                        DeleteShareGroupOffsetsRequestTopic::default()
                            .with_topic_name(name.clone()),
                    ]
                })
                .unwrap_or_default(),
        )
        .with_unknown_tagged_fields(forward_tag(if topic.is_some() { 0 } else { WHOLE_GROUP }));
    let mut sends = tokio::task::JoinSet::new();
    for node in others {
        let (b, request) = (broker.clone(), request.clone());
        sends.spawn(async move {
            let answer = b.peers.call(node, &request, FORWARD_VERSION).await;
            (node, answer)
        });
    }
    while let Some(sent) = sends.join_next().await {
        let failed = match sent {
            Ok((_, Ok(answer))) => {
                let codes = std::iter::once((answer.error_code, answer.error_message.clone()))
                    .chain(
                        answer
                            .responses
                            .iter()
                            .map(|t| (t.error_code, t.error_message.clone())),
                    );
                codes
                    .filter(|(code, _)| *code != 0)
                    .map(|(code, m)| {
                        ApiError::new(code_of(code), m.as_deref().unwrap_or("").to_string())
                    })
                    .next()
            }
            Ok((node, Err(e))) => Some(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                format!("broker {node} cannot be reached to forget the share group's state: {e}"),
            )),
            Err(e) => Some(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                format!("forgetting the share group's state was cut short: {e}"),
            )),
        };
        if let Some(e) = failed
            && outcome.is_ok()
        {
            outcome = Err(e);
        }
    }
    Ok(outcome)
}

/// Forget `group`'s share-partitions (of `topic` only) at this broker:
/// those taken up here, and the snapshots its share coordinator keeps.
/// Answered once their tombstones are durable.
async fn forget_here(
    broker: &Broker,
    group: &str,
    topic: Option<Uuid>,
) -> Result<Result<(), ApiError>, HandlerError> {
    let (shares, g) = (broker.shares().clone(), group.to_string());
    let now_ms = shares.now_ms();
    let (waits, kept) = crate::blocking::run(move || {
        let waits = shares.forget_of(&g, topic);
        let kept = shares.coordinator().forget(&g, topic, now_ms);
        (waits, kept)
    })
    .await?;
    let storage = |e: String| {
        ApiError::new(
            ResponseError::KafkaStorageError,
            format!("the share group's state is not durably gone: {e}"),
        )
    };
    for wait in waits {
        if let Err(e) = wait.wait().await {
            return Ok(Err(storage(e.to_string())));
        }
    }
    let kept = match kept {
        Ok(kept) => kept,
        Err(e) => return Ok(Err(storage(e.message))),
    };
    for wait in kept {
        if let Err(e) = wait.wait().await {
            return Ok(Err(storage(e.to_string())));
        }
    }
    Ok(Ok(()))
}
