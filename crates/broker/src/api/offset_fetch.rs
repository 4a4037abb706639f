//! OffsetFetch: a group's committed offsets, for the partitions asked or
//! all of them; v8+ asks for several groups at once.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use std::collections::{HashMap, HashSet};

use kafka_protocol::ResponseError;
use weir_auth::{AclOperation, ResourceType};

use crate::group::Committed;
use crate::{Broker, HandlerError, RequestContext};

/// First version asking for several groups.
const MULTI_GROUP_VERSION: i16 = 8;
/// First version carrying the committed leader epoch.
const LEADER_EPOCH_VERSION: i16 = 5;

/// One partition's answer: (topic, partition, committed offset or none).
type Found = (String, i32, Option<Committed>);
/// One topic's answers: the topic and (partition, committed offset or none).
type TopicFound = (String, Vec<(i32, Option<Committed>)>);

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, HandlerError> {
    let response = OffsetFetchResponse::default().with_throttle_time_ms(0);
    if ctx.version >= MULTI_GROUP_VERSION {
        let groups = super::first_of_each(req.groups, |g| g.group_id.clone())
            .into_iter()
            .map(|g| {
                let asked = g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                if !broker.allowed_on_group(ctx, AclOperation::Describe, &g.group_id) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(ResponseError::GroupAuthorizationFailed.code());
                }
                // v9: a KIP-848 member proves it is still in the group.
                if let Some(member) = g.member_id.as_ref().filter(|_| g.member_epoch >= 0)
                    && let Err(error) =
                        broker
                            .groups()
                            .check_member_epoch(&g.group_id, member, g.member_epoch)
                {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(error.code());
                }
                let (found, denied) = lookup(broker, ctx, &g.group_id, asked);
                let group_id = g.group_id.to_string();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(0)
                    .with_topics(
                        by_topic(found)
                            .into_iter()
                            .map(|(topic, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, c)| {
                                                let (offset, epoch, metadata) = fields(c);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(metadata))
                                                    .with_error_code(partition_error(
                                                        broker,
                                                        (&denied, req.require_stable),
                                                        (&group_id, &topic, p),
                                                    ))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return Ok(response.with_groups(groups));
    }
    let asked = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    if !broker.allowed_on_group(ctx, AclOperation::Describe, &req.group_id) {
        return Ok(response.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
    }
    let (found, denied) = lookup(broker, ctx, &req.group_id, asked);
    let topics = by_topic(found)
        .into_iter()
        .map(|(topic, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            let (offset, epoch, metadata) = fields(c);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(
                                    if ctx.version >= LEADER_EPOCH_VERSION {
                                        epoch
                                    } else {
                                        -1
                                    },
                                )
                                .with_metadata(Some(metadata))
                                .with_error_code(partition_error(
                                    broker,
                                    (&denied, req.require_stable),
                                    (&req.group_id, &topic, p),
                                ))
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(response.with_error_code(0).with_topics(topics))
}

/// A partition's error: TOPIC_AUTHORIZATION_FAILED for a topic named that
/// the client may not describe; UNSTABLE_OFFSET_COMMIT when the caller asks
/// for stable offsets (`require_stable`, v7+, KIP-447) and a transaction's
/// offset of the partition awaits its marker: the client retries, and
/// never starts from an offset a transaction is about to replace.
fn partition_error(
    broker: &Broker,
    (denied, require_stable): (&HashSet<String>, bool),
    (group, topic, partition): (&str, &str, i32),
) -> i16 {
    if denied.contains(topic) {
        ResponseError::TopicAuthorizationFailed.code()
    } else if require_stable && broker.groups().unstable(group, topic, partition) {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

/// The committed offsets asked for (`None` asks for all of the group's),
/// and the topics named that the client may not describe, whose offsets
/// are not given. Asked for all, those topics are left out, as Kafka does.
fn lookup(
    broker: &Broker,
    ctx: &RequestContext,
    group: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> (Vec<Found>, HashSet<String>) {
    let groups = broker.groups();
    let mut denied = HashSet::new();
    let found = match asked {
        None => {
            let mut describable: HashMap<String, bool> = HashMap::new();
            groups
                .all_committed(group)
                .into_iter()
                .filter(|(t, _, _)| {
                    *describable.entry(t.clone()).or_insert_with(|| {
                        broker.allowed_quietly(ctx, AclOperation::Describe, ResourceType::Topic, t)
                    })
                })
                .map(|(t, p, c)| (t, p, Some(c)))
                .collect()
        }
        Some(topics) => topics
            .into_iter()
            .flat_map(|(topic, partitions)| {
                let allowed = !denied.contains(&topic)
                    && broker.allowed_on_topic(ctx, AclOperation::Describe, &topic);
                if !allowed {
                    denied.insert(topic.clone());
                }
                partitions
                    .into_iter()
                    .map(|p| {
                        let committed = allowed
                            .then(|| groups.committed(group, &topic, p))
                            .flatten();
                        (topic.clone(), p, committed)
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
    };
    (found, denied)
}

/// Group answers by topic, keeping the order they came in.
fn by_topic(found: Vec<Found>) -> Vec<TopicFound> {
    let mut out: Vec<TopicFound> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (topic, partition, committed) in found {
        match index.get(&topic).and_then(|i| out.get_mut(*i)) {
            Some((_, parts)) => parts.push((partition, committed)),
            None => {
                index.insert(topic.clone(), out.len());
                out.push((topic, vec![(partition, committed)]));
            }
        }
    }
    out
}

/// Offset, leader epoch and metadata; a partition with no commit is -1, -1, "".
fn fields(c: Option<Committed>) -> (i64, i32, StrBytes) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            StrBytes::from_string(c.metadata.unwrap_or_default()),
        ),
        None => (-1, -1, StrBytes::default()),
    }
}
