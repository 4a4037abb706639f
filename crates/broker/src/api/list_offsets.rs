//! ListOffsets: a partition's earliest and latest offsets, the offset of its
//! largest timestamp, and the first offset at or after a timestamp (how
//! consumers reset and rewind by time).
//!
//! Whose view is answered follows `replica_id`, as in Kafka: a consumer
//! (-1) asks the leader and sees up to the high watermark (the last stable
//! offset under read_committed); a follower (its broker id) asks the leader
//! and sees up to the log end; a debugging tool (-2) may ask any replica
//! and sees that replica's own log end.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use weir_auth::AclOperation;
use weir_storage::Partition;

use crate::acls::topic_denied;
use crate::api::fetch::check_current_leader_epoch;
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
/// `isolation_level` of read_committed.
const READ_COMMITTED: i8 = 1;
/// First version whose request carries the client's leader epoch (and whose
/// response carries one).
const LEADER_EPOCH_VERSION: i16 = 4;
/// No leader epoch to tell (`RecordBatch.NO_PARTITION_LEADER_EPOCH`).
const NO_LEADER_EPOCH: i32 = -1;
/// `replica_id` of a consumer (Kafka's `CONSUMER_REPLICA_ID`).
const CONSUMER_REPLICA_ID: i32 = -1;
/// `replica_id` of a debugging tool (Kafka's `DEBUGGING_REPLICA_ID`).
const DEBUGGING_REPLICA_ID: i32 = -2;

/// How far a lookup may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// A consumer: the high watermark, or the last stable offset.
    Consumer { read_committed: bool },
    /// A replica or a debugging tool: the log end.
    LogEnd,
}

/// An offset found, with its record's timestamp (-1 when the lookup has none)
/// and the leader epoch it was written in (-1 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    offset: i64,
    timestamp: i64,
    leader_epoch: i32,
}

/// No offset matches: Kafka answers offset -1 and timestamp -1.
const NOT_FOUND: Found = Found {
    offset: -1,
    timestamp: -1,
    leader_epoch: NO_LEADER_EPOCH,
};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, HandlerError> {
    let version = ctx.version;
    let bound = if req.replica_id.0 == CONSUMER_REPLICA_ID {
        Bound::Consumer {
            read_committed: version >= 2 && req.isolation_level == READ_COMMITTED,
        }
    } else {
        Bound::LogEnd
    };
    let leader_only = req.replica_id.0 != DEBUGGING_REPLICA_ID;
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let describable = broker.allowed_on_topic(ctx, AclOperation::Describe, &topic.name);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let found = match describable {
                        true => broker.partition(&topic.name, p.partition_index),
                        false => Err(topic_denied(ctx, AclOperation::Describe, &topic.name)),
                    };
                    let found = found.and_then(|partition| {
                        if version >= LEADER_EPOCH_VERSION {
                            check_current_leader_epoch(
                                p.current_leader_epoch,
                                partition.leader_epoch(),
                            )?;
                        }
                        let epoch_start = if leader_only {
                            broker.replicas.leader_for_clients(partition.id())?
                        } else {
                            0
                        };
                        lookup(&partition, p.timestamp, bound, epoch_start)
                    });
                    answer(version, p.partition_index, found)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(ListOffsetsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics))
}

/// The offset a ListOffsets timestamp asks for, with the leader epoch Kafka
/// answers beside it: the partition's current epoch for the latest offset,
/// otherwise the epoch the found offset was written in.
///
/// A leader elected at `epoch_start` whose high watermark has not reached
/// it yet (its followers have not confirmed what it holds) knows less than
/// the leader before it told clients: the latest offset, or no match for a
/// time, would move a consumer back. Kafka answers a consumer
/// OFFSET_NOT_AVAILABLE then, and clients retry; a replica or a tool,
/// which see the log end, are answered.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    bound: Bound,
    epoch_start: i64,
) -> Result<Found, ApiError> {
    let offsets = partition.offsets();
    let not_yet = || {
        ApiError::new(
            ResponseError::OffsetNotAvailable,
            format!(
                "the high watermark {} has not reached {epoch_start}, where this leadership began; retry",
                offsets.high_watermark
            ),
        )
    };
    let lagging = matches!(bound, Bound::Consumer { .. }) && offsets.high_watermark < epoch_start;
    if lagging && timestamp == LATEST {
        return Err(not_yet());
    }
    let written = |offset: i64, timestamp: i64| Found {
        offset,
        timestamp,
        leader_epoch: partition
            .epoch_for_offset(offset)
            .unwrap_or(NO_LEADER_EPOCH),
    };
    let latest = |offset| Found {
        offset,
        timestamp: -1,
        leader_epoch: partition.leader_epoch(),
    };
    let found = match timestamp {
        LATEST => latest(match bound {
            Bound::Consumer {
                read_committed: true,
            } => offsets.last_stable,
            Bound::Consumer {
                read_committed: false,
            } => offsets.high_watermark,
            Bound::LogEnd => offsets.log_end,
        }),
        // Without tiered storage the whole log is local.
        EARLIEST | EARLIEST_LOCAL => written(offsets.log_start, -1),
        // KIP-1005: with tiered storage off, nothing is tiered, so no offset.
        LATEST_TIERED => NOT_FOUND,
        MAX_TIMESTAMP => partition
            .max_timestamp()?
            .map_or(NOT_FOUND, |(offset, timestamp)| written(offset, timestamp)),
        // Any other value, including unknown negative ones, is a time to search
        // from, as Kafka treats it.
        timestamp => partition
            .offset_for_timestamp(timestamp)?
            .map_or(NOT_FOUND, |(offset, timestamp)| written(offset, timestamp)),
    };
    if lagging && found == NOT_FOUND && timestamp != LATEST_TIERED {
        return Err(not_yet());
    }
    Ok(found)
}

