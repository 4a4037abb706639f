//! OffsetCommit: store a group's consumed positions. Partitions of unknown
//! topics and oversized metadata are refused one by one; the rest are
//! written to `__consumer_offsets` and answered once durable.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use weir_auth::AclOperation;

use crate::group::CommitPartition;
use crate::{Broker, HandlerError, RequestContext};

/// First version carrying the committed leader epoch.
const LEADER_EPOCH_VERSION: i16 = 6;

/// One partition's offset as a commit (OffsetCommit or TxnOffsetCommit)
/// offers it.
pub(crate) struct Offered<'a> {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a str>,
}

/// Per (topic index, partition index): an error decided here, or `None` to
/// commit.
pub(crate) type Answers = Vec<(usize, usize, Option<ResponseError>)>;

/// The checks every commit makes before its group sees it: with the group
/// not readable by the client every partition is GROUP_AUTHORIZATION_FAILED,
/// a partition of a topic it may not read TOPIC_AUTHORIZATION_FAILED, of an
/// unknown topic UNKNOWN_TOPIC_OR_PARTITION, metadata over
/// `offset.metadata.max.bytes` OFFSET_METADATA_TOO_LARGE; the rest are
/// accepted (the leader epoch kept only when the version carries one).
pub(crate) fn check_partitions<'a, P>(
    broker: &Broker,
    (ctx, group): (&RequestContext, &str),
    topics: impl Iterator<Item = (&'a str, P)>,
    with_leader_epoch: bool,
) -> (Answers, Vec<CommitPartition>)
where
    P: Iterator<Item = Offered<'a>>,
{
    let metadata_max = broker.groups().config().offset_metadata_max_bytes;
    let mut answers = Vec::new();
    let mut accepted = Vec::new();
    let group_readable = broker.allowed_on_group(ctx, AclOperation::Read, group);
    for (t, (topic, partitions)) in topics.enumerate() {
        let topic_readable =
            group_readable && broker.allowed_on_topic(ctx, AclOperation::Read, topic);
        for (p, part) in partitions.enumerate() {
            let error = if !group_readable {
                Some(ResponseError::GroupAuthorizationFailed)
            } else if !topic_readable {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if broker.partition(topic, part.partition).is_err() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if part.metadata.is_some_and(|m| m.len() > metadata_max) {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                accepted.push(CommitPartition {
                    topic: topic.to_string(),
                    partition: part.partition,
                    offset: part.offset,
                    leader_epoch: if with_leader_epoch {
                        part.leader_epoch
                    } else {
                        -1
                    },
                    metadata: part.metadata.map(str::to_string),
                });
                None
            };
            answers.push((t, p, error));
        }
    }
    (answers, accepted)
}

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, HandlerError> {
    let (answers, accepted) = check_partitions(
        broker,
        (ctx, &req.group_id),
        req.topics.iter().map(|t| {
            (
                t.name.as_str(),
                t.partitions.iter().map(|p| Offered {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_deref(),
                }),
            )
        }),
        ctx.version >= LEADER_EPOCH_VERSION,
    );
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
