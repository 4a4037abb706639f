//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log.
//!
//! Consumers ask after a leader change (KIP-320) with the epoch of the last
//! batch they read, and treat an end offset below their position as
//! truncation. A single broker has only epoch 0, and it is still current, so
//! it ends at the log's end. The high watermark is answered: a consumer
//! never reads past it, so its position is never above the answer and valid
//! data is never reported as truncated.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::api::fetch::check_current_leader_epoch;
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

/// The only leader epoch a single broker has.
const LEADER_EPOCH: i32 = 0;
/// Kafka's answer for an epoch the log does not know.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

pub(crate) async fn handle(
    broker: &Broker,
    _ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> Result<OffsetForLeaderEpochResponse, HandlerError> {
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let answer =
                        broker
                            .partition(&topic.topic, p.partition)
                            .and_then(|partition| {
                                check_current_leader_epoch(p.current_leader_epoch)?;
                                Ok(end_of_epoch(
                                    p.leader_epoch,
                                    partition.offsets().high_watermark,
                                ))
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

/// The largest epoch at or below `requested` and where it ends, as Kafka's
/// leader-epoch cache answers it.
fn end_of_epoch(requested: i32, high_watermark: i64) -> (i32, i64) {
    if requested != LEADER_EPOCH {
        // Before epoch 0 nothing existed; after it, nothing is known yet.
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    } else {
        (LEADER_EPOCH, high_watermark)
    }
}

fn respond(partition: i32, answer: Result<(i32, i64), ApiError>) -> EpochEndOffset {
    let response = EpochEndOffset::default().with_partition(partition);
    match answer {
        Ok((epoch, end_offset)) => response
            .with_error_code(0)
            .with_leader_epoch(epoch)
            .with_end_offset(end_offset),
        Err(err) => response
            .with_error_code(err.code())
            .with_leader_epoch(UNDEFINED_EPOCH)
            .with_end_offset(UNDEFINED_EPOCH_OFFSET),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_zero_ends_at_the_high_watermark() {
        assert_eq!(end_of_epoch(0, 120), (0, 120));
    }

    #[test]
    fn unknown_epochs_are_undefined_as_in_kafka() {
        assert_eq!(end_of_epoch(3, 120), (-1, -1));
        assert_eq!(end_of_epoch(-1, 120), (-1, -1));
    }
}
