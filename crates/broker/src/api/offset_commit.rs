//! OffsetCommit: store a group's consumed positions. Partitions of unknown
//! topics and oversized metadata are refused one by one; the rest are
//! written to `__consumer_offsets` and answered once durable.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::group::CommitPartition;
use crate::{Broker, HandlerError, RequestContext};

/// First version carrying the committed leader epoch.
const LEADER_EPOCH_VERSION: i16 = 6;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, HandlerError> {
    let metadata_max = broker.groups().config().offset_metadata_max_bytes;
    // Per topic, per partition: an error decided here, or None to commit.
    let mut answers: Vec<(usize, usize, Option<ResponseError>)> = Vec::new();
    let mut accepted = Vec::new();
    for (t, topic) in req.topics.iter().enumerate() {
        for (p, part) in topic.partitions.iter().enumerate() {
            let error = if broker.partition(&topic.name, part.partition_index).is_err() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if part
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > metadata_max)
            {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                accepted.push(CommitPartition {
                    topic: topic.name.to_string(),
                    partition: part.partition_index,
                    offset: part.committed_offset,
                    leader_epoch: if ctx.version >= LEADER_EPOCH_VERSION {
                        part.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: part.committed_metadata.as_ref().map(|m| m.to_string()),
                });
                None
            };
            answers.push((t, p, error));
        }
    }
    let group_error = if accepted.is_empty() {
        None
    } else {
        broker
            .groups()
            .commit(
                &req.group_id,
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id_or_member_epoch,
                accepted,
            )
            .await
            .err()
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = req
        .topics
        .iter()
        .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (t, p, error) in answers {
        let index = req
            .topics
            .get(t)
            .and_then(|topic| topic.partitions.get(p))
            .map_or(-1, |part| part.partition_index);
        let code = error.or(group_error).map_or(0, |e| e.code());
        if let Some(topic) = topics.get_mut(t) {
            topic.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(code),
            );
        }
    }
    Ok(OffsetCommitResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics))
}
