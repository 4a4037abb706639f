//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log,
//! answered from the partition's leader-epoch cache.
//!
//! Consumers ask after a leader change, or when they resume from a position
//! that carries an epoch (KIP-320), with the epoch of the last record they
//! read, and treat an end offset below their position as truncation.
//! Followers ask the same to find where their log diverges from the
//! leader's. Kafka answers both alike: the largest epoch at or below the one
//! asked for and the start offset of the next larger epoch, or the log end
//! for the current epoch; (-1, -1) when the epoch is undefined or above every
//! known one. `replica_id` (v3+: -1 for a consumer, the broker id of a
//! follower) only decides which ACL Kafka checks (topic DESCRIBE or cluster
//! CLUSTER_ACTION); Weir has no ACLs, so it changes nothing here.
//!
//! A broker that does not lead the partition answers NOT_LEADER_OR_FOLLOWER,
//! as Kafka does. The client's `current_leader_epoch` is checked next, as for Fetch and
//! ListOffsets: -1 skips it, an older one is FENCED_LEADER_EPOCH, a newer one
//! UNKNOWN_LEADER_EPOCH.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::api::fetch::check_current_leader_epoch;
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

/// Kafka's answer for an epoch the log cannot place.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> Result<OffsetForLeaderEpochResponse, HandlerError> {
    // A follower asks as the cluster (CLUSTER_ACTION), a client with
    // DESCRIBE on the topic.
    let follower = req.replica_id.0 >= 0;
    let cluster_action =
        follower && broker.allowed_on_cluster(ctx, weir_auth::AclOperation::ClusterAction);
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let allowed = match follower {
                true => cluster_action,
                false => {
                    broker.allowed_on_topic(ctx, weir_auth::AclOperation::Describe, &topic.topic)
                }
            };
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let answer = if allowed {
                        broker.partition(&topic.topic, p.partition)
                    } else {
                        Err(crate::acls::topic_denied(
                            ctx,
                            weir_auth::AclOperation::Describe,
                            &topic.topic,
                        ))
                    };
                    let answer = answer.and_then(|partition| {
                        // Only the leader's log says where an epoch
                        // ends: a follower truncating by another
                        // follower's answer could cut committed data.
                        broker.replicas.leader_for_clients(partition.id())?;
                        check_current_leader_epoch(
                            p.current_leader_epoch,
                            partition.leader_epoch(),
                        )?;
                        Ok(partition.end_offset_for_epoch(p.leader_epoch))
                    });
                    respond(p.partition, answer)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    Ok(OffsetForLeaderEpochResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics))
}

fn respond(partition: i32, answer: Result<Option<(i32, i64)>, ApiError>) -> EpochEndOffset {
    let response = EpochEndOffset::default().with_partition(partition);
    let (code, (epoch, end_offset)) = match answer {
        Ok(found) => (
            0,
            found.unwrap_or((UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)),
        ),
        Err(err) => (err.code(), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)),
    };
    response
        .with_error_code(code)
        .with_leader_epoch(epoch)
        .with_end_offset(end_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_the_log_cannot_place_is_undefined_without_an_error() {
        let found = respond(2, Ok(Some((3, 120))));
        assert_eq!(
            (found.error_code, found.leader_epoch, found.end_offset),
            (0, 3, 120)
        );
        let unknown = respond(2, Ok(None));
        assert_eq!(
            (unknown.error_code, unknown.leader_epoch, unknown.end_offset),
            (0, -1, -1)
        );
        let failed = respond(2, Err(ApiError::unknown_topic("t")));
        assert_eq!(
            (failed.error_code, failed.leader_epoch, failed.end_offset),
            (3, -1, -1)
        );
    }
}
