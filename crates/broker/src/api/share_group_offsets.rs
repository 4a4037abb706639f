//! DescribeShareGroupOffsets, AlterShareGroupOffsets and
//! DeleteShareGroupOffsets (KIP-932's admin APIs, 90–92, what
//! `kafka-share-groups.sh --describe / --reset-offsets / --delete-offsets`
//! sends): a share group's start offset per partition, set, or forgotten.
//!
//! Sent to the group's coordinator. The share-partitions themselves live
//! with their partitions' leaders (`crate::share`). On a cluster a describe
//! of a partition this broker does not lead reads its start offset from
//! its share coordinator; altering or deleting one is answered
//! NOT_LEADER_OR_FOLLOWER (ask its leader). Altering and deleting need the
//! group empty (NON_EMPTY_GROUP otherwise), as in Kafka; they are answered
//! once the new state is durable.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsResponse, DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

use super::share_fetch::{leader_partition, share_key};
use crate::error::ApiError;
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
    _ctx: &RequestContext,
    req: DescribeShareGroupOffsetsRequest,
) -> Result<DescribeShareGroupOffsetsResponse, HandlerError> {
    let mut groups = Vec::new();
    for g in super::first_of_each(req.groups, |g| g.group_id.clone()) {
        let id = g.group_id.0.to_string();
        let out = DescribeShareGroupOffsetsResponseGroup::default().with_group_id(g.group_id);
        if let Err(e) = check_group(broker, &id, false) {
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
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let out = DescribeShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(*p)
                                .with_leader_epoch(-1);
                            let checked = match &topic {
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

pub(crate) async fn alter(
    broker: &Broker,
    _ctx: &RequestContext,
    req: AlterShareGroupOffsetsRequest,
) -> Result<AlterShareGroupOffsetsResponse, HandlerError> {
    let group = req.group_id.0.to_string();
    if let Err(e) = check_group(broker, &group, true) {
        return Ok(AlterShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(text(e.message)));
    }
    let group: Arc<str> = Arc::from(group.as_str());
    let mut responses = Vec::new();
    for t in super::first_of_each(req.topics, |t| t.topic_name.clone()) {
        let topic = broker.topic(t.topic_name.0.as_str());
        let topic_id = topic.as_ref().map_or(Uuid::nil(), |s| s.meta.id);
        let mut partitions = Vec::new();
        for p in super::first_of_each(t.partitions, |p| p.partition_index) {
            let index = p.partition_index;
            let done = match &topic {
                None => Err(ApiError::unknown_topic(t.topic_name.0.as_str())),
                Some(_) => reset(broker, &group, (topic_id, index), p.start_offset).await?,
            };
            let out =
                AlterShareGroupOffsetsResponsePartition::default().with_partition_index(index);
            partitions.push(match done {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(text(e.message)),
            });
        }
        responses.push(
            AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_name(t.topic_name)
                .with_topic_id(topic_id)
                .with_partitions(partitions),
        );
    }
    if !responses.is_empty() {
        tracing::info!(group = %group, topics = responses.len(), "altered share group offsets");
    }
    Ok(AlterShareGroupOffsetsResponse::default().with_responses(responses))
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
    broker: &Broker,
    _ctx: &RequestContext,
    req: DeleteShareGroupOffsetsRequest,
) -> Result<DeleteShareGroupOffsetsResponse, HandlerError> {
    let group = req.group_id.0.to_string();
    if let Err(e) = check_group(broker, &group, true) {
        return Ok(DeleteShareGroupOffsetsResponse::default()
            .with_error_code(e.code())
            .with_error_message(text(e.message)));
    }
    let mut responses = Vec::new();
    for t in super::first_of_each(req.topics, |t| t.topic_name.clone()) {
        let out =
            DeleteShareGroupOffsetsResponseTopic::default().with_topic_name(t.topic_name.clone());
        let Some(topic) = broker.topic(t.topic_name.0.as_str()) else {
            let e = ApiError::unknown_topic(t.topic_name.0.as_str());
            responses.push(
                out.with_error_code(e.code())
                    .with_error_message(text(e.message)),
            );
            continue;
        };
        let topic_id = topic.meta.id;
        let (shares, g) = (broker.shares().clone(), group.clone());
        let waits = crate::blocking::run(move || shares.forget_topic(&g, topic_id)).await?;
        let mut error = None;
        for wait in waits {
            if let Err(e) = wait.wait().await {
                error = Some(ApiError::new(
                    ResponseError::KafkaStorageError,
                    format!("the deletion could not be made durable: {e}"),
                ));
            }
        }
        let out = out.with_topic_id(topic_id);
        responses.push(match error {
            None => out,
            Some(e) => out
                .with_error_code(e.code())
                .with_error_message(text(e.message)),
        });
    }
    if !responses.is_empty() {
        tracing::info!(
            group,
            topics = responses.len(),
            "deleted share group offsets"
        );
    }
    Ok(DeleteShareGroupOffsetsResponse::default().with_responses(responses))
}