fn answer(
    version: i16,
    index: i32,
    found: Result<Found, ApiError>,
) -> ListOffsetsPartitionResponse {
    let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
    match found {
        Ok(found) => {
            // Before v4 the field does not exist and must stay at its default.
            let epoch = if version >= LEADER_EPOCH_VERSION {
                found.leader_epoch
            } else {
                NO_LEADER_EPOCH
            };
            response
                .with_error_code(0)
                .with_offset(found.offset)
                .with_timestamp(found.timestamp)
                .with_leader_epoch(epoch)
        }
        Err(err) => {
            if err.code == ResponseError::KafkaStorageError {
                tracing::warn!(error = %err, "offset lookup failed");
            }
            response
                .with_error_code(err.code())
                .with_offset(-1)
                .with_timestamp(-1)
                .with_leader_epoch(-1)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;

    const CONSUMER: Bound = Bound::Consumer {
        read_committed: false,
    };

    #[tokio::test]
    async fn a_new_leader_whose_high_watermark_lags_its_epoch_start_has_no_latest_offset_yet() {
        // 5 records held, 2 committed; the leadership began at offset 5.
        let dir = tempfile::tempdir().unwrap();
        let (_log, partition) = crate::admin::testing::held_partition(dir.path(), &[2, 3], 2).await;
        for timestamp in [LATEST, 1_800_000_000_000] {
            for read_committed in [false, true] {
                let err = lookup(&partition, timestamp, Bound::Consumer { read_committed }, 5)
                    .unwrap_err();
                assert_eq!(err.code, ResponseError::OffsetNotAvailable);
            }
        }
        // What is committed can still be found.
        assert_eq!(lookup(&partition, EARLIEST, CONSUMER, 5).unwrap().offset, 0);
        assert_eq!(
            lookup(&partition, 1_700_000_000_001, CONSUMER, 5)
                .unwrap()
                .offset,
            1
        );
        // Once the followers confirm the log up to where the leadership began
        // (or it began at or below the high watermark), the latest offset is
        // the high watermark.
        assert_eq!(lookup(&partition, LATEST, CONSUMER, 2).unwrap().offset, 2);
        // A follower or a debugging tool sees the log end, lagging or not.
        assert_eq!(
            lookup(&partition, LATEST, Bound::LogEnd, 5).unwrap().offset,
            5
        );
        partition.set_high_watermark_bound(Some(5));
        assert_eq!(lookup(&partition, LATEST, CONSUMER, 5).unwrap().offset, 5);
    }

    #[test]
    fn answers_encode_at_every_version() {
        for version in 1..=10 {
            let partitions = vec![
                answer(
                    version,
                    0,
                    Ok(Found {
                        offset: 42,
                        timestamp: 1_700_000_000_000,
                        leader_epoch: 3,
                    }),
                ),
                answer(version, 1, Ok(NOT_FOUND)),
                answer(version, 2, Err(ApiError::unknown_topic("t"))),
            ];
            let response = ListOffsetsResponse::default().with_topics(vec![
                ListOffsetsTopicResponse::default()
                    .with_name(kafka_protocol::messages::TopicName("t".into()))
                    .with_partitions(partitions),
            ]);
            let mut buf = BytesMut::new();
            response.encode(&mut buf, version).expect("encodes");
            let back = ListOffsetsResponse::decode(&mut buf.freeze(), version).expect("decodes");
            let p = &back.topics[0].partitions;
            assert_eq!(
                (p[0].offset, p[0].timestamp),
                (42, 1_700_000_000_000),
                "v{version}"
            );
            assert_eq!((p[1].offset, p[1].timestamp), (-1, -1));
            let epoch = if version >= LEADER_EPOCH_VERSION {
                3
            } else {
                -1
            };
            assert_eq!(
                (p[0].leader_epoch, p[1].leader_epoch),
                (epoch, -1),
                "v{version}"
            );
            assert_eq!(p[2].error_code, 3);
        }
    }
}
